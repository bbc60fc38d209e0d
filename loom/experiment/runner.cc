#include "loom/experiment/runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "loom/base/status_macros.h"
#include "loom/experiment/claims.h"
#include "loom/experiment/gantt.h"
#include "loom/experiment/latency.h"
#include "loom/experiment/report.h"
#include "loom/experiment/trace.h"
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
                        .run_start = setup_start,
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

// After a setup, with the device idle: each job's tuning curves from its records, then each
// task's best candidates in the run and a seeded sample of the others measured again alone
// (distortion and ranking fidelity).
absl::Status AfterSetup(const std::vector<engine::EngineJob>& jobs, const RunnerOptions& options,
                        tune::RecordStore& store, std::unique_ptr<Remeasurer>& remeasurer,
                        SetupResult& r) {
  auto note = [&](const std::string& line) {
    if (options.on_note) options.on_note(line);
  };
  std::vector<double> all;
  std::vector<RankingFidelity> rankings;
  for (size_t j = 0; j < jobs.size() && j < r.jobs.size(); ++j) {
    const engine::EngineJob& job = jobs[j];
    SetupJobResult& row = r.jobs[j];
    const std::string target = job.target.Key();
    std::vector<tune::Record> sample;
    std::vector<size_t> chosen;  // positions in `sample` of each task's best in the run
    std::map<std::string, int64_t> occurrences;
    for (size_t t = 0; t < job.tasks.size(); ++t) {
      const graph::Task& task = job.tasks[t];
      occurrences[task.key] = task.count;
      LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> records,
                            store.ForTask(task.key, target, job.options.job_id));
      TaskCurve curve{.task_key = task.key};
      for (const tune::Record& rec : records) {
        curve.trials.push_back({.seconds = absl::ToDoubleSeconds(rec.timestamp - row.run_start),
                                .gflops = rec.ok() ? rec.Gflops() : 0});
      }
      if (!curve.trials.empty()) row.curves.push_back(std::move(curve));
      if (options.distortion_samples <= 0) continue;
      // The default config's own measurement competes too: the compiled model may choose it.
      LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> defaults,
                            store.ForTask(task.key, target, job.options.job_id + "#default"));
      records.insert(records.end(), defaults.begin(), defaults.end());
      const uint64_t seed =
          options.distortion_seed + 1000 * j + t + 1000000 * static_cast<uint64_t>(r.repetition);
      std::vector<tune::Record> of_task =
          SampleTaskRecords(records, options.distortion_samples, options.ranking_top, seed);
      if (of_task.empty()) continue;
      chosen.push_back(sample.size());
      sample.insert(sample.end(), of_task.begin(), of_task.end());
    }
    if (sample.empty()) continue;
    if (remeasurer == nullptr) {
      LOOM_ASSIGN_OR_RETURN(Remeasurer made, MakeRemeasurer(options.engine));
      remeasurer = std::make_unique<Remeasurer>(std::move(made));
    }
    note(absl::StrFormat("[%s] re-measuring %d candidates of %s alone", r.setup, sample.size(),
                         row.name));
    LOOM_ASSIGN_OR_RETURN(
        row.distortion, Remeasure(sample, job.target, *remeasurer->builder, *remeasurer->measurer));
    for (size_t c : chosen) row.distortion[c].chosen = true;
    std::vector<double> d;
    for (const DistortionSample& s : row.distortion) d.push_back(s.distortion);
    row.distortion_median = Median(d);
    all.insert(all.end(), d.begin(), d.end());
    row.ranking = MeasureRankingFidelity(row.distortion, occurrences, options.ranking_top);
    rankings.push_back(row.ranking);
  }
  r.distortion_median = Median(all);
  r.ranking = CombineRanking(rankings);
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
  if (absl::string_view gpu = options.engine.layout.gpu; absl::ConsumePrefix(&gpu, "cuda:")) {
    if (!absl::SimpleAtoi(gpu, &lo.cuda_ordinal)) lo.cuda_ordinal = 0;
  }
  for (size_t j = 0; j < jobs.size(); ++j) {
    const graph::Graph* graph = j < options.models.size() ? options.models[j] : nullptr;
    if (graph == nullptr) continue;
    const engine::EngineJob& job = jobs[j];
    std::vector<std::unique_ptr<LatencyModel>> compiled;
    std::vector<SetupJobResult*> rows;
    for (SetupResult& r : result.setups) {
      if (j >= r.jobs.size()) continue;
      SetupJobResult& row = r.jobs[j];
      const std::string id = SetupJobId(job.options.job_id, r.setup, r.repetition);
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

std::string SetupJobId(const std::string& job_id, const std::string& setup, int repetition) {
  return absl::StrCat(job_id, "@", setup, repetition > 0 ? absl::StrCat(".r", repetition) : "");
}

const SetupResult* FindSetup(const ExperimentResult& result, const std::string& setup,
                             int repetition) {
  for (const SetupResult& s : result.setups) {
    if (s.setup == setup && s.repetition == repetition) return &s;
  }
  return nullptr;
}

void CheckWithSimulator(const RunnerOptions& options, ExperimentResult& result) {
  const engine::MachineLayout& layout = options.engine.layout;
  SimMachine machine{
      .cpu_slots = layout.cpu_slots,
      .lent_slots = layout.device_shares_cores ? static_cast<int>(layout.device_cores.size()) : 0,
      .build_slots = options.engine.build_slots,
      .device_name = layout.gpu.empty()
                         ? absl::StrCat("cpu:", absl::StrJoin(layout.device_cores, ","))
                         : layout.gpu};
  int repetitions = 0;
  for (const SetupResult& s : result.setups) repetitions = std::max(repetitions, s.repetition + 1);
  std::vector<SimulationRow> all_rows;
  for (int rep = 0; rep < repetitions; ++rep) {
    const SetupResult* source = FindSetup(result, "dedicated", rep);
    std::vector<std::string> policies;
    std::vector<SimulationRow> rows;
    for (const SetupResult& s : result.setups) {
      if (s.repetition != rep) continue;
      if (source == nullptr) source = &s;
      const std::string p = PolicyOfSetup(s.setup);
      if (std::find(policies.begin(), policies.end(), p) == policies.end()) policies.push_back(p);
      rows.push_back({.setup = s.setup, .repetition = rep, .measured_s = s.makespan_s});
    }
    if (source == nullptr) continue;
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
    if (rep == 0) {
      result.sim_spec = *std::move(spec);
      result.simulation_source = source->setup;
    }
    all_rows.insert(all_rows.end(), rows.begin(), rows.end());
  }
  result.simulation = std::move(all_rows);
}

absl::StatusOr<ExperimentResult> RunExperiment(const std::vector<engine::EngineJob>& jobs,
                                               const std::vector<std::string>& setups,
                                               const RunnerOptions& options,
                                               tune::RecordStore* store) {
  if (jobs.empty()) return absl::InvalidArgumentError("an experiment needs at least one job");
  if (store == nullptr) {
    return absl::InvalidArgumentError("an experiment needs a record store (it re-reads records)");
  }
  if (options.repetitions < 1) {
    return absl::InvalidArgumentError("an experiment needs at least one repetition");
  }
  ExperimentResult result;
  result.repetitions = options.repetitions;
  std::unique_ptr<Remeasurer> remeasurer;
  for (int rep = 0; rep < options.repetitions; ++rep) {
    for (const std::string& setup : setups) {
      std::vector<engine::EngineJob> own = jobs;
      for (engine::EngineJob& j : own) {
        j.options.job_id = SetupJobId(j.options.job_id, setup, rep);
        j.options.transfer = false;
        j.options.tuner.seed += kRepetitionSeedStride * static_cast<uint64_t>(rep);
      }
      const std::string label = options.repetitions > 1
                                    ? absl::StrCat(setup, " ", rep + 1, "/", options.repetitions)
                                    : setup;
      SetupResult r;
      if (setup == "dedicated") {
        std::vector<engine::EngineResult> runs;
        for (const engine::EngineJob& j : own) {
          LOOM_ASSIGN_OR_RETURN(engine::EngineResult one,
                                RunOnce({j}, "interleaved", label, options, store));
          runs.push_back(std::move(one));
        }
        r = SummarizeDedicated(runs);
      } else {
        LOOM_ASSIGN_OR_RETURN(engine::EngineResult all, RunOnce(own, setup, label, options, store));
        r = SummarizeShared(setup, all);
      }
      r.repetition = rep;
      LOOM_RETURN_IF_ERROR(AfterSetup(own, options, *store, remeasurer, r));
      result.setups.push_back(std::move(r));
    }
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

nlohmann::json RankingJson(const RankingFidelity& f) {
  return {{"kendall_tau", JsonNum(f.kendall_tau)},
          {"pairs", f.pairs},
          {"regret", JsonNum(f.regret)},
          {"top_k", f.top_k},
          {"top_k_overlap", JsonNum(f.top_k_overlap)},
          {"chosen_alone_ms", JsonNum(f.chosen_alone_ms)}};
}

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

double GanttAxisEnd(const ExperimentResult& result) {
  double end = 0;
  for (const SetupResult& r : result.setups) {
    end = std::max(end, absl::ToDoubleSeconds(r.run.end - r.run.start));
  }
  return end;
}

std::string GanttFileName(const SetupResult& setup) {
  return absl::StrCat("gantt-", setup.setup,
                      setup.repetition > 0 ? absl::StrCat("-r", setup.repetition) : "", ".svg");
}

std::string GanttTitle(const std::string& name, const SetupResult& setup, int repetitions) {
  return absl::StrCat(name, ": ", setup.setup,
                      repetitions > 1 ? absl::StrCat(" (repetition ", setup.repetition + 1, " of ",
                                                     repetitions, ")")
                                      : "");
}

absl::Status WriteResults(const ExperimentResult& result, const std::string& dir,
                          const ReportContext& context) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  std::string csv =
      "setup,repetition,makespan_s,lower_bound_s,device_utilization,cpu_utilization,device_hours,"
      "distortion_median,kendall_tau,regret,top_k_overlap,job,job_seconds,tuned_latency_ms,"
      "final_latency_ms,job_distortion_median,job_kendall_tau,job_regret,job_top_k_overlap,"
      "chosen_alone_ms,records,error\n";
  nlohmann::json j = nlohmann::json::object();
  j["name"] = context.name;
  j["repetitions"] = result.repetitions;
  j["setups"] = nlohmann::json::array();
  const double axis_end = GanttAxisEnd(result);
  for (const SetupResult& r : result.setups) {
    nlohmann::json s = {{"setup", r.setup},
                        {"repetition", r.repetition},
                        {"makespan_s", r.makespan_s},
                        {"lower_bound_s", r.lower_bound_s},
                        {"device_busy_s", r.device_busy_s},
                        {"device_utilization", r.device_utilization},
                        {"cpu_utilization", r.cpu_utilization},
                        {"device_hours", r.device_hours},
                        {"distortion_median", JsonNum(r.distortion_median)},
                        {"ranking", RankingJson(r.ranking)},
                        {"stages", nlohmann::json::array()},
                        {"jobs", nlohmann::json::array()}};
    for (const engine::StageTrace& t : r.run.traces) {
      // The stage traces, seconds from the setup's start (the simulator's trace format plus the
      // job, task and round); trace.json has one event for each.
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
          absl::StrFormat(
              "%s,%d,%.3f,%.3f,%.4f,%.4f,%.6f,%s,%s,%s,%s,%s,%.3f,%.6f,%s,%s,%s,%s,%s,%s,%d,%s\n",
              r.setup, r.repetition, r.makespan_s, r.lower_bound_s, r.device_utilization,
              r.cpu_utilization, r.device_hours, Fixed(r.distortion_median, 5),
              Fixed(r.ranking.kendall_tau, 4), Fixed(r.ranking.regret, 5),
              Fixed(r.ranking.top_k_overlap, 4), CsvQuoted(job.name), job.seconds,
              job.tuned_latency_ms, Fixed(job.final_latency_ms, 4), Fixed(job.distortion_median, 5),
              Fixed(job.ranking.kendall_tau, 4), Fixed(job.ranking.regret, 5),
              Fixed(job.ranking.top_k_overlap, 4), Fixed(job.ranking.chosen_alone_ms, 5),
              job.records, CsvQuoted(job.error)));
      nlohmann::json samples = nlohmann::json::array();
      for (const DistortionSample& d : job.distortion) {
        samples.push_back({{"task_key", d.task_key},
                           {"config_index", d.config_index},
                           {"in_run_s", JsonNum(d.in_run_s)},
                           {"alone_s", JsonNum(d.alone_s)},
                           {"distortion", JsonNum(d.distortion)},
                           {"chosen", d.chosen},
                           {"error", d.error}});
      }
      nlohmann::json curves = nlohmann::json::array();
      for (const TaskCurve& c : job.curves) {
        nlohmann::json seconds = nlohmann::json::array(), gflops = nlohmann::json::array();
        for (const CurvePoint& p : c.trials) {
          seconds.push_back(p.seconds);
          gflops.push_back(p.gflops);
        }
        curves.push_back({{"task_key", c.task_key}, {"seconds", seconds}, {"gflops", gflops}});
      }
      s["jobs"].push_back({{"name", job.name},
                           {"job_id", job.job_id},
                           {"seconds", job.seconds},
                           {"tuned_latency_ms", job.tuned_latency_ms},
                           {"final_latency_ms", JsonNum(job.final_latency_ms)},
                           {"latency_error", job.latency_error},
                           {"distortion_median", JsonNum(job.distortion_median)},
                           {"ranking", RankingJson(job.ranking)},
                           {"distortion", samples},
                           {"curves", curves},
                           {"records", job.records},
                           {"error", job.error}});
    }
    j["setups"].push_back(std::move(s));
    GanttOptions go{.title = GanttTitle(context.name, r, result.repetitions),
                    .device_cores = context.device_cores,
                    .axis_end = axis_end};
    LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/", GanttFileName(r)), GanttSvg(r.run, go)));
  }
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/results.csv"), csv));
  nlohmann::json sim = {{"source", result.simulation_source},
                        {"error", result.simulation_error},
                        {"rows", nlohmann::json::array()}};
  if (!result.simulation.empty()) {
    for (const SimulationRow& row : result.simulation) {
      sim["rows"].push_back({{"setup", row.setup},
                             {"repetition", row.repetition},
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
  j["claims"] = ClaimsToJson(SummarizeClaims(result));
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/results.json"), j.dump(2) + "\n"));
  LOOM_RETURN_IF_ERROR(
      WriteText(absl::StrCat(dir, "/trace.json"), ExperimentTrace(result).ToJson().dump() + "\n"));
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/report.html"), ReportHtml(result, context)));
  return absl::OkStatus();
}

absl::Status WriteScaleSummary(const std::vector<ScaleRun>& runs, const std::string& dir,
                               const ReportContext& context) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  nlohmann::json j = {{"name", context.name},
                      {"job_counts", nlohmann::json::array()},
                      {"runs", nlohmann::json::array()}};
  for (const ScaleRun& run : runs) {
    j["job_counts"].push_back(run.jobs);
    j["runs"].push_back({{"jobs", run.jobs},
                         {"dir", run.dir},
                         {"repetitions", run.result.repetitions},
                         {"claims", ClaimsToJson(SummarizeClaims(run.result))}});
  }
  LOOM_RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/results.json"), j.dump(2) + "\n"));
  return WriteText(absl::StrCat(dir, "/report.html"), ScaleReportHtml(runs, context));
}

}  // namespace loom::experiment
