// TaskScheduler: shares one job's tuning budget (--total-trials, --time-budget) among the tasks of
// a model by expected gain, after Ansor's gradient task scheduler (Zheng et al., OSDI 2020, sec.
// 6): every task first gets one warm-up round, then each round goes to the task whose weighted
// latency is expected to drop fastest, with an epsilon-greedy floor so no live task starves. It
// only chooses the next task; each task's rounds stay with its TaskSession. Called by RunTuneJob
// (tune_job.h) between rounds.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/base/rng.h"

namespace loom::tune {

struct TaskSchedulerOptions {
  // Share of the backward gradient (the observed improvement over the last `backward_window`
  // rounds) against the forward estimate (the next round gains best / rounds, i.e. returns
  // diminish): Ansor's alpha. In [0, 1]. Ansor's 0.2 lets the forward estimate dominate, and since
  // it grows with latency, a task that plateaued at a higher latency then gets more rounds than one
  // still improving; Loom weights the observed improvement more.
  double alpha = 0.8;
  // Rounds the backward gradient looks back over. At least 1.
  int backward_window = 3;
  // Chance that a round goes to a uniformly drawn live task instead of the best one (Ansor's
  // eps_random). In [0, 1].
  double epsilon = 0.05;
  uint64_t seed = 0;
};

class TaskScheduler {
 public:
  // One weight per task: how often the task occurs in the model (its count), > 0 and finite.
  // kInvalidArgument for no tasks, a bad weight or bad options.
  static absl::StatusOr<TaskScheduler> Create(std::vector<double> weights,
                                              TaskSchedulerOptions options = {});

  // The task the next round goes to, or nullopt when every task is retired or in flight. The task
  // is in flight from then until its Observe(), and Next() does not pick it meanwhile (a job that
  // spreads runs rounds of several tasks at once). Warm-up first: a live task without a round,
  // lowest index first. Then, with probability epsilon, a uniformly drawn
  // live task; else the live task with the most negative gradient
  //   weight * (alpha * backward + (1 - alpha) * forward),
  //   backward = (best[n] - best[n - window]) / window  (0 before `window` + 1 rounds),
  //   forward = -best[n] / n,
  // (n = the task's rounds, best[k] its best latency after round k). A task that has measured
  // nothing successfully yet has gradient 0. Ties go to the task with fewer rounds, then the lower
  // index. Deterministic for the same seed and the same observations.
  std::optional<int> Next();

  // Records that a round of `task` finished (it is no longer in flight) with `best_cost` (seconds;
  // +inf when nothing measured succeeded yet) as the task's best so far. Precondition: 0 <= task <
  // num_tasks().
  void Observe(int task, double best_cost);
  // The task takes no more rounds (its trial cap was reached, its space or tuner is exhausted,
  // or it has no template).
  void Retire(int task);

  int num_tasks() const { return static_cast<int>(tasks_.size()); }
  int64_t rounds(int task) const { return tasks_[static_cast<size_t>(task)].history.size(); }
  bool retired(int task) const { return tasks_[static_cast<size_t>(task)].retired; }
  int in_flight() const { return in_flight_; }
  // The gradient Next() ranks `task` by (0 during its warm-up). Exposed for tests and progress.
  double Gradient(int task) const;

 private:
  struct TaskState {
    double weight = 1;
    std::vector<double> history;  // best cost after each round
    bool retired = false;
    bool in_flight = false;
  };
  TaskScheduler(std::vector<TaskState> tasks, TaskSchedulerOptions options)
      : tasks_(std::move(tasks)), options_(options), rng_(options.seed) {}
  // The gradient's (or epsilon's) pick among `live` (tasks past their warm-up, not in flight).
  std::optional<int> Choose(const std::vector<int>& live);

  std::vector<TaskState> tasks_;
  TaskSchedulerOptions options_;
  base::Rng rng_;
  int in_flight_ = 0;
};

// A task as a caller that keeps rows, not a TaskScheduler, sees it between rounds (the service's
// JobDriver): its weight, its best cost after each of its rounds, and whether it takes more.
struct TaskRounds {
  double weight = 1;
  std::vector<double> best_after_round;  // +inf while nothing succeeded
  bool live = true;
};

// The task the next round goes to, from a TaskScheduler replayed from `tasks` (none in flight):
// the same rule, deterministic in `tasks` and options.seed (give each decision its own seed).
// nullopt when no task is live; kInvalidArgument as TaskScheduler::Create.
absl::StatusOr<std::optional<int>> PickTask(const std::vector<TaskRounds>& tasks,
                                            const TaskSchedulerOptions& options);

}  // namespace loom::tune
