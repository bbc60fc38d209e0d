// RecordStore on PostgreSQL: the fleet's shared tuning database. One connection per store,
// guarded by a mutex (threads); every write is one transaction, committed durably (PostgreSQL's
// synchronous_commit). The schema mirrors the SQLite store's, version by version, recorded in
// loom_schema under the component "records" (postgres.h: Migrate). Every value is a statement
// parameter.
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loom/base/status_macros.h"
#include "loom/records/postgres.h"
#include "loom/records/record_store.h"
#include "loom/records/record_store_internal.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using internal::kRecordColumns;

// Serializes imports, whose duplicate check must see every earlier import ("LOOMIMPT").
constexpr int64_t kImportLockKey = 0x4c4f4f4d494d5054;

// The SQLite store's migrations in PostgreSQL's dialect: kMigrations[v] takes v to v + 1.
const std::vector<const char*> kMigrations = {
    // 0 -> 1: records and stage timings.
    R"sql(
CREATE TABLE records (
  id BIGSERIAL PRIMARY KEY,
  task_key TEXT NOT NULL,
  task_kind TEXT NOT NULL,
  template_name TEXT NOT NULL,
  target_key TEXT NOT NULL,
  config_index BIGINT NOT NULL,
  config_json TEXT NOT NULL,
  costs TEXT NOT NULL,
  median_cost DOUBLE PRECISION,
  flops DOUBLE PRECISION NOT NULL,
  error TEXT NOT NULL,
  error_msg TEXT NOT NULL,
  timestamp_us BIGINT NOT NULL,
  job_id TEXT NOT NULL,
  build_seconds DOUBLE PRECISION NOT NULL,
  measure_seconds DOUBLE PRECISION NOT NULL
);
CREATE INDEX records_best ON records(task_key, target_key, median_cost);
CREATE INDEX records_config ON records(task_key, target_key, config_index);
CREATE INDEX records_job ON records(job_id);
CREATE INDEX records_kind ON records(target_key, task_kind);
CREATE TABLE stage_timings (
  id BIGSERIAL PRIMARY KEY,
  job_id TEXT NOT NULL,
  task_key TEXT NOT NULL,
  round BIGINT NOT NULL,
  stage TEXT NOT NULL,
  start_us BIGINT NOT NULL,
  end_us BIGINT NOT NULL,
  resource TEXT NOT NULL
);
CREATE INDEX stage_timings_job ON stage_timings(job_id);
)sql",
    // 1 -> 2: the agent that measured a record.
    R"sql(
ALTER TABLE records ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
)sql",
};

// Matches when a parameter is NULL (filter unset) or equal.
constexpr char kFilterWhere[] =
    "($1::text IS NULL OR task_key = $1) AND ($2::text IS NULL OR target_key = $2) AND "
    "($3::text IS NULL OR job_id = $3)";

std::vector<PgParam> FilterParams(const RecordFilter& f) {
  return {PgOptionalText(f.task_key), PgOptionalText(f.target_key), PgOptionalText(f.job_id)};
}

class PostgresRecordStore : public internal::SqlRecordStore {
 public:
  PostgresRecordStore(std::unique_ptr<PgConnection> conn, PgWriteFence fence)
      : conn_(std::move(conn)), fence_(std::move(fence)) {}

  absl::Status Initialize() {
    absl::MutexLock lock(&mu_);
    return conn_->Migrate("records", kMigrations, "records");
  }

 private:
  absl::Status InTransactionLocked(const std::function<absl::Status()>& body) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Every write runs here: the fence (the leader epoch, on a daemon's store) is checked inside
    // the write's own transaction, so a stale leader's write is refused as its state writes are.
    return conn_->InTransaction([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
      LOOM_RETURN_IF_ERROR(Fence());
      return body();
    });
  }

  absl::Status InsertStageTimingsLocked(const std::string& job_id, const std::string& task_key,
                                        int64_t round,
                                        const std::vector<StageTiming>& timings) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const StageTiming& t : timings) {
      LOOM_RETURN_IF_ERROR(
          conn_
              ->Exec("INSERT INTO stage_timings (job_id, task_key, round, stage, start_us, "
                     "end_us, resource) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                     {PgText(job_id), PgText(task_key), PgInt(round), PgText(t.stage),
                      PgInt(absl::ToUnixMicros(t.start)), PgInt(absl::ToUnixMicros(t.end)),
                      PgText(t.resource)})
              .status());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Record>> ForTaskLocked(
      const std::string& task_key, const std::string& target_key,
      const std::optional<std::string>& job_id) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Query(absl::StrCat("SELECT ", kRecordColumns,
                              " FROM records WHERE task_key = $1 AND target_key = $2 AND "
                              "($3::text IS NULL OR job_id = $3) ORDER BY id"),
                 {PgText(task_key), PgText(target_key), PgOptionalText(job_id)});
  }

  absl::StatusOr<std::vector<std::string>> SimilarTaskKeysLocked(
      const std::string& target_key, const std::string& task_kind) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(PgResult res,
                          conn_->Exec("SELECT DISTINCT task_key FROM records WHERE target_key = $1 "
                                      "AND task_kind = $2 AND median_cost IS NOT NULL",
                                      {PgText(target_key), PgText(task_kind)}));
    std::vector<std::string> keys;
    for (int i = 0; i < res.rows(); ++i) keys.push_back(res.Text(i, 0));
    return keys;
  }

  absl::StatusOr<std::vector<Record>> BestRecordsLocked(const std::string& task_key,
                                                        const std::string& target_key,
                                                        int64_t limit) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Query(absl::StrCat("SELECT ", kRecordColumns,
                              " FROM records WHERE task_key = $1 AND target_key = $2 AND "
                              "median_cost IS NOT NULL ORDER BY median_cost, id LIMIT $3"),
                 {PgText(task_key), PgText(target_key), PgInt(limit)});
  }

  absl::StatusOr<std::vector<StageTimingRecord>> StageTimingsLocked(
      const std::string& job_id) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(PgResult res,
                          conn_->Exec("SELECT job_id, task_key, round, stage, start_us, end_us, "
                                      "resource FROM stage_timings WHERE job_id = $1 ORDER BY id",
                                      {PgText(job_id)}));
    std::vector<StageTimingRecord> out;
    for (int i = 0; i < res.rows(); ++i) {
      StageTimingRecord t;
      t.job_id = res.Text(i, 0);
      t.task_key = res.Text(i, 1);
      LOOM_ASSIGN_OR_RETURN(t.round, res.Int(i, 2));
      t.timing.stage = res.Text(i, 3);
      LOOM_ASSIGN_OR_RETURN(int64_t start, res.Int(i, 4));
      LOOM_ASSIGN_OR_RETURN(int64_t end, res.Int(i, 5));
      t.timing.start = absl::FromUnixMicros(start);
      t.timing.end = absl::FromUnixMicros(end);
      t.timing.resource = res.Text(i, 6);
      out.push_back(std::move(t));
    }
    return out;
  }

  absl::Status ForEachRecordLocked(const RecordFilter& filter,
                                   const std::function<void(const Record&)>& each) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(std::vector<Record> records,
                          Query(absl::StrCat("SELECT ", kRecordColumns, " FROM records WHERE ",
                                             kFilterWhere, " ORDER BY id"),
                                FilterParams(filter)));
    for (const Record& r : records) each(r);
    return absl::OkStatus();
  }

  absl::Status BeginImportLocked() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return conn_->Exec("SELECT pg_advisory_xact_lock($1)", {PgInt(kImportLockKey)}).status();
  }

  absl::StatusOr<bool> ContainsLocked(const Record& r) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        PgResult dup,
        conn_->Exec(
            "SELECT 1 FROM records WHERE task_key = $1 AND target_key = $2 AND "
            "config_index = $3 AND template_name = $4 AND timestamp_us = $5 AND "
            "job_id = $6 LIMIT 1",
            {PgText(r.task_key), PgText(r.target_key), PgInt(r.config_index),
             PgText(r.template_name), PgInt(absl::ToUnixMicros(r.timestamp)), PgText(r.job_id)}));
    return dup.rows() > 0;
  }

  absl::StatusOr<int64_t> CountLocked(const RecordFilter& filter) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        PgResult res, conn_->Exec(absl::StrCat("SELECT COUNT(*) FROM records WHERE ", kFilterWhere),
                                  FilterParams(filter)));
    if (res.rows() != 1) return absl::InternalError("COUNT returned no row");
    return res.Int(0, 0);
  }

  absl::StatusOr<std::vector<TaskSummary>> TaskCountsLocked(const std::string& target_key) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(
        PgResult res,
        conn_->Exec("SELECT task_key, COUNT(*), SUM(CASE WHEN error <> 'none' THEN 1 ELSE 0 END), "
                    "MIN(id) AS first FROM records WHERE target_key = $1 GROUP BY task_key "
                    "ORDER BY first",
                    {PgText(target_key)}));
    std::vector<TaskSummary> out;
    for (int i = 0; i < res.rows(); ++i) {
      TaskSummary s;
      s.task_key = res.Text(i, 0);
      LOOM_ASSIGN_OR_RETURN(s.trials, res.Int(i, 1));
      LOOM_ASSIGN_OR_RETURN(s.errors, res.Int(i, 2));
      out.push_back(std::move(s));
    }
    return out;
  }

  absl::Status InsertLocked(const Record& r) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const double median = MedianCost(r.costs, r.error);
    return conn_
        ->Exec(
            "INSERT INTO records (task_key, task_kind, template_name, target_key, "
            "config_index, config_json, costs, median_cost, flops, error, error_msg, "
            "timestamp_us, job_id, build_seconds, measure_seconds, agent_id) VALUES ($1, $2, "
            "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            {PgText(r.task_key), PgText(internal::TaskKindOf(r.task_key)), PgText(r.template_name),
             PgText(r.target_key), PgInt(r.config_index), PgText(r.config_json),
             PgText(nlohmann::json(r.costs).dump()),
             std::isfinite(median) ? PgReal(median) : PgNull(), PgReal(r.flops),
             PgText(ErrorKindName(r.error)), PgText(r.error_msg),
             PgInt(absl::ToUnixMicros(r.timestamp)), PgText(r.job_id), PgReal(r.build_seconds),
             PgReal(r.measure_seconds), PgText(r.agent_id)})
        .status();
  }

  // The rows of a SELECT of kRecordColumns.
  absl::StatusOr<std::vector<Record>> Query(const std::string& sql,
                                            const std::vector<PgParam>& params)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LOOM_ASSIGN_OR_RETURN(PgResult res, conn_->Exec(sql, params));
    std::vector<Record> out;
    out.reserve(res.rows());
    for (int i = 0; i < res.rows(); ++i) {
      absl::StatusOr<Record> r = ReadRecord(res, i);
      if (!r.ok()) {
        return absl::Status(
            r.status().code(),
            absl::StrCat("record database '", conn_->redacted_uri(), "': ", r.status().message()));
      }
      out.push_back(*std::move(r));
    }
    return out;
  }

  static absl::StatusOr<Record> ReadRecord(const PgResult& res, int i) {
    Record r;
    LOOM_ASSIGN_OR_RETURN(r.id, res.Int(i, 0));
    r.task_key = res.Text(i, 1);
    r.template_name = res.Text(i, 2);
    r.target_key = res.Text(i, 3);
    LOOM_ASSIGN_OR_RETURN(r.config_index, res.Int(i, 4));
    r.config_json = res.Text(i, 5);
    absl::StatusOr<std::vector<double>> costs = internal::ParseStoredCosts(res.Text(i, 6));
    if (!costs.ok())
      return absl::DataLossError(absl::StrCat("record ", r.id, " has malformed costs"));
    r.costs = *std::move(costs);
    if (res.IsNull(i, 7)) {
      r.median_cost = std::numeric_limits<double>::infinity();
    } else {
      LOOM_ASSIGN_OR_RETURN(r.median_cost, res.Real(i, 7));
    }
    LOOM_ASSIGN_OR_RETURN(r.flops, res.Real(i, 8));
    // An error name this Loom does not know (a newer one wrote it) reads as kUnknown.
    r.error = ParseErrorKind(res.Text(i, 9)).value_or(ErrorKind::kUnknown);
    r.error_msg = res.Text(i, 10);
    LOOM_ASSIGN_OR_RETURN(int64_t stamp, res.Int(i, 11));
    r.timestamp = absl::FromUnixMicros(stamp);
    r.job_id = res.Text(i, 12);
    LOOM_ASSIGN_OR_RETURN(r.build_seconds, res.Real(i, 13));
    LOOM_ASSIGN_OR_RETURN(r.measure_seconds, res.Real(i, 14));
    r.agent_id = res.Text(i, 15);
    return r;
  }

  absl::StatusOr<std::vector<Record>> BestKLocked(const std::string& task_key,
                                                  const std::string& target_key, int k) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // One row per (template, config): its best measurement (ties: the earliest).
    return Query(
        absl::StrCat("SELECT ", kRecordColumns, " FROM (SELECT ", kRecordColumns,
                     ", ROW_NUMBER() OVER (PARTITION BY template_name, config_index ORDER BY "
                     "median_cost, id) AS rank_in_config FROM records WHERE task_key = $1 AND "
                     "target_key = $2 AND median_cost IS NOT NULL) AS ranked WHERE "
                     "rank_in_config = 1 ORDER BY median_cost, id LIMIT $3"),
        {PgText(task_key), PgText(target_key), PgInt(k)});
  }

  // The write fence, inside the write's transaction (OK without one).
  absl::Status Fence() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return fence_ ? fence_(*conn_) : absl::OkStatus();
  }

  const std::unique_ptr<PgConnection> conn_ ABSL_PT_GUARDED_BY(mu_);
  const PgWriteFence fence_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RecordStore>> OpenPostgresRecordStore(const std::string& uri) {
  return OpenFencedPostgresRecordStore(uri, nullptr);
}

absl::StatusOr<std::unique_ptr<RecordStore>> OpenFencedPostgresRecordStore(const std::string& uri,
                                                                           PgWriteFence fence) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> conn,
                        PgConnection::Connect(uri, "record database"));
  auto store = std::make_unique<PostgresRecordStore>(std::move(conn), std::move(fence));
  LOOM_RETURN_IF_ERROR(store->Initialize());
  return store;
}

}  // namespace loom::tune
