#include "loom/service/job_driver.h"

#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/clock.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/sched/policy.h"
#include "loom/tune/stage_wire.h"
#include "loom/v1/stage_names.h"
#include "loom/v1/version.h"

namespace loom::service {
namespace {

using ::testing::HasSubstr;

const Principal kAlice{"alice", Role::kUser};
const Principal kBob{"bob", Role::kUser};
const Principal kAdmin{"root", Role::kAdmin};
// The scheduling tests run their agents as a daemon without tokens does (identified by the id in
// each request); the Credential* tests below give each agent its own token.
const Principal kAgent{.user = "agent", .role = Role::kAgent, .anonymous = true};

// Agent id -> RegisterResponse.session of the agents the current test registered without a
// credential: every call naming such an agent must show it. Cleared before each test.
std::map<std::string, std::string>& Secrets() {
  static auto* secrets = new std::map<std::string, std::string>();
  return *secrets;
}
std::string SecretOf(const std::string& agent) {
  auto it = Secrets().find(agent);
  return it == Secrets().end() ? std::string() : it->second;
}
// Keeps the registration's secret (Secrets()) and passes the response on.
absl::StatusOr<v1::RegisterResponse> Kept(absl::StatusOr<v1::RegisterResponse> r) {
  if (r.ok()) Secrets()[r->agent_id()] = r->session();
  return r;
}

v1::SubmitJobRequest Sim(int tasks, int rounds, double seconds = 0.01) {
  v1::SubmitJobRequest r;
  r.set_target("cpu");
  v1::SimulatedWorkload* w = r.mutable_simulated();
  w->set_tasks(tasks);
  w->set_rounds(rounds);
  w->set_propose_seconds(seconds);
  w->set_build_seconds(seconds);
  w->set_measure_seconds(seconds);
  w->set_update_seconds(seconds);
  return r;
}

v1::RegisterRequest AgentSpec(const std::string& host, int slots = 2) {
  v1::RegisterRequest r;
  r.set_version(v1::kLoomVersion);
  r.set_hostname(host);
  r.set_cpu_slots(slots);
  v1::DeviceInfo* d = r.add_devices();
  d->set_name("cpu:1");
  d->set_kind("cpu");
  d->set_isa("avx2");
  d->set_target_key("cpu:avx2:test");
  return r;
}

class DriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Secrets().clear();
    dir_ = std::filesystem::temp_directory_path() /
           ("loom_driver_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    driver_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(DriverOptions o = {}) {
    o.log_to_stderr = false;
    auto state = OpenSqliteStateStore((dir_ / "state.db").string());
    ASSERT_TRUE(state.ok()) << state.status();
    auto records = tune::OpenSqliteRecordStore((dir_ / "state.db.records").string());
    ASSERT_TRUE(records.ok()) << records.status();
    auto d = JobDriver::Create(o, *std::move(state), *std::move(records), &clock_);
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = *std::move(d);
  }

  // Runs every stage granted to `agent` (no sleeping: the clock is virtual), reporting success.
  // Returns the number of stages run.
  int Serve(const std::string& agent, int max_stages = 1000) {
    int n = 0;
    while (n < max_stages) {
      v1::AcquireStagesRequest a;
      a.set_agent_id(agent);
      a.set_session(SecretOf(agent));
      a.set_wait_ms(0);
      auto got = driver_->Acquire(kAgent, a);
      if (!got.ok() || got->stages().empty()) break;
      for (const v1::StageRequest& s : got->stages()) {
        EXPECT_EQ(s.kind(), v1::STAGE_KIND_SIMULATED);
        v1::ReportStageRequest r;
        r.set_agent_id(agent);
        r.set_session(SecretOf(agent));
        r.mutable_result()->set_lease_id(s.lease_id());
        auto rep = driver_->Report(kAgent, r);
        EXPECT_TRUE(rep.ok()) << rep.status();
        ++n;
        if (n >= max_stages) break;
      }
    }
    return n;
  }

  std::string RegisterAgent(const std::string& host) {
    auto r = Kept(driver_->Register(kAgent, AgentSpec(host)));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    return r->agent_id();
  }

  // Runs the agents' stages on the virtual clock until none is left: each granted stage takes its
  // simulated seconds, the one that ends first is reported first. Returns the time it took; counts
  // in `max_measuring` the most measure stages (those on a device) one agent ran at once.
  absl::Duration RunTimed(const std::vector<std::string>& agents, int* max_measuring = nullptr) {
    struct Running {
      absl::Time end;
      std::string agent;
      std::string lease;
      bool measure = false;
    };
    const absl::Time start = clock_.Now();
    std::vector<Running> running;
    for (int reports = 0; reports < 100000; ++reports) {
      for (const std::string& agent : agents) {
        v1::AcquireStagesRequest a;
        a.set_agent_id(agent);
        a.set_session(SecretOf(agent));
        a.set_wait_ms(0);
        auto got = driver_->Acquire(kAgent, a);
        EXPECT_TRUE(got.ok()) << got.status();
        if (!got.ok()) return absl::ZeroDuration();
        for (const v1::StageRequest& s : got->stages()) {
          running.push_back({.end = clock_.Now() + absl::Seconds(s.simulated().seconds()),
                             .agent = agent,
                             .lease = s.lease_id(),
                             .measure = !s.device().empty()});
        }
      }
      if (max_measuring != nullptr) {
        for (const std::string& agent : agents) {
          *max_measuring = std::max<int>(
              *max_measuring, std::count_if(running.begin(), running.end(), [&](const Running& r) {
                return r.agent == agent && r.measure;
              }));
        }
      }
      if (running.empty()) break;
      auto first =
          std::min_element(running.begin(), running.end(),
                           [](const Running& a, const Running& b) { return a.end < b.end; });
      const Running done = *first;
      running.erase(first);
      clock_.AdvanceTo(done.end);
      v1::ReportStageRequest r;
      r.set_agent_id(done.agent);
      r.set_session(SecretOf(done.agent));
      r.mutable_result()->set_lease_id(done.lease);
      auto rep = driver_->Report(kAgent, r);
      EXPECT_TRUE(rep.ok()) << rep.status();
    }
    return clock_.Now() - start;
  }

  std::filesystem::path dir_;
  base::VirtualClock clock_{absl::FromUnixSeconds(1'700'000'000)};
  std::unique_ptr<JobDriver> driver_;
  std::map<std::string, std::string>& sessions_ = Secrets();
};

TEST_F(DriverTest, SimulatedJobRunsEveryStageAndRecordsEachRound) {
  Open();
  auto job = driver_->Submit(kAlice, Sim(2, 3));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);
  EXPECT_THAT(job->tasks(0).stage(), HasSubstr("waiting for an agent with a cpu device"));
  const std::string agent = RegisterAgent("h1");
  EXPECT_EQ(Serve(agent), 2 * 3 * 4);  // tasks x rounds x stages
  auto done = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done->records(), 6);
  auto result = driver_->Result(kAlice, job->id());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(std::count(result->records_jsonl().begin(), result->records_jsonl().end(), '\n'), 6);
  auto logs = driver_->Logs(kAlice, job->id(), 0);
  ASSERT_TRUE(logs.ok());
  EXPECT_THAT(logs->back(), HasSubstr("succeeded"));
}

TEST_F(DriverTest, JobBudgetsEndTheJobBetweenRounds) {
  Open();
  const std::string agent = RegisterAgent("h1");
  // 3 tasks of 10 rounds; a simulated round counts as a batch (8) of trials: 40 trials = 5 rounds,
  // a warm-up round of each task first.
  v1::SubmitJobRequest trials = Sim(3, 10);
  trials.set_total_trials(40);
  auto job = driver_->Submit(kAlice, trials);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(Serve(agent), 5 * 4);
  auto done = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done->records(), 5);

  // A time budget of 5 s: two rounds, then the clock passes it while the third round is queued;
  // that round still runs (budget plus one round), and the job ends after it.
  v1::SubmitJobRequest timed = Sim(2, 100);
  timed.set_time_budget_seconds(5);
  job = driver_->Submit(kAlice, timed);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(Serve(agent, 8), 8);
  clock_.Advance(absl::Seconds(6));  // within the agents' heartbeat timeout
  EXPECT_EQ(Serve(agent), 4);
  done = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done->records(), 3);
}

// A job that spreads: rounds of up to `spread` of its tasks at once, on different devices, each
// device measuring one stage at a time. 8 tasks x 5 rounds, measure-heavy stages (the thesis's
// shape): on two devices the job takes at most 0.6 of its time on one.
TEST_F(DriverTest, AJobThatSpreadsTakesAtMostSixTenthsOfItsOneDeviceTimeOnTwoDevices) {
  v1::SubmitJobRequest spec = Sim(8, 5);
  spec.mutable_simulated()->set_propose_seconds(0.2);
  spec.mutable_simulated()->set_build_seconds(0.3);
  spec.mutable_simulated()->set_measure_seconds(0.6);
  spec.mutable_simulated()->set_update_seconds(0.1);
  spec.set_spread(4);
  std::vector<absl::Duration> makespan;
  for (int devices : {1, 2}) {
    TearDown();
    SetUp();
    Open();
    std::vector<std::string> agents;
    for (int i = 0; i < devices; ++i) agents.push_back(RegisterAgent(absl::StrCat("h", i)));
    auto job = driver_->Submit(kAlice, spec);
    ASSERT_TRUE(job.ok()) << job.status();
    int max_measuring = 0;
    makespan.push_back(RunTimed(agents, &max_measuring));
    EXPECT_EQ(max_measuring, 1) << devices << " devices";
    auto done = driver_->Get(kAlice, job->id());
    ASSERT_TRUE(done.ok());
    EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->failure_reason();
    EXPECT_EQ(done->records(), 8 * 5);  // every round of every task measured once
    for (const v1::TaskProgress& t : done->tasks()) EXPECT_EQ(t.trials_done(), 5);
  }
  std::printf("spread 4, 8 tasks x 5 rounds: makespan %.1f s on one device, %.1f s on two (%.2f)\n",
              absl::ToDoubleSeconds(makespan[0]), absl::ToDoubleSeconds(makespan[1]),
              absl::FDivDuration(makespan[1], makespan[0]));
  // One device measures 40 x 0.6 s = 24 s; two devices halve that.
  EXPECT_GE(makespan[0], absl::Seconds(24));
  EXPECT_LE(absl::FDivDuration(makespan[1], makespan[0]), 0.6)
      << "one device " << makespan[0] << ", two " << makespan[1];
  // Without spreading, a second device does not help: one round at a time.
  spec.set_spread(1);
  TearDown();
  SetUp();
  Open();
  std::vector<std::string> two = {RegisterAgent("h0"), RegisterAgent("h1")};
  ASSERT_TRUE(driver_->Submit(kAlice, spec).ok());
  EXPECT_GE(RunTimed(two), absl::Seconds(8 * 5 * 1.2));
}

// Spreading keeps the budget exact (rounds in flight count as spent) and survives a restart
// with several rounds in flight: every round is measured once.
TEST_F(DriverTest, ASpreadJobKeepsItsBudgetAndResumesExactly) {
  Open();
  std::vector<std::string> agents = {RegisterAgent("h0"), RegisterAgent("h1")};
  v1::SubmitJobRequest budgeted = Sim(3, 10);
  budgeted.set_total_trials(40);  // 5 rounds of a batch (8) each
  budgeted.set_spread(3);
  auto job = driver_->Submit(kAlice, budgeted);
  ASSERT_TRUE(job.ok()) << job.status();
  RunTimed(agents);
  auto done = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->failure_reason();
  EXPECT_EQ(done->records(), 5);

  // Three tasks in flight when the daemon goes away.
  v1::SubmitJobRequest spread = Sim(4, 3);
  spread.set_spread(3);
  job = driver_->Submit(kAlice, spread);
  ASSERT_TRUE(job.ok()) << job.status();
  // Takes every stage granted now; returns (agent, lease) of each.
  auto take = [&]() {
    std::vector<std::pair<std::string, std::string>> held;
    for (const std::string& agent : agents) {
      v1::AcquireStagesRequest a;
      a.set_agent_id(agent);
      a.set_session(SecretOf(agent));
      auto got = driver_->Acquire(kAgent, a);
      EXPECT_TRUE(got.ok()) << got.status();
      if (got.ok()) {
        for (const v1::StageRequest& st : got->stages()) held.emplace_back(agent, st.lease_id());
      }
    }
    return held;
  };
  auto held = take();
  EXPECT_EQ(held.size(), 3u);
  auto running = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(running.ok());
  EXPECT_THAT(running->tasks(2).stage(), HasSubstr("propose (running on h"));
  EXPECT_EQ(running->tasks(3).stage(), "pending");
  for (const auto& [agent, lease] : held) {
    v1::ReportStageRequest r;
    r.set_agent_id(agent);
    r.set_session(SecretOf(agent));
    r.mutable_result()->set_lease_id(lease);
    ASSERT_TRUE(driver_->Report(kAgent, r).ok());
  }
  EXPECT_EQ(take().size(), 3u);  // the three builds, out when the daemon goes away
  driver_.reset();
  Open();
  agents = {RegisterAgent("h0"), RegisterAgent("h1")};
  RunTimed(agents);
  done = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->failure_reason();
  EXPECT_EQ(done->records(), 4 * 3);
  auto result = driver_->Result(kAlice, job->id());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(std::count(result->records_jsonl().begin(), result->records_jsonl().end(), '\n'), 12);
}

TEST_F(DriverTest, UsersSeeOnlyTheirJobsAdminSeesAll) {
  Open();
  auto job = driver_->Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(driver_->Get(kBob, job->id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->Cancel(kBob, job->id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->Get(kAgent, job->id()).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(driver_->Get(kAdmin, job->id()).ok());
  v1::ListJobsRequest all;
  all.set_all_users(true);
  EXPECT_EQ(driver_->List(kBob, all).status().code(), absl::StatusCode::kPermissionDenied);
  auto listed = driver_->List(kAdmin, all);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->jobs_size(), 1);
  auto bobs = driver_->List(kBob, {});
  ASSERT_TRUE(bobs.ok());
  EXPECT_EQ(bobs->jobs_size(), 0);
  EXPECT_EQ(driver_->Get(kAlice, "j999").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->Get(kAlice, "nonsense").status().code(), absl::StatusCode::kNotFound);
  auto cancelled = driver_->Cancel(kAlice, job->id());
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(driver_->Cancel(kAlice, job->id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(DriverTest, BadRequestsAreRefusedWithReasons) {
  Open();
  v1::SubmitJobRequest none;
  EXPECT_THAT(driver_->Submit(kAlice, none).status().message(), HasSubstr("no model"));
  v1::SubmitJobRequest trials;
  trials.set_zoo_model("tiny_cnn");
  EXPECT_EQ(driver_->Submit(kAlice, trials).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SubmitJobRequest zoo;
  zoo.set_zoo_model("no_such_model");
  zoo.set_trials(4);
  EXPECT_EQ(driver_->Submit(kAlice, zoo).status().code(), absl::StatusCode::kNotFound);
  v1::SubmitJobRequest onnx;
  onnx.set_onnx_model("definitely not an onnx file");
  onnx.set_trials(4);
  EXPECT_EQ(driver_->Submit(kAlice, onnx).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SubmitJobRequest target = Sim(1, 1);
  target.set_target("tpu");
  EXPECT_THAT(driver_->Submit(kAlice, target).status().message(), HasSubstr("unknown target"));
  EXPECT_EQ(driver_->Submit(kAgent, Sim(1, 1)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(driver_->Register(kAlice, AgentSpec("h")).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::AcquireStagesRequest unknown;
  unknown.set_agent_id("a9.9");
  EXPECT_EQ(driver_->Acquire(kAgent, unknown).status().code(), absl::StatusCode::kNotFound);
  v1::HeartbeatRequest hb;
  hb.set_agent_id("a9.9");
  auto h = driver_->Heartbeat(kAgent, hb);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->reregister());
  // A report for a lease nobody holds is dropped, not an error.
  const std::string agent = RegisterAgent("h1");
  v1::ReportStageRequest stale;
  stale.set_agent_id(agent);
  stale.set_session(SecretOf(agent));
  stale.mutable_result()->set_lease_id("0.1");
  auto rep = driver_->Report(kAgent, stale);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->accepted());
}

TEST_F(DriverTest, LostAgentsStagesAreRequeuedToAnother) {
  Open({.heartbeat_timeout = absl::Seconds(5)});
  auto job = driver_->Submit(kAlice, Sim(1, 2));
  ASSERT_TRUE(job.ok());
  const std::string a1 = RegisterAgent("h1");
  // a1 takes the first stage and dies without reporting.
  v1::AcquireStagesRequest acq;
  acq.set_agent_id(a1);
  acq.set_session(SecretOf(a1));
  auto got = driver_->Acquire(kAgent, acq);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->stages_size(), 1);
  const std::string a2 = RegisterAgent("h2");
  EXPECT_EQ(Serve(a2), 0);  // the stage is a1's until its lease expires
  clock_.Advance(absl::Seconds(6));
  // a2 keeps heartbeating, a1 does not.
  v1::HeartbeatRequest hb;
  hb.set_agent_id(a2);
  hb.set_session(sessions_[a2]);
  ASSERT_TRUE(driver_->Heartbeat(kAgent, hb).ok());
  driver_->Start();  // the ticker expires a1
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(Serve(a2), 8);
  auto done = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  auto logs = driver_->Logs(kAlice, job->id(), 0);
  ASSERT_TRUE(logs.ok());
  bool requeued = false;
  for (const auto& l : *logs) requeued |= l.find("requeued") != std::string::npos;
  EXPECT_TRUE(requeued);
  // a1's late report is dropped and it is told to register again.
  v1::ReportStageRequest late;
  late.set_agent_id(a1);
  late.set_session(SecretOf(a1));
  late.mutable_result()->set_lease_id(got->stages(0).lease_id());
  auto rep = driver_->Report(kAgent, late);
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->accepted());
  hb.set_agent_id(a1);
  EXPECT_TRUE(driver_->Heartbeat(kAgent, hb)->reregister());
}

TEST_F(DriverTest, StageFailingEveryTryFailsTheJobWithTheReason) {
  Open({.max_attempts = 2});
  auto job = driver_->Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(job.ok());
  const std::string agent = RegisterAgent("h1");
  for (int i = 0; i < 2; ++i) {
    v1::AcquireStagesRequest acq;
    acq.set_agent_id(agent);
    acq.set_session(SecretOf(agent));
    auto got = driver_->Acquire(kAgent, acq);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got->stages_size(), 1) << "try " << i;
    v1::ReportStageRequest r;
    r.set_agent_id(agent);
    r.set_session(SecretOf(agent));
    r.mutable_result()->set_lease_id(got->stages(0).lease_id());
    r.mutable_result()->set_error("compiler exploded");
    ASSERT_TRUE(driver_->Report(kAgent, r).ok());
  }
  auto failed = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(failed->failure_reason(), HasSubstr("compiler exploded"));
  EXPECT_THAT(failed->failure_reason(), HasSubstr("gave up after 2 tries"));
}

TEST_F(DriverTest, RestartResumesJobsAndKeepsRecords) {
  Open();
  auto job = driver_->Submit(kAlice, Sim(1, 4));
  ASSERT_TRUE(job.ok());
  std::string agent = RegisterAgent("h1");
  EXPECT_EQ(Serve(agent, 9), 9);  // two rounds and the first stage of the third
  // One more stage is out when the daemon goes away.
  v1::AcquireStagesRequest acq;
  acq.set_agent_id(agent);
  acq.set_session(SecretOf(agent));
  ASSERT_EQ(driver_->Acquire(kAgent, acq)->stages_size(), 1);
  auto before = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->records(), 2);
  driver_.reset();

  Open();
  auto resumed = driver_->Get(kAlice, job->id());
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->records(), 2);
  EXPECT_NE(resumed->state(), v1::JOB_STATE_SUCCEEDED);
  agent = RegisterAgent("h1");
  EXPECT_EQ(Serve(agent), 16 - 9);
  auto done = driver_->Get(kAlice, job->id());
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done->records(), 4);
  auto logs = driver_->Logs(kAlice, job->id(), 0);
  bool requeued = false;
  for (const auto& l : *logs) requeued |= l.find("daemon restarted") != std::string::npos;
  EXPECT_TRUE(requeued);
  // Job ids keep counting across restarts.
  auto next = driver_->Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->id(), "j2");
}

TEST_F(DriverTest, ASubmitRetriedWithItsRequestIdMakesOneJobEvenAcrossARestart) {
  Open();
  v1::SubmitJobRequest req = Sim(1, 1);
  req.set_request_id("3f1c9a.retry-1");
  auto first = driver_->Submit(kAlice, req);
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = driver_->Submit(kAlice, req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), first->id());
  // Another user's id is another submission.
  auto bobs = driver_->Submit(kBob, req);
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  EXPECT_NE(bobs->id(), first->id());
  // The id reused for another request: refused, naming the job it made.
  v1::SubmitJobRequest other = Sim(2, 1);
  other.set_request_id(req.request_id());
  auto reused = driver_->Submit(kAlice, other);
  EXPECT_EQ(reused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(reused.status().message(),
              HasSubstr(absl::StrCat("already submitted job ", first->id())));
  // Hostile ids: too long, or characters beyond the id alphabet.
  v1::SubmitJobRequest hostile = Sim(1, 1);
  hostile.set_request_id(std::string(65, 'a'));
  auto long_id = driver_->Submit(kAlice, hostile);
  EXPECT_EQ(long_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(long_id.status().message(), HasSubstr("request_id of 65 bytes (at most 64)"));
  hostile.set_request_id("a'; DROP TABLE jobs;--");
  auto odd = driver_->Submit(kAlice, hostile);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(odd.status().message(), HasSubstr("request_id may hold only"));
  // Without an id every call submits.
  EXPECT_NE(driver_->Submit(kAlice, Sim(1, 1))->id(), driver_->Submit(kAlice, Sim(1, 1))->id());
  const int64_t jobs = driver_->Stats(kAdmin)->jobs_total();
  EXPECT_EQ(jobs, 4);

  // The id is stored with the job: a daemon that took over answers the retry with it too.
  driver_.reset();
  Open();
  auto after = driver_->Submit(kAlice, req);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->id(), first->id());
  EXPECT_EQ(driver_->Stats(kAdmin)->jobs_total(), jobs);
}

TEST_F(DriverTest, LatencyGoalMetByKnownRecordsEndsTheJobAtOnce) {
  Open();
  const std::string agent = RegisterAgent("h1");
  v1::SubmitJobRequest r;
  r.set_zoo_model("tiny_cnn");
  r.set_trials(4);
  r.set_latency_goal_ms(1e6);
  // No records yet: the job tunes.
  auto first = driver_->Submit(kAlice, r);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NE(first->state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(driver_->Cancel(kAlice, first->id()).ok());
  // Give every tunable task a record on the agent's target.
  auto records = tune::OpenSqliteRecordStore((dir_ / "state.db.records").string());
  ASSERT_TRUE(records.ok());
  std::vector<tune::Record> recs;
  for (const v1::TaskProgress& t : first->tasks()) {
    tune::Record rec;
    rec.task_key = t.task_key();
    rec.template_name = "any";
    rec.target_key = "cpu:avx2:test";
    rec.costs = {1e-4};
    rec.job_id = "earlier";
    recs.push_back(rec);
  }
  ASSERT_TRUE((*records)->Append(recs).ok());
  auto second = driver_->Submit(kAlice, r);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_GT(second->estimated_latency_ms(), 0);
  EXPECT_EQ(Serve(agent), 0);
  // A goal the records do not meet still tunes.
  r.set_latency_goal_ms(1e-9);
  auto third = driver_->Submit(kAlice, r);
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(DriverTest, QueuePositionFollowsPriorityAndExpectedStartUnderSequential) {
  Open({.policy = "sequential"});
  // No agent yet: everything queues, ordered by priority then submission.
  auto a = driver_->Submit(kAlice, Sim(1, 2, 1.0));
  auto b = driver_->Submit(kAlice, Sim(1, 1, 1.0));
  v1::SubmitJobRequest high = Sim(1, 1, 1.0);
  high.set_priority(5);
  auto c = driver_->Submit(kAlice, high);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(driver_->Get(kAlice, c->id())->queue_position(), 1);
  EXPECT_EQ(driver_->Get(kAlice, a->id())->queue_position(), 2);
  EXPECT_EQ(driver_->Get(kAlice, b->id())->queue_position(), 3);
  const std::string agent = RegisterAgent("h1");
  // c (first in line) runs; a and b wait behind it. Expected start of b: c's one round and a's
  // two rounds of 4 stages x 1 s.
  EXPECT_EQ(driver_->Get(kAlice, c->id())->state(), v1::JOB_STATE_RUNNING);
  auto gb = driver_->Get(kAlice, b->id());
  EXPECT_EQ(gb->queue_position(), 2);
  EXPECT_EQ(gb->expected_start_unix_micros(), absl::ToUnixMicros(clock_.Now() + absl::Seconds(12)));
  auto ga = driver_->Get(kAlice, a->id());
  EXPECT_EQ(ga->queue_position(), 1);
  EXPECT_EQ(ga->expected_start_unix_micros(), absl::ToUnixMicros(clock_.Now() + absl::Seconds(4)));
  v1::ListJobsRequest req;
  auto listed = driver_->List(kAlice, req);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->resources_size(), 1);
  EXPECT_EQ(listed->resources(0).leases(), 1);
  EXPECT_EQ(listed->resources(0).cpu_slots_used(), 1);
}

// ---------------------------------------------------------------------------------------------
// The fields the service experiment needs to match the embedded engine.

// One Acquire (no wait) for `agent`.
std::vector<v1::StageRequest> AcquireNow(JobDriver& d, const std::string& agent) {
  v1::AcquireStagesRequest a;
  a.set_agent_id(agent);
  a.set_session(SecretOf(agent));
  a.set_wait_ms(0);
  auto got = d.Acquire(kAgent, a);
  EXPECT_TRUE(got.ok()) << got.status();
  if (!got.ok()) return {};
  return {got->stages().begin(), got->stages().end()};
}

void ReportOk(JobDriver& d, const std::string& agent, v1::StageResult result) {
  v1::ReportStageRequest r;
  r.set_agent_id(agent);
  r.set_session(SecretOf(agent));
  *r.mutable_result() = std::move(result);
  auto rep = d.Report(kAgent, r);
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_TRUE(rep->accepted());
}

v1::SubmitJobRequest TinyCnn(int trials = 1) {
  v1::SubmitJobRequest r;
  r.set_zoo_model("tiny_cnn");
  r.set_trials(trials);
  r.set_batch_size(1);
  return r;
}

TEST_F(DriverTest, TaskIndicesTuneOnlyThoseTasksInTheGivenOrder) {
  Open();
  auto all = driver_->Submit(kAlice, TinyCnn());
  ASSERT_TRUE(all.ok()) << all.status();
  const int n = all->tasks_size();
  ASSERT_GE(n, 2);
  v1::SubmitJobRequest r = TinyCnn();
  r.add_task_indices(n - 1);
  r.add_task_indices(0);
  auto picked = driver_->Submit(kAlice, r);
  ASSERT_TRUE(picked.ok()) << picked.status();
  ASSERT_EQ(picked->tasks_size(), 2);
  EXPECT_EQ(picked->tasks(0).task_key(), all->tasks(n - 1).task_key());
  EXPECT_EQ(picked->tasks(1).task_key(), all->tasks(0).task_key());

  v1::SubmitJobRequest out = TinyCnn();
  out.add_task_indices(0);
  out.add_task_indices(n);
  auto bad = driver_->Submit(kAlice, out);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr(absl::StrCat("task index ", n, " is out of range")));
  EXPECT_THAT(bad.status().message(), HasSubstr(absl::StrCat("has ", n, " tasks")));

  v1::SubmitJobRequest twice = TinyCnn();
  twice.add_task_indices(1);
  twice.add_task_indices(1);
  EXPECT_THAT(driver_->Submit(kAlice, twice).status().message(),
              HasSubstr("task index 1 is listed twice"));
  v1::SubmitJobRequest negative = TinyCnn();
  negative.add_task_indices(-2);
  EXPECT_THAT(driver_->Submit(kAlice, negative).status().message(),
              HasSubstr("task index -2 is negative"));
  v1::SubmitJobRequest both = TinyCnn();
  both.add_task_indices(0);
  both.set_max_tasks(1);
  auto both_st = driver_->Submit(kAlice, both);
  EXPECT_EQ(both_st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both_st.status().message(), HasSubstr("not both"));

  // Simulated workloads pick the same way.
  v1::SubmitJobRequest sim = Sim(4, 1);
  sim.add_task_indices(3);
  auto s = driver_->Submit(kAlice, sim);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->tasks_size(), 1);
  EXPECT_THAT(s->tasks(0).task_key(), ::testing::EndsWith(":t3"));
  sim.set_task_indices(0, 4);
  EXPECT_THAT(driver_->Submit(kAlice, sim).status().message(),
              HasSubstr("task index 4 is out of range: the model has 4 tasks"));
}

TEST_F(DriverTest, MeasureSpecReachesEveryMeasureStageOnly) {
  Open();
  const std::string agent = RegisterAgent("h1");
  v1::SubmitJobRequest r = TinyCnn(/*trials=*/1);
  r.add_task_indices(0);
  r.mutable_measure()->set_min_repeat_ms(7);
  r.mutable_measure()->set_repeat(2);
  r.mutable_measure()->set_run_timeout_s(3.5);
  r.mutable_measure()->set_flush_cache(true);
  auto job = driver_->Submit(kAlice, r);
  ASSERT_TRUE(job.ok()) << job.status();

  auto propose = AcquireNow(*driver_, agent);
  ASSERT_EQ(propose.size(), 1u);
  ASSERT_EQ(propose[0].kind(), v1::STAGE_KIND_PROPOSE);
  EXPECT_FALSE(propose[0].has_measure_spec());
  v1::StageResult pr;
  pr.set_lease_id(propose[0].lease_id());
  pr.mutable_propose()->add_config_indices(0);
  ReportOk(*driver_, agent, pr);

  auto build = AcquireNow(*driver_, agent);
  ASSERT_EQ(build.size(), 1u);
  ASSERT_EQ(build[0].kind(), v1::STAGE_KIND_BUILD);
  EXPECT_FALSE(build[0].has_measure_spec());
  v1::StageResult br;
  br.set_lease_id(build[0].lease_id());
  v1::Artifact* a = br.mutable_build()->add_artifacts();
  a->set_config_index(0);
  a->set_error(v1::ERROR_KIND_COMPILE);
  ReportOk(*driver_, agent, br);

  auto measure = AcquireNow(*driver_, agent);
  ASSERT_EQ(measure.size(), 1u);
  ASSERT_EQ(measure[0].kind(), v1::STAGE_KIND_MEASURE);
  EXPECT_EQ(measure[0].device(), "cpu:1");
  ASSERT_TRUE(measure[0].has_measure_spec());
  EXPECT_EQ(measure[0].measure_spec().min_repeat_ms(), 7);
  EXPECT_EQ(measure[0].measure_spec().repeat(), 2);
  EXPECT_EQ(measure[0].measure_spec().number(), 0);
  EXPECT_DOUBLE_EQ(measure[0].measure_spec().run_timeout_s(), 3.5);
  EXPECT_TRUE(measure[0].measure_spec().flush_cache());

  v1::SubmitJobRequest bad = TinyCnn();
  bad.mutable_measure()->set_repeat(-1);
  auto st = driver_->Submit(kAlice, bad);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.status().message(), HasSubstr("measure fields must be finite and >= 0"));
}

TEST_F(DriverTest, StagesAreOversubscribedOnlyUnderUncontrolled) {
  for (std::string_view policy : sched::PolicyNames()) {
    SCOPED_TRACE(policy);
    driver_.reset();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Open({.policy = std::string(policy)});
    const std::string agent = RegisterAgent("h1");
    ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 1)).ok());
    // Every stage of the round (propose, build, measure, update) carries the flag.
    for (int stage = 0; stage < 4; ++stage) {
      auto got = AcquireNow(*driver_, agent);
      ASSERT_EQ(got.size(), 1u) << "stage " << stage;
      EXPECT_EQ(got[0].oversubscribed(), policy == "uncontrolled") << "stage " << stage;
      v1::StageResult r;
      r.set_lease_id(got[0].lease_id());
      ReportOk(*driver_, agent, r);
    }
  }
}

v1::RegisterRequest LendingAgent(int slots, int lends) {
  v1::RegisterRequest r = AgentSpec("h1", slots);
  r.mutable_devices(0)->set_lends_cpu_slots(lends);
  return r;
}

TEST_F(DriverTest, LendingDeviceRunsASecondCpuStageWhileItDoesNotMeasure) {
  for (int lends : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("lends ", lends));
    driver_.reset();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Open();
    auto reg = Kept(driver_->Register(kAgent, LendingAgent(/*slots=*/1, lends)));
    ASSERT_TRUE(reg.ok()) << reg.status();
    const std::string agent = reg->agent_id();
    auto a = driver_->Submit(kAlice, Sim(1, 1));
    auto b = driver_->Submit(kAlice, Sim(1, 1));
    ASSERT_TRUE(a.ok() && b.ok());
    // Both proposes run at once only on the lent slot.
    auto first = AcquireNow(*driver_, agent);
    ASSERT_EQ(first.size(), static_cast<size_t>(1 + lends));
    auto listed = driver_->List(kAdmin, v1::ListJobsRequest());
    ASSERT_TRUE(listed.ok());
    ASSERT_EQ(listed->resources_size(), 1);
    EXPECT_EQ(listed->resources(0).cpu_slots(), 1 + lends);
    EXPECT_EQ(listed->resources(0).cpu_slots_used(), 1 + lends);
    if (lends == 0) continue;
    // a's build takes the slot a's propose frees; with b's propose still on a slot, a's measure
    // is granted only once the device's core is free of CPU stages (1 general + 1 lent: b's
    // propose fits the general slot).
    v1::StageResult r;
    r.set_lease_id(first[0].lease_id());
    ReportOk(*driver_, agent, r);
    auto build = AcquireNow(*driver_, agent);
    ASSERT_EQ(build.size(), 1u);
    EXPECT_EQ(build[0].job_id(), first[0].job_id());
    r.set_lease_id(build[0].lease_id());
    ReportOk(*driver_, agent, r);
    auto measure = AcquireNow(*driver_, agent);
    ASSERT_EQ(measure.size(), 1u);
    EXPECT_EQ(measure[0].device(), "cpu:1");
    // While a measures, b's next CPU stage waits for the general slot b's propose holds.
    r.set_lease_id(first[1].lease_id());
    ReportOk(*driver_, agent, r);
    auto next = AcquireNow(*driver_, agent);
    ASSERT_EQ(next.size(), 1u);
    EXPECT_EQ(next[0].job_id(), first[1].job_id());
    EXPECT_EQ(AcquireNow(*driver_, agent).size(), 0u);
  }
  auto bad = driver_->Register(kAgent, LendingAgent(1, -1));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("lends_cpu_slots must be in [0, 4096], got -1"));
}

TEST_F(DriverTest, BuildSlotsCountLentSlotsAndAreCappedAtTheLargestAgent) {
  for (int lends : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("lends ", lends));
    driver_.reset();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Open({.build_slots = 4});
    auto reg = Kept(driver_->Register(kAgent, LendingAgent(/*slots=*/1, lends)));
    ASSERT_TRUE(reg.ok()) << reg.status();
    const std::string agent = reg->agent_id();
    v1::SubmitJobRequest r = TinyCnn();
    r.add_task_indices(0);
    ASSERT_TRUE(driver_->Submit(kAlice, r).ok());
    auto propose = AcquireNow(*driver_, agent);
    ASSERT_EQ(propose.size(), 1u);
    v1::StageResult pr;
    pr.set_lease_id(propose[0].lease_id());
    pr.mutable_propose()->add_config_indices(0);
    ReportOk(*driver_, agent, pr);
    auto build = AcquireNow(*driver_, agent);
    ASSERT_EQ(build.size(), 1u);
    ASSERT_EQ(build[0].kind(), v1::STAGE_KIND_BUILD);
    EXPECT_EQ(build[0].cpu_slots(), 1 + lends);
  }
}

v1::RegisterRequest GpuAgentSpec(const std::string& host, int slots = 1) {
  v1::RegisterRequest r;
  r.set_version(v1::kLoomVersion);
  r.set_hostname(host);
  r.set_cpu_slots(slots);
  v1::DeviceInfo* d = r.add_devices();
  d->set_name("cuda:0");
  d->set_kind("cuda");
  d->set_cuda_arch("sm_90");
  d->set_target_key("cuda:sm_90:Fake GPU");
  return r;
}

// The result of a measure stage whose artifacts all failed to build: each reports its build error.
v1::StageResult MeasureOfFailedBuilds(const v1::StageRequest& s) {
  v1::StageResult r;
  r.set_lease_id(s.lease_id());
  for (const v1::Artifact& a : s.measure().artifacts()) {
    v1::MeasureResult* m = r.mutable_measure()->add_results();
    m->set_config_index(a.config_index());
    m->set_error(a.error());
  }
  return r;
}

// Plays the stages `agents` are granted (proposals of config 0, builds that fail to compile,
// measures and updates that report those errors) until a measure stage of job `job` is granted;
// returns it with the agent that got it.
std::optional<std::pair<std::string, v1::StageRequest>> DriveToMeasure(
    JobDriver& d, const std::string& job, const std::vector<std::string>& agents) {
  for (int i = 0; i < 50; ++i) {
    bool any = false;
    for (const std::string& agent : agents) {
      for (const v1::StageRequest& s : AcquireNow(d, agent)) {
        any = true;
        if (s.kind() == v1::STAGE_KIND_MEASURE && s.job_id() == job) {
          return std::make_pair(agent, s);
        }
        v1::StageResult r;
        r.set_lease_id(s.lease_id());
        if (s.kind() == v1::STAGE_KIND_PROPOSE) {
          r.mutable_propose()->add_config_indices(0);
        } else if (s.kind() == v1::STAGE_KIND_BUILD) {
          for (int64_t index : s.build().config_indices()) {
            v1::Artifact* a = r.mutable_build()->add_artifacts();
            a->set_config_index(index);
            a->set_error(v1::ERROR_KIND_COMPILE);
          }
        } else if (s.kind() == v1::STAGE_KIND_MEASURE) {
          r = MeasureOfFailedBuilds(s);
        } else {
          r.mutable_update();
        }
        ReportOk(d, agent, r);
      }
    }
    if (!any) break;
  }
  return std::nullopt;
}

TEST_F(DriverTest, CudaJobsMeasureOnlyOnCudaDevicesAndCpuJobsOnlyOnCpuDevices) {
  Open();
  auto reg = Kept(driver_->Register(kAgent, GpuAgentSpec("g1")));
  ASSERT_TRUE(reg.ok()) << reg.status();
  const std::string gpu = reg->agent_id();

  // A cpu job on a fleet with only a GPU waits; nothing goes to the GPU's agent.
  v1::SubmitJobRequest cpu_job = TinyCnn();
  cpu_job.add_task_indices(0);
  auto cj = driver_->Submit(kAlice, cpu_job);
  ASSERT_TRUE(cj.ok()) << cj.status();
  EXPECT_THAT(cj->tasks(0).stage(), HasSubstr("waiting for an agent with a cpu device"));
  EXPECT_TRUE(AcquireNow(*driver_, gpu).empty());

  // A cuda job is prepared for the GPU's target key and its CUDA templates.
  v1::SubmitJobRequest cuda_job = TinyCnn();
  cuda_job.set_target("cuda");
  cuda_job.add_task_indices(0);
  auto gj = driver_->Submit(kAlice, cuda_job);
  ASSERT_TRUE(gj.ok()) << gj.status();
  auto measure = DriveToMeasure(*driver_, gj->id(), {gpu});
  ASSERT_TRUE(measure.has_value());
  EXPECT_EQ(measure->first, gpu);
  EXPECT_EQ(measure->second.device(), "cuda:0");
  const v1::TaskSpec& task = measure->second.task();
  EXPECT_EQ(task.target_kind(), "cuda");
  EXPECT_EQ(task.cuda_arch(), "sm_90");
  EXPECT_EQ(task.target_key(), "cuda:sm_90:Fake GPU");
  EXPECT_THAT(task.template_name(), HasSubstr("cuda"));
  auto got = driver_->Get(kAlice, gj->id());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->target(), "cuda");

  // With a cpu agent too, the cpu job's measure goes to its cpu device, never to cuda:0 (the
  // GPU's agent is polled first and is idle once the cuda job's measure is reported).
  const std::string host = RegisterAgent("h1");
  ReportOk(*driver_, gpu, MeasureOfFailedBuilds(measure->second));
  auto cpu_measure = DriveToMeasure(*driver_, cj->id(), {gpu, host});
  ASSERT_TRUE(cpu_measure.has_value());
  EXPECT_EQ(cpu_measure->first, host);
  EXPECT_EQ(cpu_measure->second.device(), "cpu:1");
  EXPECT_EQ(cpu_measure->second.task().target_kind(), "cpu");
  EXPECT_EQ(cpu_measure->second.task().target_key(), "cpu:avx2:test");
  EXPECT_TRUE(cpu_measure->second.task().cuda_arch().empty());
}

TEST_F(DriverTest, MixedGpuFleetMeasuresAJobOnlyOnGpusOfItsTargetKey) {
  Open();
  // Two GPU models: the job is prepared for one target key (the smallest, "cuda:sm_80:..."), and
  // every measure stage must go to that GPU even when the other one is polled first and idle.
  v1::RegisterRequest a100 = GpuAgentSpec("a100");
  a100.mutable_devices(0)->set_cuda_arch("sm_80");
  a100.mutable_devices(0)->set_target_key("cuda:sm_80:Fake A100");
  auto h = Kept(driver_->Register(kAgent, GpuAgentSpec("h100")));
  auto a = Kept(driver_->Register(kAgent, a100));
  ASSERT_TRUE(h.ok() && a.ok());
  v1::SubmitJobRequest job = TinyCnn();
  job.set_target("cuda");
  job.add_task_indices(0);
  job.set_trials(4);
  job.set_batch_size(2);
  auto j = driver_->Submit(kAlice, job);
  ASSERT_TRUE(j.ok()) << j.status();
  for (int round = 0; round < 2; ++round) {
    auto measure = DriveToMeasure(*driver_, j->id(), {h->agent_id(), a->agent_id()});
    ASSERT_TRUE(measure.has_value()) << "round " << round;
    EXPECT_EQ(measure->first, a->agent_id()) << "round " << round;
    EXPECT_EQ(measure->second.task().target_key(), "cuda:sm_80:Fake A100");
    ReportOk(*driver_, measure->first, MeasureOfFailedBuilds(measure->second));
  }
}

// A budgeted job's sessions take each task's baseline first (tune::TaskTunerOptions::
// baseline_first, as `loom tune` and the engine do), so a task the budget ends early still has its
// default config measured: the first stages of each task build and measure that config alone.
// Two tasks spread over an agent's two slots start at once; the agents restore the sessions
// from the state alone (the baseline's place travels in it).
TEST_F(DriverTest, ABudgetedJobMeasuresEachTasksDefaultConfigFirst) {
  Open();
  const std::string agent = RegisterAgent("h1");
  v1::SubmitJobRequest r = TinyCnn();
  r.add_task_indices(0);
  r.add_task_indices(1);
  r.set_total_trials(16);
  r.set_batch_size(2);
  r.set_spread(2);
  auto job = driver_->Submit(kAlice, r);
  ASSERT_TRUE(job.ok()) << job.status();
  ops::Target target;
  target.isa = *ops::ParseIsa("avx2");  // as the agent's device says (AgentSpec)
  target.cpu_model = "test";
  // Per task (workload key): the stages granted, as "kind round [configs]", in grant order.
  std::map<std::string, std::vector<std::string>> stages;
  std::map<std::string, int64_t> defaults;
  for (int i = 0; i < 20; ++i) {
    std::vector<v1::StageRequest> got = AcquireNow(*driver_, agent);
    if (got.empty()) break;
    for (const v1::StageRequest& s : got) {
      const std::string key = s.task().workload_key();
      if (!defaults.contains(key)) {
        auto w = graph::ParseWorkloadKey(key);
        ASSERT_TRUE(w.ok()) << w.status();
        auto tmpl = ops::MakeTemplate(*w, target);
        ASSERT_TRUE(tmpl.ok()) << tmpl.status();
        defaults[key] = (*tmpl)->DefaultConfig().index;
      }
      std::vector<int64_t> configs(s.build().config_indices().begin(),
                                   s.build().config_indices().end());
      stages[key].push_back(absl::StrCat(tune::WireKindName(s.kind()), " ", s.round(), " [",
                                         absl::StrJoin(configs, ","), "]"));
      if (s.kind() == v1::STAGE_KIND_PROPOSE) continue;  // the rounds after are not asked about
      if (s.kind() == v1::STAGE_KIND_BUILD) {
        v1::StageResult built;
        built.set_lease_id(s.lease_id());
        for (int64_t index : configs) {
          v1::Artifact* a = built.mutable_build()->add_artifacts();
          a->set_config_index(index);
          a->set_error(v1::ERROR_KIND_COMPILE);
        }
        ReportOk(*driver_, agent, built);
      } else {
        ASSERT_EQ(s.kind(), v1::STAGE_KIND_MEASURE);
        ReportOk(*driver_, agent, MeasureOfFailedBuilds(s));
      }
    }
  }
  ASSERT_EQ(stages.size(), 2u);
  for (const auto& [key, asked] : stages) {
    SCOPED_TRACE(key);
    const std::string baseline = absl::StrCat("[", defaults[key], "]");
    EXPECT_THAT(asked, ::testing::ElementsAre(absl::StrCat("build -1 ", baseline),
                                              absl::StrCat("measure -1 []"), "propose 0 []"));
  }
}

TEST_F(DriverTest, CudaJobWaitsForAGpuThatRunsItsArch) {
  Open();
  v1::SubmitJobRequest r = TinyCnn();
  r.set_target("cuda");
  r.add_task_indices(0);
  auto plain = driver_->Submit(kAlice, r);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->tasks(0).stage(), HasSubstr("waiting for an agent with a cuda device"));

  auto reg = Kept(driver_->Register(kAgent, GpuAgentSpec("g1")));
  ASSERT_TRUE(reg.ok()) << reg.status();
  r.set_target("cuda:sm_80");
  auto older = driver_->Submit(kAlice, r);
  ASSERT_TRUE(older.ok()) << older.status();
  EXPECT_THAT(older->tasks(0).stage(),
              HasSubstr("waiting for an agent with a cuda device (sm_80)"));

  // sm_90a code runs on the sm_90 GPU; the stages compile for sm_90a.
  r.set_target("cuda:sm_90a");
  auto variant = driver_->Submit(kAlice, r);
  ASSERT_TRUE(variant.ok()) << variant.status();
  auto measure = DriveToMeasure(*driver_, variant->id(), {reg->agent_id()});
  ASSERT_TRUE(measure.has_value());
  EXPECT_EQ(measure->second.device(), "cuda:0");
  EXPECT_EQ(measure->second.task().cuda_arch(), "sm_90a");
  EXPECT_EQ(measure->second.task().target_key(), "cuda:sm_90:Fake GPU");
  auto still = driver_->Get(kAlice, older->id());
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->state(), v1::JOB_STATE_QUEUED);

  r.set_target("cuda:bogus");
  auto bad = driver_->Submit(kAlice, r);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("bad CUDA architecture 'bogus'"));
}

// ---------------------------------------------------------------------------------------------
// Agents with their own credentials (a tokens file): identity, forgeries, revocation, limits.

std::vector<v1::StageRequest> Acq(JobDriver& d, const Principal& who, const std::string& id = "",
                                  v1::AcquireStagesResponse* full = nullptr) {
  v1::AcquireStagesRequest a;
  a.set_agent_id(id);
  a.set_wait_ms(0);
  auto got = d.Acquire(who, a);
  EXPECT_TRUE(got.ok()) << got.status();
  if (!got.ok()) return {};
  if (full != nullptr) *full = *got;
  return {got->stages().begin(), got->stages().end()};
}

absl::StatusOr<v1::ReportStageResponse> Rep(JobDriver& d, const Principal& who,
                                            v1::StageResult result) {
  v1::ReportStageRequest r;
  *r.mutable_result() = std::move(result);
  return d.Report(who, r);
}

TEST_F(DriverTest, CredentialBindsTheAgentIdAndAllowsOneLiveAgentPerCredential) {
  Open({.heartbeat_timeout = absl::Seconds(5)});
  const Principal h1{"h1", Role::kAgent}, h2{"h2", Role::kAgent};
  auto r1 = driver_->Register(h1, AgentSpec("host-1"));
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto again = driver_->Register(h1, AgentSpec("host-1b"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(),
              HasSubstr(absl::StrCat("already registered as ", r1->agent_id())));
  ASSERT_TRUE(driver_->Register(h2, AgentSpec("host-2")).ok());

  // h2 claims h1's id: refused, whichever call it makes.
  v1::HeartbeatRequest hb;
  hb.set_agent_id(r1->agent_id());
  auto stolen = driver_->Heartbeat(h2, hb);
  EXPECT_EQ(stolen.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(stolen.status().message(), HasSubstr("belongs to another agent's credential"));
  v1::AcquireStagesRequest acq;
  acq.set_agent_id(r1->agent_id());
  EXPECT_EQ(driver_->Acquire(h2, acq).status().code(), absl::StatusCode::kPermissionDenied);
  v1::ReportStageRequest rep;
  rep.set_agent_id(r1->agent_id());
  EXPECT_EQ(driver_->Report(h2, rep).status().code(), absl::StatusCode::kPermissionDenied);
  // Without an id, the credential names its own agent.
  EXPECT_TRUE(Acq(*driver_, h1).empty());

  // People's tokens are not agents; other releases are refused at registration.
  EXPECT_EQ(driver_->Register(kAdmin, AgentSpec("x")).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::RegisterRequest old = AgentSpec("h3");
  old.set_version("0.0.1");
  auto v = driver_->Register(Principal{"h3", Role::kAgent}, old);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(v.status().message(), HasSubstr("agent version '0.0.1' is not this daemon's"));

  // Once h1 is lost, its credential may register again.
  clock_.Advance(absl::Seconds(6));
  driver_->Start();
  absl::StatusOr<v1::RegisterResponse> back = absl::UnknownError("not yet");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!back.ok() && absl::Now() < deadline) {
    back = driver_->Register(h1, AgentSpec("host-1"));
    if (!back.ok()) absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_NE(back->agent_id(), r1->agent_id());
}

TEST_F(DriverTest, ForgedCostIsRefusedTheAgentFlaggedForGoodAndTheStageMeasuredElsewhere) {
  Open();
  const Principal evil{"evil", Role::kAgent}, good{"good", Role::kAgent};
  ASSERT_TRUE(driver_->Register(evil, AgentSpec("evil-host")).ok());
  v1::SubmitJobRequest r = TinyCnn(/*trials=*/1);
  r.add_task_indices(0);
  auto job = driver_->Submit(kAlice, r);
  ASSERT_TRUE(job.ok()) << job.status();

  auto propose = Acq(*driver_, evil);
  ASSERT_EQ(propose.size(), 1u);
  v1::StageResult pr;
  pr.set_lease_id(propose[0].lease_id());
  pr.mutable_propose()->add_config_indices(0);
  ASSERT_TRUE(Rep(*driver_, evil, pr).ok());
  auto build = Acq(*driver_, evil);
  ASSERT_EQ(build.size(), 1u);
  v1::StageResult br;
  br.set_lease_id(build[0].lease_id());
  v1::Artifact* a = br.mutable_build()->add_artifacts();
  a->set_config_index(0);
  a->set_content_hash(std::string(64, 'a'));
  a->set_binary(
      "\x7f"
      "ELF planted object");
  ASSERT_TRUE(Rep(*driver_, evil, br).ok());
  auto measure = Acq(*driver_, evil);
  ASSERT_EQ(measure.size(), 1u);
  ASSERT_EQ(measure[0].kind(), v1::STAGE_KIND_MEASURE);
  // Only the hash travels: the planted bytes never reach a measuring agent.
  EXPECT_TRUE(measure[0].measure().artifacts(0).binary().empty());
  EXPECT_EQ(measure[0].measure().artifacts(0).content_hash(), std::string(64, 'a'));

  v1::StageResult mr;
  mr.set_lease_id(measure[0].lease_id());
  v1::MeasureResult* m = mr.mutable_measure()->add_results();
  m->set_config_index(0);
  m->add_costs(1e-12);
  m->set_checked(true);
  auto forged = Rep(*driver_, evil, mr);
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(forged.status().message(), HasSubstr("above the device's physical bound"));
  auto stats = driver_->Stats(kAdmin);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->agents_flagged(), 1);
  EXPECT_EQ(stats->reports_refused(), 1);
  EXPECT_EQ(driver_->Get(kAlice, job->id())->records(), 0);
  // Its later reports and registrations are refused.
  EXPECT_EQ(Rep(*driver_, evil, mr).status().code(), absl::StatusCode::kPermissionDenied);
  auto back = driver_->Register(evil, AgentSpec("evil-host"));
  EXPECT_EQ(back.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(back.status().message(), HasSubstr("agent 'evil' is flagged"));

  // The stage was requeued: an honest agent measures it and the job ends with its record.
  ASSERT_TRUE(driver_->Register(good, AgentSpec("good-host")).ok());
  auto again = Acq(*driver_, good);
  ASSERT_EQ(again.size(), 1u);
  ASSERT_EQ(again[0].kind(), v1::STAGE_KIND_MEASURE);
  mr.set_lease_id(again[0].lease_id());
  mr.mutable_measure()->mutable_results(0)->set_costs(0, 0.01);
  auto honest = Rep(*driver_, good, mr);
  ASSERT_TRUE(honest.ok()) << honest.status();
  EXPECT_TRUE(honest->accepted());
  auto result = driver_->Result(kAlice, job->id());
  ASSERT_TRUE(result.ok());
  EXPECT_THAT(result->records_jsonl(), HasSubstr("\"agent_id\":\"good\""));
  EXPECT_THAT(result->records_jsonl(), ::testing::Not(HasSubstr("evil")));
  EXPECT_THAT(result->records_jsonl(), HasSubstr(absl::StrCat("\"job_id\":\"", job->id(), ".")));

  // The flag survives a restart of the daemon.
  driver_.reset();
  Open();
  EXPECT_EQ(driver_->Register(evil, AgentSpec("evil-host")).status().code(),
            absl::StatusCode::kPermissionDenied);
}

// An agent from before sessions reports its update in the removed form (UpdateOutput.tuner_state,
// field 1, reserved in stage.proto): refused in one line, the stage counted as a failed try and
// requeued; the agent is not flagged.
TEST_F(DriverTest, AnUpdateInTheFormOfAgentsBeforeSessionsIsRefused) {
  Open();
  const std::string agent = RegisterAgent("h1");
  v1::SubmitJobRequest r = TinyCnn(/*trials=*/1);
  r.add_task_indices(0);
  auto job = driver_->Submit(kAlice, r);
  ASSERT_TRUE(job.ok()) << job.status();
  auto measure = DriveToMeasure(*driver_, job->id(), {agent});
  ASSERT_TRUE(measure.has_value());
  ReportOk(*driver_, agent, MeasureOfFailedBuilds(measure->second));
  auto update = AcquireNow(*driver_, agent);
  ASSERT_EQ(update.size(), 1u);
  ASSERT_EQ(update[0].kind(), v1::STAGE_KIND_UPDATE);
  ASSERT_FALSE(update[0].update().session().empty());

  v1::StageResult old;
  old.set_lease_id(update[0].lease_id());
  old.mutable_update()
      ->GetReflection()
      ->MutableUnknownFields(old.mutable_update())
      ->AddLengthDelimited(1, R"({"format":"loom.xgb_plan.v1","trained_on":1,"plan":[]})");
  v1::ReportStageRequest rep;
  rep.set_agent_id(agent);
  rep.set_session(SecretOf(agent));
  *rep.mutable_result() = old;
  auto refused = driver_->Report(kAgent, rep);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message(),
            "the update output is in the form of agents before sessions (a tuner_state): the "
            "agent is older than this daemon; run the same Loom release on the daemon and agents");
  auto stats = driver_->Stats(kAdmin);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->agents_flagged(), 0);

  // The update is granted again, and an agent of this release completes it.
  auto again = AcquireNow(*driver_, agent);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].kind(), v1::STAGE_KIND_UPDATE);
  v1::StageResult current;
  current.set_lease_id(again[0].lease_id());
  current.mutable_update();
  ReportOk(*driver_, agent, current);
}

TEST_F(DriverTest, ReportForAStageAnotherAgentHoldsFlagsTheReporter) {
  Open();
  const Principal a{"a", Role::kAgent}, b{"b", Role::kAgent};
  ASSERT_TRUE(driver_->Register(a, AgentSpec("host-a")).ok());
  auto job = driver_->Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(job.ok());
  auto held = Acq(*driver_, a);
  ASSERT_EQ(held.size(), 1u);
  ASSERT_TRUE(driver_->Register(b, AgentSpec("host-b")).ok());
  v1::StageResult r;
  r.set_lease_id(held[0].lease_id());
  auto stolen = Rep(*driver_, b, r);
  EXPECT_EQ(stolen.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(stolen.status().message(), HasSubstr("of another agent"));
  EXPECT_EQ(driver_->Stats(kAdmin)->agents_flagged(), 1);
  // The holder's own report still counts.
  auto own = Rep(*driver_, a, r);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_TRUE(own->accepted());
}

TEST_F(DriverTest, DeregisterRequeuesAtOnceAndOnlyTheAgentsOwnCredentialMayCallIt) {
  // A heartbeat timeout that never passes here: whatever is requeued is the deregistration's.
  Open({.heartbeat_timeout = absl::Hours(1)});
  const Principal a{"a", Role::kAgent}, b{"b", Role::kAgent};
  auto ra = driver_->Register(a, AgentSpec("host-a"));
  ASSERT_TRUE(ra.ok()) << ra.status();
  auto job = driver_->Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(job.ok());
  auto held = Acq(*driver_, a);
  ASSERT_EQ(held.size(), 1u);
  auto rb = driver_->Register(b, AgentSpec("host-b"));
  ASSERT_TRUE(rb.ok()) << rb.status();

  // A hostile agent names a's id: refused, and a keeps its stage.
  v1::DeregisterRequest hostile;
  hostile.set_agent_id(ra->agent_id());
  auto refused = driver_->Deregister(b, hostile);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("belongs to another agent's credential"));
  // People's tokens are no agents; a reason with control characters is refused.
  EXPECT_EQ(driver_->Deregister(kAdmin, hostile).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::DeregisterRequest bad;
  bad.set_reason("SIGTERM\nforged log line");
  auto bad_reason = driver_->Deregister(a, bad);
  EXPECT_EQ(bad_reason.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_reason.status().message(), HasSubstr("control character"));
  bad.set_reason(std::string(257, 'x'));
  EXPECT_EQ(driver_->Deregister(a, bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(driver_->Stats(kAdmin)->stages_requeued(), 0);
  EXPECT_EQ(driver_->Stats(kAdmin)->agents_alive(), 2);

  // a's own credential: its stage is requeued at once (the clock has not moved) and goes to b.
  v1::DeregisterRequest own;
  own.set_agent_id(ra->agent_id());
  own.set_reason("SIGTERM");
  auto gone = driver_->Deregister(a, own);
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->stages_requeued(), 1);
  EXPECT_EQ(driver_->Stats(kAdmin)->stages_requeued(), 1);
  EXPECT_EQ(driver_->Stats(kAdmin)->agents_alive(), 1);
  auto moved = Acq(*driver_, b);
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(moved[0].job_id(), job->id());
  auto logs = driver_->Logs(kAlice, job->id(), 0);
  ASSERT_TRUE(logs.ok());
  EXPECT_THAT(absl::StrJoin(*logs, "\n"),
              HasSubstr(absl::StrCat("agent ", ra->agent_id(), " (host-a) stopped: SIGTERM")));
  // It is gone: a second deregistration is kNotFound, and its credential registers again at once.
  EXPECT_EQ(driver_->Deregister(a, own).status().code(), absl::StatusCode::kNotFound);
  auto again = driver_->Register(a, AgentSpec("host-a"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->agent_id(), ra->agent_id());
}

// Without a tokens file (--insecure) an agent's id is no credential: its heartbeats and its
// deregistration must show the secret its registration returned.
TEST_F(DriverTest, WithoutTokensEveryAgentCallMustShowTheRegistrationsSecret) {
  Open({.heartbeat_timeout = absl::Hours(1)});
  ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 2)).ok());
  const std::string agent = RegisterAgent("host-a");  // granted the job's first stage
  const std::string secret = sessions_[agent];
  EXPECT_EQ(secret.size(), 32u);
  EXPECT_NE(secret, sessions_[RegisterAgent("host-b")]);
  const std::string refusal =
      absl::StrCat("agent id '", agent,
                   "' is not this caller's registration (its session secret does not match)");
  const std::vector<std::string> guesses = {std::string(), std::string(32, '0'), secret.substr(1),
                                            secret + "0"};
  auto refused = [&](const absl::Status& status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
    EXPECT_EQ(status.message(), refusal);
  };

  // A second client knows the id only, or guesses the secret: it can neither take the agent's
  // stages, keep it alive nor take it out; one line each.
  for (const std::string& guess : guesses) {
    SCOPED_TRACE(absl::StrCat("guess '", guess, "'"));
    v1::AcquireStagesRequest acq;
    acq.set_agent_id(agent);
    acq.set_session(guess);
    refused(driver_->Acquire(kAgent, acq).status());
    v1::HeartbeatRequest hb;
    hb.set_agent_id(agent);
    hb.set_session(guess);
    refused(driver_->Heartbeat(kAgent, hb).status());
    v1::DeregisterRequest hostile;
    hostile.set_agent_id(agent);
    hostile.set_session(guess);
    refused(driver_->Deregister(kAgent, hostile).status());
  }
  EXPECT_EQ(driver_->Stats(kAdmin)->agents_alive(), 2);
  EXPECT_EQ(driver_->Stats(kAdmin)->stages_requeued(), 0);

  // The agent itself takes its stage (the refused polls delivered nothing).
  v1::AcquireStagesRequest acq;
  acq.set_agent_id(agent);
  acq.set_session(secret);
  auto got = driver_->Acquire(kAgent, acq);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->stages_size(), 1);
  const std::string lease = got->stages(0).lease_id();

  // Another client cannot report for it: refused, and neither the agent is flagged (the caller
  // may be anyone) nor the lease ended.
  for (const std::string& guess : guesses) {
    SCOPED_TRACE(absl::StrCat("guess '", guess, "'"));
    v1::ReportStageRequest forged;
    forged.set_agent_id(agent);
    forged.set_session(guess);
    forged.mutable_result()->set_lease_id(lease);
    refused(driver_->Report(kAgent, forged).status());
  }
  auto stats = driver_->Stats(kAdmin);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->agents_flagged(), 0);
  EXPECT_EQ(stats->agents_alive(), 2);
  auto job = driver_->List(kAlice, v1::ListJobsRequest());
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(job->jobs_size(), 1);
  EXPECT_EQ(job->jobs(0).records(), 0);

  // The agent's own report is taken, its next poll gets the next stage, its heartbeat is taken
  // and its deregistration requeues that stage.
  v1::ReportStageRequest own_report;
  own_report.set_agent_id(agent);
  own_report.set_session(secret);
  own_report.mutable_result()->set_lease_id(lease);
  auto accepted = driver_->Report(kAgent, own_report);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_TRUE(accepted->accepted());
  got = driver_->Acquire(kAgent, acq);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->stages_size(), 1);
  EXPECT_NE(got->stages(0).lease_id(), lease);
  v1::HeartbeatRequest hb;
  hb.set_agent_id(agent);
  hb.set_session(secret);
  auto beat = driver_->Heartbeat(kAgent, hb);
  ASSERT_TRUE(beat.ok()) << beat.status();
  EXPECT_FALSE(beat->reregister());
  v1::DeregisterRequest own;
  own.set_agent_id(agent);
  own.set_session(secret);
  auto gone = driver_->Deregister(kAgent, own);
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->stages_requeued(), 1);
  EXPECT_EQ(driver_->Stats(kAdmin)->agents_alive(), 1);
}

TEST_F(DriverTest, CancellingAJobRevokesItsRunningStageAtTheAgentsNextPoll) {
  Open();
  const Principal h1{"h1", Role::kAgent};
  ASSERT_TRUE(driver_->Register(h1, AgentSpec("host-1")).ok());
  auto job = driver_->Submit(kAlice, Sim(1, 1, /*seconds=*/60));
  ASSERT_TRUE(job.ok());
  auto running = Acq(*driver_, h1);
  ASSERT_EQ(running.size(), 1u);
  // A long poll waiting when the job is cancelled returns at once with the revoked lease.
  absl::StatusOr<v1::AcquireStagesResponse> polled;
  absl::Duration waited;
  std::thread poll([&] {
    v1::AcquireStagesRequest a;
    a.set_wait_ms(10000);
    const absl::Time start = absl::Now();
    polled = driver_->Acquire(h1, a);
    waited = absl::Now() - start;
  });
  ASSERT_TRUE(driver_->Cancel(kAlice, job->id()).ok());
  poll.join();
  ASSERT_TRUE(polled.ok()) << polled.status();
  EXPECT_THAT(polled->cancelled_lease_ids(), ::testing::ElementsAre(running[0].lease_id()));
  EXPECT_LT(waited, absl::Seconds(5));
}

TEST_F(DriverTest, UserLimitsCapPriorityConcurrentJobsAndDeviceTime) {
  Open();
  const Principal carol{.user = "carol",
                        .role = Role::kUser,
                        .limits = {.max_priority = 1, .max_jobs = 1, .max_device_seconds = 2}};
  v1::SubmitJobRequest high = Sim(1, 1);
  high.set_priority(5);
  auto refused = driver_->Submit(carol, high);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("priority 5 is above your limit of 1"));
  auto job = driver_->Submit(carol, Sim(1, 3));
  ASSERT_TRUE(job.ok()) << job.status();
  auto second = driver_->Submit(carol, Sim(1, 1));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("you have 1 queued or running jobs"));

  // Each measure stage reports 1.5 s of device time: the second one crosses the 2 s limit.
  const std::string agent = RegisterAgent("h1");
  for (int i = 0; i < 12; ++i) {
    auto got = AcquireNow(*driver_, agent);
    if (got.empty()) break;
    v1::StageResult r;
    r.set_lease_id(got[0].lease_id());
    r.mutable_timing()->set_start_unix_micros(1'000'000);
    r.mutable_timing()->set_end_unix_micros(2'500'000);
    ReportOk(*driver_, agent, r);
  }
  auto done = driver_->Get(carol, job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(done->failure_reason(), HasSubstr("used its device time limit of 2 s"));
  EXPECT_EQ(done->records(), 2);
  // Its slot is free again.
  EXPECT_TRUE(driver_->Submit(carol, Sim(1, 1)).ok());
}

TEST_F(DriverTest, UploadsWithExternalDataAreRefusedWithoutReadingAnything) {
  Open();
  // A model whose only initializer lives in an external file next to it.
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  onnx::TensorProto* w = m.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::INT64);
  w->add_dims(2);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* location = w->add_external_data();
  location->set_key("location");
  location->set_value("../../etc/passwd");
  const std::string model = m.SerializeAsString();
  v1::SubmitJobRequest r;
  r.set_onnx_model(model);
  r.set_trials(1);
  auto st = driver_->Submit(kAlice, r);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.status().message(), HasSubstr("model: initializer 'w' uses external data"));
  EXPECT_THAT(st.status().message(), ::testing::Not(HasSubstr("passwd")));
}

TEST_F(DriverTest, ResultsAreFilteredByTheJobsUniqueIdNotItsShortId) {
  // Records of another daemon's j1 (imported, or from before a lost state) on the same task.
  {
    auto records = tune::OpenSqliteRecordStore((dir_ / "state.db.records").string());
    ASSERT_TRUE(records.ok());
    tune::Record old;
    old.task_key = "simulated:j1:t0";
    old.template_name = "simulated";
    old.target_key = "cpu:avx2:test";
    old.costs = {1e-6};
    old.job_id = "j1";
    ASSERT_TRUE((*records)->Append({old, old}).ok());
  }
  Open();
  auto job = driver_->Submit(kAlice, Sim(1, 2));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->id(), "j1");
  EXPECT_EQ(Serve(RegisterAgent("h1")), 8);
  auto result = driver_->Result(kAlice, job->id());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(std::count(result->records_jsonl().begin(), result->records_jsonl().end(), '\n'), 2);
  EXPECT_THAT(result->records_jsonl(), ::testing::Not(HasSubstr("\"job_id\":\"j1\"")));
  EXPECT_EQ(driver_->Get(kAlice, job->id())->records(), 2);
}

}  // namespace
}  // namespace loom::service
