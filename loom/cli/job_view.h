// How the job CLI shows a job's progress figures (service/job_progress.h, carried in v1::Job):
// durations, ETA, best-so-far. Used by `loom status` and `loom watch` (job_commands.cc) and `loom
// top` (top_command.cc), so the three print the same words for the same figures.
#pragma once

#include <string>

#include "loom/v1/jobs.pb.h"

namespace loom::cli {

// Durations are base::DurationText's (base/duration_text.h), as on the web pages.
// The ETA ("2m05s"), "-" when the job's ETA is unknown.
std::string FormatEta(const v1::Job& job);
// "1.234 ms" / "-" and "45.6 GFLOPS" / "-".
std::string FormatBestLatency(const v1::Job& job);
std::string FormatBestGflops(const v1::Job& job);
// "12/32 trials, 0.40/s, ETA 50s, best latency 1.234 ms, 45.6 GFLOPS" (unknown: "-"): one line
// for watch and status.
std::string ProgressLine(const v1::Job& job);

// What runs (or waits) now: the first unfinished task's stage ("build (running on host-a)"); a
// failed job's reason; "-" otherwise.
std::string CurrentStage(const v1::Job& job);

}  // namespace loom::cli
