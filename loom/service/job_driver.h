// The daemon's brain: holds every job and agent, turns each job into tuning rounds (propose ->
// build -> measure -> update per task, one stage at a time) submitted to a real sched::Scheduler,
// hands granted stages to agents (AcquireStages long poll), applies their results, and commits
// every change to the StateStore (records to the tune::RecordStore) before acknowledging it.
// Called by the gRPC handlers in server.cc; thread-safe (one mutex; long polls wait on it).
//
// Agents are known by their credential (Principal::user of an agent token): one live
// registration per credential, the agent id of every request must be its own, and a report that
// is forged (request_checks.h) or for a stage it does not hold is refused and flags the
// credential for good (stored in the state): its stages are requeued elsewhere.
//
// Lifecycle: Create() (loads state: unfinished jobs resume, leases that were out are requeued)
// -> Start() (ticker thread: agent expiry, scheduling) -> RPC calls -> Stop().
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loom/base/clock.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "loom/sched/scheduler.h"
#include "loom/service/auth.h"
#include "loom/service/driver_view.h"
#include "loom/service/job_progress.h"
#include "loom/service/request_checks.h"
#include "loom/service/state_store.h"
#include "loom/tune/task_session.h"
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
  // Constant folding of an uploaded model: the largest tensor and the total it may build (bytes),
  // checked before allocating (frontend::LoadOptions).
  int64_t max_fold_bytes = 64 << 20;
  int64_t max_fold_total_bytes = 256 << 20;
  // Where uploads are written, each into a fresh private folder; empty: $TMPDIR or /tmp.
  std::string upload_dir{};
  MeasureCaps measure_caps{};
  // AcquireStages calls one agent may have waiting at once (each holds a server thread).
  int max_polls_per_agent = 2;
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
  // What ComputeJobProgress needs of a visible job (read-only): its tasks with this job's records
  // of each (read outside the lock; none are read for a job without records), when it started,
  // whether it ended, and the driver's clock now. Same visibility errors as Get. Implemented in
  // job_driver_view.cc.
  absl::StatusOr<ProgressInput> ProgressInputOf(const Principal& who, const std::string& job_id);
  // Sets the progress figures of `job`, one this driver showed `who`: ComputeJobProgress over
  // ProgressInputOf (job_progress.h). Takes the lock; implemented in job_driver_view.cc.
  absl::Status FillProgress(const Principal& who, v1::Job& job);

  // Read-only snapshots for the web view and /metrics (driver_view.h), copied under the lock.
  // Users get their own jobs; admins every job and the daemon-wide parts; agents
  // kPermissionDenied.
  absl::StatusOr<DriverView> View(const Principal& who, const ViewOptions& options);
  // The daemon-wide snapshot that every admin reader shares (/metrics, the devices and scheduler
  // pages): View(admin, {.history = kGanttHistory, .include_jobs = false}), rebuilt when it is
  // older than kViewMaxAge and the state changed since (a commit or a heartbeat), or older than
  // kViewMaxStale; otherwise the same snapshot again. A rebuild copies no history (the Gantt's
  // chunks are shared) and walks no job: its lock time is O(agents + running stages + ready
  // jobs). kPermissionDenied for non-admins.
  absl::StatusOr<std::shared_ptr<const DriverView>> SharedView(const Principal& who);
  // The jobs page's snapshot: the newest kJobsPageJobs jobs `who` may see with their progress
  // figures (View(who, {.history = 0, .max_jobs = kJobsPageJobs, .include_daemon = false})),
  // shared by every reader who sees the same jobs (all admins; each user) and rebuilt under
  // SharedView's rule. A rebuild takes the lock once for every job's progress inputs and reads
  // from the record store only the jobs whose record count moved since the viewer's previous
  // snapshot (DriverView::records_read); the others' records are kept from it. kPermissionDenied
  // for agents.
  absl::StatusOr<std::shared_ptr<const DriverView>> SharedJobsView(const Principal& who);
  // One job with its records (read from the record store outside the lock); kNotFound as Get.
  absl::StatusOr<JobDetail> Detail(const Principal& who, const std::string& job_id);
  // Whether the scheduler loop runs (Start() was called, Stop() not yet): the daemon's readiness.
  bool Running();

  // Agent calls: an agent token, or anyone when the daemon has no tokens file (who.anonymous).
  // kPermissionDenied for other roles, a flagged credential, or an agent id that is not the
  // caller's (without tokens: every call but Register must show the registration's secret,
  // RegisterResponse.session); kNotFound for an unknown or lost agent (register again);
  // kAlreadyExists when the credential's agent is registered and alive; kFailedPrecondition for
  // another Loom version.
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
  // The agent stops: it is taken out at once (its host offline, every lease it holds requeued, as
  // for a lost agent) and its credential is free to register again. kPermissionDenied for another
  // credential's agent id, kNotFound for an agent not registered, kInvalidArgument for a reason
  // over 256 bytes or with control characters.
  absl::StatusOr<v1::DeregisterResponse> Deregister(const Principal& who,
                                                    const v1::DeregisterRequest& request);

 private:
  struct Agent {
    std::string id;
    // Its credential's name (an agent token's NAME); empty for agents of an --insecure daemon.
    std::string identity;
    std::string hostname;
    // The secret Register returned (RegisterResponse.session); an anonymous caller must show it.
    std::string session;
    int cpu_slots = 0;   // general slots
    int lent_slots = 0;  // slots its devices lend to CPU stages while they do not measure
    sched::HostId host = 0;
    std::vector<v1::DeviceInfo> devices;
    std::vector<sched::DeviceId> device_ids;
    absl::Time last_seen;
    bool alive = true;
    std::deque<v1::StageRequest> outbox;      // granted, not yet delivered
    absl::flat_hash_set<std::string> leases;  // held (granted, not ended)
    std::vector<std::string> revoked;         // delivered leases to stop, for its next poll
    int polls = 0;                            // AcquireStages calls waiting now
    bool flagged = false;
    // Its build cache counters, as its latest heartbeat reported them (CheckBuildCacheCounters).
    int64_t build_cache_hits = 0;
    int64_t build_cache_misses = 0;
    // What its records say measured them: the identity, or "unauthenticated:<hostname>".
    std::string RecordName() const {
      return identity.empty() ? absl::StrCat("unauthenticated:", hostname) : identity;
    }
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
    std::string device_name;        // of the granted device, for the web view's Gantt
    double device_peak_flops = 0;   // PeakFlopsBound of the granted device
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
    // Per task with a stage in the scheduler (queued or leased): that stage and its live lease,
    // if granted. A job that spreads (SubmitJobRequest.spread) has up to `spread` tasks here.
    struct LiveStage {
      sched::StageId stage = 0;
      std::string lease;
    };
    std::map<int, LiveStage> live;
    std::string waiting;  // why a stage is not submitted (shown in status)
    int64_t version = 1;
    std::deque<std::pair<int64_t, std::string>> recent;     // (version, message), for watchers
    std::vector<std::unique_ptr<ops::Template>> templates;  // per task, built on demand
    // Per task of a real (not simulated) job, made on demand (SessionFor): the task's
    // tune::TaskSession, the one owner of its rounds' rules; its tuner runs in the agents'
    // propose and update stages (tuner_elsewhere), restored from the state each stage carries.
    std::vector<std::unique_ptr<tune::TaskSession>> sessions;
    // Per task: the round's measurements, sent with its update stage (a restart re-measures the
    // round: the session restarts a round in flight at its build).
    std::vector<v1::MeasureOutput> measured;
    // Per task: the agent that proposed the round in flight (its id), flagged when the round
    // turns out not to be the session tuner's (StageResult.session_refused).
    std::vector<std::string> proposers;
    // Per task of a real job under a budget: the best cost after each of its session's rounds
    // (+inf while none succeeded), the task scheduler's input (TasksToRun). Filled when the
    // session syncs its row, or read once from the row's saved session state.
    mutable std::vector<std::optional<std::vector<double>>> round_bests;
  };

  JobDriver(DriverOptions options, std::unique_ptr<StateStore> state,
            std::unique_ptr<tune::RecordStore> records, const base::Clock* clock);
  absl::Status Load();
  void TickLoop();

  // All below: mu_ held.
  absl::Time Now() const { return clock_->Now(); }
  absl::StatusOr<Job*> FindVisible(const Principal& who, const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The registered agent behind an agent call: the caller's credential's agent (whose id
  // `agent_id` must be, when given), or for an anonymous caller the agent of that id. `session`
  // (every agent call but Register): an anonymous caller must also show that registration's
  // secret, else kPermissionDenied; nullptr: not asked.
  absl::StatusOr<Agent*> FindAgent(const Principal& who, const std::string& agent_id,
                                   const std::string* session = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Refuses the report and flags its agent: no more work, its leases requeued, the credential
  // stored as flagged; logged and counted.
  void FlagAgent(Agent& agent, const std::string& reason, Mutation& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the agent's host offline and fails (requeues) every lease it holds.
  void DropAgent(Agent& agent, const std::string& why, Mutation& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails jobs whose device time has reached their limit (running stages included); the changes
  // go into `m` (the overload without commits them).
  void EnforceDeviceLimits() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnforceDeviceLimits(Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One scheduling pass: activate waiting jobs, grant, hand grants to agents, handle events.
  // Commits `m` (what the caller changed before, applied first) with the pass's changes in one
  // transaction.
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Pump(Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  // The task's session: restored from its row's saved state, else created (which loads the
  // job's earlier records of the task and, for transfer, other jobs' records). The row's phase,
  // counts, best and saved state follow the session (SyncTask).
  absl::StatusOr<tune::TaskSession*> SessionFor(Job& job, int task)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies the session's next stage, counts, best and saved state into the task's row.
  void SyncTask(Job& job, TaskRow& task, const tune::TaskSession& session);
  // ApplyResult for a real job: maps the agent's result to the session's Complete. A proposal or
  // tuner state that does not fit the session is kPermissionDenied (forged: honest agents run
  // the session's own tuner).
  absl::Status ApplySessionResult(Job& job, const Lease& lease, const v1::StageResult& result,
                                  std::string& note) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A session stage whose state did not restore (StageResult.session_refused): the round in
  // flight was not proposed by the session's tuner. Drops it (the session proposes again) and
  // flags the agent that proposed it. False when there is no such round to drop (the stage then
  // fails as any other).
  bool DropRefusedRound(Job& job, const Lease& lease, const std::string& why, Mutation& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies a successful result to the task; records are appended (committed) here.
  absl::Status ApplyResult(Job& job, const Lease& lease, const v1::StageResult& result, Mutation& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the lease. `revoke`: it did not end by a report, so its agent is told to stop it.
  void EndLease(const std::string& lease_id, Mutation& m, bool revoke = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What ProgressInputOf reads of a job under the lock: its ProgressInput without records, the
  // key each task's records are read under ("": none to read), and the job's record count.
  struct ProgressSource {
    ProgressInput input;
    std::vector<std::string> task_keys;
    std::string target_key;
    std::string record_key;
    int64_t records = 0;
  };
  ProgressSource ProgressSourceLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads src.input's records from the record store (outside the lock).
  absl::Status ReadProgressRecords(ProgressSource& src) ABSL_LOCKS_EXCLUDED(mu_);
  // The records a shared jobs snapshot gave each job it showed (by job id), with the job's record
  // count and target then: only what ComputeJobProgress reads of each (id, time, median cost,
  // error), so a kept job costs 40 bytes per trial, not a tune::Record's 300.
  struct KeptRecord {
    int64_t id = 0;
    double median_cost = 0;
    absl::Time timestamp;
    tune::ErrorKind error = tune::ErrorKind::kNone;
  };
  struct KeptRecords {
    int64_t records = 0;
    std::string target_key;
    std::vector<std::vector<KeptRecord>> tasks;
  };
  using ProgressCache = absl::flat_hash_map<std::string, KeptRecords>;
  // View(); with `cache` (a shared slot's), jobs whose record count and target are those kept
  // there reuse the kept records instead of reading them, and `cache` then holds this snapshot's.
  absl::StatusOr<DriverView> BuildView(const Principal& who, const ViewOptions& options,
                                       ProgressCache* cache) ABSL_LOCKS_EXCLUDED(mu_);
  // View()'s part copied under the lock (everything but the progress figures and `stats`), with
  // each job's progress inputs (`progress`, parallel to v.jobs).
  absl::Status ViewLocked(const Principal& who, const ViewOptions& options, DriverView& v,
                          std::vector<ProgressSource>& progress) ABSL_LOCKS_EXCLUDED(mu_);
  // A shared snapshot, the view_stamp_ it was built at, and the records its jobs' progress read.
  struct SharedSnapshot {
    std::shared_ptr<const DriverView> view;
    int64_t stamp = -1;
    ProgressCache progress;
  };
  // `slot`'s snapshot when it is fresh enough (SharedView's rule), else View(who, options) as
  // the slot's new snapshot, numbered (DriverView::version).
  absl::StatusOr<std::shared_ptr<const DriverView>> Shared(SharedSnapshot& slot,
                                                           const Principal& who,
                                                           const ViewOptions& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(view_mu_);
  // Keeps the ending lease as a StageSpan for View() (job_driver_view.cc).
  void RememberEnded(const Lease& lease, bool revoked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps jobs_by_state_ true: a job moved from `from` (UNSPECIFIED: a new job) to `to`.
  void CountJobState(v1::JobState from, v1::JobState to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts records just stored (records_written_, measurement_errors_by_kind_).
  void CountStoredRecords(const std::vector<tune::Record>& stored)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Folds the latencies recorded since the last call into the histograms.
  void FoldLatencies() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `queue_position`: a queued job's place when the caller has it (View numbers every queued job
  // in one pass); 0: counted here, a walk of the active jobs.
  v1::Job ToProto(const Job& job, int queue_position = 0) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether queued job `a` goes before `b`: priority (higher first), then submission order.
  static bool QueuedAhead(const Job& a, const Job& b) {
    return a.row.priority > b.row.priority || (a.row.priority == b.row.priority && a.num < b.num);
  }
  // The job `who` submitted earlier with `request`'s request id; nullptr when none (or no id).
  const Job* JobOfRequest(const Principal& who, const v1::SubmitJobRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK when `request` is the one `earlier` was submitted with; kAlreadyExists naming the job when
  // the request id was reused for another request.
  absl::Status SameSubmission(const Job& earlier, const v1::SubmitJobRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<v1::ResourceUse> Resources() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsSimulated(const Job& job) const { return job.row.spec.has_simulated(); }
  // The tasks whose next stage belongs in the scheduler now (tune::TasksToRun, the engine's rule
  // too): the tasks in the middle of a round, then tasks starting a round, until `spread` rounds
  // are in flight (a job with a budget: the task scheduler picks them, and the budget is checked
  // before each new round; without: the first live tasks in order). Empty, with nothing live: the
  // job is done.
  std::vector<int> TasksToRun(const Job& job) const;
  int Spread(const Job& job) const { return std::max(1, job.row.spec.spread()); }
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
  // Credential -> its current registration's id.
  absl::flat_hash_map<std::string, std::string> agent_of_identity_ ABSL_GUARDED_BY(mu_);
  // Flagged credentials and why (loaded from the state).
  absl::flat_hash_map<std::string, std::string> flagged_ ABSL_GUARDED_BY(mu_);
  int64_t reports_refused_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Lease> leases_ ABSL_GUARDED_BY(mu_);
  // (owner, SubmitJobRequest.request_id) -> the job it submitted: one entry per job submitted
  // with an id (64 bytes at most), rebuilt from the stored specs at Load.
  absl::flat_hash_map<std::pair<std::string, std::string>, int64_t> job_of_request_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<sched::LeaseId, std::string> lease_by_sched_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<sched::StageId, int64_t> stage_job_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<sched::DeviceId, std::string> device_agent_ ABSL_GUARDED_BY(mu_);
  std::vector<double> dispatch_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<double> queue_wait_ms_ ABSL_GUARDED_BY(mu_);
  int64_t requeued_ ABSL_GUARDED_BY(mu_) = 0;
  // The web view's Gantt history: ended stages in end order, in sealed immutable chunks of
  // kGanttChunk that snapshots share without copying, then the open chunk being filled. At most
  // kMaxGanttStages in all, none that ended more than kGanttHistory ago (driver_view.h).
  std::deque<std::shared_ptr<const std::vector<StageSpan>>> ended_chunks_ ABSL_GUARDED_BY(mu_);
  std::vector<StageSpan> ended_open_ ABSL_GUARDED_BY(mu_);
  size_t ended_in_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  // Counts of every ended stage, by (kind, outcome).
  std::map<std::pair<std::string, std::string>, int64_t> stages_ended_ ABSL_GUARDED_BY(mu_);
  // /metrics' figures, kept up to date as the state changes so that no snapshot walks the jobs
  // or the history: jobs by state, records stored and failed trials (loaded with the state, then
  // counted as records are stored), the latency histograms (folded from dispatch_ms_ and
  // queue_wait_ms_ up to the *_folded_ index).
  std::map<v1::JobState, int64_t> jobs_by_state_ ABSL_GUARDED_BY(mu_);
  int64_t records_written_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t measurement_errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> measurement_errors_by_kind_ ABSL_GUARDED_BY(mu_);
  Histogram queue_wait_hist_ ABSL_GUARDED_BY(mu_);
  Histogram dispatch_hist_ ABSL_GUARDED_BY(mu_);
  size_t queue_wait_folded_ ABSL_GUARDED_BY(mu_) = 0;
  size_t dispatch_folded_ ABSL_GUARDED_BY(mu_) = 0;
  // Moves on every commit that changed something and every heartbeat: SharedView rebuilds only
  // when it moved.
  std::atomic<int64_t> view_stamp_{0};
  absl::Mutex view_mu_;  // taken before mu_, never while holding it
  // SharedView's snapshot, then SharedJobsView's by viewer ("" for admins, else the user: bounded
  // by the tokens file).
  SharedSnapshot shared_view_ ABSL_GUARDED_BY(view_mu_);
  std::map<std::string, SharedSnapshot> shared_jobs_ ABSL_GUARDED_BY(view_mu_);
  int64_t last_view_version_ ABSL_GUARDED_BY(view_mu_) = 0;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;
  absl::Mutex log_mu_;
  std::vector<std::pair<std::string, std::string>> loaded_;  // what Load found, for the log
};

}  // namespace loom::service
