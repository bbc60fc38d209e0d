// What an experiment's figures say about the thesis' claim (issue 24): a load-aware scheduler
// makes shared autotuning better in tuning time, hardware and the resulting inference
// performance. Per setup, its figures over the repetitions with 95% confidence intervals
// (stats.h); per claim and scheduled setup, a verdict computed from those intervals: met, not met,
// or not distinguishable from noise. Nothing here is written by hand: change the figures and the
// verdicts follow. Called by WriteResults (results.json "claims") and report.html.
#pragma once

#include <string>
#include <vector>

#include "loom/experiment/stats.h"
#include "nlohmann/json.hpp"

namespace loom::experiment {

struct ExperimentResult;  // runner.h

struct SetupSummary {
  std::string setup;
  Interval makespan_s;
  // Per repetition, against the reference (dedicated: the jobs alone, one after another).
  Interval vs_sequence;                // makespan / the reference's
  Interval device_hours_vs_dedicated;  // device-hours / the reference's
  Interval distortion;                 // the setup's median distortion
  Interval kendall_tau;
  Interval regret;
  Interval top_k_overlap;
  // Geometric mean over the jobs of (this setup's / the reference's), per repetition.
  Interval latency_vs_dedicated;  // final latency of the whole model
  Interval kernels_vs_dedicated;  // the tuned kernels timed alone (RankingFidelity)
  // Per job (the spec's order).
  std::vector<Interval> job_latency_vs_dedicated;
  std::vector<Interval> job_kernels_vs_dedicated;
  std::vector<Interval> job_tau;
  std::vector<Interval> job_regret;
};

struct ClaimVerdict {
  std::string claim;      // "time", "hardware", "inference performance"
  std::string setup;      // the setup the statement is about
  std::string statement;  // what is checked
  std::string figure;     // the ratio with its interval, as text
  Interval value;
  Verdict verdict = Verdict::kNotMeasured;
};

struct ClaimsSummary {
  std::string reference;  // "dedicated", else "sequential"; empty when neither ran
  int repetitions = 0;
  std::vector<SetupSummary> setups;  // in the spec's order
  std::vector<ClaimVerdict> verdicts;
};

// The claims for `interleaved` and `predictive` (whichever ran): time against running the jobs in
// sequence and against uncontrolled sharing; hardware (device-hours against one dedicated machine
// per job); inference performance (final latency and tuned kernels against dedicated, within 5%,
// and against uncontrolled); and whether `uncontrolled` loses inference performance against
// dedicated.
ClaimsSummary SummarizeClaims(const ExperimentResult& result);

nlohmann::json ClaimsToJson(const ClaimsSummary& claims);

}  // namespace loom::experiment
