// Decoding the daemon's state rows: the raw column values a StateStore reads back (integers,
// reals, text, protobuf blobs) -> JobRow / TaskRow / LeaseRow, refusing what a damaged or
// tampered file could hold (unknown enum values, a blob that does not parse, task indices that do
// not count 0..n-1) with one kDataLoss line instead of undefined behaviour later. Used by
// sqlite_state_store.cc and by the state-row fuzzer (state_rows_fuzzer.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/service/state_store.h"

namespace loom::service {

// The columns of one `jobs` row as stored.
struct RawJobRow {
  std::string id, uid, owner, name;
  int64_t state = 0, priority = 0;
  std::string spec;  // serialized v1::SubmitJobRequest
  int64_t submitted_us = 0, started_us = 0, finished_us = 0;
  std::string failure_reason;
  int64_t prepared = 0;
  std::string isa, target_key;
  double cpu_seconds = 0, device_seconds = 0;
  int64_t records = 0;
  double estimated_latency_ms = 0, device_seconds_limit = 0;
};

// The columns of one `tasks` row as stored.
struct RawTaskRow {
  int64_t index = 0;
  std::string task_key, template_name;
  double flops = 0;
  int64_t count = 0, phase = 0, round = 0, trials_done = 0, errors = 0;
  double best_cost = 0;
  std::string skip_reason;
  // Serialized TaskSessionState (DecodeTaskRow unwraps the UpdateInput of older daemons),
  // BuildInput, BuildOutput.
  std::string history, configs, artifacts;
};

struct RawLeaseRow {
  std::string lease_id, job_id;
  int64_t task = 0, kind = 0;
  std::string agent_id;
  int64_t granted_us = 0;
};

absl::StatusOr<JobRow> DecodeJobRow(const RawJobRow& raw);
absl::StatusOr<TaskRow> DecodeTaskRow(const std::string& job_id, const RawTaskRow& raw);
absl::StatusOr<LeaseRow> DecodeLeaseRow(const RawLeaseRow& raw);
// A task's stage and end as its `phase` column holds them (DecodeTaskRow reads them back): the
// stage kind's value (0-3, propose to update) while it runs, 4 when done, 5 when skipped.
int64_t EncodeTaskPhase(const TaskRow& task);
// A job's decoded tasks must be indexed 0..n-1 in order.
absl::Status CheckTaskIndices(const std::string& job_id, const std::vector<TaskRow>& tasks);

}  // namespace loom::service
