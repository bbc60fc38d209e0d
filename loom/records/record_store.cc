// The record store factory (one place decides SQLite or PostgreSQL by the name), the checks
// both implementations share and their common methods (record_store_internal.h: SqlRecordStore).
#include "loom/records/record_store.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
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

absl::Status SqlRecordStore::Append(const std::vector<Record>& records) {
  for (const Record& r : records) LOOM_RETURN_IF_ERROR(ValidateRecord(r));
  absl::MutexLock lock(&mu_);
  return InTransactionLocked([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    for (const Record& r : records) LOOM_RETURN_IF_ERROR(InsertLocked(r));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<Record>> SqlRecordStore::BestK(const std::string& task_key,
                                                          const std::string& target_key, int k) {
  if (k < 0) return absl::InvalidArgumentError(absl::StrCat("BestK: k is ", k, ", must be >= 0"));
  absl::MutexLock lock(&mu_);
  return BestKLocked(task_key, target_key, k);
}

absl::StatusOr<std::vector<Record>> SqlRecordStore::ForTask(
    const std::string& task_key, const std::string& target_key,
    const std::optional<std::string>& job_id) {
  absl::MutexLock lock(&mu_);
  return ForTaskLocked(task_key, target_key, job_id);
}

absl::StatusOr<std::vector<Record>> SqlRecordStore::Similar(const graph::Workload& workload,
                                                            const std::string& target_key,
                                                            int limit) {
  if (limit < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Similar: limit is ", limit, ", must be >= 0"));
  }
  absl::MutexLock lock(&mu_);
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> keys,
                        SimilarTaskKeysLocked(target_key, graph::TaskKindName(workload.kind)));
  std::vector<Record> out;
  for (const std::string& key : RankSimilarTasks(workload, std::move(keys))) {
    const int64_t left = limit - static_cast<int64_t>(out.size());
    if (left <= 0) break;
    LOOM_ASSIGN_OR_RETURN(std::vector<Record> records, BestRecordsLocked(key, target_key, left));
    for (Record& r : records) out.push_back(std::move(r));
  }
  return out;
}

absl::Status SqlRecordStore::AppendStageTimings(const std::string& job_id,
                                                const std::string& task_key, int64_t round,
                                                const std::vector<StageTiming>& timings) {
  LOOM_RETURN_IF_ERROR(ValidateStageTimings(job_id, round, timings));
  absl::MutexLock lock(&mu_);
  return InTransactionLocked([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return InsertStageTimingsLocked(job_id, task_key, round, timings);
  });
}

absl::StatusOr<std::vector<StageTimingRecord>> SqlRecordStore::StageTimings(
    const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return StageTimingsLocked(job_id);
}

absl::Status SqlRecordStore::ExportJsonLines(std::ostream& out, const RecordFilter& filter) {
  absl::MutexLock lock(&mu_);
  LOOM_RETURN_IF_ERROR(
      ForEachRecordLocked(filter, [&](const Record& r) { out << RecordToJson(r) << '\n'; }));
  out.flush();
  if (!out) return absl::DataLossError("writing the exported records failed");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqlRecordStore::ImportJsonLines(std::istream& in) {
  LOOM_ASSIGN_OR_RETURN(std::vector<Record> records, ReadImportLines(in));
  absl::MutexLock lock(&mu_);
  int64_t stored = 0;
  LOOM_RETURN_IF_ERROR(
      InTransactionLocked([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
        LOOM_RETURN_IF_ERROR(BeginImportLocked());
        for (const Record& r : records) {
          LOOM_ASSIGN_OR_RETURN(bool duplicate, ContainsLocked(r));
          if (duplicate) continue;
          LOOM_RETURN_IF_ERROR(InsertLocked(r));
          ++stored;
        }
        return absl::OkStatus();
      }));
  return stored;
}

absl::StatusOr<int64_t> SqlRecordStore::Count(const RecordFilter& filter) {
  absl::MutexLock lock(&mu_);
  return CountLocked(filter);
}

absl::StatusOr<std::vector<TaskSummary>> SqlRecordStore::Summary(const std::string& target_key) {
  absl::MutexLock lock(&mu_);
  LOOM_ASSIGN_OR_RETURN(std::vector<TaskSummary> out, TaskCountsLocked(target_key));
  for (TaskSummary& s : out) {
    LOOM_ASSIGN_OR_RETURN(std::vector<Record> best, BestKLocked(s.task_key, target_key, 1));
    if (best.empty()) continue;
    s.best_cost = best[0].median_cost;
    s.best_gflops = best[0].Gflops();
    s.best_template = best[0].template_name;
    s.best_config_index = best[0].config_index;
  }
  return out;
}

}  // namespace internal
}  // namespace loom::tune
