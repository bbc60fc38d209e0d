#include "loom/records/record_store.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/records/postgres.h"
#include "loom/records/record.h"
#include "loom/records/testing/postgres_cluster.h"

namespace loom::tune {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kTarget[] = "cpu:avx512:Test CPU @ 2.00GHz";
constexpr char kOtherTarget[] = "cpu:avx2:Other CPU";
constexpr double kInf = std::numeric_limits<double>::infinity();

graph::Workload Conv(int64_t c, int64_t hw, int64_t k, int64_t r) {
  graph::Workload w;
  w.kind = graph::TaskKind::kConv2d;
  w.n = 1;
  w.c = c;
  w.h = hw;
  w.w = hw;
  w.k = k;
  w.r = r;
  w.s = r;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = r / 2;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  return w;
}

graph::Workload Dense(int64_t m, int64_t n, int64_t k) {
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = m;
  w.n = n;
  w.k = k;
  return w;
}

const std::string& TaskA() {
  static const std::string key = graph::WorkloadKey(Conv(64, 56, 64, 3));
  return key;
}
const std::string& TaskB() {
  static const std::string key = graph::WorkloadKey(Conv(128, 28, 128, 3));
  return key;
}

// A successful record; `stamp` makes timestamps distinct.
Record Ok(const std::string& task, int64_t config, std::vector<double> costs, int64_t stamp = 0,
          const std::string& job = "job-1", const std::string& target = kTarget) {
  Record r;
  r.task_key = task;
  r.template_name = "conv2d_nchwc";
  r.target_key = target;
  r.config_index = config;
  r.config_json = absl::StrCat("{\"tile_oc\":", config % 7 + 1, ",\"unroll\":1}");
  r.costs = std::move(costs);
  r.median_cost = MedianCost(r.costs, r.error);
  r.flops = 1e9;
  r.timestamp = absl::FromUnixMicros(1'700'000'000'000'000 + stamp);
  r.job_id = job;
  r.build_seconds = 0.5;
  r.measure_seconds = 0.25;
  return r;
}

Record Failed(const std::string& task, int64_t config, ErrorKind kind, int64_t stamp = 0,
              const std::string& job = "job-1") {
  Record r = Ok(task, config, {}, stamp, job);
  r.error = kind;
  r.error_msg = absl::StrCat(ErrorKindName(kind), " failure of config ", config);
  r.median_cost = kInf;
  return r;
}

std::vector<int64_t> Configs(const std::vector<Record>& records) {
  std::vector<int64_t> out;
  for (const Record& r : records) out.push_back(r.config_index);
  return out;
}

using Backend = testing::StoreBackend;

// A fresh store location per test: a file in a temporary folder (SQLite) or a new database in the
// binary's shared throw-away cluster (PostgreSQL; skipped only when its binaries are absent).
class RecordStoreFixture : public ::testing::Test {
 protected:
  void SetUpBackend(Backend backend) {
    backend_ = backend;
    std::string pattern = ::testing::TempDir() + "/loom_record_store_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    if (backend == Backend::kPostgres) {
      auto cluster = testing::SharedPostgresCluster();
      if (absl::IsNotFound(cluster.status())) GTEST_SKIP() << cluster.status().message();
      ASSERT_TRUE(cluster.ok()) << cluster.status();
      cluster_ = *cluster;
    }
    path_ = NewPath();
  }
  void TearDown() override { std::system(absl::StrCat("rm -rf '", dir_, "'").c_str()); }

  // Another empty store location of the same backend.
  std::string NewPath() {
    if (backend_ == Backend::kSqlite) return absl::StrCat(dir_, "/records", paths_++, ".db");
    auto uri = cluster_->CreateDatabase();
    EXPECT_TRUE(uri.ok()) << uri.status();
    return uri.value_or("");
  }

  std::unique_ptr<RecordStore> Open(const std::string& path) {
    auto store = OpenRecordStore(path);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  int64_t CountAll(RecordStore& store) {
    auto n = store.Count({});
    EXPECT_TRUE(n.ok()) << n.status();
    return n.value_or(-1);
  }

  // Runs `sql` on the store with a raw connection (what another tool would do).
  void RawExec(const std::string& sql) {
    if (backend_ == Backend::kPostgres) {
      PGconn* conn = PQconnectdb(path_.c_str());
      PGresult* res = PQexec(conn, sql.c_str());
      EXPECT_EQ(PQresultStatus(res), PGRES_COMMAND_OK) << PQerrorMessage(conn);
      PQclear(res);
      PQfinish(conn);
      return;
    }
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << err;
    sqlite3_free(err);
    sqlite3_close(db);
  }
  // The first column of the first row of `sql`.
  std::string RawQuery(const std::string& sql) {
    std::string out;
    if (backend_ == Backend::kPostgres) {
      PGconn* conn = PQconnectdb(path_.c_str());
      PGresult* res = PQexec(conn, sql.c_str());
      EXPECT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << PQerrorMessage(conn);
      if (PQntuples(res) > 0) out = PQgetvalue(res, 0, 0);
      PQclear(res);
      PQfinish(conn);
      return out;
    }
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }
  // What each backend keeps as the record schema version.
  std::string SchemaVersion() {
    return backend_ == Backend::kSqlite
               ? RawQuery("PRAGMA user_version")
               : RawQuery("SELECT version FROM loom_schema WHERE component = 'records'");
  }
  void SetSchemaVersion(int v) {
    RawExec(backend_ == Backend::kSqlite ? absl::StrCat("PRAGMA user_version = ", v)
                                         : absl::StrCat("UPDATE loom_schema SET version = ", v,
                                                        " WHERE component = 'records'"));
  }

  Backend backend_ = Backend::kSqlite;
  testing::PostgresCluster* cluster_ = nullptr;
  int paths_ = 0;
  std::string dir_;
  std::string path_;
};

// The contract of RecordStore, run against every implementation.
class RecordStoreTest : public RecordStoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override { SetUpBackend(GetParam()); }
};
INSTANTIATE_TEST_SUITE_P(Backends, RecordStoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         testing::StoreBackendName<::testing::TestParamInfo<Backend>>);

// What only the SQLite file has: WAL mode, PRAGMAs, files that are not databases.
class SqliteRecordStoreTest : public RecordStoreFixture {
 protected:
  void SetUp() override { SetUpBackend(Backend::kSqlite); }
};

// What only PostgreSQL has: connection errors, its schema table, text it cannot store.
class PostgresRecordStoreTest : public RecordStoreFixture {
 protected:
  void SetUp() override { SetUpBackend(Backend::kPostgres); }
};

TEST_F(SqliteRecordStoreTest, NewDatabaseIsVersionedAndInWalMode) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(RawQuery("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(RawQuery("PRAGMA user_version"), absl::StrCat(kRecordSchemaVersion));
  EXPECT_EQ(RawQuery("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                     "('records_best', 'records_job')"),
            "2");
  // Reopening an up-to-date database is a no-op.
  store.reset();
  EXPECT_NE(Open(path_), nullptr);
}

TEST_P(RecordStoreTest, BestKOrdersByMedianExcludingErrorsAndOtherTargets) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  Record bogus_median = Ok(TaskA(), 1, {3e-3, 1e-3, 2e-3}, 1);  // median 2e-3
  bogus_median.median_cost = 1e-12;                             // recomputed by Append
  ASSERT_TRUE(store
                  ->Append({bogus_median, Ok(TaskA(), 2, {5e-3}, 2),
                            Failed(TaskA(), 3, ErrorKind::kRuntime, 3),
                            Ok(TaskA(), 4, {1e-3, 2e-3}, 4),  // median 1.5e-3
                            Ok(TaskA(), 5, {4e-4}, 5, "job-1", kOtherTarget),
                            Ok(TaskB(), 6, {1e-4}, 6), Failed(TaskA(), 7, ErrorKind::kCompile, 7),
                            Ok(TaskA(), 2, {2.5e-3}, 8)})  // config 2 again, better
                  .ok());
  auto best = store->BestK(TaskA(), kTarget, 10);
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_THAT(Configs(*best), ElementsAre(4, 1, 2));
  EXPECT_DOUBLE_EQ((*best)[0].median_cost, 1.5e-3);
  EXPECT_DOUBLE_EQ((*best)[1].median_cost, 2e-3);
  EXPECT_DOUBLE_EQ((*best)[2].median_cost, 2.5e-3);  // the better of config 2's measurements
  EXPECT_EQ((*best)[2].id, 8);
  EXPECT_EQ((*best)[1].id, 1);

  auto top2 = store->BestK(TaskA(), kTarget, 2);
  ASSERT_TRUE(top2.ok());
  EXPECT_THAT(Configs(*top2), ElementsAre(4, 1));
  auto none = store->BestK(TaskA(), kTarget, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
  auto unknown = store->BestK("dense:f32:m1_n2_k3_tb0", kTarget, 5);
  ASSERT_TRUE(unknown.ok());
  EXPECT_THAT(*unknown, IsEmpty());

  absl::Status st = store->BestK(TaskA(), kTarget, -1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("k is -1"));
}

TEST_P(RecordStoreTest, InvalidRecordRejectsTheWholeBatch) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  Record no_costs = Ok(TaskA(), 2, {}, 2);
  absl::Status st = store->Append({Ok(TaskA(), 1, {1e-3}, 1), no_costs});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("has no costs"));
  Record negative = Ok(TaskA(), 3, {1e-3, -1.0}, 3);
  st = store->Append({negative});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("positive and finite"));
  Record no_target = Ok(TaskA(), 4, {1e-3}, 4);
  no_target.target_key.clear();
  st = store->Append({no_target});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("empty target_key"));
  EXPECT_EQ(CountAll(*store), 0);
}

TEST_P(RecordStoreTest, ForTaskKeepsInsertionOrderAndFiltersByJob) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Append({Ok(TaskA(), 9, {1e-3}, 1, "job-1"), Ok(TaskB(), 8, {1e-3}, 2)}).ok());
  ASSERT_TRUE(store
                  ->Append({Failed(TaskA(), 3, ErrorKind::kWrongAnswer, 3, "job-2"),
                            Ok(TaskA(), 5, {9e-3}, 4, "job-1"), Ok(TaskA(), 1, {1e-4}, 5, "job-2")})
                  .ok());
  auto all = store->ForTask(TaskA(), kTarget, std::nullopt);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Configs(*all), ElementsAre(9, 3, 5, 1));
  EXPECT_EQ((*all)[1].error, ErrorKind::kWrongAnswer);
  EXPECT_EQ((*all)[1].median_cost, kInf);
  EXPECT_LT((*all)[0].id, (*all)[1].id);
  auto job2 = store->ForTask(TaskA(), kTarget, "job-2");
  ASSERT_TRUE(job2.ok());
  EXPECT_THAT(Configs(*job2), ElementsAre(3, 1));
  auto other_target = store->ForTask(TaskA(), kOtherTarget, std::nullopt);
  ASSERT_TRUE(other_target.ok());
  EXPECT_THAT(*other_target, IsEmpty());
}

TEST_P(RecordStoreTest, AppendedRecordsAreVisibleFromAnotherConnection) {
  auto writer = Open(path_);
  auto reader = Open(path_);
  ASSERT_NE(writer, nullptr);
  ASSERT_NE(reader, nullptr);
  Record r = Ok(TaskA(), 42, {1e-3, 1.25e-3, 0.75e-3}, 1);
  r.error_msg = "naïve ünïcode";
  ASSERT_TRUE(writer->Append({r}).ok());
  auto seen = reader->ForTask(TaskA(), kTarget, std::nullopt);
  ASSERT_TRUE(seen.ok()) << seen.status();
  ASSERT_EQ(seen->size(), 1u);
  r.id = 1;
  EXPECT_EQ((*seen)[0], r);
  // And the other way round, after the writer's connection is closed.
  writer.reset();
  ASSERT_TRUE(reader->Append({Ok(TaskA(), 43, {1e-3}, 2)}).ok());
  auto reopened = Open(path_);
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(CountAll(*reopened), 2);
}

TEST_P(RecordStoreTest, ConcurrentAppendsFromThreadsAllLand) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 4, kBatches = 25, kPerBatch = 4;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Record> batch;
        for (int i = 0; i < kPerBatch; ++i) {
          const int64_t n = (t * kBatches + b) * kPerBatch + i;
          batch.push_back(Ok(TaskA(), n, {1e-3 + n * 1e-6}, n, absl::StrCat("job-", t)));
        }
        if (!store->Append(batch).ok()) ++failures;
        // Readers interleave with writers.
        if (!store->BestK(TaskA(), kTarget, 3).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(CountAll(*store), kThreads * kBatches * kPerBatch);
  auto job3 = store->Count({.job_id = "job-3"});
  ASSERT_TRUE(job3.ok());
  EXPECT_EQ(*job3, kBatches * kPerBatch);
}

// Waits for `pid` up to `timeout`; kills it past that. Returns its wait status, or -1 on timeout.
int WaitWithTimeout(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

// In a forked child: opens its own connection and appends `batches` batches; exits 0 on success.
[[noreturn]] void AppendInChild(const std::string& path, const std::string& job, int batches,
                                int per_batch) {
  auto store = OpenRecordStore(path);
  if (!store.ok()) _exit(2);
  for (int b = 0; b < batches || batches < 0; ++b) {
    std::vector<Record> batch;
    for (int i = 0; i < per_batch; ++i) {
      const int64_t n = static_cast<int64_t>(b) * per_batch + i;
      batch.push_back(Ok(TaskA(), n, {1e-3}, n, job));
    }
    if (!(*store)->Append(batch).ok()) _exit(3);
  }
  _exit(0);
}

TEST_P(RecordStoreTest, ConcurrentAppendsFromProcessesAllLand) {
  // The file does not exist yet: the children and the parent create the schema concurrently.
  constexpr int kBatches = 20, kPerBatch = 5;
  std::vector<pid_t> children;
  for (int c = 0; c < 2; ++c) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) AppendInChild(path_, absl::StrCat("proc-", c), kBatches, kPerBatch);
    children.push_back(pid);
  }
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  // The parent writes at the same time.
  for (int b = 0; b < kBatches; ++b) {
    ASSERT_TRUE(store->Append({Ok(TaskB(), b, {1e-3}, b, "parent")}).ok());
  }
  for (pid_t pid : children) {
    const int status = WaitWithTimeout(pid, absl::Seconds(60));
    ASSERT_TRUE(WIFEXITED(status)) << "child timed out or crashed: " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  EXPECT_EQ(CountAll(*store), 2 * kBatches * kPerBatch + kBatches);
  for (int c = 0; c < 2; ++c) {
    auto n = store->Count({.job_id = absl::StrCat("proc-", c)});
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, kBatches * kPerBatch);
  }
}

TEST_P(RecordStoreTest, KillNineLosesAtMostTheBatchInFlight) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  constexpr int kPerBatch = 10;
  // Several kills at different moments, each of a child appending batches as fast as it can.
  for (int round = 0; round < 6; ++round) {
    const int64_t before = CountAll(*store);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) AppendInChild(path_, absl::StrCat("doomed-", round), /*batches=*/-1, kPerBatch);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    int64_t seen = before;
    while (seen < before + 2 * kPerBatch && absl::Now() < deadline) {
      seen = CountAll(*store);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(700 * round));
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    ASSERT_GE(seen, before + 2 * kPerBatch) << "the child never appended";
    auto reopened = Open(path_);
    ASSERT_NE(reopened, nullptr);
    const int64_t n = CountAll(*reopened);
    EXPECT_GE(n, seen);
    EXPECT_EQ(n % kPerBatch, 0) << "a partial batch was stored in round " << round;
  }
  if (GetParam() == Backend::kSqlite) EXPECT_EQ(RawQuery("PRAGMA integrity_check"), "ok");
}

TEST_P(RecordStoreTest, ExportThenImportIntoAFreshDatabaseIsIdentical) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  Record odd_config = Ok(TaskB(), 7, {0.1 + 0.2, 1.0 / 3.0}, 3, "job-2");
  odd_config.config_json = "not json at all";
  Record spaced = Ok(TaskA(), 8, {2e-3}, 4);
  spaced.config_json = "{ \"a\": 1 }";  // JSON, but not in the compact form: kept verbatim
  Record empty_config = Failed(TaskA(), 9, ErrorKind::kInstantiation, 5);
  empty_config.config_json = "";
  empty_config.error_msg = "line one\nline \"two\"\t\u00e9";
  Record before_epoch = Ok(TaskA(), 10, {1e-3}, 6);
  before_epoch.timestamp = absl::FromUnixMicros(-1'234'567);
  ASSERT_TRUE(store
                  ->Append({Ok(TaskA(), 1, {1e-3, 2e-3, 1.5e-3}, 1),
                            Failed(TaskA(), 2, ErrorKind::kRunTimeout, 2), odd_config, spaced,
                            empty_config, before_epoch})
                  .ok());
  std::stringstream exported;
  ASSERT_TRUE(store->ExportJsonLines(exported, {}).ok());
  const std::string text = exported.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 6);
  EXPECT_THAT(text, HasSubstr("\"config\":{\"tile_oc\":2,\"unroll\":1}"));
  EXPECT_THAT(text, HasSubstr("\"timestamp\":\"2023-11-14T22:13:20.000001Z\""));
  EXPECT_THAT(text, HasSubstr("\"error\":\"run_timeout\""));

  const std::string fresh_path = NewPath();
  auto fresh = Open(fresh_path);
  ASSERT_NE(fresh, nullptr);
  std::stringstream in(text);
  auto imported = fresh->ImportJsonLines(in);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(*imported, 6);
  for (const std::string& task : {TaskA(), TaskB()}) {
    auto want = store->ForTask(task, kTarget, std::nullopt);
    auto got = fresh->ForTask(task, kTarget, std::nullopt);
    ASSERT_TRUE(want.ok() && got.ok());
    EXPECT_EQ(*got, *want);  // ids too: same order into an empty database
  }
  std::stringstream reexported;
  ASSERT_TRUE(fresh->ExportJsonLines(reexported, {}).ok());
  EXPECT_EQ(reexported.str(), text);

  // Importing the same lines again stores nothing.
  std::stringstream again(text);
  auto reimported = fresh->ImportJsonLines(again);
  ASSERT_TRUE(reimported.ok());
  EXPECT_EQ(*reimported, 0);
  EXPECT_EQ(CountAll(*fresh), 6);

  // Filters.
  std::stringstream job2;
  ASSERT_TRUE(store->ExportJsonLines(job2, {.job_id = "job-2"}).ok());
  auto job2_records = store->ForTask(TaskB(), kTarget, "job-2");
  ASSERT_TRUE(job2_records.ok());
  ASSERT_EQ(job2_records->size(), 1u);
  EXPECT_EQ(job2.str(), RecordToJson((*job2_records)[0]) + "\n");
  EXPECT_EQ((*job2_records)[0].config_json, "not json at all");
  std::stringstream none;
  ASSERT_TRUE(store->ExportJsonLines(none, {.target_key = kOtherTarget}).ok());
  EXPECT_EQ(none.str(), "");
}

TEST_P(RecordStoreTest, ImportNamesTheBadLineAndStoresNothing) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  const std::string good = RecordToJson(Ok(TaskA(), 1, {1e-3}, 1));
  const std::string good2 = RecordToJson(Ok(TaskA(), 2, {1e-3}, 2));
  {
    std::stringstream in(good + "\n\n" + good2 + "\n{\"task_key\": oops\n");
    absl::Status st = store->ImportJsonLines(in).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("line 4: not valid JSON"));
  }
  {
    std::string missing = good2;
    missing.replace(missing.find("\"costs\""), 7, "\"kosts\"");
    std::stringstream in(good + "\n" + missing + "\n");
    absl::Status st = store->ImportJsonLines(in).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("line 2: field 'costs' is missing"));
  }
  {
    std::string bad_kind = good;
    bad_kind.replace(bad_kind.find("\"none\""), 6, "\"meltdown\"");
    std::stringstream in(bad_kind + "\n");
    absl::Status st = store->ImportJsonLines(in).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("line 1: field 'error' unknown error kind 'meltdown'"));
  }
  {
    std::string bad_time = good;
    bad_time.replace(bad_time.find("2023-"), 5, "yyyy-");
    std::stringstream in(bad_time + "\n");
    absl::Status st = store->ImportJsonLines(in).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("line 1: field 'timestamp'"));
  }
  EXPECT_EQ(CountAll(*store), 0);
}

TEST_P(RecordStoreTest, NewerSchemaVersionIsRefused) {
  ASSERT_NE(Open(path_), nullptr);
  SetSchemaVersion(7);
  auto store = OpenRecordStore(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(),
              HasSubstr(GetParam() == Backend::kSqlite
                            ? absl::StrCat("database schema version 7 is newer than this Loom (",
                                           kRecordSchemaVersion, ")")
                            : absl::StrCat("records schema version 7; this Loom understands up to ",
                                           kRecordSchemaVersion)));
  EXPECT_THAT(store.status().message(), HasSubstr(path_));
}

TEST_P(RecordStoreTest, SchemaOneDatabaseGainsTheAgentColumnAndKeepsItsRecords) {
  {
    auto store = Open(path_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Append({Ok(TaskA(), 1, {0.5}, 1, "j1")}).ok());
  }
  // Back to what schema 1 wrote: no agent column.
  RawExec("ALTER TABLE records DROP COLUMN agent_id");
  SetSchemaVersion(1);
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(SchemaVersion(), "2");
  Record measured = Ok(TaskA(), 2, {0.25}, 2, "j2");
  measured.agent_id = "gpu-host-1";
  ASSERT_TRUE(store->Append({measured}).ok());
  auto all = store->ForTask(TaskA(), kTarget, std::nullopt);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].agent_id, "");
  EXPECT_EQ((*all)[1].agent_id, "gpu-host-1");
  EXPECT_THAT(RecordToJson((*all)[1]), HasSubstr("\"agent_id\":\"gpu-host-1\""));
  EXPECT_THAT(RecordToJson((*all)[0]), Not(HasSubstr("agent_id")));
}

TEST_F(SqliteRecordStoreTest, NonSqliteFileIsRefusedByName) {
  {
    std::ofstream garbage(path_, std::ios::binary);
    for (int i = 0; i < 512; ++i) garbage << "this is not a database, it is a text file\n";
  }
  auto store = OpenSqliteRecordStore(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(store.status().message(), HasSubstr(absl::StrCat("'", path_, "'")));
  EXPECT_THAT(store.status().message(), HasSubstr("is not an SQLite database"));
}

TEST_F(SqliteRecordStoreTest, OtherApplicationsDatabaseIsRefused) {
  RawExec("PRAGMA application_id = 1234; CREATE TABLE t (x INTEGER);");
  auto store = OpenSqliteRecordStore(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("of another application"));
}

TEST_F(SqliteRecordStoreTest, UncreatablePathIsNotFound) {
  auto store = OpenSqliteRecordStore(dir_ + "/no/such/dir/records.db");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(store.status().message(), HasSubstr("no/such/dir/records.db"));
}

TEST_P(RecordStoreTest, HostileTextIsStoredVerbatim) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  const std::string hostile = "x'); DROP TABLE records; -- \"$1\" ?1 \\ %s";
  Record r = Ok(hostile, 1, {1e-3}, 1, hostile);
  r.error_msg = hostile;
  r.config_json = hostile;
  ASSERT_TRUE(store->Append({r}).ok());
  auto back = store->ForTask(hostile, kTarget, hostile);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].task_key, hostile);
  EXPECT_EQ((*back)[0].config_json, hostile);
  EXPECT_EQ((*back)[0].error_msg, hostile);
  EXPECT_EQ(CountAll(*store), 1);
}

TEST_F(PostgresRecordStoreTest, NewDatabaseIsVersionedWithItsIndexes) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(SchemaVersion(), absl::StrCat(kRecordSchemaVersion));
  EXPECT_EQ(RawQuery("SELECT COUNT(*) FROM pg_indexes WHERE indexname IN ('records_best', "
                     "'records_job')"),
            "2");
  // Reopening an up-to-date database is a no-op.
  store.reset();
  EXPECT_NE(Open(path_), nullptr);
}

TEST_F(PostgresRecordStoreTest, AnotherApplicationsRecordsTableIsRefused) {
  RawExec("CREATE TABLE records (x INTEGER)");
  auto store = OpenRecordStore(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(),
              HasSubstr("has a table 'records' that Loom did not create"));
}

TEST_F(PostgresRecordStoreTest, TextWithANulByteIsRefusedAndNothingStored) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  Record r = Ok(TaskA(), 2, {1e-3}, 2);
  r.error_msg = std::string("before\0after", 12);
  absl::Status st = store->Append({Ok(TaskA(), 1, {1e-3}, 1), r});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("NUL byte"));
  EXPECT_EQ(CountAll(*store), 0);
}

// A pipelined batch applies its statements in order in one transaction; the first that fails
// fails it with that statement's error, nothing of it is kept, and the connection goes on.
TEST_F(PostgresRecordStoreTest, ExecBatchAppliesInOrderAndStopsAtTheFirstFailure) {
  auto conn = PgConnection::Connect(path_, "state");
  ASSERT_TRUE(conn.ok()) << conn.status();
  PgConnection& c = **conn;
  ASSERT_TRUE(c.Exec("CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT)").ok());
  auto insert = [](int64_t x, const std::string& y) {
    return PgStatement{"INSERT INTO t (x, y) VALUES ($1, $2)", {PgInt(x), PgText(y)}};
  };
  ASSERT_TRUE(c.InTransaction([&] {
                 return c.ExecBatch({insert(1, "a"),
                                     insert(2, "b"),
                                     {"UPDATE t SET y = y || '!' WHERE x = $1", {PgInt(1)}}});
               }).ok());
  absl::Status st = c.InTransaction([&] {
    return c.ExecBatch({insert(3, "c"), insert(1, "again"), insert(4, "d")});
  });
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("duplicate key"));
  EXPECT_THAT(st.message(), HasSubstr("INSERT INTO t"));
  auto rows = c.Exec("SELECT string_agg(x || y, ',' ORDER BY x) FROM t");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->Text(0, 0), "1a!,2b");
}

TEST(PostgresUriTest, ConnectionFailureNamesTheUriWithoutItsPassword) {
  auto store = OpenRecordStore("postgresql://alice:s3cret@127.0.0.1:1/loom?connect_timeout=5");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(store.status().message(),
              HasSubstr("cannot connect to PostgreSQL at "
                        "'postgresql://alice:***@127.0.0.1:1/loom?connect_timeout=5'"));
  EXPECT_THAT(store.status().message(), Not(HasSubstr("s3cret")));
  EXPECT_EQ(store.status().message().find('\n'), std::string::npos);

  auto socket = OpenRecordStore("postgres:///loom?host=/nonexistent/dir&password=hunter2");
  ASSERT_FALSE(socket.ok());
  EXPECT_EQ(socket.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(socket.status().message(),
              HasSubstr("'postgres:///loom?host=/nonexistent/dir&password=***'"));
  EXPECT_THAT(socket.status().message(), Not(HasSubstr("hunter2")));
}

TEST(PostgresUriTest, OnlyPostgresSchemesArePostgres) {
  EXPECT_TRUE(IsPostgresUri("postgresql://h/db"));
  EXPECT_TRUE(IsPostgresUri("postgres:///db?host=/tmp"));
  EXPECT_FALSE(IsPostgresUri("state.db"));
  EXPECT_FALSE(IsPostgresUri("/var/lib/postgresql://x"));
  EXPECT_EQ(RedactUri("postgresql://u@h:5/db"), "postgresql://u@h:5/db");
  EXPECT_EQ(RedactUri("postgresql://u:p:q@h/db?sslmode=require&password=x"),
            "postgresql://u:***@h/db?sslmode=require&password=***");
}

TEST(WorkloadDistanceTest, ZeroForSameShapeInfiniteAcrossKindsAndKernels) {
  EXPECT_EQ(WorkloadDistance(Conv(64, 56, 64, 3), Conv(64, 56, 64, 3)), 0);
  EXPECT_DOUBLE_EQ(WorkloadDistance(Conv(64, 56, 64, 3), Conv(128, 56, 64, 3)), 1);
  EXPECT_DOUBLE_EQ(WorkloadDistance(Conv(128, 56, 64, 3), Conv(64, 56, 64, 3)), 1);
  EXPECT_DOUBLE_EQ(WorkloadDistance(Conv(64, 56, 64, 3), Conv(64, 28, 64, 3)), 2);  // h and w
  EXPECT_EQ(WorkloadDistance(Conv(64, 56, 64, 3), Conv(64, 56, 64, 1)), kInf);
  EXPECT_EQ(WorkloadDistance(Conv(64, 56, 64, 3), Dense(1, 64, 64)), kInf);
  EXPECT_DOUBLE_EQ(WorkloadDistance(Dense(1, 1000, 512), Dense(1, 1000, 2048)), 2);
  graph::Workload tb = Dense(1, 1000, 512);
  tb.trans_b = true;
  EXPECT_EQ(WorkloadDistance(Dense(1, 1000, 512), tb), kInf);
  graph::Workload padded = Conv(64, 56, 64, 3);
  padded.pad_bottom = 2;
  EXPECT_DOUBLE_EQ(WorkloadDistance(Conv(64, 56, 64, 3), padded), 0.25);
}

TEST_P(RecordStoreTest, SimilarRanksTheSameShapeThenTheNearestNeighbour) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  const graph::Workload query = Conv(64, 56, 64, 3);
  const std::string same = graph::WorkloadKey(query);
  const std::string near = graph::WorkloadKey(Conv(128, 56, 64, 3));  // distance 1
  const std::string far = graph::WorkloadKey(Conv(64, 14, 64, 3));    // distance 4
  const std::string other_kernel = graph::WorkloadKey(Conv(64, 56, 64, 1));
  const std::string dense = graph::WorkloadKey(Dense(1, 64, 64));
  ASSERT_TRUE(store
                  ->Append({Ok(far, 1, {1e-5}, 1), Ok(other_kernel, 2, {1e-6}, 2),
                            Ok(dense, 3, {1e-6}, 3), Ok(near, 4, {2e-3}, 4), Ok(near, 5, {1e-3}, 5),
                            Failed(near, 6, ErrorKind::kRuntime, 6), Ok(same, 7, {9e-3}, 7),
                            Ok(near, 8, {1e-7}, 8, "j", kOtherTarget)})
                  .ok());
  auto similar = store->Similar(query, kTarget, 10);
  ASSERT_TRUE(similar.ok()) << similar.status();
  EXPECT_THAT(Configs(*similar), ElementsAre(7, 5, 4, 1));
  EXPECT_EQ((*similar)[0].task_key, same);
  EXPECT_EQ((*similar)[1].task_key, near);
  EXPECT_EQ((*similar)[3].task_key, far);

  // Without the same shape in the database, its nearest neighbour comes first.
  auto from_neighbour = store->Similar(Conv(96, 56, 64, 3), kTarget, 2);
  ASSERT_TRUE(from_neighbour.ok());
  EXPECT_THAT(Configs(*from_neighbour), ElementsAre(5, 4));  // 96 is nearer 128 than 64 in log2

  auto limited = store->Similar(query, kTarget, 2);
  ASSERT_TRUE(limited.ok());
  EXPECT_THAT(Configs(*limited), ElementsAre(7, 5));
  absl::Status st = store->Similar(query, kTarget, -2).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(RecordStoreTest, StageTimingsRoundTrip) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  const absl::Time t0 = absl::FromUnixMicros(1'700'000'000'000'000);
  std::vector<StageTiming> round0 = {
      {"propose", t0, t0 + absl::Milliseconds(3), "cpu:0"},
      {"build", t0 + absl::Milliseconds(3), t0 + absl::Seconds(2), "cpu:1"},
      {"measure", t0 + absl::Seconds(2), t0 + absl::Seconds(5), "device:cpu:1"},
      {"update", t0 + absl::Seconds(5), t0 + absl::Microseconds(5'000'123), "cpu:0"},
  };
  std::vector<StageTiming> round1 = {
      {"propose", t0 + absl::Seconds(6), t0 + absl::Seconds(6), "cpu:0"}};
  ASSERT_TRUE(store->AppendStageTimings("job-1", TaskA(), 0, round0).ok());
  ASSERT_TRUE(store->AppendStageTimings("job-2", TaskA(), 0, round1).ok());
  ASSERT_TRUE(store->AppendStageTimings("job-1", TaskB(), 1, round1).ok());

  auto got = store->StageTimings("job-1");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 5u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ((*got)[i], (StageTimingRecord{"job-1", TaskA(), 0, round0[i]}));
  }
  EXPECT_EQ((*got)[4], (StageTimingRecord{"job-1", TaskB(), 1, round1[0]}));
  auto none = store->StageTimings("job-3");
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());

  absl::Status st = store->AppendStageTimings("job-1", TaskA(), 2,
                                              {{"build", t0 + absl::Seconds(1), t0, "cpu:0"}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("stage 'build' of round 2 ends before it starts"));
  st = store->AppendStageTimings("", TaskA(), 0, round1);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(RecordStoreTest, SummaryCountsTrialsErrorsAndBest) {
  auto store = Open(path_);
  ASSERT_NE(store, nullptr);
  Record b_best = Ok(TaskB(), 3, {0.25, 0.5, 0.125}, 3);  // median 0.25 s
  b_best.flops = 2e9;                                     // -> 8 GFLOPS
  b_best.template_name = "conv2d_direct";
  ASSERT_TRUE(store
                  ->Append({Failed(TaskB(), 1, ErrorKind::kCompile, 1), Ok(TaskB(), 2, {1.0}, 2),
                            b_best, Failed(TaskA(), 4, ErrorKind::kRuntime, 4),
                            Failed(TaskB(), 5, ErrorKind::kRunTimeout, 5),
                            Ok(TaskA(), 6, {0.5}, 6, "job", kOtherTarget)})
                  .ok());
  auto summary = store->Summary(kTarget);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->size(), 2u);
  const TaskSummary& b = (*summary)[0];  // TaskB's first record came first
  EXPECT_EQ(b.task_key, TaskB());
  EXPECT_EQ(b.trials, 4);
  EXPECT_EQ(b.errors, 2);
  EXPECT_EQ(b.best_cost, 0.25);
  EXPECT_EQ(b.best_gflops, 8.0);
  EXPECT_EQ(b.best_template, "conv2d_direct");
  EXPECT_EQ(b.best_config_index, 3);
  const TaskSummary& a = (*summary)[1];
  EXPECT_EQ(a, (TaskSummary{.task_key = TaskA(), .trials = 1, .errors = 1}));

  auto other = store->Summary(kOtherTarget);
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].best_gflops, 2.0);  // 1e9 flops in 0.5 s
}

TEST(RecordJsonTest, RoundTripsEveryField) {
  Record r = Ok(TaskA(), 12345, {1.0 / 3.0, 2e-7, 5e-3}, 77, "job-x");
  r.build_seconds = 0.1 + 0.2;
  r.agent_id = "host-7";
  auto back = RecordFromJson(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, r);

  Record failed = Failed(TaskA(), 3, ErrorKind::kBuildTimeout, 1);
  const std::string line = RecordToJson(failed);
  EXPECT_THAT(line, HasSubstr("\"median_cost\":null"));
  EXPECT_THAT(line, HasSubstr("\"error\":\"build_timeout\""));
  back = RecordFromJson(line);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, failed);

  absl::Status st = RecordFromJson("[1, 2]").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("not a JSON object"));
  std::string bad_index = RecordToJson(r);
  bad_index.replace(bad_index.find("12345"), 5, "1.5");
  st = RecordFromJson(bad_index).status();
  EXPECT_THAT(st.message(), HasSubstr("field 'config_index' must be an integer"));
}

TEST(RecordTest, MakeRecordFromAMeasureResult) {
  MeasureResult result;
  result.config.index = 17;
  result.costs = {4e-3, 1e-3, 2e-3, 3e-3};
  result.measure_seconds = 1.5;
  result.timestamp = absl::FromUnixSeconds(1'700'000'000);
  Record r = MakeRecord({.task_key = TaskA(),
                         .template_name = "conv2d_nchwc",
                         .target_key = kTarget,
                         .job_id = "job-9",
                         .flops = 5e6},
                        result, "{\"tile_oc\":16}", 0.75);
  EXPECT_EQ(r.config_index, 17);
  EXPECT_EQ(r.median_cost, 2.5e-3);
  EXPECT_EQ(r.costs, result.costs);
  EXPECT_EQ(r.job_id, "job-9");
  EXPECT_EQ(r.build_seconds, 0.75);
  EXPECT_EQ(r.measure_seconds, 1.5);
  EXPECT_EQ(r.timestamp, result.timestamp);
  EXPECT_DOUBLE_EQ(r.Gflops(), 5e6 / 2.5e-3 / 1e9);

  result.error = ErrorKind::kWrongAnswer;
  EXPECT_EQ(MakeRecord({}, result, "", 0).median_cost, kInf);
  EXPECT_EQ(MakeRecord({}, result, "", 0).Gflops(), 0);
  EXPECT_EQ(ParseErrorKind("wrong_answer").value(), ErrorKind::kWrongAnswer);
}

}  // namespace
}  // namespace loom::tune
