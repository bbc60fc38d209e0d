// `loom bench MODEL [--db FILE] [--threads N] [--json] [--profile]`: compiles the model
// (runtime::CompiledModel) untuned and, with --db, with the best records, and prints the latency
// of each (median, p90, min over at least --min-time seconds and --min-runs runs). --profile adds
// where the time goes: per step kind and the slowest nodes. `loom bench DIR` times a compiled
// artifact (`loom compile`) the same way. `--target cuda` compiles for the GPU instead
// (runtime::CudaModel); --profile and artifacts are CPU only.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/api/class_records.h"
#include "loom/base/rng.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_model.h"
#include "loom/runtime/reference_executor.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  std::string db = "loom.db";
  bool db_given = false;  // --db on the command line (else the default, used only if it exists)
  bool exact_target = false;
  int32_t threads = 1;
  bool json = false;
  bool profile = false;
  bool check = false;
  double min_time = 1.0;
  int32_t min_runs = 10;
  int32_t build_threads = 2;
  std::string cache_dir;
  std::string target = "cpu";
  std::string device;  // --target cuda: "cuda:N" (default cuda:0)
};

struct Latency {
  double median_ms = 0, p90_ms = 0, min_ms = 0, mean_ms = 0;
  int64_t runs = 0;
};

Latency Summarize(std::vector<double> ms) {
  Latency l;
  std::sort(ms.begin(), ms.end());
  l.runs = static_cast<int64_t>(ms.size());
  l.min_ms = ms.front();
  l.median_ms = ms[ms.size() / 2];
  l.p90_ms = ms[std::min(ms.size() - 1, (ms.size() * 9) / 10)];
  double sum = 0;
  for (double v : ms) sum += v;
  l.mean_ms = sum / static_cast<double>(ms.size());
  return l;
}

struct ProfileRow {
  std::string key;
  std::string kind;
  double ms = 0;
  int64_t count = 0;
};

struct VariantResult {
  std::string name;
  runtime::CompileStats stats;
  Latency latency;
  double max_rel_err = -1;
  std::vector<ProfileRow> by_kind;
  std::vector<ProfileRow> top_nodes;
  double profiled_ms = 0;
  std::string tuning_summary;  // the tuned variant: "3 of 3 kernels tuned (...)"
  std::string target_key;      // what the kernels were generated for
};

std::map<std::string, graph::Tensor> MakeInputs(const std::vector<graph::ValueInfo>& inputs) {
  std::map<std::string, graph::Tensor> feeds;
  base::Rng rng(1);
  for (const auto& in : inputs) {
    graph::Tensor t(in.type.dtype, in.type.shape);
    if (in.type.dtype == graph::DType::kFloat32) {
      for (float& v : t.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    feeds[in.name] = std::move(t);
  }
  return feeds;
}

// Runs the model once on the feeds (a CompiledModel's or a CudaModel's Run).
using RunFn = std::function<absl::StatusOr<std::vector<graph::Tensor>>()>;

VariantResult MeasureVariant(const std::string& name, std::unique_ptr<runtime::CompiledModel>* cm,
                             const std::map<std::string, graph::Tensor>& feeds,
                             const BenchOptions& opts, const std::vector<graph::Tensor>* expected);
void MeasureRuns(const RunFn& run, const BenchOptions& opts,
                 const std::vector<graph::Tensor>* expected, VariantResult* r);

VariantResult BenchVariant(const std::string& name, const graph::Graph& g,
                           const std::map<std::string, graph::Tensor>& feeds,
                           const BenchOptions& opts, const ops::Target& target,
                           tune::RecordStore* store, const std::vector<graph::Tensor>* expected) {
  runtime::CompileOptions co;
  co.target = target;
  co.num_threads = opts.threads;
  co.records = store;
  co.build.num_threads = opts.build_threads;
  co.build.cache_dir = opts.cache_dir;
  auto cm = runtime::CompiledModel::Compile(g, co);
  FailIfError(cm.status());
  return MeasureVariant(name, &*cm, feeds, opts, expected);
}

VariantResult MeasureVariant(const std::string& name, std::unique_ptr<runtime::CompiledModel>* cm,
                             const std::map<std::string, graph::Tensor>& feeds,
                             const BenchOptions& opts, const std::vector<graph::Tensor>* expected) {
  VariantResult r;
  r.name = name;
  r.stats = (*cm)->stats();
  r.target_key = (*cm)->target_key();
  MeasureRuns([&] { return (*cm)->Run(feeds); }, opts, expected, &r);
  if (opts.profile) {
    const int kRuns = 10;
    std::map<std::string, ProfileRow> kinds, nodes;
    for (int i = 0; i < kRuns; ++i) {
      std::vector<runtime::StepTiming> t;
      FailIfError((*cm)->RunProfiled(feeds, &t).status());
      for (const auto& s : t) {
        ProfileRow& k = kinds[s.kind];
        k.key = s.kind;
        k.ms += s.seconds * 1e3 / kRuns;
        if (i == 0) ++k.count;
        ProfileRow& n = nodes[absl::StrCat(s.kind, " ", s.name)];
        n.key = s.name;
        n.kind = s.kind;
        n.ms += s.seconds * 1e3 / kRuns;
        n.count = 1;
        r.profiled_ms += s.seconds * 1e3 / kRuns;
      }
    }
    for (auto& [k, v] : kinds) r.by_kind.push_back(v);
    for (auto& [k, v] : nodes) r.top_nodes.push_back(v);
    auto by_ms = [](const ProfileRow& a, const ProfileRow& b) { return a.ms > b.ms; };
    std::sort(r.by_kind.begin(), r.by_kind.end(), by_ms);
    std::sort(r.top_nodes.begin(), r.top_nodes.end(), by_ms);
    if (r.top_nodes.size() > 15) r.top_nodes.resize(15);
  }
  return r;
}

void MeasureRuns(const RunFn& run, const BenchOptions& opts,
                 const std::vector<graph::Tensor>* expected, VariantResult* r) {
  // Warm-up (first touch of the arena and weights), and the optional result check.
  for (int i = 0; i < 2; ++i) {
    auto out = run();
    FailIfError(out.status());
    if (i == 0 && expected != nullptr) {
      double err = 0, ref = 0;
      for (size_t k = 0; k < out->size() && k < expected->size(); ++k) {
        const graph::Tensor& a = (*out)[k];
        const graph::Tensor& b = (*expected)[k];
        for (int64_t e = 0; e < a.num_elements() && e < b.num_elements(); ++e) {
          err = std::max(err, std::fabs(a.DoubleAt(e) - b.DoubleAt(e)));
          ref = std::max(ref, std::fabs(b.DoubleAt(e)));
        }
      }
      r->max_rel_err = ref > 0 ? err / ref : err;
    }
  }
  std::vector<double> ms;
  const auto begin = std::chrono::steady_clock::now();
  while (true) {
    const auto t0 = std::chrono::steady_clock::now();
    auto out = run();
    const auto t1 = std::chrono::steady_clock::now();
    FailIfError(out.status());
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    const double elapsed = std::chrono::duration<double>(t1 - begin).count();
    if (static_cast<int32_t>(ms.size()) >= opts.min_runs && elapsed >= opts.min_time) break;
  }
  r->latency = Summarize(ms);
}

// --target cuda: the model compiled for the GPU (runtime::CudaModel), untuned and with --db.
void BenchCuda(const graph::Graph& g, const std::map<std::string, graph::Tensor>& feeds,
               const BenchOptions& opts, tune::RecordStore* store,
               const std::vector<graph::Tensor>* expected, std::vector<VariantResult>* results) {
  if (opts.profile) Fail(absl::InvalidArgumentError("--profile is for --target cpu only"));
  tune::BuildOptions build;
  build.num_threads = opts.build_threads;
  build.cache_dir = opts.cache_dir;
  auto backend = runtime::MakeCudaDeviceBackend(CudaOrdinalOrFail(opts.device), build);
  FailIfError(backend.status());
  for (tune::RecordStore* records : {static_cast<tune::RecordStore*>(nullptr), store}) {
    runtime::CudaModelOptions co;
    co.records = records;
    auto model = runtime::CudaModel::Compile(g, backend->get(), co);
    FailIfError(model.status());
    const runtime::CudaModelStats& cs = (*model)->stats();
    VariantResult r;
    r.name = records == nullptr ? "untuned" : "tuned";
    r.stats.kernel_steps = cs.kernel_steps;
    r.stats.tuned_kernels = cs.tuned_kernels;
    r.stats.fused_ops = cs.fused_ops;
    r.stats.reference_steps = cs.host_steps;
    r.stats.arena_bytes = cs.arena_bytes;
    r.stats.intermediate_bytes = cs.value_bytes;
    r.stats.compile_seconds = cs.compile_seconds;
    MeasureRuns([&] { return (*model)->Run(feeds); }, opts, expected, &r);
    results->push_back(std::move(r));
    if (store == nullptr) break;
  }
}

void PrintResults(const std::string& source, const std::vector<VariantResult>& results,
                  const BenchOptions& opts);

void RunBench(const BenchOptions& opts) {
  if (opts.threads < 1) Fail(absl::InvalidArgumentError("--threads must be at least 1"));
  if (opts.min_runs < 1) Fail(absl::InvalidArgumentError("--min-runs must be at least 1"));
  std::vector<VariantResult> results;
  std::string source = opts.model.model;
  if (runtime::IsArtifactDir(opts.model.model)) {
    if (opts.check || opts.db_given) {
      Fail(absl::InvalidArgumentError(
          "--check and --db need a model, not a compiled artifact (it has neither graph nor "
          "records)"));
    }
    if (opts.target != "cpu") {
      Fail(absl::InvalidArgumentError("a compiled artifact runs on the CPU; drop --target"));
    }
    auto cm = runtime::CompiledModel::Load(opts.model.model, {.num_threads = opts.threads});
    FailIfError(cm.status());
    const auto feeds = MakeInputs((*cm)->inputs());
    results.push_back(MeasureVariant("artifact", &*cm, feeds, opts, nullptr));
    PrintResults(source, results, opts);
    return;
  }
  auto loaded = LoadModelFromOptions(opts.model);
  FailIfError(loaded.status());
  source = loaded->source;
  const graph::Graph& g = loaded->graph;
  const auto feeds = MakeInputs(g.inputs);
  std::vector<graph::Tensor> expected;
  if (opts.check) {
    auto ex = runtime::ReferenceExecutor::Create(g);
    FailIfError(ex.status());
    auto out = ex->Run(feeds);
    FailIfError(out.status());
    expected = *std::move(out);
  }
  std::unique_ptr<tune::RecordStore> store;
  if (!opts.db.empty() && (opts.db_given || RecordDbExists(opts.db))) {
    store = OpenExistingRecordDb(opts.db);  // a given --db must exist; the default only if it does
  }
  // cuda[:sm_XY], or cpu / a CPU class this CPU runs (cpu:avx2), whose records then apply.
  absl::StatusOr<ops::Target> target = absl::StartsWith(opts.target, "cuda")
                                           ? ops::ParseTarget(opts.target)
                                           : api::CpuCompileTarget(opts.target);
  FailIfError(target.status());
  if (!opts.device.empty() && target->kind != "cuda") {
    Fail(absl::InvalidArgumentError("--device applies to --target cuda only"));
  }
  if (target->kind == "cuda") {
    BenchCuda(g, feeds, opts, store.get(), opts.check ? &expected : nullptr, &results);
    PrintResults(absl::StrCat(source, " on ", opts.device.empty() ? "cuda:0" : opts.device),
                 results, opts);
    return;
  }
  results.push_back(
      BenchVariant("untuned", g, feeds, opts, *target, nullptr, opts.check ? &expected : nullptr));
  if (store != nullptr) {
    // Records of another CPU of this class apply unless --exact-target (api/class_records.h).
    api::ClassRecords records(store.get(), opts.exact_target);
    results.push_back(
        BenchVariant("tuned", g, feeds, opts, *target, &records, opts.check ? &expected : nullptr));
    results.back().tuning_summary =
        api::TuningSummary(results.back().stats.tuned_kernels, results.back().stats.kernel_steps,
                           &records, opts.db, *target, opts.exact_target);
  } else {
    std::fprintf(stderr, "bench: no record database (%s): untuned only\n", opts.db.c_str());
  }
  PrintResults(source, results, opts);
}

void PrintResults(const std::string& source, const std::vector<VariantResult>& results,
                  const BenchOptions& opts) {
  if (opts.json) {
    nlohmann::json j;
    j["model"] = source;
    j["threads"] = opts.threads;
    j["results"] = nlohmann::json::array();
    for (const VariantResult& r : results) {
      nlohmann::json v;
      v["variant"] = r.name;
      if (!r.target_key.empty()) v["target"] = r.target_key;
      v["median_ms"] = r.latency.median_ms;
      v["p90_ms"] = r.latency.p90_ms;
      v["min_ms"] = r.latency.min_ms;
      v["mean_ms"] = r.latency.mean_ms;
      v["runs"] = r.latency.runs;
      v["compile_s"] = r.stats.compile_seconds;
      v["kernels"] = r.stats.kernel_steps;
      v["tuned_kernels"] = r.stats.tuned_kernels;
      if (!r.tuning_summary.empty()) v["tuning"] = r.tuning_summary;
      v["fused_ops"] = r.stats.fused_ops;
      v["layout_steps"] = r.stats.layout_steps;
      v["reference_steps"] = r.stats.reference_steps;
      v["generated_steps"] = r.stats.generated_steps;
      v["blocked_steps"] = r.stats.blocked_steps;
      v["unique_kernels"] = r.stats.unique_kernels;
      v["cache_hits"] = r.stats.cache_hits;
      v["arena_bytes"] = r.stats.arena_bytes;
      v["intermediate_bytes"] = r.stats.intermediate_bytes;
      if (r.max_rel_err >= 0) v["max_rel_err"] = r.max_rel_err;
      if (opts.profile) {
        for (const ProfileRow& p : r.by_kind) {
          v["profile"]["by_kind"].push_back({{"kind", p.key}, {"ms", p.ms}, {"steps", p.count}});
        }
        for (const ProfileRow& p : r.top_nodes) {
          v["profile"]["top_nodes"].push_back({{"node", p.key}, {"kind", p.kind}, {"ms", p.ms}});
        }
      }
      j["results"].push_back(v);
    }
    PrintJson(j, 2);
    return;
  }
  std::printf("model       %s, %d thread%s\n", source.c_str(), opts.threads,
              opts.threads == 1 ? "" : "s");
  std::printf("%-8s %10s %10s %10s %6s %8s %7s %6s %12s\n", "variant", "median_ms", "p90_ms",
              "min_ms", "runs", "kernels", "tuned", "fused", "arena/sum MB");
  for (const VariantResult& r : results) {
    std::printf(
        "%-8s %10.3f %10.3f %10.3f %6lld %8lld %7lld %6lld %5.1f/%-6.1f\n", r.name.c_str(),
        r.latency.median_ms, r.latency.p90_ms, r.latency.min_ms,
        static_cast<long long>(r.latency.runs), static_cast<long long>(r.stats.kernel_steps),
        static_cast<long long>(r.stats.tuned_kernels), static_cast<long long>(r.stats.fused_ops),
        static_cast<double>(r.stats.arena_bytes) / 1e6,
        static_cast<double>(r.stats.intermediate_bytes) / 1e6);
    if (r.max_rel_err >= 0) {
      std::printf("         check vs reference: max|a-b|/max|ref| = %.3g\n", r.max_rel_err);
    }
    std::printf(
        "         compile %.2f s (%lld unique kernels, %lld from the cache); steps: %lld "
        "template, %lld generated, %lld blocked, %lld layout, %lld reference\n",
        r.stats.compile_seconds, static_cast<long long>(r.stats.unique_kernels),
        static_cast<long long>(r.stats.cache_hits), static_cast<long long>(r.stats.kernel_steps),
        static_cast<long long>(r.stats.generated_steps),
        static_cast<long long>(r.stats.blocked_steps), static_cast<long long>(r.stats.layout_steps),
        static_cast<long long>(r.stats.reference_steps));
  }
  if (!results.empty() && !results[0].target_key.empty()) {
    std::printf("target      %s\n", results[0].target_key.c_str());
  }
  for (const VariantResult& r : results) {
    if (!r.tuning_summary.empty()) std::printf("tuned       %s\n", r.tuning_summary.c_str());
  }
  if (results.size() == 2) {
    std::printf("speedup     %.2fx (untuned median / tuned median)\n",
                results[0].latency.median_ms / results[1].latency.median_ms);
  }
  if (opts.profile) {
    for (const VariantResult& r : results) {
      std::printf("\nprofile %s (mean of 10 runs, %.3f ms in steps)\n", r.name.c_str(),
                  r.profiled_ms);
      std::printf("  %-40s %9s %6s %6s\n", "step kind", "ms", "%", "steps");
      for (const ProfileRow& p : r.by_kind) {
        std::printf("  %-40s %9.3f %5.1f%% %6lld\n", p.key.c_str(), p.ms,
                    100.0 * p.ms / r.profiled_ms, static_cast<long long>(p.count));
      }
      std::printf("  top nodes:\n");
      for (const ProfileRow& p : r.top_nodes) {
        std::printf("  %-40s %9.3f %5.1f%%  %s\n", p.key.c_str(), p.ms,
                    100.0 * p.ms / r.profiled_ms, p.kind.c_str());
      }
    }
  }
}

}  // namespace

void RegisterBenchCommand(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand(
      "bench", "Compile a model (untuned, and tuned with --db) and measure its latency");
  AddModelOptions(cmd, &opts->model);
  cmd->add_option("--db", opts->db,
                  "Record database: also benchmark with the best configs (the default is used "
                  "only if it exists)");
  cmd->add_flag("--exact-target", opts->exact_target,
                "Use only records of this exact CPU model, not those of other CPUs of its class");
  cmd->add_option("--threads", opts->threads, "Threads running the model (default 1)");
  AddJsonFlag(cmd, &opts->json, "Print the results as JSON");
  cmd->add_flag("--profile", opts->profile, "Per step kind and per node time (10 runs)");
  cmd->add_flag("--check", opts->check, "Compare the output with the reference executor");
  cmd->add_option("--min-time", opts->min_time, "Seconds of timed runs at least (default 1)");
  cmd->add_option("--min-runs", opts->min_runs, "Timed runs at least (default 10)");
  cmd->add_option("--build-threads", opts->build_threads, "Parallel kernel compiles (default 2)");
  cmd->add_option("--target", opts->target,
                  "cpu (this CPU, default), a CPU class this CPU runs (cpu:avx2, cpu:generic), or "
                  "cuda: compile for the GPU");
  cmd->add_option("--device", opts->device,
                  "CUDA device for --target cuda, cuda:N (default cuda:0)");
  cmd->add_option("--cache-dir", opts->cache_dir,
                  "Kernel cache directory (default: the builder's, ~/.cache/loom/kernels)");
  cmd->callback([opts, cmd] {
    opts->db_given = cmd->get_option("--db")->count() > 0;
    RunBench(*opts);
  });
}

}  // namespace loom::cli
