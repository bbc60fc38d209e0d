#include "loom/sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/sched/scheduler.h"

namespace loom::sim {
namespace {

using sched::DeviceId;
using sched::HostId;
using sched::JobId;
using sched::LeaseId;
using sched::StageId;

absl::Time At(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

// One job's pre-sampled work: durations[i] for the i-th stage in (task, round, stage) order. Up to
// group->spread tasks are in flight at once, each a chain of its stages.
struct SimJob {
  const JobGroupSpec* group;
  std::string name;
  double submit_s;
  std::vector<double> durations;
  JobId id = 0;
  std::vector<size_t> task_next;   // per task: index (within the task) of its next stage
  std::vector<StageId> task_last;  // per task: its last completed stage
  int next_task = 0;               // the first task not started
  int tasks_done = 0;
  StageId last_stage = 0;  // the job's stage just completed (dependency of a task it starts)
  size_t StagesPerTask() const { return group->stages.size() * static_cast<size_t>(group->rounds); }
};

// A submitted stage: its task and the stage it runs after (0: none).
struct Submitted {
  int task = 0;
  StageId after = 0;
};

struct Running {
  LeaseId lease;
  size_t job;          // index into jobs
  size_t stage_index;  // into the job's durations
  Submitted submitted;
  sched::Grant grant;
  int host_slots;     // slots the stage holds on its host, incl. a device's shared slots
  double work;        // seconds of work alone
  double remaining;   // seconds of work left
  double rate = 1;    // work seconds per simulated second
  double updated_at;  // time `remaining` was last brought up to date
  uint64_t version = 0;
  double distortion = 0;
  double time_bounded = 0;  // device stages: StageSpec::time_bounded
};

class Simulation {
 public:
  Simulation(const SimSpec& spec, std::unique_ptr<sched::Policy> policy, int jobs_per_group)
      : spec_(spec), sched_(std::move(policy), Options()) {
    policy_name_ = std::string(sched_.policy().Name());
    exclusive_ = sched_.policy().ExclusiveResources();
    base::Rng rng(spec.seed);
    for (const JobGroupSpec& g : spec.jobs) {
      int count = jobs_per_group >= 0 ? jobs_per_group : g.count;
      for (int i = 0; i < count; ++i) {
        SimJob job;
        job.group = &g;
        job.name = count == 1 ? g.name : absl::StrCat(g.name, "-", i);
        job.submit_s = g.submit_at_s + i * g.submit_every_s;
        base::Rng job_rng = rng.Fork();
        for (int t = 0; t < g.tasks; ++t) {
          for (int r = 0; r < g.rounds; ++r) {
            for (const StageSpec& s : g.stages) job.durations.push_back(s.duration.Sample(job_rng));
          }
        }
        job.task_next.assign(static_cast<size_t>(g.tasks), 0);
        job.task_last.assign(static_cast<size_t>(g.tasks), 0);
        jobs_.push_back(std::move(job));
      }
    }
  }

  absl::StatusOr<SimResult> Run() {
    SimResult result;
    result.policy = policy_name_;
    result.jobs = static_cast<int>(jobs_.size());
    for (const HostSpecYaml& h : spec_.hosts) {
      LOOM_ASSIGN_OR_RETURN(HostId hid, sched_.AddHost({h.name, h.cpu_slots}));
      result.cluster.hosts.push_back({h.name, h.cpu_slots});
      for (const DeviceSpecYaml& d : h.devices) {
        sched::DeviceSpec ds{d.name, d.kind, hid, d.shares_cpu_slots};
        LOOM_RETURN_IF_ERROR(sched_.AddDevice(ds).status());
        result.cluster.devices.push_back(ds);
      }
    }
    host_running_.resize(spec_.hosts.size());
    device_running_.resize(result.cluster.devices.size());
    host_capacity_.resize(spec_.hosts.size());
    for (HostId h = 0; h < sched_.num_hosts(); ++h) host_capacity_[h] = sched_.FreeCpuSlots(h);
    cluster_ = &result.cluster;

    std::vector<size_t> arrivals(jobs_.size());
    for (size_t i = 0; i < jobs_.size(); ++i) arrivals[i] = i;
    std::stable_sort(arrivals.begin(), arrivals.end(),
                     [&](size_t a, size_t b) { return jobs_[a].submit_s < jobs_[b].submit_s; });
    size_t next_arrival = 0;
    size_t finished = 0;
    double now = 0;
    double distortion_sum = 0;
    int64_t measures = 0;

    while (finished < jobs_.size()) {
      // Arrivals due now.
      while (next_arrival < arrivals.size() && jobs_[arrivals[next_arrival]].submit_s <= now) {
        size_t j = arrivals[next_arrival++];
        SimJob& job = jobs_[j];
        LOOM_ASSIGN_OR_RETURN(
            job.id, sched_.AddJob({job.name, "sim", job.group->priority, At(job.submit_s)}));
        job_index_[job.id] = j;
        result.job_records.push_back({job.id, job.name, At(job.submit_s)});
        LOOM_RETURN_IF_ERROR(StartTasks(job, now));
        ++result.events;
      }
      // Decisions.
      std::vector<HostId> dirty;
      for (sched::Grant& g : sched_.Advance(At(now))) {
        size_t j = job_index_.at(g.job);
        Running r;
        r.lease = g.lease;
        r.job = j;
        r.submitted = submitted_.at(g.stage);
        submitted_.erase(g.stage);
        const size_t task = static_cast<size_t>(r.submitted.task);
        r.stage_index = task * jobs_[j].StagesPerTask() + jobs_[j].task_next[task] - 1;
        r.host_slots = g.cpu_slots;
        if (g.device != sched::kNoDevice) {
          r.host_slots += cluster_->devices[g.device].shares_cpu_slots;
          device_running_[g.device].insert(g.lease);
        }
        r.work = jobs_[j].durations[r.stage_index];
        const auto& stages = jobs_[j].group->stages;
        r.time_bounded = stages[r.stage_index % stages.size()].time_bounded;
        r.remaining = r.work;
        r.updated_at = now;
        r.grant = g;
        host_running_[r.grant.host].insert(r.lease);
        dirty.push_back(r.grant.host);
        running_.emplace(r.lease, r);
        ++result.decisions;
      }
      for (HostId h : dirty) Rerate(h, now);
      for (const sched::StageEvent& e : sched_.TakeEvents()) {
        return absl::InternalError(absl::StrCat("simulated stage ", e.stage, " ",
                                                std::string(sched::StageEventTypeName(e.type)),
                                                ": ", e.reason));
      }

      // Next event: a completion or an arrival.
      double next_time = std::numeric_limits<double>::infinity();
      while (!completions_.empty()) {
        auto [t, version, lease] = completions_.top();
        auto it = running_.find(lease);
        if (it == running_.end() || it->second.version != version) {
          completions_.pop();  // stale
          continue;
        }
        next_time = t;
        break;
      }
      if (next_arrival < arrivals.size()) {
        next_time = std::min(next_time, jobs_[arrivals[next_arrival]].submit_s);
      }
      if (!std::isfinite(next_time)) {
        return absl::InternalError(
            absl::StrCat("simulation stalled at t=", now, " s with ", sched_.num_ready(),
                         " ready stages and nothing running (policy ", policy_name_, ")"));
      }
      now = next_time;
      // All completions due at `now`.
      std::set<HostId> touched;
      while (!completions_.empty() && std::get<0>(completions_.top()) <= now) {
        auto [t, version, lease] = completions_.top();
        completions_.pop();
        auto it = running_.find(lease);
        if (it == running_.end() || it->second.version != version) continue;
        Running r = it->second;
        running_.erase(it);
        host_running_[r.grant.host].erase(lease);
        if (r.grant.device != sched::kNoDevice) device_running_[r.grant.device].erase(lease);
        touched.insert(r.grant.host);
        ++result.events;
        LOOM_RETURN_IF_ERROR(sched_.Complete(lease, At(now), At(now) - r.grant.start));
        SimJob& job = jobs_[r.job];
        sched::StageRecord rec;
        rec.stage = r.grant.stage;
        rec.job = r.grant.job;
        rec.kind = r.grant.kind;
        rec.host = r.grant.host;
        rec.device = r.grant.device;
        rec.cpu_slots = r.host_slots;
        rec.ready = r.grant.ready;
        rec.start = r.grant.start;
        rec.end = At(now);
        rec.work = absl::Seconds(r.work);
        if (r.submitted.after != 0) rec.after.push_back(r.submitted.after);
        result.records.push_back(std::move(rec));
        if (r.grant.device != sched::kNoDevice && r.grant.kind == sched::StageKind::kMeasure) {
          distortion_sum += r.distortion;
          ++measures;
        }
        const size_t task = static_cast<size_t>(r.submitted.task);
        job.last_stage = r.grant.stage;
        job.task_last[task] = r.grant.stage;
        if (job.task_next[task] < job.StagesPerTask()) {
          LOOM_RETURN_IF_ERROR(SubmitNext(job, r.submitted.task, now));
        } else if (++job.tasks_done == job.group->tasks) {
          LOOM_RETURN_IF_ERROR(sched_.CloseJob(job.id));
          ++finished;
        } else {
          LOOM_RETURN_IF_ERROR(StartTasks(job, now));
        }
      }
      for (HostId h : touched) Rerate(h, now);
    }
    result.metrics = sched::ComputeMetrics(result.cluster, result.job_records, result.records);
    result.mean_measure_distortion = measures > 0 ? distortion_sum / measures : 0;
    return result;
  }

 private:
  static sched::SchedulerOptions Options() {
    sched::SchedulerOptions o;
    o.default_lease = absl::InfiniteDuration();  // simulated workers never get lost
    return o;
  }

  // Starts tasks of `job` until `spread` of them are in flight or none is left.
  absl::Status StartTasks(SimJob& job, double now) {
    while (job.next_task < job.group->tasks && job.next_task - job.tasks_done < job.group->spread) {
      LOOM_RETURN_IF_ERROR(SubmitNext(job, job.next_task++, now));
    }
    return absl::OkStatus();
  }

  // Submits the next stage of `task`: after the task's previous stage, or for its first stage
  // after the job's last completed one (with spread 1, the previous task's last stage).
  absl::Status SubmitNext(SimJob& job, int task, double now) {
    const size_t t = static_cast<size_t>(task);
    const auto& stages = job.group->stages;
    const StageSpec& s = stages[job.task_next[t] % stages.size()];
    sched::StageRequest req;
    req.job = job.id;
    req.kind = s.kind;
    req.need.cpu_slots = s.cpu_slots;
    req.need.device_kind = s.device_kind;
    const StageId after = job.task_last[t] != 0 ? job.task_last[t] : job.last_stage;
    if (after != 0) req.after.push_back(after);
    ++job.task_next[t];
    LOOM_ASSIGN_OR_RETURN(StageId id, sched_.Submit(req, At(now)));
    submitted_[id] = {.task = task, .after = after};
    return absl::OkStatus();
  }

  // Recomputes the speed of every stage on host `h` (and its devices) after a change there.
  void Rerate(HostId h, double now) {
    if (exclusive_) {
      // Capacity is never exceeded: every stage runs at full speed; schedule new ones only.
      for (LeaseId l : host_running_[h]) {
        Running& r = running_.at(l);
        if (r.version == 0) Schedule(r, now, 1.0);
      }
      return;
    }
    int demand = 0;
    std::set<JobId> jobs_here;
    for (LeaseId l : host_running_[h]) {
      const Running& r = running_.at(l);
      demand += r.host_slots;
      jobs_here.insert(r.grant.job);
    }
    const int cap = std::max(host_capacity_[h], 1);
    const bool oversubscribed = demand > cap;
    const double share = oversubscribed ? static_cast<double>(cap) / demand : 1.0;
    const int other_jobs = static_cast<int>(jobs_here.size()) - 1;
    for (LeaseId l : host_running_[h]) {
      Running& r = running_.at(l);
      double rate = 1.0;
      if (r.grant.device != sched::kNoDevice) {
        int k = static_cast<int>(device_running_[r.grant.device].size());
        if (spec_.interference.device_time_sharing && k > 1) {
          // Only the work-bounded part is stretched k-fold (see InterferenceSpec).
          rate = 1.0 / (r.time_bounded + (1.0 - r.time_bounded) * k);
        }
        double d = spec_.interference.measure_distortion_per_corunner *
                   ((k - 1) + (oversubscribed ? 1 : 0));
        r.distortion = std::max(r.distortion, d);
      } else {
        rate = share;
        if (oversubscribed && other_jobs > 0) {
          rate /=
              1.0 + spec_.interference.cpu_slowdown_per_extra_job[static_cast<int>(r.grant.kind)] *
                        other_jobs;
        }
      }
      if (r.version == 0 || rate != r.rate) Schedule(r, now, rate);
    }
  }

  void Schedule(Running& r, double now, double rate) {
    r.remaining -= (now - r.updated_at) * r.rate;
    if (r.remaining < 0) r.remaining = 0;
    r.updated_at = now;
    r.rate = rate;
    ++r.version;
    completions_.push({now + r.remaining / r.rate, r.version, r.lease});
  }

  const SimSpec& spec_;
  sched::Scheduler sched_;
  std::string policy_name_;
  bool exclusive_ = true;
  const sched::ClusterInfo* cluster_ = nullptr;
  std::vector<SimJob> jobs_;
  absl::flat_hash_map<JobId, size_t> job_index_;
  absl::flat_hash_map<StageId, Submitted> submitted_;  // submitted, not yet granted
  absl::flat_hash_map<LeaseId, Running> running_;
  std::vector<std::set<LeaseId>> host_running_;
  std::vector<std::set<LeaseId>> device_running_;
  std::vector<int> host_capacity_;
  // (time, version, lease), earliest first; ties by version then lease for determinism.
  using Event = std::tuple<double, uint64_t, LeaseId>;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> completions_;
};

}  // namespace

absl::StatusOr<SimResult> Simulate(const SimSpec& spec, std::string_view policy,
                                   int jobs_per_group) {
  LOOM_ASSIGN_OR_RETURN(auto p, sched::MakePolicy(policy));
  Simulation sim(spec, std::move(p), jobs_per_group);
  return sim.Run();
}

absl::StatusOr<std::vector<SimResult>> SimulateAll(const SimSpec& spec) {
  std::vector<SimResult> out;
  std::vector<int> counts = spec.sweep_jobs;
  if (counts.empty()) counts.push_back(-1);
  for (int n : counts) {
    for (const std::string& p : spec.policies) {
      LOOM_ASSIGN_OR_RETURN(SimResult r, Simulate(spec, p, n));
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace loom::sim
