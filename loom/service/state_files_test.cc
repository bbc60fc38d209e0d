#include "loom/service/state_files.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/records/record_store.h"
#include "loom/service/state_rows.h"
#include "loom/service/state_store.h"
#include "loom/v1/session.pb.h"
#include "loom/v1/stage.pb.h"

namespace loom::service {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class StateFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("loom_state_files_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  void Sql(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << err;
    sqlite3_free(err);
    sqlite3_close(db);
  }

  fs::path dir_;
};

TEST_F(StateFilesTest, OneLockHolderPerStateFileAndTheSecondIsToldItsPid) {
  auto first = StateLock::Acquire(Path("state.db"));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = StateLock::Acquire(Path("state.db"));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("is in use by another loom serve (pid ", getpid(), ")")));
  *first = StateLock();  // released
  EXPECT_TRUE(StateLock::Acquire(Path("state.db")).ok());
}

TEST_F(StateFilesTest, RecordsArePairedWithOneStateOnly) {
  const std::string records = Path("state.db.records");
  ASSERT_TRUE(tune::OpenSqliteRecordStore(records).ok());
  EXPECT_TRUE(PairRecordDatabase(records, "s1", "aaaa", false).ok());
  EXPECT_TRUE(PairRecordDatabase(records, "s1", "aaaa", true).ok());  // the same pair again
  absl::Status other = PairRecordDatabase(records, "s2", "bbbb", true);
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.message(), HasSubstr("belongs to another state file than 's2' (store id aaaa"));
}

TEST_F(StateFilesTest, AnEmptyStateBesideRecordsIsRefused) {
  const std::string records = Path("r.records");
  {
    auto store = tune::OpenSqliteRecordStore(records);
    ASSERT_TRUE(store.ok());
    tune::Record r;
    r.task_key = "dense|M1,N2,K3";
    r.template_name = "dense";
    r.target_key = "cpu:x";
    r.costs = {0.5};
    r.job_id = "j1";
    ASSERT_TRUE((*store)->Append({r}).ok());
  }
  absl::Status st = PairRecordDatabase(records, "state.db", "cccc", /*state_had_jobs=*/false);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("has no jobs but its record database"));
  EXPECT_THAT(st.message(), HasSubstr("holds 1 records"));
  // A migrated state that had jobs adopts its unpaired records.
  EXPECT_TRUE(PairRecordDatabase(records, "state.db", "cccc", /*state_had_jobs=*/true).ok());
}

TEST_F(StateFilesTest, StateStoreRefusesEmptyAndDamagedFilesAndKeepsItsStoreId) {
  const std::string path = Path("state.db");
  std::string id;
  {
    auto s = OpenSqliteStateStore(path);
    ASSERT_TRUE(s.ok()) << s.status();
    id = (*s)->store_id();
    EXPECT_EQ(id.size(), 32u);
    Mutation m;
    m.flagged.push_back(FlaggedAgent{"evil", "forged a cost", absl::FromUnixSeconds(5)});
    ASSERT_TRUE((*s)->Apply(m).ok());
  }
  {
    auto s = OpenSqliteStateStore(path);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ((*s)->store_id(), id);
    auto flagged = (*s)->LoadFlaggedAgents();
    ASSERT_TRUE(flagged.ok());
    ASSERT_EQ(flagged->size(), 1u);
    EXPECT_EQ((*flagged)[0].identity, "evil");
    EXPECT_EQ((*flagged)[0].reason, "forged a cost");
  }
  std::ofstream(Path("empty.db"));
  auto empty = OpenSqliteStateStore(Path("empty.db"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(empty.status().message(), HasSubstr("is empty (0 bytes): it was truncated"));

  // Garbage over an index page (the last page of the file holds the logs index here).
  {
    auto s = OpenSqliteStateStore(Path("damaged.db"));
    ASSERT_TRUE(s.ok());
    Mutation m;
    for (int i = 0; i < 2000; ++i) {
      m.logs.push_back(LogLine{"j1", absl::FromUnixSeconds(i), std::string(40, 'x')});
    }
    ASSERT_TRUE((*s)->Apply(m).ok());
  }
  Sql(Path("damaged.db"), "PRAGMA wal_checkpoint(TRUNCATE)");
  const auto size = fs::file_size(Path("damaged.db"));
  {
    std::fstream f(Path("damaged.db"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 4096));
    f << std::string(4096, '\x5a');
  }
  auto damaged = OpenSqliteStateStore(Path("damaged.db"));
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(damaged.status().message(), HasSubstr("is damaged (quick_check:"));
}

TEST_F(StateFilesTest, SchemaOneStateIsMigratedAndItsJobsKeepTheirShortRecordIds) {
  const std::string path = Path("v1.db");
  // The schema-1 tables as an older Loom wrote them, with one job.
  Sql(path,
      "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner "
      "TEXT NOT NULL, name TEXT NOT NULL, state INTEGER NOT NULL, priority INTEGER NOT NULL, spec "
      "BLOB NOT NULL, submitted_us INTEGER NOT NULL, started_us INTEGER NOT NULL, finished_us "
      "INTEGER NOT NULL, failure_reason TEXT NOT NULL, prepared INTEGER NOT NULL, isa TEXT NOT "
      "NULL, target_key TEXT NOT NULL, cpu_seconds REAL NOT NULL, device_seconds REAL NOT NULL, "
      "records INTEGER NOT NULL, estimated_latency_ms REAL NOT NULL);"
      "CREATE TABLE tasks (job_id TEXT NOT NULL, idx INTEGER NOT NULL, task_key TEXT NOT NULL, "
      "template_name TEXT NOT NULL, flops REAL NOT NULL, count INTEGER NOT NULL, phase INTEGER "
      "NOT NULL, round INTEGER NOT NULL, trials_done INTEGER NOT NULL, errors INTEGER NOT NULL, "
      "best_cost REAL NOT NULL, skip_reason TEXT NOT NULL, history BLOB NOT NULL, configs BLOB "
      "NOT NULL, artifacts BLOB NOT NULL, PRIMARY KEY (job_id, idx));"
      "CREATE TABLE models (job_id TEXT PRIMARY KEY, onnx BLOB NOT NULL);"
      "CREATE TABLE leases (lease_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, task INTEGER NOT "
      "NULL, kind INTEGER NOT NULL, agent_id TEXT NOT NULL, granted_us INTEGER NOT NULL);"
      "CREATE TABLE logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, time_us "
      "INTEGER NOT NULL, text TEXT NOT NULL);"
      "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
      "INSERT INTO jobs (id, owner, name, state, priority, spec, submitted_us, started_us, "
      "finished_us, failure_reason, prepared, isa, target_key, cpu_seconds, device_seconds, "
      "records, estimated_latency_ms) VALUES ('j3', 'alice', 'old', 3, 0, x'', 1, 2, 3, '', 1, "
      "'avx2', 'cpu:k', 1.5, 2.5, 7, 0);"
      "PRAGMA user_version = 1; PRAGMA application_id = 1280136022;");
  auto s = OpenSqliteStateStore(path);
  ASSERT_TRUE(s.ok()) << s.status();
  auto jobs = (*s)->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id, "j3");
  EXPECT_EQ((*jobs)[0].uid, "");
  EXPECT_EQ((*jobs)[0].RecordKey(), "j3");
  EXPECT_EQ((*jobs)[0].records, 7);
  EXPECT_EQ((*s)->store_id().size(), 32u);
}

TEST(StateRowsTest, DamagedColumnsAreDataLossNotUndefinedBehaviour) {
  RawJobRow job;
  job.id = "j1";
  job.state = v1::JOB_STATE_RUNNING;
  EXPECT_TRUE(DecodeJobRow(job).ok());
  RawJobRow bad_state = job;
  bad_state.state = 99;
  EXPECT_THAT(DecodeJobRow(bad_state).status().message(), HasSubstr("job j1: unknown state 99"));
  RawJobRow bad_id = job;
  bad_id.id = "x7";
  EXPECT_EQ(DecodeJobRow(bad_id).status().code(), absl::StatusCode::kDataLoss);
  RawJobRow bad_spec = job;
  bad_spec.spec = "\xff\xff\xff";
  EXPECT_THAT(DecodeJobRow(bad_spec).status().message(), HasSubstr("corrupt spec"));

  RawTaskRow task;
  task.count = 1;
  EXPECT_TRUE(DecodeTaskRow("j1", task).ok());
  RawTaskRow phase = task;
  phase.phase = 17;
  EXPECT_THAT(DecodeTaskRow("j1", phase).status().message(), HasSubstr("unknown phase 17"));
  // The phase column: the stage kind (sched::StageKind) while the task runs, 4 done, 5 skipped;
  // EncodeTaskPhase writes back what was read.
  for (int64_t p = 0; p <= 5; ++p) {
    phase.phase = p;
    absl::StatusOr<TaskRow> t = DecodeTaskRow("j1", phase);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(EncodeTaskPhase(*t), p);
    EXPECT_EQ(t->end, p == 4 ? TaskEnd::kDone : p == 5 ? TaskEnd::kSkipped : TaskEnd::kNone);
  }
  phase.phase = 2;
  EXPECT_EQ(DecodeTaskRow("j1", phase)->stage, sched::StageKind::kMeasure);
  RawTaskRow count = task;
  count.count = 0;
  EXPECT_EQ(DecodeTaskRow("j1", count).status().code(), absl::StatusCode::kDataLoss);

  std::vector<TaskRow> gap(2);
  gap[1].index = 2;
  EXPECT_THAT(CheckTaskIndices("j1", gap).message(), HasSubstr("job j1: task 1 is missing"));

  RawLeaseRow lease;
  lease.kind = 42;
  EXPECT_THAT(DecodeLeaseRow(lease).status().message(), HasSubstr("unknown stage kind 42"));
}

// The `history` column holds the task's session state; daemons before this release wrapped it in
// a v1::UpdateInput. Both forms load as the same TaskRow::session.
TEST(StateRowsTest, ASessionStateLoadsFromTheColumnAndFromAnOlderDaemonsWrapper) {
  v1::TaskSessionState state;
  state.set_version(1);
  state.set_job_id("j1");
  state.set_task_key("dense:f32:m1_n2_k8_tb0");
  state.add_history()->set_config_index(7);
  const std::string bytes = state.SerializeAsString();

  RawTaskRow now;
  now.count = 1;
  now.history = bytes;
  absl::StatusOr<TaskRow> t = DecodeTaskRow("j1", now);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->session, bytes);

  v1::UpdateInput wrapper;  // what an older daemon stored
  wrapper.set_session(bytes);
  RawTaskRow old = now;
  old.history = wrapper.SerializeAsString();
  ASSERT_NE(old.history, bytes);
  absl::StatusOr<TaskRow> from_old = DecodeTaskRow("j1", old);
  ASSERT_TRUE(from_old.ok()) << from_old.status();
  EXPECT_EQ(from_old->session, bytes);
  v1::TaskSessionState loaded;
  ASSERT_TRUE(loaded.ParseFromString(from_old->session));
  EXPECT_EQ(loaded.task_key(), "dense:f32:m1_n2_k8_tb0");
  EXPECT_EQ(loaded.history(0).config_index(), 7);

  RawTaskRow none = now;  // a task whose session never saved, in either form
  none.history.clear();
  EXPECT_EQ(DecodeTaskRow("j1", none)->session, "");

  RawTaskRow damaged = old;  // a wrapper cut short
  damaged.history.resize(damaged.history.size() - 3);
  EXPECT_THAT(DecodeTaskRow("j1", damaged).status().message(), HasSubstr("corrupt blob"));
}

}  // namespace
}  // namespace loom::service
