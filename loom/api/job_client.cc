// loom::JobClient (job_client.h): JobService calls with deadlines and bearer tokens, gRPC
// statuses turned into absl ones; and a job's result written as `loom result` writes it.
#include "loom/api/job_client.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_spec.h"
#include "loom/loom.h"
#include "loom/records/record_store.h"
#include "loom/runtime/compiled_model.h"
#include "loom/search/prior.h"
#include "loom/service/client.h"
#include "loom/service/request_checks.h"
#include "loom/tune/spread.h"
#include "loom/tune/tune_job.h"
#include "loom/v1/stage_names.h"
#include "nlohmann/json.hpp"

namespace loom {

struct JobClient::Connection {
  service::ClientConfig config;
  std::string unavailable_hint;  // JobClientOptions::unavailable_hint
  // Follows standby redirects along config.server's list (service/client.h).
  std::unique_ptr<service::Failover> failover;

  grpc::Status Call(
      absl::Duration timeout,
      const std::function<grpc::Status(v1::JobService::Stub&, grpc::ClientContext&)>& call) {
    return failover->Call(
        timeout, [&](const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext& ctx) {
          v1::JobService::Stub stub(channel);
          return call(stub, ctx);
        });
  }
};

namespace {

// A kUnavailable error names the server, and how to pick another when the caller said.
absl::Status Check(const grpc::Status& st, const std::string& server, const std::string& hint) {
  if (st.ok()) return absl::OkStatus();
  absl::Status s = service::FromGrpc(st);
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    s = absl::Status(s.code(), absl::StrCat(s.message(), " (server ", server,
                                            hint.empty() ? "" : "; ", hint, ")"));
  }
  return s;
}

absl::Status Check(const grpc::Status& st, const JobClient::Connection& c) {
  return Check(st, c.config.server, c.unavailable_hint);
}

class GrpcWatch : public JobClient::Watch {
 public:
  GrpcWatch(v1::JobService::Stub& stub, const JobClient::Connection& connection,
            const std::string& job_id)
      : server_(connection.config.server), hint_(connection.unavailable_hint) {
    service::Authorize(ctx_, connection.config);
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    reader_ = stub.WatchJob(&ctx_, req);
  }
  ~GrpcWatch() override {
    if (!finished_) {
      ctx_.TryCancel();
      (void)reader_->Finish();
    }
  }

  absl::StatusOr<std::optional<v1::JobEvent>> Next() override {
    if (finished_) return std::nullopt;
    v1::JobEvent ev;
    if (reader_->Read(&ev)) return ev;
    finished_ = true;
    const grpc::Status st = reader_->Finish();
    if (st.error_code() == grpc::StatusCode::CANCELLED && cancelled_) {
      return absl::CancelledError("the watch was cancelled");
    }
    LOOM_RETURN_IF_ERROR(Check(st, server_, hint_));
    return std::nullopt;
  }

  void Cancel() override {
    cancelled_ = true;
    ctx_.TryCancel();
  }

 private:
  std::string server_, hint_;  // for Check
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader_;
  bool finished_ = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

absl::StatusOr<v1::SubmitJobRequest> MakeSubmitRequest(const SubmitOptions& o) {
  v1::SubmitJobRequest req;
  req.set_name(o.name);
  req.set_target(o.target);
  if (o.trials < 1) {
    return absl::InvalidArgumentError(absl::StrCat("trials must be at least 1, got ", o.trials));
  }
  if (o.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be at least 1, got ", o.batch_size));
  }
  if (o.max_tasks < 0 || o.min_repeat_ms < 0 || o.repeat < 0 || o.run_timeout_s < 0 ||
      o.latency_goal_ms < 0) {
    return absl::InvalidArgumentError(
        "max_tasks, min_repeat_ms, repeat, run_timeout_s and latency_goal_ms must not be "
        "negative");
  }
  if (o.total_trials < 0 || o.total_trials > tune::kMaxTotalTrials) {
    return absl::InvalidArgumentError(absl::StrCat(
        "total_trials must be 0 (none) to ", tune::kMaxTotalTrials, ", got ", o.total_trials));
  }
  if (o.spread < 1 || o.spread > tune::kMaxSpread) {
    return absl::InvalidArgumentError(
        absl::StrCat("spread must be 1 to ", tune::kMaxSpread, ", got ", o.spread));
  }
  if (!(o.time_budget_seconds >= 0) || !std::isfinite(o.time_budget_seconds)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time_budget_seconds must be a finite number of at least 0, got ", o.time_budget_seconds));
  }
  req.set_trials(o.trials);
  req.set_total_trials(o.total_trials);
  req.set_time_budget_seconds(o.time_budget_seconds);
  req.set_spread(o.spread);
  req.set_priority(o.priority);
  req.set_latency_goal_ms(o.latency_goal_ms);
  req.set_tuner(o.tuner);
  req.set_batch_size(o.batch_size);
  req.set_max_tasks(o.max_tasks);
  req.set_seed(o.seed);
  req.set_no_prior(!o.use_prior);
  for (const auto& [name, dims] : o.input_shapes) {
    req.add_input_shapes(graph::FormatInputShape(name, dims));
  }
  if (!o.tasks.empty() && o.max_tasks > 0) {
    return absl::InvalidArgumentError("give tasks or max_tasks, not both");
  }
  for (int32_t t : o.tasks) {
    if (t < 0) return absl::InvalidArgumentError(absl::StrCat("bad task index ", t));
    req.add_task_indices(t);
  }
  if (o.min_repeat_ms > 0 || o.repeat > 0 || o.run_timeout_s > 0) {
    v1::MeasureSpec* m = req.mutable_measure();
    m->set_min_repeat_ms(o.min_repeat_ms);
    m->set_repeat(o.repeat);
    m->set_run_timeout_s(o.run_timeout_s);
  }
  if (o.simulated.has_value()) {
    if (!o.model.empty()) {
      return absl::InvalidArgumentError("give either a model or a simulated workload, not both");
    }
    *req.mutable_simulated() = *o.simulated;
  } else if (o.model.empty()) {
    return absl::InvalidArgumentError("a model is required (a zoo name, zoo:NAME or a .onnx file)");
  } else if (absl::StartsWith(o.model, "zoo:")) {
    req.set_zoo_model(o.model.substr(4));
  } else if (absl::EndsWith(o.model, ".onnx") || std::filesystem::exists(o.model)) {
    std::ifstream in(o.model, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read model file '", o.model, "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    req.set_onnx_model(ss.str());
    if (o.name.empty()) req.set_name(std::filesystem::path(o.model).stem().string());
  } else {
    req.set_zoo_model(o.model);
  }
  return req;
}

absl::StatusOr<v1::SimulatedWorkload> MakeSimulatedWorkload(
    const std::map<std::string, double>& keys) {
  v1::SimulatedWorkload w;
  w.set_tasks(1);
  w.set_rounds(1);
  for (const auto& [key, v] : keys) {
    if (key == "tasks") {
      w.set_tasks(static_cast<int32_t>(v));
    } else if (key == "rounds") {
      w.set_rounds(static_cast<int32_t>(v));
    } else if (key == "propose") {
      w.set_propose_seconds(v);
    } else if (key == "build") {
      w.set_build_seconds(v);
    } else if (key == "measure") {
      w.set_measure_seconds(v);
    } else if (key == "update") {
      w.set_update_seconds(v);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown key '", key, "' (tasks, rounds, propose, build, measure, update)"));
    }
  }
  return w;
}

JobClient::JobClient(std::unique_ptr<Connection> connection, std::string server,
                     absl::Duration timeout)
    : connection_(std::move(connection)), server_(std::move(server)), timeout_(timeout) {}
JobClient::~JobClient() = default;

absl::StatusOr<std::unique_ptr<JobClient>> JobClient::Connect(const JobClientOptions& options) {
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("JobClientOptions.timeout must be positive");
  }
  LOOM_ASSIGN_OR_RETURN(service::ClientConfig config, service::ResolveClientConfig(options.server));
  if (!options.token.empty()) config.token = options.token;
  if (!options.tls_ca.empty()) config.tls_ca = options.tls_ca;
  LOOM_ASSIGN_OR_RETURN(service::Failover failover, service::Failover::Create(config));
  auto connection = std::make_unique<Connection>();
  connection->failover = std::make_unique<service::Failover>(std::move(failover));
  std::string server = config.server;
  connection->config = std::move(config);
  connection->unavailable_hint = options.unavailable_hint;
  return std::unique_ptr<JobClient>(
      new JobClient(std::move(connection), std::move(server), options.timeout));
}

absl::StatusOr<v1::Job> JobClient::Submit(const v1::SubmitJobRequest& request) {
  // One request id for every try: a call retried after a failover submits one job.
  v1::SubmitJobRequest once = request;
  if (once.request_id().empty()) once.set_request_id(service::NewRequestId());
  v1::Job job;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(std::max(timeout_, absl::Minutes(5)),
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.SubmitJob(&ctx, once, &job);
                              }),
            *connection_));
  return job;
}

absl::StatusOr<v1::ListJobsResponse> JobClient::List(bool all_users, bool include_ended) {
  v1::ListJobsRequest req;
  req.set_all_users(all_users);
  req.set_include_ended(include_ended);
  v1::ListJobsResponse resp;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(timeout_,
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.ListJobs(&ctx, req, &resp);
                              }),
            *connection_));
  return resp;
}

absl::StatusOr<v1::Job> JobClient::Get(const std::string& job_id) {
  v1::GetJobRequest req;
  req.set_job_id(job_id);
  v1::Job job;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(timeout_,
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.GetJob(&ctx, req, &job);
                              }),
            *connection_));
  return job;
}

absl::StatusOr<v1::ServerStats> JobClient::Stats() {
  v1::ServerStats stats;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(timeout_,
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.GetStats(&ctx, v1::GetStatsRequest{}, &stats);
                              }),
            *connection_));
  return stats;
}

absl::StatusOr<v1::Job> JobClient::Cancel(const std::string& job_id) {
  v1::CancelJobRequest req;
  req.set_job_id(job_id);
  v1::Job job;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(timeout_,
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.CancelJob(&ctx, req, &job);
                              }),
            *connection_));
  return job;
}

absl::StatusOr<std::vector<std::string>> JobClient::Logs(const std::string& job_id, int32_t tail) {
  if (tail < 0) return absl::InvalidArgumentError(absl::StrCat("tail must not be negative"));
  v1::GetLogsRequest req;
  req.set_job_id(job_id);
  req.set_tail(tail);
  v1::GetLogsResponse resp;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(timeout_,
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.GetLogs(&ctx, req, &resp);
                              }),
            *connection_));
  return std::vector<std::string>(resp.lines().begin(), resp.lines().end());
}

absl::StatusOr<v1::JobResult> JobClient::Result(const std::string& job_id) {
  v1::GetResultRequest req;
  req.set_job_id(job_id);
  v1::JobResult res;
  LOOM_RETURN_IF_ERROR(
      Check(connection_->Call(std::max(timeout_, absl::Minutes(5)),
                              [&](v1::JobService::Stub& stub, grpc::ClientContext& ctx) {
                                return stub.GetResult(&ctx, req, &res);
                              }),
            *connection_));
  return res;
}

absl::StatusOr<std::unique_ptr<JobClient::Watch>> JobClient::WatchJob(const std::string& job_id) {
  // The stream goes to the daemon the last call found active; it does not fail over.
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, connection_->failover->Channel());
  v1::JobService::Stub stub(channel);
  return std::unique_ptr<Watch>(new GrpcWatch(stub, *connection_, job_id));
}

absl::StatusOr<WrittenJobResult> WriteJobResult(const v1::JobResult& res, const std::string& dir,
                                                const WriteJobResultOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create '", dir, "': ", ec.message()));
  WrittenJobResult out;
  out.records_db = (fs::path(dir) / "records.db").string();
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::RecordStore> store,
                        tune::OpenSqliteRecordStore(out.records_db));
  std::istringstream in(res.records_jsonl());
  LOOM_ASSIGN_OR_RETURN(out.records, store->ImportJsonLines(in));
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
  out.best_json = (fs::path(dir) / "best.json").string();
  {
    std::ofstream f(out.best_json);
    f << doc.dump(2) << "\n";
    if (!f) return absl::DataLossError(absl::StrCat("writing ", out.best_json, " failed"));
  }
  if (!res.model_onnx().empty()) {
    out.model = (fs::path(dir) / "model.onnx").string();
    std::ofstream f(out.model, std::ios::binary);
    f << res.model_onnx();
    if (!f) return absl::DataLossError(absl::StrCat("writing ", out.model, " failed"));
  } else if (!res.zoo_model().empty()) {
    out.model = absl::StrCat("zoo:", res.zoo_model());
  }
  if (!options.compile || out.model.empty()) return out;
  out.target = options.target;
  if (out.target.empty()) {
    // The class of the CPU the job was tuned on (the agents'), from its first record.
    std::string first;
    std::istringstream lines(res.records_jsonl());
    std::getline(lines, first);
    nlohmann::json r = nlohmann::json::parse(first, nullptr, false);
    const std::string key = r.is_object() ? r.value("target_key", "") : "";
    out.target = absl::StartsWith(key, "cpu:") ? search::TargetClassOfKey(key) : "cpu";
  }
  const std::string artifact = (fs::path(dir) / "model").string();
  Model compiled = Model::Load(out.model);
  compiled.Compile({.target = out.target, .db = out.records_db});
  absl::Status st = compiled.ok() ? compiled.Export(artifact) : compiled.status();
  if (!st.ok()) {
    return absl::Status(
        st.code(), absl::StrCat("compiling the tuned model for ", out.target, ": ", st.message()));
  }
  out.artifact = artifact;
  out.target_key = compiled.compiled()->target_key();
  out.tuning_summary = compiled.tuning_summary();
  out.tuned_kernels = compiled.compiled()->stats().tuned_kernels;
  out.kernel_steps = compiled.compiled()->stats().kernel_steps;
  return out;
}

}  // namespace loom
