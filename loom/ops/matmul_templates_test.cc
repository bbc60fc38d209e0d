// Differential tests of the matrix templates (dense_pack, batch_matmul) beyond the sampled configs
// of templates_test.cc: graphs of MatMul / Gemm / Transpose nodes whose tunable node is analysed
// (graph::AnalyzeTunableNode) and run on its template with the operands the analysis names,
// against the reference operators run node by node; fused epilogues on every panel shape; the
// parallel axis ForThreads picks; and the default configs of transformer shapes.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/base/thread_pool.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/node_builder.h"
#include "loom/graph/testing/workloads.h"
#include "loom/kernels/reference.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/matmul_common.h"
#include "loom/ops/template.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using ::testing::HasSubstr;

using graph::testing::BatchMatmulWorkload;
using graph::testing::DenseWorkload;
using graph::testing::MakeNode;
using testutil::TempDir;

graph::Tensor Random(const graph::Shape& shape, base::Rng& rng) {
  graph::Tensor t(graph::DType::kFloat32, shape);
  for (float& v : t.values<float>()) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
  return t;
}

graph::AttrValue Perm(std::vector<int64_t> p) { return p; }

// A graph's inputs with random values; its nodes run by the reference kernels.
struct ProductGraph {
  std::string label;
  graph::Graph graph;
  std::string product;  // the node whose template is checked
};

std::vector<ProductGraph> ProductGraphs() {
  using graph::DType;
  using graph::Graph;
  std::vector<ProductGraph> out;
  auto make = [&](std::string label, std::vector<std::pair<std::string, graph::Shape>> inputs,
                  std::vector<std::pair<std::string, graph::Shape>> weights,
                  std::vector<graph::Node> nodes) {
    ProductGraph p;
    p.label = std::move(label);
    base::Rng rng(out.size() + 11);
    for (auto& [name, shape] : inputs) p.graph.inputs.push_back({name, {DType::kFloat32, shape}});
    for (auto& [name, shape] : weights) p.graph.initializers[name] = Random(shape, rng);
    p.product = nodes.back().name;
    p.graph.outputs.push_back({nodes.back().outputs[0], {}});
    p.graph.nodes = std::move(nodes);
    out.push_back(std::move(p));
  };
  // Attention's Q K^T with K^T a Transpose read in place, odd sizes (a narrow last panel).
  make("qk_trans_b", {{"q", {2, 3, 13, 8}}, {"k", {2, 3, 37, 8}}}, {},
       {MakeNode("t", "Transpose", {"k"}, {"kt"}, {{"perm", Perm({0, 1, 3, 2})}}),
        MakeNode("mm", "MatMul", {"q", "kt"}, {"y"})});
  // Attention's P V: both activations, row-major.
  make("pv", {{"p", {2, 3, 13, 37}}, {"v", {2, 3, 37, 20}}}, {},
       {MakeNode("mm", "MatMul", {"p", "v"}, {"y"})});
  // A transposed A, and both transposed, K longer than a K block.
  make("trans_a", {{"a", {3, 70, 9}}, {"b", {3, 70, 21}}}, {},
       {MakeNode("t", "Transpose", {"a"}, {"at"}, {{"perm", Perm({0, 2, 1})}}),
        MakeNode("mm", "MatMul", {"at", "b"}, {"y"})});
  make("trans_a_trans_b", {{"a", {2, 300, 9}}, {"b", {2, 17, 300}}}, {},
       {MakeNode("ta", "Transpose", {"a"}, {"at"}, {{"perm", Perm({0, 2, 1})}}),
        MakeNode("tb", "Transpose", {"b"}, {"bt"}, {{"perm", Perm({0, 2, 1})}}),
        MakeNode("mm", "MatMul", {"at", "bt"}, {"y"})});
  // Broadcast batch dims: a shared A; each operand broadcasting a different dim; a dim only A
  // holds folded into M; a vector A.
  make("shared_a", {{"a", {5, 8}}, {"b", {3, 8, 19}}}, {},
       {MakeNode("mm", "MatMul", {"a", "b"}, {"y"})});
  make("cross_broadcast", {{"a", {2, 1, 5, 8}}, {"b", {1, 3, 8, 6}}}, {},
       {MakeNode("mm", "MatMul", {"a", "b"}, {"y"})});
  make("cross_broadcast_trans_b", {{"a", {2, 1, 5, 8}}, {"b", {1, 3, 6, 8}}}, {},
       {MakeNode("t", "Transpose", {"b"}, {"bt"}, {{"perm", Perm({0, 1, 3, 2})}}),
        MakeNode("mm", "MatMul", {"a", "bt"}, {"y"})});
  make("fold_into_m", {{"a", {4, 3, 5, 8}}, {"b", {4, 1, 8, 6}}}, {},
       {MakeNode("mm", "MatMul", {"a", "b"}, {"y"})});
  make("vector_a", {{"a", {8}}, {"b", {3, 8, 19}}}, {},
       {MakeNode("mm", "MatMul", {"a", "b"}, {"y"})});
  // Gemm with an activation B, transposed operands by attribute.
  make("gemm_activation", {{"a", {30, 7}}, {"b", {45, 30}}}, {},
       {MakeNode("mm", "Gemm", {"a", "b"}, {"y"},
                 {{"transA", int64_t{1}}, {"transB", int64_t{1}}})});
  // Dense: a rank-3 activation times a weight (leading dims fold into M), a transposed 2-D
  // activation, Gemm transA with transB.
  make("dense_rank3", {{"x", {2, 7, 40}}}, {{"w", {40, 37}}},
       {MakeNode("mm", "MatMul", {"x", "w"}, {"y"})});
  make("dense_trans_a", {{"x", {40, 11}}}, {{"w", {40, 37}}},
       {MakeNode("t", "Transpose", {"x"}, {"xt"}, {{"perm", Perm({1, 0})}}),
        MakeNode("mm", "MatMul", {"xt", "w"}, {"y"})});
  make("gemm_dense_trans_a_b", {{"x", {40, 11}}}, {{"w", {37, 40}}},
       {MakeNode("mm", "Gemm", {"x", "w"}, {"y"},
                 {{"transA", int64_t{1}}, {"transB", int64_t{1}}})});
  return out;
}

TEST(MatmulTemplatesTest, AnalysedProductsMatchTheReferenceOperators) {
  TempDir dir;
  const Target target = HostCpuTarget();
  struct Job {
    std::string label;
    std::shared_ptr<Template> tmpl;
    Config config;
    std::vector<graph::Tensor> natural;
    graph::Tensor want;
  };
  std::vector<Job> jobs;
  for (ProductGraph& p : ProductGraphs()) {
    SCOPED_TRACE(p.label);
    ASSERT_TRUE(graph::InferShapes(p.graph).ok());
    // Values: inputs random, then every node by its reference kernel.
    std::map<std::string, graph::Tensor> values;
    base::Rng rng(7);
    for (const auto& in : p.graph.inputs) values[in.name] = Random(in.type.shape, rng);
    for (const auto& [name, t] : p.graph.initializers) values[name] = t;
    const graph::Node* product = nullptr;
    for (const graph::Node& n : p.graph.nodes) {
      std::vector<graph::Tensor> in;
      for (const std::string& v : n.inputs) in.push_back(values.at(v));
      auto outs = kernels::EvaluateNode(n, p.graph.opset, in);
      ASSERT_TRUE(outs.ok()) << outs.status();
      values[n.outputs[0]] = (*outs)[0];
      if (n.name == p.product) product = &n;
    }
    ASSERT_NE(product, nullptr);
    auto nw = graph::AnalyzeTunableNode(p.graph, *product);
    ASSERT_TRUE(nw.ok()) << nw.status();
    // Every Transpose of these graphs feeds the product alone: all are read in place.
    int64_t transposes = 0;
    for (const graph::Node& n : p.graph.nodes) transposes += n.op_type == "Transpose";
    EXPECT_EQ(static_cast<int64_t>(nw->absorbed.size()), transposes);
    auto t = MakeTemplate(nw->workload, target);
    ASSERT_TRUE(t.ok()) << t.status();
    std::shared_ptr<Template> tmpl = std::move(*t);
    const std::vector<graph::Tensor> natural = {values.at(nw->a), values.at(nw->b)};
    const std::vector<graph::Shape> shapes = tmpl->NaturalInputShapes();
    ASSERT_EQ(natural[0].num_elements(), graph::NumElements(shapes[0]));
    ASSERT_EQ(natural[1].num_elements(), graph::NumElements(shapes[1]));
    // The initial configs and seeded random valid ones.
    std::vector<Config> configs = tmpl->InitialConfigs();
    base::Rng pick(3);
    for (int tries = 0; configs.size() < 5 && tries < 500; ++tries) {
      const Config c{pick.UniformInt(0, tmpl->space().size() - 1)};
      if (tmpl->space().IsValid(c)) configs.push_back(c);
    }
    for (const Config& c : configs) {
      jobs.push_back({absl::StrCat(p.label, " ", graph::WorkloadKey(nw->workload), " ",
                                   tmpl->space().ToJson(c)),
                      tmpl, c, natural, values.at(product->outputs[0])});
    }
  }
  // Compile and run on two threads.
  base::ThreadPool pool(2);
  std::vector<std::future<std::string>> results;
  for (const Job& j : jobs) {
    results.push_back(pool.Submit([&j, &dir]() -> std::string {
      absl::StatusOr<KernelSource> src = j.tmpl->Emit(j.config);
      if (!src.ok()) return src.status().ToString();
      absl::StatusOr<std::unique_ptr<LocalKernel>> kernel = LocalKernel::Compile(*src, dir.path());
      if (!kernel.ok()) return kernel.status().ToString();
      const graph::Tensor got = RunOnce(*j.tmpl, j.config, **kernel, j.natural);
      if (got.num_elements() != j.want.num_elements()) return "wrong element count";
      const ErrorStats e = CompareTensors(got, j.want);
      return e.WithinTolerance() ? "" : absl::StrCat("max abs err ", e.max_abs_err);
    }));
  }
  for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(results[i].get(), "") << jobs[i].label;
}

// `config` with the named knobs set (others as in `base`).
Config With(const Template& t, const Config& base,
            const std::vector<std::pair<std::string, int64_t>>& knobs) {
  std::vector<int64_t> choices = t.space().Choices(base);
  for (const auto& [name, value] : knobs) {
    const int k = t.space().KnobIndex(name);
    const std::vector<int64_t>& values = t.space().knobs()[static_cast<size_t>(k)].values;
    const auto it = std::find(values.begin(), values.end(), value);
    EXPECT_NE(it, values.end()) << name << " has no value " << value;
    if (it == values.end()) return base;
    choices[static_cast<size_t>(k)] = it - values.begin();
  }
  return t.space().FromChoices(choices);
}

// out = act(product + bias[column] + residual), the Epilogue's meaning.
graph::Tensor ApplyEpilogue(graph::Tensor y, const Epilogue& ep, const graph::Tensor& bias,
                            const graph::Tensor& residual, int64_t n) {
  float* v = y.data<float>();
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    float x = v[i];
    if (ep.bias) x += bias.data<float>()[i % n];
    if (ep.residual) x += residual.data<float>()[i];
    switch (ep.activation) {
      case Epilogue::Activation::kRelu:
        x = std::max(x, 0.0f);
        break;
      case Epilogue::Activation::kSigmoid:
        x = 1.0f / (1.0f + std::exp(-x));
        break;
      case Epilogue::Activation::kClip:
        x = std::min(std::max(x, ep.clip_min), ep.clip_max);
        break;
      default:
        break;
    }
    v[i] = x;
  }
  return y;
}

TEST(MatmulTemplatesTest, FusedEpiloguesMatchOnEveryPanelShape) {
  TempDir dir;
  const Target target = HostCpuTarget();
  graph::Workload trans_b = BatchMatmulWorkload(2, 11, 37, 70);
  trans_b.trans_b = true;
  Epilogue bias_relu{.bias = true, .activation = Epilogue::Activation::kRelu};
  Epilogue residual_sigmoid{.residual = true, .activation = Epilogue::Activation::kSigmoid};
  Epilogue all{.bias = true,
               .residual = true,
               .activation = Epilogue::Activation::kClip,
               .clip_min = -0.5f,
               .clip_max = 2.0f};
  struct Case {
    graph::Workload w;
    Epilogue ep;
  };
  for (const Case& c :
       {Case{BatchMatmulWorkload(2, 11, 37, 70), all}, Case{trans_b, residual_sigmoid},
        Case{trans_b, bias_relu}, Case{DenseWorkload(9, 45, 70), bias_relu},
        Case{DenseWorkload(9, 45, 70), all}}) {
    auto t = MakeTemplate(c.w, target);
    ASSERT_TRUE(t.ok()) << t.status();
    base::Rng rng(5);
    const std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, 9);
    const Config base = (*t)->DefaultConfig();
    // The default, a split K (partial sums in Y) with a narrow last panel, and one row per block.
    for (const Config& config : {base, With(**t, base, {{"tile_k", 64}, {"tile_n", 2}}),
                                 With(**t, base, {{"tile_m", 1}, {"unroll_k", 8}})}) {
      SCOPED_TRACE(absl::StrCat(graph::WorkloadKey(c.w), " ", (*t)->space().ToJson(config)));
      ASSERT_TRUE((*t)->space().IsValid(config));
      auto src = (*t)->EmitFused(config, c.ep);
      ASSERT_TRUE(src.ok()) << src.status();
      auto kernel = LocalKernel::Compile(*src, dir.path());
      ASSERT_TRUE(kernel.ok()) << kernel.status();
      std::vector<graph::Tensor> buffers = (*t)->PackInputs(config, natural);
      const std::vector<BufferSpec> specs = (*t)->FusedBuffers(config, c.ep);
      graph::Tensor bias, residual;
      for (size_t i = buffers.size(); i < specs.size(); ++i) {
        graph::Tensor b = Random(specs[i].shape, rng);
        if (specs[i].name == "bias") bias = b;
        if (specs[i].name == "residual") residual = b;
        if (specs[i].is_output) std::fill(b.values<float>().begin(), b.values<float>().end(), NAN);
        buffers.push_back(b);
      }
      ASSERT_EQ(specs.back().name, "output");
      std::vector<void*> ptrs;
      for (graph::Tensor& b : buffers) ptrs.push_back(b.raw_data());
      (*kernel)->fn()(ptrs.data(), nullptr);
      const graph::Tensor want =
          ApplyEpilogue((*t)->Reference(natural), c.ep, bias, residual, c.w.n);
      const ErrorStats e = CompareTensors((*t)->UnpackOutput(config, buffers.back()), want);
      EXPECT_TRUE(e.WithinTolerance()) << e.max_abs_err;
    }
  }
  // A malformed epilogue is refused by both templates.
  Epilogue malformed;
  malformed.operands.push_back({EpilogueOperand::Kind::kChannel});
  for (const graph::Workload& w : {DenseWorkload(4, 16, 16), BatchMatmulWorkload(2, 4, 16, 16)}) {
    auto t = MakeTemplate(w, target);
    ASSERT_TRUE(t.ok());
    const auto bad = (*t)->EmitFused((*t)->DefaultConfig(), malformed);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(bad.status().message(), HasSubstr("operands without a program"));
  }
}

TEST(MatmulTemplatesTest, SpacesKnowWhatEmits) {
  const Target target = HostCpuTarget();
  graph::Workload trans_b = BatchMatmulWorkload(12, 197, 197, 64);
  trans_b.trans_b = true;
  graph::Workload broadcast = BatchMatmulWorkload(6, 5, 6, 8);
  broadcast.batch_a = {2, 1};
  broadcast.batch_b = {1, 3};
  for (const graph::Workload& w : {BatchMatmulWorkload(4, 128, 64, 128), trans_b, broadcast,
                                   DenseWorkload(197, 768, 192), DenseWorkload(128, 256, 1024)}) {
    SCOPED_TRACE(graph::WorkloadKey(w));
    auto t = MakeTemplate(w, target);
    ASSERT_TRUE(t.ok()) << t.status();
    const ConfigSpace& space = (*t)->space();
    const int64_t step = std::max<int64_t>(1, space.size() / 300);
    int64_t valid = 0;
    for (int64_t i = 0; i < space.size(); i += step) {
      const absl::StatusOr<KernelSource> src = (*t)->Emit(Config{i});
      EXPECT_EQ(src.ok(), space.IsValid(Config{i})) << space.ToJson(Config{i});
      if (!src.ok()) {
        EXPECT_EQ(src.status().code(), absl::StatusCode::kInvalidArgument);
      }
      valid += src.ok();
    }
    EXPECT_GT(valid, 20);
    EXPECT_EQ((*t)->Features(Config{0}).size(), (*t)->FeatureNames().size());
    if (w.trans_b) {
      // A transposed B is always packed.
      EXPECT_EQ(space.knobs()[static_cast<size_t>(space.KnobIndex("pack_b"))].values,
                std::vector<int64_t>{1});
    }
  }
  // Too large a panel for the kernel's stack: refused by the space and by Emit. Only tile_k
  // grows, so the panel is the one rule the config breaks whatever the ISA's register count
  // (tile_n 4 also broke AVX2's register rule, which Emit then named first).
  auto t = MakeTemplate(BatchMatmulWorkload(1, 8, 64, 4096), target);
  ASSERT_TRUE(t.ok());
  const Config big = With(**t, (*t)->DefaultConfig(), {{"tile_k", 4096}});
  EXPECT_FALSE((*t)->space().IsValid(big));
  EXPECT_THAT((*t)->Emit(big).status().message(), HasSubstr("panel bytes"));
  EXPECT_LE((*t)->space().Value((*t)->DefaultConfig(), "tile_k") *
                (*t)->space().Value((*t)->DefaultConfig(), "tile_n") *
                (*t)->space().Value((*t)->DefaultConfig(), "vec") * 4,
            64 << 10);
}

TEST(MatmulTemplatesTest, ForThreadsFeedsTheThreadsAndKeepsTheWork) {
  Target target = HostCpuTarget();
  target.isa = Isa::kAvx512;
  // One product with one 64-wide panel: only row chunks give a second thread work.
  auto t = MakeTemplate(BatchMatmulWorkload(1, 197, 64, 197), target);
  ASSERT_TRUE(t.ok());
  const ConfigSpace& space = (*t)->space();
  const Config c = With(**t, (*t)->DefaultConfig(), {{"tile_n", 4}, {"parallel_axis", 0}});
  const Config two = (*t)->ForThreads(c, 2);
  EXPECT_EQ(space.Value(two, "parallel_axis"), 2);
  EXPECT_EQ((*t)->ForThreads(c, 1), c);
  std::vector<int64_t> a = space.Values(c), b = space.Values(two);
  const size_t par = static_cast<size_t>(space.KnobIndex("parallel_axis"));
  a[par] = b[par] = 0;
  EXPECT_EQ(a, b);
  // Twelve heads: the batch alone splits evenly, so it stays.
  auto heads = MakeTemplate(BatchMatmulWorkload(12, 197, 64, 197), target);
  ASSERT_TRUE(heads.ok());
  const Config h = With(**heads, (*heads)->DefaultConfig(), {{"parallel_axis", 0}});
  EXPECT_EQ((*heads)->ForThreads(h, 2), h);
  EXPECT_EQ((*heads)->ForThreads(h, 4), h);
  // dense: one 64-wide panel in the parallel loop leaves threads idle; the row blocks do not.
  auto dense = MakeTemplate(DenseWorkload(197, 64, 192), target);
  ASSERT_TRUE(dense.ok());
  const Config d = With(**dense, (*dense)->DefaultConfig(), {{"tile_n", 4}, {"order", 0}});
  EXPECT_EQ((*dense)->space().Value((*dense)->ForThreads(d, 2), "order"), 1);
}

// The default configs of the transformer shapes fill the register file with a block whose model
// cost is within 15% of the peak (the shapes of ViT-tiny, BERT-small and BERT-base).
TEST(MatmulTemplatesTest, TransformerDefaultsUseLargeRegisterBlocks) {
  Target target = HostCpuTarget();
  target.isa = Isa::kAvx512;
  graph::Workload qk = BatchMatmulWorkload(3, 197, 197, 64),
                  qk_bert = BatchMatmulWorkload(12, 128, 128, 64);
  qk.trans_b = qk_bert.trans_b = true;
  for (const graph::Workload& w :
       {DenseWorkload(197, 576, 192), DenseWorkload(197, 768, 192), DenseWorkload(197, 192, 768),
        DenseWorkload(128, 1024, 256), DenseWorkload(128, 3072, 768), DenseWorkload(128, 768, 3072),
        qk, qk_bert, BatchMatmulWorkload(3, 197, 64, 197), BatchMatmulWorkload(12, 128, 64, 128)}) {
    SCOPED_TRACE(graph::WorkloadKey(w));
    auto t = MakeTemplate(w, target);
    ASSERT_TRUE(t.ok());
    const Config c = (*t)->DefaultConfig();
    const int64_t rows = (*t)->space().Value(c, "tile_m"), n_v = (*t)->space().Value(c, "tile_n");
    EXPECT_GE(rows * n_v, 12);
    EXPECT_LE(internal::RegisterBlockRegisters(rows, n_v), 32);
    EXPECT_LE(internal::RegisterBlockCost(w.m, w.n, 16, {rows, n_v}), 1.15);
  }
}

// y = clip((x * 0.125 + mask[b, n] + r[b, m, n]) * s[n], -2, 2): attention's scale and additive
// mask as an epilogue program, operands per (batch, column) (when `with_mask`), per element and
// per column.
Epilogue AttentionEpilogue(bool with_mask) {
  Epilogue e;
  ElementwiseProgram& p = e.program;
  using graph::DType;
  const int32_t x = p.AddInput(DType::kFloat32);
  const int32_t mask = with_mask ? p.AddInput(DType::kFloat32) : -1;
  const int32_t r = p.AddInput(DType::kFloat32), scale = p.AddInput(DType::kFloat32);
  if (with_mask) e.operands.push_back({EpilogueOperand::Kind::kBatchChannel});
  e.operands.push_back({EpilogueOperand::Kind::kElement});
  e.operands.push_back({EpilogueOperand::Kind::kChannel});
  auto op = [&](EwOp o, int32_t a, int32_t b = -1, double p0 = 0, double p1 = 0) {
    EwInstr i;
    i.op = o;
    i.a = a;
    i.b = b;
    i.p0 = p0;
    i.p1 = p1;
    return p.Add(i);
  };
  int32_t v = op(EwOp::kMul, x, op(EwOp::kConst, -1, -1, 0.125));
  if (mask >= 0) v = op(EwOp::kAdd, v, mask);
  v = op(EwOp::kMul, op(EwOp::kAdd, v, r), scale);
  v = op(EwOp::kClip, v, -1, -2.0, 2.0);
  p.AddOutput(v, DType::kFloat32);
  return e;
}

// A float buffer whose last element ends exactly where a PROT_NONE page begins (and whose first
// element starts right after one): a kernel reading or writing a single float outside it crashes.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(const graph::Tensor& t) : bytes_(t.num_elements() * sizeof(float)) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (bytes_ + page - 1) / page * page;
    size_ = body + 2 * page;
    base_ = static_cast<char*>(
        mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    mprotect(base_, page, PROT_NONE);
    mprotect(base_ + page + body, page, PROT_NONE);
    data_ = reinterpret_cast<float*>(base_ + page + body - bytes_);
    std::memcpy(data_, t.raw_data(), bytes_);
  }
  ~GuardedBuffer() { munmap(base_, size_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  float* data() const { return data_; }

 private:
  size_t bytes_, size_;
  char* base_;
  float* data_;
};

// batch_matmul reads A, B and the residual and writes Y in their natural layouts, with tails in
// every dim (a narrow last panel, tail rows, a short last K block): no access may leave a buffer.
// Each buffer sits against PROT_NONE pages on both sides; the kernel runs in a forked child.
TEST(MatmulTemplatesTest, NaturalOperandsAreNeverReadOrWrittenOutOfBounds) {
  TempDir dir;
  const Target target = HostCpuTarget();
  // Every kind of operand: bias, residual, and a program's per-(batch, column), per-element and
  // per-column ones.
  Epilogue residual = AttentionEpilogue(true);
  residual.bias = true;
  residual.residual = true;
  for (int trans = 0; trans < 4; ++trans) {
    graph::Workload w = BatchMatmulWorkload(2, 13, 37, 70);
    w.trans_a = (trans & 1) != 0;
    w.trans_b = (trans & 2) != 0;
    auto t = MakeTemplate(w, target);
    ASSERT_TRUE(t.ok()) << t.status();
    const Config base = (*t)->DefaultConfig();
    std::vector<Config> configs = {base, With(**t, base, {{"tile_k", 64}, {"tile_n", 2}})};
    if (!w.trans_b) configs.push_back(With(**t, base, {{"pack_b", 0}, {"tile_k", 64}}));
    for (const Config& config : configs) {
      SCOPED_TRACE(absl::StrCat(graph::WorkloadKey(w), " ", (*t)->space().ToJson(config)));
      auto src = (*t)->EmitFused(config, residual);
      ASSERT_TRUE(src.ok()) << src.status();
      auto kernel = LocalKernel::Compile(*src, dir.path());
      ASSERT_TRUE(kernel.ok()) << kernel.status();
      base::Rng rng(2);
      const std::vector<BufferSpec> specs = (*t)->FusedBuffers(config, residual);
      std::vector<graph::Tensor> values = RandomNaturalInputs(**t, 4);
      for (size_t i = values.size(); i < specs.size(); ++i)
        values.push_back(Random(specs[i].shape, rng));
      std::vector<std::unique_ptr<GuardedBuffer>> guarded;
      std::vector<void*> ptrs;
      for (const graph::Tensor& v : values) {
        guarded.push_back(std::make_unique<GuardedBuffer>(v));
        ptrs.push_back(guarded.back()->data());
      }
      const pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        (*kernel)->fn()(ptrs.data(), nullptr);
        _exit(0);
      }
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "the kernel touched memory outside its buffers (signal "
          << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")";
    }
  }
}

// The transposed-B panel packing (8x8 register transposes) and the kernels build and match the
// reference on the AVX2 and generic targets too (8- and 1-lane vectors).
TEST(MatmulTemplatesTest, NarrowerTargetsEmitCorrectKernels) {
  TempDir dir;
  graph::Workload w = BatchMatmulWorkload(2, 11, 29, 45);
  w.trans_b = true;
  for (Isa isa : {Isa::kAvx2, Isa::kGeneric}) {
    Target target = HostCpuTarget();
    target.isa = isa;
    for (const graph::Workload& wl : {w, DenseWorkload(9, 29, 45)}) {
      auto t = MakeTemplate(wl, target);
      ASSERT_TRUE(t.ok()) << t.status();
      const Config c = (*t)->DefaultConfig();
      auto src = (*t)->Emit(c);
      ASSERT_TRUE(src.ok()) << src.status();
      auto kernel = LocalKernel::Compile(*src, dir.path());
      ASSERT_TRUE(kernel.ok()) << IsaName(isa) << ": " << kernel.status();
      const std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, 6);
      const ErrorStats e =
          CompareTensors(RunOnce(**t, c, **kernel, natural), (*t)->Reference(natural));
      EXPECT_TRUE(e.WithinTolerance())
          << IsaName(isa) << " " << graph::WorkloadKey(wl) << ": " << e.max_abs_err;
    }
  }
}

// Attention's scale and additive mask as a fused program on batch_matmul (Q K^T with K read
// transposed): y = clip((x * 0.125 + mask[b, n] + r[b, m, n]) * s[n], -2, 2), operands per
// (batch, column), per element and per column; on a narrow last panel and a split K, and on
// dense_pack without the per-batch operand. Compared with the reference product in double.
TEST(MatmulTemplatesTest, AttentionScaleAndMaskFuseAsAProgram) {
  TempDir dir;
  graph::Workload qk = BatchMatmulWorkload(3, 11, 37, 70);
  qk.trans_b = true;
  for (const graph::Workload& w : {qk, DenseWorkload(9, 37, 70)}) {
    const bool batched = w.kind == graph::TaskKind::kBatchMatmul;
    const Epilogue ep = AttentionEpilogue(batched);
    auto t = MakeTemplate(w, HostCpuTarget());
    ASSERT_TRUE(t.ok()) << t.status();
    const int64_t batch = batched ? w.b : 1;
    const std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, 8);
    const graph::Tensor plain = (*t)->Reference(natural);
    base::Rng rng(12);
    const graph::Tensor mask = Random({batch, w.n}, rng), r = Random(plain.shape(), rng),
                        scale = Random({w.n}, rng);
    const Config base = (*t)->DefaultConfig();
    for (const Config& config : {base, With(**t, base, {{"tile_k", 64}, {"tile_n", 2}})}) {
      SCOPED_TRACE(absl::StrCat(graph::WorkloadKey(w), " ", (*t)->space().ToJson(config)));
      auto src = (*t)->EmitFused(config, ep);
      ASSERT_TRUE(src.ok()) << src.status();
      auto kernel = LocalKernel::Compile(*src, dir.path());
      ASSERT_TRUE(kernel.ok()) << kernel.status();
      const std::vector<BufferSpec> specs = (*t)->FusedBuffers(config, ep);
      std::vector<graph::Tensor> bufs = (*t)->PackInputs(config, natural);
      if (batched) bufs.push_back(mask);
      bufs.push_back(r);
      bufs.push_back(scale);
      bufs.emplace_back(graph::DType::kFloat32, specs.back().shape);
      ASSERT_EQ(bufs.size(), specs.size());
      for (size_t i = 0; i < specs.size(); ++i) {
        EXPECT_EQ(bufs[i].num_elements(), graph::NumElements(specs[i].shape)) << specs[i].name;
      }
      std::vector<void*> ptrs;
      for (graph::Tensor& b : bufs) ptrs.push_back(b.raw_data());
      (*kernel)->fn()(ptrs.data(), nullptr);
      const float* got = bufs.back().data<float>();
      int bad = 0;
      for (int64_t i = 0; i < plain.num_elements() && bad < 3; ++i) {
        const int64_t n = i % w.n, b = i / (w.m * w.n);
        double v = plain.data<float>()[i] * 0.125;
        if (batched) v += mask.data<float>()[b * w.n + n];
        v = (v + r.data<float>()[i]) * scale.data<float>()[n];
        v = std::min(2.0, std::max(-2.0, v));
        if (std::fabs(got[i] - v) > 1e-4 * std::fabs(v) + 1e-5) {
          ++bad;
          ADD_FAILURE() << "element " << i << ": got " << got[i] << ", want " << v;
        }
      }
    }
  }
}

}  // namespace
}  // namespace loom::ops
