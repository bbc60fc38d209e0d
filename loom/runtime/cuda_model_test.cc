// CudaModel on the host emulation of a GPU: the same CUDA sources the GPU would run (templates
// and the auxiliary kernels), printed as host C++ and run on the CPU, checked against the
// reference executor. What is left for a GPU is the driver and NVRTC, which the measurer's tests
// and scripts/gpu-check.sh cover.
#include "loom/runtime/cuda_model.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/npy.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/shared_models.h"
#include "loom/ops/cuda_lowering.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/cuda_aux_kernels.h"
#include "loom/runtime/reference_executor.h"
#include "loom/toolchain/nvrtc_builder.h"

namespace loom::runtime {
namespace {

using ::testing::HasSubstr;

tune::BuildOptions Build() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  tune::BuildOptions o;
  o.num_threads = 2;
  o.cache_dir = (b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string()) +
                "/cuda_model_test_kernels";
  return o;
}

std::unique_ptr<CudaBackend> Emulated() {
  auto b = MakeEmulatedCudaBackend(ops::CudaTarget("sm_90"), Build());
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// The GPU backend on the fake driver (toolchain/testing/fake_libcuda.cc), kernels handed to it as
// host-emulation images: the device path (modules, a stream, graph capture, artifacts) on the CPU.
std::unique_ptr<CudaBackend> FakeDevice() {
  CudaDeviceOptions o;
  o.build = Build();
  o.driver_library = LOOM_FAKE_LIBCUDA;
  o.host_emulation_kernels = true;
  auto b = MakeCudaDeviceBackend(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// What the fake driver ran so far: direct launches, graph launches, kernels run by graphs,
// modules loaded (its loom_fake_cuda_counters; the backend has it loaded).
std::array<long long, 4> FakeCounters() {
  std::array<long long, 4> c{-1, -1, -1, -1};
  void* lib = dlopen(LOOM_FAKE_LIBCUDA, RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return c;
  auto fn = reinterpret_cast<void (*)(long long*)>(dlsym(lib, "loom_fake_cuda_counters"));
  if (fn != nullptr) fn(c.data());
  dlclose(lib);
  return c;
}

// Sets LOOM_FAKE_CUDA (the fake driver's fault mode) for one scope.
class FakeMode {
 public:
  explicit FakeMode(const char* mode) { setenv("LOOM_FAKE_CUDA", mode, 1); }
  ~FakeMode() { unsetenv("LOOM_FAKE_CUDA"); }
};

bool SameBits(const graph::Tensor& a, const graph::Tensor& b) {
  return a.type() == b.type() && a.num_bytes() == b.num_bytes() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.num_bytes()) == 0;
}

// A zoo model compiled on the emulated backend; `model` is null (with a test failure) on error.
struct ZooCompiled {
  graph::Graph graph;
  std::unique_ptr<CudaBackend> backend;
  std::unique_ptr<CudaModel> model;
};
ZooCompiled CompileZoo(const std::string& name, tune::RecordStore* records = nullptr) {
  ZooCompiled z;
  auto m = frontend::LoadModel(absl::StrCat("zoo:", name));
  EXPECT_TRUE(m.ok()) << m.status();
  z.backend = Emulated();
  if (!m.ok() || z.backend == nullptr) return z;
  z.graph = std::move(m->graph);
  auto model = CudaModel::Compile(z.graph, z.backend.get(), {.records = records});
  EXPECT_TRUE(model.ok()) << name << ": " << model.status();
  if (model.ok()) z.model = std::move(*model);
  return z;
}

graph::Tensor Random(const graph::Shape& shape, uint64_t seed) {
  graph::Tensor t(graph::DType::kFloat32, shape);
  base::Rng rng(seed);
  for (float& v : t.values<float>()) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
  return t;
}

// Runs `g` through the CUDA model and the reference executor on the same random inputs.
void ExpectMatchesReference(const graph::Graph& g, CudaModel* model, int runs = 2) {
  std::map<std::string, graph::Tensor> in;
  for (const graph::ValueInfo& v : g.inputs) in[v.name] = Random(v.type.shape, 3);
  auto ref = ReferenceExecutor::Create(g);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto want = ref->Run(in);
  ASSERT_TRUE(want.ok()) << want.status();
  for (int run = 0; run < runs; ++run) {  // a second run reuses every buffer
    auto got = model->Run(in);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want->size());
    for (size_t i = 0; i < got->size(); ++i) {
      ASSERT_EQ((*got)[i].shape(), (*want)[i].shape());
      double err = 0, mag = 0;
      for (int64_t k = 0; k < (*got)[i].num_elements(); ++k) {
        const float a = (*got)[i].data<float>()[k], b = (*want)[i].data<float>()[k];
        err = std::max(err, static_cast<double>(std::fabs(a - b)));
        mag = std::max(mag, static_cast<double>(std::fabs(b)));
      }
      EXPECT_GT(mag, 0);
      EXPECT_LE(err, 1e-4 * mag + 1e-6) << "output " << i << " run " << run;
    }
  }
}

graph::Node Op(std::string type, std::vector<std::string> inputs, std::string output) {
  graph::Node n;
  n.name = output + "_node";
  n.op_type = std::move(type);
  n.inputs = std::move(inputs);
  n.outputs = {std::move(output)};
  return n;
}

// Every kind of step the CUDA model has: conv + bias + ReLU6 (fused), a depthwise conv with the
// Add of a per-channel constant (fused), max pooling with padding, average pooling, a concat, a
// sigmoid, global pooling, a view, a dense layer with bias, and Softmax.
graph::Graph MixedGraph() {
  graph::Graph g;
  g.name = "mixed";
  g.inputs = {{"x", {graph::DType::kFloat32, {1, 8, 10, 10}}}};
  g.outputs = {{"z", {graph::DType::kFloat32, {1, 4}}}};
  g.initializers["w1"] = Random({8, 8, 3, 3}, 11);
  g.initializers["b1"] = Random({8}, 12);
  g.initializers["wd"] = Random({8, 1, 3, 3}, 13);
  g.initializers["bc"] = Random({1, 8, 1, 1}, 14);
  g.initializers["wg"] = Random({4, 16}, 15);
  g.initializers["bg"] = Random({4}, 16);
  graph::Tensor lo(graph::DType::kFloat32, {}), hi(graph::DType::kFloat32, {});
  lo.data<float>()[0] = 0.0f;
  hi.data<float>()[0] = 0.5f;  // low enough that the clip bites on these inputs
  g.initializers["lo"] = lo;
  g.initializers["hi"] = hi;

  graph::Node c1 = Op("Conv", {"x", "w1", "b1"}, "c1");
  c1.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  c1.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  graph::Node dw = Op("Conv", {"r1", "wd"}, "dw");
  dw.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  dw.attrs["group"] = int64_t{8};
  graph::Node mp = Op("MaxPool", {"a"}, "m");
  mp.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  mp.attrs["strides"] = std::vector<int64_t>{2, 2};
  mp.attrs["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  graph::Node ap = Op("AveragePool", {"r1"}, "p");
  ap.attrs["kernel_shape"] = std::vector<int64_t>{2, 2};
  ap.attrs["strides"] = std::vector<int64_t>{2, 2};
  graph::Node cat = Op("Concat", {"m", "p"}, "cat");
  cat.attrs["axis"] = int64_t{1};
  graph::Node gemm = Op("Gemm", {"f", "wg", "bg"}, "y");
  gemm.attrs["transB"] = int64_t{1};
  graph::Node soft = Op("Softmax", {"y"}, "z");
  soft.attrs["axis"] = int64_t{1};
  g.nodes = {c1,
             Op("Clip", {"c1", "lo", "hi"}, "r1"),
             dw,
             Op("Add", {"dw", "bc"}, "a"),
             mp,
             ap,
             cat,
             Op("Sigmoid", {"cat"}, "s"),
             Op("GlobalAveragePool", {"s"}, "gp"),
             Op("Flatten", {"gp"}, "f"),
             gemm,
             soft};
  EXPECT_TRUE(graph::InferShapes(g).ok());
  return g;
}

TEST(CudaModelTest, MixedGraphMatchesTheReference) {
  const graph::Graph g = MixedGraph();
  auto backend = Emulated();
  ASSERT_NE(backend, nullptr);
  auto model = CudaModel::Compile(g, backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const CudaModelStats& st = (*model)->stats();
  EXPECT_EQ(st.kernel_steps, 3);  // the conv, the depthwise conv, the Gemm
  EXPECT_EQ(st.tuned_kernels, 0);
  EXPECT_EQ(st.fused_ops, 2);   // the Clip after the conv, the Add after the depthwise conv
  EXPECT_EQ(st.views, 1);       // Flatten
  EXPECT_EQ(st.host_steps, 0);  // Softmax is a generated kernel too
  // The Sigmoid (elementwise), the concat and Softmax (lowered), and three pools; the conv's bias
  // and Clip, the depthwise conv's Add and the Gemm's bias are in their kernels.
  EXPECT_EQ(st.elementwise_steps, 1);
  EXPECT_EQ(st.lowered_steps, 2);
  EXPECT_EQ(st.pool_steps, 3);
  EXPECT_EQ(st.aux_steps, 6);
  EXPECT_EQ(st.launches, 9);
  EXPECT_GT(st.device_bytes, 0);
  ExpectMatchesReference(g, model->get());
}

// A MatMul reading its B through a Transpose: the template reads the Transpose's input
// (trans_b), so the Transpose itself is no launch, unless its result is also a graph output.
graph::Graph TransposedMatMul(bool transpose_is_output) {
  graph::Graph g;
  g.name = "transposed_matmul";
  g.inputs = {{"a", {graph::DType::kFloat32, {2, 16, 32}}},
              {"b", {graph::DType::kFloat32, {2, 24, 32}}}};
  g.outputs = {{"y", {graph::DType::kFloat32, {2, 16, 24}}}};
  if (transpose_is_output) g.outputs.push_back({"bt", {graph::DType::kFloat32, {2, 32, 24}}});
  graph::Node t = Op("Transpose", {"b"}, "bt");
  t.attrs["perm"] = std::vector<int64_t>{0, 2, 1};
  g.nodes = {t, Op("MatMul", {"a", "bt"}, "y")};
  EXPECT_TRUE(graph::InferShapes(g).ok());
  return g;
}

TEST(CudaModelTest, AbsorbedTransposeIsNotLaunched) {
  auto backend = Emulated();
  ASSERT_NE(backend, nullptr);
  const graph::Graph g = TransposedMatMul(false);
  auto model = CudaModel::Compile(g, backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const CudaModelStats& st = (*model)->stats();
  EXPECT_EQ(st.kernel_steps, 1);
  EXPECT_EQ(st.lowered_steps, 0);
  EXPECT_EQ(st.dropped_steps, 1);
  EXPECT_EQ(st.launches, 1);
  ExpectMatchesReference(g, model->get());

  const graph::Graph kept = TransposedMatMul(true);
  auto both = CudaModel::Compile(kept, backend.get());
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ((*both)->stats().lowered_steps, 1);
  EXPECT_EQ((*both)->stats().dropped_steps, 0);
  EXPECT_EQ((*both)->stats().launches, 2);
  ExpectMatchesReference(kept, both->get());
}

TEST(CudaModelTest, TinyCnnMatchesTheReferenceWithTheResidualFused) {
  ZooCompiled z = CompileZoo("tiny_cnn");
  ASSERT_NE(z.model, nullptr);
  const CudaModelStats& st = z.model->stats();
  EXPECT_EQ(st.kernel_steps, 3);  // two convs and the Gemm
  EXPECT_EQ(st.host_steps, 0);
  EXPECT_EQ(st.fused_ops, 3);  // both ReLUs and the residual Add
  ExpectMatchesReference(z.graph, z.model.get());
}

// The zoo's ImageNet models run entirely on the device (about 25 s each in the emulation).
TEST(CudaModelTest, ZooModelsRunEntirelyOnTheDeviceAndMatchTheReference) {
  struct Want {
    const char* name;
    int64_t kernels;  // convs + the classifier
    int64_t arena;    // the largest input + output of one step: no plan needs less
    int64_t aux;      // launches besides the template kernels: the pools
  };
  // ResNet-18: the stem conv's 64x112x112 output and the max pool's 64x56x56; MobileNetV2: the
  // 96x112x112 expansion and its stride-2 depthwise conv's 96x56x56 (floats).
  const int64_t f = sizeof(float);
  for (const Want& w : {Want{"resnet18", 21, (64 * 112 * 112 + 64 * 56 * 56) * f, 2},
                        Want{"mobilenet_v2", 53, (96 * 112 * 112 + 96 * 56 * 56) * f, 1}}) {
    SCOPED_TRACE(w.name);
    ZooCompiled z = CompileZoo(w.name);
    ASSERT_NE(z.model, nullptr);
    const CudaModelStats& st = z.model->stats();
    EXPECT_EQ(st.kernel_steps, w.kernels);
    EXPECT_EQ(st.aux_steps, w.aux);  // bias, residual Adds and activations are fused
    EXPECT_EQ(st.host_steps, 0);
    EXPECT_LT(st.kernels_built, st.kernel_steps + st.aux_steps);  // repeated layers share kernels
    // The arena reuses the memory of values no longer needed, down to the least any plan needs.
    EXPECT_EQ(st.arena_bytes, w.arena);
    EXPECT_GT(st.value_bytes, 2 * st.arena_bytes);
    ExpectMatchesReference(z.graph, z.model.get(), /*runs=*/1);
  }
}

// Every shared reference model (every archive of LOOM_SHARED_DIR/models and
// LOOM_SHARED_DIR/transformers, whatever they hold), every input set, as a user would hand them to
// `loom bench --target cuda`, against ONNX Runtime's outputs (max|a-b| <= 1e-3 * max|ref|), on the
// device path through the fake driver: every node has a device kernel (no host step), and every
// run is one cuGraphLaunch of the captured graph running each of the model's kernels once, with
// no kernel launched directly.
TEST(CudaModelTest, SharedModelsMatchOnnxRuntime) {
  std::vector<std::string> problems;
  const std::vector<graph::SharedModel> models = graph::AllSharedModels(&problems);
  if (models.empty()) GTEST_SKIP() << "LOOM_SHARED_DIR is absent";
  EXPECT_TRUE(problems.empty()) << absl::StrJoin(problems, "; ");
  // Not a fixed list: every archive of both folders is here, and every input set of each (the
  // ORT outputs beside its ONNX file), so bert_small's masked second set is run too.
  std::vector<std::string> archives = graph::SharedModelNames(graph::kSharedCnnFolder);
  for (const std::string& name : graph::SharedModelNames(graph::kSharedTransformerFolder)) {
    archives.push_back(name);
  }
  std::vector<std::string> names;
  for (const graph::SharedModel& shared : models) names.push_back(shared.name);
  EXPECT_EQ(names, archives);
  auto backend = FakeDevice();
  ASSERT_NE(backend, nullptr);
  for (const graph::SharedModel& shared : models) {
    SCOPED_TRACE(shared.name);
    size_t ort_outputs = 0;
    for (const auto& entry :
         std::filesystem::directory_iterator(std::filesystem::path(shared.onnx).parent_path())) {
      ort_outputs += absl::EndsWith(entry.path().filename().string(), ".ort_output.npy");
    }
    EXPECT_EQ(shared.cases.size(), ort_outputs);
    if (shared.name == "bert_small") {
      EXPECT_TRUE(std::any_of(shared.cases.begin(), shared.cases.end(),
                              [](const graph::SharedModelCase& c) { return c.label == "mask2"; }));
    }
    auto m = frontend::LoadModel(shared.onnx);
    ASSERT_TRUE(m.ok()) << m.status();
    auto model = CudaModel::Compile(m->graph, backend.get());
    ASSERT_TRUE(model.ok()) << model.status();
    const CudaModelStats& st = (*model)->stats();
    EXPECT_EQ(st.host_steps, 0);
    EXPECT_GT(st.kernel_steps, 0);
    EXPECT_EQ(st.launches, st.kernel_steps + st.aux_steps);
    EXPECT_EQ(st.aux_steps, st.elementwise_steps + st.lowered_steps + st.pool_steps);
    const std::array<long long, 4> before = FakeCounters();
    ASSERT_GE(before[0], 0) << "no loom_fake_cuda_counters in " << LOOM_FAKE_LIBCUDA;
    for (const graph::SharedModelCase& c : shared.cases) {
      const std::string what = c.label.empty() ? "main inputs" : c.label;
      std::map<std::string, graph::Tensor> inputs;
      for (const auto& [name, path] : c.inputs) {
        auto t = graph::ReadNpy(path);
        ASSERT_TRUE(t.ok()) << t.status();
        inputs[name] = *t;
      }
      auto want = graph::ReadNpy(c.ort_output);
      ASSERT_TRUE(want.ok()) << want.status();
      auto got = (*model)->Run(inputs);
      ASSERT_TRUE(got.ok()) << what << ": " << got.status();
      ASSERT_FALSE(got->empty());
      ASSERT_EQ((*got)[0].num_elements(), want->num_elements()) << what;
      double err = 0, mag = 0;
      for (int64_t k = 0; k < want->num_elements(); ++k) {
        err = std::max(err, std::fabs((*got)[0].DoubleAt(k) - want->DoubleAt(k)));
        mag = std::max(mag, std::fabs(want->DoubleAt(k)));
      }
      EXPECT_GT(mag, 0) << what;
      EXPECT_LE(err, 1e-3 * mag) << what << ": max|a-b| " << err << ", max|ref| " << mag;
    }
    EXPECT_TRUE((*model)->run_stats().graph_captured) << (*model)->run_stats().graph_status;
    const auto runs = static_cast<long long>(shared.cases.size());
    EXPECT_EQ((*model)->run_stats().graph_replays, runs);
    const std::array<long long, 4> after = FakeCounters();
    EXPECT_EQ(after[0] - before[0], 0);                   // kernels launched directly
    EXPECT_EQ(after[1] - before[1], runs);                // one graph launch per run
    EXPECT_EQ(after[2] - before[2], runs * st.launches);  // each kernel node once per run
  }
}

// A record for the target picks its config; records of another target or template do not.
TEST(CudaModelTest, RecordsOfTheTargetPickTheKernelConfig) {
  auto m = frontend::LoadModel("zoo:tiny_cnn");
  ASSERT_TRUE(m.ok()) << m.status();
  auto backend = Emulated();
  ASSERT_NE(backend, nullptr);
  auto store = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(store.ok()) << store.status();
  auto tasks = graph::ExtractTasks(m->graph);
  ASSERT_TRUE(tasks.ok());
  int64_t recorded = 0;
  for (const graph::Task& task : *tasks) {
    auto t = ops::MakeTemplate(task.workload, backend->target());
    ASSERT_TRUE(t.ok()) << t.status();
    const ops::Config def = (*t)->DefaultConfig();
    ops::Config pick = def;
    for (int64_t i = 1; i < (*t)->space().size() && pick == def; i += 7919) {
      const ops::Config c{((*t)->space().size() / 3 + i) % (*t)->space().size()};
      if ((*t)->space().IsValid(c) && !(c == def)) pick = c;
    }
    ASSERT_FALSE(pick == def) << task.key;
    tune::Record r;
    r.task_key = task.key;
    r.template_name = (*t)->name();
    r.target_key = backend->target().Key();
    r.config_index = pick.index;
    r.config_json = (*t)->space().ToJson(pick);
    r.costs = {1e-5};
    r.flops = task.flops;
    // Faster, but measured on another card, and with a config no template here has: picking it
    // would leave the task untuned.
    tune::Record other = r;
    other.target_key = ops::CudaTarget("sm_80").Key();
    other.config_index = (*t)->space().size() + 1;
    other.costs = {1e-7};
    ASSERT_TRUE((*store)->Append({r, other}).ok());
    recorded += task.count;
  }
  CudaModelOptions o;
  o.records = store->get();
  auto model = CudaModel::Compile(m->graph, backend.get(), o);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->stats().tuned_kernels, recorded);
  ExpectMatchesReference(m->graph, model->get());
}

// The emulation runs the auxiliary kernels as host C++; NVRTC must also accept them as CUDA, in
// every variant the model emits (built for sm_90 without a GPU).
TEST(CudaModelTest, AuxiliaryAndFusedKernelsCompileWithNvrtc) {
  auto builder = tune::MakeNvrtcBuilder(Build(), "sm_90");
  if (builder.status().code() == absl::StatusCode::kUnimplemented) {
    GTEST_SKIP() << "built without the CUDA toolkit";
  }
  ASSERT_TRUE(builder.ok()) << builder.status();
  using A = ops::Epilogue::Activation;
  using graph::DType;
  std::vector<ops::KernelSource> sources;
  // An elementwise chain over broadcast operands: y = relu(x * s + b), with an int64 operand.
  {
    ops::ElementwiseProgram p;
    const int32_t x = p.AddInput(DType::kFloat32);
    const int32_t s = p.AddInput(DType::kFloat32);
    const int32_t i = p.AddInput(DType::kInt64);
    auto op = [&](ops::EwOp o, DType t, int32_t a, int32_t b = -1) {
      ops::EwInstr in;
      in.op = o;
      in.dtype = t;
      in.a = a;
      in.b = b;
      return p.Add(in);
    };
    const int32_t f = op(ops::EwOp::kCast, DType::kFloat32, i);
    p.AddOutput(
        op(ops::EwOp::kRelu, DType::kFloat32,
           op(ops::EwOp::kAdd, DType::kFloat32, op(ops::EwOp::kMul, DType::kFloat32, x, s), f)),
        DType::kFloat32);
    auto spec = ops::BroadcastSpec(p, {{2, 10, 50}, {10, 1}, {1, 1, 50}}, {2, 10, 50});
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto src = ops::EmitCudaElementwise(*spec, false);
    ASSERT_TRUE(src.ok()) << src.status();
    sources.push_back(*src);
  }
  for (bool max : {true, false}) {
    auto src = EmitCudaPool({.max = max,
                             .planes = 4,
                             .h = 9,
                             .w = 9,
                             .oh = 5,
                             .ow = 5,
                             .kh = 3,
                             .kw = 3,
                             .stride_h = 2,
                             .stride_w = 2,
                             .pad_top = 1,
                             .pad_left = 1},
                            false);
    ASSERT_TRUE(src.ok()) << src.status();
    sources.push_back(*src);
  }
  // Generated kernels of the lowering: concat, softmax, layer normalization, a reduction.
  {
    graph::Graph g;
    g.opset = 17;
    auto value = [&](const std::string& name, graph::Shape shape) {
      g.inputs.push_back({name, {DType::kFloat32, std::move(shape)}});
    };
    value("a", {2, 30});
    value("b", {2, 20});
    value("x", {4, 64});
    value("scale", {64});
    value("bias", {64});
    graph::Node cat = Op("Concat", {"a", "b"}, "cat");
    cat.attrs["axis"] = int64_t{1};
    graph::Node sm = Op("Softmax", {"x"}, "sm");
    sm.attrs["axis"] = int64_t{-1};
    graph::Node rm = Op("ReduceMean", {"x"}, "rm");
    rm.attrs["axes"] = std::vector<int64_t>{1};
    g.nodes = {cat, sm, Op("LayerNormalization", {"x", "scale", "bias"}, "ln"), rm};
    for (const char* out : {"cat", "sm", "ln", "rm"}) g.outputs.push_back({out, {}});
    ASSERT_TRUE(graph::InferShapes(g).ok());
    for (const graph::Node& n : g.nodes) {
      auto k = ops::LowerNodeCuda(g, n, ops::CudaTarget("sm_90"), false);
      ASSERT_TRUE(k.ok()) << n.op_type << ": " << k.status();
      sources.push_back(k->source);
    }
  }
  // The templates' kernels with fused epilogues: conv (residual), depthwise, dense.
  graph::Workload conv;
  conv.kind = graph::TaskKind::kConv2d;
  conv.n = 1, conv.c = 8, conv.h = conv.w = 14, conv.k = 16, conv.r = conv.s = 3;
  conv.pad_top = conv.pad_left = conv.pad_bottom = conv.pad_right = 1;
  conv.stride_h = conv.stride_w = conv.dilation_h = conv.dilation_w = conv.groups = 1;
  graph::Workload dw = conv;
  dw.kind = graph::TaskKind::kDepthwiseConv2d;
  dw.c = dw.k = dw.groups = 16;
  graph::Workload dense;
  dense.kind = graph::TaskKind::kDense;
  dense.m = 1, dense.n = 100, dense.k = 64;
  dense.trans_b = true;
  graph::Workload bmm;
  bmm.kind = graph::TaskKind::kBatchMatmul;
  bmm.b = 12, bmm.m = 64, bmm.n = 64, bmm.k = 32;
  bmm.trans_b = true;
  const std::pair<graph::Workload, A> fused[] = {
      {conv, A::kRelu}, {dw, A::kHardSwish}, {dense, A::kSigmoid}, {bmm, A::kNone}};
  for (const auto& [w, act] : fused) {
    auto t = ops::MakeTemplate(w, ops::CudaTarget("sm_90"));
    ASSERT_TRUE(t.ok()) << t.status();
    ops::Epilogue ep;
    ep.bias = true;
    ep.residual = w.kind == graph::TaskKind::kConv2d;
    ep.activation = act;
    if (act == A::kNone) {  // an elementwise program: y * 0.125 + residual
      ep.program = ops::ElementwiseProgram();
      const int32_t v = ep.program.AddInput(DType::kFloat32);
      ops::EwInstr mul;
      mul.op = ops::EwOp::kMul;
      mul.dtype = DType::kFloat32;
      mul.a = v;
      mul.b = ep.program.Const(DType::kFloat32, 0.125);
      ep.program.AddOutput(ep.program.Add(mul), DType::kFloat32);
    }
    auto src = (*t)->EmitFused((*t)->DefaultConfig(), ep);
    ASSERT_TRUE(src.ok()) << src.status();
    sources.push_back(*src);
  }
  for (const ops::KernelSource& src : sources) {
    EXPECT_THAT(src.code, HasSubstr("__global__"));
    const tune::BuildResult r = (*builder)->BuildSource(src, ops::Config{0});
    EXPECT_EQ(r.error, tune::ErrorKind::kNone) << r.error_msg << "\n" << src.code;
  }
}

// A replayed run (the launches captured once as a graph) gives the outputs of the launch-by-launch
// run, bit for bit, on the emulated backend and through the fake driver's graph API.
TEST(CudaModelTest, GraphReplayGivesTheLaunchByLaunchOutputs) {
  const graph::Graph g = MixedGraph();
  std::map<std::string, graph::Tensor> in = {{"x", Random({1, 8, 10, 10}, 5)}};
  auto emulated = Emulated();
  ASSERT_NE(emulated, nullptr);
  auto one_by_one = CudaModel::Compile(g, emulated.get(), {.graph_replay = false});
  ASSERT_TRUE(one_by_one.ok()) << one_by_one.status();
  auto want = (*one_by_one)->Run(in);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ((*one_by_one)->run_stats().graph_replays, 0);
  EXPECT_FALSE((*one_by_one)->run_stats().graph_captured);

  auto replayed = CudaModel::Compile(g, emulated.get());
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  for (int run = 0; run < 2; ++run) {
    auto got = (*replayed)->Run(in);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want->size());
    for (size_t i = 0; i < got->size(); ++i) EXPECT_TRUE(SameBits((*got)[i], (*want)[i])) << i;
  }
  EXPECT_TRUE((*replayed)->run_stats().graph_captured);
  EXPECT_EQ((*replayed)->run_stats().graph_replays, 2);

  // Through the driver: the first run captures (cuStreamBeginCapture .. cuGraphInstantiate) and
  // both runs are one cuGraphLaunch each, which runs every kernel; nothing is launched directly.
  auto device = FakeDevice();
  ASSERT_NE(device, nullptr);
  auto on_device = CudaModel::Compile(g, device.get());
  ASSERT_TRUE(on_device.ok()) << on_device.status();
  const int64_t launches = (*on_device)->stats().launches;
  EXPECT_EQ(launches, 9);
  const std::array<long long, 4> before = FakeCounters();
  ASSERT_GE(before[0], 0) << "no loom_fake_cuda_counters in " << LOOM_FAKE_LIBCUDA;
  for (int run = 0; run < 2; ++run) {
    auto got = (*on_device)->Run(in);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < got->size(); ++i) EXPECT_TRUE(SameBits((*got)[i], (*want)[i])) << i;
  }
  const std::array<long long, 4> after = FakeCounters();
  EXPECT_EQ(after[0] - before[0], 0);             // direct launches
  EXPECT_EQ(after[1] - before[1], 2);             // graph launches
  EXPECT_EQ(after[2] - before[2], 2 * launches);  // kernels the graphs ran
  EXPECT_EQ((*on_device)->run_stats().graph_replays, 2);
}

// A driver that cannot capture: the model launches its kernels one by one and says why.
TEST(CudaModelTest, WithoutGraphCaptureTheKernelsRunOneByOne) {
  FakeMode mode("no_graphs");
  const graph::Graph g = MixedGraph();
  auto device = FakeDevice();
  ASSERT_NE(device, nullptr);
  auto model = CudaModel::Compile(g, device.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const std::array<long long, 4> before = FakeCounters();
  ExpectMatchesReference(g, model->get());
  const std::array<long long, 4> after = FakeCounters();
  EXPECT_EQ(after[0] - before[0], 2 * (*model)->stats().launches);
  EXPECT_EQ(after[1] - before[1], 0);
  EXPECT_FALSE((*model)->run_stats().graph_captured);
  EXPECT_EQ((*model)->run_stats().graph_replays, 0);
  EXPECT_THAT((*model)->run_stats().graph_status, HasSubstr("CUDA_ERROR_NOT_SUPPORTED"));
}

// `loom compile --target cuda -o DIR` in the library: Export writes the kernel images, weights and
// plan; Load runs them (on the fake driver, and on the emulated backend: both take host-emulation
// images) with the compiled model's outputs, and refuses another architecture and damaged files.
TEST(CudaModelTest, GpuArtifactsRoundTripAndRefuseAnotherArchitecture) {
  const graph::Graph g = MixedGraph();
  std::map<std::string, graph::Tensor> in = {{"x", Random({1, 8, 10, 10}, 7)}};
  auto device = FakeDevice();
  ASSERT_NE(device, nullptr);
  auto model = CudaModel::Compile(g, device.get());
  ASSERT_TRUE(model.ok()) << model.status();
  auto want = (*model)->Run(in);
  ASSERT_TRUE(want.ok()) << want.status();
  const std::string dir = (std::filesystem::path(Build().cache_dir).parent_path() /
                           absl::StrCat("cuda_model_test_artifact_", getpid()))
                              .string();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE((*model)->Export(dir).ok());
  EXPECT_TRUE(IsCudaArtifactDir(dir));
  EXPECT_TRUE(std::filesystem::exists(dir + "/kernels/k0.so"));
  auto emulated = Emulated();
  ASSERT_NE(emulated, nullptr);
  for (CudaBackend* b : {device.get(), emulated.get()}) {
    auto loaded = CudaModel::Load(dir, b);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)->stats().launches, (*model)->stats().launches);
    EXPECT_EQ((*loaded)->inputs()[0].name, "x");
    auto got = (*loaded)->Run(in);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want->size());
    for (size_t i = 0; i < got->size(); ++i) EXPECT_TRUE(SameBits((*got)[i], (*want)[i])) << i;
    EXPECT_EQ((*loaded)->run_stats().graph_replays, 1);
  }
  {  // A GPU of another architecture (the fake device reports sm_80) refuses it in one line.
    FakeMode mode("sm_80");
    auto sm80 = FakeDevice();
    ASSERT_NE(sm80, nullptr);
    auto other = CudaModel::Load(dir, sm80.get());
    EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(other.status().message(), HasSubstr("compiled for sm_90 but the GPU is sm_80"));
    EXPECT_EQ(other.status().message().find('\n'), std::string_view::npos);
  }
  {  // A damaged kernel image is refused before anything is loaded.
    std::fstream f(dir + "/kernels/k0.so", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto damaged = CudaModel::Load(dir, device.get());
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(damaged.status().message(), HasSubstr("k0.so is corrupt"));
  std::filesystem::remove(dir + "/kernels/k0.so");
  EXPECT_EQ(CudaModel::Load(dir, device.get()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CudaModel::Load(dir + "/nothing", device.get()).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

// A chain whose operands arrive after its first instructions (a transformer's dense + bias Add +
// residual Add; a standalone Sigmoid then Mul): programs number inputs first, so the chain's
// values move up when an operand joins. Fused, then against the reference.
TEST(CudaModelTest, ChainOperandsMayJoinAfterInstructions) {
  graph::Graph g;
  g.inputs = {{"x", {graph::DType::kFloat32, {1, 16, 32}}},
              {"r", {graph::DType::kFloat32, {1, 16, 24}}},
              {"s", {graph::DType::kFloat32, {1, 16, 24}}}};
  g.outputs = {{"y", {graph::DType::kFloat32, {1, 16, 24}}},
               {"z", {graph::DType::kFloat32, {1, 16, 24}}}};
  g.initializers["w"] = Random({32, 24}, 11);
  g.initializers["b"] = Random({24}, 12);
  g.nodes = {Op("MatMul", {"x", "w"}, "mm"), Op("Add", {"b", "mm"}, "a"),
             Op("Add", {"a", "r"}, "y"), Op("Sigmoid", {"s"}, "sg"), Op("Mul", {"sg", "r"}, "z")};
  ASSERT_TRUE(graph::InferShapes(g).ok());
  auto backend = Emulated();
  ASSERT_NE(backend, nullptr);
  auto model = CudaModel::Compile(g, backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->stats().kernel_steps, 1);
  EXPECT_EQ((*model)->stats().elementwise_steps, 1);
  EXPECT_EQ((*model)->stats().fused_ops, 3);  // both Adds into dense_cuda, the Mul after Sigmoid
  EXPECT_EQ((*model)->stats().launches, 2);
  ExpectMatchesReference(g, model->get());
}

TEST(CudaModelTest, BadInputsAreErrors) {
  ZooCompiled z = CompileZoo("tiny_cnn");
  ASSERT_NE(z.model, nullptr);
  const std::string name = z.graph.inputs[0].name;
  auto none = z.model->Run({});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  auto wrong = z.model->Run({{name, Random({1, 3, 16, 16}, 1)}});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("expected float32 [1,3,32,32]"));
  EXPECT_EQ(CudaModel::Compile(z.graph, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaModelTest, TheEmulatedBackendNeedsACudaTarget) {
  auto b = MakeEmulatedCudaBackend(ops::HostCpuTarget(), Build());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
}

// Without a driver the device backend says so in one line (CI hosts have no GPU).
TEST(CudaModelTest, DeviceBackendWithoutADriverIsUnavailable) {
  CudaDeviceOptions o;
  o.build = Build();
  o.driver_library = "/nonexistent/libcuda.so.1";
  auto missing = MakeCudaDeviceBackend(o);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/libcuda.so.1"));
  // libcuda.so.1 from the library path: once a test of this process loaded the fake driver, the
  // dynamic linker hands that back for the name.
  if (FakeCounters()[0] >= 0) return;
  auto b = MakeCudaDeviceBackend(0, Build());
  if (b.ok()) GTEST_SKIP() << "this host has a CUDA device";
  EXPECT_TRUE(b.status().code() == absl::StatusCode::kUnavailable ||
              b.status().code() == absl::StatusCode::kUnimplemented)
      << b.status();
}

}  // namespace
}  // namespace loom::runtime
