#include "loom/search/sa_optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "loom/base/check.h"

namespace loom::search {

SaOptimizer::SaOptimizer(const ops::ConfigSpace& space, const SaOptions& options, uint64_t seed)
    : space_(space), options_(options), rng_(seed) {
  LOOM_CHECK(options_.iters > 0 && options_.parallel > 0);
  int64_t stride = 1;
  for (size_t k = 0; k < space_.knobs().size(); ++k) {
    int64_t radix = static_cast<int64_t>(space_.knobs()[k].values.size());
    radix_.push_back(radix);
    stride_.push_back(stride);
    stride *= radix;
    if (radix > 1) movable_.push_back(static_cast<int>(k));
  }
}

absl::Status SaOptimizer::Restore(const base::Rng& rng, std::vector<int64_t> points) {
  if (static_cast<int64_t>(points.size()) > options_.parallel) {
    return absl::InvalidArgumentError(absl::StrCat("annealer state: ", points.size(),
                                                   " points for ", options_.parallel, " chains"));
  }
  for (int64_t p : points) {
    if (!space_.Contains(ops::Config{p}) || !space_.IsValid(ops::Config{p})) {
      return absl::InvalidArgumentError(
          absl::StrCat("annealer state: point ", p, " is not a valid config of the space"));
    }
  }
  rng_ = rng;
  points_ = std::move(points);
  return absl::OkStatus();
}

int64_t SaOptimizer::WithChoice(int64_t index, int knob, int64_t choice) const {
  int64_t current = (index / stride_[knob]) % radix_[knob];
  return index + (choice - current) * stride_[knob];
}

int64_t SaOptimizer::RandomNeighbour(int64_t index, base::Rng& rng) const {
  if (movable_.empty()) return index;
  int knob = movable_[rng.UniformInt(0, static_cast<int64_t>(movable_.size()) - 1)];
  int64_t current = (index / stride_[knob]) % radix_[knob];
  // A uniform choice among the other radix-1 values.
  int64_t choice = rng.UniformInt(0, radix_[knob] - 2);
  if (choice >= current) ++choice;
  return WithChoice(index, knob, choice);
}

absl::StatusOr<std::vector<ops::Config>> SaOptimizer::FindMaximums(
    const BatchScoreFn& score, int num, const absl::flat_hash_set<int64_t>& exclude) {
  if (num <= 0) return std::vector<ops::Config>();
  const int64_t size = space_.size();
  if (!options_.persistent || points_.empty()) {
    points_.clear();
    if (size <= options_.parallel) {
      for (int64_t i = 0; i < size; ++i) {
        if (space_.IsValid(ops::Config{i})) points_.push_back(i);
      }
    } else {
      // Random valid starting points; a space with few valid configs may yield fewer chains.
      absl::flat_hash_set<int64_t> seen;
      for (int64_t draw = 0; static_cast<int>(points_.size()) < options_.parallel &&
                             draw < int64_t{64} * options_.parallel;
           ++draw) {
        int64_t i = rng_.UniformInt(0, size - 1);
        if (space_.IsValid(ops::Config{i}) && seen.insert(i).second) points_.push_back(i);
      }
    }
  }
  if (points_.empty()) return std::vector<ops::Config>();

  // The top list, ordered worst first: (score, -index) so that among equal scores the higher index
  // is dropped first.
  std::set<std::pair<float, int64_t>> top;
  absl::flat_hash_set<int64_t> in_top;
  auto offer = [&](float s, int64_t index) -> bool {
    if (exclude.contains(index) || in_top.contains(index) || std::isnan(s)) return false;
    std::pair<float, int64_t> item{s, -index};
    if (static_cast<int>(top.size()) == num) {
      if (!(*top.begin() < item)) return false;
      in_top.erase(-top.begin()->second);
      top.erase(top.begin());
    }
    top.insert(item);
    in_top.insert(index);
    return true;
  };

  auto scored = score(points_);
  if (!scored.ok()) return scored.status();
  std::vector<float> scores = *std::move(scored);
  if (scores.size() != points_.size()) {
    return absl::InternalError(absl::StrCat("score function returned ", scores.size(),
                                            " scores for ", points_.size(), " configs"));
  }
  for (size_t i = 0; i < points_.size(); ++i) offer(scores[i], points_[i]);

  const double cool = (options_.temp_start - options_.temp_end) / options_.iters;
  double temp = options_.temp_start;
  int last_change = 0;
  std::vector<int64_t> next(points_.size());
  std::vector<char> next_valid(points_.size());
  std::vector<int64_t> valid_next;  // the valid neighbours, scored in one batch
  std::vector<float> next_scores;   // per chain; -inf for an invalid neighbour
  for (int step = 0; step < options_.iters; ++step) {
    if (options_.early_stop > 0 && step - last_change > options_.early_stop) break;
    valid_next.clear();
    for (size_t i = 0; i < points_.size(); ++i) {
      next[i] = RandomNeighbour(points_[i], rng_);
      next_valid[i] = space_.IsValid(ops::Config{next[i]});
      if (next_valid[i]) valid_next.push_back(next[i]);
    }
    auto next_scored = score(valid_next);
    if (!next_scored.ok()) return next_scored.status();
    if (next_scored->size() != valid_next.size()) {
      return absl::InternalError(absl::StrCat("score function returned ", next_scored->size(),
                                              " scores for ", valid_next.size(), " configs"));
    }
    // An invalid neighbour is never moved to nor offered: its score is -inf.
    next_scores.assign(next.size(), -std::numeric_limits<float>::infinity());
    for (size_t i = 0, v = 0; i < next.size(); ++i) {
      if (next_valid[i]) next_scores[i] = (*next_scored)[v++];
    }
    for (size_t i = 0; i < next.size(); ++i) {
      double delta = static_cast<double>(next_scores[i]) - scores[i];
      // Improvements are always taken; a worse move with probability exp(delta / T).
      double accept = std::exp(std::min(delta / (temp + 1e-5), 1.0));
      if (rng_.Uniform() < accept) {
        points_[i] = next[i];
        scores[i] = next_scores[i];
      }
      if (std::isfinite(next_scores[i]) && offer(next_scores[i], next[i])) last_change = step;
    }
    temp -= cool;
  }

  std::vector<ops::Config> best;
  best.reserve(top.size());
  for (auto it = top.rbegin(); it != top.rend(); ++it) best.push_back(ops::Config{-it->second});
  return best;
}

}  // namespace loom::search
