#include "loom/experiment/spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::experiment {
namespace {

using ::testing::HasSubstr;

TEST(ExperimentSpecTest, ParsesJobsSetupsAndLayout) {
  auto spec = ParseExperimentSpec(R"(
name: thesis
setups: [dedicated, interleaved]
device_cores: [1]
cpu_slots: 1
jobs:
  - model: zoo:resnet18
    tasks: [1, 3]
    trials: 8
    batch_size: 4
    tuner: random
    seed: 3
  - model: zoo:mobilenet_v2
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "thesis");
  EXPECT_EQ(spec->setups, (std::vector<std::string>{"dedicated", "interleaved"}));
  EXPECT_EQ(spec->device_cores, std::vector<int>{1});
  ASSERT_EQ(spec->jobs.size(), 2u);
  EXPECT_EQ(spec->jobs[0].tasks, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(spec->jobs[0].trials, 8);
  EXPECT_EQ(spec->jobs[0].tuner, "random");
  EXPECT_EQ(spec->jobs[1].model, "zoo:mobilenet_v2");
  EXPECT_EQ(spec->jobs[1].trials, 16);
}

TEST(ExperimentSpecTest, ErrorsNameTheKeyPath) {
  auto st = ParseExperimentSpec("jobs:\n  - model: zoo:x\n    trails: 3\n").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("unknown key 'trails' at jobs[0].trails"));
  st = ParseExperimentSpec("setups: [fastest]\njobs:\n  - model: zoo:x\n").status();
  EXPECT_THAT(st.message(), HasSubstr("setups[0]: unknown setup 'fastest'"));
  st = ParseExperimentSpec("jobs:\n  - tasks: [1]\n").status();
  EXPECT_THAT(st.message(), HasSubstr("jobs[0]: missing 'model'"));
  st = ParseExperimentSpec("name: x\n").status();
  EXPECT_THAT(st.message(), HasSubstr("jobs: needs a list"));
  st = ParseExperimentSpec("jobs:\n  - model: zoo:x\n    trials: 0\n").status();
  EXPECT_THAT(st.message(), HasSubstr("jobs[0].trials: must be >= 1"));
}

}  // namespace
}  // namespace loom::experiment
