#include "loom/tune/task_tuner.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "loom/base/status_macros.h"

namespace loom::tune {

absl::StatusOr<std::unique_ptr<TaskTuner>> TaskTuner::Create(const graph::Task& task,
                                                             const ops::Target& target,
                                                             const TaskTunerOptions& options,
                                                             RecordStore* store) {
  if (options.trials < 0 || options.batch_size <= 0) {
    return absl::InvalidArgumentError("trials must be >= 0 and the batch size positive");
  }
  std::unique_ptr<TaskTuner> t(new TaskTuner(task, target, options, store));
  LOOM_ASSIGN_OR_RETURN(t->template_,
                        ops::MakeTemplate(task.workload, target, options.template_options));
  LOOM_ASSIGN_OR_RETURN(t->tuner_, MakeTuner(options.tuner, *t->template_));
  LOOM_RETURN_IF_ERROR(t->LoadHistory());
  return t;
}

absl::Status TaskTuner::LoadHistory() {
  if (options_.transfer && options_.use_prior) LoadPrior();
  if (store_ == nullptr) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(std::vector<Record> records,
                        store_->ForTask(task_.key, target_.Key(), std::nullopt));
  std::vector<ops::Config> configs;
  std::vector<MeasureResult> results;
  for (const Record& r : records) {
    // Only this template's configs are points of this space.
    if (r.template_name != template_->name() || r.config_index < 0 ||
        r.config_index >= template_->space().size()) {
      continue;
    }
    // An index means the same config only while the knob space is unchanged (a newer Loom, or
    // test-fault knobs, may lay it out differently): the stored JSON must agree.
    if (r.config_json != template_->space().ToJson(ops::Config{r.config_index})) continue;
    bool own = r.job_id == options_.job_id;
    if (own) {
      ++resumed_trials_;
      errors_ += !r.ok();
    } else if (!options_.transfer) {
      continue;
    } else {
      ++transferred_;
    }
    MeasureResult m;
    m.config = ops::Config{r.config_index};
    m.costs = r.costs;
    m.error = r.error;
    m.error_msg = r.error_msg;
    m.timestamp = r.timestamp;
    configs.push_back(m.config);
    results.push_back(std::move(m));
  }
  trials_done_ = resumed_trials_;
  if (!configs.empty()) tuner_->LoadHistory(configs, results);
  if (options_.transfer) LOOM_RETURN_IF_ERROR(LoadSimilarTasks());
  return absl::OkStatus();
}

absl::Status TaskTuner::LoadSimilarTasks() {
  LOOM_ASSIGN_OR_RETURN(std::vector<Record> records,
                        store_->Similar(task_.workload, target_.Key(), kMaxSimilarRecords));
  // Grouped by task, in the store's order (nearest task first).
  std::vector<std::string> keys;
  absl::flat_hash_map<std::string, std::vector<const Record*>> by_task;
  for (const Record& r : records) {
    if (r.task_key == task_.key || r.template_name != template_->name()) continue;
    auto [it, inserted] = by_task.try_emplace(r.task_key);
    if (inserted) keys.push_back(r.task_key);
    it->second.push_back(&r);
  }
  for (const std::string& key : keys) {
    absl::StatusOr<graph::Workload> w = graph::ParseWorkloadKey(key);
    if (!w.ok()) continue;
    absl::StatusOr<std::unique_ptr<ops::Template>> other =
        ops::MakeTemplate(*w, target_, options_.template_options);
    if (!other.ok() || (*other)->name() != template_->name()) continue;
    std::vector<ops::Config> configs;
    std::vector<MeasureResult> results;
    for (const Record* r : by_task[key]) {
      const ops::Config c{r->config_index};
      if (!(*other)->space().Contains(c) || r->config_json != (*other)->space().ToJson(c)) continue;
      MeasureResult m;
      m.config = c;
      m.costs = r->costs;
      m.error = r->error;
      configs.push_back(c);
      results.push_back(std::move(m));
    }
    if (configs.empty()) continue;
    similar_records_ += static_cast<int64_t>(configs.size());
    tuner_->LoadTransfer(**other, configs, results);
  }
  return absl::OkStatus();
}

void TaskTuner::LoadPrior() {
  if (options_.tuner.kind != "xgb") return;  // the only tuner with a model to seed
  const TuningPrior* prior = options_.prior ? options_.prior.get() : BuiltinPrior(target_);
  if (prior == nullptr) return;
  for (const PriorTransfer& t :
       PriorTransfersFor(*prior, template_->name(), target_, options_.template_options)) {
    prior_records_ += static_cast<int64_t>(t.configs.size());
    tuner_->LoadTransfer(*t.tmpl, t.configs, t.results);
  }
}

bool TaskTuner::Done() const { return trials_done_ >= options_.trials || !tuner_->HasNext(); }

int TaskTuner::NextBatchSize() const {
  if (Done()) return 0;
  return static_cast<int>(std::min<int64_t>(options_.batch_size, options_.trials - trials_done_));
}

MeasureTask TaskTuner::measure_task() const {
  return MeasureTask{
      .workload_key = task_.key, .target = target_, .template_options = options_.template_options};
}

RecordContext TaskTuner::record_context() const {
  return RecordContext{.task_key = task_.key,
                       .template_name = template_->name(),
                       .target_key = target_.Key(),
                       .job_id = options_.job_id,
                       .flops = task_.flops};
}

absl::Status TaskTuner::FinishRound(const std::vector<Record>& records,
                                    const std::vector<StageTiming>& timings) {
  trials_done_ += static_cast<int64_t>(records.size());
  for (const Record& r : records) {
    errors_ += !r.ok();
    if (r.ok()) measured_[r.config_index] = r.median_cost;
  }
  if (store_ != nullptr && !timings.empty()) {
    LOOM_RETURN_IF_ERROR(store_->AppendStageTimings(options_.job_id, task_.key, round_, timings));
  }
  ++round_;
  return absl::OkStatus();
}

absl::StatusOr<RoundReport> TaskTuner::RunRound(Builder& builder, Measurer& measurer,
                                                const RoundResources& resources) {
  RoundReport report;
  report.round = round_;
  ProposeOutput proposed = ProposeStage(*tuner_, NextBatchSize(), resources.cpu);
  BuildOutput built = BuildStage(*template_, builder, proposed.configs, resources.cpu);
  MeasureOutput measured = MeasureStage(measurer, measure_task(), built.builds, resources.device);
  LOOM_ASSIGN_OR_RETURN(UpdateOutput updated,
                        UpdateStage(*tuner_, store_, record_context(), built.builds,
                                    measured.results, resources.cpu));
  report.records = std::move(updated.records);
  report.timings = {proposed.timing, built.timing, measured.timing, updated.timing};
  LOOM_RETURN_IF_ERROR(FinishRound(report.records, report.timings));
  return report;
}

absl::Status TaskTuner::RecordDefault(const BuildResult& build, const MeasureResult& result) {
  if (store_ == nullptr) return absl::OkStatus();
  RecordContext context = record_context();
  context.job_id = options_.job_id + "#default";
  return store_->Append(
      {MakeRecord(context, result, template_->space().ToJson(result.config), build.build_seconds)});
}

std::optional<double> TaskTuner::MeasuredCost(int64_t config_index) const {
  auto it = measured_.find(config_index);
  if (it == measured_.end()) return std::nullopt;
  return it->second;
}

double TaskTuner::best_gflops() const {
  if (!tuner_->has_best()) return 0;
  return task_.flops / tuner_->best_cost() / 1e9;
}

std::string TaskTuner::best_config_json() const {
  if (!tuner_->has_best()) return "";
  return template_->space().ToJson(tuner_->best_config());
}

}  // namespace loom::tune
