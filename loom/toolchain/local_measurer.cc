// LocalMeasurer: the CPU Measurer. Keeps one long-lived worker process (measure_worker.h) pinned
// to the device's cores and talks to it through WorkerProcess (worker_process.h). A candidate that
// outlives its run timeout gets the worker SIGKILLed; a worker that dies mid-candidate is a
// runtime error naming the signal. Either way the next candidate gets a fresh worker. Unless
// MeasureOptions.confine is off, the worker confines itself at init (confine.h) inside a
// WorkerSandbox whose inbox receives a copy of each candidate.
#include <sched.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

class LocalMeasurer : public Measurer {
 public:
  explicit LocalMeasurer(MeasureOptions options) : options_(std::move(options)) {
    if (options_.worker_command.empty()) {
      options_.worker_command = {"/proc/self/exe", kMeasureWorkerArg};
    }
    std::sort(options_.cores.begin(), options_.cores.end());
  }

  std::vector<MeasureResult> Measure(const MeasureTask& task,
                                     const std::vector<BuildResult>& built) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<MeasureResult> results;
    results.reserve(built.size());
    const json task_request = TaskRequest(task);
    for (const BuildResult& b : built) {
      const absl::Time start = absl::Now();
      MeasureResult r = b.error != ErrorKind::kNone ? PassThrough(b) : MeasureOne(task_request, b);
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
  static MeasureResult PassThrough(const BuildResult& b) {
    MeasureResult r;
    r.error = b.error;
    r.error_msg = b.error_msg;
    return r;
  }

  json TaskRequest(const MeasureTask& task) const {
    return json{{"op", "task"},
                {"workload", task.workload_key},
                {"isa", ops::IsaName(task.target.isa)},
                {"cpu_model", task.target.cpu_model},
                {"num_threads", task.target.num_threads},
                {"test_faults", task.template_options.test_faults},
                {"seed", options_.seed}};
  }

  // A running, pinned (and confined) worker, or why there is none.
  absl::Status EnsureWorker() {
    if (worker_.Alive()) return absl::OkStatus();
    loaded_task_.clear();
    json init{{"op", "init"}, {"cores", options_.cores}};
    LOOM_RETURN_IF_ERROR(StartWorker(worker_, options_.worker_command, options_.confine,
                                     ConfinePlan::Profile::kCpu, &sandbox_, &init,
                                     "measure worker"));
    WorkerReply reply = worker_.Call(init, options_.setup_timeout);
    const std::string command = absl::StrJoin(options_.worker_command, " ");
    if (reply.kind == WorkerReply::Kind::kTimeout) {
      return absl::UnavailableError(absl::StrCat("the measure worker '", command,
                                                 "' did not answer within the setup timeout"));
    }
    if (reply.kind == WorkerReply::Kind::kDied) {
      return absl::UnavailableError(
          absl::StrCat("the measure worker '", command, "' ", reply.reason,
                       " before answering; check that the binary hosts the worker (argument ",
                       kMeasureWorkerArg, ")"));
    }
    if (absl::Status s = CheckConfinedInit(reply, sandbox_.get(), "measure worker"); !s.ok()) {
      worker_.Stop();
      return s;
    }
    if (!reply.body.value("ok", false)) {
      worker_.Stop();
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker could not be pinned to cores [",
                       absl::StrJoin(options_.cores, ","), "]: ", reply.body.value("error", "")));
    }
    info_.confinement = reply.body.value("confined", "");
    info_.worker_pid = reply.body.value("pid", int64_t{0});
    info_.cpus = reply.body.value("cpus", std::vector<int>{});
    if (!options_.cores.empty() && info_.cpus != options_.cores) {
      worker_.Stop();
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker runs on cores [", absl::StrJoin(info_.cpus, ","),
                       "] instead of the requested [", absl::StrJoin(options_.cores, ","),
                       "]; request only cores this process may use"));
    }
    return absl::OkStatus();
  }

  MeasureResult MeasureOne(const json& task_request, const BuildResult& b) {
    MeasureResult r;
    if (absl::Status s = EnsureWorker(); !s.ok()) {
      r.error = ErrorKind::kUnknown;
      r.error_msg = s.ToString();
      return r;
    }
    if (loaded_task_ != task_request.dump()) {
      if (!ReadSetupReply(worker_.Call(task_request, options_.setup_timeout), "measure worker",
                          r)) {
        return r;
      }
      loaded_task_ = task_request.dump();
    }
    // A confined worker reads only its sandbox: it gets a copy that no candidate can write.
    absl::StatusOr<std::string> staged = StageArtifact(sandbox_.get(), b.artifact_path);
    if (!staged.ok()) {
      r.error = ErrorKind::kRuntime;
      r.error_msg = absl::StrCat("cannot load artifact: ", staged.status().message());
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
                                          {"min_repeat_ms", options_.min_repeat_ms},
                                          {"flush_cache", options_.flush_cache}},
                                     timeout);
    if (sandbox_ != nullptr) sandbox_->Unstage(artifact);
    ReadMeasureReply(reply, timeout, "measure worker", r);
    // The sandbox answered for a candidate it killed (a forbidden system call): the worker is
    // dying; reap it now so the next candidate starts a fresh one.
    if (reply.kind == WorkerReply::Kind::kOk && reply.body.value("fatal", false)) {
      worker_.Stop(absl::Seconds(5));
    }
    return r;
  }

  MeasureOptions options_;
  std::mutex mu_;                           // one measurement at a time
  std::unique_ptr<WorkerSandbox> sandbox_;  // confine.enabled: made at the first start
  WorkerProcess worker_;  // declared after the sandbox: stopped before its folders go
  DeviceInfo info_;
  std::string loaded_task_;  // the task request the running worker last prepared
};

}  // namespace

absl::StatusOr<std::unique_ptr<Measurer>> MakeLocalMeasurer(const MeasureOptions& options) {
  if (options.number < 1 || options.repeat < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MeasureOptions.number and .repeat must be at least 1, got ", options.number,
                     " and ", options.repeat));
  }
  if (options.min_repeat_ms < 0) {
    return absl::InvalidArgumentError("MeasureOptions.min_repeat_ms must not be negative");
  }
  if (options.timeout <= absl::ZeroDuration() || options.setup_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("MeasureOptions.timeout and .setup_timeout must be positive");
  }
  if (options.confine.enabled) LOOM_RETURN_IF_ERROR(ValidateConfineOptions(options.confine));
  std::set<int> seen;
  for (int c : options.cores) {
    if (c < 0 || c >= CPU_SETSIZE) {
      return absl::InvalidArgumentError(
          absl::StrCat("MeasureOptions.cores: core ", c, " is out of range"));
    }
    if (!seen.insert(c).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("MeasureOptions.cores: core ", c, " is listed twice"));
    }
  }
  return std::unique_ptr<Measurer>(new LocalMeasurer(options));
}

}  // namespace loom::tune
