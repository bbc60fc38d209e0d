// Scheduler throughput: a full run of tuning-shaped jobs (rounds of propose -> build ->
// measure -> update) on 100 hosts with 1,000 devices, driven by a minimal event loop on a virtual
// clock. Reports decisions (grants: the figure) and placement decisions (grants and
// "wait" decisions) per second of CPU time, including the driver, and the scheduler's peak heap
// use (glibc mallinfo2) so memory can be compared across job counts.
#include <malloc.h>

#include <queue>
#include <tuple>

#include "benchmark/benchmark.h"
#include "loom/base/rng.h"
#include "loom/sched/scheduler.h"

namespace loom::sched {
namespace {

constexpr int kHosts = 100;
constexpr int kDevicesPerHost = 10;
constexpr int kSlotsPerHost = 32;
constexpr int kRounds = 5;

size_t HeapInUse() { return mallinfo2().uordblks; }

struct RunStats {
  int64_t grants = 0;
  int64_t attempts = 0;
  size_t peak_heap = 0;
  double makespan_s = 0;
};

RunStats FullRun(std::string_view policy, int jobs, uint64_t seed) {
  const size_t heap0 = HeapInUse();
  RunStats out;
  auto p = MakePolicy(policy);
  SchedulerOptions options;
  options.default_lease = absl::InfiniteDuration();
  Scheduler s(std::move(*p), options);
  for (int h = 0; h < kHosts; ++h) {
    (void)s.AddHost({"h" + std::to_string(h), kSlotsPerHost});
    for (int d = 0; d < kDevicesPerHost; ++d) (void)s.AddDevice({"g", "gpu", h, 0});
  }
  static constexpr StageKind kKinds[] = {StageKind::kPropose, StageKind::kBuild,
                                         StageKind::kMeasure, StageKind::kUpdate};
  static constexpr double kMean[] = {4, 12, 20, 6};
  base::Rng rng(seed);
  std::vector<int> next(jobs + 1, 0);
  auto submit = [&](JobId job, double now) {
    int i = next[job]++;
    StageKind kind = kKinds[i % 4];
    ResourceNeed need;
    if (kind == StageKind::kMeasure) {
      need.device_kind = "gpu";
    } else {
      need.cpu_slots = kind == StageKind::kBuild ? 4 : 1;
    }
    (void)s.Submit(StageRequest{job, kind, need, std::nullopt, {}},
                   absl::UnixEpoch() + absl::Seconds(now));
  };
  for (int j = 0; j < jobs; ++j) {
    JobId id = *s.AddJob({"j", "u", 0, absl::UnixEpoch()});
    submit(id, 0);
  }
  using Ev = std::tuple<double, LeaseId, JobId, int>;
  std::priority_queue<Ev, std::vector<Ev>, std::greater<>> running;
  double now = 0;
  int64_t events = 0;
  while (true) {
    for (const Grant& g : s.Advance(absl::UnixEpoch() + absl::Seconds(now))) {
      int kind = static_cast<int>(g.kind);
      double d = kMean[kind == 4 ? 0 : kind] * rng.Uniform(0.5, 1.5);
      running.push({now + d, g.lease, g.job, 0});
    }
    if (++events % 8192 == 0) out.peak_heap = std::max(out.peak_heap, HeapInUse() - heap0);
    if (running.empty()) break;
    now = std::get<0>(running.top());
    while (!running.empty() && std::get<0>(running.top()) <= now) {
      auto [t, lease, job, unused] = running.top();
      running.pop();
      (void)s.Complete(lease, absl::UnixEpoch() + absl::Seconds(now));
      if (next[job] < 4 * kRounds) {
        submit(job, now);
      } else {
        (void)s.CloseJob(job);
      }
    }
  }
  out.grants = s.stats().grants;
  out.attempts = s.stats().placement_attempts;
  out.makespan_s = now;
  return out;
}

void BM_FullRun(benchmark::State& state, std::string_view policy) {
  const int jobs = static_cast<int>(state.range(0));
  RunStats last;
  int64_t grants = 0;
  for (auto _ : state) {
    last = FullRun(policy, jobs, 1);
    grants += last.grants;
  }
  state.counters["decisions_per_s"] =
      benchmark::Counter(static_cast<double>(grants), benchmark::Counter::kIsRate);
  state.counters["decisions"] = static_cast<double>(last.grants);
  state.counters["placement_attempts"] = static_cast<double>(last.attempts);
  // Every placement attempt is a decision too: a grant or a "wait".
  state.counters["placements_per_s"] = benchmark::Counter(
      static_cast<double>(last.attempts) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["peak_heap_MiB"] = static_cast<double>(last.peak_heap) / (1 << 20);
  state.counters["heap_bytes_per_job"] = static_cast<double>(last.peak_heap) / jobs;
  state.counters["sim_makespan_s"] = last.makespan_s;
}

BENCHMARK_CAPTURE(BM_FullRun, interleaved, "interleaved")
    ->Arg(2500)
    ->Arg(5000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_FullRun, predictive, "predictive")->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_FullRun, sequential, "sequential")->Arg(10000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace loom::sched

BENCHMARK_MAIN();
