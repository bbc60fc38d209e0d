#include "loom/service/job_progress.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::service {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::Optional;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

tune::Record Rec(double seconds_after_start, double cost, int64_t id = 0) {
  tune::Record r;
  r.id = id;
  r.timestamp = kT0 + absl::Seconds(seconds_after_start);
  r.median_cost = cost;
  r.costs = {cost};
  return r;
}

tune::Record ErrorRec(double seconds_after_start) {
  tune::Record r = Rec(seconds_after_start, std::numeric_limits<double>::infinity());
  r.costs.clear();
  r.error = tune::ErrorKind::kRuntime;
  return r;
}

ProgressTask Task(int trials, std::vector<tune::Record> records, double flops = 2e9) {
  ProgressTask t;
  t.flops = flops;
  t.trials = trials;
  t.trials_done = static_cast<int>(records.size());
  t.records = std::move(records);
  return t;
}

TEST(JobProgressTest, EmptyJobIsAllUnknown) {
  JobProgress p = ComputeJobProgress(ProgressInput{.now = kT0});
  EXPECT_EQ(p.trials_done, 0);
  EXPECT_EQ(p.trials_total, 0);
  EXPECT_EQ(p.trials_per_second, std::nullopt);
  EXPECT_EQ(p.eta_seconds, std::nullopt);
  EXPECT_EQ(p.best_latency_ms, std::nullopt);
  EXPECT_EQ(p.best_gflops, std::nullopt);
  EXPECT_TRUE(p.history.empty());
}

TEST(JobProgressTest, QueuedJobHasItsBudgetButNoRateNorEta) {
  ProgressInput in{.tasks = {Task(10, {}), Task(6, {})}, .now = kT0};
  JobProgress p = ComputeJobProgress(in);
  EXPECT_EQ(p.trials_done, 0);
  EXPECT_EQ(p.trials_total, 16);
  EXPECT_EQ(p.eta_seconds, std::nullopt);
}

TEST(JobProgressTest, RunningJobWithNothingMeasuredYetHasNoEta) {
  ProgressInput in{.tasks = {Task(10, {})}, .started = kT0, .now = kT0 + absl::Seconds(30)};
  JobProgress p = ComputeJobProgress(in);
  EXPECT_EQ(p.trials_per_second, std::nullopt);
  EXPECT_EQ(p.eta_seconds, std::nullopt);
}

TEST(JobProgressTest, EtaIsTrialsLeftOverTheRateSinceTheStart) {
  // 4 of 10 trials in 40 s: 0.1 trials/s, 6 left -> 60 s.
  ProgressInput in{
      .tasks = {Task(10, {Rec(10, 4e-3), Rec(20, 5e-3), Rec(30, 3e-3), Rec(40, 3.5e-3)})},
      .started = kT0,
      .now = kT0 + absl::Seconds(40)};
  JobProgress p = ComputeJobProgress(in);
  EXPECT_EQ(p.trials_done, 4);
  EXPECT_EQ(p.trials_total, 10);
  EXPECT_THAT(p.trials_per_second, Optional(DoubleNear(0.1, 1e-12)));
  EXPECT_THAT(p.eta_seconds, Optional(DoubleNear(60, 1e-9)));
}

TEST(JobProgressTest, TrialsMeasuredBeforeTheirRoundsUpdateCountAsDone) {
  // The measure stage stored 3 records; the task row still says 0 until the round's update:
  // 3 of 10 done in 30 s (0.1 trials/s), 7 left -> 70 s, the same figures as after the update.
  ProgressTask task = Task(10, {Rec(10, 4e-3), Rec(20, 5e-3), Rec(30, 3e-3)});
  task.trials_done = 0;
  ProgressInput in{.tasks = {task}, .started = kT0, .now = kT0 + absl::Seconds(30)};
  JobProgress p = ComputeJobProgress(in);
  EXPECT_EQ(p.trials_done, 3);
  EXPECT_EQ(p.trials_total, 10);
  EXPECT_THAT(p.trials_per_second, Optional(DoubleNear(0.1, 1e-12)));
  EXPECT_THAT(p.eta_seconds, Optional(DoubleNear(70, 1e-9)));
}

TEST(JobProgressTest, RateComesFromTheRecentWindowOnly) {
  // 20 trials in the first minute, then 3 in the last 5 minutes of a 1000 s old job: the rate is
  // 3 / 300 s, so 2 trials left take 200 s.
  std::vector<tune::Record> recs;
  for (int i = 0; i < 20; ++i) recs.push_back(Rec(3 * i, 1e-3));
  for (double s : {750.0, 850.0, 950.0}) recs.push_back(Rec(s, 1e-3));
  ProgressInput in{.tasks = {Task(25, recs)}, .started = kT0, .now = kT0 + absl::Seconds(1000)};
  JobProgress p = ComputeJobProgress(in);
  EXPECT_THAT(p.trials_per_second, Optional(DoubleNear(0.01, 1e-12)));
  EXPECT_THAT(p.eta_seconds, Optional(DoubleNear(200, 1e-9)));
  // A job that measured nothing in its window has no rate: its ETA is unknown, not infinite.
  in.now = kT0 + absl::Seconds(1300);
  EXPECT_EQ(ComputeJobProgress(in).eta_seconds, std::nullopt);
}

TEST(JobProgressTest, EndedTasksCountWhatTheyMeasuredAndEndedJobsHaveNoEta) {
  ProgressTask done = Task(10, {Rec(5, 1e-3), Rec(6, 2e-3)});
  done.ended = true;  // its space was exhausted after 2 trials
  ProgressInput in{
      .tasks = {done, Task(10, {Rec(8, 1e-3)})}, .started = kT0, .now = kT0 + absl::Seconds(10)};
  JobProgress p = ComputeJobProgress(in);
  EXPECT_EQ(p.trials_done, 3);
  EXPECT_EQ(p.trials_total, 12);
  EXPECT_THAT(p.eta_seconds, Optional(DoubleNear(9.0 / 0.3, 1e-9)));
  in.ended = true;
  p = ComputeJobProgress(in);
  EXPECT_EQ(p.trials_per_second, std::nullopt);
  EXPECT_EQ(p.eta_seconds, std::nullopt);
  EXPECT_EQ(p.trials_done, 3);
}

TEST(JobProgressTest, BestSoFarRisesOnlyAtImprovementsAndSkipsErrors) {
  // flops 2e9: cost 4 ms = 500 GFLOPS, 2 ms = 1000, 1 ms = 2000.
  ProgressInput in{.tasks = {Task(8, {Rec(1, 4e-3, 1), ErrorRec(2), Rec(3, 5e-3, 3),
                                      Rec(4, 2e-3, 4), Rec(5, 2e-3, 5), Rec(6, 1e-3, 6)})},
                   .started = kT0,
                   .now = kT0 + absl::Seconds(6)};
  JobProgress p = ComputeJobProgress(in);
  ASSERT_EQ(p.history.size(), 3u);
  std::vector<int64_t> trials;
  std::vector<double> gflops;
  for (const BestPoint& b : p.history) {
    trials.push_back(b.trials);
    gflops.push_back(b.task_gflops);
    EXPECT_EQ(b.task, 0);
  }
  EXPECT_THAT(trials, ElementsAre(1, 4, 6));
  EXPECT_THAT(gflops,
              ElementsAre(DoubleNear(500, 1e-9), DoubleNear(1000, 1e-9), DoubleNear(2000, 1e-9)));
  EXPECT_EQ(p.history[1].time, kT0 + absl::Seconds(4));
  EXPECT_THAT(p.history.back().latency_ms, Optional(DoubleNear(1.0, 1e-12)));
  EXPECT_THAT(p.best_latency_ms, Optional(DoubleNear(1.0, 1e-12)));
  EXPECT_THAT(p.best_gflops, Optional(DoubleNear(2000, 1e-9)));
}

TEST(JobProgressTest, LatencyIsUnknownUntilEveryTunedTaskHasASuccess) {
  // Records arrive out of order: the history is in time order regardless.
  ProgressTask a = Task(4, {Rec(3, 1e-3), Rec(1, 2e-3)});
  a.count = 3;  // three nodes run it
  ProgressTask b = Task(4, {Rec(2, 4e-3), ErrorRec(4)}, /*flops=*/1e9);
  ProgressTask skipped;
  skipped.skipped = true;
  skipped.ended = true;
  ProgressInput in{.tasks = {a, b, skipped}, .started = kT0, .now = kT0 + absl::Seconds(4)};
  JobProgress p = ComputeJobProgress(in);
  ASSERT_EQ(p.history.size(), 3u);
  EXPECT_EQ(p.history[0].task, 0);
  EXPECT_EQ(p.history[0].latency_ms, std::nullopt);
  EXPECT_EQ(p.history[1].task, 1);
  EXPECT_THAT(p.history[1].latency_ms, Optional(DoubleNear(3 * 2.0 + 4.0, 1e-9)));
  EXPECT_THAT(p.history[2].latency_ms, Optional(DoubleNear(3 * 1.0 + 4.0, 1e-9)));
  EXPECT_THAT(p.best_latency_ms, Optional(DoubleNear(7.0, 1e-9)));
  // (3 x 2e9 + 1e9) FLOPs in 7 ms.
  EXPECT_THAT(p.best_gflops, Optional(DoubleNear(7e9 / 7e-3 / 1e9, 1e-6)));
  // Before task b's first success, only task a's figures are known.
  in.tasks[1].records = {ErrorRec(4)};
  p = ComputeJobProgress(in);
  EXPECT_EQ(p.best_latency_ms, std::nullopt);
  EXPECT_THAT(p.best_gflops, Optional(DoubleNear(2000, 1e-9)));
}

TEST(JobProgressTest, LongHistoriesAreThinnedKeepingFirstLastAndOrder) {
  std::vector<tune::Record> recs;
  for (int i = 0; i < 1000; ++i) recs.push_back(Rec(i, 1.0 / (i + 1), i));
  ProgressInput in{.tasks = {Task(1000, recs)}, .started = kT0, .now = kT0 + absl::Seconds(999)};
  JobProgress p = ComputeJobProgress(in, {.max_history_points = 10});
  ASSERT_EQ(p.history.size(), 10u);
  EXPECT_EQ(p.history.front().trials, 1);
  EXPECT_EQ(p.history.back().trials, 1000);
  for (size_t i = 1; i < p.history.size(); ++i) {
    EXPECT_GT(p.history[i].trials, p.history[i - 1].trials);
    EXPECT_GT(p.history[i].task_gflops, p.history[i - 1].task_gflops);
  }
}

TEST(JobProgressTest, FillLeavesUnknownFiguresUnset) {
  v1::Job job;
  FillJobProgress(ComputeJobProgress(ProgressInput{.tasks = {Task(5, {})}, .now = kT0}), &job);
  EXPECT_EQ(job.trials_total(), 5);
  EXPECT_FALSE(job.has_eta_seconds());
  EXPECT_FALSE(job.has_trials_per_second());
  EXPECT_FALSE(job.has_best_latency_ms());
  EXPECT_FALSE(job.has_best_gflops());

  ProgressInput in{.tasks = {Task(4, {Rec(1, 1e-3), Rec(2, 2e-3)})},
                   .started = kT0,
                   .now = kT0 + absl::Seconds(4)};
  FillJobProgress(ComputeJobProgress(in), &job);
  EXPECT_EQ(job.trials_done(), 2);
  EXPECT_DOUBLE_EQ(job.eta_seconds(), 4.0);
  EXPECT_DOUBLE_EQ(job.best_latency_ms(), 1.0);
  ASSERT_EQ(job.best_history_size(), 1);
  EXPECT_EQ(job.best_history(0).time_unix_micros(), absl::ToUnixMicros(kT0 + absl::Seconds(1)));
  EXPECT_DOUBLE_EQ(job.best_history(0).task_gflops(), 2000);
  EXPECT_DOUBLE_EQ(job.best_history(0).latency_ms(), 1.0);
}

}  // namespace
}  // namespace loom::service
