// SVG charts for reports: Gantt charts of stages on resources, line charts (tuning curves) and
// grouped bar charts with error bars. The unit knows nothing of tuning or scheduling: callers map
// their data onto lanes, items, series and groups. It is the one place for XML escaping,
// round-number axis ticks, series colours and row packing. It lives in base/ so that sim/ (which
// may use only base/ and sched/), experiment/ and the service's web view can all draw with it.
// Callers: experiment/gantt.cc and experiment/report.cc (report.html, gantt-<setup>.svg),
// sim/report.cc (`loom simulate -o DIR`), base/chrome_trace.h users (PackRows).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom::base {

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string XmlEscape(std::string_view text);

// Ticks at round numbers (1, 2 or 5 x 10^k apart) from the first multiple of the step at or above
// `lo` to the last at or below `hi`, at most about `max_ticks` + 1 of them. hi <= lo gives one
// tick at lo.
struct AxisTicks {
  double step = 1;
  std::vector<double> values;
};
AxisTicks NiceTicks(double lo, double hi, int max_ticks = 8);

// A tick label with as many decimals as the step needs: "0", "250", "0.5", "1.25"; never "-0".
std::string TickLabel(double value, double step);

// The colour of series `index` of `count`: a ten-colour palette (Tableau 10) while count <= 10,
// hues spaced by the golden angle beyond, so 64 series stay distinct from their neighbours.
std::string SeriesColor(int index, int count);

// Rows for intervals that may overlap: each interval (start, end) gets the first row whose last
// interval ended at or before its start (by start time, ties in input order), so overlapping
// intervals never share a row. Returns one row per interval, in input order. Used by the Gantt
// chart's lanes and by Chrome traces (one thread per row: complete events must nest).
std::vector<int> PackRows(const std::vector<std::pair<double, double>>& intervals);

// How a Gantt item of one kind is drawn: the series colour, then a pattern over it.
enum class BarFill { kSolid, kFaded, kHatched, kDotted, kOutlined };

struct GanttStyle {
  std::string name;  // in the legend: "build"
  char letter = 0;   // drawn on bars wide enough; 0: none
  BarFill fill = BarFill::kSolid;
};

struct GanttSegment {
  int lane = 0;  // index into GanttChart::lanes
  double start = 0;
  double end = 0;
};

// One thing that ran (a stage), drawn as one <g class="item"> with one <rect class="bar"> per
// segment (a stage moved between cores, or spread over several, has several).
struct GanttItem {
  int series = 0;  // colour and legend entry (a job)
  int style = 0;   // index into GanttChart::styles (a stage kind)
  std::string tooltip;
  std::vector<GanttSegment> segments;
  // Extra attributes of the item's <g> ("data-job" -> "2"); names are the caller's, values are
  // escaped.
  std::vector<std::pair<std::string, std::string>> attributes;
};

struct GanttChart {
  std::string title;
  std::string subtitle;             // a line of figures under the title
  std::vector<std::string> series;  // legend, by colour (SeriesColor(i, series.size()))
  std::vector<GanttStyle> styles;   // legend, by fill
  std::vector<std::string> lanes;   // resources, top to bottom; a lane without segments is left out
  std::vector<GanttItem> items;
  // The axis runs from 0 to axis_end; 0: the latest segment end. The charts of one report pass
  // the same value, so equal durations are equally wide in all of them.
  double axis_end = 0;
  std::string axis_label = "time (s)";
  int width = 1100;
  // Pixels left of the plot for lane labels; 0: as wide as the longest label. Charts meant to be
  // compared pass the same value, so their time axes line up too.
  int label_width = 0;
  // Overlapping segments of a lane are packed into rows (PackRows). Rows after a lane's first
  // that are busy less than this fraction of the axis are merged into one overflow row of the
  // lane, drawn with overlapping translucent bars, so a short burst of concurrency (16 jobs
  // proposing at once at time 0) adds one row instead of fifteen nearly empty ones.
  double min_row_occupancy = 0.02;
  // Height budget of the rows: rows shrink (down to 6 px) so that many still fit.
  int max_rows_height = 640;
};

std::string GanttSvg(const GanttChart& chart);

struct LineSeries {
  std::string name;
  std::string color;                              // e.g. SeriesColor(i, n)
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order
  bool step = true;  // a staircase (best so far), else straight segments
  bool dashed = false;
  std::vector<std::pair<double, double>> markers;  // extra points drawn as small crosses
  bool dots = false;  // a small circle (class "point") at each of `points`, so each is seen
};

struct LineChart {
  std::string title;
  std::string subtitle;  // a smaller grey line under the title
  std::string x_label;
  std::string y_label;
  std::vector<LineSeries> series;
  double x_max = 0;  // 0: the largest x; charts meant to be compared pass the same value
  double y_min = 0;  // the y axis starts here (0 unless the caller says otherwise)
  int width = 520;
  int height = 300;
};

std::string LineChartSvg(const LineChart& chart);

// Grouped vertical bars with optional error bars; values may be negative (bars grow from 0).
struct BarGroup {
  std::string label;
  std::vector<double> values;  // one per series; NaN: no bar
  // Error bar ends per series (same length as values, or empty); NaN: no error bar.
  std::vector<double> low;
  std::vector<double> high;
};

struct BarChart {
  std::string title;
  std::string y_label;
  std::vector<std::string> series;  // legend
  std::vector<std::string> colors;  // per series; empty: SeriesColor
  std::vector<BarGroup> groups;
  std::string value_format = "%.1f";  // printf format of the value written over each bar
  int width = 720;
  int height = 320;
};

std::string BarChartSvg(const BarChart& chart);

}  // namespace loom::base
