// `loom experiment SPEC.yaml -o DIR`: runs the spec's tuning jobs under each setup (each job
// alone, then all at once under each policy) in the embedded engine, without a person watching,
// and writes DIR/results.csv, results.json, trace.json, gantt-<setup>.svg, simulation.csv,
// sim.yaml and report.html (experiment/runner.h). --through-service then runs the same setups
// through real `loom serve` + `loom agent` processes (experiment/service_runner.h) and adds
// DIR/service.csv. --json prints one object instead of the tables: where the results are, per
// setup its makespan and figures, the claims' verdicts.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/engine/engine.h"
#include "loom/experiment/claims.h"
#include "loom/experiment/report.h"
#include "loom/experiment/runner.h"
#include "loom/experiment/service_runner.h"
#include "loom/experiment/spec.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/tune/local_machine.h"
#include "loom/tune/tune_job.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

// The directory of one count of a scale sweep.
std::string ScaleDir(int jobs) { return absl::StrCat("jobs-", jobs); }

// The claims' verdicts, one line each: "time  interleaved  makespan below ...: -32.1% [...] met".
std::string FormatClaims(const experiment::ExperimentResult& result) {
  std::string out;
  for (const experiment::ClaimVerdict& v : experiment::SummarizeClaims(result).verdicts) {
    absl::StrAppend(&out,
                    absl::StrFormat("  %-21s %-12s %s: %s -> %s\n", v.claim, v.setup, v.statement,
                                    v.figure, std::string(experiment::VerdictName(v.verdict))));
  }
  return out;
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A figure for --json: null where it was not measured (NaN).
nlohmann::json Figure(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

// The claims' verdicts for --json, as results.json has them.
nlohmann::json VerdictsJson(const experiment::ExperimentResult& result) {
  return experiment::ClaimsToJson(experiment::SummarizeClaims(result))["verdicts"];
}

nlohmann::json SimulationJson(const std::vector<experiment::SimulationRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const experiment::SimulationRow& r : rows) {
    out.push_back({{"setup", r.setup},
                   {"repetition", r.repetition},
                   {"policy", r.policy},
                   {"measured_s", r.measured_s},
                   {"simulated_s", r.simulated_s},
                   {"ratio", r.ratio}});
  }
  return out;
}

struct ExperimentOptions {
  std::string spec;
  std::string out_dir;
  std::string db;                 // empty: DIR/records.db
  bool through_service = false;   // also run the setups through `loom serve` + an agent
  bool service_only = false;      // only through the service (no embedded run)
  double service_timeout = 7200;  // seconds per setup through the service
  double run_timeout = 0;         // 0: the spec's run_timeout_s
  double progress_seconds = 10;
  bool resimulate = false;  // only redo the simulator check from DIR/results.json
  bool json = false;
};

// The results of one experiment as `loom experiment --json` prints them: where they are, per
// setup its makespan and figures with each job's, the claims' verdicts, the service's setups.
void PrintExperimentJson(const experiment::ExperimentSpec& spec, const ExperimentOptions& o,
                         size_t num_jobs, const experiment::ExperimentResult& results,
                         bool service) {
  const experiment::SetupResult* seq = experiment::SequentialReference(results);
  nlohmann::json setups = nlohmann::json::array();
  for (const experiment::SetupResult& r : results.setups) {
    nlohmann::json jobs = nlohmann::json::array();
    for (const experiment::SetupJobResult& j : r.jobs) {
      jobs.push_back({{"name", j.name},
                      {"job_id", j.job_id},
                      {"seconds", j.seconds},
                      {"records", j.records},
                      {"final_latency_ms", Figure(j.final_latency_ms)},
                      {"distortion_median", Figure(j.distortion_median)},
                      {"error", j.error}});
    }
    double sim_ratio = kNaN;
    for (const auto& row : results.simulation) {
      if (row.setup == r.setup && row.repetition == r.repetition) sim_ratio = row.ratio;
    }
    setups.push_back(
        {{"setup", r.setup},
         {"repetition", r.repetition},
         {"makespan_s", r.makespan_s},
         {"vs_sequence",
          Figure(seq != nullptr && seq->makespan_s > 0 ? r.makespan_s / seq->makespan_s : kNaN)},
         {"lower_bound_s", r.lower_bound_s},
         {"device_utilization", r.device_utilization},
         {"cpu_utilization", r.cpu_utilization},
         {"device_hours", r.device_hours},
         {"distortion_median", Figure(r.distortion_median)},
         {"simulated_vs_real", Figure(sim_ratio)},
         {"jobs", jobs}});
  }
  nlohmann::json out = {
      {"name", spec.name},
      {"output", o.out_dir},
      {"report", absl::StrCat(o.out_dir, "/report.html")},
      {"results_json", absl::StrCat(o.out_dir, "/results.json")},
      {"results_csv", absl::StrCat(o.out_dir, "/results.csv")},
      {"jobs", num_jobs},
      {"setups", setups},
      {"verdicts", o.service_only ? nlohmann::json::array() : VerdictsJson(results)}};
  if (!results.simulation_error.empty()) out["simulation_error"] = results.simulation_error;
  if (service) {
    nlohmann::json through = nlohmann::json::array();
    for (const experiment::ServiceSetupResult& s : results.service) {
      const experiment::SetupResult* embedded = nullptr;
      for (const auto& r : results.setups) {
        if (r.setup == s.setup) embedded = &r;
      }
      nlohmann::json jobs = nlohmann::json::array();
      for (const experiment::ServiceJobResult& j : s.jobs) {
        jobs.push_back({{"name", j.name},
                        {"job_id", j.job_id},
                        {"state", j.state},
                        {"seconds", j.seconds},
                        {"records", j.records},
                        {"error", j.error}});
      }
      through.push_back({{"setup", s.setup},
                         {"policy", s.policy},
                         {"makespan_s", s.makespan_s},
                         {"embedded_makespan_s",
                          embedded ? nlohmann::json(embedded->makespan_s) : nlohmann::json()},
                         {"ratio", Figure(experiment::ServiceRatio(s, embedded))},
                         {"error", s.error},
                         {"jobs", jobs}});
    }
    out["service"] = std::move(through);
    out["service_csv"] = absl::StrCat(o.out_dir, "/service.csv");
  }
  PrintJson(out);
}

// The same as tables: the setups' figures, the jobs', the verdicts, the service's setups.
void PrintExperimentTables(const experiment::ExperimentSpec& spec, const ExperimentOptions& o,
                           size_t num_jobs, const experiment::ExperimentResult& results,
                           bool service) {
  const experiment::SetupResult* seq = experiment::SequentialReference(results);
  auto sim_ratio = [&](const std::string& setup) {
    for (const auto& row : results.simulation) {
      if (row.setup == setup) return row.ratio;
    }
    return 0.0;
  };
  std::printf("experiment %s: %zu jobs, results in %s (report.html)\n", spec.name.c_str(), num_jobs,
              o.out_dir.c_str());
  if (!o.service_only) {
    std::printf("%-13s %10s %7s %8s %8s %6s %11s %11s %9s\n", "setup", "makespan s", "/seq",
                "bound s", "/bound", "dev %", "distortion", "dev-hours", "sim/real");
    for (const auto& r : results.setups) {
      const double vs_seq =
          seq != nullptr && seq->makespan_s > 0 ? r.makespan_s / seq->makespan_s : 0;
      const double vs_lb = r.lower_bound_s > 0 ? r.makespan_s / r.lower_bound_s : 0;
      std::printf("%-13s %10.1f %7.3f %8.1f %8.3f %6.0f %10.2f%% %11.4f %9.3f\n", r.setup.c_str(),
                  r.makespan_s, vs_seq, r.lower_bound_s, vs_lb, r.device_utilization * 100,
                  r.distortion_median * 100, r.device_hours, sim_ratio(r.setup));
    }
    std::printf("%-13s %-22s %10s %16s %11s\n", "setup", "job", "time s", "final latency ms",
                "distortion");
    for (const auto& r : results.setups) {
      for (const auto& j : r.jobs) {
        std::printf("%-13s %-22s %10.1f %16.3f %10.2f%%%s%s\n", r.setup.c_str(), j.name.c_str(),
                    j.seconds, j.final_latency_ms, j.distortion_median * 100,
                    j.error.empty() ? "" : "  error: ", j.error.c_str());
      }
    }
    if (!results.simulation_error.empty()) {
      std::printf("simulator check: %s\n", results.simulation_error.c_str());
    }
    std::printf("%s", FormatClaims(results).c_str());
  }
  if (!service) return;
  std::printf("through the service (service.csv):\n%-13s %-13s %12s %11s %9s  %s\n", "setup",
              "policy", "embedded s", "service s", "ratio", "jobs (service s, records, state)");
  for (const auto& s : results.service) {
    const experiment::SetupResult* embedded = nullptr;
    for (const auto& r : results.setups) {
      if (r.setup == s.setup) embedded = &r;
    }
    std::string per_job;
    for (const auto& j : s.jobs) {
      absl::StrAppend(&per_job, per_job.empty() ? "" : "; ",
                      absl::StrFormat("%s %.1f %d %s", j.name, j.seconds, j.records, j.state));
    }
    const double ratio = experiment::ServiceRatio(s, embedded);
    std::printf("%-13s %-13s %12s %11.1f %9s  %s\n", s.setup.c_str(), s.policy.c_str(),
                embedded ? absl::StrFormat("%.1f", embedded->makespan_s).c_str() : "-",
                s.makespan_s, std::isfinite(ratio) ? absl::StrFormat("%.3f", ratio).c_str() : "-",
                per_job.c_str());
    for (const auto& j : s.jobs) {
      if (!j.error.empty() && j.error != s.error) {
        std::printf("  %s %s: %s\n", s.setup.c_str(), j.name.c_str(), j.error.c_str());
      }
    }
  }
}

void RunExperimentCommand(const ExperimentOptions& o) {
  auto spec = experiment::LoadExperimentSpec(o.spec);
  FailIfError(spec.status());
  // Every setup compiles its candidates afresh: with the kernel cache, the setups after the first
  // would find most of their (same-seeded) candidates built and look faster than they are.
  tune::LocalMachineOptions lmo;
  lmo.target = spec->target;
  lmo.device = spec->device;
  lmo.device_cores = spec->device_cores;
  lmo.min_repeat_ms = spec->min_repeat_ms;
  lmo.repeat = spec->repeat;
  lmo.run_timeout = absl::Seconds(o.run_timeout > 0 ? o.run_timeout : spec->run_timeout_s);
  lmo.use_kernel_cache = false;
  lmo.option_prefix = "";
  auto created = tune::LocalMachine::Create(lmo);
  FailIfError(created.status());
  // A CUDA spec checks its GPU (driver, device, architecture) before any job: on a machine
  // without one this is the one line the run ends with.
  if (created->cuda() && !o.resimulate) {
    const absl::Status probed = created->Probe();
    if (!probed.ok()) {
      Fail(absl::Status(probed.code(), absl::StrCat(o.spec, ": ", probed.message())));
    }
  }
  const tune::LocalMachine machine = *std::move(created);
  const ops::Target target = machine.target();
  const int ncpu = machine.num_cpus();
  const absl::Duration run_timeout = lmo.run_timeout;

  experiment::RunnerOptions ro;
  engine::MachineLayout& layout = ro.engine.layout;
  layout.device_cores = machine.device_cores();
  layout.cpu_cores = machine.cpu_cores();
  layout.cpu_slots =
      spec->cpu_slots > 0 ? spec->cpu_slots : static_cast<int>(layout.cpu_cores.size());
  if (machine.cuda()) {
    // The GPU is the device; its launching core lends no slots (as `loom tune --target cuda`).
    layout.gpu = absl::StrCat("cuda:", machine.cuda_ordinal());
    layout.device_shares_cores = false;
    if (layout.cpu_slots == 0) {
      Fail(absl::InvalidArgumentError(absl::StrCat(
          o.spec, ": target ", spec->target,
          " needs a core outside device_cores for builds (this machine has one core)")));
    }
  }
  ro.engine.build_slots = spec->build_slots > 0 ? spec->build_slots : std::max(1, layout.cpu_slots);
  ro.engine.progress_interval = absl::Seconds(o.progress_seconds);
  ro.engine.make_measurer = [machine](const std::vector<int>& cores) {
    return machine.MakeMeasurer(cores);
  };
  ro.engine.make_builder = [machine](const tune::BuildOptions& bo) {
    return machine.MakeBuilder(bo);
  };
  ro.distortion_samples = spec->distortion_samples;
  ro.distortion_seed = spec->distortion_seed;
  ro.ranking_top = spec->ranking_top;
  ro.repetitions = spec->repetitions;
  ro.latency_runs = spec->latency_runs;
  ro.latency_min_seconds = spec->latency_min_seconds;
  ro.simulate = spec->simulate;
  ro.sim_measure = {.repeat = spec->repeat, .min_repeat_ms = spec->min_repeat_ms};
  for (const experiment::ExperimentJobSpec& js : spec->jobs) {
    ro.sim_measure.batch_size.push_back(js.batch_size);
    ro.sim_measure.trials.push_back(js.trials);
  }
  if (o.resimulate) {
    if (spec->job_counts.empty()) {
      auto rows = experiment::Resimulate(o.out_dir, ro);
      FailIfError(rows.status());
      if (o.json) {
        PrintJson({{"output", o.out_dir}, {"simulation", SimulationJson(*rows)}});
      } else {
        std::printf("%s", experiment::FormatSimulationRows(*rows).c_str());
      }
      return;
    }
    nlohmann::json counts = nlohmann::json::array();
    for (int n : spec->job_counts) {
      experiment::RunnerOptions sub = ro;
      sub.sim_measure.batch_size.resize(static_cast<size_t>(n));
      sub.sim_measure.trials.resize(static_cast<size_t>(n));
      auto rows = experiment::Resimulate(absl::StrCat(o.out_dir, "/", ScaleDir(n)), sub);
      FailIfError(rows.status());
      if (o.json) {
        counts.push_back(
            {{"jobs", n}, {"dir", ScaleDir(n)}, {"simulation", SimulationJson(*rows)}});
      } else {
        std::printf("%d jobs:\n%s", n, experiment::FormatSimulationRows(*rows).c_str());
      }
    }
    if (o.json) PrintJson({{"output", o.out_dir}, {"runs", counts}});
    return;
  }
  ro.on_note = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  ro.on_progress = [](const std::string& setup, const engine::EngineProgress& p) {
    std::string line = absl::StrFormat("[%s %.0fs]", setup, absl::ToDoubleSeconds(p.elapsed));
    for (const auto& j : p.jobs) {
      absl::StrAppend(
          &line, absl::StrFormat(" %s %d/%d:%s", j.name, std::min(j.task_index + 1, j.num_tasks),
                                 j.num_tasks, j.state));
    }
    for (const auto& r : p.resources) {
      absl::StrAppend(&line, absl::StrFormat(" | %s %.0f%%", r.name, r.busy_fraction * 100));
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  };

  std::vector<engine::EngineJob> jobs;
  // The jobs' models, kept for the final-latency measurement (ro.models points into it).
  std::vector<std::unique_ptr<graph::Graph>> models;
  std::set<std::string> ids;
  for (size_t i = 0; i < spec->jobs.size(); ++i) {
    const experiment::ExperimentJobSpec& js = spec->jobs[i];
    ModelOptions mo;
    mo.model = js.model;
    auto loaded = LoadModelFromOptions(mo);
    FailIfError(loaded.status());
    auto all = graph::ExtractTasks(loaded->graph);
    FailIfError(all.status());
    engine::EngineJob job;
    job.name = js.model;
    for (int64_t t : js.tasks) {
      if (t >= static_cast<int64_t>(all->size())) {
        Fail(absl::InvalidArgumentError(absl::StrCat("jobs[", i, "].tasks: index ", t,
                                                     " is out of range: ", js.model, " has ",
                                                     all->size(), " tasks")));
      }
      job.tasks.push_back((*all)[static_cast<size_t>(t)]);
    }
    if (js.tasks.empty()) job.tasks = *all;
    job.options.trials = js.trials;
    job.options.batch_size = js.batch_size;
    job.options.tuner.kind = js.tuner;
    job.options.tuner.seed = js.seed;
    job.target = target;
    std::string id = machine.JobId(job.tasks, job.options.tuner);
    if (!ids.insert(id).second) {
      id = absl::StrCat(id, "-", i + 1);
      ids.insert(id);
    }
    job.options.job_id = id;
    if (jobs.size() > 0 && std::any_of(jobs.begin(), jobs.end(),
                                       [&](const auto& other) { return other.name == job.name; })) {
      job.name = absl::StrCat(job.name, "#", i + 1);
    }
    jobs.push_back(std::move(job));
    models.push_back(std::make_unique<graph::Graph>(std::move(loaded->graph)));
    ro.models.push_back(models.back().get());
  }
  // The service run's layout is the embedded engine's (its device lends its cores the same way);
  // checked now so a bad one fails before the embedded run, not after it.
  experiment::ServiceRunnerOptions so;
  const bool service = o.through_service || o.service_only;
  if (service && !spec->job_counts.empty()) {
    Fail(absl::InvalidArgumentError(
        "job_counts: a scale sweep runs in the embedded engine only; drop --through-service and "
        "--service-only, or the job_counts key"));
  }
  if (service && machine.cuda()) {
    Fail(absl::InvalidArgumentError(absl::StrCat(
        o.spec, ": target ", spec->target,
        ": the service runs of an experiment measure on the CPU only; drop --through-service and "
        "--service-only")));
  }
  if (service) {
    std::error_code self_ec;
    so.loom_binary = std::filesystem::read_symlink("/proc/self/exe", self_ec).string();
    so.work_dir = absl::StrCat(o.out_dir, "/service");
    so.device_cores = layout.device_cores;
    so.cpu_slots = layout.cpu_slots;
    so.build_slots = ro.engine.build_slots;
    so.lend_device_cores = layout.device_shares_cores;
    so.min_repeat_ms = spec->min_repeat_ms;
    so.repeat = spec->repeat;
    so.run_timeout_s = absl::ToDoubleSeconds(run_timeout);
    so.setup_timeout = absl::Seconds(o.service_timeout);
    so.on_note = ro.on_note;
    FailIfError(experiment::CheckServiceRun(*spec, so));
  }
  const std::string db = o.db.empty() ? absl::StrCat(o.out_dir, "/records.db") : o.db;
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  if (ec) Fail(absl::FailedPreconditionError(absl::StrCat("cannot create ", o.out_dir)));
  experiment::ReportContext context;
  context.name = spec->name;
  {
    std::ifstream f(o.spec);
    std::stringstream text;
    text << f.rdbuf();
    context.spec_text = text.str();
  }
  context.command = absl::StrCat("loom experiment ", o.spec, " -o ", o.out_dir,
                                 o.service_only      ? " --service-only"
                                 : o.through_service ? " --through-service"
                                                     : "");
  context.machine = absl::StrCat(
      ncpu, " cores; ",
      machine.cuda() ? absl::StrCat("device ", target.device_name, " (", target.Key(),
                                    "), launched from core(s) ")
                     : "device cpu:",
      absl::StrJoin(layout.device_cores, ","),
      machine.cuda() ? "; " : " (lends its cores to CPU stages between measurements); ",
      layout.cpu_slots, " CPU slot(s) on core(s) ", absl::StrJoin(layout.cpu_cores, ","), "; ",
      ro.engine.build_slots, " slot(s) per build; min_repeat_ms ", spec->min_repeat_ms, ", repeat ",
      spec->repeat);
  context.device_cores = layout.device_cores;
  if (!spec->job_counts.empty()) {
    auto store = tune::OpenSqliteRecordStore(db);
    FailIfError(store.status());
    std::vector<experiment::ScaleRun> runs;
    for (int n : spec->job_counts) {
      // The first n jobs, with job ids of their own (a job appears in several counts).
      std::vector<engine::EngineJob> subset(jobs.begin(), jobs.begin() + n);
      for (engine::EngineJob& j : subset) j.options.job_id += absl::StrCat(".n", n);
      experiment::RunnerOptions sub = ro;
      sub.models.resize(static_cast<size_t>(n));
      sub.sim_measure.batch_size.resize(static_cast<size_t>(n));
      sub.sim_measure.trials.resize(static_cast<size_t>(n));
      std::fprintf(stderr, "== %d jobs ==\n", n);
      auto result = experiment::RunExperiment(subset, spec->setups, sub, store->get());
      FailIfError(result.status());
      experiment::ScaleRun run{.jobs = n, .dir = ScaleDir(n), .result = *std::move(result)};
      experiment::ReportContext own = context;
      own.name = absl::StrCat(spec->name, ", ", n, " jobs");
      FailIfError(experiment::WriteResults(run.result, absl::StrCat(o.out_dir, "/", run.dir), own));
      runs.push_back(std::move(run));
      // After every count, so a long sweep's finished counts are on disk.
      FailIfError(experiment::WriteScaleSummary(runs, o.out_dir, context));
    }
    if (o.json) {
      nlohmann::json counts = nlohmann::json::array();
      for (const experiment::ScaleRun& run : runs) {
        counts.push_back({{"jobs", run.jobs},
                          {"dir", run.dir},
                          {"report", absl::StrCat(o.out_dir, "/", run.dir, "/report.html")},
                          {"verdicts", VerdictsJson(run.result)}});
      }
      PrintJson({{"name", spec->name},
                 {"output", o.out_dir},
                 {"report", absl::StrCat(o.out_dir, "/report.html")},
                 {"job_counts", spec->job_counts},
                 {"runs", counts}});
      return;
    }
    std::printf("experiment %s: job counts %s, results in %s (report.html)\n", spec->name.c_str(),
                absl::StrJoin(spec->job_counts, ", ").c_str(), o.out_dir.c_str());
    for (const experiment::ScaleRun& run : runs) {
      std::printf("%d jobs (%s/report.html):\n%s", run.jobs, run.dir.c_str(),
                  FormatClaims(run.result).c_str());
    }
    return;
  }
  absl::StatusOr<experiment::ExperimentResult> results = experiment::ExperimentResult{};
  if (!o.service_only) {
    auto store = tune::OpenSqliteRecordStore(db);
    FailIfError(store.status());
    results = experiment::RunExperiment(jobs, spec->setups, ro, store->get());
    FailIfError(results.status());
  }
  if (service) {
    // The embedded results are on disk before the (long) service run starts.
    if (!o.service_only) FailIfError(experiment::WriteResults(*results, o.out_dir, context));
    auto through = experiment::RunThroughService(*spec, so);
    FailIfError(through.status());
    results->service = *std::move(through);
  }
  FailIfError(experiment::WriteResults(*results, o.out_dir, context));
  if (o.json) {
    PrintExperimentJson(*spec, o, jobs.size(), *results, service);
  } else {
    PrintExperimentTables(*spec, o, jobs.size(), *results, service);
  }
  // A job that failed is data in the results; a setup whose processes failed is an error.
  std::vector<std::string> failed;
  for (const auto& s : results->service) {
    if (!s.error.empty()) failed.push_back(absl::StrCat(s.setup, ": ", s.error));
  }
  if (!failed.empty()) {
    Fail(absl::UnavailableError(
        absl::StrCat("through the service, ", failed.size(),
                     " setup(s) did not finish: ", absl::StrJoin(failed, " | "))));
  }
}

}  // namespace

void RegisterExperimentCommand(CLI::App& app) {
  auto o = std::make_shared<ExperimentOptions>();
  auto* cmd = app.add_subcommand(
      "experiment", "Run the same tuning jobs under each setup and write the comparison");
  cmd->add_option("SPEC", o->spec, "Experiment spec (YAML)")->required();
  cmd->add_option("-o,--output", o->out_dir,
                  "Output directory (results.csv/json, trace.json, gantt-<setup>.svg, "
                  "simulation.csv, report.html)")
      ->required();
  cmd->add_option("--db", o->db, "Record database (default: DIR/records.db)");
  NoDefaultShown(
      cmd->add_option("--run-timeout", o->run_timeout,
                      "Seconds a candidate may run past its expected time before it counts as hung "
                      "(default: the spec's run_timeout_s)"))
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--progress-seconds", o->progress_seconds, "Seconds between progress lines")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_flag("--through-service", o->through_service,
                "After the embedded run, run the same setups through real `loom serve` + `loom "
                "agent` processes and write DIR/service.csv (makespans side by side)");
  cmd->add_flag("--service-only", o->service_only,
                "Only the service run (no embedded run; the ratio column stays empty)");
  cmd->add_option("--service-timeout", o->service_timeout,
                  "Seconds one setup may take through the service before its jobs are cancelled")
      ->check(CLI::Range(1.0, 86400.0));
  cmd->add_flag("--resimulate", o->resimulate,
                "Tune nothing: redo the simulator check from DIR/results.json with this spec's "
                "measure options and rewrite DIR/simulation.csv and DIR/sim.yaml");
  AddJsonFlag(cmd, &o->json,
              "One JSON object: the output folder and files, per setup its makespan and figures "
              "(each job's too), the claims' verdicts");
  cmd->callback([o] { RunExperimentCommand(*o); });
}

}  // namespace loom::cli
