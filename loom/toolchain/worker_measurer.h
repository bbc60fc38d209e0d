// What the CPU and the CUDA measurer share (local_measurer.cc, cuda_measurer.cc): one
// measurement at a time over one worker process (worker_process.h), started on demand (confined
// in a sandbox unless told otherwise), given each task once, and sent one candidate at a time
// under its run timeout. Each measurer keeps only what differs: its requests, what its worker's
// init answer means, and what a candidate's failure does to the worker. Internal to toolchain/.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {

// How a WorkerMeasurer runs its worker.
struct WorkerSettings {
  // The worker in messages about its protocol ("measure worker", "CUDA measure worker").
  std::string name;
  // The worker in messages about its start and confinement ("CUDA measure worker of device 0").
  std::string start_name;
  std::vector<std::string> command;  // argv
  const char* host_arg = "";         // the argument that makes a binary host the worker
  ConfineOptions confine{};
  ConfinePlan::Profile profile = ConfinePlan::Profile::kCpu;
  absl::Duration setup_timeout = absl::Seconds(120);
  // The run timeout is timeout + (repeat + 3) * min_repeat_ms.
  absl::Duration timeout = absl::Seconds(10);
  int32_t number = 1;
  int32_t repeat = 3;
  int32_t min_repeat_ms = 0;
};

// The settings a measurer's options (MeasureOptions, CudaMeasureOptions) give alike: the worker
// command (empty: this executable with `host_arg`), its confinement, the timeouts and repeats.
template <typename Options>
WorkerSettings WorkerSettingsFrom(const Options& o, const char* host_arg) {
  WorkerSettings s;
  s.command = o.worker_command.empty() ? std::vector<std::string>{"/proc/self/exe", host_arg}
                                       : o.worker_command;
  s.host_arg = host_arg;
  s.confine = o.confine;
  s.setup_timeout = o.setup_timeout;
  s.timeout = o.timeout;
  s.number = o.number;
  s.repeat = o.repeat;
  s.min_repeat_ms = o.min_repeat_ms;
  return s;
}

class WorkerMeasurer : public Measurer {
 public:
  // One result per candidate, each stamped with its config, time and measure_seconds; a
  // candidate whose build failed passes through with its error, the others go to
  // MeasureCandidate.
  std::vector<MeasureResult> Measure(const MeasureTask& task,
                                     const std::vector<BuildResult>& built) final;
  // Starts the worker when none runs and returns what it reported.
  absl::StatusOr<DeviceInfo> Probe() final;

 protected:
  explicit WorkerMeasurer(WorkerSettings settings) : settings_(std::move(settings)) {}

  // The task request sent before a task's first candidate (and again after a restart).
  virtual nlohmann::json TaskRequest(const MeasureTask& task) const = 0;
  // The init request; StartWorker adds the sandbox's plan to it.
  virtual nlohmann::json InitRequest() const = 0;
  // Reads the answer to init (a JSON object, confinement checked) into info_; an error stops
  // the worker and is what EnsureWorker returns.
  virtual absl::Status AcceptInit(const nlohmann::json& body) = 0;
  // Called at the start of each Measure call, with mu_ held.
  virtual void BeginBatch() {}
  // Measures one built candidate of `task` (`task_request`: TaskRequest(task)), with mu_ held.
  virtual MeasureResult MeasureCandidate(const MeasureTask& task,
                                         const nlohmann::json& task_request,
                                         const BuildResult& b) = 0;

  // A running worker that answered init, or why there is none: kUnavailable when it cannot start
  // or answer, the confinement's error, or AcceptInit's.
  absl::Status EnsureWorker();
  // Runs built candidate `b` on the running worker: loads the task when the worker holds
  // another, stages the artifact (`stage_error`: the start of the kRuntime message when it
  // cannot), sends the measure request (with the members of `extra`, an object or null) under the
  // run timeout and reads the answer into `r`. Returns the answer, or nullopt when `r` holds an
  // error from before the measure request.
  std::optional<WorkerReply> RunCandidate(const nlohmann::json& task_request, const BuildResult& b,
                                          const std::string& stage_error,
                                          const nlohmann::json& extra, MeasureResult& r);
  // Reaps a worker that announced it is ending, so the next candidate starts a fresh one.
  void StopWorker() { worker_.Stop(absl::Seconds(5)); }

  DeviceInfo info_;

 private:
  const WorkerSettings settings_;
  std::mutex mu_;                           // one measurement at a time
  std::unique_ptr<WorkerSandbox> sandbox_;  // confine.enabled: made at the first start
  WorkerProcess worker_;     // declared after the sandbox: stopped before its folders go
  std::string loaded_task_;  // the task request the running worker last prepared
};

}  // namespace loom::tune
