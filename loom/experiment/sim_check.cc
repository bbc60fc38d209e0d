#include "loom/experiment/sim_check.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/experiment/runner.h"
#include "loom/sim/simulator.h"
#include "nlohmann/json.hpp"

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

int CandidatesOf(const engine::StageTrace& t, const SimMeasure& measure) {
  if (t.job < 0 || static_cast<size_t>(t.job) >= measure.batch_size.size() ||
      static_cast<size_t>(t.job) >= measure.trials.size()) {
    return 0;
  }
  if (t.round < 0) return 1;  // the default config alone
  const int64_t batch = std::max(1, measure.batch_size[t.job]);
  const int64_t left = measure.trials[t.job] - t.round * batch;
  return static_cast<int>(std::clamp<int64_t>(left, 1, batch));
}

double TimeBoundedFraction(const engine::EngineResult& run, int job, const SimMeasure& measure) {
  if (measure.repeat <= 0 || measure.min_repeat_ms <= 0) return 0;
  const double per_candidate_s = measure.repeat * measure.min_repeat_ms * 1e-3;
  double bounded = 0, total = 0;
  for (const engine::StageTrace& t : run.traces) {
    if (t.job != job || t.kind != StageKind::kMeasure) continue;
    const int n = CandidatesOf(t, measure);
    if (n == 0) return 0;
    bounded += n * per_candidate_s;
    total += absl::ToDoubleSeconds(t.end - t.start);
  }
  if (total <= 0) return 0;
  return std::clamp(bounded / total, 0.0, 1.0);
}

std::string PolicyOfSetup(const std::string& setup) {
  return setup == "dedicated" ? "sequential" : setup;
}

absl::StatusOr<sim::SimSpec> SimSpecFromRun(const engine::EngineResult& source,
                                            const SimMachine& machine, bool jobs_ran_alone,
                                            const std::vector<std::string>& policies,
                                            const SimMeasure& measure) {
  if (source.traces.empty()) {
    return absl::InvalidArgumentError("the run has no stage traces to simulate from");
  }
  sim::SimSpec spec;
  spec.seed = 1;
  spec.policies = policies;
  // Co-running measurements (only under `uncontrolled`) time-share the device's cores, but the
  // CPU measurer grows each candidate's run count until a repeat lasts min_repeat_ms, so only the
  // rest of a measure stage (setup, reference check, warm-up, calibration) stretches: each measure
  // stage carries its time-bounded fraction.
  spec.interference.device_time_sharing = true;
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
    const double time_bounded = TimeBoundedFraction(source, static_cast<int>(j), measure);
    auto stage = [&](StageKind kind, int slots, const std::string& device) {
      sim::StageSpec s;
      if (!device.empty()) s.time_bounded = time_bounded;
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
      absl::StrAppend(&y, absl::StrFormat(", duration: %.6f", s.duration.mean_s));
      if (s.time_bounded > 0) {
        absl::StrAppend(&y, absl::StrFormat(", time_bounded: %.4f", s.time_bounded));
      }
      absl::StrAppend(&y, "}\n");
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

std::string SimulationCsv(const std::vector<SimulationRow>& rows) {
  std::string csv =
      "setup,repetition,policy,measured_makespan_s,simulated_makespan_s,ratio,"
      "simulated_lower_bound_s,simulated_device_utilization\n";
  for (const SimulationRow& row : rows) {
    absl::StrAppend(
        &csv, absl::StrFormat("%s,%d,%s,%.3f,%.3f,%.4f,%.3f,%.4f\n", row.setup, row.repetition,
                              row.policy, row.measured_s, row.simulated_s, row.ratio,
                              row.simulated_lower_bound_s, row.simulated_device_utilization));
  }
  return csv;
}

std::string FormatSimulationRows(const std::vector<SimulationRow>& rows) {
  std::string out = absl::StrFormat("%-13s %4s %-13s %10s %11s %7s\n", "setup", "rep", "policy",
                                    "measured s", "simulated s", "sim/real");
  for (const SimulationRow& row : rows) {
    absl::StrAppend(&out, absl::StrFormat("%-13s %4d %-13s %10.3f %11.3f %7.3f\n", row.setup,
                                          row.repetition + 1, row.policy, row.measured_s,
                                          row.simulated_s, row.ratio));
  }
  return out;
}

std::string SimYaml(const sim::SimSpec& spec, const std::string& source_setup) {
  return SimSpecToYaml(
      spec, absl::StrCat("The simulator's input made by `loom experiment` from the '", source_setup,
                         "' setup's stage traces.\nReplay: loom simulate sim.yaml"));
}

absl::Status ReadResultsJson(const std::string& path, ExperimentResult* result) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  auto j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (!j.contains("setups") || !j["setups"].is_array()) return bad("no 'setups' list");
  *result = ExperimentResult();
  try {
    for (const nlohmann::json& s : j["setups"]) {
      SetupResult r;
      r.setup = s.at("setup").get<std::string>();
      r.repetition = s.value("repetition", 0);
      if (r.repetition < 0) return bad(absl::StrCat("setup '", r.setup, "': repetition < 0"));
      r.makespan_s = s.at("makespan_s").get<double>();
      engine::EngineResult& run = r.run;
      run.policy = r.setup;
      run.start = absl::UnixEpoch();
      run.end = run.start;
      for (const nlohmann::json& js : s.at("jobs")) {
        engine::JobResult job;
        job.name = js.at("name").get<std::string>();
        job.job_id = js.value("job_id", "");
        job.start = absl::InfiniteFuture();
        job.end = absl::InfinitePast();
        run.jobs.push_back(std::move(job));
        r.jobs.push_back({.name = run.jobs.back().name, .job_id = run.jobs.back().job_id});
      }
      for (const nlohmann::json& st : s.at("stages")) {
        engine::StageTrace t;
        t.job = st.at("job").get<int>();
        auto kind = sched::ParseStageKind(st.at("kind").get<std::string>());
        if (!kind.ok()) return bad(std::string(kind.status().message()));
        t.kind = *kind;
        t.task_key = st.value("task_key", "");
        t.round = st.at("round").get<int64_t>();
        t.resource = st.value("resource", "");
        t.start = run.start + absl::Seconds(st.at("start").get<double>());
        t.end = run.start + absl::Seconds(st.at("end").get<double>());
        t.granted = t.start;
        if (t.job < 0 || static_cast<size_t>(t.job) >= run.jobs.size()) {
          return bad(absl::StrCat("setup '", r.setup, "': a stage of job ", t.job, " of ",
                                  run.jobs.size()));
        }
        engine::JobResult& job = run.jobs[static_cast<size_t>(t.job)];
        job.start = std::min(job.start, t.start);
        job.end = std::max(job.end, t.end);
        run.end = std::max(run.end, t.end);
        run.traces.push_back(std::move(t));
      }
      for (engine::JobResult& job : run.jobs) {
        if (job.start > job.end) job.start = job.end = run.start;  // a job without stages
      }
      result->repetitions = std::max(result->repetitions, r.repetition + 1);
      result->setups.push_back(std::move(r));
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SimulationRow>> Resimulate(const std::string& dir,
                                                      const RunnerOptions& options) {
  ExperimentResult result;
  LOOM_RETURN_IF_ERROR(ReadResultsJson(absl::StrCat(dir, "/results.json"), &result));
  CheckWithSimulator(options, result);
  if (!result.simulation_error.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("simulating ", dir, "/results.json: ", result.simulation_error));
  }
  if (result.simulation.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(dir, "/results.json has no setups"));
  }
  for (const auto& [name, text] :
       {std::pair{"simulation.csv", SimulationCsv(result.simulation)},
        std::pair{"sim.yaml", SimYaml(result.sim_spec, result.simulation_source)}}) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::ofstream f(path);
    f << text;
    f.close();
    if (!f) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  }
  return result.simulation;
}

}  // namespace loom::experiment
