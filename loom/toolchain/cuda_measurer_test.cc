// Tests of the CUDA measurer without a GPU: its worker loads a fake driver
// (testing/fake_libcuda.cc) that runs "kernels" on the CPU and injects every failure the real
// driver can produce. The real-driver tests skip on hosts without one. This binary is its own
// worker: started with `__cuda-measure-worker` it runs RunCudaMeasureWorker.
#include <dlfcn.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/ops/template_common.h"
#include "loom/toolchain/cuda_driver.h"
#include "loom/toolchain/cuda_measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/testing/confine_support.h"
#include "loom/toolchain/testing/measure_support.h"
#include "loom/toolchain/worker_host.h"
#include "loom/toolchain/worker_process.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;
using testing::SelfExe;
using testing::SmallConv;

// A CUDA-style template of a convolution in natural layouts (data NCHW, weight KCRS, output
// NKPQ), the layout the fake driver's "conv2d" kernel computes in. The worker of this binary uses
// it, so the measurer is tested apart from the real CUDA templates (ops/), whose kernels need a
// GPU.
class NaturalConvTemplate final : public ops::Template {
 public:
  NaturalConvTemplate(graph::Workload w, ops::Target target)
      : workload_(std::move(w)), target_(std::move(target)) {
    space_.AddKnob("threads", {64, 128});
  }
  std::string name() const override { return "test_natural_conv"; }
  const graph::Workload& workload() const override { return workload_; }
  const ops::Target& target() const override { return target_; }
  const ops::ConfigSpace& space() const override { return space_; }
  absl::StatusOr<ops::KernelSource> Emit(const ops::Config& config) const override {
    LOOM_RETURN_IF_ERROR(space_.Validate(config));
    ops::KernelSource k;
    k.code = "// run by the fake driver";
    k.cuda_launch.block = {static_cast<uint32_t>(space_.Value(config, "threads")), 1, 1};
    return k;
  }
  std::vector<ops::BufferSpec> Buffers(const ops::Config&) const override {
    const graph::Workload& w = workload_;
    return {{"data", {w.n, w.c, w.h, w.w}},
            {"weight", {w.k, w.c, w.r, w.s}},
            {"output", {w.n, w.k, w.OutH(), w.OutW()}, /*is_output=*/true}};
  }
  std::vector<graph::Tensor> PackInputs(const ops::Config&,
                                        const std::vector<graph::Tensor>& natural) const override {
    return natural;
  }
  graph::Tensor UnpackOutput(const ops::Config&, const graph::Tensor& output) const override {
    return output;
  }
  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    return ops::internal::ConvReference(workload_, natural);
  }
  std::vector<graph::Shape> NaturalInputShapes() const override {
    const graph::Workload& w = workload_;
    return {{w.n, w.c, w.h, w.w}, {w.k, w.c, w.r, w.s}};
  }
  std::vector<float> Features(const ops::Config& config) const override {
    return {static_cast<float>(space_.Value(config, "threads"))};
  }
  std::vector<std::string> FeatureNames() const override { return {"threads"}; }
  ops::Config DefaultConfig() const override { return ops::Config{0}; }

 private:
  graph::Workload workload_;
  ops::Target target_;
  ops::ConfigSpace space_;
};

absl::StatusOr<std::unique_ptr<ops::Template>> MakeTestTemplate(const graph::Workload& w,
                                                                const ops::Target& target,
                                                                const ops::TemplateOptions&) {
  if (w.kind != graph::TaskKind::kConv2d || target.kind != "cuda") {
    return absl::UnimplementedError("the test worker only knows CUDA conv2d");
  }
  return std::make_unique<NaturalConvTemplate>(w, target);
}

// Sets LOOM_FAKE_CUDA for the workers this test starts (they inherit the environment).
class FakeMode {
 public:
  explicit FakeMode(const char* mode) { setenv("LOOM_FAKE_CUDA", mode, 1); }
  ~FakeMode() { unsetenv("LOOM_FAKE_CUDA"); }
};

class CudaMeasurerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/loom_cuda_measurer_test_", getpid());
    std::filesystem::create_directories(dir_);
    task_.workload_key = graph::WorkloadKey(SmallConv());
    task_.target = ops::CudaTarget();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static CudaMeasureOptions FakeOptions() {
    return {.number = 1,
            .repeat = 2,
            .min_repeat_ms = 2,
            .timeout = absl::Seconds(2),
            .setup_timeout = absl::Seconds(60),
            .driver_library = LOOM_FAKE_LIBCUDA,
            .worker_command = {SelfExe(), kCudaMeasureWorkerArg},
            // The fake driver's mode (FakeMode) reaches the confined worker's cleared environment.
            .confine = {.pass_env = {"LOOM_FAKE_CUDA"}}};
  }

  std::unique_ptr<Measurer> Make(const CudaMeasureOptions& options) {
    return testing::MeasurerOrNull(MakeCudaMeasurer(options));
  }

  // A candidate of the small conv whose "cubin" is the fake driver's program `program`.
  BuildResult Candidate(const std::string& program) {
    BuildResult b;
    b.config = ops::Config{static_cast<int64_t>(files_ % 2)};
    b.artifact_path = absl::StrCat(dir_, "/", ++files_, ".cubin");
    std::ofstream(b.artifact_path) << "loom-fake-kernel " << program;
    return b;
  }
  BuildResult GoodCandidate() { return Candidate("conv2d 1 4 8 8 8 3 3 1 1"); }

  std::string dir_;
  int files_ = 0;
  MeasureTask task_;
};

TEST_F(CudaMeasurerTest, BadOptionsAreInvalidArguments) {
  EXPECT_EQ(MakeCudaMeasurer({.device = -1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCudaMeasurer({.number = 0}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCudaMeasurer({.min_repeat_ms = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCudaMeasurer({.timeout = absl::ZeroDuration()}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaMeasurerTest, MissingDriverIsUnavailableAndEveryCandidateGetsTheReason) {
  CudaMeasureOptions options = FakeOptions();
  options.driver_library = dir_ + "/libcuda.so.1";  // does not exist
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(info.status().message(), HasSubstr("not found: no NVIDIA driver on this host"));
  BuildResult built;
  built.artifact_path = dir_ + "/a.cubin";
  std::vector<MeasureResult> r = m->Measure(task_, {built, built, built});
  ASSERT_EQ(r.size(), 3u);
  for (const MeasureResult& x : r) {
    EXPECT_EQ(x.error, ErrorKind::kUnknown);
    EXPECT_THAT(x.error_msg, HasSubstr("no NVIDIA driver on this host"));
  }
}

TEST_F(CudaMeasurerTest, ThisHostWithoutADriverSaysSo) {
  if (void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(h);
    GTEST_SKIP() << "this host has an NVIDIA driver";
  }
  absl::StatusOr<std::unique_ptr<CudaDriver>> driver = CudaDriver::Load();
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(driver.status().message(), "libcuda.so.1 not found: no NVIDIA driver on this host");
}

TEST_F(CudaMeasurerTest, CuInitFailureIsUnavailable) {
  FakeMode mode("init_fail");
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(info.status().message(), HasSubstr("cuInit failed: CUDA_ERROR_NO_DEVICE (100)"));
}

TEST_F(CudaMeasurerTest, NoDeviceIsUnavailable) {
  FakeMode mode("no_device");
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(info.status().message(), HasSubstr("reports no CUDA device"));
}

TEST_F(CudaMeasurerTest, DeviceOutOfRangeIsUnavailable) {
  CudaMeasureOptions options = FakeOptions();
  options.device = 3;
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(info.status().message(), HasSubstr("CUDA device 3 does not exist (1 device(s)"));
}

TEST_F(CudaMeasurerTest, ProbeReportsTheDevice) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->device_name, "Fake GPU");
  EXPECT_EQ(info->cuda_arch, "sm_90");
  EXPECT_EQ(info->cuda_limits.num_sms, 4);
  EXPECT_EQ(info->cuda_limits.max_threads_per_block, 1024);
  EXPECT_EQ(info->cuda_limits.max_shared_bytes_per_block, 49152);
  EXPECT_EQ(info->cuda_limits.warp_size, 32);
  EXPECT_EQ(info->driver_version, 13000);
  EXPECT_GT(info->worker_pid, 0);
  EXPECT_NE(info->worker_pid, getpid());
}

// The driver loads and the device answers inside the worker's sandbox (the CUDA profile: a
// deny-list of system calls, no filesystem rules); CorrectKernelIsTimed and the others measure in
// it. Where the kernel refuses a layer, every test here would fail at the worker's start instead.
TEST_F(CudaMeasurerTest, TheDriverRunsInsideTheSandbox) {
  if (std::string refused = testing::RefusedConfinementLayer(); !refused.empty()) {
    GTEST_SKIP() << "the kernel refuses " << refused << " to this process";
  }
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  ASSERT_TRUE(info.ok()) << info.status();
  std::printf("confinement checked (CUDA worker): %s\n", info->confinement.c_str());
  EXPECT_THAT(info->confinement, HasSubstr("network namespace"));
  EXPECT_THAT(info->confinement, HasSubstr("no_new_privs"));
  EXPECT_THAT(info->confinement, HasSubstr("seccomp deny-list"));
  EXPECT_THAT(info->confinement, ::testing::Not(HasSubstr("Landlock")));
  EXPECT_THAT(info->confinement, ::testing::Not(HasSubstr("address space")));
  if (geteuid() == 0) {
    EXPECT_THAT(info->confinement,
                HasSubstr(getpwnam("loom-measure") ? "user loom-measure (" : "user nobody ("));
  }
  // Off, nothing is reported.
  CudaMeasureOptions open = FakeOptions();
  open.confine.enabled = false;
  auto unconfined = Make(open);
  ASSERT_NE(unconfined, nullptr);
  absl::StatusOr<DeviceInfo> plain = unconfined->Probe();
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->confinement, "");
}

TEST_F(CudaMeasurerTest, WorkerThatIsNotAWorkerIsUnavailable) {
  CudaMeasureOptions options = FakeOptions();
  options.worker_command = {"/bin/true"};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(info.status().message(), HasSubstr("exited with status 0 before answering"));
}

TEST_F(CudaMeasurerTest, BuildErrorsPassThroughWithoutARun) {
  CudaMeasureOptions options = FakeOptions();
  options.worker_command = {"/nonexistent/loom-worker"};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  BuildResult compile_error;
  compile_error.config = ops::Config{5};
  compile_error.error = ErrorKind::kCompile;
  compile_error.error_msg = "nvrtc: expected a ';'";
  std::vector<MeasureResult> r = m->Measure(task_, {compile_error});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error, ErrorKind::kCompile);
  EXPECT_EQ(r[0].error_msg, "nvrtc: expected a ';'");
  EXPECT_EQ(r[0].config, ops::Config{5});
}

TEST_F(CudaMeasurerTest, CpuTaskIsRefused) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  MeasureTask cpu = task_;
  cpu.target = ops::HostCpuTarget();
  std::vector<MeasureResult> r = m->Measure(cpu, {GoodCandidate()});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error, ErrorKind::kUnknown);
  EXPECT_THAT(r[0].error_msg, HasSubstr("use the CPU measurer"));
}

TEST_F(CudaMeasurerTest, CorrectKernelIsTimed) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  std::vector<MeasureResult> r = m->Measure(task_, {GoodCandidate()});
  ASSERT_EQ(r.size(), 1u);
  ASSERT_TRUE(r[0].ok()) << r[0].error_msg;
  ASSERT_EQ(r[0].costs.size(), 2u);
  for (double c : r[0].costs) {
    EXPECT_GT(c, 0);
    EXPECT_LT(c, 0.1);  // a 1x4x8x8 conv on the CPU: microseconds
  }
  EXPECT_GT(r[0].measure_seconds, 2 * 0.002);  // two repeats of at least min_repeat_ms
}

TEST_F(CudaMeasurerTest, WrongOutputIsAWrongAnswer) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  std::vector<MeasureResult> r = m->Measure(task_, {Candidate("zero"), GoodCandidate()});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kWrongAnswer);
  EXPECT_THAT(r[0].error_msg, HasSubstr("max abs error"));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
}

TEST_F(CudaMeasurerTest, BadImagesAreRuntimeErrorsThatKeepTheWorker) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> before = m->Probe();
  ASSERT_TRUE(before.ok()) << before.status();
  BuildResult missing = GoodCandidate();
  missing.artifact_path = dir_ + "/missing.cubin";
  std::vector<MeasureResult> r = m->Measure(
      task_, {Candidate("not-a-kernel"), missing, Candidate("launch_error"), GoodCandidate()});
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].error, ErrorKind::kRuntime);
  EXPECT_THAT(r[0].error_msg, HasSubstr("cuModuleLoadData failed: CUDA_ERROR_INVALID_IMAGE"));
  EXPECT_EQ(r[1].error, ErrorKind::kRuntime);
  EXPECT_THAT(r[1].error_msg, HasSubstr("cannot read cubin"));
  EXPECT_EQ(r[2].error, ErrorKind::kRuntime);
  EXPECT_THAT(r[2].error_msg, HasSubstr("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"));
  EXPECT_TRUE(r[3].ok()) << r[3].error_msg;
  absl::StatusOr<DeviceInfo> after = m->Probe();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->worker_pid, before->worker_pid);  // non-sticky errors keep the context
}

TEST_F(CudaMeasurerTest, StickyErrorRestartsTheWorker) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> before = m->Probe();
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<MeasureResult> r = m->Measure(task_, {Candidate("illegal_address"), GoodCandidate()});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kRuntime);
  EXPECT_THAT(r[0].error_msg, HasSubstr("CUDA_ERROR_ILLEGAL_ADDRESS"));
  EXPECT_THAT(r[0].error_msg, HasSubstr("sticky: the worker restarts"));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
  absl::StatusOr<DeviceInfo> after = m->Probe();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_NE(after->worker_pid, before->worker_pid);
}

TEST_F(CudaMeasurerTest, CrashIsARuntimeErrorAndTheNextCandidateRuns) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  std::vector<MeasureResult> r = m->Measure(task_, {Candidate("crash"), GoodCandidate()});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kRuntime);
  EXPECT_THAT(r[0].error_msg, HasSubstr("SIGSEGV"));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
}

TEST_F(CudaMeasurerTest, HangIsARunTimeoutAndTheNextCandidateRuns) {
  CudaMeasureOptions options = FakeOptions();
  options.timeout = absl::Milliseconds(300);
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  const absl::Time start = absl::Now();
  std::vector<MeasureResult> r = m->Measure(task_, {Candidate("hang"), GoodCandidate()});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error, ErrorKind::kRunTimeout);
  EXPECT_THAT(r[0].error_msg, HasSubstr("worker was killed"));
  EXPECT_TRUE(r[1].ok()) << r[1].error_msg;
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
}

TEST_F(CudaMeasurerTest, TaskWithoutATemplateIsAnInstantiationError) {
  auto m = Make(FakeOptions());
  ASSERT_NE(m, nullptr);
  MeasureTask dense = task_;
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = 1, w.n = 8, w.k = 8;
  w.trans_b = true;
  dense.workload_key = graph::WorkloadKey(w);
  std::vector<MeasureResult> r = m->Measure(dense, {GoodCandidate()});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error, ErrorKind::kInstantiation);
  EXPECT_THAT(r[0].error_msg, HasSubstr("only knows CUDA conv2d"));
  r = m->Measure(task_, {GoodCandidate()});  // the same worker goes on with a good task
  EXPECT_TRUE(r[0].ok()) << r[0].error_msg;
}

TEST_F(CudaMeasurerTest, WorkerIsPinnedToTheRequestedCore) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  CudaMeasureOptions options = FakeOptions();
  options.cores = {allowed.back()};
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->cpus, std::vector<int>{allowed.back()});
}

// The real driver, where there is one (skipped on hosts without an NVIDIA GPU).
TEST(CudaDriverTest, RealDeviceIsReported) {
  absl::StatusOr<std::unique_ptr<CudaDriver>> driver = CudaDriver::Load();
  if (!driver.ok()) GTEST_SKIP() << driver.status();
  absl::StatusOr<int> count = (*driver)->DeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  if (*count == 0) GTEST_SKIP() << "no CUDA device";
  absl::StatusOr<CudaDeviceInfo> info = (*driver)->DeviceInfo(0);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->name.empty());
  EXPECT_GE(info->cc_major, 5);
  EXPECT_GT(info->num_sms, 0);
  EXPECT_GE(info->max_threads_per_block, 512);
  EXPECT_EQ(info->warp_size, 32);
  EXPECT_EQ((*driver)->DeviceInfo(*count).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::tune

int main(int argc, char** argv) {
  if (std::optional<int> worker =
          loom::tune::RunHostedWorker(argc, argv, loom::tune::MakeTestTemplate))
    return *worker;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
