// The simulator check: turns a real engine run's stage traces into the simulator's input (one job
// group per job, its stage durations per kind taken from the traces) and compares the simulated
// makespan of each policy with the measured one. Called by the experiment runner, which writes
// DIR/simulation.csv and DIR/sim.yaml (loadable with `loom simulate`).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/engine/engine.h"
#include "loom/sim/spec.h"

namespace loom::experiment {

// The machine as the engine saw it.
struct SimMachine {
  int cpu_slots = 1;    // general CPU slots
  int lent_slots = 1;   // slots the device lends while not measuring
  int build_slots = 1;  // slots per build stage
  std::string device_name = "cpu:1";
};

// One job group per job of `source` (count 1, one task, `rounds` = its tuning rounds, i.e. its
// update stages): propose, build (build_slots), measure (the device), update, each a constant
// duration = the job's total time in that kind of stage / rounds, so each job's work per kind is
// what it was in the run (the default-config build and measure are folded into the rounds).
// When `jobs_ran_alone` (the dedicated setup), the engine's own work between a job's stages (its
// span minus its stages' time: loading a task's history, storing a round) is added to its update
// stage, which it follows. kInvalidArgument when the run has no traces.
absl::StatusOr<sim::SimSpec> SimSpecFromRun(const engine::EngineResult& source,
                                            const SimMachine& machine, bool jobs_ran_alone,
                                            const std::vector<std::string>& policies);

// `spec` as YAML that sim::ParseSimSpec reads back to the same spec (constant durations only).
std::string SimSpecToYaml(const sim::SimSpec& spec, const std::string& comment);

// The simulator's policy for a setup: "dedicated" (the jobs one after another) is "sequential".
std::string PolicyOfSetup(const std::string& setup);

struct SimulationRow {
  std::string setup;
  std::string policy;
  double measured_s = 0;
  double simulated_s = 0;
  double ratio = 0;  // simulated / measured
  double simulated_lower_bound_s = 0;
  double simulated_device_utilization = 0;
};

// Simulates each setup's policy on `spec` and sets simulated_s, ratio and the simulated figures of
// `rows` (setup and measured_s filled by the caller).
absl::Status Simulate(const sim::SimSpec& spec, std::vector<SimulationRow>& rows);

}  // namespace loom::experiment
