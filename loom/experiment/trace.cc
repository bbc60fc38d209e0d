#include "loom/experiment/trace.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/experiment/runner.h"

namespace loom::experiment {

base::ChromeTrace ExperimentTrace(const ExperimentResult& result) {
  base::ChromeTrace trace;
  for (size_t k = 0; k < result.setups.size(); ++k) {
    const SetupResult& s = result.setups[k];
    const engine::EngineResult& run = s.run;
    const int pid = static_cast<int>(k) + 1;
    trace.NameProcess(pid,
                      result.repetitions > 1
                          ? absl::StrCat(s.setup, " (repetition ", s.repetition + 1, ")")
                          : s.setup,
                      pid);
    // Lanes: the device first, then CPU resources in order of their names.
    std::map<std::string, int> lane_of;
    std::vector<std::string> lanes;
    auto lane = [&](const std::string& resource) {
      const bool device = resource.rfind("device:", 0) == 0;
      const std::string name = device ? absl::StrCat("device ", resource.substr(7)) : resource;
      auto [it, fresh] = lane_of.try_emplace(name, static_cast<int>(lanes.size()));
      if (fresh) lanes.push_back(name);
      return it->second;
    };
    for (const engine::StageTrace& t : run.traces) {
      if (t.resource.rfind("device:", 0) == 0) lane(t.resource);
    }
    std::map<std::string, int> cpu;
    for (const engine::StageTrace& t : run.traces) {
      if (t.resource.rfind("device:", 0) != 0) cpu.emplace(t.resource, 0);
    }
    for (const auto& [resource, unused] : cpu) lane(resource);
    std::vector<base::LaneEvent> events;
    for (const engine::StageTrace& t : run.traces) {
      const std::string job = t.job >= 0 && t.job < static_cast<int>(run.jobs.size())
                                  ? run.jobs[static_cast<size_t>(t.job)].name
                                  : "?";
      const std::string kind(sched::StageKindName(t.kind));
      events.push_back(
          {.lane = lane(t.resource),
           .event = {.name = absl::StrCat(job, " ", kind, t.round < 0 ? " (default)" : ""),
                     .category = kind,
                     .start_us = absl::ToDoubleMicroseconds(t.start - run.start),
                     .duration_us = absl::ToDoubleMicroseconds(t.end - t.start),
                     .args = {{"setup", s.setup},
                              {"repetition", s.repetition},
                              {"job", t.job},
                              {"job_name", job},
                              {"kind", kind},
                              {"task_key", t.task_key},
                              {"round", t.round},
                              {"resource", t.resource}}}});
    }
    base::AddLaneEvents(trace, pid, lanes, std::move(events));
  }
  return trace;
}

base::ChromeTrace StageTimingsTrace(const std::vector<tune::StageTimingRecord>& timings) {
  base::ChromeTrace trace;
  absl::Time origin = absl::InfiniteFuture();
  for (const tune::StageTimingRecord& t : timings) origin = std::min(origin, t.timing.start);
  std::vector<std::string> jobs;
  std::map<std::string, std::vector<const tune::StageTimingRecord*>> of_job;
  for (const tune::StageTimingRecord& t : timings) {
    auto [it, fresh] = of_job.try_emplace(t.job_id);
    if (fresh) jobs.push_back(t.job_id);
    it->second.push_back(&t);
  }
  for (size_t k = 0; k < jobs.size(); ++k) {
    const int pid = static_cast<int>(k) + 1;
    trace.NameProcess(pid, jobs[k], pid);
    std::map<std::string, int> lane_of;
    std::vector<std::string> lanes;
    // The device first, then CPU resources by name.
    for (bool device : {true, false}) {
      std::map<std::string, int> names;
      for (const tune::StageTimingRecord* t : of_job[jobs[k]]) {
        if ((t->timing.resource.rfind("device:", 0) == 0) == device) {
          names.emplace(t->timing.resource, 0);
        }
      }
      for (const auto& [name, unused] : names) {
        lane_of[name] = static_cast<int>(lanes.size());
        lanes.push_back(name.empty() ? "(no resource)" : name);
      }
    }
    std::vector<base::LaneEvent> events;
    for (const tune::StageTimingRecord* t : of_job[jobs[k]]) {
      events.push_back(
          {.lane = lane_of[t->timing.resource],
           .event = {.name = absl::StrCat(t->timing.stage, " round ", t->round),
                     .category = t->timing.stage,
                     .start_us = absl::ToDoubleMicroseconds(t->timing.start - origin),
                     .duration_us = absl::ToDoubleMicroseconds(t->timing.end - t->timing.start),
                     .args = {{"job", t->job_id},
                              {"task_key", t->task_key},
                              {"round", t->round},
                              {"resource", t->timing.resource}}}});
    }
    base::AddLaneEvents(trace, pid, lanes, std::move(events));
  }
  return trace;
}

}  // namespace loom::experiment
