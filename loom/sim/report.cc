#include "loom/sim/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::sim {
namespace {

std::string Colour(sched::JobId job) {
  double hue = std::fmod(static_cast<double>(job) * 137.508, 360.0);  // golden-angle spacing
  return absl::StrFormat("hsl(%.0f,65%%,55%%)", hue);
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
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

std::string GanttSvg(const SimResult& result) {
  const sched::Metrics& m = result.metrics;
  // Rows: each device, then each host's CPU stages packed into lanes (greedy, by start time).
  struct Row {
    std::string label;
    std::vector<const sched::BusyInterval*> bars;
  };
  std::vector<Row> rows;
  for (const sched::ResourceTimeline& t : m.resources) {
    if (t.is_device) {
      // Under `uncontrolled` intervals overlap: give each concurrent stage its own lane too.
      std::vector<double> lane_end;
      std::vector<Row> lanes;
      for (const sched::BusyInterval& iv : t.intervals) {
        size_t k = 0;
        while (k < lane_end.size() && lane_end[k] > iv.start_s + 1e-9) ++k;
        if (k == lane_end.size()) {
          lane_end.push_back(0);
          lanes.push_back({k == 0 ? t.name : absl::StrCat(t.name, " (+", k, ")"), {}});
        }
        lane_end[k] = iv.end_s;
        lanes[k].bars.push_back(&iv);
      }
      if (lanes.empty()) lanes.push_back({t.name, {}});
      for (Row& r : lanes) rows.push_back(std::move(r));
      continue;
    }
    std::vector<double> lane_end;
    std::vector<Row> lanes;
    for (const sched::BusyInterval& iv : t.intervals) {
      if (iv.slots == 0) continue;
      size_t k = 0;
      while (k < lane_end.size() && lane_end[k] > iv.start_s + 1e-9) ++k;
      if (k == lane_end.size()) {
        lane_end.push_back(0);
        lanes.push_back({absl::StrCat(t.name, " cpu ", k), {}});
      }
      lane_end[k] = iv.end_s;
      lanes[k].bars.push_back(&iv);
    }
    for (Row& r : lanes) rows.push_back(std::move(r));
  }
  const double label_w = 150, chart_w = 1000, row_h = 18, top = 40;
  const double span = std::max(m.makespan_s, 1e-9);
  const double height = top + rows.size() * row_h + 30;
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"10\" y=\"20\" font-size=\"14\">%s: %d jobs, makespan %.1f s, lower bound "
      "%.1f s, device utilization %.1f%%</text>\n",
      label_w + chart_w + 20, height, Escape(result.policy), result.jobs, m.makespan_s,
      m.bound.value(), 100 * m.device_utilization);
  for (size_t i = 0; i < rows.size(); ++i) {
    double y = top + i * row_h;
    absl::StrAppendFormat(&svg, "<text x=\"5\" y=\"%.1f\">%s</text>\n", y + row_h - 5,
                          Escape(rows[i].label));
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                          "fill=\"#f2f2f2\"/>\n",
                          label_w, y + 1, chart_w, row_h - 2);
    for (const sched::BusyInterval* iv : rows[i].bars) {
      double x = label_w + iv->start_s / span * chart_w;
      double w = std::max((iv->end_s - iv->start_s) / span * chart_w, 0.5);
      absl::StrAppendFormat(&svg,
                            "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" "
                            "fill=\"%s\"><title>job %d %s %.2f-%.2f s</title></rect>\n",
                            x, y + 2, w, row_h - 4, Colour(iv->job), iv->job,
                            std::string(sched::StageKindName(iv->kind)), iv->start_s, iv->end_s);
    }
  }
  double axis_y = top + rows.size() * row_h + 15;
  for (int k = 0; k <= 10; ++k) {
    absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n",
                          label_w + k * chart_w / 10, axis_y, span * k / 10);
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace loom::sim
