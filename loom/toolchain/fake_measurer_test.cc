#include "loom/toolchain/testing/fake_measurer.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::tune {
namespace {

using ::testing::ElementsAre;

BuildResult Built(int64_t index) {
  BuildResult b;
  b.config = ops::Config{index};
  b.artifact_path = "/unused.so";
  return b;
}

TEST(FakeMeasurerTest, CostsFollowTheCostFunction) {
  FakeMeasurer::Options options;
  options.cost = [](const ops::Config& c) { return 1e-3 * static_cast<double>(c.index + 1); };
  options.repeat = 2;
  FakeMeasurer m(options);
  std::vector<MeasureResult> r = m.Measure({.workload_key = "k"}, {Built(0), Built(4)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].ok());
  EXPECT_THAT(r[0].costs, ElementsAre(1e-3, 1e-3));
  EXPECT_THAT(r[1].costs, ElementsAre(5e-3, 5e-3));
  EXPECT_EQ(r[1].config, ops::Config{4});
  EXPECT_DOUBLE_EQ(r[1].MedianCost(), 5e-3);
  EXPECT_EQ(m.num_measured(), 2);
  EXPECT_THAT(m.task_keys(), ElementsAre("k"));
}

TEST(FakeMeasurerTest, DefaultCostIsDeterministicAndInRange) {
  FakeMeasurer a, b;
  std::vector<BuildResult> built;
  for (int64_t i = 0; i < 50; ++i) built.push_back(Built(i));
  std::vector<MeasureResult> ra = a.Measure({}, built);
  std::vector<MeasureResult> rb = b.Measure({}, built);
  bool any_differs = false;
  for (size_t i = 0; i < built.size(); ++i) {
    EXPECT_EQ(ra[i].costs, rb[i].costs);
    EXPECT_GE(ra[i].MedianCost(), 1e-4);
    EXPECT_LT(ra[i].MedianCost(), 2e-4);
    EXPECT_DOUBLE_EQ(ra[i].MedianCost(), DefaultFakeCost(ops::Config{static_cast<int64_t>(i)}));
    if (ra[i].costs != ra[0].costs) any_differs = true;
  }
  EXPECT_TRUE(any_differs);
}

TEST(FakeMeasurerTest, NoiseIsBoundedAndReproducible) {
  FakeMeasurer::Options options;
  options.cost = [](const ops::Config&) { return 1.0; };
  options.noise = 0.1;
  options.repeat = 5;
  options.seed = 3;
  FakeMeasurer a(options), b(options);
  MeasureResult ra = a.Measure({}, {Built(7)})[0];
  MeasureResult rb = b.Measure({}, {Built(7)})[0];
  EXPECT_EQ(ra.costs, rb.costs);
  ASSERT_EQ(ra.costs.size(), 5u);
  double lo = 2, hi = 0;
  for (double c : ra.costs) {
    EXPECT_GE(c, 0.9);
    EXPECT_LT(c, 1.1);
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  EXPECT_LT(lo, hi);
  options.seed = 4;
  FakeMeasurer other(options);
  EXPECT_NE(other.Measure({}, {Built(7)})[0].costs, ra.costs);
}

TEST(FakeMeasurerTest, BuildErrorsPassThroughAndInjectedErrorsAreReported) {
  FakeMeasurer::Options options;
  options.error = [](const ops::Config& c) {
    return c.index == 2 ? ErrorKind::kRunTimeout : ErrorKind::kNone;
  };
  FakeMeasurer m(options);
  BuildResult bad = Built(1);
  bad.error = ErrorKind::kCompile;
  bad.error_msg = "syntax";
  std::vector<MeasureResult> r = m.Measure({}, {bad, Built(2), Built(3)});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].error, ErrorKind::kCompile);
  EXPECT_EQ(r[0].error_msg, "syntax");
  EXPECT_EQ(r[1].error, ErrorKind::kRunTimeout);
  EXPECT_TRUE(r[1].costs.empty());
  EXPECT_TRUE(std::isinf(r[1].MedianCost()));
  EXPECT_TRUE(r[2].ok());
  EXPECT_EQ(m.num_measured(), 2);  // the compile error never ran
}

TEST(FakeMeasurerTest, VirtualClockAdvancesPerMeasuredCandidate) {
  base::VirtualClock clock(absl::FromUnixSeconds(100));
  FakeMeasurer::Options options;
  options.clock = &clock;
  options.measure_time = absl::Milliseconds(250);
  FakeMeasurer m(options);
  BuildResult bad = Built(0);
  bad.error = ErrorKind::kInstantiation;
  std::vector<MeasureResult> r = m.Measure({}, {Built(1), bad, Built(2)});
  EXPECT_EQ(r[0].timestamp, absl::FromUnixMillis(100250));
  EXPECT_EQ(r[1].timestamp, absl::FromUnixMillis(100250));
  EXPECT_EQ(r[2].timestamp, absl::FromUnixMillis(100500));
  EXPECT_DOUBLE_EQ(r[2].measure_seconds, 0.25);
  EXPECT_EQ(r[1].measure_seconds, 0.0);
  EXPECT_EQ(clock.Now(), absl::FromUnixMillis(100500));
  EXPECT_TRUE(m.Probe().ok());
}

}  // namespace
}  // namespace loom::tune
