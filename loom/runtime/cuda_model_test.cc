// CudaModel on the host emulation of a GPU: the same CUDA sources the GPU would run (templates
// and the auxiliary kernels), printed as host C++ and run on the CPU, checked against the
// reference executor. What is left for a GPU is the driver and NVRTC, which the measurer's tests
// and scripts/gpu-check.sh cover.
#include "loom/runtime/cuda_model.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/graph/npy.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/shared_models.h"
#include "loom/ops/template.h"
#include "loom/runtime/cuda_aux_kernels.h"
#include "loom/runtime/model_loader.h"
#include "loom/runtime/reference_executor.h"
#include "loom/tune/nvrtc_builder.h"
#include "loom/tune/record_store.h"

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

// A zoo model compiled on the emulated backend; `model` is null (with a test failure) on error.
struct ZooCompiled {
  graph::Graph graph;
  std::unique_ptr<CudaBackend> backend;
  std::unique_ptr<CudaModel> model;
};
ZooCompiled CompileZoo(const std::string& name, tune::RecordStore* records = nullptr) {
  ZooCompiled z;
  auto m = LoadModel(absl::StrCat("zoo:", name));
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

// Every kind of step the CUDA model has: conv + bias + ReLU6 (fused), a depthwise conv, Add of a
// per-channel constant, max pooling with padding, average pooling, a concat, a sigmoid, global
// pooling, a view, a dense layer with bias, and Softmax, which runs on the host.
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
  EXPECT_EQ(st.fused_ops, 1);   // the Clip after the conv
  EXPECT_EQ(st.views, 1);       // Flatten
  EXPECT_EQ(st.host_steps, 1);  // Softmax
  // The Add, two pools, two concat slices, Sigmoid, the global pool (the conv's bias and Clip and
  // the Gemm's bias are in their kernels).
  EXPECT_EQ(st.aux_steps, 7);
  EXPECT_GT(st.device_bytes, 0);
  ExpectMatchesReference(g, model->get());
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

// The torchvision exports in LOOM_SHARED_DIR/models (ResNet-18, MobileNetV2, SqueezeNet 1.1, as
// a user would hand them to `loom bench --target cuda`) on their own input, against ONNX Runtime's
// output: every op of the files has a device kernel (no host step).
TEST(CudaModelTest, SharedModelsMatchOnnxRuntime) {
  const std::vector<std::string> models = graph::SharedModelNames();
  if (models.empty()) GTEST_SKIP() << "LOOM_SHARED_DIR/models is absent";
  for (const std::string& name : models) {
    SCOPED_TRACE(name);
    const std::string dir = graph::UnpackSharedModel(name);
    ASSERT_FALSE(dir.empty()) << "cannot unpack " << name;
    const std::string prefix = absl::StrCat(dir, "/", name);
    auto m = LoadModel(prefix + ".onnx");
    ASSERT_TRUE(m.ok()) << m.status();
    auto input = graph::ReadNpy(prefix + ".input.npy");
    auto want = graph::ReadNpy(prefix + ".ort_output.npy");
    ASSERT_TRUE(input.ok() && want.ok()) << input.status() << want.status();
    auto backend = Emulated();
    ASSERT_NE(backend, nullptr);
    auto model = CudaModel::Compile(m->graph, backend.get());
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->stats().host_steps, 0);
    auto got = (*model)->Run({{m->graph.inputs[0].name, *input}});
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), 1u);
    ASSERT_EQ((*got)[0].num_elements(), want->num_elements());
    double err = 0, mag = 0;
    for (int64_t k = 0; k < want->num_elements(); ++k) {
      const float a = (*got)[0].data<float>()[k], b = want->data<float>()[k];
      err = std::max(err, static_cast<double>(std::fabs(a - b)));
      mag = std::max(mag, static_cast<double>(std::fabs(b)));
    }
    // ONNX Runtime sums in another order: agreement to 1e-4 of the output's magnitude.
    EXPECT_LE(err, 1e-4 * mag) << "max abs err " << err << ", max |output| " << mag;
  }
}

// A record for the target picks its config; records of another target or template do not.
TEST(CudaModelTest, RecordsOfTheTargetPickTheKernelConfig) {
  auto m = LoadModel("zoo:tiny_cnn");
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
  std::vector<ops::KernelSource> sources;
  for (A act : {A::kNone, A::kRelu, A::kClip, A::kSigmoid, A::kHardSwish}) {
    ops::Epilogue ep;
    ep.activation = act;
    ep.clip_min = 0.0f;
    ep.clip_max = 6.0f;
    ep.bias = act != A::kSigmoid;
    ep.residual = act == A::kRelu || act == A::kNone;
    auto src = EmitCudaEltwise({.total = 1000, .channels = 10, .inner = 10, .epilogue = ep}, false);
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
  auto slice = EmitCudaSlice({.outer = 2, .in_len = 30, .out_len = 50, .offset = 20}, false);
  ASSERT_TRUE(slice.ok()) << slice.status();
  sources.push_back(*slice);
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
  const std::pair<graph::Workload, A> fused[] = {
      {conv, A::kRelu}, {dw, A::kHardSwish}, {dense, A::kSigmoid}};
  for (const auto& [w, act] : fused) {
    auto t = ops::MakeTemplate(w, ops::CudaTarget("sm_90"));
    ASSERT_TRUE(t.ok()) << t.status();
    ops::Epilogue ep;
    ep.bias = true;
    ep.residual = w.kind == graph::TaskKind::kConv2d;
    ep.activation = act;
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
  auto b = MakeCudaDeviceBackend(0, Build());
  if (b.ok()) GTEST_SKIP() << "this host has a CUDA device";
  EXPECT_TRUE(b.status().code() == absl::StatusCode::kUnavailable ||
              b.status().code() == absl::StatusCode::kUnimplemented)
      << b.status();
}

}  // namespace
}  // namespace loom::runtime
