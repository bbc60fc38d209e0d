// Ranking fidelity of a setup's in-run measurements (issue 24). A tuner keeps the candidate it
// measured fastest, so what decides the tuned model is whether the run's timings order the
// candidates as timings alone do, more than by how much they are off (distortion.h): a uniform
// 100% slowdown changes no choice. From one job's re-measured candidates (each task's best few
// in the run and a seeded sample of the others, SampleTaskRecords): Kendall's tau between in-run
// and alone times, the regret of the chosen configs, and top-k overlap. Called by the experiment
// runner after each setup; shown in report.html and results.json.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "loom/experiment/distortion.h"

namespace loom::experiment {

struct RankingFidelity {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  // Kendall's tau-b between in-run and alone times over pairs of candidates of the same task
  // (search::KendallTau per task, weighted by its pairs); 1: same order, 0: unrelated. NaN when no
  // task has two re-measured candidates.
  double kendall_tau = kNaN;
  int64_t pairs = 0;
  // sum(occurrences x alone time of the chosen config) / sum(occurrences x best alone time among
  // the task's re-measured candidates) - 1, over the tasks whose chosen config was re-measured:
  // how much slower the job's tuned kernels are than the best candidates it measured; 0 when every
  // choice was right.
  double regret = kNaN;
  // Mean over tasks with more than k re-measured candidates of |k fastest in the run and k fastest
  // alone| / k.
  double top_k_overlap = kNaN;
  int top_k = 0;
  // sum(occurrences x alone time of the chosen config), ms: the tuned kernels timed alone. NaN
  // unless every task's chosen config was re-measured.
  double chosen_alone_ms = kNaN;
};

// `samples`: one job's re-measured candidates (any order; those without both times are left out).
// `occurrences`: how often each task occurs in the job's model (a missing task counts once).
RankingFidelity MeasureRankingFidelity(const std::vector<DistortionSample>& samples,
                                       const std::map<std::string, int64_t>& occurrences,
                                       int top_k);

// Several jobs' figures as one: tau weighted by pairs, regret and overlap averaged over the jobs
// that have them, chosen_alone_ms summed (NaN if any is).
RankingFidelity CombineRanking(const std::vector<RankingFidelity>& jobs);

}  // namespace loom::experiment
