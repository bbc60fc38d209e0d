#include "loom/service/job_progress.h"

#include <algorithm>

namespace loom::service {

JobProgress ComputeProgress(const v1::Job& job, absl::Time now) {
  JobProgress p;
  for (const v1::TaskProgress& t : job.tasks()) {
    p.trials += std::max(0, t.trials());
    p.trials_done += std::clamp(t.trials_done(), 0, std::max(0, t.trials()));
  }
  p.fraction =
      p.trials > 0 ? static_cast<double>(p.trials_done) / static_cast<double>(p.trials) : 0;
  if (job.state() == v1::JOB_STATE_RUNNING && job.started_unix_micros() > 0 && p.trials_done > 0 &&
      p.trials_done < p.trials) {
    const absl::Duration elapsed = now - absl::FromUnixMicros(job.started_unix_micros());
    if (elapsed > absl::ZeroDuration()) {
      p.eta = elapsed *
              (static_cast<double>(p.trials - p.trials_done) / static_cast<double>(p.trials_done));
    }
  }
  return p;
}

BestLatency BestLatencySoFar(const std::vector<TaskRow>& tasks) {
  BestLatency b;
  bool all = true;
  bool any = false;
  for (const TaskRow& t : tasks) {
    if (t.phase == TaskPhase::kSkipped) continue;
    if (t.best_cost <= 0) {
      all = false;
      continue;
    }
    any = true;
    b.ms += t.best_cost * static_cast<double>(t.count) * 1e3;
  }
  b.complete = any && all;
  return b;
}

}  // namespace loom::service
