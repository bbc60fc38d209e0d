#include "loom/experiment/runner.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/experiment/claims.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/toolchain/testing/fake_builder.h"
#include "loom/toolchain/testing/fake_measurer.h"
#include "nlohmann/json.hpp"

namespace loom::experiment {
namespace {

using ::testing::HasSubstr;

// A measurer that takes a fixed time per call, so setups differ in makespan.
class SlowMeasurer final : public tune::Measurer {
 public:
  std::vector<tune::MeasureResult> Measure(const tune::MeasureTask& task,
                                           const std::vector<tune::BuildResult>& built) override {
    absl::SleepFor(absl::Milliseconds(10));
    return fake_.Measure(task, built);
  }
  absl::StatusOr<tune::DeviceInfo> Probe() override { return fake_.Probe(); }

 private:
  tune::FakeMeasurer fake_;
};

graph::Task SmallConv(int64_t c) {
  graph::Workload w;
  w.kind = graph::TaskKind::kConv2d;
  w.n = 1, w.c = c, w.h = 8, w.w = 8, w.k = c, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  graph::Task t;
  t.workload = w;
  t.key = graph::WorkloadKey(w);
  t.hash = graph::StableHash(t.key);
  t.count = 2;
  t.flops = graph::WorkloadFlops(w);
  return t;
}

// The engine on the 2-core layout with fake builders and `Measurer`s, nothing pinned.
template <typename Measurer>
RunnerOptions FakeEngine() {
  RunnerOptions options;
  options.engine.layout = {.device_cores = {1}, .cpu_cores = {0}, .cpu_slots = 1};
  options.engine.pin = false;
  options.engine.make_builder =
      [](const tune::BuildOptions&) -> absl::StatusOr<std::unique_ptr<tune::Builder>> {
    return std::make_unique<tune::FakeBuilder>();
  };
  options.engine.make_measurer =
      [](const std::vector<int>&) -> absl::StatusOr<std::unique_ptr<tune::Measurer>> {
    return std::make_unique<Measurer>();
  };
  return options;
}

TEST(ExperimentRunnerTest, RunsEverySetupAndWritesResults) {
  RunnerOptions options = FakeEngine<SlowMeasurer>();
  std::vector<engine::EngineJob> jobs;
  for (int i = 0; i < 2; ++i) {
    engine::EngineJob j;
    j.name = absl::StrCat("m", i);
    j.tasks = {SmallConv(8 * (i + 1))};
    j.options.trials = 8;
    j.options.batch_size = 4;
    j.options.tuner.kind = "random";
    j.options.job_id = absl::StrCat("job", i);
    j.target = ops::HostCpuTarget();
    j.measure_default = false;
    jobs.push_back(std::move(j));
  }
  auto store = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(store.ok());
  options.distortion_samples = 3;
  auto experiment =
      RunExperiment(jobs, {"dedicated", "interleaved", "uncontrolled"}, options, store->get());
  ASSERT_TRUE(experiment.ok()) << experiment.status();
  const std::vector<SetupResult>* results = &experiment->setups;
  ASSERT_EQ(results->size(), 3u);
  const SetupResult& dedicated = (*results)[0];
  EXPECT_EQ(dedicated.setup, "dedicated");
  ASSERT_EQ(dedicated.jobs.size(), 2u);
  // Alone, the jobs' times add up to the setup's makespan.
  EXPECT_NEAR(dedicated.makespan_s, dedicated.jobs[0].seconds + dedicated.jobs[1].seconds, 0.05);
  // The dedicated timeline holds both jobs' stages, the second job's with index 1.
  int second = 0;
  for (const engine::StageTrace& t : dedicated.run.traces) second += t.job == 1;
  EXPECT_GT(second, 0);
  EXPECT_EQ(dedicated.run.jobs.size(), 2u);
  for (const SetupResult& r : *results) {
    EXPECT_GT(r.makespan_s, 0);
    // 8 trials in rounds of 4: propose, build, measure, update twice per job.
    EXPECT_EQ(r.run.traces.size(), 16u) << r.setup;
    // The fake measurer gives each config the same cost in the run and alone.
    EXPECT_DOUBLE_EQ(r.distortion_median, 0) << r.setup;
    EXPECT_GE(r.makespan_s, r.lower_bound_s * 0.99);
    EXPECT_GT(r.device_utilization, 0);
    EXPECT_LE(r.device_utilization, 1.01);
    for (const SetupJobResult& j : r.jobs) {
      EXPECT_EQ(j.records, 8);
      EXPECT_TRUE(j.error.empty()) << j.error;
      EXPECT_GT(j.tuned_latency_ms, 0);
      auto n = (*store)->Count({.job_id = j.job_id});
      ASSERT_TRUE(n.ok());
      EXPECT_EQ(*n, 8) << j.job_id;
      EXPECT_EQ(j.distortion.size(), 3u);
      EXPECT_TRUE(std::isnan(j.final_latency_ms));  // no model given
      // The fake measures a config the same in the run and alone: a perfect ranking, no regret;
      // the re-measured three are the task's best three in the run, the best first and chosen.
      EXPECT_DOUBLE_EQ(j.ranking.kendall_tau, 1) << r.setup;
      EXPECT_DOUBLE_EQ(j.ranking.regret, 0) << r.setup;
      EXPECT_TRUE(j.distortion[0].chosen);
      EXPECT_FALSE(j.distortion[1].chosen);
      EXPECT_LE(j.distortion[0].in_run_s, j.distortion[1].in_run_s);
      EXPECT_GT(j.ranking.chosen_alone_ms, 0);
      // One tuning curve of 8 trials, in the order measured, within the run.
      ASSERT_EQ(j.curves.size(), 1u);
      EXPECT_EQ(j.curves[0].trials.size(), 8u);
      for (const CurvePoint& p : j.curves[0].trials) {
        EXPECT_GT(p.gflops, 0);
        EXPECT_GE(p.seconds, 0);
        EXPECT_LE(p.seconds, r.makespan_s + 0.5);
      }
    }
  }
  // The simulator check ran on the dedicated traces, one row per setup.
  EXPECT_EQ(experiment->simulation_source, "dedicated");
  ASSERT_EQ(experiment->simulation.size(), 3u) << experiment->simulation_error;
  EXPECT_EQ(experiment->simulation[0].policy, "sequential");
  EXPECT_GT(experiment->simulation[1].simulated_s, 0);
  EXPECT_EQ((*results)[1].jobs[0].job_id, "job0@interleaved");

  const std::string dir = absl::StrCat(::testing::TempDir(), "/loom_experiment_", getpid());
  ASSERT_TRUE(WriteResults(*experiment, dir, {.name = "unit", .device_cores = {1}}).ok());
  std::ifstream csv(dir + "/results.csv");
  std::string line;
  int lines = 0;
  std::getline(csv, line);
  EXPECT_THAT(line, HasSubstr("setup,repetition,makespan_s"));
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 6);  // 3 setups x 2 jobs
  std::ifstream js(dir + "/results.json");
  nlohmann::json j = nlohmann::json::parse(js);
  ASSERT_EQ(j["setups"].size(), 3u);
  EXPECT_EQ(j["setups"][2]["setup"], "uncontrolled");
  EXPECT_EQ(j["setups"][2]["jobs"].size(), 2u);
  EXPECT_EQ(j["setups"][2]["jobs"][0]["distortion"].size(), 3u);
  EXPECT_EQ(j["simulation"]["rows"].size(), 3u);
  EXPECT_EQ(j["setups"][2]["jobs"][0]["curves"][0]["gflops"].size(), 8u);
  EXPECT_EQ(j["setups"][2]["ranking"]["kendall_tau"], 1.0);
  EXPECT_EQ(j["claims"]["reference"], "dedicated");
  EXPECT_FALSE(j["claims"]["verdicts"].empty());
  for (const char* f : {"gantt-dedicated.svg", "gantt-interleaved.svg", "gantt-uncontrolled.svg",
                        "simulation.csv", "sim.yaml", "report.html", "trace.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  std::filesystem::remove_all(dir);
}

TEST(ExperimentRunnerTest, RepetitionsRerunEverySetupWithOtherSeedsAndJobIds) {
  RunnerOptions options = FakeEngine<tune::FakeMeasurer>();
  options.repetitions = 2;
  options.distortion_samples = 2;
  options.ranking_top = 1;
  engine::EngineJob job;
  job.name = "m";
  job.tasks = {SmallConv(16)};
  job.options.trials = 8;
  job.options.batch_size = 8;
  job.options.tuner.kind = "random";
  job.options.tuner.seed = 3;
  job.options.job_id = "job";
  job.target = ops::HostCpuTarget();
  job.measure_default = false;
  auto store = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(store.ok());
  auto experiment = RunExperiment({job}, {"dedicated", "interleaved"}, options, store->get());
  ASSERT_TRUE(experiment.ok()) << experiment.status();
  EXPECT_EQ(experiment->repetitions, 2);
  ASSERT_EQ(experiment->setups.size(), 4u);
  EXPECT_EQ(experiment->setups[2].setup, "dedicated");
  EXPECT_EQ(experiment->setups[2].repetition, 1);
  EXPECT_EQ(experiment->setups[0].jobs[0].job_id, "job@dedicated");
  EXPECT_EQ(experiment->setups[3].jobs[0].job_id, "job@interleaved.r1");
  EXPECT_EQ(FindSetup(*experiment, "interleaved", 1), &experiment->setups[3]);
  EXPECT_EQ(FindSetup(*experiment, "interleaved", 2), nullptr);
  // Another tuner seed: the second repetition measures other candidates.
  auto first = (*store)->ForTask(job.tasks[0].key, job.target.Key(), "job@dedicated");
  auto second = (*store)->ForTask(job.tasks[0].key, job.target.Key(), "job@dedicated.r1");
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(first->size(), 8u);
  ASSERT_EQ(second->size(), 8u);
  std::vector<int64_t> a, b;
  for (const tune::Record& r : *first) a.push_back(r.config_index);
  for (const tune::Record& r : *second) b.push_back(r.config_index);
  EXPECT_NE(a, b);
  // The simulator check has a row per setup and repetition.
  ASSERT_EQ(experiment->simulation.size(), 4u) << experiment->simulation_error;
  EXPECT_EQ(experiment->simulation[3].repetition, 1);
  // The spec's claims: two repetitions give intervals.
  const ClaimsSummary claims = SummarizeClaims(*experiment);
  ASSERT_EQ(claims.setups.size(), 2u);
  EXPECT_EQ(claims.setups[1].vs_sequence.n, 2);
  EXPECT_TRUE(std::isfinite(claims.setups[1].vs_sequence.low));
}

TEST(ExperimentRunnerTest, NeedsJobsAndAStore) {
  RunnerOptions options;
  auto none = RunExperiment({}, {"interleaved"}, options, nullptr);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("at least one job"));
  engine::EngineJob j;
  j.name = "m";
  auto no_store = RunExperiment({j}, {"interleaved"}, options, nullptr);
  EXPECT_EQ(no_store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_store.status().message(), HasSubstr("record store"));
}

}  // namespace
}  // namespace loom::experiment
