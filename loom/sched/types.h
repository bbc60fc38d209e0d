// The scheduler's resource and work model: hosts with CPU slots, devices, jobs, stage requests,
// leases (grants) and the events the core reports. Shared by sched/, sim/, the engine and the
// service; it knows resources, stages and durations, never tuning.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace loom::sched {

using HostId = int32_t;
using DeviceId = int32_t;
using JobId = int64_t;
using StageId = int64_t;
using LeaseId = int64_t;

inline constexpr DeviceId kNoDevice = -1;

// The step of a job a stage performs. The core treats kinds as opaque labels (policies may learn
// per-kind durations); the tuning loop uses propose -> build -> measure -> update.
enum class StageKind : uint8_t { kPropose, kBuild, kMeasure, kUpdate, kOther };
inline constexpr int kNumStageKinds = 5;
std::string_view StageKindName(StageKind kind);
absl::StatusOr<StageKind> ParseStageKind(std::string_view name);

struct HostSpec {
  std::string name;
  int cpu_slots = 1;  // general-purpose slots, not counting slots donated by devices
};

// A GPU, or pinned CPU cores used as a measurement target.
struct DeviceSpec {
  std::string name;
  std::string kind;  // e.g. "gpu", "cpu"
  HostId host = 0;
  // Host CPU slots this device lends to CPU stages while it is not leased. While a stage holds
  // the device, these slots are unavailable to anyone else (a core that measures never builds).
  int shares_cpu_slots = 0;
};

struct JobSpec {
  std::string name;
  std::string owner;
  int priority = 0;  // higher runs first
  absl::Time submit_time = absl::UnixEpoch();
};

// What a stage needs. A device need (kind or named device) places the stage on that device's
// host, and its cpu_slots are taken on that host; a CPU-only need may go to any host.
struct ResourceNeed {
  int cpu_slots = 0;
  std::string device_kind;      // one device of this kind, or empty
  DeviceId device = kNoDevice;  // a named device (overrides device_kind)
  bool NeedsDevice() const { return device != kNoDevice || !device_kind.empty(); }
};

struct StageRequest {
  JobId job = 0;
  StageKind kind = StageKind::kOther;
  ResourceNeed need;
  std::optional<absl::Duration> estimate;  // used for the lease deadline and by policies
  std::vector<StageId> after;              // stages that must complete first
};

// A lease: `stage` may run now on `host` (and `device`) using `cpu_slots` until `deadline`.
struct Grant {
  LeaseId lease = 0;
  StageId stage = 0;
  JobId job = 0;
  StageKind kind = StageKind::kOther;
  HostId host = 0;
  DeviceId device = kNoDevice;
  int cpu_slots = 0;
  int attempt = 1;  // 1 for the first try, 2 after one requeue, ...
  absl::Time submitted;
  absl::Time ready;  // when the last dependency completed (or it was requeued)
  absl::Time start;
  absl::Time deadline;
};

// Something the core decided on its own (not a grant): reported through TakeEvents().
struct StageEvent {
  enum class Type {
    kRequeued,   // a lease failed or expired; the stage waits for another try
    kFailed,     // the stage will never run (retries exhausted, infeasible, failed dependency)
    kCancelled,  // its job was cancelled; a running lease was revoked
  };
  Type type = Type::kFailed;
  StageId stage = 0;
  JobId job = 0;
  LeaseId lease = 0;  // 0 when the stage held no lease
  absl::Time time;
  std::string reason;
};
std::string_view StageEventTypeName(StageEvent::Type type);

// The outcome of trying to place one stage: granted somewhere, wait for resources to free up,
// or infeasible (no resource in the cluster can ever satisfy it).
class Decision {
 public:
  static Decision Place(HostId host, DeviceId device) { return Decision(kPlace, host, device, {}); }
  static Decision Wait(std::string reason = {}) {
    return Decision(kWait, -1, kNoDevice, std::move(reason));
  }
  static Decision Infeasible(std::string reason) {
    return Decision(kInfeasible, -1, kNoDevice, std::move(reason));
  }
  bool placed() const { return kind_ == kPlace; }
  bool waiting() const { return kind_ == kWait; }
  bool infeasible() const { return kind_ == kInfeasible; }
  HostId host() const { return host_; }
  DeviceId device() const { return device_; }
  const std::string& reason() const { return reason_; }

 private:
  enum Kind { kPlace, kWait, kInfeasible };
  Decision(Kind kind, HostId host, DeviceId device, std::string reason)
      : kind_(kind), host_(host), device_(device), reason_(std::move(reason)) {}
  Kind kind_;
  HostId host_;
  DeviceId device_;
  std::string reason_;
};

}  // namespace loom::sched
