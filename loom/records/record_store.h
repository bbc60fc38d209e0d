// The tuning database: every measurement of every job (record.h), the stage timings of each
// round, best-k per (task, target), history of similar tasks for transfer, JSON-lines
// export/import. The tune loop appends after each Measure stage; tuners read it to resume a job or
// seed a new one; the runtime and the CLI read the best configs and summaries.
//
// Implementations are safe to use from several threads at once, and several processes (jobs) may
// open the same database file at the same time.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/records/record.h"

namespace loom::tune {

// Restricts ExportJsonLines / Count; an unset field matches everything.
struct RecordFilter {
  std::optional<std::string> task_key = std::nullopt;
  std::optional<std::string> target_key = std::nullopt;
  std::optional<std::string> job_id = std::nullopt;
};

class RecordStore {
 public:
  virtual ~RecordStore() = default;

  // Stores `records` in one transaction: after it returns OK they survive a crash (kill -9) of
  // this process; if the process dies during the call none of them is stored. Record::id is
  // ignored (the store assigns increasing ids in order) and median_cost is recomputed from costs.
  // kInvalidArgument (nothing stored) when a record has an empty task_key, template_name or
  // target_key, or is successful with no costs or a non-positive or non-finite cost.
  virtual absl::Status Append(const std::vector<Record>& records) = 0;

  // The best successful records of (task, target) by median cost (ties: earlier first), one per
  // distinct (template, config): a config measured several times appears once, with its best
  // measurement. At most k; kInvalidArgument when k < 0.
  virtual absl::StatusOr<std::vector<Record>> BestK(const std::string& task_key,
                                                    const std::string& target_key, int k) = 0;

  // All records of (task, target), failed ones included, in insertion order; only those of
  // `job_id` when given. What a resumed job or a tuner's history reads.
  virtual absl::StatusOr<std::vector<Record>> ForTask(const std::string& task_key,
                                                      const std::string& target_key,
                                                      const std::optional<std::string>& job_id) = 0;

  // Successful records on `target_key` of workloads near `workload` (WorkloadDistance finite),
  // the same workload included: nearest task first (ties by task key), within a task by median
  // cost. At most `limit` records; kInvalidArgument when limit < 0. For transfer learning: the
  // caller keeps those of its template.
  virtual absl::StatusOr<std::vector<Record>> Similar(const graph::Workload& workload,
                                                      const std::string& target_key, int limit) = 0;

  // Stores the stage timings of one round of `task_key` in `job_id`, in one transaction.
  // kInvalidArgument when job_id is empty or a timing ends before it starts.
  virtual absl::Status AppendStageTimings(const std::string& job_id, const std::string& task_key,
                                          int64_t round,
                                          const std::vector<StageTiming>& timings) = 0;
  // All stage timings of `job_id`, in insertion order.
  virtual absl::StatusOr<std::vector<StageTimingRecord>> StageTimings(
      const std::string& job_id) = 0;

  // Writes the matching records as JSON lines (RecordToJson), in insertion order.
  virtual absl::Status ExportJsonLines(std::ostream& out, const RecordFilter& filter) = 0;
  // Reads JSON lines (blank lines skipped) and stores them in one transaction; a record equal to
  // a stored one in (task, template, target, config index, timestamp, job) is skipped. Returns the
  // number stored. A line that does not parse: kInvalidArgument "line N: ..." and nothing stored.
  virtual absl::StatusOr<int64_t> ImportJsonLines(std::istream& in) = 0;

  // Number of matching records.
  virtual absl::StatusOr<int64_t> Count(const RecordFilter& filter) = 0;

  // One entry per task with records on `target_key`, in order of each task's first record.
  virtual absl::StatusOr<std::vector<TaskSummary>> Summary(const std::string& target_key) = 0;
};

// The schema version this Loom writes and understands.
inline constexpr int kRecordSchemaVersion = 2;

// Opens (creating if missing, migrating an older schema in place) the SQLite record database at
// `path` (":memory:" for a private in-memory one). WAL journal, 30 s busy timeout.
// kFailedPrecondition when the file's schema is newer than kRecordSchemaVersion or it belongs to
// another application; kInvalidArgument when the file is not an SQLite database; kNotFound when it
// cannot be opened or created.
absl::StatusOr<std::unique_ptr<RecordStore>> OpenSqliteRecordStore(const std::string& path);

// Opens (creating the tables if missing, migrating an older schema) the record tables in the
// PostgreSQL database at `uri` (`postgresql://[user[:password]@][host][:port]/db[?param=...]`,
// libpq's URI; `?host=/dir` for a Unix socket). Several daemons and `loom records` may share it.
// kUnavailable naming the URI (without its password) when it cannot connect;
// kFailedPrecondition when its record schema is newer than this Loom's or another application
// owns a `records` table there.
absl::StatusOr<std::unique_ptr<RecordStore>> OpenPostgresRecordStore(const std::string& uri);

// A check run inside the transaction of every write (Append, AppendStageTimings, ImportJsonLines)
// of a PostgreSQL record store, on its connection, before any row: its error refuses the write
// (nothing of it is stored). The service's leader fence (service/state_store.h, LeaderFence) keeps
// a daemon whose lead has passed to another from writing records.
class PgConnection;
using PgWriteFence = std::function<absl::Status(PgConnection& conn)>;

// OpenPostgresRecordStore whose writes pass `fence` first.
absl::StatusOr<std::unique_ptr<RecordStore>> OpenFencedPostgresRecordStore(const std::string& uri,
                                                                           PgWriteFence fence);

// The one place that picks the implementation: a `postgresql://` (or `postgres://`) URI opens the
// PostgreSQL store, anything else the SQLite file at that path.
absl::StatusOr<std::unique_ptr<RecordStore>> OpenRecordStore(const std::string& path_or_uri);

}  // namespace loom::tune
