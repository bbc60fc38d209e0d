// SQLite implementation of StateStore. Schema version in PRAGMA user_version (older versions
// migrated in place), the file marked with its own application_id so a record database or another
// app's file is refused, and checked with `PRAGMA quick_check` when it is opened. Messages (job
// spec, history, configs, artifacts) are stored as serialized protobuf blobs, decoded by
// state_rows.h.
#include <sqlite3.h>
#include <sys/stat.h>

#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "loom/base/status_macros.h"
#include "loom/service/state_files.h"
#include "loom/service/state_rows.h"
#include "loom/service/state_store.h"

namespace loom::service {
namespace {

constexpr int64_t kApplicationId = 0x4c4d5356;  // "LMSV"

// kMigrations[v] takes a state file from schema version v to v + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: jobs, tasks, models, leases, logs, counters.
    R"sql(
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  state INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  spec BLOB NOT NULL,
  submitted_us INTEGER NOT NULL,
  started_us INTEGER NOT NULL,
  finished_us INTEGER NOT NULL,
  failure_reason TEXT NOT NULL,
  prepared INTEGER NOT NULL,
  isa TEXT NOT NULL,
  target_key TEXT NOT NULL,
  cpu_seconds REAL NOT NULL,
  device_seconds REAL NOT NULL,
  records INTEGER NOT NULL,
  estimated_latency_ms REAL NOT NULL
);
CREATE TABLE tasks (
  job_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  task_key TEXT NOT NULL,
  template_name TEXT NOT NULL,
  flops REAL NOT NULL,
  count INTEGER NOT NULL,
  phase INTEGER NOT NULL,
  round INTEGER NOT NULL,
  trials_done INTEGER NOT NULL,
  errors INTEGER NOT NULL,
  best_cost REAL NOT NULL,
  skip_reason TEXT NOT NULL,
  history BLOB NOT NULL,
  configs BLOB NOT NULL,
  artifacts BLOB NOT NULL,
  PRIMARY KEY (job_id, idx)
);
CREATE TABLE models (job_id TEXT PRIMARY KEY, onnx BLOB NOT NULL);
CREATE TABLE leases (
  lease_id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  task INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  agent_id TEXT NOT NULL,
  granted_us INTEGER NOT NULL
);
CREATE TABLE logs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  time_us INTEGER NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX logs_job ON logs(job_id, seq);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql",
    // 1 -> 2: unique job ids for records, per-job device-time limits, flagged agent credentials,
    // and the store id shared with the record database.
    R"sql(
ALTER TABLE jobs ADD COLUMN uid TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN device_seconds_limit REAL NOT NULL DEFAULT 0;
CREATE TABLE flagged_agents (
  identity TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  time_us INTEGER NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
)sql",
};
static_assert(std::size(kMigrations) == kStateSchemaVersion);

// 32 hex digits from the system's entropy: the state's identity.
std::string NewStoreId() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

int64_t Us(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time FromUs(int64_t us) { return absl::FromUnixMicros(us); }

// One prepared statement, finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("state store: prepare: ", sqlite3_errmsg(db_)));
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, int v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  void Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  // true: a row; false: done. Errors as status.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return absl::InternalError(absl::StrCat("state store: ", sqlite3_errmsg(db_)));
  }
  absl::Status Run() {
    LOOM_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return absl::OkStatus();
  }
  int64_t Int(int c) { return sqlite3_column_int64(stmt_, c); }
  double Real(int c) { return sqlite3_column_double(stmt_, c); }
  std::string Text(int c) {
    const unsigned char* p = sqlite3_column_text(stmt_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, c)) : "";
  }
  std::string Blob(int c) {
    const void* p = sqlite3_column_blob(stmt_, c);
    return p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, c)) : "";
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

class SqliteStateStore : public StateStore {
 public:
  explicit SqliteStateStore(sqlite3* db) : db_(db) {}
  ~SqliteStateStore() override { sqlite3_close(db_); }

  absl::Status Init(const std::string& path) {
    absl::MutexLock lock(&mu_);
    LOOM_RETURN_IF_ERROR(Exec("PRAGMA busy_timeout = 30000"));
    int64_t app = 0, version = 0;
    {
      Stmt s(db_, "PRAGMA application_id");
      if (!s.status().ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", path, "' is not a Loom state file (", sqlite3_errmsg(db_), ")"));
      }
      auto row = s.Step();
      if (!row.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", path, "' is not a Loom state file: ", row.status().message()));
      }
      if (*row) app = s.Int(0);
    }
    {
      Stmt s(db_, "PRAGMA user_version");
      LOOM_RETURN_IF_ERROR(s.status());
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) version = s.Int(0);
    }
    if (app != 0 && app != kApplicationId) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "'%s' belongs to another application (application_id 0x%08x), not a Loom state file",
          path, app));
    }
    if (version > kStateSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat("'", path, "' has state schema version ",
                                                        version, "; this Loom understands up to ",
                                                        kStateSchemaVersion, ": upgrade Loom"));
    }
    if (version > 0) {
      // Damage (garbage in a page, a torn index) is refused here, before anything is served,
      // rather than found by the first write and turned into a crash loop.
      Stmt s(db_, "PRAGMA quick_check");
      absl::StatusOr<bool> row = s.status().ok() ? s.Step() : absl::StatusOr<bool>(s.status());
      const std::string verdict =
          row.ok() && *row ? s.Text(0) : std::string(row.status().message());
      if (verdict != "ok") {
        return absl::DataLossError(absl::StrCat("state file '", path, "' is damaged (quick_check: ",
                                                OneLine(verdict), "); restore it from a backup"));
      }
    }
    if (path != ":memory:") LOOM_RETURN_IF_ERROR(Exec("PRAGMA journal_mode = WAL"));
    LOOM_RETURN_IF_ERROR(Exec("PRAGMA synchronous = NORMAL"));
    if (version == 0) {
      // A fresh file (an existing non-empty one without our id was refused above unless empty).
      Stmt s(db_, "SELECT count(*) FROM sqlite_master");
      LOOM_RETURN_IF_ERROR(s.status());
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row && s.Int(0) != 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("'", path,
                         "' is an SQLite database of something else (it has tables "
                         "but no Loom state schema): pass a new --state file"));
      }
    }
    if (version < kStateSchemaVersion) {
      LOOM_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
      absl::Status st;
      for (int64_t v = version; v < kStateSchemaVersion && st.ok(); ++v) st = Exec(kMigrations[v]);
      if (st.ok()) {
        st = Exec(absl::StrCat("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', '",
                               NewStoreId(), "')"));
      }
      if (st.ok()) st = Exec(absl::StrCat("PRAGMA user_version = ", kStateSchemaVersion));
      if (st.ok()) st = Exec(absl::StrCat("PRAGMA application_id = ", kApplicationId));
      if (!st.ok()) {
        Exec("ROLLBACK").IgnoreError();
        return st;
      }
      LOOM_RETURN_IF_ERROR(Exec("COMMIT"));
    }
    Stmt s(db_, "SELECT value FROM meta WHERE key = 'store_id'");
    LOOM_RETURN_IF_ERROR(s.status());
    LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
    const std::string id = row ? s.Text(0) : std::string();
    if (id.empty() || id.size() > 64 || id.find_first_not_of("0123456789abcdef") != id.npos) {
      return absl::DataLossError(absl::StrCat("state file '", path, "' has no valid store id"));
    }
    store_id_ = s.Text(0);
    return absl::OkStatus();
  }

  std::string store_id() const override { return store_id_; }

  absl::Status Apply(const Mutation& m) override {
    if (m.empty()) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    LOOM_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status st = ApplyLocked(m);
    if (!st.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return st;
    }
    return Exec("COMMIT");
  }

  absl::StatusOr<std::vector<JobRow>> LoadJobs() override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_,
           "SELECT id, uid, owner, name, state, priority, spec, submitted_us, started_us, "
           "finished_us, failure_reason, prepared, isa, target_key, cpu_seconds, device_seconds, "
           "records, estimated_latency_ms, device_seconds_limit FROM jobs ORDER BY seq");
    LOOM_RETURN_IF_ERROR(s.status());
    std::vector<JobRow> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      RawJobRow r;
      r.id = s.Text(0);
      r.uid = s.Text(1);
      r.owner = s.Text(2);
      r.name = s.Text(3);
      r.state = s.Int(4);
      r.priority = s.Int(5);
      r.spec = s.Blob(6);
      r.submitted_us = s.Int(7);
      r.started_us = s.Int(8);
      r.finished_us = s.Int(9);
      r.failure_reason = s.Text(10);
      r.prepared = s.Int(11);
      r.isa = s.Text(12);
      r.target_key = s.Text(13);
      r.cpu_seconds = s.Real(14);
      r.device_seconds = s.Real(15);
      r.records = s.Int(16);
      r.estimated_latency_ms = s.Real(17);
      r.device_seconds_limit = s.Real(18);
      LOOM_ASSIGN_OR_RETURN(JobRow j, DecodeJobRow(r));
      out.push_back(std::move(j));
    }
    return out;
  }

  absl::StatusOr<std::vector<TaskRow>> LoadTasks(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_,
           "SELECT idx, task_key, template_name, flops, count, phase, round, trials_done, errors, "
           "best_cost, skip_reason, history, configs, artifacts FROM tasks WHERE job_id = ? "
           "ORDER BY idx");
    LOOM_RETURN_IF_ERROR(s.status());
    s.Bind(1, job_id);
    std::vector<TaskRow> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      RawTaskRow r;
      r.index = s.Int(0);
      r.task_key = s.Text(1);
      r.template_name = s.Text(2);
      r.flops = s.Real(3);
      r.count = s.Int(4);
      r.phase = s.Int(5);
      r.round = s.Int(6);
      r.trials_done = s.Int(7);
      r.errors = s.Int(8);
      r.best_cost = s.Real(9);
      r.skip_reason = s.Text(10);
      r.history = s.Blob(11);
      r.configs = s.Blob(12);
      r.artifacts = s.Blob(13);
      LOOM_ASSIGN_OR_RETURN(TaskRow t, DecodeTaskRow(job_id, r));
      out.push_back(std::move(t));
    }
    LOOM_RETURN_IF_ERROR(CheckTaskIndices(job_id, out));
    return out;
  }

  absl::StatusOr<std::string> LoadModel(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "SELECT onnx FROM models WHERE job_id = ?");
    LOOM_RETURN_IF_ERROR(s.status());
    s.Bind(1, job_id);
    LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " has no ONNX model"));
    return s.Blob(0);
  }

  absl::StatusOr<std::vector<LeaseRow>> LoadLeases() override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "SELECT lease_id, job_id, task, kind, agent_id, granted_us FROM leases");
    LOOM_RETURN_IF_ERROR(s.status());
    std::vector<LeaseRow> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      LOOM_ASSIGN_OR_RETURN(LeaseRow l, DecodeLeaseRow(RawLeaseRow{s.Text(0), s.Text(1), s.Int(2),
                                                                   s.Int(3), s.Text(4), s.Int(5)}));
      out.push_back(std::move(l));
    }
    return out;
  }

  absl::StatusOr<std::vector<FlaggedAgent>> LoadFlaggedAgents() override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "SELECT identity, reason, time_us FROM flagged_agents ORDER BY time_us");
    LOOM_RETURN_IF_ERROR(s.status());
    std::vector<FlaggedAgent> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.push_back(FlaggedAgent{s.Text(0), s.Text(1), FromUs(s.Int(2))});
    }
    return out;
  }

  absl::StatusOr<std::vector<LogLine>> Logs(const std::string& job_id, int tail) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_,
           "SELECT time_us, text FROM (SELECT seq, time_us, text FROM logs WHERE job_id = ? "
           "ORDER BY seq DESC LIMIT ?) ORDER BY seq");
    LOOM_RETURN_IF_ERROR(s.status());
    s.Bind(1, job_id);
    s.Bind(2, tail > 0 ? int64_t{tail} : int64_t{-1});
    std::vector<LogLine> out;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.push_back(LogLine{job_id, FromUs(s.Int(0)), s.Text(1)});
    }
    return out;
  }

  absl::StatusOr<int64_t> Counter(const std::string& name, int64_t fallback) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "SELECT value FROM counters WHERE name = ?");
    LOOM_RETURN_IF_ERROR(s.status());
    s.Bind(1, name);
    LOOM_ASSIGN_OR_RETURN(bool row, s.Step());
    return row ? s.Int(0) : fallback;
  }

 private:
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return absl::InternalError(absl::StrCat("state store: ", msg));
    }
    return absl::OkStatus();
  }
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Exec(sql.c_str());
  }

  absl::Status ApplyLocked(const Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!m.jobs.empty()) {
      Stmt s(db_,
             "INSERT INTO jobs (id, owner, name, state, priority, spec, submitted_us, started_us, "
             "finished_us, failure_reason, prepared, isa, target_key, cpu_seconds, "
             "device_seconds, records, estimated_latency_ms, uid, device_seconds_limit) VALUES "
             "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
             "owner=excluded.owner, name=excluded.name, state=excluded.state, "
             "priority=excluded.priority, spec=excluded.spec, submitted_us=excluded.submitted_us, "
             "started_us=excluded.started_us, finished_us=excluded.finished_us, "
             "failure_reason=excluded.failure_reason, prepared=excluded.prepared, "
             "isa=excluded.isa, target_key=excluded.target_key, "
             "cpu_seconds=excluded.cpu_seconds, device_seconds=excluded.device_seconds, "
             "records=excluded.records, estimated_latency_ms=excluded.estimated_latency_ms, "
             "uid=excluded.uid, device_seconds_limit=excluded.device_seconds_limit");
      LOOM_RETURN_IF_ERROR(s.status());
      for (const JobRow& j : m.jobs) {
        s.Reset();
        s.Bind(1, j.id);
        s.Bind(2, j.owner);
        s.Bind(3, j.name);
        s.Bind(4, static_cast<int64_t>(j.state));
        s.Bind(5, j.priority);
        s.BindBlob(6, j.spec.SerializeAsString());
        s.Bind(7, Us(j.submitted));
        s.Bind(8, Us(j.started));
        s.Bind(9, Us(j.finished));
        s.Bind(10, j.failure_reason);
        s.Bind(11, int64_t{j.prepared});
        s.Bind(12, j.isa);
        s.Bind(13, j.target_key);
        s.Bind(14, j.cpu_seconds);
        s.Bind(15, j.device_seconds);
        s.Bind(16, j.records);
        s.Bind(17, j.estimated_latency_ms);
        s.Bind(18, j.uid);
        s.Bind(19, j.device_seconds_limit);
        LOOM_RETURN_IF_ERROR(s.Run());
      }
    }
    if (!m.tasks.empty()) {
      Stmt s(db_,
             "INSERT OR REPLACE INTO tasks (job_id, idx, task_key, template_name, flops, count, "
             "phase, round, trials_done, errors, best_cost, skip_reason, history, configs, "
             "artifacts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
      LOOM_RETURN_IF_ERROR(s.status());
      for (const TaskRow& t : m.tasks) {
        s.Reset();
        s.Bind(1, t.job_id);
        s.Bind(2, t.index);
        s.Bind(3, t.task_key);
        s.Bind(4, t.template_name);
        s.Bind(5, t.flops);
        s.Bind(6, t.count);
        s.Bind(7, EncodeTaskPhase(t));
        s.Bind(8, t.round);
        s.Bind(9, t.trials_done);
        s.Bind(10, t.errors);
        s.Bind(11, t.best_cost);
        s.Bind(12, t.skip_reason);
        s.BindBlob(13, t.session);
        s.BindBlob(14, t.configs.SerializeAsString());
        s.BindBlob(15, t.artifacts.SerializeAsString());
        LOOM_RETURN_IF_ERROR(s.Run());
      }
    }
    for (const auto& [job, bytes] : m.models) {
      Stmt s(db_, "INSERT OR REPLACE INTO models (job_id, onnx) VALUES (?, ?)");
      LOOM_RETURN_IF_ERROR(s.status());
      s.Bind(1, job);
      s.BindBlob(2, bytes);
      LOOM_RETURN_IF_ERROR(s.Run());
    }
    if (!m.leases_put.empty()) {
      Stmt s(db_,
             "INSERT OR REPLACE INTO leases (lease_id, job_id, task, kind, agent_id, granted_us) "
             "VALUES (?,?,?,?,?,?)");
      LOOM_RETURN_IF_ERROR(s.status());
      for (const LeaseRow& l : m.leases_put) {
        s.Reset();
        s.Bind(1, l.lease_id);
        s.Bind(2, l.job_id);
        s.Bind(3, l.task);
        s.Bind(4, static_cast<int64_t>(l.kind));
        s.Bind(5, l.agent_id);
        s.Bind(6, Us(l.granted));
        LOOM_RETURN_IF_ERROR(s.Run());
      }
    }
    if (!m.leases_deleted.empty()) {
      Stmt s(db_, "DELETE FROM leases WHERE lease_id = ?");
      LOOM_RETURN_IF_ERROR(s.status());
      for (const std::string& id : m.leases_deleted) {
        s.Reset();
        s.Bind(1, id);
        LOOM_RETURN_IF_ERROR(s.Run());
      }
    }
    if (!m.logs.empty()) {
      Stmt s(db_, "INSERT INTO logs (job_id, time_us, text) VALUES (?,?,?)");
      LOOM_RETURN_IF_ERROR(s.status());
      for (const LogLine& l : m.logs) {
        s.Reset();
        s.Bind(1, l.job_id);
        s.Bind(2, Us(l.time));
        s.Bind(3, l.text);
        LOOM_RETURN_IF_ERROR(s.Run());
      }
    }
    for (const FlaggedAgent& f : m.flagged) {
      Stmt s(db_,
             "INSERT OR REPLACE INTO flagged_agents (identity, reason, time_us) VALUES (?, ?, ?)");
      LOOM_RETURN_IF_ERROR(s.status());
      s.Bind(1, f.identity);
      s.Bind(2, f.reason);
      s.Bind(3, Us(f.time));
      LOOM_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& [name, value] : m.counters) {
      Stmt s(db_, "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)");
      LOOM_RETURN_IF_ERROR(s.status());
      s.Bind(1, name);
      s.Bind(2, value);
      LOOM_RETURN_IF_ERROR(s.Run());
    }
    return absl::OkStatus();
  }

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  std::string store_id_;  // set once by Init
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path) {
  struct stat st;
  if (path != ":memory:" && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      st.st_size == 0) {
    // SQLite would take it for a new database and start again at job j1.
    return absl::FailedPreconditionError(
        absl::StrCat("state file '", path,
                     "' is empty (0 bytes): it was truncated; restore it from a backup, or remove "
                     "it and its .records file to start afresh"));
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::NotFoundError(
        absl::StrCat("cannot open state file '", path, "': ", msg, " (does its folder exist?)"));
  }
  auto store = std::make_unique<SqliteStateStore>(db);
  LOOM_RETURN_IF_ERROR(store->Init(path));
  return store;
}

}  // namespace loom::service
