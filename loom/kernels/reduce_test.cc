#include <cmath>
#include <limits>

#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers
using Ints64 = std::vector<int64_t>;

TEST(ReduceMeanTest, KeepdimsAndAxes) {
  Tensor x = Iota({2, 3});
  auto flat = Eval("ReduceMean", {x}, {{"axes", Ints64{1}}, {"keepdims", int64_t{0}}}, 13);
  ASSERT_TRUE(flat.ok()) << flat.status();
  ExpectFloats(*flat, {2}, {1, 4});
  auto kept = Eval("ReduceMean", {x}, {{"axes", Ints64{-1}}}, 13);
  ASSERT_TRUE(kept.ok()) << kept.status();
  ExpectFloats(*kept, {2, 1}, {1, 4});
  auto all = Eval("ReduceMean", {x}, {}, 13);
  ASSERT_TRUE(all.ok()) << all.status();
  ExpectFloats(*all, {1, 1}, {2.5f});
  auto multi = Eval("ReduceMean", {Iota({2, 2, 2})}, {{"axes", Ints64{0, 2}}}, 13);
  ASSERT_TRUE(multi.ok()) << multi.status();
  ExpectFloats(*multi, {1, 2, 1}, {2.5f, 4.5f});  // {0,1,4,5} and {2,3,6,7}
}

TEST(ReduceMeanTest, Opset18AxesInputAndNoop) {
  Tensor x = Iota({2, 3});
  auto y = Eval("ReduceMean", {x, I({1}, {0})}, {}, 18);
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 3}, {1.5f, 2.5f, 3.5f});
  auto noop = Eval("ReduceMean", {x, Tensor()}, {{"noop_with_empty_axes", int64_t{1}}}, 18);
  ASSERT_TRUE(noop.ok()) << noop.status();
  ExpectFloats(*noop, {2, 3}, {0, 1, 2, 3, 4, 5});
  auto repeated = Eval("ReduceMean", {x}, {{"axes", Ints64{0, -2}}}, 13);
  EXPECT_EQ(repeated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(repeated.status().message(), HasSubstr("repeated"));
}

TEST(ReduceTest, EveryKindOverOneAxis) {
  Tensor x = F({2, 3}, {1, -2, 3, 4, 5, -6});
  auto run = [&](const char* op) {
    auto y = Eval(op, {x}, {{"axes", Ints64{1}}, {"keepdims", int64_t{0}}}, 13);
    EXPECT_TRUE(y.ok()) << op << ": " << y.status();
    return y.ok() ? Floats(*y) : std::vector<float>{};
  };
  EXPECT_THAT(run("ReduceMax"), ElementsAre(3, 5));
  EXPECT_THAT(run("ReduceMin"), ElementsAre(-2, -6));
  EXPECT_THAT(run("ReduceProd"), ElementsAre(-6, -120));
  EXPECT_THAT(run("ReduceL1"), ElementsAre(6, 15));
  auto l1_frac = Eval("ReduceL1", {F({2}, {-0.5f, 0.25f})}, {}, 13);
  ASSERT_TRUE(l1_frac.ok()) << l1_frac.status();
  ExpectFloats(*l1_frac, {1}, {0.75f});
  auto l1_int = Eval("ReduceL1", {I({3}, {-4, 2, -1})}, {}, 13);
  ASSERT_TRUE(l1_int.ok()) << l1_int.status();
  EXPECT_THAT(Ints(*l1_int), ElementsAre(7));
  EXPECT_THAT(run("ReduceSumSquare"), ElementsAre(14, 77));
  std::vector<float> l2 = run("ReduceL2");
  EXPECT_NEAR(l2[0], std::sqrt(14.0f), 1e-6);
  EXPECT_NEAR(l2[1], std::sqrt(77.0f), 1e-5);
  std::vector<float> lse = run("ReduceLogSumExp");
  EXPECT_NEAR(lse[0], std::log(std::exp(1.0f) + std::exp(-2.0f) + std::exp(3.0f)), 1e-6);
  // Large values do not overflow: max is factored out.
  auto big = Eval("ReduceLogSumExp", {F({2}, {1000, 1000})}, {{"keepdims", int64_t{0}}}, 13);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_NEAR(big->data<float>()[0], 1000 + std::log(2.0f), 1e-3);
}

TEST(ReduceTest, ReduceSumTakesAxesAsInputFromOpset13) {
  Tensor x = Iota({2, 3});
  auto v13 = Eval("ReduceSum", {x, I({1}, {0})}, {{"keepdims", int64_t{0}}}, 13);
  ASSERT_TRUE(v13.ok()) << v13.status();
  ExpectFloats(*v13, {3}, {3, 5, 7});
  auto v11 = Eval("ReduceSum", {x}, {{"axes", Ints64{1}}}, 11);
  ASSERT_TRUE(v11.ok()) << v11.status();
  ExpectFloats(*v11, {2, 1}, {3, 12});
  auto attr13 = Eval("ReduceSum", {x}, {{"axes", Ints64{1}}}, 13);
  EXPECT_EQ(attr13.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(attr13.status().message(),
              HasSubstr("from opset 13 ReduceSum takes axes as an input, not an attribute"));
  // ReduceMax moved at 18: an axes input at opset 13 is one input too many.
  auto max13 = Eval("ReduceMax", {x, I({1}, {0})}, {}, 13);
  EXPECT_EQ(max13.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(max13.status().message(), HasSubstr("expects 1 inputs, got 2"));
}

TEST(ReduceTest, EmptyReductionsGiveTheIdentity) {
  Tensor x(DType::kFloat32, {2, 0});
  auto sum = Eval("ReduceSum", {x, I({1}, {1})}, {}, 13);
  ASSERT_TRUE(sum.ok()) << sum.status();
  ExpectFloats(*sum, {2, 1}, {0, 0});
  auto prod = Eval("ReduceProd", {x, I({1}, {1})}, {}, 18);
  ASSERT_TRUE(prod.ok()) << prod.status();
  ExpectFloats(*prod, {2, 1}, {1, 1});
  auto max = Eval("ReduceMax", {x, I({1}, {1})}, {}, 18);
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_EQ(max->data<float>()[0], -std::numeric_limits<float>::infinity());
  auto lse = Eval("ReduceLogSumExp", {x, I({1}, {1})}, {}, 18);
  ASSERT_TRUE(lse.ok()) << lse.status();
  EXPECT_EQ(lse->data<float>()[0], -std::numeric_limits<float>::infinity());
}

TEST(ReduceTest, IntegerAndBoolInputs) {
  auto sum = Eval("ReduceSum", {I({3}, {1, 2, 3}), Tensor()}, {{"keepdims", int64_t{0}}}, 13);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->type().ToString(), "int64[]");
  EXPECT_EQ(sum->data<int64_t>()[0], 6);
  auto min = Eval("ReduceMin", {I({3}, {4, -7, 2})}, {}, 13);
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_THAT(Ints(*min), ElementsAre(-7));
  Tensor b(DType::kBool, {2});
  b.data<uint8_t>()[1] = 1;
  auto any = Eval("ReduceMax", {b}, {}, 20);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->type().ToString(), "bool[1]");
  EXPECT_EQ(any->data<uint8_t>()[0], 1);
  auto bad = Eval("ReduceSum", {b}, {}, 11);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("data has type bool[2]; ReduceSum accepts"));
}

TEST(ArgMaxTest, KeepdimsAndSelectLastIndex) {
  Tensor x = F({2, 3}, {1, 5, 5, 7, 0, 7});
  auto first = Eval("ArgMax", {x}, {{"axis", int64_t{1}}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->shape(), (Shape{2, 1}));
  EXPECT_THAT(Ints(*first), ElementsAre(1, 0));
  auto last =
      Eval("ArgMax", {x},
           {{"axis", int64_t{1}}, {"select_last_index", int64_t{1}}, {"keepdims", int64_t{0}}});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->shape(), (Shape{2}));
  EXPECT_THAT(Ints(*last), ElementsAre(2, 2));
  auto min = Eval("ArgMin", {x}, {});
  ASSERT_TRUE(min.ok()) << min.status();
  EXPECT_THAT(Ints(*min), ElementsAre(0, 1, 0));
  auto axis = Eval("ArgMin", {x}, {{"axis", int64_t{2}}});
  EXPECT_EQ(axis.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(axis.status().message(), HasSubstr("axis 2 is out of range for rank 2"));
}

TEST(CumSumTest, ExclusiveAndReverse) {
  Tensor x = F({2, 3}, {1, 2, 3, 4, 5, 6});
  auto plain = Eval("CumSum", {x, I({}, {1})});
  ASSERT_TRUE(plain.ok()) << plain.status();
  ExpectFloats(*plain, {2, 3}, {1, 3, 6, 4, 9, 15});
  auto exclusive = Eval("CumSum", {x, I({}, {1})}, {{"exclusive", int64_t{1}}});
  ASSERT_TRUE(exclusive.ok()) << exclusive.status();
  ExpectFloats(*exclusive, {2, 3}, {0, 1, 3, 0, 4, 9});
  auto reverse = Eval("CumSum", {x, I({}, {0})}, {{"reverse", int64_t{1}}});
  ASSERT_TRUE(reverse.ok()) << reverse.status();
  ExpectFloats(*reverse, {2, 3}, {5, 7, 9, 4, 5, 6});
  auto both = Eval("CumSum", {I({3}, {1, 2, 3}), I({1}, {-1})},
                   {{"reverse", int64_t{1}}, {"exclusive", int64_t{1}}});
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_THAT(Ints(*both), ElementsAre(5, 3, 0));
  auto bad = Eval("CumSum", {x, I({2}, {0, 1})});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("must be a scalar"));
}

TEST(TopKTest, LargestSmallestAndTies) {
  Tensor x = F({2, 4}, {3, 1, 3, 2, 0, 5, 5, 1});
  auto top = EvalAll("TopK", {x, I({1}, {2})}, {}, 11, 2);
  ASSERT_TRUE(top.ok()) << top.status();
  ExpectFloats((*top)[0], {2, 2}, {3, 3, 5, 5});
  EXPECT_THAT(Ints((*top)[1]), ElementsAre(0, 2, 1, 2));  // ties: the lower index first
  auto low =
      EvalAll("TopK", {x, I({1}, {3})}, {{"largest", int64_t{0}}, {"axis", int64_t{1}}}, 11, 2);
  ASSERT_TRUE(low.ok()) << low.status();
  ExpectFloats((*low)[0], {2, 3}, {1, 2, 3, 0, 1, 5});
  EXPECT_THAT(Ints((*low)[1]), ElementsAre(1, 3, 0, 0, 3, 1));
  auto axis0 = EvalAll("TopK", {x, I({1}, {1})}, {{"axis", int64_t{0}}}, 11, 2);
  ASSERT_TRUE(axis0.ok()) << axis0.status();
  ExpectFloats((*axis0)[0], {1, 4}, {3, 5, 5, 2});
  EXPECT_THAT(Ints((*axis0)[1]), ElementsAre(0, 1, 1, 0));
  auto big = EvalAll("TopK", {x, I({1}, {5})}, {}, 11, 2);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("K 5 is out of range for axis 1"));
}

}  // namespace
}  // namespace loom::kernels
