// One tuning job run on this thread, task after task, round after round: the single-job path of
// `loom tune` and `loom tune-task` (the multi-job engine runs the same TaskSession stages under
// the scheduler instead). It only runs what each task's TaskSession asks for, on this thread. Each
// round's records are stored before the next begins, so an interrupted job loses at most the round
// in flight and the same job id resumes where it stopped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measurer.h"
#include "loom/tune/task_session.h"

namespace loom::tune {

struct ProgressEvent {
  int64_t task_index = 0;  // 0-based
  int64_t num_tasks = 0;
  const TaskSession* tuner = nullptr;
  double eta_seconds = 0;  // for the whole job, from the mean round time so far
};

struct JobOptions {
  TaskTunerOptions task;
  ops::Target target;
  RoundResources resources;
  // Also measure each task's default config (the "untuned" baseline in the final table); it
  // overrides task.measure_default.
  bool measure_default = true;
};

// Tunes `tasks` one after another. A task without a template is skipped with its reason; other
// errors (store failure) stop the job and are returned.
absl::StatusOr<std::vector<TaskOutcome>> RunTuneJob(
    const std::vector<graph::Task>& tasks, const JobOptions& options, RecordStore* store,
    Builder& builder, Measurer& measurer,
    const std::function<void(const ProgressEvent&)>& on_progress = nullptr);

// A job id that is the same for the same work: tasks, target, tuner kind and seed. Re-running the
// same command therefore resumes the same job.
std::string DefaultJobId(const std::vector<graph::Task>& tasks, const ops::Target& target,
                         const TunerOptions& tuner);

}  // namespace loom::tune
