#include "loom/tune/task_scheduler.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"

namespace loom::tune {

absl::StatusOr<TaskScheduler> TaskScheduler::Create(std::vector<double> weights,
                                                    TaskSchedulerOptions options) {
  if (weights.empty()) return absl::InvalidArgumentError("task scheduler: no tasks");
  // Written so that NaN fails each check.
  if (!(options.alpha >= 0 && options.alpha <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("task scheduler: alpha must be in [0, 1], got ", options.alpha));
  }
  if (!(options.epsilon >= 0 && options.epsilon <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("task scheduler: epsilon must be in [0, 1], got ", options.epsilon));
  }
  if (options.backward_window < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task scheduler: the backward window must be at least 1, got ", options.backward_window));
  }
  std::vector<TaskState> tasks(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!(weights[i] > 0) || !std::isfinite(weights[i])) {
      return absl::InvalidArgumentError(absl::StrCat("task scheduler: task ", i, " has weight ",
                                                     weights[i], "; weights must be positive"));
    }
    tasks[i].weight = weights[i];
  }
  return TaskScheduler(std::move(tasks), options);
}

double TaskScheduler::Gradient(int task) const {
  const TaskState& t = tasks_[static_cast<size_t>(task)];
  const size_t n = t.history.size();
  if (n == 0 || !std::isfinite(t.history.back())) return 0;
  const double best = t.history.back();
  const size_t window = static_cast<size_t>(options_.backward_window);
  double backward = 0;
  // A best that was still +inf `window` rounds ago gives no finite slope: no backward term then.
  if (n > window && std::isfinite(t.history[n - 1 - window])) {
    backward = (best - t.history[n - 1 - window]) / static_cast<double>(window);
  }
  const double forward = -best / static_cast<double>(n);
  return t.weight * (options_.alpha * backward + (1 - options_.alpha) * forward);
}

std::optional<int> TaskScheduler::Next() {
  std::vector<int> live;
  std::optional<int> chosen;
  for (int i = 0; i < num_tasks() && !chosen.has_value(); ++i) {
    const TaskState& t = tasks_[static_cast<size_t>(i)];
    if (t.retired || t.in_flight) continue;
    if (t.history.empty()) chosen = i;  // warm-up
    live.push_back(i);
  }
  if (!chosen.has_value()) chosen = Choose(live);
  if (chosen.has_value()) {
    tasks_[static_cast<size_t>(*chosen)].in_flight = true;
    ++in_flight_;
  }
  return chosen;
}

std::optional<int> TaskScheduler::Choose(const std::vector<int>& live) {
  if (live.empty()) return std::nullopt;
  // Drawn on every call (not only when epsilon > 0) so that the choices depend on the seed and the
  // observations only.
  const bool explore = rng_.Bernoulli(options_.epsilon);
  const int64_t pick = rng_.UniformInt(0, static_cast<int64_t>(live.size()) - 1);
  if (explore) return live[static_cast<size_t>(pick)];
  int best = live[0];
  double best_grad = Gradient(best);
  for (size_t k = 1; k < live.size(); ++k) {
    const int i = live[k];
    const double g = Gradient(i);
    if (g < best_grad || (g == best_grad && rounds(i) < rounds(best))) {
      best = i;
      best_grad = g;
    }
  }
  return best;
}

void TaskScheduler::Observe(int task, double best_cost) {
  LOOM_CHECK(task >= 0 && task < num_tasks());
  TaskState& t = tasks_[static_cast<size_t>(task)];
  t.history.push_back(best_cost);
  if (t.in_flight) {
    t.in_flight = false;
    --in_flight_;
  }
}

void TaskScheduler::Retire(int task) {
  LOOM_CHECK(task >= 0 && task < num_tasks());
  TaskState& t = tasks_[static_cast<size_t>(task)];
  t.retired = true;
  if (t.in_flight) {
    t.in_flight = false;
    --in_flight_;
  }
}

absl::StatusOr<std::optional<int>> PickTask(const std::vector<TaskRounds>& tasks,
                                            const TaskSchedulerOptions& options) {
  std::vector<double> weights;
  for (const TaskRounds& t : tasks) weights.push_back(t.weight);
  absl::StatusOr<TaskScheduler> scheduler = TaskScheduler::Create(std::move(weights), options);
  if (!scheduler.ok()) return scheduler.status();
  for (size_t i = 0; i < tasks.size(); ++i) {
    const int index = static_cast<int>(i);
    for (double best : tasks[i].best_after_round) scheduler->Observe(index, best);
    if (!tasks[i].live) scheduler->Retire(index);
  }
  return scheduler->Next();
}

}  // namespace loom::tune
