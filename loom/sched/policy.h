// The scheduling policy interface: how the core orders ready stages and whether resources are
// leased exclusively. The Scheduler (scheduler.h) owns placement and leases and consults one
// Policy; implementations live beside this header (sequential_policy.cc, uncontrolled_policy.cc,
// interleaved_policy.cc, predictive_policy.cc) and are reached through MakePolicy().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/sched/types.h"

namespace loom::sched {

// A stage that just became ready (all dependencies done, or requeued).
struct ReadyStage {
  StageId stage = 0;
  JobId job = 0;
  StageKind kind = StageKind::kOther;
  bool uses_device = false;
  int cpu_slots = 0;
  std::optional<absl::Duration> estimate;
  absl::Time ready;
  int job_priority = 0;
  absl::Time job_submit;
};

// A stage that finished successfully, for policies that learn.
struct FinishedStage {
  JobId job = 0;
  StageKind kind = StageKind::kOther;
  bool uses_device = false;
  absl::Duration duration;
};

// Position of a ready stage among ready stages of jobs with equal priority: smaller runs first,
// ties broken by `secondary`, then by the order in which stages became ready.
struct OrderKey {
  double primary = 0.0;
  int64_t secondary = 0;
};

class Policy {
 public:
  virtual ~Policy() = default;

  virtual std::string_view Name() const = 0;

  // False only for `uncontrolled`: every ready stage starts at once, devices and CPU slots are
  // shared past their capacity. True: a device holds one stage at a time, CPU slots never
  // exceed capacity.
  virtual bool ExclusiveResources() const { return true; }

  // True for `sequential`: only the first unfinished job (by priority, submission time, id) may
  // run stages; every other job waits until it is closed and drained.
  virtual bool OneJobAtATime() const { return false; }

  // Called once each time a stage becomes ready; the key is fixed until the stage is granted
  // (policies that age waiting stages fold the ready time into the key).
  virtual OrderKey Order(const ReadyStage& stage) = 0;

  // Feedback after each successful completion, and when the scheduler forgets a job.
  virtual void OnFinished(const FinishedStage& stage) {}
  virtual void OnJobRemoved(JobId job) {}
};

// The names MakePolicy() accepts, in the order they are usually compared.
const std::vector<std::string_view>& PolicyNames();

// "sequential" | "uncontrolled" | "interleaved" | "predictive"; anything else is
// kInvalidArgument listing the names.
absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(std::string_view name);

// Factories for the implementations (one per .cc file).
std::unique_ptr<Policy> MakeSequentialPolicy();
std::unique_ptr<Policy> MakeUncontrolledPolicy();
std::unique_ptr<Policy> MakeInterleavedPolicy();
std::unique_ptr<Policy> MakePredictivePolicy();

}  // namespace loom::sched
