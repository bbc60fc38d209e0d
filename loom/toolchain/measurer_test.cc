// Tests of the CPU measurer with real ops templates, real compiles and a real sandbox worker.
// This binary is its own worker: started with `__measure-worker` it runs RunMeasureWorker.
#include "loom/toolchain/measurer.h"

#include <sched.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/testing/measure_support.h"
#include "loom/toolchain/worker_host.h"
#include "loom/toolchain/worker_process.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;
using testing::SelfExe;
using testing::SmallDense;

// The last CPU this process may run on (core 1 on the 2-core CI machine).
int LastAllowedCpu() {
  const std::vector<int> cpus = AllowedCpus();
  return cpus.empty() ? 0 : cpus.back();
}

// Builds the small dense template's default config with each fault value once per suite.
class MeasurerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cache_dir_ =
        new std::string(absl::StrCat(::testing::TempDir(), "/loom_measurer_test_", getpid()));
    task_ = new MeasureTask{graph::WorkloadKey(SmallDense()), ops::HostCpuTarget(),
                            ops::TemplateOptions{.test_faults = true}};
    auto tmpl = ops::MakeTemplate(SmallDense(), task_->target, task_->template_options);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    auto builder = MakeLocalBuilder({.num_threads = 2, .cache_dir = *cache_dir_});
    ASSERT_TRUE(builder.ok()) << builder.status();
    const ops::ConfigSpace& space = (*tmpl)->space();
    size_t fault_knob = space.knobs().size();
    for (size_t i = 0; i < space.knobs().size(); ++i) {
      if (space.knobs()[i].name == "fault") fault_knob = i;
    }
    ASSERT_LT(fault_knob, space.knobs().size()) << "test_faults must add a `fault` knob";
    std::vector<ops::Config> configs;
    for (int64_t fault = 0; fault < 4; ++fault) {
      std::vector<int64_t> choices = space.Choices((*tmpl)->DefaultConfig());
      choices[fault_knob] = fault;
      configs.push_back(space.FromChoices(choices));
    }
    built_ = new std::vector<BuildResult>((*builder)->Build(**tmpl, configs));
    for (const BuildResult& b : *built_) {
      ASSERT_EQ(b.error, ErrorKind::kNone) << b.error_msg;
    }
  }
  static void TearDownTestSuite() {
    delete cache_dir_;
    delete task_;
    delete built_;
  }

  static MeasureOptions FastOptions() {
    return {.number = 1,
            .repeat = 3,
            .min_repeat_ms = 2,
            .timeout = absl::Seconds(3),
            .setup_timeout = absl::Seconds(30),
            .cores = {LastAllowedCpu()},
            .worker_command = {SelfExe(), kMeasureWorkerArg},
            .seed = 7};
  }

  static std::unique_ptr<Measurer> Make(const MeasureOptions& options) {
    return testing::MeasurerOrNull(MakeLocalMeasurer(options));
  }

  static const BuildResult& Fault(int f) { return (*built_)[static_cast<size_t>(f)]; }

  static std::string* cache_dir_;
  static MeasureTask* task_;
  static std::vector<BuildResult>* built_;
};
std::string* MeasurerTest::cache_dir_ = nullptr;
MeasureTask* MeasurerTest::task_ = nullptr;
std::vector<BuildResult>* MeasurerTest::built_ = nullptr;

TEST_F(MeasurerTest, CorrectKernelGetsOneCostPerRepeat) {
  auto m = Make(FastOptions());
  ASSERT_NE(m, nullptr);
  const absl::Time before = absl::Now();
  std::vector<MeasureResult> r = m->Measure(*task_, {Fault(0)});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].ok()) << ErrorKindName(r[0].error) << ": " << r[0].error_msg;
  EXPECT_EQ(r[0].config, Fault(0).config);
  ASSERT_EQ(r[0].costs.size(), 3u);
  for (double c : r[0].costs) {
    EXPECT_GT(c, 0.0);
    EXPECT_LT(c, 0.01);  // 8x32x64 multiply-adds take microseconds
  }
  EXPECT_TRUE(std::isfinite(r[0].MedianCost()));
  EXPECT_GT(r[0].measure_seconds, 0.0);
  EXPECT_GE(r[0].timestamp, before);
}

TEST_F(MeasurerTest, CrashIsARuntimeErrorAndTheNextCandidateStillMeasures) {
  auto m = Make(FastOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> first = m->Probe();
  ASSERT_TRUE(first.ok()) << first.status();
  std::vector<MeasureResult> r = m->Measure(*task_, {Fault(1), Fault(0)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kRuntime) << r[0].error_msg;
  EXPECT_THAT(r[0].error_msg, HasSubstr("SIGSEGV"));
  EXPECT_TRUE(r[0].costs.empty());
  EXPECT_TRUE(std::isinf(r[0].MedianCost()));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
  EXPECT_EQ(r[1].costs.size(), 3u);
  absl::StatusOr<DeviceInfo> second = m->Probe();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(second->worker_pid, first->worker_pid);  // restarted
}

TEST_F(MeasurerTest, HangIsARunTimeoutAndTheNextCandidateStillMeasures) {
  MeasureOptions options = FastOptions();
  options.timeout = absl::Milliseconds(400);
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  const absl::Time start = absl::Now();
  std::vector<MeasureResult> r = m->Measure(*task_, {Fault(2), Fault(0)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kRunTimeout) << r[0].error_msg;
  EXPECT_THAT(r[0].error_msg, HasSubstr("run timeout"));
  EXPECT_GE(r[0].measure_seconds, 0.4);
  EXPECT_LT(r[0].measure_seconds, 3.0);
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
}

TEST_F(MeasurerTest, WrongOutputIsAWrongAnswer) {
  auto m = Make(FastOptions());
  ASSERT_NE(m, nullptr);
  std::vector<MeasureResult> r = m->Measure(*task_, {Fault(3), Fault(0)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kWrongAnswer) << r[0].error_msg;
  EXPECT_THAT(r[0].error_msg, HasSubstr("max abs error"));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
}

TEST_F(MeasurerTest, MissingArtifactIsARuntimeError) {
  auto m = Make(FastOptions());
  ASSERT_NE(m, nullptr);
  BuildResult missing = Fault(0);
  missing.artifact_path = *cache_dir_ + "/no-such-kernel.so";
  std::vector<MeasureResult> r = m->Measure(*task_, {missing, Fault(0)});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kRuntime);
  EXPECT_THAT(r[0].error_msg, HasSubstr("cannot load artifact"));
  EXPECT_THAT(r[0].error_msg, HasSubstr("no-such-kernel.so"));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
}

TEST_F(MeasurerTest, BuildErrorsPassThroughWithoutARun) {
  MeasureOptions options = FastOptions();
  // A worker that cannot start would turn any run into kUnknown: build errors never reach it.
  options.worker_command = {"/nonexistent/loom-worker"};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  BuildResult compile_error;
  compile_error.config = ops::Config{5};
  compile_error.error = ErrorKind::kCompile;
  compile_error.error_msg = "expected ';'";
  BuildResult timeout;
  timeout.config = ops::Config{6};
  timeout.error = ErrorKind::kBuildTimeout;
  std::vector<MeasureResult> r = m->Measure(*task_, {compile_error, timeout});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kCompile);
  EXPECT_EQ(r[0].error_msg, "expected ';'");
  EXPECT_EQ(r[0].config, ops::Config{5});
  EXPECT_EQ(r[1].error, ErrorKind::kBuildTimeout);
}

TEST_F(MeasurerTest, WorkerIsPinnedToTheRequestedCores) {
  const int core = LastAllowedCpu();
  MeasureOptions options = FastOptions();
  options.cores = {core};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->cpus, std::vector<int>{core});
  EXPECT_GT(info->worker_pid, 0);
  EXPECT_NE(info->worker_pid, getpid());
}

TEST_F(MeasurerTest, CoreOutsideTheMachineIsAFailedPrecondition) {
  MeasureOptions options = FastOptions();
  options.cores = {CPU_SETSIZE - 1};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr("could not be pinned"));
  std::vector<MeasureResult> r = m->Measure(*task_, {Fault(0)});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error, ErrorKind::kUnknown);
  EXPECT_THAT(r[0].error_msg, HasSubstr("could not be pinned"));
}

TEST_F(MeasurerTest, WorkerThatCannotStartIsUnavailable) {
  MeasureOptions options = FastOptions();
  options.worker_command = {"/nonexistent/loom-worker", kMeasureWorkerArg};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(info.status().message(), HasSubstr("exited with status 127"));
}

TEST_F(MeasurerTest, UnknownWorkloadIsAnInstantiationError) {
  auto m = Make(FastOptions());
  ASSERT_NE(m, nullptr);
  MeasureTask bad = *task_;
  bad.workload_key = "conv2d:f32:garbage";
  std::vector<MeasureResult> r = m->Measure(bad, {Fault(0)});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error, ErrorKind::kInstantiation);
  EXPECT_THAT(r[0].error_msg, HasSubstr("garbage"));
  // The same measurer goes on with a good task.
  r = m->Measure(*task_, {Fault(0)});
  EXPECT_TRUE(r[0].ok()) << r[0].error_msg;
}

TEST_F(MeasurerTest, MinRepeatGrowsNumberAndFlushCacheWorks) {
  MeasureOptions options = FastOptions();
  options.min_repeat_ms = 20;
  options.repeat = 2;
  options.flush_cache = true;
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  std::vector<MeasureResult> r = m->Measure(*task_, {Fault(0)});
  ASSERT_TRUE(r[0].ok()) << r[0].error_msg;
  ASSERT_EQ(r[0].costs.size(), 2u);
  // Two repeats of at least 20 ms each.
  EXPECT_GE(r[0].measure_seconds, 0.04);
}

// Differential: random configs of every CPU template, built and measured end to end, agree with
// the reference kernels (the worker's check) or are rejected by the template itself.
TEST(TemplatesEndToEndTest, RandomConfigsMatchTheReference) {
  auto conv = [](int64_t groups) {
    graph::Workload w;
    w.kind = groups == 1 ? graph::TaskKind::kConv2d : graph::TaskKind::kDepthwiseConv2d;
    w.n = 1, w.c = 16, w.h = 9, w.w = 9, w.k = 16, w.r = 3, w.s = 3;
    w.stride_h = w.stride_w = groups == 1 ? 1 : 2;
    w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
    w.dilation_h = w.dilation_w = 1;
    w.groups = groups;
    return w;
  };
  const char* build_dir = std::getenv("LOOM_BUILD_DIR");
  auto builder = MakeLocalBuilder(
      {.num_threads = 2,
       .cache_dir = absl::StrCat(build_dir ? build_dir : ::testing::TempDir().c_str(),
                                 "/loom_measurer_test_kernels")});
  ASSERT_TRUE(builder.ok()) << builder.status();
  MeasureOptions options;
  options.min_repeat_ms = 1;
  options.repeat = 1;
  options.timeout = absl::Seconds(5);
  options.worker_command = {SelfExe(), kMeasureWorkerArg};
  auto measurer = MakeLocalMeasurer(options);
  ASSERT_TRUE(measurer.ok()) << measurer.status();
  base::Rng rng(11);
  for (const graph::Workload& w : {conv(1), conv(16), SmallDense()}) {
    const MeasureTask task{graph::WorkloadKey(w), ops::HostCpuTarget(), {}};
    auto tmpl = ops::MakeTemplate(w, task.target);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    std::vector<ops::Config> configs = {(*tmpl)->DefaultConfig()};
    configs.push_back(ops::Config{rng.UniformInt(0, (*tmpl)->space().size() - 1)});
    std::vector<BuildResult> built = (*builder)->Build(**tmpl, configs);
    std::vector<MeasureResult> measured = (*measurer)->Measure(task, built);
    ASSERT_EQ(measured.size(), configs.size());
    int ok = 0;
    for (const MeasureResult& r : measured) {
      EXPECT_TRUE(r.ok() || r.error == ErrorKind::kInstantiation)
          << task.workload_key << " config " << r.config.index << ": " << ErrorKindName(r.error)
          << ": " << r.error_msg;
      ok += r.ok();
    }
    EXPECT_GE(ok, 1) << task.workload_key;
  }
}

// A two-thread target: the kernel splits its parallel axis through the worker's parallel_for,
// whose chunks must cover the range exactly once for the output to match the reference.
TEST(TemplatesEndToEndTest, MultiThreadedKernelMatchesTheReference) {
  graph::Workload w;
  w.kind = graph::TaskKind::kConv2d;
  w.n = 1, w.c = 8, w.h = 10, w.w = 10, w.k = 32, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  MeasureTask task{graph::WorkloadKey(w), ops::HostCpuTarget(), {}};
  task.target.num_threads = 2;
  auto tmpl = ops::MakeTemplate(w, task.target);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<ops::KernelSource> source = (*tmpl)->Emit((*tmpl)->DefaultConfig());
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_THAT(source->code, HasSubstr("par->parallel_for("));
  const char* build_dir = std::getenv("LOOM_BUILD_DIR");
  auto builder = MakeLocalBuilder(
      {.cache_dir = absl::StrCat(build_dir ? build_dir : ::testing::TempDir().c_str(),
                                 "/loom_measurer_test_kernels")});
  ASSERT_TRUE(builder.ok()) << builder.status();
  MeasureOptions options;
  options.min_repeat_ms = 1;
  options.worker_command = {SelfExe(), kMeasureWorkerArg};
  auto measurer = MakeLocalMeasurer(options);
  ASSERT_TRUE(measurer.ok()) << measurer.status();
  std::vector<MeasureResult> r =
      (*measurer)->Measure(task, (*builder)->Build(**tmpl, {(*tmpl)->DefaultConfig()}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].ok()) << ErrorKindName(r[0].error) << ": " << r[0].error_msg;
}

TEST(MakeLocalMeasurerTest, RejectsBadOptions) {
  EXPECT_EQ(MakeLocalMeasurer({.repeat = 0}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeLocalMeasurer({.min_repeat_ms = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeLocalMeasurer({.timeout = absl::ZeroDuration()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto dup = MakeLocalMeasurer({.cores = {1, 1}});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.status().message(), HasSubstr("listed twice"));
  EXPECT_EQ(MakeLocalMeasurer({.cores = {-1}}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::tune

int main(int argc, char** argv) {
  if (std::optional<int> worker = loom::tune::RunHostedWorker(argc, argv)) return *worker;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
