// The StateStore contract, run against both implementations (SQLite always; PostgreSQL on a
// throw-away cluster when its server binaries are installed), and what only PostgreSQL has: the
// one-daemon lock, connection errors, another application's tables.
#include "loom/service/state_store.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "loom/records/testing/postgres_cluster.h"

namespace loom::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Backend = tune::testing::StoreBackend;

MATCHER_P2(StatusIs, code, matcher, "") {
  return arg.code() == code &&
         ::testing::ExplainMatchResult(matcher, arg.message(), result_listener);
}

bool SameMessage(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

JobRow Job(const std::string& id, int priority) {
  JobRow j;
  j.id = id;
  j.uid = absl::StrCat(id, ".00000000deadbeef");
  j.owner = "alice";
  j.name = absl::StrCat("model of ", id, " with 'quotes' and ünïcode");
  j.state = v1::JOB_STATE_RUNNING;
  j.priority = priority;
  j.spec.set_zoo_model("resnet18");
  j.spec.set_trials(32);
  j.spec.add_input_shapes("x:1x3x224x224");
  j.submitted = absl::FromUnixMicros(1'700'000'000'123'456);
  j.started = absl::FromUnixMicros(1'700'000'001'000'000);
  j.failure_reason = "";
  j.prepared = true;
  j.isa = "avx512";
  j.target_key = "cpu:avx512:Test CPU";
  j.cpu_seconds = 0.1 + 0.2;
  j.device_seconds = 1.0 / 3.0;
  j.records = 42;
  j.estimated_latency_ms = 1.25e-3;
  j.device_seconds_limit = 3600;
  return j;
}

TaskRow Task(const std::string& job, int index) {
  TaskRow t;
  t.job_id = job;
  t.index = index;
  t.task_key = absl::StrCat("dense:f32:m1_n", index + 1, "_k8_tb0");
  t.template_name = "dense_tiled";
  t.flops = 1e9 / 7;
  t.count = 2;
  t.stage = sched::StageKind::kMeasure;
  t.round = 3;
  t.trials_done = 24;
  t.errors = 1;
  t.best_cost = 1e-4;
  t.session = std::string("state\0with\xff bytes", 17);
  t.configs.add_config_indices(7);
  t.configs.add_config_indices(11);
  t.artifacts.add_artifacts()->set_config_index(7);
  return t;
}

class StateStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kSqlite) {
      dir_ = std::filesystem::temp_directory_path() /
             absl::StrCat("loom_state_store_test_", getpid(), "_",
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
      std::filesystem::remove_all(dir_);
      std::filesystem::create_directories(dir_);
      uri_ = (dir_ / "state.db").string();
      return;
    }
    auto cluster = tune::testing::SharedPostgresCluster();
    if (absl::IsNotFound(cluster.status())) GTEST_SKIP() << cluster.status().message();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    auto uri = (*cluster)->CreateDatabase();
    ASSERT_TRUE(uri.ok()) << uri.status();
    uri_ = *uri;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<StateStore> Open() {
    auto store = OpenStateStore(uri_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Sets the state's schema version behind the store's back.
  void SetSchemaVersion(int v) {
    const std::string sql =
        GetParam() == Backend::kSqlite
            ? absl::StrCat("PRAGMA user_version = ", v)
            : absl::StrCat("UPDATE loom_schema SET version = ", v, " WHERE component = 'state'");
    if (GetParam() == Backend::kSqlite) {
      sqlite3* db = nullptr;
      ASSERT_EQ(sqlite3_open(uri_.c_str(), &db), SQLITE_OK);
      EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
      sqlite3_close(db);
      return;
    }
    PGconn* conn = PQconnectdb(uri_.c_str());
    PGresult* res = PQexec(conn, sql.c_str());
    EXPECT_EQ(PQresultStatus(res), PGRES_COMMAND_OK) << PQerrorMessage(conn);
    PQclear(res);
    PQfinish(conn);
  }

  std::filesystem::path dir_;
  std::string uri_;
};
INSTANTIATE_TEST_SUITE_P(Backends, StateStoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         tune::testing::StoreBackendName<::testing::TestParamInfo<Backend>>);

TEST_P(StateStoreTest, EveryRowKindRoundTripsThroughAReopen) {
  const std::string model("\x08\x07\0onnx\xff\xfe bytes", 15);
  std::string store_id;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    store_id = store->store_id();
    Mutation m;
    m.jobs = {Job("j1", 5), Job("j2", 0)};
    m.tasks = {Task("j1", 0), Task("j1", 1)};
    m.models = {{"j1", model}};
    m.leases_put = {LeaseRow{"l1", "j1", 1, v1::STAGE_KIND_MEASURE, "agent-a",
                             absl::FromUnixMicros(1'700'000'002'000'000)}};
    m.logs = {LogLine{"j1", absl::FromUnixMicros(1'700'000'003'000'000), "first"},
              LogLine{"j2", absl::FromUnixMicros(1'700'000'003'500'000), "other job"},
              LogLine{"j1", absl::FromUnixMicros(1'700'000'004'000'000), "second\nline"}};
    m.counters = {{"next_job", 3}, {"next_lease", 2}};
    m.flagged = {FlaggedAgent{"mallory", "forged a cost", absl::FromUnixMicros(1'700'000'005)}};
    ASSERT_TRUE(store->Apply(m).ok());
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->store_id(), store_id);
  EXPECT_EQ(store_id.size(), 32u);

  auto jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  const JobRow want = Job("j1", 5);
  const JobRow& got = (*jobs)[0];
  EXPECT_EQ(got.id, "j1");
  EXPECT_EQ(got.uid, want.uid);
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.state, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(got.priority, 5);
  EXPECT_TRUE(SameMessage(got.spec, want.spec));
  EXPECT_EQ(got.submitted, want.submitted);
  EXPECT_EQ(got.started, want.started);
  EXPECT_EQ(got.finished, absl::UnixEpoch());
  EXPECT_TRUE(got.prepared);
  EXPECT_EQ(got.target_key, want.target_key);
  EXPECT_EQ(got.cpu_seconds, want.cpu_seconds);  // exactly: no decimal rounding
  EXPECT_EQ(got.device_seconds, want.device_seconds);
  EXPECT_EQ(got.records, 42);
  EXPECT_EQ(got.estimated_latency_ms, want.estimated_latency_ms);
  EXPECT_EQ(got.device_seconds_limit, 3600);
  EXPECT_EQ((*jobs)[1].id, "j2");

  auto tasks = store->LoadTasks("j1");
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_EQ(tasks->size(), 2u);
  const TaskRow want_task = Task("j1", 1);
  const TaskRow& task = (*tasks)[1];
  EXPECT_EQ(task.index, 1);
  EXPECT_EQ(task.task_key, want_task.task_key);
  EXPECT_EQ(task.stage, sched::StageKind::kMeasure);
  EXPECT_EQ(task.end, TaskEnd::kNone);
  EXPECT_EQ(task.flops, want_task.flops);
  EXPECT_EQ(task.best_cost, 1e-4);
  EXPECT_EQ(task.session, want_task.session);
  EXPECT_TRUE(SameMessage(task.configs, want_task.configs));
  EXPECT_TRUE(SameMessage(task.artifacts, want_task.artifacts));
  auto none = store->LoadTasks("j2");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  auto bytes = store->LoadModel("j1");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, model);
  auto no_model = store->LoadModel("j2");
  EXPECT_EQ(no_model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_model.status().message(), HasSubstr("job j2 has no ONNX model"));

  auto leases = store->LoadLeases();
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].lease_id, "l1");
  EXPECT_EQ((*leases)[0].task, 1);
  EXPECT_EQ((*leases)[0].kind, v1::STAGE_KIND_MEASURE);
  EXPECT_EQ((*leases)[0].agent_id, "agent-a");

  auto flagged = store->LoadFlaggedAgents();
  ASSERT_TRUE(flagged.ok());
  ASSERT_EQ(flagged->size(), 1u);
  EXPECT_EQ((*flagged)[0].identity, "mallory");
  EXPECT_EQ((*flagged)[0].time, absl::FromUnixMicros(1'700'000'005));

  auto next_job = store->Counter("next_job", 1);
  ASSERT_TRUE(next_job.ok());
  EXPECT_EQ(*next_job, 3);
  auto unset = store->Counter("never_set", -7);
  ASSERT_TRUE(unset.ok());
  EXPECT_EQ(*unset, -7);
}

TEST_P(StateStoreTest, ReplacingKeepsSubmissionOrderAndDeletesLeases) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Apply({.jobs = {Job("j1", 1), Job("j2", 2)}}).ok());
  JobRow done = Job("j1", 9);
  done.state = v1::JOB_STATE_SUCCEEDED;
  done.finished = absl::FromUnixMicros(1'800'000'000'000'000);
  TaskRow advanced = Task("j1", 0);
  advanced.end = TaskEnd::kDone;
  advanced.configs.Clear();
  ASSERT_TRUE(store
                  ->Apply({.jobs = {done},
                           .tasks = {Task("j1", 0)},
                           .leases_put = {LeaseRow{"l1", "j1", 0, v1::STAGE_KIND_BUILD, "a"},
                                          LeaseRow{"l2", "j1", 0, v1::STAGE_KIND_BUILD, "b"}},
                           .counters = {{"c", 1}},
                           .flagged = {FlaggedAgent{"m", "first reason"}}})
                  .ok());
  ASSERT_TRUE(store
                  ->Apply({.tasks = {advanced},
                           .leases_put = {LeaseRow{"l2", "j1", 0, v1::STAGE_KIND_MEASURE, "c"}},
                           .leases_deleted = {"l1", "never-granted"},
                           .counters = {{"c", 2}},
                           .flagged = {FlaggedAgent{"m", "second reason"}}})
                  .ok());
  auto jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id, "j1");  // replaced in place: still first
  EXPECT_EQ((*jobs)[0].state, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ((*jobs)[0].priority, 9);
  EXPECT_EQ((*jobs)[0].finished, done.finished);
  auto tasks = store->LoadTasks("j1");
  ASSERT_TRUE(tasks.ok());
  ASSERT_EQ(tasks->size(), 1u);
  EXPECT_EQ((*tasks)[0].end, TaskEnd::kDone);
  EXPECT_EQ((*tasks)[0].configs.config_indices_size(), 0);
  auto leases = store->LoadLeases();
  ASSERT_TRUE(leases.ok());
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].lease_id, "l2");
  EXPECT_EQ((*leases)[0].agent_id, "c");
  EXPECT_EQ(*store->Counter("c", 0), 2);
  auto flagged = store->LoadFlaggedAgents();
  ASSERT_TRUE(flagged.ok());
  ASSERT_EQ(flagged->size(), 1u);
  EXPECT_EQ((*flagged)[0].reason, "second reason");
}

TEST_P(StateStoreTest, LogsComeInOrderAndTailKeepsTheLast) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  Mutation m;
  for (int i = 0; i < 5; ++i) {
    m.logs.push_back(LogLine{"j1", absl::FromUnixSeconds(100 - i), absl::StrCat("line ", i)});
  }
  m.logs.push_back(LogLine{"j2", absl::FromUnixSeconds(1), "not j1's"});
  ASSERT_TRUE(store->Apply(m).ok());
  ASSERT_TRUE(store->Apply({.logs = {LogLine{"j1", absl::FromUnixSeconds(1), "line 5"}}}).ok());
  auto texts = [](const std::vector<LogLine>& lines) {
    std::vector<std::string> out;
    for (const LogLine& l : lines) out.push_back(l.text);
    return out;
  };
  auto all = store->Logs("j1", 0);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(texts(*all), ElementsAre("line 0", "line 1", "line 2", "line 3", "line 4", "line 5"));
  EXPECT_EQ((*all)[1].time, absl::FromUnixSeconds(99));
  auto tail = store->Logs("j1", 2);
  ASSERT_TRUE(tail.ok());
  EXPECT_THAT(texts(*tail), ElementsAre("line 4", "line 5"));
  auto unknown = store->Logs("j9", 3);
  ASSERT_TRUE(unknown.ok());
  EXPECT_TRUE(unknown->empty());
}

TEST_P(StateStoreTest, HostileTextIsStoredVerbatim) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const std::string hostile = "j1'); DROP TABLE jobs; -- $1 ?1 \\ \"";
  JobRow j = Job("j7", 0);  // job ids are checked when read back: the free text is hostile
  j.owner = j.name = j.failure_reason = hostile;
  ASSERT_TRUE(store
                  ->Apply({.jobs = {j},
                           .logs = {LogLine{hostile, absl::UnixEpoch(), hostile}},
                           .counters = {{hostile, 5}}})
                  .ok());
  auto jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].owner, hostile);
  EXPECT_EQ((*jobs)[0].name, hostile);
  EXPECT_EQ((*jobs)[0].failure_reason, hostile);
  auto logs = store->Logs(hostile, 0);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ((*logs)[0].text, hostile);
  EXPECT_EQ(*store->Counter(hostile, 0), 5);
}

TEST_P(StateStoreTest, NewerSchemaIsRefused) {
  ASSERT_NE(Open(), nullptr);
  SetSchemaVersion(kStateSchemaVersion + 7);
  auto store = OpenStateStore(uri_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(),
              HasSubstr(absl::StrCat("schema version ", kStateSchemaVersion + 7)));
  EXPECT_THAT(store.status().message(), HasSubstr("upgrade Loom"));
}

class PostgresStateStoreTest : public StateStoreTest {};
INSTANTIATE_TEST_SUITE_P(Postgres, PostgresStateStoreTest, ::testing::Values(Backend::kPostgres),
                         tune::testing::StoreBackendName<::testing::TestParamInfo<Backend>>);

TEST_P(PostgresStateStoreTest, ASecondStoreOnTheSameStateIsRefusedUntilTheFirstCloses) {
  auto first = Open();
  ASSERT_NE(first, nullptr);
  auto second = OpenStateStore(uri_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      second.status().message(),
      HasSubstr(absl::StrCat("is in use by another loom serve (loom serve pid ", getpid())));
  first.reset();
  EXPECT_NE(Open(), nullptr);
}

// Ends the server sessions of every store on this database (as a restart of PostgreSQL or a
// network cut would), waiting until they are gone.
void DropStoreSessions(const std::string& uri) {
  PGconn* conn = PQconnectdb(uri.c_str());
  PGresult* res = PQexec(conn,
                         "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE "
                         "application_name LIKE 'loom serve pid %' AND datname = "
                         "current_database()");
  EXPECT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << PQerrorMessage(conn);
  EXPECT_EQ(PQntuples(res), 1);
  PQclear(res);
  PQfinish(conn);
}

TEST_P(PostgresStateStoreTest, ALostConnectionIsReopenedWithTheLockOrRefusedWithoutIt) {
  auto first = Open();
  ASSERT_NE(first, nullptr);
  DropStoreSessions(uri_);
  // Reconnected, the lock taken again: the write goes through and the state stays exclusive.
  ASSERT_TRUE(first->Apply({.jobs = {Job("j1", 0)}}).ok());
  EXPECT_EQ(OpenStateStore(uri_).status().code(), absl::StatusCode::kFailedPrecondition);
  // Cut off again, and meanwhile another store took the state: the first may not write.
  DropStoreSessions(uri_);
  auto second = Open();
  ASSERT_NE(second, nullptr);
  absl::Status st = first->Apply({.jobs = {Job("j2", 0)}});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("is led by a newer loom serve"));
  auto jobs = second->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id, "j1");
}

TEST_P(PostgresStateStoreTest, AStaleLeaderIsFencedEvenWhenTheLockIsFreeAgain) {
  auto first = OpenStateStore(uri_, {.advertise = "host-a:7070"});
  ASSERT_TRUE(first.ok()) << first.status();
  const int64_t old_epoch = (*first)->epoch();
  EXPECT_GE(old_epoch, 1);
  EXPECT_TRUE((*first)->CheckLead().ok());
  // The first daemon's session is cut (a network partition); another takes the state.
  DropStoreSessions(uri_);
  auto second = OpenStateStore(uri_, {.advertise = "host-b:7070"});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->epoch(), old_epoch + 1);
  const std::string refused =
      absl::StrCat("is led by a newer loom serve (epoch ", old_epoch + 1, ", at host-b:7070");
  EXPECT_THAT((*first)->CheckLead(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(refused)));
  // The new leader goes away too: the lock is free, yet the old epoch still may not write.
  second->reset();
  absl::Status st = (*first)->Apply({.jobs = {Job("stale", 0)}});
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(refused)));
  EXPECT_THAT(st.message(), HasSubstr(absl::StrCat("this daemon's lead (epoch ", old_epoch,
                                                   ") has ended and its write is refused")));
  first->reset();
  auto third = Open();
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(third->epoch(), old_epoch + 2);
  auto jobs = third->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->empty());
}

TEST_P(PostgresStateStoreTest, AStandbyWaitsForTheLeaderAndTakesTheNextEpoch) {
  auto first = OpenStateStore(uri_, {.advertise = "host-a:7070"});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::Mutex mu;
  std::string seen;
  int polls = 0;
  absl::StatusOr<std::unique_ptr<StateStore>> second = absl::UnknownError("not opened");
  std::thread standby([&] {
    second = OpenStateStore(uri_, {.advertise = "host-b:7070",
                                   .standby =
                                       [&](const LeaderInfo& leader) {
                                         absl::MutexLock lock(&mu);
                                         seen = leader.address;
                                         ++polls;
                                         return true;
                                       },
                                   .standby_poll = absl::Milliseconds(20)});
  });
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                        +[](int* n) { return *n >= 3; }, &polls),
                                    absl::Seconds(30)));
    EXPECT_EQ(seen, "host-a:7070");
  }
  const int64_t old_epoch = (*first)->epoch();
  first->reset();  // the leader goes away: the standby takes the state
  standby.join();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->epoch(), old_epoch + 1);
  EXPECT_TRUE((*second)->Apply({.jobs = {Job("j1", 0)}}).ok());
  auto leader = ReadStateLeader(uri_);
  ASSERT_TRUE(leader.ok()) << leader.status();
  EXPECT_EQ(leader->epoch, old_epoch + 1);
  EXPECT_EQ(leader->address, "host-b:7070");
  EXPECT_THAT(leader->holder, HasSubstr(absl::StrCat("loom serve pid ", getpid())));
}

tune::Record Measured(int64_t config, const std::string& job) {
  tune::Record r;
  r.task_key = "dense:f32:m1_n1_k8_tb0";
  r.template_name = "dense_tiled";
  r.target_key = "cpu:avx2:test";
  r.config_index = config;
  r.costs = {1e-4};
  r.job_id = job;
  return r;
}

TEST_P(PostgresStateStoreTest, AStaleLeadersRecordWritesAreRefusedAndNoRecordIsLost) {
  auto first = OpenStateStore(uri_, {.advertise = "host-a:7070"});
  ASSERT_TRUE(first.ok()) << first.status();
  const int64_t old_epoch = (*first)->epoch();
  auto old_records = tune::OpenFencedPostgresRecordStore(uri_, LeaderFence(old_epoch));
  ASSERT_TRUE(old_records.ok()) << old_records.status();
  ASSERT_TRUE((*old_records)->Append({Measured(1, "j1.a")}).ok());
  // The old leader's state session is cut (its record session stays open) and another takes over.
  DropStoreSessions(uri_);
  auto second = OpenStateStore(uri_, {.advertise = "host-b:7070"});
  ASSERT_TRUE(second.ok()) << second.status();
  auto new_records = tune::OpenFencedPostgresRecordStore(uri_, LeaderFence((*second)->epoch()));
  ASSERT_TRUE(new_records.ok()) << new_records.status();
  // Every kind of record write of the old leader is refused, naming the new one; nothing of it
  // is stored.
  const auto refused = StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr(absl::StrCat("is led by a newer loom serve (epoch ",
                                                       old_epoch + 1, ", at host-b:7070")));
  EXPECT_THAT((*old_records)->Append({Measured(2, "j1.a"), Measured(3, "j1.a")}), refused);
  EXPECT_THAT((*old_records)
                  ->AppendStageTimings("j1.a", "dense:f32:m1_n1_k8_tb0", 1,
                                       {{.stage = "measure", .resource = "h/cpu"}}),
              refused);
  std::istringstream import(tune::RecordToJson(Measured(9, "j1.a")) + "\n");
  EXPECT_THAT((*old_records)->ImportJsonLines(import).status(), refused);
  // The new leader measures the same configs again: each stored once, none lost.
  ASSERT_TRUE((*new_records)->Append({Measured(2, "j1.a"), Measured(3, "j1.a")}).ok());
  auto all = (*new_records)->ForTask("dense:f32:m1_n1_k8_tb0", "cpu:avx2:test", "j1.a");
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<int64_t> configs;
  for (const tune::Record& r : *all) configs.push_back(r.config_index);
  EXPECT_THAT(configs, ElementsAre(1, 2, 3));
  EXPECT_EQ(*(*new_records)->Count({}), 3);
}

TEST_P(PostgresStateStoreTest, AStandbyBreaksTheLeaseOfAHungLeaderWhoseWritesAreThenRefused) {
  // The leader never renews its 300 ms lease (no CheckLead: as a daemon stopped with SIGSTOP),
  // and its session stays open, holding the state's lock.
  auto first =
      OpenStateStore(uri_, {.advertise = "host-a:7070", .lease_timeout = absl::Milliseconds(300)});
  ASSERT_TRUE(first.ok()) << first.status();
  const int64_t old_epoch = (*first)->epoch();
  std::atomic<bool> broken{false};
  const absl::Time start = absl::Now();
  auto second = OpenStateStore(uri_, {.advertise = "host-b:7070",
                                      .standby =
                                          [&](const LeaderInfo& leader) {
                                            if (leader.lease_broken) broken = true;
                                            return absl::Now() < start + absl::Seconds(30);
                                          },
                                      .standby_poll = absl::Milliseconds(20)});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(broken.load());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ((*second)->epoch(), old_epoch + 1);
  // The old leader wakes up: its lead check and its writes are refused by the epoch.
  const auto refused = StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr(absl::StrCat("is led by a newer loom serve (epoch ",
                                                       old_epoch + 1, ", at host-b:7070")));
  EXPECT_THAT((*first)->CheckLead(), refused);
  EXPECT_THAT((*first)->Apply({.jobs = {Job("stale", 0)}}), refused);
  ASSERT_TRUE((*second)->Apply({.jobs = {Job("j1", 0)}}).ok());
  auto jobs = (*second)->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id, "j1");
}

TEST_P(PostgresStateStoreTest, ALeaderThatRenewsItsLeaseKeepsTheStandbyWaiting) {
  auto first = OpenStateStore(uri_, {.lease_timeout = absl::Seconds(3)});
  ASSERT_TRUE(first.ok()) << first.status();
  std::atomic<int> polls{0};
  std::atomic<bool> broken{false};
  std::atomic<bool> stop{false};
  std::thread renew([&] {
    while (!stop.load()) {
      EXPECT_TRUE((*first)->CheckLead().ok());
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  // Polls for longer than the lease (80 x 50 ms): renewed every 100 ms, it never expires, and the
  // standby never breaks it.
  auto second = OpenStateStore(uri_, {.standby =
                                          [&](const LeaderInfo& leader) {
                                            if (leader.lease_broken) broken = true;
                                            return ++polls < 80;
                                          },
                                      .standby_poll = absl::Milliseconds(50)});
  stop = true;
  renew.join();
  EXPECT_THAT(second.status(),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("stopped waiting for the state")));
  EXPECT_FALSE(broken.load());
  EXPECT_TRUE((*first)->Apply({.jobs = {Job("j1", 0)}}).ok());
  EXPECT_THAT(OpenStateStore(uri_, {.lease_timeout = absl::Milliseconds(50)}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 100 ms")));
}

TEST_P(PostgresStateStoreTest, AStandbyThatStopsWaitingIsCancelled) {
  auto first = Open();
  ASSERT_NE(first, nullptr);
  auto second = OpenStateStore(uri_, {.standby = [](const LeaderInfo&) { return false; }});
  EXPECT_THAT(second.status(),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("stopped waiting for the state")));
}

TEST(StateStoreStandbyTest, AnSqliteStateHasNoStandby) {
  auto store = OpenStateStore(":memory:", {.standby = [](const LeaderInfo&) { return true; }});
  EXPECT_THAT(store.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("a standby needs a postgresql:// state")));
}

TEST_P(PostgresStateStoreTest, AMutationThatFailsStoresNothing) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  // PostgreSQL text holds no NUL byte: the log line fails the whole mutation.
  absl::Status st = store->Apply(
      {.jobs = {Job("j1", 0)}, .logs = {LogLine{"j1", absl::UnixEpoch(), std::string("a\0b", 3)}}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("NUL byte"));
  auto jobs = store->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty());
  // The connection is usable afterwards.
  EXPECT_TRUE(store->Apply({.jobs = {Job("j1", 0)}}).ok());
}

TEST_P(PostgresStateStoreTest, AnotherApplicationsJobsTableIsRefused) {
  PGconn* conn = PQconnectdb(uri_.c_str());
  PQclear(PQexec(conn, "CREATE TABLE jobs (id TEXT)"));
  PQfinish(conn);
  auto store = OpenStateStore(uri_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("has a table 'jobs' that Loom did not create"));
}

TEST(StateStoreUriTest, UnreachableServerNamesTheUriWithoutItsPassword) {
  auto store = OpenStateStore("postgresql://loom:topsecret@127.0.0.1:1/fleet?connect_timeout=5");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      store.status().message(),
      HasSubstr("cannot connect to PostgreSQL at 'postgresql://loom:***@127.0.0.1:1/fleet"));
  EXPECT_THAT(store.status().message(), Not(HasSubstr("topsecret")));
}

}  // namespace
}  // namespace loom::service
