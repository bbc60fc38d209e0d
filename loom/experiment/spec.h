// The experiment spec (`loom experiment SPEC.yaml`): which tuning jobs to run and under which
// setups (each job alone, uncontrolled, interleaved, predictive), on which device layout. Parsed
// strictly: an unknown key is an error naming its path. Called by the experiment runner's CLI.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/search/tuner_defaults.h"

namespace loom::experiment {

struct ExperimentJobSpec {
  std::string model;           // zoo:NAME or an .onnx path
  std::vector<int64_t> tasks;  // task indices (as 'loom tasks' lists them); empty: all
  int64_t trials = 16;         // per task
  // Unset: the tuning defaults of every entry point (`loom tune`, `loom submit`, the daemon).
  int batch_size = search::kDefaultBatchSize;
  std::string tuner = std::string(search::kDefaultTunerKind);
  uint64_t seed = 0;
};

struct ExperimentSpec {
  std::string name = "experiment";
  std::vector<ExperimentJobSpec> jobs;
  // "dedicated" (each job alone on the machine, one after another) and the policies
  // "uncontrolled", "interleaved", "predictive", "sequential".
  std::vector<std::string> setups = {"dedicated", "uncontrolled", "interleaved", "predictive"};
  // The device every job tunes for and measures on: "cpu" (this CPU), "cuda" (the GPU's own
  // architecture) or "cuda:sm_XY" (tune::LocalMachineOptions::target). The experiment checks the
  // device before any job starts, so a CUDA spec on a machine without a GPU fails in one line.
  std::string target = "cpu";
  // cuda only: the GPU, "cuda:N"; empty: cuda:0.
  std::string device;
  // The measurement device's cores (cpu), or the core that launches kernels (cuda). Empty: the
  // last core.
  std::vector<int> device_cores;
  int cpu_slots = 0;    // 0: one per core outside the device
  int build_slots = 0;  // 0: the CPU slots
  // How every measurement of the experiment is taken (tuning, re-measures): tune::MeasureOptions.
  int min_repeat_ms = 50;
  int repeat = 3;
  double run_timeout_s = 10;
  // Distortion and ranking fidelity: after each setup, up to this many of each task's measured
  // candidates (its `ranking_top` best in the run and a seeded choice of the others) are measured
  // again alone on the idle device. 0: off.
  int distortion_samples = 8;
  uint64_t distortion_seed = 1;
  int ranking_top = 3;  // the k of top-k overlap (cut to distortion_samples)
  // The whole experiment (every setup) is run this often; figures get 95% confidence intervals
  // and the claims' verdicts need at least 2.
  int repetitions = 1;
  // Final latency: each job's model compiled with its best records and timed alone on the device
  // cores, median over at least `latency_runs` runs lasting at least `latency_min_seconds`.
  // latency_runs 0: off.
  int latency_runs = 20;
  double latency_min_seconds = 1.0;
  // Feed the stage traces to the simulator and compare its makespan per policy.
  bool simulate = true;
  // A scale sweep: the experiment is run once per count with the first N jobs (each count's
  // results in DIR/jobs-N/, a summary in DIR). Empty: once, with every job.
  std::vector<int> job_counts;
};

// kInvalidArgument naming the key path on unknown keys, bad values or no jobs.
absl::StatusOr<ExperimentSpec> ParseExperimentSpec(std::string_view yaml);
absl::StatusOr<ExperimentSpec> LoadExperimentSpec(const std::string& path);

}  // namespace loom::experiment
