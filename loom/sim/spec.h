// The simulator's input: a YAML spec of hosts and devices, job groups (tasks x rounds of stages
// with duration distributions), the policies to compare, the interference model and the seed.
// Parsed strictly: an unknown key is an error naming the key and its path. Called by
// `loom simulate` (cli/simulate_command.cc) and the simulator tests.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/base/rng.h"
#include "loom/sched/types.h"

namespace loom::sim {

// A stage-duration distribution, in seconds. Samples are clamped to at least 1 ms.
struct DurationDist {
  enum class Kind { kConstant, kNormal, kLognormal, kTrace };
  Kind kind = Kind::kConstant;
  double mean_s = 1.0;
  double stddev_s = 0.0;
  std::vector<double> samples_s;  // kTrace: recorded durations, resampled uniformly

  double Sample(base::Rng& rng) const;
  double Mean() const;
};

struct StageSpec {
  sched::StageKind kind = sched::StageKind::kOther;
  int cpu_slots = 0;
  std::string device_kind;  // empty: CPU-only stage
  DurationDist duration;
  // Device stages only: the fraction of the stage's time alone that is time-bounded, i.e. does
  // not grow when k stages share the device (a CPU measurer's timed repeats last min_repeat_ms
  // however fast the kernel runs; only the run count shrinks). YAML key `time_bounded`, in [0, 1].
  double time_bounded = 0;
};

// `count` identical jobs, each tasks x rounds of `stages` run in order (up to `spread` tasks at a
// time).
struct JobGroupSpec {
  std::string name = "job";
  int count = 1;
  int priority = 0;
  double submit_at_s = 0;     // the first job's submission time
  double submit_every_s = 0;  // spacing between the group's jobs
  int tasks = 1;
  int rounds = 1;
  // Tasks of one job in flight at once (a job that spreads over devices: its tasks' rounds run in
  // parallel, each task's stages still in order). 1: one task after another. At least 1.
  int spread = 1;
  std::vector<StageSpec> stages;
};

struct DeviceSpecYaml {
  std::string name;
  std::string kind;
  int shares_cpu_slots = 0;
};

struct HostSpecYaml {
  std::string name;
  int cpu_slots = 1;
  std::vector<DeviceSpecYaml> devices;
};

// How co-running stages slow each other when resources are shared past capacity (only the
// `uncontrolled` policy does that):
//  - CPU: a host whose running stages want more slots than it has runs them all at
//    capacity / demand speed (processor sharing), and a stage of kind K is further slowed by
//    1 + cpu_slowdown_per_extra_job[K] for each other job on the host (the thesis measured the
//    model update 64% slower with two jobs: update = 0.64);
//  - device: k stages on one device time-share it: the work-bounded part (1 - f) of a stage runs at
//    1/k speed, its time-bounded part f (StageSpec::time_bounded) at full speed, so the stage
//    advances at 1 / (f + (1 - f) k) of its speed alone (f = 0: plain time sharing);
//  - distortion: a measurement's timing error grows by measure_distortion_per_corunner per
//    other stage on its device, and by that much again when its host is oversubscribed.
struct InterferenceSpec {
  std::array<double, sched::kNumStageKinds> cpu_slowdown_per_extra_job{0, 0, 0, 0.64, 0};
  bool device_time_sharing = true;
  double measure_distortion_per_corunner = 0.05;
};

struct SimSpec {
  uint64_t seed = 1;
  std::vector<HostSpecYaml> hosts;
  std::vector<JobGroupSpec> jobs;
  std::vector<std::string> policies{"sequential", "uncontrolled", "interleaved", "predictive"};
  InterferenceSpec interference;
  std::vector<int> sweep_jobs;  // when set, each value replaces every group's count in turn
};

// `base_dir` resolves relative trace paths.
absl::StatusOr<SimSpec> ParseSimSpec(std::string_view yaml, const std::string& base_dir = ".");
absl::StatusOr<SimSpec> LoadSimSpec(const std::string& path);

// Recorded stage durations of one kind from a JSON-lines trace
// ({"kind": "build", "start": 1.5, "end": 9.0, "resource": "host0"} per line; seconds).
absl::StatusOr<std::vector<double>> LoadTraceDurations(const std::string& path,
                                                       sched::StageKind kind);

}  // namespace loom::sim
