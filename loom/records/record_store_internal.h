// What every RecordStore implementation does the same way: the validation of records and stage
// timings before they are stored, the task kind column, the stored costs, the JSON lines of an
// import and an export, the ranking of similar tasks, and the methods around them (SqlRecordStore:
// checks, lock, transaction). Internal to loom/records: used by sqlite_record_store.cc and
// postgres_record_store.cc only.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loom/graph/tasks.h"
#include "loom/records/record.h"
#include "loom/records/record_store.h"

namespace loom::tune::internal {

// The columns of a record, in the order both backends read them (ReadRecord).
inline constexpr char kRecordColumns[] =
    "id, task_key, template_name, target_key, config_index, config_json, costs, median_cost, "
    "flops, error, error_msg, timestamp_us, job_id, build_seconds, measure_seconds, agent_id";

// kInvalidArgument as RecordStore::Append documents it.
absl::Status ValidateRecord(const Record& r);
// kInvalidArgument as RecordStore::AppendStageTimings documents it.
absl::Status ValidateStageTimings(const std::string& job_id, int64_t round,
                                  const std::vector<StageTiming>& timings);
// The key's kind prefix ("conv2d"), stored for Similar.
std::string TaskKindOf(std::string_view task_key);
// The costs column (a JSON array of seconds); an error naming the problem when malformed.
absl::StatusOr<std::vector<double>> ParseStoredCosts(std::string_view json);
// Every record of a JSON-lines import, validated (blank lines skipped); kInvalidArgument
// "line N: ..." for the first bad line, kDataLoss when reading fails.
absl::StatusOr<std::vector<Record>> ReadImportLines(std::istream& in);
// Of `keys` (task keys with records of `workload`'s kind), those comparable to `workload`, nearest
// first (ties by key). Keys this Loom cannot parse (a newer one wrote them) are left out.
std::vector<std::string> RankSimilarTasks(const graph::Workload& workload,
                                          std::vector<std::string> keys);

// The RecordStore methods as every SQL backend implements them (a template method): each checks
// its arguments and validates what it stores, takes the store's mutex, runs writes in one
// transaction, and leaves the backend only its SQL, in the *Locked methods below (called with
// mu_ held). An import skips records the store holds already; an export writes JSON lines; a
// summary reads each task's best record through BestKLocked; Similar ranks the task keys
// (RankSimilarTasks) and reads each task's best records until `limit`.
class SqlRecordStore : public RecordStore {
 public:
  absl::Status Append(const std::vector<Record>& records) final;
  absl::StatusOr<std::vector<Record>> BestK(const std::string& task_key,
                                            const std::string& target_key, int k) final;
  absl::StatusOr<std::vector<Record>> ForTask(const std::string& task_key,
                                              const std::string& target_key,
                                              const std::optional<std::string>& job_id) final;
  absl::StatusOr<std::vector<Record>> Similar(const graph::Workload& workload,
                                              const std::string& target_key, int limit) final;
  absl::Status AppendStageTimings(const std::string& job_id, const std::string& task_key,
                                  int64_t round, const std::vector<StageTiming>& timings) final;
  absl::StatusOr<std::vector<StageTimingRecord>> StageTimings(const std::string& job_id) final;
  absl::Status ExportJsonLines(std::ostream& out, const RecordFilter& filter) final;
  absl::StatusOr<int64_t> ImportJsonLines(std::istream& in) final;
  absl::StatusOr<int64_t> Count(const RecordFilter& filter) final;
  absl::StatusOr<std::vector<TaskSummary>> Summary(const std::string& target_key) final;

 protected:
  // Runs `body` in one write transaction, committed when it returns OK, else rolled back.
  virtual absl::Status InTransactionLocked(const std::function<absl::Status()>& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Stores one validated record (inside a transaction); its median cost is recomputed.
  virtual absl::Status InsertLocked(const Record& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Stores validated stage timings (inside a transaction).
  virtual absl::Status InsertStageTimingsLocked(const std::string& job_id,
                                                const std::string& task_key, int64_t round,
                                                const std::vector<StageTiming>& timings)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // As RecordStore::BestK, with k >= 0.
  virtual absl::StatusOr<std::vector<Record>> BestKLocked(const std::string& task_key,
                                                          const std::string& target_key, int k)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // As RecordStore::ForTask.
  virtual absl::StatusOr<std::vector<Record>> ForTaskLocked(
      const std::string& task_key, const std::string& target_key,
      const std::optional<std::string>& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // The distinct task keys with successful records of `task_kind` (TaskKindName) on the target.
  virtual absl::StatusOr<std::vector<std::string>> SimilarTaskKeysLocked(
      const std::string& target_key, const std::string& task_kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // At most `limit` (> 0) successful records of (task, target), by median cost (ties: earlier).
  virtual absl::StatusOr<std::vector<Record>> BestRecordsLocked(const std::string& task_key,
                                                                const std::string& target_key,
                                                                int64_t limit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // As RecordStore::StageTimings.
  virtual absl::StatusOr<std::vector<StageTimingRecord>> StageTimingsLocked(
      const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Calls `each` with every matching record, in insertion order; stops at the first error.
  virtual absl::Status ForEachRecordLocked(const RecordFilter& filter,
                                           const std::function<void(const Record&)>& each)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Called first in an import's transaction (a backend serializes imports here, if it must).
  virtual absl::Status BeginImportLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::OkStatus();
  }
  // Whether a record equal to `r` in (task, template, target, config index, timestamp, job) is
  // stored.
  virtual absl::StatusOr<bool> ContainsLocked(const Record& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // As RecordStore::Count.
  virtual absl::StatusOr<int64_t> CountLocked(const RecordFilter& filter)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Summary's rows with only task_key, trials and errors filled, in order of the first record.
  virtual absl::StatusOr<std::vector<TaskSummary>> TaskCountsLocked(const std::string& target_key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;

  absl::Mutex mu_;  // one statement sequence at a time on the backend's connection
};

}  // namespace loom::tune::internal
