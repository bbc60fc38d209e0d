// GaTuner: a genetic algorithm in the manner of AutoTVM's GATuner. A generation of `pop_size`
// configs is proposed in order; the next one is bred from the scored members of the last
// generation plus the `elite_num` best configs ever measured: parents drawn with probability
// proportional to normalized throughput, uniform crossover per knob, then each knob mutated with
// probability `mutation_prob`. A child that was already visited or is invalid is mutated further
// (and at last replaced by a random free config), so no config is proposed twice and every
// proposal can be instantiated. With no scored parents
// yet (first generation, or all failed) the generation is random. Results may arrive in any order
// and late: breeding uses whatever scores are known when the generation runs out.
#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/search/tuner.h"

namespace loom::search {
namespace {

class GaTuner final : public Tuner {
 public:
  using Tuner::Tuner;

 protected:
  std::vector<ops::Config> NextBatch(int n) override {
    std::vector<ops::Config> batch;
    absl::flat_hash_set<int64_t> picked;
    while (static_cast<int>(batch.size()) < n) {
      if (pos_ >= population_.size()) {
        Breed(picked);
        if (population_.empty()) break;  // no valid config left
      }
      int64_t index = population_[pos_++];
      if (!IsFree(index, picked)) continue;
      picked.insert(index);
      batch.push_back(ops::Config{index});
    }
    return batch;
  }

  void OnResults(const std::vector<ops::Config>& configs, const std::vector<double>& scores,
                 bool from_history) override {
    for (size_t i = 0; i < configs.size(); ++i) scores_[configs[i].index] = scores[i];
  }

  absl::Status SaveKindState(v1::TunerState& state) const override {
    v1::GaTunerState& ga = *state.mutable_ga();
    ga.mutable_population()->Add(population_.begin(), population_.end());
    ga.set_pos(static_cast<int64_t>(pos_));
    std::vector<std::pair<int64_t, double>> scored(scores_.begin(), scores_.end());
    std::sort(scored.begin(), scored.end());
    for (const auto& [index, score] : scored) {
      ga.add_scored(index);
      ga.add_scores(score);
    }
    return absl::OkStatus();
  }

  absl::Status RestoreKindState(const v1::TunerState& state) override {
    const v1::GaTunerState& ga = state.ga();
    LOOM_RETURN_IF_ERROR(CheckIndices(tmpl().space(), "ga population", ga.population()));
    LOOM_RETURN_IF_ERROR(CheckIndices(tmpl().space(), "ga scores", ga.scored()));
    if (ga.pos() < 0 || ga.pos() > ga.population_size() || ga.scored_size() != ga.scores_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tuner state: ga position ", ga.pos(), " in a population of ", ga.population_size(), ", ",
          ga.scored_size(), " scored configs with ", ga.scores_size(), " scores"));
    }
    for (double score : ga.scores()) {
      if (!std::isfinite(score) || score < 0) {
        return absl::InvalidArgumentError(absl::StrCat("tuner state: ga score ", score));
      }
    }
    population_.assign(ga.population().begin(), ga.population().end());
    pos_ = static_cast<size_t>(ga.pos());
    for (int i = 0; i < ga.scored_size(); ++i) scores_[ga.scored(i)] = ga.scores(i);
    return absl::OkStatus();
  }

 private:
  // Replaces population_ by a new generation of distinct free configs (valid, outside visited()
  // and `excluded`); empty only when no free config exists.
  void Breed(const absl::flat_hash_set<int64_t>& excluded) {
    const ops::ConfigSpace& space = tmpl().space();
    const TunerOptions& opt = options();

    // Parents: the scored members of the last generation (for the first generation: the best of
    // the loaded history) plus the elites, deduplicated, in a deterministic order.
    std::vector<std::pair<double, int64_t>> ranked;  // (score, index) of every measured config
    ranked.reserve(scores_.size());
    for (const auto& [index, score] : scores_) ranked.push_back({score, index});
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    std::vector<int64_t> parents;
    absl::flat_hash_set<int64_t> in_parents;
    auto add_parent = [&](int64_t index) {
      auto it = scores_.find(index);
      if (it != scores_.end() && it->second > 0 && in_parents.insert(index).second) {
        parents.push_back(index);
      }
    };
    if (population_.empty()) {
      for (size_t i = 0; i < ranked.size() && static_cast<int>(i) < opt.pop_size; ++i) {
        add_parent(ranked[i].second);
      }
    } else {
      for (int64_t index : population_) add_parent(index);
    }
    for (size_t i = 0; i < ranked.size() && static_cast<int>(i) < opt.elite_num; ++i) {
      add_parent(ranked[i].second);
    }

    int64_t free = space_size() - num_visited() - static_cast<int64_t>(excluded.size());
    int64_t count = std::min<int64_t>(opt.pop_size, free);
    absl::flat_hash_set<int64_t> taken = excluded;  // excluded plus the children so far
    std::vector<int64_t> children;
    children.reserve(count);
    auto is_free = [&](int64_t index) { return IsFree(index, taken); };

    if (parents.size() < 2) {
      while (static_cast<int64_t>(children.size()) < count) {
        int64_t index = RandomUnvisited(taken);
        if (index < 0) break;
        taken.insert(index);
        children.push_back(index);
      }
    } else {
      // Fitness-proportional selection over normalized scores (the small constant keeps every
      // parent selectable, as in AutoTVM).
      double max_score = scores_.at(parents[0]);
      for (int64_t p : parents) max_score = std::max(max_score, scores_.at(p));
      std::vector<double> weight;
      weight.reserve(parents.size());
      for (int64_t p : parents) weight.push_back(scores_.at(p) / max_score + 1e-8);
      auto draw = [&](int skip) {
        double total = 0;
        for (size_t i = 0; i < weight.size(); ++i) {
          total += static_cast<int>(i) == skip ? 0 : weight[i];
        }
        double r = rng().Uniform(0, total);
        int last = -1;
        for (size_t i = 0; i < weight.size(); ++i) {
          if (static_cast<int>(i) == skip) continue;
          last = static_cast<int>(i);
          r -= weight[i];
          if (r < 0) break;
        }
        return last;
      };
      const auto& knobs = space.knobs();
      while (static_cast<int64_t>(children.size()) < count) {
        int a = draw(-1);
        int b = draw(a);
        std::vector<int64_t> ca = space.Choices(ops::Config{parents[a]});
        std::vector<int64_t> cb = space.Choices(ops::Config{parents[b]});
        std::vector<int64_t> child(knobs.size());
        for (size_t k = 0; k < knobs.size(); ++k) {
          child[k] = rng().Bernoulli(0.5) ? ca[k] : cb[k];
          if (rng().Bernoulli(opt.mutation_prob)) {
            child[k] = rng().UniformInt(0, static_cast<int64_t>(knobs[k].values.size()) - 1);
          }
        }
        int64_t index = space.FromChoices(child).index;
        // Already seen: keep mutating one knob at a time, then fall back to a random config.
        for (int tries = 0; !is_free(index) && !knobs.empty() && tries < kMaxRepairs; ++tries) {
          size_t k =
              static_cast<size_t>(rng().UniformInt(0, static_cast<int64_t>(knobs.size()) - 1));
          child[k] = rng().UniformInt(0, static_cast<int64_t>(knobs[k].values.size()) - 1);
          index = space.FromChoices(child).index;
        }
        if (!is_free(index)) index = RandomUnvisited(taken);
        if (index < 0) break;
        taken.insert(index);
        children.push_back(index);
      }
    }
    population_ = std::move(children);
    pos_ = 0;
  }

  static constexpr int kMaxRepairs = 50;

  std::vector<int64_t> population_;  // the current generation, proposed in order
  size_t pos_ = 0;                   // next member of population_ to propose
  // Throughput of every measured config (history included), 0 for errors; the latest wins.
  absl::flat_hash_map<int64_t, double> scores_;
};

}  // namespace

std::unique_ptr<Tuner> MakeGaTuner(const ops::Template& tmpl, const TunerOptions& options) {
  return std::make_unique<GaTuner>(tmpl, options);
}

}  // namespace loom::search
