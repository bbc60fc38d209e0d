// Shape rules of the shape and data-movement operators, through InferNodeOutputTypes: output
// types from constant inputs, the errors for non-constant shape inputs, out-of-range constant
// indices, and sizes that would overflow.
#include "loom/graph/data_movement.h"

#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/shape_inference.h"

namespace loom::graph {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One node over a graph of inputs and initializers.
class Rule {
 public:
  explicit Rule(int64_t opset = 18) { g_.opset = opset; }
  Rule& Input(const std::string& name, TensorType t) {
    g_.inputs.push_back({name, t});
    g_.value_types[name] = t;
    return *this;
  }
  Rule& Init(const std::string& name, Tensor t) {
    g_.initializers[name] = t;
    g_.value_types[name] = t.type();
    return *this;
  }
  absl::StatusOr<std::vector<TensorType>> Run(const std::string& op,
                                              std::vector<std::string> inputs,
                                              std::map<std::string, AttrValue> attrs = {},
                                              size_t num_outputs = 1) {
    Node n;
    n.name = "n";
    n.op_type = op;
    n.inputs = std::move(inputs);
    for (size_t i = 0; i < num_outputs; ++i) n.outputs.push_back("y" + std::to_string(i));
    n.attrs = std::move(attrs);
    return InferNodeOutputTypes(g_, n);
  }
  // The output type of a one-output run (undefined on error, with the error logged).
  TensorType Type(const std::string& op, std::vector<std::string> inputs,
                  std::map<std::string, AttrValue> attrs = {}) {
    auto r = Run(op, std::move(inputs), std::move(attrs));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? (*r)[0] : TensorType{};
  }

 private:
  Graph g_;
};

TensorType F32(Shape s) { return {DType::kFloat32, std::move(s)}; }
Tensor Ints(std::vector<int64_t> v) {
  return Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v);
}

TEST(DataMovementRulesTest, CastAndCastLike) {
  Rule r;
  r.Input("x", F32({2, 3})).Input("i", {DType::kInt32, {}});
  EXPECT_EQ(r.Type("Cast", {"x"}, {{"to", int64_t{10}}}), (TensorType{DType::kFloat16, {2, 3}}));
  EXPECT_EQ(r.Type("CastLike", {"x", "i"}), (TensorType{DType::kInt32, {2, 3}}));
  auto f8 = r.Run("Cast", {"x"}, {{"to", int64_t{19}}});
  EXPECT_EQ(f8.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f8.status().message(),
              HasSubstr("Cast 'n': attribute 'to' has element type FLOAT8E5M2, which Loom does "
                        "not support"));
}

TEST(DataMovementRulesTest, ShapeInputsMustBeConstant) {
  Rule r;
  r.Input("x", F32({2, 3})).Input("dyn", {DType::kInt64, {2}});
  for (const auto& [op, inputs] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"Expand", {"x", "dyn"}}, {"Tile", {"x", "dyn"}}, {"ConstantOfShape", {"dyn"}}}) {
    auto res = r.Run(op, inputs);
    EXPECT_EQ(res.status().code(), absl::StatusCode::kInvalidArgument) << op;
    EXPECT_THAT(res.status().message(), HasSubstr("is not constant; Loom needs static shapes"));
  }
  auto nz = r.Run("NonZero", {"x"});
  EXPECT_THAT(nz.status().message(),
              HasSubstr("NonZero's output shape depends on its values and Loom needs static "
                        "shapes"));
}

TEST(DataMovementRulesTest, ConstantInputsGiveStaticShapes) {
  Rule r;
  r.Input("x", F32({2, 1, 4}));
  r.Init("shape", Ints({3, 2, 1, 4})).Init("rep", Ints({1, 2, 3}));
  r.Init("mask", Tensor::FromFloats({2, 2}, std::vector<float>{1, 0, 0, 2}));
  r.Init("zero", Tensor::ScalarInt64(0)).Init("ten", Tensor::ScalarInt64(10));
  r.Init("three", Tensor::ScalarInt64(3));
  EXPECT_EQ(r.Type("Expand", {"x", "shape"}), F32({3, 2, 1, 4}));
  EXPECT_EQ(r.Type("Tile", {"x", "rep"}), F32({2, 2, 12}));
  EXPECT_EQ(r.Type("NonZero", {"mask"}), (TensorType{DType::kInt64, {2, 2}}));
  EXPECT_EQ(r.Type("Range", {"zero", "ten", "three"}), (TensorType{DType::kInt64, {4}}));
  EXPECT_EQ(r.Type("ConstantOfShape", {"rep"}), F32({1, 2, 3}));
  Tensor one_bool(DType::kBool, {1});
  EXPECT_EQ(r.Type("ConstantOfShape", {"rep"}, {{"value", one_bool}}),
            (TensorType{DType::kBool, {1, 2, 3}}));
  EXPECT_EQ(r.Type("Size", {"x"}), (TensorType{DType::kInt64, {}}));
  r.Init("onoff", Tensor::FromFloats({2}, std::vector<float>{0, 1}));
  EXPECT_EQ(r.Type("OneHot", {"rep", "ten", "onoff"}), F32({3, 10}));
  auto bad_values = r.Run("OneHot", {"rep", "ten", "rep"});
  EXPECT_THAT(bad_values.status().message(), HasSubstr("values must be [off, on], got int64[3]"));
}

TEST(DataMovementRulesTest, ConstantIndicesAreRangeChecked) {
  Rule r;
  r.Input("x", F32({2, 3}));
  r.Init("i", Tensor::FromInt64s({2, 3}, std::vector<int64_t>{0, 1, 2, 0, 1, 3}));
  auto ge = r.Run("GatherElements", {"x", "i"}, {{"axis", int64_t{1}}});
  EXPECT_EQ(ge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ge.status().message(),
              HasSubstr("GatherElements 'n': index 3 (element 5 of the indices) is out of range "
                        "for axis 1 of size 3"));
  r.Init("nd", Tensor::FromInt64s({1, 2}, std::vector<int64_t>{1, -4}));
  auto nd = r.Run("GatherND", {"x", "nd"});
  EXPECT_THAT(nd.status().message(), HasSubstr("index -4 (element 1 of the indices) is out of "
                                               "range for data dim 1 of size 3"));
  r.Init("upd", Tensor::FromFloats({2, 3}, std::vector<float>(6, 1)));
  auto se = r.Run("ScatterElements", {"x", "i", "upd"}, {{"axis", int64_t{1}}});
  EXPECT_THAT(se.status().message(), HasSubstr("index 3"));
}

TEST(DataMovementRulesTest, HostileSizesFailCleanly) {
  Rule r;
  r.Input("x", F32({4, 4}));
  const int64_t big = std::numeric_limits<int64_t>::max() / 2;
  r.Init("rep", Ints({big, 3}));
  auto tile = r.Run("Tile", {"x", "rep"});
  EXPECT_EQ(tile.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tile.status().message(), HasSubstr("Tile 'n': repeats"));
  r.Init("lo", Tensor::ScalarInt64(std::numeric_limits<int64_t>::min()))
      .Init("hi", Tensor::ScalarInt64(std::numeric_limits<int64_t>::max()))
      .Init("one", Tensor::ScalarInt64(1));
  auto range = r.Run("Range", {"lo", "hi", "one"});
  EXPECT_EQ(range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(range.status().message(), HasSubstr("too large"));
  r.Init("shape", Ints({big, big}));
  auto cos = r.Run("ConstantOfShape", {"shape"});
  EXPECT_THAT(cos.status().message(), HasSubstr("is too large"));
  r.Init("pads", Ints({0, 0, big, big}));
  auto pad = r.Run("Pad", {"x", "pads"});
  EXPECT_THAT(pad.status().message(), HasSubstr("Pad 'n': the padded shape ["));
}

TEST(DataMovementRulesTest, SplitOutputsAndResizeShapes) {
  Rule r13(13);
  r13.Input("x", F32({1, 6, 4, 4})).Init("split", Ints({2, 4}));
  auto split = r13.Run("Split", {"x", "split"}, {{"axis", int64_t{1}}}, 2);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ((*split)[0], F32({1, 2, 4, 4}));
  EXPECT_EQ((*split)[1], F32({1, 4, 4, 4}));
  Rule r(19);
  r.Input("x", F32({1, 3, 4, 4}));
  r.Init("scales", Tensor::FromFloats({4}, std::vector<float>{1, 1, 1.5f, 0.5f}));
  r.Init("sizes", Ints({7}));
  EXPECT_EQ(r.Type("Resize", {"x", "", "scales"}), F32({1, 3, 6, 2}));
  EXPECT_EQ(r.Type("Resize", {"x", "", "", "sizes"}, {{"axes", std::vector<int64_t>{-1}}}),
            F32({1, 3, 4, 7}));
  auto sym = Rule(18)
                 .Input("x", F32({1, 3, 4, 4}))
                 .Init("scales", Tensor::FromFloats({4}, std::vector<float>{1, 1, 2, 2}))
                 .Run("Resize", {"x", "", "scales"},
                      {{"coordinate_transformation_mode", std::string("half_pixel_symmetric")}});
  EXPECT_THAT(sym.status().message(),
              HasSubstr("coordinate_transformation_mode 'half_pixel_symmetric' is not supported "
                        "at opset 18"));
}

TEST(DataMovementResolveTest, SliceClampsExtremeBounds) {
  Node n;
  n.name = "s";
  n.op_type = "Slice";
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  auto all = ResolveSlice(n, {5}, {0}, {hi}, std::nullopt, std::nullopt);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(all->out, ElementsAre(5));
  auto reversed = ResolveSlice(n, {5}, {-1}, {lo}, std::nullopt, IntList{-1});
  ASSERT_TRUE(reversed.ok());
  EXPECT_THAT(reversed->out, ElementsAre(5));
  EXPECT_THAT(reversed->start, ElementsAre(4));
  auto stride = ResolveSlice(n, {10}, {1}, {hi}, std::nullopt, IntList{hi});
  ASSERT_TRUE(stride.ok());
  EXPECT_THAT(stride->out, ElementsAre(1));
}

}  // namespace
}  // namespace loom::graph
