#include "loom/search/testing/sample_efficiency.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "loom/base/check.h"
#include "loom/base/status_macros.h"

namespace loom::search {

int64_t TrialsToReach(Tuner& tuner, const Objective& objective, const ReachOptions& options) {
  LOOM_CHECK(options.best_cost > 0 && options.fraction > 0 && options.batch_size > 0);
  const double target = options.best_cost / options.fraction;
  int64_t trials = 0;
  while (trials < options.max_trials && tuner.HasNext()) {
    int64_t n = std::min<int64_t>(options.batch_size, options.max_trials - trials);
    std::vector<ops::Config> configs = tuner.Propose(static_cast<int>(n));
    if (configs.empty()) break;
    std::vector<tune::MeasureResult> results = objective(configs);
    LOOM_CHECK(results.size() == configs.size());
    tuner.Update(configs, results);
    for (const tune::MeasureResult& r : results) {
      ++trials;
      if (r.ok() && r.MedianCost() <= target) return trials;
    }
  }
  return -1;
}

absl::StatusOr<SampleEfficiency> MeasureSampleEfficiency(const TunerOptions& base,
                                                         const ops::Template& tmpl,
                                                         const Objective& objective,
                                                         const std::vector<uint64_t>& seeds,
                                                         const ReachOptions& options) {
  SampleEfficiency out;
  out.kind = base.kind;
  double sum = 0;
  for (uint64_t seed : seeds) {
    TunerOptions opt = base;
    opt.seed = seed;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Tuner> tuner, MakeTuner(opt, tmpl));
    int64_t t = TrialsToReach(*tuner, objective, options);
    if (t < 0) {
      ++out.not_reached;
      t = options.max_trials + 1;
    }
    out.trials.push_back(t);
    sum += static_cast<double>(t);
  }
  out.mean = seeds.empty() ? 0 : sum / static_cast<double>(seeds.size());
  return out;
}

}  // namespace loom::search
