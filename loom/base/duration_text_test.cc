#include "loom/base/duration_text.h"

#include <gtest/gtest.h>

#include <limits>

namespace loom::base {
namespace {

TEST(DurationTextTest, SecondsMinutesAndHoursRoundedToTheSecond) {
  EXPECT_EQ(DurationText(0), "0s");
  EXPECT_EQ(DurationText(41.6), "42s");
  EXPECT_EQ(DurationText(59.4), "59s");
  EXPECT_EQ(DurationText(59.6), "1m00s");
  EXPECT_EQ(DurationText(125), "2m05s");
  EXPECT_EQ(DurationText(3599), "59m59s");
  EXPECT_EQ(DurationText(7260), "2h01m");
  EXPECT_EQ(DurationText(100 * 3600 + 59), "100h00m");
}

TEST(DurationTextTest, UnknownFiguresAreADash) {
  EXPECT_EQ(DurationText(-1), "-");
  EXPECT_EQ(DurationText(std::numeric_limits<double>::quiet_NaN()), "-");
  EXPECT_EQ(DurationText(std::numeric_limits<double>::infinity()), "-");
}

}  // namespace
}  // namespace loom::base
