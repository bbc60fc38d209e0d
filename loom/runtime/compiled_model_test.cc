#include "loom/runtime/compiled_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "loom/runtime/reference_executor.h"

namespace loom::runtime {
namespace {

using ::testing::HasSubstr;

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string();
}

CompileOptions Options(int32_t threads) {
  CompileOptions o;
  o.num_threads = threads;
  o.build.num_threads = 2;
  o.build.cache_dir = BuildDir() + "/compiled_model_test_kernels";
  return o;
}

graph::Tensor RandomInput(const graph::Shape& shape, uint64_t seed) {
  graph::Tensor t(graph::DType::kFloat32, shape);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : t.values<float>()) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    v = static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return t;
}

// max|a-b| <= 1e-3 * max|ref| over every output.
void ExpectClose(const std::vector<graph::Tensor>& got, const std::vector<graph::Tensor>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].shape(), want[i].shape()) << what;
    double err = 0, ref = 0;
    const float* a = got[i].data<float>();
    const float* b = want[i].data<float>();
    for (int64_t k = 0; k < got[i].num_elements(); ++k) {
      err = std::max(err, static_cast<double>(std::fabs(a[k] - b[k])));
      ref = std::max(ref, static_cast<double>(std::fabs(b[k])));
    }
    EXPECT_GT(ref, 0) << what;
    EXPECT_LE(err, 1e-3 * ref) << what << " output " << i << ": max|a-b| " << err << " max|ref| "
                               << ref;
  }
}

struct Case {
  graph::Graph graph;
  std::map<std::string, graph::Tensor> inputs;
  std::vector<graph::Tensor> expected;
};

Case MakeCase(const graph::Graph& g, std::map<std::string, graph::Tensor> inputs) {
  Case c;
  c.graph = g;
  c.inputs = std::move(inputs);
  auto ex = ReferenceExecutor::Create(g);
  EXPECT_TRUE(ex.ok()) << ex.status();
  auto out = ex->Run(c.inputs);
  EXPECT_TRUE(out.ok()) << out.status();
  c.expected = *out;
  return c;
}

Case ZooCase(const std::string& name) {
  auto m = frontend::LoadModel(absl::StrCat("zoo:", name));
  EXPECT_TRUE(m.ok()) << m.status();
  std::map<std::string, graph::Tensor> in;
  for (const graph::ValueInfo& v : m->graph.inputs) in[v.name] = RandomInput(v.type.shape, 7);
  return MakeCase(m->graph, std::move(in));
}

void CheckCompiled(const Case& c, const CompileOptions& o, const std::string& what,
                   CompileStats* stats_out = nullptr) {
  auto cm = CompiledModel::Compile(c.graph, o);
  ASSERT_TRUE(cm.ok()) << what << ": " << cm.status();
  const CompileStats& st = (*cm)->stats();
  EXPECT_GT(st.kernel_steps, 0) << what;
  EXPECT_GT(st.arena_bytes, 0) << what;
  EXPECT_LE(st.arena_bytes, st.intermediate_bytes) << what;
  auto out = (*cm)->Run(c.inputs);
  ASSERT_TRUE(out.ok()) << what << ": " << out.status();
  ExpectClose(*out, c.expected, what);
  // A second run reuses the arena (pads must be rewritten, stale data must not leak through).
  auto again = (*cm)->Run(c.inputs);
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectClose(*again, c.expected, what + " (second run)");
  if (stats_out != nullptr) *stats_out = st;
}

TEST(CompiledModelTest, EmptyEpilogueEmitsExactlyTheTuningKernel) {
  graph::Workload conv;
  conv.kind = graph::TaskKind::kConv2d;
  conv.n = 1, conv.c = 16, conv.h = 8, conv.w = 8, conv.k = 32, conv.r = 3, conv.s = 3;
  conv.stride_h = conv.stride_w = 1;
  conv.pad_top = conv.pad_left = conv.pad_bottom = conv.pad_right = 1;
  conv.dilation_h = conv.dilation_w = 1;
  conv.groups = 1;
  graph::Workload dw = conv;
  dw.kind = graph::TaskKind::kDepthwiseConv2d;
  dw.k = 16;
  dw.groups = 16;
  graph::Workload dense;
  dense.kind = graph::TaskKind::kDense;
  dense.m = 1, dense.n = 100, dense.k = 64;
  dense.trans_b = true;
  for (const graph::Workload& w : {conv, dw, dense}) {
    auto t = ops::MakeTemplate(w, ops::HostCpuTarget());
    ASSERT_TRUE(t.ok()) << t.status();
    const ops::Config c = (*t)->DefaultConfig();
    auto plain = (*t)->Emit(c);
    auto fused = (*t)->EmitFused(c, ops::Epilogue{});
    ASSERT_TRUE(plain.ok() && fused.ok());
    EXPECT_EQ(plain->code, fused->code) << graph::WorkloadKey(w);
    EXPECT_EQ((*t)->FusedBuffers(c, ops::Epilogue{}).size(), 3u);
    ops::Epilogue full;
    full.bias = true;
    full.activation = ops::Epilogue::Activation::kRelu;
    auto f = (*t)->EmitFused(c, full);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_THAT(f->code, HasSubstr("loom_ew_relu"));
    EXPECT_EQ((*t)->FusedBuffers(c, full)[2].name, "bias");
  }
  // A malformed program (two outputs) is refused by every template.
  auto t = ops::MakeTemplate(dense, ops::HostCpuTarget());
  ops::Epilogue bad;
  const int32_t x = bad.program.AddInput(graph::DType::kFloat32);
  ops::EwInstr neg;
  neg.op = ops::EwOp::kNeg;
  neg.a = x;
  const int32_t y = bad.program.Add(neg);
  bad.program.AddOutput(y, graph::DType::kFloat32);
  bad.program.AddOutput(x, graph::DType::kFloat32);
  auto st = (*t)->EmitFused((*t)->DefaultConfig(), bad);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.status().message(), HasSubstr("one output"));
}

TEST(CompiledModelTest, ZooModelsMatchReferenceUntuned) {
  for (const char* name : {"tiny_cnn", "resnet18", "mobilenet_v2", "vgg11"}) {
    SCOPED_TRACE(name);
    Case c = ZooCase(name);
    CompileStats st;
    CheckCompiled(c, Options(1), absl::StrCat(name, " 1 thread"), &st);
    CheckCompiled(c, Options(2), absl::StrCat(name, " 2 threads"));
    EXPECT_EQ(st.tuned_kernels, 0);
    if (std::string(name) != "tiny_cnn") {
      EXPECT_GT(st.fused_ops, 0) << name;
      EXPECT_LT(st.arena_bytes, st.intermediate_bytes) << name;
    }
  }
}

// A successful record of `config` for `task` on `target`, one run of `seconds`.
tune::Record RecordOf(const graph::Task& task, const ops::Template& t, const ops::Target& target,
                      const ops::Config& config, double seconds) {
  tune::Record r;
  r.task_key = task.key;
  r.template_name = t.name();
  r.target_key = target.Key();
  r.config_index = config.index;
  r.config_json = t.space().ToJson(config);
  r.costs = {seconds};
  r.flops = task.flops;
  return r;
}

TEST(CompiledModelTest, RecordsPickNonDefaultConfigs) {
  auto store = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(store.ok()) << store.status();
  const ops::Target target = ops::HostCpuTarget();
  for (const char* name : {"tiny_cnn", "mobilenet_v2"}) {
    SCOPED_TRACE(name);
    Case c = ZooCase(name);
    auto tasks = graph::ExtractTasks(c.graph);
    ASSERT_TRUE(tasks.ok());
    int64_t recorded_nodes = 0;
    uint64_t seed = 11;
    for (const graph::Task& task : *tasks) {
      auto t = ops::MakeTemplate(task.workload, target);
      if (!t.ok()) continue;
      const ops::Config def = (*t)->DefaultConfig();
      // A non-default config that instantiates, chosen pseudo-randomly.
      ops::Config pick = def;
      for (int tries = 0; tries < 200; ++tries) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ops::Config cand{
            static_cast<int64_t>((seed >> 17) % static_cast<uint64_t>((*t)->space().size()))};
        if (!(cand == def) && (*t)->Emit(cand).ok()) {
          pick = cand;
          break;
        }
      }
      ASSERT_FALSE(pick == def) << task.key;
      ASSERT_TRUE((*store)->Append({RecordOf(task, **t, target, pick, 1e-3)}).ok());
      recorded_nodes += task.count;
    }
    CompileOptions o = Options(2);
    o.records = store->get();
    CompileStats st;
    CheckCompiled(c, o, absl::StrCat(name, " tuned"), &st);
    EXPECT_EQ(st.tuned_kernels, recorded_nodes);
  }
}

// A config measured 1 us faster than the default (0.1% of its 1 ms) but reading another input
// block than its producer writes would need a repack before it (at least 7x7x160 elements here),
// which costs more than it gains: the plan keeps the default, adapted to the producer, and has no
// more layout steps than the untuned plan. A config measured far faster is worth the repack.
TEST(CompiledModelTest, RecordsWeighTheRepackAConfigAdds) {
  Case c = ZooCase("mobilenet_v2");
  const ops::Target target = ops::HostCpuTarget();
  CompileStats untuned;
  CheckCompiled(c, Options(1), "untuned", &untuned);
  auto tasks = graph::ExtractTasks(c.graph);
  ASSERT_TRUE(tasks.ok());
  for (const double other_seconds : {0.999e-3, 1e-6}) {
    SCOPED_TRACE(other_seconds);
    auto store = tune::OpenSqliteRecordStore(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    int64_t recorded_nodes = 0;
    int64_t tasks_with_other = 0;
    for (const graph::Task& task : *tasks) {
      auto t = ops::MakeTemplate(task.workload, target);
      if (!t.ok()) continue;
      const ops::Config def = (*t)->DefaultConfig();
      const std::vector<ops::BufferSpec> def_buffers = (*t)->Buffers(def);
      auto record = [&](const ops::Config& config, double seconds) {
        ASSERT_TRUE((*store)->Append({RecordOf(task, **t, target, config, seconds)}).ok());
      };
      record(def, 1e-3);
      recorded_nodes += task.count;
      if (def_buffers.front().shape.size() != 5) continue;  // not a blocked convolution
      // The first config that reads another input block and writes the default's output block.
      for (int64_t i = 0; i < (*t)->space().size(); ++i) {
        const ops::Config other{i};
        const std::vector<ops::BufferSpec> b = (*t)->Buffers(other);
        if (b.front().shape[4] != def_buffers.front().shape[4] &&
            b.back().shape[4] == def_buffers.back().shape[4] && (*t)->Emit(other).ok()) {
          record(other, other_seconds);
          ++tasks_with_other;
          break;
        }
      }
    }
    ASSERT_GT(tasks_with_other, 5);
    CompileOptions o = Options(1);
    o.records = store->get();
    CompileStats st;
    CheckCompiled(c, o, "tuned", &st);
    EXPECT_EQ(st.tuned_kernels, recorded_nodes);
    if (other_seconds > 1e-4) {
      EXPECT_EQ(st.layout_steps, untuned.layout_steps);
    } else {
      EXPECT_GT(st.layout_steps, untuned.layout_steps);
    }
  }
}

TEST(CompiledModelTest, UnfusedMatchesToo) {
  Case c = ZooCase("resnet18");
  CompileOptions o = Options(1);
  o.fuse = false;
  CompileStats st;
  CheckCompiled(c, o, "resnet18 unfused", &st);
  EXPECT_EQ(st.fused_ops, 0);
  EXPECT_GT(st.blocked_steps, 0);
}

TEST(CompiledModelTest, Errors) {
  auto m = frontend::LoadModel("zoo:tiny_cnn");
  ASSERT_TRUE(m.ok());
  auto bad = CompiledModel::Compile(m->graph, Options(0));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("num_threads"));
  auto cm = CompiledModel::Compile(m->graph, Options(1));
  ASSERT_TRUE(cm.ok()) << cm.status();
  auto none = (*cm)->Run({});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("missing input"));
  auto wrong = (*cm)->Run({{m->graph.inputs[0].name, RandomInput({1, 3, 5, 5}, 1)}});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("compiled for"));
  std::vector<StepTiming> timings;
  auto ok = (*cm)->RunProfiled(
      {{m->graph.inputs[0].name, RandomInput(m->graph.inputs[0].type.shape, 3)}}, &timings);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_FALSE(timings.empty());
  EXPECT_THAT((*cm)->DescribePlan(), HasSubstr("conv2d_nchwc"));
}

// A MatMul whose A is a 2-D Transpose reads the Transpose's input in place (dense with trans_a,
// as graph::AnalyzeTunableNode decides for the tasks too), and so does Gemm with transA: both
// match the reference executor.
TEST(CompiledModelTest, TransposedMatMulOperandsAreReadInPlace) {
  graph::Graph g;
  g.inputs.push_back({"x", {graph::DType::kFloat32, {24, 13}}});
  g.initializers["w"] = RandomInput({24, 37}, 3);
  g.initializers["wt"] = RandomInput({37, 24}, 4);
  graph::Node t;
  t.name = "t";
  t.op_type = "Transpose";
  t.inputs = {"x"};
  t.outputs = {"xt"};
  t.attrs["perm"] = std::vector<int64_t>{1, 0};
  graph::Node mm;
  mm.name = "mm";
  mm.op_type = "MatMul";
  mm.inputs = {"xt", "w"};
  mm.outputs = {"y"};
  graph::Node gemm;
  gemm.name = "gemm";
  gemm.op_type = "Gemm";
  gemm.inputs = {"x", "wt"};
  gemm.outputs = {"z"};
  gemm.attrs["transA"] = int64_t{1};
  gemm.attrs["transB"] = int64_t{1};
  g.nodes = {t, mm, gemm};
  g.outputs = {{"y", {}}, {"z", {}}};
  ASSERT_TRUE(graph::InferShapes(g).ok());
  auto analysed = graph::AnalyzeTunableNode(g, g.nodes[1]);
  ASSERT_TRUE(analysed.ok());
  EXPECT_EQ(graph::WorkloadKey(analysed->workload), "dense:f32:m13_n37_k24_tb0_ta1");
  const Case c = MakeCase(g, {{"x", RandomInput({24, 13}, 5)}});
  auto cm = CompiledModel::Compile(c.graph, Options(2));
  ASSERT_TRUE(cm.ok()) << cm.status();
  EXPECT_EQ((*cm)->stats().kernel_steps, 2);
  auto out = (*cm)->Run(c.inputs);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectClose(*out, c.expected, "transposed operands");
}

TEST(CompiledModelTest, AttentionProductsRunOnTheBatchMatmulTemplate) {
  // Attention's two activation products: Q K^T (K given transposed), scaled and masked, then
  // Softmax and P V with V broadcast over the first batch dim. Both run on batch_matmul kernels,
  // the scale and the element mask fused into the first; nothing runs on a reference kernel.
  graph::Graph g;
  g.inputs.push_back({"q", {graph::DType::kFloat32, {2, 3, 5, 8}}});
  g.inputs.push_back({"kt", {graph::DType::kFloat32, {2, 3, 8, 5}}});
  g.inputs.push_back({"mask", {graph::DType::kFloat32, {2, 3, 5, 5}}});
  g.inputs.push_back({"v", {graph::DType::kFloat32, {3, 5, 8}}});
  graph::Tensor scale(graph::DType::kFloat32, {});
  scale.data<float>()[0] = 0.125f;
  g.initializers["scale"] = scale;
  auto node = [](const std::string& name, const std::string& op, std::vector<std::string> in,
                 const std::string& out) {
    graph::Node n;
    n.name = name;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {out};
    return n;
  };
  g.nodes = {node("qk", "MatMul", {"q", "kt"}, "s"), node("scaled", "Mul", {"s", "scale"}, "ss"),
             node("masked", "Add", {"ss", "mask"}, "sm"), node("sm", "Softmax", {"sm"}, "p"),
             node("pv", "MatMul", {"p", "v"}, "y")};
  g.nodes[3].attrs["axis"] = int64_t{-1};
  g.outputs = {{"y", {}}};
  ASSERT_TRUE(graph::InferShapes(g).ok());
  const Case c = MakeCase(g, {{"q", RandomInput({2, 3, 5, 8}, 11)},
                              {"kt", RandomInput({2, 3, 8, 5}, 12)},
                              {"mask", RandomInput({2, 3, 5, 5}, 13)},
                              {"v", RandomInput({3, 5, 8}, 14)}});
  for (int32_t threads : {1, 2}) {
    auto cm = CompiledModel::Compile(c.graph, Options(threads));
    ASSERT_TRUE(cm.ok()) << cm.status();
    std::vector<StepTiming> steps;
    auto out = (*cm)->RunProfiled(c.inputs, &steps);
    ASSERT_TRUE(out.ok()) << out.status();
    ExpectClose(*out, c.expected, absl::StrCat("attention, ", threads, " threads"));
    std::map<std::string, std::string> kinds;
    for (const StepTiming& st : steps) kinds[st.name] = st.kind;
    EXPECT_EQ(kinds["qk"], "batch_matmul+Mul+Add") << (*cm)->DescribePlan();
    EXPECT_EQ(kinds["pv"], "batch_matmul") << (*cm)->DescribePlan();
    for (const StepTiming& st : steps) {
      EXPECT_NE(st.kind.rfind("ref:", 0), 0u) << st.kind << " " << st.name;
    }
  }
}

}  // namespace
}  // namespace loom::runtime
