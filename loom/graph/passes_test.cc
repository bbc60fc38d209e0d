#include "loom/graph/passes.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/shape_inference.h"

namespace loom::graph {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TensorType F32(Shape s) { return {DType::kFloat32, std::move(s)}; }

Node MakeNode(std::string name, std::string op, std::vector<std::string> in,
              std::vector<std::string> out, std::map<std::string, AttrValue> attrs = {}) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

Tensor Ints(std::vector<int64_t> v) {
  return Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v);
}

std::vector<int64_t> IntValues(const Tensor& t) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < t.num_elements(); ++i) v.push_back(t.Int64At(i));
  return v;
}

// Deterministic pseudo-random floats in [-1, 1).
Tensor RandomFloats(Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(DType::kFloat32, std::move(shape));
  uint32_t s = seed * 2654435761u + 1;
  for (float& v : t.values<float>()) {
    s = s * 1664525u + 1013904223u;
    v = lo + (hi - lo) * static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
  }
  return t;
}

// A tiny evaluator for the int64 shape arithmetic of exported models: Shape, Gather, Unsqueeze,
// Concat (all on int64 tensors of rank <= 1). Stands in for the reference kernels.
absl::StatusOr<std::vector<Tensor>> FakeEval(const Node& node, int64_t opset,
                                             const std::vector<Tensor>& in) {
  if (node.op_type == "Gather") {
    const Tensor& data = in[0];
    const Tensor& idx = in[1];
    if (data.rank() != 1) return absl::UnimplementedError("fake Gather: 1-D data only");
    std::vector<int64_t> out;
    for (int64_t i = 0; i < idx.num_elements(); ++i) {
      int64_t j = idx.Int64At(i);
      if (j < 0) j += data.dim(0);
      out.push_back(data.Int64At(j));
    }
    if (idx.rank() == 0) return std::vector<Tensor>{Tensor::ScalarInt64(out[0])};
    return std::vector<Tensor>{Tensor::FromInt64s(idx.shape(), out)};
  }
  if (node.op_type == "Unsqueeze") {
    if (in[0].rank() != 0) return absl::UnimplementedError("fake Unsqueeze: scalars only");
    return std::vector<Tensor>{Ints({in[0].Int64At(0)})};
  }
  if (node.op_type == "Concat") {
    std::vector<int64_t> out;
    for (const Tensor& t : in) {
      for (int64_t v : IntValues(t)) out.push_back(v);
    }
    return std::vector<Tensor>{Ints(out)};
  }
  if (node.op_type == "Shape") {
    std::vector<int64_t> dims(in[0].shape().begin(), in[0].shape().end());
    return std::vector<Tensor>{Ints(dims)};
  }
  return absl::UnimplementedError(absl::StrCat("fake evaluator has no ", node.op_type));
}

// ----- RemoveIdentityLike --------------------------------------------------------------------

TEST(RemoveIdentityLikeTest, RewiresConsumers) {
  Graph g;
  g.inputs.push_back({"x", F32({2})});
  g.outputs.push_back({"c", {}});
  g.nodes.push_back(MakeNode("r1", "Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("id", "Identity", {"a"}, {"b"}));
  g.nodes.push_back(MakeNode("drop", "Dropout", {"b"}, {"d"}));
  g.nodes.push_back(MakeNode("r2", "Relu", {"d"}, {"c"}));
  int64_t removed = 0;
  ASSERT_TRUE(RemoveIdentityLike(g, &removed).ok());
  EXPECT_EQ(removed, 2);
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_THAT(g.nodes[1].inputs, ElementsAre("a"));
  EXPECT_TRUE(g.Validate().ok());
}

TEST(RemoveIdentityLikeTest, GraphOutputRenamesProducer) {
  Graph g;
  g.inputs.push_back({"x", F32({2})});
  g.outputs.push_back({"out", {}});
  g.outputs.push_back({"side", {}});
  g.nodes.push_back(MakeNode("r1", "Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("r2", "Sigmoid", {"a"}, {"side"}));
  g.nodes.push_back(MakeNode("id", "Identity", {"a"}, {"out"}));
  ASSERT_TRUE(RemoveIdentityLike(g).ok());
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_THAT(g.nodes[0].outputs, ElementsAre("out"));
  EXPECT_THAT(g.nodes[1].inputs, ElementsAre("out"));
  EXPECT_TRUE(g.Validate().ok());
}

TEST(RemoveIdentityLikeTest, KeepsWhatCannotBeRemoved) {
  Graph g;
  g.inputs.push_back({"x", F32({2})});
  g.outputs.push_back({"y", {}});
  g.outputs.push_back({"mask_user", {}});
  // Identity forwarding a graph input straight to a graph output: nothing to rename.
  g.nodes.push_back(MakeNode("id", "Identity", {"x"}, {"y"}));
  // Dropout whose mask is read.
  g.nodes.push_back(MakeNode("drop", "Dropout", {"x"}, {"d", "mask"}));
  g.nodes.push_back(MakeNode("use", "Identity", {"mask"}, {"mask_user"}));
  int64_t removed = -1;
  ASSERT_TRUE(RemoveIdentityLike(g, &removed).ok());
  // "use" is removed by renaming the mask output; the other two stay.
  EXPECT_EQ(removed, 1);
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(g.nodes[0].name, "id");
  EXPECT_EQ(g.nodes[1].name, "drop");
  EXPECT_THAT(g.nodes[1].outputs, ElementsAre("d", "mask_user"));
  EXPECT_TRUE(g.Validate().ok());
}

// ----- ConstantFold --------------------------------------------------------------------------

// x -> Relu -> r; Shape(r) -> Gather(0) -> Unsqueeze -> Concat(with Constant [-1]) -> Reshape(r).
Graph TorchvisionFlatten() {
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", F32({1, 4, 2, 2})});
  g.outputs.push_back({"out", {}});
  g.initializers["zero"] = Tensor::ScalarInt64(0);
  g.initializers["axes0"] = Ints({0});
  g.nodes.push_back(MakeNode("relu", "Relu", {"x"}, {"r"}));
  g.nodes.push_back(MakeNode("shape", "Shape", {"r"}, {"s"}));
  g.nodes.push_back(MakeNode("gather", "Gather", {"s", "zero"}, {"n"}, {{"axis", int64_t{0}}}));
  g.nodes.push_back(MakeNode("unsq", "Unsqueeze", {"n", "axes0"}, {"nu"}));
  g.nodes.push_back(MakeNode("minus1", "Constant", {}, {"m"}, {{"value", Ints({-1})}}));
  g.nodes.push_back(MakeNode("concat", "Concat", {"nu", "m"}, {"shp"}, {{"axis", int64_t{0}}}));
  g.nodes.push_back(MakeNode("reshape", "Reshape", {"r", "shp"}, {"out"}));
  return g;
}

TEST(ConstantFoldTest, ShapeChainBecomesConstantReshapeShape) {
  Graph g = TorchvisionFlatten();
  // Without folding the Reshape's shape is not static.
  Graph unfolded = g;
  auto st = InferShapes(unfolded);
  EXPECT_THAT(st.message(), HasSubstr("Reshape 'reshape': input 'shp' (shape) is not constant"));

  int64_t folded = 0;
  ASSERT_TRUE(ConstantFold(g, FakeEval, {}, &folded).ok());
  EXPECT_EQ(folded, 5);
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(g.nodes[0].name, "relu");
  EXPECT_EQ(g.nodes[1].name, "reshape");
  ASSERT_TRUE(g.IsInitializer("shp"));
  EXPECT_THAT(IntValues(g.initializers.at("shp")), ElementsAre(1, -1));
  EXPECT_EQ(g.value_types.at("out"), F32({1, 16}));
  ASSERT_TRUE(InferShapes(g).ok());
  EXPECT_EQ(g.value_types.at("out"), F32({1, 16}));
}

TEST(ConstantFoldTest, WithoutEvaluatorOnlyShapeAndConstantFold) {
  Graph g = TorchvisionFlatten();
  // The Reshape would need the evaluator's result: its shape stays non-constant.
  Graph with_reshape = g;
  EXPECT_THAT(ConstantFold(with_reshape, nullptr).message(),
              HasSubstr("input 'shp' (shape) is not constant"));
  g.nodes.pop_back();
  g.outputs[0].name = "shp";
  int64_t folded = 0;
  ASSERT_TRUE(ConstantFold(g, nullptr, {}, &folded).ok());
  EXPECT_EQ(folded, 2);
  EXPECT_THAT(IntValues(g.initializers.at("s")), ElementsAre(1, 4, 2, 2));
  EXPECT_THAT(IntValues(g.initializers.at("m")), ElementsAre(-1));
  EXPECT_EQ(g.ProducerOf("n"), 1);  // the Gather is still there
}

TEST(ConstantFoldTest, ShapeStartEndFromOpset15) {
  Graph g;
  g.opset = 15;
  g.inputs.push_back({"x", F32({2, 3, 5, 7})});
  g.outputs.push_back({"s", {}});
  g.nodes.push_back(
      MakeNode("shape", "Shape", {"x"}, {"s"}, {{"start", int64_t{-3}}, {"end", int64_t{3}}}));
  ASSERT_TRUE(ConstantFold(g, FakeEval).ok());
  EXPECT_TRUE(g.nodes.empty());
  EXPECT_THAT(IntValues(g.initializers.at("s")), ElementsAre(3, 5));
}

TEST(ConstantFoldTest, ConstantGraphOutputStaysAnInitializerOutput) {
  Graph g;
  g.inputs.push_back({"x", F32({2})});
  g.outputs.push_back({"y", {}});
  g.outputs.push_back({"k", {}});
  g.nodes.push_back(MakeNode("relu", "Relu", {"x"}, {"y"}));
  g.nodes.push_back(MakeNode("c", "Constant", {}, {"k"}, {{"value", Ints({7, 8})}}));
  ASSERT_TRUE(ConstantFold(g, FakeEval).ok());
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_THAT(IntValues(g.initializers.at("k")), ElementsAre(7, 8));
  EXPECT_TRUE(g.Validate().ok());
  g.RemoveDeadNodes();
  EXPECT_TRUE(g.IsInitializer("k"));
  ASSERT_TRUE(InferShapes(g).ok());
  EXPECT_EQ(g.outputs[1].type, (TensorType{DType::kInt64, {2}}));
}

TEST(ConstantFoldTest, EvaluatorErrorsNameTheNode) {
  Graph g;
  g.inputs.push_back({"x", F32({2})});
  g.initializers["a"] = Tensor::ScalarFloat(1);
  g.outputs.push_back({"y", {}});
  g.nodes.push_back(MakeNode("relu_const", "Relu", {"a"}, {"y"}));
  auto st = ConstantFold(g, FakeEval);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(st.message(), HasSubstr("constant folding Relu 'relu_const'"));

  // An evaluator that returns the wrong type is caught.
  NodeEvaluator wrong = [](const Node&, int64_t,
                           const std::vector<Tensor>&) -> absl::StatusOr<std::vector<Tensor>> {
    return std::vector<Tensor>{Ints({1, 2})};
  };
  st = ConstantFold(g, wrong);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("evaluated to int64[2] but shape inference says float32[]"));
}

// The fold budget is checked on the inferred output types, before the evaluator allocates.
TEST(ConstantFoldTest, BudgetRefusesLargeFoldsBeforeEvaluating) {
  // The 127-byte-model attack: Pad a constant [2] by [0, 268435455] -> 2^28 + 1 floats.
  Graph g;
  g.opset = 18;
  g.initializers["data"] = Tensor::FromFloats({2}, std::vector<float>{1, 2});
  g.initializers["pads"] = Ints({0, 268435455});
  g.outputs.push_back({"y", {}});
  g.nodes.push_back(MakeNode("pad", "Pad", {"data", "pads"}, {"y"}));
  int calls = 0;
  NodeEvaluator counting = [&](const Node& n, int64_t opset, const std::vector<Tensor>& in) {
    ++calls;
    return FakeEval(n, opset, in);
  };
  Graph defaults = g;
  absl::Status st = ConstantFold(defaults, counting);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("constant folding Pad 'pad': output 'y' would be "
                                      "float32[268435457] (1073741828 bytes), above the "
                                      "per-tensor limit of 1073741824 bytes"));
  st = ConstantFold(g, counting, {.max_tensor_bytes = 1 << 20});
  EXPECT_THAT(st.message(), HasSubstr("above the per-tensor limit of 1048576 bytes"));
  EXPECT_EQ(calls, 0);
}

TEST(ConstantFoldTest, BudgetCountsTheTotalOfFoldedTensors) {
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", F32({2})});
  g.initializers["a"] = Ints({1, 2, 3, 4, 5, 6, 7, 8});  // 64 bytes: the model's own, not counted
  g.outputs.push_back({"y", {}});
  g.outputs.push_back({"z", {}});
  g.nodes.push_back(MakeNode("s1", "Shape", {"a"}, {"y"}));                               // 8 bytes
  g.nodes.push_back(MakeNode("c", "Constant", {}, {"z"}, {{"value", Ints({1, 2, 3})}}));  // 24
  Graph ok = g;
  EXPECT_TRUE(ConstantFold(ok, FakeEval, {.max_total_bytes = 32}).ok());
  absl::Status st = ConstantFold(g, FakeEval, {.max_total_bytes = 31});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("constant folding Constant 'c': output 'z' (int64[3], 24 "
                                      "bytes) brings the folded constants to 32 bytes, above the "
                                      "per-model limit of 31 bytes"));
}

TEST(ConstantFoldTest, SizeFoldsFromTheStaticType) {
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", F32({2, 3, 4})});
  g.outputs.push_back({"n", {}});
  g.nodes.push_back(MakeNode("size", "Size", {"x"}, {"n"}));
  ASSERT_TRUE(ConstantFold(g, nullptr).ok());
  EXPECT_TRUE(g.nodes.empty());
  EXPECT_THAT(IntValues(g.initializers.at("n")), ElementsAre(24));
}

// ----- FoldBatchNormIntoConv -----------------------------------------------------------------

// Naive NCHW conv, stride 1, symmetric padding `pad`, groups 1; optional bias.
std::vector<float> NaiveConv(const Tensor& x, const Tensor& w, const Tensor* b, int64_t pad) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t k = w.dim(0), r = w.dim(2), s = w.dim(3);
  const int64_t oh = h + 2 * pad - r + 1, ow = wd + 2 * pad - s + 1;
  std::vector<float> y(static_cast<size_t>(n * k * oh * ow));
  const float* xv = x.data<float>();
  const float* wv = w.data<float>();
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ik = 0; ik < k; ++ik)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b ? b->data<float>()[ik] : 0.0;
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t ir = 0; ir < r; ++ir)
              for (int64_t is = 0; is < s; ++is) {
                const int64_t hi = i + ir - pad, wi = j + is - pad;
                if (hi < 0 || hi >= h || wi < 0 || wi >= wd) continue;
                acc += static_cast<double>(xv[((in * c + ic) * h + hi) * wd + wi]) *
                       wv[((ik * c + ic) * r + ir) * s + is];
              }
          y[static_cast<size_t>(((in * k + ik) * oh + i) * ow + j)] = static_cast<float>(acc);
        }
  return y;
}

// In-place inference BatchNorm over NCHW data with `k` channels of `plane` elements each.
void NaiveBatchNorm(std::vector<float>& y, int64_t k, int64_t plane, const Graph& g,
                    const Node& bn) {
  const float* gamma = g.initializers.at(bn.inputs[1]).data<float>();
  const float* beta = g.initializers.at(bn.inputs[2]).data<float>();
  const float* mean = g.initializers.at(bn.inputs[3]).data<float>();
  const float* var = g.initializers.at(bn.inputs[4]).data<float>();
  const double eps = bn.GetFloat("epsilon", 1e-5f);
  for (size_t idx = 0; idx < y.size(); ++idx) {
    const int64_t ch = static_cast<int64_t>(idx) / plane % k;
    y[idx] =
        static_cast<float>((y[idx] - mean[ch]) / std::sqrt(var[ch] + eps) * gamma[ch] + beta[ch]);
  }
}

Graph ConvBn(bool with_bias) {
  Graph g;
  g.inputs.push_back({"x", F32({2, 3, 5, 5})});
  g.outputs.push_back({"y", {}});
  g.initializers["w"] = RandomFloats({4, 3, 3, 3}, 1);
  std::vector<std::string> conv_in = {"x", "w"};
  if (with_bias) {
    g.initializers["b"] = RandomFloats({4}, 2);
    conv_in.push_back("b");
  }
  g.initializers["gamma"] = RandomFloats({4}, 3, 0.5f, 2.0f);
  g.initializers["beta"] = RandomFloats({4}, 4);
  g.initializers["mean"] = RandomFloats({4}, 5);
  g.initializers["var"] = RandomFloats({4}, 6, 0.1f, 3.0f);
  g.nodes.push_back(
      MakeNode("conv", "Conv", conv_in, {"c"}, {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}));
  g.nodes.push_back(MakeNode("bn", "BatchNormalization", {"c", "gamma", "beta", "mean", "var"},
                             {"y"}, {{"epsilon", 1e-3f}}));
  return g;
}

void ExpectFoldMatchesConvThenBn(bool with_bias) {
  Graph g = ConvBn(with_bias);
  const Tensor x = RandomFloats({2, 3, 5, 5}, 9);
  std::vector<float> expected =
      NaiveConv(x, g.initializers.at("w"), with_bias ? &g.initializers.at("b") : nullptr, 1);
  NaiveBatchNorm(expected, 4, 25, g, g.nodes[1]);
  const Tensor w_before = g.initializers.at("w").Clone();

  int64_t folded = 0;
  ASSERT_TRUE(FoldBatchNormIntoConv(g, &folded).ok());
  EXPECT_EQ(folded, 1);
  ASSERT_EQ(g.nodes.size(), 1u);
  const Node& conv = g.nodes[0];
  EXPECT_EQ(conv.op_type, "Conv");
  EXPECT_THAT(conv.outputs, ElementsAre("y"));
  ASSERT_EQ(conv.inputs.size(), 3u);
  EXPECT_NE(conv.inputs[1], "w");  // fresh weights; the original is untouched
  EXPECT_EQ(
      std::memcmp(w_before.raw_data(), g.initializers.at("w").raw_data(), w_before.num_bytes()), 0);
  std::vector<float> got =
      NaiveConv(x, g.initializers.at(conv.inputs[1]), &g.initializers.at(conv.inputs[2]), 1);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5) << i;
  ASSERT_TRUE(InferShapes(g).ok());
  EXPECT_EQ(g.value_types.at("y"), F32({2, 4, 5, 5}));
}

TEST(FoldBatchNormTest, NumericallyEqualWithBias) { ExpectFoldMatchesConvThenBn(true); }
TEST(FoldBatchNormTest, NumericallyEqualWithoutBias) { ExpectFoldMatchesConvThenBn(false); }

TEST(FoldBatchNormTest, SkipsWhenConvOutputHasOtherUses) {
  Graph g = ConvBn(true);
  g.outputs.push_back({"c", {}});
  int64_t folded = -1;
  ASSERT_TRUE(FoldBatchNormIntoConv(g, &folded).ok());
  EXPECT_EQ(folded, 0);
  EXPECT_EQ(g.nodes.size(), 2u);
}

TEST(FoldBatchNormTest, SkipsWhenParametersAreNotInitializers) {
  Graph g = ConvBn(true);
  g.initializers.erase("mean");
  g.inputs.push_back({"mean", F32({4})});
  int64_t folded = -1;
  ASSERT_TRUE(FoldBatchNormIntoConv(g, &folded).ok());
  EXPECT_EQ(folded, 0);
}

// ----- TrimConvPaddingTaps --------------------------------------------------------------------

// Naive NCHW conv with pads {top, left, bottom, right}, strides and dilations; groups 1.
std::vector<float> NaiveConv2d(const Tensor& x, const Tensor& w, const std::vector<int64_t>& pads,
                               int64_t stride, int64_t dilation) {
  const int64_t c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t k = w.dim(0), r = w.dim(2), s = w.dim(3);
  const int64_t oh = (h + pads[0] + pads[2] - dilation * (r - 1) - 1) / stride + 1;
  const int64_t ow = (wd + pads[1] + pads[3] - dilation * (s - 1) - 1) / stride + 1;
  std::vector<float> y;
  for (int64_t ik = 0; ik < k; ++ik)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        double acc = 0;
        for (int64_t ic = 0; ic < c; ++ic)
          for (int64_t ir = 0; ir < r; ++ir)
            for (int64_t is = 0; is < s; ++is) {
              const int64_t hi = i * stride + ir * dilation - pads[0];
              const int64_t wi = j * stride + is * dilation - pads[1];
              if (hi < 0 || hi >= h || wi < 0 || wi >= wd) continue;
              acc += static_cast<double>(x.data<float>()[(ic * h + hi) * wd + wi]) *
                     w.data<float>()[((ik * c + ic) * r + ir) * s + is];
            }
        y.push_back(static_cast<float>(acc));
      }
  return y;
}

Graph DilatedConv(Shape x, Shape w, std::vector<int64_t> pads, int64_t stride, int64_t dilation) {
  Graph g;
  g.inputs.push_back({"x", F32(x)});
  g.outputs.push_back({"y", {}});
  g.initializers["w"] = RandomFloats(w, 1);
  g.nodes.push_back(MakeNode("conv", "Conv", {"x", "w"}, {"y"},
                             {{"pads", pads},
                              {"strides", std::vector<int64_t>{stride, stride}},
                              {"dilations", std::vector<int64_t>{dilation, dilation}}}));
  EXPECT_TRUE(InferShapes(g).ok());
  return g;
}

// Trims the graph's conv and checks that the output type and values are unchanged.
void ExpectTrimKeepsTheOutput(Graph& g, int64_t trimmed_convs) {
  const Tensor x = RandomFloats(g.inputs[0].type.shape, 9);
  const TensorType y_type = g.value_types.at("y");
  const Node before = g.nodes[0];
  const std::vector<float> want =
      NaiveConv2d(x, g.initializers.at("w"), before.GetInts("pads"), before.GetInts("strides")[0],
                  before.GetInts("dilations")[0]);
  int64_t trimmed = -1;
  ASSERT_TRUE(TrimConvPaddingTaps(g, &trimmed).ok());
  EXPECT_EQ(trimmed, trimmed_convs);
  const Node& conv = g.nodes[0];
  const std::vector<float> got =
      NaiveConv2d(x, g.initializers.at(conv.inputs[1]), conv.GetInts("pads"),
                  conv.GetInts("strides")[0], conv.GetInts("dilations")[0]);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
  ASSERT_TRUE(InferShapes(g).ok());
  EXPECT_EQ(g.value_types.at("y"), y_type);
}

TEST(TrimConvPaddingTapsTest, AtrousConvOnASmallMapBecomesOneByOne) {
  // DeepLabV3's ASPP branch: 3x3, dilation 6 (pads 6) on a 5x5 map: the outer taps read rows
  // -6 and +6 away, outside the map for every output, so only the centre tap remains.
  Graph g = DilatedConv({1, 3, 5, 5}, {4, 3, 3, 3}, {6, 6, 6, 6}, 1, 6);
  ExpectTrimKeepsTheOutput(g, 1);
  const Node& conv = g.nodes[0];
  EXPECT_EQ(g.initializers.at(conv.inputs[1]).shape(), (Shape{4, 3, 1, 1}));
  EXPECT_THAT(conv.GetInts("pads"), ElementsAre(0, 0, 0, 0));
  EXPECT_THAT(conv.GetInts("kernel_shape"), ElementsAre(1, 1));
  // The centre tap's weights, in order.
  const Tensor& w = g.initializers.at("w");
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(g.initializers.at(conv.inputs[1]).data<float>()[i], w.data<float>()[i * 9 + 4]);
  }
}

TEST(TrimConvPaddingTapsTest, TrimsEachDimOnItsOwnAndOnlyTheDeadSide) {
  // 3x3, dilation 4, pads 4 all round, on a 4x9 map: along the rows tap 0 reads rows -4..-1 and
  // tap 2 rows 4..7, padding for every output (the map has 4 rows); along the columns every tap
  // reads the map for some output, so the columns keep their 3 taps and pads.
  Graph g = DilatedConv({1, 2, 4, 9}, {3, 2, 3, 3}, {4, 4, 4, 4}, 1, 4);
  ExpectTrimKeepsTheOutput(g, 1);
  const Node& conv = g.nodes[0];
  EXPECT_EQ(g.initializers.at(conv.inputs[1]).shape(), (Shape{3, 2, 1, 3}));
  EXPECT_THAT(conv.GetInts("pads"), ElementsAre(0, 4, 0, 4));
}

TEST(TrimConvPaddingTapsTest, LiveTapsAreKeptAndStridesCount) {
  // Every tap of an ordinary padded 3x3 conv reads the map somewhere.
  Graph plain = DilatedConv({1, 2, 6, 6}, {2, 2, 3, 3}, {1, 1, 1, 1}, 2, 1);
  ExpectTrimKeepsTheOutput(plain, 0);
  EXPECT_EQ(plain.nodes[0].inputs[1], "w");
  // Stride 2, dilation 3, pads 3 on a 3x3 map: the 2x2 output's tap 0 reads rows -3 and -1, tap
  // 2 rows 3 and 5: both dead, whereas the stride alone (pads 1, dilation 1) leaves all live.
  Graph strided = DilatedConv({1, 1, 3, 3}, {1, 1, 3, 3}, {3, 3, 3, 3}, 2, 3);
  ExpectTrimKeepsTheOutput(strided, 1);
  EXPECT_THAT(strided.nodes[0].GetInts("kernel_shape"), ElementsAre(1, 1));
  EXPECT_THAT(strided.nodes[0].GetInts("pads"), ElementsAre(0, 0, 0, 0));
  Graph live = DilatedConv({1, 1, 7, 7}, {1, 1, 3, 3}, {1, 1, 1, 1}, 2, 1);
  ExpectTrimKeepsTheOutput(live, 0);
}

// ----- Conv1dAsConv2d --------------------------------------------------------------------------

TEST(Conv1dAsConv2dTest, ReshapesAroundATwoDimensionalConv) {
  // wav2vec2's positional convolution in small: grouped, dilated, strided, auto_pad resolved.
  Graph g;
  g.inputs.push_back({"x", F32({1, 4, 11})});
  g.outputs.push_back({"y", {}});
  g.initializers["w"] = RandomFloats({6, 2, 3}, 3);
  g.initializers["b"] = RandomFloats({6}, 4);
  g.nodes.push_back(MakeNode("conv", "Conv", {"x", "w", "b"}, {"y"},
                             {{"group", int64_t{2}},
                              {"auto_pad", std::string("SAME_UPPER")},
                              {"strides", std::vector<int64_t>{2}},
                              {"dilations", std::vector<int64_t>{2}}}));
  ASSERT_TRUE(InferShapes(g).ok());
  const TensorType y_type = g.value_types.at("y");
  ASSERT_EQ(y_type, F32({1, 6, 6}));

  int64_t rewritten = -1;
  ASSERT_TRUE(Conv1dAsConv2d(g, &rewritten).ok());
  EXPECT_EQ(rewritten, 1);
  ASSERT_EQ(g.nodes.size(), 3u);
  EXPECT_EQ(g.nodes[0].op_type, "Reshape");
  EXPECT_EQ(g.nodes[0].inputs[0], "x");
  EXPECT_THAT(IntValues(g.initializers.at(g.nodes[0].inputs[1])), ElementsAre(1, 4, 1, 11));
  const Node& conv = g.nodes[1];
  EXPECT_EQ(conv.op_type, "Conv");
  EXPECT_EQ(conv.inputs[0], g.nodes[0].outputs[0]);
  EXPECT_EQ(conv.inputs[2], "b");
  EXPECT_FALSE(conv.attrs.contains("auto_pad"));
  EXPECT_EQ(conv.GetInt("group", 1), 2);
  EXPECT_THAT(conv.GetInts("kernel_shape"), ElementsAre(1, 3));
  EXPECT_THAT(conv.GetInts("strides"), ElementsAre(1, 2));
  EXPECT_THAT(conv.GetInts("dilations"), ElementsAre(1, 2));
  // SAME_UPPER: output ceil(11 / 2) = 6 needs (6 - 1) * 2 + 5 - 11 = 4 pads, 2 and 2.
  EXPECT_THAT(conv.GetInts("pads"), ElementsAre(0, 2, 0, 2));
  const Tensor& w2 = g.initializers.at(conv.inputs[1]);
  EXPECT_EQ(w2.shape(), (Shape{6, 2, 1, 3}));
  EXPECT_EQ(std::memcmp(w2.raw_data(), g.initializers.at("w").raw_data(), 6 * 2 * 3 * 4), 0);
  EXPECT_EQ(g.nodes[2].op_type, "Reshape");
  EXPECT_EQ(g.nodes[2].inputs[0], conv.outputs[0]);
  EXPECT_THAT(g.nodes[2].outputs, ElementsAre("y"));
  EXPECT_THAT(IntValues(g.initializers.at(g.nodes[2].inputs[1])), ElementsAre(1, 6, 6));
  const std::string conv_out = conv.outputs[0];
  ASSERT_TRUE(InferShapes(g).ok());  // may reorder g.nodes
  EXPECT_EQ(g.value_types.at(conv_out), F32({1, 6, 1, 6}));
  EXPECT_EQ(g.value_types.at("y"), y_type);
}

TEST(Conv1dAsConv2dTest, LeavesOtherConvsAlone) {
  // A 2-D conv, and a 1-D conv whose weight is computed (not an initializer).
  Graph g;
  g.inputs.push_back({"x", F32({1, 2, 5, 5})});
  g.inputs.push_back({"s", F32({1, 2, 9})});
  g.inputs.push_back({"ws", F32({3, 2, 3})});
  g.outputs.push_back({"y", {}});
  g.outputs.push_back({"z", {}});
  g.initializers["w"] = RandomFloats({3, 2, 3, 3}, 5);
  g.nodes.push_back(MakeNode("conv2d", "Conv", {"x", "w"}, {"y"}));
  g.nodes.push_back(MakeNode("conv1d", "Conv", {"s", "ws"}, {"z"}));
  ASSERT_TRUE(InferShapes(g).ok());
  int64_t rewritten = -1;
  ASSERT_TRUE(Conv1dAsConv2d(g, &rewritten).ok());
  EXPECT_EQ(rewritten, 0);
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(g.nodes[0].inputs[1], "w");
  EXPECT_EQ(g.nodes[1].inputs[0], "s");
}

// ----- SinkUnitDimReshapes ----------------------------------------------------------------------

TEST(SinkUnitDimReshapesTest, ElementwiseChainRunsOnTheFourDimValue) {
  // x [1, 4, 1, 6] -> Reshape [1, 4, 6] -> Mul by a per-channel [4, 1] -> Erf (also a 3-D graph
  // output) -> Add 0.5 -> Reshape [1, 4, 1, 6] -> Relu: what Conv1dAsConv2d leaves between two
  // 1-D convolutions, with a GELU-like chain.
  Graph g;
  g.inputs.push_back({"x", F32({1, 4, 1, 6})});
  g.outputs.push_back({"r", {}});
  g.outputs.push_back({"e", {}});
  g.initializers["s3"] = Ints({1, 4, 6});
  g.initializers["s4"] = Ints({1, 4, 1, 6});
  g.initializers["scale"] = RandomFloats({4, 1}, 7);
  g.initializers["half"] = Tensor::ScalarFloat(0.5f);
  g.nodes.push_back(MakeNode("to3d", "Reshape", {"x", "s3"}, {"y"}));
  g.nodes.push_back(MakeNode("mul", "Mul", {"y", "scale"}, {"m"}));
  g.nodes.push_back(MakeNode("erf", "Erf", {"m"}, {"e"}));
  g.nodes.push_back(MakeNode("add", "Add", {"e", "half"}, {"a"}));
  g.nodes.push_back(MakeNode("to4d", "Reshape", {"a", "s4"}, {"z"}));
  g.nodes.push_back(MakeNode("relu", "Relu", {"z"}, {"r"}));
  ASSERT_TRUE(InferShapes(g).ok());

  int64_t moved = -1;
  ASSERT_TRUE(SinkUnitDimReshapes(g, &moved).ok());
  EXPECT_EQ(moved, 1);
  g.RemoveDeadNodes();
  ASSERT_TRUE(InferShapes(g).ok());
  std::map<std::string, const Node*> by_op;
  int reshapes = 0;
  for (const Node& n : g.nodes) {
    by_op[n.op_type] = &n;
    reshapes += n.op_type == "Reshape" ? 1 : 0;
  }
  ASSERT_EQ(by_op.count("Mul"), 1u);
  ASSERT_EQ(by_op.count("Relu"), 1u);
  // The chain reads x and computes 4-D values; the per-channel scale has the unit dim inserted.
  const Node& mul = *by_op.at("Mul");
  EXPECT_EQ(mul.inputs[0], "x");
  EXPECT_EQ(g.initializers.at(mul.inputs[1]).shape(), (Shape{1, 4, 1, 1}));
  EXPECT_EQ(g.value_types.at(mul.outputs[0]), F32({1, 4, 1, 6}));
  // Relu reads the Add's 4-D output directly; only the 3-D graph output is a Reshape.
  EXPECT_EQ(by_op.at("Relu")->inputs[0], by_op.at("Add")->outputs[0]);
  EXPECT_EQ(g.value_types.at(by_op.at("Add")->outputs[0]), F32({1, 4, 1, 6}));
  EXPECT_EQ(reshapes, 1);
  ASSERT_EQ(by_op.count("Reshape"), 1u);
  EXPECT_THAT(by_op.at("Reshape")->outputs, ElementsAre("e"));
  EXPECT_EQ(by_op.at("Reshape")->inputs[0], by_op.at("Erf")->outputs[0]);
  EXPECT_EQ(g.value_types.at("e"), F32({1, 4, 6}));
  EXPECT_EQ(g.value_types.at("r"), F32({1, 4, 1, 6}));
}

TEST(SinkUnitDimReshapesTest, LeavesOtherReshapesAlone) {
  // A Reshape that merges dims, and one that drops a unit channel dim: neither is a 1-D view of
  // a 4-D map.
  Graph g;
  g.inputs.push_back({"x", F32({1, 4, 2, 3})});
  g.inputs.push_back({"c", F32({1, 1, 2, 3})});
  g.outputs.push_back({"a", {}});
  g.outputs.push_back({"b", {}});
  g.initializers["s1"] = Ints({1, 4, 6});
  g.initializers["s2"] = Ints({1, 2, 3});
  g.nodes.push_back(MakeNode("merge", "Reshape", {"x", "s1"}, {"xm"}));
  g.nodes.push_back(MakeNode("relu", "Relu", {"xm"}, {"a"}));
  g.nodes.push_back(MakeNode("drop_c", "Reshape", {"c", "s2"}, {"cd"}));
  g.nodes.push_back(MakeNode("neg", "Neg", {"cd"}, {"b"}));
  ASSERT_TRUE(InferShapes(g).ok());
  int64_t moved = -1;
  ASSERT_TRUE(SinkUnitDimReshapes(g, &moved).ok());
  EXPECT_EQ(moved, 0);
  ASSERT_EQ(g.nodes.size(), 4u);
  for (const Node& n : g.nodes) {
    if (n.op_type == "Relu") {
      EXPECT_EQ(n.inputs[0], "xm");
    } else if (n.op_type == "Neg") {
      EXPECT_EQ(n.inputs[0], "cd");
    }
  }
}

// ----- Pipeline ------------------------------------------------------------------------------

TEST(OptimizeForInferenceTest, RunsAllPasses) {
  Graph g = ConvBn(false);
  // conv -> bn -> y becomes conv -> bn -> t -> Identity -> relu -> flatten-by-shape-chain.
  g.nodes[1].outputs = {"t"};
  g.opset = 13;
  g.initializers["zero"] = Tensor::ScalarInt64(0);
  g.initializers["axes0"] = Ints({0});
  g.nodes.push_back(MakeNode("id", "Identity", {"t"}, {"t2"}));
  g.nodes.push_back(MakeNode("relu", "Relu", {"t2"}, {"r"}));
  g.nodes.push_back(MakeNode("shape", "Shape", {"r"}, {"s"}));
  g.nodes.push_back(MakeNode("gather", "Gather", {"s", "zero"}, {"n"}));
  g.nodes.push_back(MakeNode("unsq", "Unsqueeze", {"n", "axes0"}, {"nu"}));
  g.nodes.push_back(MakeNode("minus1", "Constant", {}, {"m"}, {{"value", Ints({-1})}}));
  g.nodes.push_back(MakeNode("concat", "Concat", {"nu", "m"}, {"shp"}, {{"axis", int64_t{0}}}));
  g.nodes.push_back(MakeNode("reshape", "Reshape", {"r", "shp"}, {"y"}));
  g.initializers["unused"] = Tensor::ScalarFloat(3);

  auto stats = OptimizeForInference(g, FakeEval);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->removed_identity, 1);
  EXPECT_EQ(stats->folded_constants, 5);
  EXPECT_EQ(stats->folded_batchnorms, 1);
  std::vector<std::string> ops;
  for (const Node& n : g.nodes) ops.push_back(n.op_type);
  EXPECT_THAT(ops, ElementsAre("Conv", "Relu", "Reshape"));
  EXPECT_FALSE(g.IsInitializer("unused"));
  EXPECT_FALSE(g.IsInitializer("gamma"));
  EXPECT_FALSE(g.IsInitializer("w"));  // replaced by the folded weights
  EXPECT_EQ(g.outputs[0].type, F32({2, 100}));
  EXPECT_TRUE(g.Validate().ok());
}

}  // namespace
}  // namespace loom::graph

namespace loom::graph {
namespace {

// Attention's scores as torch exports them: Q * s and K^T * s before Q K^T (here also a Div).
Graph ScaledScores(const std::string& k_scale_op, float k_scale) {
  Graph g;
  g.inputs = {{"q", F32({2, 5, 8})}, {"k", F32({2, 5, 8})}};
  g.initializers["s"] = Tensor::ScalarFloat(0.5f);
  g.initializers["t"] = Tensor::FromFloats({1}, std::vector<float>{k_scale});
  g.nodes = {MakeNode("mq", "Mul", {"s", "q"}, {"qs"}),
             MakeNode("tr", "Transpose", {"k"}, {"kt"}, {{"perm", std::vector<int64_t>{0, 2, 1}}}),
             MakeNode("sk", k_scale_op, {"kt", "t"}, {"kts"}),
             MakeNode("mm", "MatMul", {"qs", "kts"}, {"scores"}),
             MakeNode("sm", "Softmax", {"scores"}, {"p"}, {{"axis", int64_t{-1}}})};
  g.outputs = {{"p", {}}};
  EXPECT_TRUE(InferShapes(g).ok());
  return g;
}

TEST(MoveScalesPastMatMulTest, BothOperandScalesBecomeOneAfterTheProduct) {
  Graph g = ScaledScores("Div", 4.0f);
  int64_t moved = 0;
  ASSERT_TRUE(MoveScalesPastMatMul(g, &moved).ok());
  EXPECT_EQ(moved, 1);
  g.RemoveDeadNodes();
  ASSERT_TRUE(InferShapes(g).ok());
  std::vector<std::string> ops;
  for (const Node& n : g.nodes) ops.push_back(n.op_type);
  EXPECT_THAT(ops, ElementsAre("Transpose", "MatMul", "Mul", "Softmax"));
  const Node& mm = g.nodes[1];
  EXPECT_THAT(mm.inputs, ElementsAre("q", "kt"));  // the Transpose is now the operand
  const Node& mul = g.nodes[2];
  EXPECT_EQ(mul.inputs[0], mm.outputs[0]);
  EXPECT_EQ(mul.outputs[0], "scores");
  const Tensor* scale = g.FindInitializer(mul.inputs[1]);
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->num_elements(), 1);
  EXPECT_FLOAT_EQ(scale->data<float>()[0], 0.5f / 4.0f);
  EXPECT_EQ(g.TypeOf("scores")->shape, (Shape{2, 5, 5}));
}

TEST(MoveScalesPastMatMulTest, LeavesWhatIsNoScaleOfTheOperand) {
  // c / X is not a scale of X; a scale used twice stays; a [1, 1, 1, 1] constant would add a
  // dim to the product.
  Graph g = ScaledScores("Mul", 2.0f);
  g.nodes[2] = MakeNode("sk", "Div", {"t", "kt"}, {"kts"});
  g.nodes.push_back(MakeNode("use", "Relu", {"qs"}, {"r"}));
  g.outputs.push_back({"r", {}});
  ASSERT_TRUE(InferShapes(g).ok());
  int64_t moved = -1;
  ASSERT_TRUE(MoveScalesPastMatMul(g, &moved).ok());
  EXPECT_EQ(moved, 0);
  EXPECT_THAT(g.nodes[3].inputs, ElementsAre("qs", "kts"));

  Graph h = ScaledScores("Mul", 2.0f);
  h.initializers["t"] = Tensor::FromFloats({1, 1, 1, 1}, std::vector<float>{2.0f});
  ASSERT_TRUE(InferShapes(h).ok());
  ASSERT_TRUE(MoveScalesPastMatMul(h, &moved).ok());
  EXPECT_EQ(moved, 1);  // only Q's scale moves
  EXPECT_THAT(h.nodes[3].inputs, ElementsAre("q", "kts"));
  EXPECT_FLOAT_EQ(h.FindInitializer(h.nodes[4].inputs[1])->data<float>()[0], 0.5f);
}

}  // namespace
}  // namespace loom::graph
