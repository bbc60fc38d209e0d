// The simulator check: turns a real engine run's stage traces into the simulator's input (one job
// group per job, its stage durations per kind taken from the traces) and compares the simulated
// makespan of each policy with the measured one. Called by the experiment runner, which writes
// DIR/simulation.csv and DIR/sim.yaml (loadable with `loom simulate`), and by
// `loom experiment SPEC -o DIR --resimulate`, which redoes the check from DIR/results.json.
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

// How the run's measurements were taken, for the time-bounded part of its measure stages.
struct SimMeasure {
  int repeat = 0;         // tune::MeasureOptions::repeat; 0: unknown (no time-bounded part)
  int min_repeat_ms = 0;  // tune::MeasureOptions::min_repeat_ms
  // Per job of the run (same order): candidates per round and trials per task.
  std::vector<int> batch_size;
  std::vector<int64_t> trials;
};

// Candidates measured by the measure stage `t` of job `job`: 1 for the default config (round -1),
// else min(batch, trials left in the task); 0 when `measure` does not know the job.
int CandidatesOf(const engine::StageTrace& t, const SimMeasure& measure);

// The fraction of job `job`'s measure-stage time in `run` that is time-bounded: its candidates x
// repeat x min_repeat_ms over its measure stages' total duration, capped to [0, 1]; 0 when the
// job has no measure stage or `measure` does not know it. A timed repeat cannot end before
// min_repeat_ms however slowly the kernel runs, so that floor is time-bounded; the rest is taken
// as work-bounded: worker setup, loading, the reference check, the warm-up and calibration runs,
// and a repeat's length past the floor (the measurer aims at 1.2 x min_repeat_ms from a
// calibration run, and that margin and the run-count rounding grow with the run time).
double TimeBoundedFraction(const engine::EngineResult& run, int job, const SimMeasure& measure);

// One job group per job of `source` (count 1, one task, `rounds` = its tuning rounds, i.e. its
// update stages): propose, build (build_slots), measure (the device), update, each a constant
// duration = the job's total time in that kind of stage / rounds, so each job's work per kind is
// what it was in the run (the default-config build and measure are folded into the rounds). Each
// job's measure stage gets time_bounded = TimeBoundedFraction(source, j, measure), and the device
// is time-shared (interference.device_time_sharing): co-running measurements stretch only their
// work-bounded part.
// When `jobs_ran_alone` (the dedicated setup), the engine's own work between a job's stages (its
// span minus its stages' time: loading a task's history, storing a round) is added to its update
// stage, which it follows. kInvalidArgument when the run has no traces.
absl::StatusOr<sim::SimSpec> SimSpecFromRun(const engine::EngineResult& source,
                                            const SimMachine& machine, bool jobs_ran_alone,
                                            const std::vector<std::string>& policies,
                                            const SimMeasure& measure = {});

// `spec` as YAML that sim::ParseSimSpec reads back to the same spec (constant durations only).
std::string SimSpecToYaml(const sim::SimSpec& spec, const std::string& comment);

// The simulator's policy for a setup: "dedicated" (the jobs one after another) is "sequential".
std::string PolicyOfSetup(const std::string& setup);

struct SimulationRow {
  std::string setup;
  int repetition = 0;
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

// DIR/simulation.csv and DIR/sim.yaml as the runner writes them.
std::string SimulationCsv(const std::vector<SimulationRow>& rows);
std::string SimYaml(const sim::SimSpec& spec, const std::string& source_setup);
// The rows as a table for the terminal: setup, policy, measured and simulated makespan, ratio.
std::string FormatSimulationRows(const std::vector<SimulationRow>& rows);

struct ExperimentResult;  // runner.h
struct RunnerOptions;     // runner.h

// The setups of a results.json written by WriteResults: name, makespan, jobs (name; start and
// end from their stages) and stage traces, enough for CheckWithSimulator. kNotFound when the file
// is missing, kInvalidArgument when it is not such a file.
absl::Status ReadResultsJson(const std::string& path, ExperimentResult* result);

// Redoes the simulator check of the experiment in `dir` from dir/results.json with
// CheckWithSimulator (the runner's code path) and `options` (the layout, build slots and
// options.sim_measure of the experiment), writes dir/simulation.csv and dir/sim.yaml again and
// returns the rows.
absl::StatusOr<std::vector<SimulationRow>> Resimulate(const std::string& dir,
                                                      const RunnerOptions& options);
}  // namespace loom::experiment
