// RecordStore on SQLite: one connection per store, guarded by a mutex (threads); WAL journal and
// a busy timeout let several processes (jobs) write the same file. Schema versioned by
// `PRAGMA user_version`, migrated in place on open.

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "loom/base/status_macros.h"
#include "loom/records/record_store.h"
#include "loom/records/record_store_internal.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using internal::kRecordColumns;

using internal::TaskKindOf;

constexpr int32_t kApplicationId = 0x4C4F4F4D;  // "LOOM"
constexpr int kBusyTimeoutMs = 30000;

// kMigrations[v] takes a database from schema version v to v + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: records and stage timings.
    R"sql(
CREATE TABLE records (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_key TEXT NOT NULL,
  task_kind TEXT NOT NULL,       -- the key's kind prefix ("conv2d"), for Similar
  template_name TEXT NOT NULL,
  target_key TEXT NOT NULL,
  config_index INTEGER NOT NULL,
  config_json TEXT NOT NULL,
  costs TEXT NOT NULL,           -- JSON array of seconds
  median_cost REAL,              -- NULL exactly when the record failed
  flops REAL NOT NULL,
  error TEXT NOT NULL,           -- ErrorKindName
  error_msg TEXT NOT NULL,
  timestamp_us INTEGER NOT NULL, -- unix microseconds
  job_id TEXT NOT NULL,
  build_seconds REAL NOT NULL,
  measure_seconds REAL NOT NULL
);
CREATE INDEX records_best ON records(task_key, target_key, median_cost);
CREATE INDEX records_config ON records(task_key, target_key, config_index);
CREATE INDEX records_job ON records(job_id);
CREATE INDEX records_kind ON records(target_key, task_kind);
CREATE TABLE stage_timings (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  task_key TEXT NOT NULL,
  round INTEGER NOT NULL,
  stage TEXT NOT NULL,
  start_us INTEGER NOT NULL,
  end_us INTEGER NOT NULL,
  resource TEXT NOT NULL
);
CREATE INDEX stage_timings_job ON stage_timings(job_id);
)sql",
    // 1 -> 2: the agent that measured a record (the service's records; empty elsewhere).
    R"sql(
ALTER TABLE records ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
)sql",
};
static_assert(std::size(kMigrations) == kRecordSchemaVersion);

constexpr char kInsertRecord[] =
    "INSERT INTO records (task_key, task_kind, template_name, target_key, config_index, "
    "config_json, costs, median_cost, flops, error, error_msg, timestamp_us, job_id, "
    "build_seconds, measure_seconds, agent_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
    "?11, ?12, ?13, ?14, ?15, ?16)";

// Matches when a parameter is NULL (filter unset) or equal.
constexpr char kFilterWhere[] =
    "(?1 IS NULL OR task_key = ?1) AND (?2 IS NULL OR target_key = ?2) AND "
    "(?3 IS NULL OR job_id = ?3)";

absl::StatusCode CodeOf(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_NOTADB:
      return absl::StatusCode::kInvalidArgument;
    case SQLITE_CORRUPT:
      return absl::StatusCode::kDataLoss;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CANTOPEN:
      return absl::StatusCode::kNotFound;
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return absl::StatusCode::kPermissionDenied;
    default:
      return absl::StatusCode::kInternal;
  }
}

// Resets a cached statement (releasing its read snapshot) and its bindings at scope exit.
class ScopedReset {
 public:
  explicit ScopedReset(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~ScopedReset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  ScopedReset(const ScopedReset&) = delete;
  ScopedReset& operator=(const ScopedReset&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

void BindText(sqlite3_stmt* stmt, int i, std::string_view s) {
  sqlite3_bind_text(stmt, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
}
void BindOptionalText(sqlite3_stmt* stmt, int i, const std::optional<std::string>& s) {
  if (s.has_value()) {
    BindText(stmt, i, *s);
  } else {
    sqlite3_bind_null(stmt, i);
  }
}
std::string ColumnText(sqlite3_stmt* stmt, int i) {
  const unsigned char* text = sqlite3_column_text(stmt, i);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt, i));
}

class SqliteRecordStore : public internal::SqlRecordStore {
 public:
  static absl::StatusOr<std::unique_ptr<RecordStore>> Open(const std::string& path) {
    sqlite3* db = nullptr;
    int rc =
        sqlite3_open_v2(path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close_v2(db);
      return absl::NotFoundError(absl::StrCat("cannot open record database '", path, "': ", msg,
                                              " (does its directory exist and is it writable?)"));
    }
    auto store = std::unique_ptr<SqliteRecordStore>(new SqliteRecordStore(path, db));
    LOOM_RETURN_IF_ERROR(store->Initialize());
    return store;
  }

  ~SqliteRecordStore() override {
    absl::MutexLock lock(&mu_);
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

 private:
  absl::Status InTransactionLocked(const std::function<absl::Status()>& body) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return InTransaction(body);
  }

  absl::StatusOr<std::vector<Record>> ForTaskLocked(
      const std::string& task_key, const std::string& target_key,
      const std::optional<std::string>& job_id) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        Prepare(absl::StrCat("SELECT ", kRecordColumns,
                             " FROM records WHERE task_key = ?1 AND target_key = ?2 AND "
                             "(?3 IS NULL OR job_id = ?3) ORDER BY id")));
    ScopedReset reset(stmt);
    BindText(stmt, 1, task_key);
    BindText(stmt, 2, target_key);
    BindOptionalText(stmt, 3, job_id);
    return ReadRecords(stmt);
  }

  absl::StatusOr<std::vector<std::string>> SimilarTaskKeysLocked(
      const std::string& target_key, const std::string& task_kind) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                          Prepare("SELECT DISTINCT task_key FROM records WHERE target_key = ?1 "
                                  "AND task_kind = ?2 AND median_cost IS NOT NULL"));
    ScopedReset reset(stmt);
    BindText(stmt, 1, target_key);
    BindText(stmt, 2, task_kind);
    std::vector<std::string> keys;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
      if (!row) break;
      keys.push_back(ColumnText(stmt, 0));
    }
    return keys;
  }

  absl::StatusOr<std::vector<Record>> BestRecordsLocked(const std::string& task_key,
                                                        const std::string& target_key,
                                                        int64_t limit) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        Prepare(absl::StrCat("SELECT ", kRecordColumns,
                             " FROM records WHERE task_key = ?1 AND target_key = ?2 AND "
                             "median_cost IS NOT NULL ORDER BY median_cost, id LIMIT ?3")));
    ScopedReset reset(stmt);
    BindText(stmt, 1, task_key);
    BindText(stmt, 2, target_key);
    sqlite3_bind_int64(stmt, 3, limit);
    return ReadRecords(stmt);
  }

  absl::Status InsertStageTimingsLocked(const std::string& job_id, const std::string& task_key,
                                        int64_t round,
                                        const std::vector<StageTiming>& timings) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        Prepare("INSERT INTO stage_timings (job_id, task_key, round, stage, start_us, end_us, "
                "resource) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
    for (const StageTiming& t : timings) {
      ScopedReset reset(stmt);
      BindText(stmt, 1, job_id);
      BindText(stmt, 2, task_key);
      sqlite3_bind_int64(stmt, 3, round);
      BindText(stmt, 4, t.stage);
      sqlite3_bind_int64(stmt, 5, absl::ToUnixMicros(t.start));
      sqlite3_bind_int64(stmt, 6, absl::ToUnixMicros(t.end));
      BindText(stmt, 7, t.resource);
      LOOM_RETURN_IF_ERROR(Step(stmt).status());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<StageTimingRecord>> StageTimingsLocked(
      const std::string& job_id) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                          Prepare("SELECT job_id, task_key, round, stage, start_us, end_us, "
                                  "resource FROM stage_timings WHERE job_id = ?1 ORDER BY id"));
    ScopedReset reset(stmt);
    BindText(stmt, 1, job_id);
    std::vector<StageTimingRecord> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
      if (!row) break;
      StageTimingRecord t;
      t.job_id = ColumnText(stmt, 0);
      t.task_key = ColumnText(stmt, 1);
      t.round = sqlite3_column_int64(stmt, 2);
      t.timing.stage = ColumnText(stmt, 3);
      t.timing.start = absl::FromUnixMicros(sqlite3_column_int64(stmt, 4));
      t.timing.end = absl::FromUnixMicros(sqlite3_column_int64(stmt, 5));
      t.timing.resource = ColumnText(stmt, 6);
      out.push_back(std::move(t));
    }
    return out;
  }

  absl::Status ForEachRecordLocked(const RecordFilter& filter,
                                   const std::function<void(const Record&)>& each) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                          Prepare(absl::StrCat("SELECT ", kRecordColumns, " FROM records WHERE ",
                                               kFilterWhere, " ORDER BY id")));
    ScopedReset reset(stmt);
    BindFilter(stmt, filter);
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
      if (!row) break;
      LOOM_ASSIGN_OR_RETURN(Record r, ReadRecord(stmt));
      each(r);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> ContainsLocked(const Record& r) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * exists,
        Prepare("SELECT 1 FROM records WHERE task_key = ?1 AND target_key = ?2 AND "
                "config_index = ?3 AND template_name = ?4 AND timestamp_us = ?5 AND "
                "job_id = ?6 LIMIT 1"));
    ScopedReset reset(exists);
    BindText(exists, 1, r.task_key);
    BindText(exists, 2, r.target_key);
    sqlite3_bind_int64(exists, 3, r.config_index);
    BindText(exists, 4, r.template_name);
    sqlite3_bind_int64(exists, 5, absl::ToUnixMicros(r.timestamp));
    BindText(exists, 6, r.job_id);
    return Step(exists);
  }

  absl::StatusOr<int64_t> CountLocked(const RecordFilter& filter) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        Prepare(absl::StrCat("SELECT COUNT(*) FROM records WHERE ", kFilterWhere)));
    ScopedReset reset(stmt);
    BindFilter(stmt, filter);
    LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
    if (!row) return Error(SQLITE_INTERNAL, "COUNT returned no row");
    return sqlite3_column_int64(stmt, 0);
  }

  absl::StatusOr<std::vector<TaskSummary>> TaskCountsLocked(const std::string& target_key) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        Prepare("SELECT task_key, COUNT(*), SUM(error <> 'none'), MIN(id) AS first FROM records "
                "WHERE target_key = ?1 GROUP BY task_key ORDER BY first"));
    ScopedReset reset(stmt);
    BindText(stmt, 1, target_key);
    std::vector<TaskSummary> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
      if (!row) break;
      TaskSummary s;
      s.task_key = ColumnText(stmt, 0);
      s.trials = sqlite3_column_int64(stmt, 1);
      s.errors = sqlite3_column_int64(stmt, 2);
      out.push_back(std::move(s));
    }
    return out;
  }

  SqliteRecordStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

  absl::Status Error(int rc, const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::Status(CodeOf(rc), absl::StrCat("record database '", path_, "': ", what, ": ",
                                                 sqlite3_errmsg(db_)));
  }

  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Error(rc, sql);
    return absl::OkStatus();
  }

  // The cached prepared statement for `sql`, reset.
  absl::StatusOr<sqlite3_stmt*> Prepare(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return Error(rc, absl::StrCat("preparing `", sql, "`"));
    statements_.emplace(sql, stmt);
    return stmt;
  }

  // true: a row is ready; false: done.
  absl::StatusOr<bool> Step(sqlite3_stmt* stmt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Error(rc, absl::StrCat("running `", sqlite3_sql(stmt), "`"));
  }

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT (the write lock is taken up front, so the busy
  // timeout applies and concurrent writers never deadlock); rolls back when it fails.
  template <typename Body>
  absl::Status InTransaction(Body&& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status st = body();
    if (st.ok()) st = Exec("COMMIT");
    if (!st.ok() && !sqlite3_get_autocommit(db_)) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    return st;
  }

  absl::Status Initialize() {
    absl::MutexLock lock(&mu_);
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    // The first read of the file: where a file that is not SQLite shows itself.
    int64_t application_id = 0;
    {
      LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, PrepareOnOpen("PRAGMA application_id"));
      ScopedReset reset(stmt);
      LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
      if (row) application_id = sqlite3_column_int64(stmt, 0);
    }
    if (application_id != 0 && application_id != kApplicationId) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "'%s' is an SQLite database of another application (application_id 0x%08x), not a "
          "Loom record database",
          path_, application_id));
    }
    // Switching to WAL needs the exclusive lock, and SQLite does not wait for it when another
    // connection (another job creating the same file) holds a lock it could deadlock with: it
    // answers SQLITE_BUSY at once. So retry here, within the busy timeout.
    const absl::Time deadline = absl::Now() + absl::Milliseconds(kBusyTimeoutMs);
    for (int attempt = 0;; ++attempt) {
      absl::Status st;
      {
        LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare("PRAGMA journal_mode = WAL"));
        ScopedReset reset(stmt);
        st = Step(stmt).status();
      }
      if (st.ok()) break;
      if (st.code() != absl::StatusCode::kUnavailable || absl::Now() > deadline) return st;
      absl::SleepFor(absl::Milliseconds(2 + 2 * std::min(attempt, 24)));
    }
    // FULL: a committed batch survives a power loss too, not only a crash of the process.
    LOOM_RETURN_IF_ERROR(Exec("PRAGMA synchronous = FULL"));
    return InTransaction([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
      int64_t version = 0;
      {
        LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare("PRAGMA user_version"));
        ScopedReset reset(stmt);
        LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
        if (row) version = sqlite3_column_int64(stmt, 0);
      }
      if (version > kRecordSchemaVersion) {
        return absl::FailedPreconditionError(
            absl::StrCat("record database '", path_, "': database schema version ", version,
                         " is newer than this Loom (", kRecordSchemaVersion,
                         "); use a newer Loom or another database file"));
      }
      if (version == kRecordSchemaVersion) return absl::OkStatus();
      for (int64_t v = version; v < kRecordSchemaVersion; ++v) {
        LOOM_RETURN_IF_ERROR(Exec(kMigrations[v]));
      }
      LOOM_RETURN_IF_ERROR(
          Exec(absl::StrCat("PRAGMA user_version = ", kRecordSchemaVersion).c_str()));
      return Exec(absl::StrCat("PRAGMA application_id = ", kApplicationId).c_str());
    });
  }

  // Prepare for the first statement on a new connection: an SQLITE_NOTADB here means the file is
  // not a database at all, which deserves its own message.
  absl::StatusOr<sqlite3_stmt*> PrepareOnOpen(const std::string& sql)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<sqlite3_stmt*> stmt = Prepare(sql);
    if (stmt.ok()) {
      const int rc = sqlite3_step(*stmt);
      sqlite3_reset(*stmt);
      if (rc == SQLITE_ROW || rc == SQLITE_DONE) return stmt;
      if ((rc & 0xff) != SQLITE_NOTADB) return Error(rc, "reading the database header");
    } else if (sqlite3_errcode(db_) != SQLITE_NOTADB) {
      return stmt.status();
    }
    return absl::InvalidArgumentError(
        absl::StrCat("'", path_, "' is not an SQLite database (", sqlite3_errmsg(db_),
                     "); pass a Loom record database or a new file name"));
  }

  void BindFilter(sqlite3_stmt* stmt, const RecordFilter& filter) {
    BindOptionalText(stmt, 1, filter.task_key);
    BindOptionalText(stmt, 2, filter.target_key);
    BindOptionalText(stmt, 3, filter.job_id);
  }

  absl::Status InsertLocked(const Record& r) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kInsertRecord));
    ScopedReset reset(stmt);
    BindText(stmt, 1, r.task_key);
    BindText(stmt, 2, TaskKindOf(r.task_key));
    BindText(stmt, 3, r.template_name);
    BindText(stmt, 4, r.target_key);
    sqlite3_bind_int64(stmt, 5, r.config_index);
    BindText(stmt, 6, r.config_json);
    BindText(stmt, 7, nlohmann::json(r.costs).dump());
    const double median = MedianCost(r.costs, r.error);
    if (std::isfinite(median)) {
      sqlite3_bind_double(stmt, 8, median);
    } else {
      sqlite3_bind_null(stmt, 8);
    }
    sqlite3_bind_double(stmt, 9, r.flops);
    BindText(stmt, 10, ErrorKindName(r.error));
    BindText(stmt, 11, r.error_msg);
    sqlite3_bind_int64(stmt, 12, absl::ToUnixMicros(r.timestamp));
    BindText(stmt, 13, r.job_id);
    sqlite3_bind_double(stmt, 14, r.build_seconds);
    sqlite3_bind_double(stmt, 15, r.measure_seconds);
    BindText(stmt, 16, r.agent_id);
    return Step(stmt).status();
  }

  absl::StatusOr<Record> ReadRecord(sqlite3_stmt* stmt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Record r;
    r.id = sqlite3_column_int64(stmt, 0);
    r.task_key = ColumnText(stmt, 1);
    r.template_name = ColumnText(stmt, 2);
    r.target_key = ColumnText(stmt, 3);
    r.config_index = sqlite3_column_int64(stmt, 4);
    r.config_json = ColumnText(stmt, 5);
    absl::StatusOr<std::vector<double>> costs = internal::ParseStoredCosts(ColumnText(stmt, 6));
    if (!costs.ok()) {
      return absl::DataLossError(
          absl::StrCat("record database '", path_, "': record ", r.id, " has malformed costs"));
    }
    r.costs = *std::move(costs);
    r.median_cost = sqlite3_column_type(stmt, 7) == SQLITE_NULL
                        ? std::numeric_limits<double>::infinity()
                        : sqlite3_column_double(stmt, 7);
    r.flops = sqlite3_column_double(stmt, 8);
    // An error name this Loom does not know (a newer one wrote it) reads as kUnknown.
    r.error = ParseErrorKind(ColumnText(stmt, 9)).value_or(ErrorKind::kUnknown);
    r.error_msg = ColumnText(stmt, 10);
    r.timestamp = absl::FromUnixMicros(sqlite3_column_int64(stmt, 11));
    r.job_id = ColumnText(stmt, 12);
    r.build_seconds = sqlite3_column_double(stmt, 13);
    r.measure_seconds = sqlite3_column_double(stmt, 14);
    r.agent_id = ColumnText(stmt, 15);
    return r;
  }

  // Reads every row of `stmt`.
  absl::StatusOr<std::vector<Record>> ReadRecords(sqlite3_stmt* stmt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<Record> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, Step(stmt));
      if (!row) break;
      LOOM_ASSIGN_OR_RETURN(Record r, ReadRecord(stmt));
      out.push_back(std::move(r));
    }
    return out;
  }

  absl::StatusOr<std::vector<Record>> BestKLocked(const std::string& task_key,
                                                  const std::string& target_key, int k) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // One row per (template, config): its best measurement (ties: the earliest).
    LOOM_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        Prepare(absl::StrCat(
            "SELECT ", kRecordColumns, " FROM (SELECT ", kRecordColumns,
            ", ROW_NUMBER() OVER (PARTITION BY template_name, config_index ORDER BY median_cost, "
            "id) AS rank_in_config FROM records WHERE task_key = ?1 AND target_key = ?2 AND "
            "median_cost IS NOT NULL) WHERE rank_in_config = 1 ORDER BY median_cost, id LIMIT "
            "?3")));
    ScopedReset reset(stmt);
    BindText(stmt, 1, task_key);
    BindText(stmt, 2, target_key);
    sqlite3_bind_int64(stmt, 3, k);
    return ReadRecords(stmt);
  }

  const std::string path_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  // Prepared statements by SQL text, reused across calls.
  std::map<std::string, sqlite3_stmt*> statements_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<RecordStore>> OpenSqliteRecordStore(const std::string& path) {
  return SqliteRecordStore::Open(path);
}

}  // namespace loom::tune
