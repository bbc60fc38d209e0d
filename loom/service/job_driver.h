// The daemon's brain: holds every job and agent, turns each job into tuning rounds (propose ->
// build -> measure -> update per task, one stage at a time) submitted to a real sched::Scheduler,
// hands granted stages to agents (AcquireStages long poll), applies their results, and commits
// every change to the StateStore (records to the tune::RecordStore) before acknowledging it.
// Called by the gRPC handlers in server.cc; thread-safe (one mutex; long polls wait on it).
//
// Lifecycle: Create() (loads state: unfinished jobs resume, leases that were out are requeued)
// -> Start() (ticker thread: agent expiry, scheduling) -> RPC calls -> Stop().
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loom/base/clock.h"
#include "loom/ops/template.h"
#include "loom/sched/scheduler.h"
#include "loom/service/auth.h"
#include "loom/service/state_store.h"
#include "loom/tune/record_store.h"
#include "loom/v1/agent.pb.h"
#include "loom/v1/jobs.pb.h"

namespace loom::service {

struct DriverOptions {
  std::string policy = "interleaved";  // sched::MakePolicy name
  // An agent silent for this long is lost: its host goes offline, its leases are requeued.
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  absl::Duration max_acquire_wait = absl::Seconds(10);  // cap on AcquireStages' wait_ms
  int max_attempts = 3;                                 // tries per stage before the job fails
  // CPU slots a build stage asks for, capped at the largest agent's slots (general plus the
  // slots its devices lend). The embedded engine's default is all its CPU slots: start `loom
  // serve --build-slots N` with the agents' slots to compare with it.
  int build_slots = 2;
  int64_t max_model_bytes = 64 << 20;
  absl::Duration tick = absl::Milliseconds(50);
  bool log_to_stderr = true;  // structured key=value lines
};

// What WatchJob streams: the job now and the messages logged since the caller's version.
struct JobChange {
  v1::Job job;
  int64_t version = 0;
  std::vector<std::string> messages;
  bool ended = false;
};

class JobDriver {
 public:
  // Loads the state; `clock` (not owned) defaults to the real clock.
  static absl::StatusOr<std::unique_ptr<JobDriver>> Create(
      DriverOptions options, std::unique_ptr<StateStore> state,
      std::unique_ptr<tune::RecordStore> records, const base::Clock* clock = nullptr);
  ~JobDriver();

  void Start();
  // Stops the ticker and wakes every long poll. Idempotent.
  void Stop();

  // User calls. A job of another user is kNotFound to a non-admin (its existence is not
  // revealed); the agent role gets kPermissionDenied.
  absl::StatusOr<v1::Job> Submit(const Principal& who, const v1::SubmitJobRequest& request);
  absl::StatusOr<v1::ListJobsResponse> List(const Principal& who,
                                            const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> Get(const Principal& who, const std::string& job_id);
  absl::StatusOr<v1::Job> Cancel(const Principal& who, const std::string& job_id);
  absl::StatusOr<v1::JobResult> Result(const Principal& who, const std::string& job_id);
  absl::StatusOr<std::vector<std::string>> Logs(const Principal& who, const std::string& job_id,
                                                int tail);
  // Waits up to `timeout` for the job to change after `after_version` (returns at once when it
  // already has; version 0 always returns the current state).
  absl::StatusOr<JobChange> WaitForChange(const Principal& who, const std::string& job_id,
                                          int64_t after_version, absl::Duration timeout);
  absl::StatusOr<v1::ServerStats> Stats(const Principal& who);

  // Agent calls (role agent or admin).
  absl::StatusOr<v1::RegisterResponse> Register(const Principal& who,
                                                const v1::RegisterRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const Principal& who,
                                                  const v1::HeartbeatRequest& request);
  // Blocks until stages are granted to the agent or the wait ends. kNotFound for an unknown or
  // lost agent (register again).
  absl::StatusOr<v1::AcquireStagesResponse> Acquire(const Principal& who,
                                                    const v1::AcquireStagesRequest& request);
  absl::StatusOr<v1::ReportStageResponse> Report(const Principal& who,
                                                 const v1::ReportStageRequest& request);

 private:
  struct Agent {
    std::string id;
    std::string hostname;
    int cpu_slots = 0;   // general slots
    int lent_slots = 0;  // slots its devices lend to CPU stages while they do not measure
    sched::HostId host = 0;
    std::vector<v1::DeviceInfo> devices;
    std::vector<sched::DeviceId> device_ids;
    absl::Time last_seen;
    bool alive = true;
    std::deque<v1::StageRequest> outbox;      // granted, not yet delivered
    absl::flat_hash_set<std::string> leases;  // held (granted, not ended)
  };
  struct Lease {
    std::string id;
    sched::LeaseId sched_lease = 0;
    int64_t job = 0;
    int task = 0;
    v1::StageKind kind = v1::STAGE_KIND_UNSPECIFIED;
    sched::StageKind sched_kind = sched::StageKind::kOther;
    std::string agent_id;
    std::string device_target_key;  // of the granted device (measure stages)
    int cpu_slots = 0;
    bool uses_device = false;
    absl::Time granted;
    bool delivered = false;
  };
  struct Job {
    int64_t num = 0;  // id "j<num>"
    JobRow row;
    std::vector<TaskRow> tasks;
    sched::JobId sjob = 0;
    bool stage_live = false;  // a stage is in the scheduler (queued or leased)
    sched::StageId stage = 0;
    std::string lease;    // the live lease of that stage, if granted
    std::string waiting;  // why no stage is submitted (shown in status)
    int64_t version = 1;
    std::deque<std::pair<int64_t, std::string>> recent;     // (version, message), for watchers
    std::vector<std::unique_ptr<ops::Template>> templates;  // per task, built on demand
  };

  JobDriver(DriverOptions options, std::unique_ptr<StateStore> state,
            std::unique_ptr<tune::RecordStore> records, const base::Clock* clock);
  absl::Status Load();
  void TickLoop();

  // All below: mu_ held.
  absl::Time Now() const { return clock_->Now(); }
  absl::StatusOr<Job*> FindVisible(const Principal& who, const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One scheduling pass: activate waiting jobs, grant, hand grants to agents, handle events.
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireAgents() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Prepares (target, templates, latency goal) and submits the job's next stage when it can.
  void Activate(Job& job, Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Prepare(Job& job, Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SubmitNext(Job& job, Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleEvents(Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Job& job, v1::JobState state, const std::string& reason, Mutation& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends a log line (state + watchers) and a structured stderr line.
  void Note(Job& job, const std::string& text, Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Commit(Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::StageRequest> MakeStage(Job& job, const Lease& lease, const Agent& agent,
                                             const sched::Grant& grant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<const ops::Template*> TemplateFor(Job& job, int task)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies a successful result to the task; records are appended (committed) here.
  absl::Status ApplyResult(Job& job, const Lease& lease, const v1::StageResult& result, Mutation& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndLease(const std::string& lease_id, Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Job ToProto(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::ResourceUse> Resources() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsSimulated(const Job& job) const { return job.row.spec.has_simulated(); }
  int CurrentTask(const Job& job) const;
  void LogKv(absl::string_view event, const std::vector<std::pair<std::string, std::string>>& kv);

  const DriverOptions options_;
  const base::Clock* clock_;
  base::RealClock real_clock_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<tune::RecordStore> records_;

  absl::Mutex mu_;
  std::unique_ptr<sched::Scheduler> scheduler_ ABSL_GUARDED_BY(mu_);
  int64_t epoch_ = 0;  // daemon starts on this state file; prefixes agent and lease ids
  int64_t next_job_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_agent_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<int64_t, std::unique_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::set<int64_t> active_ ABSL_GUARDED_BY(mu_);   // queued or running
  std::set<int64_t> pending_ ABSL_GUARDED_BY(mu_);  // active without a live stage
  absl::flat_hash_map<std::string, std::unique_ptr<Agent>> agents_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Lease> leases_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<sched::LeaseId, std::string> lease_by_sched_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<sched::StageId, int64_t> stage_job_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<sched::DeviceId, std::string> device_agent_ ABSL_GUARDED_BY(mu_);
  std::vector<double> dispatch_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<double> queue_wait_ms_ ABSL_GUARDED_BY(mu_);
  int64_t requeued_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;
  absl::Mutex log_mu_;
};

}  // namespace loom::service
