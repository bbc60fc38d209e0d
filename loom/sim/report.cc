#include "loom/sim/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::sim {
namespace {

// The chart's lanes of a run, devices first, and the lane of each stage record.
struct Lanes {
  std::vector<std::string> names;
  std::vector<int> of_record;
};

Lanes LanesOf(const SimResult& result) {
  Lanes l;
  const sched::ClusterInfo& c = result.cluster;
  for (const sched::DeviceSpec& d : c.devices) {
    const std::string host = d.host < c.hosts.size() ? c.hosts[d.host].name : "?";
    l.names.push_back(absl::StrCat(host, "/", d.name));
  }
  const size_t first_host = l.names.size();
  for (const sched::HostSpec& h : c.hosts) {
    l.names.push_back(absl::StrCat(h.name, " cpu (", h.cpu_slots, " slots)"));
  }
  for (const sched::StageRecord& r : result.records) {
    if (r.device != sched::kNoDevice && r.device < c.devices.size()) {
      l.of_record.push_back(static_cast<int>(r.device));
    } else {
      l.of_record.push_back(static_cast<int>(first_host + r.host));
    }
  }
  return l;
}

std::string JobName(const SimResult& result, sched::JobId job) {
  for (const sched::JobRecord& j : result.job_records) {
    if (j.job == job) return j.name;
  }
  return absl::StrCat("job ", job);
}

double Seconds(const SimResult& result, absl::Time t) {
  absl::Time origin = absl::InfiniteFuture();
  for (const sched::JobRecord& j : result.job_records) origin = std::min(origin, j.submit);
  if (result.job_records.empty()) origin = absl::UnixEpoch();
  return absl::ToDoubleSeconds(t - origin);
}

}  // namespace

std::string FormatSummaryTable(const std::vector<SimResult>& results) {
  std::string out = absl::StrFormat("%5s  %-12s %12s %12s %7s %7s %7s %12s %12s %6s %7s\n", "jobs",
                                    "policy", "makespan_s", "bound_s", "ratio", "dev_use",
                                    "cpu_use", "mean_job_s", "max_job_s", "jain", "distort");
  for (const SimResult& r : results) {
    const sched::Metrics& m = r.metrics;
    double bound = m.bound.value();
    absl::StrAppendFormat(
        &out, "%5d  %-12s %12.1f %12.1f %7.3f %6.1f%% %6.1f%% %12.1f %12.1f %6.3f %6.1f%%\n",
        r.jobs, r.policy, m.makespan_s, bound, bound > 0 ? m.makespan_s / bound : 0.0,
        100 * m.device_utilization, 100 * m.cpu_utilization, m.mean_job_s, m.max_job_s,
        m.jain_fairness, 100 * r.mean_measure_distortion);
  }
  return out;
}

nlohmann::json ResultsToJson(const std::vector<SimResult>& results) {
  nlohmann::json runs = nlohmann::json::array();
  for (const SimResult& r : results) {
    nlohmann::json j = sched::MetricsToJson(r.metrics);
    j["policy"] = r.policy;
    j["jobs_count"] = r.jobs;
    j["mean_measure_distortion"] = r.mean_measure_distortion;
    j["decisions"] = r.decisions;
    j["events"] = r.events;
    runs.push_back(std::move(j));
  }
  return nlohmann::json{{"runs", std::move(runs)}};
}

const std::vector<base::GanttStyle>& StageKindStyles() {
  static const std::vector<base::GanttStyle> kStyles = {
      {"propose", 'P', base::BarFill::kFaded},    {"build", 'B', base::BarFill::kHatched},
      {"measure", 'M', base::BarFill::kOutlined}, {"update", 'U', base::BarFill::kDotted},
      {"other", 'O', base::BarFill::kSolid},
  };
  return kStyles;
}

std::string GanttSvg(const SimResult& result, double axis_end) {
  const sched::Metrics& m = result.metrics;
  base::GanttChart chart;
  chart.title = absl::StrFormat("%s: %d jobs", result.policy, result.jobs);
  chart.subtitle = absl::StrFormat(
      "makespan %.1f s, lower bound %.1f s, device utilization %.1f%%, CPU utilization %.1f%%",
      m.makespan_s, m.bound.value(), 100 * m.device_utilization, 100 * m.cpu_utilization);
  chart.styles = StageKindStyles();
  chart.axis_end = axis_end;
  chart.label_width = 230;  // the same in every run's chart, so their axes line up
  Lanes lanes = LanesOf(result);
  chart.lanes = lanes.names;
  std::map<sched::JobId, int> series;
  for (const sched::JobRecord& j : result.job_records) {
    series.emplace(j.job, static_cast<int>(chart.series.size()));
    chart.series.push_back(j.name);
  }
  for (size_t i = 0; i < result.records.size(); ++i) {
    const sched::StageRecord& r = result.records[i];
    const double start = Seconds(result, r.start), end = Seconds(result, r.end);
    const std::string kind(sched::StageKindName(r.kind));
    chart.items.push_back(
        {.series = series.contains(r.job) ? series[r.job] : 0,
         .style = static_cast<int>(r.kind),
         .tooltip = absl::StrFormat(
             "%s: %s, %.2f s (%.2f to %.2f s)%s", JobName(result, r.job), kind, end - start, start,
             end, r.cpu_slots > 0 ? absl::StrCat(", ", r.cpu_slots, " slots") : ""),
         .segments = {{lanes.of_record[i], start, end}},
         .attributes = {{"data-job", absl::StrCat(r.job)}, {"data-kind", kind}}});
  }
  return base::GanttSvg(chart);
}

base::ChromeTrace SimTrace(const std::vector<SimResult>& results) {
  base::ChromeTrace trace;
  for (size_t k = 0; k < results.size(); ++k) {
    const SimResult& result = results[k];
    const int pid = static_cast<int>(k) + 1;
    trace.NameProcess(pid, absl::StrFormat("%s, %d jobs", result.policy, result.jobs), pid);
    Lanes lanes = LanesOf(result);
    std::vector<base::LaneEvent> events;
    for (size_t i = 0; i < result.records.size(); ++i) {
      const sched::StageRecord& r = result.records[i];
      const std::string kind(sched::StageKindName(r.kind));
      const double start = Seconds(result, r.start), end = Seconds(result, r.end);
      events.push_back({.lane = lanes.of_record[i],
                        .event = {.name = absl::StrCat(JobName(result, r.job), " ", kind),
                                  .category = kind,
                                  .start_us = start * 1e6,
                                  .duration_us = (end - start) * 1e6,
                                  .args = {{"job", JobName(result, r.job)},
                                           {"kind", kind},
                                           {"cpu_slots", r.cpu_slots}}}});
    }
    base::AddLaneEvents(trace, pid, lanes.names, std::move(events));
  }
  return trace;
}

}  // namespace loom::sim
