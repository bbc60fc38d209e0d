// Fixed costs of the Build and Measure stages that the scheduler's stage-duration models see
// beyond kernel time: a cached build, one candidate's round trip through the sandbox worker
// (load, reference check, IPC), and a crash with the worker's restart. This binary hosts its own
// measure worker (argument `__measure-worker`).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/worker_host.h"

namespace loom::tune {
namespace {

struct Fixture {
  MeasureTask task;
  std::unique_ptr<ops::Template> tmpl;
  std::unique_ptr<Builder> builder;
  std::vector<BuildResult> built;  // fault 0 (correct), fault 1 (crash)
};

Fixture& Get() {
  static Fixture* f = [] {
    auto* f = new Fixture;
    graph::Workload w;
    w.kind = graph::TaskKind::kDense;
    w.m = 8, w.n = 32, w.k = 64, w.trans_b = true;
    f->task = MeasureTask{graph::WorkloadKey(w), ops::HostCpuTarget(), {.test_faults = true}};
    f->tmpl = *ops::MakeTemplate(w, f->task.target, f->task.template_options);
    f->builder = *MakeLocalBuilder(
        {.num_threads = 2,
         .cache_dir = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                   "/loom_measurer_benchmark_kernels")});
    const ops::ConfigSpace& space = f->tmpl->space();
    std::vector<ops::Config> configs;
    for (int64_t fault : {0, 1}) {
      std::vector<int64_t> choices = space.Choices(f->tmpl->DefaultConfig());
      for (size_t i = 0; i < space.knobs().size(); ++i) {
        if (space.knobs()[i].name == "fault") choices[i] = fault;
      }
      configs.push_back(space.FromChoices(choices));
    }
    f->built = f->builder->Build(*f->tmpl, configs);
    return f;
  }();
  return *f;
}

MeasureOptions Options() {
  MeasureOptions o;
  o.repeat = 1;
  o.min_repeat_ms = 0;
  o.worker_command = {std::filesystem::read_symlink("/proc/self/exe").string(), kMeasureWorkerArg};
  return o;
}

void BM_BuildCacheHit(benchmark::State& state) {
  Fixture& f = Get();
  for (auto _ : state) {
    std::vector<BuildResult> r = f.builder->Build(*f.tmpl, {f.built[0].config});
    if (!r[0].cache_hit) state.SkipWithError("expected a cache hit");
  }
}
BENCHMARK(BM_BuildCacheHit)->Unit(benchmark::kMicrosecond);

void BM_MeasureRoundTrip(benchmark::State& state) {
  Fixture& f = Get();
  auto m = *MakeLocalMeasurer(Options());
  m->Measure(f.task, {f.built[0]});  // start the worker, prepare the task
  for (auto _ : state) {
    std::vector<MeasureResult> r = m->Measure(f.task, {f.built[0]});
    if (!r[0].ok()) state.SkipWithError(r[0].error_msg.c_str());
  }
}
BENCHMARK(BM_MeasureRoundTrip)->Unit(benchmark::kMicrosecond);

void BM_CrashAndRestart(benchmark::State& state) {
  Fixture& f = Get();
  auto m = *MakeLocalMeasurer(Options());
  m->Measure(f.task, {f.built[0]});
  for (auto _ : state) {
    std::vector<MeasureResult> r = m->Measure(f.task, {f.built[1], f.built[0]});
    if (r[0].error != ErrorKind::kRuntime || !r[1].ok()) state.SkipWithError("unexpected result");
  }
}
BENCHMARK(BM_CrashAndRestart)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace loom::tune

int main(int argc, char** argv) {
  if (std::optional<int> worker = loom::tune::RunHostedWorker(argc, argv)) return *worker;
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
