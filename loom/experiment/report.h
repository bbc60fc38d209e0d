// report.html of an experiment: the spec, the goals of the thesis experiment checked against the
// figures, the metrics per setup and per job, measurement distortion, final latencies, the
// simulator comparison and the Gantt chart of every setup inlined. Self-contained (inline CSS and
// SVG, no scripts). Called by WriteResults and WriteScaleSummary (runner.h).
#pragma once

#include <string>

#include "loom/experiment/runner.h"

namespace loom::experiment {

std::string ReportHtml(const ExperimentResult& result, const ReportContext& context);

// report.html of a scale sweep (WriteScaleSummary).
std::string ScaleReportHtml(const std::vector<ScaleRun>& runs, const ReportContext& context);

// The makespan every setup is compared with: "dedicated" (the jobs alone, one after another),
// else "sequential"; nullptr when neither was run.
const SetupResult* SequentialReference(const ExperimentResult& result);

// Service makespan / embedded makespan of one setup; NaN when there is no embedded run of it,
// the service setup failed or one of its jobs did not succeed.
double ServiceRatio(const ServiceSetupResult& service, const SetupResult* embedded);

}  // namespace loom::experiment
