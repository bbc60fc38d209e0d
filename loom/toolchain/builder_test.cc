#include "loom/toolchain/builder.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/ops/template.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;

// A hand-written template over one knob `variant`, independent of the real ops templates:
//   0..3: a valid kernel out[i] = in[i] * (variant + 2)
//   4:    a syntax error
//   5:    a source whose compile-time evaluation runs for many seconds
//   6:    rejected by Emit (an instantiation error)
class HandTemplate : public ops::Template {
 public:
  HandTemplate() { space_.AddKnob("variant", {0, 1, 2, 3, 4, 5, 6}); }

  std::string name() const override { return "hand"; }
  const graph::Workload& workload() const override { return workload_; }
  const ops::Target& target() const override { return target_; }
  const ops::ConfigSpace& space() const override { return space_; }

  absl::StatusOr<ops::KernelSource> Emit(const ops::Config& config) const override {
    const int64_t v = space_.Value(config, "variant");
    if (v <= 3) {
      return ops::KernelSource{
          absl::StrCat("typedef struct loom_parallel loom_parallel_t;\n"
                       "extern \"C\" void loom_kernel(void* const* b, const loom_parallel_t*) {\n"
                       "  const float* in = (const float*)b[0]; float* out = (float*)b[1];\n"
                       "  for (int i = 0; i < 16; ++i) out[i] = in[i] * ",
                       v + 2, ".0f;\n}\n"),
          ""};
    }
    if (v == 4) return ops::KernelSource{"extern \"C\" void loom_kernel( {", ""};
    if (v == 5) {
      return ops::KernelSource{
          "constexpr unsigned long Spin(unsigned long n) { unsigned long s = 0;\n"
          "  for (unsigned long i = 0; i < n; ++i) s = s * 6364136223846793005UL + i; return s; }\n"
          "extern \"C\" unsigned long loom_slow() { constexpr unsigned long v = "
          "Spin(40000000000UL); return v; }\n",
          "-fconstexpr-loop-limit=2147483647 -fconstexpr-ops-limit=4611686018427387904"};
    }
    return absl::InvalidArgumentError("variant 6 violates a constraint");
  }

  std::vector<ops::BufferSpec> Buffers(const ops::Config&) const override { return {}; }
  std::vector<graph::Tensor> PackInputs(const ops::Config&,
                                        const std::vector<graph::Tensor>& natural) const override {
    return natural;
  }
  graph::Tensor UnpackOutput(const ops::Config&, const graph::Tensor& output) const override {
    return output;
  }
  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    return natural.at(0);
  }
  std::vector<graph::Shape> NaturalInputShapes() const override { return {{16}}; }
  std::vector<float> Features(const ops::Config&) const override { return {}; }
  std::vector<std::string> FeatureNames() const override { return {}; }
  ops::Config DefaultConfig() const override { return {}; }

  ops::Config Variant(int64_t v) const { return space_.FromChoices({v}); }

 private:
  ops::ConfigSpace space_;
  graph::Workload workload_;
  ops::Target target_;
};

class BuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("loom_builder_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Builder> MakeBuilder(BuildOptions options) {
    options.cache_dir = dir_.string();
    auto builder = MakeLocalBuilder(options);
    EXPECT_TRUE(builder.ok()) << builder.status();
    return builder.ok() ? std::move(*builder) : nullptr;
  }

  std::filesystem::path dir_;
  HandTemplate tmpl_;
};

// Loads the artifact and runs it on 16 floats: proves the build is a real, callable kernel.
std::vector<float> RunArtifact(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  EXPECT_NE(handle, nullptr) << dlerror();
  if (handle == nullptr) return {};
  auto fn = reinterpret_cast<loom_kernel_fn>(dlsym(handle, codegen::kKernelEntry));
  EXPECT_NE(fn, nullptr);
  std::vector<float> in(16), out(16, -1.0f);
  for (int i = 0; i < 16; ++i) in[i] = static_cast<float>(i);
  void* buffers[2] = {in.data(), out.data()};
  if (fn != nullptr) fn(buffers, nullptr);
  dlclose(handle);
  return out;
}

TEST_F(BuilderTest, CompilesAValidKernel) {
  auto builder = MakeBuilder({});
  ASSERT_NE(builder, nullptr);
  std::vector<BuildResult> results = builder->Build(tmpl_, {tmpl_.Variant(1)});
  ASSERT_EQ(results.size(), 1u);
  const BuildResult& r = results[0];
  EXPECT_EQ(r.error, ErrorKind::kNone) << r.error_msg;
  EXPECT_EQ(r.config, tmpl_.Variant(1));
  EXPECT_FALSE(r.cache_hit);
  EXPECT_GT(r.build_seconds, 0.0);
  EXPECT_THAT(r.artifact_path, HasSubstr(dir_.string()));
  ASSERT_TRUE(std::filesystem::exists(r.artifact_path));
  std::vector<float> out = RunArtifact(r.artifact_path);
  ASSERT_EQ(out.size(), 16u);
  EXPECT_EQ(out[5], 15.0f);  // 5 * (1 + 2)
  // No temporary files are left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_THAT(entry.path().filename().string(), ::testing::Not(HasSubstr("tmp-")));
  }
}

TEST_F(BuilderTest, SyntaxErrorIsACompileErrorWithTheCompilersMessage) {
  auto builder = MakeBuilder({});
  ASSERT_NE(builder, nullptr);
  std::vector<BuildResult> results = builder->Build(tmpl_, {tmpl_.Variant(4)});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].error, ErrorKind::kCompile);
  EXPECT_THAT(results[0].error_msg, HasSubstr("compiler exited with status 1"));
  EXPECT_THAT(results[0].error_msg, HasSubstr("error:"));
  EXPECT_LE(results[0].error_msg.size(), 2048u + 64u);
  EXPECT_TRUE(results[0].artifact_path.empty());
}

TEST_F(BuilderTest, EmitFailureIsAnInstantiationError) {
  auto builder = MakeBuilder({});
  ASSERT_NE(builder, nullptr);
  std::vector<BuildResult> results = builder->Build(tmpl_, {tmpl_.Variant(6)});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].error, ErrorKind::kInstantiation);
  EXPECT_THAT(results[0].error_msg, HasSubstr("violates a constraint"));
}

TEST_F(BuilderTest, SlowCompileIsABuildTimeout) {
  auto builder = MakeBuilder({.timeout = absl::Milliseconds(500)});
  ASSERT_NE(builder, nullptr);
  const absl::Time start = absl::Now();
  std::vector<BuildResult> results = builder->Build(tmpl_, {tmpl_.Variant(5)});
  const absl::Duration took = absl::Now() - start;
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].error, ErrorKind::kBuildTimeout) << results[0].error_msg;
  EXPECT_THAT(results[0].error_msg, HasSubstr("build timeout"));
  EXPECT_LT(took, absl::Seconds(5));
}

TEST_F(BuilderTest, SecondBuildOfTheSameSourceIsACacheHit) {
  auto builder = MakeBuilder({});
  ASSERT_NE(builder, nullptr);
  BuildResult first = builder->Build(tmpl_, {tmpl_.Variant(2)})[0];
  ASSERT_EQ(first.error, ErrorKind::kNone) << first.error_msg;
  EXPECT_FALSE(first.cache_hit);
  // A fresh builder over the same directory shares the cache.
  auto again = MakeBuilder({});
  ASSERT_NE(again, nullptr);
  BuildResult second = again->Build(tmpl_, {tmpl_.Variant(2)})[0];
  EXPECT_EQ(second.error, ErrorKind::kNone);
  EXPECT_TRUE(second.cache_hit);
  EXPECT_EQ(second.artifact_path, first.artifact_path);
  // A different source is not.
  BuildResult other = again->Build(tmpl_, {tmpl_.Variant(3)})[0];
  EXPECT_FALSE(other.cache_hit);
  EXPECT_NE(other.artifact_path, first.artifact_path);
}

TEST_F(BuilderTest, CacheOffRecompiles) {
  auto builder = MakeBuilder({.use_cache = false});
  ASSERT_NE(builder, nullptr);
  BuildResult first = builder->Build(tmpl_, {tmpl_.Variant(0)})[0];
  BuildResult second = builder->Build(tmpl_, {tmpl_.Variant(0)})[0];
  EXPECT_EQ(first.error, ErrorKind::kNone);
  EXPECT_EQ(second.error, ErrorKind::kNone);
  EXPECT_FALSE(second.cache_hit);
  EXPECT_EQ(RunArtifact(second.artifact_path)[3], 6.0f);
}

TEST_F(BuilderTest, ExtraFlagsChangeTheCacheKey) {
  auto plain = MakeBuilder({});
  auto debug = MakeBuilder({.extra_flags = "-g"});
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(debug, nullptr);
  BuildResult a = plain->Build(tmpl_, {tmpl_.Variant(0)})[0];
  BuildResult b = debug->Build(tmpl_, {tmpl_.Variant(0)})[0];
  EXPECT_FALSE(b.cache_hit);
  EXPECT_NE(a.artifact_path, b.artifact_path);
}

TEST_F(BuilderTest, ParallelBatchGivesEachCandidateItsOwnResult) {
  auto builder = MakeBuilder({.num_threads = 3, .timeout = absl::Seconds(2)});
  ASSERT_NE(builder, nullptr);
  const std::vector<ops::Config> configs = {tmpl_.Variant(0), tmpl_.Variant(4), tmpl_.Variant(1),
                                            tmpl_.Variant(6), tmpl_.Variant(3), tmpl_.Variant(0)};
  std::vector<BuildResult> results = builder->Build(tmpl_, configs);
  ASSERT_EQ(results.size(), configs.size());
  for (size_t i = 0; i < configs.size(); ++i) EXPECT_EQ(results[i].config, configs[i]) << i;
  EXPECT_EQ(results[0].error, ErrorKind::kNone) << results[0].error_msg;
  EXPECT_EQ(results[1].error, ErrorKind::kCompile);
  EXPECT_EQ(results[2].error, ErrorKind::kNone) << results[2].error_msg;
  EXPECT_EQ(results[3].error, ErrorKind::kInstantiation);
  EXPECT_EQ(results[4].error, ErrorKind::kNone) << results[4].error_msg;
  EXPECT_EQ(results[5].error, ErrorKind::kNone) << results[5].error_msg;
  EXPECT_EQ(results[5].artifact_path, results[0].artifact_path);
  EXPECT_EQ(RunArtifact(results[0].artifact_path)[1], 2.0f);
  EXPECT_EQ(RunArtifact(results[2].artifact_path)[1], 3.0f);
  EXPECT_EQ(RunArtifact(results[4].artifact_path)[1], 5.0f);
}

TEST(MakeLocalBuilderTest, RejectsBadOptions) {
  auto zero = MakeLocalBuilder({.num_threads = 0});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("num_threads"));
  auto missing = MakeLocalBuilder(
      {.compiler = "/nonexistent/loom-no-such-compiler", .cache_dir = ::testing::TempDir()});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("loom-no-such-compiler"));
}

TEST(DefaultKernelCacheDirTest, FollowsXdgCacheHome) {
  const char* old = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old ? old : "";
  setenv("XDG_CACHE_HOME", "/some/cache", 1);
  EXPECT_EQ(DefaultKernelCacheDir(), "/some/cache/loom/kernels");
  if (old) {
    setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  } else {
    unsetenv("XDG_CACHE_HOME");
  }
}

}  // namespace
}  // namespace loom::tune
