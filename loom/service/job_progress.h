// A job's progress as people read it: trials done of trials asked, the ETA from the rate so far,
// and the best end-to-end latency its records give so far. The one place these are computed: the
// web view (http_pages.h) and the job listings call these functions.
#pragma once

#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "loom/service/state_store.h"
#include "loom/v1/jobs.pb.h"

namespace loom::service {

struct JobProgress {
  int64_t trials_done = 0;
  int64_t trials = 0;   // over every task (skipped ones included)
  double fraction = 0;  // trials_done / trials, in [0, 1]
  // Time left at the rate so far (since the job started); unset while queued, before the first
  // trial, or once ended.
  std::optional<absl::Duration> eta;
};

// `now` is the daemon's clock reading the job was taken at.
JobProgress ComputeProgress(const v1::Job& job, absl::Time now);

// The model's latency estimate from the best kernel of each task so far (best median cost x the
// task's node count, summed; kernels only, as the driver's estimate at the end of a job).
// `complete` is false while a task that is not skipped has no successful trial yet (the sum then
// covers the tasks that have one). 0 and false when no task has one.
struct BestLatency {
  double ms = 0;
  bool complete = false;
};
BestLatency BestLatencySoFar(const std::vector<TaskRow>& tasks);

}  // namespace loom::service
