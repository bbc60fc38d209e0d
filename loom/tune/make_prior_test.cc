#include "loom/tune/make_prior.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::tune {
namespace {

using search::PriorTask;
using search::PriorToJson;
using search::TuningPrior;

Record Measured(const std::string& task, const std::string& config_json, double seconds,
                double flops = 2e6) {
  Record r;
  r.task_key = task;
  r.template_name = "conv2d_nchwc";
  r.target_key = "cpu:avx512:Test CPU";
  r.config_json = config_json;
  r.flops = flops;
  if (seconds > 0) {
    r.costs = {seconds};
    r.median_cost = seconds;
  } else {
    r.error = ErrorKind::kRuntime;
  }
  return r;
}

TEST(MakePriorTest, KeepsEachConfigsBestMeasurementAndFailures) {
  const std::vector<Record> records = {
      Measured("t1", R"({"a":1,"b":2})", 0.002),   // 1 GFLOPS
      Measured("t1", R"({"b":2,"a":1})", 0.001),   // the same config again, faster: 2 GFLOPS
      Measured("t1", R"({"a":3,"b":4})", -1),      // failed
      Measured("t2", R"({"x":5})", 0.004),         // another task: 0.5 GFLOPS
      Measured("t2", R"("not an object")", 0.001)  // unparsable config: skipped
  };
  TuningPrior prior = MakePrior(records, "cpu:avx512", "test", {.per_task = 0});
  EXPECT_EQ(prior.target_class, "cpu:avx512");
  EXPECT_EQ(prior.source, "test");
  ASSERT_EQ(prior.tasks.size(), 2u);
  const PriorTask& t1 = prior.tasks[0];
  EXPECT_EQ(t1.task_key, "t1");
  EXPECT_EQ(t1.template_name, "conv2d_nchwc");
  EXPECT_EQ(t1.knobs, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(t1.configs.size(), 2u);
  EXPECT_EQ(t1.configs[0].values, (std::vector<int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(t1.configs[0].gflops, 2.0);
  EXPECT_EQ(t1.configs[1].values, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(t1.configs[1].gflops, 0);
  ASSERT_EQ(prior.tasks[1].configs.size(), 1u);
  EXPECT_DOUBLE_EQ(prior.tasks[1].configs[0].gflops, 0.5);
}

TEST(MakePriorTest, KeepsTheBestQuarterAndASeededSampleOfTheRest) {
  std::vector<Record> records;
  for (int i = 1; i <= 100; ++i) {
    records.push_back(Measured("t", absl::StrCat(R"({"a":)", i, "}"), 1.0 / i));  // 0.002 i GFLOPS
  }
  TuningPrior a = MakePrior(records, "cpu:avx512", "", {.per_task = 20, .seed = 3});
  TuningPrior b = MakePrior(records, "cpu:avx512", "", {.per_task = 20, .seed = 3});
  TuningPrior c = MakePrior(records, "cpu:avx512", "", {.per_task = 20, .seed = 4});
  ASSERT_EQ(a.tasks.size(), 1u);
  const auto& kept = a.tasks[0].configs;
  ASSERT_EQ(kept.size(), 20u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(kept[i].values[0], 100 - i) << "the best five first";
  for (size_t i = 5; i < kept.size(); ++i) EXPECT_LT(kept[i].values[0], 96);
  EXPECT_EQ(PriorToJson(a), PriorToJson(b));
  EXPECT_NE(PriorToJson(a), PriorToJson(c));
}

}  // namespace
}  // namespace loom::tune
