// `loom tune MODEL ...` tunes every task of a model as one job; `loom tune-task --conv2d ... |
// --dense ...` tunes one workload. Both show live progress on stderr and a final table on stdout,
// store every measurement in the record database, and resume from it when run again.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "loom/cli/commands.h"
#include "loom/cli/model_options.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/tune/builder.h"
#include "loom/tune/measurer.h"
#include "loom/tune/record_store.h"
#include "loom/tune/tune_job.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct TuneOptions {
  std::string target = "cpu";
  std::string isa;  // empty: the host's best
  int64_t trials = 64;
  int batch_size = 8;
  std::string tuner = "xgb";
  uint64_t seed = 0;
  std::string db = "loom.db";
  std::string device_cores;  // "1" or "2,3"; empty: the last core
  int build_threads = 0;     // 0: cores not used by the device (at least 1)
  std::string job_id;
  std::string task_filter;  // "0,3,5": indices into the task table
  int early_stopping = -1;
  double run_timeout = 10;  // seconds per candidate on top of its expected time
  bool no_transfer = false;
  bool json = false;
  bool test_faults = false;  // hidden: lets tests inject crashing/hanging candidates
};

absl::StatusOr<std::vector<int64_t>> ParseIntList(const std::string& text, const char* what) {
  std::vector<int64_t> out;
  for (const std::string& part :
       std::vector<std::string>(absl::StrSplit(text, ',', absl::SkipEmpty()))) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad ", what, " '", text, "': expected comma-separated non-negative integers"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("empty ", what));
  return out;
}

void AddTuneOptions(CLI::App* cmd, TuneOptions* o) {
  cmd->add_option("--target", o->target, "Target kind")->check(CLI::IsMember({"cpu"}));
  cmd->add_option("--isa", o->isa,
                  "CPU ISA to generate for (avx512, avx2, generic; default: host)");
  cmd->add_option("--trials", o->trials, "Measured candidates per task")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cmd->add_option("--batch-size", o->batch_size, "Candidates per round (one build batch)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--tuner", o->tuner, "Search strategy")
      ->check(CLI::IsMember({"xgb", "ga", "random", "grid"}));
  cmd->add_option("--seed", o->seed, "Tuner seed");
  cmd->add_option("--db", o->db, "SQLite record database (created if missing)");
  cmd->add_option("--device-cores", o->device_cores,
                  "CPU cores the measurer is pinned to, e.g. 1 or 2,3 (default: the last core)");
  cmd->add_option("--build-threads", o->build_threads,
                  "Parallel compiles (default: cores outside the device, at least 1)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--job-id", o->job_id,
                  "Job id (default: derived from the work, so reruns resume)");
  cmd->add_option("--early-stopping", o->early_stopping,
                  "Stop a task after this many trials without improvement");
  cmd->add_option("--run-timeout", o->run_timeout,
                  "Seconds a candidate may run past its expected time before it counts as hung")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_flag("--no-transfer", o->no_transfer, "Do not seed tuners with other jobs' records");
  cmd->add_flag("--json", o->json, "Print the final table as JSON");
  cmd->add_flag("--test-faults", o->test_faults, "Testing only: add a knob that injects faults")
      ->group("");  // hidden
}

struct Progress {
  bool tty = isatty(STDERR_FILENO) != 0;
  void operator()(const tune::ProgressEvent& ev) const {
    const tune::TaskTuner& t = *ev.tuner;
    std::string best = t.best_gflops() > 0 ? absl::StrFormat("%8.2f", t.best_gflops()) : "       -";
    std::string eta = ev.eta_seconds > 0
                          ? absl::StrFormat("%dm%02ds", static_cast<int>(ev.eta_seconds) / 60,
                                            static_cast<int>(ev.eta_seconds) % 60)
                          : "-";
    std::string line = absl::StrFormat(
        "[task %2d/%d] %-16s trials %4d/%-4d best %s GFLOPS  errors %3d  ETA %s", ev.task_index + 1,
        ev.num_tasks, graph::TaskKindName(t.task().workload.kind), t.trials_done(),
        t.options().trials, best, t.errors(), eta);
    if (tty) {
      std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
      if (t.Done()) std::fprintf(stderr, "\n");
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }
};

std::string Ms(double seconds) {
  return std::isfinite(seconds) ? absl::StrFormat("%.4f", seconds * 1e3) : "-";
}
std::string Gf(double flops, double seconds) {
  return std::isfinite(seconds) && seconds > 0 ? absl::StrFormat("%.2f", flops / seconds / 1e9)
                                               : "-";
}

void PrintOutcomes(const std::vector<tune::TaskOutcome>& outcomes, const TuneOptions& o,
                   const std::string& job_id, const ops::Target& target) {
  if (o.json) {
    nlohmann::json j;
    j["job_id"] = job_id;
    j["target"] = target.Key();
    j["db"] = o.db;
    for (const auto& r : outcomes) {
      nlohmann::json t = {{"key", r.task.key},
                          {"kind", graph::TaskKindName(r.task.workload.kind)},
                          {"count", r.task.count},
                          {"flops", r.task.flops},
                          {"template", r.template_name},
                          {"trials", r.trials},
                          {"resumed_trials", r.resumed_trials},
                          {"transferred_records", r.transferred_records},
                          {"errors", r.errors}};
      if (std::isfinite(r.best_cost)) {
        t["best_ms"] = r.best_cost * 1e3;
        t["best_gflops"] = r.best_gflops;
        t["best_config"] = nlohmann::json::parse(r.best_config_json);
      }
      if (std::isfinite(r.default_cost)) t["default_ms"] = r.default_cost * 1e3;
      if (!r.skipped_reason.empty()) t["skipped"] = r.skipped_reason;
      j["tasks"].push_back(t);
    }
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("job %s on %s (records in %s)\n", job_id.c_str(), target.Key().c_str(), o.db.c_str());
  std::printf("%3s  %-16s %6s %6s %10s %10s %10s %10s %8s\n", "#", "kind", "trials", "errors",
              "default ms", "best ms", "default GF", "best GF", "speedup");
  double total_default = 0, total_best = 0;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const auto& r = outcomes[i];
    if (!r.skipped_reason.empty()) {
      std::printf("%3zu  %-16s skipped: %s\n", i, graph::TaskKindName(r.task.workload.kind).c_str(),
                  r.skipped_reason.c_str());
      continue;
    }
    std::string speedup = std::isfinite(r.best_cost) && std::isfinite(r.default_cost)
                              ? absl::StrFormat("%.2fx", r.default_cost / r.best_cost)
                              : "-";
    std::printf("%3zu  %-16s %6lld %6lld %10s %10s %10s %10s %8s\n", i,
                graph::TaskKindName(r.task.workload.kind).c_str(), static_cast<long long>(r.trials),
                static_cast<long long>(r.errors), Ms(r.default_cost).c_str(),
                Ms(r.best_cost).c_str(), Gf(r.task.flops, r.default_cost).c_str(),
                Gf(r.task.flops, r.best_cost).c_str(), speedup.c_str());
    if (std::isfinite(r.best_cost) && std::isfinite(r.default_cost)) {
      total_default += r.default_cost * static_cast<double>(r.task.count);
      total_best += r.best_cost * static_cast<double>(r.task.count);
    }
  }
  if (total_best > 0) {
    std::printf(
        "tunable operators, weighted by occurrences: default %.3f ms, tuned %.3f ms (%.2fx)\n",
        total_default * 1e3, total_best * 1e3, total_default / total_best);
  }
}

void RunTuneOnTasks(std::vector<graph::Task> tasks, const TuneOptions& o) {
  ops::Target target = ops::HostCpuTarget();
  if (!o.isa.empty()) {
    auto isa = ops::ParseIsa(o.isa);
    FailIfError(isa.status());
    target.isa = *isa;
  }
  if (!o.task_filter.empty()) {
    auto picks = ParseIntList(o.task_filter, "--tasks");
    FailIfError(picks.status());
    std::vector<graph::Task> chosen;
    for (int64_t p : *picks) {
      if (p >= static_cast<int64_t>(tasks.size())) {
        Fail(absl::InvalidArgumentError(absl::StrCat("--tasks index ", p,
                                                     " is out of range: the model has ",
                                                     tasks.size(), " tasks (see 'loom tasks')")));
      }
      chosen.push_back(tasks[static_cast<size_t>(p)]);
    }
    tasks = std::move(chosen);
  }

  int ncpu = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> cores;
  if (o.device_cores.empty()) {
    cores = {ncpu - 1};
  } else {
    auto list = ParseIntList(o.device_cores, "--device-cores");
    FailIfError(list.status());
    for (int64_t c : *list) {
      if (c >= ncpu) {
        Fail(absl::InvalidArgumentError(absl::StrCat(
            "--device-cores: core ", c, " does not exist (this machine has ", ncpu, ")")));
      }
      cores.push_back(static_cast<int>(c));
    }
  }

  auto store = tune::OpenSqliteRecordStore(o.db);
  FailIfError(store.status());
  tune::BuildOptions build_options;
  build_options.num_threads =
      o.build_threads > 0 ? o.build_threads : std::max(1, ncpu - static_cast<int>(cores.size()));
  auto builder = tune::MakeLocalBuilder(build_options);
  FailIfError(builder.status());
  tune::MeasureOptions measure_options;
  measure_options.cores = cores;
  measure_options.timeout = absl::Seconds(o.run_timeout);
  auto measurer = tune::MakeLocalMeasurer(measure_options);
  FailIfError(measurer.status());
  FailIfError((*measurer)->Probe().status());

  tune::JobOptions job;
  job.target = target;
  job.task.trials = o.trials;
  job.task.batch_size = o.batch_size;
  job.task.tuner.kind = o.tuner;
  job.task.tuner.seed = o.seed;
  job.task.tuner.early_stopping = o.early_stopping;
  job.task.transfer = !o.no_transfer;
  job.task.template_options.test_faults = o.test_faults;
  job.task.job_id = o.job_id.empty() ? tune::DefaultJobId(tasks, target, job.task.tuner) : o.job_id;
  std::string core_list;
  for (int c : cores) absl::StrAppend(&core_list, core_list.empty() ? "" : ",", c);
  job.resources.cpu = "cpu";
  job.resources.device = absl::StrCat("device:cpu:", core_list);

  auto outcomes = tune::RunTuneJob(tasks, job, store->get(), **builder, **measurer, Progress{});
  FailIfError(outcomes.status());
  PrintOutcomes(*outcomes, o, job.task.job_id, target);
}

struct TuneModelOptions {
  ModelOptions model;
  TuneOptions tune;
};

struct TuneTaskOptions {
  std::string conv2d;  // N,C,H,W,K,R,S,STRIDE,PAD
  int64_t groups = 1;
  std::string dense;  // M,N,K
  TuneOptions tune;
};

absl::StatusOr<graph::Task> TaskFromFlags(const TuneTaskOptions& o) {
  if (o.conv2d.empty() == o.dense.empty()) {
    return absl::InvalidArgumentError("give exactly one of --conv2d or --dense");
  }
  graph::Workload w;
  if (!o.conv2d.empty()) {
    auto v = ParseIntList(o.conv2d, "--conv2d");
    if (!v.ok()) return v.status();
    if (v->size() != 9) {
      return absl::InvalidArgumentError("--conv2d takes 9 numbers: N,C,H,W,K,R,S,STRIDE,PAD");
    }
    const auto& a = *v;
    w.n = a[0], w.c = a[1], w.h = a[2], w.w = a[3], w.k = a[4], w.r = a[5], w.s = a[6];
    w.stride_h = w.stride_w = a[7];
    w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = a[8];
    w.dilation_h = w.dilation_w = 1;
    w.groups = o.groups;
    if (w.n < 1 || w.c < 1 || w.k < 1 || w.r < 1 || w.s < 1 || w.stride_h < 1 || w.groups < 1 ||
        w.c % w.groups != 0 || w.k % w.groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--conv2d ", o.conv2d, " (groups ", o.groups,
                                                     ") is not a valid convolution"));
    }
    if (w.OutH() < 1 || w.OutW() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--conv2d ", o.conv2d, " has an empty output"));
    }
    w.kind = w.groups == 1                          ? graph::TaskKind::kConv2d
             : (w.groups == w.c && w.groups == w.k) ? graph::TaskKind::kDepthwiseConv2d
                                                    : graph::TaskKind::kGroupedConv2d;
  } else {
    auto v = ParseIntList(o.dense, "--dense");
    if (!v.ok()) return v.status();
    if (v->size() != 3 || (*v)[0] < 1 || (*v)[1] < 1 || (*v)[2] < 1) {
      return absl::InvalidArgumentError("--dense takes 3 positive numbers: M,N,K");
    }
    w.kind = graph::TaskKind::kDense;
    w.m = (*v)[0], w.n = (*v)[1], w.k = (*v)[2];
    w.trans_b = true;
  }
  graph::Task task;
  task.workload = w;
  task.key = graph::WorkloadKey(w);
  task.hash = graph::StableHash(task.key);
  task.count = 1;
  task.flops = graph::WorkloadFlops(w);
  // The key must parse back (it is how the measure worker rebuilds the task).
  auto parsed = graph::ParseWorkloadKey(task.key);
  if (!parsed.ok()) return parsed.status();
  return task;
}

}  // namespace

void RegisterTuneCommands(CLI::App& app) {
  auto model_opts = std::make_shared<TuneModelOptions>();
  auto* tune = app.add_subcommand("tune", "Tune every task of a model on this machine (one job)");
  AddModelOptions(tune, &model_opts->model);
  AddTuneOptions(tune, &model_opts->tune);
  tune->add_option("--tasks", model_opts->tune.task_filter,
                   "Only these task indices (from 'loom tasks'), e.g. 0,3,5");
  tune->callback([model_opts] {
    auto loaded = LoadModelFromOptions(model_opts->model);
    FailIfError(loaded.status());
    auto tasks = graph::ExtractTasks(loaded->graph);
    FailIfError(tasks.status());
    RunTuneOnTasks(*std::move(tasks), model_opts->tune);
  });

  auto task_opts = std::make_shared<TuneTaskOptions>();
  auto* tt = app.add_subcommand("tune-task", "Tune one workload");
  tt->add_option("--conv2d", task_opts->conv2d, "Convolution N,C,H,W,K,R,S,STRIDE,PAD");
  tt->add_option("--groups", task_opts->groups, "Convolution groups (C for depthwise)");
  tt->add_option("--dense", task_opts->dense, "Dense layer M,N,K (y = x W^T)");
  AddTuneOptions(tt, &task_opts->tune);
  tt->callback([task_opts] {
    auto task = TaskFromFlags(*task_opts);
    FailIfError(task.status());
    RunTuneOnTasks({*task}, task_opts->tune);
  });
}

}  // namespace loom::cli
