#include "loom/tune/tune_job.h"

#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"
#include "loom/tune/stages.h"

namespace loom::tune {

std::string DefaultJobId(const std::vector<graph::Task>& tasks, const ops::Target& target,
                         const TunerOptions& tuner) {
  std::string identity = absl::StrCat(target.Key(), "|", tuner.kind, "|", tuner.seed);
  for (const auto& t : tasks) absl::StrAppend(&identity, "|", t.key);
  return absl::StrFormat("job-%016x", graph::StableHash(identity));
}

void PreferDefaultIfFaster(TaskOutcome& outcome, const ops::Template& tmpl) {
  if (!(outcome.default_cost < outcome.best_cost)) return;  // also false when default is +inf
  outcome.best_cost = outcome.default_cost;
  outcome.best_gflops = outcome.task.flops / outcome.default_cost / 1e9;
  outcome.best_config_json = tmpl.space().ToJson(tmpl.DefaultConfig());
}

namespace {

// The untuned baseline: the default config's cost from this run's trials when the tuner measured
// it (it starts from it by default), else measured once now and stored.
absl::StatusOr<double> MeasureDefault(TaskTuner& tuner, Builder& builder, Measurer& measurer) {
  ops::Config config = tuner.tmpl().DefaultConfig();
  if (std::optional<double> cost = tuner.MeasuredCost(config.index)) return *cost;
  std::vector<BuildResult> built = builder.Build(tuner.tmpl(), {config});
  std::vector<MeasureResult> measured = measurer.Measure(tuner.measure_task(), built);
  if (measured.size() != 1) return std::numeric_limits<double>::infinity();
  LOOM_RETURN_IF_ERROR(tuner.RecordDefault(built[0], measured[0]));
  if (!measured[0].ok()) return std::numeric_limits<double>::infinity();
  return measured[0].MedianCost();
}

}  // namespace

absl::StatusOr<std::vector<TaskOutcome>> RunTuneJob(
    const std::vector<graph::Task>& tasks, const JobOptions& options, RecordStore* store,
    Builder& builder, Measurer& measurer,
    const std::function<void(const ProgressEvent&)>& on_progress) {
  std::vector<TaskOutcome> outcomes;
  absl::Time job_start = absl::Now();
  const int64_t budget = options.task.trials;
  int64_t measured_this_run = 0;  // trials measured by this process (resumed ones excluded)
  for (size_t i = 0; i < tasks.size(); ++i) {
    TaskOutcome outcome;
    outcome.task = tasks[i];
    outcome.best_cost = std::numeric_limits<double>::infinity();
    outcome.default_cost = std::numeric_limits<double>::infinity();
    auto tuner_or = TaskTuner::Create(tasks[i], options.target, options.task, store);
    if (absl::IsUnimplemented(tuner_or.status())) {
      outcome.skipped_reason = std::string(tuner_or.status().message());
      outcomes.push_back(std::move(outcome));
      continue;
    }
    if (!tuner_or.ok()) return tuner_or.status();
    TaskTuner& tuner = **tuner_or;
    auto report = [&] {
      if (!on_progress) return;
      ProgressEvent ev{.task_index = static_cast<int64_t>(i),
                       .num_tasks = static_cast<int64_t>(tasks.size()),
                       .tuner = &tuner};
      // Remaining work: this task's rest plus the full budget of the tasks after it.
      int64_t remaining = std::max<int64_t>(0, budget - tuner.trials_done()) +
                          budget * static_cast<int64_t>(tasks.size() - i - 1);
      if (measured_this_run > 0) {
        double per_trial =
            absl::ToDoubleSeconds(absl::Now() - job_start) / static_cast<double>(measured_this_run);
        ev.eta_seconds = per_trial * static_cast<double>(remaining);
      }
      on_progress(ev);
    };
    report();
    while (!tuner.Done()) {
      LOOM_ASSIGN_OR_RETURN(RoundReport round,
                            tuner.RunRound(builder, measurer, options.resources));
      measured_this_run += static_cast<int64_t>(round.records.size());
      report();
    }
    outcome.template_name = tuner.tmpl().name();
    outcome.trials = tuner.trials_done();
    outcome.resumed_trials = tuner.resumed_trials();
    outcome.transferred_records = tuner.transferred_records();
    outcome.prior_records = tuner.prior_records();
    outcome.errors = tuner.errors();
    outcome.best_cost = tuner.best_cost();
    outcome.best_gflops = tuner.best_gflops();
    outcome.best_config_json = tuner.best_config_json();
    if (options.measure_default) {
      LOOM_ASSIGN_OR_RETURN(outcome.default_cost, MeasureDefault(tuner, builder, measurer));
      PreferDefaultIfFaster(outcome, tuner.tmpl());
    }
    outcomes.push_back(std::move(outcome));
  }
  return outcomes;
}

}  // namespace loom::tune
