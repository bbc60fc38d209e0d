// The C API on GPU artifacts (`loom compile --target cuda -o DIR`), without a GPU: the artifact is
// made by the runtime on the fake CUDA driver (toolchain/testing/fake_libcuda.cc) with
// host-emulation kernel images (runtime/testing/fake_gpu_artifact.h), and libloom.so's
// loom_model_load finds the same fake driver as "libcuda.so.1" (loaded first by path, so the
// dynamic loader matches its soname). Checks the
// outputs bit for bit against the model that wrote the artifact, and the one-line refusals: another
// sm, a corrupt kernel image, a missing file, no driver, thread counts.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/frontend/model_loader.h"
#include "loom/loom_c.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/testing/fake_gpu_artifact.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

// Sets LOOM_FAKE_CUDA (the fake driver's fault mode) for one scope.
class FakeMode {
 public:
  explicit FakeMode(const char* mode) { setenv("LOOM_FAKE_CUDA", mode, 1); }
  ~FakeMode() { unsetenv("LOOM_FAKE_CUDA"); }
};

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string();
}

// The message of a failed call: one line.
std::string LastError() {
  std::string m = loom_last_error();
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  return m;
}

class CApiGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = frontend::LoadModel("zoo:tiny_cnn");
    ASSERT_TRUE(m.ok()) << m.status();
    graph_ = std::move(m->graph);
    auto compiled =
        runtime::testing::CompileOnFakeGpu(graph_, BuildDir() + "/c_api_gpu_test_kernels");
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    ASSERT_EQ(graph_.inputs.size(), 1u);
    input_ = graph::Tensor(graph::DType::kFloat32, graph_.inputs[0].type.shape);
    base::Rng rng(3);
    for (float& v : input_.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    auto want = compiled->model->Run({{graph_.inputs[0].name, input_}});
    ASSERT_TRUE(want.ok()) << want.status();
    want_ = *std::move(want);
    dir_ = absl::StrCat(BuildDir(), "/c_api_gpu_test_artifact_", getpid());
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(compiled->model->Export(dir_).ok());
    ASSERT_TRUE(runtime::IsCudaArtifactDir(dir_));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Flips one byte of `file` (relative to the artifact) at `offset`.
  void Damage(const std::string& file, int64_t offset) {
    ASSERT_TRUE(runtime::testing::FlipByte(dir_ + "/" + file, offset).ok()) << file;
  }

  // loom_model_load of the artifact fails with `code` and a one-line message holding `fragment`.
  void ExpectRefused(int32_t num_threads, loom_status_t code, const std::string& fragment) {
    loom_model_t* m = nullptr;
    EXPECT_EQ(loom_model_load(dir_.c_str(), num_threads, &m), code) << loom_last_error();
    EXPECT_EQ(m, nullptr);
    EXPECT_THAT(LastError(), HasSubstr(fragment));
    loom_model_free(m);
  }

  graph::Graph graph_;
  graph::Tensor input_;
  std::vector<graph::Tensor> want_;
  std::string dir_;
};

TEST_F(CApiGpuTest, LoadsAndRunsAGpuArtifactLikeTheModelThatWroteIt) {
  loom_model_t* m = nullptr;
  ASSERT_EQ(loom_model_load(dir_.c_str(), 0, &m), LOOM_OK) << loom_last_error();
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(loom_model_num_inputs(m), 1);
  ASSERT_EQ(loom_model_num_outputs(m), 1);
  EXPECT_STREQ(loom_model_input_name(m, 0), graph_.inputs[0].name.c_str());
  int64_t dims[8];
  int32_t rank = 0;
  ASSERT_EQ(loom_model_input_shape(m, 0, dims, 8, &rank), LOOM_OK);
  ASSERT_EQ(rank, 4);
  EXPECT_EQ(std::vector<int64_t>(dims, dims + 4), (std::vector<int64_t>{1, 3, 32, 32}));
  ASSERT_EQ(loom_model_output_shape(m, 0, dims, 8, &rank), LOOM_OK);
  ASSERT_EQ(rank, 2);
  EXPECT_EQ(dims[1], 10);
  ASSERT_EQ(want_.size(), 1u);
  ASSERT_EQ(want_[0].num_elements(), 10);
  const float* in[1] = {input_.values<float>().data()};
  for (int run = 0; run < 2; ++run) {  // the first run captures the graph, the second replays it
    std::vector<float> got(10, -1.0f);
    float* out[1] = {got.data()};
    ASSERT_EQ(loom_model_run(m, in, out), LOOM_OK) << loom_last_error();
    EXPECT_EQ(std::memcmp(got.data(), want_[0].raw_data(), want_[0].num_bytes()), 0) << run;
  }
  loom_model_free(m);
}

// The driver acts on the calling thread's current context, and the fake, like the real one,
// refuses a call on a thread where none is current (CUDA_ERROR_INVALID_CONTEXT): a model loaded
// on one thread runs, captures and replays from others (as Python and a server's request threads
// call it).
TEST_F(CApiGpuTest, RunsFromThreadsOtherThanTheOneThatLoadedIt) {
  loom_model_t* m = nullptr;
  ASSERT_EQ(loom_model_load(dir_.c_str(), 0, &m), LOOM_OK) << loom_last_error();
  const float* in[1] = {input_.values<float>().data()};
  for (int run = 0; run < 3; ++run) {  // capture on one thread, replay on the others
    std::vector<float> got(10, -1.0f);
    loom_status_t rc = LOOM_UNKNOWN;
    std::string error;
    std::thread([&] {
      float* out[1] = {got.data()};
      rc = loom_model_run(m, in, out);
      if (rc != LOOM_OK) error = loom_last_error();
    }).join();
    ASSERT_EQ(rc, LOOM_OK) << error;
    EXPECT_EQ(std::memcmp(got.data(), want_[0].raw_data(), want_[0].num_bytes()), 0) << run;
  }
  std::thread([&] { loom_model_free(m); }).join();  // freed on yet another thread
}

TEST_F(CApiGpuTest, RefusesAnotherArchitectureInOneLine) {
  FakeMode mode("sm_80");
  ExpectRefused(0, LOOM_FAILED_PRECONDITION, "was compiled for sm_90 but the GPU is sm_80");
}

TEST_F(CApiGpuTest, RefusesACorruptKernelImageAndAMissingOne) {
  Damage("kernels/k0.so", 100);
  ExpectRefused(0, LOOM_DATA_LOSS, "k0.so is corrupt");
  std::filesystem::remove(dir_ + "/kernels/k0.so");
  ExpectRefused(0, LOOM_NOT_FOUND, "k0.so");
}

TEST_F(CApiGpuTest, RefusesCorruptWeightsAndPlan) {
  Damage("weights.bin", 8);
  ExpectRefused(0, LOOM_DATA_LOSS, "weights.bin");
  std::ofstream(dir_ + "/plan.json", std::ios::app) << "x";
  ExpectRefused(0, LOOM_DATA_LOSS, "plan.json");
}

TEST_F(CApiGpuTest, ThreadCountsAreForCpuArtifacts) {
  ExpectRefused(2, LOOM_INVALID_ARGUMENT, "is a GPU artifact: num_threads must be 0, got 2");
}

TEST_F(CApiGpuTest, NoUsableDriverIsUnavailable) {
  FakeMode mode("init_fail");
  ExpectRefused(0, LOOM_UNAVAILABLE, "cuInit");
}

}  // namespace
}  // namespace loom
