#include "loom/sim/simulator.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/sim/report.h"

namespace loom::sim {
namespace {

using ::testing::HasSubstr;

std::string ExamplePath(const std::string& name) {
  // Tests run from the build tree; the examples live in the source tree beside loom/.
  return std::string(LOOM_SOURCE_DIR) + "/examples/sim/" + name;
}

SimSpec ThesisSpec(int jobs, int rounds = 5) {
  auto spec = LoadSimSpec(ExamplePath("thesis_two_jobs.yaml"));
  EXPECT_TRUE(spec.ok()) << spec.status();
  spec->jobs[0].count = jobs;
  spec->jobs[0].rounds = rounds;
  return *spec;
}

TEST(SimulatorTest, ThesisTwoJobs) {
  SimSpec spec = ThesisSpec(2, 10);
  auto results = SimulateAll(spec);
  ASSERT_TRUE(results.ok()) << results.status();
  std::printf("%s", FormatSummaryTable(*results).c_str());
  std::map<std::string, const SimResult*> by;
  for (const SimResult& r : *results) by[r.policy] = &r;
  ASSERT_EQ(by.size(), 4u);
  const double bound = by["interleaved"]->metrics.bound.value();
  // Same work for every policy, hence the same bound.
  for (const auto& [p, r] : by) EXPECT_DOUBLE_EQ(r->metrics.bound.value(), bound) << p;
  for (const auto& [p, r] : by) EXPECT_GE(r->metrics.makespan_s, bound - 1e-6) << p;
  double seq = by["sequential"]->metrics.makespan_s;
  EXPECT_LT(by["interleaved"]->metrics.makespan_s, 1.2 * bound);
  EXPECT_LT(by["predictive"]->metrics.makespan_s, 1.1 * bound);
  EXPECT_LT(by["interleaved"]->metrics.makespan_s, 0.8 * seq);
  EXPECT_LT(by["predictive"]->metrics.makespan_s, 0.8 * seq);
  // Exclusive policies never distort measurements; uncontrolled does.
  EXPECT_EQ(by["interleaved"]->mean_measure_distortion, 0);
  EXPECT_GT(by["uncontrolled"]->mean_measure_distortion, 0);
  EXPECT_EQ(by["interleaved"]->records.size(), 2u * 4 * 10 * 4);
}

// One job of the thesis' stage durations whose 8 tasks spread: up to 4 of them in flight at once.
constexpr char kSpreadingJob[] = R"(
seed: 7
hosts:
  - name: server
    cpu_slots: 16
    devices:
      - {name: gpu0, kind: gpu}
jobs:
  - name: resnet18
    tasks: 8
    rounds: 5
    spread: 4
    stages:
      - {kind: propose, cpu_slots: 1, duration: {dist: lognormal, mean: 4, stddev: 1}}
      - {kind: build, cpu_slots: 8, duration: {dist: lognormal, mean: 12, stddev: 3}}
      - {kind: measure, device: gpu, duration: {dist: normal, mean: 20, stddev: 2}}
      - {kind: update, cpu_slots: 1, duration: {dist: lognormal, mean: 6, stddev: 1.5}}
policies: [interleaved]
)";

// Per device, measurements never overlap (a device measures one stage at a time); returns how
// many each device ran.
std::map<sched::DeviceId, int> ExpectExclusiveDevices(const SimResult& r) {
  std::map<sched::DeviceId, std::vector<const sched::StageRecord*>> by_device;
  for (const sched::StageRecord& rec : r.records) {
    if (rec.device != sched::kNoDevice) by_device[rec.device].push_back(&rec);
  }
  std::map<sched::DeviceId, int> counts;
  for (auto& [device, recs] : by_device) {
    std::sort(recs.begin(), recs.end(),
              [](const auto* a, const auto* b) { return a->start < b->start; });
    for (size_t i = 1; i < recs.size(); ++i) {
      EXPECT_GE(recs[i]->start, recs[i - 1]->end) << "two stages at once on device " << device;
    }
    counts[device] = static_cast<int>(recs.size());
  }
  return counts;
}

TEST(SimulatorTest, ASpreadingJobOnTwoDevicesTakesAtMostSixTenthsOfItsTimeOnOne) {
  auto spec = ParseSimSpec(kSpreadingJob);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->jobs[0].spread, 4);
  auto one = Simulate(*spec, "interleaved");
  ASSERT_TRUE(one.ok()) << one.status();
  spec->hosts[0].devices.push_back({.name = "gpu1", .kind = "gpu"});
  auto two = Simulate(*spec, "interleaved");
  ASSERT_TRUE(two.ok()) << two.status();
  // Every stage of the same sampled work ran: 8 tasks x 5 rounds x 4 stages.
  EXPECT_EQ(one->records.size(), 160u);
  EXPECT_EQ(two->records.size(), 160u);
  const double ratio = two->metrics.makespan_s / one->metrics.makespan_s;
  std::printf("one job, 8 tasks spread 4: makespan %.1f s on one device, %.1f s on two (%.2f)\n",
              one->metrics.makespan_s, two->metrics.makespan_s, ratio);
  EXPECT_LE(ratio, 0.6);
  EXPECT_EQ(ExpectExclusiveDevices(*one).size(), 1u);
  std::map<sched::DeviceId, int> used = ExpectExclusiveDevices(*two);
  ASSERT_EQ(used.size(), 2u);
  for (const auto& [device, n] : used) EXPECT_GE(n, 10) << "device " << device;
}

TEST(SimulatorTest, SpreadOneRunsTasksOneAfterAnother) {
  auto spec = ParseSimSpec(kSpreadingJob);
  ASSERT_TRUE(spec.ok()) << spec.status();
  spec->jobs[0].spread = 1;
  spec->hosts[0].devices.push_back({.name = "gpu1", .kind = "gpu"});
  auto r = Simulate(*spec, "interleaved");
  ASSERT_TRUE(r.ok()) << r.status();
  // One chain: every stage starts after the previous one ended.
  std::vector<const sched::StageRecord*> recs;
  for (const sched::StageRecord& rec : r->records) recs.push_back(&rec);
  std::sort(recs.begin(), recs.end(),
            [](const auto* a, const auto* b) { return a->start < b->start; });
  for (size_t i = 1; i < recs.size(); ++i) EXPECT_GE(recs[i]->start, recs[i - 1]->end);
}

TEST(SimulatorTest, ScalingSweepMeetsTheGoals) {
  SimSpec spec = ThesisSpec(1, 3);
  spec.sweep_jobs = {1, 2, 4, 8, 16, 32, 64};
  auto results = SimulateAll(spec);
  ASSERT_TRUE(results.ok()) << results.status();
  std::printf("%s", FormatSummaryTable(*results).c_str());
  std::map<std::pair<int, std::string>, const SimResult*> by;
  for (const SimResult& r : *results) by[std::make_pair(r.jobs, r.policy)] = &r;
  for (int n : spec.sweep_jobs) {
    SCOPED_TRACE(n);
    const SimResult* pred = by[std::make_pair(n, std::string("predictive"))];
    const SimResult* inter = by[std::make_pair(n, std::string("interleaved"))];
    const SimResult* seq = by[std::make_pair(n, std::string("sequential"))];
    double bound = inter->metrics.bound.value();
    EXPECT_LE(pred->metrics.makespan_s, 1.1 * bound);
    EXPECT_LE(inter->metrics.makespan_s, 1.2 * bound);
    if (n >= 2) {
      EXPECT_LT(pred->metrics.makespan_s, 0.8 * seq->metrics.makespan_s);
      EXPECT_LT(inter->metrics.makespan_s, 0.8 * seq->metrics.makespan_s);
    }
  }
}

TEST(SimulatorTest, IdenticalSeedsGiveIdenticalResults) {
  SimSpec spec = ThesisSpec(4, 2);
  for (const std::string& p : spec.policies) {
    auto a = Simulate(spec, p);
    auto b = Simulate(spec, p);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->records.size(), b->records.size());
    for (size_t i = 0; i < a->records.size(); ++i) {
      EXPECT_EQ(a->records[i].start, b->records[i].start);
      EXPECT_EQ(a->records[i].stage, b->records[i].stage);
    }
    EXPECT_EQ(ResultsToJson({*a}).dump(), ResultsToJson({*b}).dump());
  }
  spec.seed = 43;
  auto c = Simulate(spec, "interleaved");
  auto a = Simulate(ThesisSpec(4, 2), "interleaved");
  EXPECT_NE(c->metrics.makespan_s, a->metrics.makespan_s);
}

TEST(SimulatorTest, UncontrolledChargesInterference) {
  // Two jobs with only CPU stages that each want the whole host: under uncontrolled they
  // oversubscribe it, and the update is further slowed 1.64x by the other job.
  auto spec = ParseSimSpec(R"(
seed: 1
hosts: [{name: h, cpu_slots: 2}]
jobs:
  - name: j
    count: 2
    stages:
      - {kind: update, cpu_slots: 2, duration: 10}
policies: [uncontrolled, interleaved]
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto u = Simulate(*spec, "uncontrolled");
  auto i = Simulate(*spec, "interleaved");
  ASSERT_TRUE(u.ok() && i.ok());
  // Interleaved: one after the other, 20 s. Uncontrolled: both at half speed / 1.64 -> 32.8 s.
  EXPECT_DOUBLE_EQ(i->metrics.makespan_s, 20);
  EXPECT_NEAR(u->metrics.makespan_s, 32.8, 1e-6);
  EXPECT_DOUBLE_EQ(u->metrics.bound.value(), 20);
}

TEST(SimulatorTest, DeviceTimeSharingUnderUncontrolled) {
  auto spec = ParseSimSpec(R"(
hosts: [{name: h, cpu_slots: 1, devices: [{name: g, kind: gpu}]}]
jobs:
  - {name: j, count: 3, stages: [{kind: measure, device: gpu, duration: 6}]}
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto u = Simulate(*spec, "uncontrolled");
  ASSERT_TRUE(u.ok());
  EXPECT_NEAR(u->metrics.makespan_s, 18, 1e-6);  // three at 1/3 speed
  EXPECT_NEAR(u->mean_measure_distortion, 0.10, 1e-9);
  std::string svg = GanttSvg(*u);
  EXPECT_THAT(svg, HasSubstr("<svg"));
  EXPECT_THAT(svg, HasSubstr("h/g (3 rows)"));  // three overlapping stages on the device
}

TEST(SimulatorTest, OnlyTheWorkBoundedPartOfADeviceStageIsTimeShared) {
  // Two measurements start together on one device: a (10 s alone) and b (4 s alone), each half
  // time-bounded. Sharing, both advance at 1 / (0.5 + 0.5 x 2) = 2/3: b ends at 6 s, when a has
  // done 4 s of its 10; a runs its last 6 s alone and ends at 12 s.
  auto spec = ParseSimSpec(R"(
hosts: [{name: h, cpu_slots: 1, devices: [{name: g, kind: cpu}]}]
jobs:
  - {name: a, stages: [{kind: measure, device: cpu, duration: 10, time_bounded: 0.5}]}
  - {name: b, stages: [{kind: measure, device: cpu, duration: 4, time_bounded: 0.5}]}
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto u = Simulate(*spec, "uncontrolled");
  ASSERT_TRUE(u.ok()) << u.status();
  ASSERT_EQ(u->records.size(), 2u);
  std::map<sched::JobId, double> end;
  for (const sched::StageRecord& r : u->records) {
    end[r.job] = absl::ToDoubleSeconds(r.end - absl::UnixEpoch());
  }
  ASSERT_EQ(end.size(), 2u);
  EXPECT_NEAR(end.begin()->second, 12, 1e-9);  // a
  EXPECT_NEAR(end.rbegin()->second, 6, 1e-9);  // b
  EXPECT_NEAR(u->metrics.makespan_s, 12, 1e-9);

  // Fully time-bounded: sharing costs nothing; fully work-bounded: plain time sharing (14 s).
  for (auto [f, makespan] : {std::pair{1.0, 10.0}, std::pair{0.0, 14.0}}) {
    for (JobGroupSpec& g : spec->jobs) g.stages[0].time_bounded = f;
    auto r = Simulate(*spec, "uncontrolled");
    ASSERT_TRUE(r.ok());
    EXPECT_NEAR(r->metrics.makespan_s, makespan, 1e-9) << "time_bounded " << f;
  }
  // Without device time sharing the fraction does not matter.
  spec->interference.device_time_sharing = false;
  auto off = Simulate(*spec, "uncontrolled");
  ASSERT_TRUE(off.ok());
  EXPECT_NEAR(off->metrics.makespan_s, 10, 1e-9);
  // Exclusive policies never share the device: 14 s one after the other.
  auto seq = Simulate(*spec, "sequential");
  ASSERT_TRUE(seq.ok());
  EXPECT_NEAR(seq->metrics.makespan_s, 14, 1e-9);
}

TEST(SimulatorTest, SummaryTableAndJson) {
  auto r = Simulate(ThesisSpec(2, 1), "predictive");
  ASSERT_TRUE(r.ok());
  std::string table = FormatSummaryTable({*r});
  EXPECT_THAT(table, HasSubstr("predictive"));
  EXPECT_THAT(table, HasSubstr("makespan_s"));
  auto j = ResultsToJson({*r});
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["policy"], "predictive");
  EXPECT_EQ(j["runs"][0]["jobs_count"], 2);
  EXPECT_EQ(j["runs"][0]["decisions"], 2 * 4 * 1 * 4);
  EXPECT_DOUBLE_EQ(j["runs"][0]["makespan_s"].get<double>(), r->metrics.makespan_s);
}

}  // namespace
}  // namespace loom::sim
