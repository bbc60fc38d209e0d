#include "loom/graph/tensor.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace loom::graph {
namespace {

TEST(DTypeTest, NamesRoundTripAndSizes) {
  for (DType d : AllDTypes()) {
    EXPECT_EQ(DTypeFromName(DTypeName(d)), d) << DTypeName(d);
    EXPECT_GT(DTypeSize(d), 0u) << DTypeName(d);
  }
  EXPECT_EQ(AllDTypes().size(), 13u);
  EXPECT_EQ(DTypeFromName("float8"), DType::kUndefined);
  EXPECT_EQ(DTypeSize(DType::kFloat16), 2u);
  EXPECT_EQ(DTypeSize(DType::kUint64), 8u);
  EXPECT_TRUE(IsFloatingDType(DType::kBFloat16));
  EXPECT_FALSE(IsFloatingDType(DType::kInt8));
  EXPECT_TRUE(IsIntegerDType(DType::kUint16));
  EXPECT_FALSE(IsIntegerDType(DType::kBool));
  EXPECT_TRUE(IsSignedIntegerDType(DType::kInt16));
  EXPECT_FALSE(IsSignedIntegerDType(DType::kUint32));
}

TEST(HalfTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = HalfToFloat(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << bits;
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), h) << "bits " << bits << " value " << f;
  }
}

TEST(HalfTest, KnownValuesAndRounding) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);               // rounds to infinity
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // exactly half the smallest: even
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  // 1 + 2^-11 is halfway between 1 and the next half: ties to even (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
}

TEST(BFloat16Test, RoundsToNearestEven) {
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even.
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const float f = BFloat16ToFloat(static_cast<uint16_t>(bits));
    if (!std::isnan(f)) EXPECT_EQ(FloatToBFloat16(f), bits);
  }
}

TEST(TensorTest, ElementAccessConvertsEveryDType) {
  Tensor h(DType::kFloat16, {2});
  h.data<uint16_t>()[0] = FloatToHalf(-3.0f);
  h.data<uint16_t>()[1] = FloatToHalf(2.5f);
  EXPECT_EQ(h.DoubleAt(0), -3.0);
  EXPECT_EQ(h.Int64At(1), 2);
  Tensor u(DType::kUint64, {1});
  u.data<uint64_t>()[0] = 7;
  EXPECT_EQ(u.Int64At(0), 7);
  Tensor d(DType::kFloat64, {2});
  d.data<double>()[0] = std::nan("");
  d.data<double>()[1] = 1e300;
  // Out-of-range and NaN floats convert to 0 instead of undefined behaviour.
  EXPECT_EQ(d.Int64At(0), 0);
  EXPECT_EQ(d.Int64At(1), 0);
}

}  // namespace
}  // namespace loom::graph
