// The experiment through the service: for each setup, starts real `loom serve` and `loom agent`
// processes with the spec's device layout, submits the spec's jobs through the gRPC client and
// records each setup's makespan, to compare with the embedded engine's (experiment/runner.h).
// Called by `loom experiment --through-service` (cli/experiment_command.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/experiment/spec.h"

namespace loom::experiment {

struct ServiceJobResult {
  std::string name;
  std::string job_id;  // the daemon's ("j2"); empty when the submission was refused
  // "succeeded", "failed", "cancelled", "rejected" (submission refused) or "unfinished" (the
  // setup ended before the job: timeout or a process lost).
  std::string state;
  // "dedicated": its own run (submission to end); the shared setups: from the setup's first
  // submission to its end. As SetupJobResult::seconds.
  double seconds = 0;
  int64_t records = 0;
  double cpu_seconds = 0;  // stage time on CPU slots, from the daemon's Job
  double device_seconds = 0;
  std::string error;  // empty when it succeeded
};

struct ServiceSetupResult {
  std::string setup;
  std::string policy;  // the daemon's --policy ("dedicated" runs `sequential`, one job at a time)
  // "dedicated": the sum of the jobs' own runs; the others: first submission to last end.
  double makespan_s = 0;
  std::vector<ServiceJobResult> jobs;
  // Why the setup did not finish (a process died, timeout); empty when every job ended. Jobs
  // that failed on their own say so in their rows, not here.
  std::string error;
  std::string log_dir;  // serve.log, agent.log, state and cache of this setup
};

struct ServiceRunnerOptions {
  // The `loom` binary to start as `loom serve` and `loom agent`.
  std::string loom_binary;
  // Each setup gets WORK_DIR/<setup>/ (state, fresh kernel cache, logs); created.
  std::string work_dir;
  // The agent's layout, as the embedded engine's MachineLayout: the device's cores (consecutive,
  // `--device cpu:FIRST-LAST`), the CPU slots on the other cores, build slots per build stage.
  std::vector<int> device_cores;
  int cpu_slots = 1;
  int build_slots = 1;
  // `loom agent --lend-device-cores` (else --no-lend-device-cores): the device's cores run CPU
  // stages between measurements (the embedded engine's MachineLayout::device_shares_cores).
  bool lend_device_cores = true;
  // SubmitJobRequest.measure of every job.
  int min_repeat_ms = 50;
  int repeat = 3;
  double run_timeout_s = 10;
  absl::Duration start_timeout = absl::Seconds(30);  // serve listening, agent registered
  absl::Duration setup_timeout = absl::Hours(2);     // per setup, all its jobs
  absl::Duration poll_interval = absl::Milliseconds(100);
  absl::Duration stop_grace = absl::Seconds(5);  // SIGTERM to SIGKILL
  std::function<void(const std::string& line)> on_note;
};

// The daemon policy a setup runs under: "dedicated" -> "sequential", a policy name -> itself;
// kInvalidArgument for anything else.
absl::StatusOr<std::string> ServicePolicyOfSetup(const std::string& setup);

// The jobs' display names: the model, "#<i+1>" appended to a repeated one (as the embedded run).
std::vector<std::string> ExperimentJobNames(const ExperimentSpec& spec);

// What RunThroughService checks before it starts anything (its errors below but the work
// directory's), so a caller can fail before a long embedded run.
absl::Status CheckServiceRun(const ExperimentSpec& spec, const ServiceRunnerOptions& options);

// Runs spec.jobs under every one of spec.setups, each setup on its own `loom serve` (port 0,
// its own state) and one `loom agent`; "dedicated" submits one job, waits for its end, then the
// next. The processes are stopped (SIGTERM, SIGKILL after stop_grace, then their process groups)
// before each setup's result is taken, whatever happened. Errors: kInvalidArgument for a bad
// setup, layout or job model; kNotFound when the binary is missing; kFailedPrecondition when the
// work directory cannot be made. A setup whose processes fail or time out is reported in its
// result (error) and the next setup still runs.
absl::StatusOr<std::vector<ServiceSetupResult>> RunThroughService(
    const ExperimentSpec& spec, const ServiceRunnerOptions& options);

}  // namespace loom::experiment
