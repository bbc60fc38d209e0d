#include "loom/kernels/gemm.h"

#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

TEST(GemmTest, TransBWithBroadcastRowC) {
  Tensor a = F({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = F({2, 3}, {1, 0, 1, 0, 1, 0});  // [N, K] because transB
  Tensor c = F({2}, {10, 20});
  auto y = Eval("Gemm", {a, b, c}, {{"transB", int64_t{1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  // A * B^T = [[4, 2], [10, 5]]; + C broadcast over rows.
  ExpectFloats(*y, {2, 2}, {14, 22, 20, 25});
  auto scaled = Eval("Gemm", {a, b, c}, {{"transB", int64_t{1}}, {"alpha", 2.0f}, {"beta", 0.5f}});
  ASSERT_TRUE(scaled.ok()) << scaled.status();
  ExpectFloats(*scaled, {2, 2}, {13, 14, 25, 20});
}

TEST(GemmTest, TransAWithColumnCAndNoC) {
  Tensor a = F({3, 2}, {1, 4, 2, 5, 3, 6});  // A^T = [[1,2,3],[4,5,6]]
  Tensor b = F({3, 2}, {1, 0, 0, 1, 1, 0});  // [K, N]
  auto y = Eval("Gemm", {a, b, F({2, 1}, {100, 200})}, {{"transA", int64_t{1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 2}, {104, 102, 210, 205});
  auto no_c = Eval("Gemm", {a, b}, {{"transA", int64_t{1}}});
  ASSERT_TRUE(no_c.ok()) << no_c.status();
  ExpectFloats(*no_c, {2, 2}, {4, 2, 10, 5});
}

TEST(GemmTest, GemmEqualsMatMulPlusAdd) {
  base::Rng rng(3);
  Tensor a = Random({3, 4}, rng), b = Random({4, 5}, rng), c = Random({5}, rng);
  auto gemm = Eval("Gemm", {a, b, c});
  auto product = Eval("MatMul", {a, b});
  ASSERT_TRUE(gemm.ok() && product.ok());
  auto sum = Eval("Add", {*product, c});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(gemm->shape(), sum->shape());
  EXPECT_EQ(Floats(*gemm), Floats(*sum));
}

TEST(GemmTest, DenseEqualsMatMulWithTransposedWeightsPlusBias) {
  base::Rng rng(5);
  Tensor x = Random({2, 6}, rng), w = Random({3, 6}, rng), bias = Random({3}, rng);
  std::vector<float> wt(18);
  for (int j = 0; j < 3; ++j)
    for (int k = 0; k < 6; ++k) wt[k * 3 + j] = w.data<float>()[j * 6 + k];
  std::vector<float> dense(6), product(6);
  Dense(2, 3, 6, x.data<float>(), w.data<float>(), bias.data<float>(), dense.data());
  MatMul(2, 3, 6, x.data<float>(), wt.data(), product.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(dense[i], product[i] + bias.data<float>()[i % 3]);
}

TEST(GemmTest, InnerDimensionMismatch) {
  auto y = Eval("Gemm", {Tensor(DType::kFloat32, {2, 3}), Tensor(DType::kFloat32, {2, 3})});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), HasSubstr("Gemm 'test_node': inner dimensions differ"));
  auto c = Eval("Gemm", {Tensor(DType::kFloat32, {2, 3}), Tensor(DType::kFloat32, {3, 4}),
                         Tensor(DType::kFloat32, {3})});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("does not broadcast to [2,4]"));
}

TEST(MatMulTest, VectorOperandsDropTheirAddedDim) {
  Tensor m = F({3, 2}, {1, 2, 3, 4, 5, 6});
  auto left = Eval("MatMul", {F({3}, {1, 2, 3}), m});
  ASSERT_TRUE(left.ok()) << left.status();
  ExpectFloats(*left, {2}, {22, 28});
  auto right = Eval("MatMul", {F({2, 3}, {1, 2, 3, 4, 5, 6}), F({3}, {1, 1, 1})});
  ASSERT_TRUE(right.ok()) << right.status();
  ExpectFloats(*right, {2}, {6, 15});
  auto dot = Eval("MatMul", {F({3}, {1, 2, 3}), F({3}, {4, 5, 6})});
  ASSERT_TRUE(dot.ok()) << dot.status();
  ExpectFloats(*dot, {}, {32});
}

TEST(MatMulTest, BatchedBroadcastMatchesPerBatchProducts) {
  base::Rng rng(9);
  Tensor a = Random({2, 1, 2, 3}, rng);
  Tensor b = Random({3, 3, 4}, rng);
  auto y = Eval("MatMul", {a, b});
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->shape(), (Shape{2, 3, 2, 4}));
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      std::vector<float> expected(8);
      MatMul(2, 4, 3, a.data<float>() + i * 6, b.data<float>() + j * 12, expected.data());
      for (int e = 0; e < 8; ++e) {
        EXPECT_EQ(y->data<float>()[(i * 3 + j) * 8 + e], expected[e]) << i << "," << j;
      }
    }
  }
  // And one hand-computed batch: [[1,2],[3,4]] x [[1,1],[0,1]].
  auto small = Eval("MatMul", {F({1, 2, 2}, {1, 2, 3, 4}), F({2, 2}, {1, 1, 0, 1})});
  ASSERT_TRUE(small.ok()) << small.status();
  ExpectFloats(*small, {1, 2, 2}, {1, 3, 3, 7});
}

TEST(MatMulTest, IncompatibleShapes) {
  auto inner = Eval("MatMul", {Tensor(DType::kFloat32, {2, 3}), Tensor(DType::kFloat32, {2, 3})});
  EXPECT_EQ(inner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(inner.status().message(), HasSubstr("inner dimensions differ"));
  auto batch =
      Eval("MatMul", {Tensor(DType::kFloat32, {2, 2, 3}), Tensor(DType::kFloat32, {3, 3, 2})});
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(batch.status().message(), HasSubstr("do not broadcast"));
  auto dtype = Eval("MatMul", {Tensor(DType::kBool, {2, 2}), Tensor(DType::kBool, {2, 2})});
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dtype.status().message(), HasSubstr("A has type bool[2,2]; MatMul accepts"));
  auto mixed = Eval("MatMul", {Tensor(DType::kFloat32, {2, 2}), Tensor(DType::kInt64, {2, 2})});
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mixed.status().message(), HasSubstr("differ in type"));
}

TEST(MatMulTest, IntegerAndVectorOperands) {
  auto ints = Eval("MatMul", {I({2, 2}, {1, 2, 3, 4}), I({2}, {5, 6})});
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->shape(), (Shape{2}));
  EXPECT_THAT(Ints(*ints), ::testing::ElementsAre(17, 39));
  auto vec = Eval("MatMul", {F({2}, {1, 2}), F({2, 2, 3}, {1, 0, 0, 0, 1, 0, 1, 1, 1, 2, 2, 2})});
  ASSERT_TRUE(vec.ok()) << vec.status();
  ExpectFloats(*vec, {2, 3}, {1, 2, 0, 5, 5, 5});
}

TEST(GemmTest, Int64WithScalarC) {
  auto y = Eval("Gemm", {I({1, 2}, {1, 2}), I({2, 2}, {3, 4, 5, 6}), I({}, {1})},
                {{"alpha", 2.0f}, {"beta", 3.0f}});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(Ints(*y), ::testing::ElementsAre(2 * 13 + 3, 2 * 16 + 3));
}

}  // namespace
}  // namespace loom::kernels
