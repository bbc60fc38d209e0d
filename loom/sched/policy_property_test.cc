// Property tests: random clusters and random DAG workloads, driven to completion under every
// policy with many seeds, checking the scheduler's invariants after every decision.
#include <map>
#include <memory>
#include <queue>
#include <tuple>

#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/sched/policy.h"
#include "loom/sched/scheduler.h"

namespace loom::sched {
namespace {

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

struct PlannedStage {
  JobId job;
  StageKind kind;
  ResourceNeed need;
  std::vector<int> after;  // indices into the plan
  double duration;
  bool fails_first_try;
};

struct Workload {
  std::vector<HostSpec> hosts;
  std::vector<DeviceSpec> devices;
  int jobs = 0;
  std::vector<int> priorities;
  std::vector<PlannedStage> stages;
};

Workload RandomWorkload(uint64_t seed, bool with_failures) {
  base::Rng rng(seed);
  Workload w;
  int hosts = rng.UniformInt(1, 3);
  for (int h = 0; h < hosts; ++h) {
    w.hosts.push_back({"h" + std::to_string(h), static_cast<int>(rng.UniformInt(1, 6))});
    int devs = rng.UniformInt(0, 2);
    for (int d = 0; d < devs; ++d) {
      w.devices.push_back({"d" + std::to_string(w.devices.size()),
                           rng.Bernoulli(0.7) ? "gpu" : "cpu", h,
                           static_cast<int>(rng.UniformInt(0, 1))});
    }
  }
  if (w.devices.empty()) w.devices.push_back({"d0", "gpu", 0, 0});
  w.jobs = rng.UniformInt(1, 6);
  for (int j = 0; j < w.jobs; ++j) w.priorities.push_back(rng.UniformInt(0, 2));
  int n = rng.UniformInt(5, 60);
  for (int i = 0; i < n; ++i) {
    PlannedStage s;
    s.job = rng.UniformInt(1, w.jobs);
    s.duration = rng.Uniform(0.5, 10.0);
    s.fails_first_try = with_failures && rng.Bernoulli(0.15);
    if (rng.Bernoulli(0.4)) {
      const DeviceSpec& d = w.devices[rng.UniformInt(0, w.devices.size() - 1)];
      s.kind = StageKind::kMeasure;
      s.need.device_kind = d.kind;
      s.need.cpu_slots = rng.Bernoulli(0.3) ? 1 : 0;
      if (rng.Bernoulli(0.2)) s.need.device = &d - w.devices.data();
    } else {
      s.kind = rng.Bernoulli(0.5) ? StageKind::kBuild : StageKind::kUpdate;
      s.need.cpu_slots = rng.UniformInt(1, 3);
    }
    // Earlier stages of the same job, as dependencies.
    for (int k = 0; k < i; ++k) {
      if (w.stages[k].job == s.job && rng.Bernoulli(0.3)) s.after.push_back(k);
    }
    w.stages.push_back(std::move(s));
  }
  return w;
}

struct RunResult {
  std::vector<std::tuple<StageId, LeaseId, HostId, DeviceId, double>> grants;
  int completed = 0;
  int failed = 0;
  int infeasible = 0;
  int submitted = 0;
  int max_device_sharing = 0;  // most leases one device held at once
};

// Drives the scheduler with a simple event loop and checks invariants after every Advance.
RunResult Drive(std::string_view policy_name, const Workload& w) {
  auto policy = MakePolicy(policy_name);
  EXPECT_TRUE(policy.ok());
  const bool exclusive = (*policy)->ExclusiveResources();
  SchedulerOptions options;
  options.max_attempts = 2;
  Scheduler s(std::move(*policy), options);
  for (const HostSpec& h : w.hosts) EXPECT_TRUE(s.AddHost(h).ok());
  for (const DeviceSpec& d : w.devices) EXPECT_TRUE(s.AddDevice(d).ok());
  std::vector<JobId> jobs;
  for (int j = 0; j < w.jobs; ++j) {
    jobs.push_back(*s.AddJob({"j" + std::to_string(j), "u", w.priorities[j], T(0)}));
  }
  RunResult r;
  std::vector<StageId> ids(w.stages.size(), 0);
  std::map<StageId, int> plan_of;
  std::set<StageId> done;
  for (size_t i = 0; i < w.stages.size(); ++i) {
    const PlannedStage& p = w.stages[i];
    std::vector<StageId> after;
    bool dep_missing = false;
    for (int k : p.after) {
      if (ids[k] == 0) dep_missing = true;
      after.push_back(ids[k]);
    }
    if (dep_missing) continue;  // its dependency was infeasible
    auto id = s.Submit(StageRequest{jobs[p.job - 1], p.kind, p.need, std::nullopt, after}, T(0));
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kFailedPrecondition) << id.status();
      ++r.infeasible;
      continue;
    }
    ids[i] = *id;
    plan_of[*id] = i;
    ++r.submitted;
  }
  for (JobId j : jobs) EXPECT_TRUE(s.CloseJob(j).ok());

  // Running leases by end time.
  using Running = std::tuple<double, LeaseId, StageId, bool>;
  std::priority_queue<Running, std::vector<Running>, std::greater<>> running;
  std::map<StageId, int> tries;
  std::map<LeaseId, Grant> live;
  double now = 0;
  for (int step = 0; step < 100000; ++step) {
    for (const Grant& g : s.Advance(T(now))) {
      int i = plan_of.at(g.stage);
      const PlannedStage& p = w.stages[i];
      for (int k : p.after) EXPECT_TRUE(done.contains(ids[k])) << "dependency not done";
      EXPECT_GE(now, 0);
      bool fail = p.fails_first_try && tries[g.stage]++ == 0;
      running.push({now + p.duration, g.lease, g.stage, fail});
      live[g.lease] = g;
      r.grants.push_back({g.stage, g.lease, g.host, g.device, now});
    }
    // Invariants over the live leases.
    std::map<DeviceId, int> per_device;
    std::map<HostId, int> per_host;
    for (const auto& [l, g] : live) {
      per_host[g.host] += g.cpu_slots;
      if (g.device != kNoDevice) {
        ++per_device[g.device];
        per_host[g.host] += w.devices[g.device].shares_cpu_slots;
      }
    }
    for (const auto& [d, n] : per_device) r.max_device_sharing = std::max(r.max_device_sharing, n);
    if (exclusive) {
      for (const auto& [d, n] : per_device) EXPECT_LE(n, 1) << "device " << d << " shared";
      for (const auto& [h, used] : per_host) {
        int cap = w.hosts[h].cpu_slots;
        for (const DeviceSpec& d : w.devices) {
          if (d.host == h) cap += d.shares_cpu_slots;
        }
        EXPECT_LE(used, cap) << "host " << h << " over capacity";
      }
    }
    if (running.empty()) break;
    auto [end, lease, stage, fail] = running.top();
    running.pop();
    now = end;
    live.erase(lease);
    if (fail) {
      EXPECT_TRUE(s.Fail(lease, T(now), "injected").ok());
    } else {
      EXPECT_TRUE(s.Complete(lease, T(now)).ok());
      done.insert(stage);
      ++r.completed;
    }
  }
  for (const StageEvent& e : s.TakeEvents()) {
    if (e.type == StageEvent::Type::kFailed) ++r.failed;
  }
  EXPECT_EQ(s.num_live_stages(), 0u) << policy_name << ": stages left waiting forever";
  EXPECT_EQ(s.num_jobs(), 0u);
  return r;
}

class PolicyPropertyTest : public ::testing::TestWithParam<std::string_view> {};

TEST_P(PolicyPropertyTest, InvariantsAndNoStarvationOverRandomWorkloads) {
  for (uint64_t seed = 1; seed <= 150; ++seed) {
    SCOPED_TRACE(seed);
    Workload w = RandomWorkload(seed, /*with_failures=*/false);
    RunResult r = Drive(GetParam(), w);
    EXPECT_EQ(r.completed, r.submitted) << "every feasible stage is granted and completes";
    EXPECT_EQ(r.failed, 0);
    if (::testing::Test::HasFailure()) break;
  }
}

TEST(PolicyPropertyCheckTest, TheCheckerSeesSharingUnderUncontrolledOnly) {
  int shared_runs = 0, submitted = 0;
  for (uint64_t seed = 1; seed <= 150; ++seed) {
    Workload w = RandomWorkload(seed, false);
    RunResult u = Drive("uncontrolled", w);
    shared_runs += u.max_device_sharing > 1;
    submitted += u.submitted;
    EXPECT_LE(Drive("interleaved", w).max_device_sharing, 1);
  }
  EXPECT_GT(shared_runs, 50);
  EXPECT_GT(submitted, 2000);
}

TEST_P(PolicyPropertyTest, FailuresAreRetriedOnce) {
  for (uint64_t seed = 1000; seed <= 1100; ++seed) {
    SCOPED_TRACE(seed);
    Workload w = RandomWorkload(seed, /*with_failures=*/true);
    RunResult r = Drive(GetParam(), w);
    // Each injected failure hits the first try only, and two tries are allowed.
    EXPECT_EQ(r.completed, r.submitted);
    if (::testing::Test::HasFailure()) break;
  }
}

TEST_P(PolicyPropertyTest, IdenticalSeedsGiveIdenticalSchedules) {
  for (uint64_t seed = 7; seed <= 40; ++seed) {
    Workload w = RandomWorkload(seed, true);
    EXPECT_EQ(Drive(GetParam(), w).grants, Drive(GetParam(), w).grants) << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, PolicyPropertyTest,
                         ::testing::Values("sequential", "uncontrolled", "interleaved",
                                           "predictive"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace loom::sched
