#include "loom/search/tuner.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"

namespace loom::search {
namespace {

// Random draws RandomUnvisited tries before it falls back to scanning the space.
constexpr int kMaxDraws = 256;

}  // namespace

double ResultScore(const tune::MeasureResult& result) {
  if (!result.ok()) return 0;
  double cost = result.MedianCost();
  if (!(cost > 0) || !std::isfinite(cost)) return 0;
  return 1.0 / cost;
}

Tuner::Tuner(const ops::Template& tmpl, const TunerOptions& options)
    : tmpl_(tmpl), options_(options), rng_(options.seed) {}

std::vector<ops::Config> Tuner::Propose(int batch_size) {
  if (batch_size <= 0 || !HasNext()) return {};
  int64_t left = space_size() - num_visited();
  int n = static_cast<int>(std::min<int64_t>(batch_size, left));
  std::vector<ops::Config> batch = NextBatch(n);
  LOOM_CHECK(static_cast<int>(batch.size()) <= n);
  for (const ops::Config& c : batch) {
    LOOM_CHECK(tmpl_.space().IsValid(c));  // a subclass proposed an invalid config
    bool inserted = visited_.insert(c.index).second;
    LOOM_CHECK(inserted);  // a subclass proposed a visited config or one twice
  }
  if (static_cast<int>(batch.size()) < n) exhausted_ = true;
  return batch;
}

void Tuner::Update(const std::vector<ops::Config>& configs,
                   const std::vector<tune::MeasureResult>& results) {
  Record(configs, results, /*from_history=*/false);
}

void Tuner::LoadHistory(const std::vector<ops::Config>& configs,
                        const std::vector<tune::MeasureResult>& results) {
  LOOM_CHECK(configs.size() == results.size());
  // History comes from a database, so a config outside the space (a record written by another
  // version of the template) is skipped rather than trusted.
  std::vector<ops::Config> kept_configs;
  std::vector<tune::MeasureResult> kept_results;
  for (size_t i = 0; i < configs.size(); ++i) {
    if (!tmpl_.space().Contains(configs[i])) continue;
    kept_configs.push_back(configs[i]);
    kept_results.push_back(results[i]);
  }
  if (kept_configs.size() < configs.size()) {
    base::LogWarning("tuner history: skipped ", configs.size() - kept_configs.size(),
                     " configs outside the space of ", tmpl_.name());
  }
  Record(kept_configs, kept_results, /*from_history=*/true);
}

void Tuner::Record(const std::vector<ops::Config>& configs,
                   const std::vector<tune::MeasureResult>& results, bool from_history) {
  LOOM_CHECK(configs.size() == results.size());
  std::vector<double> scores;
  scores.reserve(configs.size());
  for (size_t i = 0; i < configs.size(); ++i) {
    LOOM_CHECK(tmpl_.space().Contains(configs[i]));
    visited_.insert(configs[i].index);
    if (!from_history) ++num_trials_;
    double score = ResultScore(results[i]);
    scores.push_back(score);
    if (score > 0) {
      double cost = results[i].MedianCost();
      // Ties keep the earlier result, so the best is independent of later duplicates.
      if (cost < best_cost_) {
        best_cost_ = cost;
        best_config_ = configs[i];
        best_trial_ = from_history ? 0 : num_trials_;
      }
    }
  }
  OnResults(configs, scores, from_history);
}

bool EarlyStoppingFires(int early_stopping, int64_t trials, int64_t best_trial) {
  return early_stopping > 0 && trials - best_trial >= early_stopping;
}

bool Tuner::early_stopped() const {
  return EarlyStoppingFires(options_.early_stopping, num_trials_, best_trial_);
}

bool Tuner::HasNext() const {
  return !exhausted_ && num_visited() < space_size() && !early_stopped();
}

int64_t Tuner::RandomUnvisited(const absl::flat_hash_set<int64_t>& also_excluded) {
  int64_t size = space_size();
  int64_t excluded = num_visited() + static_cast<int64_t>(also_excluded.size());
  // Rejection sampling while at least half the space is unvisited: invalid configs are rejected
  // too, so the draws are bounded; when they all fail (a space mostly invalid or used up), scan
  // it, which costs no more than the excluded sets occupy plus the validity checks.
  if (excluded * 2 <= size) {
    for (int draw = 0; draw < kMaxDraws; ++draw) {
      int64_t i = rng_.UniformInt(0, size - 1);
      if (IsFree(i, also_excluded)) return i;
    }
  }
  std::vector<int64_t> free;
  for (int64_t i = 0; i < size; ++i) {
    if (IsFree(i, also_excluded)) free.push_back(i);
  }
  if (free.empty()) return -1;
  return free[rng_.UniformInt(0, static_cast<int64_t>(free.size()) - 1)];
}

std::string SaveRng(const base::Rng& rng) {
  std::ostringstream out;
  out << rng.engine();
  return out.str();
}

absl::Status RestoreRng(absl::string_view text, absl::string_view what, base::Rng& rng) {
  std::istringstream in{std::string(text)};
  std::mt19937_64 engine;
  in >> engine;
  if (in.fail()) {
    return absl::InvalidArgumentError(absl::StrCat("tuner state: ", what, " is not an RNG state"));
  }
  rng.engine() = engine;
  return absl::OkStatus();
}

absl::Status CheckIndices(const ops::ConfigSpace& space, absl::string_view what,
                          const google::protobuf::RepeatedField<int64_t>& indices) {
  for (int64_t index : indices) {
    if (!space.Contains(ops::Config{index})) {
      return absl::InvalidArgumentError(absl::StrCat("tuner state: ", what, " has config ", index,
                                                     ", outside the space of size ", space.size()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::TunerState> Tuner::SaveState() const {
  v1::TunerState state;
  state.set_kind(options_.kind);
  state.set_rng(SaveRng(rng_));
  std::vector<int64_t> visited(visited_.begin(), visited_.end());
  std::sort(visited.begin(), visited.end());
  state.mutable_visited()->Add(visited.begin(), visited.end());
  state.set_num_trials(num_trials_);
  state.set_best_config(best_config_.index);
  state.set_best_cost(best_cost_);
  state.set_best_trial(best_trial_);
  state.set_exhausted(exhausted_);
  LOOM_RETURN_IF_ERROR(SaveKindState(state));
  return state;
}

absl::Status Tuner::RestoreState(const v1::TunerState& state) {
  LOOM_CHECK(visited_.empty() && num_trials_ == 0);  // precondition: a fresh tuner
  if (state.kind() != options_.kind) {
    return absl::InvalidArgumentError(
        absl::StrCat("tuner state is of a '", state.kind(), "' tuner, not '", options_.kind, "'"));
  }
  const ops::ConfigSpace& space = tmpl_.space();
  LOOM_RETURN_IF_ERROR(CheckIndices(space, "visited", state.visited()));
  const bool has_best = state.best_cost() < std::numeric_limits<double>::infinity();
  if (std::isnan(state.best_cost()) || state.best_cost() < 0 ||
      (has_best && !space.Contains(ops::Config{state.best_config()}))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tuner state: bad best (config ", state.best_config(), ", cost ", state.best_cost(), ")"));
  }
  if (state.num_trials() < 0 || state.best_trial() < 0 || state.best_trial() > state.num_trials()) {
    return absl::InvalidArgumentError(absl::StrCat("tuner state: bad trial counts (",
                                                   state.num_trials(), " trials, best at ",
                                                   state.best_trial(), ")"));
  }
  LOOM_RETURN_IF_ERROR(RestoreRng(state.rng(), "rng", rng_));
  visited_.insert(state.visited().begin(), state.visited().end());
  num_trials_ = state.num_trials();
  best_config_ = has_best ? ops::Config{state.best_config()} : ops::Config{};
  best_cost_ = state.best_cost();
  best_trial_ = state.best_trial();
  exhausted_ = state.exhausted();
  return RestoreKindState(state);
}

std::vector<std::string> TunerKinds() { return {"random", "grid", "ga", "xgb"}; }

absl::StatusOr<std::unique_ptr<Tuner>> MakeTuner(const TunerOptions& options,
                                                 const ops::Template& tmpl) {
  if (options.pop_size < 2 || options.elite_num < 0 || options.elite_num > options.pop_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tuner options: pop_size must be >= 2 and elite_num in [0, pop_size]; got ",
                     options.pop_size, " and ", options.elite_num));
  }
  if (!(options.mutation_prob >= 0 && options.mutation_prob <= 1) ||
      !(options.epsilon >= 0 && options.epsilon <= 1)) {
    return absl::InvalidArgumentError(
        "tuner options: mutation_prob and epsilon must be probabilities in [0, 1]");
  }
  if (options.plan_size <= 0 || options.sa_iters <= 0 || options.sa_parallel <= 0 ||
      options.xgb_rounds <= 0) {
    return absl::InvalidArgumentError(
        "tuner options: plan_size, sa_iters, sa_parallel and xgb_rounds must be positive");
  }
  if (options.kind == "random") return MakeRandomTuner(tmpl, options);
  if (options.kind == "grid") return MakeGridTuner(tmpl, options);
  if (options.kind == "ga") return MakeGaTuner(tmpl, options);
  if (options.kind == "xgb") return MakeXgbTuner(tmpl, options);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown tuner '", options.kind, "'; known tuners: ", absl::StrJoin(TunerKinds(), ", ")));
}

}  // namespace loom::search
