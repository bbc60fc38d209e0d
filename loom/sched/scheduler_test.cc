#include "loom/sched/scheduler.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::sched {
namespace {

using ::testing::HasSubstr;

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

std::unique_ptr<Scheduler> Make(std::string_view policy, SchedulerOptions options = {}) {
  auto p = MakePolicy(policy);
  EXPECT_TRUE(p.ok());
  return std::make_unique<Scheduler>(std::move(*p), options);
}

ResourceNeed Cpu(int slots) { return ResourceNeed{.cpu_slots = slots}; }
ResourceNeed Dev(std::string kind, int slots = 0) {
  return ResourceNeed{.cpu_slots = slots, .device_kind = std::move(kind)};
}

StageRequest Req(JobId job, StageKind kind, ResourceNeed need, std::vector<StageId> after = {},
                 std::optional<absl::Duration> estimate = std::nullopt) {
  return StageRequest{job, kind, std::move(need), estimate, std::move(after)};
}

// One host with `slots` CPU slots and one "gpu".
void OneServer(Scheduler& s, int slots, int shares = 0) {
  ASSERT_TRUE(s.AddHost({"server", slots}).ok());
  ASSERT_TRUE(s.AddDevice({"gpu0", "gpu", 0, shares}).ok());
}

TEST(MakePolicyTest, UnknownNameListsTheNames) {
  auto p = MakePolicy("fastest");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("unknown policy 'fastest'"));
  EXPECT_THAT(p.status().message(), HasSubstr("sequential, uncontrolled, interleaved, predictive"));
  for (std::string_view name : PolicyNames()) {
    auto ok = MakePolicy(name);
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ((*ok)->Name(), name);
  }
}

TEST(SchedulerTest, DeviceIsLeasedToOneStageAtATime) {
  auto s = Make("interleaved");
  OneServer(*s, 4);
  JobId a = *s->AddJob({"a"});
  JobId b = *s->AddJob({"b"});
  StageId sa = *s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(0));
  StageId sb = *s->Submit(Req(b, StageKind::kMeasure, Dev("gpu")), T(0));
  auto g = s->Advance(T(0));
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].stage, sa);
  EXPECT_EQ(g[0].device, 0);
  EXPECT_TRUE(s->Advance(T(1)).empty());
  ASSERT_TRUE(s->Complete(g[0].lease, T(2)).ok());
  auto g2 = s->Advance(T(2));
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, sb);
  EXPECT_EQ(g2[0].ready, T(0));
  EXPECT_EQ(g2[0].start, T(2));
}

TEST(SchedulerTest, DeviceUsageCountsLeasedTimeOnceWhileShared) {
  auto s = Make("uncontrolled");
  ASSERT_TRUE(s->AddHost({"server", 2}).ok());
  ASSERT_TRUE(s->AddDevice({"gpu0", "gpu", 0, 0}, T(10)).ok());
  ASSERT_TRUE(s->AddDevice({"gpu1", "gpu", 0, 0}).ok());  // joins at the first Advance
  JobId a = *s->AddJob({"a"});
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(20)).ok());
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(20)).ok());
  auto g = s->Advance(T(20));  // uncontrolled: both on the least-leased devices
  ASSERT_EQ(g.size(), 2u);
  ASSERT_EQ(g[0].device, 0);
  ASSERT_EQ(g[1].device, 1);
  EXPECT_EQ(s->started(), T(20));
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(22)).ok());
  auto g2 = s->Advance(T(22));  // a second lease on gpu0, overlapping the first
  ASSERT_EQ(g2.size(), 1u);
  ASSERT_EQ(g2[0].device, 0);
  ASSERT_TRUE(s->Complete(g[0].lease, T(25)).ok());
  // Still busy (the second lease): 20..now counts once.
  EXPECT_EQ(s->Usage(0, T(26)).busy, absl::Seconds(6));
  ASSERT_TRUE(s->Fail(g2[0].lease, T(27), "lost").ok());
  Scheduler::DeviceUsage u = s->Usage(0, T(40));
  EXPECT_EQ(u.busy, absl::Seconds(7));
  EXPECT_EQ(u.since, T(10));
  ASSERT_TRUE(s->Complete(g[1].lease, T(21)).ok());
  u = s->Usage(1, T(40));
  EXPECT_EQ(u.busy, absl::Seconds(1));
  EXPECT_EQ(u.since, T(20));
}

TEST(SchedulerTest, ReadyQueuesCountLiveStagesPerResourceClass) {
  auto s = Make("interleaved");
  OneServer(*s, 1);
  JobId a = *s->AddJob({"a"});
  JobId b = *s->AddJob({"b"});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(b, StageKind::kMeasure, Dev("gpu")), T(0)).ok());
  std::vector<Scheduler::ReadyQueue> q = s->ReadyQueues();
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].cpu_slots, 1);
  EXPECT_EQ(q[0].device_kind, "");
  EXPECT_EQ(q[0].ready, 3);
  EXPECT_EQ(q[1].cpu_slots, 0);
  EXPECT_EQ(q[1].device_kind, "gpu");
  EXPECT_EQ(q[1].ready, 2);
  // A cancelled job's ready stages leave the count at once (their entries go stale).
  ASSERT_TRUE(s->CancelJob(b, T(1)).ok());
  EXPECT_EQ(s->ReadyQueues()[1].ready, 1);
  // Granted stages leave their queue; the classes always add up to num_ready().
  const size_t granted = s->Advance(T(1)).size();
  ASSERT_GE(granted, 1u);
  int64_t total = 0;
  for (const auto& r : s->ReadyQueues()) total += r.ready;
  EXPECT_EQ(total, 4 - static_cast<int64_t>(granted));
  EXPECT_EQ(static_cast<size_t>(total), s->num_ready());
}

TEST(SchedulerTest, GrantRateIsOverTheWindowOrSinceTheStart) {
  auto s = Make("interleaved");
  ASSERT_TRUE(s->AddHost({"server", 100}).ok());
  EXPECT_EQ(s->GrantRate(T(0), absl::Minutes(1)), 0);
  JobId a = *s->AddJob({"a"});
  s->Advance(T(0));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(4)).ok());
  EXPECT_EQ(s->Advance(T(4)).size(), 10u);
  // 10 grants in the 5 s since the start.
  EXPECT_DOUBLE_EQ(s->GrantRate(T(5), absl::Minutes(1)), 2.0);
  // 100 s later, none in the last minute.
  EXPECT_DOUBLE_EQ(s->GrantRate(T(105), absl::Minutes(1)), 0.0);
  EXPECT_DOUBLE_EQ(s->GrantRate(T(64), absl::Minutes(1)), 10.0 / 60);
}

TEST(SchedulerTest, UncontrolledSharesTheDevice) {
  auto s = Make("uncontrolled");
  OneServer(*s, 1);
  JobId a = *s->AddJob({"a"});
  JobId b = *s->AddJob({"b"});
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(b, StageKind::kMeasure, Dev("gpu")), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(b, StageKind::kBuild, Cpu(1)), T(0)).ok());
  EXPECT_EQ(s->Advance(T(0)).size(), 4u);
  EXPECT_EQ(s->DeviceLeases(0), 2);
  EXPECT_EQ(s->FreeCpuSlots(0), -1);
}

TEST(SchedulerTest, CpuSlotsNeverExceedCapacity) {
  auto s = Make("interleaved");
  ASSERT_TRUE(s->AddHost({"h", 3}).ok());
  JobId a = *s->AddJob({"a"});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0)).ok());
  auto g = s->Advance(T(0));
  EXPECT_EQ(g.size(), 3u);
  EXPECT_EQ(s->FreeCpuSlots(0), 0);
  EXPECT_EQ(s->num_ready(), 2u);
}

TEST(SchedulerTest, InfeasibleDeviceKindFailsWithReason) {
  auto s = Make("interleaved");
  OneServer(*s, 2);
  JobId a = *s->AddJob({"a"});
  auto st = s->Submit(Req(a, StageKind::kMeasure, Dev("tpu")), T(0));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.status().message(), HasSubstr("no device of kind 'tpu' (known kinds: gpu)"));
  EXPECT_TRUE(s->CheckFeasible(Dev("tpu")).infeasible());
  EXPECT_TRUE(s->CheckFeasible(Dev("gpu")).placed());
}

TEST(SchedulerTest, InfeasibleCpuSlotsFailWithReason) {
  auto s = Make("interleaved");
  OneServer(*s, 4, /*shares=*/1);
  JobId a = *s->AddJob({"a"});
  auto st = s->Submit(Req(a, StageKind::kBuild, Cpu(6)), T(0));
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.status().message(), HasSubstr("needs 6 CPU slots but the largest host has 5"));
  // 4 host slots + 1 donated: a 5-slot stage fits while the device is idle.
  EXPECT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(5)), T(0)).ok());
  // A measurement that needs 5 slots on top of the device's own shared slot never fits.
  auto m = s->Submit(Req(a, StageKind::kMeasure, Dev("gpu", 5)), T(0));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  auto none = s->Submit(Req(a, StageKind::kOther, Cpu(0)), T(0));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, NamedDevice) {
  auto s = Make("interleaved");
  ASSERT_TRUE(s->AddHost({"h", 2}).ok());
  ASSERT_TRUE(s->AddDevice({"g0", "gpu", 0}).ok());
  ASSERT_TRUE(s->AddDevice({"g1", "gpu", 0}).ok());
  JobId a = *s->AddJob({"a"});
  ResourceNeed need{.device = 1};
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kMeasure, need), T(0)).ok());
  auto g = s->Advance(T(0));
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].device, 1);
  auto bad = s->Submit(Req(a, StageKind::kMeasure, ResourceNeed{.device = 7}), T(0));
  EXPECT_THAT(bad.status().message(), HasSubstr("no device with id 7"));
}

TEST(SchedulerTest, DependenciesHoldUntilCompletion) {
  auto s = Make("interleaved");
  OneServer(*s, 4);
  JobId a = *s->AddJob({"a"});
  StageId build = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0));
  StageId measure = *s->Submit(Req(a, StageKind::kMeasure, Dev("gpu"), {build}), T(0));
  auto g = s->Advance(T(0));
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].stage, build);
  EXPECT_TRUE(s->Advance(T(1)).empty());
  ASSERT_TRUE(s->Complete(g[0].lease, T(3)).ok());
  auto g2 = s->Advance(T(3));
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, measure);
  EXPECT_EQ(g2[0].ready, T(3));
  EXPECT_EQ(g2[0].submitted, T(0));

  auto unknown = s->Submit(Req(a, StageKind::kUpdate, Cpu(1), {999}), T(3));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown dependency stage 999"));
  // A dependency that already completed is satisfied at once.
  StageId after_done = *s->Submit(Req(a, StageKind::kUpdate, Cpu(1), {build}), T(3));
  auto g3 = s->Advance(T(3));
  ASSERT_EQ(g3.size(), 1u);
  EXPECT_EQ(g3[0].stage, after_done);
}

TEST(SchedulerTest, LeaseDeadlineFromEstimateOrDefault) {
  SchedulerOptions o;
  o.lease_factor = 2.0;
  o.default_lease = absl::Minutes(10);
  o.min_lease = absl::Seconds(5);
  auto s = Make("interleaved", o);
  OneServer(*s, 4);
  JobId a = *s->AddJob({"a"});
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1), {}, absl::Seconds(30)), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0)).ok());
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1), {}, absl::Seconds(1)), T(0)).ok());
  auto g = s->Advance(T(10));
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[0].deadline, T(70));
  EXPECT_EQ(g[1].deadline, T(610));
  EXPECT_EQ(g[2].deadline, T(15));
}

TEST(SchedulerTest, ExpiredLeaseIsRequeuedThenFailsAfterMaxAttempts) {
  SchedulerOptions o;
  o.max_attempts = 2;
  o.lease_factor = 1.0;
  auto s = Make("interleaved", o);
  OneServer(*s, 1);
  JobId a = *s->AddJob({"a"});
  StageId m = *s->Submit(Req(a, StageKind::kMeasure, Dev("gpu"), {}, absl::Seconds(10)), T(0));
  StageId upd = *s->Submit(Req(a, StageKind::kUpdate, Cpu(1), {m}), T(0));
  auto g = s->Advance(T(0));
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].attempt, 1);
  EXPECT_TRUE(s->Advance(T(9)).empty());
  auto g2 = s->Advance(T(10));  // expires and is granted again in the same pass
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, m);
  EXPECT_EQ(g2[0].attempt, 2);
  auto ev = s->TakeEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, StageEvent::Type::kRequeued);
  EXPECT_EQ(ev[0].lease, g[0].lease);
  EXPECT_THAT(ev[0].reason, HasSubstr("expired"));
  // The late worker reports: its lease is gone.
  auto late = s->Complete(g[0].lease, T(11));
  EXPECT_EQ(late.code(), absl::StatusCode::kNotFound);

  EXPECT_TRUE(s->Advance(T(20)).empty());
  ev = s->TakeEvents();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, StageEvent::Type::kFailed);
  EXPECT_EQ(ev[0].stage, m);
  EXPECT_THAT(ev[0].reason, HasSubstr("gave up after 2 tries"));
  EXPECT_EQ(ev[1].type, StageEvent::Type::kFailed);
  EXPECT_EQ(ev[1].stage, upd);
  EXPECT_THAT(ev[1].reason, HasSubstr("dependency stage"));
  EXPECT_EQ(s->DeviceLeases(0), 0);
  EXPECT_EQ(s->stats().expirations, 2);
  auto dep_on_failed = s->Submit(Req(a, StageKind::kUpdate, Cpu(1), {m}), T(20));
  EXPECT_EQ(dep_on_failed.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SchedulerTest, FailRequeuesWithBoundedRetries) {
  SchedulerOptions o;
  o.max_attempts = 3;
  auto s = Make("interleaved", o);
  OneServer(*s, 1);
  JobId a = *s->AddJob({"a"});
  StageId b = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0));
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto g = s->Advance(T(attempt));
    ASSERT_EQ(g.size(), 1u);
    EXPECT_EQ(g[0].stage, b);
    EXPECT_EQ(g[0].attempt, attempt);
    ASSERT_TRUE(s->Fail(g[0].lease, T(attempt), "worker lost").ok());
  }
  EXPECT_TRUE(s->Advance(T(5)).empty());
  auto ev = s->TakeEvents();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].type, StageEvent::Type::kRequeued);
  EXPECT_EQ(ev[1].type, StageEvent::Type::kRequeued);
  EXPECT_EQ(ev[2].type, StageEvent::Type::kFailed);
  EXPECT_THAT(ev[2].reason, HasSubstr("worker lost (gave up after 3 tries)"));
  EXPECT_EQ(s->FreeCpuSlots(0), 1);
  EXPECT_EQ(s->Fail(12345, T(5), "x").code(), absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, CancelRevokesLeasesAndDropsQueuedStages) {
  auto s = Make("interleaved");
  OneServer(*s, 2);
  JobId a = *s->AddJob({"a"});
  JobId b = *s->AddJob({"b"});
  StageId m = *s->Submit(Req(a, StageKind::kMeasure, Dev("gpu")), T(0));
  StageId u = *s->Submit(Req(a, StageKind::kUpdate, Cpu(1), {m}), T(0));
  StageId bm = *s->Submit(Req(b, StageKind::kMeasure, Dev("gpu")), T(0));
  auto g = s->Advance(T(0));
  ASSERT_EQ(g.size(), 1u);
  ASSERT_EQ(g[0].stage, m);
  ASSERT_TRUE(s->CancelJob(a, T(1)).ok());
  auto ev = s->TakeEvents();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, StageEvent::Type::kCancelled);
  EXPECT_EQ(ev[0].lease, g[0].lease);
  EXPECT_EQ(ev[1].stage, u);
  EXPECT_EQ(s->Complete(g[0].lease, T(2)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(2)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(s->CancelJob(a, T(2)).code(), absl::StatusCode::kNotFound);
  auto g2 = s->Advance(T(2));
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, bm);
  EXPECT_FALSE(s->HasJob(a));
}

TEST(SchedulerTest, HigherPriorityFirstThenFifo) {
  auto s = Make("interleaved");
  OneServer(*s, 1);
  JobId low = *s->AddJob({"low", "u", 0});
  JobId high = *s->AddJob({"high", "u", 5});
  StageId l1 = *s->Submit(Req(low, StageKind::kMeasure, Dev("gpu")), T(0));
  StageId l2 = *s->Submit(Req(low, StageKind::kMeasure, Dev("gpu")), T(0));
  StageId h1 = *s->Submit(Req(high, StageKind::kMeasure, Dev("gpu")), T(1));
  std::vector<StageId> order;
  for (int i = 0; i < 3; ++i) {
    auto g = s->Advance(T(2 + i));
    ASSERT_EQ(g.size(), 1u);
    order.push_back(g[0].stage);
    ASSERT_TRUE(s->Complete(g[0].lease, T(2 + i)).ok());
  }
  EXPECT_EQ(order, (std::vector<StageId>{h1, l1, l2}));
}

TEST(SchedulerTest, DeviceDonatesCpuSlotsOnlyWhileIdle) {
  // Host core 0 is a general slot; core 1 is the measurement device and lends its slot.
  auto s = Make("interleaved");
  OneServer(*s, 1, /*shares=*/1);
  EXPECT_EQ(s->FreeCpuSlots(0), 2);
  JobId a = *s->AddJob({"a"});
  JobId b = *s->AddJob({"b"});
  StageId b1 = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0));
  StageId b2 = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0));
  auto g = s->Advance(T(0));
  ASSERT_EQ(g.size(), 2u);  // both cores build while nothing measures
  // A measurement must wait until the donated core is released...
  StageId m = *s->Submit(Req(b, StageKind::kMeasure, Dev("gpu")), T(1));
  EXPECT_TRUE(s->Advance(T(1)).empty());
  ASSERT_TRUE(s->Complete(g[0].lease, T(2)).ok());
  // ...and once it has it, a new build may take only the general core.
  StageId b3 = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(2));
  StageId b4 = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(2));
  auto g2 = s->Advance(T(2));
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, m);
  ASSERT_TRUE(s->Complete(g[1].lease, T(3)).ok());
  auto g3 = s->Advance(T(3));
  ASSERT_EQ(g3.size(), 1u);
  EXPECT_EQ(g3[0].stage, b3);
  EXPECT_EQ(s->FreeCpuSlots(0), 0);
  ASSERT_TRUE(s->Complete(g2[0].lease, T(4)).ok());
  auto g4 = s->Advance(T(4));
  ASSERT_EQ(g4.size(), 1u);
  EXPECT_EQ(g4[0].stage, b4);
  (void)b1;
  (void)b2;
}

TEST(SchedulerTest, WideCpuStageIsNotStarvedByNarrowOnes) {
  auto s = Make("interleaved");
  ASSERT_TRUE(s->AddHost({"h", 2}).ok());
  JobId a = *s->AddJob({"a"});
  auto g = [&] {
    EXPECT_TRUE(s->Submit(Req(a, StageKind::kUpdate, Cpu(1)), T(0)).ok());
    return s->Advance(T(0));
  }();
  ASSERT_EQ(g.size(), 1u);
  StageId wide = *s->Submit(Req(a, StageKind::kBuild, Cpu(2)), T(0));
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kUpdate, Cpu(1)), T(0)).ok());
  // One slot is free, but the earlier 2-slot stage holds a reservation on it.
  EXPECT_TRUE(s->Advance(T(1)).empty());
  ASSERT_TRUE(s->Complete(g[0].lease, T(2)).ok());
  auto g2 = s->Advance(T(2));
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, wide);
}

TEST(SchedulerTest, SequentialRunsOneJobUntilItIsClosedAndDrained) {
  auto s = Make("sequential");
  OneServer(*s, 4);
  JobId a = *s->AddJob({"a", "u", 0, T(0)});
  JobId b = *s->AddJob({"b", "u", 0, T(1)});
  StageId a1 = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0));
  StageId b1 = *s->Submit(Req(b, StageKind::kBuild, Cpu(1)), T(1));
  auto g = s->Advance(T(1));
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].stage, a1);
  ASSERT_TRUE(s->Complete(g[0].lease, T(2)).ok());
  EXPECT_TRUE(s->Advance(T(2)).empty());  // job a is still open
  ASSERT_TRUE(s->CloseJob(a).ok());
  EXPECT_FALSE(s->HasJob(a));
  auto g2 = s->Advance(T(3));
  ASSERT_EQ(g2.size(), 1u);
  EXPECT_EQ(g2[0].stage, b1);
  EXPECT_EQ(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(3)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, ClosedJobRejectsNewStages) {
  auto s = Make("interleaved");
  OneServer(*s, 1);
  JobId a = *s->AddJob({"a"});
  ASSERT_TRUE(s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0)).ok());
  ASSERT_TRUE(s->CloseJob(a).ok());
  auto st = s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(0));
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.status().message(), HasSubstr("closed"));
}

TEST(SchedulerTest, PredictiveFeedsTheDeviceFirst) {
  // Job a learned that its CPU work before the device is short; job b's is long. With one
  // slot free, predictive runs a's build first; interleaved would run b's (submitted first).
  auto s = Make("predictive");
  OneServer(*s, 1);
  JobId a = *s->AddJob({"a"});
  JobId b = *s->AddJob({"b"});
  auto run = [&](JobId j, StageKind k, ResourceNeed need, double start, double dur) {
    ASSERT_TRUE(s->Submit(Req(j, k, need), T(start)).ok());
    auto g = s->Advance(T(start));
    ASSERT_EQ(g.size(), 1u);
    ASSERT_TRUE(s->Complete(g[0].lease, T(start + dur)).ok());
  };
  run(a, StageKind::kBuild, Cpu(1), 0, 1);
  run(b, StageKind::kBuild, Cpu(1), 1, 50);
  StageId sb = *s->Submit(Req(b, StageKind::kBuild, Cpu(1)), T(60));
  StageId sa = *s->Submit(Req(a, StageKind::kBuild, Cpu(1)), T(60));
  auto g = s->Advance(T(60));
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].stage, sa);
  (void)sb;
}

TEST(SchedulerTest, OfflineHostGetsNoGrantsUntilBackOnline) {
  for (std::string_view policy : {"interleaved", "uncontrolled"}) {
    auto s = Make(policy);
    ASSERT_TRUE(s->AddHost({"a", 2}).ok());
    ASSERT_TRUE(s->AddDevice({"a/dev", "gpu", 0, 0}).ok());
    ASSERT_TRUE(s->AddHost({"b", 2}).ok());
    JobId job = *s->AddJob({"j"});
    ASSERT_TRUE(s->SetHostOnline(0, false).ok());
    ASSERT_TRUE(s->Submit(Req(job, StageKind::kBuild, Cpu(2)), T(0)).ok());
    ASSERT_TRUE(s->Submit(Req(job, StageKind::kMeasure, Dev("gpu")), T(0)).ok());
    std::vector<Grant> g = s->Advance(T(0));
    ASSERT_EQ(g.size(), 1u) << policy;
    EXPECT_EQ(g[0].host, 1) << policy;  // the build went to the online host; the device waits
    EXPECT_TRUE(s->Advance(T(1)).empty()) << policy;
    ASSERT_TRUE(s->SetHostOnline(0, true).ok());
    g = s->Advance(T(2));
    ASSERT_EQ(g.size(), 1u) << policy;
    EXPECT_EQ(g[0].device, 0) << policy;
  }
  auto s = Make("interleaved");
  EXPECT_EQ(s->SetHostOnline(3, false).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loom::sched
