#include "loom/tune/tune_job.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/clock.h"
#include "loom/toolchain/testing/fake_builder.h"
#include "loom/toolchain/testing/fake_measurer.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;

MATCHER_P2(StatusIs, code, matcher, "") {
  return arg.code() == code &&
         ::testing::ExplainMatchResult(matcher, arg.message(), result_listener);
}

// A task from its workload key, as `loom tasks` prints it.
graph::Task TaskOf(const std::string& key, int64_t count) {
  auto w = graph::ParseWorkloadKey(key);
  EXPECT_TRUE(w.ok()) << w.status();
  graph::Task t;
  t.workload = *w;
  t.key = graph::WorkloadKey(*w);
  t.hash = graph::StableHash(t.key);
  t.count = count;
  t.flops = graph::WorkloadFlops(*w);
  return t;
}

std::vector<graph::Task> ThreeTasks() {
  return {TaskOf("conv2d:f32:n1_c16_h14_w14_k16_r3_s3_st1x1_p1x1x1x1_d1x1_g1", 1),
          TaskOf("conv2d:f32:n1_c32_h14_w14_k32_r3_s3_st1x1_p1x1x1x1_d1x1_g1", 2),
          TaskOf("dense:f32:m4_n64_k64_tb1", 1)};
}

JobOptions BudgetJob(const std::string& job_id, JobBudget budget) {
  JobOptions job;
  job.target = ops::HostCpuTarget();
  job.task.trials = kNoTrialCap;
  job.task.batch_size = 4;
  job.task.tuner.kind = "random";
  job.task.tuner.seed = 5;
  job.task.job_id = job_id;
  job.measure_default = false;
  job.budget = budget;
  return job;
}

std::unique_ptr<RecordStore> MemoryStore() {
  auto store = OpenSqliteRecordStore(":memory:");
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

int64_t TotalTrials(const std::vector<TaskOutcome>& outcomes) {
  int64_t n = 0;
  for (const TaskOutcome& o : outcomes) n += o.trials;
  return n;
}

TEST(TuneJobBudgetTest, TotalTrialsAreSharedAfterAWarmUpRoundEach) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  std::vector<ProgressEvent> events;
  auto outcomes =
      RunTuneJob(ThreeTasks(), BudgetJob("job", {.total_trials = 20}), store.get(), builder,
                 measurer, [&](const ProgressEvent& e) { events.push_back(e); });
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  ASSERT_EQ(outcomes->size(), 3u);
  EXPECT_EQ(TotalTrials(*outcomes), 20);
  for (const TaskOutcome& o : *outcomes) {
    EXPECT_GE(o.trials, 4) << o.task.key;  // its warm-up round
    EXPECT_TRUE(std::isfinite(o.best_cost)) << o.task.key;
  }
  EXPECT_EQ(*store->Count({.job_id = "job"}), 20);
  // Before the first round, then after each of the 5 rounds, with the job's running total.
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events.back().job_trials, 20);
  EXPECT_EQ(events[1].task_index, 0);
  EXPECT_EQ(events[2].task_index, 1);
  EXPECT_EQ(events[3].task_index, 2);
}

TEST(TuneJobBudgetTest, TimeBudgetEndsWithinOneRoundOfIt) {
  auto store = MemoryStore();
  base::VirtualClock clock;
  FakeBuilder builder;
  // Each measured candidate takes 1 s of virtual time: a round of 4 at most 4 s.
  FakeMeasurer measurer({.clock = &clock, .measure_time = absl::Seconds(1)});
  JobOptions job = BudgetJob("timed", {.time = absl::Seconds(10)});
  job.clock = &clock;
  const absl::Time start = clock.Now();
  auto outcomes = RunTuneJob(ThreeTasks(), job, store.get(), builder, measurer);
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  const absl::Duration took = clock.Now() - start;
  EXPECT_GE(took, absl::Seconds(10));
  EXPECT_LT(took, absl::Seconds(14));
  EXPECT_EQ(TotalTrials(*outcomes), measurer.num_measured());
}

TEST(TuneJobBudgetTest, PerTaskTrialsCapEachTaskAndEndTheJobEarly) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  JobOptions job = BudgetJob("capped", {.total_trials = 1000});
  job.task.trials = 8;
  job.measure_default = true;
  auto outcomes = RunTuneJob(ThreeTasks(), job, store.get(), builder, measurer);
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  for (const TaskOutcome& o : *outcomes) {
    EXPECT_EQ(o.trials, 8) << o.task.key;
    EXPECT_TRUE(std::isfinite(o.default_cost)) << o.task.key;  // the baseline ran at its cap
  }
}

// A budget that ends every task after its warm-up round (12 trials, 3 tasks of 4 a round, no
// per-task cap): each task still has its measured default-config baseline, taken before its
// first round, and the baselines are not counted as trials.
TEST(TuneJobBudgetTest, EveryTaskTheBudgetCutsShortHasItsBaseline) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  JobOptions job = BudgetJob("cut", {.total_trials = 12});
  job.measure_default = true;
  auto outcomes = RunTuneJob(ThreeTasks(), job, store.get(), builder, measurer);
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  ASSERT_EQ(outcomes->size(), 3u);
  for (const TaskOutcome& o : *outcomes) {
    EXPECT_EQ(o.trials, 4) << o.task.key;  // cut short after its warm-up round
    EXPECT_TRUE(std::isfinite(o.default_cost)) << o.task.key;
  }
  EXPECT_EQ(*store->Count({.job_id = "cut"}), 12);
  EXPECT_EQ(*store->Count({.job_id = "cut#default"}), 3);
  EXPECT_EQ(measurer.num_measured(), 15);
}

TEST(TuneJobBudgetTest, ARerunResumesAndDoesNotSpendTheTotalTwice) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  auto first = RunTuneJob(ThreeTasks(), BudgetJob("again", {.total_trials = 12}), store.get(),
                          builder, measurer);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(TotalTrials(*first), 12);
  FakeMeasurer second_measurer;
  auto second = RunTuneJob(ThreeTasks(), BudgetJob("again", {.total_trials = 20}), store.get(),
                           builder, second_measurer);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(TotalTrials(*second), 20);
  EXPECT_EQ(second_measurer.num_measured(), 8);
  EXPECT_EQ(*store->Count({.job_id = "again"}), 20);
}

TEST(TuneJobBudgetTest, BadBudgetsAreRefused) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  EXPECT_THAT(RunTuneJob(ThreeTasks(), BudgetJob("bad", {.total_trials = kMaxTotalTrials + 1}),
                         store.get(), builder, measurer)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("total trials")));
  EXPECT_THAT(ValidateJobBudget({.total_trials = -3}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got -3")));
  EXPECT_THAT(ValidateJobBudget({.time = absl::Hours(24 * 31)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("time budget")));
  EXPECT_EQ(measurer.num_measured(), 0);
}

TEST(TuneJobBudgetTest, ParseTimeBudget) {
  EXPECT_EQ(*ParseTimeBudget("90s"), absl::Seconds(90));
  EXPECT_EQ(*ParseTimeBudget("20m"), absl::Minutes(20));
  EXPECT_EQ(*ParseTimeBudget("1h30m"), absl::Minutes(90));
  EXPECT_EQ(*ParseTimeBudget("1.5h"), absl::Minutes(90));
  for (const char* bad : {"", "20", "abc", "5 m", "inf"}) {
    EXPECT_THAT(ParseTimeBudget(bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not a duration")))
        << bad;
  }
  for (const char* bad : {"0s", "-5m", "721h"}) {
    EXPECT_THAT(ParseTimeBudget(bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be more than 0")))
        << bad;
  }
}

}  // namespace
}  // namespace loom::tune
