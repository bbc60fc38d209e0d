#include "loom/experiment/sim_check.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/sim/simulator.h"

namespace loom::experiment {
namespace {

using sched::StageKind;

std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string PolicyOfSetup(const std::string& setup) {
  return setup == "dedicated" ? "sequential" : setup;
}

absl::StatusOr<sim::SimSpec> SimSpecFromRun(const engine::EngineResult& source,
                                            const SimMachine& machine, bool jobs_ran_alone,
                                            const std::vector<std::string>& policies) {
  if (source.traces.empty()) {
    return absl::InvalidArgumentError("the run has no stage traces to simulate from");
  }
  sim::SimSpec spec;
  spec.seed = 1;
  spec.policies = policies;
  // The CPU measurer grows each candidate's run count until a repeat lasts min_repeat_ms, so a
  // measure stage lasts about as long whether or not other measurements share its core: sharing
  // inflates the reported costs (the distortion), not the stage's wall time. So co-running
  // measurements (only under `uncontrolled`) are not slowed down by time sharing.
  spec.interference.device_time_sharing = false;
  sim::HostSpecYaml host;
  host.name = "local";
  host.cpu_slots = machine.cpu_slots;
  host.devices.push_back(
      {.name = machine.device_name, .kind = "cpu", .shares_cpu_slots = machine.lent_slots});
  spec.hosts.push_back(std::move(host));
  for (size_t j = 0; j < source.jobs.size(); ++j) {
    double total[sched::kNumStageKinds] = {};
    int updates = 0, stages = 0;
    for (const engine::StageTrace& t : source.traces) {
      if (t.job != static_cast<int>(j)) continue;
      total[static_cast<int>(t.kind)] += absl::ToDoubleSeconds(t.end - t.start);
      ++stages;
      if (t.kind == StageKind::kUpdate && t.round >= 0) ++updates;
    }
    if (stages == 0) continue;  // a job that ran no stage (all its tasks skipped)
    const int rounds = std::max(1, updates);
    if (jobs_ran_alone) {
      double busy = 0;
      for (double d : total) busy += d;
      const engine::JobResult& job = source.jobs[j];
      const double span = absl::ToDoubleSeconds(job.end - job.start);
      total[static_cast<int>(StageKind::kUpdate)] += std::max(0.0, span - busy);
    }
    sim::JobGroupSpec g;
    g.name = source.jobs[j].name;
    g.count = 1;
    g.tasks = 1;
    g.rounds = rounds;
    auto stage = [&](StageKind kind, int slots, const std::string& device) {
      sim::StageSpec s;
      s.kind = kind;
      s.cpu_slots = slots;
      s.device_kind = device;
      s.duration.kind = sim::DurationDist::Kind::kConstant;
      s.duration.mean_s = total[static_cast<int>(kind)] / rounds;
      return s;
    };
    g.stages = {stage(StageKind::kPropose, 1, ""),
                stage(StageKind::kBuild, std::max(1, machine.build_slots), ""),
                stage(StageKind::kMeasure, 0, "cpu"), stage(StageKind::kUpdate, 1, "")};
    spec.jobs.push_back(std::move(g));
  }
  return spec;
}

std::string SimSpecToYaml(const sim::SimSpec& spec, const std::string& comment) {
  std::string y;
  for (absl::string_view line : absl::StrSplit(comment, '\n')) {
    absl::StrAppend(&y, "# ", line, "\n");
  }
  absl::StrAppend(&y, "seed: ", spec.seed, "\n");
  std::vector<std::string> policies;
  for (const std::string& p : spec.policies) policies.push_back(Quoted(p));
  absl::StrAppend(&y, "policies: [", absl::StrJoin(policies, ", "), "]\nhosts:\n");
  for (const sim::HostSpecYaml& h : spec.hosts) {
    absl::StrAppend(&y, "  - name: ", Quoted(h.name), "\n    cpu_slots: ", h.cpu_slots, "\n");
    if (h.devices.empty()) continue;
    absl::StrAppend(&y, "    devices:\n");
    for (const sim::DeviceSpecYaml& d : h.devices) {
      absl::StrAppend(&y, "      - {name: ", Quoted(d.name), ", kind: ", Quoted(d.kind),
                      ", shares_cpu_slots: ", d.shares_cpu_slots, "}\n");
    }
  }
  absl::StrAppend(&y, "interference:\n  device_time_sharing: ",
                  spec.interference.device_time_sharing ? "true" : "false", "\n");
  absl::StrAppend(&y, "jobs:\n");
  for (const sim::JobGroupSpec& g : spec.jobs) {
    absl::StrAppend(&y, "  - name: ", Quoted(g.name), "\n    count: ", g.count,
                    "\n    tasks: ", g.tasks, "\n    rounds: ", g.rounds, "\n    stages:\n");
    for (const sim::StageSpec& s : g.stages) {
      absl::StrAppend(&y, "      - {kind: ", std::string(sched::StageKindName(s.kind)));
      if (s.cpu_slots > 0) absl::StrAppend(&y, ", cpu_slots: ", s.cpu_slots);
      if (!s.device_kind.empty()) absl::StrAppend(&y, ", device: ", Quoted(s.device_kind));
      absl::StrAppend(&y, absl::StrFormat(", duration: %.6f}\n", s.duration.mean_s));
    }
  }
  return y;
}

absl::Status Simulate(const sim::SimSpec& spec, std::vector<SimulationRow>& rows) {
  for (SimulationRow& row : rows) {
    row.policy = PolicyOfSetup(row.setup);
    LOOM_ASSIGN_OR_RETURN(sim::SimResult r, sim::Simulate(spec, row.policy));
    row.simulated_s = r.metrics.makespan_s;
    row.ratio = row.measured_s > 0 ? row.simulated_s / row.measured_s : 0;
    row.simulated_lower_bound_s = r.metrics.bound.value();
    row.simulated_device_utilization = r.metrics.device_utilization;
  }
  return absl::OkStatus();
}

}  // namespace loom::experiment
