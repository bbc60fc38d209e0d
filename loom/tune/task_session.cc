#include "loom/tune/task_session.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"

namespace loom::tune {
namespace {

constexpr int kMaxSimilarRecords = 2000;
constexpr double kInf = std::numeric_limits<double>::infinity();

v1::SessionTrial ToTrial(const MeasureResult& m, bool own) {
  v1::SessionTrial t;
  t.set_config_index(m.config.index);
  for (double c : m.costs) t.add_costs(c);
  t.set_error(static_cast<int32_t>(m.error));
  t.set_error_msg(m.error_msg);
  t.set_timestamp_unix_micros(absl::ToUnixMicros(m.timestamp));
  t.set_own(own);
  return t;
}

// A trial of a saved state, which may come from anywhere: kinds and costs are range-checked.
absl::StatusOr<MeasureResult> FromTrial(const v1::SessionTrial& t, const ops::ConfigSpace& space) {
  if (!space.Contains(ops::Config{t.config_index()})) {
    return absl::InvalidArgumentError(
        absl::StrCat("session state: config ", t.config_index(), " is outside the space"));
  }
  if (t.error() < static_cast<int32_t>(ErrorKind::kNone) ||
      t.error() > static_cast<int32_t>(ErrorKind::kUnknown)) {
    return absl::InvalidArgumentError(absl::StrCat("session state: bad error kind ", t.error()));
  }
  MeasureResult m;
  m.config = ops::Config{t.config_index()};
  for (double c : t.costs()) {
    if (!std::isfinite(c) || c < 0) {
      return absl::InvalidArgumentError(absl::StrCat("session state: bad cost ", c));
    }
    m.costs.push_back(c);
  }
  m.error = static_cast<ErrorKind>(t.error());
  m.error_msg = t.error_msg();
  m.timestamp = absl::FromUnixMicros(t.timestamp_unix_micros());
  return m;
}

MeasureResult FromRecord(const Record& r) {
  MeasureResult m;
  m.config = ops::Config{r.config_index};
  m.costs = r.costs;
  m.error = r.error;
  m.error_msg = r.error_msg;
  m.timestamp = r.timestamp;
  return m;
}

sched::StageKind KindOf(int phase_index) {
  constexpr sched::StageKind kKinds[] = {sched::StageKind::kPropose, sched::StageKind::kBuild,
                                         sched::StageKind::kMeasure, sched::StageKind::kUpdate,
                                         sched::StageKind::kBuild,   sched::StageKind::kMeasure,
                                         sched::StageKind::kOther};
  return kKinds[phase_index];
}

std::string IndexList(const std::vector<ops::Config>& configs) {
  return absl::StrJoin(
      configs, ",", [](std::string* out, const ops::Config& c) { absl::StrAppend(out, c.index); });
}

}  // namespace

void PreferDefaultIfFaster(TaskOutcome& outcome, const ops::Template& tmpl) {
  if (!(outcome.default_cost < outcome.best_cost)) return;  // also false when default is +inf
  outcome.best_cost = outcome.default_cost;
  outcome.best_gflops = outcome.task.flops / outcome.default_cost / 1e9;
  outcome.best_config_json = tmpl.space().ToJson(tmpl.DefaultConfig());
}

TaskSession::TaskSession(graph::Task task, ops::Target target, TaskTunerOptions options,
                         RecordStore* store)
    : task_(std::move(task)),
      target_(std::move(target)),
      options_(std::move(options)),
      store_(store),
      state_(std::make_unique<v1::TaskSessionState>()) {}

absl::Status TaskSession::Init() {
  if (options_.trials < 0 || options_.batch_size <= 0) {
    return absl::InvalidArgumentError("trials must be >= 0 and the batch size positive");
  }
  LOOM_ASSIGN_OR_RETURN(template_,
                        ops::MakeTemplate(task_.workload, target_, options_.template_options));
  LOOM_ASSIGN_OR_RETURN(tuner_, search::MakeTuner(options_.tuner, *template_));
  state_->set_version(kStateVersion);
  state_->set_job_id(options_.job_id);
  state_->set_task_key(task_.key);
  state_->set_target_key(target_.Key());
  state_->set_template_name(template_->name());
  state_->set_tuner_kind(options_.tuner.kind);
  state_->set_seed(options_.tuner.seed);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TaskSession>> TaskSession::Create(const graph::Task& task,
                                                                 const ops::Target& target,
                                                                 const TaskTunerOptions& options,
                                                                 RecordStore* store) {
  std::unique_ptr<TaskSession> s(new TaskSession(task, target, options, store));
  LOOM_RETURN_IF_ERROR(s->Init());
  LOOM_RETURN_IF_ERROR(s->LoadFromStore());
  LOOM_RETURN_IF_ERROR(s->SeedTuner(/*feed=*/!options.tuner_elsewhere));
  s->AfterRound();
  return s;
}

absl::Status TaskSession::LoadFromStore() {
  if (store_ == nullptr) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(std::vector<Record> records,
                        store_->ForTask(task_.key, target_.Key(), std::nullopt));
  for (const Record& r : records) {
    // Only this template's configs are points of this space.
    if (r.template_name != template_->name() || r.config_index < 0 ||
        r.config_index >= template_->space().size()) {
      continue;
    }
    // An index means the same config only while the knob space is unchanged (a newer Loom, or
    // test-fault knobs, may lay it out differently): the stored JSON must agree.
    if (r.config_json != template_->space().ToJson(ops::Config{r.config_index})) continue;
    const bool own = r.job_id == options_.job_id;
    if (!own && !options_.transfer) continue;
    *state_->add_history() = ToTrial(FromRecord(r), own);
  }
  if (!options_.transfer) return absl::OkStatus();
  // Other tasks of the same template, grouped by task in the store's order (nearest first).
  LOOM_ASSIGN_OR_RETURN(records,
                        store_->Similar(task_.workload, target_.Key(), kMaxSimilarRecords));
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
    v1::SessionSimilarTask similar;
    similar.set_workload_key(key);
    for (const Record* r : by_task[key]) {
      const ops::Config c{r->config_index};
      if (!(*other)->space().Contains(c) || r->config_json != (*other)->space().ToJson(c)) continue;
      *similar.add_trials() = ToTrial(FromRecord(*r), /*own=*/false);
    }
    if (similar.trials_size() > 0) *state_->add_similar() = std::move(similar);
  }
  return absl::OkStatus();
}

absl::Status TaskSession::SeedTuner(bool feed) {
  // The prior first, then the task's own history, then similar tasks (the xgb tuner fits once on
  // all of it, at its first proposal).
  if (options_.transfer && options_.use_prior && options_.tuner.kind == "xgb") {
    const search::TuningPrior* prior =
        options_.prior ? options_.prior.get() : search::BuiltinPrior(target_);
    if (prior != nullptr) {
      for (const search::PriorTransfer& t : search::PriorTransfersFor(
               *prior, template_->name(), target_, options_.template_options)) {
        prior_records_ += static_cast<int64_t>(t.configs.size());
        if (feed) tuner_->LoadTransfer(*t.tmpl, t.configs, t.results);
      }
    }
  }
  state_->set_prior_records(prior_records_);
  std::vector<ops::Config> configs;
  std::vector<MeasureResult> results;
  for (const v1::SessionTrial& t : state_->history()) {
    LOOM_ASSIGN_OR_RETURN(MeasureResult m, FromTrial(t, template_->space()));
    if (t.own()) {
      ++resumed_trials_;
      errors_ += !m.ok();
    } else {
      ++transferred_;
    }
    NoteBest(m);
    configs.push_back(m.config);
    results.push_back(std::move(m));
  }
  trials_done_ = resumed_trials_;
  if (feed && !configs.empty()) tuner_->LoadHistory(configs, results);
  for (const v1::SessionSimilarTask& similar : state_->similar()) {
    LOOM_ASSIGN_OR_RETURN(graph::Workload w, graph::ParseWorkloadKey(similar.workload_key()));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<ops::Template> other,
                          ops::MakeTemplate(w, target_, options_.template_options));
    if (other->name() != template_->name()) {
      return absl::InvalidArgumentError(absl::StrCat("session state: similar task ",
                                                     similar.workload_key(), " has template ",
                                                     other->name(), ", not ", template_->name()));
    }
    configs.clear();
    results.clear();
    for (const v1::SessionTrial& t : similar.trials()) {
      LOOM_ASSIGN_OR_RETURN(MeasureResult m, FromTrial(t, other->space()));
      configs.push_back(m.config);
      results.push_back(std::move(m));
    }
    similar_records_ += static_cast<int64_t>(configs.size());
    if (feed) tuner_->LoadTransfer(*other, configs, results);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TaskSession>> TaskSession::Restore(const v1::TaskSessionState& state,
                                                                  const graph::Task& task,
                                                                  const ops::Target& target,
                                                                  const TaskTunerOptions& options,
                                                                  RecordStore* store) {
  std::unique_ptr<TaskSession> s(new TaskSession(task, target, options, store));
  LOOM_RETURN_IF_ERROR(s->Init());
  // Once the session has begun, the baseline's place is the state's, whatever
  // options.baseline_first says (so a stage restored elsewhere needs no word on the option): a
  // measured baseline is kept (measured before the rounds replayed below, or after the last of
  // them, which it then ends), and rounds without one keep it for the end.
  if (state.baseline_done()) {
    s->state_->set_baseline_done(true);
    s->state_->set_default_cost(state.default_cost());
  } else if (state.rounds_size() > 0 || state.has_pending()) {
    s->options_.baseline_first = false;  // a session that began without: keep its order
  }
  const v1::TaskSessionState& mine = *s->state_;
  if (state.version() != kStateVersion) {
    return absl::InvalidArgumentError(absl::StrCat("session state: version ", state.version(),
                                                   ", this Loom reads ", kStateVersion));
  }
  auto differs = [](const char* what, const std::string& got, const std::string& want) {
    return absl::InvalidArgumentError(
        absl::StrCat("session state is of another ", what, ": '", got, "', not '", want, "'"));
  };
  if (state.job_id() != mine.job_id()) return differs("job", state.job_id(), mine.job_id());
  if (state.task_key() != mine.task_key())
    return differs("task", state.task_key(), mine.task_key());
  if (state.target_key() != mine.target_key()) {
    return differs("target", state.target_key(), mine.target_key());
  }
  if (state.template_name() != mine.template_name()) {
    return differs("template", state.template_name(), mine.template_name());
  }
  if (state.tuner_kind() != mine.tuner_kind() || state.seed() != mine.seed()) {
    return differs("tuner", absl::StrCat(state.tuner_kind(), "/", state.seed()),
                   absl::StrCat(mine.tuner_kind(), "/", mine.seed()));
  }
  *s->state_->mutable_history() = state.history();
  *s->state_->mutable_similar() = state.similar();
  // With a saved tuner state the tuner continues from it; without one (a state written before
  // tuners saved theirs) it is rebuilt by replaying every round. With the tuner elsewhere the
  // state is only checked and kept for the stages that run it.
  const bool has_tuner = state.has_tuner();
  const bool replay = !options.tuner_elsewhere && !has_tuner;
  if (has_tuner) {
    if (options.tuner_elsewhere) {
      LOOM_RETURN_IF_ERROR(s->CheckTunerState(state.tuner(), {}));
      *s->state_->mutable_tuner() = state.tuner();
    } else {
      absl::Status restored = s->tuner_->RestoreState(state.tuner());
      if (!restored.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("session state: ", restored.message()));
      }
    }
  }
  LOOM_RETURN_IF_ERROR(s->SeedTuner(/*feed=*/replay));
  s->restoring_ = !replay;
  s->AfterRound();
  // Replay: every finished round must be the one this tuner proposes now. Without replay, no
  // config may come twice, and a restored tuner must have visited every saved one.
  absl::flat_hash_set<int64_t> in_rounds;
  auto replay_propose = [&](const v1::SessionRound& round,
                            int64_t index) -> absl::StatusOr<std::vector<ops::Config>> {
    if (s->phase_ != Phase::kPropose) {
      return absl::InvalidArgumentError(
          absl::StrCat("session state: round ", index, " comes after the session ended"));
    }
    if (round.batch_size() != s->batch_) {
      return absl::InvalidArgumentError(absl::StrCat("session state: round ", index, " asked for ",
                                                     round.batch_size(), " configs, not ",
                                                     s->batch_));
    }
    std::vector<ops::Config> saved;
    for (int64_t c : round.config_indices()) {
      if (!s->template_->space().Contains(ops::Config{c})) {
        return absl::InvalidArgumentError(
            absl::StrCat("session state: config ", c, " is outside the space"));
      }
      if (!replay && !in_rounds.insert(c).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("session state: config ", c, " appears twice in the rounds"));
      }
      if (has_tuner && !options.tuner_elsewhere && !s->tuner_->WasVisited(ops::Config{c})) {
        return absl::InvalidArgumentError(absl::StrCat(
            "session state: the tuner state has not visited config ", c, " of round ", index));
      }
      saved.push_back(ops::Config{c});
    }
    if (!replay) return saved;
    ++s->replayed_rounds_;
    std::vector<ops::Config> proposed = s->tuner_->Propose(s->batch_);
    if (proposed != saved) {
      return absl::InvalidArgumentError(absl::StrCat("session state does not replay: round ", index,
                                                     " proposes [", IndexList(proposed),
                                                     "], the state says [", IndexList(saved), "]"));
    }
    return proposed;
  };
  for (const v1::SessionRound& round : state.rounds()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<ops::Config> configs, replay_propose(round, s->round_));
    if (round.results_size() != static_cast<int>(configs.size())) {
      return absl::InvalidArgumentError(absl::StrCat("session state: round ", s->round_, " has ",
                                                     round.results_size(), " results for ",
                                                     configs.size(), " configs"));
    }
    std::vector<MeasureResult> results;
    for (int i = 0; i < round.results_size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(MeasureResult m, FromTrial(round.results(i), s->template_->space()));
      if (m.config != configs[static_cast<size_t>(i)]) {
        return absl::InvalidArgumentError(absl::StrCat("session state: round ", s->round_,
                                                       " has a result for config ", m.config.index,
                                                       " where it proposed ", configs[i].index));
      }
      results.push_back(std::move(m));
    }
    if (replay) s->tuner_->Update(configs, results);
    s->AccountRound(configs, results);
  }
  s->restoring_ = false;
  // Without replay, the saved word of the stage that ran the tuner last (after the rounds it
  // came after).
  if (!replay && state.tuner_done()) s->state_->set_tuner_done(true);
  if (state.has_pending()) {
    LOOM_ASSIGN_OR_RETURN(s->configs_, replay_propose(state.pending(), s->round_));
    *s->state_->mutable_pending() = state.pending();
    if (options.tuner_elsewhere) {
      if (state.has_tuner_before_pending()) {
        LOOM_RETURN_IF_ERROR(s->CheckTunerState(state.tuner_before_pending(), {}));
        *s->state_->mutable_tuner_before_pending() = state.tuner_before_pending();
      }
      s->state_->set_tuner_done_before_pending(state.tuner_done_before_pending());
    }
    s->phase_ = Phase::kBuild;
  } else if (s->phase_ == Phase::kPropose) {
    s->AfterRound();  // now with the tuner's (or the saved) word on whether it has more
  }
  return s;
}

absl::Status TaskSession::KeepTunerState(const StageOutcome& outcome,
                                         const std::vector<ops::Config>& configs) {
  if (!outcome.tuner_state.has_value()) {
    state_->clear_tuner();  // the stage ran a tuner that saves nothing: the next one replays
    return absl::OkStatus();
  }
  LOOM_RETURN_IF_ERROR(CheckTunerState(*outcome.tuner_state, configs));
  *state_->mutable_tuner() = *outcome.tuner_state;
  return absl::OkStatus();
}

absl::Status TaskSession::CheckTunerState(const v1::TunerState& state,
                                          const std::vector<ops::Config>& configs) const {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<search::Tuner> fresh,
                        search::MakeTuner(options_.tuner, *template_));
  absl::Status restored = fresh->RestoreState(state);
  if (!restored.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("session state: ", restored.message()));
  }
  for (const ops::Config& c : configs) {
    if (!fresh->WasVisited(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tuner state has not visited config ", c.index, " of the round"));
    }
  }
  return absl::OkStatus();
}

TaskSession::~TaskSession() = default;

v1::TaskSessionState TaskSession::Save() const {
  v1::TaskSessionState state = *state_;
  if (options_.tuner_elsewhere) return state;  // the tuner state the last stage brought, if any
  absl::StatusOr<v1::TunerState> tuner = tuner_->SaveState();
  if (tuner.ok()) {
    *state.mutable_tuner() = *std::move(tuner);
  } else {
    base::LogWarning("task session of ", task_.key,
                     ": the tuner state does not save, a restore replays the rounds: ",
                     tuner.status().message());
    state.clear_tuner();
  }
  return state;
}

int TaskSession::NextBatchSize() const {
  return static_cast<int>(std::min<int64_t>(options_.batch_size, options_.trials - trials_done_));
}

bool TaskSession::BaselineFromTrials() {
  std::optional<double> cost = MeasuredCost(template_->DefaultConfig().index);
  if (!cost.has_value()) return false;
  state_->set_baseline_done(true);
  state_->set_default_cost(*cost);
  return true;
}

void TaskSession::AfterRound() {
  const bool baseline_due = options_.measure_default && !state_->baseline_done();
  const bool trials_left = trials_done_ < options_.trials && TunerHasNext();
  if (baseline_due && options_.baseline_first && trials_left && !BaselineFromTrials()) {
    phase_ = Phase::kBaselineBuild;
    return;
  }
  if (trials_left) {
    phase_ = Phase::kPropose;
    batch_ = NextBatchSize();
    return;
  }
  // The tuner usually starts from the default config, so its trial is the baseline already.
  if (!baseline_due || BaselineFromTrials()) {
    phase_ = Phase::kDone;
    return;
  }
  phase_ = Phase::kBaselineBuild;
}

bool TaskSession::TunerHasNext() const {
  if (state_->tuner_done()) return false;
  return options_.tuner_elsewhere || restoring_ || tuner_->HasNext();
}

void TaskSession::NoteBest(const MeasureResult& m) {
  // The tuner's rule (Tuner::Record): a success with a lower median cost; ties keep the earlier.
  if (search::ResultScore(m) > 0 && m.MedianCost() < best_cost_) {
    best_cost_ = m.MedianCost();
    best_config_ = m.config;
  }
}

void TaskSession::AccountRound(const std::vector<ops::Config>& configs,
                               const std::vector<MeasureResult>& results) {
  v1::SessionRound* round = state_->add_rounds();
  round->set_batch_size(batch_);
  for (size_t i = 0; i < configs.size(); ++i) {
    round->add_config_indices(configs[i].index);
    *round->add_results() = ToTrial(results[i], /*own=*/true);
    errors_ += !results[i].ok();
    NoteBest(results[i]);
    if (results[i].ok()) measured_[configs[i].index] = results[i].MedianCost();
  }
  trials_done_ += static_cast<int64_t>(configs.size());
  state_->clear_pending();
  state_->clear_tuner_before_pending();
  state_->set_tuner_done_before_pending(false);
  ++round_;
  AfterRound();
}

SessionRequest TaskSession::Next() const {
  SessionRequest r;
  r.round = round_;
  r.kind = KindOf(static_cast<int>(phase_));
  switch (phase_) {
    case Phase::kPropose:
      r.batch_size = batch_;
      break;
    case Phase::kBuild:
      r.configs = configs_;
      break;
    case Phase::kMeasure:
      r.builds = builds_;
      break;
    case Phase::kUpdate:
      r.builds = builds_;
      r.results = results_;
      break;
    case Phase::kBaselineBuild:
      r.baseline = true;
      r.round = -1;
      r.configs = {template_->DefaultConfig()};
      break;
    case Phase::kBaselineMeasure:
      r.baseline = true;
      r.round = -1;
      r.builds = builds_;
      break;
    case Phase::kDone:
      r.done = true;
      break;
  }
  return r;
}

absl::Status TaskSession::Complete(const StageOutcome& outcome) {
  const sched::StageKind want = KindOf(static_cast<int>(phase_));
  if (phase_ == Phase::kDone || outcome.kind != want) {
    return absl::FailedPreconditionError(
        absl::StrCat("task session of ", task_.key, ": got a ",
                     std::string(sched::StageKindName(outcome.kind)), " result while waiting for ",
                     phase_ == Phase::kDone ? "nothing" : std::string(sched::StageKindName(want))));
  }
  auto same_configs = [](const auto& got, const std::vector<ops::Config>& want_configs,
                         const char* what) -> absl::Status {
    bool same = got.size() == want_configs.size();
    for (size_t i = 0; same && i < got.size(); ++i) same = got[i].config == want_configs[i];
    if (same) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(what, " results do not match the ",
                                                   want_configs.size(), " configs asked for"));
  };
  std::vector<ops::Config> built_configs;
  for (const BuildResult& b : builds_) built_configs.push_back(b.config);
  switch (phase_) {
    case Phase::kPropose: {
      if (static_cast<int>(outcome.configs.size()) > batch_) {
        return absl::InvalidArgumentError(absl::StrCat("propose returned ", outcome.configs.size(),
                                                       " configs for a batch of ", batch_));
      }
      // The proposal may come from another process (tuner_elsewhere): each config must be a
      // point of the space, proposed once.
      absl::flat_hash_set<int64_t> seen;
      for (const ops::Config& c : outcome.configs) {
        if (!template_->space().Contains(c) || !seen.insert(c.index).second) {
          return absl::InvalidArgumentError(absl::StrCat("proposed config ", c.index,
                                                         " is outside the space of ",
                                                         template_->name(), " or repeated"));
        }
      }
      if (options_.tuner_elsewhere) {
        const v1::TunerState before = state_->tuner();
        const bool before_has = state_->has_tuner();
        const bool done_before = state_->tuner_done();
        LOOM_RETURN_IF_ERROR(KeepTunerState(outcome, outcome.configs));
        if (!outcome.tuner_has_next) state_->set_tuner_done(true);
        if (!outcome.configs.empty()) {
          if (before_has) {
            *state_->mutable_tuner_before_pending() = before;
          } else {
            state_->clear_tuner_before_pending();
          }
          state_->set_tuner_done_before_pending(done_before);
        }
      }
      if (outcome.configs.empty()) {
        // Nothing left to propose: the trials end here (no empty round is run).
        state_->set_tuner_done(true);
        AfterRound();
        return absl::OkStatus();
      }
      configs_ = outcome.configs;
      builds_.clear();
      results_.clear();
      timings_ = {outcome.timing};
      v1::SessionRound* pending = state_->mutable_pending();
      pending->Clear();
      pending->set_batch_size(batch_);
      for (const ops::Config& c : configs_) pending->add_config_indices(c.index);
      phase_ = Phase::kBuild;
      return absl::OkStatus();
    }
    case Phase::kBuild:
    case Phase::kBaselineBuild: {
      const std::vector<ops::Config> asked =
          phase_ == Phase::kBuild ? configs_ : std::vector<ops::Config>{template_->DefaultConfig()};
      LOOM_RETURN_IF_ERROR(same_configs(outcome.builds, asked, "build"));
      builds_ = outcome.builds;
      timings_.push_back(outcome.timing);
      phase_ = phase_ == Phase::kBuild ? Phase::kMeasure : Phase::kBaselineMeasure;
      return absl::OkStatus();
    }
    case Phase::kMeasure: {
      LOOM_RETURN_IF_ERROR(same_configs(outcome.results, built_configs, "measure"));
      results_ = outcome.results;
      timings_.push_back(outcome.timing);
      phase_ = Phase::kUpdate;
      return absl::OkStatus();
    }
    case Phase::kUpdate: {
      if (outcome.records.size() != results_.size()) {
        return absl::InvalidArgumentError(absl::StrCat("update stored ", outcome.records.size(),
                                                       " records for ", results_.size(),
                                                       " results"));
      }
      if (options_.tuner_elsewhere) LOOM_RETURN_IF_ERROR(KeepTunerState(outcome, configs_));
      timings_.push_back(outcome.timing);
      if (store_ != nullptr) {
        LOOM_RETURN_IF_ERROR(
            store_->AppendStageTimings(options_.job_id, task_.key, round_, timings_));
      }
      timings_.clear();
      if (options_.tuner_elsewhere && !outcome.tuner_has_next) state_->set_tuner_done(true);
      AccountRound(configs_, results_);
      configs_.clear();
      builds_.clear();
      results_.clear();
      return absl::OkStatus();
    }
    case Phase::kBaselineMeasure: {
      LOOM_RETURN_IF_ERROR(same_configs(outcome.results, built_configs, "measure"));
      const MeasureResult& m = outcome.results[0];
      if (store_ != nullptr) {
        // Not one of the job's trials, but best-k (and so the compiled model) and later jobs'
        // transfer see it, so a tuned model is never worse than the default on the
        // measurements taken.
        RecordContext context = record_context();
        context.job_id = options_.job_id + "#default";
        LOOM_RETURN_IF_ERROR(store_->Append({MakeRecord(
            context, m, template_->space().ToJson(m.config), builds_[0].build_seconds)}));
      }
      state_->set_baseline_done(true);
      state_->set_default_cost(m.ok() ? m.MedianCost() : kInf);
      builds_.clear();
      timings_.clear();
      AfterRound();  // done, or (baseline_first) the first round
      return absl::OkStatus();
    }
    case Phase::kDone:
      break;
  }
  LOOM_CHECK(false);  // kDone was refused above
  return absl::InternalError("unreachable");
}

absl::Status TaskSession::DropPending() {
  if (!options_.tuner_elsewhere || !state_->has_pending()) {
    return absl::FailedPreconditionError(
        absl::StrCat("task session of ", task_.key, ": no proposal from elsewhere in flight"));
  }
  if (state_->has_tuner_before_pending()) {
    *state_->mutable_tuner() = state_->tuner_before_pending();
  } else {
    state_->clear_tuner();
  }
  state_->set_tuner_done(state_->tuner_done_before_pending());
  state_->clear_tuner_before_pending();
  state_->set_tuner_done_before_pending(false);
  state_->clear_pending();
  configs_.clear();
  builds_.clear();
  results_.clear();
  timings_.clear();
  AfterRound();
  return absl::OkStatus();
}

TaskOutcome TaskSession::Outcome() const {
  TaskOutcome o;
  o.task = task_;
  o.template_name = template_->name();
  o.trials = trials_done_;
  o.resumed_trials = resumed_trials_;
  o.transferred_records = transferred_;
  o.prior_records = prior_records_;
  o.errors = errors_;
  o.best_cost = best_cost();
  o.best_gflops = best_gflops();
  o.best_config_json = best_config_json();
  o.default_cost = state_->baseline_done() ? state_->default_cost() : kInf;
  PreferDefaultIfFaster(o, *template_);
  return o;
}

MeasureTask TaskSession::measure_task() const {
  return MeasureTask{
      .workload_key = task_.key, .target = target_, .template_options = options_.template_options};
}

RecordContext TaskSession::record_context() const {
  return RecordContext{.task_key = task_.key,
                       .template_name = template_->name(),
                       .target_key = target_.Key(),
                       .job_id = options_.job_id,
                       .flops = task_.flops};
}

std::optional<double> TaskSession::MeasuredCost(int64_t config_index) const {
  auto it = measured_.find(config_index);
  if (it == measured_.end()) return std::nullopt;
  return it->second;
}

double TaskSession::best_gflops() const {
  if (!(best_cost_ < kInf)) return 0;
  return task_.flops / best_cost_ / 1e9;
}

std::string TaskSession::best_config_json() const {
  if (!(best_cost_ < kInf)) return "";
  return template_->space().ToJson(best_config_);
}

absl::StatusOr<StageOutcome> RunStage(TaskSession& session, const SessionRequest& request,
                                      const StageEnv& env) {
  LOOM_CHECK(!request.done);
  StageOutcome out{.kind = request.kind};
  const std::string& cpu = env.resources.cpu;
  switch (request.kind) {
    case sched::StageKind::kPropose: {
      ProposeOutput p = ProposeStage(session.tuner(), request.batch_size, cpu);
      out.configs = std::move(p.configs);
      out.timing = std::move(p.timing);
      out.tuner_has_next = session.tuner().HasNext();
      break;
    }
    case sched::StageKind::kBuild: {
      BuildOutput b = BuildStage(session.tmpl(), *env.builder, request.configs, cpu);
      out.builds = std::move(b.builds);
      out.timing = std::move(b.timing);
      break;
    }
    case sched::StageKind::kMeasure: {
      MeasureOutput m =
          MeasureStage(*env.measurer, session.measure_task(), request.builds, env.resources.device);
      out.results = std::move(m.results);
      out.timing = std::move(m.timing);
      break;
    }
    case sched::StageKind::kUpdate: {
      LOOM_ASSIGN_OR_RETURN(UpdateOutput u,
                            UpdateStage(session.tuner(), session.store(), session.record_context(),
                                        request.builds, request.results, cpu));
      out.records = std::move(u.records);
      out.timing = std::move(u.timing);
      out.tuner_has_next = session.tuner().HasNext();
      break;
    }
    case sched::StageKind::kOther:
      LOOM_CHECK(false);  // Next() never asks for it
  }
  return out;
}

absl::StatusOr<StageOutcome> RunRestoredStage(const v1::TaskSessionState& state,
                                              const graph::Task& task, const ops::Target& target,
                                              TaskTunerOptions options,
                                              const SessionRequest& request) {
  if (request.kind != sched::StageKind::kPropose && request.kind != sched::StageKind::kUpdate) {
    return absl::FailedPreconditionError(
        absl::StrCat("a restored session runs propose and update stages, not ",
                     std::string(sched::StageKindName(request.kind))));
  }
  options.tuner_elsewhere = false;
  absl::StatusOr<std::unique_ptr<TaskSession>> restored =
      TaskSession::Restore(state, task, target, options, /*store=*/nullptr);
  if (absl::IsInvalidArgument(restored.status())) {
    return absl::DataLossError(
        absl::StrCat("the session state does not restore: ", restored.status().message()));
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<TaskSession> session, std::move(restored));
  auto at = [&](sched::StageKind want) -> absl::Status {
    SessionRequest next = session->Next();
    if (!next.done && next.kind == want) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "the session state is not at a ", std::string(sched::StageKindName(want)), " stage"));
  };
  // The stage's outcome with the tuner's state after it, so the next stage restores it without
  // a replay.
  auto with_tuner = [&](absl::StatusOr<StageOutcome> out) -> absl::StatusOr<StageOutcome> {
    if (!out.ok()) return out;
    LOOM_ASSIGN_OR_RETURN(out->tuner_state, session->tuner().SaveState());
    out->replayed_rounds = session->replayed_rounds();
    return out;
  };
  if (request.kind == sched::StageKind::kPropose) {
    SessionRequest next = session->Next();
    if (next.done || next.kind != sched::StageKind::kPropose) {
      // The tuner has nothing more (space used up, early stopping): an empty proposal.
      return with_tuner(StageOutcome{.kind = sched::StageKind::kPropose, .tuner_has_next = false});
    }
    if (request.batch_size > 0 && next.batch_size != request.batch_size) {
      return absl::InvalidArgumentError(absl::StrCat("the session asks for ", next.batch_size,
                                                     " configs, the request for ",
                                                     request.batch_size));
    }
    return with_tuner(RunStage(*session, next, StageEnv{}));
  }
  LOOM_RETURN_IF_ERROR(at(sched::StageKind::kBuild));
  LOOM_RETURN_IF_ERROR(
      session->Complete(StageOutcome{.kind = sched::StageKind::kBuild, .builds = request.builds}));
  LOOM_RETURN_IF_ERROR(session->Complete(
      StageOutcome{.kind = sched::StageKind::kMeasure, .results = request.results}));
  LOOM_RETURN_IF_ERROR(at(sched::StageKind::kUpdate));
  return with_tuner(RunStage(*session, session->Next(), StageEnv{}));
}

}  // namespace loom::tune
