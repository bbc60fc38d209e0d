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

TEST(GanttTest, OneItemPerStageAndOneSegmentPerSpanCore) {
  engine::EngineResult run = TwoJobRun();
  const base::GanttChart c = GanttChartOf(run, {.title = "t", .device_cores = {1}, .axis_end = 20});
  EXPECT_EQ(c.axis_end, 20);
  EXPECT_EQ(c.series, (std::vector<std::string>{"zoo:resnet18", "a \"quoted\" <job>"}));
  // Device first, then cores in order (core 1 lent by the device), then unpinned stages.
  EXPECT_EQ(c.lanes, (std::vector<std::string>{"device cpu:1", "core 0", "core 1 (device, lent)",
                                               "cpu (unpinned)"}));
  ASSERT_EQ(c.items.size(), run.traces.size());
  std::vector<size_t> segments;
  for (const base::GanttItem& item : c.items) segments.push_back(item.segments.size());
  // The moved build has two spans; the two-slot update without spans one segment per core.
  EXPECT_EQ(segments, (std::vector<size_t>{1, 1, 1, 2, 1, 1, 1, 2}));
  const base::GanttItem& moved = c.items[3];
  EXPECT_EQ(moved.series, 1);
  EXPECT_EQ(moved.style, static_cast<int>(StageKind::kBuild));
  EXPECT_EQ(moved.segments[0].lane, 2);  // core 1 (device, lent), from 1 to 4 s
  EXPECT_DOUBLE_EQ(moved.segments[0].start, 1);
  EXPECT_DOUBLE_EQ(moved.segments[0].end, 4);
  EXPECT_EQ(moved.segments[1].lane, 1);  // then core 0
  EXPECT_EQ(c.items[6].segments[0].lane, 3);
  EXPECT_EQ(c.items[0].tooltip,
            "zoo:resnet18: propose round 0, task conv2d:f32:n1_c8<&>, 1.000 s (0.000 to 1.000 s) "
            "on cpu:0");
  EXPECT_EQ(c.items[4].attributes, (std::vector<std::pair<std::string, std::string>>{
                                       {"data-job", "0"}, {"data-kind", "measure"}}));
}

TEST(GanttTest, SvgHasOneGroupPerStageAndTheDeviceOverlapInTwoRows) {
  engine::EngineResult run = TwoJobRun();
  const std::string svg = GanttSvg(run, {.title = "t & t", .device_cores = {1}});
  EXPECT_EQ(Count(svg, "<g class=\"item\""), static_cast<int>(run.traces.size()));
  EXPECT_EQ(Count(svg, "<rect class=\"bar\""), 10);
  EXPECT_THAT(svg, HasSubstr(">device cpu:1 (2 rows)</text>"));
  EXPECT_THAT(svg, HasSubstr("a &quot;quoted&quot; &lt;job&gt;"));
  EXPECT_THAT(svg, HasSubstr(">10</text>"));  // the last tick at the makespan
}

TEST(GanttTest, EmptyRunSaysSo) {
  engine::EngineResult run;
  run.start = run.end = T(0);
  const std::string svg = GanttSvg(run, {.title = "empty"});
  EXPECT_EQ(Count(svg, "<g class=\"item\""), 0);
  EXPECT_THAT(svg, HasSubstr("(nothing ran)"));
}

}  // namespace
}  // namespace loom::experiment
