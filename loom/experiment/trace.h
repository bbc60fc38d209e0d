// trace.json of an experiment (Chrome trace event format, base/chrome_trace.h; opens in Perfetto
// and chrome://tracing): every setup of every repetition is a process, the resources its stages
// were granted ("device cpu:1", "cpu:0", "cpu:0,1", "cpu" when unpinned) are its threads (one per
// row where stages overlap), and every stage trace of results.json is one complete event with the
// same job, kind, task, round, resource, start and end. Written by WriteResults (runner.h).
#pragma once

#include "loom/base/chrome_trace.h"

namespace loom::experiment {

struct ExperimentResult;  // runner.h

// Times are microseconds from each setup's own start, so the setups line up at 0 in the viewer.
base::ChromeTrace ExperimentTrace(const ExperimentResult& result);

}  // namespace loom::experiment
