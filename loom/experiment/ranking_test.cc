#include "loom/experiment/ranking.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::experiment {
namespace {

DistortionSample S(const std::string& task, double in_run, double alone, bool chosen = false) {
  return {.task_key = task, .in_run_s = in_run, .alone_s = alone, .chosen = chosen};
}

TEST(RankingTest, UniformSlowdownKeepsThePerfectRanking) {
  // Everything 2x slower in the run: distortion 100%, but the order and the choice survive.
  std::vector<DistortionSample> s = {S("a", 2, 1, true), S("a", 4, 2),         S("a", 6, 3),
                                     S("a", 8, 4),       S("b", 1, 0.5, true), S("b", 3, 1.5)};
  const RankingFidelity f = MeasureRankingFidelity(s, {{"a", 2}, {"b", 1}}, 3);
  EXPECT_DOUBLE_EQ(f.kendall_tau, 1);
  EXPECT_EQ(f.pairs, 6 + 1);
  EXPECT_DOUBLE_EQ(f.regret, 0);
  EXPECT_DOUBLE_EQ(f.top_k_overlap, 1);  // only task a has more than 3 candidates
  EXPECT_DOUBLE_EQ(f.chosen_alone_ms, (2 * 1 + 1 * 0.5) * 1e3);
}

TEST(RankingTest, AMisrankedChoiceHasRegret) {
  // The run saw c1 fastest; alone c1 takes 1.5 and c3 is the fastest at 1.0.
  std::vector<DistortionSample> s = {S("a", 1.0, 1.5, true), S("a", 2.0, 1.2), S("a", 3.0, 1.0),
                                     S("a", 4.0, 2.0)};
  const RankingFidelity f = MeasureRankingFidelity(s, {{"a", 3}}, 2);
  // Pairs: (1,2) d, (1,3) d, (1,4) c, (2,3) d, (2,4) c, (3,4) c: tau = 0.
  EXPECT_DOUBLE_EQ(f.kendall_tau, 0);
  EXPECT_NEAR(f.regret, 0.5, 1e-12);
  // Fastest two in the run {c1, c2}, alone {c3, c2}: one in common.
  EXPECT_DOUBLE_EQ(f.top_k_overlap, 0.5);
  EXPECT_NEAR(f.chosen_alone_ms, 3 * 1.5e3, 1e-9);
}

TEST(RankingTest, FailedRemeasuresAndMissingChoicesAreLeftOut) {
  std::vector<DistortionSample> s = {S("a", 1, NAN, true), S("a", 2, 2), S("a", 3, 3),
                                     S("b", 1, 1, true)};
  const RankingFidelity f = MeasureRankingFidelity(s, {}, 3);
  EXPECT_EQ(f.pairs, 1);
  EXPECT_DOUBLE_EQ(f.kendall_tau, 1);
  EXPECT_DOUBLE_EQ(f.regret, 0);               // only task b's choice was re-measured
  EXPECT_TRUE(std::isnan(f.chosen_alone_ms));  // task a's was not
  EXPECT_TRUE(std::isnan(f.top_k_overlap));
  const RankingFidelity none = MeasureRankingFidelity({}, {}, 3);
  EXPECT_TRUE(std::isnan(none.kendall_tau));
  EXPECT_TRUE(std::isnan(none.regret));
}

TEST(RankingTest, CombineWeightsTauByPairs) {
  RankingFidelity a{.kendall_tau = 1,
                    .pairs = 3,
                    .regret = 0,
                    .top_k_overlap = 1,
                    .top_k = 3,
                    .chosen_alone_ms = 2};
  RankingFidelity b{.kendall_tau = 0, .pairs = 1, .regret = 0.2, .top_k = 3, .chosen_alone_ms = 3};
  const RankingFidelity c = CombineRanking({a, b});
  EXPECT_DOUBLE_EQ(c.kendall_tau, 0.75);
  EXPECT_EQ(c.pairs, 4);
  EXPECT_DOUBLE_EQ(c.regret, 0.1);
  EXPECT_DOUBLE_EQ(c.top_k_overlap, 1);
  EXPECT_DOUBLE_EQ(c.chosen_alone_ms, 5);
}

}  // namespace
}  // namespace loom::experiment
