#include "loom/sched/metrics.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_map.h"

namespace loom::sched {
namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

absl::Time Origin(const std::vector<JobRecord>& jobs, const std::vector<StageRecord>& records) {
  absl::Time t0 = absl::InfiniteFuture();
  for (const JobRecord& j : jobs) t0 = std::min(t0, j.submit);
  if (t0 == absl::InfiniteFuture()) {
    for (const StageRecord& r : records) t0 = std::min(t0, r.ready);
  }
  return t0 == absl::InfiniteFuture() ? absl::UnixEpoch() : t0;
}

// Earliest possible finish of every stage given unlimited resources: the longest path of work
// through dependencies, each job starting at its submission. `same_job_only` ignores
// dependencies across jobs (a job's time alone).
absl::flat_hash_map<StageId, double> ChainFinish(const std::vector<JobRecord>& jobs,
                                                 const std::vector<StageRecord>& records,
                                                 absl::Time t0, bool same_job_only) {
  absl::flat_hash_map<JobId, double> submit;
  for (const JobRecord& j : jobs) submit[j.job] = Seconds(j.submit - t0);
  std::vector<const StageRecord*> order;
  order.reserve(records.size());
  for (const StageRecord& r : records) order.push_back(&r);
  std::sort(order.begin(), order.end(),
            [](const StageRecord* a, const StageRecord* b) { return a->stage < b->stage; });
  absl::flat_hash_map<StageId, std::pair<JobId, double>> finish;
  for (const StageRecord* r : order) {
    double begin = same_job_only ? 0.0 : (submit.contains(r->job) ? submit[r->job] : 0.0);
    for (StageId dep : r->after) {
      auto it = finish.find(dep);
      if (it == finish.end()) continue;
      if (same_job_only && it->second.first != r->job) continue;
      begin = std::max(begin, it->second.second);
    }
    finish[r->stage] = {r->job, begin + Seconds(r->work)};
  }
  absl::flat_hash_map<StageId, double> out;
  for (const auto& [id, jf] : finish) out[id] = jf.second;
  return out;
}

}  // namespace

double LowerBound::value() const { return std::max({device_s, cpu_s, chain_s}); }

double JainIndex(const std::vector<double>& xs) {
  double sum = 0, sq = 0;
  for (double x : xs) {
    sum += x;
    sq += x * x;
  }
  if (xs.empty() || sq == 0) return 1.0;
  return sum * sum / (static_cast<double>(xs.size()) * sq);
}

LowerBound ComputeLowerBound(const ClusterInfo& cluster, const std::vector<JobRecord>& jobs,
                             const std::vector<StageRecord>& records) {
  LowerBound lb;
  std::map<std::string, int> devices_of_kind;
  for (const DeviceSpec& d : cluster.devices) ++devices_of_kind[d.kind];
  int total_slots = 0;
  for (const HostSpec& h : cluster.hosts) total_slots += h.cpu_slots;
  for (const DeviceSpec& d : cluster.devices) total_slots += d.shares_cpu_slots;

  std::map<std::string, double> device_work;
  double cpu_work = 0;
  for (const StageRecord& r : records) {
    double w = Seconds(r.work);
    if (r.device != kNoDevice && r.device < static_cast<DeviceId>(cluster.devices.size())) {
      device_work[cluster.devices[r.device].kind] += w;
    }
    cpu_work += w * r.cpu_slots;
  }
  for (const auto& [kind, work] : device_work) {
    lb.device_s = std::max(lb.device_s, work / devices_of_kind[kind]);
  }
  if (total_slots > 0) lb.cpu_s = cpu_work / total_slots;
  absl::Time t0 = Origin(jobs, records);
  for (const auto& [id, f] : ChainFinish(jobs, records, t0, /*same_job_only=*/false)) {
    lb.chain_s = std::max(lb.chain_s, f);
  }
  return lb;
}

Metrics ComputeMetrics(const ClusterInfo& cluster, const std::vector<JobRecord>& jobs,
                       const std::vector<StageRecord>& records) {
  Metrics m;
  m.bound = ComputeLowerBound(cluster, jobs, records);
  absl::Time t0 = Origin(jobs, records);
  for (const StageRecord& r : records) m.makespan_s = std::max(m.makespan_s, Seconds(r.end - t0));

  // Timelines: one per device, one per host (CPU slots, including donated ones).
  const size_t nd = cluster.devices.size();
  m.resources.resize(nd + cluster.hosts.size());
  for (size_t d = 0; d < nd; ++d) {
    const DeviceSpec& spec = cluster.devices[d];
    m.resources[d].name = cluster.hosts[spec.host].name + "/" + spec.name;
    m.resources[d].is_device = true;
  }
  for (size_t h = 0; h < cluster.hosts.size(); ++h) {
    m.resources[nd + h].name = cluster.hosts[h].name;
    m.resources[nd + h].capacity = cluster.hosts[h].cpu_slots;
  }
  for (const DeviceSpec& d : cluster.devices) {
    m.resources[nd + d.host].capacity += d.shares_cpu_slots;
  }

  double total_wait = 0;
  double cpu_slot_seconds = 0;
  std::vector<double> host_work(cluster.hosts.size(), 0.0);
  for (const StageRecord& r : records) {
    double wait = Seconds(r.start - r.ready);
    total_wait += wait;
    m.max_wait_s = std::max(m.max_wait_s, wait);
    BusyInterval iv{
        Seconds(r.start - t0), Seconds(r.end - t0), r.job, r.stage, r.kind, r.cpu_slots};
    if (r.device != kNoDevice) m.resources[r.device].intervals.push_back(iv);
    if (r.cpu_slots > 0) {
      m.resources[nd + r.host].intervals.push_back(iv);
      // Work, not occupancy: a stage slowed by oversubscription does not count twice.
      cpu_slot_seconds += Seconds(r.work) * r.cpu_slots;
      host_work[r.host] += Seconds(r.work) * r.cpu_slots;
    }
  }
  if (!records.empty()) m.mean_wait_s = total_wait / records.size();

  int total_slots = 0;
  for (size_t i = 0; i < m.resources.size(); ++i) {
    ResourceTimeline& t = m.resources[i];
    std::sort(t.intervals.begin(), t.intervals.end(),
              [](const BusyInterval& a, const BusyInterval& b) {
                return std::tie(a.start_s, a.stage) < std::tie(b.start_s, b.stage);
              });
    if (t.is_device) {
      double cover_end = -1;
      for (const BusyInterval& iv : t.intervals) {  // union of busy time
        double s = std::max(iv.start_s, cover_end);
        if (iv.end_s > s) t.busy_s += iv.end_s - s;
        cover_end = std::max(cover_end, iv.end_s);
      }
    } else {
      total_slots += t.capacity;
      t.busy_s = t.capacity > 0 ? host_work[i - nd] / t.capacity : 0;
    }
    t.utilization = m.makespan_s > 0 ? t.busy_s / m.makespan_s : 0;
  }
  for (size_t d = 0; d < nd; ++d) m.device_utilization += m.resources[d].utilization;
  if (nd > 0) m.device_utilization /= nd;
  if (total_slots > 0 && m.makespan_s > 0) {
    m.cpu_utilization = cpu_slot_seconds / (total_slots * m.makespan_s);
  }

  // Per job.
  auto alone = ChainFinish(jobs, records, t0, /*same_job_only=*/true);
  absl::flat_hash_map<JobId, double> last_end, isolated;
  for (const StageRecord& r : records) {
    last_end[r.job] = std::max(last_end[r.job], Seconds(r.end - t0));
    isolated[r.job] = std::max(isolated[r.job], alone[r.stage]);
  }
  std::vector<double> progress;
  for (const JobRecord& j : jobs) {
    if (!last_end.contains(j.job)) continue;
    JobMetrics jm;
    jm.job = j.job;
    jm.name = j.name;
    jm.submit_s = Seconds(j.submit - t0);
    jm.completion_s = last_end[j.job] - jm.submit_s;
    jm.isolated_s = isolated[j.job];
    jm.slowdown = jm.isolated_s > 0 ? jm.completion_s / jm.isolated_s : 1.0;
    m.mean_job_s += jm.completion_s;
    m.max_job_s = std::max(m.max_job_s, jm.completion_s);
    m.mean_slowdown += jm.slowdown;
    m.max_slowdown = std::max(m.max_slowdown, jm.slowdown);
    progress.push_back(jm.slowdown > 0 ? 1.0 / jm.slowdown : 0.0);
    m.jobs.push_back(std::move(jm));
  }
  if (!m.jobs.empty()) {
    m.mean_job_s /= m.jobs.size();
    m.mean_slowdown /= m.jobs.size();
  }
  m.jain_fairness = JainIndex(progress);
  return m;
}

nlohmann::json MetricsToJson(const Metrics& m, bool with_timelines) {
  nlohmann::json j;
  j["makespan_s"] = m.makespan_s;
  j["lower_bound_s"] = m.bound.value();
  j["lower_bound_parts_s"] = {
      {"device", m.bound.device_s}, {"cpu", m.bound.cpu_s}, {"chain", m.bound.chain_s}};
  j["makespan_over_bound"] = m.bound.value() > 0 ? m.makespan_s / m.bound.value() : 0.0;
  j["device_utilization"] = m.device_utilization;
  j["cpu_utilization"] = m.cpu_utilization;
  j["mean_wait_s"] = m.mean_wait_s;
  j["max_wait_s"] = m.max_wait_s;
  j["mean_job_s"] = m.mean_job_s;
  j["max_job_s"] = m.max_job_s;
  j["mean_slowdown"] = m.mean_slowdown;
  j["max_slowdown"] = m.max_slowdown;
  j["jain_fairness"] = m.jain_fairness;
  nlohmann::json jobs = nlohmann::json::array();
  for (const JobMetrics& jm : m.jobs) {
    jobs.push_back({{"job", jm.job},
                    {"name", jm.name},
                    {"submit_s", jm.submit_s},
                    {"completion_s", jm.completion_s},
                    {"isolated_s", jm.isolated_s},
                    {"slowdown", jm.slowdown}});
  }
  j["jobs"] = std::move(jobs);
  nlohmann::json res = nlohmann::json::array();
  for (const ResourceTimeline& t : m.resources) {
    nlohmann::json r = {{"name", t.name},
                        {"device", t.is_device},
                        {"capacity", t.capacity},
                        {"busy_s", t.busy_s},
                        {"utilization", t.utilization}};
    if (with_timelines) {
      nlohmann::json ivs = nlohmann::json::array();
      for (const BusyInterval& iv : t.intervals) {
        ivs.push_back({iv.start_s, iv.end_s, iv.job, std::string(StageKindName(iv.kind))});
      }
      r["intervals"] = std::move(ivs);
    }
    res.push_back(std::move(r));
  }
  j["resources"] = std::move(res);
  return j;
}

}  // namespace loom::sched
