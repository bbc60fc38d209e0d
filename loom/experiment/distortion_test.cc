#include "loom/experiment/distortion.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/toolchain/testing/fake_builder.h"
#include "loom/toolchain/testing/fake_measurer.h"

namespace loom::experiment {
namespace {

using ::testing::HasSubstr;

TEST(DistortionTest, RelativeErrorAgainstTheAloneMeasurement) {
  EXPECT_DOUBLE_EQ(Distortion(1.0, 1.0), 0.0);
  EXPECT_NEAR(Distortion(1.1, 1.0), 0.1, 1e-12);
  EXPECT_NEAR(Distortion(0.9, 1.0), 0.1, 1e-12);
  EXPECT_NEAR(Distortion(3.0, 2.0), 0.5, 1e-12);  // in the run 50% slower
  EXPECT_TRUE(std::isnan(Distortion(1.0, 0.0)));
  EXPECT_TRUE(std::isnan(Distortion(-1.0, 1.0)));
  EXPECT_TRUE(std::isnan(Distortion(1.0, INFINITY)));
  EXPECT_TRUE(std::isnan(Distortion(NAN, 1.0)));
}

TEST(DistortionTest, MedianSkipsValuesThatWereNotMeasured) {
  EXPECT_DOUBLE_EQ(Median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(Median({4, 1, 3, 2}), 2.5);
  EXPECT_DOUBLE_EQ(Median({NAN, 5, INFINITY, 1}), 3);
  EXPECT_TRUE(std::isnan(Median({})));
  EXPECT_TRUE(std::isnan(Median({NAN})));
}

tune::Record Rec(int64_t index, double cost, bool ok = true) {
  tune::Record r;
  r.task_key = "k";
  r.config_index = index;
  r.error = ok ? tune::ErrorKind::kNone : tune::ErrorKind::kRuntime;
  r.median_cost = ok ? cost : INFINITY;
  r.costs = {cost};
  return r;
}

TEST(DistortionTest, TaskSampleHasTheBestInTheRunFirstThenASeededSample) {
  std::vector<tune::Record> records;
  for (int i = 0; i < 12; ++i) records.push_back(Rec(i, 1e-3 * (20 - i), i != 11));  // 11 failed
  records.push_back(Rec(10, 15e-3));  // config 10 measured again, slower: counts once, at 10 ms
  auto a = SampleTaskRecords(records, 6, 3, 5);
  ASSERT_EQ(a.size(), 6u);
  // The three fastest successful configs (10, 9, 8), fastest first, then three of 0..7.
  EXPECT_EQ(a[0].config_index, 10);
  EXPECT_DOUBLE_EQ(a[0].median_cost, 10e-3);
  EXPECT_EQ(a[1].config_index, 9);
  EXPECT_EQ(a[2].config_index, 8);
  for (size_t i = 3; i < a.size(); ++i) {
    EXPECT_LT(a[i].config_index, 8);
    if (i > 3) {
      EXPECT_LT(a[i - 1].config_index, a[i].config_index);
    }
  }
  auto b = SampleTaskRecords(records, 6, 3, 5);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].config_index, b[i].config_index);
  // Fewer than asked: all of them; top larger than k is cut to k.
  EXPECT_EQ(SampleTaskRecords(records, 50, 3, 5).size(), 11u);
  auto top = SampleTaskRecords(records, 2, 5, 5);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[1].config_index, 9);
  EXPECT_TRUE(SampleTaskRecords({}, 4, 2, 1).empty());
}

TEST(DistortionTest, SampleIsSeededWithoutReplacementAndOnlySuccessful) {
  std::vector<tune::Record> records;
  for (int i = 0; i < 20; ++i) records.push_back(Rec(i, 1e-3, i % 4 != 3));  // 15 ok
  auto a = SampleRecords(records, 8, 7);
  auto b = SampleRecords(records, 8, 7);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].config_index, b[i].config_index);
    EXPECT_TRUE(a[i].ok());
    if (i > 0) {
      EXPECT_LT(a[i - 1].config_index, a[i].config_index);  // in order, distinct
    }
  }
  auto c = SampleRecords(records, 8, 8);
  bool differs = false;
  for (size_t i = 0; i < c.size(); ++i) differs |= c[i].config_index != a[i].config_index;
  EXPECT_TRUE(differs) << "another seed should pick another sample";
  EXPECT_EQ(SampleRecords(records, 100, 1).size(), 15u);  // all successful ones
  EXPECT_TRUE(SampleRecords(records, 0, 1).empty());
}

graph::Task SmallConv() {
  graph::Workload w;
  w.kind = graph::TaskKind::kConv2d;
  w.n = 1, w.c = 8, w.h = 8, w.w = 8, w.k = 8, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  graph::Task t;
  t.workload = w;
  t.key = graph::WorkloadKey(w);
  return t;
}

TEST(DistortionTest, RemeasureComparesWithTheCostAlone) {
  const graph::Task task = SmallConv();
  std::vector<tune::Record> records;
  for (int64_t i : {0, 1, 2}) {
    // The run measured config 1 twice as slow as it is alone, the others exactly.
    const double alone = tune::DefaultFakeCost(ops::Config{.index = i});
    tune::Record r = Rec(i, i == 1 ? 2 * alone : alone);
    r.task_key = task.key;
    records.push_back(r);
  }
  tune::FakeBuilder builder;
  tune::FakeMeasurer measurer;
  auto samples = Remeasure(records, ops::HostCpuTarget(), builder, measurer);
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 3u);
  EXPECT_EQ(measurer.num_measured(), 3);
  EXPECT_NEAR((*samples)[0].distortion, 0, 1e-12);
  EXPECT_NEAR((*samples)[1].distortion, 1.0, 1e-12);
  EXPECT_NEAR((*samples)[2].distortion, 0, 1e-12);
  EXPECT_EQ((*samples)[1].config_index, 1);
  EXPECT_TRUE((*samples)[1].error.empty());
}

TEST(DistortionTest, RemeasureFailuresAreSamplesWithTheirError) {
  const graph::Task task = SmallConv();
  tune::Record r = Rec(4, 1e-3);
  r.task_key = task.key;
  tune::FakeBuilder builder;
  tune::FakeMeasurer measurer(
      {.error = [](const ops::Config&) { return tune::ErrorKind::kRuntime; }});
  auto samples = Remeasure({r}, ops::HostCpuTarget(), builder, measurer);
  ASSERT_TRUE(samples.ok());
  ASSERT_EQ(samples->size(), 1u);
  EXPECT_TRUE(std::isnan((*samples)[0].distortion));
  EXPECT_FALSE((*samples)[0].error.empty());

  r.task_key = "not a workload key";
  auto bad = Remeasure({r}, ops::HostCpuTarget(), builder, measurer);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("cannot re-measure task 'not a workload key'"));
}

}  // namespace
}  // namespace loom::experiment
