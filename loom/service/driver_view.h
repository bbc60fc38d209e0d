// Read-only snapshots of the daemon's state for the web view and /metrics (http_server.h,
// http_pages.h): JobDriver::View() copies what they draw under the driver's lock and returns, so a
// slow HTTP client never holds the lock or the scheduler loop. Plain data, no behaviour.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "loom/records/record.h"
#include "loom/v1/agent.pb.h"
#include "loom/v1/jobs.pb.h"

namespace loom::service {

// One stage that ran (or runs) on an agent: a bar of the devices page's Gantt chart.
struct StageSpan {
  std::string job_id;
  int task = 0;
  v1::StageKind kind = v1::STAGE_KIND_UNSPECIFIED;
  std::string agent_id;
  std::string device;  // the device's name ("cpu:0") for a stage on a device; empty: CPU slots
  int cpu_slots = 0;
  absl::Time start = absl::UnixEpoch();
  absl::Time end = absl::UnixEpoch();  // while running: the snapshot's time
  bool running = false;
};

struct AgentView {
  std::string id;
  std::string hostname;
  bool alive = false;
  bool flagged = false;
  int cpu_slots = 0;  // general slots plus those its devices lend
  int cpu_slots_used = 0;
  std::vector<std::string> devices;  // names, in registration order
  absl::Time last_seen = absl::UnixEpoch();
};

// Counts of observations at or below each upper bound (Prometheus' cumulative buckets), with the
// total count and sum.
struct Histogram {
  std::vector<double> bounds;
  std::vector<int64_t> cumulative;  // one per bound
  int64_t count = 0;
  double sum = 0;
};
// `values` into a histogram over `bounds` (ascending).
Histogram MakeHistogram(const std::vector<double>& values, std::vector<double> bounds);

// The model's latency estimate from the best kernel of each task so far (best median cost x the
// task's node count, summed; kernels only, as the driver's estimate at the end of a job).
// `complete` is false while a task that is not skipped has no successful trial yet.
// TODO(issue 21): the stats branch's service/job_progress.h (ComputeJobProgress, which fills
// v1::Job's best_latency_ms and eta_seconds) owns this figure; once it is in main the web view
// reads those fields and this goes.
struct BestLatency {
  double ms = 0;
  bool complete = false;
};

struct ViewOptions {
  // Finished stages older than this (before the snapshot's time) are left out of `stages`.
  absl::Duration history = absl::Minutes(10);
  // Whether `jobs` (and their goals and best latencies) are filled; /metrics needs only
  // `jobs_by_state`, which is cheap with thousands of jobs.
  bool include_jobs = true;
};

struct DriverView {
  absl::Time now = absl::UnixEpoch();
  bool running = false;  // the scheduler loop runs (Start() called, Stop() not yet)
  // The jobs the caller may see (ended ones included), in submission order, and each one's
  // latency goal (ms, 0: none) by job id.
  std::vector<v1::Job> jobs;
  std::map<std::string, double> latency_goal_ms;
  std::map<std::string, BestLatency> best_latency;  // by job id
  std::map<v1::JobState, int64_t> jobs_by_state;    // of the jobs the caller may see
  // Daemon-wide (admins only; empty for other callers).
  std::vector<AgentView> agents;
  std::vector<StageSpan> stages;  // finished within `history`, then the running ones
  // Stages waiting in the scheduler's queue by resource class ("cpu", "device:<target key>").
  std::map<std::string, int64_t> queued_by_class;
  std::map<std::string, int64_t> queued_by_kind;  // the same stages by kind ("build")
  // Stages that ended since the daemon started, by kind ("measure") and how they ended
  // ("done", "failed", "revoked").
  std::map<std::pair<std::string, std::string>, int64_t> stages_ended;
  int64_t grants_total = 0;
  int64_t records_written = 0;     // records stored for the jobs this daemon holds
  int64_t measurement_errors = 0;  // error trials of those jobs
  Histogram queue_wait_seconds;
  Histogram dispatch_seconds;
  v1::ServerStats stats;
};

// What the one-job page draws: the job, its records (every trial, failed ones included, in the
// order they were stored) and its stages' time by kind.
struct JobDetail {
  v1::Job job;
  double latency_goal_ms = 0;
  BestLatency best_latency;
  std::vector<tune::Record> records;
  std::map<std::string, double> stage_seconds;  // by kind, from the stages this daemon saw
  std::map<std::string, int64_t> stage_count;
};

}  // namespace loom::service
