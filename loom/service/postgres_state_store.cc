// PostgreSQL implementation of StateStore: the SQLite store's schema, migration by migration, in
// PostgreSQL's dialect (versions in loom_schema under "state", records/postgres.h), the same
// Mutation semantics (one transaction; jobs, tasks, models, leases, flagged agents and counters
// inserted or replaced), messages as bytea blobs decoded by state_rows.h. The store holds a
// session advisory lock on the database for its life, so a second daemon on the same state is
// refused (or waits as a standby) rather than losing jobs. Taking the lock writes a new epoch (the
// fencing token) into the leader row; every Apply checks it, and a reconnect checks it before
// taking the lock again, so a daemon whose lead has passed to another never writes. Every value
// is a statement parameter.
#include <unistd.h>

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
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"
#include "loom/records/postgres.h"
#include "loom/service/state_rows.h"
#include "loom/service/state_store.h"

namespace loom::service {
namespace {

using tune::PgBytes;
using tune::PgInt;
using tune::PgNull;
using tune::PgParam;
using tune::PgReal;
using tune::PgResult;
using tune::PgText;

// The state's lock: one daemon per database ("LOOMSTAT").
constexpr int64_t kStateLockKey = 0x4c4f4f4d53544154;
// How long a new store waits for the state's lock (PostgreSQL's lock_timeout syntax).
constexpr char kLockWait[] = "3s";

// kMigrations[v] takes the state from schema version v to v + 1 (sqlite_state_store.cc's, in
// PostgreSQL's types).
const std::vector<const char*> kMigrations = {
    // 0 -> 1: jobs, tasks, models, leases, logs, counters.
    R"sql(
CREATE TABLE jobs (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  state BIGINT NOT NULL,
  priority BIGINT NOT NULL,
  spec BYTEA NOT NULL,
  submitted_us BIGINT NOT NULL,
  started_us BIGINT NOT NULL,
  finished_us BIGINT NOT NULL,
  failure_reason TEXT NOT NULL,
  prepared BIGINT NOT NULL,
  isa TEXT NOT NULL,
  target_key TEXT NOT NULL,
  cpu_seconds DOUBLE PRECISION NOT NULL,
  device_seconds DOUBLE PRECISION NOT NULL,
  records BIGINT NOT NULL,
  estimated_latency_ms DOUBLE PRECISION NOT NULL
);
CREATE TABLE tasks (
  job_id TEXT NOT NULL,
  idx BIGINT NOT NULL,
  task_key TEXT NOT NULL,
  template_name TEXT NOT NULL,
  flops DOUBLE PRECISION NOT NULL,
  count BIGINT NOT NULL,
  phase BIGINT NOT NULL,
  round BIGINT NOT NULL,
  trials_done BIGINT NOT NULL,
  errors BIGINT NOT NULL,
  best_cost DOUBLE PRECISION NOT NULL,
  skip_reason TEXT NOT NULL,
  history BYTEA NOT NULL,
  configs BYTEA NOT NULL,
  artifacts BYTEA NOT NULL,
  PRIMARY KEY (job_id, idx)
);
CREATE TABLE models (job_id TEXT PRIMARY KEY, onnx BYTEA NOT NULL);
CREATE TABLE leases (
  lease_id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  task BIGINT NOT NULL,
  kind BIGINT NOT NULL,
  agent_id TEXT NOT NULL,
  granted_us BIGINT NOT NULL
);
CREATE TABLE logs (
  seq BIGSERIAL PRIMARY KEY,
  job_id TEXT NOT NULL,
  time_us BIGINT NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX logs_job ON logs(job_id, seq);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
)sql",
    // 1 -> 2: unique job ids for records, per-job device-time limits, flagged agent credentials,
    // and the store id.
    R"sql(
ALTER TABLE jobs ADD COLUMN uid TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN device_seconds_limit DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE TABLE flagged_agents (
  identity TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  time_us BIGINT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
)sql",
};

// The leader row (schema component "leader"): one row, the epoch of the store that took the state
// last and the address its daemon advertises.
const std::vector<const char*> kLeaderMigrations = {
    R"sql(
CREATE TABLE loom_leader (
  id BIGINT PRIMARY KEY CHECK (id = 1),
  epoch BIGINT NOT NULL,
  address TEXT NOT NULL,
  holder TEXT NOT NULL,
  since_us BIGINT NOT NULL
);
INSERT INTO loom_leader (id, epoch, address, holder, since_us) VALUES (1, 0, '', '', 0);
)sql",
    // 1 -> 2: the leader's timed lease (a row of its own, so that renewing it never waits for the
    // writes that hold the leader row FOR SHARE). Times are the database's clock, in us.
    R"sql(
CREATE TABLE loom_lease (
  id BIGINT PRIMARY KEY CHECK (id = 1),
  epoch BIGINT NOT NULL,
  expires_us BIGINT NOT NULL
);
INSERT INTO loom_lease (id, epoch, expires_us) VALUES (1, 0, 0);
)sql",
};

// The database's clock in microseconds (every daemon reads the same one).
constexpr char kDbNowUs[] = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

// The sessions holding the state's lock (pg_locks splits the 64-bit key into classid, the high
// half, and objid, the low half); $1, $2 are those halves.
constexpr char kLockHolders[] =
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND "
    "l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = $1 AND l.objid::bigint = $2";

// The leader row; `lock` adds FOR SHARE (inside a transaction: a new epoch waits for it).
absl::StatusOr<LeaderInfo> ReadLeader(tune::PgConnection& conn, bool lock) {
  LOOM_ASSIGN_OR_RETURN(
      PgResult res, conn.Exec(absl::StrCat("SELECT epoch, address, holder FROM loom_leader WHERE "
                                           "id = 1",
                                           lock ? " FOR SHARE" : "")));
  LeaderInfo info;
  if (res.rows() == 0) return info;
  LOOM_ASSIGN_OR_RETURN(info.epoch, res.Int(0, 0));
  info.address = res.Text(0, 1);
  info.holder = res.Text(0, 2);
  return info;
}

// OK while the leader row holds `epoch`; kFailedPrecondition naming the newer leader otherwise.
absl::Status CheckLeaderEpoch(tune::PgConnection& conn, int64_t epoch, bool lock) {
  LOOM_ASSIGN_OR_RETURN(LeaderInfo now, ReadLeader(conn, lock));
  if (now.epoch == epoch) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "state '", conn.redacted_uri(), "' is led by a newer loom serve (epoch ", now.epoch,
      now.address.empty() ? "" : absl::StrCat(", at ", now.address),
      now.holder.empty() ? "" : absl::StrCat(", ", now.holder), "): this daemon's lead (epoch ",
      epoch, ") has ended and its write is refused; it steps down"));
}

// 32 hex digits from the system's entropy: the state's identity.
std::string NewStoreId() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

int64_t Us(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time FromUs(int64_t us) { return absl::FromUnixMicros(us); }

// "<message> (job j3)": where in the state a column could not be read.
absl::Status InRow(const absl::Status& st, const std::string& where) {
  return absl::Status(st.code(), absl::StrCat("state: ", st.message(), " (", where, ")"));
}

class PostgresStateStore : public StateStore {
 public:
  explicit PostgresStateStore(std::unique_ptr<tune::PgConnection> conn) : conn_(std::move(conn)) {}

  absl::Status Init(const StateStoreOptions& options) {
    absl::MutexLock lock(&mu_);
    if (options.lease_timeout < absl::Milliseconds(100)) {
      return absl::InvalidArgumentError("the lead's lease timeout must be at least 100 ms");
    }
    lease_timeout_ = options.lease_timeout;
    if (options.standby) {
      LOOM_RETURN_IF_ERROR(StandBy(options));
    } else {
      LOOM_RETURN_IF_ERROR(ClaimState());
    }
    // The lock is ours: the lease is extended at once, so that a standby does not take the lock
    // holder for a hung leader while this store migrates and takes its epoch.
    LOOM_ASSIGN_OR_RETURN(PgResult leased, conn_->Exec("SELECT to_regclass('public.loom_lease')"));
    if (leased.rows() == 1 && !leased.IsNull(0, 0)) {
      LOOM_RETURN_IF_ERROR(conn_
                               ->Exec(absl::StrCat("UPDATE loom_lease SET expires_us = ", kDbNowUs,
                                                   " + $1 WHERE id = 1"),
                                      {PgInt(absl::ToInt64Microseconds(lease_timeout_))})
                               .status());
    }
    // A new session holds nothing: unless a newer epoch took the state meanwhile, it names itself
    // and takes the lock again; otherwise it fails.
    conn_->set_on_reconnect([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      LOOM_RETURN_IF_ERROR(CheckEpoch(/*lock=*/false));
      LOOM_RETURN_IF_ERROR(ClaimState());
      return CheckEpoch(/*lock=*/false);
    });
    LOOM_RETURN_IF_ERROR(conn_->Migrate("state", kMigrations, "jobs"));
    LOOM_RETURN_IF_ERROR(conn_->Migrate("leader", kLeaderMigrations, "loom_leader"));
    // Under the lock: this store's lead is the next epoch.
    LOOM_ASSIGN_OR_RETURN(
        PgResult bumped,
        conn_->Exec("UPDATE loom_leader SET epoch = epoch + 1, address = $1, holder = $2, since_us "
                    "= $3 WHERE id = 1 RETURNING epoch",
                    {PgText(options.advertise), PgText(HolderName()), PgInt(Us(absl::Now()))}));
    if (bumped.rows() != 1) {
      return absl::DataLossError(
          absl::StrCat("state '", conn_->redacted_uri(), "' has no leader row (loom_leader)"));
    }
    LOOM_ASSIGN_OR_RETURN(epoch_, bumped.Int(0, 0));
    LOOM_RETURN_IF_ERROR(
        conn_
            ->Exec(absl::StrCat("UPDATE loom_lease SET epoch = $1, expires_us = ", kDbNowUs,
                                " + $2 WHERE id = 1"),
                   {PgInt(epoch_), PgInt(absl::ToInt64Microseconds(lease_timeout_))})
            .status());
    LOOM_RETURN_IF_ERROR(conn_
                             ->Exec("INSERT INTO meta (key, value) VALUES ('store_id', $1) ON "
                                    "CONFLICT (key) DO NOTHING",
                                    {PgText(NewStoreId())})
                             .status());
    LOOM_ASSIGN_OR_RETURN(PgResult id,
                          conn_->Exec("SELECT value FROM meta WHERE key = 'store_id'"));
    store_id_ = id.rows() > 0 ? id.Text(0, 0) : std::string();
    if (store_id_.empty() || store_id_.size() > 64 ||
        store_id_.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return absl::DataLossError(
          absl::StrCat("state '", conn_->redacted_uri(), "' has no valid store id"));
    }
    return absl::OkStatus();
  }

  std::string store_id() const override { return store_id_; }
  int64_t epoch() const override { return epoch_; }

  absl::Status CheckLead() override {
    absl::MutexLock lock(&mu_);
    LOOM_RETURN_IF_ERROR(CheckEpoch(/*lock=*/false));
    return RenewLease();
  }

  absl::Status Apply(const Mutation& m) override {
    if (m.empty()) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    return conn_->InTransaction([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      // The fencing token: a newer epoch cannot be written while this transaction holds the row.
      LOOM_RETURN_IF_ERROR(CheckEpoch(/*lock=*/true));
      return ApplyLocked(m);
    });
  }

  absl::StatusOr<std::vector<JobRow>> LoadJobs() override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res,
        conn_->Exec("SELECT id, uid, owner, name, state, priority, spec, submitted_us, started_us, "
                    "finished_us, failure_reason, prepared, isa, target_key, cpu_seconds, "
                    "device_seconds, records, estimated_latency_ms, device_seconds_limit FROM jobs "
                    "ORDER BY seq"));
    std::vector<JobRow> out;
    for (int i = 0; i < res.rows(); ++i) {
      absl::StatusOr<JobRow> job = ReadJob(res, i);
      if (!job.ok()) return InRow(job.status(), absl::StrCat("job ", res.Text(i, 0)));
      out.push_back(*std::move(job));
    }
    return out;
  }

  absl::StatusOr<std::vector<TaskRow>> LoadTasks(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res,
        conn_->Exec("SELECT idx, task_key, template_name, flops, count, phase, round, "
                    "trials_done, errors, best_cost, skip_reason, history, configs, artifacts "
                    "FROM tasks WHERE job_id = $1 ORDER BY idx",
                    {PgText(job_id)}));
    std::vector<TaskRow> out;
    for (int i = 0; i < res.rows(); ++i) {
      absl::StatusOr<TaskRow> task = ReadTask(res, i, job_id);
      if (!task.ok()) return InRow(task.status(), absl::StrCat("job ", job_id, " task ", i));
      out.push_back(*std::move(task));
    }
    LOOM_RETURN_IF_ERROR(CheckTaskIndices(job_id, out));
    return out;
  }

  absl::StatusOr<std::string> LoadModel(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res, conn_->Exec("SELECT onnx FROM models WHERE job_id = $1", {PgText(job_id)}));
    if (res.rows() == 0)
      return absl::NotFoundError(absl::StrCat("job ", job_id, " has no ONNX model"));
    return res.Bytes(0, 0);
  }

  absl::StatusOr<std::vector<LeaseRow>> LoadLeases() override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res,
        conn_->Exec("SELECT lease_id, job_id, task, kind, agent_id, granted_us FROM leases"));
    std::vector<LeaseRow> out;
    for (int i = 0; i < res.rows(); ++i) {
      RawLeaseRow raw{res.Text(i, 0), res.Text(i, 1), 0, 0, res.Text(i, 4), 0};
      absl::Status st = ReadInts(res, i, {{2, &raw.task}, {3, &raw.kind}, {5, &raw.granted_us}});
      if (!st.ok()) return InRow(st, absl::StrCat("lease ", raw.lease_id));
      LOOM_ASSIGN_OR_RETURN(LeaseRow l, DecodeLeaseRow(raw));
      out.push_back(std::move(l));
    }
    return out;
  }

  absl::StatusOr<std::vector<FlaggedAgent>> LoadFlaggedAgents() override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res,
        conn_->Exec("SELECT identity, reason, time_us FROM flagged_agents ORDER BY time_us"));
    std::vector<FlaggedAgent> out;
    for (int i = 0; i < res.rows(); ++i) {
      int64_t us = 0;
      absl::Status st = ReadInts(res, i, {{2, &us}});
      if (!st.ok()) return InRow(st, absl::StrCat("flagged agent ", res.Text(i, 0)));
      out.push_back(FlaggedAgent{res.Text(i, 0), res.Text(i, 1), FromUs(us)});
    }
    return out;
  }

  absl::StatusOr<std::vector<LogLine>> Logs(const std::string& job_id, int tail) override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res,
        conn_->Exec("SELECT time_us, text FROM (SELECT seq, time_us, text FROM logs WHERE job_id "
                    "= $1 ORDER BY seq DESC LIMIT $2::bigint) AS tail ORDER BY seq",
                    {PgText(job_id), tail > 0 ? PgInt(tail) : PgNull()}));
    std::vector<LogLine> out;
    for (int i = 0; i < res.rows(); ++i) {
      int64_t us = 0;
      absl::Status st = ReadInts(res, i, {{0, &us}});
      if (!st.ok()) return InRow(st, absl::StrCat("log of job ", job_id));
      out.push_back(LogLine{job_id, FromUs(us), res.Text(i, 1)});
    }
    return out;
  }

  absl::StatusOr<int64_t> Counter(const std::string& name, int64_t fallback) override {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(
        PgResult res, conn_->Exec("SELECT value FROM counters WHERE name = $1", {PgText(name)}));
    if (res.rows() == 0) return fallback;
    absl::StatusOr<int64_t> v = res.Int(0, 0);
    if (!v.ok()) return InRow(v.status(), absl::StrCat("counter ", name));
    return v;
  }

 private:
  static std::string HostName() {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0) return "?";
    return host;
  }

  static std::string HolderName() {
    return absl::StrCat("loom serve pid ", getpid(), " on ", HostName()).substr(0, 63);
  }

  // Refuses once the leader row holds another epoch than this store's (after Init).
  absl::Status CheckEpoch(bool lock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (epoch_ == 0) return absl::OkStatus();  // still opening
    return CheckLeaderEpoch(*conn_, epoch_, lock);
  }

  // Extends this store's lease to the database's now + lease_timeout_; kFailedPrecondition (as
  // CheckEpoch) when another epoch holds it.
  absl::Status RenewLease() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        PgResult renewed,
        conn_->Exec(absl::StrCat("UPDATE loom_lease SET expires_us = ", kDbNowUs,
                                 " + $2 WHERE id = 1 AND epoch = $1 RETURNING epoch"),
                    {PgInt(epoch_), PgInt(absl::ToInt64Microseconds(lease_timeout_))}));
    if (renewed.rows() == 1) return absl::OkStatus();
    LOOM_RETURN_IF_ERROR(CheckEpoch(/*lock=*/false));
    return absl::FailedPreconditionError(
        absl::StrCat("state '", conn_->redacted_uri(), "': the lease of this daemon's lead (epoch ",
                     epoch_, ") was taken; its write is refused; it steps down"));
  }

  // A standby's look at the leader's lease: when it has expired (the leader is hung, or cut off
  // with its session still open), ends the sessions that hold the state's lock so that the next
  // try takes it. Whether it did.
  absl::StatusOr<bool> BreakExpiredLease() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(PgResult exists, conn_->Exec("SELECT to_regclass('public.loom_lease')"));
    if (exists.rows() != 1 || exists.IsNull(0, 0)) return false;  // no leader with a lease yet
    LOOM_ASSIGN_OR_RETURN(PgResult lease,
                          conn_->Exec(absl::StrCat("SELECT epoch FROM loom_lease WHERE id = 1 AND "
                                                   "epoch > 0 AND expires_us < ",
                                                   kDbNowUs)));
    if (lease.rows() == 0) return false;
    LOOM_ASSIGN_OR_RETURN(
        PgResult ended,
        conn_->Exec(absl::StrCat("SELECT pg_terminate_backend(l.pid) ", kLockHolders),
                    {PgInt(kStateLockKey >> 32), PgInt(kStateLockKey & 0xffffffff)}));
    return ended.rows() > 0;
  }

  // Waits as a standby until the state's lock is free, then takes it.
  absl::Status StandBy(const StateStoreOptions& options) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_RETURN_IF_ERROR(
        conn_->Exec("SELECT set_config('application_name', $1, false)", {PgText(HolderName())})
            .status());
    for (;;) {
      LOOM_ASSIGN_OR_RETURN(PgResult got,
                            conn_->Exec("SELECT pg_try_advisory_lock($1)", {PgInt(kStateLockKey)}));
      if (got.rows() == 1 && got.Text(0, 0) == "t") return absl::OkStatus();
      LeaderInfo leader;
      // Before the first leader migrated it, the state has no leader row: nobody known yet.
      absl::StatusOr<PgResult> exists = conn_->Exec("SELECT to_regclass('public.loom_leader')");
      if (exists.ok() && exists->rows() == 1 && !exists->IsNull(0, 0)) {
        LOOM_ASSIGN_OR_RETURN(leader, ReadLeader(*conn_, /*lock=*/false));
      }
      LOOM_ASSIGN_OR_RETURN(leader.lease_broken, BreakExpiredLease());
      if (!options.standby(leader)) {
        return absl::CancelledError(absl::StrCat("stopped waiting for the state '",
                                                 conn_->redacted_uri(), "' as a standby"));
      }
      absl::SleepFor(options.standby_poll);
    }
  }

  // Names this session after the daemon (what a refused second daemon is told) and takes the
  // state's lock.
  absl::Status ClaimState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_RETURN_IF_ERROR(
        conn_->Exec("SELECT set_config('application_name', $1, false)", {PgText(HolderName())})
            .status());
    // A daemon killed a moment ago still holds the lock until its server session has noticed:
    // wait for it a little (kLockWait) before refusing.
    LOOM_RETURN_IF_ERROR(
        conn_->Exec("SELECT set_config('lock_timeout', $1, false)", {PgText(kLockWait)}).status());
    absl::Status got = conn_->Exec("SELECT pg_advisory_lock($1)", {PgInt(kStateLockKey)}).status();
    LOOM_RETURN_IF_ERROR(conn_->Exec("SELECT set_config('lock_timeout', '0', false)").status());
    if (got.ok()) return absl::OkStatus();
    if (got.code() != absl::StatusCode::kFailedPrecondition) return got;  // not lock_timeout
    // Who holds it: the session whose advisory lock has our key.
    absl::StatusOr<PgResult> holder =
        conn_->Exec(absl::StrCat("SELECT a.application_name ", kLockHolders, " LIMIT 1"),
                    {PgInt(kStateLockKey >> 32), PgInt(kStateLockKey & 0xffffffff)});
    const std::string who = holder.ok() && holder->rows() > 0 && !holder->Text(0, 0).empty()
                                ? absl::StrCat(" (", holder->Text(0, 0), ")")
                                : std::string();
    return absl::FailedPreconditionError(absl::StrCat("state '", conn_->redacted_uri(),
                                                      "' is in use by another loom serve", who,
                                                      ": one daemon per state"));
  }

  // Reads integer columns into the given places.
  static absl::Status ReadInts(const PgResult& res, int row,
                               std::initializer_list<std::pair<int, int64_t*>> columns) {
    for (const auto& [column, out] : columns) {
      LOOM_ASSIGN_OR_RETURN(*out, res.Int(row, column));
    }
    return absl::OkStatus();
  }
  static absl::Status ReadReals(const PgResult& res, int row,
                                std::initializer_list<std::pair<int, double*>> columns) {
    for (const auto& [column, out] : columns) {
      LOOM_ASSIGN_OR_RETURN(*out, res.Real(row, column));
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<JobRow> ReadJob(const PgResult& res, int i) {
    RawJobRow r;
    r.id = res.Text(i, 0);
    r.uid = res.Text(i, 1);
    r.owner = res.Text(i, 2);
    r.name = res.Text(i, 3);
    LOOM_ASSIGN_OR_RETURN(r.spec, res.Bytes(i, 6));
    r.failure_reason = res.Text(i, 10);
    r.isa = res.Text(i, 12);
    r.target_key = res.Text(i, 13);
    LOOM_RETURN_IF_ERROR(ReadInts(res, i,
                                  {{4, &r.state},
                                   {5, &r.priority},
                                   {7, &r.submitted_us},
                                   {8, &r.started_us},
                                   {9, &r.finished_us},
                                   {11, &r.prepared},
                                   {16, &r.records}}));
    LOOM_RETURN_IF_ERROR(ReadReals(res, i,
                                   {{14, &r.cpu_seconds},
                                    {15, &r.device_seconds},
                                    {17, &r.estimated_latency_ms},
                                    {18, &r.device_seconds_limit}}));
    return DecodeJobRow(r);
  }

  static absl::StatusOr<TaskRow> ReadTask(const PgResult& res, int i, const std::string& job_id) {
    RawTaskRow r;
    r.task_key = res.Text(i, 1);
    r.template_name = res.Text(i, 2);
    r.skip_reason = res.Text(i, 10);
    LOOM_RETURN_IF_ERROR(ReadInts(res, i,
                                  {{0, &r.index},
                                   {4, &r.count},
                                   {5, &r.phase},
                                   {6, &r.round},
                                   {7, &r.trials_done},
                                   {8, &r.errors}}));
    LOOM_RETURN_IF_ERROR(ReadReals(res, i, {{3, &r.flops}, {9, &r.best_cost}}));
    LOOM_ASSIGN_OR_RETURN(r.history, res.Bytes(i, 11));
    LOOM_ASSIGN_OR_RETURN(r.configs, res.Bytes(i, 12));
    LOOM_ASSIGN_OR_RETURN(r.artifacts, res.Bytes(i, 13));
    return DecodeTaskRow(job_id, r);
  }

  // Every write of a Mutation goes to the server in one pipelined batch (PgConnection::ExecBatch),
  // in the order below: one round trip instead of one per row.
  absl::Status ApplyLocked(const Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<tune::PgStatement> batch;
    auto run = [&batch](std::string sql, std::vector<PgParam> params) {
      batch.push_back({std::move(sql), std::move(params)});
      return absl::OkStatus();
    };
    for (const JobRow& j : m.jobs) {
      LOOM_RETURN_IF_ERROR(run(
          "INSERT INTO jobs (id, owner, name, state, priority, spec, submitted_us, started_us, "
          "finished_us, failure_reason, prepared, isa, target_key, cpu_seconds, device_seconds, "
          "records, estimated_latency_ms, uid, device_seconds_limit) VALUES ($1, $2, $3, $4, $5, "
          "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) ON CONFLICT (id) DO "
          "UPDATE SET owner = excluded.owner, name = excluded.name, state = excluded.state, "
          "priority = excluded.priority, spec = excluded.spec, submitted_us = "
          "excluded.submitted_us, started_us = excluded.started_us, finished_us = "
          "excluded.finished_us, failure_reason = excluded.failure_reason, prepared = "
          "excluded.prepared, isa = excluded.isa, target_key = excluded.target_key, cpu_seconds = "
          "excluded.cpu_seconds, device_seconds = excluded.device_seconds, records = "
          "excluded.records, estimated_latency_ms = excluded.estimated_latency_ms, uid = "
          "excluded.uid, device_seconds_limit = excluded.device_seconds_limit",
          {PgText(j.id), PgText(j.owner), PgText(j.name), PgInt(static_cast<int64_t>(j.state)),
           PgInt(j.priority), PgBytes(j.spec.SerializeAsString()), PgInt(Us(j.submitted)),
           PgInt(Us(j.started)), PgInt(Us(j.finished)), PgText(j.failure_reason),
           PgInt(j.prepared ? 1 : 0), PgText(j.isa), PgText(j.target_key), PgReal(j.cpu_seconds),
           PgReal(j.device_seconds), PgInt(j.records), PgReal(j.estimated_latency_ms),
           PgText(j.uid), PgReal(j.device_seconds_limit)}));
    }
    for (const TaskRow& t : m.tasks) {
      LOOM_RETURN_IF_ERROR(run(
          "INSERT INTO tasks (job_id, idx, task_key, template_name, flops, count, phase, round, "
          "trials_done, errors, best_cost, skip_reason, history, configs, artifacts) VALUES ($1, "
          "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (job_id, "
          "idx) DO UPDATE SET task_key = excluded.task_key, template_name = "
          "excluded.template_name, flops = excluded.flops, count = excluded.count, phase = "
          "excluded.phase, round = excluded.round, trials_done = excluded.trials_done, errors = "
          "excluded.errors, best_cost = excluded.best_cost, skip_reason = excluded.skip_reason, "
          "history = excluded.history, configs = excluded.configs, artifacts = excluded.artifacts",
          {PgText(t.job_id), PgInt(t.index), PgText(t.task_key), PgText(t.template_name),
           PgReal(t.flops), PgInt(t.count), PgInt(EncodeTaskPhase(t)), PgInt(t.round),
           PgInt(t.trials_done), PgInt(t.errors), PgReal(t.best_cost), PgText(t.skip_reason),
           PgBytes(t.session), PgBytes(t.configs.SerializeAsString()),
           PgBytes(t.artifacts.SerializeAsString())}));
    }
    for (const auto& [job, bytes] : m.models) {
      LOOM_RETURN_IF_ERROR(
          run("INSERT INTO models (job_id, onnx) VALUES ($1, $2) ON CONFLICT "
              "(job_id) DO UPDATE SET onnx = excluded.onnx",
              {PgText(job), PgBytes(bytes)}));
    }
    for (const LeaseRow& l : m.leases_put) {
      LOOM_RETURN_IF_ERROR(
          run("INSERT INTO leases (lease_id, job_id, task, kind, agent_id, granted_us) VALUES ($1, "
              "$2, $3, $4, $5, $6) ON CONFLICT (lease_id) DO UPDATE SET job_id = excluded.job_id, "
              "task = excluded.task, kind = excluded.kind, agent_id = excluded.agent_id, "
              "granted_us = excluded.granted_us",
              {PgText(l.lease_id), PgText(l.job_id), PgInt(l.task),
               PgInt(static_cast<int64_t>(l.kind)), PgText(l.agent_id), PgInt(Us(l.granted))}));
    }
    for (const std::string& id : m.leases_deleted) {
      LOOM_RETURN_IF_ERROR(run("DELETE FROM leases WHERE lease_id = $1", {PgText(id)}));
    }
    for (const LogLine& l : m.logs) {
      LOOM_RETURN_IF_ERROR(run("INSERT INTO logs (job_id, time_us, text) VALUES ($1, $2, $3)",
                               {PgText(l.job_id), PgInt(Us(l.time)), PgText(l.text)}));
    }
    for (const FlaggedAgent& f : m.flagged) {
      LOOM_RETURN_IF_ERROR(
          run("INSERT INTO flagged_agents (identity, reason, time_us) VALUES ($1, "
              "$2, $3) ON CONFLICT (identity) DO UPDATE SET reason = "
              "excluded.reason, time_us = excluded.time_us",
              {PgText(f.identity), PgText(f.reason), PgInt(Us(f.time))}));
    }
    for (const auto& [name, value] : m.counters) {
      LOOM_RETURN_IF_ERROR(
          run("INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT "
              "(name) DO UPDATE SET value = excluded.value",
              {PgText(name), PgInt(value)}));
    }
    return conn_->ExecBatch(batch);
  }

  absl::Mutex mu_;
  const std::unique_ptr<tune::PgConnection> conn_ ABSL_PT_GUARDED_BY(mu_);
  std::string store_id_;                             // set once by Init
  int64_t epoch_ = 0;                                // set once by Init: this store's lead
  absl::Duration lease_timeout_ = absl::Seconds(5);  // set once by Init
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenPostgresStateStore(
    const std::string& uri, const StateStoreOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::PgConnection> conn,
                        tune::PgConnection::Connect(uri, "state"));
  auto store = std::make_unique<PostgresStateStore>(std::move(conn));
  LOOM_RETURN_IF_ERROR(store->Init(options));
  return store;
}

tune::PgWriteFence LeaderFence(int64_t epoch) {
  return [epoch](tune::PgConnection& conn) { return CheckLeaderEpoch(conn, epoch, /*lock=*/true); };
}

absl::StatusOr<LeaderInfo> ReadStateLeader(const std::string& uri) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::PgConnection> conn,
                        tune::PgConnection::Connect(uri, "state"));
  LOOM_ASSIGN_OR_RETURN(PgResult exists, conn->Exec("SELECT to_regclass('public.loom_leader')"));
  if (exists.rows() != 1 || exists.IsNull(0, 0)) return LeaderInfo{};
  return ReadLeader(*conn, /*lock=*/false);
}

}  // namespace loom::service
