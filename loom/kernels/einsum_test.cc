#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

absl::StatusOr<Tensor> Einsum(const std::string& equation, const std::vector<Tensor>& inputs) {
  return Eval("Einsum", inputs, {{"equation", equation}}, 12);
}

TEST(EinsumTest, MatrixProductTransposeAndTrace) {
  Tensor a = F({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = F({3, 2}, {1, 0, 0, 1, 1, 1});
  auto mm = Einsum("ij,jk->ik", {a, b});
  ASSERT_TRUE(mm.ok()) << mm.status();
  ExpectFloats(*mm, {2, 2}, {4, 5, 10, 11});
  // Implicit output: the letters used once, sorted (i, k).
  auto implicit = Einsum("ij,jk", {a, b});
  ASSERT_TRUE(implicit.ok()) << implicit.status();
  EXPECT_EQ(Floats(*implicit), Floats(*mm));
  auto transposed = Einsum("ij->ji", {a});
  ASSERT_TRUE(transposed.ok()) << transposed.status();
  ExpectFloats(*transposed, {3, 2}, {1, 4, 2, 5, 3, 6});
  auto row_sums = Einsum("ij->i", {a});
  ASSERT_TRUE(row_sums.ok()) << row_sums.status();
  ExpectFloats(*row_sums, {2}, {6, 15});
  auto total = Einsum("ij->", {a});
  ASSERT_TRUE(total.ok()) << total.status();
  ExpectFloats(*total, {}, {21});
}

TEST(EinsumTest, BatchedAttentionShapesAndEllipsis) {
  // b h q d, b h k d -> b h q k: Q K^T per (b, h).
  Tensor q = Iota({1, 2, 2, 2});
  Tensor k = F({1, 2, 1, 2}, {1, 1, 1, -1});
  auto scores = Einsum("bhqd,bhkd->bhqk", {q, k});
  ASSERT_TRUE(scores.ok()) << scores.status();
  // head 0: q rows {0,1}, {2,3} dot {1,1}; head 1: rows {4,5}, {6,7} dot {1,-1}.
  ExpectFloats(*scores, {1, 2, 2, 1}, {1, 5, -1, -1});
  // "..." broadcasts: a [2, 1, 2] batch against b [3, 2, 1]: batch dims [2, 3].
  auto broadcast =
      Einsum("...ij,...jk->...ik", {Iota({2, 1, 1, 2}), F({3, 2, 1}, {1, 1, 1, 0, 0, 1})});
  ASSERT_TRUE(broadcast.ok()) << broadcast.status();
  ASSERT_EQ(broadcast->shape(), (Shape{2, 3, 1, 1}));
  EXPECT_THAT(Floats(*broadcast), ElementsAre(1, 0, 1, 5, 2, 3));
}

TEST(EinsumTest, OuterProductThreeOperandsAndIntegers) {
  auto outer = Einsum("i,j->ij", {F({2}, {1, 2}), F({3}, {1, 10, 100})});
  ASSERT_TRUE(outer.ok()) << outer.status();
  ExpectFloats(*outer, {2, 3}, {1, 10, 100, 2, 20, 200});
  // sum_j sum_k a_ij b_jk c_k: [[1,2]] . I . [3, 4] = 11.
  auto chain = Einsum("ij,jk,k->i", {F({1, 2}, {1, 2}), F({2, 2}, {1, 0, 0, 1}), F({2}, {3, 4})});
  ASSERT_TRUE(chain.ok()) << chain.status();
  ExpectFloats(*chain, {1}, {11});
  auto ints = Einsum("i,i->", {I({3}, {1, 2, 3}), I({3}, {4, 5, 6})});
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->type().ToString(), "int64[]");
  EXPECT_EQ(ints->data<int64_t>()[0], 32);
}

TEST(EinsumTest, RefusedEquationsNameTheEquation) {
  auto diagonal = Einsum("ii->i", {Iota({2, 2})});
  EXPECT_EQ(diagonal.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(diagonal.status().message(),
              HasSubstr("equation 'ii->i' repeats label 'i' within the term 'ii'"));
  auto rank = Einsum("ij,jk->ik", {Iota({2, 3}), Iota({3})});
  EXPECT_EQ(rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rank.status().message(), HasSubstr("term 'jk' does not fit input 1 of shape [3]"));
  auto sizes = Einsum("ij,jk->ik", {Iota({2, 3}), Iota({2, 2})});
  EXPECT_EQ(sizes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sizes.status().message(), HasSubstr("a label has size 3 in one operand and 2"));
  auto unknown = Einsum("ij->ik", {Iota({2, 3})});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("output label 'k' does not appear"));
  auto summed = Einsum("...i,...i->i", {Iota({1, 2}), Iota({3, 2})});
  EXPECT_EQ(summed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summed.status().message(), HasSubstr("sums a broadcast dimension of '...'"));
  auto syntax = Einsum("i1,j->ij", {Iota({2}), Iota({2})});
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(syntax.status().message(), HasSubstr("invalid character '1'"));
}

}  // namespace
}  // namespace loom::kernels
