#include <cmath>
#include <limits>

#include "loom/kernels/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

TEST(BinaryTest, AddBroadcastsRowAndColumn) {
  auto y = Eval("Add", {F({2, 1}, {10, 20}), F({3}, {1, 2, 3})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 3}, {11, 12, 13, 21, 22, 23});
}

TEST(BinaryTest, SubAndMulWithScalar) {
  auto sub = Eval("Sub", {F({}, {10}), F({2, 2}, {1, 2, 3, 4})});
  ASSERT_TRUE(sub.ok()) << sub.status();
  ExpectFloats(*sub, {2, 2}, {9, 8, 7, 6});
  auto mul = Eval("Mul", {F({2, 2}, {1, 2, 3, 4}), F({1, 1}, {-2})});
  ASSERT_TRUE(mul.ok()) << mul.status();
  ExpectFloats(*mul, {2, 2}, {-2, -4, -6, -8});
}

TEST(BinaryTest, BroadcastInTheMiddleDim) {
  // [2,1,2] + [1,3,1] -> [2,3,2].
  auto y = Eval("Add", {F({2, 1, 2}, {0, 1, 10, 11}), F({1, 3, 1}, {100, 200, 300})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 3, 2}, {100, 101, 200, 201, 300, 301, 110, 111, 210, 211, 310, 311});
}

TEST(BinaryTest, Int64DivBroadcastsAndTruncatesTowardZero) {
  auto y = Eval("Div", {I({2, 2}, {7, -7, 9, 10}), I({2}, {2, 3})});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->dtype(), DType::kInt64);
  EXPECT_EQ(y->shape(), (Shape{2, 2}));
  EXPECT_THAT(Ints(*y), ElementsAre(3, -2, 4, 3));
}

TEST(BinaryTest, Errors) {
  auto zero = Eval("Div", {I({2}, {1, 2}), I({1}, {0})});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("Div 'test_node': integer division by zero"));
  auto mixed = Eval("Add", {I({1}, {1}), F({1}, {1})});
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mixed.status().message(), HasSubstr("operand types differ"));
  auto shapes = Eval("Mul", {F({2}, {1, 2}), F({3}, {1, 2, 3})});
  EXPECT_EQ(shapes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shapes.status().message(), HasSubstr("shapes [2] and [3] do not broadcast"));
  Tensor b(DType::kBool, {1});
  auto dtype = Eval("Add", {b, b});
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(ActivationTest, KnownValues) {
  Tensor x = F({4}, {-2, -0.5f, 0, 3});
  auto relu = Eval("Relu", {x});
  ASSERT_TRUE(relu.ok());
  ExpectFloats(*relu, {4}, {0, 0, 0, 3});
  auto leaky = Eval("LeakyRelu", {x});
  ASSERT_TRUE(leaky.ok());
  ExpectFloats(*leaky, {4}, {-0.02f, -0.005f, 0, 3});
  auto leaky2 = Eval("LeakyRelu", {x}, {{"alpha", 0.5f}});
  ASSERT_TRUE(leaky2.ok());
  ExpectFloats(*leaky2, {4}, {-1, -0.25f, 0, 3});
  auto sigmoid = Eval("Sigmoid", {x});
  ASSERT_TRUE(sigmoid.ok());
  ExpectFloats(
      *sigmoid, {4},
      {1 / (1 + std::exp(2.0f)), 1 / (1 + std::exp(0.5f)), 0.5f, 1 / (1 + std::exp(-3.0f))});
  auto hard_sigmoid = Eval("HardSigmoid", {x});
  ASSERT_TRUE(hard_sigmoid.ok());
  ExpectFloats(*hard_sigmoid, {4}, {0.1f, 0.4f, 0.5f, 1});
  auto hard_swish = Eval("HardSwish", {x});
  ASSERT_TRUE(hard_swish.ok());
  // x * clamp(x/6 + 0.5, 0, 1).
  ExpectFloats(*hard_swish, {4}, {-2 * (1 / 6.0f), -0.5f * (5 / 12.0f), 0, 3});
  auto tanh = Eval("Tanh", {x});
  ASSERT_TRUE(tanh.ok());
  ExpectFloats(*tanh, {4}, {std::tanh(-2.0f), std::tanh(-0.5f), 0, std::tanh(3.0f)});
}

TEST(ActivationTest, SigmoidDoesNotOverflow) {
  auto y = Eval("Sigmoid", {F({2}, {-1000, 1000})});
  ASSERT_TRUE(y.ok());
  ExpectFloats(*y, {2}, {0, 1});
}

TEST(ActivationTest, ReluOnInt64) {
  auto y = Eval("Relu", {I({3}, {-5, 0, 5})});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(Ints(*y), ElementsAre(0, 0, 5));
}

TEST(ClipTest, OnlyMaxGiven) {
  auto y = Eval("Clip", {F({4}, {-10, 1, 6, 7}), Tensor(), F({}, {6})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {4}, {-10, 1, 6, 6});
}

TEST(ClipTest, BothBoundsInt64AndOldOpsetAttributes) {
  auto y = Eval("Clip", {I({4}, {-10, 1, 6, 7}), I({}, {0}), I({}, {5})});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(Ints(*y), ElementsAre(0, 1, 5, 5));
  auto old = Eval("Clip", {F({3}, {-1, 0.5f, 9})}, {{"min", 0.0f}, {"max", 6.0f}}, /*opset=*/6);
  ASSERT_TRUE(old.ok()) << old.status();
  ExpectFloats(*old, {3}, {0, 0.5f, 6});
  auto bad = Eval("Clip", {F({1}, {1}), F({2}, {0, 1})});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("min float32[2] must be a float32 scalar"));
}

TEST(SoftmaxTest, Opset11CoercesTo2dAndOpset13UsesOneAxis) {
  Tensor x = Iota({2, 3, 4});
  // Opset 11, axis 1: each batch row of 12 elements sums to 1.
  auto old = Eval("Softmax", {x}, {}, /*opset=*/11);
  ASSERT_TRUE(old.ok()) << old.status();
  // Opset 13, axis 1: each (batch, last-index) column of 3 elements sums to 1.
  auto axis1 = Eval("Softmax", {x}, {{"axis", int64_t{1}}}, /*opset=*/13);
  ASSERT_TRUE(axis1.ok()) << axis1.status();
  // Opset 13 default axis -1: rows of 4.
  auto last = Eval("Softmax", {x}, {}, /*opset=*/13);
  ASSERT_TRUE(last.ok()) << last.status();

  double denom12 = 0;
  for (int i = 0; i < 12; ++i) denom12 += std::exp(i - 11.0);
  double denom3 = std::exp(-8.0) + std::exp(-4.0) + 1.0;  // column {j, j+4, j+8}
  double denom4 = 0;
  for (int i = 0; i < 4; ++i) denom4 += std::exp(i - 3.0);
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 3; ++c) {
      for (int j = 0; j < 4; ++j) {
        const int flat = (n * 3 + c) * 4 + j;
        EXPECT_NEAR(old->data<float>()[flat], std::exp((c * 4 + j) - 11.0) / denom12, 1e-6);
        EXPECT_NEAR(axis1->data<float>()[flat], std::exp((c - 2) * 4.0) / denom3, 1e-6);
        EXPECT_NEAR(last->data<float>()[flat], std::exp(j - 3.0) / denom4, 1e-6);
      }
    }
  }
  // Opset 11 with axis 2 normalises rows of 4, like opset 13's default.
  auto old_axis2 = Eval("Softmax", {x}, {{"axis", int64_t{2}}}, /*opset=*/11);
  ASSERT_TRUE(old_axis2.ok());
  EXPECT_EQ(Floats(*old_axis2), Floats(*last));
}

TEST(SoftmaxTest, AxisOutOfRange) {
  auto y = Eval("Softmax", {Iota({2, 3})}, {{"axis", int64_t{2}}});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), HasSubstr("axis 2 is out of range for rank 2"));
}

TEST(BatchNormTest, NormalisesPerChannel) {
  Tensor x = F({1, 2, 1, 2}, {1, 3, 10, 20});
  Tensor scale = F({2}, {2, 1});
  Tensor bias = F({2}, {0, 1});
  Tensor mean = F({2}, {2, 10});
  Tensor var = F({2}, {4, 100});
  auto y = Eval("BatchNormalization", {x, scale, bias, mean, var}, {{"epsilon", 0.0f}});
  ASSERT_TRUE(y.ok()) << y.status();
  // c0: (x - 2) / 2 * 2 + 0; c1: (x - 10) / 10 * 1 + 1.
  ExpectFloats(*y, {1, 2, 1, 2}, {-1, 1, 1, 2});
  auto bad = Eval("BatchNormalization", {x, F({3}, {1, 1, 1}), bias, mean, var});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("scale float32[3] must be [2]"));
}

}  // namespace
}  // namespace loom::kernels
