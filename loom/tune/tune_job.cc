#include "loom/tune/tune_job.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"

namespace loom::tune {

std::string DefaultJobId(const std::vector<graph::Task>& tasks, const ops::Target& target,
                         const search::TunerOptions& tuner) {
  std::string identity = absl::StrCat(target.Key(), "|", tuner.kind, "|", tuner.seed);
  for (const auto& t : tasks) absl::StrAppend(&identity, "|", t.key);
  return absl::StrFormat("job-%016x", graph::StableHash(identity));
}

absl::Status ValidateJobBudget(const JobBudget& budget) {
  if (budget.total_trials < 0 || budget.total_trials > kMaxTotalTrials) {
    return absl::InvalidArgumentError(absl::StrCat("the total trials must be 1 to ",
                                                   kMaxTotalTrials, ", got ", budget.total_trials));
  }
  if (budget.time < absl::ZeroDuration() || budget.time > kMaxTimeBudget) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the time budget must be more than 0 and at most ", absl::FormatDuration(kMaxTimeBudget),
        ", got ", absl::FormatDuration(budget.time)));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseTimeBudget(const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time budget '", text, "' is not a duration: write e.g. 90s, 20m, 1h30m or 1.5h"));
  }
  if (d <= absl::ZeroDuration() || d > kMaxTimeBudget) {
    return absl::InvalidArgumentError(absl::StrCat("time budget '", text,
                                                   "' must be more than 0 and at most ",
                                                   absl::FormatDuration(kMaxTimeBudget)));
  }
  return d;
}

namespace {

TaskOutcome SkippedOutcome(const graph::Task& task, const absl::Status& why) {
  TaskOutcome outcome;
  outcome.task = task;
  outcome.best_cost = std::numeric_limits<double>::infinity();
  outcome.default_cost = std::numeric_limits<double>::infinity();
  outcome.skipped_reason = std::string(why.message());
  return outcome;
}

// The outcome of a task, also when the job's budget ended it before its cap: the default
// config's cost then comes from the round that measured it, if one did.
TaskOutcome OutcomeOf(const TaskSession& session) {
  TaskOutcome o = session.Outcome();
  if (!session.Done() && !std::isfinite(o.default_cost)) {
    if (std::optional<double> cost = session.MeasuredCost(session.tmpl().DefaultConfig().index)) {
      o.default_cost = *cost;
      PreferDefaultIfFaster(o, session.tmpl());
    }
  }
  return o;
}

}  // namespace

absl::StatusOr<RoundRun> RunRound(TaskSession& session, const StageEnv& env) {
  RoundRun run;
  for (SessionRequest request = session.Next(); !request.done && !(run.round && !request.baseline);
       request = session.Next()) {
    LOOM_ASSIGN_OR_RETURN(StageOutcome out, RunStage(session, request, env));
    if (request.kind == sched::StageKind::kUpdate) {
      run.round = true;
      run.records = static_cast<int64_t>(out.records.size());
    }
    LOOM_RETURN_IF_ERROR(session.Complete(out));
  }
  return run;
}

absl::StatusOr<std::unique_ptr<BudgetedJob>> BudgetedJob::Create(
    const std::vector<graph::Task>& tasks, const ops::Target& target,
    const TaskTunerOptions& options, RecordStore* store, const JobBudget& budget,
    const TaskSchedulerOptions& scheduler_options, const base::Clock* clock) {
  LOOM_RETURN_IF_ERROR(ValidateJobBudget(budget));
  if (tasks.empty()) return absl::InvalidArgumentError("a budgeted job needs at least one task");
  std::vector<double> weights;
  // The weight is how often the task occurs in the model (a task always occurs at least once).
  for (const graph::Task& t : tasks) {
    weights.push_back(static_cast<double>(std::max<int64_t>(1, t.count)));
  }
  LOOM_ASSIGN_OR_RETURN(TaskScheduler scheduler,
                        TaskScheduler::Create(std::move(weights), scheduler_options));
  auto job = absl::WrapUnique(new BudgetedJob(std::move(scheduler), budget, clock));
  job->start_ = job->Now();
  job->sessions_.resize(tasks.size());
  job->skipped_.resize(tasks.size());
  job->reserved_.assign(tasks.size(), 0);
  // The budget may end a task before its trials: its baseline comes first, when it is scheduled.
  TaskTunerOptions session_options = options;
  session_options.baseline_first = true;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const int index = static_cast<int>(i);
    auto session = TaskSession::Create(tasks[i], target, session_options, store);
    if (absl::IsUnimplemented(session.status())) {
      job->skipped_[i] = SkippedOutcome(tasks[i], session.status());
      job->scheduler_.Retire(index);
      continue;
    }
    if (!session.ok()) return session.status();
    job->sessions_[i] = *std::move(session);
    // A resumed task has had its warm-up: its best so far is its first observation.
    if (job->sessions_[i]->trials_done() > 0) {
      job->scheduler_.Observe(index, job->sessions_[i]->best_cost());
    }
    if (job->sessions_[i]->Done()) job->scheduler_.Retire(index);
  }
  return job;
}

absl::Time BudgetedJob::Now() const { return clock_ != nullptr ? clock_->Now() : absl::Now(); }

int64_t BudgetedJob::trials() const {
  int64_t n = 0;
  for (const auto& s : sessions_) n += s != nullptr ? s->trials_done() : 0;
  return n;
}

bool BudgetedJob::Spent() const {
  if (budget_.total_trials > 0) {
    int64_t reserved = 0;
    for (int64_t r : reserved_) reserved += r;
    if (trials() + reserved >= budget_.total_trials) return true;
  }
  return budget_.time > absl::ZeroDuration() && Now() - start_ >= budget_.time;
}

std::optional<int> BudgetedJob::NextTask() {
  if (Spent()) return std::nullopt;
  std::optional<int> task = scheduler_.Next();
  if (task.has_value()) {
    const TaskSession& s = *sessions_[static_cast<size_t>(*task)];
    reserved_[static_cast<size_t>(*task)] =
        std::min<int64_t>(s.options().batch_size, s.options().trials - s.trials_done());
  }
  return task;
}

void BudgetedJob::RoundDone(int task) {
  LOOM_CHECK(task >= 0 && task < num_tasks() && sessions_[static_cast<size_t>(task)] != nullptr);
  const TaskSession& s = *sessions_[static_cast<size_t>(task)];
  reserved_[static_cast<size_t>(task)] = 0;
  scheduler_.Observe(task, s.best_cost());
  if (s.Done()) scheduler_.Retire(task);
}

std::vector<TaskOutcome> BudgetedJob::Outcomes() const {
  std::vector<TaskOutcome> out;
  for (size_t i = 0; i < sessions_.size(); ++i) {
    out.push_back(sessions_[i] != nullptr ? OutcomeOf(*sessions_[i]) : skipped_[i]);
  }
  return out;
}

namespace {

absl::StatusOr<std::vector<TaskOutcome>> RunTasksInOrder(
    const std::vector<graph::Task>& tasks, const JobOptions& options,
    const TaskTunerOptions& task_options, RecordStore* store, const StageEnv& env,
    const std::function<void(const ProgressEvent&)>& on_progress) {
  std::vector<TaskOutcome> outcomes;
  absl::Time job_start = absl::Now();
  const int64_t budget = options.task.trials;
  int64_t measured_this_run = 0;  // trials measured by this process (resumed ones excluded)
  for (size_t i = 0; i < tasks.size(); ++i) {
    auto session_or = TaskSession::Create(tasks[i], options.target, task_options, store);
    if (absl::IsUnimplemented(session_or.status())) {
      outcomes.push_back(SkippedOutcome(tasks[i], session_or.status()));
      continue;
    }
    if (!session_or.ok()) return session_or.status();
    TaskSession& session = **session_or;
    auto report = [&] {
      if (!on_progress) return;
      ProgressEvent ev{.task_index = static_cast<int64_t>(i),
                       .num_tasks = static_cast<int64_t>(tasks.size()),
                       .tuner = &session};
      // Remaining work: this task's rest plus the full budget of the tasks after it.
      int64_t remaining = std::max<int64_t>(0, budget - session.trials_done()) +
                          budget * static_cast<int64_t>(tasks.size() - i - 1);
      if (measured_this_run > 0) {
        double per_trial =
            absl::ToDoubleSeconds(absl::Now() - job_start) / static_cast<double>(measured_this_run);
        ev.eta_seconds = per_trial * static_cast<double>(remaining);
      }
      on_progress(ev);
    };
    report();
    while (!session.Done()) {
      LOOM_ASSIGN_OR_RETURN(RoundRun run, RunRound(session, env));
      if (run.round) {
        measured_this_run += run.records;
        report();
      }
    }
    outcomes.push_back(session.Outcome());
  }
  return outcomes;
}

absl::StatusOr<std::vector<TaskOutcome>> RunTasksOnBudget(
    const std::vector<graph::Task>& tasks, const JobOptions& options,
    const TaskTunerOptions& task_options, RecordStore* store, const StageEnv& env,
    const std::function<void(const ProgressEvent&)>& on_progress) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<BudgetedJob> job,
                        BudgetedJob::Create(tasks, options.target, task_options, store,
                                            options.budget, options.scheduler, options.clock));
  const base::RealClock real_clock;
  const base::Clock& clock = options.clock != nullptr ? *options.clock : real_clock;
  const JobBudget& budget = options.budget;
  int64_t measured_this_run = 0;
  auto report = [&](int task) {
    if (!on_progress || job->session(task) == nullptr) return;
    ProgressEvent ev{.task_index = task,
                     .num_tasks = static_cast<int64_t>(tasks.size()),
                     .tuner = job->session(task),
                     .job_trials = job->trials()};
    const double elapsed = absl::ToDoubleSeconds(clock.Now() - job->start());
    double eta = std::numeric_limits<double>::infinity();
    if (budget.time > absl::ZeroDuration()) {
      eta = std::max(0.0, absl::ToDoubleSeconds(budget.time) - elapsed);
    }
    if (budget.total_trials > 0 && measured_this_run > 0) {
      eta = std::min(
          eta, elapsed / static_cast<double>(measured_this_run) *
                   static_cast<double>(std::max<int64_t>(0, budget.total_trials - ev.job_trials)));
    }
    ev.eta_seconds = std::isfinite(eta) ? eta : 0;
    on_progress(ev);
  };
  for (int i = 0; i < job->num_tasks(); ++i) {
    if (job->session(i) != nullptr && !job->session(i)->Done()) {
      report(i);  // before the first round
      break;
    }
  }
  for (std::optional<int> task = job->NextTask(); task.has_value(); task = job->NextTask()) {
    LOOM_ASSIGN_OR_RETURN(RoundRun run, RunRound(*job->session(*task), env));
    job->RoundDone(*task);
    if (run.round) {
      measured_this_run += run.records;
      report(*task);
    }
  }
  return job->Outcomes();
}

}  // namespace

absl::StatusOr<std::vector<TaskOutcome>> RunTuneJob(
    const std::vector<graph::Task>& tasks, const JobOptions& options, RecordStore* store,
    Builder& builder, Measurer& measurer,
    const std::function<void(const ProgressEvent&)>& on_progress) {
  TaskTunerOptions task_options = options.task;
  task_options.measure_default = options.measure_default;
  const StageEnv env{.builder = &builder, .measurer = &measurer, .resources = options.resources};
  if (!options.budget.Active()) {
    return RunTasksInOrder(tasks, options, task_options, store, env, on_progress);
  }
  return RunTasksOnBudget(tasks, options, task_options, store, env, on_progress);
}

}  // namespace loom::tune
