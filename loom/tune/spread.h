// A job that spreads: rounds of up to `spread` of its tasks in flight at once (different tasks on
// different devices, or one task's build beside another's measurement), each task's rounds still
// one after another in its TaskSession and each device measuring one stage at a time. TasksToRun
// is the one rule of which tasks run now, asked by the service's JobDriver
// (SubmitJobRequest.spread, `loom submit --spread`) and the embedded engine (EngineJob::spread,
// `loom tune --spread`) whenever a round ends or a job starts.
#pragma once

#include <functional>
#include <optional>
#include <vector>

namespace loom::tune {

// The most tasks of one job whose rounds may be in flight at once.
inline constexpr int kMaxSpread = 64;

// A task of the job as the rule sees it.
struct SpreadTask {
  bool live = true;        // takes more rounds (not done, not skipped)
  bool in_flight = false;  // a round of it, or its baseline, is under way
};

// Picks the task of the next new round given the tasks already chosen (`run`, those in flight
// first): a live task not in `run`, or nullopt for none (a budget spent, or none left).
using NextRound = std::function<std::optional<int>(const std::vector<int>& run)>;

// The tasks that run now, in this order: every live task in flight (in task order), then new
// rounds until `spread` (at least 1) are in flight, each going to the task `next_round` picks (a
// budgeted job: the task scheduler's pick, none once the budget is spent); without `next_round`,
// to the first live tasks not in flight, in task order (each task then runs all its rounds in
// turn). Empty: nothing live, the job is done (or its budget is spent with nothing in flight).
std::vector<int> TasksToRun(const std::vector<SpreadTask>& tasks, int spread,
                            const NextRound& next_round = nullptr);

}  // namespace loom::tune
