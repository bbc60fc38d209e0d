// Tuner figures on the synthetic objective (testing/synthetic_template.h): first the
// sample-efficiency table (trials to reach 95% of the optimum, per tuner, over seeds), then Google
// Benchmark timings of the propose and update stages of each tuner (the CPU cost a scheduler must
// budget for). Run: build/<dir>/loom/search/search_tuner_benchmark [--seeds=N] [benchmark flags]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "benchmark/benchmark.h"
#include "loom/search/testing/sample_efficiency.h"
#include "loom/search/testing/synthetic_template.h"
#include "loom/search/tuner.h"

namespace loom::search {
namespace {

int PrintSampleEfficiency(int num_seeds) {
  SyntheticTemplate tmpl;
  Objective objective = [&](const std::vector<ops::Config>& c) { return tmpl.Measure(c); };
  ops::Config opt = tmpl.Optimum();
  ReachOptions reach{.fraction = 0.95,
                     .best_cost = 1.0 / tmpl.Throughput(opt),
                     .max_trials = 4000,
                     .batch_size = 8};
  int64_t within = 0;
  for (int64_t i = 0; i < tmpl.space().size(); ++i) {
    within += tmpl.Throughput(ops::Config{i}) >= 0.95 * tmpl.Throughput(opt);
  }
  std::vector<uint64_t> seeds;
  for (int s = 1; s <= num_seeds; ++s) seeds.push_back(static_cast<uint64_t>(s));
  std::printf(
      "Sample efficiency on the synthetic objective: %lld configs, %lld within 95%% of the "
      "optimum %s; batch %d, %d seeds\n",
      static_cast<long long>(tmpl.space().size()), static_cast<long long>(within),
      tmpl.space().ToJson(opt).c_str(), reach.batch_size, num_seeds);
  std::printf("%-8s %12s %12s  %s\n", "tuner", "mean trials", "not reached", "trials per seed");
  double random_mean = 0;
  for (const char* kind : {"random", "grid", "ga", "xgb"}) {
    auto eff = MeasureSampleEfficiency(TunerOptions{.kind = kind}, tmpl, objective, seeds, reach);
    if (!eff.ok()) {
      std::fprintf(stderr, "%s: %s\n", kind, std::string(eff.status().message()).c_str());
      return 1;
    }
    if (std::string(kind) == "random") random_mean = eff->mean;
    std::printf("%-8s %12.1f %12lld  [%s]", kind, eff->mean,
                static_cast<long long>(eff->not_reached), absl::StrJoin(eff->trials, ", ").c_str());
    if (random_mean > 0) std::printf("  (%.2fx random)", eff->mean / random_mean);
    std::printf("\n");
  }
  std::fflush(stdout);
  return 0;
}

// One full round (Propose 8 + Update 8) of a tuner after `warm` trials; reported per round.
void BM_Round(benchmark::State& state, const std::string& kind) {
  SyntheticTemplate tmpl;
  auto tuner = MakeTuner(TunerOptions{.kind = kind, .seed = 1}, tmpl);
  if (!tuner.ok()) {
    state.SkipWithError("MakeTuner failed");
    return;
  }
  for (auto _ : state) {
    if (!(*tuner)->HasNext()) {
      state.PauseTiming();
      tuner = MakeTuner(TunerOptions{.kind = kind, .seed = 1}, tmpl);
      state.ResumeTiming();
    }
    std::vector<ops::Config> configs = (*tuner)->Propose(8);
    (*tuner)->Update(configs, tmpl.Measure(configs));
  }
}
BENCHMARK_CAPTURE(BM_Round, random, std::string("random"));
BENCHMARK_CAPTURE(BM_Round, ga, std::string("ga"));
BENCHMARK_CAPTURE(BM_Round, xgb, std::string("xgb"));

}  // namespace
}  // namespace loom::search

int main(int argc, char** argv) {
  int seeds = 10;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--seeds=", 8) == 0) {
      seeds = std::atoi(argv[i] + 8);
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (seeds <= 0) {
    std::fprintf(stderr, "--seeds must be a positive integer\n");
    return 2;
  }
  if (int rc = loom::search::PrintSampleEfficiency(seeds); rc != 0) return rc;
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
