// XgbTuner: model-based search as AutoTVM's XGBTuner / ModelBasedTuner. Every `plan_size`
// results it refits an XGBoost rank model (features: Template::Features plus the knob values;
// label: throughput normalized by the best, 0 for errors), runs simulated annealing over the
// space to maximize the predicted score (or, for a space within options.exhaustive_plan_limit,
// scores every valid config), and keeps the top `plan_size` unvisited configs as the plan.
// Proposals come from the plan in order, except that with probability `epsilon` (and whenever the
// plan is used up or no model exists yet) a random unvisited config is proposed. The first
// proposals are the template's initial configs, its default first
// (options.start_from_initial_configs). With records of other tasks of the same template
// (LoadTransfer: a tuning prior, similar tasks), the model is trained on them at the first
// proposal, and the first plan, the initial configs ranked among it, comes from it.
#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"
#include "loom/search/cost_model.h"
#include "loom/search/sa_optimizer.h"
#include "loom/search/tuner.h"

namespace loom::search {
namespace {

class XgbTuner final : public Tuner {
 public:
  XgbTuner(const ops::Template& tmpl, const TunerOptions& options)
      : Tuner(tmpl, options),
        sa_(tmpl.space(), SaOptions{.iters = options.sa_iters, .parallel = options.sa_parallel},
            rng().Fork().engine()()),
        warmup_(options.model_warmup_trials > 0 ? options.model_warmup_trials : options.plan_size) {
    auto model = MakeXgbCostModel(
        XgbCostModelOptions{.num_rounds = options.xgb_rounds, .seed = options.seed});
    LOOM_CHECK(model.ok());  // options were validated by MakeTuner
    model_ = *std::move(model);
    num_features_ = static_cast<int64_t>(FeaturesOf(0).size());
  }

 protected:
  std::vector<ops::Config> NextBatch(int n) override {
    std::vector<ops::Config> batch;
    absl::flat_hash_set<int64_t> picked;
    if (transfer_pending_) PlanFromTransfer();
    if (!initial_taken_) {
      initial_taken_ = true;
      if (options().start_from_initial_configs) {
        for (const ops::Config& c : tmpl().InitialConfigs()) initial_.push_back(c.index);
        if (model_->fitted()) RankInitialWithPlan();
      }
    }
    while (initial_pos_ < initial_.size() && static_cast<int>(batch.size()) < n) {
      const int64_t c = initial_[initial_pos_++];
      if (!IsFree(c, picked)) continue;  // invalid, or already in the history
      picked.insert(c);
      batch.push_back(ops::Config{c});
    }
    for (int i = static_cast<int>(batch.size()); i < n; ++i) {
      int64_t index = -1;
      // Draw the exploration coin only while a plan exists, so that the random-phase proposals
      // do not depend on epsilon.
      if (plan_pos_ < plan_.size() && !rng().Bernoulli(options().epsilon)) {
        while (plan_pos_ < plan_.size()) {
          int64_t candidate = plan_[plan_pos_++];
          if (IsFree(candidate, picked)) {
            index = candidate;
            break;
          }
        }
      }
      if (index < 0) index = RandomUnvisited(picked);
      if (index < 0) break;  // no valid config left
      picked.insert(index);
      batch.push_back(ops::Config{index});
    }
    return batch;
  }

  void LoadTransfer(const ops::Template& other, const std::vector<ops::Config>& configs,
                    const std::vector<tune::MeasureResult>& results) override {
    LOOM_CHECK(configs.size() == results.size());
    if (other.name() != tmpl().name() || configs.empty()) return;
    double max_score = 0;
    for (const tune::MeasureResult& r : results) max_score = std::max(max_score, ResultScore(r));
    if (!(max_score > 0)) return;
    int64_t used = 0;
    for (size_t i = 0; i < configs.size(); ++i) {
      if (!other.space().Contains(configs[i])) continue;
      std::vector<float> f = FeaturesFor(other, configs[i].index);
      if (static_cast<int64_t>(f.size()) != num_features_) return;  // another feature layout
      transfer_x_.push_back(std::move(f));
      transfer_y_.push_back(static_cast<float>(ResultScore(results[i]) / max_score));
      ++used;
    }
    // The first proposals are planned from the transferred model once all transfer data is in
    // (NextBatch), not once per task given: one fit instead of one per similar task.
    if (used > 0) transfer_pending_ = true;
  }

  void OnResults(const std::vector<ops::Config>& configs, const std::vector<double>& scores,
                 bool from_history) override {
    for (size_t i = 0; i < configs.size(); ++i) {
      xs_.push_back(configs[i].index);
      ys_.push_back(scores[i]);
    }
    if (static_cast<int64_t>(xs_.size()) < std::max<int64_t>(warmup_, next_train_at_)) return;
    double max_y = *std::max_element(ys_.begin(), ys_.end());
    if (!(max_y > 0)) return;   // nothing succeeded yet: no signal to rank by
    transfer_pending_ = false;  // this plan includes the transfer data
    absl::Status status = Replan(max_y);
    next_train_at_ = static_cast<int64_t>(xs_.size()) + options().plan_size;
    if (!status.ok()) {
      // The tuner keeps going on random proposals; the next plan retries the model.
      base::LogWarning("xgb tuner: cost model failed, proposing at random: ", status.message());
      plan_.clear();
      plan_pos_ = 0;
    }
  }

  absl::Status SaveKindState(v1::TunerState& state) const override {
    v1::XgbTunerState& x = *state.mutable_xgb();
    LOOM_ASSIGN_OR_RETURN(*x.mutable_model(), model_->Serialize());
    x.set_sa_rng(SaveRng(sa_.rng()));
    x.mutable_sa_points()->Add(sa_.points().begin(), sa_.points().end());
    x.mutable_xs()->Add(xs_.begin(), xs_.end());
    x.mutable_ys()->Add(ys_.begin(), ys_.end());
    for (const std::vector<float>& row : transfer_x_) {
      x.mutable_transfer_x()->Add(row.begin(), row.end());
    }
    x.mutable_transfer_y()->Add(transfer_y_.begin(), transfer_y_.end());
    x.set_transfer_pending(transfer_pending_);
    x.set_next_train_at(next_train_at_);
    x.set_initial_taken(initial_taken_);
    x.mutable_initial()->Add(initial_.begin(), initial_.end());
    x.set_initial_pos(static_cast<int64_t>(initial_pos_));
    x.mutable_plan()->Add(plan_.begin(), plan_.end());
    x.set_plan_pos(static_cast<int64_t>(plan_pos_));
    return absl::OkStatus();
  }

  absl::Status RestoreKindState(const v1::TunerState& state) override {
    const v1::XgbTunerState& x = state.xgb();
    const ops::ConfigSpace& space = tmpl().space();
    LOOM_RETURN_IF_ERROR(CheckIndices(space, "xgb training data", x.xs()));
    LOOM_RETURN_IF_ERROR(CheckIndices(space, "xgb initial configs", x.initial()));
    LOOM_RETURN_IF_ERROR(CheckIndices(space, "xgb plan", x.plan()));
    if (x.ys_size() != x.xs_size() ||
        static_cast<int64_t>(x.transfer_x_size()) !=
            static_cast<int64_t>(x.transfer_y_size()) * num_features_ ||
        x.initial_pos() < 0 || x.initial_pos() > x.initial_size() || x.plan_pos() < 0 ||
        x.plan_pos() > x.plan_size() || x.next_train_at() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tuner state: xgb sizes do not agree (", x.xs_size(), " configs with ", x.ys_size(),
          " scores, ", x.transfer_x_size(), " transfer features for ", x.transfer_y_size(),
          " rows of ", num_features_, ", initial ", x.initial_pos(), " of ", x.initial_size(),
          ", plan ", x.plan_pos(), " of ", x.plan_size(), ")"));
    }
    for (double y : x.ys()) {
      if (!std::isfinite(y) || y < 0) {
        return absl::InvalidArgumentError(absl::StrCat("tuner state: xgb score ", y));
      }
    }
    for (float v : x.transfer_x()) {
      if (!std::isfinite(v)) return absl::InvalidArgumentError("tuner state: xgb transfer feature");
    }
    for (float y : x.transfer_y()) {
      if (!std::isfinite(y)) return absl::InvalidArgumentError("tuner state: xgb transfer label");
    }
    base::Rng sa_rng(0);
    LOOM_RETURN_IF_ERROR(RestoreRng(x.sa_rng(), "xgb annealer rng", sa_rng));
    LOOM_RETURN_IF_ERROR(
        sa_.Restore(sa_rng, std::vector<int64_t>(x.sa_points().begin(), x.sa_points().end())));
    LOOM_RETURN_IF_ERROR(model_->Deserialize(x.model(), num_features_));
    xs_.assign(x.xs().begin(), x.xs().end());
    ys_.assign(x.ys().begin(), x.ys().end());
    transfer_x_.clear();
    for (int i = 0; i < x.transfer_y_size(); ++i) {
      auto row = x.transfer_x().begin() + static_cast<std::ptrdiff_t>(i * num_features_);
      transfer_x_.emplace_back(row, row + num_features_);
    }
    transfer_y_.assign(x.transfer_y().begin(), x.transfer_y().end());
    transfer_pending_ = x.transfer_pending();
    next_train_at_ = x.next_train_at();
    initial_taken_ = x.initial_taken();
    initial_.assign(x.initial().begin(), x.initial().end());
    initial_pos_ = static_cast<size_t>(x.initial_pos());
    plan_.assign(x.plan().begin(), x.plan().end());
    plan_pos_ = static_cast<size_t>(x.plan_pos());
    return absl::OkStatus();
  }

 private:
  // Plans the next proposals from the transfer data (and the own results, if any).
  void PlanFromTransfer() {
    transfer_pending_ = false;
    const double own_max = ys_.empty() ? 0 : *std::max_element(ys_.begin(), ys_.end());
    absl::Status status = Replan(own_max);
    if (!status.ok()) {
      base::LogWarning("xgb tuner: transfer model failed: ", status.message());
      plan_.clear();
      plan_pos_ = 0;
    }
  }

  // With a model before the first proposal (transfer: a tuning prior, similar tasks, history),
  // the measurements know more than the template's fixed list: the initial configs, the default
  // among them, join the plan and are proposed in the model's order. On the sample-efficiency
  // bench this saves about one trial wherever the default is not the best (docs/BENCHMARKS.md);
  // the untuned baseline is then measured apart (the baseline stages of TaskSession).
  void RankInitialWithPlan() {
    std::vector<int64_t> candidates(plan_.begin() + static_cast<std::ptrdiff_t>(plan_pos_),
                                    plan_.end());
    for (size_t i = 0; i < initial_.size(); ++i) {
      if (std::find(candidates.begin(), candidates.end(), initial_[i]) == candidates.end()) {
        candidates.push_back(initial_[i]);
      }
    }
    absl::StatusOr<FeatureMatrix> m = Matrix(candidates);
    absl::StatusOr<std::vector<float>> scores =
        m.ok() ? model_->Predict(*m) : absl::StatusOr<std::vector<float>>(m.status());
    if (!scores.ok()) {
      base::LogWarning("xgb tuner: cannot rank the initial configs: ", scores.status().message());
      return;  // keep the template's order, then the plan
    }
    std::vector<size_t> order(candidates.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return (*scores)[a] > (*scores)[b]; });
    plan_.clear();
    plan_pos_ = 0;
    for (size_t i : order) plan_.push_back(candidates[i]);
    initial_.clear();
  }

  // The model's features of config `index` of `t`: Template::Features plus the knob values.
  static std::vector<float> FeaturesFor(const ops::Template& t, int64_t index) {
    ops::Config config{index};
    std::vector<float> f = t.Features(config);
    for (int64_t v : t.space().Values(config)) f.push_back(static_cast<float>(v));
    return f;
  }

  const std::vector<float>& FeaturesOf(int64_t index) {
    auto it = features_.find(index);
    if (it != features_.end()) return it->second;
    return features_.emplace(index, FeaturesFor(tmpl(), index)).first->second;
  }

  absl::StatusOr<FeatureMatrix> Matrix(const std::vector<int64_t>& indices) {
    FeatureMatrix m(num_features_);
    m.Reserve(static_cast<int64_t>(indices.size()));
    for (int64_t index : indices) LOOM_RETURN_IF_ERROR(m.AddRow(FeaturesOf(index)));
    return m;
  }

  absl::Status Replan(double max_y) {
    // Bounds the cache by one plan's annealing walk.
    features_.clear();
    LOOM_ASSIGN_OR_RETURN(FeatureMatrix x, Matrix(xs_));
    std::vector<float> labels;
    labels.reserve(ys_.size() + transfer_y_.size());
    for (double y : ys_) labels.push_back(max_y > 0 ? static_cast<float>(y / max_y) : 0.0f);
    // Other tasks' results (transfer), each normalized by its own task's best.
    for (size_t i = 0; i < transfer_x_.size(); ++i) {
      LOOM_RETURN_IF_ERROR(x.AddRow(transfer_x_[i]));
      labels.push_back(transfer_y_[i]);
    }
    LOOM_RETURN_IF_ERROR(model_->Fit(x, labels));
    BatchScoreFn predict =
        [this](const std::vector<int64_t>& indices) -> absl::StatusOr<std::vector<float>> {
      LOOM_ASSIGN_OR_RETURN(FeatureMatrix m, Matrix(indices));
      return model_->Predict(m);
    };
    plan_.clear();
    plan_pos_ = 0;
    if (space_size() <= options().exhaustive_plan_limit) return PlanExhaustively();
    LOOM_ASSIGN_OR_RETURN(std::vector<ops::Config> best,
                          sa_.FindMaximums(predict, options().plan_size, visited()));
    for (const ops::Config& c : best) plan_.push_back(c.index);
    return absl::OkStatus();
  }

  // The plan from the model's scores of every unvisited valid config: the top `plan_size`, equal
  // scores in random order (a model fitted on a few results predicts wide plateaus of equal
  // scores; breaking them by index would always favour the low knob values).
  absl::Status PlanExhaustively() {
    if (all_valid_.empty()) {
      for (int64_t i = 0; i < space_size(); ++i) {
        if (IsValid(i)) all_valid_.push_back(i);
      }
      FeatureMatrix m(num_features_);
      m.Reserve(static_cast<int64_t>(all_valid_.size()));
      for (int64_t index : all_valid_) {
        LOOM_RETURN_IF_ERROR(m.AddRow(FeaturesFor(tmpl(), index)));
      }
      all_features_ = std::make_unique<FeatureMatrix>(std::move(m));
    }
    if (all_valid_.empty()) return absl::OkStatus();
    LOOM_ASSIGN_OR_RETURN(std::vector<float> scores, model_->Predict(*all_features_));
    struct Candidate {
      float score;
      uint64_t tie;
      int64_t index;
    };
    std::vector<Candidate> free;
    for (size_t i = 0; i < all_valid_.size(); ++i) {
      if (IsVisited(all_valid_[i]) || std::isnan(scores[i])) continue;
      free.push_back({scores[i], rng().engine()(), all_valid_[i]});
    }
    const size_t keep = std::min(free.size(), static_cast<size_t>(options().plan_size));
    std::partial_sort(free.begin(), free.begin() + static_cast<std::ptrdiff_t>(keep), free.end(),
                      [](const Candidate& a, const Candidate& b) {
                        return a.score != b.score ? a.score > b.score : a.tie < b.tie;
                      });
    for (size_t i = 0; i < keep; ++i) plan_.push_back(free[i].index);
    return absl::OkStatus();
  }

  std::unique_ptr<CostModel> model_;
  SaOptimizer sa_;
  int64_t warmup_;
  int64_t num_features_ = 0;
  // Training data: every result seen (history included), score 0 for errors.
  std::vector<int64_t> xs_;
  std::vector<double> ys_;
  // Other tasks' results (LoadTransfer): features and per-task normalized throughput.
  std::vector<std::vector<float>> transfer_x_;
  std::vector<float> transfer_y_;
  bool transfer_pending_ = false;  // transfer data given since the last plan
  int64_t next_train_at_ = 0;
  // The template's initial configs (start_from_initial_configs), proposed before anything else.
  bool initial_taken_ = false;
  std::vector<int64_t> initial_;
  size_t initial_pos_ = 0;
  std::vector<int64_t> plan_;  // best predicted unvisited configs, best first
  size_t plan_pos_ = 0;
  // Features per config index, computed once per plan (annealing revisits configs often).
  absl::flat_hash_map<int64_t, std::vector<float>> features_;
  // Exhaustive planning (space within exhaustive_plan_limit): every valid config and its features,
  // built at the first plan.
  std::vector<int64_t> all_valid_;
  std::unique_ptr<FeatureMatrix> all_features_;
};

}  // namespace

std::unique_ptr<Tuner> MakeXgbTuner(const ops::Template& tmpl, const TunerOptions& options) {
  return std::make_unique<XgbTuner>(tmpl, options);
}

}  // namespace loom::search
