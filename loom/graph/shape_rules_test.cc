// Shape rules of the elementwise and nn families (shape_rules_elementwise.cc,
// shape_rules_nn.cc): element types, opset variants, attribute values and error messages.
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/shape_inference.h"

namespace loom::graph {
namespace {

using ::testing::HasSubstr;

// An input of a one-node graph: a type (a graph input) or a value (an initializer).
using Operand = std::variant<TensorType, Tensor>;

// Infers `op` over operands named in0, in1, ... ("" skips an optional input) under `opset`.
absl::StatusOr<std::vector<TensorType>> Infer(const std::string& op,
                                              const std::vector<Operand>& operands,
                                              std::map<std::string, AttrValue> attrs = {},
                                              int64_t opset = 17, int outputs = 1) {
  Graph g;
  g.opset = opset;
  Node node;
  node.name = "n";
  node.op_type = op;
  node.attrs = std::move(attrs);
  for (size_t i = 0; i < operands.size(); ++i) {
    const std::string name = "in" + std::to_string(i);
    if (const auto* t = std::get_if<TensorType>(&operands[i])) {
      if (t->dtype == DType::kUndefined) {
        node.inputs.push_back("");
        continue;
      }
      g.inputs.push_back({name, *t});
      g.value_types[name] = *t;
    } else {
      const Tensor& v = std::get<Tensor>(operands[i]);
      g.initializers[name] = v;
      g.value_types[name] = v.type();
    }
    node.inputs.push_back(name);
  }
  for (int i = 0; i < outputs; ++i) node.outputs.push_back("out" + std::to_string(i));
  return InferNodeOutputTypes(g, node);
}

TensorType T(DType d, Shape s) { return {d, std::move(s)}; }
Tensor Ints(std::vector<int64_t> v) {
  return Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v);
}
constexpr DType kF32 = DType::kFloat32;
constexpr DType kF16 = DType::kFloat16;
constexpr DType kI64 = DType::kInt64;
constexpr DType kBool = DType::kBool;

TEST(ElementwiseRulesTest, TypesAndBroadcasting) {
  auto add = Infer("Add", {T(kF16, {2, 1}), T(kF16, {3})});
  ASSERT_TRUE(add.ok()) << add.status();
  EXPECT_EQ((*add)[0], T(kF16, {2, 3}));
  auto less = Infer("Less", {T(kI64, {4}), T(kI64, {})});
  ASSERT_TRUE(less.ok()) << less.status();
  EXPECT_EQ((*less)[0], T(kBool, {4}));
  auto sum = Infer("Sum", {T(kF32, {2, 1}), T(kF32, {1, 3}), T(kF32, {})});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ((*sum)[0], T(kF32, {2, 3}));
  auto where = Infer("Where", {T(kBool, {2, 1}), T(kI64, {3}), T(kI64, {})});
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ((*where)[0], T(kI64, {2, 3}));
  auto pow = Infer("Pow", {T(kF32, {2}), T(kI64, {})});
  ASSERT_TRUE(pow.ok()) << pow.status();
  EXPECT_EQ((*pow)[0], T(kF32, {2}));
  auto isnan = Infer("IsNaN", {T(kF16, {2})});
  ASSERT_TRUE(isnan.ok()) << isnan.status();
  EXPECT_EQ((*isnan)[0], T(kBool, {2}));
}

TEST(ElementwiseRulesTest, Errors) {
  auto logic = Infer("And", {T(kF32, {1}), T(kF32, {1})});
  EXPECT_EQ(logic.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(logic.status().message(),
              HasSubstr("And 'n': input 'in0' has type float32[1]; And accepts bool"));
  auto count = Infer("Add", {T(kF32, {1})});
  EXPECT_THAT(count.status().message(), HasSubstr("Add 'n': expects 2 inputs, got 1"));
  auto mod = Infer("Mod", {T(kF32, {1}), T(kF32, {1})}, {{"fmod", int64_t{3}}});
  EXPECT_THAT(mod.status().message(), HasSubstr("Mod 'n': attribute 'fmod' is 3"));
  auto gelu = Infer("Gelu", {T(kF32, {1})}, {{"approximate", std::string("x")}}, 20);
  EXPECT_THAT(gelu.status().message(), HasSubstr("Gelu 'n': attribute 'approximate' is 'x'"));
  auto prelu = Infer("PRelu", {T(kF32, {3}), T(kF32, {2, 3})});
  EXPECT_THAT(prelu.status().message(), HasSubstr("slope float32[2,3] does not broadcast to X"));
  auto where = Infer("Where", {T(kF32, {1}), T(kF32, {1}), T(kF32, {1})});
  EXPECT_THAT(where.status().message(), HasSubstr("Where accepts bool"));
}

TEST(NnRulesTest, ReductionsPerOpset) {
  auto sum13 = Infer("ReduceSum", {T(kF32, {2, 3, 4}), Ints({1})}, {{"keepdims", int64_t{0}}}, 13);
  ASSERT_TRUE(sum13.ok()) << sum13.status();
  EXPECT_EQ((*sum13)[0], T(kF32, {2, 4}));
  auto max13 = Infer("ReduceMax", {T(kI64, {2, 3})}, {{"axes", std::vector<int64_t>{-1}}}, 13);
  ASSERT_TRUE(max13.ok()) << max13.status();
  EXPECT_EQ((*max13)[0], T(kI64, {2, 1}));
  auto max18 = Infer("ReduceMax", {T(kF32, {2, 3})}, {{"axes", std::vector<int64_t>{1}}}, 18);
  EXPECT_THAT(max18.status().message(),
              HasSubstr("from opset 18 the axes are an input, not an attribute"));
  auto noop = Infer("ReduceL2", {T(kF32, {2, 3})}, {{"noop_with_empty_axes", int64_t{1}}}, 18);
  ASSERT_TRUE(noop.ok()) << noop.status();
  EXPECT_EQ((*noop)[0], T(kF32, {2, 3}));
  auto arg = Infer("ArgMax", {T(kF16, {2, 3})}, {{"axis", int64_t{-1}}, {"keepdims", int64_t{0}}});
  ASSERT_TRUE(arg.ok()) << arg.status();
  EXPECT_EQ((*arg)[0], T(kI64, {2}));
  auto topk = Infer("TopK", {T(kF32, {2, 5}), Ints({3})}, {}, 11, 2);
  ASSERT_TRUE(topk.ok()) << topk.status();
  EXPECT_EQ((*topk)[0], T(kF32, {2, 3}));
  EXPECT_EQ((*topk)[1], T(kI64, {2, 3}));
  auto big_k = Infer("TopK", {T(kF32, {2, 5}), Ints({6})}, {}, 11, 2);
  EXPECT_THAT(big_k.status().message(), HasSubstr("K [6] must be one value in 0..5"));
  auto cumsum = Infer("CumSum", {T(kI64, {4}), Tensor::ScalarInt64(1)});
  EXPECT_THAT(cumsum.status().message(), HasSubstr("axis 1 is out of range for rank 1"));
}

TEST(NnRulesTest, Normalizations) {
  auto ln = Infer("LayerNormalization", {T(kF16, {2, 3, 4}), T(kF16, {4}), T(kF16, {4})},
                  {{"axis", int64_t{1}}}, 17, 3);
  ASSERT_TRUE(ln.ok()) << ln.status();
  EXPECT_EQ((*ln)[0], T(kF16, {2, 3, 4}));
  EXPECT_EQ((*ln)[1], T(kF32, {2, 1, 1}));
  EXPECT_EQ((*ln)[2], T(kF32, {2, 1, 1}));
  auto gn18 = Infer("GroupNormalization", {T(kF32, {1, 4, 2}), T(kF32, {2}), T(kF32, {2})},
                    {{"num_groups", int64_t{2}}}, 18);
  ASSERT_TRUE(gn18.ok()) << gn18.status();
  auto gn21 = Infer("GroupNormalization", {T(kF32, {1, 4, 2}), T(kF32, {2}), T(kF32, {2})},
                    {{"num_groups", int64_t{2}}}, 21);
  EXPECT_THAT(gn21.status().message(), HasSubstr("scale float32[2] must have shape [4]"));
  auto bn = Infer("BatchNormalization",
                  {T(kF32, {1, 2}), T(kF32, {2}), T(kF32, {2}), T(kF32, {2}), T(kF32, {2})},
                  {{"training_mode", int64_t{1}}}, 15);
  EXPECT_EQ(bn.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(bn.status().message(), HasSubstr("attribute 'training_mode' is 1"));
}

TEST(NnRulesTest, ConvTransposeAndPools) {
  auto ct = Infer(
      "ConvTranspose", {T(kF32, {1, 2, 3, 3}), T(kF32, {2, 3, 3, 3})},
      {{"strides", std::vector<int64_t>{3, 2}}, {"output_padding", std::vector<int64_t>{1, 1}}});
  ASSERT_TRUE(ct.ok()) << ct.status();
  EXPECT_EQ((*ct)[0], T(kF32, {1, 3, 10, 8}));
  auto shaped = Infer(
      "ConvTranspose", {T(kF32, {1, 1, 3, 3}), T(kF32, {1, 2, 3, 3})},
      {{"strides", std::vector<int64_t>{3, 2}}, {"output_shape", std::vector<int64_t>{10, 8}}});
  ASSERT_TRUE(shaped.ok()) << shaped.status();
  EXPECT_EQ((*shaped)[0], T(kF32, {1, 2, 10, 8}));
  auto conv3d = Infer("Conv", {T(kF32, {1, 1, 4, 4, 4}), T(kF32, {2, 1, 3, 3, 3})},
                      {{"auto_pad", std::string("SAME_UPPER")}});
  ASSERT_TRUE(conv3d.ok()) << conv3d.status();
  EXPECT_EQ((*conv3d)[0], T(kF32, {1, 2, 4, 4, 4}));
  auto lp = Infer("LpPool", {T(kF32, {1, 1, 5})},
                  {{"kernel_shape", std::vector<int64_t>{2}},
                   {"strides", std::vector<int64_t>{2}},
                   {"ceil_mode", int64_t{1}}},
                  18);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_EQ((*lp)[0], T(kF32, {1, 1, 3}));
  auto order = Infer("MaxPool", {T(kF32, {1, 1, 4, 4})},
                     {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"storage_order", int64_t{2}}});
  EXPECT_THAT(order.status().message(), HasSubstr("attribute 'storage_order' is 2"));
}

TEST(NnRulesTest, MatMulGemmAndEinsum) {
  auto mm = Infer("MatMul", {T(kI64, {3, 1, 2, 4}), T(kI64, {5, 4, 6})});
  ASSERT_TRUE(mm.ok()) << mm.status();
  EXPECT_EQ((*mm)[0], T(kI64, {3, 5, 2, 6}));
  auto gemm = Infer("Gemm", {T(kF16, {4, 3}), T(kF16, {5, 4}), T(kF16, {5})},
                    {{"transA", int64_t{1}}, {"transB", int64_t{1}}});
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  EXPECT_EQ((*gemm)[0], T(kF16, {3, 5}));
  auto einsum = Infer("Einsum", {T(kF32, {2, 8, 5, 4}), T(kF32, {2, 8, 6, 4})},
                      {{"equation", std::string("bhqd,bhkd->bhqk")}}, 12);
  ASSERT_TRUE(einsum.ok()) << einsum.status();
  EXPECT_EQ((*einsum)[0], T(kF32, {2, 8, 5, 6}));
  auto diagonal = Infer("Einsum", {T(kF32, {3, 3})}, {{"equation", std::string("ii->i")}}, 12);
  EXPECT_THAT(diagonal.status().message(),
              HasSubstr("Einsum 'n': equation 'ii->i' repeats label 'i'"));
}

}  // namespace
}  // namespace loom::graph
