// LocalMeasurer: the CPU Measurer. Keeps one long-lived worker process (measure_worker.h) pinned
// to the device's cores and talks to it through WorkerProcess (worker_process.h). A candidate that
// outlives its run timeout gets the worker SIGKILLed; a worker that dies mid-candidate is a
// runtime error naming the signal. Either way the next candidate gets a fresh worker. Unless
// MeasureOptions.confine is off, the worker confines itself at init (confine.h) inside a
// WorkerSandbox whose inbox receives a copy of each candidate.
#include <sched.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/worker_measurer.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

class LocalMeasurer : public WorkerMeasurer {
 public:
  explicit LocalMeasurer(MeasureOptions options)
      : WorkerMeasurer(Settings(options)), options_(std::move(options)) {
    std::sort(options_.cores.begin(), options_.cores.end());
  }

 private:
  static WorkerSettings Settings(const MeasureOptions& o) {
    WorkerSettings s = WorkerSettingsFrom(o, kMeasureWorkerArg);
    s.name = s.start_name = "measure worker";
    s.profile = ConfinePlan::Profile::kCpu;
    return s;
  }

  json TaskRequest(const MeasureTask& task) const override {
    return json{{"op", "task"},
                {"workload", task.workload_key},
                {"isa", ops::IsaName(task.target.isa)},
                {"cpu_model", task.target.cpu_model},
                {"num_threads", task.target.num_threads},
                {"test_faults", task.template_options.test_faults},
                {"seed", options_.seed}};
  }

  json InitRequest() const override { return json{{"op", "init"}, {"cores", options_.cores}}; }

  absl::Status AcceptInit(const json& body) override {
    if (!body.value("ok", false)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker could not be pinned to cores [",
                       absl::StrJoin(options_.cores, ","), "]: ", body.value("error", "")));
    }
    info_.confinement = body.value("confined", "");
    info_.worker_pid = body.value("pid", int64_t{0});
    info_.cpus = body.value("cpus", std::vector<int>{});
    if (!options_.cores.empty() && info_.cpus != options_.cores) {
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker runs on cores [", absl::StrJoin(info_.cpus, ","),
                       "] instead of the requested [", absl::StrJoin(options_.cores, ","),
                       "]; request only cores this process may use"));
    }
    return absl::OkStatus();
  }

  MeasureResult MeasureCandidate(const MeasureTask& /*task*/, const json& task_request,
                                 const BuildResult& b) override {
    MeasureResult r;
    if (absl::Status s = EnsureWorker(); !s.ok()) {
      r.error = ErrorKind::kUnknown;
      r.error_msg = s.ToString();
      return r;
    }
    std::optional<WorkerReply> reply = RunCandidate(
        task_request, b, "cannot load artifact: ", json{{"flush_cache", options_.flush_cache}}, r);
    // The sandbox answered for a candidate it killed (a forbidden system call): the worker is
    // dying; reap it now so the next candidate starts a fresh one.
    if (reply.has_value() && reply->kind == WorkerReply::Kind::kOk &&
        reply->body.value("fatal", false)) {
      StopWorker();
    }
    return r;
  }

  MeasureOptions options_;
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
