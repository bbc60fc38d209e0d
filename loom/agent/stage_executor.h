// Runs one leased stage of a tuning round (loom.v1.StageRequest -> StageResult) with the real
// tuning stages of tune/stages.h: propose and update in the task's session restored from the
// daemon's state (tune::RunRestoredStage: the session's tuner and rules, none of the agent's own),
// build (local compiler for cpu tasks, NVRTC for cuda tasks; only each object's SHA-256 travels
// back), measure (the device's sandboxed CPU or CUDA measurer, one candidate at a time), and a
// simulated stage that only sleeps. Called by the agent (agent.h) on its worker threads; holds no
// job state between stages.
//
// Code never crosses between agents: a measurement runs only an object this executor compiled
// itself, found by hash among its own recent builds, or rebuilt here from the template and config
// (the source is deterministic). Bytes another agent produced are never written or loaded.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "loom/base/thread_pool.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measurer.h"
#include "loom/tune/stages.h"
#include "loom/v1/agent.pb.h"
#include "loom/v1/stage.pb.h"

namespace loom::agent {

// A measurement device of this host. cpu devices are sets of pinned cores ("cpu:1" is core 1,
// "cpu:2-3" cores 2 and 3); cuda devices ("cuda:0") are GPUs by ordinal, whose measure worker
// launches kernels from `cores` (as the embedded engine's MachineLayout::gpu with device_cores;
// empty: not pinned). A cuda device's cores never run CPU stages.
struct Device {
  std::string name;  // as given and as the daemon knows it
  std::string kind;  // "cpu" | "cuda"
  std::vector<int> cores;
  int ordinal = 0;  // cuda
  // cuda: the GPU as its driver reports it (arch "sm_XY", limits, device name for Key()), filled
  // by ProbeCudaDevice (StageExecutor::Create probes every cuda device).
  ops::Target cuda_target{};
  bool probed = false;
};

// "cpu:N", "cpu:N-M" or "cuda:N". kInvalidArgument with the accepted forms otherwise.
absl::StatusOr<Device> ParseDevice(absl::string_view name);

// Options of CUDA measurements: ops::Target limits and arch come from the device, the ordinal and
// the launching cores from each Device. min_repeat_ms defaults to 150 as `loom tune --target cuda`.
// driver_library empty: "libcuda.so.1" through the dynamic linker (tests give a fake driver).
using CudaMeasureOptions = tune::CudaMeasureOptions;

// Asks `device`'s measure worker (a sandboxed process that dlopens the driver) what the GPU is and
// fills device.cuda_target: CudaTarget(sm_XY of its compute capability, its limits) with its
// name. kUnavailable naming the device and the reason when the driver cannot be loaded, reports no
// device, or the ordinal does not exist; kInvalidArgument for a device that is not cuda.
absl::StatusOr<Device> ProbeCudaDevice(Device device, const CudaMeasureOptions& options);

// What the daemon needs to route tasks to `device`: its kind, target key and ISA (cpu) or
// architecture (cuda; from the probe, so call it on a probed device).
v1::DeviceInfo DescribeDevice(const Device& device);

struct ExecutorOptions {
  // Where built artifacts and received artifacts (by content hash) are written. Empty:
  // tune::DefaultKernelCacheDir().
  std::string cache_dir{};
  // Compiler, timeout and flags of builds; num_threads is set per stage from its cpu_slots.
  tune::BuildOptions build{};
  // Repeats, timeouts and worker command of measurements; cores are set per device.
  tune::MeasureOptions measure{};
  // The same for cuda devices (device ordinal and cores are set per device).
  CudaMeasureOptions cuda_measure{};
  // The devices MEASURE stages may name.
  std::vector<Device> devices{};
  // Cores for CPU stages: the thread running a propose, build or update stage, and every
  // compiler it starts, is confined to them (sched_setaffinity), so CPU work never lands on a
  // device's cores during a measurement. Empty: not confined.
  std::vector<int> cpu_cores{};
  // Host name, the prefix of StageTiming.resource ("<host>/cpu:1", "<host>/cpu").
  std::string host = "local";
  // Adds the templates' `fault` knob. Tests only: the daemon's config indices then mean other
  // configs, so a real agent never sets it.
  ops::TemplateOptions template_options{};
  // Largest artifact built (bytes); larger ones become per-candidate errors.
  int64_t max_artifact_bytes = 64 << 20;
  // Objects this executor built, remembered by hash so a measurement of them needs no rebuild.
  int max_own_objects = 4096;
  // Tests only: makes the builder of a stage (e.g. one writing the fake CUDA driver's kernels);
  // empty: the host compiler for cpu tasks, NVRTC for cuda tasks.
  std::function<absl::StatusOr<std::unique_ptr<tune::Builder>>(const ops::Target& target,
                                                               const tune::BuildOptions& options)>
      make_builder{};
};

// Set to true by the caller to abandon a running stage (the daemon cancelled its lease or the
// agent is shutting down). Simulated stages stop at once; real stages stop before their next
// compile or candidate (StageExecutor::Cancel also kills the running ones) and their result is
// then dropped by the caller.
using CancelFlag = std::atomic<bool>;

// Where a CPU stage's work runs, supplied by the agent's sched::CorePlacer (sched/core_placer.h).
// Without hooks a CPU stage is confined to ExecutorOptions.cpu_cores.
struct StageHooks {
  // Called on every thread before it works for the stage: the stage's own thread, and each
  // build thread before it starts a compiler (which inherits the thread's affinity).
  std::function<void()> enter_thread{};
  // Called with each compiler's pid (its process group id) right after it started.
  std::function<void(int pid)> compile_started{};
};

// The measure options a stage runs with: `base` with the non-zero fields of `spec` over it
// (flush_cache: either). kInvalidArgument for negative or non-finite fields.
absl::StatusOr<tune::MeasureOptions> LayerMeasureSpec(const tune::MeasureOptions& base,
                                                      const v1::MeasureSpec& spec);
// The same for a cuda measurement (flush_cache does not apply to GPUs and is ignored).
absl::StatusOr<CudaMeasureOptions> LayerCudaMeasureSpec(const CudaMeasureOptions& base,
                                                        const v1::MeasureSpec& spec);

// Executes stages of cpu tasks (on cpu devices) and cuda tasks (on cuda devices; built with NVRTC
// for TaskSpec.cuda_arch on any agent). Thread-safe: the agent runs CPU stages concurrently.
// Measurements of one device are serialized here unless the request is oversubscribed (then each
// runs at once on its own measurer). Measurers are pooled per device and measure options, created
// at first use, their workers pinned to the device's cores; an idle one is reused, preferably by
// the job that used it last (its worker has the job's task set up).
class StageExecutor {
 public:
  // kInvalidArgument for bad options (devices with repeated names, non-positive batch size).
  // Probes each cuda device that is not probed yet (ProbeCudaDevice): its error (no driver, no
  // such GPU) fails Create, so an agent never starts with a device it cannot measure on. With
  // measure.confine on, each cpu device's worker is started confined once: a kernel that refuses
  // the sandbox fails Create (kFailedPrecondition naming the device and the layer).
  static absl::StatusOr<std::unique_ptr<StageExecutor>> Create(const ExecutorOptions& options);

  // Runs `request` on the calling thread (which a CPU stage confines to `cpu_cores`, for good).
  // Never fails as a whole: a malformed request (unknown workload or template, unknown device,
  // empty inputs, indices outside the config space, a session state that does not restore, a
  // propose or update without session state from an older daemon) comes back
  // with StageResult.error set and no output; per-candidate failures (instantiation, compile,
  // crash, wrong answer, timeouts) are in the output, one entry per candidate. `timing` is always
  // filled. `cancel` may be null.
  v1::StageResult Execute(const v1::StageRequest& request, const CancelFlag* cancel = nullptr,
                          const StageHooks* hooks = nullptr);

  // Stops the stage of `lease_id` now: SIGKILLs its compilers' process groups and its measure
  // worker, and every compiler it starts later. The caller also sets the stage's CancelFlag.
  // Thread-safe; a lease that is not running is remembered briefly (a stage about to start).
  void Cancel(const std::string& lease_id);

  const ExecutorOptions& options() const { return options_; }

  // Kernels found in the build cache and compiled by this executor's builds (build stages and a
  // measure stage's rebuilds) since it was created; the agent reports them in its heartbeat.
  struct CacheCounts {
    int64_t hits = 0;
    int64_t misses = 0;
  };
  CacheCounts cache_counts() const { return {cache_hits_.load(), cache_misses_.load()}; }

 private:
  explicit StageExecutor(ExecutorOptions options) : options_(std::move(options)) {}

  std::atomic<int64_t> cache_hits_{0};
  std::atomic<int64_t> cache_misses_{0};

  // A measurer and the one thread that calls it. Its worker process dies with the thread that
  // started it (PR_SET_PDEATHSIG), so it is started and used on this long-lived thread, never on
  // a stage thread that ends after the stage (which would kill the worker, and a later
  // measurement with it).
  struct PooledMeasurer {
    std::string key;                           // of its measure options
    std::string job;                           // that used it last
    std::unique_ptr<base::ThreadPool> thread;  // declared first: outlives the measurer
    std::unique_ptr<tune::Measurer> measurer;
  };
  struct DeviceSlot {
    Device device;
    // Held for the whole of one measurement that is not oversubscribed: the device is exclusive.
    std::mutex mu;
    std::mutex pool_mu;
    std::vector<PooledMeasurer> idle ABSL_GUARDED_BY(pool_mu);  // least recently used first
  };

  // The processes of one running stage, killed by Cancel.
  struct LeaseProcesses {
    bool cancelled = false;
    std::vector<int> compile_groups;  // process group ids of its compilers
    int worker = 0;                   // its measure worker's pid while a candidate runs
  };

  absl::StatusOr<v1::ProposeOutput> Propose(const v1::StageRequest& request);
  absl::StatusOr<v1::BuildOutput> Build(const v1::StageRequest& request, const StageHooks* hooks);
  absl::StatusOr<v1::MeasureOutput> Measure(const v1::StageRequest& request,
                                            const CancelFlag* cancel);
  // Compiles `configs` of `request`'s task with this host's compiler (or NVRTC), its compilers
  // registered for Cancel; remembers each object built.
  absl::StatusOr<tune::BuildOutput> BuildHere(const v1::StageRequest& request,
                                              const std::vector<ops::Config>& configs,
                                              int num_threads, const StageHooks* hooks);
  // The path of this executor's own object of SHA-256 `hash`, if it still has it unchanged.
  std::optional<std::string> OwnObject(const std::string& hash);
  void RememberObject(const std::string& hash, const std::string& path);
  // Registers a process of `lease`; false (and the process killed) when the lease is cancelled.
  bool Track(const std::string& lease, int compile_group, int worker);
  absl::StatusOr<v1::UpdateOutput> Update(const v1::StageRequest& request);
  absl::Status Simulate(const v1::StageRequest& request, const CancelFlag* cancel);

  ExecutorOptions options_;
  std::map<std::string, std::unique_ptr<DeviceSlot>> devices_;  // fixed after Create

  std::mutex procs_mu_;
  std::map<std::string, LeaseProcesses> procs_ ABSL_GUARDED_BY(procs_mu_);  // by lease id
  std::mutex objects_mu_;
  // hash -> path of objects built here, oldest first in `object_order_` (bounded).
  std::map<std::string, std::string> objects_ ABSL_GUARDED_BY(objects_mu_);
  std::deque<std::string> object_order_ ABSL_GUARDED_BY(objects_mu_);
};

// SHA-256 of `data`, lowercase hex: Artifact.content_hash.
std::string Sha256Hex(absl::string_view data);

}  // namespace loom::agent
