// Schedule metrics computed from what ran: per-resource busy timelines and utilization, queue
// waits, per-job completion time and slowdown, makespan, Jain fairness, and the makespan lower
// bound. Callers: sim/ (reports), tests, and later the engine and service dashboards.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "loom/sched/types.h"
#include "nlohmann/json.hpp"

namespace loom::sched {

struct ClusterInfo {
  std::vector<HostSpec> hosts;
  std::vector<DeviceSpec> devices;
};

// One stage execution that completed.
struct StageRecord {
  StageId stage = 0;
  JobId job = 0;
  StageKind kind = StageKind::kOther;
  HostId host = 0;
  DeviceId device = kNoDevice;
  int cpu_slots = 0;  // slots the stage itself used (a device's shared slots are added here)
  absl::Time ready;
  absl::Time start;
  absl::Time end;
  // Work the stage needs alone on its resource (end - start without interference). The lower
  // bound and job isolation times use it, so they are the same for every policy.
  absl::Duration work;
  std::vector<StageId> after;  // logical dependencies (earlier stage ids)
};

struct JobRecord {
  JobId job = 0;
  std::string name;
  absl::Time submit;
};

struct BusyInterval {
  double start_s = 0;  // seconds since the first job's submission
  double end_s = 0;
  JobId job = 0;
  StageId stage = 0;
  StageKind kind = StageKind::kOther;
  int slots = 0;
};

struct ResourceTimeline {
  std::string name;  // "host/gpu0" for devices, "host" for CPU slots
  bool is_device = false;
  int capacity = 1;                     // slots (hosts) or 1 (devices)
  std::vector<BusyInterval> intervals;  // by start time
  double busy_s = 0;       // devices: union of busy time; hosts: slot-seconds / capacity
  double utilization = 0;  // busy_s / makespan
};

struct JobMetrics {
  JobId job = 0;
  std::string name;
  double submit_s = 0;
  double completion_s = 0;  // last end - submission
  double isolated_s = 0;    // the job's own critical path of work (its time alone)
  double slowdown = 0;      // completion / isolated
};

struct LowerBound {
  double device_s = 0;  // max over device kinds of total device work / devices of that kind
  double cpu_s = 0;     // total CPU slot-seconds / total CPU slots
  double chain_s = 0;   // longest dependency chain (with submission offsets)
  double value() const;
};

struct Metrics {
  double makespan_s = 0;
  LowerBound bound;
  double device_utilization = 0;  // mean over devices
  double cpu_utilization = 0;     // slot-seconds of work / (total slots * makespan)
  double mean_wait_s = 0;         // start - ready
  double max_wait_s = 0;
  double mean_job_s = 0;
  double max_job_s = 0;
  double mean_slowdown = 0;
  double max_slowdown = 0;
  double jain_fairness = 1;                 // over per-job 1 / slowdown
  std::vector<ResourceTimeline> resources;  // devices first, then hosts
  std::vector<JobMetrics> jobs;
};

// Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one takes all.
// Empty input or all zeros -> 1.
double JainIndex(const std::vector<double>& xs);

LowerBound ComputeLowerBound(const ClusterInfo& cluster, const std::vector<JobRecord>& jobs,
                             const std::vector<StageRecord>& records);

Metrics ComputeMetrics(const ClusterInfo& cluster, const std::vector<JobRecord>& jobs,
                       const std::vector<StageRecord>& records);

// Summary figures (no timelines) as JSON; timelines with `with_timelines`.
nlohmann::json MetricsToJson(const Metrics& m, bool with_timelines = false);

}  // namespace loom::sched
