#include "loom/base/chart.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::base {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// Checks that `xml` is well formed as far as these generators go: every tag closes in order,
// attribute quotes balance, no bare '<', '>' or '&' in text. Returns "" or the first problem.
std::string WellFormed(const std::string& xml) {
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] == '&') {
      const size_t semi = xml.find(';', i);
      if (semi == std::string::npos || semi - i > 6) return "bare '&' at " + std::to_string(i);
      i = semi + 1;
      continue;
    }
    if (xml[i] != '<') {
      if (xml[i] == '>') return "bare '>' at " + std::to_string(i);
      ++i;
      continue;
    }
    const size_t close = xml.find('>', i);
    if (close == std::string::npos) return "unterminated tag";
    std::string tag = xml.substr(i + 1, close - i - 1);
    i = close + 1;
    if (tag.empty()) return "empty tag";
    if (tag.find('<') != std::string::npos) return "'<' inside <" + tag + ">";
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return "mismatched </" + tag + ">";
      stack.pop_back();
      continue;
    }
    const bool self_closing = tag.back() == '/';
    if (self_closing) tag.pop_back();
    size_t quotes = 0;
    for (char c : tag) quotes += c == '"';
    if (quotes % 2 != 0) return "unbalanced quotes in <" + tag + ">";
    if (!self_closing) stack.push_back(tag.substr(0, tag.find(' ')));
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// The labels of the <text class="tick"> elements, in order.
std::vector<std::string> Ticks(const std::string& svg) {
  std::vector<std::string> out;
  const std::string open = "class=\"tick\"";
  for (size_t p = svg.find(open); p != std::string::npos; p = svg.find(open, p + 1)) {
    const size_t start = svg.find('>', p) + 1;
    out.push_back(svg.substr(start, svg.find('<', start) - start));
  }
  return out;
}

TEST(ChartTest, XmlEscapeEscapesMarkup) {
  EXPECT_EQ(XmlEscape("a<b & \"c\" 'd'>"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
  EXPECT_EQ(XmlEscape("plain"), "plain");
}

TEST(ChartTest, TicksAreRoundNumbers) {
  AxisTicks t = NiceTicks(0, 6495.4, 10);
  EXPECT_DOUBLE_EQ(t.step, 1000);
  EXPECT_THAT(t.values, ElementsAre(0, 1000, 2000, 3000, 4000, 5000, 6000));
  t = NiceTicks(0, 1.83, 10);  // 0.183 a tick rounds up to 0.2
  EXPECT_DOUBLE_EQ(t.step, 0.2);
  EXPECT_EQ(t.values.size(), 10u);  // 0, 0.2, ..., 1.8
  EXPECT_EQ(TickLabel(t.values[3], t.step), "0.6");
  EXPECT_THAT(NiceTicks(0, 1.83, 8).values, ElementsAre(0, 0.5, 1, 1.5));
  t = NiceTicks(-7.5, 12, 5);
  EXPECT_DOUBLE_EQ(t.step, 5);
  EXPECT_THAT(t.values, ElementsAre(-5, 0, 5, 10));
  EXPECT_EQ(TickLabel(-0.0, 1), "0");
  EXPECT_EQ(TickLabel(1250, 250), "1250");
  EXPECT_EQ(TickLabel(0.05, 0.05), "0.05");
  // Degenerate ranges give one tick, never a loop without end.
  EXPECT_EQ(NiceTicks(3, 3).values.size(), 1u);
  EXPECT_EQ(NiceTicks(0, NAN).values.size(), 1u);
}

TEST(ChartTest, SeriesColorsDifferForManySeries) {
  EXPECT_EQ(SeriesColor(0, 3), "#1f77b4");
  EXPECT_NE(SeriesColor(0, 3), SeriesColor(1, 3));
  std::vector<std::string> colors;
  for (int i = 0; i < 64; ++i) colors.push_back(SeriesColor(i, 64));
  std::sort(colors.begin(), colors.end());
  EXPECT_EQ(std::unique(colors.begin(), colors.end()), colors.end());
}

TEST(ChartTest, PackRowsKeepsOverlapsApart) {
  // [0,2) [1,3) [2,4) [5,6): the second overlaps the first, the third follows the first.
  EXPECT_THAT(PackRows({{0, 2}, {1, 3}, {2, 4}, {5, 6}}), ElementsAre(0, 1, 0, 0));
  EXPECT_THAT(PackRows({{3, 4}, {0, 5}}), ElementsAre(1, 0));
  EXPECT_TRUE(PackRows({}).empty());
}

GanttChart TwoLaneChart() {
  GanttChart c;
  c.title = "run <1> & \"two\"";
  c.series = {"resnet18", "mobilenet_v2"};
  c.styles = {{"build", 'B', BarFill::kHatched}, {"measure", 'M', BarFill::kOutlined}};
  c.lanes = {"device cpu:1", "core 0", "never used"};
  c.items.push_back({.series = 0, .style = 1, .tooltip = "m0", .segments = {{0, 0, 4}}});
  c.items.push_back({.series = 1, .style = 1, .tooltip = "m1", .segments = {{0, 4, 9}}});
  c.items.push_back({.series = 1,
                     .style = 0,
                     .tooltip = "b <moved>",
                     .segments = {{1, 0, 3}, {1, 3, 4}},
                     .attributes = {{"data-job", "1"}}});
  return c;
}

TEST(ChartTest, GanttIsWellFormedWithLegendTicksAndNoEmptyLane) {
  const std::string svg = GanttSvg(TwoLaneChart());
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_THAT(svg, HasSubstr("run &lt;1&gt; &amp; &quot;two&quot;"));
  EXPECT_THAT(svg, HasSubstr(">resnet18</text>"));
  EXPECT_THAT(svg, HasSubstr(">mobilenet_v2</text>"));
  EXPECT_THAT(svg, HasSubstr(">B build</text>"));
  EXPECT_THAT(svg, HasSubstr(">M measure</text>"));
  EXPECT_THAT(svg, HasSubstr("url(#hatch)"));
  EXPECT_THAT(svg, HasSubstr("<title>b &lt;moved&gt;</title>"));
  EXPECT_THAT(svg, HasSubstr("data-job=\"1\""));
  EXPECT_EQ(Count(svg, "<g class=\"item\""), 3);
  EXPECT_EQ(Count(svg, "class=\"bar\""), 4);
  // Two drawn lanes, one row each; the lane without segments is left out.
  EXPECT_EQ(Count(svg, "class=\"row\""), 2);
  EXPECT_THAT(svg, Not(HasSubstr("never used")));
  EXPECT_THAT(Ticks(svg), ElementsAre("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"));
}

TEST(ChartTest, GanttSharesTheAxisItIsGiven) {
  GanttChart c = TwoLaneChart();
  c.axis_end = 20;
  EXPECT_THAT(Ticks(GanttSvg(c)),
              ElementsAre("0", "2", "4", "6", "8", "10", "12", "14", "16", "18", "20"));
}

TEST(ChartTest, GanttMergesSparseRowsIntoOneOverflowRow) {
  // 16 jobs each propose for 0.1 s at time 0 on one host, then two builds alternate for 100 s:
  // two dense rows and one overflow row instead of sixteen rows.
  GanttChart c;
  c.lanes = {"host"};
  for (int j = 0; j < 16; ++j) {
    c.series.push_back("job " + std::to_string(j));
    c.items.push_back({.series = j, .segments = {{0, 0, 0.1}}});
  }
  for (int k = 0; k < 50; ++k) {
    c.items.push_back({.series = k % 16, .segments = {{0, 0.1 + 2.0 * k, 0.1 + 2.0 * k + 2}}});
    c.items.push_back({.series = (k + 1) % 16, .segments = {{0, 0.1 + 2.0 * k, 2.1 + 2.0 * k}}});
  }
  const std::string svg = GanttSvg(c);
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_EQ(Count(svg, "class=\"row\""), 3);
  EXPECT_THAT(svg, HasSubstr("host (3 rows)"));
  EXPECT_THAT(svg, HasSubstr("+14 short rows"));
  EXPECT_EQ(Count(svg, "class=\"bar\""), 116);
}

TEST(ChartTest, GanttOf64JobsStaysWithinItsHeightBudget) {
  GanttChart c;
  c.lanes = {"device"};
  for (int j = 0; j < 64; ++j) {
    c.series.push_back("job " + std::to_string(j));
    c.items.push_back({.series = j, .segments = {{0, 0, 100}}});  // 64 concurrent rows
  }
  const std::string svg = GanttSvg(c);
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_EQ(Count(svg, "class=\"row\""), 64);
  const size_t h = svg.find("height=\"");
  EXPECT_LT(std::stoi(svg.substr(h + 8)), 1100);
  EXPECT_EQ(Count(svg, "<g class=\"legend\""), 64);
  // Each entry's label is inside its group.
  EXPECT_NE(svg.find("<text x=\"17.0\" y=\"10.0\">job 63</text>\n</g>"), std::string::npos);
}

TEST(ChartTest, LineChartDrawsSteppedSeriesAndMarkers) {
  LineChart c{.title = "conv <3x3>",
              .x_label = "trials",
              .y_label = "GFLOPS",
              .series = {{.name = "dedicated",
                          .color = SeriesColor(0, 2),
                          .points = {{1, 10}, {2, 25}, {8, 40}},
                          .markers = {{3, 0}}},
                         {.name = "uncontrolled",
                          .color = SeriesColor(1, 2),
                          .points = {{1, 12}, {8, 30}},
                          .dashed = true}}};
  const std::string svg = LineChartSvg(c);
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_THAT(svg, HasSubstr("conv &lt;3x3&gt;"));
  EXPECT_EQ(Count(svg, "class=\"series\""), 2);
  EXPECT_EQ(Count(svg, "class=\"marker\""), 1);
  EXPECT_THAT(svg, HasSubstr(" H"));
  EXPECT_THAT(svg, HasSubstr("stroke-dasharray"));
  EXPECT_THAT(Ticks(svg), testing::Contains("40"));
  EXPECT_THAT(Ticks(svg), testing::Contains("8"));
}

TEST(ChartTest, LineChartDotsMarkEveryPointOfASeriesThatAsksForThem) {
  LineChart c{.series = {{.name = "with dots",
                          .color = SeriesColor(0, 2),
                          .points = {{1, 10}, {2, 25}, {8, 40}},
                          .dots = true},
                         {.name = "without", .color = SeriesColor(1, 2), .points = {{1, 5}}}}};
  const std::string svg = LineChartSvg(c);
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_EQ(Count(svg, "class=\"point\""), 3);
}

TEST(ChartTest, BarChartDrawsNegativeBarsAndErrorBars) {
  BarChart c{
      .title = "final latency vs dedicated",
      .y_label = "%",
      .series = {"uncontrolled", "interleaved"},
      .groups = {{.label = "resnet18", .values = {3.5, -1.0}, .low = {1, -3}, .high = {6, 1}},
                 {.label = "a&b", .values = {NAN, 0.5}}}};
  const std::string svg = BarChartSvg(c);
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_EQ(Count(svg, "class=\"bar\""), 3);
  EXPECT_EQ(Count(svg, "class=\"error\""), 2);
  EXPECT_THAT(svg, HasSubstr(">a&amp;b</text>"));
  EXPECT_THAT(svg, HasSubstr(">-1.0</text>"));
  EXPECT_THAT(Ticks(svg), testing::Contains("0"));
}

// The value format is data, checked when it runs: one that does not take a double prints the
// value plainly instead of nothing.
TEST(ChartTest, BarValueFormatIsCheckedWhenItRuns) {
  BarChart c{.series = {"s"}, .groups = {{.label = "g", .values = {2.5}}}};
  c.value_format = "%+.2f";
  EXPECT_THAT(BarChartSvg(c), HasSubstr(">+2.50</text>"));
  c.value_format = "%d%s";
  EXPECT_THAT(BarChartSvg(c), HasSubstr(">2.5</text>"));
}

}  // namespace
}  // namespace loom::base
