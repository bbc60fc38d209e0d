// Reports of simulation results: the summary table printed by `loom simulate`, the results
// JSON, and an SVG Gantt chart of resources over time per run.
#pragma once

#include <string>
#include <vector>

#include "loom/sim/simulator.h"
#include "nlohmann/json.hpp"

namespace loom::sim {

// A fixed-width table, one row per run: jobs, policy, makespan, lower bound, ratio, device and
// CPU utilization, mean/max job time, Jain fairness, measurement distortion.
std::string FormatSummaryTable(const std::vector<SimResult>& results);

// Summary figures of every run (metrics without timelines).
nlohmann::json ResultsToJson(const std::vector<SimResult>& results);

// One row per device and per CPU lane of each host; bars coloured by job.
std::string GanttSvg(const SimResult& result);

}  // namespace loom::sim
