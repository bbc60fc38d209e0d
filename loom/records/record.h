// One tuning measurement as the record store keeps it (task, template, target, config, costs,
// error, job), the stage timings of a round, per-task summaries, and the JSON-lines codec used by
// `RecordStore::ExportJsonLines` / `ImportJsonLines`. Written by the tune loop's Update stage,
// read by tuners (resume, transfer), the runtime (best configs) and the CLI (summaries).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/graph/tasks.h"
#include "loom/toolchain/measure_result.h"

namespace loom::tune {

// One measured (or failed) candidate. Times are kept at microsecond precision by the store.
struct Record {
  int64_t id = 0;             // assigned by the store on Append (ignored there); 0 before
  std::string task_key;       // graph::WorkloadKey of the workload
  std::string template_name;  // e.g. "conv2d_nchwc"
  std::string target_key;     // ops::Target::Key(): kind, ISA and CPU model
  int64_t config_index = 0;   // ops::Config::index, for tuners
  std::string config_json;    // ops::ConfigSpace::ToJson(config), for people
  std::vector<double> costs;  // seconds per kernel run, one per repeat (may be empty on error)
  // Median of `costs` for a successful record, +inf on error. The store recomputes it on Append
  // (MedianCost below), so it never disagrees with `costs`.
  double median_cost = std::numeric_limits<double>::infinity();
  double flops = 0;  // of one run of the workload (graph::WorkloadFlops), so GFLOPS is derivable
  ErrorKind error = ErrorKind::kNone;
  std::string error_msg;
  absl::Time timestamp = absl::UnixEpoch();  // when the measurement finished
  std::string job_id;
  double build_seconds = 0;
  double measure_seconds = 0;
  // The service's agent that measured it (its credential's name); empty for local tuning.
  std::string agent_id;

  bool ok() const { return error == ErrorKind::kNone; }
  // flops / median_cost / 1e9; 0 for a failed record.
  double Gflops() const;
  bool operator==(const Record&) const = default;
};

// MedianCost(costs, error): measure_result.h.

// Builds a record from one Measure-stage result (costs, error, timing, config index) and the
// context the result does not carry. median_cost is derived from the costs.
struct RecordContext {
  std::string task_key;
  std::string template_name;
  std::string target_key;
  std::string job_id;
  double flops = 0;
};
Record MakeRecord(const RecordContext& context, const MeasureResult& result,
                  std::string config_json, double build_seconds);

// Start and end of one stage of a tuning round, and the resource it ran on.
struct StageTiming {
  std::string stage;  // "propose", "build", "measure", "update"
  absl::Time start = absl::UnixEpoch();
  absl::Time end = absl::UnixEpoch();
  std::string resource;  // "cpu:0", "device:cpu:1", ...
  bool operator==(const StageTiming&) const = default;
};

// A stored stage timing with the round it belongs to.
struct StageTimingRecord {
  std::string job_id;
  std::string task_key;
  int64_t round = 0;
  StageTiming timing;
  bool operator==(const StageTimingRecord&) const = default;
};

// Per (task, target): what the CLI's final table shows.
struct TaskSummary {
  std::string task_key;
  int64_t trials = 0;  // records, failed ones included
  int64_t errors = 0;  // records with error != kNone
  // Of the best successful record; best_cost +inf, best_gflops 0 and best_config_index -1 when
  // no record of the task succeeded.
  double best_cost = std::numeric_limits<double>::infinity();
  double best_gflops = 0;
  std::string best_template = "";
  int64_t best_config_index = -1;
  bool operator==(const TaskSummary&) const = default;
};

// "none" -> kNone, ... (the inverse of ErrorKindName); kInvalidArgument for an unknown name.
absl::StatusOr<ErrorKind> ParseErrorKind(std::string_view name);

// One JSON object on one line, no trailing newline. Fields: task_key, template, target_key,
// config_index, config (the config's JSON object, or a string when config_json is not JSON),
// costs, median_cost (null on error), flops, error (ErrorKindName), error_msg, timestamp
// (RFC 3339, UTC, microseconds), job_id, build_seconds, measure_seconds, and agent_id when it is
// set (optional on reading). The id is not written.
std::string RecordToJson(const Record& record);
// Inverse of RecordToJson (id left 0, median_cost recomputed from costs); kInvalidArgument naming
// the first missing or mistyped field.
absl::StatusOr<Record> RecordFromJson(std::string_view line);

// How far apart two workloads are for transfer learning: +inf unless they are of the same kind
// and dtype and (for convolutions) have the same kernel size, strides, dilations and depthwise-ness
// (for dense and batch matmul the same trans flags; for batch matmul the same broadcast pattern);
// otherwise the sum of |log2(a/b)| over the extents (n, c, h, w,
// k, groups for convolutions; m, n, k for dense; b, m, n, k for batch matmul) plus 0.25 per
// unequal pad. 0 means the same workload.
double WorkloadDistance(const graph::Workload& a, const graph::Workload& b);

}  // namespace loom::tune
