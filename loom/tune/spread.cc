#include "loom/tune/spread.h"

#include <algorithm>

#include "loom/base/check.h"

namespace loom::tune {

std::vector<int> TasksToRun(const std::vector<SpreadTask>& tasks, int spread,
                            const NextRound& next_round) {
  const size_t most = static_cast<size_t>(std::max(1, spread));
  std::vector<int> run;
  // Rounds in flight always finish, even past a smaller spread or a spent budget.
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].live && tasks[i].in_flight) run.push_back(static_cast<int>(i));
  }
  if (!next_round) {
    for (size_t i = 0; i < tasks.size() && run.size() < most; ++i) {
      if (tasks[i].live && !tasks[i].in_flight) run.push_back(static_cast<int>(i));
    }
    return run;
  }
  while (run.size() < most) {
    const std::optional<int> pick = next_round(run);
    if (!pick.has_value()) break;
    LOOM_CHECK(*pick >= 0 && static_cast<size_t>(*pick) < tasks.size() &&
               tasks[static_cast<size_t>(*pick)].live &&
               std::find(run.begin(), run.end(), *pick) == run.end());
    run.push_back(*pick);
  }
  return run;
}

}  // namespace loom::tune
