#include "loom/sched/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::sched {
namespace {

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

StageRecord Rec(StageId id, JobId job, HostId host, DeviceId dev, int slots, double start,
                double end, std::vector<StageId> after = {}) {
  StageRecord r;
  r.stage = id;
  r.job = job;
  r.host = host;
  r.device = dev;
  r.cpu_slots = slots;
  r.ready = T(start);
  r.start = T(start);
  r.end = T(end);
  r.work = absl::Seconds(end - start);
  r.after = std::move(after);
  return r;
}

TEST(JainIndexTest, ExactValues) {
  EXPECT_DOUBLE_EQ(JainIndex({1, 1, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex({1, 0, 0, 0}), 0.25);
  EXPECT_DOUBLE_EQ(JainIndex({1, 2}), 9.0 / 10.0);
  EXPECT_DOUBLE_EQ(JainIndex({}), 1.0);
}

TEST(MetricsTest, HandBuiltTwoJobSchedule) {
  // One server with 2 slots and one gpu. Job 1: build 0-4 (2 slots), measure 4-6.
  // Job 2: build 4-6 (1 slot), measure 6-9, update 9-10 (1 slot).
  ClusterInfo c{{{"s", 2}}, {{"gpu0", "gpu", 0, 0}}};
  std::vector<JobRecord> jobs{{1, "a", T(0)}, {2, "b", T(0)}};
  std::vector<StageRecord> r{Rec(1, 1, 0, kNoDevice, 2, 0, 4), Rec(2, 1, 0, 0, 0, 4, 6, {1}),
                             Rec(3, 2, 0, kNoDevice, 1, 4, 6), Rec(4, 2, 0, 0, 0, 6, 9, {3}),
                             Rec(5, 2, 0, kNoDevice, 1, 9, 10, {4})};
  r[2].ready = T(0);  // job 2's build waited 4 s for slots
  Metrics m = ComputeMetrics(c, jobs, r);
  EXPECT_DOUBLE_EQ(m.makespan_s, 10);
  EXPECT_DOUBLE_EQ(m.bound.device_s, 5);      // 2 + 3 s on the only gpu
  EXPECT_DOUBLE_EQ(m.bound.cpu_s, 11.0 / 2);  // 8 + 2 + 1 slot-seconds on 2 slots
  EXPECT_DOUBLE_EQ(m.bound.chain_s, 6);       // job 2: 2 + 3 + 1
  EXPECT_DOUBLE_EQ(m.bound.value(), 6);
  EXPECT_DOUBLE_EQ(m.device_utilization, 0.5);
  EXPECT_DOUBLE_EQ(m.cpu_utilization, 11.0 / 20);
  EXPECT_DOUBLE_EQ(m.mean_wait_s, 4.0 / 5);
  EXPECT_DOUBLE_EQ(m.max_wait_s, 4);
  ASSERT_EQ(m.jobs.size(), 2u);
  EXPECT_DOUBLE_EQ(m.jobs[0].completion_s, 6);
  EXPECT_DOUBLE_EQ(m.jobs[0].isolated_s, 6);
  EXPECT_DOUBLE_EQ(m.jobs[0].slowdown, 1);
  EXPECT_DOUBLE_EQ(m.jobs[1].completion_s, 10);
  EXPECT_DOUBLE_EQ(m.jobs[1].isolated_s, 6);
  EXPECT_DOUBLE_EQ(m.jobs[1].slowdown, 10.0 / 6);
  EXPECT_DOUBLE_EQ(m.max_job_s, 10);
  EXPECT_DOUBLE_EQ(m.mean_job_s, 8);
  EXPECT_DOUBLE_EQ(m.jain_fairness, JainIndex({1.0, 0.6}));
  ASSERT_EQ(m.resources.size(), 2u);
  EXPECT_EQ(m.resources[0].name, "s/gpu0");
  EXPECT_DOUBLE_EQ(m.resources[0].busy_s, 5);
  EXPECT_EQ(m.resources[1].intervals.size(), 3u);
  auto j = MetricsToJson(m);
  EXPECT_DOUBLE_EQ(j["lower_bound_s"].get<double>(), 6);
  EXPECT_DOUBLE_EQ(j["makespan_over_bound"].get<double>(), 10.0 / 6);
}

TEST(MetricsTest, LowerBoundUsesWorkNotInflatedTimeAndCountsDevicesPerKind) {
  ClusterInfo c{{{"s", 4}}, {{"g0", "gpu", 0, 1}, {"g1", "gpu", 0, 1}}};
  std::vector<JobRecord> jobs{{1, "a", T(0)}, {2, "b", T(10)}};
  // Two overlapping measurements on g0 (uncontrolled): each took 8 s but needs 4 s of work.
  StageRecord a = Rec(1, 1, 0, 0, 1, 0, 8);
  a.work = absl::Seconds(4);
  StageRecord b = Rec(2, 2, 0, 0, 1, 10, 18);
  b.work = absl::Seconds(4);
  Metrics m = ComputeMetrics(c, {jobs}, {a, b});
  EXPECT_DOUBLE_EQ(m.bound.device_s, 4);     // 8 s of gpu work over two gpus
  EXPECT_DOUBLE_EQ(m.bound.cpu_s, 8.0 / 6);  // 8 slot-seconds over 4 + 2 donated slots
  EXPECT_DOUBLE_EQ(m.bound.chain_s, 14);     // job 2 arrives at 10 and needs 4
  EXPECT_DOUBLE_EQ(m.makespan_s, 18);
  EXPECT_DOUBLE_EQ(m.resources[0].busy_s, 16);
  EXPECT_DOUBLE_EQ(m.resources[1].busy_s, 0);
  EXPECT_DOUBLE_EQ(m.device_utilization, (16.0 / 18) / 2);
}

TEST(MetricsTest, OverlappingDeviceIntervalsCountOnce) {
  ClusterInfo c{{{"s", 1}}, {{"g0", "gpu", 0, 0}}};
  std::vector<JobRecord> jobs{{1, "a", T(0)}, {2, "b", T(0)}};
  Metrics m = ComputeMetrics(c, jobs, {Rec(1, 1, 0, 0, 0, 0, 6), Rec(2, 2, 0, 0, 0, 2, 4)});
  EXPECT_DOUBLE_EQ(m.resources[0].busy_s, 6);
  EXPECT_DOUBLE_EQ(m.device_utilization, 1.0);
}

}  // namespace
}  // namespace loom::sched
