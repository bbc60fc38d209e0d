// A tuned model's final latency measured alone: the model compiled (runtime::CompiledModel) with
// the best records of one job only, run on the device's cores with nothing else running, median
// over many runs. The experiment runner calls it for each job after each setup, so the report can
// compare the quality of what every setup tuned.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/tune/builder.h"
#include "loom/tune/record_store.h"

namespace loom::experiment {

struct LatencyOptions {
  // Cores the model runs on (one thread each); empty: wherever this thread may run, one thread.
  std::vector<int> cores;
  int min_runs = 20;         // timed runs, after two warm-up runs
  double min_seconds = 1.0;  // and at least this long in total
  tune::BuildOptions build;  // how kernels are compiled (cache dir, parallel compiles)
};

// Copies the records of `job_ids` for `tasks` on `target` from `store` into a private in-memory
// store (so no other job's or setup's records are used), compiles `graph` with it and returns the
// median latency in milliseconds. Errors of the store, of compiling or of running the model.
absl::StatusOr<double> MeasureFinalLatencyMs(const graph::Graph& graph,
                                             const std::vector<graph::Task>& tasks,
                                             const ops::Target& target,
                                             const std::vector<std::string>& job_ids,
                                             tune::RecordStore& store,
                                             const LatencyOptions& options);

}  // namespace loom::experiment
