// One tuning job run on this thread, task after task, round after round: the single-job path of
// `loom tune` and `loom tune-task` (the multi-job engine runs the same TaskTuner stages under the
// scheduler instead). Each round's records are stored before the next begins, so an interrupted
// job loses at most the round in flight and the same job id resumes where it stopped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/tune/builder.h"
#include "loom/tune/measurer.h"
#include "loom/tune/record_store.h"
#include "loom/tune/task_tuner.h"

namespace loom::tune {

struct TaskOutcome {
  graph::Task task;
  std::string template_name;
  int64_t trials = 0;  // this job's, resumed ones included
  int64_t resumed_trials = 0;
  int64_t transferred_records = 0;
  int64_t prior_records = 0;  // the tuning prior's configs given to the model (prior.h)
  int64_t errors = 0;
  double best_cost = 0;  // seconds; +inf when nothing succeeded
  double best_gflops = 0;
  std::string best_config_json;
  double default_cost = 0;     // the template's default config, measured alone; +inf on error
  std::string skipped_reason;  // non-empty when no template covers the task
};

struct ProgressEvent {
  int64_t task_index = 0;  // 0-based
  int64_t num_tasks = 0;
  const TaskTuner* tuner = nullptr;
  double eta_seconds = 0;  // for the whole job, from the mean round time so far
};

struct JobOptions {
  TaskTunerOptions task;
  ops::Target target;
  RoundResources resources;
  // Also measure each task's default config (the "untuned" baseline in the final table).
  bool measure_default = true;
};

// Tunes `tasks` one after another. A task without a template is skipped with its reason; other
// errors (store failure) stop the job and are returned.
absl::StatusOr<std::vector<TaskOutcome>> RunTuneJob(
    const std::vector<graph::Task>& tasks, const JobOptions& options, RecordStore* store,
    Builder& builder, Measurer& measurer,
    const std::function<void(const ProgressEvent&)>& on_progress = nullptr);

// The default config is a candidate too: when its measurement (outcome.default_cost) beats the
// best trial, the outcome reports the default as the best, which is what best-k and the compiled
// model will pick from the records.
void PreferDefaultIfFaster(TaskOutcome& outcome, const ops::Template& tmpl);

// A job id that is the same for the same work: tasks, target, tuner kind and seed. Re-running the
// same command therefore resumes the same job.
std::string DefaultJobId(const std::vector<graph::Task>& tasks, const ops::Target& target,
                         const TunerOptions& tuner);

}  // namespace loom::tune
