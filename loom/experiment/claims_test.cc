#include "loom/experiment/claims.h"

#include <cmath>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/experiment/runner.h"

namespace loom::experiment {
namespace {

SetupResult Setup(const std::string& name, int rep, double makespan, std::vector<double> latencies,
                  std::vector<double> kernels) {
  SetupResult r;
  r.setup = name;
  r.repetition = rep;
  r.makespan_s = makespan;
  r.device_hours = makespan / 3600;
  for (size_t j = 0; j < latencies.size(); ++j) {
    SetupJobResult job;
    job.name = j == 0 ? "a" : "b";
    job.final_latency_ms = latencies[j];
    job.ranking.chosen_alone_ms = kernels[j];
    job.ranking.kendall_tau = name == "uncontrolled" ? 0.5 : 0.9;
    r.jobs.push_back(job);
  }
  r.ranking.kendall_tau = name == "uncontrolled" ? 0.5 : 0.9;
  return r;
}

// Three repetitions, each with a little jitter: interleaved keeps dedicated quality in 70% of its
// time; uncontrolled is faster still but its models are 15% slower.
ExperimentResult ThreeRepetitions() {
  ExperimentResult r;
  r.repetitions = 3;
  for (int rep = 0; rep < 3; ++rep) {
    const double j = 1 + 0.01 * rep;
    r.setups.push_back(Setup("dedicated", 0, 100 * j, {10 * j, 20}, {1, 2}));
    r.setups.back().repetition = rep;
    r.setups.push_back(Setup("uncontrolled", rep, 60 * j, {11.5 * j, 23}, {1.2, 2.4 * j}));
    r.setups.push_back(Setup("interleaved", rep, 70 / j, {10.05 * j, 20.1}, {1, 2.02}));
  }
  return r;
}

std::map<std::string, Verdict> Verdicts(const ClaimsSummary& c) {
  std::map<std::string, Verdict> out;
  for (const ClaimVerdict& v : c.verdicts) out[v.setup + ": " + v.statement] = v.verdict;
  return out;
}

TEST(ClaimsTest, VerdictsFollowTheIntervals) {
  const ClaimsSummary c = SummarizeClaims(ThreeRepetitions());
  EXPECT_EQ(c.reference, "dedicated");
  ASSERT_EQ(c.setups.size(), 3u);
  const SetupSummary& il = c.setups[2];
  EXPECT_EQ(il.setup, "interleaved");
  EXPECT_EQ(il.vs_sequence.n, 3);
  EXPECT_LT(il.vs_sequence.high, 0.75);
  EXPECT_NEAR(il.kendall_tau.mean, 0.9, 1e-12);
  ASSERT_EQ(il.job_latency_vs_dedicated.size(), 2u);
  EXPECT_NEAR(il.job_latency_vs_dedicated[0].mean, 1.005, 1e-9);
  const auto v = Verdicts(c);
  EXPECT_EQ(v.at("interleaved: makespan below running the jobs in sequence (dedicated)"),
            Verdict::kMet);
  EXPECT_EQ(v.at("interleaved: makespan below uncontrolled sharing's"), Verdict::kNotMet);
  EXPECT_EQ(v.at("interleaved: one machine for all jobs: device-hours below one dedicated machine "
                 "per job"),
            Verdict::kMet);
  EXPECT_EQ(v.at("interleaved: final latency within 5% of dedicated (keeps dedicated quality)"),
            Verdict::kMet);
  EXPECT_EQ(v.at("interleaved: final latency below uncontrolled sharing's"), Verdict::kMet);
  EXPECT_EQ(v.at("interleaved: tuned kernels (timed alone) faster than uncontrolled sharing's"),
            Verdict::kMet);
  EXPECT_EQ(v.at("uncontrolled: uncontrolled sharing loses: final latency above dedicated's"),
            Verdict::kMet);
  EXPECT_EQ(v.count("predictive: makespan below uncontrolled sharing's"), 0u);  // not run
  const nlohmann::json j = ClaimsToJson(c);
  EXPECT_EQ(j["verdicts"][0]["verdict"], "met");
  EXPECT_EQ(j["setups"][2]["vs_sequence"]["n"], 3);
  EXPECT_EQ(j["confidence"], 0.95);
}

TEST(ClaimsTest, OneRepetitionOrATieIsNoise) {
  ExperimentResult one = ThreeRepetitions();
  one.repetitions = 1;
  one.setups.resize(3);
  for (const ClaimVerdict& v : SummarizeClaims(one).verdicts) {
    EXPECT_EQ(v.verdict, Verdict::kNoise) << v.statement;
    EXPECT_THAT(v.figure, testing::EndsWith(", 1 rep"));
  }
  // Interleaved's models as often faster as slower than uncontrolled's.
  ExperimentResult tie = ThreeRepetitions();
  for (SetupResult& s : tie.setups) {
    if (s.setup != "interleaved") continue;
    const double f = s.repetition == 0 ? 0.9 : s.repetition == 1 ? 1.1 : 1.0;
    for (size_t j = 0; j < s.jobs.size(); ++j) {
      s.jobs[j].final_latency_ms =
          FindSetup(tie, "uncontrolled", s.repetition)->jobs[j].final_latency_ms * f;
    }
  }
  EXPECT_EQ(
      Verdicts(SummarizeClaims(tie)).at("interleaved: final latency below uncontrolled sharing's"),
      Verdict::kNoise);
}

}  // namespace
}  // namespace loom::experiment
