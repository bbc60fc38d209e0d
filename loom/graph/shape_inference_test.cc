#include "loom/graph/shape_inference.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::graph {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

TensorType F32(Shape s) { return {DType::kFloat32, std::move(s)}; }

Node MakeNode(std::string op, std::vector<std::string> in, std::vector<std::string> out = {"y"},
              std::map<std::string, AttrValue> attrs = {}, std::string name = "n") {
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

Tensor Zeros(Shape s) { return Tensor(DType::kFloat32, std::move(s)); }

// A graph with float32 inputs x (and more) to run one node's inference on.
class OneNode {
 public:
  explicit OneNode(int64_t opset = 17) { g_.opset = opset; }
  OneNode& Input(const std::string& name, TensorType t) {
    g_.inputs.push_back({name, t});
    g_.value_types[name] = t;
    return *this;
  }
  OneNode& Init(const std::string& name, Tensor t) {
    g_.initializers[name] = std::move(t);
    return *this;
  }
  absl::StatusOr<std::vector<TensorType>> Run(const Node& node) {
    return InferNodeOutputTypes(g_, node);
  }
  // Shape of the first output; fails the test on error.
  Shape RunShape(const Node& node) {
    auto r = Run(node);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->empty()) return {-999};
    return (*r)[0].shape;
  }
  Graph& graph() { return g_; }

 private:
  Graph g_;
};

// ----- Conv ---------------------------------------------------------------------------------

TEST(ConvShapeTest, PaddedThreeByThreeKeepsSize) {
  OneNode t;
  t.Input("x", F32({1, 64, 56, 56})).Init("w", Zeros({64, 64, 3, 3})).Init("b", Zeros({64}));
  Node n = MakeNode(
      "Conv", {"x", "w", "b"}, {"y"},
      {{"pads", std::vector<int64_t>{1, 1, 1, 1}}, {"kernel_shape", std::vector<int64_t>{3, 3}}});
  EXPECT_THAT(t.RunShape(n), ElementsAre(1, 64, 56, 56));
}

TEST(ConvShapeTest, SameUpperStrideTwo) {
  OneNode t;
  t.Input("x", F32({1, 3, 7, 8})).Init("w", Zeros({16, 3, 3, 3}));
  Node n =
      MakeNode("Conv", {"x", "w"}, {"y"},
               {{"auto_pad", std::string("SAME_UPPER")}, {"strides", std::vector<int64_t>{2, 2}}});
  EXPECT_THAT(t.RunShape(n), ElementsAre(1, 16, 4, 4));
  // Total padding: H: (4-1)*2+3-7 = 2 -> 1/1; W: (4-1)*2+3-8 = 1 -> 0 before, 1 after.
  auto geo = ResolveWindowGeometry(n, {7, 8}, {3, 3}, false);
  ASSERT_TRUE(geo.ok()) << geo.status();
  EXPECT_THAT(geo->pads, ElementsAre(1, 0, 1, 1));
  n.attrs["auto_pad"] = std::string("SAME_LOWER");
  geo = ResolveWindowGeometry(n, {7, 8}, {3, 3}, false);
  ASSERT_TRUE(geo.ok());
  EXPECT_THAT(geo->pads, ElementsAre(1, 1, 1, 0));
}

TEST(ConvShapeTest, HugeWindowValuesAreRefusedBeforeTheyOverflow) {
  for (const char* attr : {"pads", "dilations", "strides"}) {
    const int64_t huge = std::numeric_limits<int64_t>::max() - 1;
    std::vector<int64_t> values = std::string(attr) == "pads" ? std::vector<int64_t>{0, 0, huge, 0}
                                                              : std::vector<int64_t>{huge, 1};
    Node n = MakeNode("MaxPool", {"x"}, {"y"},
                      {{attr, values}, {"kernel_shape", std::vector<int64_t>{3, 3}}});
    auto geo = ResolveWindowGeometry(n, {7, 8}, {3, 3}, false);
    EXPECT_EQ(geo.status().code(), absl::StatusCode::kInvalidArgument) << attr;
    EXPECT_THAT(geo.status().message(), HasSubstr("must be at most 2147483647")) << attr;
  }
}

TEST(ConvShapeTest, ValidAndDilations) {
  OneNode t;
  t.Input("x", F32({2, 4, 10, 10})).Init("w", Zeros({8, 4, 3, 3}));
  Node valid =
      MakeNode("Conv", {"x", "w"}, {"y"},
               {{"auto_pad", std::string("VALID")}, {"pads", std::vector<int64_t>{5, 5, 5, 5}}});
  EXPECT_THAT(t.RunShape(valid), ElementsAre(2, 8, 8, 8));
  Node dilated = MakeNode(
      "Conv", {"x", "w"}, {"y"},
      {{"dilations", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{1, 2}}});
  // Dilated extent 5: H = 10-5+1 = 6; W = (10-5)/2+1 = 3.
  EXPECT_THAT(t.RunShape(dilated), ElementsAre(2, 8, 6, 3));
}

TEST(ConvShapeTest, DepthwiseGroups) {
  OneNode t;
  t.Input("x", F32({1, 32, 8, 8})).Init("w", Zeros({64, 1, 3, 3}));
  Node n = MakeNode("Conv", {"x", "w"}, {"y"},
                    {{"group", int64_t{32}}, {"pads", std::vector<int64_t>{1, 1, 1, 1}}});
  EXPECT_THAT(t.RunShape(n), ElementsAre(1, 64, 8, 8));
}

TEST(ConvShapeTest, MismatchedChannelsNamesNode) {
  OneNode t;
  t.Input("x", F32({1, 5, 8, 8})).Init("w", Zeros({8, 3, 3, 3}));
  Node n = MakeNode("Conv", {"x", "w"}, {"y"}, {}, "c1");
  auto r = t.Run(n);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("Conv 'c1': input channels 5 do not match weight channels 3 x group 1"));
}

TEST(ConvShapeTest, BadAttributesAreRejected) {
  OneNode t;
  t.Input("x", F32({1, 3, 8, 8})).Init("w", Zeros({8, 3, 3, 3})).Init("b", Zeros({7}));
  auto r =
      t.Run(MakeNode("Conv", {"x", "w"}, {"y"}, {{"kernel_shape", std::vector<int64_t>{5, 5}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("kernel_shape [5,5] does not match weight"));
  r = t.Run(MakeNode("Conv", {"x", "w"}, {"y"}, {{"strides", std::vector<int64_t>{1, 1, 1}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("'strides' [1,1,1] must have 2 values"));
  r = t.Run(MakeNode("Conv", {"x", "w"}, {"y"}, {{"group", std::string("two")}}));
  EXPECT_THAT(r.status().message(), HasSubstr("attribute 'group' must be an int"));
  r = t.Run(MakeNode("Conv", {"x", "w", "b"}));
  EXPECT_THAT(r.status().message(), HasSubstr("bias float32[7] must have shape [8]"));
  r = t.Run(MakeNode("Conv", {"x", "w"}, {"y"}, {{"auto_pad", std::string("SAME")}}));
  EXPECT_THAT(r.status().message(), HasSubstr("auto_pad 'SAME'"));
  OneNode small;
  small.Input("x", F32({1, 3, 2, 2})).Init("w", Zeros({8, 3, 3, 3}));
  r = small.Run(MakeNode("Conv", {"x", "w"}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("kernel extent 3 exceeds padded input 2"));
}

// ----- Pools --------------------------------------------------------------------------------

TEST(PoolShapeTest, MaxPoolCeilMode) {
  OneNode t;
  t.Input("x", F32({1, 1, 112, 112}));
  std::map<std::string, AttrValue> attrs = {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                            {"strides", std::vector<int64_t>{2, 2}}};
  EXPECT_THAT(t.RunShape(MakeNode("MaxPool", {"x"}, {"y"}, attrs)), ElementsAre(1, 1, 55, 55));
  attrs["ceil_mode"] = int64_t{1};
  EXPECT_THAT(t.RunShape(MakeNode("MaxPool", {"x"}, {"y"}, attrs)), ElementsAre(1, 1, 56, 56));
}

TEST(PoolShapeTest, CeilModeDropsWindowStartingInPadding) {
  OneNode t;
  t.Input("x", F32({1, 1, 5, 5}));
  std::map<std::string, AttrValue> attrs = {{"kernel_shape", std::vector<int64_t>{2, 2}},
                                            {"strides", std::vector<int64_t>{2, 2}},
                                            {"pads", std::vector<int64_t>{1, 1, 1, 1}},
                                            {"ceil_mode", int64_t{1}}};
  // ceil((5+2-2)/2)+1 = 4, but the 4th window would start at 6 >= 5+1 (in the end padding).
  EXPECT_THAT(t.RunShape(MakeNode("MaxPool", {"x"}, {"y"}, attrs)), ElementsAre(1, 1, 3, 3));
}

TEST(PoolShapeTest, MaxPoolIndicesOutputIsInt64) {
  OneNode t;
  t.Input("x", F32({1, 1, 4, 4}));
  auto r = t.Run(MakeNode("MaxPool", {"x"}, {"y", "idx"},
                          {{"kernel_shape", std::vector<int64_t>{2, 2}}}, "mp"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[1], (TensorType{DType::kInt64, {1, 1, 3, 3}}));
}

TEST(PoolShapeTest, MaxPoolNeedsKernelShape) {
  OneNode t;
  t.Input("x", F32({1, 1, 4, 4}));
  auto r = t.Run(MakeNode("MaxPool", {"x"}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("'kernel_shape' is required"));
}

TEST(PoolShapeTest, AveragePool) {
  OneNode t;
  t.Input("x", F32({1, 3, 32, 32}));
  EXPECT_THAT(t.RunShape(MakeNode("AveragePool", {"x"}, {"y"},
                                  {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                   {"pads", std::vector<int64_t>{1, 1, 1, 1}},
                                   {"count_include_pad", int64_t{1}}})),
              ElementsAre(1, 3, 32, 32));
  EXPECT_THAT(t.RunShape(MakeNode("AveragePool", {"x"}, {"y"},
                                  {{"kernel_shape", std::vector<int64_t>{2, 2}},
                                   {"strides", std::vector<int64_t>{2, 2}}})),
              ElementsAre(1, 3, 16, 16));
  EXPECT_THAT(t.RunShape(MakeNode("AveragePool", {"x"}, {"y"},
                                  {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                   {"strides", std::vector<int64_t>{3, 3}},
                                   {"ceil_mode", int64_t{1}}})),
              ElementsAre(1, 3, 11, 11));
}

TEST(PoolShapeTest, GlobalAveragePool) {
  OneNode t;
  t.Input("x", F32({2, 512, 7, 7}));
  EXPECT_THAT(t.RunShape(MakeNode("GlobalAveragePool", {"x"})), ElementsAre(2, 512, 1, 1));
}

// ----- Gemm / MatMul -------------------------------------------------------------------------

TEST(GemmShapeTest, TransposesAndBias) {
  OneNode t;
  t.Input("a", F32({4, 3})).Init("b", Zeros({5, 4})).Init("c", Zeros({5}));
  t.Init("c31", Zeros({3, 1})).Init("bad", Zeros({4, 5}));
  std::map<std::string, AttrValue> tt = {{"transA", int64_t{1}}, {"transB", int64_t{1}}};
  EXPECT_THAT(t.RunShape(MakeNode("Gemm", {"a", "b", "c"}, {"y"}, tt)), ElementsAre(3, 5));
  EXPECT_THAT(t.RunShape(MakeNode("Gemm", {"a", "b", "c31"}, {"y"}, tt)), ElementsAre(3, 5));
  auto r = t.Run(MakeNode("Gemm", {"a", "b", "bad"}, {"y"}, tt));
  EXPECT_THAT(r.status().message(), HasSubstr("C float32[4,5] cannot be broadcast to [3,5]"));
  r = t.Run(MakeNode("Gemm", {"a", "b"}, {"y"}, {{"transB", int64_t{1}}}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("inner dimensions differ"));
}

TEST(MatMulShapeTest, NumpySemantics) {
  OneNode t;
  t.Input("a4", F32({2, 3, 4, 5})).Input("v", F32({5})).Input("a", F32({2, 1, 4, 5}));
  t.Init("w", Zeros({5, 6})).Init("b3", Zeros({3, 5, 6}));
  EXPECT_THAT(t.RunShape(MakeNode("MatMul", {"a4", "w"})), ElementsAre(2, 3, 4, 6));
  EXPECT_THAT(t.RunShape(MakeNode("MatMul", {"v", "w"})), ElementsAre(6));
  EXPECT_THAT(t.RunShape(MakeNode("MatMul", {"a", "b3"})), ElementsAre(2, 3, 4, 6));
  EXPECT_THAT(t.RunShape(MakeNode("MatMul", {"v", "v"})), ElementsAre());
  EXPECT_THAT(t.RunShape(MakeNode("MatMul", {"a4", "v"})), ElementsAre(2, 3, 4));
  auto r = t.Run(MakeNode("MatMul", {"w", "w"}));
  EXPECT_THAT(r.status().message(), HasSubstr("inner dimensions differ"));
}

// ----- Elementwise ---------------------------------------------------------------------------

TEST(ElementwiseShapeTest, BroadcastingAdd) {
  OneNode t;
  t.Input("a", F32({1, 3, 1, 1})).Input("b", F32({2, 3, 4, 4})).Input("c", F32({4}));
  t.Input("i", {DType::kInt64, {4}}).Input("d", F32({3, 2}));
  EXPECT_THAT(t.RunShape(MakeNode("Add", {"a", "b"})), ElementsAre(2, 3, 4, 4));
  EXPECT_THAT(t.RunShape(MakeNode("Mul", {"c", "a"})), ElementsAre(1, 3, 1, 4));
  auto r = t.Run(MakeNode("Sub", {"b", "d"}, {"y"}, {}, "s"));
  EXPECT_THAT(r.status().message(), HasSubstr("Sub 's': shapes [2,3,4,4] and [3,2]"));
  r = t.Run(MakeNode("Div", {"c", "i"}));
  EXPECT_THAT(r.status().message(), HasSubstr("operand types differ"));
  auto ok = t.Run(MakeNode("Mul", {"i", "i"}));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)[0], (TensorType{DType::kInt64, {4}}));
}

TEST(ElementwiseShapeTest, UnaryOpsKeepType) {
  OneNode t;
  t.Input("x", F32({2, 7})).Input("i", {DType::kInt64, {2}});
  for (const char* op : {"Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu"}) {
    EXPECT_THAT(t.RunShape(MakeNode(op, {"x"})), ElementsAre(2, 7)) << op;
  }
  EXPECT_THAT(t.RunShape(MakeNode("Relu", {"i"})), ElementsAre(2));
  auto r = t.Run(MakeNode("Sigmoid", {"i"}));
  EXPECT_THAT(r.status().message(),
              HasSubstr("has type int64[2]; Sigmoid accepts float32, float16"));
  r = t.Run(MakeNode("LeakyRelu", {"x"}, {"y"}, {{"alpha", std::string("x")}}));
  EXPECT_THAT(r.status().message(), HasSubstr("attribute 'alpha' must be a float"));
}

TEST(ElementwiseShapeTest, ClipMinMaxInputs) {
  OneNode t;
  t.Input("x", F32({2, 7}));
  t.Init("lo", Tensor::ScalarFloat(0)).Init("hi", Tensor::ScalarFloat(6)).Init("v", Zeros({2}));
  EXPECT_THAT(t.RunShape(MakeNode("Clip", {"x", "lo", "hi"})), ElementsAre(2, 7));
  EXPECT_THAT(t.RunShape(MakeNode("Clip", {"x", "", "hi"})), ElementsAre(2, 7));
  auto r = t.Run(MakeNode("Clip", {"x", "v"}));
  EXPECT_THAT(r.status().message(), HasSubstr("min must be a float32 scalar"));
}

TEST(SoftmaxShapeTest, Opset11CoercesAtAxisOneOpset13IsPerAxis) {
  Node n = MakeNode("Softmax", {"x"});
  auto s11 = ResolveSoftmax(n, 11, 4);
  ASSERT_TRUE(s11.ok());
  EXPECT_EQ(s11->axis, 1);
  EXPECT_TRUE(s11->coerce_2d);
  auto s13 = ResolveSoftmax(n, 13, 4);
  ASSERT_TRUE(s13.ok());
  EXPECT_EQ(s13->axis, 3);
  EXPECT_FALSE(s13->coerce_2d);

  OneNode t11(11), t13(13);
  t11.Input("x", F32({2, 3, 4}));
  t13.Input("x", F32({2, 3, 4}));
  EXPECT_THAT(t11.RunShape(n), ElementsAre(2, 3, 4));
  EXPECT_THAT(t13.RunShape(n), ElementsAre(2, 3, 4));
  auto r = t13.Run(MakeNode("Softmax", {"x"}, {"y"}, {{"axis", int64_t{3}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("axis 3 is out of range for rank 3"));
}

// ----- Reductions and normalization ----------------------------------------------------------

TEST(ReduceMeanShapeTest, AxesAttributeBefore18) {
  OneNode t(13);
  t.Input("x", F32({2, 3, 4, 5}));
  EXPECT_THAT(
      t.RunShape(MakeNode("ReduceMean", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{2, -1}}})),
      ElementsAre(2, 3, 1, 1));
  EXPECT_THAT(t.RunShape(MakeNode("ReduceMean", {"x"}, {"y"},
                                  {{"axes", std::vector<int64_t>{1}}, {"keepdims", int64_t{0}}})),
              ElementsAre(2, 4, 5));
  EXPECT_THAT(t.RunShape(MakeNode("ReduceMean", {"x"}, {"y"}, {{"keepdims", int64_t{0}}})),
              ElementsAre());
}

TEST(ReduceMeanShapeTest, AxesInputFrom18) {
  OneNode t(18);
  t.Input("x", F32({2, 3, 4, 5})).Input("dyn", {DType::kInt64, {1}}).Init("axes", Ints({-1}));
  EXPECT_THAT(t.RunShape(MakeNode("ReduceMean", {"x", "axes"})), ElementsAre(2, 3, 4, 1));
  EXPECT_THAT(
      t.RunShape(MakeNode("ReduceMean", {"x"}, {"y"}, {{"noop_with_empty_axes", int64_t{1}}})),
      ElementsAre(2, 3, 4, 5));
  auto r = t.Run(MakeNode("ReduceMean", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{1}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("from opset 18 the axes are an input"));
  r = t.Run(MakeNode("ReduceMean", {"x", "dyn"}, {"y"}, {}, "rm"));
  EXPECT_THAT(r.status().message(),
              HasSubstr("ReduceMean 'rm': input 'dyn' (axes) is not constant"));
}

TEST(BatchNormShapeTest, ChecksParametersAndOutputs) {
  OneNode t;
  t.Input("x", F32({1, 4, 3, 3}));
  for (const char* p : {"s", "b", "m", "v"}) t.Init(p, Zeros({4}));
  t.Init("v3", Zeros({3}));
  EXPECT_THAT(t.RunShape(MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"})),
              ElementsAre(1, 4, 3, 3));
  auto r = t.Run(MakeNode("BatchNormalization", {"x", "s", "b", "m", "v3"}));
  EXPECT_THAT(r.status().message(), HasSubstr("var float32[3] must have shape [4]"));
  r = t.Run(MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"}, {"y", "rm", "rv"}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
}

// ----- Shape manipulation --------------------------------------------------------------------

TEST(ConcatShapeTest, NegativeAxisAndMismatch) {
  OneNode t;
  t.Input("a", F32({1, 2, 3})).Input("b", F32({1, 2, 5})).Input("c", F32({1, 3, 5}));
  EXPECT_THAT(t.RunShape(MakeNode("Concat", {"a", "b"}, {"y"}, {{"axis", int64_t{-1}}})),
              ElementsAre(1, 2, 8));
  auto r = t.Run(MakeNode("Concat", {"a", "c"}, {"y"}, {{"axis", int64_t{2}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("outside axis 2"));
  r = t.Run(MakeNode("Concat", {"a", "b"}));
  EXPECT_THAT(r.status().message(), HasSubstr("'axis' is required"));
}

TEST(FlattenShapeTest, AxisZeroOneAndRank) {
  OneNode t;
  t.Input("x", F32({2, 3, 4, 5}));
  EXPECT_THAT(t.RunShape(MakeNode("Flatten", {"x"}, {"y"}, {{"axis", int64_t{0}}})),
              ElementsAre(1, 120));
  EXPECT_THAT(t.RunShape(MakeNode("Flatten", {"x"})), ElementsAre(2, 60));
  EXPECT_THAT(t.RunShape(MakeNode("Flatten", {"x"}, {"y"}, {{"axis", int64_t{4}}})),
              ElementsAre(120, 1));
  EXPECT_THAT(t.RunShape(MakeNode("Flatten", {"x"}, {"y"}, {{"axis", int64_t{-1}}})),
              ElementsAre(24, 5));
  EXPECT_FALSE(t.Run(MakeNode("Flatten", {"x"}, {"y"}, {{"axis", int64_t{5}}})).ok());
}

TEST(ReshapeShapeTest, ZeroCopiesAndMinusOneInfers) {
  OneNode t;
  t.Input("x", F32({2, 3, 4})).Init("s", Ints({0, -1})).Init("s2", Ints({-1, 0, 2}));
  t.Init("two", Ints({-1, -1})).Init("bad", Ints({5, 5}));
  EXPECT_THAT(t.RunShape(MakeNode("Reshape", {"x", "s"})), ElementsAre(2, 12));
  EXPECT_THAT(t.RunShape(MakeNode("Reshape", {"x", "s2"})), ElementsAre(4, 3, 2));
  EXPECT_THAT(t.Run(MakeNode("Reshape", {"x", "two"})).status().message(),
              HasSubstr("shape [-1,-1] has two -1"));
  EXPECT_THAT(t.Run(MakeNode("Reshape", {"x", "bad"})).status().message(),
              HasSubstr("cannot reshape [2,3,4] (24 elements) to [5,5]"));
}

TEST(ReshapeShapeTest, AllowZeroKeepsZero) {
  OneNode t;
  t.Input("x", F32({0, 4})).Init("s", Ints({0, 2, 2}));
  EXPECT_THAT(t.RunShape(MakeNode("Reshape", {"x", "s"}, {"y"}, {{"allowzero", int64_t{1}}})),
              ElementsAre(0, 2, 2));
  // Without allowzero a 0 copies the input's dim.
  t.Input("x2", F32({2, 4})).Init("s1", Ints({2, 0}));
  EXPECT_THAT(t.RunShape(MakeNode("Reshape", {"x2", "s1"})), ElementsAre(2, 4));
  t.Init("z", Ints({0, 8}));
  EXPECT_THAT(t.Run(MakeNode("Reshape", {"x2", "z"})).status().message(),
              HasSubstr("cannot reshape [2,4] (8 elements) to [0,8]"));
}

TEST(ReshapeShapeTest, ShapeFromConstantNode) {
  OneNode t;
  t.Input("x", F32({2, 3, 4}));
  t.graph().nodes.push_back(
      MakeNode("Constant", {}, {"shape"}, {{"value", Ints({6, 4})}}, "const"));
  t.graph().value_types["shape"] = {DType::kInt64, {2}};
  EXPECT_THAT(t.RunShape(MakeNode("Reshape", {"x", "shape"})), ElementsAre(6, 4));
}

TEST(ReshapeShapeTest, NonConstantShapeIsAnError) {
  OneNode t;
  t.Input("x", F32({2, 3, 4})).Input("s", {DType::kInt64, {2}});
  auto r = t.Run(MakeNode("Reshape", {"x", "s"}, {"y"}, {}, "r1"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      r.status().message(),
      HasSubstr("Reshape 'r1': input 's' (shape) is not constant; Loom needs static shapes"));
}

TEST(TransposeShapeTest, DefaultReversesAndPermIsChecked) {
  OneNode t;
  t.Input("x", F32({2, 3, 4}));
  EXPECT_THAT(t.RunShape(MakeNode("Transpose", {"x"})), ElementsAre(4, 3, 2));
  EXPECT_THAT(
      t.RunShape(MakeNode("Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{1, 0, 2}}})),
      ElementsAre(3, 2, 4));
  auto r = t.Run(MakeNode("Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{1, 1, 2}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("is not a permutation"));
}

TEST(SliceShapeTest, NegativeStepsAndClamping) {
  OneNode t;
  t.Input("x", F32({10, 6}));
  t.Init("s_rev", Ints({-1})).Init("e_rev", Ints({kMin})).Init("m1", Ints({-1}));
  t.Init("s8", Ints({8})).Init("e2", Ints({2})).Init("m2", Ints({-2})).Init("ax0", Ints({0}));
  t.Init("s0", Ints({1})).Init("emax", Ints({kMax})).Init("ax1", Ints({1}));
  t.Init("sneg", Ints({-100})).Init("eneg", Ints({-2}));
  // Full reverse of axis 0 (start -1 -> 9, end INT64_MIN clamped to -1).
  EXPECT_THAT(t.RunShape(MakeNode("Slice", {"x", "s_rev", "e_rev", "ax0", "m1"})),
              ElementsAre(10, 6));
  // 8, 6, 4.
  EXPECT_THAT(t.RunShape(MakeNode("Slice", {"x", "s8", "e2", "ax0", "m2"})), ElementsAre(3, 6));
  // Axis 1 from 1 to the end.
  EXPECT_THAT(t.RunShape(MakeNode("Slice", {"x", "s0", "emax", "ax1"})), ElementsAre(10, 5));
  // Start clamped to 0, end -2 -> 8.
  EXPECT_THAT(t.RunShape(MakeNode("Slice", {"x", "sneg", "eneg"})), ElementsAre(8, 6));
  // Empty: start 8 > end 2 with a positive step.
  EXPECT_THAT(t.RunShape(MakeNode("Slice", {"x", "s8", "e2"})), ElementsAre(0, 6));
}

TEST(SliceShapeTest, ErrorsNameTheProblem) {
  OneNode t;
  t.Input("x", F32({10})).Input("dyn", {DType::kInt64, {1}});
  t.Init("s", Ints({0})).Init("e", Ints({5})).Init("zero", Ints({0})).Init("two", Ints({0, 1}));
  EXPECT_THAT(t.Run(MakeNode("Slice", {"x", "dyn", "e"})).status().message(),
              HasSubstr("(starts) is not constant"));
  EXPECT_THAT(t.Run(MakeNode("Slice", {"x", "s", "e", "", "zero"})).status().message(),
              HasSubstr("steps [0] contain a 0"));
  EXPECT_THAT(t.Run(MakeNode("Slice", {"x", "two", "e"})).status().message(),
              HasSubstr("must have the same length"));
}

TEST(GatherShapeTest, NegativeAxisAndScalarIndex) {
  OneNode t;
  t.Input("x", F32({2, 3, 4})).Input("idx", {DType::kInt64, {5}});
  t.Init("scalar", Tensor::ScalarInt64(-1)).Init("oob", Ints({0, 3}));
  EXPECT_THAT(t.RunShape(MakeNode("Gather", {"x", "idx"}, {"y"}, {{"axis", int64_t{-1}}})),
              ElementsAre(2, 3, 5));
  EXPECT_THAT(t.RunShape(MakeNode("Gather", {"x", "scalar"}, {"y"}, {{"axis", int64_t{1}}})),
              ElementsAre(2, 4));
  auto r = t.Run(MakeNode("Gather", {"x", "oob"}, {"y"}, {{"axis", int64_t{1}}}));
  EXPECT_THAT(r.status().message(),
              HasSubstr("index 3 (element 1 of the indices) is out of range for axis 1 of size 3"));
  r = t.Run(MakeNode("Gather", {"x", "idx"}, {"y"}, {{"axis", int64_t{-4}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("axis -4 is out of range for rank 3"));
}

TEST(ShapeOpTest, StartEndFromOpset15) {
  OneNode t15(15), t13(13);
  t15.Input("x", F32({1, 3, 8, 8}));
  t13.Input("x", F32({1, 3, 8, 8}));
  Node n = MakeNode("Shape", {"x"}, {"y"}, {{"start", int64_t{1}}, {"end", int64_t{-1}}});
  auto r = t15.Run(n);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0], (TensorType{DType::kInt64, {2}}));
  EXPECT_THAT(t13.RunShape(n), ElementsAre(4));
}

TEST(SqueezeShapeTest, AxesAttributeBefore13InputFrom13) {
  OneNode t11(11), t13(13);
  t11.Input("x", F32({2, 1, 3, 1}));
  t13.Input("x", F32({2, 1, 3, 1})).Init("axes", Ints({-1}));
  EXPECT_THAT(t11.RunShape(MakeNode("Squeeze", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{1}}})),
              ElementsAre(2, 3, 1));
  EXPECT_THAT(t13.RunShape(MakeNode("Squeeze", {"x", "axes"})), ElementsAre(2, 1, 3));
  EXPECT_THAT(t13.RunShape(MakeNode("Squeeze", {"x"})), ElementsAre(2, 3));
  EXPECT_THAT(t11.RunShape(MakeNode("Squeeze", {"x"})), ElementsAre(2, 3));
  auto r = t13.Run(MakeNode("Squeeze", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{1}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("from opset 13 the axes are an input"));
  r = t11.Run(MakeNode("Squeeze", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{0}}}));
  EXPECT_THAT(r.status().message(), HasSubstr("its size is not 1"));
}

TEST(UnsqueezeShapeTest, AxesAttributeBefore13InputFrom13) {
  OneNode t11(11), t13(13);
  t11.Input("x", F32({3, 4}));
  t13.Input("x", F32({3, 4})).Init("axes", Ints({0, 3})).Init("dup", Ints({1, 1}));
  EXPECT_THAT(
      t11.RunShape(MakeNode("Unsqueeze", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{0, -1}}})),
      ElementsAre(1, 3, 4, 1));
  EXPECT_THAT(t13.RunShape(MakeNode("Unsqueeze", {"x", "axes"})), ElementsAre(1, 3, 4, 1));
  EXPECT_THAT(t13.Run(MakeNode("Unsqueeze", {"x", "dup"})).status().message(),
              HasSubstr("is repeated"));
  EXPECT_THAT(t13.Run(MakeNode("Unsqueeze", {"x"})).status().message(),
              HasSubstr("axes are required"));
}

TEST(MiscShapeTest, ConstantIdentityDropout) {
  OneNode t;
  t.Input("x", F32({2, 3}));
  auto c = t.Run(MakeNode("Constant", {}, {"y"}, {{"value", Zeros({4, 5})}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)[0], F32({4, 5}));
  c = t.Run(MakeNode("Constant", {}, {"y"}, {{"value_ints", std::vector<int64_t>{1, 2, 3}}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)[0], (TensorType{DType::kInt64, {3}}));
  EXPECT_FALSE(t.Run(MakeNode("Constant", {}, {"y"})).ok());
  EXPECT_THAT(t.RunShape(MakeNode("Identity", {"x"})), ElementsAre(2, 3));
  auto d = t.Run(MakeNode("Dropout", {"x"}, {"y", "mask"}));
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ((*d)[1], (TensorType{DType::kBool, {2, 3}}));
  t.Init("train", Tensor(DType::kBool, {}))
      .Init("on", Tensor::FromInt64s({}, std::vector<int64_t>{1}));
  EXPECT_TRUE(t.Run(MakeNode("Dropout", {"x", "", "train"})).ok());
  EXPECT_EQ(t.Run(MakeNode("Dropout", {"x", "", "on"})).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(PadShapeTest, ModesAndPads) {
  OneNode t;
  t.Input("x", F32({1, 3, 4, 4}));
  t.Init("p", Ints({0, 0, 1, 2, 0, 0, 1, 2})).Init("big", Ints({0, 0, 4, 0, 0, 0, 0, 0}));
  t.Init("neg", Ints({0, 0, -3, 0, 0, 0, -3, 0})).Init("cv", Tensor::ScalarFloat(1));
  EXPECT_THAT(t.RunShape(MakeNode("Pad", {"x", "p", "cv"})), ElementsAre(1, 3, 6, 8));
  EXPECT_THAT(t.RunShape(MakeNode("Pad", {"x", "p"}, {"y"}, {{"mode", std::string("reflect")}})),
              ElementsAre(1, 3, 6, 8));
  EXPECT_THAT(t.RunShape(MakeNode("Pad", {"x", "big"}, {"y"}, {{"mode", std::string("edge")}})),
              ElementsAre(1, 3, 8, 4));
  // Reflection repeats for pads beyond the dim, as numpy.pad does.
  EXPECT_THAT(t.RunShape(MakeNode("Pad", {"x", "big"}, {"y"}, {{"mode", std::string("reflect")}})),
              ElementsAre(1, 3, 8, 4));
  // wrap is opset 19's.
  EXPECT_THAT(
      t.Run(MakeNode("Pad", {"x", "p"}, {"y"}, {{"mode", std::string("wrap")}})).status().message(),
      HasSubstr("mode 'wrap' is not supported (constant, reflect, edge; wrap from opset 19)"));
  OneNode t19(19);
  t19.Input("x", F32({1, 3, 4, 4})).Init("p", Ints({0, 0, 1, 2, 0, 0, 1, 2}));
  EXPECT_THAT(t19.RunShape(MakeNode("Pad", {"x", "p"}, {"y"}, {{"mode", std::string("wrap")}})),
              ElementsAre(1, 3, 6, 8));
  auto r = t.Run(MakeNode("Pad", {"x", "neg"}, {"y"}, {}, "pad"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("Pad 'pad': pads [0,0,-3,0,0,0,-3,0] crop more than dim 2 (4) has"));
}

// ----- Registry and whole-graph inference ----------------------------------------------------

TEST(ShapeInferenceTest, UnsupportedOpNamesOpAndNode) {
  OneNode t;
  t.Input("x", F32({1}));
  auto r = t.Run(MakeNode("Foo", {"x"}, {"y"}, {}, "bar"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(r.status().message(), "unsupported operator 'Foo' in node 'bar'");
  EXPECT_FALSE(IsSupportedOp("Foo"));
  EXPECT_TRUE(IsSupportedOp("Conv"));
  std::vector<std::string> ops = SupportedOps();
  EXPECT_THAT(ops, ::testing::IsSupersetOf({"Cast", "Concat", "Gather", "Resize", "ScatterND",
                                            "Trilu", "Conv", "Relu"}));
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
  EXPECT_TRUE(std::adjacent_find(ops.begin(), ops.end()) == ops.end());
  for (const std::string& op : ops) EXPECT_TRUE(IsSupportedOp(op)) << op;
}

Graph SmallNet() {
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", F32({1, 3, 8, 8})});
  g.initializers["w"] = Zeros({4, 3, 3, 3});
  g.initializers["fc"] = Zeros({10, 64});
  g.initializers["shape"] = Ints({1, -1});
  g.outputs.push_back({"out", {}});
  // Deliberately out of order: InferShapes sorts first.
  g.nodes.push_back(MakeNode("Gemm", {"flat", "fc"}, {"out"}, {{"transB", int64_t{1}}}, "fc"));
  g.nodes.push_back(MakeNode(
      "Conv", {"x", "w"}, {"c"},
      {{"strides", std::vector<int64_t>{2, 2}}, {"pads", std::vector<int64_t>{1, 1, 1, 1}}},
      "conv"));
  g.nodes.push_back(MakeNode("Relu", {"c"}, {"r"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Reshape", {"r", "shape"}, {"flat"}, {}, "reshape"));
  return g;
}

TEST(InferShapesTest, FillsEveryValueAndOutputs) {
  Graph g = SmallNet();
  ASSERT_TRUE(InferShapes(g).ok());
  EXPECT_EQ(g.nodes[0].name, "conv");
  EXPECT_EQ(g.value_types.at("c"), F32({1, 4, 4, 4}));
  EXPECT_EQ(g.value_types.at("flat"), F32({1, 64}));
  EXPECT_EQ(g.value_types.at("out"), F32({1, 10}));
  EXPECT_EQ(g.value_types.at("w"), F32({4, 3, 3, 3}));
  EXPECT_EQ(g.outputs[0].type, F32({1, 10}));
}

TEST(InferShapesTest, UnpinnedInputIsNamed) {
  Graph g = SmallNet();
  g.inputs[0].type.shape[0] = -1;
  auto st = InferShapes(g);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("graph input 'x'"));
  EXPECT_THAT(st.message(), HasSubstr("pin it with --input-shape"));
}

TEST(InferShapesTest, NegativeAndAbsurdDimsAreRejected) {
  Graph g = SmallNet();
  g.inputs[0].type.shape[2] = -7;
  auto st = InferShapes(g);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("graph input 'x' has a negative dimension"));

  Graph huge = SmallNet();
  huge.inputs[0].type.shape = {1 << 20, 3, 1 << 20, 1 << 20};
  st = InferShapes(huge);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("is too large"));

  // A node whose output would be absurd: Reshape of a big-but-legal input cannot grow, but
  // Pad can.
  Graph pad;
  pad.inputs.push_back({"x", F32({1, 1})});
  pad.initializers["p"] = Ints({int64_t{1} << 40, int64_t{1} << 40, 0, 0});
  pad.outputs.push_back({"y", {}});
  pad.nodes.push_back(MakeNode("Pad", {"x", "p"}, {"y"}, {}, "padbig"));
  st = InferShapes(pad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("Pad 'padbig': the padded shape ["));
  EXPECT_THAT(st.message(), HasSubstr("is too large"));
}

TEST(InferShapesTest, UndefinedValueIsReported) {
  Graph g = SmallNet();
  g.nodes[2].inputs[0] = "nope";
  auto st = InferShapes(g);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("'nope'"));
}

}  // namespace
}  // namespace loom::graph
