// Discrete-event simulation of tuning jobs on a cluster, driving the real sched::Scheduler under
// a virtual clock. Each job is tasks x rounds of its stages (propose -> build -> measure ->
// update); the workload is sampled once from the seed, so every policy runs the same work.
// Under `uncontrolled`, co-running stages are slowed and measurements distorted as the
// InterferenceSpec says. Callers: `loom simulate`, the simulator tests and benchmarks.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/sched/metrics.h"
#include "loom/sim/spec.h"

namespace loom::sim {

struct SimResult {
  std::string policy;
  int jobs = 0;  // number of jobs simulated
  sched::ClusterInfo cluster;
  std::vector<sched::JobRecord> job_records;
  std::vector<sched::StageRecord> records;
  sched::Metrics metrics;
  double mean_measure_distortion = 0;  // mean relative timing error of measurements
  int64_t decisions = 0;               // grants made by the scheduler
  int64_t events = 0;                  // simulation events processed
};

// Simulates `policy` on the spec. `jobs_per_group` >= 0 replaces every group's count.
absl::StatusOr<SimResult> Simulate(const SimSpec& spec, std::string_view policy,
                                   int jobs_per_group = -1);

// Every policy of the spec, for each job count of the sweep (or the spec's counts).
absl::StatusOr<std::vector<SimResult>> SimulateAll(const SimSpec& spec);

}  // namespace loom::sim
