// The user side of the service: `loom submit`, `jobs`, `status`, `watch`, `cancel`, `result`,
// `logs`. Each talks to `loom serve` over gRPC (service/client.h resolves the server and token:
// --server, LOOM_SERVER, LOOM_TOKEN, ~/.config/loom/config). Failures are one line naming the
// gRPC status code, and a non-zero exit.
#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "loom/cli/commands.h"
#include "loom/cli/job_view.h"
#include "loom/cli/json_output.h"
#include "loom/graph/shape_spec.h"
#include "loom/loom.h"
#include "loom/records/record_store.h"
#include "loom/runtime/compiled_model.h"
#include "loom/service/client.h"
#include "loom/service/request_checks.h"
#include "loom/tune/prior.h"
#include "loom/tune/tune_job.h"
#include "loom/v1/jobs.grpc.pb.h"
#include "loom/v1/stage_names.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct Conn {
  service::ClientConfig config;
  service::Failover failover;  // follows standby redirects along config.server's list

  grpc::Status Call(
      absl::Duration timeout,
      const std::function<grpc::Status(v1::JobService::Stub&, grpc::ClientContext&)>& call) {
    return failover.Call(
        timeout, [&](const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext& ctx) {
          v1::JobService::Stub stub(channel);
          return call(stub, ctx);
        });
  }
};

Conn Connect(const std::string& server_flag) {
  service::QuietGrpcLogs();
  auto config = service::ResolveClientConfig(server_flag);
  FailIfError(config.status());
  if (!Globals().token_file.empty()) {
    config->token = TokenFromFlag();
    config->token_file = Globals().token_file;
  }
  auto failover = service::Failover::Create(*config);
  FailIfError(failover.status());
  return Conn{*config, *std::move(failover)};
}

void Check(const grpc::Status& st, const Conn& c) {
  if (st.ok()) return;
  absl::Status s = service::FromGrpc(st);
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    s = absl::Status(s.code(), absl::StrCat(s.message(), " (server ", c.config.server,
                                            "; set --server or LOOM_SERVER)"));
  }
  // Usage mistakes exit 2 in main(); a server-side INVALID_ARGUMENT is still a failure (1).
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

struct SubmitOptions {
  std::string model;
  std::string server;
  std::string name;
  std::string target = "cpu";
  int trials = 0;             // 0: not given (32, or the most the daemon takes under a job budget)
  int64_t total_trials = -1;  // -1: not given
  std::string time_budget;
  int priority = 0;
  double latency_goal = 0;
  std::string tuner = "xgb";
  int batch_size = 8;
  int max_tasks = 0;
  int64_t seed = 0;
  bool no_prior = false;
  std::vector<std::string> input_shapes;
  std::string simulated;
  std::string tasks;  // "1,3": task indices as `loom tasks` lists them
  // Measure spec; 0: the agents' defaults.
  int min_repeat_ms = 0;
  int repeat = 0;
  double run_timeout_s = 0;
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
  v1::SimulatedWorkload w;
  w.set_tasks(1);
  w.set_rounds(1);
  for (absl::string_view kv : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    double v = 0;
    if (p.size() != 2 || !absl::SimpleAtod(p[1], &v)) {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("--simulated: bad entry '", kv, "' (KEY=NUMBER, comma separated)")));
    }
    if (p[0] == "tasks") {
      w.set_tasks(static_cast<int>(v));
    } else if (p[0] == "rounds") {
      w.set_rounds(static_cast<int>(v));
    } else if (p[0] == "propose") {
      w.set_propose_seconds(v);
    } else if (p[0] == "build") {
      w.set_build_seconds(v);
    } else if (p[0] == "measure") {
      w.set_measure_seconds(v);
    } else if (p[0] == "update") {
      w.set_update_seconds(v);
    } else {
      Fail(absl::InvalidArgumentError(
          absl::StrCat("--simulated: unknown key '", p[0],
                       "' (tasks, rounds, propose, build, measure, update)")));
    }
  }
  return w;
}

void RunSubmit(const SubmitOptions& o) {
  v1::SubmitJobRequest req;
  req.set_name(o.name);
  req.set_target(o.target);
  if (o.total_trials != -1 && (o.total_trials < 1 || o.total_trials > tune::kMaxTotalTrials)) {
    Fail(absl::InvalidArgumentError(absl::StrCat("--total-trials must be 1 to ",
                                                 tune::kMaxTotalTrials, ", got ", o.total_trials)));
  }
  req.set_total_trials(std::max<int64_t>(0, o.total_trials));
  if (!o.time_budget.empty()) {
    auto budget = tune::ParseTimeBudget(o.time_budget);
    if (!budget.ok()) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--time-budget: ", budget.status().message())));
    }
    req.set_time_budget_seconds(absl::ToDoubleSeconds(*budget));
  }
  const bool budgeted = o.total_trials > 0 || !o.time_budget.empty();
  req.set_trials(o.trials > 0 ? o.trials : budgeted ? 1000000 : 32);
  req.set_priority(o.priority);
  req.set_latency_goal_ms(o.latency_goal);
  req.set_tuner(o.tuner);
  req.set_batch_size(o.batch_size);
  req.set_max_tasks(o.max_tasks);
  req.set_seed(o.seed);
  req.set_no_prior(o.no_prior);
  for (const auto& s : o.input_shapes) {
    auto named = graph::ParseInputShape(s);
    FailIfError(named.status());
    req.add_input_shapes(graph::FormatInputShape(named->first, named->second));
  }
  if (!o.tasks.empty()) {
    if (o.max_tasks > 0) Fail(absl::InvalidArgumentError("give --tasks or --max-tasks, not both"));
    for (int t : ParseTaskList(o.tasks)) req.add_task_indices(t);
  }
  if (o.min_repeat_ms > 0 || o.repeat > 0 || o.run_timeout_s > 0) {
    v1::MeasureSpec* m = req.mutable_measure();
    m->set_min_repeat_ms(o.min_repeat_ms);
    m->set_repeat(o.repeat);
    m->set_run_timeout_s(o.run_timeout_s);
  }
  if (!o.simulated.empty()) {
    if (!o.model.empty()) {
      Fail(absl::InvalidArgumentError("give either MODEL or --simulated, not both"));
    }
    *req.mutable_simulated() = ParseSimulated(o.simulated);
  } else if (o.model.empty()) {
    Fail(absl::InvalidArgumentError("MODEL is required (a zoo name, zoo:NAME or a .onnx file)"));
  } else if (absl::StartsWith(o.model, "zoo:")) {
    req.set_zoo_model(o.model.substr(4));
  } else if (absl::EndsWith(o.model, ".onnx") || std::filesystem::exists(o.model)) {
    std::ifstream in(o.model, std::ios::binary);
    if (!in) Fail(absl::NotFoundError(absl::StrCat("cannot read model file '", o.model, "'")));
    std::stringstream ss;
    ss << in.rdbuf();
    req.set_onnx_model(ss.str());
    if (o.name.empty()) req.set_name(std::filesystem::path(o.model).stem().string());
  } else {
    req.set_zoo_model(o.model);
  }
  if (req.has_zoo_model() && req.input_shapes_size() > 0) {
    Fail(absl::InvalidArgumentError(
        "--input-shape pins the dynamic inputs of an ONNX file; zoo models have fixed input "
        "shapes (submit the model as an .onnx file to change them)"));
  }
  Conn c = Connect(o.server);
  // One request id for every try of the call: a retry after a failover submits once.
  req.set_request_id(service::NewRequestId());
  v1::Job job;
  Check(c.Call(absl::Minutes(5),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.SubmitJob(&ctx, req, &job);
               }),
        c);
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
  Conn c = Connect(o.server);
  v1::ListJobsRequest req;
  req.set_all_users(o.all);
  req.set_include_ended(o.ended);
  v1::ListJobsResponse resp;
  Check(c.Call(absl::Seconds(30),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.ListJobs(&ctx, req, &resp);
               }),
        c);
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
  Conn c = Connect(o.server);
  v1::GetJobRequest req;
  req.set_job_id(o.id);
  v1::Job job;
  Check(c.Call(absl::Seconds(30),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.GetJob(&ctx, req, &job);
               }),
        c);
  if (o.json) {
    PrintJson(ProtoJson(job));
  } else {
    PrintJob(job);
  }
}

void RunWatch(const IdOptions& o) {
  Conn c = Connect(o.server);
  // Finds the active daemon first (redirects, failover); the stream itself does not fail over.
  v1::GetJobRequest get;
  get.set_job_id(o.id);
  v1::Job first;
  Check(c.Call(absl::Seconds(30),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.GetJob(&ctx, get, &first);
               }),
        c);
  auto channel = c.failover.Channel();
  FailIfError(channel.status());
  v1::JobService::Stub stub(*channel);
  grpc::ClientContext ctx;
  service::Authorize(ctx, c.config);
  v1::WatchJobRequest req;
  req.set_job_id(o.id);
  auto reader = stub.WatchJob(&ctx, req);
  v1::JobEvent ev;
  v1::Job last;
  std::string shown;  // the last state/progress line printed
  while (reader->Read(&ev)) {
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
  Check(reader->Finish(), c);
  if (last.state() == v1::JOB_STATE_FAILED || last.state() == v1::JOB_STATE_CANCELLED) {
    Fail(absl::AbortedError(
        absl::StrCat("job ", last.id(), " ", v1::JobStateShortName(last.state()),
                     last.failure_reason().empty() ? "" : ": ", last.failure_reason())));
  }
}

void RunCancel(const IdOptions& o) {
  Conn c = Connect(o.server);
  v1::CancelJobRequest req;
  req.set_job_id(o.id);
  v1::Job job;
  Check(c.Call(absl::Seconds(30),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.CancelJob(&ctx, req, &job);
               }),
        c);
  if (o.json) {
    PrintJson(ProtoJson(job));
    return;
  }
  std::printf("%s %s\n", job.id().c_str(), v1::JobStateShortName(job.state()));
}

void RunLogs(const IdOptions& o) {
  Conn c = Connect(o.server);
  v1::GetLogsRequest req;
  req.set_job_id(o.id);
  req.set_tail(o.tail);
  v1::GetLogsResponse resp;
  Check(c.Call(absl::Seconds(30),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.GetLogs(&ctx, req, &resp);
               }),
        c);
  if (o.json) {
    PrintJson(ProtoJson(resp));
    return;
  }
  for (const auto& l : resp.lines()) std::printf("%s\n", l.c_str());
}

void RunResult(const IdOptions& o) {
  Conn c = Connect(o.server);
  v1::GetResultRequest req;
  req.set_job_id(o.id);
  v1::JobResult res;
  Check(c.Call(absl::Minutes(5),
               [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                 return stub.GetResult(&ctx, req, &res);
               }),
        c);
  std::error_code ec;
  std::filesystem::create_directories(o.output, ec);
  if (ec) {
    Fail(absl::PermissionDeniedError(
        absl::StrCat("cannot create '", o.output, "': ", ec.message())));
  }
  const std::string db = (std::filesystem::path(o.output) / "records.db").string();
  auto store = tune::OpenSqliteRecordStore(db);
  FailIfError(store.status());
  std::istringstream in(res.records_jsonl());
  auto n = (*store)->ImportJsonLines(in);
  FailIfError(n.status());
  nlohmann::json best = nlohmann::json::array();
  for (const v1::BestConfig& b : res.best()) {
    nlohmann::json cfg = nlohmann::json::parse(b.config_json(), nullptr, false);
    best.push_back({{"task_key", b.task_key()},
                    {"template", b.template_name()},
                    {"target_key", b.target_key()},
                    {"config_index", b.config_index()},
                    {"config", cfg.is_discarded() ? nlohmann::json(b.config_json()) : cfg},
                    {"median_cost", b.median_cost()},
                    {"gflops", b.gflops()}});
  }
  nlohmann::json doc = {{"job", res.job().id()},
                        {"name", res.job().name()},
                        {"state", v1::JobStateShortName(res.job().state())},
                        {"estimated_latency_ms", res.job().estimated_latency_ms()},
                        {"best", best}};
  std::ofstream(std::filesystem::path(o.output) / "best.json") << doc.dump(2) << "\n";
  if (!res.model_onnx().empty()) {
    std::ofstream(std::filesystem::path(o.output) / "model.onnx", std::ios::binary)
        << res.model_onnx();
  }
  // --json: one object at the end, the compile's tuning included.
  nlohmann::json summary = {
      {"job", res.job().id()},
      {"state", v1::JobStateShortName(res.job().state())},
      {"records", *n},
      {"db", db},
      {"best_configs", res.best_size()},
      {"best_json", (std::filesystem::path(o.output) / "best.json").string()}};
  if (!o.json) {
    std::printf("%s: %s, %lld records -> %s, %d best configs -> %s\n", res.job().id().c_str(),
                v1::JobStateShortName(res.job().state()), static_cast<long long>(*n), db.c_str(),
                res.best_size(), (std::filesystem::path(o.output) / "best.json").string().c_str());
  }
  const std::string model = !res.zoo_model().empty() ? absl::StrCat("zoo:", res.zoo_model())
                            : !res.model_onnx().empty()
                                ? (std::filesystem::path(o.output) / "model.onnx").string()
                                : "";
  if (model.empty() || o.skip_compile) {
    if (o.json) PrintJson(summary);
    return;
  }
  // The compiled model, from the job's records: the artifact `loom run DIR/model` loads.
  const std::string artifact = (std::filesystem::path(o.output) / "model").string();
  // The class the job was tuned on (the agents' CPU), unless --target says otherwise: records of
  // another CPU model of that class apply (api/class_records.h).
  std::string target = o.target;
  if (target.empty()) {
    std::string first;
    std::istringstream lines(res.records_jsonl());
    std::getline(lines, first);
    nlohmann::json r = nlohmann::json::parse(first, nullptr, false);
    const std::string key = r.is_object() ? r.value("target_key", "") : "";
    target = absl::StartsWith(key, "cpu:") ? tune::TargetClassOfKey(key) : "cpu";
  }
  loom::Model compiled = loom::Model::Load(model);
  compiled.Compile({.target = target, .db = db});
  absl::Status st = compiled.status().ok() ? compiled.Export(artifact) : compiled.status();
  if (!st.ok()) {
    Fail(absl::Status(st.code(), absl::StrCat("compiling the tuned model for ", target, ": ",
                                              st.message(), " (--target picks another)")));
  }
  if (o.json) {
    summary["target"] = compiled.compiled()->target_key();
    summary["tuned"] = compiled.tuning_summary();
    summary["tuned_kernels"] = compiled.compiled()->stats().tuned_kernels;
    summary["kernel_steps"] = compiled.compiled()->stats().kernel_steps;
    summary["model"] = artifact;
    PrintJson(summary);
    return;
  }
  std::printf("tuned: %s\n", compiled.tuning_summary().c_str());
  std::printf("compiled model -> %s (run it with 'loom run %s --input X.npy')\n", artifact.c_str(),
              artifact.c_str());
}

void AddServer(CLI::App* cmd, std::string& server) {
  AddServerOption(cmd, &server);
  AddTokenFileOption(cmd, &Globals().token_file);
}

}  // namespace

void RegisterJobCommands(CLI::App& app) {
  {
    auto o = std::make_shared<SubmitOptions>();
    auto* cmd = app.add_subcommand("submit", "Submit a tuning job to loom serve");
    cmd->add_option("MODEL", o->model, "zoo name, zoo:NAME or a .onnx file (sent to the server)");
    AddServer(cmd, o->server);
    cmd->add_option("--name", o->name, "Job name (default: the model's)");
    cmd->add_option("--target", o->target, "cpu or cuda");
    cmd->add_option("--trials", o->trials,
                    "Trials per task (default 32; with a job budget a cap per task, default none)")
        ->check(CLI::Range(1, 1000000));
    cmd->add_option("--total-trials", o->total_trials,
                    "One budget of trials for the whole job, shared among its tasks by expected "
                    "gain");
    cmd->add_option("--time-budget", o->time_budget,
                    "One time budget for the whole job, e.g. 90s, 20m or 1h30m (from its first "
                    "stage), shared among its tasks by expected gain");
    cmd->add_option("--priority", o->priority, "Higher runs first")->check(CLI::Range(-1000, 1000));
    cmd->add_option("--latency-goal", o->latency_goal,
                    "ms: ends at once if known records already meet it")
        ->check(CLI::Range(0.0, 1e9));
    cmd->add_option("--tuner", o->tuner, "xgb, ga, random or grid");
    cmd->add_option("--batch-size", o->batch_size, "Configs per round")->check(CLI::Range(1, 1024));
    cmd->add_option("--max-tasks", o->max_tasks, "Tune only the first N tasks (0: all)");
    cmd->add_option("--tasks", o->tasks,
                    "Tune only these tasks, e.g. 1,3 (indices as 'loom tasks' lists them)");
    cmd->add_option("--min-repeat-ms", o->min_repeat_ms,
                    "Shortest timed repeat of a measurement (0: the agents' default)")
        ->check(CLI::Range(0, 60000));
    cmd->add_option("--repeat", o->repeat, "Timed repeats per candidate (0: the agents' default)")
        ->check(CLI::Range(0, 1000));
    cmd->add_option("--run-timeout", o->run_timeout_s,
                    "Seconds a candidate may run past its expected time (default: the agents')")
        ->check(CLI::Range(0.0, 3600.0));
    cmd->add_option("--seed", o->seed, "Tuner seed")->check(CLI::NonNegativeNumber);
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
