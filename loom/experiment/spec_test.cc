#include "loom/experiment/spec.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/search/tuner.h"
#include "loom/tune/task_session.h"

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

// A job that names no batch size or tuner gets the defaults of `loom tune`, `loom submit` and the
// daemon: those of the options that own them, not a copy of their values.
TEST(ExperimentSpecTest, AJobWithoutBatchSizeOrTunerTakesTheTuningDefaults) {
  auto spec = ParseExperimentSpec("jobs:\n  - model: zoo:resnet18\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->jobs.size(), 1u);
  EXPECT_EQ(spec->jobs[0].batch_size, tune::TaskTunerOptions{}.batch_size);
  EXPECT_EQ(spec->jobs[0].tuner, search::TunerOptions{}.kind);
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

TEST(ExperimentSpecTest, TargetAndDevice) {
  auto cuda = ParseExperimentSpec(
      "target: cuda:sm_90\ndevice: cuda:1\ndevice_cores: [0]\njobs:\n  - model: zoo:resnet18\n");
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_EQ(cuda->target, "cuda:sm_90");
  EXPECT_EQ(cuda->device, "cuda:1");
  EXPECT_EQ(cuda->device_cores, std::vector<int>{0});
  auto own_arch = ParseExperimentSpec("target: cuda\njobs:\n  - model: zoo:resnet18\n");
  ASSERT_TRUE(own_arch.ok()) << own_arch.status();
  EXPECT_EQ(own_arch->target, "cuda");
  EXPECT_EQ(own_arch->device, "");
  auto defaults = ParseExperimentSpec("jobs:\n  - model: zoo:tiny_cnn\n");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->target, "cpu");
  EXPECT_EQ(defaults->device, "");
}

// The shipped specs parse (the GPU one cannot run here, but its form is checked in CI).
TEST(ExperimentSpecTest, ShippedSpecsParse) {
  for (const char* name : {"smoke", "thesis", "thesis-hard", "thesis-scale", "thesis-gpu"}) {
    auto spec = LoadExperimentSpec(absl::StrCat(LOOM_SOURCE_DIR, "/experiments/", name, ".yaml"));
    ASSERT_TRUE(spec.ok()) << name << ": " << spec.status();
    EXPECT_FALSE(spec->jobs.empty()) << name;
  }
  auto gpu = LoadExperimentSpec(absl::StrCat(LOOM_SOURCE_DIR, "/experiments/thesis-gpu.yaml"));
  ASSERT_TRUE(gpu.ok());
  EXPECT_EQ(gpu->target, "cuda");
  EXPECT_GE(gpu->jobs.size(), 4u);
  EXPECT_EQ(gpu->setups,
            (std::vector<std::string>{"dedicated", "uncontrolled", "interleaved", "predictive"}));
}

TEST(ExperimentSpecTest, MeasurementDistortionLatencyAndSimulationKeys) {
  auto spec = ParseExperimentSpec(R"(
min_repeat_ms: 100
repeat: 5
run_timeout_s: 4.5
distortion_samples: 4
distortion_seed: 9
job_counts: [1]
ranking_top: 2
repetitions: 3
latency_runs: 30
latency_min_seconds: 0.5
simulate: false
jobs:
  - model: zoo:tiny_cnn
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->min_repeat_ms, 100);
  EXPECT_EQ(spec->repeat, 5);
  EXPECT_DOUBLE_EQ(spec->run_timeout_s, 4.5);
  EXPECT_EQ(spec->distortion_samples, 4);
  EXPECT_EQ(spec->distortion_seed, 9u);
  EXPECT_EQ(spec->ranking_top, 2);
  EXPECT_EQ(spec->job_counts, std::vector<int>{1});
  EXPECT_EQ(spec->repetitions, 3);
  EXPECT_EQ(spec->latency_runs, 30);
  EXPECT_DOUBLE_EQ(spec->latency_min_seconds, 0.5);
  EXPECT_FALSE(spec->simulate);
  auto defaults = ParseExperimentSpec("jobs:\n  - model: zoo:tiny_cnn\n");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->min_repeat_ms, 50);
  EXPECT_EQ(defaults->distortion_samples, 8);
  EXPECT_EQ(defaults->ranking_top, 3);
  EXPECT_EQ(defaults->repetitions, 1);
  EXPECT_TRUE(defaults->simulate);
}

TEST(ExperimentSpecTest, BadValuesNameTheKey) {
  const std::string job = "jobs:\n  - model: zoo:x\n";
  struct Case {
    std::string yaml;
    std::string message;
  } cases[] = {
      {"repeat: 0\n", "repeat: must be >= 1"},
      {"min_repeat_ms: -1\n", "min_repeat_ms: must be >= 0"},
      {"run_timeout_s: 0\n", "run_timeout_s: must be > 0"},
      {"distortion_samples: -2\n", "distortion_samples: must be >= 0"},
      {"latency_runs: -1\n", "latency_runs: must be >= 0"},
      {"repetitions: 0\n", "repetitions: must be between 1 and 100"},
      {"repetitions: 1000000\n", "repetitions: must be between 1 and 100"},
      {"ranking_top: 0\n", "ranking_top: must be >= 1"},
      {"job_counts: [2]\n", "job_counts[0]: 2 is not between 1 and the 1 jobs listed"},
      {"job_counts: [1, 1]\n", "job_counts[1]: counts must increase"},
      {"latency_min_seconds: -1\n", "latency_min_seconds: must be >= 0"},
      {"simulate: maybe\n", "simulate: cannot read 'maybe'"},
      {"setups: [interleaved, dedicated, interleaved]\n",
       "setups[2]: setup 'interleaved' is listed twice"},
      {"distortion: 3\n", "unknown key 'distortion' at distortion"},
      {"setups: []\n", "setups: needs at least one setup"},
      {"target: gpu\n", "target: unknown target 'gpu' (expected: cpu, cuda or cuda:sm_XY"},
      {"target: cuda:sm_x\n", "target: unknown target 'cuda:sm_x'"},
      {"target: cuda:90\n", "target: unknown target 'cuda:90'"},
      {"device: cuda:0\n", "device: names a GPU (cuda:N) and needs target cuda"},
      {"target: cuda\ndevice: gpu0\n", "device: expected cuda:N (such as cuda:0), got 'gpu0'"},
      {"target: cuda\ndevice: 'cuda:'\n", "device: expected cuda:N"},
      {"target: [cuda]\n", "target: expected a scalar value"},
  };
  for (const Case& c : cases) {
    auto st = ParseExperimentSpec(c.yaml + job).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_THAT(st.message(), HasSubstr(c.message)) << c.yaml;
  }
}

// Found by experiment_spec_fuzzer: a key that is a list made yaml-cpp throw out of the parser.
TEST(ExperimentSpecTest, KeysThatAreNotScalarsAreInvalidNotExceptions) {
  for (const char* yaml :
       {"jobs: [{model: m}]\n? [a, b]\n: 1\n", "jobs: [{model: m, ? {x: 1} : 2}]\n"}) {
    auto st = ParseExperimentSpec(yaml).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_THAT(st.message(), HasSubstr("bad conversion")) << yaml;
  }
}

}  // namespace
}  // namespace loom::experiment
