// Chrome trace event format (the JSON that chrome://tracing, Perfetto's UI, `ray timeline` and ONNX
// Runtime's profiler use): processes and threads named by metadata events, and complete ("X")
// events with a start and a duration in microseconds. Knows nothing of tuning: callers name their
// processes (an experiment's setups, a simulated run, a job) and threads (resources) and add one
// event per stage. ValidateChromeTrace is the format's rules as a check, for tests and for
// readers of traces from elsewhere. Callers: experiment/trace.cc (`loom experiment`'s trace.json),
// sim/report.cc (`loom simulate -o DIR`), cli/records_command.cc (`loom records trace`).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace loom::base {

struct TraceEvent {
  std::string name;
  std::string category;    // "cat": e.g. the stage kind
  double start_us = 0;     // "ts"
  double duration_us = 0;  // "dur"
  int pid = 0;
  int tid = 0;
  nlohmann::json args = nlohmann::json::object();
};

class ChromeTrace {
 public:
  // Metadata: the name shown for a process (thread) and its place in the list (lower first).
  void NameProcess(int pid, const std::string& name, int sort_index);
  void NameThread(int pid, int tid, const std::string& name, int sort_index);
  // A complete event. Events on one (pid, tid) must not partly overlap (Perfetto nests them):
  // callers give overlapping stages their own threads (chart.h's PackRows).
  void Add(TraceEvent event);

  const std::vector<TraceEvent>& events() const { return events_; }

  // {"traceEvents": [metadata..., events...], "displayTimeUnit": "ms"}.
  nlohmann::json ToJson() const;

 private:
  nlohmann::json metadata_ = nlohmann::json::array();
  std::vector<TraceEvent> events_;
};

// An event on a lane (a resource), before it has a thread.
struct LaneEvent {
  int lane = 0;      // index into the lanes given to AddLaneEvents
  TraceEvent event;  // its tid is assigned
};

// Adds `events` to process `pid` with one thread per row of each lane: a lane's events are packed
// into rows (chart.h's PackRows, as the Gantt chart draws them) so that overlapping events (two
// measurements sharing a device under `uncontrolled`) sit on threads of their own. Threads are
// named after their lane ("device cpu:1", then "device cpu:1 #2", ...), in lane order; tids start
// at 1 within the process. Lanes without events get no thread.
void AddLaneEvents(ChromeTrace& trace, int pid, const std::vector<std::string>& lanes,
                   std::vector<LaneEvent> events);

// Checks `trace` against the trace event format: an object with a "traceEvents" array (or a bare
// array) of objects, each with a string "ph" of a known phase; "X" events with a string name,
// integer pid and tid, finite "ts" and "dur" >= 0, an object "args" if any; "M" events naming a
// process or thread with args.name (or a sort index with args.sort_index); and on each
// (pid, tid), complete events that nest or are disjoint. kInvalidArgument naming the first
// offending event (its index) and rule.
absl::Status ValidateChromeTrace(const nlohmann::json& trace);

}  // namespace loom::base
