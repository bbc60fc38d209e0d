#include <cmath>
#include <limits>

#include "loom/kernels/testing/kernels_test_util.h"

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
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dtype.status().message(),
              HasSubstr("A has type bool[1]; Add accepts float32, int64"));
}

TEST(BinaryTest, IntegerDivisionEdgeCasesAndWrapping) {
  Tensor min32(DType::kInt32, {1});
  min32.data<int32_t>()[0] = std::numeric_limits<int32_t>::min();
  Tensor minus_one(DType::kInt32, {1});
  minus_one.data<int32_t>()[0] = -1;
  auto overflow = Eval("Div", {min32, minus_one});
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(overflow.status().message(),
              HasSubstr("integer division overflows: -2147483648 / -1"));
  // Addition wraps instead of overflowing (two's complement).
  auto wrap = Eval("Sub", {min32, F({1}, {1})});
  EXPECT_EQ(wrap.status().code(), absl::StatusCode::kInvalidArgument);
  Tensor one(DType::kInt32, {1});
  one.data<int32_t>()[0] = 1;
  auto wrapped = Eval("Sub", {min32, one});
  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  EXPECT_EQ(wrapped->data<int32_t>()[0], std::numeric_limits<int32_t>::max());
}

TEST(BinaryTest, ModFollowsPythonForIntegersAndCForFmod) {
  auto py = Eval("Mod", {I({4}, {7, -7, 7, -7}), I({4}, {3, 3, -3, -3})});
  ASSERT_TRUE(py.ok()) << py.status();
  EXPECT_THAT(Ints(*py), ElementsAre(1, 2, -2, -1));
  auto c = Eval("Mod", {I({4}, {7, -7, 7, -7}), I({4}, {3, 3, -3, -3})}, {{"fmod", int64_t{1}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(Ints(*c), ElementsAre(1, -1, 1, -1));
  auto f = Eval("Mod", {F({2}, {5.5f, -5.5f}), F({1}, {2})}, {{"fmod", int64_t{1}}});
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectFloats(*f, {2}, {1.5f, -1.5f});
  const float inf = std::numeric_limits<float>::infinity();
  auto py_float = Eval("Mod", {F({5}, {5.5f, -5.5f, -3, 1, 0}), F({5}, {2, 2, inf, -inf, -2})});
  ASSERT_TRUE(py_float.ok()) << py_float.status();
  EXPECT_THAT(Floats(*py_float), ElementsAre(1.5f, 0.5f, inf, -inf, 0));
  EXPECT_TRUE(std::signbit(py_float->data<float>()[4]));  // 0 takes the divisor's sign
  auto bad_fmod = Eval("Mod", {F({1}, {1}), F({1}, {2})}, {{"fmod", int64_t{2}}});
  EXPECT_THAT(bad_fmod.status().message(), HasSubstr("attribute 'fmod' is 2; it must be 0 or 1"));
  auto zero = Eval("Mod", {I({1}, {1}), I({1}, {0})});
  EXPECT_THAT(zero.status().message(), HasSubstr("integer modulo by zero"));
}

TEST(BinaryTest, PowWithMixedTypes) {
  auto f = Eval("Pow", {F({3}, {2, 4, -2}), I({3}, {3, 0, 2})});
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectFloats(*f, {3}, {8, 1, 4});
  auto root = Eval("Pow", {F({1}, {9}), F({1}, {0.5f})});
  ASSERT_TRUE(root.ok()) << root.status();
  ExpectFloats(*root, {1}, {3});
  auto ints = Eval("Pow", {I({4}, {3, -2, 2, -1}), I({4}, {4, 3, -1, -3})});
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(Ints(*ints), ElementsAre(81, -8, 0, -1));
  auto int_float = Eval("Pow", {I({2}, {4, 10}), F({2}, {0.5f, 2.5f})});
  ASSERT_TRUE(int_float.ok()) << int_float.status();
  EXPECT_THAT(Ints(*int_float), ElementsAre(2, 316));
}

TEST(ComparisonTest, PredicatesBroadcastToBool) {
  Tensor a = F({2, 1}, {1, 3});
  Tensor b = F({2}, {1, 2});
  auto run = [&](const char* op) {
    auto y = Eval(op, {a, b});
    EXPECT_TRUE(y.ok()) << op << ": " << y.status();
    EXPECT_EQ(y->type().ToString(), "bool[2,2]") << op;
    std::vector<int> v;
    for (int64_t i = 0; i < y->num_elements(); ++i) v.push_back(y->data<uint8_t>()[i]);
    return v;
  };
  EXPECT_THAT(run("Equal"), ElementsAre(1, 0, 0, 0));
  EXPECT_THAT(run("Greater"), ElementsAre(0, 0, 1, 1));
  EXPECT_THAT(run("GreaterOrEqual"), ElementsAre(1, 0, 1, 1));
  EXPECT_THAT(run("Less"), ElementsAre(0, 1, 0, 0));
  EXPECT_THAT(run("LessOrEqual"), ElementsAre(1, 1, 0, 0));
}

Tensor Bools(Shape shape, std::vector<uint8_t> values) {
  Tensor t(DType::kBool, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) t.data<uint8_t>()[i] = values[i];
  return t;
}

std::vector<int> BoolValues(const Tensor& t) {
  std::vector<int> v;
  for (int64_t i = 0; i < t.num_elements(); ++i) v.push_back(t.data<uint8_t>()[i]);
  return v;
}

TEST(LogicTest, AndOrXorNotAndWhere) {
  Tensor a = Bools({4}, {0, 0, 1, 1});
  Tensor b = Bools({4}, {0, 1, 0, 1});
  auto x_and = Eval("And", {a, b});
  auto x_or = Eval("Or", {a, b});
  auto x_xor = Eval("Xor", {a, b});
  auto x_not = Eval("Not", {a});
  ASSERT_TRUE(x_and.ok() && x_or.ok() && x_xor.ok() && x_not.ok());
  EXPECT_THAT(BoolValues(*x_and), ElementsAre(0, 0, 0, 1));
  EXPECT_THAT(BoolValues(*x_or), ElementsAre(0, 1, 1, 1));
  EXPECT_THAT(BoolValues(*x_xor), ElementsAre(0, 1, 1, 0));
  EXPECT_THAT(BoolValues(*x_not), ElementsAre(1, 1, 0, 0));
  auto where = Eval("Where", {Bools({2, 1}, {1, 0}), F({2}, {1, 2}), F({}, {-1})});
  ASSERT_TRUE(where.ok()) << where.status();
  ExpectFloats(*where, {2, 2}, {1, 2, -1, -1});
  auto not_bool = Eval("And", {F({1}, {1}), F({1}, {1})});
  EXPECT_EQ(not_bool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_bool.status().message(), HasSubstr("A has type float32[1]; And accepts bool"));
  auto where_types = Eval("Where", {Bools({1}, {1}), F({1}, {1}), I({1}, {1})});
  EXPECT_THAT(where_types.status().message(), HasSubstr("differ in type"));
}

TEST(VariadicTest, MaxMinSumMeanBroadcast) {
  Tensor a = F({2}, {1, 5});
  Tensor b = F({2, 1}, {3, 0});
  Tensor c = F({}, {2});
  auto max = Eval("Max", {a, b, c});
  ASSERT_TRUE(max.ok()) << max.status();
  ExpectFloats(*max, {2, 2}, {3, 5, 2, 5});
  auto min = Eval("Min", {a, b, c});
  ASSERT_TRUE(min.ok()) << min.status();
  ExpectFloats(*min, {2, 2}, {1, 2, 0, 0});
  auto sum = Eval("Sum", {a, b, c});
  ASSERT_TRUE(sum.ok()) << sum.status();
  ExpectFloats(*sum, {2, 2}, {6, 10, 3, 7});
  auto mean = Eval("Mean", {a, b, c});
  ASSERT_TRUE(mean.ok()) << mean.status();
  ExpectFloats(*mean, {2, 2}, {2, 10.0f / 3, 1, 7.0f / 3});
  auto one = Eval("Max", {a});
  ASSERT_TRUE(one.ok()) << one.status();
  ExpectFloats(*one, {2}, {1, 5});
  auto nan = Eval("Max", {F({1}, {std::nanf("")}), F({1}, {1})});
  ASSERT_TRUE(nan.ok()) << nan.status();
  EXPECT_TRUE(std::isnan(nan->data<float>()[0]));
  auto ints = Eval("Min", {I({2}, {4, -9}), I({1}, {0})});
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(Ints(*ints), ElementsAre(0, -9));
}

TEST(UnaryTest, MathRoundingAndTypes) {
  auto round = Eval("Round", {F({6}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f})});
  ASSERT_TRUE(round.ok()) << round.status();
  ExpectFloats(*round, {6}, {0, 2, 2, -0.0f, -2, 2});
  auto abs = Eval("Abs", {I({2}, {-3, 4})});
  ASSERT_TRUE(abs.ok()) << abs.status();
  EXPECT_THAT(Ints(*abs), ElementsAre(3, 4));
  auto sign = Eval("Sign", {F({3}, {-2, 0, 7})});
  ASSERT_TRUE(sign.ok()) << sign.status();
  ExpectFloats(*sign, {3}, {-1, 0, 1});
  auto neg = Eval("Neg", {I({2}, {-3, 4})});
  ASSERT_TRUE(neg.ok()) << neg.status();
  EXPECT_THAT(Ints(*neg), ElementsAre(3, -4));
  auto erf = Eval("Erf", {F({2}, {0, 1})});
  ASSERT_TRUE(erf.ok()) << erf.status();
  ExpectFloats(*erf, {2}, {0, 0.8427007929f});
  Tensor d(DType::kFloat64, {2});
  d.data<double>()[0] = 4;
  d.data<double>()[1] = 0.25;
  auto sqrt = Eval("Sqrt", {d});
  ASSERT_TRUE(sqrt.ok()) << sqrt.status();
  EXPECT_EQ(sqrt->dtype(), DType::kFloat64);
  EXPECT_EQ(sqrt->data<double>()[1], 0.5);
  auto exp_int = Eval("Exp", {I({1}, {1})});
  EXPECT_EQ(exp_int.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      exp_int.status().message(),
      HasSubstr("input has type int64[1]; Exp accepts float32, float16, bfloat16, float64"));
  auto nan = Eval("IsNaN", {F({2}, {std::nanf(""), 1})});
  ASSERT_TRUE(nan.ok()) << nan.status();
  EXPECT_THAT(BoolValues(*nan), ElementsAre(1, 0));
  const float inf = std::numeric_limits<float>::infinity();
  auto pos = Eval("IsInf", {F({3}, {inf, -inf, 0})}, {{"detect_negative", int64_t{0}}});
  ASSERT_TRUE(pos.ok()) << pos.status();
  EXPECT_THAT(BoolValues(*pos), ElementsAre(1, 0, 0));
}

TEST(ActivationTest, AttributesAndGelu) {
  Tensor x = F({3}, {-1, 0, 2});
  auto elu = Eval("Elu", {x}, {{"alpha", 2.0f}});
  ASSERT_TRUE(elu.ok()) << elu.status();
  ExpectFloats(*elu, {3}, {2 * (std::exp(-1.0f) - 1), 0, 2});
  auto selu = Eval("Selu", {x}, {{"alpha", 2.0f}, {"gamma", 3.0f}});
  ASSERT_TRUE(selu.ok()) << selu.status();
  ExpectFloats(*selu, {3}, {3 * 2 * (std::exp(-1.0f) - 1), 0, 6});
  auto softplus = Eval("Softplus", {F({2}, {0, 100})});
  ASSERT_TRUE(softplus.ok()) << softplus.status();
  ExpectFloats(*softplus, {2}, {std::log(2.0f), 100});
  auto softsign = Eval("Softsign", {x});
  ASSERT_TRUE(softsign.ok()) << softsign.status();
  ExpectFloats(*softsign, {3}, {-0.5f, 0, 2.0f / 3});
  auto gelu = Eval("Gelu", {x}, {}, 20);
  ASSERT_TRUE(gelu.ok()) << gelu.status();
  ExpectFloats(*gelu, {3}, {-0.15865525f, 0, 1.9544997f});
  auto tanh = Eval("Gelu", {x}, {{"approximate", std::string("tanh")}}, 20);
  ASSERT_TRUE(tanh.ok()) << tanh.status();
  ExpectFloats(*tanh, {3}, {-0.15880801f, 0, 1.9545977f});
  auto bad = Eval("Gelu", {x}, {{"approximate", std::string("fast")}}, 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("Gelu 'test_node': attribute 'approximate' is 'fast'"));
}

TEST(PReluTest, SlopeBroadcastsToX) {
  auto y = Eval("PRelu", {F({2, 2}, {-1, 2, -3, 4}), F({2, 1}, {0.5f, 2})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 2}, {-0.5f, 2, -6, 4});
  auto bad = Eval("PRelu", {F({2}, {-1, 2}), F({2, 2}, {1, 1, 1, 1})});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("does not broadcast to X float32[2]"));
}

TEST(HalfTest, ElementwiseOnFloat16AndWhereOnBFloat16) {
  Tensor a(DType::kFloat16, {2});
  a.data<uint16_t>()[0] = graph::FloatToHalf(1.5f);
  a.data<uint16_t>()[1] = graph::FloatToHalf(-2.0f);
  auto y = Eval("Mul", {a, a});
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->dtype(), DType::kFloat16);
  EXPECT_EQ(graph::HalfToFloat(y->data<uint16_t>()[0]), 2.25f);
  EXPECT_EQ(graph::HalfToFloat(y->data<uint16_t>()[1]), 4.0f);
  auto cmp = Eval("Less", {a, a});
  ASSERT_TRUE(cmp.ok()) << cmp.status();
  EXPECT_EQ(cmp->dtype(), DType::kBool);
  Tensor b(DType::kBFloat16, {1});
  b.data<uint16_t>()[0] = graph::FloatToBFloat16(7.0f);
  auto where = Eval("Where", {Bools({2}, {1, 0}), b, b});
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->dtype(), DType::kBFloat16);
  // Pow keeps the base's type: a float32 base with a float16 exponent stays float32.
  auto pow = Eval("Pow", {F({1}, {3}), a});
  ASSERT_TRUE(pow.ok()) << pow.status();
  EXPECT_EQ(pow->type().ToString(), "float32[2]");
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

}  // namespace
}  // namespace loom::kernels
