#include "loom/tune/tune_job.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"

namespace loom::tune {

std::string DefaultJobId(const std::vector<graph::Task>& tasks, const ops::Target& target,
                         const TunerOptions& tuner) {
  std::string identity = absl::StrCat(target.Key(), "|", tuner.kind, "|", tuner.seed);
  for (const auto& t : tasks) absl::StrAppend(&identity, "|", t.key);
  return absl::StrFormat("job-%016x", graph::StableHash(identity));
}

absl::StatusOr<std::vector<TaskOutcome>> RunTuneJob(
    const std::vector<graph::Task>& tasks, const JobOptions& options, RecordStore* store,
    Builder& builder, Measurer& measurer,
    const std::function<void(const ProgressEvent&)>& on_progress) {
  std::vector<TaskOutcome> outcomes;
  absl::Time job_start = absl::Now();
  const int64_t budget = options.task.trials;
  int64_t measured_this_run = 0;  // trials measured by this process (resumed ones excluded)
  TaskTunerOptions task_options = options.task;
  task_options.measure_default = options.measure_default;
  const StageEnv env{.builder = &builder, .measurer = &measurer, .resources = options.resources};
  for (size_t i = 0; i < tasks.size(); ++i) {
    auto session_or = TaskSession::Create(tasks[i], options.target, task_options, store);
    if (absl::IsUnimplemented(session_or.status())) {
      TaskOutcome outcome;
      outcome.task = tasks[i];
      outcome.best_cost = std::numeric_limits<double>::infinity();
      outcome.default_cost = std::numeric_limits<double>::infinity();
      outcome.skipped_reason = std::string(session_or.status().message());
      outcomes.push_back(std::move(outcome));
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
    for (SessionRequest request = session.Next(); !request.done; request = session.Next()) {
      LOOM_ASSIGN_OR_RETURN(StageOutcome out, RunStage(session, request, env));
      const bool round_ended = request.kind == sched::StageKind::kUpdate;
      const int64_t records = static_cast<int64_t>(out.records.size());
      LOOM_RETURN_IF_ERROR(session.Complete(out));
      if (round_ended) {
        measured_this_run += records;
        report();
      }
    }
    outcomes.push_back(session.Outcome());
  }
  return outcomes;
}

}  // namespace loom::tune
