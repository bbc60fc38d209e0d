#include "loom/service/server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/service/auth.h"
#include "loom/v1/agent.grpc.pb.h"
#include "loom/v1/jobs.grpc.pb.h"

namespace loom::service {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<Principal> Who(const TokenTable& tokens, grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  absl::string_view value;
  if (it != md.end()) value = absl::string_view(it->second.data(), it->second.size());
  return tokens.Authenticate(value);
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `who` names the variable it declares, so it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LOOM_AUTH(who)                                  \
  auto who##_or = Who(*tokens_, ctx);                   \
  if (!who##_or.ok()) return ToGrpc(who##_or.status()); \
  const Principal& who = *who##_or
// NOLINTEND(bugprone-macro-parentheses)

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobDriver* driver, const TokenTable* tokens) : driver_(driver), tokens_(tokens) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::Job* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Submit(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver_->List(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Get(who, req->job_id());
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                         v1::Job* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Cancel(who, req->job_id());
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    LOOM_AUTH(who);
    int64_t version = 0;
    while (!ctx->IsCancelled()) {
      auto c = driver_->WaitForChange(who, req->job_id(), version, absl::Seconds(1));
      if (!c.ok()) return ToGrpc(c.status());
      if (c->version != version) {
        const int64_t now = absl::ToUnixMicros(absl::Now());
        if (c->messages.empty()) {
          v1::JobEvent ev;
          *ev.mutable_job() = c->job;
          ev.set_time_unix_micros(now);
          if (!writer->Write(ev)) return grpc::Status::OK;
        }
        for (size_t i = 0; i < c->messages.size(); ++i) {
          v1::JobEvent ev;
          if (i + 1 == c->messages.size()) *ev.mutable_job() = c->job;
          ev.set_message(c->messages[i]);
          ev.set_time_unix_micros(now);
          if (!writer->Write(ev)) return grpc::Status::OK;
        }
        version = c->version;
      }
      if (c->ended) return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
  }
  grpc::Status GetResult(grpc::ServerContext* ctx, const v1::GetResultRequest* req,
                         v1::JobResult* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Result(who, req->job_id());
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status GetLogs(grpc::ServerContext* ctx, const v1::GetLogsRequest* req,
                       v1::GetLogsResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Logs(who, req->job_id(), req->tail());
    if (!r.ok()) return ToGrpc(r.status());
    for (std::string& l : *r) out->add_lines(std::move(l));
    return grpc::Status::OK;
  }
  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::GetStatsRequest*,
                        v1::ServerStats* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Stats(who);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }

 private:
  JobDriver* driver_;
  const TokenTable* tokens_;
};

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  AgentServiceImpl(JobDriver* driver, const TokenTable* tokens)
      : driver_(driver), tokens_(tokens) {}

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Register(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Heartbeat(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status AcquireStages(grpc::ServerContext* ctx, const v1::AcquireStagesRequest* req,
                             v1::AcquireStagesResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Acquire(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status ReportStage(grpc::ServerContext* ctx, const v1::ReportStageRequest* req,
                           v1::ReportStageResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver_->Report(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }

 private:
  JobDriver* driver_;
  const TokenTable* tokens_;
};

#undef LOOM_AUTH

}  // namespace

std::string RecordsPathFor(const std::string& state_path) {
  return state_path == ":memory:" ? ":memory:" : absl::StrCat(state_path, ".records");
}

struct Server::Services {
  TokenTable tokens;
  std::unique_ptr<JobServiceImpl> jobs;
  std::unique_ptr<AgentServiceImpl> agents;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  if (options.state_path.empty()) return absl::InvalidArgumentError("--state FILE is required");
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  std::unique_ptr<Server> s(new Server());
  s->services_ = std::make_unique<Services>();
  if (options.tokens_path.empty()) {
    s->services_->tokens = TokenTable::Open();
  } else {
    LOOM_ASSIGN_OR_RETURN(s->services_->tokens, TokenTable::Load(options.tokens_path));
  }
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (!options.tls_cert.empty()) {
    LOOM_ASSIGN_OR_RETURN(std::string cert, ReadFile(options.tls_cert, "TLS certificate"));
    LOOM_ASSIGN_OR_RETURN(std::string key, ReadFile(options.tls_key, "TLS key"));
    // gRPC only says "cannot create secure server" later, which reads like a busy port.
    if (!absl::StrContains(cert, "-----BEGIN CERTIFICATE-----")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-cert '", options.tls_cert, "' holds no PEM certificate"));
    }
    if (!absl::StrContains(key, "PRIVATE KEY-----")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-key '", options.tls_key, "' holds no PEM private key"));
    }
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> state,
                        OpenSqliteStateStore(options.state_path));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::RecordStore> records,
                        tune::OpenSqliteRecordStore(RecordsPathFor(options.state_path)));
  LOOM_ASSIGN_OR_RETURN(s->driver_,
                        JobDriver::Create(options.driver, std::move(state), std::move(records)));
  s->services_->jobs = std::make_unique<JobServiceImpl>(s->driver_.get(), &s->services_->tokens);
  s->services_->agents =
      std::make_unique<AgentServiceImpl>(s->driver_.get(), &s->services_->tokens);

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, creds, &s->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  // Long polls and watch streams each hold a thread: allow many.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 4);
  grpc::ResourceQuota quota("loom-serve");
  quota.SetMaxThreads(4096);
  builder.SetResourceQuota(quota);
  builder.RegisterService(s->services_->jobs.get());
  builder.RegisterService(s->services_->agents.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    if (!options.tls_cert.empty()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot serve TLS on '", options.listen,
          "': the port is in use, or --tls-cert and --tls-key are not a certificate chain and "
          "its private key"));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot listen on '", options.listen, "' (in use, or not HOST:PORT?)"));
  }
  s->driver_->Start();
  return s;
}

Server::~Server() { Shutdown(); }

void Server::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (driver_) driver_->Stop();  // wakes long polls and watchers
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

void Server::Wait() {
  if (server_) server_->Wait();
}

}  // namespace loom::service
