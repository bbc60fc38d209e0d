// Reference kernels of the data-movement operators added for issue 17: Cast, CastLike,
// GatherElements, GatherND, ScatterElements, ScatterND, OneHot, NonZero, Range, Tile, Trilu,
// Split, DepthToSpace, SpaceToDepth, Size, Pad (wrap) and Resize. Expected values are worked out
// by hand or taken from the examples in ONNX's operator documentation.
#include <cmath>
#include <cstring>
#include <limits>

#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

template <typename T>
Tensor Typed(DType dtype, Shape shape, std::vector<T> values) {
  Tensor t(dtype, std::move(shape));
  std::memcpy(t.raw_data(), values.data(), t.num_bytes());
  return t;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  auto v = t.values<T>();
  return {v.begin(), v.end()};
}

graph::AttrValue To(int64_t onnx_type) { return graph::AttrValue(onnx_type); }

TEST(CastTest, FloatToIntegersTruncatesAndHandlesNanInfLikeOnnxRuntime) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = F({6}, {2.9f, -2.9f, nan, inf, -inf, 300.5f});
  auto i64 = Eval("Cast", {x}, {{"to", To(7)}});
  ASSERT_TRUE(i64.ok()) << i64.status();
  const int64_t min64 = std::numeric_limits<int64_t>::min();
  EXPECT_THAT(Values<int64_t>(*i64), ElementsAre(2, -2, min64, min64, min64, 300));
  auto i32 = Eval("Cast", {x}, {{"to", To(6)}});
  ASSERT_TRUE(i32.ok());
  const int32_t min32 = std::numeric_limits<int32_t>::min();
  EXPECT_THAT(Values<int32_t>(*i32), ElementsAre(2, -2, min32, min32, min32, 300));
  // Narrow targets go through a 32-bit conversion and keep the low bits: 300 -> 44.
  auto u8 = Eval("Cast", {x}, {{"to", To(2)}});
  ASSERT_TRUE(u8.ok());
  EXPECT_THAT(Values<uint8_t>(*u8), ElementsAre(2, 254, 0, 0, 0, 44));
  auto b = Eval("Cast", {x}, {{"to", To(9)}});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dtype(), DType::kBool);
  EXPECT_THAT(Values<uint8_t>(*b), ElementsAre(1, 1, 1, 1, 1, 1));
}

TEST(CastTest, IntegersWrapAndHalfTypesRound) {
  Tensor x = I({3}, {-1, 65537, int64_t{1} << 40});
  auto u16 = Eval("Cast", {x}, {{"to", To(4)}});
  ASSERT_TRUE(u16.ok());
  EXPECT_THAT(Values<uint16_t>(*u16), ElementsAre(65535, 1, 0));
  auto u64 = Eval("Cast", {x}, {{"to", To(13)}});
  ASSERT_TRUE(u64.ok());
  EXPECT_EQ(Values<uint64_t>(*u64)[0], std::numeric_limits<uint64_t>::max());

  // float -> float16 rounds to nearest even; 65520 overflows to inf; float16 -> float is exact.
  Tensor f = F({3}, {1.0f + 1.0f / 4096, 65520.0f, -0.5f});
  auto half = Eval("Cast", {f}, {{"to", To(10)}});
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->dtype(), DType::kFloat16);
  EXPECT_EQ(half->DoubleAt(0), 1.0);
  EXPECT_TRUE(std::isinf(half->DoubleAt(1)));
  EXPECT_EQ(half->DoubleAt(2), -0.5);
  auto bf16 = Eval("Cast", {f}, {{"to", To(16)}});
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(bf16->dtype(), DType::kBFloat16);
  EXPECT_EQ(bf16->DoubleAt(2), -0.5);
  auto back = Eval("Cast", {*half}, {{"to", To(1)}});
  ASSERT_TRUE(back.ok());
  EXPECT_THAT(Floats(*back), ElementsAre(1.0f, std::numeric_limits<float>::infinity(), -0.5f));
  auto dbl = Eval("Cast", {Typed<uint8_t>(DType::kBool, {2}, {0, 1})}, {{"to", To(11)}});
  ASSERT_TRUE(dbl.ok());
  EXPECT_THAT(Values<double>(*dbl), ElementsAre(0.0, 1.0));
}

TEST(CastTest, RefusesTypesOutsideTheSetNamingThem) {
  for (const auto& [code, name] : std::vector<std::pair<int64_t, std::string>>{
           {17, "FLOAT8E4M3FN"}, {22, "INT4"}, {8, "STRING"}, {14, "COMPLEX64"}}) {
    auto y = Eval("Cast", {F({1}, {1})}, {{"to", To(code)}});
    EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(y.status().message(), HasSubstr("attribute 'to' has element type " + name));
  }
  auto missing = Eval("Cast", {F({1}, {1})});
  EXPECT_THAT(missing.status().message(), HasSubstr("attribute 'to'"));
}

TEST(CastLikeTest, TakesTheTargetTypeFromTheSecondInput) {
  auto y = Eval("CastLike", {F({2}, {1.5f, -7.9f}), I({}, {0})});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(Ints(*y), ElementsAre(1, -7));
}

TEST(GatherElementsTest, Axis1WithNegativeIndicesAndRangeCheck) {
  // ONNX example: data [[1,2],[3,4]], indices [[0,0],[1,0]], axis 1 -> [[1,1],[4,3]].
  Tensor data = F({2, 2}, {1, 2, 3, 4});
  auto y = Eval("GatherElements", {data, I({2, 2}, {0, 0, -1, 0})}, {{"axis", int64_t{1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 2}, {1, 1, 4, 3});
  auto bad = Eval("GatherElements", {data, I({2, 2}, {0, 2, 0, 0})}, {{"axis", int64_t{1}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("index 2 (element 1 of the indices) is out of range for axis 1 of size 2"));
}

TEST(GatherNDTest, SlicesElementsAndBatchDims) {
  Tensor data = I({2, 2}, {0, 1, 2, 3});
  auto elems = Eval("GatherND", {data, I({2, 2}, {0, 0, 1, 1})});
  ASSERT_TRUE(elems.ok()) << elems.status();
  EXPECT_EQ(elems->shape(), (Shape{2}));
  EXPECT_THAT(Ints(*elems), ElementsAre(0, 3));
  auto rows = Eval("GatherND", {data, I({2, 1}, {1, 0})});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->shape(), (Shape{2, 2}));
  EXPECT_THAT(Ints(*rows), ElementsAre(2, 3, 0, 1));
  // ONNX example 5: batch_dims 1, data [2,2,2], indices [[1],[0]] -> [[2,3],[4,5]].
  Tensor d3 = I({2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  auto batched = Eval("GatherND", {d3, I({2, 1}, {1, 0})}, {{"batch_dims", int64_t{1}}});
  ASSERT_TRUE(batched.ok()) << batched.status();
  EXPECT_EQ(batched->shape(), (Shape{2, 2}));
  EXPECT_THAT(Ints(*batched), ElementsAre(2, 3, 4, 5));
  auto oob = Eval("GatherND", {data, I({1, 2}, {0, 5})});
  EXPECT_EQ(oob.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(oob.status().message(), HasSubstr("index 5 (element 1 of the indices) is out of "
                                                "range for data dim 1 of size 2"));
}

TEST(ScatterElementsTest, ReplacesAndReduces) {
  // ONNX example 1.
  Tensor data = F({3, 3}, {0, 0, 0, 0, 0, 0, 0, 0, 0});
  Tensor idx = I({2, 3}, {1, 0, 2, 0, 2, 1});
  Tensor upd = F({2, 3}, {1.0f, 1.1f, 1.2f, 2.0f, 2.1f, 2.2f});
  auto y = Eval("ScatterElements", {data, idx, upd});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {3, 3}, {2.0f, 1.1f, 0, 1.0f, 0, 2.2f, 0, 2.1f, 1.2f});
  // Duplicate indices accumulate under "add" (opset 16) and keep the largest under "max" (18).
  Tensor ones = F({1, 5}, {1, 2, 3, 4, 5});
  Tensor dup = I({1, 2}, {1, 1});
  Tensor dup_upd = F({1, 2}, {1.1f, 2.1f});
  auto add = Eval("ScatterElements", {ones, dup, dup_upd},
                  {{"axis", int64_t{1}}, {"reduction", std::string("add")}}, 16);
  ASSERT_TRUE(add.ok()) << add.status();
  ExpectFloats(*add, {1, 5}, {1, 5.2f, 3, 4, 5});
  auto max = Eval("ScatterElements", {ones, dup, dup_upd},
                  {{"axis", int64_t{1}}, {"reduction", std::string("max")}}, 18);
  ASSERT_TRUE(max.ok()) << max.status();
  ExpectFloats(*max, {1, 5}, {1, 2.1f, 3, 4, 5});
  auto old = Eval("ScatterElements", {ones, dup, dup_upd},
                  {{"axis", int64_t{1}}, {"reduction", std::string("max")}}, 16);
  EXPECT_THAT(old.status().message(), HasSubstr("reduction 'max' is not supported at opset 16"));
  auto oob =
      Eval("ScatterElements", {ones, I({1, 1}, {-6}), F({1, 1}, {0})}, {{"axis", int64_t{1}}});
  EXPECT_EQ(oob.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(oob.status().message(), HasSubstr("index -6"));
}

TEST(ScatterNDTest, ExampleAndMulReduction) {
  // ONNX example 1: data [1..8], indices [[4],[3],[1],[7]], updates [9,10,11,12].
  Tensor data = F({8}, {1, 2, 3, 4, 5, 6, 7, 8});
  Tensor idx = I({4, 1}, {4, 3, 1, 7});
  auto y = Eval("ScatterND", {data, idx, F({4}, {9, 10, 11, 12})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {8}, {1, 11, 3, 10, 9, 6, 7, 12});
  auto mul = Eval("ScatterND", {data, I({2, 1}, {0, 0}), F({2}, {2, 3})},
                  {{"reduction", std::string("mul")}}, 16);
  ASSERT_TRUE(mul.ok()) << mul.status();
  EXPECT_FLOAT_EQ(mul->data<float>()[0], 6);
  auto bad = Eval("ScatterND", {data, idx, F({3}, {9, 10, 11})});
  EXPECT_THAT(bad.status().message(), HasSubstr("updates float32[3] must be float32[4]"));
}

TEST(OneHotTest, AxisNegativeIndicesAndOutOfRangeRowsOff) {
  // indices [0, -1, 5] with depth 3: -1 is class 2; 5 is outside [-3, 3) and stays off.
  auto y = Eval("OneHot", {I({3}, {0, -1, 5}), F({}, {3}), F({2}, {0, 7})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {3, 3}, {7, 0, 0, 0, 0, 7, 0, 0, 0});
  auto axis0 =
      Eval("OneHot", {I({2}, {1, 0}), I({}, {2}), I({2}, {-1, 1})}, {{"axis", int64_t{0}}});
  ASSERT_TRUE(axis0.ok()) << axis0.status();
  EXPECT_EQ(axis0->shape(), (Shape{2, 2}));
  EXPECT_THAT(Ints(*axis0), ElementsAre(-1, 1, 1, -1));
  auto zero_depth = Eval("OneHot", {I({1}, {0}), I({}, {0}), I({2}, {0, 1})});
  EXPECT_THAT(zero_depth.status().message(), HasSubstr("depth 0 must be a positive number"));
}

TEST(NonZeroTest, IndicesPerDimInRowMajorOrder) {
  auto y = Eval("NonZero", {F({2, 2}, {1, 0, 1, 1})});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), (Shape{2, 3}));
  EXPECT_THAT(Ints(*y), ElementsAre(0, 1, 1, 0, 0, 1));
}

TEST(RangeTest, FloatIntAndEmpty) {
  auto f = Eval("Range", {F({}, {3}), F({}, {9}), F({}, {3})});
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectFloats(*f, {2}, {3, 6});
  auto i = Eval("Range", {I({}, {10}), I({}, {4}), I({}, {-3})});
  ASSERT_TRUE(i.ok());
  EXPECT_THAT(Ints(*i), ElementsAre(10, 7));
  auto empty = Eval("Range", {I({}, {0}), I({}, {5}), I({}, {-1})});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->shape(), (Shape{0}));
  auto zero = Eval("Range", {I({}, {0}), I({}, {5}), I({}, {0})});
  EXPECT_THAT(zero.status().message(), HasSubstr("delta must not be 0"));
  auto mixed = Eval("Range", {I({}, {0}), F({}, {5}), I({}, {1})});
  EXPECT_THAT(mixed.status().message(), HasSubstr("scalars of one type"));
}

TEST(TileTest, RepeatsEachDim) {
  auto y = Eval("Tile", {F({2, 2}, {1, 2, 3, 4}), I({2}, {1, 2})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 4}, {1, 2, 1, 2, 3, 4, 3, 4});
  auto bad = Eval("Tile", {F({2}, {1, 2}), I({2}, {1, 2})});
  EXPECT_THAT(bad.status().message(), HasSubstr("must have one value per dim"));
}

TEST(TriluTest, UpperLowerAndK) {
  Tensor x = Iota({3, 3});
  auto upper = Eval("Trilu", {x});
  ASSERT_TRUE(upper.ok()) << upper.status();
  ExpectFloats(*upper, {3, 3}, {0, 1, 2, 0, 4, 5, 0, 0, 8});
  auto lower = Eval("Trilu", {x, I({}, {-1})}, {{"upper", int64_t{0}}});
  ASSERT_TRUE(lower.ok()) << lower.status();
  ExpectFloats(*lower, {3, 3}, {0, 0, 0, 3, 0, 0, 6, 7, 0});
  auto huge_k = Eval("Trilu", {x, I({}, {std::numeric_limits<int64_t>::min()})});
  ASSERT_TRUE(huge_k.ok());
  ExpectFloats(*huge_k, {3, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8});
}

TEST(SplitTest, EqualPartsSplitInputAndNumOutputs) {
  Tensor x = Iota({1, 6});
  auto eq = EvalAll("Split", {x}, {{"axis", int64_t{1}}}, 13, 3);
  ASSERT_TRUE(eq.ok()) << eq.status();
  ExpectFloats((*eq)[2], {1, 2}, {4, 5});
  auto parts = EvalAll("Split", {x, I({2}, {2, 4})}, {{"axis", int64_t{1}}}, 13, 2);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ExpectFloats((*parts)[1], {1, 4}, {2, 3, 4, 5});
  // Opset 18: num_outputs 4 over 6 -> 2, 2, 2, 0.
  auto uneven = EvalAll("Split", {x}, {{"axis", int64_t{1}}, {"num_outputs", int64_t{4}}}, 18, 4);
  ASSERT_TRUE(uneven.ok()) << uneven.status();
  EXPECT_EQ((*uneven)[3].shape(), (Shape{1, 0}));
  auto bad = EvalAll("Split", {x, I({2}, {2, 3})}, {{"axis", int64_t{1}}}, 13, 2);
  EXPECT_THAT(bad.status().message(), HasSubstr("split [2,3] sums to 5 but axis 1 has size 6"));
}

TEST(DepthSpaceTest, DcrCrdAndInverse) {
  // ONNX's DepthToSpace examples: x = arange(48).reshape(1, 8, 2, 3), blocksize 2.
  Tensor x = Iota({1, 8, 2, 3});
  auto dcr = Eval("DepthToSpace", {x}, {{"blocksize", int64_t{2}}});
  ASSERT_TRUE(dcr.ok()) << dcr.status();
  ASSERT_EQ(dcr->shape(), (Shape{1, 2, 4, 6}));
  const std::vector<float> dcr_values = Floats(*dcr);
  EXPECT_THAT(std::vector<float>(dcr_values.begin(), dcr_values.begin() + 6),
              ElementsAre(0, 12, 1, 13, 2, 14));
  auto crd = Eval("DepthToSpace", {x}, {{"blocksize", int64_t{2}}, {"mode", std::string("CRD")}});
  ASSERT_TRUE(crd.ok());
  const std::vector<float> crd_values = Floats(*crd);
  EXPECT_THAT(std::vector<float>(crd_values.begin(), crd_values.begin() + 6),
              ElementsAre(0, 6, 1, 7, 2, 8));
  // SpaceToDepth (DCR) undoes DepthToSpace (DCR); CRD needs opset 28.
  auto back = Eval("SpaceToDepth", {*dcr}, {{"blocksize", int64_t{2}}});
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectClose(*back, x);
  auto crd_back =
      Eval("SpaceToDepth", {*crd}, {{"blocksize", int64_t{2}}, {"mode", std::string("CRD")}}, 28);
  ASSERT_TRUE(crd_back.ok()) << crd_back.status();
  ExpectClose(*crd_back, x);
  auto old =
      Eval("SpaceToDepth", {*crd}, {{"blocksize", int64_t{2}}, {"mode", std::string("CRD")}});
  EXPECT_THAT(old.status().message(), HasSubstr("mode 'CRD' is not supported (DCR)"));
}

TEST(SizeTest, CountsElements) {
  auto y = Eval("Size", {Iota({2, 3, 4})});
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->shape(), (Shape{}));
  EXPECT_THAT(Ints(*y), ElementsAre(24));
}

TEST(PadTest, WrapModeFromOpset19) {
  // ONNX example 4: [[1.0,1.2],[2.3,3.4],[4.5,5.7]] with pads [2,1,1,1].
  Tensor x = F({3, 2}, {1.0f, 1.2f, 2.3f, 3.4f, 4.5f, 5.7f});
  auto y = Eval("Pad", {x, I({4}, {2, 1, 1, 1})}, {{"mode", std::string("wrap")}}, 19);
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {6, 4},
               {3.4f, 2.3f, 3.4f, 2.3f, 5.7f, 4.5f, 5.7f, 4.5f, 1.2f, 1.0f, 1.2f, 1.0f,
                3.4f, 2.3f, 3.4f, 2.3f, 5.7f, 4.5f, 5.7f, 4.5f, 1.2f, 1.0f, 1.2f, 1.0f});
}

TEST(ResizeTest, NearestUpsampleByScales) {
  // ONNX's resize_upsample_scales_nearest: [[1,2],[3,4]] by (1, 1, 2, 3).
  Tensor x = F({1, 1, 2, 2}, {1, 2, 3, 4});
  auto y =
      Eval("Resize", {x, Tensor(), F({4}, {1, 1, 2, 3})}, {{"mode", std::string("nearest")}}, 19);
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 4, 6},
               {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4});
}

TEST(ResizeTest, LinearAlignCornersAndHalfPixel) {
  Tensor x = F({1, 1, 1, 2}, {0, 3});
  auto ac = Eval("Resize", {x, Tensor(), Tensor(), I({4}, {1, 1, 1, 4})},
                 {{"mode", std::string("linear")},
                  {"coordinate_transformation_mode", std::string("align_corners")}},
                 19);
  ASSERT_TRUE(ac.ok()) << ac.status();
  ExpectFloats(*ac, {1, 1, 1, 4}, {0, 1, 2, 3});
  // half_pixel: x_src = (y + 0.5) / 2 - 0.5 -> -0.25, 0.25, 0.75, 1.25; clamped at the edges.
  auto hp =
      Eval("Resize", {x, Tensor(), F({4}, {1, 1, 1, 2})}, {{"mode", std::string("linear")}}, 19);
  ASSERT_TRUE(hp.ok()) << hp.status();
  ExpectFloats(*hp, {1, 1, 1, 4}, {0, 0.75f, 2.25f, 3});
}

TEST(ResizeTest, CubicUpsampleMatchesOnnxExample) {
  // ONNX's resize_upsample_scales_cubic_align_corners on arange(1..16).reshape(1,1,4,4), first
  // row: 1, 1.34110787, 1.80029155, 2.32944606, ...
  Tensor x = F({1, 1, 4, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  auto y = Eval("Resize", {x, Tensor(), F({4}, {1, 1, 2, 2})},
                {{"mode", std::string("cubic")},
                 {"coordinate_transformation_mode", std::string("align_corners")}},
                19);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->shape(), (Shape{1, 1, 8, 8}));
  EXPECT_NEAR(y->data<float>()[0], 1.0f, 1e-5);
  EXPECT_NEAR(y->data<float>()[1], 1.34110787f, 1e-5);
  EXPECT_NEAR(y->data<float>()[2], 1.80029155f, 1e-5);
  EXPECT_NEAR(y->data<float>()[3], 2.32944606f, 1e-5);
}

TEST(ResizeTest, SizesWithAxesAndAspectRatioAndErrors) {
  Tensor x = Iota({1, 1, 2, 4});
  // not_larger: scale = min(4/2, 4/4) = 1 -> unchanged extents.
  auto y = Eval("Resize", {x, Tensor(), Tensor(), I({2}, {4, 4})},
                {{"axes", std::vector<int64_t>{2, 3}},
                 {"keep_aspect_ratio_policy", std::string("not_larger")}},
                19);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), (Shape{1, 1, 2, 4}));
  auto both = Eval("Resize", {x, Tensor(), F({4}, {1, 1, 2, 2}), I({4}, {1, 1, 4, 8})}, {}, 19);
  EXPECT_THAT(both.status().message(), HasSubstr("exactly one of scales and sizes"));
  auto mode =
      Eval("Resize", {x, Tensor(), F({4}, {1, 1, 2, 2})}, {{"mode", std::string("bicubic")}}, 19);
  EXPECT_THAT(mode.status().message(), HasSubstr("mode 'bicubic' is not one of nearest"));
}

}  // namespace
}  // namespace loom::kernels
