// The tuning state of one task within one job: its template, its tuner (the search state and cost
// model), its trial budget and its place in the record store. Created per (job, task); resumes
// from the job's earlier records in the store and is seeded with other jobs' records of the same
// task (transfer). The engine runs its stages one by one under the scheduler; RunRound runs a
// whole round on the calling thread for the single-job path.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/tune/builder.h"
#include "loom/tune/measurer.h"
#include "loom/tune/prior.h"
#include "loom/tune/record_store.h"
#include "loom/tune/stages.h"
#include "loom/tune/tuner.h"

namespace loom::tune {

struct TaskTunerOptions {
  int64_t trials = 64;  // measured candidates of this job for this task, resumed ones included
  int batch_size = 8;   // candidates per round (one Build batch, one Measure batch)
  TunerOptions tuner;
  std::string job_id = "default";
  // Seed the tuner with other jobs' records of the same task and target, and its model with
  // records of similar tasks (same template) on the target.
  bool transfer = true;
  // With transfer, the tuner's model is also given a tuning prior (prior.h): `prior` when set,
  // else the one built into Loom for the target's class; none when use_prior is false.
  bool use_prior = true;
  std::shared_ptr<const TuningPrior> prior;
  ops::TemplateOptions template_options;
};

// Resources a round's stages ran on, as written in their StageTimings.
struct RoundResources {
  std::string cpu = "cpu";
  std::string device = "device:cpu";
};

struct RoundReport {
  int64_t round = 0;
  std::vector<Record> records;
  std::vector<StageTiming> timings;  // propose, build, measure, update
};

class TaskTuner {
 public:
  // Errors: kUnimplemented when no template covers the workload; store errors as they come.
  static absl::StatusOr<std::unique_ptr<TaskTuner>> Create(const graph::Task& task,
                                                           const ops::Target& target,
                                                           const TaskTunerOptions& options,
                                                           RecordStore* store);

  // True when the budget is spent or the tuner has nothing left (space exhausted, early stop).
  bool Done() const;
  // Candidates to propose in the next round (0 when Done()).
  int NextBatchSize() const;

  // Runs propose, build, measure and update in order on this thread; stores records and stage
  // timings. Precondition: !Done().
  absl::StatusOr<RoundReport> RunRound(Builder& builder, Measurer& measurer,
                                       const RoundResources& resources);

  // Stage pieces for a scheduler that runs them separately (same order as RunRound).
  Tuner& tuner() { return *tuner_; }
  const ops::Template& tmpl() const { return *template_; }
  const graph::Task& task() const { return task_; }
  MeasureTask measure_task() const;
  RecordContext record_context() const;
  // Accounts for a finished round: trial and error counts, round number, stage timings stored.
  absl::Status FinishRound(const std::vector<Record>& records,
                           const std::vector<StageTiming>& timings);

  // Stores the measurement of the template's default config (the untuned baseline) under the job
  // id "<job>#default": it is not one of the job's trials, but the record store's best-k (and so
  // the compiled model) and later jobs' transfer see it, so a tuned model is never worse than
  // the default on the measurements taken. Without a store it does nothing.
  absl::Status RecordDefault(const BuildResult& build, const MeasureResult& result);
  // The median cost this run measured for `config_index` (a successful trial of a round that
  // went through FinishRound); nullopt when it was not measured or failed. Lets the caller take
  // the untuned baseline from trial 1 when the tuner started from the default config, instead
  // of building and measuring it again.
  std::optional<double> MeasuredCost(int64_t config_index) const;

  int64_t trials_done() const { return trials_done_; }  // this job's, resumed ones included
  int64_t resumed_trials() const { return resumed_trials_; }
  int64_t transferred_records() const { return transferred_; }
  // Records of other, similar tasks (same template) given to the tuner's model (transfer).
  int64_t similar_records() const { return similar_records_; }
  // Configs of the tuning prior given to the tuner's model (transfer), over all its tasks.
  int64_t prior_records() const { return prior_records_; }
  int64_t errors() const { return errors_; }
  int64_t round() const { return round_; }
  const TaskTunerOptions& options() const { return options_; }
  // Best over this job and the loaded history; +inf / 0 when nothing succeeded yet.
  double best_cost() const { return tuner_->best_cost(); }
  double best_gflops() const;
  std::string best_config_json() const;

 private:
  TaskTuner(graph::Task task, ops::Target target, TaskTunerOptions options, RecordStore* store)
      : task_(std::move(task)),
        target_(std::move(target)),
        options_(std::move(options)),
        store_(store) {}
  absl::Status LoadHistory();
  // Transfer from other tasks: the store's records of similar workloads (Similar) with this
  // template, given to the tuner through Tuner::LoadTransfer.
  absl::Status LoadSimilarTasks();
  // Transfer from the tuning prior (options.prior, or the built-in one for the target).
  void LoadPrior();
  static constexpr int kMaxSimilarRecords = 2000;

  graph::Task task_;
  ops::Target target_;
  TaskTunerOptions options_;
  RecordStore* store_;  // may be null: records then live only in memory
  std::unique_ptr<ops::Template> template_;
  std::unique_ptr<Tuner> tuner_;
  int64_t trials_done_ = 0;
  int64_t resumed_trials_ = 0;
  int64_t transferred_ = 0;
  int64_t similar_records_ = 0;
  int64_t prior_records_ = 0;
  int64_t errors_ = 0;
  absl::flat_hash_map<int64_t, double> measured_;  // config index -> median cost, this run
  int64_t round_ = 0;
};

}  // namespace loom::tune
