#include "loom/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "loom/base/status_macros.h"
#include "loom/records/postgres.h"
#include "loom/service/auth.h"
#include "loom/service/client.h"
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

// Whether `key` is the private key of `cert` (PEM texts), so that a mismatch is one line of ours
// rather than gRPC's log lines and a failure that reads like a busy port.
absl::Status CheckKeyPair(const std::string& cert, const std::string& key, const ServerOptions& o) {
  BIO* cb = BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size()));
  BIO* kb = BIO_new_mem_buf(key.data(), static_cast<int>(key.size()));
  X509* x = cb ? PEM_read_bio_X509(cb, nullptr, nullptr, nullptr) : nullptr;
  EVP_PKEY* k = kb ? PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr) : nullptr;
  absl::Status st;
  if (x == nullptr) {
    st = absl::InvalidArgumentError(
        absl::StrCat("--tls-cert '", o.tls_cert, "' holds no readable PEM certificate"));
  } else if (k == nullptr) {
    st = absl::InvalidArgumentError(
        absl::StrCat("--tls-key '", o.tls_key,
                     "' holds no readable PEM private key (encrypted keys are not "
                     "supported)"));
  } else if (X509_check_private_key(x, k) != 1) {
    st = absl::InvalidArgumentError(absl::StrCat(
        "--tls-key '", o.tls_key, "' is not the private key of --tls-cert '", o.tls_cert, "'"));
  }
  X509_free(x);
  EVP_PKEY_free(k);
  BIO_free(cb);
  BIO_free(kb);
  return st;
}

// Open WatchJob streams per user, capped so one user cannot hold every server thread.
class StreamCounter {
 public:
  explicit StreamCounter(int max) : max_(max) {}
  bool Enter(const std::string& user) {
    absl::MutexLock lock(&mu_);
    int& n = open_[user];
    if (n >= max_) return false;
    ++n;
    return true;
  }
  void Leave(const std::string& user) {
    absl::MutexLock lock(&mu_);
    if (--open_[user] <= 0) open_.erase(user);
  }

 private:
  const int max_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> open_ ABSL_GUARDED_BY(mu_);
};

// Whether this daemon leads its state. While it stands by there is no driver, and every call is
// answered with a redirect to the active daemon: UNAVAILABLE, the leader's address in the message
// and in the trailing metadata kLeaderMetadataKey (client.h follows it).
class Lead {
 public:
  // nullptr while standing by.
  JobDriver* driver() const {
    absl::MutexLock lock(&mu_);
    return driver_;
  }
  void Activate(JobDriver* driver) {
    absl::MutexLock lock(&mu_);
    driver_ = driver;
  }
  void SetLeader(const std::string& address) {
    absl::MutexLock lock(&mu_);
    leader_ = address;
  }
  grpc::Status Redirect(grpc::ServerContext* ctx) const {
    absl::MutexLock lock(&mu_);
    if (leader_.empty()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "this loom serve is a standby and knows no active daemon yet; retry "
                          "shortly");
    }
    ctx->AddTrailingMetadata(std::string(kLeaderMetadataKey), leader_);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat(kStandbyMessagePrefix, leader_));
  }

 private:
  mutable absl::Mutex mu_;
  JobDriver* driver_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string leader_ ABSL_GUARDED_BY(mu_);
};

// Authenticates the caller as `who` and names the driver `driver`, or answers with a standby's
// redirect. The macro names the variables it declares, so they cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LOOM_AUTH(who)                                  \
  auto who##_or = Who(*tokens_, ctx);                   \
  if (!who##_or.ok()) return ToGrpc(who##_or.status()); \
  const Principal& who = *who##_or;                     \
  JobDriver* const driver = lead_->driver();            \
  if (driver == nullptr) return lead_->Redirect(ctx)
// NOLINTEND(bugprone-macro-parentheses)

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(const Lead* lead, const TokenTable* tokens, int max_watches_per_user)
      : lead_(lead), tokens_(tokens), watches_(max_watches_per_user) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::Job* out) override {
    LOOM_AUTH(who);
    auto r = driver->Submit(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->List(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    for (v1::Job& job : *r->mutable_jobs()) {
      if (absl::Status st = driver->FillProgress(who, job); !st.ok()) return ToGrpc(st);
    }
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* out) override {
    LOOM_AUTH(who);
    auto r = driver->Get(who, req->job_id());
    if (!r.ok()) return ToGrpc(r.status());
    if (absl::Status st = driver->FillProgress(who, *r); !st.ok()) return ToGrpc(st);
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                         v1::Job* out) override {
    LOOM_AUTH(who);
    auto r = driver->Cancel(who, req->job_id());
    if (!r.ok()) return ToGrpc(r.status());
    if (absl::Status st = driver->FillProgress(who, *r); !st.ok()) return ToGrpc(st);
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    LOOM_AUTH(who);
    if (!watches_.Enter(who.user)) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "too many open watches for this user; close one first");
    }
    struct Leave {
      StreamCounter& c;
      const std::string& user;
      ~Leave() { c.Leave(user); }
    } leave{watches_, who.user};
    int64_t version = 0;
    while (!ctx->IsCancelled()) {
      auto c = driver->WaitForChange(who, req->job_id(), version, absl::Seconds(1));
      if (!c.ok()) return ToGrpc(c.status());
      if (c->version != version) {
        const int64_t now = absl::ToUnixMicros(absl::Now());
        if (absl::Status st = driver->FillProgress(who, c->job); !st.ok()) return ToGrpc(st);
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
    auto r = driver->Result(who, req->job_id());
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status GetLogs(grpc::ServerContext* ctx, const v1::GetLogsRequest* req,
                       v1::GetLogsResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->Logs(who, req->job_id(), req->tail());
    if (!r.ok()) return ToGrpc(r.status());
    for (std::string& l : *r) out->add_lines(std::move(l));
    return grpc::Status::OK;
  }
  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::GetStatsRequest*,
                        v1::ServerStats* out) override {
    LOOM_AUTH(who);
    auto r = driver->Stats(who);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }

 private:
  const Lead* lead_;
  const TokenTable* tokens_;
  StreamCounter watches_;
};

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  AgentServiceImpl(const Lead* lead, const TokenTable* tokens) : lead_(lead), tokens_(tokens) {}

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->Register(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->Heartbeat(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status AcquireStages(grpc::ServerContext* ctx, const v1::AcquireStagesRequest* req,
                             v1::AcquireStagesResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->Acquire(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status ReportStage(grpc::ServerContext* ctx, const v1::ReportStageRequest* req,
                           v1::ReportStageResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->Report(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }
  grpc::Status Deregister(grpc::ServerContext* ctx, const v1::DeregisterRequest* req,
                          v1::DeregisterResponse* out) override {
    LOOM_AUTH(who);
    auto r = driver->Deregister(who, *req);
    if (!r.ok()) return ToGrpc(r.status());
    *out = *std::move(r);
    return grpc::Status::OK;
  }

 private:
  const Lead* lead_;
  const TokenTable* tokens_;
};

#undef LOOM_AUTH

}  // namespace

std::string RecordsPathFor(const std::string& state_path) {
  if (state_path == ":memory:" || tune::IsPostgresUri(state_path)) return state_path;
  return absl::StrCat(state_path, ".records");
}

std::string AdvertisedAddress(const ServerOptions& options, int port) {
  if (!options.advertise.empty()) return options.advertise;
  std::string host = options.listen.substr(0, options.listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    host = gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0' ? name : "localhost";
  }
  return absl::StrCat(host, ":", port);
}

struct Server::Services {
  TokenTable tokens;
  Lead lead;
  std::unique_ptr<JobServiceImpl> jobs;
  std::unique_ptr<AgentServiceImpl> agents;
};

bool IsLoopbackAddress(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  return absl::StartsWith(host, "127.") || host == "::1" || host == "localhost";
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  if (options.state_path.empty()) return absl::InvalidArgumentError("--state FILE is required");
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (options.max_watches_per_user < 1) {
    return absl::InvalidArgumentError("max_watches_per_user must be at least 1");
  }
  const bool loopback = IsLoopbackAddress(options.listen);
  if (!options.http.listen.empty())
    LOOM_RETURN_IF_ERROR(ParseHttpListen(options.http.listen).status());
  if (!options.http.listen.empty() && !options.insecure && options.tls_cert.empty() &&
      !IsLoopbackAddress(options.http.listen)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http ", options.http.listen,
        " reaches beyond this host but TLS is off (tokens would cross the network in clear); "
        "give --tls-cert and --tls-key (the web view then serves HTTPS), or --insecure"));
  }
  if (!options.insecure && options.tokens_path.empty()) {
    return absl::InvalidArgumentError(
        "no --tokens file: every caller would be an unauthenticated admin; give --tokens FILE, "
        "or --insecure to run without authentication");
  }
  if (!options.insecure && options.tls_cert.empty() && !loopback) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", options.listen,
        " reaches beyond this host but TLS is off (tokens would cross the network in clear); "
        "give --tls-cert and --tls-key, or --insecure"));
  }
  // gRPC's own log lines would precede (and muddle) our one-line errors.
  QuietGrpcLogs();
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
    if (!absl::StrContains(cert, "-----BEGIN CERTIFICATE-----")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-cert '", options.tls_cert, "' holds no PEM certificate"));
    }
    if (!absl::StrContains(key, "PRIVATE KEY-----")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-key '", options.tls_key, "' holds no PEM private key"));
    }
    LOOM_RETURN_IF_ERROR(CheckKeyPair(cert, key, options));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }
  if (options.insecure && options.driver.log_to_stderr) {
    std::fprintf(
        stderr, "ts=%s level=warn event=insecure auth=%s tls=%s listen=%s msg=\"--insecure: %s\"\n",
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
        options.tokens_path.empty() ? "off" : "tokens", options.tls_cert.empty() ? "off" : "on",
        options.listen.c_str(),
        options.tokens_path.empty()
            ? "no authentication: every caller is an admin and any agent may report"
            : "tokens travel in clear");
  }
  // A PostgreSQL state holds its own lock, and its records share its database (no pairing); a
  // SQLite state is opened before the port is bound, a PostgreSQL one after (its leader row names
  // the bound address).
  const bool in_files = !tune::IsPostgresUri(options.state_path);
  if (options.standby && in_files) {
    return absl::InvalidArgumentError(
        absl::StrCat("--standby needs a postgresql:// --state: the SQLite state '",
                     options.state_path, "' is one daemon's alone"));
  }
  s->options_ = options;
  if (in_files) LOOM_RETURN_IF_ERROR(s->TakeLead({}));
  s->services_->jobs = std::make_unique<JobServiceImpl>(&s->services_->lead, &s->services_->tokens,
                                                        options.max_watches_per_user);
  s->services_->agents =
      std::make_unique<AgentServiceImpl>(&s->services_->lead, &s->services_->tokens);

  // grpc.health.v1.Health (overall status SERVING while the server leads) and server reflection,
  // so that standard tools (grpcurl, Kubernetes gRPC probes) can talk to the daemon.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, creds, &s->port_);
  // gRPC sets SO_REUSEPORT by default: a second daemon could then bind the same port and take
  // half of the calls. One daemon per port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
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
    int port = 0;
    const size_t colon = options.listen.rfind(':');
    std::string holder;
    if (colon != std::string::npos && absl::SimpleAtoi(options.listen.substr(colon + 1), &port)) {
      holder = DescribePortHolder(port);
    }
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on '", options.listen, "': ",
        holder.empty() ? "the port is in use or the address is not HOST:PORT of this host"
                       : absl::StrCat("the port is in use by ", holder)));
  }
  s->advertise_ = AdvertisedAddress(options, s->port_);
  if (in_files) {
    LOOM_RETURN_IF_ERROR(s->Serve());
    return s;
  }
  StateStoreOptions lead{.advertise = s->advertise_, .lease_timeout = options.lease_timeout};
  if (!options.standby) {
    LOOM_RETURN_IF_ERROR(s->TakeLead(lead));
    return s;
  }
  // A standby: serving redirects (health NOT_SERVING) while it waits for the state's lock.
  s->server_->GetHealthCheckService()->SetServingStatus(false);
  Server* self = s.get();
  lead.standby = [self](const LeaderInfo& leader) {
    self->services_->lead.SetLeader(leader.address);
    if (leader.lease_broken) {
      self->Log("lease_expired", absl::StrCat("epoch=", leader.epoch, " holder=\"", leader.holder,
                                              "\" msg=\"the leader stopped renewing its lease; "
                                              "its sessions were ended\""));
    }
    absl::MutexLock lock(&self->mu_);
    return !self->stopping_;
  };
  self->Log("standby", absl::StrCat("advertise=", self->advertise_));
  self->takeover_ = std::thread([self, lead] {
    absl::Status st = self->TakeLead(lead);
    if (st.ok() || absl::IsCancelled(st)) return;
    // A standby that cannot lead cannot serve: one line, as a failed start.
    std::fprintf(stderr, "loom serve: fatal: %s\n", std::string(st.message()).c_str());
    std::_Exit(3);
  });
  return s;
}

void Server::Log(const char* event, const std::string& fields) const {
  if (!options_.driver.log_to_stderr) return;
  std::fprintf(stderr, "ts=%s level=info event=%s %s\n",
               absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
               event, fields.c_str());
  std::fflush(stderr);
}

absl::Status Server::Serve() {
  driver_->Start();
  if (!options_.http.listen.empty()) {
    HttpOptions http = options_.http;
    http.tls_cert = options_.tls_cert;
    http.tls_key = options_.tls_key;
    LOOM_ASSIGN_OR_RETURN(http_, HttpServer::Start(http, driver_.get(), &services_->tokens));
  }
  services_->lead.Activate(driver_.get());
  server_->GetHealthCheckService()->SetServingStatus(true);
  return absl::OkStatus();
}

absl::Status Server::TakeLead(const StateStoreOptions& lead) {
  const std::string records_path = RecordsPathFor(options_.state_path);
  const bool in_files = !tune::IsPostgresUri(options_.state_path);
  if (in_files && options_.state_path != ":memory:") {
    LOOM_ASSIGN_OR_RETURN(lock_, StateLock::Acquire(options_.state_path));
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> state,
                        OpenStateStore(options_.state_path, lead));
  // On a shared state, the records are written under the lead's epoch too: a stale leader's
  // record write is refused in its own transaction, as its state writes are.
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::RecordStore> records,
                        state->epoch() > 0 ? tune::OpenFencedPostgresRecordStore(
                                                 records_path, LeaderFence(state->epoch()))
                                           : tune::OpenRecordStore(records_path));
  LOOM_ASSIGN_OR_RETURN(int64_t next_job, state->Counter("next_job", 1));
  if (in_files) {
    LOOM_RETURN_IF_ERROR(
        PairRecordDatabase(records_path, options_.state_path, state->store_id(), next_job > 1));
  }
  StateStore* const fenced = state.get();  // the driver owns it; it lives as long as the driver
  const int64_t epoch = state->epoch();
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<JobDriver> driver,
                        JobDriver::Create(options_.driver, std::move(state), std::move(records)));
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("shut down while taking the lead");
    driver_ = std::move(driver);
  }
  // Taken after the port was bound (a PostgreSQL state, or a standby): serve now.
  if (server_ != nullptr) LOOM_RETURN_IF_ERROR(Serve());
  if (epoch > 0) {
    Log("lead", absl::StrCat("epoch=", epoch, " advertise=", advertise_));
    // A lead can end behind this daemon's back (its session cut, its lease broken while it hung,
    // another daemon took the state): check and step down, even while no write would find out.
    // The check renews the lead's lease too: every second, or three times per lease.
    const absl::Duration every = std::min(absl::Seconds(1), options_.lease_timeout / 3);
    watchdog_ = std::thread([this, fenced, every] {
      for (;;) {
        {
          absl::MutexLock lock(&mu_);
          if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), every)) return;
        }
        absl::Status st = fenced->CheckLead();
        // Only a lead that has passed on ends the daemon; an unreachable or failing database is
        // the writes' to report.
        if (!absl::IsFailedPrecondition(st)) continue;
        std::fprintf(stderr, "loom serve: fatal: %s\n", std::string(st.message()).c_str());
        std::_Exit(3);
      }
    });
  }
  return absl::OkStatus();
}

Server::~Server() { Shutdown(); }

void Server::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
  }
  if (takeover_.joinable()) takeover_.join();
  if (watchdog_.joinable()) watchdog_.join();
  if (http_) http_->Stop();
  if (driver_) driver_->Stop();  // wakes long polls and watchers
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

void Server::Wait() {
  if (server_) server_->Wait();
}

}  // namespace loom::service
