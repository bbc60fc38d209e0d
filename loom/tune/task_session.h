// TaskSession: the one state machine of one task's tuning within one job, after MetaSchedule's
// SearchStrategy. It owns every rule of the round: the trial budget, early stopping (through the
// tuner), resuming from the job's records, transfer (other jobs' records of the task, similar
// tasks' records and the tuning prior), the xgb retraining schedule (inside the tuner it feeds),
// the untuned default-config baseline, best-so-far and the task's outcome. Callers only map its
// requests to resources and its results back:
//   RunTuneJob (tune_job.h: `loom tune`, one task after another on this thread) and
//   engine::Runner (several jobs under the scheduler).
// Call order: Create (or Restore), then repeatedly Next() -> run the stage (RunStage, or the
// stages.h function for its kind, on a resource the caller picks) -> Complete(outcome), until
// Next() says done; then Outcome(). Save() may be called between any two calls.
// Not thread-safe: one call at a time (a stage may run on another thread between Next and
// Complete, as long as nothing else touches the session meanwhile).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "loom/sched/types.h"
#include "loom/search/prior.h"
#include "loom/search/tuner.h"
#include "loom/search/tuner_defaults.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measurer.h"
#include "loom/tune/stages.h"
#include "loom/v1/session.pb.h"

namespace loom::tune {

struct TaskTunerOptions {
  int64_t trials = 64;  // measured candidates of this job for this task, resumed ones included
  // Candidates per round (one Build batch, one Measure batch).
  int batch_size = search::kDefaultBatchSize;
  search::TunerOptions tuner;
  std::string job_id = "default";
  // Seed the tuner with other jobs' records of the same task and target, and its model with
  // records of similar tasks (same template) on the target.
  bool transfer = true;
  // With transfer, the tuner's model is also given a tuning prior (prior.h): `prior` when set,
  // else the one built into Loom for the target's class; none when use_prior is false.
  bool use_prior = true;
  std::shared_ptr<const search::TuningPrior> prior;
  ops::TemplateOptions template_options;
  // After the trials, the template's default config (the untuned baseline) is built and measured
  // as two more stages unless a trial of this run measured it already.
  bool measure_default = true;
  // The baseline's two stages come before the first round instead of after the trials: for jobs
  // whose budget may end a task before its trials (BudgetedJob, tune_job.h), so that every task
  // the job schedules has its baseline. Read only by a session that has not begun: a restored
  // state keeps its own order (a measured baseline stays, rounds without one keep it for the
  // end), so a stage restored elsewhere (an agent) restores the same session without it.
  bool baseline_first = false;
  // The tuner runs elsewhere: in sessions the stages restore from Save()'s state (the service's
  // stateless agents, agent/stage_executor.cc). This session then keeps the state and every
  // other rule of the round but never calls its tuner: ProposeStage and UpdateStage are not run
  // on it, and whether the tuner has more configs (space left, early stopping) comes with the
  // propose and update outcomes (StageOutcome::tuner_has_next). Used by service::JobDriver.
  bool tuner_elsewhere = false;
};

// Resources a round's stages ran on, as written in their StageTimings.
struct RoundResources {
  std::string cpu = "cpu";
  std::string device = "device:cpu";
};

// The result of tuning one task in one job.
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

// What the session asks for next. `kind` is the scheduler's stage kind (sched/types.h), the one
// stage-kind enum of the tuning loop.
struct SessionRequest {
  bool done = false;  // nothing left: call Outcome()
  sched::StageKind kind = sched::StageKind::kOther;
  bool baseline = false;               // the default config's build or measure, not a trial
  int64_t round = 0;                   // -1 for the baseline
  int batch_size = 0;                  // propose: at most this many configs
  std::vector<ops::Config> configs;    // build
  std::vector<BuildResult> builds;     // measure and update, one per config
  std::vector<MeasureResult> results;  // update, one per build
};

// A stage's outputs, handed to Complete. Only the field of `kind` is read.
struct StageOutcome {
  sched::StageKind kind = sched::StageKind::kOther;
  std::vector<ops::Config> configs;    // propose
  std::vector<BuildResult> builds;     // build
  std::vector<MeasureResult> results;  // measure
  std::vector<Record> records;         // update: as stored
  StageTiming timing;
  // Propose and update: whether the tuner that ran the stage can propose more (it has unvisited
  // valid configs and early stopping has not fired). Read only with tuner_elsewhere; RunStage
  // fills it from the session's tuner.
  bool tuner_has_next = true;
  // Propose and update run by RunRestoredStage: the tuner's state after the stage (with
  // tuner_elsewhere, Complete checks it and keeps it, so the next restore needs no replay), and
  // how many rounds the restore replayed (0 when the state carried a tuner state).
  std::optional<v1::TunerState> tuner_state;
  int64_t replayed_rounds = 0;
};

class TaskSession {
 public:
  static constexpr uint32_t kStateVersion = 1;
  ~TaskSession();

  // Loads the job's earlier records of the task from `store` (resume) and, with transfer, other
  // jobs' records, similar tasks' records and the tuning prior. Errors: kUnimplemented when no
  // template covers the workload; kInvalidArgument for bad options; store errors as they come.
  static absl::StatusOr<std::unique_ptr<TaskSession>> Create(const graph::Task& task,
                                                             const ops::Target& target,
                                                             const TaskTunerOptions& options,
                                                             RecordStore* store);

  // Resumes a session from Save()'s state with the same task, target and options (the store is
  // only written to: history and transfer come from the state). The tuner is restored from the
  // state's saved tuner (Tuner::RestoreState, no replay); a state without one (older records) is
  // replayed instead: history, transfer and every round go through a fresh tuner, checked to
  // propose the saved configs again. Either way its next proposal is what the saved session would
  // have proposed; a round in flight restarts at its build. kInvalidArgument when the state is
  // malformed, belongs to another task, job, target or tuner, has a tuner state that does not
  // restore or has not visited a saved round's configs, or does not replay (a config the tuner
  // would not propose, a config outside the space); kUnimplemented as Create.
  static absl::StatusOr<std::unique_ptr<TaskSession>> Restore(const v1::TaskSessionState& state,
                                                              const graph::Task& task,
                                                              const ops::Target& target,
                                                              const TaskTunerOptions& options,
                                                              RecordStore* store);
  // The state to Restore from: history, transfer data, finished rounds, the round in flight
  // (its proposal), the baseline and the tuner's own state (with tuner_elsewhere: the one the
  // last propose or update outcome brought, if any).
  v1::TaskSessionState Save() const;

  // The next stage to run, or done. Calling it again without Complete returns the same request.
  SessionRequest Next() const;
  // Applies the outcome of the stage Next() asked for. Update outcomes store the round's stage
  // timings; the baseline's measure stores its record as "<job>#default". kFailedPrecondition
  // when `outcome.kind` is not the stage asked for; kInvalidArgument when its sizes do not match
  // the request, or (tuner_elsewhere) its tuner state does not restore or has not visited the
  // round's configs; store errors as they come. On an error the session is unchanged.
  absl::Status Complete(const StageOutcome& outcome);
  bool Done() const { return Next().done; }
  // With tuner_elsewhere: abandons the round in flight, whose proposal a stage restoring the
  // state found not to be the tuner's (RunRestoredStage's kDataLoss), and goes back to its
  // proposal with the tuner state from before it. kFailedPrecondition when no round is in flight
  // or the tuner runs here.
  absl::Status DropPending();

  // The task's result: counts, best (the default config when it measured faster) and baseline.
  TaskOutcome Outcome() const;

  // Pieces for the stage functions (stages.h). The tuner is mutated by ProposeStage and
  // UpdateStage only between Next() and Complete() of those stages.
  search::Tuner& tuner() { return *tuner_; }
  const ops::Template& tmpl() const { return *template_; }
  const graph::Task& task() const { return task_; }
  RecordStore* store() const { return store_; }
  MeasureTask measure_task() const;
  RecordContext record_context() const;

  int64_t trials_done() const { return trials_done_; }  // this job's, resumed ones included
  int64_t resumed_trials() const { return resumed_trials_; }
  int64_t transferred_records() const { return transferred_; }
  // Records of other, similar tasks (same template) given to the tuner's model (transfer).
  int64_t similar_records() const { return similar_records_; }
  // Configs of the tuning prior given to the tuner's model (transfer), over all its tasks.
  int64_t prior_records() const { return prior_records_; }
  int64_t errors() const { return errors_; }
  int64_t round() const { return round_; }
  // Rounds Restore replayed through the tuner (a round in flight included): 0 when the state
  // carried the tuner's own state, so restoring costs O(state), not a replay of every round.
  int64_t replayed_rounds() const { return replayed_rounds_; }
  const TaskTunerOptions& options() const { return options_; }
  // Best over this job and the loaded history (the tuner's rule: the first of the lowest median
  // costs); +inf / 0 when nothing succeeded yet.
  double best_cost() const { return best_cost_; }
  double best_gflops() const;
  std::string best_config_json() const;
  // The median cost this run measured for `config_index` in a finished round; nullopt when it was
  // not measured or failed.
  std::optional<double> MeasuredCost(int64_t config_index) const;

 private:
  enum class Phase { kPropose, kBuild, kMeasure, kUpdate, kBaselineBuild, kBaselineMeasure, kDone };

  TaskSession(graph::Task task, ops::Target target, TaskTunerOptions options, RecordStore* store);
  // The template and tuner, before any data is given to it.
  absl::Status Init();
  // Reads history and transfer data from the store into state_ (Create only).
  absl::Status LoadFromStore();
  // Counts state_'s history, similar tasks and the prior and, with `feed`, gives them to the
  // tuner (Create, and Restore when it replays).
  absl::Status SeedTuner(bool feed);
  // A tuner state that an outcome brought (tuner_elsewhere): it must restore into a fresh tuner
  // that has visited `configs`.
  absl::Status CheckTunerState(const v1::TunerState& state,
                               const std::vector<ops::Config>& configs) const;
  // Keeps the tuner state a propose or update outcome brought (tuner_elsewhere), once checked
  // against the round's `configs`; none clears the kept one, so the next restore replays.
  absl::Status KeepTunerState(const StageOutcome& outcome, const std::vector<ops::Config>& configs);
  // Accounts for a finished round (its results already fed to the tuner): counters, state_.
  void AccountRound(const std::vector<ops::Config>& configs,
                    const std::vector<MeasureResult>& results);
  // Phase after a finished round or baseline step: next round, baseline or done.
  void AfterRound();
  // Takes this run's measurement of the default config as the baseline, if a round took one.
  bool BaselineFromTrials();
  int NextBatchSize() const;
  // Whether the tuner can propose more: its own HasNext, or what the last stage that ran it said.
  bool TunerHasNext() const;
  // Folds one result into the best so far (history, transfer and this run's rounds, in order).
  void NoteBest(const MeasureResult& m);

  graph::Task task_;
  ops::Target target_;
  TaskTunerOptions options_;
  RecordStore* store_;  // may be null: records then live only in memory
  std::unique_ptr<ops::Template> template_;
  std::unique_ptr<search::Tuner> tuner_;
  // History, transfer data, finished rounds and baseline as Save() writes them.
  std::unique_ptr<v1::TaskSessionState> state_;
  Phase phase_ = Phase::kPropose;
  // The round in flight.
  int batch_ = 0;
  std::vector<ops::Config> configs_;
  std::vector<BuildResult> builds_;
  std::vector<MeasureResult> results_;
  std::vector<StageTiming> timings_;
  int64_t trials_done_ = 0;
  int64_t resumed_trials_ = 0;
  int64_t transferred_ = 0;
  int64_t similar_records_ = 0;
  int64_t prior_records_ = 0;
  int64_t errors_ = 0;
  absl::flat_hash_map<int64_t, double> measured_;  // config index -> median cost, this run
  int64_t round_ = 0;
  int64_t replayed_rounds_ = 0;
  // Restore is accounting saved rounds without running the tuner: its HasNext speaks of the end
  // of them, not of each round.
  bool restoring_ = false;
  double best_cost_ = std::numeric_limits<double>::infinity();
  ops::Config best_config_;
};

// TODO(issue 19): the former name, kept while cli/ and api/ progress callbacks still say it.
using TaskTuner = TaskSession;

// Where RunStage runs a request: the builder and measurer, and the resource names written in the
// stage timings (CPU stages on `resources.cpu`, measurement on `resources.device`).
struct StageEnv {
  Builder* builder = nullptr;
  Measurer* measurer = nullptr;
  RoundResources resources;
};

// Runs `request` on this thread with its stage function (stages.h): the one mapping of a request
// kind to a stage function, used by RunTuneJob and the engine's workers. Precondition: the
// request came from session.Next() and is not done. Errors: the record store's, from update.
absl::StatusOr<StageOutcome> RunStage(TaskSession& session, const SessionRequest& request,
                                      const StageEnv& env);

// Runs a propose or update `request` of a session whose tuner is elsewhere (tuner_elsewhere) in
// a session restored here from `state` (its Save() when it asked for the stage) with the same
// task, target and options but the tuner here, so the tuner proposes and learns exactly as an
// uninterrupted local session's would: update first completes the round's build and measure
// with the request's builds and results. Records are not stored (no store here); the caller
// stores them. A propose request's batch_size of 0 takes the session's. kDataLoss when the state
// does not restore (Restore's kInvalidArgument: a round that does not replay, a tuner state that
// does not agree): its round in flight is not the tuner's; kInvalidArgument when it is not at
// `request`'s stage; kFailedPrecondition for another kind of request.
absl::StatusOr<StageOutcome> RunRestoredStage(const v1::TaskSessionState& state,
                                              const graph::Task& task, const ops::Target& target,
                                              TaskTunerOptions options,
                                              const SessionRequest& request);

// The default config is a candidate too: when its measurement (outcome.default_cost) beats the
// best trial, the outcome reports the default as the best, which is what best-k and the compiled
// model will pick from the records.
void PreferDefaultIfFaster(TaskOutcome& outcome, const ops::Template& tmpl);

}  // namespace loom::tune
