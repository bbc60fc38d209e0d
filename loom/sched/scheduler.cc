#include "loom/sched/scheduler.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <limits>
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
  if (hosts_.size() > host_leaves_ || host_tree_.empty()) {
    RebuildHostIndex();
  } else {
    UpdateHostIndex(id);
  }
  feasibility_dirty_ = true;
  return id;
}

absl::StatusOr<DeviceId> Scheduler::AddDevice(const DeviceSpec& spec, absl::Time now) {
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
  const int kind = it->second;
  DeviceId id = static_cast<DeviceId>(devices_.size());
  const int index = static_cast<int>(devices_by_kind_[kind].size());
  devices_.push_back(Device{.spec = spec, .kind = kind, .index_in_kind = index, .added = now});
  devices_by_kind_[kind].push_back(id);
  free_by_kind_[kind].Resize(index + 1);
  free_by_kind_[kind].Insert(index);
  hosts_[spec.host].capacity += spec.shares_cpu_slots;
  UpdateHostIndex(spec.host);
  feasibility_dirty_ = true;
  return id;
}

absl::Status Scheduler::SetHostOnline(HostId host, bool online) {
  if (host < 0 || host >= num_hosts()) {
    return absl::NotFoundError(absl::StrCat("unknown host id ", host));
  }
  hosts_[host].offline = !online;
  UpdateHostIndex(host);
  return absl::OkStatus();
}

absl::StatusOr<JobId> Scheduler::AddJob(const JobSpec& spec) {
  JobId id = next_job_++;
  if (jobs_.empty()) jobs_.emplace_back();  // id 0 is never used
  jobs_.push_back(std::make_unique<Job>());
  ++num_jobs_;
  Job& job = *jobs_[id];
  job.spec = spec;
  job.priority = spec.priority;
  job.submit_time = spec.submit_time;
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

void Scheduler::RecomputeFeasibilityCache() {
  max_host_capacity_ = 0;
  for (const Host& h : hosts_) max_host_capacity_ = std::max(max_host_capacity_, h.capacity);
  max_room_by_kind_.assign(kind_names_.size(), std::numeric_limits<int>::min());
  for (const Device& d : devices_) {
    int room = hosts_[d.spec.host].capacity - d.spec.shares_cpu_slots;
    max_room_by_kind_[d.kind] = std::max(max_room_by_kind_[d.kind], room);
  }
  feasibility_dirty_ = false;
}

bool Scheduler::Infeasible(const ResourceNeed& need, int kind) const {
  if (need.device != kNoDevice) {
    if (need.device < 0 || need.device >= num_devices()) return true;
    const Device& dev = devices_[need.device];
    return need.cpu_slots + dev.spec.shares_cpu_slots > hosts_[dev.spec.host].capacity;
  }
  if (!need.device_kind.empty()) {
    return kind < 0 || need.cpu_slots > max_room_by_kind_[kind];
  }
  return hosts_.empty() || max_host_capacity_ < need.cpu_slots;
}

int Scheduler::ClassFor(const ResourceNeed& need, int kind) {
  if (classes_.size() <= 8) {  // few classes: a scan is cheaper than hashing
    for (int c = 0; c < static_cast<int>(classes_.size()); ++c) {
      const ResourceClass& cls = classes_[c];
      if (cls.cpu_slots == need.cpu_slots && cls.kind == kind && cls.device == need.device) {
        return c;
      }
    }
  }
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
  int kind = -1;
  if (request.need.device == kNoDevice && !request.need.device_kind.empty()) {
    auto kit = kind_ids_.find(request.need.device_kind);
    if (kit != kind_ids_.end()) kind = kit->second;
  }
  if (feasibility_dirty_) RecomputeFeasibilityCache();
  if (Infeasible(request.need, kind)) {
    Decision feasible = CheckFeasible(request.need);
    LOOM_CHECK(feasible.infeasible());
    return absl::FailedPreconditionError(absl::StrCat("infeasible request for a ",
                                                      std::string(StageKindName(request.kind)),
                                                      " stage: ", feasible.reason()));
  }
  int pending = 0;
  for (StageId dep : request.after) {
    if (dep <= 0 || dep >= next_stage_) {
      return absl::InvalidArgumentError(absl::StrCat("unknown dependency stage ", dep));
    }
    if (!dead_stages_.empty() && dead_stages_.contains(dep)) {
      return absl::FailedPreconditionError(
          absl::StrCat("dependency stage ", dep, " failed or was cancelled"));
    }
    if (stage_slots_.Find(dep) >= 0) ++pending;
  }
  StageId id = next_stage_++;
  int32_t slot;
  if (free_slots_.empty()) {
    slot = static_cast<int32_t>(stage_pool_.size());
    stage_pool_.emplace_back();
  } else {
    slot = free_slots_.back();
    free_slots_.pop_back();
    stage_pool_[slot] = Stage{};
  }
  stage_slots_.Insert(id, slot);
  Stage& s = stage_pool_[slot];
  s.id = id;
  s.job = request.job;
  s.kind = request.kind;
  s.state = StageState::kWaitingDeps;
  s.cls = ClassFor(request.need, kind);
  s.has_estimate = request.estimate.has_value();
  if (s.has_estimate) s.estimate = *request.estimate;
  s.submitted = now;
  s.pending_deps = pending;
  for (StageId dep : request.after) {
    int32_t d = stage_slots_.Find(dep);
    if (d < 0 || dep == id) continue;
    Stage& parent = stage_pool_[d];
    if (parent.deps < 0) {
      if (free_dep_lists_.empty()) {
        parent.deps = static_cast<int32_t>(dep_lists_.size());
        dep_lists_.emplace_back();
      } else {
        parent.deps = free_dep_lists_.back();
        free_dep_lists_.pop_back();
      }
    }
    dep_lists_[parent.deps].push_back(id);
  }
  ++job.live;
  if (job.stages.size() > 16 && job.stages.size() > 2 * static_cast<size_t>(job.live)) {
    std::erase_if(job.stages, [&](StageId x) { return stage_slots_.Find(x) < 0; });
  }
  job.stages.push_back(id);
  if (pending == 0) MakeReady(slot, now);
  return id;
}

void Scheduler::MakeReady(int32_t slot, absl::Time now) {
  Stage& s = stage_pool_[slot];
  const Job& job = *FindJob(s.job);
  ResourceClass& cls = classes_[s.cls];
  ReadyStage info;
  info.stage = s.id;
  info.job = s.job;
  info.kind = s.kind;
  info.uses_device = cls.kind >= 0 || cls.device != kNoDevice;
  info.cpu_slots = cls.cpu_slots;
  info.estimate = s.Estimate();
  info.ready = now;
  info.job_priority = job.priority;
  info.job_submit = job.submit_time;
  OrderKey key = policy_->Order(info);
  s.state = StageState::kReady;
  s.ready = now;
  s.seq = next_seq_++;
  cls.queue.Push(QueueEntry{-job.priority, slot, key.primary, key.secondary, s.seq});
  ++num_ready_;
}

void Scheduler::CleanTop(ResourceClass& cls) {
  while (!cls.queue.empty() && !IsLive(cls.queue.Front())) {
    cls.queue.Pop();
    LOOM_CHECK(cls.stale > 0);
    --cls.stale;
  }
}

void Scheduler::UpdateHostIndex(HostId h) {
  size_t i = host_leaves_ + static_cast<size_t>(h);
  host_tree_[i] = HostKey(h);
  for (i >>= 1; i >= 1; i >>= 1) {
    const int64_t best = std::max(host_tree_[2 * i], host_tree_[2 * i + 1]);
    if (host_tree_[i] == best) break;  // the ancestors depend only on this node's value
    host_tree_[i] = best;
  }
}

void Scheduler::RebuildHostIndex() {
  host_leaves_ = std::bit_ceil(std::max<size_t>(hosts_.size(), 1));
  host_tree_.assign(2 * host_leaves_, kNoHostKey);
  for (HostId h = 0; h < num_hosts(); ++h) host_tree_[host_leaves_ + h] = HostKey(h);
  for (size_t i = host_leaves_ - 1; i >= 1; --i) {
    host_tree_[i] = std::max(host_tree_[2 * i], host_tree_[2 * i + 1]);
  }
}

HostId Scheduler::BestHost() {
  while (true) {
    const int64_t key = host_tree_[1];
    if (key == kNoHostKey) return -1;
    const HostId h = static_cast<HostId>(int64_t{0x7fffffff} - (key & 0xffffffff));
    if (!host_blocked_[h]) return h;
    UpdateHostIndex(h);  // blocked since its leaf was written: take it out now
  }
}

void Scheduler::Block(HostId h) {
  // The index leaves the host in until BestHost() meets it (most blocked hosts never reach the
  // root in the pass that blocks them).
  if (!host_blocked_[h]) {
    host_blocked_[h] = 1;
    blocked_list_.push_back(h);
  }
}

void Scheduler::SetHostUsed(HostId host, int used) {
  hosts_[host].used = used;
  UpdateHostIndex(host);
}

Scheduler::Placement Scheduler::Place(const ResourceClass& cls) {
  const int c = cls.cpu_slots;
  if (!exclusive_) {
    // Shared: pick the least-loaded candidate; capacity is not enforced.
    if (cls.device != kNoDevice) {
      if (hosts_[devices_[cls.device].spec.host].offline) return {};
      return {devices_[cls.device].spec.host, cls.device};
    }
    if (cls.kind >= 0) {
      DeviceId best = kNoDevice;
      for (DeviceId d : devices_by_kind_[cls.kind]) {
        if (hosts_[devices_[d].spec.host].offline) continue;
        if (best == kNoDevice || devices_[d].leases < devices_[best].leases) best = d;
      }
      if (best == kNoDevice) return {};
      return {devices_[best].spec.host, best};
    }
    return {BestHost(), kNoDevice};
  }
  auto host_fits = [&](HostId h, int slots) {
    return !host_blocked_[h] && !hosts_[h].offline && hosts_[h].capacity - hosts_[h].used >= slots;
  };
  if (cls.device != kNoDevice) {
    const Device& dev = devices_[cls.device];
    if (dev.leases > 0) return {};  // device busy
    if (host_fits(dev.spec.host, c + dev.spec.shares_cpu_slots)) {
      return {dev.spec.host, cls.device};
    }
    Block(dev.spec.host);  // reserve the host's slots for this stage in this pass
    return {};             // host slots busy
  }
  if (cls.kind >= 0) {
    const OrderedBitSet& free = free_by_kind_[cls.kind];
    if (free.empty()) return {};  // no free device
    const std::vector<DeviceId>& of_kind = devices_by_kind_[cls.kind];
    HostId short_host = -1;
    for (int i = free.FindNext(0); i >= 0; i = free.FindNext(i + 1)) {
      const DeviceId d = of_kind[i];
      const Device& dev = devices_[d];
      if (host_fits(dev.spec.host, c + dev.spec.shares_cpu_slots)) return {dev.spec.host, d};
      if (short_host < 0 && !host_blocked_[dev.spec.host]) short_host = dev.spec.host;
    }
    if (short_host >= 0) Block(short_host);
    return {};  // no free device with enough host slots
  }
  // The unblocked host with the most free slots: place there, or reserve it for this stage.
  const HostId h = BestHost();
  if (h >= 0) {
    if (hosts_[h].capacity - hosts_[h].used >= c) return {h, kNoDevice};
    Block(h);
  }
  return {};  // not enough free CPU slots
}

void Scheduler::TakeResources(HostId host, DeviceId device, int slots, absl::Time now) {
  SetHostUsed(host, hosts_[host].used + slots);
  if (device != kNoDevice) {
    Device& dev = devices_[device];
    if (dev.leases++ == 0) {
      free_by_kind_[dev.kind].Erase(dev.index_in_kind);
      dev.busy_since = now;
    }
  }
}

void Scheduler::ReleaseResources(HostId host, DeviceId device, int slots, absl::Time now) {
  SetHostUsed(host, hosts_[host].used - slots);
  if (device != kNoDevice) {
    Device& dev = devices_[device];
    LOOM_CHECK(dev.leases > 0);
    if (--dev.leases == 0) {
      free_by_kind_[dev.kind].Insert(dev.index_in_kind);
      if (now > dev.busy_since) dev.busy += now - dev.busy_since;
    }
  }
}

Scheduler::DeviceUsage Scheduler::Usage(DeviceId device, absl::Time now) const {
  const Device& dev = devices_[device];
  DeviceUsage u{.busy = dev.busy,
                .since = dev.added != absl::InfinitePast() ? dev.added : first_advance_};
  if (dev.leases > 0 && now > dev.busy_since) u.busy += now - dev.busy_since;
  return u;
}

std::vector<Scheduler::ReadyQueue> Scheduler::ReadyQueues() const {
  std::vector<ReadyQueue> out;
  out.reserve(classes_.size());
  for (const ResourceClass& c : classes_) {
    ReadyQueue& q = out.emplace_back();
    q.cpu_slots = c.cpu_slots;
    if (c.kind >= 0) q.device_kind = kind_names_[c.kind];
    if (c.device != kNoDevice) q.device = devices_[c.device].spec.name;
    // Stale entries (stages that left the ready state other than by a grant) are in the queue
    // until they reach its front or it is compacted.
    q.ready = static_cast<int64_t>(c.queue.size() - c.stale);
  }
  return out;
}

double Scheduler::GrantRate(absl::Time now, absl::Duration window) const {
  if (grant_times_.empty() || first_advance_ == absl::InfinitePast()) return 0;
  absl::Time from = std::max(now - window, first_advance_);
  int64_t n = 0;
  if (grant_times_.size() == kGrantTimes) {
    const absl::Time oldest = grant_times_[grant_next_];
    if (oldest >= from) {  // the ring holds fewer grants than the window had: count the ring
      from = oldest;
      n = static_cast<int64_t>(kGrantTimes);
    }
  }
  if (n == 0) {
    for (absl::Time t : grant_times_) n += t >= from ? 1 : 0;
  }
  const double span = absl::ToDoubleSeconds(now - from);
  return span > 0 ? static_cast<double>(n) / span : 0;
}

std::vector<Grant> Scheduler::Advance(absl::Time now) {
  if (first_advance_ == absl::InfinitePast()) first_advance_ = now;
  // Expire overdue leases first so their resources are available to this pass, in (deadline,
  // lease) order.
  while (!deadlines_.empty()) {
    auto [deadline, lease_id] = deadlines_.front();
    const int32_t slot = lease_slots_.Find(lease_id);
    if (slot >= 0 && deadline > now) break;
    std::pop_heap(deadlines_.begin(), deadlines_.end(), std::greater<>{});
    deadlines_.pop_back();
    if (slot < 0) continue;  // the lease ended before its deadline
    EndLease(slot, now);
    ++stats_.expirations;
    Retry(
        slot, lease_id, now,
        absl::StrCat("lease ", lease_id, " expired at its deadline ", absl::FormatTime(deadline)));
  }

  std::vector<Grant> grants;
  if (num_ready_ == 0) return grants;

  JobId current_job = 0;
  if (one_job_) {
    if (active_jobs_.empty()) return grants;
    current_job = std::get<2>(*active_jobs_.begin());
  }

  // The next decision is for the class whose head comes first. With few classes a scan over
  // their heads (kept in a local array) beats a heap; both pick the same head (the order is
  // total).
  constexpr int kScanMax = 8;
  QueueEntry scan_entry[kScanMax];
  int scan_class[kScanMax];
  int scan_n = 0;
  heap_.clear();
  for (int c = 0; c < static_cast<int>(classes_.size()); ++c) {
    CleanTop(classes_[c]);
    if (!classes_[c].queue.empty()) heap_.push_back({classes_[c].queue.Front(), c});
  }
  const bool scan = heap_.size() <= kScanMax;
  if (scan) {
    for (const auto& [e, c] : heap_) {
      scan_entry[scan_n] = e;
      scan_class[scan_n++] = c;
    }
  } else {
    std::make_heap(heap_.begin(), heap_.end(), HeapAfter{});
  }
  while (scan ? scan_n > 0 : !heap_.empty()) {
    QueueEntry entry;
    int c;
    if (scan) {
      int best = 0;
      for (int i = 1; i < scan_n; ++i) {
        if (scan_entry[i] < scan_entry[best]) best = i;
      }
      entry = scan_entry[best];
      c = scan_class[best];
      --scan_n;
      scan_entry[best] = scan_entry[scan_n];
      scan_class[best] = scan_class[scan_n];
    } else {
      std::pop_heap(heap_.begin(), heap_.end(), HeapAfter{});
      entry = heap_.back().first;
      c = heap_.back().second;
      heap_.pop_back();
    }
    ResourceClass& cls = classes_[c];
    Stage& s = stage_pool_[entry.slot];
    LOOM_CHECK(s.state == StageState::kReady && s.seq == entry.seq);
    if (one_job_ && s.job != current_job) continue;  // the class holds no stage of that job
    ++stats_.placement_attempts;
    Placement d = Place(cls);
    if (!d.placed()) continue;  // this class waits until something is released

    int slots = cls.cpu_slots;
    if (d.device != kNoDevice) slots += devices_[d.device].spec.shares_cpu_slots;
    TakeResources(d.host, d.device, slots, now);
    cls.queue.Pop();
    --num_ready_;

    LeaseId lease_id = next_lease_++;
    absl::Duration length = s.has_estimate
                                ? std::max(s.estimate * options_.lease_factor, options_.min_lease)
                                : options_.default_lease;
    s.state = StageState::kRunning;
    s.leased = true;
    s.lease = lease_id;
    s.lease_host = d.host;
    s.lease_device = d.device;
    s.lease_slots = slots;
    s.lease_start = now;
    // now + an infinite length is InfiniteFuture (unless now is InfinitePast): skip the
    // arithmetic in that common case.
    const absl::Time deadline = length == absl::InfiniteDuration() && now != absl::InfinitePast()
                                    ? absl::InfiniteFuture()
                                    : now + length;
    lease_slots_.Insert(lease_id, entry.slot);
    if (deadline != absl::InfiniteFuture()) {
      if (deadlines_.size() >= 64 && deadlines_.size() > 2 * lease_slots_.size()) {
        // Drop entries of ended leases so the heap stays proportional to live leases.
        std::erase_if(deadlines_, [&](const auto& e) { return lease_slots_.Find(e.second) < 0; });
        std::make_heap(deadlines_.begin(), deadlines_.end(), std::greater<>{});
      }
      deadlines_.push_back({deadline, lease_id});
      std::push_heap(deadlines_.begin(), deadlines_.end(), std::greater<>{});
    }
    ++s.attempts;
    ++stats_.grants;
    if (grant_times_.size() < kGrantTimes) {
      grant_times_.push_back(now);
    } else {
      grant_times_[grant_next_] = now;
      grant_next_ = (grant_next_ + 1) % kGrantTimes;
    }

    if (grants.empty()) grants.reserve(std::min<size_t>(num_ready_ + 1, 4));
    Grant& g = grants.emplace_back();
    g.lease = lease_id;
    g.stage = s.id;
    g.job = s.job;
    g.kind = s.kind;
    g.host = d.host;
    g.device = d.device;
    g.cpu_slots = cls.cpu_slots;
    g.attempt = s.attempts;
    g.submitted = s.submitted;
    g.ready = s.ready;
    g.start = now;
    g.deadline = deadline;

    CleanTop(cls);
    if (!cls.queue.empty()) {
      if (scan) {
        scan_entry[scan_n] = cls.queue.Front();
        scan_class[scan_n++] = c;
      } else {
        heap_.push_back({cls.queue.Front(), c});
        std::push_heap(heap_.begin(), heap_.end(), HeapAfter{});
      }
    }
  }
  for (HostId h : blocked_list_) {
    host_blocked_[h] = 0;
    if (host_tree_[host_leaves_ + h] == kNoHostKey) UpdateHostIndex(h);
  }
  blocked_list_.clear();
  return grants;
}

Scheduler::EndedLease Scheduler::EndLease(int32_t slot, absl::Time now) {
  Stage& s = stage_pool_[slot];
  LOOM_CHECK(s.leased);
  lease_slots_.Erase(s.lease);
  s.leased = false;
  ReleaseResources(s.lease_host, s.lease_device, s.lease_slots, now);
  return EndedLease{s.id, slot, s.lease_host, s.lease_device, s.lease_slots, s.lease_start};
}

absl::Status Scheduler::Complete(LeaseId lease_id, absl::Time now,
                                 std::optional<absl::Duration> actual) {
  const int32_t slot = lease_slots_.Find(lease_id);
  if (slot < 0) {
    return absl::NotFoundError(
        absl::StrCat("lease ", lease_id, " is unknown, already ended, expired or revoked"));
  }
  EndedLease lease = EndLease(slot, now);
  Stage& s = stage_pool_[slot];
  JobId job = s.job;
  policy_->OnFinished(
      FinishedStage{job, s.kind, lease.device != kNoDevice, actual ? *actual : now - lease.start});
  std::vector<StageId> dependents;
  if (s.deps >= 0) dependents.swap(dep_lists_[s.deps]);
  ForgetStage(slot);
  for (StageId dep : dependents) {
    const int32_t d = stage_slots_.Find(dep);
    if (d < 0) continue;
    if (--stage_pool_[d].pending_deps == 0) MakeReady(d, now);
  }
  MaybeForgetJob(job);
  return absl::OkStatus();
}

absl::Status Scheduler::Fail(LeaseId lease_id, absl::Time now, std::string_view reason) {
  const int32_t slot = lease_slots_.Find(lease_id);
  if (slot < 0) {
    return absl::NotFoundError(
        absl::StrCat("lease ", lease_id, " is unknown, already ended, expired or revoked"));
  }
  EndLease(slot, now);
  Retry(slot, lease_id, now, std::string(reason));
  return absl::OkStatus();
}

void Scheduler::Retry(int32_t slot, LeaseId lease, absl::Time now, const std::string& reason) {
  Stage& s = stage_pool_[slot];
  if (s.attempts < options_.max_attempts) {
    ++stats_.requeues;
    events_.push_back(
        StageEvent{StageEvent::Type::kRequeued, s.id, s.job, lease, now,
                   absl::StrCat(reason, " (try ", s.attempts, " of ", options_.max_attempts, ")")});
    MakeReady(slot, now);
    return;
  }
  JobId job = s.job;
  FailStage(s.id, lease, now, absl::StrCat(reason, " (gave up after ", s.attempts, " tries)"),
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
    const int32_t slot = stage_slots_.Find(id);
    if (slot < 0) continue;
    Stage& s = stage_pool_[slot];
    LeaseId lease = first ? root_lease : 0;
    StageEvent::Type t = first ? type : StageEvent::Type::kFailed;
    first = false;
    if (s.state == StageState::kReady) {
      // Its queue entry goes stale (IsLive fails once the record is freed or reused).
      ResourceClass& cls = classes_[s.cls];
      ++cls.stale;
      --num_ready_;
      s.state = StageState::kWaitingDeps;
      if (cls.stale > 16 && cls.stale > cls.queue.size() / 2) {
        cls.queue.EraseIf([&](const QueueEntry& e) { return !IsLive(e); });
        cls.stale = 0;
      }
    } else if (s.state == StageState::kRunning) {
      if (s.leased) {
        lease = s.lease;
        EndLease(slot, now);
      }
    }
    ++stats_.failures;
    events_.push_back(StageEvent{t, id, s.job, lease, now, why});
    if (s.deps >= 0) {
      for (StageId dep : dep_lists_[s.deps]) {
        work.push_back(
            {dep, absl::StrCat("dependency stage ", id, " ",
                               t == StageEvent::Type::kCancelled ? "was cancelled" : "failed")});
      }
    }
    dead_stages_.insert(id);
    touched.push_back(s.job);
    ForgetStage(slot);
  }
  for (JobId j : touched) MaybeForgetJob(j);
}

void Scheduler::ForgetStage(int32_t slot) {
  Stage& s = stage_pool_[slot];
  stage_slots_.Erase(s.id);
  s.state = StageState::kFree;
  s.leased = false;
  if (s.deps >= 0) {
    dep_lists_[s.deps].clear();
    free_dep_lists_.push_back(s.deps);
    s.deps = -1;
  }
  free_slots_.push_back(slot);
  if (Job* j = FindJob(s.job)) --j->live;
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
    if (stage_slots_.Find(id) >= 0) {
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
