// LocalMachine: the set-up of tuning on this machine, in one place. From a few typed options it
// derives the machine layout (the measurement device's cores, the cores and threads left for
// builds), picks the builder and measurer for the target (g++ and the sandboxed CPU measure
// worker, or NVRTC and the CUDA measure worker), probes the device (a CUDA target takes its
// architecture, limits and name from the driver), reads a tuning prior for the target's class and
// names jobs. `loom tune`, `loom tune-task`, `loom experiment` and loom::Model::Tune call it;
// every failure is a one-line absl::Status (nothing throws), so the library can use it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/search/prior.h"
#include "loom/search/tuner.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/measurer.h"

namespace loom::tune {

struct LocalMachineOptions {
  // "cpu" (this CPU), "cuda" (the GPU's own architecture) or "cuda:sm_XY".
  std::string target = "cpu";
  // cpu only: the ISA to generate for ("avx512", "avx2", "generic"); empty: the host's best.
  std::string isa;
  // cuda only: the GPU, "cuda:N"; empty: cuda:0.
  std::string device;
  // The measurement device's cores (cpu), or the core that launches kernels (cuda). Empty: the
  // last core. Each must exist and appear once.
  std::vector<int> device_cores;
  // Parallel compiles; 0: the cores outside the device, at least 1.
  int build_threads = 0;
  // Shortest timed repeat; -1: the measurer's default (50 ms CPU, 150 ms CUDA).
  int min_repeat_ms = -1;
  // Timed repeats per measurement; 0: the measurer's default (3).
  int repeat = 0;
  // Seconds a candidate may run past its expected time before it counts as hung.
  absl::Duration run_timeout = absl::Seconds(10);
  // The sandbox of measure workers and compilers (confine.h).
  ConfineOptions confine;
  // The kernel cache (BuildOptions::use_cache); false compiles every candidate afresh.
  bool use_kernel_cache = true;
  // argv of the CPU measure worker; empty: this executable's hidden subcommand.
  std::vector<std::string> measure_worker;
  // What the options are called in messages: "--" for the CLI's flags, "TuneOptions." for the
  // library, "" for a spec file.
  std::string option_prefix = "--";
};

// Parses "0,3,5" (comma-separated non-negative integers). kInvalidArgument naming `what` (a flag
// or field) otherwise, or when the list is empty.
absl::StatusOr<std::vector<int64_t>> ParseIndexList(const std::string& text,
                                                    const std::string& what);

class LocalMachine {
 public:
  // Validates the options against this machine (kInvalidArgument naming the option: an unknown
  // target or ISA, --isa with cuda, --device with cpu, a core that does not exist or repeats).
  // Starts nothing; Probe() does.
  static absl::StatusOr<LocalMachine> Create(const LocalMachineOptions& options);

  // The target: for cpu final at Create; for cuda, final after Probe().
  const ops::Target& target() const { return target_; }
  bool cuda() const { return target_.kind == "cuda"; }
  int num_cpus() const { return num_cpus_; }
  const std::vector<int>& device_cores() const { return device_cores_; }
  // The cores outside the device, ascending (may be empty on a one-core machine).
  const std::vector<int>& cpu_cores() const { return cpu_cores_; }
  // Parallel compiles of a build (options.build_threads, else the cores outside the device).
  int build_threads() const { return build_threads_; }
  int cuda_ordinal() const { return cuda_ordinal_; }
  // The device as the scheduler names it: "device:cpu:1,2" or "device:cuda:0".
  std::string DeviceResource() const;

  // The builder for the target: g++ (MakeLocalBuilder) or NVRTC, with `options`'s threads and
  // placement hooks and this machine's confinement and cache choice.
  absl::StatusOr<std::unique_ptr<Builder>> MakeBuilder(BuildOptions options) const;
  // The default build options: build_threads() compiles.
  absl::StatusOr<std::unique_ptr<Builder>> MakeBuilder() const;
  // The measurer for the target, its worker pinned to `cores`.
  absl::StatusOr<std::unique_ptr<Measurer>> MakeMeasurer(const std::vector<int>& cores) const;
  // On device_cores().
  absl::StatusOr<std::unique_ptr<Measurer>> MakeMeasurer() const;

  // Starts a measure worker once, so that a sandbox the kernel refuses, or a host without a CUDA
  // driver or device, fails here before any work. A CUDA target then takes the device's
  // architecture (unless one was named), limits and name. When `measurer` is given it is probed
  // (and kept by the caller); else a temporary one is.
  absl::Status Probe(Measurer* measurer = nullptr);

  // A tuning prior read from `path` for this target's class: kNotFound / kInvalidArgument from
  // the file, kInvalidArgument when it is another class's. Empty path: nullptr (the built-in).
  absl::StatusOr<std::shared_ptr<const search::TuningPrior>> ReadPrior(
      const std::string& path) const;

  // `requested` when set, else DefaultJobId (the same for the same work, so a rerun resumes).
  std::string JobId(const std::vector<graph::Task>& tasks, const search::TunerOptions& tuner,
                    const std::string& requested = "") const;

 private:
  LocalMachine() = default;

  LocalMachineOptions options_;
  ops::Target target_;
  int num_cpus_ = 1;
  std::vector<int> device_cores_;
  std::vector<int> cpu_cores_;
  int build_threads_ = 1;
  int cuda_ordinal_ = 0;
};

}  // namespace loom::tune
