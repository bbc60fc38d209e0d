#include "loom/experiment/sim_check.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/experiment/runner.h"
#include "loom/sim/simulator.h"

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

// 2 rounds of 4 candidates (trials 8, batch 4) and the default config: 9 candidates of
// 3 repeats x 100 ms = 0.3 s each, in 3 measure stages of 3 s.
const SimMeasure kMeasure{
    .repeat = 3, .min_repeat_ms = 100, .batch_size = {4, 4}, .trials = {8, 8}};

TEST(SimCheckTest, TimeBoundedFractionFromTheMeasureOptions) {
  const engine::EngineResult run = Dedicated();
  EXPECT_NEAR(TimeBoundedFraction(run, 0, kMeasure), 9 * 0.3 / 9, 1e-12);
  EXPECT_NEAR(TimeBoundedFraction(run, 1, kMeasure), 0.3, 1e-12);
  // Unknown options or job: no time-bounded part.
  EXPECT_EQ(TimeBoundedFraction(run, 0, {}), 0);
  EXPECT_EQ(TimeBoundedFraction(
                run, 1, {.repeat = 3, .min_repeat_ms = 100, .batch_size = {4}, .trials = {8}}),
            0);
  // Capped at 1: 9 candidates x 3 x 1 s > 9 s of measuring.
  EXPECT_EQ(TimeBoundedFraction(
                run, 0, {.repeat = 3, .min_repeat_ms = 1000, .batch_size = {4}, .trials = {8}}),
            1);

  engine::StageTrace t;
  t.job = 0;
  t.round = 1;
  EXPECT_EQ(CandidatesOf(t, {.batch_size = {4}, .trials = {6}}), 2);  // the last, short round
  EXPECT_EQ(CandidatesOf(t, {.batch_size = {4}, .trials = {32}}), 4);
  t.round = -1;
  EXPECT_EQ(CandidatesOf(t, {.batch_size = {4}, .trials = {32}}), 1);
  t.job = 1;
  EXPECT_EQ(CandidatesOf(t, {.batch_size = {4}, .trials = {32}}), 0);

  auto spec = SimSpecFromRun(run, {}, true, {"uncontrolled"}, kMeasure);
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(spec->interference.device_time_sharing);
  for (const sim::JobGroupSpec& g : spec->jobs) {
    EXPECT_NEAR(g.stages[2].time_bounded, 0.3, 1e-12);  // the measure stage
    EXPECT_EQ(g.stages[1].time_bounded, 0);             // CPU stages have none
  }
}

TEST(SimCheckTest, MeasurementsOfTwoJobsOverlapAsTheFractionSays) {
  // Both jobs at once under `uncontrolled` on 2 general slots (no lending): the measure stages
  // (4.5 s alone, f = 0.3) overlap exactly, each at 1 / (0.3 + 0.7 x 2) = 1/1.7 speed.
  auto spec = SimSpecFromRun(Dedicated(), {.cpu_slots = 2, .lent_slots = 0, .build_slots = 1}, true,
                             {"uncontrolled"}, kMeasure);
  ASSERT_TRUE(spec.ok());
  auto r = sim::Simulate(*spec, "uncontrolled");
  ASSERT_TRUE(r.ok()) << r.status();
  // Per round: propose 1 + build 3 (each job on its own slot) + measure 4.5 x 1.7 + update 1.25.
  EXPECT_NEAR(r->metrics.makespan_s, 2 * (1 + 3 + 4.5 * 1.7 + 1.25), 1e-6);
}

TEST(SimCheckTest, YamlReadsBackToTheSameSpec) {
  auto spec = SimSpecFromRun(Dedicated(), {.cpu_slots = 1, .lent_slots = 1, .build_slots = 1}, true,
                             {"sequential", "interleaved", "predictive"}, kMeasure);
  ASSERT_TRUE(spec.ok());
  const std::string yaml = SimSpecToYaml(*spec, "made by a test\nsecond line");
  EXPECT_THAT(yaml, HasSubstr("# made by a test\n# second line\n"));
  auto back = sim::ParseSimSpec(yaml);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(back->policies, spec->policies);
  // Sharing the device stretches only the work-bounded part of a measurement.
  EXPECT_TRUE(spec->interference.device_time_sharing);
  EXPECT_TRUE(back->interference.device_time_sharing);
  EXPECT_THAT(yaml, HasSubstr("time_bounded: 0.3000"));
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
      EXPECT_NEAR(back->jobs[j].stages[s].time_bounded, spec->jobs[j].stages[s].time_bounded, 1e-4);
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

// The runner's options for the 2-core layout the traces above were made on.
RunnerOptions OneCoreLayout() {
  RunnerOptions options;
  options.engine.layout.cpu_slots = 1;
  options.engine.layout.device_cores = {1};
  options.engine.build_slots = 1;
  options.sim_measure = kMeasure;
  return options;
}

TEST(SimCheckTest, ResimulateFromResultsJsonMatchesTheRunner) {
  // An experiment result as the runner leaves it: the dedicated run, and the same two jobs
  // "measured" at 30 s under interleaved.
  const RunnerOptions options = OneCoreLayout();
  ExperimentResult result;
  SetupResult dedicated;
  dedicated.setup = "dedicated";
  dedicated.makespan_s = 39;
  dedicated.run = Dedicated();
  for (const engine::JobResult& j : dedicated.run.jobs) dedicated.jobs.push_back({.name = j.name});
  SetupResult interleaved = dedicated;
  interleaved.setup = "interleaved";
  interleaved.makespan_s = 30;
  result.setups = {dedicated, interleaved};
  CheckWithSimulator(options, result);
  ASSERT_EQ(result.simulation_error, "");
  ASSERT_EQ(result.simulation.size(), 2u);

  const auto dir = std::filesystem::temp_directory_path() / "loom_sim_check_test";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteResults(result, dir.string()).ok());
  std::filesystem::remove(dir / "simulation.csv");
  auto rows = Resimulate(dir.string(), options);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  for (size_t i = 0; i < rows->size(); ++i) {
    EXPECT_EQ((*rows)[i].setup, result.simulation[i].setup);
    EXPECT_EQ((*rows)[i].policy, result.simulation[i].policy);
    EXPECT_NEAR((*rows)[i].measured_s, result.simulation[i].measured_s, 1e-9);
    EXPECT_NEAR((*rows)[i].simulated_s, result.simulation[i].simulated_s, 1e-6);
  }
  std::ifstream csv(dir / "simulation.csv");
  std::stringstream text;
  text << csv.rdbuf();
  EXPECT_EQ(text.str(), SimulationCsv(result.simulation));
  auto yaml = sim::LoadSimSpec((dir / "sim.yaml").string());
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_NEAR(yaml->jobs[0].stages[2].time_bounded, 0.3, 1e-4);
  EXPECT_THAT(FormatSimulationRows(*rows), HasSubstr("interleaved      1 interleaved"));

  // Errors: no results.json; not a results file.
  EXPECT_EQ(Resimulate((dir / "nowhere").string(), options).status().code(),
            absl::StatusCode::kNotFound);
  {
    std::ofstream bad(dir / "results.json");
    bad << R"({"setups": [{"setup": "dedicated"}]})";
  }
  auto bad = Resimulate(dir.string(), options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("results.json"));
  std::filesystem::remove_all(dir);
}

TEST(SimCheckTest, EachRepetitionIsSimulatedFromItsOwnDedicatedRun) {
  const RunnerOptions options = OneCoreLayout();
  ExperimentResult result;
  result.repetitions = 2;
  for (int rep = 0; rep < 2; ++rep) {
    SetupResult dedicated;
    dedicated.setup = "dedicated";
    dedicated.repetition = rep;
    dedicated.run = Dedicated();
    // The second repetition's stages last twice as long.
    if (rep == 1) {
      for (engine::StageTrace& t : dedicated.run.traces) {
        t.start = dedicated.run.start + (t.start - dedicated.run.start) * 2;
        t.end = dedicated.run.start + (t.end - dedicated.run.start) * 2;
      }
      for (engine::JobResult& j : dedicated.run.jobs) {
        j.start = dedicated.run.start + (j.start - dedicated.run.start) * 2;
        j.end = dedicated.run.start + (j.end - dedicated.run.start) * 2;
      }
      dedicated.run.end = dedicated.run.start + (dedicated.run.end - dedicated.run.start) * 2;
    }
    dedicated.makespan_s = 39 * (rep + 1);
    for (const engine::JobResult& j : dedicated.run.jobs)
      dedicated.jobs.push_back({.name = j.name});
    SetupResult interleaved = dedicated;
    interleaved.setup = "interleaved";
    interleaved.makespan_s = 30 * (rep + 1);
    result.setups.push_back(dedicated);
    result.setups.push_back(interleaved);
  }
  CheckWithSimulator(options, result);
  ASSERT_EQ(result.simulation_error, "");
  ASSERT_EQ(result.simulation.size(), 4u);
  EXPECT_EQ(result.simulation[0].repetition, 0);
  EXPECT_EQ(result.simulation[3].repetition, 1);
  EXPECT_EQ(result.simulation[2].setup, "dedicated");
  // Each repetition's sequential simulation replays its own dedicated run: twice as long.
  EXPECT_NEAR(result.simulation[2].simulated_s, 2 * result.simulation[0].simulated_s,
              0.02 * result.simulation[2].simulated_s);
  EXPECT_NEAR(result.simulation[3].simulated_s, 2 * result.simulation[1].simulated_s,
              0.02 * result.simulation[3].simulated_s);

  const auto dir = std::filesystem::temp_directory_path() / "loom_sim_check_reps_test";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteResults(result, dir.string()).ok());
  auto rows = Resimulate(dir.string(), options);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[3].repetition, 1);
  EXPECT_NEAR((*rows)[3].simulated_s, result.simulation[3].simulated_s, 1e-6);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loom::experiment
