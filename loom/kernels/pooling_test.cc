#include <cmath>
#include <limits>
#include <map>

#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

using Ints64 = std::vector<int64_t>;

TEST(MaxPoolTest, TwoByTwoStride2) {
  auto y = Eval("MaxPool", {Iota({1, 1, 4, 4})},
                {{"kernel_shape", Ints64{2, 2}}, {"strides", Ints64{2, 2}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 2, 2}, {5, 7, 13, 15});
}

TEST(MaxPoolTest, CeilModeAddsPartialWindows) {
  std::map<std::string, graph::AttrValue> attrs = {{"kernel_shape", Ints64{2, 2}},
                                                   {"strides", Ints64{2, 2}}};
  auto floor = Eval("MaxPool", {Iota({1, 1, 5, 5})}, attrs);
  ASSERT_TRUE(floor.ok()) << floor.status();
  ExpectFloats(*floor, {1, 1, 2, 2}, {6, 8, 16, 18});
  attrs["ceil_mode"] = int64_t{1};
  auto ceil = Eval("MaxPool", {Iota({1, 1, 5, 5})}, attrs);
  ASSERT_TRUE(ceil.ok()) << ceil.status();
  ExpectFloats(*ceil, {1, 1, 3, 3}, {6, 8, 9, 16, 18, 19, 21, 23, 24});
}

TEST(MaxPoolTest, CeilModeDropsWindowStartingInPadding) {
  // in 5, kernel 2, stride 3, pads (0,1): ceil gives 3 windows, but the third would start at 6,
  // past the input and its padding start, so it is dropped.
  auto y = Eval("MaxPool", {F({1, 1, 5}, {1, 2, 3, 4, 5})},
                {{"kernel_shape", Ints64{2}},
                 {"strides", Ints64{3}},
                 {"pads", Ints64{0, 1}},
                 {"ceil_mode", int64_t{1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 2}, {2, 5});
}

TEST(MaxPoolTest, SameUpperDilationAndIndices) {
  auto same = Eval("MaxPool", {F({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9})},
                   {{"kernel_shape", Ints64{2, 2}}, {"auto_pad", std::string("SAME_UPPER")}});
  ASSERT_TRUE(same.ok()) << same.status();
  ExpectFloats(*same, {1, 1, 3, 3}, {5, 6, 6, 8, 9, 9, 8, 9, 9});

  auto dilated = Eval("MaxPool", {Iota({1, 1, 4, 4})},
                      {{"kernel_shape", Ints64{2, 2}}, {"dilations", Ints64{2, 2}}});
  ASSERT_TRUE(dilated.ok()) << dilated.status();
  ExpectFloats(*dilated, {1, 1, 2, 2}, {10, 11, 14, 15});

  auto both = EvalAll("MaxPool", {F({1, 2, 2, 2}, {1, 4, 3, 2, 8, 5, 6, 7})},
                      {{"kernel_shape", Ints64{2, 2}}}, 17, /*num_outputs=*/2);
  ASSERT_TRUE(both.ok()) << both.status();
  ExpectFloats((*both)[0], {1, 2, 1, 1}, {4, 8});
  EXPECT_EQ((*both)[1].dtype(), DType::kInt64);
  EXPECT_THAT(Ints((*both)[1]), ElementsAre(1, 4));  // flat indices into X
}

TEST(MaxPoolTest, MissingKernelShapeAndBadPads) {
  auto no_kernel = Eval("MaxPool", {Iota({1, 1, 4, 4})});
  EXPECT_EQ(no_kernel.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_kernel.status().message(),
              HasSubstr("MaxPool 'test_node': attribute 'kernel_shape' is missing"));
  auto pads = Eval("MaxPool", {Iota({1, 1, 4, 4})},
                   {{"kernel_shape", Ints64{2, 2}}, {"pads", Ints64{1, 1}}});
  EXPECT_EQ(pads.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pads.status().message(), HasSubstr("attribute 'pads' [1,1] must have 4 values"));
}

TEST(AveragePoolTest, CountIncludePadZeroVersusOne) {
  Tensor x = F({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  std::map<std::string, graph::AttrValue> attrs = {{"kernel_shape", Ints64{2, 2}},
                                                   {"pads", Ints64{1, 1, 1, 1}}};
  auto exclude = Eval("AveragePool", {x}, attrs);
  ASSERT_TRUE(exclude.ok()) << exclude.status();
  ExpectFloats(*exclude, {1, 1, 4, 4},
               {1, 1.5f, 2.5f, 3, 2.5f, 3, 4, 4.5f, 5.5f, 6, 7, 7.5f, 7, 7.5f, 8.5f, 9});
  attrs["count_include_pad"] = int64_t{1};
  auto include = Eval("AveragePool", {x}, attrs);
  ASSERT_TRUE(include.ok()) << include.status();
  ExpectFloats(*include, {1, 1, 4, 4},
               {0.25f, 0.75f, 1.25f, 0.75f, 1.25f, 3, 4, 2.25f, 2.75f, 6, 7, 3.75f, 1.75f, 3.75f,
                4.25f, 2.25f});
}

TEST(AveragePoolTest, CeilModeDivisorExcludesPartBeyondPaddedInput) {
  Tensor x = F({1, 1, 6}, {1, 2, 3, 4, 5, 6});
  std::map<std::string, graph::AttrValue> attrs = {{"kernel_shape", Ints64{3}},
                                                   {"strides", Ints64{2}},
                                                   {"pads", Ints64{1, 1}},
                                                   {"ceil_mode", int64_t{1}},
                                                   {"count_include_pad", int64_t{1}}};
  // Windows start at -1, 1, 3, 5; the last covers x[5] and one pad; index 7 is beyond the
  // padded input and does not count (PyTorch gives [1, 3, 5, 3]).
  auto include = Eval("AveragePool", {x}, attrs);
  ASSERT_TRUE(include.ok()) << include.status();
  ExpectFloats(*include, {1, 1, 4}, {1, 3, 5, 3});
  attrs["count_include_pad"] = int64_t{0};
  auto exclude = Eval("AveragePool", {x}, attrs);
  ASSERT_TRUE(exclude.ok()) << exclude.status();
  ExpectFloats(*exclude, {1, 1, 4}, {1.5f, 3, 5, 6});
}

TEST(AveragePoolTest, DilationsOfOpset19) {
  // Window {0, 2} x {0, 2} of a 4x4 iota: (0 + 2 + 8 + 10) / 4, then shifted by one.
  auto y = Eval("AveragePool", {Iota({1, 1, 4, 4})},
                {{"kernel_shape", Ints64{2, 2}}, {"dilations", Ints64{2, 2}}}, 19);
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 2, 2}, {5, 6, 9, 10});
}

TEST(GlobalPoolTest, AverageAndMax) {
  Tensor x = F({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  auto avg = Eval("GlobalAveragePool", {x});
  ASSERT_TRUE(avg.ok()) << avg.status();
  ExpectFloats(*avg, {1, 2, 1, 1}, {2.5f, 6.5f});
  auto max = Eval("GlobalMaxPool", {x});
  ASSERT_TRUE(max.ok()) << max.status();
  ExpectFloats(*max, {1, 2, 1, 1}, {4, 8});
}

TEST(PoolTest, HugeKernelAndPadsFromAttributesStayCheap) {
  // A 2^30-wide window over 2 elements: the pools only visit the elements inside the input and
  // count the rest arithmetically (no per-window allocation of the kernel's size).
  const int64_t big = int64_t{1} << 30;
  std::map<std::string, AttrValue> attrs = {
      {"kernel_shape", Ints64{big}}, {"pads", Ints64{big / 2, big / 2}}, {"strides", Ints64{big}}};
  Tensor x = F({1, 1, 2}, {3, 5});
  auto max = Eval("MaxPool", {x}, attrs);
  ASSERT_TRUE(max.ok()) << max.status();
  ExpectFloats(*max, {1, 1, 1}, {5});
  auto avg = Eval("AveragePool", {x}, attrs);
  ASSERT_TRUE(avg.ok()) << avg.status();
  ExpectFloats(*avg, {1, 1, 1}, {4});
  attrs["count_include_pad"] = int64_t{1};
  auto padded = Eval("AveragePool", {x}, attrs);
  ASSERT_TRUE(padded.ok()) << padded.status();
  ExpectFloats(*padded, {1, 1, 1}, {8.0f / static_cast<float>(big)}, 1e-20f);

  // Past 2^31 - 1 a window value is refused before any extent arithmetic could overflow.
  const int64_t huge = int64_t{1} << 40;
  auto refused = Eval("MaxPool", {x}, {{"kernel_shape", Ints64{huge}}, {"strides", Ints64{huge}}});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("must be at most 2147483647 (dim 0: 1099511627776)"));
}

TEST(PoolTest, ThreeDimensionalMaxPoolIndicesAndLpPool) {
  Tensor x = Iota({1, 1, 2, 2, 2});
  auto outs = EvalAll("MaxPool", {x}, {{"kernel_shape", Ints64{2, 2, 2}}}, 17, 2);
  ASSERT_TRUE(outs.ok()) << outs.status();
  ExpectFloats((*outs)[0], {1, 1, 1, 1, 1}, {7});
  EXPECT_THAT(Ints((*outs)[1]), ::testing::ElementsAre(7));
  // storage_order 1: column-major over the spatial dims; the maximum of a 2x3 plane at (1, 0)
  // is index 1 (row-major 3).
  auto col = EvalAll("MaxPool", {F({1, 1, 2, 3}, {0, 1, 2, 9, 4, 5})},
                     {{"kernel_shape", Ints64{2, 3}}, {"storage_order", int64_t{1}}}, 17, 2);
  ASSERT_TRUE(col.ok()) << col.status();
  EXPECT_THAT(Ints((*col)[1]), ::testing::ElementsAre(1));
  auto lp =
      Eval("LpPool", {F({1, 1, 3}, {3, -4, 12})}, {{"kernel_shape", Ints64{2}}, {"p", int64_t{2}}});
  ASSERT_TRUE(lp.ok()) << lp.status();
  ExpectFloats(*lp, {1, 1, 2}, {5, std::sqrt(160.0f)});
  auto bad =
      Eval("LpPool", {F({1, 1, 3}, {3, -4, 12})}, {{"kernel_shape", Ints64{2}}, {"p", int64_t{0}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("LpPool 'test_node': attribute 'p' is 0"));
}

}  // namespace
}  // namespace loom::kernels
