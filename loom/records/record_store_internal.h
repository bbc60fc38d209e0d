// What every RecordStore implementation checks and parses the same way: the validation of
// records and stage timings before they are stored, the task kind column, the stored costs, the
// JSON lines of an import, and the ranking of similar tasks. Internal to loom/records: used by
// sqlite_record_store.cc and postgres_record_store.cc only.
#pragma once

#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/records/record.h"

namespace loom::tune::internal {

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

}  // namespace loom::tune::internal
