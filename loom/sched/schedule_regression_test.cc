// Schedule regression: seeded workloads driven through every policy, with the full sequence of
// grants, events and API answers reduced to a 64-bit hash. The expected hashes were recorded from
// the scheduler before its data-structure rewrite (hash maps and red-black trees replaced by
// slot-indexed storage and heaps), so any change in what is decided, where or when fails here.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <ostream>
#include <queue>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/sched/policy.h"
#include "loom/sched/scheduler.h"

namespace loom::sched {
namespace {

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

// FNV-1a over a text transcript; the transcript is also kept for a readable diff on failure.
class Transcript {
 public:
  void Line(const std::string& line) {
    for (unsigned char c : line) Mix(c);
    Mix('\n');
    ++lines_;
    absl::StrAppend(&text_, line, "\n");
  }
  uint64_t hash() const { return hash_; }
  int64_t lines() const { return lines_; }
  const std::string& text() const { return text_; }
  std::string head() const { return text_.substr(0, 3000); }

 private:
  void Mix(unsigned char c) {
    hash_ ^= c;
    hash_ *= 0x100000001b3ULL;
  }
  uint64_t hash_ = 0xcbf29ce484222325ULL;
  int64_t lines_ = 0;
  std::string text_;
};

int64_t Ns(absl::Time t) { return t == absl::InfiniteFuture() ? INT64_MAX : absl::ToUnixNanos(t); }

void Record(Transcript& tr, const Grant& g) {
  tr.Line(absl::StrCat("G lease=", g.lease, " stage=", g.stage, " job=", g.job,
                       " kind=", static_cast<int>(g.kind), " host=", g.host, " dev=", g.device,
                       " slots=", g.cpu_slots, " try=", g.attempt, " sub=", Ns(g.submitted),
                       " ready=", Ns(g.ready), " start=", Ns(g.start), " dl=", Ns(g.deadline)));
}

void Record(Transcript& tr, const StageEvent& e) {
  tr.Line(absl::StrCat("E ", std::string(StageEventTypeName(e.type)), " stage=", e.stage,
                       " job=", e.job, " lease=", e.lease, " t=", Ns(e.time), " ", e.reason));
}

void Record(Transcript& tr, const std::string& what, const absl::Status& st) {
  tr.Line(absl::StrCat("S ", what, " ", static_cast<int>(st.code()), " ", st.message()));
}

void RecordStats(Transcript& tr, const Scheduler& s) {
  const SchedulerStats& st = s.stats();
  tr.Line(absl::StrCat("STATS grants=", st.grants, " attempts=", st.placement_attempts,
                       " requeues=", st.requeues, " exp=", st.expirations, " fail=", st.failures,
                       " live=", s.num_live_stages(), " ready=", s.num_ready(),
                       " running=", s.num_running(), " jobs=", s.num_jobs()));
}

// A random cluster and a random workload over time: stages with dependencies (some across a
// failing stage), estimates that make some leases expire, injected failures and job
// cancellations.
struct PlannedStage {
  int job;  // index
  double submit;
  StageKind kind;
  ResourceNeed need;
  std::vector<int> after;
  std::optional<absl::Duration> estimate;
  double duration;
  bool fails_first_try;
};

struct Workload {
  std::vector<HostSpec> hosts;
  std::vector<DeviceSpec> devices;
  std::vector<JobSpec> jobs;
  std::vector<double> cancel_at;  // < 0: never
  std::vector<PlannedStage> stages;
};

// `big`: many jobs and stages, frequent cancellations (long ready queues with cancelled entries).
Workload RandomWorkload(uint64_t seed, bool big = false) {
  base::Rng rng(seed);
  Workload w;
  int hosts = rng.UniformInt(1, 4);
  for (int h = 0; h < hosts; ++h) {
    w.hosts.push_back({"h" + std::to_string(h), static_cast<int>(rng.UniformInt(1, 8))});
    int devs = rng.UniformInt(0, 3);
    for (int d = 0; d < devs; ++d) {
      w.devices.push_back({"d" + std::to_string(w.devices.size()),
                           rng.Bernoulli(0.7) ? "gpu" : "cpu", h,
                           static_cast<int>(rng.UniformInt(0, 1))});
    }
  }
  if (w.devices.empty()) w.devices.push_back({"d0", "gpu", 0, 0});
  int jobs = big ? rng.UniformInt(10, 40) : rng.UniformInt(1, 8);
  for (int j = 0; j < jobs; ++j) {
    w.jobs.push_back({"j" + std::to_string(j), "u", static_cast<int>(rng.UniformInt(0, 2)),
                      T(rng.Uniform(0, 5))});
    w.cancel_at.push_back(rng.Bernoulli(big ? 0.7 : 0.15) ? rng.Uniform(0, 40) : -1);
  }
  int n = big ? rng.UniformInt(400, 800) : rng.UniformInt(10, 120);
  double t = 0;
  for (int i = 0; i < n; ++i) {
    PlannedStage s;
    s.job = rng.UniformInt(0, jobs - 1);
    if (rng.Bernoulli(0.3)) t += rng.Uniform(0, big ? 0.2 : 3);
    s.submit = t;
    s.duration = rng.Uniform(0.5, 10.0);
    s.fails_first_try = rng.Bernoulli(0.1);
    if (rng.Bernoulli(0.25)) s.estimate = absl::Seconds(s.duration * rng.Uniform(0.3, 1.5));
    double r = rng.Uniform();
    if (r < 0.4) {
      const DeviceSpec& d = w.devices[rng.UniformInt(0, w.devices.size() - 1)];
      s.kind = StageKind::kMeasure;
      s.need.device_kind = rng.Bernoulli(0.05) ? "tpu" : d.kind;  // sometimes infeasible
      s.need.cpu_slots = rng.Bernoulli(0.3) ? 1 : 0;
      if (rng.Bernoulli(0.2)) s.need.device = &d - w.devices.data();
    } else {
      s.kind = static_cast<StageKind>(rng.UniformInt(0, kNumStageKinds - 1));
      s.need.cpu_slots = rng.UniformInt(rng.Bernoulli(0.03) ? 0 : 1, rng.Bernoulli(0.05) ? 12 : 3);
    }
    for (int k = 0; k < i; ++k) {
      if (w.stages[k].job == s.job && rng.Bernoulli(big ? 0.02 : 0.3)) s.after.push_back(k);
    }
    w.stages.push_back(std::move(s));
  }
  return w;
}

// Drives the workload in virtual time and records everything the scheduler says.
uint64_t RunRandom(std::string_view policy_name, const Workload& w, Transcript& tr) {
  auto policy = MakePolicy(policy_name);
  EXPECT_TRUE(policy.ok());
  SchedulerOptions options;
  options.max_attempts = 2;
  options.lease_factor = 1.0;
  options.min_lease = absl::Milliseconds(500);
  options.default_lease = absl::Seconds(60);
  Scheduler s(std::move(*policy), options);
  for (const HostSpec& h : w.hosts) EXPECT_TRUE(s.AddHost(h).ok());
  for (const DeviceSpec& d : w.devices) EXPECT_TRUE(s.AddDevice(d).ok());

  // Events: (time, type, seq, index). Types in processing order at equal times.
  enum Type { kJob = 0, kSubmit = 1, kCancel = 2, kEnd = 3, kWake = 4 };
  using Ev = std::tuple<double, int, int64_t, int64_t>;
  std::priority_queue<Ev, std::vector<Ev>, std::greater<>> events;
  int64_t seq = 0;
  std::vector<double> job_time(w.jobs.size());
  for (size_t j = 0; j < w.jobs.size(); ++j) {
    job_time[j] = absl::ToDoubleSeconds(w.jobs[j].submit_time - absl::UnixEpoch());
    events.push({job_time[j], kJob, seq++, static_cast<int64_t>(j)});
    if (w.cancel_at[j] >= 0) {
      events.push({job_time[j] + w.cancel_at[j], kCancel, seq++, static_cast<int64_t>(j)});
    }
  }
  std::vector<int> last_stage_of_job(w.jobs.size(), -1);
  for (size_t i = 0; i < w.stages.size(); ++i) last_stage_of_job[w.stages[i].job] = i;
  for (size_t i = 0; i < w.stages.size(); ++i) {
    double at = std::max(w.stages[i].submit, job_time[w.stages[i].job]);
    events.push({at, kSubmit, seq++, static_cast<int64_t>(i)});
  }
  std::vector<JobId> job_ids(w.jobs.size(), 0);
  std::vector<StageId> ids(w.stages.size(), 0);
  std::map<StageId, int> plan_of;
  std::map<StageId, int> tries;
  std::map<LeaseId, bool> lease_fails;
  double now = 0;
  while (!events.empty()) {
    now = std::get<0>(events.top());
    while (!events.empty() && std::get<0>(events.top()) <= now) {
      auto [t, type, unused, idx] = events.top();
      events.pop();
      if (type == kJob) {
        auto id = s.AddJob(w.jobs[idx]);
        EXPECT_TRUE(id.ok());
        job_ids[idx] = *id;
        tr.Line(absl::StrCat("J ", idx, " -> ", *id));
        if (last_stage_of_job[idx] < 0) Record(tr, "close", s.CloseJob(*id));
      } else if (type == kSubmit) {
        const PlannedStage& p = w.stages[idx];
        StageRequest req{job_ids[p.job], p.kind, p.need, p.estimate, {}};
        for (int k : p.after) req.after.push_back(ids[k] != 0 ? ids[k] : 999999);
        auto id = s.Submit(req, T(now));
        if (id.ok()) {
          ids[idx] = *id;
          plan_of[*id] = idx;
          tr.Line(absl::StrCat("U ", idx, " -> ", *id, " ready=", s.num_ready()));
        } else {
          Record(tr, absl::StrCat("submit ", idx), id.status());
        }
        if (last_stage_of_job[p.job] == static_cast<int>(idx)) {
          Record(tr, "close", s.CloseJob(job_ids[p.job]));
        }
      } else if (type == kCancel) {
        Record(tr, absl::StrCat("cancel ", idx), s.CancelJob(job_ids[idx], T(now)));
      } else if (type == kEnd) {
        LeaseId lease = idx;
        if (lease_fails[lease]) {
          Record(tr, absl::StrCat("fail ", lease), s.Fail(lease, T(now), "injected"));
        } else {
          Record(tr, absl::StrCat("complete ", lease), s.Complete(lease, T(now)));
        }
      }
    }
    for (const StageEvent& e : s.TakeEvents()) Record(tr, e);
    for (const Grant& g : s.Advance(T(now))) {
      Record(tr, g);
      const PlannedStage& p = w.stages[plan_of.at(g.stage)];
      lease_fails[g.lease] = p.fails_first_try && tries[g.stage]++ == 0;
      events.push({now + p.duration, kEnd, seq++, g.lease});
      if (g.deadline != absl::InfiniteFuture()) {
        events.push({absl::ToDoubleSeconds(g.deadline - absl::UnixEpoch()), kWake, seq++, 0});
      }
    }
    for (const StageEvent& e : s.TakeEvents()) Record(tr, e);
    if (events.empty() && s.num_ready() > 0) {
      ADD_FAILURE() << policy_name << ": ready stages left with nothing to wait for";
      break;
    }
  }
  RecordStats(tr, s);
  return tr.hash();
}

// The benchmark's shape, scaled down: rounds of propose -> build -> measure -> update per job,
// each stage submitted when the previous one completes; or, with `chained`, every stage
// submitted up front behind the previous one.
uint64_t RunRounds(std::string_view policy_name, int jobs, bool chained, uint64_t seed,
                   Transcript& tr) {
  auto policy = MakePolicy(policy_name);
  EXPECT_TRUE(policy.ok());
  SchedulerOptions options;
  options.default_lease = absl::InfiniteDuration();
  Scheduler s(std::move(*policy), options);
  for (int h = 0; h < 6; ++h) {
    EXPECT_TRUE(s.AddHost({"h" + std::to_string(h), 8 + 4 * (h % 3)}).ok());
    for (int d = 0; d < 1 + h % 3; ++d) {
      EXPECT_TRUE(s.AddDevice({"g", d == 2 ? "cpu" : "gpu", h, d == 1 ? 1 : 0}).ok());
    }
  }
  constexpr int kStagesPerJob = 12;
  static constexpr StageKind kKinds[] = {StageKind::kPropose, StageKind::kBuild,
                                         StageKind::kMeasure, StageKind::kUpdate};
  static constexpr double kMean[] = {4, 12, 20, 6};
  base::Rng rng(seed);
  std::vector<int> next(jobs + 1, 0);
  std::vector<StageId> last(jobs + 1, 0);
  auto request = [&](JobId job) {
    int i = next[job]++;
    StageKind kind = kKinds[i % 4];
    ResourceNeed need;
    if (kind == StageKind::kMeasure) {
      need.device_kind = job % 5 == 0 ? "cpu" : "gpu";
    } else {
      need.cpu_slots = kind == StageKind::kBuild ? 4 : 1;
    }
    StageRequest req{job, kind, need, std::nullopt, {}};
    if (last[job] != 0) req.after.push_back(last[job]);
    return req;
  };
  auto submit = [&](JobId job, double now) {
    auto id = s.Submit(request(job), T(now));
    EXPECT_TRUE(id.ok()) << id.status();
    last[job] = *id;
  };
  for (int j = 0; j < jobs; ++j) {
    JobId id = *s.AddJob({"j", "u", j % 7 == 0 ? 1 : 0, T(j % 3)});
    submit(id, 0);
    if (chained) {
      while (next[id] < kStagesPerJob) submit(id, 0);
      EXPECT_TRUE(s.CloseJob(id).ok());
    }
  }
  using Ev = std::tuple<double, LeaseId, JobId>;
  std::priority_queue<Ev, std::vector<Ev>, std::greater<>> running;
  double now = 0;
  while (true) {
    for (const Grant& g : s.Advance(T(now))) {
      Record(tr, g);
      int kind = static_cast<int>(g.kind);
      double d = kMean[kind == 4 ? 0 : kind] * rng.Uniform(0.5, 1.5);
      running.push({now + d, g.lease, g.job});
    }
    if (running.empty()) break;
    now = std::get<0>(running.top());
    while (!running.empty() && std::get<0>(running.top()) <= now) {
      auto [t, lease, job] = running.top();
      running.pop();
      EXPECT_TRUE(s.Complete(lease, T(now)).ok());
      if (chained) continue;
      if (next[job] < kStagesPerJob) {
        submit(job, now);
      } else {
        EXPECT_TRUE(s.CloseJob(job).ok());
      }
    }
  }
  RecordStats(tr, s);
  EXPECT_EQ(s.num_jobs(), 0u);
  return tr.hash();
}

struct Expected {
  std::string_view policy;
  uint64_t random;   // RandomWorkload seeds 1..200, one transcript
  uint64_t rounds;   // RunRounds(200 jobs, seed 5)
  uint64_t chained;  // RunRounds(120 jobs, chained, seed 9)
  uint64_t big;      // RandomWorkload(big) seeds 1..12
};

// Recorded from the pre-rewrite scheduler (commit cd23b66's data structures).
constexpr Expected kExpected[] = {
    {"sequential", 8347171502177648514u, 10038551853515690218u, 7517273796240548078u,
     12681948324569147516u},
    {"uncontrolled", 18350398590029372732u, 16718647973878106037u, 4744628160777246575u,
     9259480914873061910u},
    {"interleaved", 5956369575234461308u, 400783012863311217u, 7242223915661414255u,
     10931370355977948726u},
    {"predictive", 14329927316473216191u, 12988060268965045597u, 9386848028475155642u,
     14323590628536569143u},
};

void PrintTo(const Expected& e, std::ostream* os) { *os << e.policy; }

// With LOOM_SCHEDULE_DUMP_DIR set, transcripts are written there (to diff two builds).
void MaybeDump(const std::string& name, const Transcript& tr) {
  const char* dir = std::getenv("LOOM_SCHEDULE_DUMP_DIR");
  if (dir == nullptr) return;
  std::ofstream(std::string(dir) + "/" + name + ".txt") << tr.text();
}

class ScheduleRegressionTest : public ::testing::TestWithParam<Expected> {};

TEST_P(ScheduleRegressionTest, RandomWorkloadsMatchRecordedSchedules) {
  const Expected& e = GetParam();
  Transcript tr;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    tr.Line(absl::StrCat("seed ", seed));
    RunRandom(e.policy, RandomWorkload(seed), tr);
  }
  EXPECT_GT(tr.lines(), 20000);
  MaybeDump(absl::StrCat("random_", std::string(e.policy)), tr);
  EXPECT_EQ(tr.hash(), e.random) << e.policy << " transcript starts:\n" << tr.head();
}

TEST_P(ScheduleRegressionTest, BigRandomWorkloadsMatchRecordedSchedules) {
  const Expected& e = GetParam();
  Transcript tr;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    tr.Line(absl::StrCat("seed ", seed));
    RunRandom(e.policy, RandomWorkload(seed, /*big=*/true), tr);
  }
  EXPECT_GT(tr.lines(), 10000);
  MaybeDump(absl::StrCat("big_", std::string(e.policy)), tr);
  EXPECT_EQ(tr.hash(), e.big) << e.policy << " transcript starts:\n" << tr.head();
}

TEST_P(ScheduleRegressionTest, RoundsMatchRecordedSchedules) {
  const Expected& e = GetParam();
  Transcript tr;
  RunRounds(e.policy, 200, /*chained=*/false, 5, tr);
  EXPECT_EQ(tr.lines(), 200 * 12 + 1);
  MaybeDump(absl::StrCat("rounds_", std::string(e.policy)), tr);
  EXPECT_EQ(tr.hash(), e.rounds) << e.policy << " transcript starts:\n" << tr.head();
}

TEST_P(ScheduleRegressionTest, ChainedRoundsMatchRecordedSchedules) {
  const Expected& e = GetParam();
  Transcript tr;
  RunRounds(e.policy, 120, /*chained=*/true, 9, tr);
  EXPECT_EQ(tr.lines(), 120 * 12 + 1);
  MaybeDump(absl::StrCat("chained_", std::string(e.policy)), tr);
  EXPECT_EQ(tr.hash(), e.chained) << e.policy << " transcript starts:\n" << tr.head();
}

TEST(ScheduleRegressionCheckTest, TheWorkloadsExerciseEveryPath) {
  // Expirations, requeues, permanent failures, cancellations and infeasible submissions all
  // occur, so the hashes above cover those paths.
  int expired = 0, requeued = 0, failed = 0, cancelled = 0, rejected = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    Transcript tr;
    RunRandom("interleaved", RandomWorkload(seed), tr);
    const std::string& h = tr.text();
    expired += h.find("expired") != std::string::npos;
    requeued += h.find("E requeued") != std::string::npos;
    failed += h.find("E failed") != std::string::npos;
    cancelled += h.find("E cancelled") != std::string::npos;
    rejected += h.find("S submit") != std::string::npos;
  }
  EXPECT_GT(expired, 5);
  EXPECT_GT(requeued, 5);
  EXPECT_GT(failed, 5);
  EXPECT_GT(cancelled, 3);
  EXPECT_GT(rejected, 3);
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, ScheduleRegressionTest, ::testing::ValuesIn(kExpected),
                         [](const auto& info) { return std::string(info.param.policy); });

}  // namespace
}  // namespace loom::sched
