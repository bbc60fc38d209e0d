// JobDriver's read-only snapshots for the web view and /metrics (driver_view.h): everything is
// copied under the driver's lock; the record store (thread-safe) is read after it is released.
#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/service/job_driver.h"
#include "loom/service/job_progress.h"
#include "loom/v1/stage_names.h"

namespace loom::service {
namespace {

// Ended stages kept for the Gantt chart: at 10 stages per second, more than half an hour.
constexpr size_t kMaxEndedStages = 20000;

// Latency buckets (seconds) of the queue-wait and dispatch histograms: 1 ms to 5 min.
std::vector<double> LatencyBounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
}

Histogram MillisHistogram(const std::vector<double>& ms) {
  std::vector<double> seconds;
  seconds.reserve(ms.size());
  for (double v : ms) seconds.push_back(v / 1e3);
  return MakeHistogram(seconds, LatencyBounds());
}

std::string QueuedKindName(TaskPhase phase) {
  switch (phase) {
    case TaskPhase::kPropose:
      return v1::StageKindShortName(v1::STAGE_KIND_PROPOSE);
    case TaskPhase::kBuild:
      return v1::StageKindShortName(v1::STAGE_KIND_BUILD);
    case TaskPhase::kMeasure:
      return v1::StageKindShortName(v1::STAGE_KIND_MEASURE);
    case TaskPhase::kUpdate:
      return v1::StageKindShortName(v1::STAGE_KIND_UPDATE);
    default:
      return "other";
  }
}

}  // namespace

Histogram MakeHistogram(const std::vector<double>& values, std::vector<double> bounds) {
  Histogram h;
  h.bounds = std::move(bounds);
  h.cumulative.assign(h.bounds.size(), 0);
  for (double v : values) {
    ++h.count;
    h.sum += v;
    const auto it = std::lower_bound(h.bounds.begin(), h.bounds.end(), v);
    if (it != h.bounds.end()) ++h.cumulative[it - h.bounds.begin()];
  }
  for (size_t i = 1; i < h.cumulative.size(); ++i) h.cumulative[i] += h.cumulative[i - 1];
  return h;
}

void JobDriver::RememberEnded(const Lease& lease, bool revoked) {
  auto job = jobs_.find(lease.job);
  StageSpan span{.job_id = job != jobs_.end() ? job->second->row.id : absl::StrCat("j", lease.job),
                 .task = lease.task,
                 .kind = lease.kind,
                 .agent_id = lease.agent_id,
                 .device = lease.device_name,
                 .cpu_slots = lease.cpu_slots,
                 .start = lease.granted,
                 .end = Now()};
  ++stages_ended_[{v1::StageKindShortName(lease.kind), revoked ? "revoked" : "reported"}];
  ended_stages_.push_back(std::move(span));
  if (ended_stages_.size() > kMaxEndedStages) ended_stages_.pop_front();
}

bool JobDriver::Running() {
  absl::MutexLock lock(&mu_);
  return started_ && !stopping_;
}

// The progress figures of a job the driver showed `who` (job_progress.h), as the gRPC handlers set
// them. The driver's lock must not be held: ProgressInputOf takes it and reads the record store.
absl::Status JobDriver::FillProgress(const Principal& who, v1::Job& job) {
  LOOM_ASSIGN_OR_RETURN(ProgressInput in, ProgressInputOf(who, job.id()));
  FillJobProgress(ComputeJobProgress(in), &job);
  return absl::OkStatus();
}

absl::StatusOr<DriverView> JobDriver::View(const Principal& who, const ViewOptions& options) {
  if (who.role == Role::kAgent) {
    return absl::PermissionDeniedError("agent tokens cannot use the web view");
  }
  DriverView v;
  if (who.admin()) {
    LOOM_ASSIGN_OR_RETURN(v.stats, Stats(who));
  }
  LOOM_RETURN_IF_ERROR(ViewLocked(who, options, v));
  for (v1::Job& job : v.jobs) LOOM_RETURN_IF_ERROR(FillProgress(who, job));
  return v;
}

absl::Status JobDriver::ViewLocked(const Principal& who, const ViewOptions& options,
                                   DriverView& v) {
  absl::MutexLock lock(&mu_);
  v.now = Now();
  v.running = started_ && !stopping_;
  for (const auto& [num, job] : jobs_) {
    if (who.admin()) {
      v.records_written += job->row.records;
      for (const TaskRow& t : job->tasks) v.measurement_errors += t.errors;
    }
    if (job->row.owner != who.user && !who.admin()) continue;
    ++v.jobs_by_state[job->row.state];
    if (!options.include_jobs) continue;
    v.jobs.push_back(ToProto(*job));
    v.latency_goal_ms[job->row.id] = job->row.spec.latency_goal_ms();
  }
  if (options.max_jobs > 0 && v.jobs.size() > static_cast<size_t>(options.max_jobs)) {
    const size_t drop = v.jobs.size() - static_cast<size_t>(options.max_jobs);
    for (size_t i = 0; i < drop; ++i) v.latency_goal_ms.erase(v.jobs[i].id());
    v.jobs.erase(v.jobs.begin(), v.jobs.begin() + static_cast<std::ptrdiff_t>(drop));
    v.jobs_not_shown = static_cast<int64_t>(drop);
  }
  if (!who.admin()) return absl::OkStatus();

  for (const auto& [id, a] : agents_) {
    AgentView av{.id = a->id,
                 .hostname = a->hostname,
                 .alive = a->alive,
                 .flagged = a->flagged,
                 .cpu_slots = a->cpu_slots + a->lent_slots,
                 .cpu_slots_used = a->cpu_slots + a->lent_slots - scheduler_->FreeCpuSlots(a->host),
                 .last_seen = a->last_seen};
    for (const v1::DeviceInfo& d : a->devices) av.devices.push_back(d.name());
    v.agents.push_back(std::move(av));
  }
  std::sort(v.agents.begin(), v.agents.end(),
            [](const AgentView& x, const AgentView& y) { return x.id < y.id; });

  const absl::Time since = v.now - options.history;
  auto first = std::lower_bound(ended_stages_.begin(), ended_stages_.end(), since,
                                [](const StageSpan& s, absl::Time t) { return s.end < t; });
  v.stages.assign(first, ended_stages_.end());
  std::vector<const Lease*> running;
  for (const auto& [id, l] : leases_) running.push_back(&l);
  std::sort(running.begin(), running.end(),
            [](const Lease* x, const Lease* y) { return x->id < y->id; });
  for (const Lease* l : running) {
    auto job = jobs_.find(l->job);
    v.stages.push_back(
        StageSpan{.job_id = job != jobs_.end() ? job->second->row.id : absl::StrCat("j", l->job),
                  .task = l->task,
                  .kind = l->kind,
                  .agent_id = l->agent_id,
                  .device = l->device_name,
                  .cpu_slots = l->cpu_slots,
                  .start = l->granted,
                  .end = v.now,
                  .running = true});
  }

  for (int64_t num : active_) {
    auto it = jobs_.find(num);
    if (it == jobs_.end()) continue;
    const Job& job = *it->second;
    if (!job.stage_live || !job.lease.empty()) continue;
    const int task = CurrentTask(job);
    if (task >= 0) ++v.queued_by_kind[QueuedKindName(job.tasks[task].phase)];
  }
  v.stages_ended = stages_ended_;
  v.queue_wait_seconds = MillisHistogram(queue_wait_ms_);
  v.dispatch_seconds = MillisHistogram(dispatch_ms_);
  return absl::OkStatus();
}

absl::StatusOr<JobDetail> JobDriver::Detail(const Principal& who, const std::string& job_id) {
  JobDetail d;
  std::vector<std::string> task_keys;
  std::string target_key;
  std::string record_key;
  {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(Job * job, FindVisible(who, job_id));
    d.job = ToProto(*job);
    d.latency_goal_ms = job->row.spec.latency_goal_ms();
    target_key = job->row.target_key;
    record_key = job->row.RecordKey();
    std::set<std::string> seen;
    for (const TaskRow& t : job->tasks) {
      if (seen.insert(t.task_key).second) task_keys.push_back(t.task_key);
    }
    auto add = [&](const v1::StageKind kind, absl::Duration took) {
      const std::string name = v1::StageKindShortName(kind);
      d.stage_seconds[name] += absl::ToDoubleSeconds(took);
      ++d.stage_count[name];
    };
    for (const StageSpan& s : ended_stages_) {
      if (s.job_id == job->row.id) add(s.kind, s.end - s.start);
    }
    for (const auto& [id, l] : leases_) {
      if (l.job == job->num) add(l.kind, Now() - l.granted);
    }
  }
  // A job not prepared yet has no target key and no records.
  if (!target_key.empty()) {
    for (const std::string& key : task_keys) {
      LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> rs,
                            records_->ForTask(key, target_key, record_key));
      for (tune::Record& r : rs) d.records.push_back(std::move(r));
    }
  }
  LOOM_RETURN_IF_ERROR(FillProgress(who, d.job));
  return d;
}

}  // namespace loom::service
