#include "loom/sched/scheduler.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"

namespace loom::sched {
namespace {

// Min-heap order on (entry, class) for std::push_heap, which builds max-heaps.
struct HeapAfter {
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return b.first < a.first;
  }
};

}  // namespace

Scheduler::Scheduler(std::unique_ptr<Policy> policy, SchedulerOptions options)
    : policy_(std::move(policy)),
      options_(options),
      exclusive_(policy_->ExclusiveResources()),
      one_job_(policy_->OneJobAtATime()) {}

absl::StatusOr<HostId> Scheduler::AddHost(const HostSpec& spec) {
  if (spec.cpu_slots < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("host '", spec.name, "': cpu_slots must be >= 0, got ", spec.cpu_slots));
  }
  HostId id = static_cast<HostId>(hosts_.size());
  hosts_.push_back(Host{spec, spec.cpu_slots, 0});
  host_blocked_.push_back(0);
  hosts_by_free_.insert({-spec.cpu_slots, id});
  return id;
}

absl::StatusOr<DeviceId> Scheduler::AddDevice(const DeviceSpec& spec) {
  if (spec.host < 0 || spec.host >= num_hosts()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", spec.name, "': unknown host id ", spec.host));
  }
  if (spec.kind.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("device '", spec.name, "': empty kind"));
  }
  if (spec.shares_cpu_slots < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", spec.name, "': shares_cpu_slots must be >= 0"));
  }
  auto [it, inserted] = kind_ids_.try_emplace(spec.kind, static_cast<int>(kind_names_.size()));
  if (inserted) {
    kind_names_.push_back(spec.kind);
    devices_by_kind_.emplace_back();
    free_by_kind_.emplace_back();
  }
  DeviceId id = static_cast<DeviceId>(devices_.size());
  devices_.push_back(Device{spec, it->second, 0});
  devices_by_kind_[it->second].push_back(id);
  free_by_kind_[it->second].insert(id);
  Host& h = hosts_[spec.host];
  h.capacity += spec.shares_cpu_slots;
  hosts_by_free_.erase({-(h.capacity - spec.shares_cpu_slots - h.used), spec.host});
  hosts_by_free_.insert({-(h.capacity - h.used), spec.host});
  return id;
}

absl::StatusOr<JobId> Scheduler::AddJob(const JobSpec& spec) {
  JobId id = next_job_++;
  if (jobs_.empty()) jobs_.emplace_back();  // id 0 is never used
  jobs_.push_back(std::make_unique<Job>());
  ++num_jobs_;
  Job& job = *jobs_[id];
  job.spec = spec;
  active_jobs_.insert(ActiveKey(id, job));
  return id;
}

Decision Scheduler::CheckFeasible(const ResourceNeed& need) const {
  if (need.cpu_slots < 0) return Decision::Infeasible("cpu_slots must be >= 0");
  if (!need.NeedsDevice() && need.cpu_slots == 0) {
    return Decision::Infeasible("the request needs neither CPU slots nor a device");
  }
  auto fits = [&](DeviceId d) {
    const Device& dev = devices_[d];
    return need.cpu_slots + dev.spec.shares_cpu_slots <= hosts_[dev.spec.host].capacity;
  };
  if (need.device != kNoDevice) {
    if (need.device < 0 || need.device >= num_devices()) {
      return Decision::Infeasible(absl::StrCat("no device with id ", need.device));
    }
    if (!fits(need.device)) {
      return Decision::Infeasible(absl::StrCat("device '", devices_[need.device].spec.name,
                                               "' is on a host with fewer than ", need.cpu_slots,
                                               " free CPU slots"));
    }
    return Decision::Place(devices_[need.device].spec.host, need.device);
  }
  if (!need.device_kind.empty()) {
    auto it = kind_ids_.find(need.device_kind);
    if (it == kind_ids_.end()) {
      return Decision::Infeasible(
          absl::StrCat("no device of kind '", need.device_kind, "' (known kinds: ",
                       kind_names_.empty() ? "none" : absl::StrJoin(kind_names_, ", "), ")"));
    }
    for (DeviceId d : devices_by_kind_[it->second]) {
      if (fits(d)) return Decision::Place(devices_[d].spec.host, d);
    }
    return Decision::Infeasible(absl::StrCat("no device of kind '", need.device_kind,
                                             "' is on a host with ", need.cpu_slots,
                                             " CPU slots to spare"));
  }
  int largest = 0;
  HostId best = -1;
  for (HostId h = 0; h < num_hosts(); ++h) {
    if (hosts_[h].capacity > largest || best < 0) {
      largest = hosts_[h].capacity;
      best = h;
    }
  }
  if (best < 0 || largest < need.cpu_slots) {
    return Decision::Infeasible(
        absl::StrCat("needs ", need.cpu_slots, " CPU slots but the largest host has ", largest));
  }
  return Decision::Place(best, kNoDevice);
}

int Scheduler::ClassFor(const ResourceNeed& need) {
  int kind = -1;
  if (need.device == kNoDevice && !need.device_kind.empty()) kind = kind_ids_.at(need.device_kind);
  auto key = std::make_tuple(need.cpu_slots, kind, need.device);
  auto [it, inserted] = class_ids_.try_emplace(key, static_cast<int>(classes_.size()));
  if (inserted) {
    ResourceClass c;
    c.cpu_slots = need.cpu_slots;
    c.kind = kind;
    c.device = need.device;
    classes_.push_back(std::move(c));
  }
  return it->second;
}

absl::StatusOr<StageId> Scheduler::Submit(const StageRequest& request, absl::Time now) {
  Job* job_ptr = FindJob(request.job);
  if (job_ptr == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("job ", request.job, " is unknown, finished or cancelled"));
  }
  Job& job = *job_ptr;
  if (job.closed) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", request.job, " is closed to new stages"));
  }
  if (request.need.cpu_slots < 0) {
    return absl::InvalidArgumentError("cpu_slots must be >= 0");
  }
  if (!request.need.NeedsDevice() && request.need.cpu_slots == 0) {
    return absl::InvalidArgumentError("the request needs neither CPU slots nor a device");
  }
  Decision feasible = CheckFeasible(request.need);
  if (feasible.infeasible()) {
    return absl::FailedPreconditionError(absl::StrCat("infeasible request for a ",
                                                      std::string(StageKindName(request.kind)),
                                                      " stage: ", feasible.reason()));
  }
  int pending = 0;
  for (StageId dep : request.after) {
    if (dep <= 0 || dep >= next_stage_) {
      return absl::InvalidArgumentError(absl::StrCat("unknown dependency stage ", dep));
    }
    if (dead_stages_.contains(dep)) {
      return absl::FailedPreconditionError(
          absl::StrCat("dependency stage ", dep, " failed or was cancelled"));
    }
    if (stages_.contains(dep)) ++pending;
  }
  StageId id = next_stage_++;
  Stage& s = stages_[id];
  s.job = request.job;
  s.kind = request.kind;
  s.cls = ClassFor(request.need);
  s.estimate = request.estimate;
  s.submitted = now;
  s.pending_deps = pending;
  for (StageId dep : request.after) {
    auto it = stages_.find(dep);
    if (it != stages_.end() && it->first != id) it->second.dependents.push_back(id);
  }
  ++job.live;
  if (job.stages.size() > 16 && job.stages.size() > 2 * static_cast<size_t>(job.live)) {
    std::erase_if(job.stages, [&](StageId x) { return !stages_.contains(x); });
  }
  job.stages.push_back(id);
  if (pending == 0) MakeReady(id, s, now);
  return id;
}

void Scheduler::MakeReady(StageId id, Stage& s, absl::Time now) {
  const Job& job = *FindJob(s.job);
  const ResourceClass& cls = classes_[s.cls];
  ReadyStage info;
  info.stage = id;
  info.job = s.job;
  info.kind = s.kind;
  info.uses_device = cls.kind >= 0 || cls.device != kNoDevice;
  info.cpu_slots = cls.cpu_slots;
  info.estimate = s.estimate;
  info.ready = now;
  info.job_priority = job.spec.priority;
  info.job_submit = job.spec.submit_time;
  OrderKey key = policy_->Order(info);
  s.state = StageState::kReady;
  s.ready = now;
  s.entry = QueueEntry{-job.spec.priority, key.primary, key.secondary, next_seq_++, id};
  classes_[s.cls].queue.insert(s.entry);
  ++num_ready_;
}

void Scheduler::SetHostUsed(HostId host, int used) {
  Host& h = hosts_[host];
  hosts_by_free_.erase({-(h.capacity - h.used), host});
  h.used = used;
  hosts_by_free_.insert({-(h.capacity - h.used), host});
}

Decision Scheduler::Place(const ResourceClass& cls) {
  const int c = cls.cpu_slots;
  if (!exclusive_) {
    // Shared: pick the least-loaded candidate; capacity is not enforced.
    if (cls.device != kNoDevice) return Decision::Place(devices_[cls.device].spec.host, cls.device);
    if (cls.kind >= 0) {
      DeviceId best = kNoDevice;
      for (DeviceId d : devices_by_kind_[cls.kind]) {
        if (best == kNoDevice || devices_[d].leases < devices_[best].leases) best = d;
      }
      return Decision::Place(devices_[best].spec.host, best);
    }
    return Decision::Place(hosts_by_free_.begin()->second, kNoDevice);
  }
  auto block = [&](HostId h) {
    if (!host_blocked_[h]) {
      host_blocked_[h] = 1;
      blocked_list_.push_back(h);
    }
  };
  auto host_fits = [&](HostId h, int slots) {
    return !host_blocked_[h] && hosts_[h].capacity - hosts_[h].used >= slots;
  };
  if (cls.device != kNoDevice) {
    const Device& dev = devices_[cls.device];
    if (dev.leases > 0) return Decision::Wait("device busy");
    if (host_fits(dev.spec.host, c + dev.spec.shares_cpu_slots)) {
      return Decision::Place(dev.spec.host, cls.device);
    }
    block(dev.spec.host);  // reserve the host's slots for this stage in this pass
    return Decision::Wait("host slots busy");
  }
  if (cls.kind >= 0) {
    const auto& free = free_by_kind_[cls.kind];
    if (free.empty()) return Decision::Wait("no free device");
    HostId short_host = -1;
    for (DeviceId d : free) {
      const Device& dev = devices_[d];
      if (host_fits(dev.spec.host, c + dev.spec.shares_cpu_slots)) {
        return Decision::Place(dev.spec.host, d);
      }
      if (short_host < 0 && !host_blocked_[dev.spec.host]) short_host = dev.spec.host;
    }
    if (short_host >= 0) block(short_host);
    return Decision::Wait("no free device with enough host slots");
  }
  for (const auto& [neg_free, h] : hosts_by_free_) {
    if (host_blocked_[h]) continue;
    if (-neg_free >= c) return Decision::Place(h, kNoDevice);
    block(h);  // the host with the most free slots is reserved for this stage
    break;
  }
  return Decision::Wait("not enough free CPU slots");
}

void Scheduler::TakeResources(HostId host, DeviceId device, int slots) {
  SetHostUsed(host, hosts_[host].used + slots);
  if (device != kNoDevice) {
    Device& dev = devices_[device];
    if (dev.leases++ == 0) free_by_kind_[dev.kind].erase(device);
  }
}

void Scheduler::ReleaseResources(const Lease& lease) {
  SetHostUsed(lease.host, hosts_[lease.host].used - lease.slots);
  if (lease.device != kNoDevice) {
    Device& dev = devices_[lease.device];
    LOOM_CHECK(dev.leases > 0);
    if (--dev.leases == 0) free_by_kind_[dev.kind].insert(lease.device);
  }
}

std::vector<Grant> Scheduler::Advance(absl::Time now) {
  // Expire overdue leases first so their resources are available to this pass.
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    auto [deadline, lease_id] = *deadlines_.begin();
    deadlines_.erase(deadlines_.begin());
    auto it = leases_.find(lease_id);
    LOOM_CHECK(it != leases_.end());
    Lease lease = it->second;
    leases_.erase(it);
    ReleaseResources(lease);
    ++stats_.expirations;
    Retry(
        lease.stage, lease_id, now,
        absl::StrCat("lease ", lease_id, " expired at its deadline ", absl::FormatTime(deadline)));
  }

  std::vector<Grant> grants;
  if (num_ready_ == 0) return grants;

  JobId current_job = 0;
  if (one_job_) {
    if (active_jobs_.empty()) return grants;
    current_job = std::get<2>(*active_jobs_.begin());
  }

  heap_.clear();
  for (int c = 0; c < static_cast<int>(classes_.size()); ++c) {
    if (!classes_[c].queue.empty()) heap_.push_back({*classes_[c].queue.begin(), c});
  }
  std::make_heap(heap_.begin(), heap_.end(), HeapAfter{});
  while (!heap_.empty()) {
    std::pop_heap(heap_.begin(), heap_.end(), HeapAfter{});
    auto [entry, c] = heap_.back();
    heap_.pop_back();
    ResourceClass& cls = classes_[c];
    auto sit = stages_.find(entry.stage);
    LOOM_CHECK(sit != stages_.end());
    Stage& s = sit->second;
    if (one_job_ && s.job != current_job) continue;  // the class holds no stage of that job
    ++stats_.placement_attempts;
    Decision d = Place(cls);
    if (!d.placed()) continue;  // this class waits until something is released

    int slots = cls.cpu_slots;
    if (d.device() != kNoDevice) slots += devices_[d.device()].spec.shares_cpu_slots;
    TakeResources(d.host(), d.device(), slots);
    cls.queue.erase(cls.queue.begin());
    --num_ready_;

    LeaseId lease_id = next_lease_++;
    absl::Duration length = s.estimate
                                ? std::max(*s.estimate * options_.lease_factor, options_.min_lease)
                                : options_.default_lease;
    Lease lease{entry.stage, d.host(), d.device(), slots, now, now + length};
    leases_.emplace(lease_id, lease);
    if (lease.deadline != absl::InfiniteFuture()) deadlines_.insert({lease.deadline, lease_id});
    s.state = StageState::kRunning;
    s.lease = lease_id;
    ++s.attempts;
    ++stats_.grants;

    Grant g;
    g.lease = lease_id;
    g.stage = entry.stage;
    g.job = s.job;
    g.kind = s.kind;
    g.host = d.host();
    g.device = d.device();
    g.cpu_slots = cls.cpu_slots;
    g.attempt = s.attempts;
    g.submitted = s.submitted;
    g.ready = s.ready;
    g.start = now;
    g.deadline = lease.deadline;
    grants.push_back(std::move(g));

    if (!cls.queue.empty()) {
      heap_.push_back({*cls.queue.begin(), c});
      std::push_heap(heap_.begin(), heap_.end(), HeapAfter{});
    }
  }
  for (HostId h : blocked_list_) host_blocked_[h] = 0;
  blocked_list_.clear();
  return grants;
}

void Scheduler::EndLease(LeaseId id, const Lease& lease) {
  if (lease.deadline != absl::InfiniteFuture()) deadlines_.erase({lease.deadline, id});
  ReleaseResources(lease);
}

absl::Status Scheduler::Complete(LeaseId lease_id, absl::Time now,
                                 std::optional<absl::Duration> actual) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(
        absl::StrCat("lease ", lease_id, " is unknown, already ended, expired or revoked"));
  }
  Lease lease = it->second;
  leases_.erase(it);
  EndLease(lease_id, lease);

  auto sit = stages_.find(lease.stage);
  LOOM_CHECK(sit != stages_.end());
  Stage& s = sit->second;
  JobId job = s.job;
  policy_->OnFinished(
      FinishedStage{job, s.kind, lease.device != kNoDevice, actual ? *actual : now - lease.start});
  std::vector<StageId> dependents = std::move(s.dependents);
  ForgetStage(lease.stage, job);
  for (StageId dep : dependents) {
    auto dit = stages_.find(dep);
    if (dit == stages_.end()) continue;
    if (--dit->second.pending_deps == 0) MakeReady(dep, dit->second, now);
  }
  MaybeForgetJob(job);
  return absl::OkStatus();
}

absl::Status Scheduler::Fail(LeaseId lease_id, absl::Time now, std::string_view reason) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(
        absl::StrCat("lease ", lease_id, " is unknown, already ended, expired or revoked"));
  }
  Lease lease = it->second;
  leases_.erase(it);
  EndLease(lease_id, lease);
  Retry(lease.stage, lease_id, now, std::string(reason));
  return absl::OkStatus();
}

void Scheduler::Retry(StageId id, LeaseId lease, absl::Time now, std::string reason) {
  Stage& s = stages_.at(id);
  if (s.attempts < options_.max_attempts) {
    ++stats_.requeues;
    events_.push_back(
        StageEvent{StageEvent::Type::kRequeued, id, s.job, lease, now,
                   absl::StrCat(reason, " (try ", s.attempts, " of ", options_.max_attempts, ")")});
    MakeReady(id, s, now);
    return;
  }
  JobId job = s.job;
  FailStage(id, lease, now, absl::StrCat(reason, " (gave up after ", s.attempts, " tries)"),
            StageEvent::Type::kFailed);
  MaybeForgetJob(job);
}

void Scheduler::FailStage(StageId root, LeaseId root_lease, absl::Time now,
                          const std::string& reason, StageEvent::Type type) {
  std::vector<std::pair<StageId, std::string>> work{{root, reason}};
  std::vector<JobId> touched;
  bool first = true;
  while (!work.empty()) {
    auto [id, why] = std::move(work.back());
    work.pop_back();
    auto it = stages_.find(id);
    if (it == stages_.end()) continue;
    Stage& s = it->second;
    LeaseId lease = first ? root_lease : 0;
    StageEvent::Type t = first ? type : StageEvent::Type::kFailed;
    first = false;
    if (s.state == StageState::kReady) {
      classes_[s.cls].queue.erase(s.entry);
      --num_ready_;
    } else if (s.state == StageState::kRunning) {
      auto lit = leases_.find(s.lease);
      if (lit != leases_.end()) {
        lease = s.lease;
        Lease l = lit->second;
        leases_.erase(lit);
        EndLease(lease, l);
      }
    }
    ++stats_.failures;
    events_.push_back(StageEvent{t, id, s.job, lease, now, why});
    for (StageId dep : s.dependents) {
      work.push_back(
          {dep, absl::StrCat("dependency stage ", id, " ",
                             t == StageEvent::Type::kCancelled ? "was cancelled" : "failed")});
    }
    dead_stages_.insert(id);
    touched.push_back(s.job);
    ForgetStage(id, s.job);
  }
  for (JobId j : touched) MaybeForgetJob(j);
}

void Scheduler::ForgetStage(StageId id, JobId job) {
  stages_.erase(id);
  if (Job* j = FindJob(job)) --j->live;
}

void Scheduler::MaybeForgetJob(JobId id) {
  Job* job = FindJob(id);
  if (job == nullptr || !job->closed || job->live > 0) return;
  active_jobs_.erase(ActiveKey(id, *job));
  jobs_[id].reset();
  --num_jobs_;
  policy_->OnJobRemoved(id);
}

absl::Status Scheduler::CloseJob(JobId job) {
  Job* j = FindJob(job);
  if (j == nullptr) {
    return absl::NotFoundError(absl::StrCat("job ", job, " is unknown, finished or cancelled"));
  }
  j->closed = true;
  MaybeForgetJob(job);
  return absl::OkStatus();
}

absl::Status Scheduler::CancelJob(JobId job, absl::Time now) {
  Job* j = FindJob(job);
  if (j == nullptr) {
    return absl::NotFoundError(absl::StrCat("job ", job, " is unknown, finished or cancelled"));
  }
  std::vector<StageId> stages = std::move(j->stages);
  j->closed = true;
  for (StageId id : stages) {
    if (stages_.contains(id)) {
      FailStage(id, 0, now, absl::StrCat("job ", job, " was cancelled"),
                StageEvent::Type::kCancelled);
    }
  }
  // Nothing of the job is live any more; FailStage forgot it through MaybeForgetJob, unless it
  // had no live stages at all.
  if (Job* left = FindJob(job)) {
    LOOM_CHECK(left->live == 0);
    MaybeForgetJob(job);
  }
  return absl::OkStatus();
}

std::vector<StageEvent> Scheduler::TakeEvents() {
  std::vector<StageEvent> out;
  out.swap(events_);
  return out;
}

}  // namespace loom::sched
