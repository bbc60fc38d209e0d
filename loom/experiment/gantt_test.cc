#include "loom/experiment/gantt.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::experiment {
namespace {

using sched::StageKind;
using ::testing::HasSubstr;

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

// Checks that `xml` is well formed as far as this generator's output goes: every tag closes in
// order, attributes are quoted, no stray '<' or '&' in text. Returns "" or the first problem.
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
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return "mismatched </" + tag + ">";
      stack.pop_back();
      continue;
    }
    const bool self_closing = tag.back() == '/';
    if (self_closing) tag.pop_back();
    const std::string name = tag.substr(0, tag.find(' '));
    // Attributes: name="value" pairs, values without '<'.
    size_t quotes = 0;
    for (char c : tag) quotes += c == '"';
    if (quotes % 2 != 0) return "unbalanced quotes in <" + name + ">";
    if (!self_closing) stack.push_back(name);
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

engine::StageTrace Stage(int job, StageKind kind, double from, double to, std::string resource,
                         std::vector<engine::CoreSpan> spans = {}) {
  engine::StageTrace t;
  t.job = job;
  t.task_key = "conv2d:f32:n1_c8<&>";
  t.round = 0;
  t.kind = kind;
  t.resource = std::move(resource);
  t.cpu_slots = kind == StageKind::kMeasure ? 0 : 1;
  t.granted = t.start = T(from);
  t.end = T(to);
  t.spans = std::move(spans);
  return t;
}

engine::EngineResult TwoJobRun() {
  engine::EngineResult run;
  run.start = T(0);
  run.end = T(10);
  run.jobs.resize(2);
  run.jobs[0].name = "zoo:resnet18";
  run.jobs[1].name = "a \"quoted\" <job>";
  run.traces = {
      Stage(0, StageKind::kPropose, 0, 1, "cpu:0", {{{0}, T(0), T(1)}}),
      Stage(1, StageKind::kPropose, 0, 1, "cpu:1", {{{1}, T(0), T(1)}}),
      Stage(0, StageKind::kBuild, 1, 4, "cpu:0", {{{0}, T(1), T(4)}}),
      // Moved off the device core when a measurement started: two spans.
      Stage(1, StageKind::kBuild, 1, 5, "cpu:1", {{{1}, T(1), T(4)}, {{0}, T(4), T(5)}}),
      Stage(0, StageKind::kMeasure, 4, 7, "device:cpu:1"),
      Stage(1, StageKind::kMeasure, 5, 8, "device:cpu:1"),  // overlaps: a second device row
      Stage(0, StageKind::kUpdate, 7, 8, "cpu"),            // unpinned
      Stage(1, StageKind::kUpdate, 8, 10, "cpu:0,1"),       // two slots, no spans
  };
  return run;
}

TEST(GanttTest, OneGroupPerStageAndOneBarPerSpanCore) {
  engine::EngineResult run = TwoJobRun();
  const std::string svg = GanttSvg(run, {.title = "t & t", .device_cores = {1}});
  EXPECT_EQ(WellFormed(svg), "") << svg;
  EXPECT_EQ(Count(svg, "<g class=\"stage\""), static_cast<int>(run.traces.size()));
  EXPECT_EQ(Count(svg, "<title>"), static_cast<int>(run.traces.size()));
  // 1 + 1 + 1 + 2 (two spans) + 1 + 1 + 1 + 2 (two cores) bars.
  EXPECT_EQ(Count(svg, "<rect class=\"bar\""), 10);
  // Rows: two device rows (overlap), core 0, core 1 lent by the device, unpinned CPU.
  EXPECT_THAT(svg, HasSubstr(">device cpu:1</text>"));
  EXPECT_THAT(svg, HasSubstr(">device cpu:1 #2</text>"));
  EXPECT_THAT(svg, HasSubstr(">core 0</text>"));
  EXPECT_THAT(svg, HasSubstr(">core 1 (device, lent)</text>"));
  EXPECT_THAT(svg, HasSubstr(">cpu (unpinned)</text>"));
  // Legend with escaped job names, colours by job, kind patterns, time axis.
  EXPECT_THAT(svg, HasSubstr("a &quot;quoted&quot; &lt;job&gt;"));
  EXPECT_THAT(svg, HasSubstr(JobColor(0)));
  EXPECT_THAT(svg, HasSubstr(JobColor(1)));
  EXPECT_NE(JobColor(0), JobColor(1));
  EXPECT_THAT(svg, HasSubstr("url(#hatch)"));
  EXPECT_THAT(svg, HasSubstr("url(#dots)"));
  EXPECT_THAT(svg, HasSubstr("time (s)"));
  EXPECT_THAT(svg, HasSubstr(">10</text>"));  // the last tick at the makespan
  EXPECT_THAT(svg, HasSubstr("zoo:resnet18: build round 0, task conv2d:f32:n1_c8&lt;&amp;&gt;"));
}

TEST(GanttTest, EmptyRunIsStillWellFormed) {
  engine::EngineResult run;
  run.start = run.end = T(0);
  const std::string svg = GanttSvg(run, {.title = "empty"});
  EXPECT_EQ(WellFormed(svg), "");
  EXPECT_EQ(Count(svg, "<g class=\"stage\""), 0);
  EXPECT_THAT(svg, HasSubstr("(no stages)"));
}

TEST(GanttTest, XmlEscapeEscapesMarkup) {
  EXPECT_EQ(XmlEscape("a<b & \"c\" 'd'>"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
}

}  // namespace
}  // namespace loom::experiment
