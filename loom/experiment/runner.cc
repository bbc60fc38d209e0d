#include "loom/experiment/runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/experiment/gantt.h"
#include "loom/experiment/latency.h"
#include "loom/experiment/report.h"
#include "nlohmann/json.hpp"

namespace loom::experiment {
namespace {

double TunedLatencyMs(const engine::JobResult& job) {
  double sum = 0;
  for (const auto& o : job.outcomes) {
    if (std::isfinite(o.best_cost)) sum += o.best_cost * static_cast<double>(o.task.count);
  }
  return sum * 1e3;
}

SetupJobResult JobRow(const engine::JobResult& job, absl::Time setup_start) {
  return SetupJobResult{.name = job.name,
                        .job_id = job.job_id,
                        .seconds = absl::ToDoubleSeconds(job.end - setup_start),
                        .tuned_latency_ms = TunedLatencyMs(job),
                        .records = job.records,
                        .error = std::string(job.status.message())};
}

void Finish(SetupResult& r, double cpu_slot_seconds, int capacity) {
  capacity = std::max(1, capacity);
  if (r.makespan_s > 0) {
    r.device_utilization = r.device_busy_s / r.makespan_s;
    r.cpu_utilization = cpu_slot_seconds / (capacity * r.makespan_s);
  }
  r.lower_bound_s = std::max(r.device_busy_s, cpu_slot_seconds / capacity);
}

absl::StatusOr<engine::EngineResult> RunOnce(const std::vector<engine::EngineJob>& jobs,
                                             const std::string& policy, const std::string& setup,
                                             const RunnerOptions& options,
                                             tune::RecordStore* store) {
  engine::EngineOptions eo = options.engine;
  eo.policy = policy;
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> eng, engine::Engine::Create(eo));
  std::function<void(const engine::EngineProgress&)> progress;
  if (options.on_progress) {
    progress = [&](const engine::EngineProgress& p) { options.on_progress(setup, p); };
  }
  return eng->Run(jobs, store, progress);
}

// The builder and measurer of the re-measurements, made once with the engine's factories.
struct Remeasurer {
  std::unique_ptr<tune::Builder> builder;
  std::unique_ptr<tune::Measurer> measurer;
};

absl::StatusOr<Remeasurer> MakeRemeasurer(const engine::EngineOptions& eo) {
  Remeasurer r;
  tune::BuildOptions bo;
  bo.num_threads = std::max(1, eo.build_slots);
  if (eo.make_builder) {
    LOOM_ASSIGN_OR_RETURN(r.builder, eo.make_builder(bo));
  } else {
    LOOM_ASSIGN_OR_RETURN(r.builder, tune::MakeLocalBuilder(bo));
  }
  if (eo.make_measurer) {
    LOOM_ASSIGN_OR_RETURN(r.measurer, eo.make_measurer(eo.layout.device_cores));
  } else {
    tune::MeasureOptions mo;
    mo.cores = eo.layout.device_cores;
    LOOM_ASSIGN_OR_RETURN(r.measurer, tune::MakeLocalMeasurer(mo));
  }
  return r;
}

// Distortion of each job of a finished setup: the device is idle now.
absl::Status AfterSetup(const std::vector<engine::EngineJob>& jobs, const RunnerOptions& options,
                        tune::RecordStore& store, std::unique_ptr<Remeasurer>& remeasurer,
                        SetupResult& r) {
  auto note = [&](const std::string& line) {
    if (options.on_note) options.on_note(line);
  };
  std::vector<double> all;
  for (size_t j = 0; j < jobs.size() && j < r.jobs.size(); ++j) {
    const engine::EngineJob& job = jobs[j];
    SetupJobResult& row = r.jobs[j];
    if (options.distortion_samples > 0) {
      std::vector<tune::Record> records;
      for (const graph::Task& task : job.tasks) {
        LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> of_task,
                              store.ForTask(task.key, job.target.Key(), job.options.job_id));
        records.insert(records.end(), of_task.begin(), of_task.end());
      }
      std::vector<tune::Record> sample =
          SampleRecords(records, options.distortion_samples, options.distortion_seed + j);
      if (!sample.empty()) {
        if (remeasurer == nullptr) {
          LOOM_ASSIGN_OR_RETURN(Remeasurer made, MakeRemeasurer(options.engine));
          remeasurer = std::make_unique<Remeasurer>(std::move(made));
        }
        note(absl::StrFormat("[%s] re-measuring %d candidates of %s alone", r.setup, sample.size(),
                             row.name));
        LOOM_ASSIGN_OR_RETURN(row.distortion, Remeasure(sample, job.target, *remeasurer->builder,
                                                        *remeasurer->measurer));
        std::vector<double> d;
        for (const DistortionSample& s : row.distortion) d.push_back(s.distortion);
        row.distortion_median = Median(d);
        all.insert(all.end(), d.begin(), d.end());
      }
    }
  }
  r.distortion_median = Median(all);
  return absl::OkStatus();
}

// Each job's model compiled once per setup from that setup's records, then the setups' models
// of one job timed side by side (TimeInterleavedMs) after every setup has run, so a drift of the
// machine during one setup's timing cannot pass for a difference in what it tuned.
void MeasureFinalLatencies(const std::vector<engine::EngineJob>& jobs, const RunnerOptions& options,
                           tune::RecordStore& store, ExperimentResult& result) {
  if (options.latency_runs <= 0) return;
  auto note = [&](const std::string& line) {
    if (options.on_note) options.on_note(line);
  };
  LatencyOptions lo;
  lo.cores = options.engine.layout.device_cores;
  lo.min_runs = options.latency_runs;
  lo.min_seconds = options.latency_min_seconds;
  lo.build.num_threads = std::max(1, options.engine.build_slots);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const graph::Graph* graph = j < options.models.size() ? options.models[j] : nullptr;
    if (graph == nullptr) continue;
    const engine::EngineJob& job = jobs[j];
    std::vector<std::unique_ptr<LatencyModel>> compiled;
    std::vector<SetupJobResult*> rows;
    for (SetupResult& r : result.setups) {
      if (j >= r.jobs.size()) continue;
      SetupJobResult& row = r.jobs[j];
      const std::string id = absl::StrCat(job.options.job_id, "@", r.setup);
      auto m =
          LatencyModel::Compile(*graph, job.tasks, job.target, {id, id + "#default"}, store, lo);
      if (!m.ok()) {
        row.latency_error = std::string(m.status().message());
        note(absl::StrCat("[", r.setup, "] final latency of ", row.name,
                          " failed: ", row.latency_error));
        continue;
      }
      compiled.push_back(*std::move(m));
      rows.push_back(&row);
    }
    if (compiled.empty()) continue;
    note(absl::StrFormat("timing %s compiled with each setup's records, %d models side by side",
                         rows[0]->name, compiled.size()));
    std::vector<LatencyModel*> models;
    models.reserve(compiled.size());
    for (auto& m : compiled) models.push_back(m.get());
    auto ms = TimeInterleavedMs(models, lo);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (ms.ok()) {
        rows[i]->final_latency_ms = (*ms)[i];
      } else {
        rows[i]->latency_error = std::string(ms.status().message());
      }
    }
    if (!ms.ok()) {
      note(absl::StrCat("final latency of ", rows[0]->name, " failed: ", ms.status().message()));
    }
  }
}

}  // namespace

SetupResult SummarizeShared(const std::string& setup, const engine::EngineResult& run) {
  SetupResult r;
  r.setup = setup;
  r.makespan_s = absl::ToDoubleSeconds(run.makespan());
  r.device_busy_s = run.device_busy_seconds;
  for (const engine::JobResult& j : run.jobs) r.jobs.push_back(JobRow(j, run.start));
  r.device_hours = r.makespan_s / 3600;
  Finish(r, run.cpu_slot_seconds, run.cpu_capacity);
  r.run = run;
  return r;
}

SetupResult SummarizeDedicated(const std::vector<engine::EngineResult>& alone_runs) {
  SetupResult r;
  r.setup = "dedicated";
  engine::EngineResult& merged = r.run;
  merged.policy = "dedicated";
  int capacity = 1;
  for (size_t i = 0; i < alone_runs.size(); ++i) {
    const engine::EngineResult& one = alone_runs[i];
    const double t = absl::ToDoubleSeconds(one.makespan());
    r.makespan_s += t;
    r.device_busy_s += one.device_busy_seconds;
    r.device_hours += t / 3600;
    capacity = std::max(capacity, one.cpu_capacity);
    if (!one.jobs.empty()) r.jobs.push_back(JobRow(one.jobs[0], one.start));
    if (i == 0) merged.start = one.start;
    merged.end = std::max(merged.end, one.end);
    merged.device_busy_seconds += one.device_busy_seconds;
    merged.cpu_slot_seconds += one.cpu_slot_seconds;
    for (const engine::JobResult& j : one.jobs) merged.jobs.push_back(j);
    for (engine::StageTrace t : one.traces) {
      t.job = static_cast<int>(i);
      merged.traces.push_back(std::move(t));
    }
  }
  merged.cpu_capacity = capacity;
  Finish(r, merged.cpu_slot_seconds, capacity);
  return r;
}

void CheckWithSimulator(const RunnerOptions& options, ExperimentResult& result) {
  const SetupResult* source = nullptr;
  for (const SetupResult& s : result.setups) {
    if (s.setup == "dedicated") source = &s;
  }
  if (source == nullptr && !result.setups.empty()) source = &result.setups[0];
  if (source == nullptr) return;
  const engine::MachineLayout& layout = options.engine.layout;
  SimMachine machine{
      .cpu_slots = layout.cpu_slots,
      .lent_slots = layout.device_shares_cores ? static_cast<int>(layout.device_cores.size()) : 0,
      .build_slots = options.engine.build_slots,
      .device_name = absl::StrCat("cpu:", absl::StrJoin(layout.device_cores, ","))};
  std::vector<std::string> policies;
  std::vector<SimulationRow> rows;
  for (const SetupResult& s : result.setups) {
    const std::string p = PolicyOfSetup(s.setup);
    if (std::find(policies.begin(), policies.end(), p) == policies.end()) policies.push_back(p);
    rows.push_back({.setup = s.setup, .measured_s = s.makespan_s});
  }
  auto spec = SimSpecFromRun(source->run, machine, source->setup == "dedicated", policies,
                             options.sim_measure);
  if (!spec.ok()) {
    result.simulation_error = std::string(spec.status().message());
    return;
  }
  absl::Status st = Simulate(*spec, rows);
  if (!st.ok()) {
    result.simulation_error = std::string(st.message());
    return;
  }
  result.sim_spec = *std::move(spec);
  result.simulation_source = source->setup;
  result.simulation = std::move(rows);
}

absl::StatusOr<ExperimentResult> RunExperiment(const std::vector<engine::EngineJob>& jobs,
                                               const std::vector<std::string>& setups,
                                               const RunnerOptions& options,
                                               tune::RecordStore* store) {
  if (jobs.empty()) return absl::InvalidArgumentError("an experiment needs at least one job");
  if (store == nullptr) {
    return absl::InvalidArgumentError("an experiment needs a record store (it re-reads records)");
  }
  ExperimentResult result;
  std::unique_ptr<Remeasurer> remeasurer;
  for (const std::string& setup : setups) {
    std::vector<engine::EngineJob> own = jobs;
    for (engine::EngineJob& j : own) {
      j.options.job_id = absl::StrCat(j.options.job_id, "@", setup);
      j.options.transfer = false;
    }
    SetupResult r;
    if (setup == "dedicated") {
      std::vector<engine::EngineResult> runs;
      for (const engine::EngineJob& j : own) {
        LOOM_ASSIGN_OR_RETURN(engine::EngineResult one,
                              RunOnce({j}, "interleaved", setup, options, store));
        runs.push_back(std::move(one));
      }
      r = SummarizeDedicated(runs);
    } else {
      LOOM_ASSIGN_OR_RETURN(engine::EngineResult all, RunOnce(own, setup, setup, options, store));
      r = SummarizeShared(setup, all);
    }
    LOOM_RETURN_IF_ERROR(AfterSetup(own, options, *store, remeasurer, r));
    result.setups.push_back(std::move(r));
  }
  MeasureFinalLatencies(jobs, options, *store, result);
  if (options.simulate) CheckWithSimulator(options, result);
  return result;
}

namespace {

// "" for a value that was not measured (NaN), else fixed-point with `digits` decimals.
std::string Fixed(double v, int digits) {
  return std::isfinite(v) ? absl::StrFormat("%.*f", digits, v) : "";
}

nlohmann::json JsonNum(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.close();
  if (!f) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

std::string CsvQuoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c == '\n' ? ' ' : c;
  }
  return out + "\"";
}

}  // namespace

absl::Status WriteResults(const ExperimentResult& result, const std::string& dir,
                          const ReportContext& context) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  std::string csv =
      "setup,makespan_s,lower_bound_s,device_utilization,cpu_utilization,device_hours,"
      "distortion_median,job,job_seconds,tuned_latency_ms,final_latency_ms,job_distortion_median,"
      "records,error\n";
  nlohmann::json j = nlohmann::json::object();
  j["name"] = context.name;
  j["setups"] = nlohmann::json::array();
  for (const SetupResult& r : result.setups) {
    nlohmann::json s = {{"setup", r.setup},
                        {"makespan_s", r.makespan_s},
                        {"lower_bound_s", r.lower_bound_s},
                        {"device_busy_s", r.device_busy_s},
                        {"device_utilization", r.device_utilization},
                        {"cpu_utilization", r.cpu_utilization},
                        {"device_hours", r.device_hours},
                        {"distortion_median", JsonNum(r.distortion_median)},
                        {"stages", nlohmann::json::array()},
                        {"jobs", nlohmann::json::array()}};
    for (const engine::StageTrace& t : r.run.traces) {
      // The stage traces, seconds from the setup's start (the simulator's trace format plus the
      // job, task and round).
      s["stages"].push_back({{"job", t.job},
                             {"kind", std::string(sched::StageKindName(t.kind))},
                             {"task_key", t.task_key},
                             {"round", t.round},
                             {"resource", t.resource},
                             {"start", absl::ToDoubleSeconds(t.start - r.run.start)},
                             {"end", absl::ToDoubleSeconds(t.end - r.run.start)}});
    }
    for (const SetupJobResult& job : r.jobs) {
      absl::StrAppend(
          &csv,
          absl::StrFormat("%s,%.3f,%.3f,%.4f,%.4f,%.6f,%s,%s,%.3f,%.6f,%s,%s,%d,%s\n", r.setup,
                          r.makespan_s, r.lower_bound_s, r.device_utilization, r.cpu_utilization,
                          r.device_hours, Fixed(r.distortion_median, 5), CsvQuoted(job.name),
                          job.seconds, job.tuned_latency_ms, Fixed(job.final_latency_ms, 4),
                          Fixed(job.distortion_median, 5), job.records, CsvQuoted(job.error)));
      nlohmann::json samples = nlohmann::json::array();
      for (const DistortionSample& d : job.distortion) {
        samples.push_back({{"task_key", d.task_key},
                           {"config_index", d.config_index},
                           {"in_run_s", JsonNum(d.in_run_s)},
                           {"alone_s", JsonNum(d.alone_s)},
                           {"distortion", JsonNum(d.distortion)},
                           {"error", d.error}});
      }
      s["jobs"].push_back({{"name", job.name},
                           {"job_id", job.job_id},
                           {"seconds", job.seconds},
                           {"tuned_latency_ms", job.tuned_latency_ms},
                           {"final_latency_ms", JsonNum(job.final_latency_ms)},
                           {"latency_error", job.latency_error},
                           {"distortion_median", JsonNum(job.distortion_median)},
                           {"distortion", samples},
                           {"records", job.records},
                           {"error", job.error}});
    }
    j["setups"].push_back(std::move(s));
    GanttOptions go{.title = absl::StrCat(context.name, ": ", r.setup),
                    .device_cores = context.device_cores};
    LOOM_RETURN_IF_ERROR(
        WriteText(absl::StrCat(dir, "/gantt-", r.setup, ".svg"), GanttSvg(r.run, go)));
  }
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/results.csv"), csv));
  nlohmann::json sim = {{"source", result.simulation_source},
                        {"error", result.simulation_error},
                        {"rows", nlohmann::json::array()}};
  if (!result.simulation.empty()) {
    for (const SimulationRow& row : result.simulation) {
      sim["rows"].push_back({{"setup", row.setup},
                             {"policy", row.policy},
                             {"measured_s", row.measured_s},
                             {"simulated_s", row.simulated_s},
                             {"ratio", row.ratio}});
    }
    LOOM_RETURN_IF_ERROR(
        WriteText(absl::StrCat(dir, "/simulation.csv"), SimulationCsv(result.simulation)));
    LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/sim.yaml"),
                                   SimYaml(result.sim_spec, result.simulation_source)));
  }
  j["simulation"] = std::move(sim);
  if (!result.service.empty()) {
    // The same setups through `loom serve` + an agent, beside the embedded run's makespans.
    std::string service_csv =
        "setup,policy,embedded_makespan_s,service_makespan_s,ratio,job,embedded_job_seconds,"
        "service_job_seconds,records,state,error\n";
    nlohmann::json service = nlohmann::json::array();
    for (const ServiceSetupResult& s : result.service) {
      const SetupResult* embedded = nullptr;
      for (const SetupResult& r : result.setups) {
        if (r.setup == s.setup) embedded = &r;
      }
      const double ratio = ServiceRatio(s, embedded);
      nlohmann::json js = {{"setup", s.setup},
                           {"policy", s.policy},
                           {"embedded_makespan_s", JsonNum(embedded ? embedded->makespan_s : NAN)},
                           {"service_makespan_s", s.makespan_s},
                           {"ratio", JsonNum(ratio)},
                           {"error", s.error},
                           {"log_dir", s.log_dir},
                           {"jobs", nlohmann::json::array()}};
      for (size_t i = 0; i < s.jobs.size(); ++i) {
        const ServiceJobResult& job = s.jobs[i];
        const double embedded_s =
            embedded != nullptr && i < embedded->jobs.size() ? embedded->jobs[i].seconds : NAN;
        const std::string error = job.error.empty() ? s.error : job.error;
        absl::StrAppend(
            &service_csv,
            absl::StrFormat("%s,%s,%s,%.3f,%s,%s,%s,%.3f,%d,%s,%s\n", s.setup, s.policy,
                            Fixed(embedded ? embedded->makespan_s : NAN, 3), s.makespan_s,
                            Fixed(ratio, 4), CsvQuoted(job.name), Fixed(embedded_s, 3), job.seconds,
                            job.records, job.state, CsvQuoted(error)));
        js["jobs"].push_back({{"name", job.name},
                              {"job_id", job.job_id},
                              {"state", job.state},
                              {"seconds", job.seconds},
                              {"embedded_seconds", JsonNum(embedded_s)},
                              {"records", job.records},
                              {"cpu_seconds", job.cpu_seconds},
                              {"device_seconds", job.device_seconds},
                              {"error", job.error}});
      }
      service.push_back(std::move(js));
    }
    j["service"] = std::move(service);
    LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/service.csv"), service_csv));
  }
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/results.json"), j.dump(2) + "\n"));
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/report.html"), ReportHtml(result, context)));
  return absl::OkStatus();
}

}  // namespace loom::experiment
