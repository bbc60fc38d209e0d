// The chainable C++ API (include/loom/loom.h): the whole workflow on zoo models, agreement with
// the reference executor, artifacts through Export / Load, and how errors travel down a chain.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/frontend/model_loader.h"
#include "loom/loom.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_model.h"
#include "loom/runtime/reference_executor.h"
#include "loom/runtime/testing/fake_gpu_artifact.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string();
}
std::string Scratch(const std::string& name) {
  const std::string dir = absl::StrCat(BuildDir(), "/api_model_test/", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path());
  return dir;
}
CompileOptions Compile(int32_t threads) {
  return {.threads = threads, .cache_dir = BuildDir() + "/api_model_test_kernels"};
}

Tensor Input(const graph::Shape& shape) {
  Tensor t(graph::DType::kFloat32, shape);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = 0.02f * (i % 51) - 0.5f;
  return t;
}

std::vector<Tensor> Reference(const std::string& spec, const Tensor& x) {
  auto m = frontend::LoadModel(spec);
  EXPECT_TRUE(m.ok()) << m.status();
  auto ex = runtime::ReferenceExecutor::Create(m->graph);
  EXPECT_TRUE(ex.ok()) << ex.status();
  auto out = ex->Run({{m->graph.inputs[0].name, x}});
  EXPECT_TRUE(out.ok()) << out.status();
  return *out;
}

void ExpectClose(const Tensor& got, const Tensor& want, double tol) {
  ASSERT_EQ(got.shape(), want.shape());
  double err = 0, mag = 0;
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    err = std::max(err, std::fabs(double{got.data<float>()[i]} - want.data<float>()[i]));
    mag = std::max(mag, std::fabs(double{want.data<float>()[i]}));
  }
  EXPECT_GT(mag, 0);
  EXPECT_LE(err, tol * mag);
}

TEST(ModelTest, CompileRunExportLoadMatchesTheReference) {
  Model model = Model::Load("zoo:tiny_cnn").Compile(Compile(2));
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(model.inputs().size(), 1u);
  const Tensor x = Input(model.inputs()[0].type.shape);
  const std::vector<Tensor> want = Reference("zoo:tiny_cnn", x);
  auto got = model.Run(x);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectClose((*got)[0], want[0], 1e-3);

  const std::string dir = Scratch("tiny_cnn");
  ASSERT_TRUE(model.Export(dir).ok());
  Model loaded = Model::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded.compiled()->num_threads(), 2);  // as compiled
  EXPECT_EQ(loaded.outputs()[0].type.shape, want[0].shape());
  auto again = loaded.Compile({.threads = 1}).Run({{loaded.inputs()[0].name, x}});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(loaded.compiled()->num_threads(), 1);
  ExpectClose((*again)[0], (*got)[0], 1e-6);

  auto bench = loaded.Benchmark({.min_seconds = 0, .min_runs = 3});
  ASSERT_TRUE(bench.ok()) << bench.status();
  EXPECT_GE(bench->runs, 3);
  EXPECT_GT(bench->median_ms, 0);
  EXPECT_LE(bench->min_ms, bench->median_ms);
  EXPECT_LE(bench->median_ms, bench->p90_ms);

  EXPECT_EQ(loaded.Tune().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(), HasSubstr("compiled artifact"));
}

// The one-line refusal of a failed Load, with its code.
void ExpectRefused(const Model& m, absl::StatusCode code, const std::string& fragment) {
  EXPECT_EQ(m.status().code(), code) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr(fragment));
  EXPECT_EQ(m.status().message().find('\n'), std::string_view::npos) << m.status();
}

// A GPU artifact (`loom compile --target cuda -o DIR`, here written on the fake CUDA driver with
// host-emulation kernels) loads through runtime::LoadCudaArtifact, the C API's loader: it runs on
// the GPU like the model that wrote it and as the reference does, replays one captured graph, runs
// as compiled (Compile is refused), exports again, and another sm or a damaged file is refused in
// one line.
TEST(ModelTest, GpuArtifactsLoadAndRunThroughTheCudaLoader) {
  auto source = frontend::LoadModel("zoo:tiny_cnn");
  ASSERT_TRUE(source.ok()) << source.status();
  auto gpu = runtime::testing::CompileOnFakeGpu(source->graph, BuildDir() + "/api_model_test_gpu");
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const Tensor x = Input(source->graph.inputs[0].type.shape);
  auto want = gpu->model->Run({{source->graph.inputs[0].name, x}});
  ASSERT_TRUE(want.ok()) << want.status();
  const std::string dir = Scratch("gpu_artifact");
  ASSERT_TRUE(gpu->model->Export(dir).ok());

  Model m = Model::Load(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE(m.cuda_model(), nullptr);
  EXPECT_EQ(m.compiled(), nullptr);
  EXPECT_EQ(m.cuda_target()->cuda_arch, "sm_90");
  ASSERT_EQ(m.inputs().size(), 1u);
  EXPECT_EQ(m.outputs()[0].type.shape, (graph::Shape{1, 10}));
  for (int run = 0; run < 2; ++run) {  // the first run captures the graph, the second replays it
    auto got = m.Run(x);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ((*got)[0].num_bytes(), (*want)[0].num_bytes());
    EXPECT_EQ(std::memcmp((*got)[0].raw_data(), (*want)[0].raw_data(), (*want)[0].num_bytes()), 0);
    ExpectClose((*got)[0], Reference("zoo:tiny_cnn", x)[0], 1e-3);
  }
  EXPECT_TRUE(m.cuda_model()->run_stats().graph_captured);
  EXPECT_EQ(m.cuda_model()->run_stats().runs, 2);
  auto bench = m.Benchmark({.min_seconds = 0, .min_runs = 2});
  ASSERT_TRUE(bench.ok()) << bench.status();
  EXPECT_GE(bench->runs, 2);

  m.Compile({.threads = 2});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(m.status().message(), HasSubstr("is a GPU artifact: it runs on its GPU as compiled"));
  m.ClearError();
  EXPECT_EQ(m.Tune().status().code(), absl::StatusCode::kFailedPrecondition);
  m.ClearError();
  const std::string again = Scratch("gpu_artifact_again");
  ASSERT_TRUE(m.Export(again).ok());
  auto rerun = Model::Load(again).Run(x);
  ASSERT_TRUE(rerun.ok()) << rerun.status();
  EXPECT_EQ(std::memcmp((*rerun)[0].raw_data(), (*want)[0].raw_data(), (*want)[0].num_bytes()), 0);

  setenv("LOOM_FAKE_CUDA", "sm_80", 1);
  Model other_sm = Model::Load(dir);
  unsetenv("LOOM_FAKE_CUDA");
  ExpectRefused(other_sm, absl::StatusCode::kFailedPrecondition,
                "was compiled for sm_90 but the GPU is sm_80");
  ExpectRefused(Model::Load(dir, {.cuda_device = 1}), absl::StatusCode::kInvalidArgument,
                "CUDA device 1 does not exist");
  ASSERT_TRUE(runtime::testing::FlipByte(again + "/kernels/k0.so", 100).ok());
  ExpectRefused(Model::Load(again), absl::StatusCode::kDataLoss, "k0.so is corrupt");
  ASSERT_TRUE(runtime::testing::FlipByte(dir + "/weights.bin", 8).ok());
  ExpectRefused(Model::Load(dir), absl::StatusCode::kDataLoss, "weights.bin");
}

TEST(ModelTest, RunCompilesImplicitly) {
  Model model = Model::Load("zoo:resnet18");
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(model.compiled(), nullptr);
  EXPECT_EQ(model.outputs()[0].type.shape, (graph::Shape{1, 1000}));
  const Tensor x = Input(model.inputs()[0].type.shape);
  auto got = model.Run(x);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_NE(model.compiled(), nullptr);
  ExpectClose((*got)[0], Reference("zoo:resnet18", x)[0], 1e-3);
}

TEST(ModelTest, TheFirstErrorTravelsDownTheChain) {
  Model model = Model::Load("zoo:no_such_model").Tune({.trials = 4}).Compile();
  EXPECT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(), HasSubstr("no_such_model"));
  EXPECT_TRUE(model.inputs().empty());
  auto run = model.Run(Tensor());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(model.Benchmark().status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(model.Export(Scratch("never")).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(BuildDir() + "/api_model_test/never"));

  Model bad_threads = Model::Load("zoo:tiny_cnn").Compile({.threads = 0});
  EXPECT_EQ(bad_threads.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_threads.status().message(), HasSubstr("num_threads"));

  Model bad_trials = Model::Load("zoo:tiny_cnn").Tune({.trials = 0});
  EXPECT_EQ(bad_trials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_trials.status().message(), HasSubstr("trials"));
  Model bad_total = Model::Load("zoo:tiny_cnn").Tune({.total_trials = -5});
  EXPECT_EQ(bad_total.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_total.status().message(),
              HasSubstr("TuneOptions.total_trials: the total trials must be 1 to"));
  Model bad_time = Model::Load("zoo:tiny_cnn").Tune({.time_budget_seconds = std::nan("")});
  EXPECT_EQ(bad_time.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_time.status().message(),
              HasSubstr("TuneOptions.time_budget_seconds must be 0 (none) to"));

  // ClearError lets a chain go on after a failed step, but not after a failed Load.
  bad_trials.ClearError();
  EXPECT_TRUE(bad_trials.ok());
  EXPECT_FALSE(bad_trials.inputs().empty());
  model.ClearError();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);

  Model ok = Model::Load("zoo:tiny_cnn");
  auto wrong = ok.Run(Input({1, 3, 5, 5}));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("compiled for"));
  EXPECT_EQ(ok.Benchmark({.min_runs = 0}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Tune -> Compile reads the new records. The measure worker is hosted by the `loom` binary (this
// test binary does not call loom::Init), found through LOOM_BUILD_DIR.
TEST(ModelTest, TuneThenCompileUsesTheRecords) {
  const std::string loom = BuildDir() + "/loom/cli/loom";
  if (std::getenv("LOOM_BUILD_DIR") == nullptr || !std::filesystem::exists(loom)) {
    GTEST_SKIP() << "needs the loom binary in LOOM_BUILD_DIR";
  }
  const std::string db = Scratch("tune") + ".db";
  std::filesystem::remove(db);
  std::vector<std::string> progress;
  Model model = Model::Load("zoo:tiny_cnn")
                    .Tune({.trials = 2,
                           .db = db,
                           .tuner = "random",
                           .batch_size = 2,
                           .measure_worker = {loom, "__measure-worker"},
                           .on_progress = [&](const std::string& l) { progress.push_back(l); }})
                    .Compile(Compile(1));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_GT(model.tuned_tasks(), 0);
  EXPECT_FALSE(progress.empty());
  EXPECT_THAT(progress.back(), HasSubstr("trials 2/2"));
  EXPECT_GT(model.compiled()->stats().tuned_kernels, 0);
  const Tensor x = Input(model.inputs()[0].type.shape);
  auto got = model.Run(x);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectClose((*got)[0], Reference("zoo:tiny_cnn", x)[0], 1e-3);
}

TEST(ModelTest, TasksTargetsAndTaskSelection) {
  Model model = Model::Load("zoo:tiny_cnn");
  absl::StatusOr<std::vector<graph::Task>> tasks = model.Tasks();
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_FALSE(tasks->empty());
  EXPECT_THAT(tasks->front().key, HasSubstr("conv2d:f32:"));

  Model bad_index = Model::Load("zoo:tiny_cnn").Tune({.trials = 1, .tasks = {99}});
  EXPECT_EQ(bad_index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_index.status().message(), HasSubstr("index 99 is out of range"));

  Model bad_prior = Model::Load("zoo:tiny_cnn").Tune({.trials = 1, .prior = "/nonexistent.json"});
  EXPECT_EQ(bad_prior.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(bad_prior.status().message(), HasSubstr("TuneOptions.prior"));

  Model cuda = Model::Load("zoo:tiny_cnn").Compile({.target = "cuda"});
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cuda.status().message(), HasSubstr("unknown target 'cuda'"));
  Model isa = Model::Load("zoo:tiny_cnn").Compile({.target = "cpu:sse9"});
  EXPECT_EQ(isa.status().code(), absl::StatusCode::kInvalidArgument);
  Model generic = Model::Load("zoo:tiny_cnn")
                      .Compile({.threads = 1,
                                .target = "cpu:generic",
                                .cache_dir = BuildDir() + "/api_model_test_kernels"});
  ASSERT_TRUE(generic.ok()) << generic.status();
  EXPECT_THAT(generic.compiled()->target_key(), HasSubstr("cpu:generic:"));

  const std::string dir = Scratch("tasks_artifact");
  ASSERT_TRUE(generic.Export(dir).ok());
  EXPECT_EQ(Model::Load(dir).Tasks().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Model::Load("zoo:no_such_model").Tasks().status().code(), absl::StatusCode::kNotFound);
}

// An interruption between rounds stops Tune with kCancelled and keeps the records.
TEST(ModelTest, InterruptedTuneIsCancelledAndKeepsItsRecords) {
  const std::string loom = BuildDir() + "/loom/cli/loom";
  if (std::getenv("LOOM_BUILD_DIR") == nullptr || !std::filesystem::exists(loom)) {
    GTEST_SKIP() << "needs the loom binary in LOOM_BUILD_DIR";
  }
  const std::string db = Scratch("interrupted") + ".db";
  std::filesystem::remove(db);
  int rounds = 0;
  Model model = Model::Load("zoo:tiny_cnn")
                    .Tune({.trials = 8,
                           .db = db,
                           .tuner = "random",
                           .batch_size = 2,
                           .tasks = {0},
                           .measure_worker = {loom, "__measure-worker"},
                           .interrupted = [&] { return ++rounds >= 2; }});
  EXPECT_EQ(model.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(model.status().message(), HasSubstr("interrupted"));
  auto store = tune::OpenSqliteRecordStore(db);
  ASSERT_TRUE(store.ok()) << store.status();
  auto n = (*store)->Count({});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);  // one round of batch 2
}

}  // namespace
}  // namespace loom
