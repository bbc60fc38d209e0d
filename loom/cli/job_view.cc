#include "loom/cli/job_view.h"

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "loom/base/duration_text.h"

namespace loom::cli {

std::string FormatEta(const v1::Job& job) {
  return job.has_eta_seconds() ? base::DurationText(job.eta_seconds()) : "-";
}

std::string FormatBestLatency(const v1::Job& job) {
  return job.has_best_latency_ms() ? absl::StrFormat("%.3f ms", job.best_latency_ms()) : "-";
}

std::string FormatBestGflops(const v1::Job& job) {
  return job.has_best_gflops() ? absl::StrFormat("%.1f GFLOPS", job.best_gflops()) : "-";
}

std::string ProgressLine(const v1::Job& job) {
  return absl::StrFormat(
      "%d/%d trials, %s, ETA %s, best latency %s, %s", job.trials_done(), job.trials_total(),
      job.has_trials_per_second() ? absl::StrFormat("%.2f/s", job.trials_per_second()) : "-/s",
      FormatEta(job), FormatBestLatency(job), FormatBestGflops(job));
}

std::string CurrentStage(const v1::Job& j) {
  for (const auto& t : j.tasks()) {
    if (t.stage() != "done" && t.stage() != "pending" && !absl::StartsWith(t.stage(), "skipped")) {
      return t.stage();
    }
  }
  return j.state() == v1::JOB_STATE_FAILED ? j.failure_reason() : "-";
}

}  // namespace loom::cli
