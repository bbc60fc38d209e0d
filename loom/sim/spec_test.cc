#include "loom/sim/spec.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::sim {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(
seed: 7
hosts:
  - name: server
    cpu_slots: 4
    devices: [{name: gpu0, kind: gpu, shares_cpu_slots: 1}]
jobs:
  - name: r18
    count: 3
    priority: 2
    submit_every: 5
    tasks: 2
    rounds: 3
    stages:
      - {kind: build, cpu_slots: 2, duration: {dist: normal, mean: 10, stddev: 1}}
      - {kind: measure, device: gpu, duration: 4}
policies: [interleaved, predictive]
interference: {cpu_slowdown_per_extra_job: {build: 0.5}, measure_distortion_per_corunner: 0.1}
sweep_jobs: [1, 4]
)";

absl::Status ParseError(const std::string& yaml) {
  auto s = ParseSimSpec(yaml);
  return s.ok() ? absl::OkStatus() : s.status();
}

TEST(SpecTest, ParsesEveryField) {
  auto s = ParseSimSpec(kMinimal);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->seed, 7u);
  ASSERT_EQ(s->hosts.size(), 1u);
  EXPECT_EQ(s->hosts[0].cpu_slots, 4);
  ASSERT_EQ(s->hosts[0].devices.size(), 1u);
  EXPECT_EQ(s->hosts[0].devices[0].shares_cpu_slots, 1);
  ASSERT_EQ(s->jobs.size(), 1u);
  const JobGroupSpec& g = s->jobs[0];
  EXPECT_EQ(g.count, 3);
  EXPECT_EQ(g.priority, 2);
  EXPECT_DOUBLE_EQ(g.submit_every_s, 5);
  EXPECT_EQ(g.tasks, 2);
  EXPECT_EQ(g.rounds, 3);
  EXPECT_EQ(g.spread, 1);  // the default: one task after another
  ASSERT_EQ(g.stages.size(), 2u);
  EXPECT_EQ(g.stages[0].kind, sched::StageKind::kBuild);
  EXPECT_EQ(g.stages[0].duration.kind, DurationDist::Kind::kNormal);
  EXPECT_DOUBLE_EQ(g.stages[0].duration.stddev_s, 1);
  EXPECT_EQ(g.stages[1].device_kind, "gpu");
  EXPECT_EQ(g.stages[1].duration.kind, DurationDist::Kind::kConstant);
  EXPECT_DOUBLE_EQ(g.stages[1].duration.mean_s, 4);
  EXPECT_EQ(s->policies, (std::vector<std::string>{"interleaved", "predictive"}));
  EXPECT_DOUBLE_EQ(s->interference.cpu_slowdown_per_extra_job[1], 0.5);
  EXPECT_DOUBLE_EQ(s->interference.cpu_slowdown_per_extra_job[3], 0.64);  // default kept
  EXPECT_DOUBLE_EQ(s->interference.measure_distortion_per_corunner, 0.1);
  EXPECT_EQ(s->sweep_jobs, (std::vector<int>{1, 4}));
}

TEST(SpecTest, UnknownKeyNamesKeyAndPath) {
  std::string y = kMinimal;
  y.replace(y.find("rounds: 3"), 9, "roundz: 3");
  absl::Status st = ParseError(y);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("unknown key 'roundz' at jobs[0].roundz"));

  y = kMinimal;
  y.replace(y.find("stddev: 1}"), 10, "sttdev: 1}");
  st = ParseError(y);
  EXPECT_THAT(st.message(), HasSubstr("unknown key 'sttdev' at jobs[0].stages[0].duration.sttdev"));

  st = ParseError(std::string(kMinimal) + "colour: blue\n");
  EXPECT_THAT(st.message(), HasSubstr("unknown key 'colour' at colour"));

  y = kMinimal;
  y.replace(y.find("shares_cpu_slots"), 16, "share_cpu_slots");
  st = ParseError(y);
  EXPECT_THAT(st.message(), HasSubstr("hosts[0].devices[0].share_cpu_slots"));
}

TEST(SpecTest, TimeBoundedFractionOfDeviceStages) {
  std::string y = kMinimal;
  y.replace(y.find("duration: 4}"), 12, "duration: 4, time_bounded: 0.85}");
  auto s = ParseSimSpec(y);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_DOUBLE_EQ(s->jobs[0].stages[1].time_bounded, 0.85);
  EXPECT_DOUBLE_EQ(s->jobs[0].stages[0].time_bounded, 0);  // default
  EXPECT_TRUE(s->interference.device_time_sharing);

  y = kMinimal;
  y.replace(y.find("duration: 4}"), 12, "duration: 4, time_bounded: 1.5}");
  absl::Status st = ParseError(y);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(),
              HasSubstr("jobs[0].stages[1].time_bounded: must be a fraction in [0, 1]"));

  y = kMinimal;
  y.replace(y.find("stddev: 1}"), 10, "stddev: 1}, time_bounded: 0.5");
  st = ParseError(y);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("jobs[0].stages[0].time_bounded: only device stages"));
}

TEST(SpecTest, CountsThatWouldNotFitInMemoryAreOneError) {
  std::string y = kMinimal;
  y.replace(y.find("count: 3"), 8, "count: 100000000");
  y.replace(y.find("sweep_jobs: [1, 4]"), 18, "");
  EXPECT_THAT(ParseError(y).message(),
              HasSubstr("jobs: the spec simulates 1.2e+09 stages (jobs x tasks x rounds x stages); "
                        "at most 2e+07 fit in memory"));
  y = kMinimal;
  y.replace(y.find("sweep_jobs: [1, 4]"), 18, "sweep_jobs: [1, 100000000]");
  EXPECT_THAT(ParseError(y).message(), HasSubstr("sweep_jobs: the spec simulates 1.2e+09 stages"));
}

TEST(SpecTest, BadValuesSayWhere) {
  std::string y = kMinimal;
  y.replace(y.find("count: 3"), 8, "count: x");
  EXPECT_THAT(ParseError(y).message(), HasSubstr("jobs[0].count: cannot read 'x' as a integer"));

  y = kMinimal;
  y.replace(y.find("dist: normal"), 12, "dist: gamma");
  EXPECT_THAT(ParseError(y).message(), HasSubstr("unknown distribution 'gamma'"));

  y = kMinimal;
  y.replace(y.find("device: gpu"), 11, "device: tpu");
  EXPECT_THAT(ParseError(y).message(),
              HasSubstr("jobs[0].stages[1].device: no host has a device of kind 'tpu'"));

  y = kMinimal;
  y.replace(y.find("[interleaved, predictive]"), 25, "[interleaved, fastest]");
  EXPECT_THAT(ParseError(y).message(), HasSubstr("policies[1]: unknown policy 'fastest'"));

  y = kMinimal;
  y.replace(y.find("kind: build"), 11, "kind: compile");
  EXPECT_THAT(ParseError(y).message(), HasSubstr("unknown stage kind 'compile'"));

  y = kMinimal;
  y.replace(y.find("rounds: 3"), 9, "rounds: 3\n    spread: 0");
  EXPECT_THAT(ParseError(y).message(), HasSubstr("jobs[0].spread: must be >= 1"));

  EXPECT_THAT(ParseError("hosts: [").message(), HasSubstr("not valid YAML"));
  EXPECT_THAT(ParseError("seed: 1\n").message(), HasSubstr("hosts: expected a non-empty list"));
}

TEST(SpecTest, TraceDurationsAreFittedFromJsonLines) {
  auto dir = std::filesystem::temp_directory_path() / "loom_spec_test";
  std::filesystem::create_directories(dir);
  {
    std::ofstream t(dir / "trace.jsonl");
    t << R"({"kind": "build", "start": 0, "end": 2, "resource": "h"})"
      << "\n";
    t << R"({"kind": "measure", "start": 2, "end": 9, "resource": "h/gpu0"})"
      << "\n";
    t << R"({"kind": "build", "start": 9, "end": 13, "resource": "h"})"
      << "\n";
  }
  std::string y = kMinimal;
  y.replace(y.find("{dist: normal, mean: 10, stddev: 1}"), 35, "{dist: trace, trace: trace.jsonl}");
  auto s = ParseSimSpec(y, dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  const DurationDist& d = s->jobs[0].stages[0].duration;
  EXPECT_EQ(d.samples_s, (std::vector<double>{2, 4}));
  EXPECT_DOUBLE_EQ(d.Mean(), 3);
  base::Rng rng(1);
  for (int i = 0; i < 20; ++i) {
    double x = d.Sample(rng);
    EXPECT_TRUE(x == 2 || x == 4);
  }
  {
    std::ofstream t(dir / "bad.jsonl");
    t << R"({"kind": "build", "start": 0})"
      << "\n";
  }
  auto bad = LoadTraceDurations((dir / "bad.jsonl").string(), sched::StageKind::kBuild);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("bad.jsonl:1"));
  auto none = LoadTraceDurations((dir / "trace.jsonl").string(), sched::StageKind::kUpdate);
  EXPECT_THAT(none.status().message(), HasSubstr("has no update stages"));
  std::filesystem::remove_all(dir);
}

TEST(SpecTest, LognormalMatchesRequestedMean) {
  DurationDist d;
  d.kind = DurationDist::Kind::kLognormal;
  d.mean_s = 10;
  d.stddev_s = 3;
  base::Rng rng(5);
  double sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) sum += d.Sample(rng);
  EXPECT_NEAR(sum / n, 10, 0.15);
}

}  // namespace
}  // namespace loom::sim
