// A job's progress as people read it: trials done of total, the measured rate, the ETA, the best
// latency and GFLOPS so far, and the steps by which the best improved. The one owner of these
// figures: the gRPC handlers fill GetJob / WatchJob / ListJobs replies with them (server.cc, from
// JobDriver::ProgressInputOf), and the CLI (`loom status`, `watch`, `top`) and the web view show
// what the replies carry. Pure functions of the job's task rows and records: no clock, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "loom/records/record.h"
#include "loom/v1/jobs.pb.h"

namespace loom::service {

// One task of the job, as the driver holds it.
struct ProgressTask {
  double flops = 0;   // of one run of the workload; 0 for simulated tasks
  int64_t count = 1;  // nodes of the model running it: its weight in the model's latency
  int trials_done = 0;
  int trials = 0;      // the job's budget per task
  bool ended = false;  // done or skipped: nothing more is measured
  bool skipped = false;
  std::vector<tune::Record> records;  // this job's records of the task, in any order
};

struct ProgressInput {
  std::vector<ProgressTask> tasks;
  // When the job's first stage was granted; InfinitePast() while it never ran.
  absl::Time started = absl::InfinitePast();
  bool ended = false;  // succeeded, failed or cancelled
  absl::Time now = absl::UnixEpoch();
};

struct ProgressOptions {
  // The rate is the job's own over this recent window (or since it started, when younger).
  absl::Duration rate_window = absl::Minutes(5);
  // At most this many best-so-far points are kept (evenly thinned, the first and last kept).
  int max_history_points = 256;
};

// One improvement of a task's best measured config.
struct BestPoint {
  absl::Time time;     // the record's timestamp (when the measurement finished)
  int64_t trials = 0;  // the job's trials measured up to and including this one
  int task = 0;        // index of the task in the job
  double task_gflops = 0;
  // The model's latency estimate after this point; nullopt until every tuned task has a success.
  std::optional<double> latency_ms;
};

struct JobProgress {
  int64_t trials_done = 0;
  int64_t trials_total = 0;  // budget of running tasks, trials done of ended ones
  // Nullopt when unknown (never guessed): the job has not run, has ended, or measured nothing in
  // the window.
  std::optional<double> trials_per_second;
  std::optional<double> eta_seconds;
  // Sum over tuned tasks of count x the task's best median cost; nullopt until every tuned task
  // has one successful trial in this job.
  std::optional<double> best_latency_ms;
  // FLOPs over time of the tasks with a success so far (count-weighted); nullopt before any.
  std::optional<double> best_gflops;
  std::vector<BestPoint> history;  // in time order; each task's GFLOPS only rises
};

JobProgress ComputeJobProgress(const ProgressInput& input, const ProgressOptions& options = {});

// Sets the progress fields of `job` (trials_done ... best_history) from `progress`; unknown
// figures stay unset.
void FillJobProgress(const JobProgress& progress, v1::Job* job);

}  // namespace loom::service
