// JobDriver's read-only snapshots for the web view and /metrics (driver_view.h), and the figures
// the driver keeps up to date for them. Snapshots are copied under the driver's lock, but copy no
// history: the Gantt's ended stages are shared in immutable chunks, the histograms and counters are
// kept incrementally. The record store (thread-safe) is read after the lock is released.
#include <algorithm>
#include <memory>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/sched/types.h"
#include "loom/service/job_driver.h"
#include "loom/service/job_progress.h"
#include "loom/tune/stage_wire.h"

namespace loom::service {
namespace {

// Latency buckets (seconds) of the queue-wait and dispatch histograms: 1 ms to 5 min.
std::vector<double> LatencyBounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
}

// Adds ms[from...] (in seconds) to `h` (LatencyBounds, set on first use); returns ms.size().
size_t FoldMillis(const std::vector<double>& ms, size_t from, Histogram& h) {
  if (h.bounds.empty()) h = MakeHistogram({}, LatencyBounds());
  for (size_t i = from; i < ms.size(); ++i) AddToHistogram(h, ms[i] / 1e3);
  return ms.size();
}

}  // namespace

Histogram MakeHistogram(const std::vector<double>& values, std::vector<double> bounds) {
  Histogram h;
  h.bounds = std::move(bounds);
  h.cumulative.assign(h.bounds.size(), 0);
  for (double v : values) AddToHistogram(h, v);
  return h;
}

void AddToHistogram(Histogram& h, double value) {
  ++h.count;
  h.sum += value;
  auto it = std::lower_bound(h.bounds.begin(), h.bounds.end(), value);
  for (size_t i = static_cast<size_t>(it - h.bounds.begin()); i < h.cumulative.size(); ++i) {
    ++h.cumulative[i];
  }
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
  ++stages_ended_[{tune::WireKindName(lease.kind), revoked ? "revoked" : "reported"}];
  ended_open_.push_back(std::move(span));
  if (ended_open_.size() >= kGanttChunk) {
    ended_in_chunks_ += ended_open_.size();
    ended_chunks_.push_back(std::make_shared<const std::vector<StageSpan>>(std::move(ended_open_)));
    ended_open_ = {};
    ended_open_.reserve(kGanttChunk);
  }
  // Whole chunks age out: beyond the count, or when their newest stage left the history.
  const absl::Time oldest = Now() - kGanttHistory;
  while (!ended_chunks_.empty() && (ended_in_chunks_ + ended_open_.size() > kMaxGanttStages ||
                                    ended_chunks_.front()->back().end < oldest)) {
    ended_in_chunks_ -= ended_chunks_.front()->size();
    ended_chunks_.pop_front();
  }
}

void JobDriver::CountJobState(v1::JobState from, v1::JobState to) {
  if (from != v1::JOB_STATE_UNSPECIFIED) --jobs_by_state_[from];
  ++jobs_by_state_[to];
}

void JobDriver::CountStoredRecords(const std::vector<tune::Record>& stored) {
  records_written_ += static_cast<int64_t>(stored.size());
  for (const tune::Record& r : stored) {
    if (r.ok()) continue;
    ++measurement_errors_;
    ++measurement_errors_by_kind_[tune::ErrorKindName(r.error)];
  }
}

void JobDriver::FoldLatencies() {
  queue_wait_folded_ = FoldMillis(queue_wait_ms_, queue_wait_folded_, queue_wait_hist_);
  dispatch_folded_ = FoldMillis(dispatch_ms_, dispatch_folded_, dispatch_hist_);
}

bool JobDriver::Running() {
  absl::MutexLock lock(&mu_);
  return started_ && !stopping_;
}

absl::Status JobDriver::ReadProgressRecords(ProgressSource& src) {
  for (size_t i = 0; i < src.task_keys.size(); ++i) {
    if (src.task_keys[i].empty()) continue;
    LOOM_ASSIGN_OR_RETURN(src.input.tasks[i].records,
                          records_->ForTask(src.task_keys[i], src.target_key, src.record_key));
  }
  return absl::OkStatus();
}

absl::StatusOr<ProgressInput> JobDriver::ProgressInputOf(const Principal& who,
                                                         const std::string& job_id) {
  ProgressSource src;
  {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(Job * job, FindVisible(who, job_id));
    src = ProgressSourceLocked(*job);
  }
  LOOM_RETURN_IF_ERROR(ReadProgressRecords(src));
  return std::move(src.input);
}

// The progress figures of a job the driver showed `who` (job_progress.h), as the gRPC handlers set
// them. The driver's lock must not be held: ProgressInputOf takes it and reads the record store.
absl::Status JobDriver::FillProgress(const Principal& who, v1::Job& job) {
  LOOM_ASSIGN_OR_RETURN(ProgressInput in, ProgressInputOf(who, job.id()));
  FillJobProgress(ComputeJobProgress(in), &job);
  return absl::OkStatus();
}

absl::StatusOr<DriverView> JobDriver::View(const Principal& who, const ViewOptions& options) {
  return BuildView(who, options, nullptr);
}

absl::StatusOr<DriverView> JobDriver::BuildView(const Principal& who, const ViewOptions& options,
                                                ProgressCache* cache) {
  if (who.role == Role::kAgent) {
    return absl::PermissionDeniedError("agent tokens cannot use the web view");
  }
  DriverView v;
  if (who.admin() && options.include_daemon) {
    LOOM_ASSIGN_OR_RETURN(v.stats, Stats(who));
  }
  std::vector<ProgressSource> sources;
  LOOM_RETURN_IF_ERROR(ViewLocked(who, options, v, sources));
  // Every job's progress from the inputs copied with it: its records read outside the lock, or
  // kept from the slot's previous snapshot when the job stored none since.
  ProgressCache kept;
  for (size_t i = 0; i < v.jobs.size(); ++i) {
    ProgressSource& src = sources[i];
    const std::string& id = v.jobs[i].id();
    KeptRecords* old = nullptr;
    if (cache != nullptr) {
      auto it = cache->find(id);
      if (it != cache->end()) old = &it->second;
    }
    if (old != nullptr && old->records == src.records && old->target_key == src.target_key &&
        old->tasks.size() == src.input.tasks.size()) {
      for (size_t t = 0; t < src.input.tasks.size(); ++t) {
        std::vector<tune::Record>& records = src.input.tasks[t].records;
        records.reserve(old->tasks[t].size());
        for (const KeptRecord& r : old->tasks[t]) {
          records.push_back(tune::Record{.id = r.id,
                                         .median_cost = r.median_cost,
                                         .error = r.error,
                                         .timestamp = r.timestamp});
        }
      }
    } else {
      if (absl::Status st = ReadProgressRecords(src); !st.ok()) {
        if (cache != nullptr) cache->clear();  // some of its records may have moved out above
        return st;
      }
      if (std::any_of(src.task_keys.begin(), src.task_keys.end(),
                      [](const std::string& k) { return !k.empty(); })) {
        ++v.records_read;
      }
    }
    FillJobProgress(ComputeJobProgress(src.input), &v.jobs[i]);
    // The job's records are let go here, not with the snapshot's: one job's at a time, what the
    // slot keeps in KeptRecord's 40 bytes each.
    KeptRecords* k = nullptr;
    if (cache != nullptr) {
      k = &kept[id];
      k->records = src.records;
      k->target_key = src.target_key;
    }
    for (ProgressTask& t : src.input.tasks) {
      if (k != nullptr) {
        std::vector<KeptRecord>& compact = k->tasks.emplace_back();
        compact.reserve(t.records.size());
        for (const tune::Record& r : t.records) {
          compact.push_back({.id = r.id,
                             .median_cost = r.median_cost,
                             .timestamp = r.timestamp,
                             .error = r.error});
        }
      }
      std::vector<tune::Record>().swap(t.records);
    }
  }
  if (cache != nullptr) *cache = std::move(kept);
  return v;
}

absl::StatusOr<std::shared_ptr<const DriverView>> JobDriver::Shared(SharedSnapshot& slot,
                                                                    const Principal& who,
                                                                    const ViewOptions& options) {
  // Read before the build: a change during it moves the stamp past this one.
  const int64_t stamp = view_stamp_.load(std::memory_order_relaxed);
  if (slot.view != nullptr) {
    const absl::Duration age = Now() - slot.view->now;
    if (age < kViewMaxAge || (stamp == slot.stamp && age < kViewMaxStale)) return slot.view;
  }
  LOOM_ASSIGN_OR_RETURN(DriverView v, BuildView(who, options, &slot.progress));
  v.version = ++last_view_version_;
  slot.view = std::make_shared<const DriverView>(std::move(v));
  slot.stamp = stamp;
  return slot.view;
}

absl::StatusOr<std::shared_ptr<const DriverView>> JobDriver::SharedView(const Principal& who) {
  if (!who.admin()) {
    return absl::PermissionDeniedError("the daemon-wide view needs an admin token");
  }
  absl::MutexLock lock(&view_mu_);
  return Shared(shared_view_, who, {.history = kGanttHistory, .include_jobs = false});
}

absl::StatusOr<std::shared_ptr<const DriverView>> JobDriver::SharedJobsView(const Principal& who) {
  if (who.role == Role::kAgent) {
    return absl::PermissionDeniedError("agent tokens cannot use the web view");
  }
  absl::MutexLock lock(&view_mu_);
  return Shared(
      shared_jobs_[who.admin() ? std::string() : who.user], who,
      {.history = absl::ZeroDuration(), .max_jobs = kJobsPageJobs, .include_daemon = false});
}

absl::Status JobDriver::ViewLocked(const Principal& who, const ViewOptions& options, DriverView& v,
                                   std::vector<ProgressSource>& progress) {
  absl::MutexLock lock(&mu_);
  v.now = Now();
  v.running = started_ && !stopping_;
  if (who.admin()) {
    v.jobs_by_state = jobs_by_state_;
    v.records_written = records_written_;
    v.measurement_errors = measurement_errors_;
    v.measurement_errors_by_kind = measurement_errors_by_kind_;
  }
  // A user's jobs are counted by walking them; an admin's come from the counters. Newest first, so
  // that at most max_jobs protos are built: older visible jobs are only counted.
  if (options.include_jobs || !who.admin()) {
    std::vector<const Job*> shown;
    for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
      const Job& job = *it->second;
      if (job.row.owner != who.user && !who.admin()) continue;
      if (!who.admin()) ++v.jobs_by_state[job.row.state];
      if (!options.include_jobs) continue;
      if (options.max_jobs > 0 && shown.size() >= static_cast<size_t>(options.max_jobs)) {
        if (who.admin()) {  // every older job is visible: count them without walking them
          v.jobs_not_shown = static_cast<int64_t>(jobs_.size() - shown.size());
          break;
        }
        ++v.jobs_not_shown;
        continue;
      }
      shown.push_back(&job);
    }
    // Queued jobs' places in one pass: ToProto alone walks every active job for each.
    absl::flat_hash_map<int64_t, int> place;
    if (std::any_of(shown.begin(), shown.end(),
                    [](const Job* j) { return j->row.state == v1::JOB_STATE_QUEUED; })) {
      std::vector<const Job*> queued;
      for (int64_t num : active_) {
        const Job* j = jobs_.at(num).get();
        if (j->row.state == v1::JOB_STATE_QUEUED) queued.push_back(j);
      }
      std::sort(queued.begin(), queued.end(),
                [](const Job* a, const Job* b) { return QueuedAhead(*a, *b); });
      for (size_t i = 0; i < queued.size(); ++i) place[queued[i]->num] = static_cast<int>(i + 1);
    }
    for (auto it = shown.rbegin(); it != shown.rend(); ++it) {
      auto at = place.find((*it)->num);
      v.jobs.push_back(ToProto(**it, at == place.end() ? 0 : at->second));
      v.latency_goal_ms[(*it)->row.id] = (*it)->row.spec.latency_goal_ms();
      progress.push_back(ProgressSourceLocked(**it));
    }
  }
  if (!who.admin() || !options.include_daemon) return absl::OkStatus();

  for (const auto& [id, a] : agents_) {
    AgentView av{.id = a->id,
                 .hostname = a->hostname,
                 .alive = a->alive,
                 .flagged = a->flagged,
                 .cpu_slots = a->cpu_slots + a->lent_slots,
                 .cpu_slots_used = a->cpu_slots + a->lent_slots - scheduler_->FreeCpuSlots(a->host),
                 .last_seen = a->last_seen,
                 .build_cache_hits = a->build_cache_hits,
                 .build_cache_misses = a->build_cache_misses};
    for (const v1::DeviceInfo& d : a->devices) av.devices.push_back(d.name());
    v.agents.push_back(std::move(av));
  }
  std::sort(v.agents.begin(), v.agents.end(),
            [](const AgentView& x, const AgentView& y) { return x.id < y.id; });

  // The history is shared, not copied: whole chunks that reach into the window, then the open
  // chunk's stages within it.
  const absl::Time since = v.now - options.history;
  for (const auto& chunk : ended_chunks_) {
    if (chunk->back().end >= since) v.ended_chunks.push_back(chunk);
  }
  for (const StageSpan& s : ended_open_) {
    if (s.end >= since) v.stages.push_back(s);
  }
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
    for (const auto& [task, live] : job.live) {
      if (live.lease.empty()) {
        ++v.queued_by_kind[std::string(sched::StageKindName(job.tasks[task].stage))];
      }
    }
  }
  v.stages_ended = stages_ended_;
  FoldLatencies();
  v.queue_wait_seconds = queue_wait_hist_;
  v.dispatch_seconds = dispatch_hist_;
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
      const std::string name = tune::WireKindName(kind);
      d.stage_seconds[name] += absl::ToDoubleSeconds(took);
      ++d.stage_count[name];
    };
    for (const auto& chunk : ended_chunks_) {
      for (const StageSpan& s : *chunk) {
        if (s.job_id == job->row.id) add(s.kind, s.end - s.start);
      }
    }
    for (const StageSpan& s : ended_open_) {
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
