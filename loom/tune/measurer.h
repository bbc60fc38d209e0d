// The Measure stage: runs built candidates on a device and times them, one MeasureResult per
// candidate with its own error. The CPU implementation (MakeLocalMeasurer) runs kernels in a
// sandboxed, core-pinned worker process (measure_worker.h) that is restarted after a crash or a
// hang, so a bad candidate is an error record and never a dead tuner. Called by the tune loop's
// Measure stage while it holds the device's lease; FakeMeasurer (fake_measurer.h) stands in for
// it in tests of the layers above.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/tune/measure_result.h"

namespace loom::tune {

// What the candidates of one Measure call were built for: the worker rebuilds the same template
// from it (ops::MakeTemplate(ParseWorkloadKey(workload_key), target, template_options)).
struct MeasureTask {
  std::string workload_key;  // graph::WorkloadKey
  ops::Target target{};
  ops::TemplateOptions template_options{};
};

struct MeasureOptions {
  // Kernel runs per repeat to start from; grown until one repeat lasts `min_repeat_ms`.
  int32_t number = 1;
  // Timed repeats; MeasureResult::costs holds one cost (seconds per run) per repeat.
  int32_t repeat = 3;
  // Minimum length of one repeat. AutoTVM's CPU default is 100 ms+; 50 ms keeps a 3-repeat
  // measurement near 0.2 s while timer noise stays far below 1%. Tests use 1-5 ms.
  int32_t min_repeat_ms = 50;
  // Write a buffer larger than the last-level cache before each repeat, so every repeat starts
  // cold (closer to a kernel's cost inside a whole network).
  bool flush_cache = false;
  // Run timeout of one candidate, on top of its expected time ((repeat + 3) * min_repeat_ms):
  // past it the worker is SIGKILLed, the candidate is kRunTimeout and the worker restarts.
  absl::Duration timeout = absl::Seconds(10);
  // Limit for starting the worker and for preparing a task in it (template, random inputs,
  // reference output computed by the plain reference kernels).
  absl::Duration setup_timeout = absl::Seconds(120);
  // The device: CPU ids the worker pins itself to (sched_setaffinity). Empty: not pinned (the
  // worker inherits this process's CPU set).
  std::vector<int> cores{};
  // argv of the worker process: a binary that calls RunMeasureWorker(0, 1) when given its
  // subcommand. Empty: this executable, i.e. {"/proc/self/exe", "__measure-worker"} (the `loom`
  // binary hosts the worker under that hidden subcommand).
  std::vector<std::string> worker_command{};
  // Seed of the random natural inputs the worker generates per task.
  uint64_t seed = 0;
};

// What the device worker reports about itself.
struct DeviceInfo {
  int64_t worker_pid = 0;
  std::vector<int> cpus;  // the worker's allowed CPU set after pinning, ascending
};

class Measurer {
 public:
  virtual ~Measurer() = default;

  // Measures `built` (the Build stage's output for `task`), results in the same order. A
  // candidate whose build failed passes through with its own error and is not run. Never fails
  // as a whole: a worker that cannot start gives every candidate kUnknown with the reason.
  // Calls are serialized (the device runs one measurement at a time).
  virtual std::vector<MeasureResult> Measure(const MeasureTask& task,
                                             const std::vector<BuildResult>& built) = 0;

  // Starts the device worker if needed and reports what it sees. Errors: kUnavailable when the
  // worker cannot be started or does not answer, kFailedPrecondition when it could not be pinned
  // to exactly the requested cores.
  virtual absl::StatusOr<DeviceInfo> Probe() = 0;
};

// The CPU measurer over a sandboxed worker process. kInvalidArgument for bad options (number,
// repeat < 1, negative min_repeat_ms, non-positive timeouts, negative or duplicate cores). The
// worker starts lazily, at the first Measure or Probe.
absl::StatusOr<std::unique_ptr<Measurer>> MakeLocalMeasurer(const MeasureOptions& options);

}  // namespace loom::tune
