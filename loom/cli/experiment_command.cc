// `loom experiment SPEC.yaml -o DIR`: runs the spec's tuning jobs under each setup (each job
// alone, then all at once under each policy) in the embedded engine, without a person watching,
// and writes DIR/results.csv and DIR/results.json (experiment/runner.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/cli/commands.h"
#include "loom/cli/model_options.h"
#include "loom/engine/engine.h"
#include "loom/experiment/runner.h"
#include "loom/experiment/spec.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/tune/builder.h"
#include "loom/tune/measurer.h"
#include "loom/tune/record_store.h"
#include "loom/tune/tune_job.h"

namespace loom::cli {
namespace {

struct ExperimentOptions {
  std::string spec;
  std::string out_dir;
  std::string db;  // empty: DIR/records.db
  double run_timeout = 10;
  double progress_seconds = 10;
};

void RunExperimentCommand(const ExperimentOptions& o) {
  auto spec = experiment::LoadExperimentSpec(o.spec);
  FailIfError(spec.status());
  const ops::Target target = ops::HostCpuTarget();
  const int ncpu = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  experiment::RunnerOptions ro;
  engine::MachineLayout& layout = ro.engine.layout;
  layout.device_cores =
      spec->device_cores.empty() ? std::vector<int>{ncpu - 1} : spec->device_cores;
  layout.cpu_cores.clear();
  for (int c = 0; c < ncpu; ++c) {
    if (std::count(layout.device_cores.begin(), layout.device_cores.end(), c) == 0) {
      layout.cpu_cores.push_back(c);
    }
  }
  for (int c : layout.device_cores) {
    if (c >= ncpu) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("device_cores: core ", c, " does not exist (this machine has ", ncpu, ")")));
    }
  }
  layout.cpu_slots =
      spec->cpu_slots > 0 ? spec->cpu_slots : static_cast<int>(layout.cpu_cores.size());
  ro.engine.build_slots = spec->build_slots > 0 ? spec->build_slots : std::max(1, layout.cpu_slots);
  ro.engine.progress_interval = absl::Seconds(o.progress_seconds);
  const double run_timeout = o.run_timeout;
  ro.engine.make_measurer = [run_timeout](const std::vector<int>& cores) {
    tune::MeasureOptions mo;
    mo.cores = cores;
    mo.timeout = absl::Seconds(run_timeout);
    return tune::MakeLocalMeasurer(mo);
  };
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
    std::string id = tune::DefaultJobId(job.tasks, target, job.options.tuner);
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
  }
  const std::string db = o.db.empty() ? absl::StrCat(o.out_dir, "/records.db") : o.db;
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  if (ec) Fail(absl::FailedPreconditionError(absl::StrCat("cannot create ", o.out_dir)));
  auto store = tune::OpenSqliteRecordStore(db);
  FailIfError(store.status());
  auto results = experiment::RunExperiment(jobs, spec->setups, ro, store->get());
  FailIfError(results.status());
  FailIfError(experiment::WriteResults(*results, o.out_dir));

  std::printf("experiment %s: %zu jobs, results in %s\n", spec->name.c_str(), jobs.size(),
              o.out_dir.c_str());
  std::printf("%-14s %11s %13s %9s %9s %12s\n", "setup", "makespan s", "lower bound s", "device %",
              "cpu %", "device-hours");
  for (const auto& r : *results) {
    std::printf("%-14s %11.1f %13.1f %9.0f %9.0f %12.4f\n", r.setup.c_str(), r.makespan_s,
                r.lower_bound_s, r.device_utilization * 100, r.cpu_utilization * 100,
                r.device_hours);
  }
}

}  // namespace

void RegisterExperimentCommand(CLI::App& app) {
  auto o = std::make_shared<ExperimentOptions>();
  auto* cmd = app.add_subcommand(
      "experiment", "Run the same tuning jobs under each setup and write the comparison");
  cmd->add_option("SPEC", o->spec, "Experiment spec (YAML)")->required();
  cmd->add_option("-o,--out", o->out_dir, "Output directory (results.csv, results.json)")
      ->required();
  cmd->add_option("--db", o->db, "Record database (default: DIR/records.db)");
  cmd->add_option("--run-timeout", o->run_timeout,
                  "Seconds a candidate may run past its expected time before it counts as hung")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--progress-seconds", o->progress_seconds, "Seconds between progress lines")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->callback([o] { RunExperimentCommand(*o); });
}

}  // namespace loom::cli
