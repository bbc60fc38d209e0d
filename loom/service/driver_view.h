// Read-only snapshots of the daemon's state for the web view and /metrics (http_server.h,
// http_pages.h): JobDriver::View() copies what they draw under the driver's lock and returns, so a
// slow HTTP client never holds the lock or the scheduler loop; JobDriver::SharedView() hands every
// admin reader the same snapshot, rebuilt at most once per kViewMaxAge, and SharedJobsView() the
// jobs page's, one per viewer. Plain data, no behaviour.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "loom/records/record.h"
#include "loom/v1/agent.pb.h"
#include "loom/v1/jobs.pb.h"

namespace loom::service {

// The Gantt history the driver keeps for the devices page: stages that ended within the last
// kGanttHistory (the page's longest window, ?minutes=60), at most kMaxGanttStages of them (about
// 3 MiB; at the 1,000-job load's 1,300 stages a second that is the last 15 s, at a real tuning
// job's few stages a second more than the hour), in chunks of kGanttChunk that snapshots share.
inline constexpr absl::Duration kGanttHistory = absl::Minutes(60);
inline constexpr size_t kMaxGanttStages = 20000;
inline constexpr size_t kGanttChunk = 256;
// JobDriver::SharedView: a snapshot is rebuilt when it is older than kViewMaxAge and the state
// changed since, or when it is older than kViewMaxStale (figures that move with time alone:
// grant rates, seconds since a heartbeat).
inline constexpr absl::Duration kViewMaxAge = absl::Seconds(1);
inline constexpr absl::Duration kViewMaxStale = absl::Seconds(10);
// The jobs page lists the newest this many jobs the caller may see (JobDriver::SharedJobsView;
// `loom jobs` and /api/jobs list all).
inline constexpr int kJobsPageJobs = 200;

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
  // Its build cache since it started, as its latest heartbeat reported (HeartbeatRequest).
  int64_t build_cache_hits = 0;
  int64_t build_cache_misses = 0;
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
// One more observation in `h` (O(buckets)).
void AddToHistogram(Histogram& h, double value);

struct ViewOptions {
  // Finished stages older than this (before the snapshot's time) are left out of `stages`.
  absl::Duration history = absl::Minutes(10);
  // Whether `jobs` (with their progress figures and goals) are filled; /metrics needs only
  // `jobs_by_state`, which is cheap with thousands of jobs.
  bool include_jobs = true;
  // At most this many jobs, the newest (0: all); DriverView::jobs_not_shown counts the others.
  int max_jobs = 0;
  // Whether an admin's view has the daemon-wide parts (agents, stages, queues, histograms,
  // `stats`); the jobs page and /api/jobs show only jobs.
  bool include_daemon = true;
};

struct DriverView {
  // The shared snapshots' number (JobDriver::SharedView, SharedJobsView: 1, 2, ... in the order
  // they were built, never reused): what a reader drew from one snapshot it may keep for every
  // reader of that snapshot. 0: a per-request View().
  int64_t version = 0;
  absl::Time now = absl::UnixEpoch();
  bool running = false;  // the scheduler loop runs (Start() called, Stop() not yet)
  // The jobs the caller may see (ended ones included), in submission order, with their progress
  // figures set as the gRPC replies carry them (job_progress.h: trials done of total, rate, ETA,
  // best latency so far), and each one's latency goal (ms, 0: none) by job id.
  std::vector<v1::Job> jobs;
  std::map<std::string, double> latency_goal_ms;
  std::map<v1::JobState, int64_t> jobs_by_state;  // of the jobs the caller may see
  int64_t jobs_not_shown = 0;  // visible jobs left out of `jobs` by ViewOptions::max_jobs
  // Jobs of `jobs` whose records this snapshot read from the record store for their progress
  // figures; a shared jobs snapshot reuses the previous one's for jobs whose record count did not
  // move (JobDriver::SharedJobsView).
  int64_t records_read = 0;
  // Daemon-wide (admins only; empty for other callers).
  std::vector<AgentView> agents;
  // Finished stages in end order, older than those in `stages`: sealed chunks of the driver's
  // history, shared between snapshots (never copied). Chunks may hold stages older than the
  // requested history: readers cut by time. ForEachStage visits these, then `stages`.
  std::vector<std::shared_ptr<const std::vector<StageSpan>>> ended_chunks;
  std::vector<StageSpan> stages;  // the newest finished ones (within `history`), then the running
  // Stages waiting for resources by kind ("build"); by resource class: stats.queues.
  std::map<std::string, int64_t> queued_by_kind;
  // Stages that ended since the daemon started, by kind ("measure") and how they ended
  // ("done", "failed", "revoked").
  std::map<std::pair<std::string, std::string>, int64_t> stages_ended;
  int64_t records_written = 0;     // records stored for the jobs this daemon holds
  int64_t measurement_errors = 0;  // error trials of those jobs
  // Failed trials stored since the daemon started, by tune::ErrorKindName ("compile", ...).
  std::map<std::string, int64_t> measurement_errors_by_kind;
  Histogram queue_wait_seconds;
  Histogram dispatch_seconds;
  // What GetStats returns (JobDriver::Stats): the scheduler's own figures (grants and the grant
  // rate, each device's leased time and utilization since its agent registered, ready queues),
  // agents by state, jobs, the policy.
  v1::ServerStats stats;
};

// Calls f(const StageSpan&) for every stage of `v`: the shared chunks, then `stages`.
template <typename F>
void ForEachStage(const DriverView& v, F&& f) {
  for (const auto& chunk : v.ended_chunks) {
    for (const StageSpan& s : *chunk) f(s);
  }
  for (const StageSpan& s : v.stages) f(s);
}

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
