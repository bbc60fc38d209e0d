// Simulated annealing over a config space, maximizing a batch score function (in practice a cost
// model's predictions), as AutoTVM's SimulatedAnnealingOptimizer. Used by the model-based tuner
// (xgb_tuner.cc) to turn a trained cost model into a plan of promising unvisited configs.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "loom/base/rng.h"
#include "loom/ops/config_space.h"

namespace loom::search {

struct SaOptions {
  int iters = 500;     // annealing steps at most
  int parallel = 128;  // independent chains, scored together in one batch per step
  // Stop early after this many steps without a change to the top list; <= 0: never.
  int early_stop = 50;
  double temp_start = 1.0;  // linear schedule from temp_start to temp_end over `iters` steps
  double temp_end = 0.0;
  // Start each FindMaximums from the chains' last points (AutoTVM's persistent mode) rather than
  // from fresh random points.
  bool persistent = true;
};

// Scores a batch of configs (indices into the space); one score per index, higher is better.
using BatchScoreFn =
    std::function<absl::StatusOr<std::vector<float>>(const std::vector<int64_t>& indices)>;

class SaOptimizer {
 public:
  // `space` must outlive the optimizer. Precondition: options' iters and parallel positive.
  SaOptimizer(const ops::ConfigSpace& space, const SaOptions& options, uint64_t seed);

  // The (up to) `num` distinct highest-scoring configs seen by the chains that are not in
  // `exclude`, best first (ties: lower index first). Only valid configs (space.IsValid) are
  // scored, moved to or returned. Chains move by changing one knob to another of its values; a
  // worse move is accepted with probability exp(delta / temperature). Errors of `score` are
  // returned as they are.
  absl::StatusOr<std::vector<ops::Config>> FindMaximums(
      const BatchScoreFn& score, int num, const absl::flat_hash_set<int64_t>& exclude);

  // Index of `index`'s neighbour with knob `knob` set to choice `choice`.
  int64_t WithChoice(int64_t index, int knob, int64_t choice) const;
  // A random neighbour: one knob (among those with several values) changed to another value.
  // `index` itself when no knob has more than one value.
  int64_t RandomNeighbour(int64_t index, base::Rng& rng) const;

  // The annealer's state, for the xgb tuner's saved state: its RNG and the chains' points.
  const base::Rng& rng() const { return rng_; }
  const std::vector<int64_t>& points() const { return points_; }
  // Continues from a saved rng() and points(). kInvalidArgument when a point is not a valid
  // config of the space or there are more points than chains.
  absl::Status Restore(const base::Rng& rng, std::vector<int64_t> points);

 private:
  const ops::ConfigSpace& space_;
  SaOptions options_;
  base::Rng rng_;
  std::vector<int64_t> radix_;   // number of choices per knob
  std::vector<int64_t> stride_;  // mixed-radix place value per knob (knob 0 least significant)
  std::vector<int> movable_;     // knobs with more than one choice
  std::vector<int64_t> points_;  // the chains' current points (persistent mode)
};

}  // namespace loom::search
