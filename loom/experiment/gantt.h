// SVG Gantt chart of one real engine run: resources over time as rows (the device, each CPU core a
// stage was pinned to, unpinned CPU lanes), one bar per stage coloured by job, stage kind shown by
// a letter and a pattern, a tooltip (<title>) per stage, a legend and a time axis in seconds.
// Hand-written SVG, no dependencies. Called by the experiment runner (gantt-<setup>.svg) and
// embedded in report.html.
#pragma once

#include <string>
#include <vector>

#include "loom/engine/engine.h"

namespace loom::experiment {

struct GanttOptions {
  std::string title;
  // The device's cores: CPU stages pinned there are drawn on a "core N (device, lent)" row.
  std::vector<int> device_cores;
  int width = 1100;  // pixels, the whole chart
};

// One <g class="stage"> per trace of `run` (with a <title>), holding one <rect class="bar"> per
// (span, core) the stage ran on (one rect when it has no spans). Times are relative to run.start.
std::string GanttSvg(const engine::EngineResult& run, const GanttOptions& options);

// The colour of job `index` (the same in every chart and table of a report).
std::string JobColor(int index);

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string XmlEscape(const std::string& text);

}  // namespace loom::experiment
