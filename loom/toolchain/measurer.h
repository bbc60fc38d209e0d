// The Measure stage: runs built candidates on a device and times them, one MeasureResult per
// candidate with its own error. The CPU implementation (MakeLocalMeasurer) runs kernels in a
// sandboxed, core-pinned worker process (measure_worker.h) that is restarted after a crash or a
// hang, so a bad candidate is an error record and never a dead tuner. Called by the tune loop's
// Measure stage while it holds the device's lease; FakeMeasurer (testing/fake_measurer.h) stands in
// for it in tests of the layers above (the test-only library loom_toolchain_testing).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/measure_result.h"

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
  // The worker's sandbox (confine.h): on by default; a kernel that refuses a layer makes the
  // worker's start fail (Probe: kFailedPrecondition naming the layer).
  ConfineOptions confine{};
};

// What the device worker reports about itself.
struct DeviceInfo {
  int64_t worker_pid = 0;
  // What the worker's sandbox enforces (ConfineThisProcess's description); empty: unconfined.
  std::string confinement;
  std::vector<int> cpus;  // the worker's allowed CPU set after pinning, ascending
  // CUDA measurer only: the GPU as its driver reports it.
  std::string device_name;  // "NVIDIA H100 80GB HBM3"
  std::string cuda_arch;    // "sm_90"
  ops::CudaDeviceLimits cuda_limits{};
  int64_t memory_bytes = 0;
  int32_t driver_version = 0;  // 13000 = CUDA 13.0
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
// repeat < 1, negative min_repeat_ms, non-positive timeouts, negative or duplicate cores, bad
// confine limits). The worker starts lazily, at the first Measure or Probe; confined, it runs
// each candidate from a copy staged in its sandbox, and a candidate killed by the sandbox is a
// kRuntime record naming the forbidden system call.
absl::StatusOr<std::unique_ptr<Measurer>> MakeLocalMeasurer(const MeasureOptions& options);

struct CudaMeasureOptions {
  int32_t device = 0;  // CUDA device ordinal ("cuda:0")
  // As MeasureOptions; GPU kernels run in microseconds, so one repeat is many launches.
  int32_t number = 1;
  int32_t repeat = 3;
  int32_t min_repeat_ms = 150;
  absl::Duration timeout = absl::Seconds(10);
  // Starting the worker includes loading the driver and creating the GPU context (seconds).
  absl::Duration setup_timeout = absl::Seconds(120);
  // The driver library the worker dlopens; empty: "libcuda.so.1" (tests pass a fake one).
  std::string driver_library{};
  // argv of the worker process; empty: {"/proc/self/exe", "__cuda-measure-worker"}.
  std::vector<std::string> worker_command{};
  // CPU cores the worker (the thread that launches kernels) is pinned to; empty: not pinned.
  std::vector<int> cores{};
  uint64_t seed = 0;  // of the random natural inputs
  // The worker's sandbox (confine.h, profile kCuda: the driver keeps its device files, ioctls
  // and address space).
  ConfineOptions confine{};
};

// The CUDA measurer (cuda_measurer.cc): one sandbox worker process per GPU
// (cuda_measure_worker.h) loads each candidate's cubin, checks its first run against the
// template's reference, and times it with CUDA events (one warm-up launch, `number` grown until
// a repeat lasts min_repeat_ms, `repeat` repeats). A sticky CUDA error (illegal address, ...) or a
// crash ends the worker, a hang gets it SIGKILLed; the candidate is a kRuntime / kRunTimeout
// record and the next one gets a fresh worker and context. Without a driver or a device, Probe is
// kUnavailable and every candidate gets kUnknown with that reason. kInvalidArgument for bad
// options. The worker starts lazily.
absl::StatusOr<std::unique_ptr<Measurer>> MakeCudaMeasurer(const CudaMeasureOptions& options);

}  // namespace loom::tune
