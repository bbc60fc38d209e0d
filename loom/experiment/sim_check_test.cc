#include "loom/experiment/sim_check.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::experiment {
namespace {

using sched::StageKind;
using ::testing::HasSubstr;

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

// Job j runs alone from `t0`: 2 rounds of propose 1 s, build 2 s, measure 3 s, update 1 s, then
// the default config's build 2 s and measure 3 s, with 0.25 s of engine work after each update.
void AddJobAlone(engine::EngineResult& run, int j, double t0) {
  double t = t0;
  auto add = [&](StageKind kind, double d, int64_t round) {
    engine::StageTrace s;
    s.job = j;
    s.kind = kind;
    s.round = round;
    s.start = T(t);
    s.end = T(t + d);
    s.resource = kind == StageKind::kMeasure ? "device:cpu:1" : "cpu:0";
    run.traces.push_back(s);
    t += d;
  };
  for (int r = 0; r < 2; ++r) {
    add(StageKind::kPropose, 1, r);
    add(StageKind::kBuild, 2, r);
    add(StageKind::kMeasure, 3, r);
    add(StageKind::kUpdate, 1, r);
    t += 0.25;
  }
  add(StageKind::kBuild, 2, -1);
  add(StageKind::kMeasure, 3, -1);
  engine::JobResult job;
  job.name = j == 0 ? "zoo:resnet18" : "zoo:mobilenet_v2";
  job.start = T(t0);
  job.end = T(t);
  run.jobs.push_back(job);
  run.end = T(t);
}

engine::EngineResult Dedicated() {
  engine::EngineResult run;
  run.start = T(0);
  AddJobAlone(run, 0, 0);
  AddJobAlone(run, 1, 20);
  return run;
}

TEST(SimCheckTest, StageDurationsPerJobAndKindFromTheTraces) {
  auto spec = SimSpecFromRun(Dedicated(), {.cpu_slots = 1, .lent_slots = 1, .build_slots = 1},
                             /*jobs_ran_alone=*/true, {"sequential", "interleaved"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->hosts.size(), 1u);
  EXPECT_EQ(spec->hosts[0].cpu_slots, 1);
  ASSERT_EQ(spec->hosts[0].devices.size(), 1u);
  EXPECT_EQ(spec->hosts[0].devices[0].shares_cpu_slots, 1);
  ASSERT_EQ(spec->jobs.size(), 2u);
  const sim::JobGroupSpec& g = spec->jobs[0];
  EXPECT_EQ(g.name, "zoo:resnet18");
  EXPECT_EQ(g.count, 1);
  EXPECT_EQ(g.rounds, 2);
  ASSERT_EQ(g.stages.size(), 4u);
  EXPECT_EQ(g.stages[0].kind, StageKind::kPropose);
  EXPECT_DOUBLE_EQ(g.stages[0].duration.mean_s, 1);
  EXPECT_DOUBLE_EQ(g.stages[1].duration.mean_s, 3);    // (2 + 2 + 2 default) / 2 rounds
  EXPECT_DOUBLE_EQ(g.stages[2].duration.mean_s, 4.5);  // (3 + 3 + 3 default) / 2
  EXPECT_EQ(g.stages[2].device_kind, "cpu");
  EXPECT_EQ(g.stages[2].cpu_slots, 0);
  EXPECT_DOUBLE_EQ(g.stages[3].duration.mean_s, 1.25);  // update + the engine's 0.25 s

  // Not alone: the gaps are waiting, not work.
  auto shared = SimSpecFromRun(Dedicated(), {}, /*jobs_ran_alone=*/false, {"interleaved"});
  ASSERT_TRUE(shared.ok());
  EXPECT_DOUBLE_EQ(shared->jobs[0].stages[3].duration.mean_s, 1);

  engine::EngineResult empty;
  EXPECT_EQ(SimSpecFromRun(empty, {}, true, {"interleaved"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimCheckTest, YamlReadsBackToTheSameSpec) {
  auto spec = SimSpecFromRun(Dedicated(), {.cpu_slots = 1, .lent_slots = 1, .build_slots = 1}, true,
                             {"sequential", "interleaved", "predictive"});
  ASSERT_TRUE(spec.ok());
  const std::string yaml = SimSpecToYaml(*spec, "made by a test\nsecond line");
  EXPECT_THAT(yaml, HasSubstr("# made by a test\n# second line\n"));
  auto back = sim::ParseSimSpec(yaml);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(back->policies, spec->policies);
  // Measurements are time-bounded (min_repeat_ms): sharing the device does not stretch them.
  EXPECT_FALSE(spec->interference.device_time_sharing);
  EXPECT_FALSE(back->interference.device_time_sharing);
  ASSERT_EQ(back->jobs.size(), spec->jobs.size());
  for (size_t j = 0; j < spec->jobs.size(); ++j) {
    EXPECT_EQ(back->jobs[j].name, spec->jobs[j].name);
    EXPECT_EQ(back->jobs[j].rounds, spec->jobs[j].rounds);
    ASSERT_EQ(back->jobs[j].stages.size(), 4u);
    for (size_t s = 0; s < 4; ++s) {
      EXPECT_EQ(back->jobs[j].stages[s].kind, spec->jobs[j].stages[s].kind);
      EXPECT_EQ(back->jobs[j].stages[s].cpu_slots, spec->jobs[j].stages[s].cpu_slots);
      EXPECT_EQ(back->jobs[j].stages[s].device_kind, spec->jobs[j].stages[s].device_kind);
      EXPECT_NEAR(back->jobs[j].stages[s].duration.mean_s, spec->jobs[j].stages[s].duration.mean_s,
                  1e-6);
    }
  }
  EXPECT_EQ(back->hosts[0].devices[0].name, "cpu:1");
}

TEST(SimCheckTest, SimulatesEachSetupsPolicy) {
  auto spec = SimSpecFromRun(Dedicated(), {.cpu_slots = 1, .lent_slots = 1, .build_slots = 1}, true,
                             {"sequential", "interleaved"});
  ASSERT_TRUE(spec.ok());
  // Alone, each job's stages run back to back: 2 rounds x (1 + 3 + 4.5 + 1.25) = 19.5 s.
  std::vector<SimulationRow> rows = {{.setup = "dedicated", .measured_s = 39},
                                     {.setup = "interleaved", .measured_s = 30}};
  ASSERT_TRUE(Simulate(*spec, rows).ok());
  EXPECT_EQ(rows[0].policy, "sequential");
  EXPECT_NEAR(rows[0].simulated_s, 39, 1e-3);
  EXPECT_NEAR(rows[0].ratio, 1, 1e-4);
  EXPECT_EQ(rows[1].policy, "interleaved");
  // Interleaving overlaps one job's CPU stages with the other's measurements.
  EXPECT_LT(rows[1].simulated_s, 39 - 1);
  EXPECT_GE(rows[1].simulated_s, rows[1].simulated_lower_bound_s - 1e-6);
  EXPECT_NEAR(rows[1].ratio, rows[1].simulated_s / 30, 1e-9);
  EXPECT_EQ(PolicyOfSetup("uncontrolled"), "uncontrolled");
}

}  // namespace
}  // namespace loom::experiment
