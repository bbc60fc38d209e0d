// Reports of simulation results: the summary table printed by `loom simulate`, the results
// JSON, an SVG Gantt chart of resources over time per run (drawn by base/chart.h) and a Chrome
// trace of every run (base/chrome_trace.h). Also the stage kinds' chart styles, which the
// experiment's charts share.
#pragma once

#include <string>
#include <vector>

#include "loom/base/chart.h"
#include "loom/base/chrome_trace.h"
#include "loom/sched/types.h"
#include "loom/sim/simulator.h"
#include "nlohmann/json.hpp"

namespace loom::sim {

// A fixed-width table, one row per run: jobs, policy, makespan, lower bound, ratio, device and
// CPU utilization, mean/max job time, Jain fairness, measurement distortion.
std::string FormatSummaryTable(const std::vector<SimResult>& results);

// Summary figures of every run (metrics without timelines).
nlohmann::json ResultsToJson(const std::vector<SimResult>& results);

// How each stage kind is drawn in Gantt charts, indexed by sched::StageKind: propose faded,
// build hatched, measure outlined, update dotted. The experiment's charts use the same styles.
const std::vector<base::GanttStyle>& StageKindStyles();

// One lane per device and one per host's CPU slots; stages coloured by job, drawn by kind, a
// legend of jobs and kinds. `axis_end` > 0 fixes the time axis (the charts of one job count share
// the longest makespan, so equal durations are equally wide).
std::string GanttSvg(const SimResult& result, double axis_end = 0);

// Every run as a process ("interleaved, 16 jobs") whose threads are the Gantt chart's rows, one
// complete event per stage (microseconds of simulated time, args: job, kind, slots).
base::ChromeTrace SimTrace(const std::vector<SimResult>& results);

}  // namespace loom::sim
