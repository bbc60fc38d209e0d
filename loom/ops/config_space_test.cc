// ConfigSpace: mixed-radix indices, JSON round trips, and constraints (which configs can be
// instantiated; tuners propose only those).
#include "loom/ops/config_space.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::ops {
namespace {

using ::testing::HasSubstr;

ConfigSpace TwoKnobs() {
  ConfigSpace s;
  s.AddKnob("a", {1, 2, 4});
  s.AddKnob("b", {1, 8});
  return s;
}

TEST(ConfigSpaceTest, IndexIsMixedRadixWithTheFirstKnobLeastSignificant) {
  ConfigSpace s = TwoKnobs();
  EXPECT_EQ(s.size(), 6);
  EXPECT_EQ(s.Values(Config{4}), (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(s.FromChoices({1, 1}).index, 4);
  EXPECT_EQ(s.KnobIndex("b"), 1);
  EXPECT_EQ(s.KnobIndex("c"), -1);
  auto back = s.FromJson(s.ToJson(Config{5}));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->index, 5);
}

TEST(ConfigSpaceTest, WithoutConstraintsEveryConfigInRangeIsValid) {
  ConfigSpace s = TwoKnobs();
  EXPECT_EQ(s.CountValid(), 6);
  EXPECT_TRUE(s.IsValid(Config{5}));
  EXPECT_FALSE(s.IsValid(Config{6}));
  EXPECT_FALSE(s.IsValid(Config{-1}));
  absl::Status st = s.Validate(Config{6});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("outside the space"));
}

TEST(ConfigSpaceTest, ConstraintsMarkConfigsInvalidAndNameTheViolatedOne) {
  ConfigSpace s = TwoKnobs();
  s.AddConstraint("a*b <= 8", [](std::span<const int64_t> v) { return v[0] * v[1] <= 8; });
  s.AddConstraint("a != 2", [](std::span<const int64_t> v) { return v[0] != 2; });
  EXPECT_EQ(s.size(), 6);  // indices stay stable
  // (a, b): (1,1) (2,1) (4,1) (1,8) (2,8) (4,8); invalid: a == 2 twice, 4*8.
  EXPECT_EQ(s.CountValid(), 3);
  EXPECT_TRUE(s.IsValid(Config{0}));
  EXPECT_FALSE(s.IsValid(Config{1}));
  EXPECT_FALSE(s.IsValid(Config{5}));
  EXPECT_TRUE(s.Validate(Config{3}).ok());
  absl::Status st = s.Validate(Config{5});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("a*b <= 8"));
  EXPECT_THAT(st.message(), HasSubstr("{\"a\":4,\"b\":8}"));
  st = s.Validate(Config{1});
  EXPECT_THAT(st.message(), HasSubstr("a != 2"));
  ASSERT_EQ(s.constraints().size(), 2u);
}

TEST(ConfigSpaceTest, KnobsAddedAfterAConstraintKeepItsPositions) {
  ConfigSpace s;
  s.AddKnob("a", {1, 2});
  s.AddConstraint("a == 1", [](std::span<const int64_t> v) { return v[0] == 1; });
  s.AddKnob("fault", {0, 1});
  EXPECT_EQ(s.CountValid(), 2);
  EXPECT_TRUE(s.IsValid(s.FromChoices({0, 1})));
  EXPECT_FALSE(s.IsValid(s.FromChoices({1, 0})));
}

TEST(ConfigSpaceTest, DivisorsAreAscending) {
  EXPECT_EQ(Divisors(12), (std::vector<int64_t>{1, 2, 3, 4, 6, 12}));
  EXPECT_EQ(Divisors(1), (std::vector<int64_t>{1}));
}

}  // namespace
}  // namespace loom::ops
