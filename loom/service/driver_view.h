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

struct ViewOptions {
  // Finished stages older than this (before the snapshot's time) are left out of `stages`.
  absl::Duration history = absl::Minutes(10);
  // Whether `jobs` (with their progress figures and goals) are filled; /metrics needs only
  // `jobs_by_state`, which is cheap with thousands of jobs.
  bool include_jobs = true;
  // At most this many jobs, the newest (0: all); DriverView::jobs_not_shown counts the others.
  int max_jobs = 0;
};

struct DriverView {
  absl::Time now = absl::UnixEpoch();
  bool running = false;  // the scheduler loop runs (Start() called, Stop() not yet)
  // The jobs the caller may see (ended ones included), in submission order, with their progress
  // figures set as the gRPC replies carry them (job_progress.h: trials done of total, rate, ETA,
  // best latency so far), and each one's latency goal (ms, 0: none) by job id.
  std::vector<v1::Job> jobs;
  std::map<std::string, double> latency_goal_ms;
  std::map<v1::JobState, int64_t> jobs_by_state;  // of the jobs the caller may see
  int64_t jobs_not_shown = 0;  // visible jobs left out of `jobs` by ViewOptions::max_jobs
  // Daemon-wide (admins only; empty for other callers).
  std::vector<AgentView> agents;
  std::vector<StageSpan> stages;  // finished within `history`, then the running ones
  // Stages waiting for resources by kind ("build"); by resource class: stats.queues.
  std::map<std::string, int64_t> queued_by_kind;
  // Stages that ended since the daemon started, by kind ("measure") and how they ended
  // ("done", "failed", "revoked").
  std::map<std::pair<std::string, std::string>, int64_t> stages_ended;
  int64_t records_written = 0;     // records stored for the jobs this daemon holds
  int64_t measurement_errors = 0;  // error trials of those jobs
  Histogram queue_wait_seconds;
  Histogram dispatch_seconds;
  // What GetStats returns (JobDriver::Stats): the scheduler's own figures (grants and the grant
  // rate, each device's leased time and utilization since its agent registered, ready queues),
  // agents by state, jobs, the policy.
  v1::ServerStats stats;
};

// What the one-job page draws: the job, its records (every trial, failed ones included, in the
// order they were stored) and its stages' time by kind.
struct JobDetail {
  v1::Job job;  // with its progress figures, as in DriverView::jobs
  double latency_goal_ms = 0;
  std::vector<tune::Record> records;
  std::map<std::string, double> stage_seconds;  // by kind, from the stages this daemon saw
  std::map<std::string, int64_t> stage_count;
};

}  // namespace loom::service
