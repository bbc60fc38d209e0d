#include "loom/tune/task_scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;

MATCHER_P2(StatusIs, code, matcher, "") {
  return arg.code() == code &&
         ::testing::ExplainMatchResult(matcher, arg.message(), result_listener);
}

constexpr double kInf = std::numeric_limits<double>::infinity();

TaskScheduler Make(std::vector<double> weights, TaskSchedulerOptions o = {.epsilon = 0}) {
  auto s = TaskScheduler::Create(std::move(weights), o);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

// Runs `rounds` rounds; task i's best after its r-th round (from 1) is curve[i](r). Returns how
// many rounds each task got.
std::vector<int> Play(TaskScheduler& s, const std::vector<double (*)(int)>& curves, int rounds) {
  std::vector<int> got(curves.size(), 0);
  for (int r = 0; r < rounds; ++r) {
    std::optional<int> t = s.Next();
    if (!t.has_value()) break;
    ++got[static_cast<size_t>(*t)];
    s.Observe(*t, curves[static_cast<size_t>(*t)](got[static_cast<size_t>(*t)]));
  }
  return got;
}

TEST(TaskSchedulerTest, WarmUpGivesEveryTaskOneRoundInOrder) {
  TaskScheduler s = Make({1, 1, 1});
  for (int expect : {0, 1, 2}) {
    ASSERT_EQ(s.Next(), expect);
    s.Observe(expect, 1e-3);
  }
  EXPECT_EQ(s.rounds(0), 1);
  EXPECT_EQ(s.rounds(2), 1);
}

TEST(TaskSchedulerTest, PicksTheMostNegativeWeightedGradient) {
  // alpha 0: only the forward estimate -best / n counts.
  TaskScheduler s = Make({1, 1}, {.alpha = 0, .epsilon = 0});
  s.Observe(0, 2e-3);
  s.Observe(1, 5e-3);
  EXPECT_DOUBLE_EQ(s.Gradient(0), -2e-3);
  EXPECT_DOUBLE_EQ(s.Gradient(1), -5e-3);
  EXPECT_EQ(s.Next(), 1);  // the slower task has more to gain
}

TEST(TaskSchedulerTest, WeightsCount) {
  // Same latencies; task 0 occurs 4 times in the model, so its rounds are worth 4x.
  TaskScheduler s = Make({4, 1}, {.alpha = 0, .epsilon = 0});
  s.Observe(0, 2e-3);
  s.Observe(1, 5e-3);
  EXPECT_DOUBLE_EQ(s.Gradient(0), -8e-3);
  EXPECT_EQ(s.Next(), 0);
}

TEST(TaskSchedulerTest, BackwardGradientFromTheWindow) {
  TaskScheduler s = Make({1}, {.alpha = 1, .backward_window = 2, .epsilon = 0});
  s.Observe(0, 9e-3);
  s.Observe(0, 7e-3);
  EXPECT_DOUBLE_EQ(s.Gradient(0), 0);  // fewer than window + 1 rounds: no backward term
  s.Observe(0, 5e-3);
  EXPECT_DOUBLE_EQ(s.Gradient(0), (5e-3 - 9e-3) / 2);
}

TEST(TaskSchedulerTest, ATaskThatStoppedImprovingGetsFewerRounds) {
  // Two like tasks improve alike (3% a round) until task 1 stops after its 5th round.
  TaskScheduler s = Make({1, 1}, {.epsilon = 0});
  std::vector<int> got = Play(s,
                              {+[](int r) { return 5e-3 * std::pow(0.97, r - 1); },
                               +[](int r) { return 5e-3 * std::pow(0.97, std::min(r, 5) - 1); }},
                              40);
  EXPECT_EQ(got[0] + got[1], 40);
  EXPECT_GE(got[0], 2 * got[1]);
  EXPECT_GE(got[1], 5);  // it was chosen while it improved
}

TEST(TaskSchedulerTest, FailedTasksRankLastAndTiesGoToFewerRounds) {
  TaskScheduler s = Make({1, 1, 1});
  s.Observe(0, kInf);  // nothing measured: gradient 0
  s.Observe(1, kInf);
  s.Observe(1, kInf);
  s.Observe(2, 1e-3);
  EXPECT_EQ(s.Gradient(0), 0);
  EXPECT_EQ(s.Next(), 2);
  s.Retire(2);
  EXPECT_EQ(s.Next(), 0);  // 0 and 1 tie at 0: the one with fewer rounds
}

TEST(TaskSchedulerTest, RetiredTasksGetNoRoundsAndAllRetiredEnds) {
  TaskScheduler s = Make({1, 1});
  s.Retire(0);
  EXPECT_EQ(s.Next(), 1);
  s.Observe(1, 1e-3);
  EXPECT_EQ(s.Next(), 1);
  s.Retire(1);
  EXPECT_EQ(s.Next(), std::nullopt);
}

TEST(TaskSchedulerTest, ATaskInFlightIsNotPickedAgainUntilObserved) {
  TaskScheduler s = Make({1, 1, 1});
  EXPECT_EQ(s.Next(), 0);
  EXPECT_EQ(s.Next(), 1);
  EXPECT_EQ(s.Next(), 2);
  EXPECT_EQ(s.Next(), std::nullopt);
  EXPECT_EQ(s.in_flight(), 3);
  s.Observe(1, 1e-3);
  EXPECT_EQ(s.in_flight(), 2);
  EXPECT_EQ(s.Next(), 1);
  s.Retire(0);  // retiring ends its flight too
  EXPECT_EQ(s.in_flight(), 2);
}

TEST(TaskSchedulerTest, EpsilonGivesStuckTasksRoundsAndIsSeeded) {
  auto run = [](uint64_t seed) {
    TaskScheduler s = Make({100, 1}, {.alpha = 0, .epsilon = 0.5, .seed = seed});
    std::vector<int> picks;
    for (int r = 0; r < 60; ++r) {
      int t = *s.Next();
      picks.push_back(t);
      s.Observe(t, 1e-3);
    }
    return picks;
  };
  std::vector<int> a = run(7);
  EXPECT_EQ(a, run(7));
  EXPECT_NE(a, run(8));
  // Greedy alone would give task 1 only its warm-up round (weight 100 vs 1).
  int ones = 0;
  for (size_t i = 2; i < a.size(); ++i) ones += a[i] == 1;
  EXPECT_GE(ones, 5);
  EXPECT_LE(ones, 25);
}

TEST(TaskSchedulerTest, PickTaskReplaysRows) {
  // Task 0 still in warm-up; task 1 done.
  auto pick = PickTask({{.weight = 1, .best_after_round = {2e-3}},
                        {.weight = 1, .best_after_round = {}},
                        {.weight = 1, .best_after_round = {3e-3}, .live = false}},
                       {.epsilon = 0});
  ASSERT_TRUE(pick.ok()) << pick.status();
  EXPECT_EQ(*pick, 1);
  pick = PickTask({{.weight = 1, .best_after_round = {2e-3}},
                   {.weight = 3, .best_after_round = {2e-3}},
                   {.weight = 1, .best_after_round = {3e-3}, .live = false}},
                  {.epsilon = 0});
  ASSERT_TRUE(pick.ok()) << pick.status();
  EXPECT_EQ(*pick, 1);  // weight 3
  pick = PickTask({{.weight = 1, .best_after_round = {2e-3}, .live = false}}, {});
  ASSERT_TRUE(pick.ok()) << pick.status();
  EXPECT_EQ(*pick, std::nullopt);
  EXPECT_THAT(PickTask({{.weight = -1}}, {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight")));
}

TEST(TaskSchedulerTest, RefusesBadWeightsAndOptions) {
  EXPECT_THAT(TaskScheduler::Create({}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no tasks")));
  EXPECT_THAT(TaskScheduler::Create({1, 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task 1 has weight 0")));
  EXPECT_THAT(TaskScheduler::Create({std::nan("")}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weights must be positive")));
  EXPECT_THAT(TaskScheduler::Create({1}, {.alpha = 1.5}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("alpha must be in [0, 1]")));
  EXPECT_THAT(TaskScheduler::Create({1}, {.epsilon = -0.1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("epsilon")));
  EXPECT_THAT(TaskScheduler::Create({1}, {.backward_window = 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("backward window")));
}

}  // namespace
}  // namespace loom::tune
