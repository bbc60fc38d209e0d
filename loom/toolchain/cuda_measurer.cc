// CudaMeasurer: the Measurer for one GPU. Keeps one worker process (cuda_measure_worker.h) that
// owns the GPU's context, and talks to it through WorkerProcess (worker_process.h). A candidate
// that outlives its run timeout gets the worker SIGKILLed (kRunTimeout); a worker that dies or
// reports a sticky CUDA error is a kRuntime record; either way the next candidate gets a fresh
// worker and context. When the worker reports no driver or no device, every candidate of the
// batch gets that reason (kUnknown) without restarting the worker for each.
#include <sched.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/cuda_measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

class CudaMeasurer : public Measurer {
 public:
  explicit CudaMeasurer(CudaMeasureOptions options) : options_(std::move(options)) {
    if (options_.worker_command.empty()) {
      options_.worker_command = {"/proc/self/exe", kCudaMeasureWorkerArg};
    }
  }

  std::vector<MeasureResult> Measure(const MeasureTask& task,
                                     const std::vector<BuildResult>& built) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<MeasureResult> results;
    results.reserve(built.size());
    const json task_request = TaskRequest(task);
    absl::Status unavailable;  // set once the worker reported no driver/device in this batch
    for (const BuildResult& b : built) {
      const absl::Time start = absl::Now();
      MeasureResult r;
      if (b.error != ErrorKind::kNone) {
        r.error = b.error;
        r.error_msg = b.error_msg;
      } else if (!unavailable.ok()) {
        r.error = ErrorKind::kUnknown;
        r.error_msg = std::string(unavailable.message());
      } else if (task.target.kind != "cuda") {
        r.error = ErrorKind::kUnknown;
        r.error_msg = absl::StrCat("the CUDA measurer got a task for target '", task.target.Key(),
                                   "'; use the CPU measurer for it");
      } else {
        r = MeasureOne(task_request, b, &unavailable);
      }
      r.config = b.config;
      r.timestamp = absl::Now();
      r.measure_seconds = absl::ToDoubleSeconds(r.timestamp - start);
      results.push_back(std::move(r));
    }
    return results;
  }

  absl::StatusOr<DeviceInfo> Probe() override {
    std::lock_guard<std::mutex> lock(mu_);
    LOOM_RETURN_IF_ERROR(EnsureWorker());
    return info_;
  }

 private:
  json TaskRequest(const MeasureTask& task) const {
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

  // A running worker holding the GPU's context, or why there is none: kUnavailable (no driver,
  // no device, a worker that cannot start or answer).
  absl::Status EnsureWorker() {
    if (worker_.Alive()) return absl::OkStatus();
    loaded_task_.clear();
    json init{{"op", "init"},
              {"device", options_.device},
              {"library", options_.driver_library},
              {"cores", options_.cores}};
    LOOM_RETURN_IF_ERROR(StartWorker(
        worker_, options_.worker_command, options_.confine, ConfinePlan::Profile::kCuda, &sandbox_,
        &init, absl::StrCat("CUDA measure worker of device ", options_.device)));
    WorkerReply reply = worker_.Call(init, options_.setup_timeout);
    const std::string command = absl::StrJoin(options_.worker_command, " ");
    if (reply.kind == WorkerReply::Kind::kTimeout) {
      return absl::UnavailableError(absl::StrCat("the CUDA measure worker '", command,
                                                 "' did not answer within the setup timeout"));
    }
    if (reply.kind == WorkerReply::Kind::kDied) {
      return absl::UnavailableError(
          absl::StrCat("the CUDA measure worker '", command, "' ", reply.reason,
                       " before answering; check that the binary hosts the worker (argument ",
                       kCudaMeasureWorkerArg, ")"));
    }
    if (absl::Status s = CheckConfinedInit(
            reply, sandbox_.get(), absl::StrCat("CUDA measure worker of device ", options_.device));
        !s.ok()) {
      worker_.Stop();
      return s;
    }
    if (!reply.body.value("ok", false)) {
      worker_.Stop();
      return absl::UnavailableError(
          absl::StrCat("CUDA device ", options_.device, ": ", reply.body.value("error", "")));
    }
    const json& b = reply.body;
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

  MeasureResult MeasureOne(const json& task_request, const BuildResult& b,
                           absl::Status* unavailable) {
    MeasureResult r;
    if (absl::Status s = EnsureWorker(); !s.ok()) {
      *unavailable = s;
      r.error = ErrorKind::kUnknown;
      r.error_msg = std::string(s.message());
      return r;
    }
    if (loaded_task_ != task_request.dump()) {
      if (!ReadSetupReply(worker_.Call(task_request, options_.setup_timeout), "CUDA measure worker",
                          r)) {
        return r;
      }
      loaded_task_ = task_request.dump();
    }
    // The worker's user may not reach this process's cache: it reads a copy in its sandbox.
    absl::StatusOr<std::string> staged = StageArtifact(sandbox_.get(), b.artifact_path);
    if (!staged.ok()) {
      r.error = ErrorKind::kRuntime;
      r.error_msg = absl::StrCat("cannot read cubin: ", staged.status().message());
      return r;
    }
    const std::string& artifact = *staged;
    const absl::Duration expected =
        absl::Milliseconds(int64_t{options_.repeat + 3} * options_.min_repeat_ms);
    const absl::Duration timeout = options_.timeout + expected;
    WorkerReply reply = worker_.Call(json{{"op", "measure"},
                                          {"artifact", artifact},
                                          {"config", b.config.index},
                                          {"number", options_.number},
                                          {"repeat", options_.repeat},
                                          {"min_repeat_ms", options_.min_repeat_ms}},
                                     timeout);
    if (sandbox_ != nullptr) sandbox_->Unstage(artifact);
    ReadMeasureReply(reply, timeout, "CUDA measure worker", r);
    // The worker exits after a sticky CUDA error; reap it now so the next candidate starts a
    // fresh one instead of writing to a dying process.
    if (reply.kind == WorkerReply::Kind::kOk && !reply.body.value("ok", false) &&
        reply.body.value("fatal", false)) {
      worker_.Stop(absl::Seconds(5));
    }
    return r;
  }

  CudaMeasureOptions options_;
  std::mutex mu_;                           // one measurement at a time
  std::unique_ptr<WorkerSandbox> sandbox_;  // confine.enabled: made at the first start
  WorkerProcess worker_;  // declared after the sandbox: stopped before its folders go
  DeviceInfo info_;
  std::string loaded_task_;  // the task request the running worker last prepared
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
