#include "loom/base/chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::base {
namespace {

constexpr int kFont = 11;

// Approximate width of `text` at the chart's sans-serif 11 px.
double TextWidth(std::string_view text, int font = kFont) {
  return static_cast<double>(text.size()) * font * 0.62;
}

std::string SvgOpen(int width, int height) {
  return absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"sans-serif\" font-size=\"%d\">\n<rect x=\"0\" y=\"0\" width=\"%d\" "
      "height=\"%d\" fill=\"#ffffff\"/>\n",
      width, height, width, height, kFont, width, height);
}

// A bar's value in BarChart::value_format, a format that is data: checked when it runs (a
// format that does not take one double prints the value plainly).
std::string FormatValue(const std::string& format, double v) {
  std::string out;
  if (!absl::FormatUntyped(&out, absl::UntypedFormatSpec(format), {absl::FormatArg(v)})) {
    return absl::StrCat(v);
  }
  return out;
}

std::string Text(double x, double y, std::string_view text, std::string_view extra = "") {
  return absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\"%s%s>%s</text>\n", x, y,
                         extra.empty() ? "" : " ", extra, XmlEscape(text));
}

// Patterns drawn over a bar's colour, by fill.
constexpr char kPatterns[] =
    "<defs>\n"
    "<pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
    "patternTransform=\"rotate(45)\"><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#ffffff\" "
    "stroke-width=\"2\" stroke-opacity=\"0.7\"/></pattern>\n"
    "<pattern id=\"dots\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\"><circle "
    "cx=\"2.5\" cy=\"2.5\" r=\"1.2\" fill=\"#ffffff\" fill-opacity=\"0.8\"/></pattern>\n"
    "</defs>\n";

// One bar (or a legend swatch) of `fill` in `color`.
std::string FilledRect(double x, double y, double w, double h, const std::string& color,
                       BarFill fill, double opacity, std::string_view cls) {
  const double fill_opacity = (fill == BarFill::kFaded ? 0.4 : 1.0) * opacity;
  // An outline on a bar a few pixels wide would hide its colour.
  const char* stroke =
      fill == BarFill::kOutlined && w >= 4 ? " stroke=\"#000000\" stroke-width=\"1\"" : "";
  std::string out = absl::StrFormat(
      "<rect%s x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\" "
      "fill-opacity=\"%.2f\"%s/>",
      cls.empty() ? "" : absl::StrCat(" class=\"", std::string(cls), "\""), x, y, w, h, color,
      fill_opacity, stroke);
  const char* pattern = fill == BarFill::kHatched  ? "hatch"
                        : fill == BarFill::kDotted ? "dots"
                                                   : nullptr;
  if (pattern != nullptr && w >= 2) {
    absl::StrAppend(&out, absl::StrFormat("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
                                          "height=\"%.2f\" fill=\"url(#%s)\"/>",
                                          x, y, w, h, pattern));
  }
  return out;
}

// Legend entries laid out in columns of equal width, wrapping at `right`. Returns the y below.
struct LegendEntry {
  std::string swatch;  // SVG of a 12x12 swatch at (0, 0), translated into place
  std::string label;
};
double Legend(std::string& svg, const std::vector<LegendEntry>& entries, double left, double right,
              double top) {
  if (entries.empty()) return top;
  double col = 0;
  for (const LegendEntry& e : entries) col = std::max(col, 20 + TextWidth(e.label) + 14);
  const int per_row = std::max(1, static_cast<int>((right - left) / col));
  for (size_t i = 0; i < entries.size(); ++i) {
    const LegendEntry& e = entries[i];
    const double x = left + static_cast<double>(i % per_row) * col;
    const double y = top + static_cast<double>(i / per_row) * 17;
    // One group per entry, its label inside: a reader (or a test) finds each entry's name.
    absl::StrAppend(
        &svg, absl::StrFormat("<g class=\"legend\" transform=\"translate(%.1f,%.1f)\">", x, y),
        e.swatch, Text(17, 10, e.label), "</g>");
  }
  const size_t rows = (entries.size() + per_row - 1) / per_row;
  return top + static_cast<double>(rows) * 17;
}

}  // namespace

std::string XmlEscape(std::string_view text) {
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

AxisTicks NiceTicks(double lo, double hi, int max_ticks) {
  AxisTicks t;
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo)) {
    t.values.push_back(std::isfinite(lo) ? lo : 0);
    return t;
  }
  const double raw = (hi - lo) / std::max(1, max_ticks);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  t.step = 10 * p;
  for (double m : {1.0, 2.0, 5.0}) {
    if (raw <= m * p * (1 + 1e-9)) {
      t.step = m * p;
      break;
    }
  }
  const double first = std::ceil(lo / t.step - 1e-9);
  for (double k = first; k * t.step <= hi + t.step * 1e-9; ++k) {
    const double v = k * t.step;
    t.values.push_back(std::fabs(v) < t.step * 1e-9 ? 0.0 : v);
  }
  return t;
}

std::string TickLabel(double value, double step) {
  int decimals = 0;
  if (step > 0 && step < 1) {
    decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
    // 0.25 needs two decimals although its power of ten says one.
    const double scaled = step * std::pow(10.0, decimals);
    if (std::fabs(scaled - std::round(scaled)) > 1e-6) ++decimals;
  }
  std::string s = absl::StrFormat("%.*f", decimals, value);
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s = s.substr(1);
  return s;
}

std::string SeriesColor(int index, int count) {
  static const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  index = std::max(0, index);
  if (count <= 10) return kPalette[index % 10];
  // Golden-angle hues, with lightness alternating so neighbours differ in two ways.
  const double hue = std::fmod(index * 137.508, 360.0);
  const int light = index % 3 == 0 ? 42 : index % 3 == 1 ? 55 : 68;
  return absl::StrFormat("hsl(%.0f,70%%,%d%%)", hue, light);
}

std::vector<int> PackRows(const std::vector<std::pair<double, double>>& intervals) {
  std::vector<size_t> order(intervals.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return intervals[a].first < intervals[b].first; });
  std::vector<int> rows(intervals.size(), 0);
  std::vector<double> row_end;
  for (size_t i : order) {
    size_t r = 0;
    while (r < row_end.size() && row_end[r] > intervals[i].first + 1e-12) ++r;
    if (r == row_end.size()) row_end.push_back(intervals[i].first);
    row_end[r] = std::max(row_end[r], intervals[i].second);
    rows[i] = static_cast<int>(r);
  }
  return rows;
}

std::string GanttSvg(const GanttChart& chart) {
  // Segments per lane, packed into rows; sparse rows after the first go to an overflow row.
  struct Placed {
    size_t item;
    size_t segment;
    int row = 0;  // chart row, after compaction
    bool overflow = false;
  };
  std::vector<std::vector<Placed>> by_lane(chart.lanes.size());
  double end = 0;
  for (size_t i = 0; i < chart.items.size(); ++i) {
    const GanttItem& item = chart.items[i];
    for (size_t s = 0; s < item.segments.size(); ++s) {
      const GanttSegment& seg = item.segments[s];
      if (seg.lane < 0 || seg.lane >= static_cast<int>(chart.lanes.size())) continue;
      by_lane[static_cast<size_t>(seg.lane)].push_back({i, s});
      end = std::max(end, seg.end);
    }
  }
  const double axis_end = chart.axis_end > 0 ? chart.axis_end : std::max(end, 1e-9);
  struct Row {
    int lane = 0;
    bool first = false;  // the lane's first row (labelled)
    int lane_rows = 0;   // rows of its lane (set on the first)
    int overflow = 0;    // > 0: an overflow row holding this many sparse rows
    int band = 0;        // drawn lanes alternate their background
  };
  std::vector<Row> rows;
  for (size_t lane = 0; lane < chart.lanes.size(); ++lane) {
    std::vector<Placed>& placed = by_lane[lane];
    if (placed.empty()) continue;
    std::vector<std::pair<double, double>> iv;
    for (const Placed& p : placed) {
      const GanttSegment& seg = chart.items[p.item].segments[p.segment];
      iv.emplace_back(seg.start, seg.end);
    }
    const std::vector<int> packed = PackRows(iv);
    const int nrows = packed.empty() ? 0 : *std::max_element(packed.begin(), packed.end()) + 1;
    std::vector<double> busy(static_cast<size_t>(nrows), 0);
    for (size_t k = 0; k < placed.size(); ++k) {
      busy[static_cast<size_t>(packed[k])] += std::max(0.0, iv[k].second - iv[k].first);
    }
    // Dense rows keep their place; sparse ones (never the first) share one overflow row.
    std::vector<int> new_row(static_cast<size_t>(nrows), -1);
    int kept = 0, sparse = 0;
    for (int r = 0; r < nrows; ++r) {
      if (r == 0 || busy[static_cast<size_t>(r)] >= chart.min_row_occupancy * axis_end) {
        new_row[static_cast<size_t>(r)] = kept++;
      } else {
        ++sparse;
      }
    }
    const int base = static_cast<int>(rows.size());
    const int band = rows.empty() ? 0 : rows.back().band + 1;
    for (int r = 0; r < kept; ++r) {
      rows.push_back({.lane = static_cast<int>(lane), .first = r == 0, .band = band});
    }
    if (sparse > 0) {
      rows.push_back({.lane = static_cast<int>(lane), .overflow = sparse, .band = band});
    }
    rows[static_cast<size_t>(base)].lane_rows = static_cast<int>(rows.size()) - base;
    for (size_t k = 0; k < placed.size(); ++k) {
      const int nr = new_row[static_cast<size_t>(packed[k])];
      placed[k].overflow = nr < 0;
      placed[k].row = base + (nr < 0 ? kept : nr);
    }
  }

  // Geometry.
  // A lane's label with its row count, as drawn.
  auto lane_label = [&](const Row& row) {
    std::string label = chart.lanes[static_cast<size_t>(row.lane)];
    if (row.lane_rows > 1) absl::StrAppend(&label, " (", row.lane_rows, " rows)");
    return label;
  };
  double label_w = 80;
  for (const Row& row : rows) {
    if (row.first) label_w = std::max(label_w, TextWidth(lane_label(row)) + 16);
  }
  label_w = chart.label_width > 0 ? chart.label_width : std::min(label_w, chart.width * 0.3);
  const double left = label_w, right = chart.width - 20.0;
  const double plot_w = std::max(100.0, right - left);
  const int nrows = std::max(1, static_cast<int>(rows.size()));
  const double row_h =
      std::clamp(std::floor(chart.max_rows_height / static_cast<double>(nrows)), 6.0, 22.0);
  const double gap = row_h >= 14 ? 3 : 1;
  // The legend is laid out first to know its height.
  std::string legend;
  double y = 22;
  std::string head;
  absl::StrAppend(&head, Text(left, 17, chart.title, "font-size=\"14\" font-weight=\"bold\""));
  if (!chart.subtitle.empty()) {
    absl::StrAppend(&head, Text(left, 34, chart.subtitle, "fill=\"#444444\""));
    y = 40;
  }
  std::vector<LegendEntry> jobs;
  const int nseries = static_cast<int>(chart.series.size());
  for (int s = 0; s < nseries; ++s) {
    jobs.push_back({FilledRect(0, 0, 12, 12, SeriesColor(s, nseries), BarFill::kSolid, 1, ""),
                    chart.series[static_cast<size_t>(s)]});
  }
  y = Legend(legend, jobs, left, right, y + 4);
  std::vector<LegendEntry> kinds;
  std::vector<bool> used(chart.styles.size(), false);
  for (const GanttItem& item : chart.items) {
    if (item.style >= 0 && item.style < static_cast<int>(used.size())) {
      used[static_cast<size_t>(item.style)] = true;
    }
  }
  for (size_t k = 0; k < chart.styles.size(); ++k) {
    if (!used[k]) continue;
    const GanttStyle& st = chart.styles[k];
    kinds.push_back({FilledRect(0, 0, 12, 12, "#777777", st.fill, 1, ""),
                     st.letter ? absl::StrCat(std::string(1, st.letter), " ", st.name) : st.name});
  }
  y = Legend(legend, kinds, left, right, y + 2);
  const double rows_top = y + 8;
  const double rows_bottom = rows_top + nrows * (row_h + gap);
  const double height = rows_bottom + 40;
  auto x = [&](double t) { return left + std::clamp(t / axis_end, 0.0, 1.0) * plot_w; };

  std::string svg = SvgOpen(chart.width, static_cast<int>(std::ceil(height)));
  absl::StrAppend(&svg, kPatterns, head, legend);
  // Lane backgrounds and labels.
  for (size_t r = 0; r < rows.size(); ++r) {
    const Row& row = rows[r];
    const double ry = rows_top + static_cast<double>(r) * (row_h + gap);
    absl::StrAppend(&svg,
                    absl::StrFormat("<rect class=\"row\" x=\"%.1f\" y=\"%.1f\" "
                                    "width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>",
                                    left, ry, plot_w, row_h, row.band % 2 ? "#f6f6f6" : "#ececec"));
    if (row.first) {
      // Lane label centred on its block of rows; a rule above every lane but the first.
      const double block = row.lane_rows * (row_h + gap) - gap;
      std::string label = chart.lanes[static_cast<size_t>(row.lane)];
      if (row.lane_rows > 1) absl::StrAppend(&label, " (", row.lane_rows, " rows)");
      absl::StrAppend(
          &svg, Text(left - 6, ry + block / 2 + 4, label, "class=\"lane\" text-anchor=\"end\""));
      if (r > 0) {
        absl::StrAppend(&svg, absl::StrFormat("<line x1=\"4\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                                              "stroke=\"#bbbbbb\"/>",
                                              ry - gap / 2, right, ry - gap / 2));
      }
    }
    if (row.overflow > 0 && row_h >= 10) {
      absl::StrAppend(
          &svg, Text(left - 6, ry + row_h / 2 + 4, absl::StrCat("+", row.overflow, " short rows"),
                     "text-anchor=\"end\" fill=\"#777777\" font-size=\"9\""));
    }
  }
  if (rows.empty()) {
    absl::StrAppend(&svg, Text(left + plot_w / 2, rows_top + row_h / 2 + 4, "(nothing ran)",
                               "text-anchor=\"middle\" fill=\"#777777\""));
  }
  // Time axis: grid and labels at round numbers.
  const AxisTicks ticks = NiceTicks(0, axis_end, std::max(4, static_cast<int>(plot_w / 90)));
  for (double t : ticks.values) {
    absl::StrAppend(&svg,
                    absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                                    "stroke=\"#cccccc\"/>",
                                    x(t), rows_top - 3, x(t), rows_bottom + 3),
                    Text(x(t), rows_bottom + 16, TickLabel(t, ticks.step),
                         "class=\"tick\" text-anchor=\"middle\""));
  }
  absl::StrAppend(
      &svg, Text(left + plot_w / 2, rows_bottom + 32, chart.axis_label, "text-anchor=\"middle\""));
  // Items.
  std::vector<std::vector<const Placed*>> of_item(chart.items.size());
  for (const auto& lane : by_lane) {
    for (const Placed& p : lane) of_item[p.item].push_back(&p);
  }
  for (size_t i = 0; i < chart.items.size(); ++i) {
    const GanttItem& item = chart.items[i];
    const GanttStyle style = item.style >= 0 && item.style < static_cast<int>(chart.styles.size())
                                 ? chart.styles[static_cast<size_t>(item.style)]
                                 : GanttStyle{};
    absl::StrAppend(&svg, "<g class=\"item\"");
    for (const auto& [name, value] : item.attributes) {
      absl::StrAppend(&svg, " ", name, "=\"", XmlEscape(value), "\"");
    }
    absl::StrAppend(&svg, "><title>", XmlEscape(item.tooltip), "</title>");
    const std::string color = SeriesColor(item.series, std::max(nseries, item.series + 1));
    for (const Placed* p : of_item[i]) {
      const GanttSegment& seg = item.segments[p->segment];
      const double x0 = x(seg.start);
      const double w = std::max(0.6, x(seg.end) - x0);
      const double by = rows_top + p->row * (row_h + gap) + (row_h >= 10 ? 1 : 0);
      const double bh = row_h - (row_h >= 10 ? 2 : 0);
      absl::StrAppend(&svg,
                      FilledRect(x0, by, w, bh, color, style.fill, p->overflow ? 0.5 : 1, "bar"));
      if (style.letter != 0 && w >= 10 && bh >= 11) {
        absl::StrAppend(&svg, absl::StrFormat("<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" "
                                              "font-size=\"9\">%c</text>",
                                              x0 + w / 2, by + bh / 2 + 3.5, style.letter));
      }
    }
    absl::StrAppend(&svg, "</g>\n");
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

std::string LineChartSvg(const LineChart& chart) {
  double x_max = chart.x_max, y_lo_data = chart.y_min, y_hi_data = chart.y_min;
  for (const LineSeries& s : chart.series) {
    for (const auto* list : {&s.points, &s.markers}) {
      for (const auto& [px, py] : *list) {
        if (chart.x_max <= 0) x_max = std::max(x_max, px);
        if (!std::isfinite(py)) continue;
        y_lo_data = std::min(y_lo_data, py);
        y_hi_data = std::max(y_hi_data, py);
      }
    }
  }
  if (!(x_max > 0)) x_max = 1;
  // The y axis runs between multiples of the tick step: from y_min (lower if the data goes
  // below it) to the first multiple at or above the data plus a margin.
  if (!(y_hi_data > y_lo_data)) y_hi_data = y_lo_data + 1;
  const double pad = (y_hi_data - y_lo_data) * 0.05;
  const double step = NiceTicks(y_lo_data, y_hi_data + pad, 5).step;
  const double y_lo =
      y_lo_data < chart.y_min ? std::floor((y_lo_data - pad) / step) * step : chart.y_min;
  const double y_top = std::ceil((y_hi_data + pad) / step - 1e-9) * step;
  const AxisTicks yt = NiceTicks(y_lo, y_top, static_cast<int>(std::lround((y_top - y_lo) / step)));
  const AxisTicks xt = NiceTicks(0, x_max, std::max(3, chart.width / 90));

  // Legend height first.
  std::vector<LegendEntry> entries;
  for (const LineSeries& s : chart.series) {
    entries.push_back({absl::StrFormat("<line x1=\"0\" y1=\"6\" x2=\"12\" y2=\"6\" stroke=\"%s\" "
                                       "stroke-width=\"2.5\"%s/>",
                                       s.color, s.dashed ? " stroke-dasharray=\"4,2\"" : ""),
                       s.name});
  }
  double left = 56;
  for (double v : yt.values) left = std::max(left, TextWidth(TickLabel(v, yt.step)) + 30);
  const double right = chart.width - 12.0;
  std::string legend;
  const double legend_top = chart.subtitle.empty() ? 24 : 38;
  const double legend_bottom = Legend(legend, entries, left, right, legend_top);
  const double top = legend_bottom + 8;
  const double bottom = std::max(top + 60, chart.height - 40.0);
  const int height = static_cast<int>(bottom + 40);
  auto X = [&](double v) { return left + std::clamp(v / x_max, 0.0, 1.0) * (right - left); };
  auto Y = [&](double v) {
    return bottom - std::clamp((v - y_lo) / (y_top - y_lo), 0.0, 1.0) * (bottom - top);
  };
  std::string svg = SvgOpen(chart.width, height);
  absl::StrAppend(&svg, Text(left, 16, chart.title, "font-size=\"13\" font-weight=\"bold\""),
                  legend);
  if (!chart.subtitle.empty()) {
    absl::StrAppend(&svg, Text(left, 30, chart.subtitle, "font-size=\"10\" fill=\"#555555\""));
  }
  for (double v : yt.values) {
    absl::StrAppend(
        &svg,
        absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                        "stroke=\"#dddddd\"/>",
                        left, Y(v), right, Y(v)),
        Text(left - 5, Y(v) + 4, TickLabel(v, yt.step), "class=\"tick\" text-anchor=\"end\""));
  }
  for (double v : xt.values) {
    absl::StrAppend(
        &svg,
        absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                        "stroke=\"#eeeeee\"/>",
                        X(v), top, X(v), bottom),
        Text(X(v), bottom + 15, TickLabel(v, xt.step), "class=\"tick\" text-anchor=\"middle\""));
  }
  absl::StrAppend(
      &svg,
      absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                      "fill=\"none\" stroke=\"#999999\"/>\n",
                      left, top, right - left, bottom - top),
      Text((left + right) / 2, bottom + 32, chart.x_label, "text-anchor=\"middle\""),
      absl::StrFormat("<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" "
                      "transform=\"rotate(-90 14 %.1f)\">%s</text>\n",
                      (top + bottom) / 2, (top + bottom) / 2, XmlEscape(chart.y_label)));
  for (const LineSeries& s : chart.series) {
    if (!s.points.empty()) {
      std::string d;
      for (size_t i = 0; i < s.points.size(); ++i) {
        const auto [px, py] = s.points[i];
        if (i == 0) {
          absl::StrAppend(&d, absl::StrFormat("M%.1f,%.1f", X(px), Y(py)));
        } else if (s.step) {
          absl::StrAppend(&d, absl::StrFormat(" H%.1f V%.1f", X(px), Y(py)));
        } else {
          absl::StrAppend(&d, absl::StrFormat(" L%.1f,%.1f", X(px), Y(py)));
        }
      }
      absl::StrAppend(&svg, absl::StrFormat("<path class=\"series\" d=\"%s\" fill=\"none\" "
                                            "stroke=\"%s\" stroke-width=\"2\"%s><title>%s</title>"
                                            "</path>\n",
                                            d, s.color, s.dashed ? " stroke-dasharray=\"4,2\"" : "",
                                            XmlEscape(s.name)));
    }
    if (s.dots) {
      for (const auto& [px, py] : s.points) {
        absl::StrAppend(&svg, absl::StrFormat("<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" "
                                              "r=\"2.5\" fill=\"%s\"/>",
                                              X(px), Y(py), s.color));
      }
    }
    for (const auto& [px, py] : s.markers) {
      absl::StrAppend(&svg, absl::StrFormat("<path class=\"marker\" d=\"M%.1f,%.1f l6,6 m0,-6 "
                                            "l-6,6\" stroke=\"%s\" stroke-width=\"1.5\"/>",
                                            X(px) - 3, Y(py) - 3, s.color));
    }
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

std::string BarChartSvg(const BarChart& chart) {
  const size_t ns = chart.series.size();
  double lo = 0, hi = 0;
  for (const BarGroup& g : chart.groups) {
    for (size_t s = 0; s < g.values.size(); ++s) {
      for (double v :
           {g.values[s], s < g.low.size() ? g.low[s] : NAN, s < g.high.size() ? g.high[s] : NAN}) {
        if (!std::isfinite(v)) continue;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
  }
  if (!(hi > lo)) hi = lo + 1;
  // The axis runs between multiples of the tick step around the padded range, so no bar ends on
  // the frame and both ends carry a tick.
  const double pad = (hi - lo) * 0.08;
  AxisTicks yt = NiceTicks(lo < 0 ? lo - pad : 0, hi > 0 ? hi + pad : 0, 6);
  const double y_lo = std::floor((lo < 0 ? lo - pad : 0) / yt.step + 1e-9) * yt.step;
  const double y_hi = std::ceil((hi > 0 ? hi + pad : 0) / yt.step - 1e-9) * yt.step;
  yt = NiceTicks(y_lo, y_hi, static_cast<int>(std::lround((y_hi - y_lo) / yt.step)));
  auto color = [&](size_t s) {
    return s < chart.colors.size() ? chart.colors[s]
                                   : SeriesColor(static_cast<int>(s), static_cast<int>(ns));
  };
  std::vector<LegendEntry> entries;
  for (size_t s = 0; s < ns; ++s) {
    entries.push_back(
        {FilledRect(0, 0, 12, 12, color(s), BarFill::kSolid, 1, ""), chart.series[s]});
  }
  double left = 56;
  for (double v : yt.values) left = std::max(left, TextWidth(TickLabel(v, yt.step)) + 30);
  const double right = chart.width - 12.0;
  std::string legend;
  const double top = Legend(legend, entries, left, right, 24) + 10;
  const double bottom = std::max(top + 60, chart.height - 44.0);
  const int height = static_cast<int>(bottom + 44);
  auto Y = [&](double v) { return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top); };
  std::string svg = SvgOpen(chart.width, height);
  absl::StrAppend(&svg, Text(left, 16, chart.title, "font-size=\"13\" font-weight=\"bold\""),
                  legend);
  for (double v : yt.values) {
    absl::StrAppend(
        &svg,
        absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                        "stroke=\"%s\"/>",
                        left, Y(v), right, Y(v), v == 0 ? "#888888" : "#dddddd"),
        Text(left - 5, Y(v) + 4, TickLabel(v, yt.step), "class=\"tick\" text-anchor=\"end\""));
  }
  absl::StrAppend(
      &svg, absl::StrFormat("<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" "
                            "transform=\"rotate(-90 14 %.1f)\">%s</text>\n",
                            (top + bottom) / 2, (top + bottom) / 2, XmlEscape(chart.y_label)));
  const double group_w = (right - left) / std::max<size_t>(1, chart.groups.size());
  const double bar_w = std::min(40.0, group_w * 0.8 / std::max<size_t>(1, ns));
  for (size_t g = 0; g < chart.groups.size(); ++g) {
    const BarGroup& grp = chart.groups[g];
    const double gx = left + group_w * static_cast<double>(g);
    const double x0 = gx + (group_w - bar_w * static_cast<double>(ns)) / 2;
    for (size_t s = 0; s < ns && s < grp.values.size(); ++s) {
      const double v = grp.values[s];
      if (!std::isfinite(v)) continue;
      const double bx = x0 + bar_w * static_cast<double>(s);
      const double y0 = Y(std::max(v, 0.0)), y1 = Y(std::min(v, 0.0));
      absl::StrAppend(&svg, "<g class=\"item\"><title>",
                      XmlEscape(absl::StrCat(grp.label, ", ", chart.series[s], ": ",
                                             FormatValue(chart.value_format, v))),
                      "</title>",
                      FilledRect(bx + 1, y0, bar_w - 2, std::max(0.5, y1 - y0), color(s),
                                 BarFill::kSolid, 1, "bar"));
      const double lo_v = s < grp.low.size() ? grp.low[s] : NAN;
      const double hi_v = s < grp.high.size() ? grp.high[s] : NAN;
      if (std::isfinite(lo_v) && std::isfinite(hi_v)) {
        const double cx = bx + bar_w / 2;
        absl::StrAppend(&svg,
                        absl::StrFormat("<path class=\"error\" d=\"M%.1f,%.1f V%.1f "
                                        "M%.1f,%.1f h8 M%.1f,%.1f h8\" stroke=\"#000000\" "
                                        "stroke-width=\"1.2\" fill=\"none\"/>",
                                        cx, Y(lo_v), Y(hi_v), cx - 4, Y(lo_v), cx - 4, Y(hi_v)));
      }
      const double label_y = v >= 0 ? y0 - 3 : y1 + 10;
      if (bar_w >= 18) {
        absl::StrAppend(&svg, Text(bx + bar_w / 2, label_y, FormatValue(chart.value_format, v),
                                   "text-anchor=\"middle\" font-size=\"9\""));
      }
      absl::StrAppend(&svg, "</g>\n");
    }
    absl::StrAppend(&svg, Text(gx + group_w / 2, bottom + 16, grp.label,
                               "class=\"group\" text-anchor=\"middle\""));
  }
  absl::StrAppend(&svg,
                  absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                                  "fill=\"none\" stroke=\"#999999\"/>\n",
                                  left, top, right - left, bottom - top),
                  "</svg>\n");
  return svg;
}

}  // namespace loom::base
