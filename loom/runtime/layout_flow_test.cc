// The compiled model's plan on the patterns that decide its speed on CNNs and transformers: one
// small graph per pattern, compiled and run on 1 and 2 threads, checked against the reference
// executor, and the plan's step kinds asserted (the NCHW[x]c layout flows through the pattern:
// no `unpack`; nothing runs a reference kernel: no `ref:`; the elementwise chain is fused where
// it should be).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/graph/passes.h"
#include "loom/graph/shape_inference.h"
#include "loom/kernels/reference.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/reference_executor.h"

namespace loom::runtime {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string();
}

Tensor RandomTensor(DType dtype, const Shape& shape, double lo, double hi, uint64_t seed) {
  base::Rng rng(seed);
  Tensor t(dtype, shape);
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    const double v = rng.Uniform(lo, hi);
    if (dtype == DType::kFloat32) t.data<float>()[i] = static_cast<float>(v);
    if (dtype == DType::kInt64) t.data<int64_t>()[i] = static_cast<int64_t>(std::floor(v));
  }
  return t;
}

// A graph built node by node; Finish() infers every value's type.
class Builder {
 public:
  std::string Input(const std::string& name, DType dtype, Shape shape) {
    g_.inputs.push_back({name, {dtype, shape}});
    return name;
  }
  std::string Const(const std::string& name, Tensor t) {
    g_.initializers[name] = std::move(t);
    return name;
  }
  std::string Weight(const std::string& name, Shape shape, double scale = 0.2) {
    return Const(name, RandomTensor(DType::kFloat32, shape, -scale, scale, ++seed_));
  }
  std::string Ints(const std::string& name, std::vector<int64_t> v) {
    return Const(name, Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v));
  }
  std::string Op(const std::string& op, std::vector<std::string> inputs,
                 std::map<std::string, graph::AttrValue> attrs = {}, int outputs = 1) {
    graph::Node n;
    n.name = absl::StrCat(op, "_", g_.nodes.size());
    n.op_type = op;
    n.inputs = std::move(inputs);
    for (int k = 0; k < outputs; ++k) n.outputs.push_back(absl::StrCat(n.name, "_out", k));
    n.attrs = std::move(attrs);
    g_.nodes.push_back(n);
    return n.outputs[0];
  }
  std::string Conv(const std::string& x, int64_t c, int64_t k, int64_t r, int64_t pad,
                   int64_t groups = 1) {
    const std::string w = Weight(absl::StrCat("w", g_.nodes.size()), {k, c / groups, r, r});
    const std::string b = Weight(absl::StrCat("b", g_.nodes.size()), {k}, 0.1);
    return Op("Conv", {x, w, b},
              {{"kernel_shape", std::vector<int64_t>{r, r}},
               {"pads", std::vector<int64_t>{pad, pad, pad, pad}},
               {"group", groups}});
  }
  // The graph with its types inferred (when every operator has a shape rule: see
  // ReferenceLacksAnOperator).
  graph::Graph Finish(const std::vector<std::string>& outputs) {
    for (const std::string& o : outputs) g_.outputs.push_back({o, {}});
    if (graph::InferShapes(g_).ok()) {
      for (graph::ValueInfo& o : g_.outputs) o.type = g_.value_types[o.name];
    }
    return g_;
  }

 private:
  graph::Graph g_;
  uint64_t seed_ = 100;
};

CompileOptions Options(int32_t threads) {
  CompileOptions o;
  o.num_threads = threads;
  o.build.num_threads = 2;
  o.build.cache_dir = BuildDir() + "/layout_flow_test_kernels";
  return o;
}

void ExpectClose(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.type(), want.type()) << what;
  double err = 0, ref = 0;
  for (int64_t i = 0; i < want.num_elements(); ++i) {
    err = std::max(err, std::fabs(got.DoubleAt(i) - want.DoubleAt(i)));
    ref = std::max(ref, std::fabs(want.DoubleAt(i)));
  }
  EXPECT_LE(err, 1e-4 * std::max(ref, 1e-3)) << what << ": max|a-b| " << err;
}

// True when the reference path lacks an operator of `g` (it lands with the operator work of
// issue 17): the test is skipped, naming it.
bool ReferenceLacksAnOperator(const graph::Graph& g, std::string* which) {
  for (const graph::Node& n : g.nodes) {
    if (!kernels::HasReferenceKernel(n.op_type) || !graph::IsSupportedOp(n.op_type)) {
      *which = n.op_type;
      return true;
    }
  }
  return false;
}

// Compiles `g`, runs it on 1 and 2 threads against the reference executor and returns the step
// kinds of the plan.
std::vector<std::string> CheckAndKinds(const graph::Graph& g,
                                       const std::map<std::string, Tensor>& inputs) {
  auto ex = ReferenceExecutor::Create(g);
  EXPECT_TRUE(ex.ok()) << ex.status();
  if (!ex.ok()) return {};
  auto want = ex->Run(inputs);
  EXPECT_TRUE(want.ok()) << want.status();
  if (!want.ok()) return {};
  std::vector<std::string> kinds;
  for (int32_t threads : {1, 2}) {
    auto cm = CompiledModel::Compile(g, Options(threads));
    EXPECT_TRUE(cm.ok()) << cm.status();
    if (!cm.ok()) return {};
    std::vector<StepTiming> timings;
    for (int run = 0; run < 2; ++run) {  // the second run reuses the arena
      timings.clear();
      auto got = (*cm)->RunProfiled(inputs, &timings);
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok()) return {};
      EXPECT_EQ(got->size(), want->size());
      for (size_t k = 0; k < got->size() && k < want->size(); ++k) {
        ExpectClose((*got)[k], (*want)[k], absl::StrCat(threads, " threads, output ", k));
      }
    }
    kinds.clear();
    for (const StepTiming& t : timings) kinds.push_back(t.kind);
  }
  return kinds;
}

bool AnyStartsWith(const std::vector<std::string>& kinds, const std::string& prefix) {
  return std::any_of(kinds.begin(), kinds.end(),
                     [&](const std::string& k) { return k.rfind(prefix, 0) == 0; });
}

void ExpectNoFallback(const std::vector<std::string>& kinds) {
  for (const std::string& k : kinds) {
    EXPECT_THAT(k, Not(HasSubstr("ref:"))) << absl::StrJoin(kinds, ", ");
  }
}

// The blocked layout is left only to write the graph's outputs (trailing unpacks).
void ExpectUnpackOnlyAtTheEnd(const std::vector<std::string>& kinds) {
  size_t end = kinds.size();
  while (end > 0 && kinds[end - 1] == "unpack") --end;
  for (size_t k = 0; k < end; ++k) {
    EXPECT_NE(kinds[k], "unpack") << "step " << k << " of " << absl::StrJoin(kinds, ", ");
  }
}

#define SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g)                                              \
  do {                                                                                      \
    std::string op;                                                                         \
    if (ReferenceLacksAnOperator(g, &op)) GTEST_SKIP() << "no reference kernel for " << op; \
  } while (0)

// EfficientNet's MBConv: expand conv + SiLU, depthwise + SiLU, squeeze-excite (global pool,
// 1x1 convs, SiLU, Sigmoid, the per-(image, channel) multiply), project conv, residual.
graph::Graph SqueezeExcite(bool reduce_mean) {
  Builder b;
  const int64_t n = 2, c = 16, e = 48, s = 8;
  const std::string x = b.Input("x", DType::kFloat32, {n, c, 12, 12});
  auto silu = [&](const std::string& v) { return b.Op("Mul", {v, b.Op("Sigmoid", {v})}); };
  const std::string expanded = silu(b.Conv(x, c, e, 1, 0));
  const std::string dw = silu(b.Conv(expanded, e, e, 3, 1, e));
  // torchvision's EfficientNet pools with an adaptive average pool (GlobalAveragePool); others
  // write ReduceMean over H and W.
  const std::string pooled = reduce_mean
                                 ? b.Op("ReduceMean", {dw}, {{"axes", std::vector<int64_t>{2, 3}}})
                                 : b.Op("GlobalAveragePool", {dw});
  const std::string squeezed = silu(b.Conv(pooled, e, s, 1, 0));
  const std::string gate = b.Op("Sigmoid", {b.Conv(squeezed, s, e, 1, 0)});
  const std::string scaled = b.Op("Mul", {dw, gate});
  const std::string projected = b.Conv(scaled, e, c, 1, 0);
  return b.Finish({b.Op("Add", {projected, x})});
}

TEST(LayoutFlowTest, SqueezeExciteBlock) {
  for (bool reduce_mean : {false, true}) {
    SCOPED_TRACE(reduce_mean ? "ReduceMean" : "GlobalAveragePool");
    graph::Graph g = SqueezeExcite(reduce_mean);
    auto kinds =
        CheckAndKinds(g, {{"x", RandomTensor(DType::kFloat32, {2, 16, 12, 12}, -1, 1, 1)}});
    ExpectNoFallback(kinds);
    ExpectUnpackOnlyAtTheEnd(kinds);
    // SiLU fuses into the convolutions; the SE multiply runs on the blocked layout.
    EXPECT_THAT(kinds, Contains("conv2d_nchwc+bias+Sigmoid+Mul"));
    EXPECT_THAT(kinds, Contains("depthwise_conv2d_nchwc+bias+Sigmoid+Mul"));
    EXPECT_THAT(kinds, Contains("Mul(nchwc)"));
    EXPECT_THAT(kinds, Contains(reduce_mean ? "ReduceMean(nchwc)" : "GlobalAveragePool(nchwc)"));
  }
}

// An audio front end (Whisper's, wav2vec2's): 1-D convolutions, plain and grouped, with GELU
// between them. graph::Conv1dAsConv2d (in OptimizeForInference) turns each into a 2-D
// convolution between two Reshapes, so they run on the conv templates, not the reference Conv.
TEST(LayoutFlowTest, Conv1dRunsOnTheConvTemplates) {
  Builder b;
  const std::string x = b.Input("x", DType::kFloat32, {1, 8, 40});
  auto conv1d = [&](const std::string& v, int64_t c, int64_t k, int64_t r, int64_t stride,
                    int64_t pad, int64_t groups) {
    const std::string w = b.Weight(absl::StrCat("w1d", c, k, r), {k, c / groups, r});
    return b.Op("Conv", {v, w},
                {{"kernel_shape", std::vector<int64_t>{r}},
                 {"strides", std::vector<int64_t>{stride}},
                 {"pads", std::vector<int64_t>{pad, pad}},
                 {"group", groups}});
  };
  auto gelu = [&](const std::string& v) {
    const std::string half = b.Const("half", Tensor::ScalarFloat(0.5f));
    const std::string one = b.Const("one", Tensor::ScalarFloat(1.0f));
    const std::string rsqrt2 = b.Const("rsqrt2", Tensor::ScalarFloat(0.70710678f));
    const std::string erf = b.Op("Erf", {b.Op("Mul", {v, rsqrt2})});
    return b.Op("Mul", {b.Op("Mul", {v, half}), b.Op("Add", {erf, one})});
  };
  const std::string a = gelu(conv1d(x, 8, 16, 3, 1, 1, 1));
  const std::string c = gelu(conv1d(a, 16, 16, 4, 2, 1, 1));
  const std::string grouped = conv1d(c, 16, 16, 5, 1, 2, 4);
  graph::Graph g = b.Finish({b.Op("Add", {grouped, c})});
  SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
  const std::map<std::string, Tensor> inputs = {
      {x, RandomTensor(DType::kFloat32, {1, 8, 40}, -1, 1, 31)}};
  auto before = ReferenceExecutor::Create(g);
  ASSERT_TRUE(before.ok()) << before.status();
  auto want = before->Run(inputs);
  ASSERT_TRUE(want.ok()) << want.status();

  int64_t rewritten = 0;
  ASSERT_TRUE(graph::Conv1dAsConv2d(g, &rewritten).ok());
  EXPECT_EQ(rewritten, 3);
  ASSERT_TRUE(graph::InferShapes(g).ok());
  auto after = ReferenceExecutor::Create(g);
  ASSERT_TRUE(after.ok()) << after.status();
  auto got = after->Run(inputs);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  ExpectClose((*got)[0], (*want)[0], "the 2-D form on the reference kernels");

  auto kinds = CheckAndKinds(g, inputs);
  ExpectNoFallback(kinds);
  EXPECT_TRUE(AnyStartsWith(kinds, "conv2d")) << absl::StrJoin(kinds, ", ");
  EXPECT_TRUE(AnyStartsWith(kinds, "group_conv2d")) << absl::StrJoin(kinds, ", ");
}

// The same front end after graph::SinkUnitDimReshapes (OptimizeForInference runs it after
// Conv1dAsConv2d): the Reshape to [N, C, L] after each convolution no longer sits between it and
// the GELU or the next convolution, so the 1-D maps stay in the blocked layout from the first
// convolution to the output (the GELU and the residual Add fused into the convolutions): one
// pack of the input, unpacks only to write the output.
TEST(LayoutFlowTest, Conv1dChainStaysBlocked) {
  Builder b;
  const std::string x = b.Input("x", DType::kFloat32, {1, 8, 40});
  auto conv1d = [&](const std::string& v, int64_t c, int64_t k, int64_t r, int64_t stride,
                    int64_t groups) {
    const std::string w = b.Weight(absl::StrCat("w1d", c, k, r, groups), {k, c / groups, r});
    return b.Op("Conv", {v, w},
                {{"kernel_shape", std::vector<int64_t>{r}},
                 {"strides", std::vector<int64_t>{stride}},
                 {"group", groups}});
  };
  const std::string half = b.Const("half", Tensor::ScalarFloat(0.5f));
  const std::string one = b.Const("one", Tensor::ScalarFloat(1.0f));
  const std::string sqrt2 = b.Const("sqrt2", Tensor::ScalarFloat(1.41421356f));
  auto gelu = [&](const std::string& v) {  // as the TorchScript exporter writes it
    const std::string erf = b.Op("Erf", {b.Op("Div", {v, sqrt2})});
    return b.Op("Mul", {b.Op("Mul", {v, b.Op("Add", {erf, one})}), half});
  };
  const std::string a = gelu(conv1d(x, 8, 16, 3, 1, 1));
  const std::string c = gelu(conv1d(a, 16, 16, 3, 2, 1));
  graph::Graph g = b.Finish({b.Op("Add", {conv1d(c, 16, 16, 1, 1, 4), c})});
  SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
  const std::map<std::string, Tensor> inputs = {
      {x, RandomTensor(DType::kFloat32, {1, 8, 40}, -1, 1, 37)}};
  ASSERT_TRUE(graph::Conv1dAsConv2d(g).ok());
  int64_t moved = 0;
  ASSERT_TRUE(graph::SinkUnitDimReshapes(g, &moved).ok());
  EXPECT_EQ(moved, 3);
  g.RemoveDeadNodes();
  ASSERT_TRUE(graph::InferShapes(g).ok());

  auto kinds = CheckAndKinds(g, inputs);
  ExpectNoFallback(kinds);
  ExpectUnpackOnlyAtTheEnd(kinds);
  EXPECT_EQ(std::count_if(kinds.begin(), kinds.end(),
                          [](const std::string& k) { return k.rfind("pack", 0) == 0; }),
            1)
      << absl::StrJoin(kinds, ", ");
  EXPECT_THAT(kinds, Contains("conv2d_nchwc+Div+Erf+Add+Mul+Mul")) << absl::StrJoin(kinds, ", ");
  EXPECT_THAT(kinds, Contains("group_conv2d_nchwc+Add")) << absl::StrJoin(kinds, ", ");
}

// Attention's scores after graph::MoveScalesPastMatMul: Q K^T with K^T a last-two-dims
// Transpose that batch_matmul reads in place, so the plan has no step for it; the scale fuses
// into the product.
TEST(LayoutFlowTest, TransposeReadInPlaceHasNoStep) {
  Builder b;
  const std::string q = b.Input("q", DType::kFloat32, {1, 2, 6, 8});
  const std::string k = b.Input("k", DType::kFloat32, {1, 2, 6, 8});
  const std::string v = b.Input("v", DType::kFloat32, {1, 2, 6, 8});
  const std::string kt = b.Op("Transpose", {k}, {{"perm", std::vector<int64_t>{0, 1, 3, 2}}});
  const std::string s = b.Const("s", Tensor::ScalarFloat(0.25f));
  const std::string scores = b.Op("Mul", {b.Op("MatMul", {q, kt}), s});
  const std::string p = b.Op("Softmax", {scores}, {{"axis", int64_t{-1}}});
  graph::Graph g = b.Finish({b.Op("MatMul", {p, v})});
  SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
  auto kinds = CheckAndKinds(g, {{q, RandomTensor(DType::kFloat32, {1, 2, 6, 8}, -1, 1, 11)},
                                 {k, RandomTensor(DType::kFloat32, {1, 2, 6, 8}, -1, 1, 12)},
                                 {v, RandomTensor(DType::kFloat32, {1, 2, 6, 8}, -1, 1, 13)}});
  ExpectNoFallback(kinds);
  EXPECT_THAT(kinds, Not(Contains("transpose"))) << absl::StrJoin(kinds, ", ");
  EXPECT_THAT(kinds, Contains("batch_matmul+Mul")) << absl::StrJoin(kinds, ", ");
}

// A Transpose that moves only unit dims (torch's attention at batch 1: [S, 1, D] -> [1, S, D])
// is a view: no step; one that moves a dim of extent > 1 still copies.
TEST(LayoutFlowTest, UnitDimTransposeIsAView) {
  Builder b;
  const std::string x = b.Input("x", DType::kFloat32, {5, 1, 8});
  const std::string view = b.Op("Transpose", {x}, {{"perm", std::vector<int64_t>{1, 0, 2}}});
  const std::string copy = b.Op("Transpose", {view}, {{"perm", std::vector<int64_t>{0, 2, 1}}});
  graph::Graph g = b.Finish({b.Op("Relu", {view}), b.Op("Relu", {copy})});
  SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
  auto kinds = CheckAndKinds(g, {{x, RandomTensor(DType::kFloat32, {5, 1, 8}, -1, 1, 21)}});
  ExpectNoFallback(kinds);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "transpose"), 1) << absl::StrJoin(kinds, ", ");
}

// Transposes of a convolution's output, directly or through a Reshape, read the blocked buffer:
// ConvNeXt's and Swin's channels-last permute, ViT's patch embedding ([N, C, H*W] -> [N, H*W,
// C]), MobileViT's unfold into patches (H and W split). No unpack step. A Reshape that cuts the
// channel blocks unevenly unpacks first, and gives the same values.
TEST(LayoutFlowTest, TransposeReadsTheBlockedLayout) {
  const Shape in{2, 8, 6, 10};
  auto perm = [](std::vector<int64_t> p) {
    return std::map<std::string, graph::AttrValue>{{"perm", std::move(p)}};
  };
  {
    Builder b;
    const std::string x = b.Input("x", DType::kFloat32, in);
    const std::string y = b.Conv(x, 8, 32, 3, 1);
    const std::string nhwc = b.Op("Transpose", {y}, perm({0, 2, 3, 1}));
    const std::string tokens = b.Op(
        "Transpose", {b.Op("Reshape", {y, b.Ints("tokens_shape", {2, 32, 60})})}, perm({0, 2, 1}));
    const std::string patches =
        b.Op("Transpose", {b.Op("Reshape", {y, b.Ints("patch_shape", {2 * 32 * 3, 2, 5, 2})})},
             perm({0, 2, 1, 3}));
    graph::Graph g = b.Finish({nhwc, tokens, patches});
    SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
    auto kinds = CheckAndKinds(g, {{x, RandomTensor(DType::kFloat32, in, -1, 1, 31)}});
    ExpectNoFallback(kinds);
    EXPECT_THAT(kinds, Not(Contains("unpack"))) << absl::StrJoin(kinds, ", ");
    EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "transpose"), 3) << absl::StrJoin(kinds, ", ");
  }
  {
    Builder b;
    const std::string x = b.Input("x", DType::kFloat32, in);
    const std::string y = b.Conv(x, 8, 32, 3, 1);
    const std::string uneven = b.Op(
        "Transpose", {b.Op("Reshape", {y, b.Ints("uneven_shape", {2, 30, 64})})}, perm({0, 2, 1}));
    graph::Graph g = b.Finish({uneven});
    SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
    auto kinds = CheckAndKinds(g, {{x, RandomTensor(DType::kFloat32, in, -1, 1, 32)}});
    ExpectNoFallback(kinds);
    EXPECT_THAT(kinds, Contains("unpack")) << absl::StrJoin(kinds, ", ");
  }
}

// A Transpose of a Transpose's output (through Reshapes) is one copy from the first one's input:
// MobileViT's unfold ([C*nh, ph, nw, pw] -> swap -> [N, C, patches, pixels] -> swap) and its
// fold back. The first copy is dropped when nothing else reads it, and kept when something does.
TEST(LayoutFlowTest, TransposesOfTransposesCompose) {
  const Shape in{1, 8, 4, 6};
  auto perm = [](std::vector<int64_t> p) {
    return std::map<std::string, graph::AttrValue>{{"perm", std::move(p)}};
  };
  for (bool first_also_read : {false, true}) {
    SCOPED_TRACE(first_also_read ? "first Transpose also read" : "first Transpose dead");
    Builder b;
    const std::string x = b.Input("x", DType::kFloat32, in);
    const std::string unfold = b.Op(
        "Transpose", {b.Op("Reshape", {x, b.Ints("s1", {8 * 2, 2, 3, 2})})}, perm({0, 2, 1, 3}));
    const std::string tokens = b.Op(
        "Transpose", {b.Op("Reshape", {unfold, b.Ints("s2", {1, 8, 6, 4})})}, perm({0, 3, 2, 1}));
    const std::string fold = b.Op("Transpose", {tokens}, perm({0, 3, 2, 1}));
    std::vector<std::string> outs = {b.Op("Reshape", {fold, b.Ints("s3", {1, 8, 4, 6})})};
    if (first_also_read) outs.push_back(b.Op("Relu", {unfold}));
    graph::Graph g = b.Finish(outs);
    SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
    auto kinds = CheckAndKinds(g, {{x, RandomTensor(DType::kFloat32, in, -1, 1, 33)}});
    ExpectNoFallback(kinds);
    // fold is one copy from x; tokens, read only by fold, is dropped; unfold is copied only when
    // Relu reads it.
    EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "transpose"), first_also_read ? 2 : 1)
        << absl::StrJoin(kinds, ", ");
  }
}

// ShuffleNetV2's unit: channel halves (two Slices, as some exporters write the split), branch
// convs, concat, channel shuffle (Reshape, Transpose, Reshape), and a channel slice.
TEST(LayoutFlowTest, ChannelSliceConcatShuffle) {
  Builder b;
  const int64_t n = 1, c = 48, h = 10;
  const std::string x = b.Input("x", DType::kFloat32, {n, c, h, h});
  const std::string a = b.Conv(x, c, c, 1, 0);
  const std::string first =
      b.Op("Slice", {a, b.Ints("s0", {0}), b.Ints("e0", {c / 2}), b.Ints("ax", {1})});
  const std::string second =
      b.Op("Slice", {a, b.Ints("s1", {c / 2}), b.Ints("e1", {c}), b.Ints("ax1", {1})});
  const std::string branch = b.Op("Relu", {b.Conv(second, c / 2, c / 2, 3, 1)});
  const std::string cat = b.Op("Concat", {first, branch}, {{"axis", int64_t{1}}});
  const std::string r5 = b.Op("Reshape", {cat, b.Ints("shape5", {n, 2, c / 2, h, h})});
  const std::string t5 = b.Op("Transpose", {r5}, {{"perm", std::vector<int64_t>{0, 2, 1, 3, 4}}});
  const std::string shuffled = b.Op("Reshape", {t5, b.Ints("shape4", {n, c, h, h})});
  const std::string sliced =
      b.Op("Slice", {shuffled, b.Ints("starts", {5}), b.Ints("ends", {29}), b.Ints("axes", {1})});
  const std::string y = b.Conv(sliced, 24, 8, 1, 0);
  graph::Graph g = b.Finish({y});
  SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
  auto kinds = CheckAndKinds(g, {{"x", RandomTensor(DType::kFloat32, {n, c, h, h}, -1, 1, 2)}});
  ExpectNoFallback(kinds);
  ExpectUnpackOnlyAtTheEnd(kinds);
  // Channel maps are written only where a kernel reads them, composed: the second half's
  // Slice, the Concat, the shuffle and the last Slice are one gather into the last conv's input.
  EXPECT_THAT(kinds, Contains("channel_map(nchwc)")) << absl::StrJoin(kinds, ", ");
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "Slice(nchwc)"), 1)
      << absl::StrJoin(kinds, ", ");
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "channel_map(nchwc)"), 1)
      << absl::StrJoin(kinds, ", ");
}

TEST(LayoutFlowTest, ChannelSplit) {
  Builder b;
  const std::string x = b.Input("x", DType::kFloat32, {2, 20, 5, 5});
  const std::string a = b.Conv(x, 20, 20, 1, 0);
  const std::string first = b.Op("Split", {a, b.Ints("split", {7, 13})}, {{"axis", int64_t{1}}}, 2);
  const std::string second = first.substr(0, first.size() - 1) + "1";
  const std::string y = b.Op("Concat", {b.Conv(second, 13, 4, 1, 0), b.Conv(first, 7, 4, 1, 0)},
                             {{"axis", int64_t{1}}});
  graph::Graph g = b.Finish({y});
  SKIP_IF_REFERENCE_LACKS_AN_OPERATOR(g);
  auto kinds = CheckAndKinds(g, {{"x", RandomTensor(DType::kFloat32, {2, 20, 5, 5}, -1, 1, 3)}});
  ExpectNoFallback(kinds);
  ExpectUnpackOnlyAtTheEnd(kinds);
  EXPECT_THAT(kinds, Contains("Split(nchwc)"));
}

// DenseNet: concat of channel counts that are not multiples of the block, then an unfolded
// BatchNormalization and Relu (scale and shift on the blocked layout), and pools.
TEST(LayoutFlowTest, DenseConcatOfOddChannelsWithBatchNorm) {
  Builder b;
  const int64_t n = 2, c = 13, g1 = 6;
  const std::string x = b.Input("x", DType::kFloat32, {n, c, 9, 9});
  const std::string stem = b.Conv(x, c, c, 3, 1);
  const std::string grow = b.Conv(stem, c, g1, 3, 1);
  const std::string cat = b.Op("Concat", {stem, grow}, {{"axis", 1}});
  const int64_t cc = c + g1;
  const std::string bn =
      b.Op("BatchNormalization",
           {cat, b.Weight("s", {cc}, 1.0), b.Weight("t", {cc}, 0.5), b.Weight("m", {cc}, 0.5),
            b.Const("v", RandomTensor(DType::kFloat32, {cc}, 0.5, 1.5, 9))});
  const std::string act = b.Op("Relu", {bn});
  const std::string pooled =
      b.Op("AveragePool", {act},
           {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}});
  const std::string y = b.Op("MaxPool", {b.Conv(pooled, cc, 8, 1, 0)},
                             {{"kernel_shape", std::vector<int64_t>{3, 3}},
                              {"pads", std::vector<int64_t>{1, 1, 1, 1}},
                              {"strides", std::vector<int64_t>{2, 2}}});
  graph::Graph g = b.Finish({y});
  auto kinds = CheckAndKinds(g, {{"x", RandomTensor(DType::kFloat32, {n, c, 9, 9}, -1, 1, 3)}});
  ExpectNoFallback(kinds);
  EXPECT_THAT(kinds, Contains("Concat(nchwc)"));
  EXPECT_THAT(kinds, Contains("BatchNormalization+Relu(nchwc)"));
  EXPECT_THAT(kinds, Contains("AveragePool(nchwc)"));
  ExpectUnpackOnlyAtTheEnd(kinds);
}

// A transformer block's dense layers: MatMul + bias + an activation fused into the dense kernel,
// a residual Add fused into the second; int64 mask arithmetic on natural tensors.
graph::Graph DenseBlock(const std::string& activation, bool with_mask) {
  Builder b;
  const int64_t m = 24, d = 32, f = 64;
  const std::string x = b.Input("x", DType::kFloat32, {m, d});
  const std::string h =
      b.Op("Add", {b.Op("MatMul", {x, b.Weight("w1", {d, f})}), b.Weight("b1", {f}, 0.1)});
  std::string act;
  if (activation == "gelu") {  // the erf form exporters write
    const std::string e =
        b.Op("Erf", {b.Op("Div", {h, b.Const("sqrt2", Tensor::ScalarFloat(1.41421356f))})});
    act = b.Op("Mul", {b.Op("Mul", {h, b.Op("Add", {e, b.Const("one", Tensor::ScalarFloat(1))})}),
                       b.Const("half", Tensor::ScalarFloat(0.5f))});
  } else {  // SiLU
    act = b.Op("Mul", {h, b.Op("Sigmoid", {h})});
  }
  const std::string y = b.Op("Add", {b.Op("MatMul", {act, b.Weight("w2", {f, d})}), x});
  if (!with_mask) return b.Finish({y});
  // (1 - mask) * -10000 as float, the extended attention mask.
  const std::string mask = b.Input("mask", DType::kInt64, {1, m});
  const std::string mf = b.Op("Cast", {mask}, {{"to", int64_t{1}}});
  const std::string ext =
      b.Op("Mul", {b.Op("Sub", {b.Const("one_f", Tensor::ScalarFloat(1.0f)), mf}),
                   b.Const("big", Tensor::ScalarFloat(-10000.0f))});
  return b.Finish({y, ext});
}

TEST(LayoutFlowTest, DenseEpiloguesAndMaskArithmetic) {
  int ran = 0;
  for (const auto& [act, with_mask] :
       std::vector<std::pair<std::string, bool>>{{"silu", false}, {"silu", true}, {"gelu", true}}) {
    SCOPED_TRACE(absl::StrCat(act, with_mask ? " with the mask" : ""));
    graph::Graph g = DenseBlock(act, with_mask);
    std::string op;
    if (ReferenceLacksAnOperator(g, &op)) {
      std::printf("[  SKIPPED ] %s: no reference kernel for %s\n", act.c_str(), op.c_str());
      continue;
    }
    ++ran;
    std::map<std::string, Tensor> in = {{"x", RandomTensor(DType::kFloat32, {24, 32}, -1, 1, 5)}};
    if (with_mask) in["mask"] = RandomTensor(DType::kInt64, {1, 24}, 0, 2, 4);
    auto kinds = CheckAndKinds(g, in);
    ExpectNoFallback(kinds);
    EXPECT_TRUE(AnyStartsWith(
        kinds, act == "gelu" ? "dense_pack+Add+Div+Erf+Add+Mul+Mul" : "dense_pack+Add+Sigmoid+Mul"))
        << absl::StrJoin(kinds, ", ");
    EXPECT_THAT(kinds, Contains("dense_pack+Add"));
    if (with_mask) EXPECT_THAT(kinds, Contains("Cast+Sub+Mul"));
  }
  EXPECT_GE(ran, 1);
}

// Views share bytes; graph outputs that are inputs or constants are copied; an output read by a
// later step is written once.
TEST(LayoutFlowTest, ViewsAndOutputs) {
  Builder b;
  const std::string x = b.Input("x", DType::kFloat32, {2, 3, 4});
  const std::string r = b.Op("Reshape", {x, b.Ints("s", {6, 4})});
  const std::string t = b.Op("Tanh", {r});
  const std::string u = b.Op("Unsqueeze", {t, b.Ints("axes", {0})});
  const std::string z = b.Op("Add", {u, b.Const("k", Tensor::ScalarFloat(2.0f))});
  graph::Graph g = b.Finish({z, u, x});
  auto kinds = CheckAndKinds(g, {{"x", RandomTensor(DType::kFloat32, {2, 3, 4}, -1, 1, 6)}});
  ExpectNoFallback(kinds);
  // Reshape and Unsqueeze are views: two kernels (Tanh, Add) and one copy (the input as output).
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "copy"), 1) << absl::StrJoin(kinds, ", ");
  EXPECT_EQ(kinds.size(), 3u) << absl::StrJoin(kinds, ", ");
}

}  // namespace
}  // namespace loom::runtime
