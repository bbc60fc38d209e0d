// `loom tune MODEL ...` tunes every task of a model as one job; `loom tune MODEL1 MODEL2 ...
// --policy P` runs one job per model at once in the embedded engine (engine/), every stage granted
// by the scheduler; `loom tune-task --conv2d ... | --dense ...` tunes one workload. All show live
// progress on stderr and a final table on stdout, store every measurement in the record database,
// and resume from it when run again.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/engine/engine.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/search/tuner.h"
#include "loom/tune/local_machine.h"
#include "loom/tune/spread.h"
#include "loom/tune/tune_job.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct TuneOptions {
  std::string target = "cpu";  // "cpu", "cuda" or "cuda:sm_XY"
  std::string device;          // cuda: "cuda:N" (default cuda:0)
  std::string isa;             // empty: the host's best
  int min_repeat_ms = 0;       // 0: the measurer's default (50 ms CPU, 150 ms CUDA)
  int repeat = 0;              // 0: the measurer's default (3)
  int64_t trials = 64;         // per task; under a job budget, a cap only when given
  const CLI::Option* trials_option = nullptr;  // --trials, to tell whether it was given
  int64_t total_trials = -1;                   // -1: not given
  std::string time_budget;                     // empty: not given
  int batch_size = tune::TaskTunerOptions{}.batch_size;
  std::string tuner = search::TunerOptions{}.kind;
  uint64_t seed = 0;
  std::string db = "loom.db";
  std::string device_cores;  // "1" or "2,3"; empty: the last core
  int build_threads = 0;     // 0: cores not used by the device (at least 1)
  std::string job_id;
  std::string task_filter;  // "0,3,5": indices into the task table
  std::string prior;        // a tuning prior file instead of the built-in one
  int early_stopping = -1;
  double run_timeout = 10;  // seconds per candidate on top of its expected time
  bool no_transfer = false;
  bool no_prior = false;
  bool json = false;
  bool test_faults = false;  // hidden: lets tests inject crashing/hanging candidates
  ConfineFlags confine;
  // Multi-job engine (loom tune with several models, any --policy, or --spread above 1).
  std::string policy;  // empty: the single-job loop for one model, "interleaved" for several
  int spread = 1;      // tasks of each job whose rounds may run at once (EngineJob::spread)
  int cpu_slots = 0;   // 0: one per core outside the device
  double progress_seconds = 0;  // 0: 1 s on a terminal, 10 s otherwise
};

void AddTuneOptions(CLI::App* cmd, TuneOptions* o) {
  cmd->add_option("--target", o->target, "Target: cpu, cuda or cuda:sm_XY (default cpu)");
  cmd->add_option("--device", o->device, "CUDA device to tune on, cuda:N (default cuda:0)");
  cmd->add_option("--min-repeat-ms", o->min_repeat_ms,
                  "Shortest timed repeat of a measurement (0: the measurer's 50 ms for cpu, 150 "
                  "ms for cuda)")
      ->check(CLI::Range(0, 60000));
  cmd->add_option("--repeat", o->repeat, "Timed repeats per candidate (0: the measurer's 3)")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--isa", o->isa,
                  "CPU ISA to generate for (avx512, avx2, generic; default: host)");
  o->trials_option =
      cmd->add_option("--trials", o->trials,
                      "Measured candidates per task (with --total-trials or --time-budget a cap "
                      "per task, none unless given)")
          ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  NoDefaultShown(cmd->add_option("--total-trials", o->total_trials,
                                 "One budget of measured candidates for the whole job, shared "
                                 "among its tasks by expected gain (default: none)"));
  cmd->add_option("--time-budget", o->time_budget,
                  "One time budget for the whole job, e.g. 90s, 20m or 1h30m, shared among its "
                  "tasks by expected gain; the job ends within it plus one round");
  cmd->add_option("--batch-size", o->batch_size, "Candidates per round (one build batch)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--tuner", o->tuner, "Search strategy")
      ->check(CLI::IsMember(search::TunerKinds()));
  cmd->add_option("--seed", o->seed, "Tuner seed");
  cmd->add_option("--db", o->db, "SQLite record database (created if missing)");
  cmd->add_option("--device-cores", o->device_cores,
                  "CPU cores the measurer is pinned to, e.g. 1 or 2,3 (default: the last core)");
  NoDefaultShown(
      cmd->add_option("--build-threads", o->build_threads,
                      "Parallel compiles (default: cores outside the device, at least 1)"))
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--job-id", o->job_id,
                  "Job id (default: derived from the work, so reruns resume)");
  NoDefaultShown(cmd->add_option("--early-stopping", o->early_stopping,
                                 "Stop a task after this many trials without improvement "
                                 "(default: never)"));
  cmd->add_option("--run-timeout", o->run_timeout,
                  "Seconds a candidate may run past its expected time before it counts as hung")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_flag("--no-transfer", o->no_transfer,
                "Do not seed tuners with other jobs' records, nor with a tuning prior");
  cmd->add_option("--prior", o->prior,
                  "Tuning prior for the cost model (`loom records prior`; default: the one "
                  "built into Loom for the target's class)");
  cmd->add_flag("--no-prior", o->no_prior, "Do not seed the cost model with a tuning prior")
      ->excludes("--prior");
  AddJsonFlag(cmd, &o->json, "Print the final table as JSON");
  cmd->add_flag("--test-faults", o->test_faults, "Testing only: add a knob that injects faults")
      ->group("");  // hidden
  AddConfineFlags(cmd, &o->confine);
}

// Task indices are the model's, as `loom tasks` lists them and --tasks takes them (from 0);
// `picks` maps a job's task position to it (empty: every task, position = index).
int ModelIndex(const std::vector<int64_t>& picks, int position) {
  return picks.empty() || position >= static_cast<int>(picks.size())
             ? position
             : static_cast<int>(picks[static_cast<size_t>(position)]);
}

// A task's trial cap as progress shows it: "-" for none (a job budget alone ends the task).
std::string TrialCap(int64_t trials) {
  return trials >= tune::kNoTrialCap ? "-" : absl::StrCat(trials);
}

struct Progress {
  std::vector<int64_t> picks;
  bool budgeted = false;
  bool tty = isatty(STDERR_FILENO) != 0;
  void operator()(const tune::ProgressEvent& ev) const {
    const tune::TaskTuner& t = *ev.tuner;
    std::string best = t.best_gflops() > 0 ? absl::StrFormat("%8.2f", t.best_gflops()) : "       -";
    std::string eta = ev.eta_seconds > 0
                          ? absl::StrFormat("%dm%02ds", static_cast<int>(ev.eta_seconds) / 60,
                                            static_cast<int>(ev.eta_seconds) % 60)
                          : "-";
    std::string line = absl::StrFormat(
        "[task %2d (%d/%d)] %-16s trials %4d/%-4s best %s GFLOPS  errors %3d  ETA %s",
        ModelIndex(picks, ev.task_index), ev.task_index + 1, ev.num_tasks,
        graph::TaskKindName(t.task().workload.kind), t.trials_done(), TrialCap(t.options().trials),
        best, t.errors(), eta);
    if (budgeted) line += absl::StrFormat("  job trials %d", ev.job_trials);
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

nlohmann::json OutcomesJson(const std::vector<tune::TaskOutcome>& outcomes, const TuneOptions& o,
                            const std::string& job_id, const ops::Target& target);
void PrintTable(const std::vector<tune::TaskOutcome>& outcomes, const TuneOptions& o,
                const std::string& job_id, const ops::Target& target);
std::vector<int64_t> Picks(const TuneOptions& o);

void PrintOutcomes(const std::vector<tune::TaskOutcome>& outcomes, const TuneOptions& o,
                   const std::string& job_id, const ops::Target& target) {
  if (o.json) {
    PrintJson(OutcomesJson(outcomes, o, job_id, target), 2);
    return;
  }
  PrintTable(outcomes, o, job_id, target);
}

nlohmann::json OutcomesJson(const std::vector<tune::TaskOutcome>& outcomes, const TuneOptions& o,
                            const std::string& job_id, const ops::Target& target) {
  {
    nlohmann::json j;
    j["job_id"] = job_id;
    j["target"] = target.Key();
    j["db"] = o.db;
    const std::vector<int64_t> picks = Picks(o);
    for (size_t i = 0; i < outcomes.size(); ++i) {
      const tune::TaskOutcome& r = outcomes[i];
      nlohmann::json t = {{"index", ModelIndex(picks, static_cast<int>(i))},
                          {"key", r.task.key},
                          {"kind", graph::TaskKindName(r.task.workload.kind)},
                          {"count", r.task.count},
                          {"flops", r.task.flops},
                          {"template", r.template_name},
                          {"trials", r.trials},
                          {"resumed_trials", r.resumed_trials},
                          {"transferred_records", r.transferred_records},
                          {"prior_records", r.prior_records},
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
    return j;
  }
}

void PrintTable(const std::vector<tune::TaskOutcome>& outcomes, const TuneOptions& o,
                const std::string& job_id, const ops::Target& target) {
  std::printf("job %s on %s (records in %s)\n", job_id.c_str(), target.Key().c_str(), o.db.c_str());
  std::printf("%3s  %-16s %6s %6s %10s %10s %10s %10s %8s\n", "#", "kind", "trials", "errors",
              "default ms", "best ms", "default GF", "best GF", "speedup");
  double total_default = 0, total_best = 0;
  const std::vector<int64_t> picks = Picks(o);
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const auto& r = outcomes[i];
    const int index = ModelIndex(picks, static_cast<int>(i));
    if (!r.skipped_reason.empty()) {
      std::printf("%3d  %-16s skipped: %s\n", index,
                  graph::TaskKindName(r.task.workload.kind).c_str(), r.skipped_reason.c_str());
      continue;
    }
    std::string speedup = std::isfinite(r.best_cost) && std::isfinite(r.default_cost)
                              ? absl::StrFormat("%.2fx", r.default_cost / r.best_cost)
                              : "-";
    std::printf("%3d  %-16s %6lld %6lld %10s %10s %10s %10s %8s\n", index,
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

// The machine the flags describe (layout, target, builder and measurer); usage errors end here.
tune::LocalMachine MachineFromOptions(const TuneOptions& o) {
  tune::LocalMachineOptions mo;
  mo.target = o.target;
  mo.isa = o.isa;
  mo.device = o.device;
  if (!o.device_cores.empty()) {
    auto cores = tune::ParseIndexList(o.device_cores, "--device-cores");
    FailIfError(cores.status());
    mo.device_cores.assign(cores->begin(), cores->end());
  }
  mo.build_threads = o.build_threads;
  mo.min_repeat_ms = o.min_repeat_ms > 0 ? o.min_repeat_ms : -1;
  mo.repeat = o.repeat;
  mo.run_timeout = absl::Seconds(o.run_timeout);
  mo.confine = ConfineOptionsFrom(o.confine);
  auto machine = tune::LocalMachine::Create(mo);
  FailIfError(machine.status());
  return *std::move(machine);
}

// The task indices --tasks picks; empty: every task.
std::vector<int64_t> Picks(const TuneOptions& o) {
  if (o.task_filter.empty()) return {};
  auto picks = tune::ParseIndexList(o.task_filter, "--tasks");
  FailIfError(picks.status());
  return *std::move(picks);
}

std::vector<graph::Task> FilterTasks(std::vector<graph::Task> tasks, const TuneOptions& o) {
  if (o.task_filter.empty()) return tasks;
  std::vector<graph::Task> chosen;
  for (int64_t p : Picks(o)) {
    if (p >= static_cast<int64_t>(tasks.size())) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--tasks index ", p,
                                                   " is out of range: the model has ", tasks.size(),
                                                   " tasks (see 'loom tasks')")));
    }
    chosen.push_back(tasks[static_cast<size_t>(p)]);
  }
  return chosen;
}

// The job budget the flags give (none when neither --total-trials nor --time-budget is given);
// bad values end here with a one-line error naming the flag.
tune::JobBudget BudgetFromOptions(const TuneOptions& o) {
  tune::JobBudget budget;
  if (o.total_trials != -1) {
    budget.total_trials = o.total_trials;
    absl::Status st = tune::ValidateJobBudget(budget);
    if (!st.ok() || o.total_trials < 1) {
      Fail(absl::InvalidArgumentError(absl::StrCat(
          "--total-trials must be 1 to ", tune::kMaxTotalTrials, ", got ", o.total_trials)));
    }
  }
  if (!o.time_budget.empty()) {
    auto time = tune::ParseTimeBudget(o.time_budget);
    if (!time.ok()) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--time-budget: ", time.status().message())));
    }
    budget.time = *time;
  }
  return budget;
}

tune::TaskTunerOptions TaskOptions(const TuneOptions& o, const tune::LocalMachine& machine) {
  tune::TaskTunerOptions t;
  t.use_prior = !o.no_prior;
  auto prior = machine.ReadPrior(o.prior);
  FailIfError(prior.status());
  if (*prior != nullptr) t.prior = *std::move(prior);
  const bool trials_given = o.trials_option != nullptr && o.trials_option->count() > 0;
  t.trials = trials_given || !BudgetFromOptions(o).Active() ? o.trials : tune::kNoTrialCap;
  t.batch_size = o.batch_size;
  t.tuner.kind = o.tuner;
  t.tuner.seed = o.seed;
  t.tuner.early_stopping = o.early_stopping;
  t.transfer = !o.no_transfer;
  t.template_options.test_faults = o.test_faults;
  return t;
}

// One job: the machine's builder and measurer (g++ and the CPU worker, or NVRTC and the GPU's).
void RunTuneOnTasks(std::vector<graph::Task> tasks, const TuneOptions& o) {
  tune::LocalMachine machine = MachineFromOptions(o);
  tasks = FilterTasks(std::move(tasks), o);
  auto measurer = machine.MakeMeasurer();
  FailIfError(measurer.status());
  // A sandbox the kernel refuses, or a host without a GPU, fails here, before any work.
  FailIfError(machine.Probe(measurer->get()));
  std::unique_ptr<tune::RecordStore> store = OpenRecordDb(o.db);  // created when missing
  auto builder = machine.MakeBuilder();
  FailIfError(builder.status());

  tune::JobOptions job;
  job.target = machine.target();
  job.task = TaskOptions(o, machine);
  job.task.job_id = machine.JobId(tasks, job.task.tuner, o.job_id);
  job.resources.cpu = "cpu";
  job.resources.device = machine.DeviceResource();
  job.budget = BudgetFromOptions(o);
  job.scheduler.seed = o.seed;
  auto outcomes = tune::RunTuneJob(tasks, job, store.get(), **builder, **measurer,
                                   Progress{.picks = Picks(o), .budgeted = job.budget.Active()});
  FailIfError(outcomes.status());
  PrintOutcomes(*outcomes, o, job.task.job_id, machine.target());
}

// Engine progress: one line per job and one per resource, redrawn in place on a terminal.
class EngineProgressPrinter {
 public:
  EngineProgressPrinter(std::string policy, std::vector<int64_t> picks)
      : policy_(std::move(policy)), picks_(std::move(picks)) {}
  void operator()(const engine::EngineProgress& p) {
    std::vector<std::string> lines;
    lines.push_back(
        absl::StrFormat("%s: %.0f s elapsed", policy_, absl::ToDoubleSeconds(p.elapsed)));
    for (const auto& j : p.jobs) {
      std::string best =
          j.best_gflops > 0 ? absl::StrFormat("%8.2f", j.best_gflops) : std::string("       -");
      lines.push_back(
          absl::StrFormat("  job %-20s task %2d (%d/%d) trials %4d/%-4s best %s GFLOPS  %s", j.name,
                          ModelIndex(picks_, std::min(j.task_index, j.num_tasks - 1)),
                          std::min(j.task_index + 1, j.num_tasks), j.num_tasks, j.trials_done,
                          TrialCap(j.trials), best, j.state));
    }
    for (const auto& r : p.resources) {
      lines.push_back(
          absl::StrFormat("  %-36s busy %3.0f%%  %s", r.name, r.busy_fraction * 100, r.current));
    }
    if (tty_) {
      if (printed_ > 0) std::fprintf(stderr, "\x1b[%dA", printed_);
      for (const std::string& l : lines) std::fprintf(stderr, "\r%s\x1b[K\n", l.c_str());
      printed_ = static_cast<int>(lines.size());
    } else {
      for (const std::string& l : lines) std::fprintf(stderr, "%s\n", l.c_str());
    }
  }

 private:
  std::string policy_;
  std::vector<int64_t> picks_;
  bool tty_ = isatty(STDERR_FILENO) != 0;
  int printed_ = 0;
};

struct LoadedModelTasks {
  std::string name;
  std::vector<graph::Task> tasks;
};

// Several jobs (one per model) at once under the scheduler, with the chosen policy.
void RunEngineOnModels(const std::vector<LoadedModelTasks>& models, const TuneOptions& o) {
  tune::LocalMachine machine = MachineFromOptions(o);
  engine::EngineOptions eo;
  eo.policy = o.policy.empty() ? "interleaved" : o.policy;
  eo.layout.device_cores = machine.device_cores();
  eo.layout.cpu_cores = machine.cpu_cores();
  if (o.cpu_slots > 0 && eo.layout.cpu_cores.empty()) {
    Fail(absl::InvalidArgumentError(
        "--cpu-slots needs a core outside --device-cores (the device lends its own cores)"));
  }
  eo.layout.cpu_slots =
      o.cpu_slots > 0 ? o.cpu_slots : static_cast<int>(eo.layout.cpu_cores.size());
  if (machine.cuda()) {
    // The GPU is the device; its launching core lends no slots.
    eo.layout.gpu = absl::StrCat("cuda:", machine.cuda_ordinal());
    eo.layout.device_shares_cores = false;
    if (eo.layout.cpu_slots == 0) {
      Fail(absl::InvalidArgumentError(
          "--target cuda needs a core outside --device-cores for builds (this machine has one)"));
    }
  }
  eo.build_slots = o.build_threads > 0 ? o.build_threads : std::max(1, eo.layout.cpu_slots);
  const bool tty = isatty(STDERR_FILENO) != 0;
  eo.progress_interval = absl::Seconds(o.progress_seconds > 0 ? o.progress_seconds
                                       : tty                  ? 1.0
                                                              : 10.0);
  // A kernel that refuses the measure worker's sandbox, or a host without a GPU, fails here.
  FailIfError(machine.Probe());
  eo.make_measurer = [machine](const std::vector<int>& cores) {
    return machine.MakeMeasurer(cores);
  };
  eo.make_builder = [machine](const tune::BuildOptions& bo) { return machine.MakeBuilder(bo); };
  const ops::Target target = machine.target();
  auto eng = engine::Engine::Create(eo);
  FailIfError(eng.status());

  std::vector<engine::EngineJob> jobs;
  std::set<std::string> ids;
  for (size_t i = 0; i < models.size(); ++i) {
    engine::EngineJob job;
    job.name = models[i].name;
    job.tasks = FilterTasks(models[i].tasks, o);
    job.options = TaskOptions(o, machine);
    job.budget = BudgetFromOptions(o);
    job.scheduler.seed = o.seed;
    job.spread = o.spread;
    job.target = target;
    std::string id = machine.JobId(
        job.tasks, job.options.tuner,
        o.job_id.empty() || models.size() == 1 ? o.job_id : absl::StrCat(o.job_id, "-", i + 1));
    // The same model twice is two jobs.
    if (!ids.insert(id).second) {
      id = absl::StrCat(id, "-", i + 1);
      ids.insert(id);
    }
    job.options.job_id = id;
    jobs.push_back(std::move(job));
  }
  std::unique_ptr<tune::RecordStore> store = OpenRecordDb(o.db);  // created when missing
  auto result = (*eng)->Run(jobs, store.get(), EngineProgressPrinter(eo.policy, Picks(o)));
  FailIfError(result.status());

  const double makespan = absl::ToDoubleSeconds(result->makespan());
  const double device_util = makespan > 0 ? result->device_busy_seconds / makespan : 0;
  const double cpu_util =
      makespan > 0 ? result->cpu_slot_seconds / (makespan * std::max(1, result->cpu_capacity)) : 0;
  if (o.json) {
    nlohmann::json j;
    j["policy"] = result->policy;
    j["makespan_s"] = makespan;
    j["device_utilization"] = device_util;
    j["cpu_utilization"] = cpu_util;
    j["jobs"] = nlohmann::json::array();
    for (const auto& jr : result->jobs) {
      nlohmann::json job = OutcomesJson(jr.outcomes, o, jr.job_id, target);
      job["name"] = jr.name;
      job["start_s"] = absl::ToDoubleSeconds(jr.start - result->start);
      job["end_s"] = absl::ToDoubleSeconds(jr.end - result->start);
      job["records"] = jr.records;
      if (!jr.status.ok()) job["error"] = std::string(jr.status.message());
      j["jobs"].push_back(job);
    }
    PrintJson(j, 2);
  } else {
    for (const auto& jr : result->jobs) {
      std::printf("== %s\n", jr.name.c_str());
      PrintTable(jr.outcomes, o, jr.job_id, target);
      std::printf("\n");
    }
    std::printf("policy %s: makespan %.1f s, device busy %.0f%%, CPU slots busy %.0f%%\n",
                result->policy.c_str(), makespan, device_util * 100, cpu_util * 100);
    std::printf("%-24s %10s %10s %8s\n", "job", "start s", "end s", "records");
    for (const auto& jr : result->jobs) {
      std::printf("%-24s %10.1f %10.1f %8lld%s\n", jr.name.c_str(),
                  absl::ToDoubleSeconds(jr.start - result->start),
                  absl::ToDoubleSeconds(jr.end - result->start), static_cast<long long>(jr.records),
                  jr.status.ok() ? "" : absl::StrCat("  failed: ", jr.status.message()).c_str());
    }
  }
  std::fflush(stdout);
  for (const auto& jr : result->jobs) {
    if (!jr.status.ok()) {
      Fail(absl::Status(jr.status.code(),
                        absl::StrCat("job '", jr.name, "': ", jr.status.message())));
    }
  }
}

struct TuneModelOptions {
  std::vector<std::string> models;
  ModelOptions model;  // its `model` is set per entry of `models`
  TuneOptions tune;
};

struct TuneTaskOptions {
  std::string conv2d;  // N,C,H,W,K,R,S,STRIDE,PAD
  int64_t groups = 1;
  std::string dense;     // M,N,K
  std::string workload;  // a workload key, as `loom tasks` prints it
  TuneOptions tune;
};

absl::StatusOr<graph::Task> TaskFromFlags(const TuneTaskOptions& o) {
  if (!o.conv2d.empty() + !o.dense.empty() + !o.workload.empty() != 1) {
    return absl::InvalidArgumentError("give exactly one of --conv2d, --dense or --workload");
  }
  graph::Workload w;
  if (!o.workload.empty()) {
    auto parsed = graph::ParseWorkloadKey(o.workload);
    if (!parsed.ok()) return parsed.status();
    w = *parsed;
  } else if (!o.conv2d.empty()) {
    auto v = tune::ParseIndexList(o.conv2d, "--conv2d");
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
    auto v = tune::ParseIndexList(o.dense, "--dense");
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
  auto* tune = app.add_subcommand(
      "tune", "Tune every task of a model on this machine; several models run as concurrent jobs");
  tune->add_option("MODEL", model_opts->models,
                   "Paths to .onnx files, or zoo:NAME (see 'loom zoo list'); one job each")
      ->required();
  tune->add_option("--input-shape", model_opts->model.input_shapes,
                   "Pin a dynamic input shape, NAME=D0,D1,... (repeatable; ONNX files)");
  tune->add_option("--batch", model_opts->model.batch, "Batch size for zoo models")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  tune->add_option("--weights-seed", model_opts->model.seed, "Weight seed for zoo models");
  AddTuneOptions(tune, &model_opts->tune);
  tune->add_option("--tasks", model_opts->tune.task_filter,
                   "Only these task indices (from 'loom tasks'), e.g. 0,3,5");
  tune->add_option("--policy", model_opts->tune.policy,
                   "Run the jobs in the engine under this scheduling policy (default with several "
                   "models: interleaved)")
      ->check(CLI::IsMember({"sequential", "uncontrolled", "interleaved", "predictive"}));
  NoDefaultShown(tune->add_option("--spread", model_opts->tune.spread,
                                  "Tasks of each job whose rounds may run at once in the engine "
                                  "(one task's builds beside another's measurements; default 1)"))
      ->check(CLI::Range(1, tune::kMaxSpread));
  NoDefaultShown(
      tune->add_option("--cpu-slots", model_opts->tune.cpu_slots,
                       "Engine: CPU slots outside the device (default: one per core outside it)"))
      ->check(CLI::Range(0, 1024));
  NoDefaultShown(tune->add_option(
                     "--progress-seconds", model_opts->tune.progress_seconds,
                     "Engine: seconds between progress reports (default 1 on a terminal, else 10)"))
      ->check(CLI::Range(0.0, 3600.0));
  tune->callback([model_opts] {
    WarnIfUnconfined(model_opts->tune.confine, "loom tune");
    BudgetFromOptions(model_opts->tune);  // a bad budget fails before the model loads
    std::vector<LoadedModelTasks> models;
    for (const std::string& name : model_opts->models) {
      ModelOptions mo = model_opts->model;
      mo.model = name;
      auto loaded = LoadModelFromOptions(mo);
      FailIfError(loaded.status());
      auto tasks = graph::ExtractTasks(loaded->graph);
      FailIfError(tasks.status());
      models.push_back({.name = name, .tasks = *std::move(tasks)});
    }
    if (models.size() == 1 && model_opts->tune.policy.empty() && model_opts->tune.spread == 1) {
      RunTuneOnTasks(std::move(models[0].tasks), model_opts->tune);
    } else {
      RunEngineOnModels(models, model_opts->tune);
    }
  });

  auto task_opts = std::make_shared<TuneTaskOptions>();
  auto* tt = app.add_subcommand("tune-task", "Tune one workload");
  tt->add_option("--conv2d", task_opts->conv2d, "Convolution N,C,H,W,K,R,S,STRIDE,PAD");
  tt->add_option("--groups", task_opts->groups, "Convolution groups (C for depthwise)");
  tt->add_option("--dense", task_opts->dense, "Dense layer M,N,K (y = x W^T)");
  tt->add_option("--workload", task_opts->workload,
                 "Any workload by its key, as 'loom tasks' prints it (e.g. "
                 "batch_matmul:f32:b12_m128_n128_k64_tb1)");
  AddTuneOptions(tt, &task_opts->tune);
  tt->callback([task_opts] {
    WarnIfUnconfined(task_opts->tune.confine, "loom tune-task");
    auto task = TaskFromFlags(*task_opts);
    FailIfError(task.status());
    RunTuneOnTasks({*task}, task_opts->tune);
  });
}

}  // namespace loom::cli
