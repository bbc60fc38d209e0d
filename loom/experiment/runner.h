// The experiment runner: runs the same tuning jobs under each setup (each job alone on the
// machine, then all at once under `uncontrolled`, `interleaved`, `predictive`, ...) in the
// embedded engine, one setup after another, and writes the comparison (results.csv,
// results.json). Called by `loom experiment` (cli/experiment_command.cc).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/engine/engine.h"
#include "loom/tune/record_store.h"

namespace loom::experiment {

struct SetupJobResult {
  std::string name;
  std::string job_id;
  double seconds = 0;           // from the setup's start (alone: its own run) to its last stage
  double tuned_latency_ms = 0;  // sum over its tuned tasks of best cost x occurrences
  int64_t records = 0;
  std::string error;  // empty when the job succeeded
};

struct SetupResult {
  std::string setup;
  double makespan_s = 0;  // "dedicated": the sum of the jobs' own runs (running them in sequence)
  double device_busy_s = 0;
  double device_utilization = 0;  // device busy / makespan
  double cpu_utilization = 0;     // CPU slot-seconds / (slots x makespan)
  // max(device work, CPU slot-seconds / slots): no schedule of this work can be shorter.
  double lower_bound_s = 0;
  // Hardware used: "dedicated" gives each job its own machine (the sum of the jobs' times), the
  // shared setups one machine for the makespan.
  double device_hours = 0;
  std::vector<SetupJobResult> jobs;
};

struct RunnerOptions {
  // Layout, build slots and factories; the policy is set per setup.
  engine::EngineOptions engine;
  std::function<void(const std::string& setup, const engine::EngineProgress&)> on_progress;
};

// Runs `jobs` under every setup ("dedicated" or a policy name). Each setup's job ids get
// "@<setup>" appended and transfer is off, so no setup learns from another's records.
absl::StatusOr<std::vector<SetupResult>> RunExperiment(const std::vector<engine::EngineJob>& jobs,
                                                       const std::vector<std::string>& setups,
                                                       const RunnerOptions& options,
                                                       tune::RecordStore* store);

// Writes DIR/results.csv (one row per setup and job) and DIR/results.json; creates DIR.
absl::Status WriteResults(const std::vector<SetupResult>& results, const std::string& dir);

}  // namespace loom::experiment
