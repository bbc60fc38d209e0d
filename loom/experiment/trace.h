// trace.json of an experiment (Chrome trace event format, base/chrome_trace.h; opens in Perfetto
// and chrome://tracing): every setup of every repetition is a process, the resources its stages
// were granted ("device cpu:1", "cpu:0", "cpu:0,1", "cpu" when unpinned) are its threads (one per
// row where stages overlap), and every stage trace of results.json is one complete event with the
// same job, kind, task, round, resource, start and end. Written by WriteResults (runner.h). Also
// the trace of the stage timings a record database holds (`loom records trace`).
#pragma once

#include <vector>

#include "loom/base/chrome_trace.h"
#include "loom/records/record.h"

namespace loom::experiment {

struct ExperimentResult;  // runner.h

// Times are microseconds from each setup's own start, so the setups line up at 0 in the viewer.
base::ChromeTrace ExperimentTrace(const ExperimentResult& result);

// The stage timings of a record database's jobs (RecordStore::StageTimings): one process per job
// (in the order given), its resources as threads, one event per stored stage ("build", args: task,
// round, resource). Times are microseconds from the earliest stage of all jobs, so jobs that ran
// together overlap in the viewer as they did.
base::ChromeTrace StageTimingsTrace(const std::vector<tune::StageTimingRecord>& timings);

}  // namespace loom::experiment
