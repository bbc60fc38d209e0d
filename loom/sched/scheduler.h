// The scheduler core: resources, the ready queue, leases and their deadlines. Single-threaded and
// clock-agnostic: every call takes `now`, so the simulator (virtual time), the embedded engine
// and the service (real time) drive the same code. Callers: sim/simulator.cc, engine/, service/.
//
// Call order: AddHost/AddDevice, then AddJob and Submit as work appears; Advance(now) to obtain
// grants (it also expires overdue leases); Complete or Fail each lease; CloseJob when a job will
// submit nothing more (it is then forgotten once drained); CancelJob to drop a job.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/sched/index.h"
#include "loom/sched/policy.h"
#include "loom/sched/types.h"

namespace loom::sched {

struct SchedulerOptions {
  // Lease deadline = start + max(estimate * lease_factor, min_lease) when the request has an
  // estimate, else start + default_lease.
  double lease_factor = 3.0;
  absl::Duration min_lease = absl::Seconds(1);
  absl::Duration default_lease = absl::Hours(1);
  // Tries per stage: a failed or expired lease is requeued until this many tries were made.
  int max_attempts = 3;
};

struct SchedulerStats {
  int64_t grants = 0;
  int64_t placement_attempts = 0;  // grants plus "wait" decisions
  int64_t requeues = 0;
  int64_t expirations = 0;
  int64_t failures = 0;  // stages that failed for good
};

class Scheduler {
 public:
  explicit Scheduler(std::unique_ptr<Policy> policy, SchedulerOptions options = {});
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Resources. Ids are dense, in order of addition. kInvalidArgument on bad specs.
  absl::StatusOr<HostId> AddHost(const HostSpec& spec);
  // `now`: when the device joins, the start of its Usage(); InfinitePast() (callers that never
  // ask): its usage counts from the first Advance().
  absl::StatusOr<DeviceId> AddDevice(const DeviceSpec& spec, absl::Time now = absl::InfinitePast());
  // Takes a host and its devices out of placement (online = false) or back in. An offline host
  // gets no new grants; its running leases stay until completed, failed or expired. Feasibility
  // still counts it (stages wait rather than fail). kNotFound for an unknown host. The service
  // marks a lost agent's host offline.
  absl::Status SetHostOnline(HostId host, bool online);

  absl::StatusOr<JobId> AddJob(const JobSpec& spec);

  // Queues a stage. Errors: kNotFound (unknown or finished job), kInvalidArgument (unknown
  // dependency, empty need), kFailedPrecondition (job closed, a dependency failed or was
  // cancelled, or the need is infeasible on this cluster: the message says why).
  absl::StatusOr<StageId> Submit(const StageRequest& request, absl::Time now);

  // Expires overdue leases (requeue or fail, see TakeEvents), then grants every ready stage the
  // policy lets run now. Grants are in decision order.
  std::vector<Grant> Advance(absl::Time now);

  // Ends a lease successfully. `actual` defaults to now - start. kNotFound if the lease is
  // unknown (already ended, expired or revoked).
  absl::Status Complete(LeaseId lease, absl::Time now,
                        std::optional<absl::Duration> actual = std::nullopt);
  // Ends a lease unsuccessfully: the stage is requeued, or fails after max_attempts tries.
  absl::Status Fail(LeaseId lease, absl::Time now, std::string_view reason);

  // The job will submit no more stages; it is forgotten once its stages are done.
  absl::Status CloseJob(JobId job);
  // Drops every unfinished stage of the job and revokes its leases (kCancelled events).
  absl::Status CancelJob(JobId job, absl::Time now);

  // Requeue/failure/cancel events since the last call.
  std::vector<StageEvent> TakeEvents();

  // Whether a stage with this need could ever be placed on the current resources.
  Decision CheckFeasible(const ResourceNeed& need) const;

  // Introspection (tests, metrics, dashboards).
  const Policy& policy() const { return *policy_; }
  const SchedulerOptions& options() const { return options_; }
  const SchedulerStats& stats() const { return stats_; }
  int num_hosts() const { return static_cast<int>(hosts_.size()); }
  int num_devices() const { return static_cast<int>(devices_.size()); }
  const HostSpec& host(HostId id) const { return hosts_[id].spec; }
  const DeviceSpec& device(DeviceId id) const { return devices_[id].spec; }
  // Slots a CPU stage could take on the host now (negative when oversubscribed).
  int FreeCpuSlots(HostId host) const { return hosts_[host].capacity - hosts_[host].used; }
  int DeviceLeases(DeviceId device) const { return devices_[device].leases; }
  size_t num_ready() const { return num_ready_; }
  size_t num_running() const { return lease_slots_.size(); }
  size_t num_live_stages() const { return stage_slots_.size(); }
  size_t num_jobs() const { return num_jobs_; }
  bool HasJob(JobId job) const { return FindJob(job) != nullptr; }

  // What a device did since it joined: time with at least one lease (leases at the same time
  // count once), up to `now`.
  struct DeviceUsage {
    absl::Duration busy;
    absl::Time since;  // AddDevice's `now`, or the first Advance()
  };
  DeviceUsage Usage(DeviceId device, absl::Time now) const;
  // Ready stages per resource class (stages with the same need share one queue), one entry per
  // class in order of first use, empty ones included.
  struct ReadyQueue {
    int cpu_slots = 0;
    std::string device_kind;  // empty: a CPU-only stage
    std::string device;       // a named device's name, empty: any of the kind
    int64_t ready = 0;
  };
  std::vector<ReadyQueue> ReadyQueues() const;
  // Grants per second over the last `window` (or since the first Advance(), when later); 0 before
  // any. Counted from the last kGrantTimes grants: a faster stream shortens the window to them.
  double GrantRate(absl::Time now, absl::Duration window) const;
  // The `now` of the first Advance() (InfinitePast() before it): when the scheduler began to run.
  absl::Time started() const { return first_advance_; }
  static constexpr size_t kGrantTimes = 4096;

 private:
  // kFree: the record's slot is unused (the stage finished, failed or was cancelled).
  enum class StageState : uint8_t { kFree, kWaitingDeps, kReady, kRunning };

  struct QueueEntry {
    int neg_priority;
    int32_t slot;  // the stage's record; the entry is stale unless that record still holds seq
    double primary;
    int64_t secondary;
    uint64_t seq;  // unique: the order is total
    bool operator<(const QueueEntry& o) const {
      return std::tie(neg_priority, primary, secondary, seq) <
             std::tie(o.neg_priority, o.primary, o.secondary, o.seq);
    }
  };
  // Ready stages with the same resource need share one queue ("class"), so a decision looks only
  // at the head of each class. Entries of stages that left the ready state other than by being
  // granted (failure, cancellation) stay until they reach the front or the queue is compacted
  // ("stale").
  struct ResourceClass {
    int cpu_slots = 0;
    int kind = -1;                // device kind id, or -1
    DeviceId device = kNoDevice;  // named device, or kNoDevice
    RunHeapQueue<QueueEntry> queue;
    size_t stale = 0;
  };
  // A stage and, while it holds one, its lease. Records live in `stage_pool_`, found by id
  // through `stage_slots_` (and by lease id through `lease_slots_`). Two cache lines each: the
  // dependents list lives apart, in `dep_lists_`.
  struct alignas(64) Stage {
    StageId id = 0;
    JobId job = 0;
    uint64_t seq = 0;   // of its queue entry while ready
    LeaseId lease = 0;  // the current (or last) lease
    absl::Time submitted;
    absl::Time ready;
    absl::Time lease_start;   // its deadline lives in deadlines_
    absl::Duration estimate;  // when has_estimate
    int32_t cls = 0;
    int32_t pending_deps = 0;
    int32_t attempts = 0;
    HostId lease_host = 0;
    DeviceId lease_device = kNoDevice;
    int32_t lease_slots = 0;  // host slots held, including the device's shared slots
    int32_t deps = -1;        // index of its dependents in dep_lists_, or -1 for none
    StageKind kind = StageKind::kOther;
    StageState state = StageState::kFree;
    bool leased = false;  // the lease above is live
    bool has_estimate = false;
    std::optional<absl::Duration> Estimate() const {
      return has_estimate ? std::optional<absl::Duration>(estimate) : std::nullopt;
    }
  };
  // Fields used per stage first (one cache line), the spec (names) after.
  struct Job {
    int64_t live = 0;  // submitted stages not yet done, failed or cancelled
    bool closed = false;
    int priority = 0;             // spec.priority
    absl::Time submit_time;       // spec.submit_time
    std::vector<StageId> stages;  // may include finished ones; compacted now and then
    JobSpec spec;
  };
  struct Host {
    HostSpec spec;
    int capacity = 0;  // spec.cpu_slots + slots donated by its devices
    int used = 0;
    bool offline = false;  // SetHostOnline(false): no placements here
  };
  struct Device {
    DeviceSpec spec;
    int kind = 0;
    int index_in_kind = 0;  // position in devices_by_kind_[kind] (ascending ids)
    int leases = 0;
    absl::Time added = absl::InfinitePast();
    absl::Duration busy;    // ended busy periods
    absl::Time busy_since;  // start of the current busy period while leases > 0
  };
  struct EndedLease {
    StageId stage;
    int32_t slot;
    HostId host;
    DeviceId device;
    int slots;
    absl::Time start;
  };
  using ActiveJobKey = std::tuple<int, absl::Time, JobId>;

  int ClassFor(const ResourceNeed& need, int kind);
  // CheckFeasible(need).infeasible(), from cached per-cluster maxima.
  bool Infeasible(const ResourceNeed& need, int kind) const;
  void MakeReady(int32_t slot, absl::Time now);
  // Where a stage of the class can go now (host < 0: it waits). Decisions to wait carry no
  // reason here: Advance() only needs where.
  struct Placement {
    HostId host = -1;
    DeviceId device = kNoDevice;
    bool placed() const { return host >= 0; }
  };
  Placement Place(const ResourceClass& cls);
  void TakeResources(HostId host, DeviceId device, int slots, absl::Time now);
  void ReleaseResources(HostId host, DeviceId device, int slots, absl::Time now);
  void SetHostUsed(HostId host, int used);
  // Ends the stage's live lease and releases its resources.
  EndedLease EndLease(int32_t slot, absl::Time now);
  // Requeues or fails the stage of an ended lease.
  void Retry(int32_t slot, LeaseId lease, absl::Time now, const std::string& reason);
  // Fails the stage for good and, transitively, every stage that depends on it.
  void FailStage(StageId id, LeaseId lease, absl::Time now, const std::string& reason,
                 StageEvent::Type type);
  void ForgetStage(int32_t slot);
  void MaybeForgetJob(JobId job);
  Job* FindJob(JobId id) const {
    return id > 0 && id < static_cast<JobId>(jobs_.size()) ? jobs_[id].get() : nullptr;
  }
  ActiveJobKey ActiveKey(JobId id, const Job& job) const {
    return {-job.priority, job.submit_time, id};
  }
  // Ready queues: the front is a live entry after CleanTop.
  void CleanTop(ResourceClass& cls);
  bool IsLive(const QueueEntry& e) const {
    const Stage& s = stage_pool_[e.slot];
    return s.state == StageState::kReady && s.seq == e.seq;
  }
  // Host index: a tournament tree over HostKey. BestHost() is the unblocked host with the most
  // free slots (lowest id on ties), the first element of the former (-free, host) ordered set;
  // a blocked host's leaf is cleared lazily, when it reaches the root.
  static constexpr int64_t kNoHostKey = std::numeric_limits<int64_t>::min();
  // Larger is better: more free slots, then the lower id (the low half is in [0, 2^31)).
  int64_t HostKey(HostId h) const {
    if (host_blocked_[h] || hosts_[h].offline) return kNoHostKey;
    const int64_t free = hosts_[h].capacity - hosts_[h].used;
    return static_cast<int64_t>(static_cast<uint64_t>(free) << 32) + (int64_t{0x7fffffff} - h);
  }
  HostId BestHost();  // -1 when every host is blocked (or there are none)
  void UpdateHostIndex(HostId h);
  void RebuildHostIndex();
  void Block(HostId h);
  void RecomputeFeasibilityCache();

  std::unique_ptr<Policy> policy_;
  SchedulerOptions options_;
  bool exclusive_;
  bool one_job_;
  SchedulerStats stats_;
  absl::Time first_advance_ = absl::InfinitePast();
  std::vector<absl::Time> grant_times_;  // ring of the last kGrantTimes grants' times
  size_t grant_next_ = 0;                // next slot of the ring once it is full

  std::vector<Host> hosts_;
  std::vector<Device> devices_;
  std::vector<std::string> kind_names_;
  absl::flat_hash_map<std::string, int> kind_ids_;
  std::vector<std::vector<DeviceId>> devices_by_kind_;
  std::vector<OrderedBitSet> free_by_kind_;  // unleased devices, by index in kind
  std::vector<int64_t> host_tree_;           // max of HostKey; 2 * host_leaves_ nodes, root at 1
  size_t host_leaves_ = 1;
  // Feasibility cache (resources only change in AddHost/AddDevice, which mark it dirty).
  bool feasibility_dirty_ = true;
  int max_host_capacity_ = 0;
  std::vector<int> max_room_by_kind_;  // max over devices of host capacity - shared slots

  std::vector<ResourceClass> classes_;
  absl::flat_hash_map<std::tuple<int, int, int>, int> class_ids_;
  size_t num_ready_ = 0;
  uint64_t next_seq_ = 0;

  // Indexed by JobId (ids are dense); null once a job is forgotten. 8 bytes per job ever added.
  std::vector<std::unique_ptr<Job>> jobs_;
  size_t num_jobs_ = 0;
  std::set<ActiveJobKey> active_jobs_;  // ordering used by OneJobAtATime policies
  JobId next_job_ = 1;

  static_assert(sizeof(Stage) == 128);
  std::vector<Stage> stage_pool_;
  std::vector<int32_t> free_slots_;
  std::vector<std::vector<StageId>> dep_lists_;  // dependents of stages that have some
  std::vector<int32_t> free_dep_lists_;
  IdSlotTable stage_slots_;                   // live stage id -> record slot
  IdSlotTable lease_slots_;                   // live lease id -> record slot
  absl::flat_hash_set<StageId> dead_stages_;  // failed or cancelled (for later dependencies)
  StageId next_stage_ = 1;

  // Lease deadlines as a min-heap of (deadline, lease); entries of ended leases are skipped.
  std::vector<std::pair<absl::Time, LeaseId>> deadlines_;
  LeaseId next_lease_ = 1;

  std::vector<StageEvent> events_;
  // Scratch for Advance(), kept to avoid reallocation.
  std::vector<std::pair<QueueEntry, int>> heap_;  // (head, class) of classes with ready stages
  std::vector<char> host_blocked_;
  std::vector<HostId> blocked_list_;
};

}  // namespace loom::sched
