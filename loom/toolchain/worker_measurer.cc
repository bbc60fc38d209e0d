// WorkerMeasurer: see worker_measurer.h.
#include "loom/toolchain/worker_measurer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"

namespace loom::tune {

using json = nlohmann::json;

std::vector<MeasureResult> WorkerMeasurer::Measure(const MeasureTask& task,
                                                   const std::vector<BuildResult>& built) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<MeasureResult> results;
  results.reserve(built.size());
  const json task_request = TaskRequest(task);
  BeginBatch();
  for (const BuildResult& b : built) {
    const absl::Time start = absl::Now();
    MeasureResult r;
    if (b.error != ErrorKind::kNone) {
      r.error = b.error;
      r.error_msg = b.error_msg;
    } else {
      r = MeasureCandidate(task, task_request, b);
    }
    r.config = b.config;
    r.timestamp = absl::Now();
    r.measure_seconds = absl::ToDoubleSeconds(r.timestamp - start);
    results.push_back(std::move(r));
  }
  return results;
}

absl::StatusOr<DeviceInfo> WorkerMeasurer::Probe() {
  std::lock_guard<std::mutex> lock(mu_);
  LOOM_RETURN_IF_ERROR(EnsureWorker());
  return info_;
}

absl::Status WorkerMeasurer::EnsureWorker() {
  if (worker_.Alive()) return absl::OkStatus();
  loaded_task_.clear();
  json init = InitRequest();
  LOOM_RETURN_IF_ERROR(StartWorker(worker_, settings_.command, settings_.confine, settings_.profile,
                                   &sandbox_, &init, settings_.start_name));
  WorkerReply reply = worker_.Call(init, settings_.setup_timeout);
  const std::string command = absl::StrJoin(settings_.command, " ");
  if (reply.kind == WorkerReply::Kind::kTimeout) {
    return absl::UnavailableError(absl::StrCat("the ", settings_.name, " '", command,
                                               "' did not answer within the setup timeout"));
  }
  if (reply.kind == WorkerReply::Kind::kDied) {
    return absl::UnavailableError(
        absl::StrCat("the ", settings_.name, " '", command, "' ", reply.reason,
                     " before answering; check that the binary hosts the worker (argument ",
                     settings_.host_arg, ")"));
  }
  absl::Status s = CheckConfinedInit(reply, sandbox_.get(), settings_.start_name);
  if (s.ok()) s = AcceptInit(reply.body);
  if (!s.ok()) worker_.Stop();
  return s;
}

std::optional<WorkerReply> WorkerMeasurer::RunCandidate(const json& task_request,
                                                        const BuildResult& b,
                                                        const std::string& stage_error,
                                                        const json& extra, MeasureResult& r) {
  if (loaded_task_ != task_request.dump()) {
    if (!ReadSetupReply(worker_.Call(task_request, settings_.setup_timeout), settings_.name, r)) {
      return std::nullopt;
    }
    loaded_task_ = task_request.dump();
  }
  // A confined worker reads only its sandbox: it gets a copy that no candidate can write.
  absl::StatusOr<std::string> staged = StageArtifact(sandbox_.get(), b.artifact_path);
  if (!staged.ok()) {
    r.error = ErrorKind::kRuntime;
    r.error_msg = absl::StrCat(stage_error, staged.status().message());
    return std::nullopt;
  }
  const std::string& artifact = *staged;
  const absl::Duration expected =
      absl::Milliseconds(int64_t{settings_.repeat + 3} * settings_.min_repeat_ms);
  const absl::Duration timeout = settings_.timeout + expected;
  json request{{"op", "measure"},
               {"artifact", artifact},
               {"config", b.config.index},
               {"number", settings_.number},
               {"repeat", settings_.repeat},
               {"min_repeat_ms", settings_.min_repeat_ms}};
  for (const auto& [key, value] : extra.items()) request[key] = value;
  WorkerReply reply = worker_.Call(request, timeout);
  if (sandbox_ != nullptr) sandbox_->Unstage(artifact);
  ReadMeasureReply(reply, timeout, settings_.name, r);
  return reply;
}

}  // namespace loom::tune
