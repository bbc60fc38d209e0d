// The Gantt chart of one real engine run, as base/chart.h draws it: resources over time as lanes
// (the device, each CPU core a stage was pinned to, unpinned CPU stages), one item per stage
// coloured by job, its kind shown by a letter and a fill (sim::StageKindStyles, the simulator's
// too), a tooltip per stage, a legend and a time axis in seconds. Called by the experiment runner
// (gantt-<setup>.svg) and report.html, which pass one axis_end for all setups.
#pragma once

#include <string>
#include <vector>

#include "loom/base/chart.h"
#include "loom/engine/engine.h"

namespace loom::experiment {

struct GanttOptions {
  std::string title;
  std::string subtitle;
  // The device's cores: CPU stages pinned there are drawn on a "core N (device, lent)" lane.
  std::vector<int> device_cores;
  double axis_end = 0;  // seconds; 0: the run's own length
  int width = 1100;     // pixels, the whole chart
  // Pixels for lane labels, the same in every chart of a report so their axes line up.
  int label_width = 190;
};

// One item per trace of `run` (data-job and data-kind attributes, a tooltip), with one segment per
// (span, core) the stage ran on (one per core of its resource when it has no spans). Times are
// relative to run.start.
base::GanttChart GanttChartOf(const engine::EngineResult& run, const GanttOptions& options);

std::string GanttSvg(const engine::EngineResult& run, const GanttOptions& options);

}  // namespace loom::experiment
