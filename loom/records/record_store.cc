// The record store factory (one place decides SQLite or PostgreSQL by the name) and the checks
// both implementations share (record_store_internal.h).
#include "loom/records/record_store.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/records/postgres.h"
#include "loom/records/record_store_internal.h"
#include "nlohmann/json.hpp"

namespace loom::tune {

absl::StatusOr<std::unique_ptr<RecordStore>> OpenRecordStore(const std::string& path_or_uri) {
  if (IsPostgresUri(path_or_uri)) return OpenPostgresRecordStore(path_or_uri);
  return OpenSqliteRecordStore(path_or_uri);
}

namespace internal {

absl::Status ValidateRecord(const Record& r) {
  if (r.task_key.empty()) return absl::InvalidArgumentError("record has an empty task_key");
  if (r.template_name.empty()) {
    return absl::InvalidArgumentError("record has an empty template_name");
  }
  if (r.target_key.empty()) return absl::InvalidArgumentError("record has an empty target_key");
  if (r.ok()) {
    if (r.costs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("successful record of ", r.task_key,
                                                     " config ", r.config_index, " has no costs"));
    }
    for (double c : r.costs) {
      if (!(c > 0) || !std::isfinite(c)) {
        return absl::InvalidArgumentError(absl::StrCat("successful record of ", r.task_key,
                                                       " config ", r.config_index, " has cost ", c,
                                                       " (costs must be positive and finite)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStageTimings(const std::string& job_id, int64_t round,
                                  const std::vector<StageTiming>& timings) {
  if (job_id.empty()) return absl::InvalidArgumentError("stage timings need a job_id");
  for (const StageTiming& t : timings) {
    if (t.end < t.start) {
      return absl::InvalidArgumentError(
          absl::StrCat("stage '", t.stage, "' of round ", round, " ends before it starts"));
    }
  }
  return absl::OkStatus();
}

std::string TaskKindOf(std::string_view task_key) {
  return std::string(task_key.substr(0, task_key.find(':')));
}

absl::StatusOr<std::vector<double>> ParseStoredCosts(std::string_view json) {
  nlohmann::json costs = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!costs.is_array()) return absl::DataLossError("malformed costs");
  std::vector<double> out;
  for (const auto& c : costs) {
    if (!c.is_number()) return absl::DataLossError("malformed costs");
    out.push_back(c.get<double>());
  }
  return out;
}

absl::StatusOr<std::vector<Record>> ReadImportLines(std::istream& in) {
  std::vector<Record> records;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<Record> r = RecordFromJson(line);
    absl::Status st = r.ok() ? ValidateRecord(*r) : r.status();
    if (!st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": ", st.message()));
    }
    records.push_back(*std::move(r));
  }
  if (in.bad()) return absl::DataLossError("reading the records to import failed");
  return records;
}

std::vector<std::string> RankSimilarTasks(const graph::Workload& workload,
                                          std::vector<std::string> keys) {
  std::vector<std::pair<double, std::string>> tasks;  // (distance, task key)
  for (std::string& key : keys) {
    absl::StatusOr<graph::Workload> other = graph::ParseWorkloadKey(key);
    if (!other.ok()) continue;
    const double d = WorkloadDistance(workload, *other);
    if (std::isfinite(d)) tasks.emplace_back(d, std::move(key));
  }
  std::sort(tasks.begin(), tasks.end());
  std::vector<std::string> out;
  for (auto& [d, key] : tasks) out.push_back(std::move(key));
  return out;
}

}  // namespace internal
}  // namespace loom::tune
