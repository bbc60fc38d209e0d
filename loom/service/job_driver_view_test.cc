// JobDriver::View / Detail / Running (job_driver_view.cc): what the web view's snapshots hold,
// under a virtual clock so stage times are exact.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "loom/service/job_driver.h"
#include "loom/service/job_progress.h"
#include "loom/v1/version.h"

namespace loom::service {
namespace {

using ::testing::HasSubstr;

const Principal kAlice{"alice", Role::kUser};
const Principal kBob{"bob", Role::kUser};
const Principal kAdmin{"root", Role::kAdmin};
const Principal kAgent{.user = "agent", .role = Role::kAgent, .anonymous = true};

v1::SubmitJobRequest Sim(int tasks, int rounds) {
  v1::SubmitJobRequest r;
  r.set_target("cpu");
  r.set_latency_goal_ms(0);
  v1::SimulatedWorkload* w = r.mutable_simulated();
  w->set_tasks(tasks);
  w->set_rounds(rounds);
  return r;
}

class DriverViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("loom_driver_view_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto state = OpenSqliteStateStore((dir_ / "state.db").string());
    ASSERT_TRUE(state.ok()) << state.status();
    auto records = tune::OpenSqliteRecordStore((dir_ / "state.db.records").string());
    ASSERT_TRUE(records.ok()) << records.status();
    DriverOptions o;
    o.log_to_stderr = false;
    auto d = JobDriver::Create(o, *std::move(state), *std::move(records), &clock_);
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = *std::move(d);
  }
  void TearDown() override {
    driver_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string Register(const std::string& host) {
    v1::RegisterRequest r;
    r.set_version(v1::kLoomVersion);
    r.set_hostname(host);
    r.set_cpu_slots(2);
    v1::DeviceInfo* d = r.add_devices();
    d->set_name("cpu:1");
    d->set_kind("cpu");
    d->set_isa("avx2");
    d->set_target_key("cpu:avx2:test");
    auto got = driver_->Register(kAgent, r);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return "";
    sessions_[got->agent_id()] = got->session();
    return got->agent_id();
  }

  // Takes the agent's granted stages; each is reported `seconds` of virtual time later.
  int Serve(const std::string& agent, absl::Duration seconds, int max_stages) {
    int n = 0;
    while (n < max_stages) {
      v1::AcquireStagesRequest a;
      a.set_agent_id(agent);
      a.set_session(sessions_[agent]);
      a.set_wait_ms(0);
      auto got = driver_->Acquire(kAgent, a);
      if (!got.ok() || got->stages().empty()) break;
      for (const v1::StageRequest& s : got->stages()) {
        clock_.Advance(seconds);
        v1::ReportStageRequest r;
        r.set_agent_id(agent);
        r.set_session(sessions_[agent]);
        r.mutable_result()->set_lease_id(s.lease_id());
        EXPECT_TRUE(driver_->Report(kAgent, r).ok());
        ++n;
      }
    }
    return n;
  }

  std::filesystem::path dir_;
  base::VirtualClock clock_{absl::FromUnixSeconds(1'700'000'000)};
  std::unique_ptr<JobDriver> driver_;
  std::map<std::string, std::string> sessions_;  // agent id -> RegisterResponse.session
};

TEST_F(DriverViewTest, UsersSeeTheirJobsAdminsEverythingAgentsNothing) {
  ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 1)).ok());
  ASSERT_TRUE(driver_->Submit(kBob, Sim(1, 1)).ok());
  auto alice = driver_->View(kAlice, {});
  ASSERT_TRUE(alice.ok());
  ASSERT_EQ(alice->jobs.size(), 1u);
  EXPECT_EQ(alice->jobs[0].owner(), "alice");
  EXPECT_TRUE(alice->agents.empty());
  EXPECT_EQ(alice->records_written, 0);
  auto admin = driver_->View(kAdmin, {.include_jobs = false});
  ASSERT_TRUE(admin.ok());
  EXPECT_TRUE(admin->jobs.empty());
  EXPECT_EQ(admin->jobs_by_state.at(v1::JOB_STATE_QUEUED), 2);
  EXPECT_THAT(driver_->View(kAgent, {}).status().message(), HasSubstr("agent tokens"));
  EXPECT_EQ(driver_->View(kAgent, {}).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(driver_->Running());
  EXPECT_EQ(driver_->Detail(kBob, "j1").status().code(), absl::StatusCode::kNotFound);

  // max_jobs keeps the newest and counts the others.
  ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 1)).ok());
  auto newest = driver_->View(kAdmin, {.max_jobs = 2});
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->jobs.size(), 2u);
  EXPECT_EQ(newest->jobs[0].id(), "j2");
  EXPECT_EQ(newest->jobs[1].id(), "j3");
  EXPECT_EQ(newest->jobs_not_shown, 1);
  EXPECT_EQ(newest->latency_goal_ms.count("j1"), 0u);
  EXPECT_EQ(newest->jobs_by_state.at(v1::JOB_STATE_QUEUED), 3);
}

TEST_F(DriverViewTest, EndedStagesKeepTheirTimesAndAgentAndAgeOutOfTheWindow) {
  auto job = driver_->Submit(kAlice, Sim(1, 2));
  ASSERT_TRUE(job.ok());
  const std::string agent = Register("host-a");
  const absl::Time t0 = clock_.Now();
  // Simulated jobs run their stages on CPU slots (kind simulated), 2 s each, one at a time.
  EXPECT_EQ(Serve(agent, absl::Seconds(2), 100), 2 * 4);
  auto v = driver_->View(kAdmin, {.history = absl::Hours(1)});
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->stages.size(), 8u);
  for (size_t i = 0; i < v->stages.size(); ++i) {
    const StageSpan& s = v->stages[i];
    EXPECT_EQ(s.job_id, job->id());
    EXPECT_EQ(s.agent_id, agent);
    EXPECT_FALSE(s.running);
    EXPECT_EQ(s.end - s.start, absl::Seconds(2)) << i;
    EXPECT_EQ(s.start, t0 + absl::Seconds(2 * static_cast<double>(i))) << i;
  }
  int64_t ended = 0;
  for (const auto& [key, n] : v->stages_ended) ended += n;
  EXPECT_EQ(ended, 8);
  // The scheduler's figures come as GetStats reports them.
  EXPECT_EQ(v->stats.grants(), 8);
  EXPECT_GT(v->stats.grants_per_second(), 0);
  ASSERT_EQ(v->stats.devices_size(), 1);
  EXPECT_EQ(v->stats.devices(0).name(), "cpu:1");
  // The job carries its progress figures (job_progress.h), as the gRPC replies do: a simulated
  // job's trials are its rounds; ended, so no ETA; the best latency is ComputeJobProgress's.
  ASSERT_EQ(v->jobs.size(), 1u);
  EXPECT_EQ(v->jobs[0].trials_done(), 2);
  EXPECT_EQ(v->jobs[0].trials_total(), 2);
  EXPECT_FALSE(v->jobs[0].has_eta_seconds());
  auto in = driver_->ProgressInputOf(kAdmin, job->id());
  ASSERT_TRUE(in.ok());
  const JobProgress p = ComputeJobProgress(*in);
  ASSERT_TRUE(p.best_latency_ms.has_value());
  EXPECT_EQ(v->jobs[0].best_latency_ms(), *p.best_latency_ms);
  EXPECT_EQ(v->dispatch_seconds.count, 8);
  EXPECT_EQ(v->records_written, 2);
  ASSERT_EQ(v->agents.size(), 1u);
  EXPECT_EQ(v->agents[0].hostname, "host-a");
  EXPECT_EQ(v->agents[0].devices, std::vector<std::string>{"cpu:1"});
  // Stages that ended before the window are left out: the last 5 s (from 11 to 16 s after the
  // first grant) hold the three that ended at 12, 14 and 16 s.
  auto recent = driver_->View(kAdmin, {.history = absl::Seconds(5)});
  ASSERT_TRUE(recent.ok());
  ASSERT_EQ(recent->stages.size(), 3u);
  EXPECT_EQ(recent->stages[0].end, t0 + absl::Seconds(12));

  auto d = driver_->Detail(kAlice, job->id());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->job.trials_done(), 2);
  EXPECT_EQ(d->job.trials_total(), 2);
  EXPECT_EQ(d->stage_count.at("simulated"), 8);
  EXPECT_DOUBLE_EQ(d->stage_seconds.at("simulated"), 16);
}

TEST_F(DriverViewTest, AGrantedStageShowsAsRunningUntilNowUntilReported) {
  ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 1)).ok());
  // The stage is granted when the agent registers; delivered by its poll; not reported yet.
  const absl::Time granted = clock_.Now();
  const std::string agent = Register("host-a");
  clock_.Advance(absl::Seconds(1));
  v1::HeartbeatRequest hb;
  hb.set_agent_id(agent);
  hb.set_session(sessions_[agent]);
  ASSERT_TRUE(driver_->Heartbeat(kAgent, hb).ok());
  v1::AcquireStagesRequest a;
  a.set_agent_id(agent);
  a.set_session(sessions_[agent]);
  a.set_wait_ms(0);
  auto got = driver_->Acquire(kAgent, a);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->stages_size(), 1);
  clock_.Advance(absl::Seconds(3));
  auto v = driver_->View(kAdmin, {});
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->stages.size(), 1u);
  EXPECT_TRUE(v->stages[0].running);
  EXPECT_EQ(v->stages[0].end, clock_.Now());
  EXPECT_EQ(v->stages[0].start, granted);
  EXPECT_EQ(v->stages[0].agent_id, agent);
  // The granted stage waits in no queue; the job shows one round of one to go.
  for (const v1::QueueStats& q : v->stats.queues()) EXPECT_EQ(q.ready(), 0);
  EXPECT_TRUE(v->queued_by_kind.empty());
  ASSERT_EQ(v->jobs.size(), 1u);
  EXPECT_EQ(v->jobs[0].trials_done(), 0);
  EXPECT_EQ(v->jobs[0].trials_total(), 1);
}

// Every admin reader shares one snapshot: rebuilt when it is a second old and the state changed,
// or when it is 10 s old; the Gantt's history is shared in chunks, not copied, and ages out.
TEST_F(DriverViewTest, SharedViewIsOneSnapshotRebuiltAtMostOnceASecondOnChange) {
  EXPECT_EQ(driver_->SharedView(kAlice).status().code(), absl::StatusCode::kPermissionDenied);
  auto job = driver_->Submit(kAlice, Sim(1, 70));  // 280 stages: more than a chunk
  ASSERT_TRUE(job.ok());
  const std::string agent = Register("host-a");
  auto first = driver_->SharedView(kAdmin);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_GE(Serve(agent, absl::Milliseconds(100), 1), 1);
  auto again = driver_->SharedView(kAdmin);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), first->get()) << "rebuilt within a second";
  clock_.Advance(absl::Milliseconds(950));
  auto changed = driver_->SharedView(kAdmin);
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(changed->get(), first->get());
  EXPECT_EQ((*changed)->dispatch_seconds.count, 1);  // the one stage delivered so far
  // Nothing changes: the same snapshot until it is 10 s old.
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(driver_->SharedView(kAdmin)->get(), changed->get());
  clock_.Advance(absl::Seconds(6));
  EXPECT_NE(driver_->SharedView(kAdmin)->get(), changed->get());

  EXPECT_EQ(Serve(agent, absl::Milliseconds(100), 1000), 279);
  clock_.Advance(absl::Seconds(11));
  auto all = driver_->SharedView(kAdmin);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ((*all)->ended_chunks.size(), 1u);
  EXPECT_EQ((*all)->ended_chunks[0]->size(), kGanttChunk);
  EXPECT_EQ((*all)->stages.size(), 280 - kGanttChunk);
  int visited = 0;
  ForEachStage(**all, [&](const StageSpan& s) {
    EXPECT_EQ(s.job_id, job->id());
    ++visited;
  });
  EXPECT_EQ(visited, 280);
  EXPECT_EQ((*all)->jobs_by_state.at(v1::JOB_STATE_SUCCEEDED), 1);
  EXPECT_EQ((*all)->dispatch_seconds.count, 280);
  // A per-request view shares the same chunk.
  auto view = driver_->View(kAdmin, {.history = absl::Hours(1)});
  ASSERT_TRUE(view.ok());
  ASSERT_EQ(view->ended_chunks.size(), 1u);
  EXPECT_EQ(view->ended_chunks[0].get(), (*all)->ended_chunks[0].get());
  // An hour later the history is gone from the snapshot.
  clock_.Advance(kGanttHistory);
  auto later = driver_->SharedView(kAdmin);
  ASSERT_TRUE(later.ok());
  EXPECT_TRUE((*later)->ended_chunks.empty());
  EXPECT_TRUE((*later)->stages.empty());
}

// The jobs page's snapshot is shared by the readers who see the same jobs (every admin; each
// user alone), numbered apart from every other snapshot, and rebuilt under SharedView's rule.
TEST_F(DriverViewTest, SharedJobsViewIsOneSnapshotPerViewerRebuiltOnChange) {
  EXPECT_EQ(driver_->SharedJobsView(kAgent).status().code(), absl::StatusCode::kPermissionDenied);
  for (int i = 0; i < kJobsPageJobs + 1; ++i) ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 1)).ok());
  ASSERT_TRUE(driver_->Submit(kBob, Sim(1, 1)).ok());
  auto admin = driver_->SharedJobsView(kAdmin);
  auto alice = driver_->SharedJobsView(kAlice);
  auto bob = driver_->SharedJobsView(kBob);
  ASSERT_TRUE(admin.ok() && alice.ok() && bob.ok());
  const Principal other_admin{"ops", Role::kAdmin};
  EXPECT_EQ(driver_->SharedJobsView(other_admin)->get(), admin->get());
  EXPECT_EQ(driver_->SharedJobsView(kAlice)->get(), alice->get());
  // The newest kJobsPageJobs each may see; the others only counted.
  ASSERT_EQ((*admin)->jobs.size(), static_cast<size_t>(kJobsPageJobs));
  EXPECT_EQ((*admin)->jobs.back().id(), absl::StrCat("j", kJobsPageJobs + 2));
  EXPECT_EQ((*admin)->jobs_not_shown, 2);
  EXPECT_EQ((*alice)->jobs.size(), static_cast<size_t>(kJobsPageJobs));
  EXPECT_EQ((*alice)->jobs.back().owner(), "alice");
  EXPECT_EQ((*alice)->jobs_not_shown, 1);
  ASSERT_EQ((*bob)->jobs.size(), 1u);
  EXPECT_EQ((*bob)->jobs[0].owner(), "bob");
  EXPECT_TRUE((*bob)->agents.empty());
  std::map<int64_t, int> versions;  // snapshot number -> snapshots with it
  for (int64_t v : {(*admin)->version, (*alice)->version, (*bob)->version}) ++versions[v];
  EXPECT_EQ(versions.size(), 3u);
  EXPECT_EQ(versions.count(0), 0u);

  // A change shows once the snapshot is a second old, with a new number.
  ASSERT_TRUE(driver_->Submit(kBob, Sim(1, 1)).ok());
  EXPECT_EQ(driver_->SharedJobsView(kBob)->get(), bob->get());
  clock_.Advance(kViewMaxAge);
  auto later = driver_->SharedJobsView(kBob);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ((*later)->jobs.size(), 2u);
  EXPECT_GT((*later)->version, versions.rbegin()->first);
}

// A jobs snapshot reads from the record store only the jobs whose record count moved since the
// viewer's previous one; the others' figures come from the records it kept, and every job's
// figures equal those a fresh View() reads for all of them.
TEST_F(DriverViewTest, SharedJobsViewReadsOnlyTheRecordsOfJobsThatStoredNewOnes) {
  const std::string agent = Register("host-a");
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 20)).ok());
  auto records = [&](const DriverView& v) {
    std::map<std::string, int64_t> n;
    for (const v1::Job& j : v.jobs) n[j.id()] = j.records();
    return n;
  };
  // Each snapshot's progress figures are those View() reads from the store at the same time.
  auto same_as_fresh = [&](const DriverView& shared) {
    auto fresh = driver_->View(kAlice, {.history = absl::ZeroDuration(), .include_daemon = false});
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    ASSERT_EQ(fresh->jobs.size(), shared.jobs.size());
    for (size_t i = 0; i < shared.jobs.size(); ++i) {
      EXPECT_TRUE(
          google::protobuf::util::MessageDifferencer::Equals(fresh->jobs[i], shared.jobs[i]))
          << shared.jobs[i].id() << ":\n"
          << shared.jobs[i].DebugString() << "fresh:\n"
          << fresh->jobs[i].DebugString();
    }
  };
  // Serve until every job stored records: the first snapshot reads each of them.
  for (int i = 0; i < 400; ++i) {
    auto v = driver_->View(kAlice, {.history = absl::ZeroDuration(), .include_daemon = false});
    ASSERT_TRUE(v.ok());
    const auto n = records(*v);
    if (std::all_of(n.begin(), n.end(), [](const auto& kv) { return kv.second >= 2; })) break;
    ASSERT_GE(Serve(agent, absl::Milliseconds(100), 1), 1);
  }
  auto first = driver_->SharedJobsView(kAlice);
  ASSERT_TRUE(first.ok()) << first.status();
  const auto before = records(**first);
  for (const auto& [id, n] : before) ASSERT_GE(n, 2) << id;
  EXPECT_EQ((*first)->records_read, 4);
  EXPECT_GT((*first)->jobs[0].trials_done(), 0);
  same_as_fresh(**first);

  // Changes that store no record (two jobs cancelled, a new job with none): nothing is read.
  ASSERT_TRUE(driver_->Cancel(kAlice, "j1").ok());
  ASSERT_TRUE(driver_->Cancel(kAlice, "j2").ok());
  ASSERT_TRUE(driver_->Submit(kAlice, Sim(1, 20)).ok());
  clock_.Advance(kViewMaxAge);
  auto second = driver_->SharedJobsView(kAlice);
  ASSERT_TRUE(second.ok());
  ASSERT_NE(second->get(), first->get());
  ASSERT_EQ((*second)->jobs.size(), 5u);
  EXPECT_EQ((*second)->records_read, 0);
  same_as_fresh(**second);

  // Stages until some running job stores a record: only the jobs that did are read.
  std::map<std::string, int64_t> after = records(**second);
  for (int i = 0; i < 40 && after == records(**second); ++i) {
    ASSERT_GE(Serve(agent, absl::Milliseconds(100), 1), 1);
    auto v = driver_->View(kAlice, {.history = absl::ZeroDuration(), .include_daemon = false});
    ASSERT_TRUE(v.ok());
    after = records(*v);
  }
  int moved = 0;
  for (const auto& [id, n] : records(**second)) moved += after[id] != n ? 1 : 0;
  ASSERT_GE(moved, 1);
  EXPECT_EQ(after["j1"], before.at("j1"));
  EXPECT_EQ(after["j2"], before.at("j2"));
  clock_.Advance(kViewMaxAge);
  auto third = driver_->SharedJobsView(kAlice);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(records(**third), after);
  EXPECT_EQ((*third)->records_read, moved);
  same_as_fresh(**third);
}

// The view numbers the queued jobs in one pass; their places are those Get() counts job by job:
// priority (higher first), then submission order.
TEST_F(DriverViewTest, QueuedJobsShowTheSamePlacesAsGet) {
  for (int priority : {0, 5, 0, 5, 1}) {
    v1::SubmitJobRequest r = Sim(1, 1);
    r.set_priority(priority);
    ASSERT_TRUE(driver_->Submit(kAlice, r).ok());
  }
  auto view = driver_->View(kAdmin, {.include_daemon = false});
  ASSERT_TRUE(view.ok()) << view.status();
  std::map<std::string, int> places;
  for (const v1::Job& j : view->jobs) {
    places[j.id()] = j.queue_position();
    auto got = driver_->Get(kAdmin, j.id());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(j.queue_position(), got->queue_position()) << j.id();
  }
  EXPECT_EQ(places,
            (std::map<std::string, int>{{"j1", 4}, {"j2", 1}, {"j3", 5}, {"j4", 2}, {"j5", 3}}));
}

// The build cache counters of a heartbeat are hostile input: negative, absurd or decreasing
// values are refused naming the field, and the agent's figures stay as they were.
TEST_F(DriverViewTest, HeartbeatBuildCacheCountersAreCheckedAndShown) {
  const std::string agent = Register("host-a");
  v1::HeartbeatRequest hb;
  hb.set_agent_id(agent);
  hb.set_session(sessions_[agent]);
  hb.set_build_cache_hits(3);
  hb.set_build_cache_misses(7);
  ASSERT_TRUE(driver_->Heartbeat(kAgent, hb).ok());
  auto refused = [&](int64_t hits, int64_t misses) {
    v1::HeartbeatRequest bad = hb;
    bad.set_build_cache_hits(hits);
    bad.set_build_cache_misses(misses);
    auto r = driver_->Heartbeat(kAgent, bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };
  EXPECT_THAT(refused(-1, 7), HasSubstr("build_cache_hits -1 is outside 0.."));
  EXPECT_THAT(refused(3, int64_t{1} << 51), HasSubstr("build_cache_misses 2251799813685248"));
  EXPECT_THAT(refused(3, 6), HasSubstr("build_cache_misses 6 is below the 7"));
  auto v = driver_->View(kAdmin, {});
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->agents.size(), 1u);
  EXPECT_EQ(v->agents[0].build_cache_hits, 3);
  EXPECT_EQ(v->agents[0].build_cache_misses, 7);
}

}  // namespace
}  // namespace loom::service
