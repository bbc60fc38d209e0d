#include "loom/search/sa_optimizer.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::search {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ops::ConfigSpace Space() {
  ops::ConfigSpace s;
  s.AddKnob("x", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  s.AddKnob("one", {7});  // a knob with a single value never moves
  s.AddKnob("y", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  s.AddKnob("z", {0, 1, 2, 3, 4, 5, 6, 7});
  return s;
}

// A unimodal score peaking at x=11, y=3, z=5 (index of the peak: 11 + 16 * (3 + 16 * 5)).
BatchScoreFn Peak(const ops::ConfigSpace& space) {
  return [&space](const std::vector<int64_t>& indices) -> absl::StatusOr<std::vector<float>> {
    std::vector<float> out;
    for (int64_t i : indices) {
      std::vector<int64_t> v = space.Values(ops::Config{i});
      double d = std::abs(v[0] - 11) + std::abs(v[2] - 3) + std::abs(v[3] - 5);
      out.push_back(static_cast<float>(-d + 0.001 * (i % 7)));
    }
    return out;
  };
}

TEST(SaOptimizerTest, FindsTheTopConfigsBestFirst) {
  ops::ConfigSpace space = Space();
  SaOptimizer sa(space, SaOptions{.iters = 300, .parallel = 32}, 1);
  auto best = sa.FindMaximums(Peak(space), 5, {});
  ASSERT_TRUE(best.ok()) << best.status();
  ASSERT_EQ(best->size(), 5u);
  const int64_t peak = 11 + 16 * (3 + 16 * 5);
  EXPECT_EQ((*best)[0].index, peak);
  // Scores are non-increasing and the configs distinct.
  auto scores = *Peak(space)(
      {(*best)[0].index, (*best)[1].index, (*best)[2].index, (*best)[3].index, (*best)[4].index});
  EXPECT_TRUE(std::is_sorted(scores.rbegin(), scores.rend()));
  std::vector<int64_t> idx;
  for (const auto& c : *best) idx.push_back(c.index);
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(std::unique(idx.begin(), idx.end()), idx.end());
}

TEST(SaOptimizerTest, ExcludedConfigsAreNeverReturned) {
  ops::ConfigSpace space = Space();
  const int64_t peak = 11 + 16 * (3 + 16 * 5);
  SaOptimizer sa(space, SaOptions{.iters = 300, .parallel = 32}, 2);
  auto best = sa.FindMaximums(Peak(space), 3, {peak});
  ASSERT_TRUE(best.ok());
  ASSERT_EQ(best->size(), 3u);
  for (const auto& c : *best) EXPECT_NE(c.index, peak);
  // The best remaining configs are the peak's neighbours at distance 1.
  std::vector<int64_t> v = space.Values((*best)[0]);
  EXPECT_EQ(std::abs(v[0] - 11) + std::abs(v[2] - 3) + std::abs(v[3] - 5), 1);
}

TEST(SaOptimizerTest, SmallSpaceReturnsEveryUnexcludedConfigOnce) {
  ops::ConfigSpace space;
  space.AddKnob("a", {1, 2, 3});
  space.AddKnob("b", {1, 2});
  SaOptimizer sa(space, SaOptions{.iters = 50, .parallel = 16}, 3);
  BatchScoreFn score = [](const std::vector<int64_t>& idx) -> absl::StatusOr<std::vector<float>> {
    std::vector<float> out;
    for (int64_t i : idx) out.push_back(static_cast<float>(i));
    return out;
  };
  auto best = sa.FindMaximums(score, 10, {4});
  ASSERT_TRUE(best.ok());
  std::vector<int64_t> idx;
  for (const auto& c : *best) idx.push_back(c.index);
  EXPECT_THAT(idx, ElementsAre(5, 3, 2, 1, 0));
}

TEST(SaOptimizerTest, SameSeedSameResult) {
  ops::ConfigSpace space = Space();
  SaOptimizer a(space, SaOptions{.iters = 100, .parallel = 16}, 7);
  SaOptimizer b(space, SaOptions{.iters = 100, .parallel = 16}, 7);
  auto ra = a.FindMaximums(Peak(space), 20, {});
  auto rb = b.FindMaximums(Peak(space), 20, {});
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(*ra, *rb);
}

TEST(SaOptimizerTest, ScoreErrorsPropagate) {
  ops::ConfigSpace space = Space();
  SaOptimizer sa(space, SaOptions{}, 1);
  BatchScoreFn failing = [](const std::vector<int64_t>&) -> absl::StatusOr<std::vector<float>> {
    return absl::InternalError("model exploded");
  };
  auto r = sa.FindMaximums(failing, 4, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("model exploded"));
  BatchScoreFn short_scores =
      [](const std::vector<int64_t>&) -> absl::StatusOr<std::vector<float>> {
    return std::vector<float>{1.0f};
  };
  auto s = sa.FindMaximums(short_scores, 4, {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.status().message(), HasSubstr("1 scores"));
}

TEST(SaOptimizerTest, NeighbourChangesExactlyOneMovableKnob) {
  ops::ConfigSpace space = Space();
  SaOptimizer sa(space, SaOptions{}, 1);
  base::Rng rng(5);
  for (int t = 0; t < 500; ++t) {
    int64_t i = rng.UniformInt(0, space.size() - 1);
    int64_t j = sa.RandomNeighbour(i, rng);
    ASSERT_TRUE(space.Contains(ops::Config{j}));
    std::vector<int64_t> a = space.Choices(ops::Config{i}), b = space.Choices(ops::Config{j});
    int changed = 0;
    for (size_t k = 0; k < a.size(); ++k) changed += a[k] != b[k];
    EXPECT_EQ(changed, 1);
    EXPECT_EQ(a[1], b[1]);
  }
  EXPECT_EQ(sa.WithChoice(0, 2, 3), space.FromChoices({0, 0, 3, 0}).index);
}

}  // namespace
}  // namespace loom::search

namespace loom::search {
namespace {

TEST(SaOptimizerTest, ScoresAndReturnsOnlyValidConfigs) {
  // The unconstrained peak (x=11, y=3, z=5) is invalid: x + y must stay <= 12, so the best valid
  // configs lie on the constraint's border (x=10 or 9 with y=2 or 3 ...).
  ops::ConfigSpace space = Space();
  space.AddConstraint("x + y <= 12", [](std::span<const int64_t> v) { return v[0] + v[2] <= 12; });
  BatchScoreFn peak = Peak(space);
  int64_t scored_invalid = 0;
  BatchScoreFn counting =
      [&](const std::vector<int64_t>& indices) -> absl::StatusOr<std::vector<float>> {
    for (int64_t i : indices) scored_invalid += space.IsValid(ops::Config{i}) ? 0 : 1;
    return peak(indices);
  };
  SaOptimizer sa(space, SaOptions{.iters = 300, .parallel = 32}, 3);
  auto best = sa.FindMaximums(counting, 8, {});
  ASSERT_TRUE(best.ok()) << best.status();
  ASSERT_EQ(best->size(), 8u);
  EXPECT_EQ(scored_invalid, 0);
  for (const ops::Config& c : *best) EXPECT_TRUE(space.IsValid(c)) << c.index;
  // The best valid configs (z=5, x + y = 12 with 9 <= x <= 11) are at distance 2 from the peak.
  auto top = *peak({(*best)[0].index});
  EXPECT_GE(top[0], -2.0f);
}

}  // namespace
}  // namespace loom::search
