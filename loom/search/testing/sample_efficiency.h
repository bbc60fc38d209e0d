// Sample efficiency of a tuner: how many trials it needs before one result reaches a fraction of
// the best known throughput (AutoTVM papers' "trials to reach"). Test support (the test-only
// library loom_search_testing): the tuner tests and tuner_benchmark measure tuners with it on the
// synthetic objective (synthetic_template.h) or on any objective a caller passes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ops/config_space.h"
#include "loom/ops/template.h"
#include "loom/search/tuner.h"
#include "loom/toolchain/measure_result.h"

namespace loom::search {

// Build + measure for a batch of configs: one result per config, in order.
using Objective = std::function<std::vector<tune::MeasureResult>(const std::vector<ops::Config>&)>;

struct ReachOptions {
  double fraction = 0.95;  // target throughput as a fraction of the best
  double best_cost = 0;    // seconds of the best known config (required, > 0)
  int64_t max_trials = 1000;
  int batch_size = 8;  // configs per Propose / Update round
};

// Runs Propose -> objective -> Update rounds on `tuner` until a successful result has cost <=
// best_cost / fraction. Returns the number of trials up to and including that result (its
// position in the sequence of results), or -1 when max_trials pass or the tuner stops first.
int64_t TrialsToReach(Tuner& tuner, const Objective& objective, const ReachOptions& options);

struct SampleEfficiency {
  std::string kind;
  std::vector<int64_t> trials;  // per seed; max_trials + 1 where the target was not reached
  int64_t not_reached = 0;
  double mean = 0;  // mean of `trials`
};

// TrialsToReach for a fresh tuner per seed (`base` with seed replaced). Errors from MakeTuner.
absl::StatusOr<SampleEfficiency> MeasureSampleEfficiency(const TunerOptions& base,
                                                         const ops::Template& tmpl,
                                                         const Objective& objective,
                                                         const std::vector<uint64_t>& seeds,
                                                         const ReachOptions& options);

}  // namespace loom::search
