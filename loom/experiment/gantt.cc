#include "loom/experiment/gantt.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "loom/sched/types.h"
#include "loom/sim/report.h"

namespace loom::experiment {
namespace {

using sched::StageKind;

// A lane before ordering: (group, order, label). Groups: 0 device, 1 a CPU core, 2 unpinned.
using LaneKey = std::tuple<int, int, std::string>;

// "cpu:0,1" -> {0, 1}; anything else -> {}.
std::vector<int> CoresOf(const std::string& resource) {
  std::vector<int> cores;
  if (resource.rfind("cpu:", 0) != 0) return cores;
  for (absl::string_view part : absl::StrSplit(resource.substr(4), ',')) {
    int c = 0;
    if (!absl::SimpleAtoi(part, &c)) return {};
    cores.push_back(c);
  }
  return cores;
}

LaneKey CoreLane(int core, const std::vector<int>& device_cores) {
  const bool lent = std::count(device_cores.begin(), device_cores.end(), core) != 0;
  return {1, core, absl::StrCat("core ", core, lent ? " (device, lent)" : "")};
}

}  // namespace

base::GanttChart GanttChartOf(const engine::EngineResult& run, const GanttOptions& options) {
  auto rel = [&](absl::Time t) { return absl::ToDoubleSeconds(t - run.start); };
  base::GanttChart chart;
  chart.title = options.title;
  chart.subtitle = options.subtitle;
  chart.styles = sim::StageKindStyles();
  chart.axis_end = options.axis_end;
  chart.width = options.width;
  chart.label_width = options.label_width;
  for (const engine::JobResult& j : run.jobs) chart.series.push_back(j.name);
  // Segments with their lane keys; lanes are numbered once all are known.
  std::vector<std::vector<std::pair<LaneKey, std::pair<double, double>>>> segments(
      run.traces.size());
  std::map<LaneKey, int> lanes;
  for (size_t i = 0; i < run.traces.size(); ++i) {
    const engine::StageTrace& t = run.traces[i];
    auto add = [&](const LaneKey& lane, double from, double to) {
      lanes.emplace(lane, 0);
      segments[i].push_back({lane, {from, to}});
    };
    if (t.kind == StageKind::kMeasure) {
      std::string name = t.resource;
      if (name.rfind("device:", 0) == 0) name = name.substr(7);
      add(LaneKey{0, 0, absl::StrCat("device ", name)}, rel(t.start), rel(t.end));
      continue;
    }
    for (const engine::CoreSpan& s : t.spans) {
      if (s.to <= s.from) continue;
      for (int c : s.cores) add(CoreLane(c, options.device_cores), rel(s.from), rel(s.to));
    }
    if (!segments[i].empty()) continue;
    const std::vector<int> cores = CoresOf(t.resource);
    if (cores.empty()) add(LaneKey{2, 0, "cpu (unpinned)"}, rel(t.start), rel(t.end));
    for (int c : cores) add(CoreLane(c, options.device_cores), rel(t.start), rel(t.end));
  }
  for (auto& [key, index] : lanes) {
    index = static_cast<int>(chart.lanes.size());
    chart.lanes.push_back(std::get<2>(key));
  }
  for (size_t i = 0; i < run.traces.size(); ++i) {
    const engine::StageTrace& t = run.traces[i];
    const std::string job =
        t.job >= 0 && t.job < static_cast<int>(run.jobs.size()) ? run.jobs[t.job].name : "?";
    const std::string kind(sched::StageKindName(t.kind));
    base::GanttItem item{
        .series = std::max(0, t.job),
        .style = static_cast<int>(t.kind),
        .tooltip = absl::StrFormat(
            "%s: %s%s, task %s, %.3f s (%.3f to %.3f s) on %s", job, kind,
            t.round < 0 ? " (default config)" : absl::StrCat(" round ", t.round), t.task_key,
            absl::ToDoubleSeconds(t.end - t.start), rel(t.start), rel(t.end), t.resource),
        .attributes = {{"data-job", absl::StrCat(t.job)}, {"data-kind", kind}}};
    for (const auto& [lane, span] : segments[i]) {
      item.segments.push_back({lanes[lane], span.first, span.second});
    }
    chart.items.push_back(std::move(item));
  }
  return chart;
}

std::string GanttSvg(const engine::EngineResult& run, const GanttOptions& options) {
  return base::GanttSvg(GanttChartOf(run, options));
}

}  // namespace loom::experiment
