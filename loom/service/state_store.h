// The daemon's durable state: jobs, their tasks (per-task tuner state, history, the round's
// configs and artifacts), leases handed out, log lines and counters. The job driver writes every
// change through Apply() before it acknowledges it; on restart it loads everything back.
// Implementations: SQLite (sqlite_state_store.cc, the embedded default) and PostgreSQL
// (postgres_state_store.cc, a fleet's shared store), chosen by OpenStateStore. Tuning records live
// in a tune::RecordStore.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/records/record_store.h"
#include "loom/sched/types.h"
#include "loom/v1/jobs.pb.h"
#include "loom/v1/stage.pb.h"

namespace loom::service {

// Whether a task has ended: tuned to its end (done), or never tuned (skipped, skip_reason says
// why). While it has not, TaskRow::stage is the stage its session asks for next.
enum class TaskEnd : int { kNone, kDone, kSkipped };

struct JobRow {
  std::string id;
  // Unique across every state file: "<id>.<16 hex digits>". Its records carry it as their job_id,
  // so an older job of the same short id never mixes into this one's results. Empty for jobs of
  // schema-1 state files, whose records carry the short id.
  std::string uid;
  std::string owner;
  std::string name;
  v1::JobState state = v1::JOB_STATE_QUEUED;
  int priority = 0;
  // The request as submitted, without the model bytes (kept apart, see Mutation::models).
  v1::SubmitJobRequest spec;
  absl::Time submitted = absl::UnixEpoch();
  absl::Time started = absl::UnixEpoch();   // UnixEpoch() until the first stage is granted
  absl::Time finished = absl::UnixEpoch();  // UnixEpoch() while not ended
  std::string failure_reason;
  // Fixed when the job is prepared (the first device of the job's target kind it sees).
  bool prepared = false;
  std::string isa;
  std::string target_key;
  double cpu_seconds = 0;
  double device_seconds = 0;
  int64_t records = 0;
  double estimated_latency_ms = 0;
  // Device time the job may use (its owner's max_device_seconds at submission); 0: no limit.
  double device_seconds_limit = 0;

  // The job_id its records carry.
  const std::string& RecordKey() const { return uid.empty() ? id : uid; }
};

struct TaskRow {
  std::string job_id;
  int index = 0;  // position in the job, from 0
  std::string task_key;
  std::string template_name;  // empty for simulated tasks
  double flops = 0;
  int64_t count = 1;  // nodes of the model running this workload
  // The stage its session asks for next: the scheduler's stage kind (sched/types.h), the one
  // stage-kind enum of the tuning loop. Stored with `end` as one column (EncodeTaskPhase).
  sched::StageKind stage = sched::StageKind::kPropose;
  TaskEnd end = TaskEnd::kNone;
  int64_t round = 0;
  int trials_done = 0;
  int errors = 0;
  double best_cost = 0;  // seconds, 0 when none succeeded
  std::string skip_reason;
  // The task's TaskSession state (v1::TaskSessionState, serialized: TaskSession::Save), which
  // holds every trial so far and the tuner's state; empty before the session first saves.
  std::string session;
  v1::BuildInput configs;     // this round's configs (phase build)
  v1::BuildOutput artifacts;  // this round's built artifacts (phase measure)
};

struct LeaseRow {
  std::string lease_id;
  std::string job_id;
  int task = 0;
  v1::StageKind kind = v1::STAGE_KIND_UNSPECIFIED;
  std::string agent_id;
  absl::Time granted = absl::UnixEpoch();
};

// An agent credential whose reports were refused as forged: it may not register again.
struct FlaggedAgent {
  std::string identity;  // the agent's name in the tokens file
  std::string reason;
  absl::Time time = absl::UnixEpoch();
};

struct LogLine {
  std::string job_id;
  absl::Time time = absl::UnixEpoch();
  std::string text;
};

// One atomic change: everything in it is committed in one transaction, or nothing is.
struct Mutation {
  std::vector<JobRow> jobs;                                 // inserted or replaced
  std::vector<TaskRow> tasks;                               // inserted or replaced
  std::vector<std::pair<std::string, std::string>> models;  // (job id, ONNX bytes), inserted
  std::vector<LeaseRow> leases_put;
  std::vector<std::string> leases_deleted;
  std::vector<LogLine> logs;
  std::vector<std::pair<std::string, int64_t>> counters;  // (name, value), set
  std::vector<FlaggedAgent> flagged;                      // inserted or replaced
  bool empty() const {
    return jobs.empty() && tasks.empty() && models.empty() && leases_put.empty() &&
           leases_deleted.empty() && logs.empty() && counters.empty() && flagged.empty();
  }
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  // Commits `m` in one transaction; after OK it survives a kill -9 of the daemon.
  virtual absl::Status Apply(const Mutation& m) = 0;

  // Every job, in submission order.
  virtual absl::StatusOr<std::vector<JobRow>> LoadJobs() = 0;
  // The job's tasks, by index.
  virtual absl::StatusOr<std::vector<TaskRow>> LoadTasks(const std::string& job_id) = 0;
  // The submitted ONNX bytes; kNotFound when the job has none (zoo and simulated jobs).
  virtual absl::StatusOr<std::string> LoadModel(const std::string& job_id) = 0;
  virtual absl::StatusOr<std::vector<LeaseRow>> LoadLeases() = 0;
  // The job's log lines in order; the last `tail` when tail > 0.
  virtual absl::StatusOr<std::vector<LogLine>> Logs(const std::string& job_id, int tail) = 0;
  // A counter's value, or `fallback` when it was never set.
  virtual absl::StatusOr<int64_t> Counter(const std::string& name, int64_t fallback) = 0;
  virtual absl::StatusOr<std::vector<FlaggedAgent>> LoadFlaggedAgents() = 0;
  // A random id given to the state when it was created (or migrated from schema 1); its record
  // database carries the same id (state_files.h), so a state is never paired with another's.
  virtual std::string store_id() const = 0;

  // The fencing token of this store's lead on a shared state (PostgreSQL): taken, one more than
  // the last, when the store took the state. Apply() checks it inside its transaction and refuses
  // to write once a newer epoch holds the state. 0 for SQLite (one daemon per file, flock).
  virtual int64_t epoch() const { return 0; }
  // Whether this store still leads, renewing its lead's lease (PostgreSQL; the daemon calls it
  // every second, or more often for a short lease): kFailedPrecondition naming the newer epoch and
  // its daemon's address once another store took the state (the daemon then steps down). A lost
  // connection is re-established first. Always OK for SQLite. Thread-safe, as every method.
  virtual absl::Status CheckLead() { return absl::OkStatus(); }
};

// Who leads a shared state: its epoch (fencing token) and the address its daemon advertises.
struct LeaderInfo {
  int64_t epoch = 0;    // 0: nobody has led this state yet
  std::string address;  // HOST:PORT clients are sent to; empty when not known
  std::string holder;   // "loom serve pid N on HOST"
  // A standby's poll found the leader's lease expired and ended its database sessions (the lock
  // is taken at the next poll).
  bool lease_broken = false;
};

// How a daemon takes a state.
struct StateStoreOptions {
  // The address (HOST:PORT) clients are redirected to while this store's daemon leads; stored with
  // its epoch (PostgreSQL).
  std::string advertise;
  // PostgreSQL only. Unset: a state another daemon holds is refused (after a 3 s wait). Set: the
  // open waits as a standby, trying the state's lock every `standby_poll`, and calls
  // `standby(leader)` before each try; returning false stops waiting (kCancelled).
  std::function<bool(const LeaderInfo& leader)> standby;
  absl::Duration standby_poll = absl::Milliseconds(200);
  // PostgreSQL only: the lead's timed lease. The leader renews it at each CheckLead; a standby
  // whose poll finds it expired (the leader hung, or cut off with its session still open) ends the
  // leader's sessions and takes the state, and the old leader's next write is refused by the
  // epoch. At least 100 ms.
  absl::Duration lease_timeout = absl::Seconds(5);
};

// The schema version this Loom writes (PRAGMA user_version of the state file). Older versions
// are migrated in place on open.
inline constexpr int kStateSchemaVersion = 2;

// Opens (creating if missing, migrating schema 1) the SQLite state file at `path` (":memory:" for
// a private one). WAL journal, synchronous=NORMAL: a commit survives a crash of the process (kill
// -9), not necessarily a power loss. An existing file must pass `PRAGMA quick_check`.
// kFailedPrecondition when the file's schema is newer than this Loom's, the file belongs to
// another application or is empty (0 bytes: truncated); kDataLoss when it is damaged;
// kInvalidArgument when it is not SQLite; kNotFound when it cannot be opened or created.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path);

// Opens (creating the tables if missing, migrating as the SQLite store does, versions in
// loom_schema under "state") the state in the PostgreSQL database at `uri`, and holds the
// database's state lock (a session advisory lock) for the store's life: one daemon per state. A
// commit is durable as PostgreSQL's synchronous_commit makes it. kUnavailable naming the URI
// (without its password) when it cannot connect; kFailedPrecondition when another store holds the
// state (naming it; after waiting 3 s, so that a daemon killed a moment ago has let go), the
// schema is newer than this Loom's, or another application owns a `jobs` table there; kDataLoss
// when the stored store id is invalid.
//
// Leadership: the store that holds the lock writes one more epoch into the state's leader row
// (table loom_leader, its own schema component "leader") with `options.advertise`; every Apply
// checks that epoch under a share lock of that row, and a reconnect checks it before taking the
// lock again, so a daemon that lost its session never writes once another took over
// (kFailedPrecondition "... led by a newer loom serve (epoch N, at ADDR) ..."). The lead also
// holds a lease (table loom_lease: epoch, expiry on the database's clock) that CheckLead renews;
// a standby breaks an expired one (pg_terminate_backend of the lock's holder) and takes over.
// kInvalidArgument for a lease timeout under 100 ms.
absl::StatusOr<std::unique_ptr<StateStore>> OpenPostgresStateStore(
    const std::string& uri, const StateStoreOptions& options = {});

// The write fence of a daemon's record database on a PostgreSQL state (tune::PgWriteFence, for
// tune::OpenFencedPostgresRecordStore): inside each record write's transaction it holds the state's
// leader row FOR SHARE (a takeover waits for the write) and refuses the write, with the message a
// stale Apply gets (kFailedPrecondition "... led by a newer loom serve ... its write is refused"),
// once the row holds another epoch than `epoch`.
tune::PgWriteFence LeaderFence(int64_t epoch);

// The leader row of the PostgreSQL state at `uri`, read once on a connection of its own (epoch 0
// when nobody led it yet). For tools and tests.
absl::StatusOr<LeaderInfo> ReadStateLeader(const std::string& uri);

// The one place that picks the implementation: a `postgresql://` (or `postgres://`) URI opens the
// PostgreSQL store, anything else the SQLite file at that path (":memory:" a private one).
// kInvalidArgument for `options.standby` with an SQLite file (one daemon per file).
absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& path_or_uri,
                                                           const StateStoreOptions& options = {});

}  // namespace loom::service
