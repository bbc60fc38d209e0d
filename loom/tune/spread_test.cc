#include "loom/tune/spread.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::tune {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(SpreadTest, RoundsInFlightStayThenTheFirstLiveTasksFillTheSpread) {
  // Task 2 is in flight; 0 is done; 1, 3 and 4 are live.
  const std::vector<SpreadTask> tasks = {{.live = false}, {}, {.in_flight = true}, {}, {}};
  EXPECT_THAT(TasksToRun(tasks, 1), ElementsAre(2));
  EXPECT_THAT(TasksToRun(tasks, 3), ElementsAre(2, 1, 3));
  EXPECT_THAT(TasksToRun(tasks, 64), ElementsAre(2, 1, 3, 4));
  EXPECT_THAT(TasksToRun(tasks, 0), ElementsAre(2));  // at least one
  EXPECT_THAT(TasksToRun({{.live = false}, {.live = false}}, 4), IsEmpty());
}

TEST(SpreadTest, WithAPickerEachNewRoundGoesToItsPickUntilItHasNone) {
  const std::vector<SpreadTask> tasks = {{}, {.in_flight = true}, {}, {}};
  std::vector<std::vector<int>> asked;
  // Picks the highest live task not yet chosen; a budget of two new rounds.
  NextRound pick = [&](const std::vector<int>& run) -> std::optional<int> {
    asked.push_back(run);
    if (asked.size() > 2) return std::nullopt;
    for (int i = 3; i >= 0; --i) {
      if (std::find(run.begin(), run.end(), i) == run.end()) return i;
    }
    return std::nullopt;
  };
  EXPECT_THAT(TasksToRun(tasks, 4, pick), ElementsAre(1, 3, 2));
  EXPECT_THAT(asked, ElementsAre(ElementsAre(1), ElementsAre(1, 3), ElementsAre(1, 3, 2)));
  // A spread already full asks nothing; a round in flight stays when the budget is spent.
  asked.clear();
  EXPECT_THAT(TasksToRun(tasks, 1, pick), ElementsAre(1));
  EXPECT_THAT(asked, IsEmpty());
  NextRound spent = [](const std::vector<int>&) { return std::nullopt; };
  EXPECT_THAT(TasksToRun(tasks, 4, spent), ElementsAre(1));
}

}  // namespace
}  // namespace loom::tune
