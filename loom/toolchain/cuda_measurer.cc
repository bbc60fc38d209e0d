// CudaMeasurer: the Measurer for one GPU. Keeps one worker process (cuda_measure_worker.h) that
// owns the GPU's context, and talks to it through WorkerProcess (worker_process.h). A candidate
// that outlives its run timeout gets the worker SIGKILLed (kRunTimeout); a worker that dies or
// reports a sticky CUDA error is a kRuntime record; either way the next candidate gets a fresh
// worker and context. When the worker reports no driver or no device, every candidate of the
// batch gets that reason (kUnknown) without restarting the worker for each.
#include <sched.h>

#include <algorithm>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/cuda_measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/worker_measurer.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

class CudaMeasurer : public WorkerMeasurer {
 public:
  explicit CudaMeasurer(CudaMeasureOptions options)
      : WorkerMeasurer(Settings(options)), options_(std::move(options)) {}

 private:
  static WorkerSettings Settings(const CudaMeasureOptions& o) {
    WorkerSettings s = WorkerSettingsFrom(o, kCudaMeasureWorkerArg);
    s.name = "CUDA measure worker";
    s.start_name = absl::StrCat("CUDA measure worker of device ", o.device);
    s.profile = ConfinePlan::Profile::kCuda;
    return s;
  }

  json TaskRequest(const MeasureTask& task) const override {
    const ops::CudaDeviceLimits& l = task.target.cuda_limits;
    return json{{"op", "task"},
                {"workload", task.workload_key},
                {"arch", task.target.cuda_arch},
                {"device_name", task.target.device_name},
                {"limits",
                 {{"max_threads_per_block", l.max_threads_per_block},
                  {"max_shared_bytes_per_block", l.max_shared_bytes_per_block},
                  {"max_regs_per_block", l.max_regs_per_block},
                  {"num_sms", l.num_sms},
                  {"warp_size", l.warp_size}}},
                {"test_faults", task.template_options.test_faults},
                {"seed", options_.seed}};
  }

  json InitRequest() const override {
    return json{{"op", "init"},
                {"device", options_.device},
                {"library", options_.driver_library},
                {"cores", options_.cores}};
  }

  // No driver, no device: kUnavailable.
  absl::Status AcceptInit(const json& b) override {
    if (!b.value("ok", false)) {
      return absl::UnavailableError(
          absl::StrCat("CUDA device ", options_.device, ": ", b.value("error", "")));
    }
    info_ = DeviceInfo{};
    info_.confinement = b.value("confined", "");
    info_.worker_pid = b.value("pid", int64_t{0});
    info_.cpus = b.value("cpus", std::vector<int>{});
    info_.device_name = b.value("name", "");
    info_.cuda_arch = b.value("arch", "");
    info_.cuda_limits.max_threads_per_block = b.value("max_threads_per_block", 0);
    info_.cuda_limits.max_shared_bytes_per_block = b.value("max_shared_bytes_per_block", 0);
    info_.cuda_limits.max_regs_per_block = b.value("max_regs_per_block", 0);
    info_.cuda_limits.num_sms = b.value("sms", 0);
    info_.cuda_limits.warp_size = b.value("warp_size", 0);
    info_.memory_bytes = b.value("memory_bytes", int64_t{0});
    info_.driver_version = b.value("driver_version", 0);
    return absl::OkStatus();
  }

  void BeginBatch() override { unavailable_ = absl::OkStatus(); }

  MeasureResult MeasureCandidate(const MeasureTask& task, const json& task_request,
                                 const BuildResult& b) override {
    MeasureResult r;
    if (!unavailable_.ok()) {
      r.error = ErrorKind::kUnknown;
      r.error_msg = std::string(unavailable_.message());
      return r;
    }
    if (task.target.kind != "cuda") {
      r.error = ErrorKind::kUnknown;
      r.error_msg = absl::StrCat("the CUDA measurer got a task for target '", task.target.Key(),
                                 "'; use the CPU measurer for it");
      return r;
    }
    if (absl::Status s = EnsureWorker(); !s.ok()) {
      unavailable_ = s;
      r.error = ErrorKind::kUnknown;
      r.error_msg = std::string(s.message());
      return r;
    }
    // The worker's user may not reach this process's cache: it reads a copy in its sandbox.
    std::optional<WorkerReply> reply =
        RunCandidate(task_request, b, "cannot read cubin: ", json::object(), r);
    // The worker exits after a sticky CUDA error; reap it now so the next candidate starts a
    // fresh one instead of writing to a dying process.
    if (reply.has_value() && reply->kind == WorkerReply::Kind::kOk &&
        !reply->body.value("ok", false) && reply->body.value("fatal", false)) {
      StopWorker();
    }
    return r;
  }

  CudaMeasureOptions options_;
  // Set once the worker reported no driver or device in this batch: the batch's other
  // candidates get the same reason without a restart each.
  absl::Status unavailable_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Measurer>> MakeCudaMeasurer(const CudaMeasureOptions& options) {
  if (options.device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaMeasureOptions.device must not be negative, got ", options.device));
  }
  if (options.number < 1 || options.repeat < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaMeasureOptions.number and .repeat must be at least 1, got ",
                     options.number, " and ", options.repeat));
  }
  if (options.min_repeat_ms < 0) {
    return absl::InvalidArgumentError("CudaMeasureOptions.min_repeat_ms must not be negative");
  }
  if (options.timeout <= absl::ZeroDuration() || options.setup_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "CudaMeasureOptions.timeout and .setup_timeout must be positive");
  }
  if (options.confine.enabled) LOOM_RETURN_IF_ERROR(ValidateConfineOptions(options.confine));
  for (int c : options.cores) {
    if (c < 0 || c >= CPU_SETSIZE) {
      return absl::InvalidArgumentError(
          absl::StrCat("CudaMeasureOptions.cores: core ", c, " is out of range"));
    }
  }
  return std::unique_ptr<Measurer>(new CudaMeasurer(options));
}

}  // namespace loom::tune
