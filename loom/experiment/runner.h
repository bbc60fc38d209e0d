// The experiment runner: runs the same tuning jobs under each setup (each job alone on the
// machine, then all at once under `uncontrolled`, `interleaved`, `predictive`, ...) in the
// embedded engine, one setup after another, the whole set `repetitions` times, without a person
// watching. After each setup it re-measures each task's best candidates and a sample of the others
// alone (measurement distortion and ranking fidelity, ranking.h); at the end it times each job's
// model compiled with each setup's records, all setups' and repetitions' models side by side
// (final latency), and feeds the stage traces to the simulator. Writes results.csv,
// results.json, trace.json, gantt-<setup>.svg, simulation.csv, sim.yaml and report.html. Called
// by `loom experiment` (cli/experiment_command.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/engine/engine.h"
#include "loom/experiment/distortion.h"
#include "loom/experiment/ranking.h"
#include "loom/experiment/service_runner.h"
#include "loom/experiment/sim_check.h"
#include "loom/graph/graph.h"
#include "loom/records/record_store.h"
#include "loom/sim/spec.h"

namespace loom::experiment {

inline constexpr double kNotMeasured = std::numeric_limits<double>::quiet_NaN();

// One measured candidate of a tuning curve.
struct CurvePoint {
  double seconds = 0;  // when its measurement ended, from the start of the job's run
  double gflops = 0;   // 0 for a failed candidate
};

// The candidates of one task of one job in the order they were measured.
struct TaskCurve {
  std::string task_key;
  std::vector<CurvePoint> trials;
};

struct SetupJobResult {
  std::string name;
  std::string job_id;
  absl::Time run_start;         // the start of its run (the setup's; alone: its own)
  double seconds = 0;           // from the setup's start (alone: its own run) to its last stage
  double tuned_latency_ms = 0;  // sum over its tuned tasks of best cost x occurrences
  int64_t records = 0;
  std::string error;  // empty when the job succeeded
  // The whole model compiled with this job's records only, timed on the idle device cores in
  // alternation with the other setups' models of the same job.
  double final_latency_ms = kNotMeasured;
  std::string latency_error;
  // Each task's best candidates in the run and a sample of the others, measured again alone
  // after the setup.
  std::vector<DistortionSample> distortion;
  double distortion_median = kNotMeasured;
  RankingFidelity ranking;
  std::vector<TaskCurve> curves;  // one per tuned task
};

struct SetupResult {
  std::string setup;
  int repetition = 0;     // 0-based
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
  double distortion_median = kNotMeasured;  // over every job's samples
  RankingFidelity ranking;                  // the jobs' figures combined (CombineRanking)
  // The run itself (stage traces). "dedicated": the jobs' runs one after another in one result,
  // job i's traces with job index i.
  engine::EngineResult run;
};

struct ExperimentResult {
  int repetitions = 1;
  // Every setup of every repetition, repetition-major (all setups of repetition 0 first).
  std::vector<SetupResult> setups;
  // The simulator check: one row per setup and repetition (each repetition simulated from its own
  // dedicated run); empty when off or impossible (simulation_error).
  std::vector<SimulationRow> simulation;
  std::string simulation_source;  // the setup whose traces gave the stage durations
  std::string simulation_error;
  sim::SimSpec sim_spec;
  // `--through-service`: the same setups through `loom serve` and an agent (service_runner.h),
  // compared with `setups` by setup name; empty when not run.
  std::vector<ServiceSetupResult> service;
};

struct RunnerOptions {
  // Layout, build slots and factories; the policy is set per setup. The distortion re-measure
  // uses the same factories (a fresh builder and measurer, so the same measure options).
  engine::EngineOptions engine;
  std::function<void(const std::string& setup, const engine::EngineProgress&)> on_progress;
  // Lines about the steps between runs ("re-measuring ...").
  std::function<void(const std::string& line)> on_note;
  // Per job (same order), its whole model for the final latency; null or missing: not measured.
  std::vector<const graph::Graph*> models;
  // Candidates re-measured alone per task and setup (its `ranking_top` best in the run among
  // them); 0: off.
  int distortion_samples = 8;
  uint64_t distortion_seed = 1;
  int ranking_top = 3;  // the k of top-k overlap, and the best candidates always re-measured
  // The whole experiment is run this often; repetition r > 0 seeds each job's tuner with
  // seed + r x kRepetitionSeedStride and suffixes its job ids with ".r<r>".
  int repetitions = 1;
  int latency_runs = 20;  // 0: off
  double latency_min_seconds = 1.0;
  bool simulate = true;
  // How the jobs' candidates were measured: the time-bounded part of the simulated measure stages.
  SimMeasure sim_measure;
};

inline constexpr uint64_t kRepetitionSeedStride = 1000;

// The job id of a job of a setup and repetition: "<id>@<setup>", then ".r<rep>" after the first.
std::string SetupJobId(const std::string& job_id, const std::string& setup, int repetition);

// The setup of that name in that repetition; nullptr when it was not run.
const SetupResult* FindSetup(const ExperimentResult& result, const std::string& setup,
                             int repetition = 0);

// Runs `jobs` under every setup ("dedicated" or a policy name), options.repetitions times. Each
// setup's job ids are SetupJobId and transfer is off, so no setup learns from another's records.
absl::StatusOr<ExperimentResult> RunExperiment(const std::vector<engine::EngineJob>& jobs,
                                               const std::vector<std::string>& setups,
                                               const RunnerOptions& options,
                                               tune::RecordStore* store);

// Fills the simulator check of `result` from its setups' traces, per repetition (the dedicated
// run's when there is one, else the repetition's first setup's). Called by RunExperiment when
// options.simulate.
void CheckWithSimulator(const RunnerOptions& options, ExperimentResult& result);

// Metrics of one setup from its run (makespan, utilizations, lower bound, device-hours, per-job
// rows). `alone_runs` (dedicated) are the jobs' own runs, merged into one timeline.
SetupResult SummarizeShared(const std::string& setup, const engine::EngineResult& run);
SetupResult SummarizeDedicated(const std::vector<engine::EngineResult>& alone_runs);

// What report.html says about where the results came from.
struct ReportContext {
  std::string name = "experiment";
  std::string spec_text;  // the YAML as given
  std::string command;    // how it was run
  std::string machine;    // e.g. "2 cores; device cpu:1; builds on core 0"
  std::vector<int> device_cores;
};

// The charts of one report share a time axis: the longest setup run, in seconds.
double GanttAxisEnd(const ExperimentResult& result);
// "gantt-<setup>.svg" for the first repetition, "gantt-<setup>-r<rep>.svg" after it.
std::string GanttFileName(const SetupResult& setup);
// "<name>: <setup>", with "(repetition r of n)" when there are several.
std::string GanttTitle(const std::string& name, const SetupResult& setup, int repetitions);

// Writes into DIR (created): results.csv (one row per setup, repetition and job), results.json,
// trace.json (trace.h), gantt-<setup>.svg (the first repetition's; later ones
// gantt-<setup>-r<rep>.svg), simulation.csv and sim.yaml (when simulated), service.csv (when run
// through the service), report.html.
absl::Status WriteResults(const ExperimentResult& result, const std::string& dir,
                          const ReportContext& context = {});

// One count of a scale sweep (ExperimentSpec::job_counts): the experiment with its first `jobs`
// jobs, written into DIR/<dir>/.
struct ScaleRun {
  int jobs = 0;
  std::string dir;  // "jobs-4"
  ExperimentResult result;
};

// The sweep's summary in DIR: results.json ("runs": each count's claims, as in its own
// results.json) and report.html (per count the setups' figures and the claims' verdicts side by
// side, charts of makespan and tuned-kernel quality against the job count, links to each count's
// report). Each count's own results are written by WriteResults into its directory.
absl::Status WriteScaleSummary(const std::vector<ScaleRun>& runs, const std::string& dir,
                               const ReportContext& context = {});

}  // namespace loom::experiment
