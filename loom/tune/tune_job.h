// One tuning job run on this thread, round after round: the single-job path of `loom tune`,
// `loom tune-task` and Model::Tune (the multi-job engine runs the same TaskSession stages under
// the scheduler instead). Without a job budget the tasks run one after another, each to its
// `trials`; with one (--total-trials, --time-budget) a TaskScheduler (task_scheduler.h) gives each
// round to the task with the most to gain. It only runs what each task's TaskSession asks for, on
// this thread. Each round's records are stored before the next begins, so an interrupted job loses
// at most the round in flight and the same job id resumes where it stopped.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/base/clock.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measurer.h"
#include "loom/tune/task_scheduler.h"
#include "loom/tune/task_session.h"

namespace loom::tune {

struct ProgressEvent {
  int64_t task_index = 0;  // 0-based
  int64_t num_tasks = 0;
  const TaskSession* tuner = nullptr;
  double eta_seconds = 0;  // for the whole job, from the mean round time so far
  // Budgeted jobs: the trials of all the job's tasks so far (resumed ones included); else 0.
  int64_t job_trials = 0;
};

// The largest budgets a job may ask for (ValidateJobBudget).
inline constexpr int64_t kMaxTotalTrials = 100'000'000;
inline constexpr absl::Duration kMaxTimeBudget = absl::Hours(24 * 30);
// TaskTunerOptions::trials of a budgeted job's tasks when no per-task cap is given: the budget
// alone ends them.
inline constexpr int64_t kNoTrialCap = 1'000'000'000;

// One budget for the whole job, shared among its tasks by a TaskScheduler. Either limit or both;
// neither (the default) keeps the task-after-task job.
struct JobBudget {
  // Trials of all the job's tasks together, resumed ones included (so a rerun of the same job
  // does not spend it twice); 0: no limit. The job stops at the first round boundary at or past
  // it, so it may end up to one batch over.
  int64_t total_trials = 0;
  // Wall time from the start of this run; zero: no limit. Checked before each round, so the job
  // ends within it plus one round.
  absl::Duration time = absl::ZeroDuration();
  bool Active() const { return total_trials > 0 || time > absl::ZeroDuration(); }
};

// kInvalidArgument, naming the limit, when total_trials is outside [0, kMaxTotalTrials] or time
// outside [0, kMaxTimeBudget].
absl::Status ValidateJobBudget(const JobBudget& budget);

// The one parser of a time budget as users write it: "90s", "20m", "1h30m", "1.5h" (absl duration
// syntax). kInvalidArgument for anything else, for zero or negative durations, "inf" and more than
// kMaxTimeBudget.
absl::StatusOr<absl::Duration> ParseTimeBudget(const std::string& text);

struct JobOptions {
  TaskTunerOptions task;
  ops::Target target;
  RoundResources resources;
  // Also measure each task's default config (the "untuned" baseline in the final table); it
  // overrides task.measure_default.
  bool measure_default = true;
  // A budget for the whole job; task.trials then caps each task (kNoTrialCap: no cap).
  JobBudget budget;
  TaskSchedulerOptions scheduler;
  // The time budget's clock; null: the wall clock.
  const base::Clock* clock = nullptr;
};

// The tasks of one budgeted job: every task's session, the task scheduler and the budget. A caller
// asks which task the next round goes to (NextTask), runs that session's stages up to the end of
// the round (and its baseline when the round was its last: RunRound does both), then reports it
// (RoundDone). Several rounds of different tasks may be in flight at once (a job that spreads over
// devices). Used by RunTuneJob and engine::Runner. Not thread-safe.
class BudgetedJob {
 public:
  // Creates every task's session (each resumes from `store`); a task without a template is
  // skipped with its reason. kInvalidArgument for a bad budget or scheduler options; store errors.
  // `clock` (null: the wall clock) must outlive the job; the time budget counts from here.
  static absl::StatusOr<std::unique_ptr<BudgetedJob>> Create(
      const std::vector<graph::Task>& tasks, const ops::Target& target,
      const TaskTunerOptions& options, RecordStore* store, const JobBudget& budget,
      const TaskSchedulerOptions& scheduler, const base::Clock* clock = nullptr);

  // The task whose session runs the next round; nullopt when the budget is spent (counting the
  // trials of rounds in flight as spent), every task is done, or the rest are in flight (then
  // in_flight() > 0: ask again after a RoundDone).
  std::optional<int> NextTask();
  // After the round NextTask() handed out (its session is between rounds again).
  void RoundDone(int task);
  // Null for a skipped task.
  TaskSession* session(int task) const { return sessions_[static_cast<size_t>(task)].get(); }
  int num_tasks() const { return static_cast<int>(sessions_.size()); }
  int in_flight() const { return scheduler_.in_flight(); }
  // Trials of all tasks (resumed ones included), rounds in flight excluded.
  int64_t trials() const;
  absl::Time start() const { return start_; }
  // One per task in task order; a task the budget cut short reports the default config's cost
  // when one of its rounds measured it, else +inf.
  std::vector<TaskOutcome> Outcomes() const;

 private:
  BudgetedJob(TaskScheduler scheduler, JobBudget budget, const base::Clock* clock)
      : scheduler_(std::move(scheduler)), budget_(budget), clock_(clock) {}
  bool Spent() const;
  absl::Time Now() const;

  TaskScheduler scheduler_;
  JobBudget budget_;
  const base::Clock* clock_;
  absl::Time start_;
  std::vector<std::unique_ptr<TaskSession>> sessions_;
  std::vector<TaskOutcome> skipped_;  // per task; used where sessions_[i] is null
  std::vector<int64_t> reserved_;     // per task: the batch of its round in flight, else 0
};

// What RunRound ran.
struct RoundRun {
  bool round = false;   // a round of trials ran (not only the baseline, or nothing to propose)
  int64_t records = 0;  // measured and stored by it
};

// Runs the session's stages on this thread up to the end of its next round of trials, and its
// baseline when that round was its last: one step of a job. Precondition: !session.Done().
absl::StatusOr<RoundRun> RunRound(TaskSession& session, const StageEnv& env);

// Tunes `tasks`: one after another, or under options.budget round by round as the task scheduler
// picks (outcomes stay in the order of `tasks`; a task the budget cut short reports the default
// config's cost when one of its rounds measured it, else +inf). A task without a template is
// skipped with its reason; other errors (store failure, a bad budget) stop the job and are
// returned. on_progress is called before the first round and after each round.
absl::StatusOr<std::vector<TaskOutcome>> RunTuneJob(
    const std::vector<graph::Task>& tasks, const JobOptions& options, RecordStore* store,
    Builder& builder, Measurer& measurer,
    const std::function<void(const ProgressEvent&)>& on_progress = nullptr);

// A job id that is the same for the same work: tasks, target, tuner kind and seed. Re-running the
// same command therefore resumes the same job.
std::string DefaultJobId(const std::vector<graph::Task>& tasks, const ops::Target& target,
                         const search::TunerOptions& tuner);

}  // namespace loom::tune
