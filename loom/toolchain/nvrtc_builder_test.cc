// Tests of the NVRTC builder (no GPU needed): every CUDA template's default config and a seeded
// sample of valid configs compile to sm_90 cubins for each ResNet-18 layer; the cache, compile
// errors with the NVRTC log, instantiation errors, the timeout, and option checks. Skipped when
// Loom was built without the CUDA toolkit (MakeNvrtcBuilder is kUnimplemented then).
#include "loom/toolchain/nvrtc_builder.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/workloads.h"
#include "loom/graph/zoo.h"
#include "loom/ops/template.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;

class NvrtcBuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loom_nvrtc_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Builder> MakeBuilder(BuildOptions o = {}) {
    o.cache_dir = dir_;
    if (o.num_threads == 1) o.num_threads = 2;
    auto b = MakeNvrtcBuilder(o);
    if (b.status().code() == absl::StatusCode::kUnimplemented) return nullptr;
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }

  std::string dir_;
};

#define REQUIRE_NVRTC(b) \
  if ((b) == nullptr) GTEST_SKIP() << "built without the CUDA toolkit"

bool IsElf(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
}

// Default config plus `samples` valid configs (uniform, seeded) of each ResNet-18 layer compile.
TEST_F(NvrtcBuilderTest, ResNet18DefaultsAndSamplesCompileForSm90) {
  auto builder = MakeBuilder();
  REQUIRE_NVRTC(builder);
  constexpr int kSamples = 3;
  int compiled = 0;
  for (const graph::Workload& w : graph::testing::ZooModelWorkloads("resnet18")) {
    auto t = ops::MakeTemplate(w, ops::CudaTarget("sm_90"));
    ASSERT_TRUE(t.ok()) << t.status();
    std::vector<ops::Config> configs = {(*t)->DefaultConfig()};
    base::Rng rng(graph::StableHash(graph::WorkloadKey(w)));
    for (int tries = 0; tries < 5000 && configs.size() < 1 + kSamples; ++tries) {
      const ops::Config c{rng.UniformInt(0, (*t)->space().size() - 1)};
      if ((*t)->Emit(c).ok()) configs.push_back(c);
    }
    ASSERT_EQ(configs.size(), 1u + kSamples) << graph::WorkloadKey(w);
    for (const BuildResult& r : builder->Build(**t, configs)) {
      EXPECT_EQ(r.error, ErrorKind::kNone)
          << graph::WorkloadKey(w) << " " << (*t)->space().ToJson(r.config) << ": " << r.error_msg;
      EXPECT_TRUE(IsElf(r.artifact_path)) << r.artifact_path;
      ++compiled;
    }
  }
  EXPECT_EQ(compiled, 12 * (1 + kSamples));
}

TEST_F(NvrtcBuilderTest, CachesByContentAndReportsPerCandidateErrors) {
  auto builder = MakeBuilder();
  REQUIRE_NVRTC(builder);
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = 1;
  w.n = 64;
  w.k = 32;
  w.trans_b = true;
  auto t = ops::MakeTemplate(w, ops::CudaTarget());
  ASSERT_TRUE(t.ok());
  const ops::Config d = (*t)->DefaultConfig();
  const ops::Config out_of_space{(*t)->space().size()};
  std::vector<BuildResult> first = builder->Build(**t, {d, out_of_space});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].error, ErrorKind::kNone) << first[0].error_msg;
  EXPECT_FALSE(first[0].cache_hit);
  EXPECT_EQ(first[1].error, ErrorKind::kInstantiation);
  EXPECT_THAT(first[1].error_msg, HasSubstr("dense_cuda"));
  EXPECT_EQ(first[1].config, out_of_space);

  std::vector<BuildResult> again = builder->Build(**t, {d});
  EXPECT_TRUE(again[0].cache_hit);
  EXPECT_EQ(again[0].artifact_path, first[0].artifact_path);

  // A CPU template cannot go through NVRTC.
  auto cpu = ops::MakeTemplate(w, ops::HostCpuTarget());
  ASSERT_TRUE(cpu.ok());
  std::vector<BuildResult> wrong = builder->Build(**cpu, {(*cpu)->DefaultConfig()});
  EXPECT_EQ(wrong[0].error, ErrorKind::kInstantiation);
  EXPECT_THAT(wrong[0].error_msg, HasSubstr("needs a cuda target"));
}

TEST_F(NvrtcBuilderTest, CompileErrorCarriesTheLog) {
  auto builder = MakeBuilder();
  REQUIRE_NVRTC(builder);
  ops::KernelSource bad;
  bad.code = "extern \"C\" __global__ void loom_kernel(float* out) { out[0] = undefined_name; }\n";
  BuildResult r = builder->BuildSource(bad, ops::Config{7});
  EXPECT_EQ(r.error, ErrorKind::kCompile);
  EXPECT_THAT(r.error_msg, HasSubstr("undefined_name"));
  EXPECT_THAT(r.error_msg, HasSubstr("NVRTC (sm_90) failed"));
  EXPECT_EQ(r.config, ops::Config{7});
  EXPECT_TRUE(r.artifact_path.empty());

  // An architecture NVRTC does not know is a compile error too, with NVRTC's reason.
  BuildOptions o;
  o.cache_dir = dir_;
  auto old_arch = MakeNvrtcBuilder(o, "sm_1");
  ASSERT_TRUE(old_arch.ok());
  ops::KernelSource good;
  good.code = "extern \"C\" __global__ void loom_kernel(float* out) { out[0] = 1.0f; }\n";
  BuildResult a = (*old_arch)->BuildSource(good, {});
  EXPECT_EQ(a.error, ErrorKind::kCompile);
  EXPECT_THAT(a.error_msg, HasSubstr("sm_1"));
}

TEST_F(NvrtcBuilderTest, TimeoutIsABuildTimeout) {
  BuildOptions o;
  o.timeout = absl::Microseconds(1);
  o.use_cache = false;
  auto builder = MakeBuilder(o);
  REQUIRE_NVRTC(builder);
  ops::KernelSource src;
  src.code = "extern \"C\" __global__ void loom_kernel(float* out) { out[0] = 1.0f; }\n";
  BuildResult r = builder->BuildSource(src, {});
  EXPECT_EQ(r.error, ErrorKind::kBuildTimeout);
  EXPECT_THAT(r.error_msg, HasSubstr("build timeout"));
  // The abandoned compile finishes in the background; give it time before the process exits.
  absl::SleepFor(absl::Seconds(2));
}

TEST(NvrtcBuilderOptionsTest, RejectsBadOptions) {
  BuildOptions o;
  o.num_threads = 0;
  auto b = MakeNvrtcBuilder(o);
  if (b.status().code() == absl::StatusCode::kUnimplemented) {
    EXPECT_THAT(b.status().message(), HasSubstr("without the CUDA toolkit"));
    return;
  }
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  o.num_threads = 1;
  o.timeout = absl::ZeroDuration();
  EXPECT_EQ(MakeNvrtcBuilder(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::tune
