// Tests of the agent against an in-process fake AgentService (a real gRPC server on a loopback
// port that hands out stages and records what the agent sends). The fake stands for the daemon,
// so these tests cover the agent's protocol: registration, heartbeats, leasing, reporting, retry
// while the daemon is down, cancellation and shutdown.
#include "loom/agent/agent.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/tune/task_session.h"

namespace loom::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kToken[] = "s3cret";

class FakeAgentService final : public v1::AgentService::Service {
 public:
  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad token"};
    absl::MutexLock lock(&mu_);
    registers_.push_back(*req);
    current_id_ = absl::StrCat("agent-", registers_.size());
    resp->set_agent_id(current_id_);
    resp->set_session(absl::StrCat("secret-", registers_.size()));
    resp->set_heartbeat_interval_ms(50);
    resp->set_lease_timeout_ms(1000);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad token"};
    absl::MutexLock lock(&mu_);
    heartbeats_.push_back(*req);
    if (reregister_next_ || req->agent_id() != current_id_) {
      reregister_next_ = false;
      resp->set_reregister(true);
    }
    for (const std::string& id : cancel_) resp->add_cancelled_lease_ids(id);
    return grpc::Status::OK;
  }
  grpc::Status AcquireStages(grpc::ServerContext* ctx, const v1::AcquireStagesRequest* req,
                             v1::AcquireStagesResponse* resp) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad token"};
    absl::MutexLock lock(&mu_);
    acquires_.push_back(*req);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !queue_.empty() || !revoke_.empty();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready),
                         std::min(absl::Milliseconds(req->wait_ms()), absl::Milliseconds(200)));
    for (const std::string& id : revoke_) resp->add_cancelled_lease_ids(id);
    revoke_.clear();
    while (!queue_.empty()) {
      *resp->add_stages() = queue_.front();
      queue_.pop_front();
    }
    return grpc::Status::OK;
  }
  grpc::Status ReportStage(grpc::ServerContext* ctx, const v1::ReportStageRequest* req,
                           v1::ReportStageResponse* resp) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad token"};
    absl::MutexLock lock(&mu_);
    if (refuse_reports_) return {grpc::StatusCode::UNAVAILABLE, "daemon shutting down"};
    reports_.push_back(*req);
    resp->set_accepted(true);
    return grpc::Status::OK;
  }

  grpc::Status Deregister(grpc::ServerContext* ctx, const v1::DeregisterRequest* req,
                          v1::DeregisterResponse* resp) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad token"};
    absl::MutexLock lock(&mu_);
    deregisters_.push_back(*req);
    reports_at_deregister_ = static_cast<int>(reports_.size());
    resp->set_stages_requeued(1);
    return grpc::Status::OK;
  }

  void Push(v1::StageRequest stage) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(stage));
  }
  void Cancel(const std::string& lease) {
    absl::MutexLock lock(&mu_);
    cancel_.push_back(lease);
  }
  // Revokes `lease` through the next AcquireStages answer (not the heartbeat).
  void Revoke(const std::string& lease) {
    absl::MutexLock lock(&mu_);
    revoke_.push_back(lease);
  }
  // Answers ReportStage with UNAVAILABLE, as a daemon that is shutting down does.
  void RefuseReports(bool refuse) {
    absl::MutexLock lock(&mu_);
    refuse_reports_ = refuse;
  }
  void AskReregister() {
    absl::MutexLock lock(&mu_);
    reregister_next_ = true;
  }
  // Waits until `pred` holds on this fake's state (under its lock); false after `timeout`.
  template <typename Pred>
  bool WaitFor(Pred pred, absl::Duration timeout = absl::Seconds(20)) {
    absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      {
        absl::MutexLock lock(&mu_);
        if (pred(*this)) return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
  template <typename F>
  auto With(F f) {
    absl::MutexLock lock(&mu_);
    return f(*this);
  }

  std::vector<v1::RegisterRequest> registers_;
  std::vector<v1::HeartbeatRequest> heartbeats_;
  std::vector<v1::AcquireStagesRequest> acquires_;
  std::vector<v1::ReportStageRequest> reports_;
  std::vector<v1::DeregisterRequest> deregisters_;
  int reports_at_deregister_ = -1;  // reports received before the (last) Deregister
  std::vector<std::string> auth_;
  std::string current_id_;

 private:
  std::vector<std::string> revoke_ ABSL_GUARDED_BY(mu_);
  bool Authorized(grpc::ServerContext* ctx) {
    auto it = ctx->client_metadata().find("authorization");
    std::string value =
        it == ctx->client_metadata().end() ? "" : std::string(it->second.data(), it->second.size());
    absl::MutexLock lock(&mu_);
    auth_.push_back(value);
    return value == absl::StrCat("Bearer ", kToken);
  }

  absl::Mutex mu_;
  std::deque<v1::StageRequest> queue_;
  std::vector<std::string> cancel_;
  bool reregister_next_ = false;
  bool refuse_reports_ = false;
};

// A gRPC server around the fake that can be stopped and restarted on the same port.
class FakeDaemon {
 public:
  void Start(int port = 0) {
    grpc::ServerBuilder b;
    b.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void Stop() {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    server_->Wait();
    server_.reset();
  }
  ~FakeDaemon() {
    if (server_) Stop();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }
  FakeAgentService& fake() { return service_; }

 private:
  FakeAgentService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

int LastAllowedCpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof(set), &set);
  int last = 0;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) last = i;
  }
  return last;
}
std::string DeviceName() { return absl::StrCat("cpu:", LastAllowedCpu()); }

v1::StageRequest Simulated(const std::string& lease, double seconds, int cpu_slots = 1,
                           const std::string& device = "") {
  v1::StageRequest r;
  r.set_lease_id(lease);
  r.set_job_id("job-1");
  r.set_kind(v1::STAGE_KIND_SIMULATED);
  r.set_cpu_slots(cpu_slots);
  r.set_device(device);
  r.mutable_simulated()->set_seconds(seconds);
  return r;
}

v1::StageRequest Propose(const std::string& lease) {
  v1::StageRequest r;
  r.set_lease_id(lease);
  r.set_job_id("job-1");
  r.set_kind(v1::STAGE_KIND_PROPOSE);
  r.set_cpu_slots(1);
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = 4, w.n = 16, w.k = 32, w.trans_b = true;
  r.mutable_task()->set_workload_key(graph::WorkloadKey(w));
  r.mutable_task()->set_target_kind("cpu");
  r.mutable_tuner()->set_kind("xgb");
  r.mutable_tuner()->set_batch_size(3);
  r.mutable_tuner()->set_trials(10);
  r.mutable_tuner()->set_no_prior(true);
  // The state of the daemon's session of the task before its first proposal (service::JobDriver).
  graph::Task task;
  task.workload = w;
  task.key = r.task().workload_key();
  task.hash = graph::StableHash(task.key);
  auto session = tune::TaskSession::Create(task, ops::HostCpuTarget(),
                                           tune::TaskTunerOptions{.trials = 10,
                                                                  .batch_size = 3,
                                                                  .tuner = {.kind = "xgb"},
                                                                  .job_id = r.job_id(),
                                                                  .use_prior = false,
                                                                  .measure_default = false,
                                                                  .tuner_elsewhere = true},
                                           nullptr);
  EXPECT_TRUE(session.ok()) << session.status();
  if (session.ok()) r.mutable_propose()->set_session((*session)->Save().SerializeAsString());
  return r;
}

// The most stages whose lease id starts with `prefix` that ran at once (from their reports).
int MaxOverlap(FakeAgentService& f, const std::string& prefix) {
  std::vector<std::pair<int64_t, int>> events;
  f.With([&](FakeAgentService& s) {
    for (const auto& r : s.reports_) {
      if (r.result().lease_id().rfind(prefix, 0) != 0) continue;
      events.push_back({r.result().timing().start_unix_micros(), 1});
      events.push_back({r.result().timing().end_unix_micros(), -1});
    }
    return 0;
  });
  std::sort(events.begin(), events.end());  // an end sorts before a start at the same time
  int live = 0, peak = 0;
  for (const auto& [t, d] : events) peak = std::max(peak, live += d);
  return peak;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override { daemon_.Start(); }
  void TearDown() override { StopAgent(); }

  AgentOptions Options() {
    AgentOptions o;
    o.server = daemon_.address();
    o.token = kToken;
    o.name = "test-agent";
    o.cpu_slots = 2;
    o.executor.cache_dir = absl::StrCat(::testing::TempDir(), "/loom_agent_test_", getpid());
    o.executor.devices = {*ParseDevice(DeviceName())};
    o.executor.measure.worker_command = {std::filesystem::read_symlink("/proc/self/exe").string(),
                                         tune::kMeasureWorkerArg};
    o.acquire_wait = absl::Milliseconds(200);
    o.rpc_timeout = absl::Seconds(1);
    o.retry_initial = absl::Milliseconds(20);
    o.retry_max = absl::Milliseconds(200);
    o.shutdown_grace = absl::Seconds(2);
    o.log = [this](const std::string& line) {
      absl::MutexLock lock(&log_mu_);
      log_.push_back(line);
    };
    return o;
  }

  void StartAgent(AgentOptions o) {
    auto a = Agent::Create(std::move(o));
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = *std::move(a);
    runner_ = std::thread([this] { run_status_ = agent_->Run(); });
  }
  void StopAgent() {
    if (agent_ == nullptr) return;
    agent_->Shutdown();
    if (runner_.joinable()) runner_.join();
  }
  bool Logged(const std::string& event) {
    absl::MutexLock lock(&log_mu_);
    return std::any_of(log_.begin(), log_.end(),
                       [&](const std::string& l) { return l.find(event) != std::string::npos; });
  }
  const v1::StageResult* Report(const std::string& lease) {
    for (const auto& r : daemon_.fake().reports_) {
      if (r.result().lease_id() == lease) return &r.result();
    }
    return nullptr;
  }

  // The agent's count of delivered reports once it reaches `n` (10 s at most): the agent counts
  // a delivery when the call returns, after the daemon already holds the report.
  int64_t DeliveredReports(int64_t n) {
    const absl::Time end = absl::Now() + absl::Seconds(10);
    while (agent_->stats().reports_delivered < n && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return agent_->stats().reports_delivered;
  }

  // Declared before the agent, whose log callback writes here, so they outlive it.
  absl::Mutex log_mu_;
  std::vector<std::string> log_;
  FakeDaemon daemon_;
  std::unique_ptr<Agent> agent_;
  std::thread runner_;
  absl::Status run_status_;
};

TEST_F(AgentTest, RegistersHeartbeatsRunsStagesAndReports) {
  StartAgent(Options());
  FakeAgentService& f = daemon_.fake();
  f.Push(Simulated("sim-1", 0.05));
  f.Push(Propose("prop-1"));
  ASSERT_TRUE(
      f.WaitFor([](auto& s) { return s.reports_.size() >= 2 && s.heartbeats_.size() >= 2; }));

  f.With([&](FakeAgentService& s) {
    ASSERT_EQ(s.registers_.size(), 1u);
    const v1::RegisterRequest& reg = s.registers_[0];
    EXPECT_EQ(reg.hostname(), "test-agent");
    EXPECT_EQ(reg.cpu_slots(), 2);
    ASSERT_EQ(reg.devices_size(), 1);
    EXPECT_EQ(reg.devices(0).name(), DeviceName());
    EXPECT_EQ(reg.devices(0).kind(), "cpu");
    EXPECT_EQ(reg.devices(0).target_key(), ops::HostCpuTarget().Key());
    EXPECT_FALSE(reg.version().empty());
    for (const std::string& a : s.auth_) EXPECT_EQ(a, "Bearer s3cret");
    EXPECT_EQ(s.heartbeats_.back().agent_id(), "agent-1");
    // Every call that names the agent shows its registration's secret.
    for (const auto& h : s.heartbeats_) EXPECT_EQ(h.session(), "secret-1");
    ASSERT_FALSE(s.acquires_.empty());
    for (const auto& a : s.acquires_) {
      EXPECT_EQ(a.agent_id(), "agent-1");
      EXPECT_EQ(a.session(), "secret-1");
    }
    for (const auto& r : s.reports_) {
      EXPECT_EQ(r.agent_id(), "agent-1");
      EXPECT_EQ(r.session(), "secret-1");
    }
    const v1::StageResult* sim = Report("sim-1");
    ASSERT_NE(sim, nullptr);
    EXPECT_THAT(sim->error(), IsEmpty());
    EXPECT_GE(sim->timing().end_unix_micros() - sim->timing().start_unix_micros(), 50000);
    EXPECT_EQ(sim->timing().resource(), "test-agent/cpu");
    const v1::StageResult* prop = Report("prop-1");
    ASSERT_NE(prop, nullptr);
    EXPECT_THAT(prop->error(), IsEmpty());
    EXPECT_EQ(prop->propose().config_indices_size(), 3);
  });
  EXPECT_EQ(DeliveredReports(2), 2);
  AgentStats st = agent_->stats();
  EXPECT_EQ(st.agent_id, "agent-1");
  EXPECT_EQ(st.stages_finished, 2);
  EXPECT_TRUE(Logged("event=registered agent_id=agent-1"));
  EXPECT_TRUE(Logged("event=stage_done lease=prop-1 kind=propose"));
}

TEST_F(AgentTest, RunningLeasesAreHeartbeatedAndCancelledOnesAbandoned) {
  StartAgent(Options());
  FakeAgentService& f = daemon_.fake();
  f.Push(Simulated("long", 30));
  ASSERT_TRUE(f.WaitFor([](auto& s) {
    return !s.heartbeats_.empty() && s.heartbeats_.back().running_lease_ids_size() == 1 &&
           s.heartbeats_.back().running_lease_ids(0) == "long";
  }));
  f.Cancel("long");
  absl::Time end = absl::Now() + absl::Seconds(10);
  while (agent_->stats().stages_abandoned < 1 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(agent_->stats().stages_abandoned, 1);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(f.With([](auto& s) { return s.reports_.size(); }), 0u);
  EXPECT_TRUE(Logged("event=stage_abandoned lease=long"));
}

TEST_F(AgentTest, ShutdownDeliversFinishedReportsThenDeregistersOnce) {
  StartAgent(Options());
  FakeAgentService& f = daemon_.fake();
  f.Push(Simulated("quick", 0.01));
  f.Push(Simulated("long", 30));
  ASSERT_TRUE(f.WaitFor([](auto& s) {
    return s.reports_.size() == 1 && !s.heartbeats_.empty() &&
           s.heartbeats_.back().running_lease_ids_size() == 1;
  }));
  StopAgent();
  EXPECT_TRUE(run_status_.ok()) << run_status_;
  f.With([](FakeAgentService& s) {
    ASSERT_EQ(s.deregisters_.size(), 1u);
    EXPECT_EQ(s.deregisters_[0].agent_id(), "agent-1");
    EXPECT_EQ(s.deregisters_[0].session(), "secret-1");
    EXPECT_EQ(s.deregisters_[0].reason(), "the agent stopped");
    // After the finished stage's report: the daemon requeues only what was not delivered.
    EXPECT_EQ(s.reports_at_deregister_, 1);
    EXPECT_EQ(s.reports_.size(), 1u);
  });
  EXPECT_EQ(agent_->stats().stages_abandoned, 1);
  EXPECT_TRUE(Logged("event=deregistered agent_id=agent-1 stages_requeued=1"));
}

TEST_F(AgentTest, AStageRevokedThroughTheLongPollStopsAtOnce) {
  StartAgent(Options());
  FakeAgentService& f = daemon_.fake();
  f.Push(Simulated("long", 30));
  ASSERT_TRUE(f.WaitFor([](auto& s) {
    return !s.heartbeats_.empty() && s.heartbeats_.back().running_lease_ids_size() == 1;
  }));
  const absl::Time revoked = absl::Now();
  f.Revoke("long");
  while (agent_->stats().stages_abandoned < 1 && absl::Now() < revoked + absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(agent_->stats().stages_abandoned, 1);
  EXPECT_LT(absl::Now() - revoked, absl::Seconds(1));
  EXPECT_TRUE(Logged("event=stage_cancel lease=long"));
  EXPECT_EQ(f.With([](auto& s) { return s.reports_.size(); }), 0u);
}

TEST_F(AgentTest, ReregistersWhenTold) {
  StartAgent(Options());
  FakeAgentService& f = daemon_.fake();
  ASSERT_TRUE(f.WaitFor([](auto& s) { return s.heartbeats_.size() >= 1; }));
  f.AskReregister();
  ASSERT_TRUE(f.WaitFor([](auto& s) {
    return s.registers_.size() == 2 && !s.heartbeats_.empty() &&
           s.heartbeats_.back().agent_id() == "agent-2";
  }));
  f.Push(Simulated("after", 0.01));
  ASSERT_TRUE(f.WaitFor([](auto& s) {
    return s.reports_.size() == 1 && s.acquires_.back().agent_id() == "agent-2";
  }));
  f.With([](FakeAgentService& s) {
    // The new registration's id and secret, together.
    EXPECT_EQ(s.reports_[0].agent_id(), "agent-2");
    EXPECT_EQ(s.reports_[0].session(), "secret-2");
    EXPECT_EQ(s.heartbeats_.back().session(), "secret-2");
    for (const auto& a : s.acquires_) {
      EXPECT_EQ(a.session(), a.agent_id() == "agent-1" ? "secret-1" : "secret-2");
    }
  });
  EXPECT_EQ(agent_->stats().registrations, 2);
}

// The daemon goes away while a stage runs: the finished result is kept, retried, and delivered
// once the daemon is back on the same port.
TEST_F(AgentTest, KeepsResultAndRetriesWhileDaemonIsDown) {
  StartAgent(Options());
  FakeAgentService& f = daemon_.fake();
  // The daemon goes away while the stage runs: first it refuses reports, as a daemon shutting
  // down does (so the stage's end cannot race the test), then it stops altogether.
  f.RefuseReports(true);
  f.Push(Simulated("survivor", 0.1));
  auto wait_for_retries = [&](int64_t n) {
    const absl::Time end = absl::Now() + absl::Seconds(10);
    while (agent_->stats().report_retries < n && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  };
  wait_for_retries(1);
  ASSERT_GE(agent_->stats().report_retries, 1);
  const int port = daemon_.port();
  daemon_.Stop();
  const int64_t refused = agent_->stats().report_retries;
  wait_for_retries(refused + 2);
  EXPECT_EQ(agent_->stats().stages_finished, 1);
  EXPECT_GE(agent_->stats().report_retries, refused + 2);
  EXPECT_EQ(agent_->stats().reports_delivered, 0);
  EXPECT_EQ(f.With([](auto& s) { return s.reports_.size(); }), 0u);

  f.RefuseReports(false);
  daemon_.Start(port);
  ASSERT_TRUE(f.WaitFor([](auto& s) { return s.reports_.size() == 1; }));
  EXPECT_EQ(f.With([](auto& s) { return s.reports_[0].result().lease_id(); }), "survivor");
  EXPECT_THAT(f.With([](auto& s) { return s.reports_[0].result().error(); }), IsEmpty());
  EXPECT_EQ(DeliveredReports(1), 1);
  EXPECT_TRUE(Logged("event=report_retry lease=survivor"));
}

// CPU stages share the agent's slots; stages of one device never overlap.
TEST_F(AgentTest, SlotsAndDevicesBoundConcurrency) {
  StartAgent(Options());  // 2 CPU slots
  FakeAgentService& f = daemon_.fake();
  for (int i = 0; i < 3; ++i) f.Push(Simulated(absl::StrCat("cpu-", i), 0.3, 1));
  for (int i = 0; i < 2; ++i) f.Push(Simulated(absl::StrCat("dev-", i), 0.2, 0, DeviceName()));
  ASSERT_TRUE(f.WaitFor([](auto& s) { return s.reports_.size() == 5; }));
  EXPECT_EQ(MaxOverlap(f, "cpu-"), 2);
  EXPECT_EQ(MaxOverlap(f, "dev-"), 1);
}

// Under `uncontrolled` the daemon grants past capacity: the agent starts every such stage at once.
TEST_F(AgentTest, OversubscribedStagesStartAtOnce) {
  StartAgent(Options());  // 2 CPU slots
  FakeAgentService& f = daemon_.fake();
  for (int i = 0; i < 3; ++i) {
    v1::StageRequest r = Simulated(absl::StrCat("cpu-", i), 0.4, 1);
    r.set_oversubscribed(true);
    f.Push(r);
  }
  for (int i = 0; i < 2; ++i) {
    v1::StageRequest r = Simulated(absl::StrCat("dev-", i), 0.4, 0, DeviceName());
    r.set_oversubscribed(true);
    f.Push(r);
  }
  ASSERT_TRUE(f.WaitFor([](auto& s) { return s.reports_.size() == 5; }));
  EXPECT_EQ(MaxOverlap(f, "cpu-"), 3);
  EXPECT_EQ(MaxOverlap(f, "dev-"), 2);
}

int FirstAllowedCpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof(set), &set);
  int first = 0;
  while (first < CPU_SETSIZE - 1 && !CPU_ISSET(first, &set)) ++first;
  return first;
}

// 1 general slot + the device's core: two CPU stages run at once while the device is idle, and a
// measurement moves the one on the device's core to the general slot first.
TEST_F(AgentTest, LentDeviceCoreRunsACpuStageUntilTheDeviceMeasures) {
  AgentOptions o = Options();
  o.cpu_slots = 1;
  o.executor.cpu_cores = {FirstAllowedCpu()};
  o.lend_device_cores = true;
  StartAgent(std::move(o));
  FakeAgentService& f = daemon_.fake();
  ASSERT_TRUE(f.WaitFor([](auto& s) { return !s.registers_.empty(); }));
  f.With([](FakeAgentService& s) {
    EXPECT_EQ(s.registers_[0].cpu_slots(), 1);
    EXPECT_EQ(s.registers_[0].devices(0).lends_cpu_slots(), 1);
    return 0;
  });
  for (int i = 0; i < 2; ++i) f.Push(Simulated(absl::StrCat("cpu-", i), 0.6, 1));
  ASSERT_TRUE(f.WaitFor([this](auto&) { return agent_->stats().stages_started == 2; }));
  absl::SleepFor(absl::Milliseconds(100));
  f.Push(Simulated("dev-0", 0.1, 0, DeviceName()));
  ASSERT_TRUE(f.WaitFor([](auto& s) { return s.reports_.size() == 3; }));
  EXPECT_EQ(MaxOverlap(f, "cpu-"), 2);
  EXPECT_TRUE(Logged("event=vacate_device device=" + DeviceName() + " stages_moved=1"));
}

TEST_F(AgentTest, WithoutLendingTheDevicesCoreRunsNoCpuStage) {
  AgentOptions o = Options();
  o.cpu_slots = 1;
  o.executor.cpu_cores = {FirstAllowedCpu()};
  StartAgent(std::move(o));
  FakeAgentService& f = daemon_.fake();
  for (int i = 0; i < 2; ++i) f.Push(Simulated(absl::StrCat("cpu-", i), 0.2, 1));
  ASSERT_TRUE(f.WaitFor([](auto& s) { return s.reports_.size() == 2; }));
  EXPECT_EQ(MaxOverlap(f, "cpu-"), 1);
  f.With([](FakeAgentService& s) {
    EXPECT_EQ(s.registers_[0].devices(0).lends_cpu_slots(), 0);
    return 0;
  });
}

TEST_F(AgentTest, WrongTokenIsRefusedForGood) {
  AgentOptions o = Options();
  o.token = "wrong";
  auto a = Agent::Create(std::move(o));
  ASSERT_TRUE(a.ok());
  absl::Status st = (*a)->Run();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(st.message(), HasSubstr("refused this agent: bad token"));
}

TEST_F(AgentTest, ShutdownReturnsPromptlyAndRetriesRegistrationUntilThen) {
  daemon_.Stop();  // nobody listening: the agent keeps trying to register
  StartAgent(Options());
  absl::SleepFor(absl::Milliseconds(300));
  absl::Time start = absl::Now();
  StopAgent();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_TRUE(run_status_.ok()) << run_status_;
  EXPECT_EQ(agent_->stats().registrations, 0);
  EXPECT_TRUE(Logged("event=register_retry"));
}

TEST(AgentOptionsTest, BadOptionsAreRejected) {
  AgentOptions o;
  EXPECT_THAT(Agent::Create(o).status().message(), HasSubstr("--server"));
  o.server = "127.0.0.1:1";
  o.cpu_slots = -1;
  EXPECT_EQ(Agent::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.cpu_slots = 1;
  // A cuda device is probed at Create: a worker that never answers fails it, naming the device.
  o.executor.devices = {*ParseDevice("cuda:0")};
  o.executor.cuda_measure.worker_command = {"/bin/false"};
  absl::Status cuda = Agent::Create(o).status();
  EXPECT_EQ(cuda.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(cuda.message(), HasSubstr("device cuda:0: "));
  o.executor.devices.clear();
  o.tls_ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(Agent::Create(o).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace loom::agent

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kMeasureWorkerArg) {
    return loom::tune::RunMeasureWorker(0, 1);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
