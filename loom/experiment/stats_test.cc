#include "loom/experiment/stats.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::experiment {
namespace {

TEST(StatsTest, MeanIntervalIsStudentT) {
  // mean 2, sample sd 1, n 3: half width 4.303 x 1 / sqrt(3) = 2.484.
  const Interval v = MeanInterval({1, 2, 3, NAN});
  EXPECT_EQ(v.n, 3);
  EXPECT_DOUBLE_EQ(v.mean, 2);
  EXPECT_NEAR(v.low, 2 - 4.303 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(v.high, 2 + 4.303 / std::sqrt(3.0), 1e-9);
  const Interval one = MeanInterval({5});
  EXPECT_EQ(one.n, 1);
  EXPECT_DOUBLE_EQ(one.mean, 5);
  EXPECT_TRUE(std::isnan(one.low));
  EXPECT_EQ(MeanInterval({}).n, 0);
  EXPECT_DOUBLE_EQ(StudentT975(1), 12.706);
  EXPECT_DOUBLE_EQ(StudentT975(100), 1.96);
}

TEST(StatsTest, RatioIntervalIsGeometric) {
  const Interval v = RatioInterval({0.5, 2.0, -1, INFINITY});
  EXPECT_EQ(v.n, 2);
  EXPECT_NEAR(v.mean, 1.0, 1e-12);
  EXPECT_NEAR(v.low * v.high, 1.0, 1e-9);  // symmetric on the log scale
  EXPECT_NEAR(RatioInterval({1.1, 1.1, 1.1}).low, 1.1, 1e-12);
}

TEST(StatsTest, VerdictsFromTheInterval) {
  EXPECT_EQ(Below(RatioInterval({0.60, 0.62, 0.61}), 1), Verdict::kMet);
  EXPECT_EQ(Below(RatioInterval({1.20, 1.22, 1.21}), 1), Verdict::kNotMet);
  EXPECT_EQ(Below(RatioInterval({0.90, 1.10, 1.00}), 1), Verdict::kNoise);
  EXPECT_EQ(Below(RatioInterval({0.5}), 1), Verdict::kNoise);  // one repetition: no interval
  EXPECT_EQ(Below(RatioInterval({}), 1), Verdict::kNotMeasured);
  EXPECT_EQ(Above(RatioInterval({1.20, 1.22, 1.21}), 1), Verdict::kMet);
  EXPECT_EQ(Above(RatioInterval({0.60, 0.62, 0.61}), 1), Verdict::kNotMet);
  EXPECT_EQ(VerdictName(Verdict::kNoise), "not distinguishable from noise");
}

TEST(StatsTest, Formats) {
  EXPECT_EQ(FormatRatioPercent(RatioInterval({1.1, 1.1})), "+10.0% [+10.0%, +10.0%], 2 reps");
  EXPECT_EQ(FormatRatioPercent(RatioInterval({0.9})), "-10.0%, 1 rep");
  EXPECT_EQ(FormatRatioPercent(Interval{}), "-");
  EXPECT_EQ(FormatInterval(MeanInterval({0.5, 0.5}), 2), "0.50 [0.50, 0.50], 2 reps");
}

}  // namespace
}  // namespace loom::experiment
