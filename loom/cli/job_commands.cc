// The user side of the service: `loom submit`, `jobs`, `status`, `watch`, `cancel`, `result`,
// `logs`. Each talks to `loom serve` through api::JobClient (api/job_client.h; service/client.h
// resolves the server and token: --server, LOOM_SERVER, LOOM_TOKEN, ~/.config/loom/config).
// Failures are one line naming the gRPC status code, and a non-zero exit.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "loom/api/job_client.h"
#include "loom/cli/commands.h"
#include "loom/cli/job_view.h"
#include "loom/cli/json_output.h"
#include "loom/graph/shape_spec.h"
#include "loom/service/client.h"
#include "loom/tune/tune_job.h"
#include "loom/v1/stage_names.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

// The job service's client (api/job_client.h), connected as every job command connects: --server
// or LOOM_SERVER or the config file, the token of --token-file or LOOM_TOKEN or the config file.
std::unique_ptr<JobClient> Connect(const std::string& server_flag) {
  service::QuietGrpcLogs();
  auto client = JobClient::Connect({.server = server_flag,
                                    .token = TokenFromFlag(),
                                    .unavailable_hint = "set --server or LOOM_SERVER"});
  FailIfError(client.status());
  return *std::move(client);
}

// The value of a client call, or the end of the command with its error. Usage mistakes exit 2
// in main(); a server-side INVALID_ARGUMENT is still a failure (1).
template <typename T>
T OrFail(absl::StatusOr<T> v) {
  if (v.ok()) return *std::move(v);
  absl::Status s = v.status();
  if (s.code() == absl::StatusCode::kInvalidArgument) {
    s = absl::FailedPreconditionError(s.message());
  }
  Fail(s);
}

std::string Time(int64_t us) {
  if (us == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMicros(us), absl::LocalTimeZone());
}

std::string Progress(const v1::Job& j) {
  int64_t done = 0, total = 0;
  int tasks_done = 0;
  for (const auto& t : j.tasks()) {
    done += t.trials_done();
    total += t.trials();
    if (t.stage() == "done" || absl::StartsWith(t.stage(), "skipped")) ++tasks_done;
  }
  return absl::StrFormat("%d/%d tasks, %d/%d", tasks_done, j.tasks_size(), done, total);
}

// ----- submit

// The flags of `loom submit`: the request's own options (api/job_client.h) bound directly, and
// those the CLI parses into them.
struct SubmitFlags {
  loom::SubmitOptions request;
  std::string server;
  int64_t total_trials = -1;  // -1: not given
  std::string time_budget;
  CLI::Option* trials_option = nullptr;  // --trials, to tell whether it was given
  bool no_prior = false;
  std::vector<std::string> input_shapes;  // NAME=D0,D1,...
  std::string simulated;                  // tasks=N,rounds=N,...
  std::string tasks;                      // "1,3": task indices as `loom tasks` lists them
  bool json = false;
  bool parsable = false;  // print only the job id
};

// "1,3" -> {1, 3}. Ranges are not accepted: indices are few and explicit.
std::vector<int> ParseTaskList(const std::string& list) {
  std::vector<int> out;
  for (absl::string_view t : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    int v = 0;
    if (!absl::SimpleAtoi(t, &v) || v < 0) {
      Fail(absl::InvalidArgumentError(absl::StrCat(
          "--tasks: bad index '", t, "' (comma-separated indices as `loom tasks` lists them)")));
    }
    out.push_back(v);
  }
  return out;
}

// "tasks=2,rounds=3,propose=0.1,build=0.2,measure=0.1,update=0.05"
v1::SimulatedWorkload ParseSimulated(const std::string& spec) {
  std::map<std::string, double> keys;
  for (absl::string_view kv : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    double v = 0;
    if (p.size() != 2 || !absl::SimpleAtod(p[1], &v)) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("--simulated: bad entry '", kv, "' (KEY=NUMBER, comma separated)")));
    }
    keys[std::string(p[0])] = v;
  }
  absl::StatusOr<v1::SimulatedWorkload> w = MakeSimulatedWorkload(keys);
  if (!w.ok())
    Fail(absl::InvalidArgumentError(absl::StrCat("--simulated: ", w.status().message())));
  return *std::move(w);
}

void RunSubmit(const SubmitFlags& o) {
  // The flags' own mistakes in the flags' words; the request itself is api::MakeSubmitRequest's.
  loom::SubmitOptions so = o.request;
  so.use_prior = !o.no_prior;
  if (o.total_trials != -1 && (o.total_trials < 1 || o.total_trials > tune::kMaxTotalTrials)) {
    Fail(absl::InvalidArgumentError(absl::StrCat("--total-trials must be 1 to ",
                                                 tune::kMaxTotalTrials, ", got ", o.total_trials)));
  }
  so.total_trials = std::max<int64_t>(0, o.total_trials);
  if (!o.time_budget.empty()) {
    auto budget = tune::ParseTimeBudget(o.time_budget);
    if (!budget.ok()) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--time-budget: ", budget.status().message())));
    }
    so.time_budget_seconds = absl::ToDoubleSeconds(*budget);
  }
  // --trials not given: 32 a task, or no cap of its own under a job budget.
  const bool budgeted = o.total_trials > 0 || !o.time_budget.empty();
  if (o.trials_option != nullptr && o.trials_option->count() == 0 && budgeted) so.trials = 1000000;
  for (const auto& s : o.input_shapes) {
    auto named = graph::ParseInputShape(s);
    FailIfError(named.status());
    so.input_shapes[named->first] = named->second;
  }
  if (!o.tasks.empty()) {
    if (so.max_tasks > 0) Fail(absl::InvalidArgumentError("give --tasks or --max-tasks, not both"));
    so.tasks = ParseTaskList(o.tasks);
  }
  if (!o.simulated.empty()) {
    if (!so.model.empty()) {
      Fail(absl::InvalidArgumentError("give either MODEL or --simulated, not both"));
    }
    so.simulated = ParseSimulated(o.simulated);
  } else if (so.model.empty()) {
    Fail(absl::InvalidArgumentError("MODEL is required (a zoo name, zoo:NAME or a .onnx file)"));
  }
  absl::StatusOr<v1::SubmitJobRequest> req = MakeSubmitRequest(so);
  FailIfError(req.status());
  if (req->has_zoo_model() && req->input_shapes_size() > 0) {
    Fail(absl::InvalidArgumentError(
        "--input-shape pins the dynamic inputs of an ONNX file; zoo models have fixed input "
        "shapes (submit the model as an .onnx file to change them)"));
  }
  const v1::Job job = OrFail(Connect(o.server)->Submit(*req));
  if (o.parsable) {
    std::printf("%s\n", job.id().c_str());
    return;
  }
  if (o.json) {
    PrintJson(ProtoJson(job));
    return;
  }
  std::printf("submitted %s (%s, %d tasks, %s)\n", job.id().c_str(), job.name().c_str(),
              job.tasks_size(), v1::JobStateShortName(job.state()));
}

// ----- jobs / status

struct ListOptions {
  std::string server;
  bool all = false;
  bool ended = false;
  bool json = false;
};

void RunJobs(const ListOptions& o) {
  const v1::ListJobsResponse resp = OrFail(Connect(o.server)->List(o.all, o.ended));
  if (o.json) {
    PrintJson(ProtoJson(resp));
    return;
  }
  std::printf("%-6s %-10s %-16s %-9s %4s %5s %-22s %8s %8s %7s  %s\n", "ID", "OWNER", "NAME",
              "STATE", "PRI", "QUEUE", "PROGRESS", "CPU-S", "DEV-S", "RECORDS", "STAGE");
  for (const v1::Job& j : resp.jobs()) {
    std::printf("%-6s %-10s %-16.16s %-9s %4d %5s %-22s %8.1f %8.1f %7lld  %s\n", j.id().c_str(),
                j.owner().c_str(), j.name().c_str(), v1::JobStateShortName(j.state()), j.priority(),
                j.queue_position() > 0 ? absl::StrCat(j.queue_position()).c_str() : "-",
                Progress(j).c_str(), j.cpu_seconds(), j.device_seconds(),
                static_cast<long long>(j.records()), CurrentStage(j).c_str());
  }
  if (resp.jobs().empty()) std::printf("(no jobs)\n");
  std::printf("\n%-12s %-20s %-6s %-10s %-10s %s\n", "AGENT", "HOST", "ALIVE", "CPU-SLOTS",
              "DEVICES", "LEASES");
  for (const v1::ResourceUse& u : resp.resources()) {
    std::printf("%-12s %-20.20s %-6s %4d/%-5d %4d/%-5d %d\n", u.agent_id().c_str(),
                u.hostname().c_str(), u.alive() ? "yes" : "no", u.cpu_slots_used(), u.cpu_slots(),
                u.devices_busy(), u.devices(), u.leases());
  }
  if (resp.resources().empty()) std::printf("(no agents)\n");
}

struct IdOptions {
  std::string id;
  std::string server;
  bool json = false;
  int tail = 0;
  std::string output;
  bool skip_compile = false;
  std::string target;  // result: compile for this target (default: the class the job tuned on)
};

void PrintJob(const v1::Job& j) {
  std::printf("job %s (%s), owner %s, %s, priority %d, target %s\n", j.id().c_str(),
              j.name().c_str(), j.owner().c_str(), v1::JobStateShortName(j.state()), j.priority(),
              j.target().c_str());
  if (j.queue_position() > 0) {
    std::printf("  queue position %d", j.queue_position());
    if (j.expected_start_unix_micros() > 0) {
      std::printf(", expected start %s", Time(j.expected_start_unix_micros()).c_str());
    }
    std::printf("\n");
  }
  std::printf("  submitted %s, started %s, finished %s\n", Time(j.submitted_unix_micros()).c_str(),
              Time(j.started_unix_micros()).c_str(), Time(j.finished_unix_micros()).c_str());
  std::printf("  resources used: %.1f CPU-slot s, %.1f device s; %lld records\n", j.cpu_seconds(),
              j.device_seconds(), static_cast<long long>(j.records()));
  std::printf("  progress: %s\n", ProgressLine(j).c_str());
  if (j.best_history_size() > 0) {
    std::printf("  best-so-far steps (%d, the last 5):", j.best_history_size());
    // The last few steps: when each task's best rose, and the model's latency once known.
    const int first = std::max(0, j.best_history_size() - 5);
    for (int i = first; i < j.best_history_size(); ++i) {
      const v1::BestPoint& b = j.best_history(i);
      std::printf("%s trial %lld task %d %.1f GFLOPS", i == first ? "" : ";",
                  static_cast<long long>(b.trials()), b.task() + 1, b.task_gflops());
      if (b.has_latency_ms()) std::printf(" -> %.3f ms", b.latency_ms());
    }
    std::printf("\n");
  }
  if (j.estimated_latency_ms() > 0) {
    std::printf("  estimated latency (tuned kernels): %.3f ms\n", j.estimated_latency_ms());
  }
  if (!j.failure_reason().empty()) std::printf("  reason: %s\n", j.failure_reason().c_str());
  for (int i = 0; i < j.tasks_size(); ++i) {
    const auto& t = j.tasks(i);
    std::printf("  task %2d  %-56.56s %4d/%-4d %8.2f GFLOPS %3d errors  %s\n", i,
                t.task_key().c_str(), t.trials_done(), t.trials(), t.best_gflops(), t.errors(),
                t.stage().c_str());
  }
}

void RunStatus(const IdOptions& o) {
  const v1::Job job = OrFail(Connect(o.server)->Get(o.id));
  if (o.json) {
    PrintJson(ProtoJson(job));
  } else {
    PrintJob(job);
  }
}

void RunWatch(const IdOptions& o) {
  std::unique_ptr<JobClient> client = Connect(o.server);
  // Finds the active daemon first (redirects, failover); the stream itself does not fail over.
  OrFail(client->Get(o.id));
  std::unique_ptr<JobClient::Watch> watch = OrFail(client->WatchJob(o.id));
  v1::Job last;
  std::string shown;  // the last state/progress line printed
  while (true) {
    std::optional<v1::JobEvent> next = OrFail(watch->Next());
    if (!next.has_value()) break;
    const v1::JobEvent& ev = *next;
    if (ev.has_job()) last = ev.job();
    const std::string t = absl::FormatTime("%H:%M:%S", absl::FromUnixMicros(ev.time_unix_micros()),
                                           absl::LocalTimeZone());
    if (o.json) {
      PrintJson(ProtoJson(ev));  // JSON lines: one object per event
    } else if (!ev.message().empty()) {
      // The last message of a change carries the job: its progress after that change.
      std::printf("%s  %s%s\n", t.c_str(), ev.message().c_str(),
                  ev.has_job() ? absl::StrCat("  [", ProgressLine(last), "]").c_str() : "");
    } else {
      const std::string line = absl::StrCat(last.id(), ": ", v1::JobStateShortName(last.state()),
                                            ", ", Progress(last), ", ", CurrentStage(last));
      // The ETA and best so far change with every event: a line only when the state does.
      if (line != shown)
        std::printf("%s  %s; %s\n", t.c_str(), line.c_str(), ProgressLine(last).c_str());
      shown = line;
    }
    std::fflush(stdout);
  }
  if (last.state() == v1::JOB_STATE_FAILED || last.state() == v1::JOB_STATE_CANCELLED) {
    Fail(absl::AbortedError(
        absl::StrCat("job ", last.id(), " ", v1::JobStateShortName(last.state()),
                     last.failure_reason().empty() ? "" : ": ", last.failure_reason())));
  }
}

void RunCancel(const IdOptions& o) {
  const v1::Job job = OrFail(Connect(o.server)->Cancel(o.id));
  if (o.json) {
    PrintJson(ProtoJson(job));
    return;
  }
  std::printf("%s %s\n", job.id().c_str(), v1::JobStateShortName(job.state()));
}

void RunLogs(const IdOptions& o) {
  const std::vector<std::string> lines = OrFail(Connect(o.server)->Logs(o.id, o.tail));
  if (o.json) {
    v1::GetLogsResponse resp;  // the same object as before: {"lines": [...]}
    for (const auto& l : lines) resp.add_lines(l);
    PrintJson(ProtoJson(resp));
    return;
  }
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
}

void RunResult(const IdOptions& o) {
  const v1::JobResult res = OrFail(Connect(o.server)->Result(o.id));
  // The model compiled from the job's records (DIR/model, the artifact `loom run` loads), for the
  // class the job was tuned on unless --target says otherwise (api/job_client.h).
  absl::StatusOr<WrittenJobResult> w =
      WriteJobResult(res, o.output, {.compile = !o.skip_compile, .target = o.target});
  if (!w.ok()) {
    absl::Status s = w.status();
    if (absl::StartsWith(s.message(), "compiling the tuned model")) {
      s = absl::Status(s.code(), absl::StrCat(s.message(), " (--target picks another)"));
    }
    Fail(s);
  }
  // --json: one object at the end, the compile's tuning included.
  nlohmann::json summary = {
      {"job", res.job().id()},           {"state", v1::JobStateShortName(res.job().state())},
      {"records", w->records},           {"db", w->records_db},
      {"best_configs", res.best_size()}, {"best_json", w->best_json}};
  if (!w->artifact.empty()) {
    summary["target"] = w->target_key;
    summary["tuned"] = w->tuning_summary;
    summary["tuned_kernels"] = w->tuned_kernels;
    summary["kernel_steps"] = w->kernel_steps;
    summary["model"] = w->artifact;
  }
  if (o.json) {
    PrintJson(summary);
    return;
  }
  std::printf("%s: %s, %lld records -> %s, %d best configs -> %s\n", res.job().id().c_str(),
              v1::JobStateShortName(res.job().state()), static_cast<long long>(w->records),
              w->records_db.c_str(), res.best_size(), w->best_json.c_str());
  if (w->artifact.empty()) return;
  std::printf("tuned: %s\n", w->tuning_summary.c_str());
  std::printf("compiled model -> %s (run it with 'loom run %s --input X.npy')\n",
              w->artifact.c_str(), w->artifact.c_str());
}

void AddServer(CLI::App* cmd, std::string& server) {
  AddServerOption(cmd, &server);
  AddTokenFileOption(cmd, &Globals().token_file);
}

}  // namespace

void RegisterJobCommands(CLI::App& app) {
  {
    auto o = std::make_shared<SubmitFlags>();
    auto* cmd = app.add_subcommand("submit", "Submit a tuning job to loom serve");
    cmd->add_option("MODEL", o->request.model,
                    "zoo name, zoo:NAME or a .onnx file (sent to the server)");
    AddServer(cmd, o->server);
    cmd->add_option("--name", o->request.name, "Job name (default: the model's)");
    cmd->add_option("--target", o->request.target, "cpu or cuda");
    o->trials_option =
        cmd->add_option("--trials", o->request.trials,
                        "Trials per task (default 32; with a job budget a cap per task, "
                        "default none)")
            ->check(CLI::Range(1, 1000000));
    NoDefaultShown(cmd->add_option("--total-trials", o->total_trials,
                                   "One budget of trials for the whole job, shared among its "
                                   "tasks by expected gain (default: none)"));
    cmd->add_option("--time-budget", o->time_budget,
                    "One time budget for the whole job, e.g. 90s, 20m or 1h30m (from its first "
                    "stage), shared among its tasks by expected gain");
    cmd->add_option("--spread", o->request.spread,
                    "Tasks of the job whose rounds may run at once, each on its own device")
        ->check(CLI::Range(1, 64));
    cmd->add_option("--priority", o->request.priority, "Higher runs first")
        ->check(CLI::Range(-1000, 1000));
    cmd->add_option("--latency-goal", o->request.latency_goal_ms,
                    "ms: ends at once if known records already meet it")
        ->check(CLI::Range(0.0, 1e9));
    cmd->add_option("--tuner", o->request.tuner, "xgb, ga, random or grid");
    cmd->add_option("--batch-size", o->request.batch_size, "Configs per round")
        ->check(CLI::Range(1, 1024));
    cmd->add_option("--max-tasks", o->request.max_tasks, "Tune only the first N tasks (0: all)");
    cmd->add_option("--tasks", o->tasks,
                    "Tune only these tasks, e.g. 1,3 (indices as 'loom tasks' lists them)");
    cmd->add_option("--min-repeat-ms", o->request.min_repeat_ms,
                    "Shortest timed repeat of a measurement (0: the agents' default)")
        ->check(CLI::Range(0, 60000));
    cmd->add_option("--repeat", o->request.repeat,
                    "Timed repeats per candidate (0: the agents' default)")
        ->check(CLI::Range(0, 1000));
    NoDefaultShown(cmd->add_option(
                       "--run-timeout", o->request.run_timeout_s,
                       "Seconds a candidate may run past its expected time (default: the agents')"))
        ->check(CLI::Range(0.0, 3600.0));
    cmd->add_option("--seed", o->request.seed, "Tuner seed")->check(CLI::NonNegativeNumber);
    cmd->add_flag("--no-prior", o->no_prior,
                  "Do not seed the cost model with the agents' built-in tuning prior");
    cmd->add_option("--input-shape", o->input_shapes,
                    "Pin a dynamic input shape, NAME=D0,D1,... (repeatable)");
    cmd->add_option("--simulated", o->simulated,
                    "A load-test job instead of a model: tasks=N,rounds=N,propose=S,build=S,"
                    "measure=S,update=S");
    AddJsonFlag(cmd, &o->json, "Print the submitted job as one JSON object");
    cmd->add_flag("--parsable", o->parsable, "Print only the job id (for scripts)");
    cmd->callback([o] { RunSubmit(*o); });
  }
  {
    auto o = std::make_shared<ListOptions>();
    auto* cmd = app.add_subcommand("jobs", "List your jobs and the agents' resource use");
    AddServer(cmd, o->server);
    cmd->add_flag("--all", o->all, "Every user's jobs (admin token)");
    cmd->add_flag("--ended", o->ended, "Include finished, failed and cancelled jobs");
    AddJsonFlag(cmd, &o->json, "One JSON object");
    cmd->callback([o] { RunJobs(*o); });
  }
  auto id_command = [&app](const char* name, const char* help, auto run,
                           bool json = false) -> std::pair<CLI::App*, std::shared_ptr<IdOptions>> {
    auto o = std::make_shared<IdOptions>();
    auto* cmd = app.add_subcommand(name, help);
    cmd->add_option("ID", o->id, "Job id (see 'loom jobs')")->required();
    AddServer(cmd, o->server);
    if (json) AddJsonFlag(cmd, &o->json, "One JSON object");
    cmd->callback([o, run] { run(*o); });
    return {cmd, o};
  };
  id_command("status", "Show a job: queue position, stage, progress, resources", RunStatus, true);
  id_command("watch", "Follow a job's progress until it ends", RunWatch, true);
  id_command("cancel", "Cancel a job", RunCancel, true);
  {
    auto [cmd, o] = id_command("logs", "Print a job's log", RunLogs, true);
    cmd->add_option("--tail", o->tail, "Only the last N lines")->check(CLI::NonNegativeNumber);
  }
  {
    auto [cmd, o] = id_command("result", "Download a job's records and best configs", RunResult);
    cmd->add_option("-o,--output", o->output, "Output folder")->required();
    cmd->add_option("--target", o->target,
                    "Compile for this target: cpu, or a CPU class (cpu:avx2) (default: the class "
                    "the job was tuned on)");
    cmd->add_flag("--skip-compile", o->skip_compile,
                  "Write records and best configs only, not the compiled model (DIR/model)");
    AddJsonFlag(cmd, &o->json, "One JSON object: records, best configs, kernels tuned");
  }
}

}  // namespace loom::cli
