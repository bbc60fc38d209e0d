#include "loom/experiment/gantt.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loom/sched/types.h"

namespace loom::experiment {
namespace {

using sched::StageKind;

// A row of the chart before sub-rows: (group, order, label). Groups: 0 device, 1 a CPU core,
// 2 unpinned CPU stages.
using LaneKey = std::tuple<int, int, std::string>;

struct Bar {
  size_t trace;
  LaneKey lane;
  double t0;
  double t1;
  int row = 0;  // assigned after packing
};

char KindLetter(StageKind kind) {
  switch (kind) {
    case StageKind::kPropose:
      return 'P';
    case StageKind::kBuild:
      return 'B';
    case StageKind::kMeasure:
      return 'M';
    case StageKind::kUpdate:
      return 'U';
    default:
      return 'O';
  }
}

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

double NiceStep(double span) {
  const double raw = std::max(span, 1e-6) / 8;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0}) {
    if (raw <= m * p) return m * p;
  }
  return 10 * p;
}

}  // namespace

std::string JobColor(int index) {
  static const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kPalette[static_cast<size_t>(std::max(0, index)) % 10];
}

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string GanttSvg(const engine::EngineResult& run, const GanttOptions& options) {
  auto rel = [&](absl::Time t) { return absl::ToDoubleSeconds(t - run.start); };
  // Bars: one per (span, core), or one per stage without spans.
  std::vector<Bar> bars;
  double end_s = std::max(0.0, rel(run.end));
  for (size_t i = 0; i < run.traces.size(); ++i) {
    const engine::StageTrace& t = run.traces[i];
    end_s = std::max(end_s, rel(t.end));
    if (t.kind == StageKind::kMeasure) {
      std::string name = t.resource;
      if (name.rfind("device:", 0) == 0) name = name.substr(7);
      bars.push_back({i, LaneKey{0, 0, absl::StrCat("device ", name)}, rel(t.start), rel(t.end)});
      continue;
    }
    size_t before = bars.size();
    for (const engine::CoreSpan& s : t.spans) {
      if (s.to <= s.from) continue;
      for (int c : s.cores) {
        bars.push_back({i, CoreLane(c, options.device_cores), rel(s.from), rel(s.to)});
      }
    }
    if (bars.size() != before) continue;
    const std::vector<int> cores = CoresOf(t.resource);
    if (cores.empty()) {
      bars.push_back({i, LaneKey{2, 0, "cpu (unpinned)"}, rel(t.start), rel(t.end)});
    } else {
      for (int c : cores) {
        bars.push_back({i, CoreLane(c, options.device_cores), rel(t.start), rel(t.end)});
      }
    }
  }
  // Pack each lane's bars into sub-rows so that overlapping stages never hide each other.
  std::map<LaneKey, std::vector<size_t>> lanes;
  for (size_t b = 0; b < bars.size(); ++b) lanes[bars[b].lane].push_back(b);
  std::vector<std::string> row_names;
  for (auto& [key, members] : lanes) {
    std::stable_sort(members.begin(), members.end(),
                     [&](size_t a, size_t b) { return bars[a].t0 < bars[b].t0; });
    std::vector<double> row_end;  // per sub-row, the end of its last bar
    const int first_row = static_cast<int>(row_names.size());
    for (size_t b : members) {
      size_t r = 0;
      while (r < row_end.size() && row_end[r] > bars[b].t0 + 1e-9) ++r;
      if (r == row_end.size()) row_end.push_back(0);
      row_end[r] = bars[b].t1;
      bars[b].row = first_row + static_cast<int>(r);
    }
    for (size_t r = 0; r < row_end.size(); ++r) {
      row_names.push_back(r == 0 ? std::get<2>(key) : absl::StrCat(std::get<2>(key), " #", r + 1));
    }
  }

  const int left = 190, right = 20, row_h = 22, gap = 4;
  const int title_h = 26, legend_h = 24, axis_h = 34;
  const int plot_w = std::max(100, options.width - left - right);
  const int rows_top = title_h + legend_h + 6;
  const int nrows = std::max<int>(1, static_cast<int>(row_names.size()));
  const int height = rows_top + nrows * (row_h + gap) + axis_h;
  const double span = std::max(end_s, 1e-3);
  auto x = [&](double s) { return left + s / span * plot_w; };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d "
      "%d\" font-family=\"sans-serif\" font-size=\"11\">\n",
      options.width, height, options.width, height);
  absl::StrAppend(
      &svg,
      "<defs>\n"
      "<pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
      "patternTransform=\"rotate(45)\"><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" "
      "stroke=\"#ffffff\" "
      "stroke-width=\"2\" stroke-opacity=\"0.6\"/></pattern>\n"
      "<pattern id=\"dots\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\"><circle "
      "cx=\"2.5\" cy=\"2.5\" r=\"1.2\" fill=\"#ffffff\" fill-opacity=\"0.7\"/></pattern>\n"
      "</defs>\n");
  absl::StrAppend(&svg, "<rect x=\"0\" y=\"0\" width=\"", options.width, "\" height=\"", height,
                  "\" fill=\"#ffffff\"/>\n");
  absl::StrAppend(&svg, "<text x=\"", left, "\" y=\"17\" font-size=\"14\" font-weight=\"bold\">",
                  XmlEscape(options.title), "</text>\n");
  // Legend: jobs by colour, kinds by letter and pattern.
  double lx = left;
  const int ly = title_h + 4;
  for (size_t j = 0; j < run.jobs.size(); ++j) {
    absl::StrAppend(&svg, absl::StrFormat("<rect class=\"legend\" x=\"%.1f\" y=\"%d\" width=\"12\" "
                                          "height=\"12\" fill=\"%s\"/>",
                                          lx, ly, JobColor(static_cast<int>(j))));
    absl::StrAppend(&svg, absl::StrFormat("<text x=\"%.1f\" y=\"%d\">%s</text>\n", lx + 16, ly + 10,
                                          XmlEscape(run.jobs[j].name)));
    lx += 30 + 6.5 * static_cast<double>(run.jobs[j].name.size());
  }
  absl::StrAppend(&svg,
                  absl::StrFormat("<text x=\"%.1f\" y=\"%d\" fill=\"#444444\">P propose (faded), B "
                                  "build (hatched), M measure (outlined), U update (dotted)"
                                  "</text>\n",
                                  lx + 10, ly + 10));
  // Rows and grid.
  for (int r = 0; r < nrows; ++r) {
    const int y = rows_top + r * (row_h + gap);
    absl::StrAppend(&svg, absl::StrFormat("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                                          "fill=\"%s\"/>",
                                          left, y, plot_w, row_h, r % 2 ? "#f7f7f7" : "#efefef"));
    const std::string name = r < static_cast<int>(row_names.size()) ? row_names[r] : "(no stages)";
    absl::StrAppend(&svg, absl::StrFormat("<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n",
                                          left - 6, y + 15, XmlEscape(name)));
  }
  const int axis_y = rows_top + nrows * (row_h + gap);
  const double step = NiceStep(span);
  for (int k = 0; k * step <= span * (1 + 1e-9); ++k) {
    const double s = k * step;
    absl::StrAppend(&svg, absl::StrFormat("<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                                          "stroke=\"#cccccc\"/>",
                                          x(s), rows_top - 2, x(s), axis_y + 4));
    absl::StrAppend(&svg, absl::StrFormat("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s"
                                          "</text>\n",
                                          x(s), axis_y + 16, absl::StrFormat("%g", s)));
  }
  absl::StrAppend(&svg, absl::StrFormat("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">time "
                                        "(s)</text>\n",
                                        left + plot_w / 2.0, axis_y + 30));
  // Stages.
  std::vector<std::vector<size_t>> bars_of(run.traces.size());
  for (size_t b = 0; b < bars.size(); ++b) bars_of[bars[b].trace].push_back(b);
  for (size_t i = 0; i < run.traces.size(); ++i) {
    const engine::StageTrace& t = run.traces[i];
    const std::string job =
        t.job >= 0 && t.job < static_cast<int>(run.jobs.size()) ? run.jobs[t.job].name : "?";
    const std::string kind(sched::StageKindName(t.kind));
    const std::string title = absl::StrFormat(
        "%s: %s%s, task %s, %.3f s (%.3f to %.3f s) on %s", job, kind,
        t.round < 0 ? " (default config)" : absl::StrCat(" round ", t.round), t.task_key,
        absl::ToDoubleSeconds(t.end - t.start), rel(t.start), rel(t.end), t.resource);
    absl::StrAppend(&svg, "<g class=\"stage\" data-job=\"", t.job, "\" data-kind=\"", kind,
                    "\"><title>", XmlEscape(title), "</title>");
    const std::string color = JobColor(t.job);
    for (size_t b : bars_of[i]) {
      const Bar& bar = bars[b];
      const double x0 = x(bar.t0);
      const double w = std::max(0.5, x(bar.t1) - x0);
      const int y = rows_top + bar.row * (row_h + gap) + 2;
      const int h = row_h - 4;
      const char* opacity = t.kind == StageKind::kPropose ? "0.45" : "1";
      const char* stroke =
          t.kind == StageKind::kMeasure ? " stroke=\"#000000\" stroke-width=\"1\"" : "";
      absl::StrAppend(&svg,
                      absl::StrFormat("<rect class=\"bar\" x=\"%.2f\" y=\"%d\" width=\"%.2f\" "
                                      "height=\"%d\" fill=\"%s\" fill-opacity=\"%s\"%s/>",
                                      x0, y, w, h, color, opacity, stroke));
      const char* pattern = t.kind == StageKind::kBuild    ? "hatch"
                            : t.kind == StageKind::kUpdate ? "dots"
                                                           : nullptr;
      if (pattern != nullptr) {
        absl::StrAppend(&svg, absl::StrFormat("<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" "
                                              "height=\"%d\" fill=\"url(#%s)\"/>",
                                              x0, y, w, h, pattern));
      }
      if (w >= 10) {
        absl::StrAppend(&svg, absl::StrFormat("<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\" "
                                              "fill=\"#000000\" font-size=\"10\">%c</text>",
                                              x0 + w / 2, y + 12, KindLetter(t.kind)));
      }
    }
    absl::StrAppend(&svg, "</g>\n");
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

}  // namespace loom::experiment
