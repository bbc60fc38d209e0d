#include "loom/agent/agent.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "loom/base/status_macros.h"
#include "loom/tune/stage_wire.h"

namespace loom::agent {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// Calls worth retrying: the daemon is down, restarting, overloaded or slow.
bool Transient(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::CANCELLED:
      return true;
    default:
      return false;
  }
}

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// Quotes a log value when it holds spaces or quotes (logfmt).
std::string Value(absl::string_view v) {
  if (!v.empty() && v.find_first_of(" \"=\n") == absl::string_view::npos) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c == '\n' ? ' ' : c);
  }
  out.push_back('"');
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentOptions options) {
  if (options.server.empty()) return absl::InvalidArgumentError("the agent needs --server");
  if (options.cpu_slots < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu slots must not be negative, got ", options.cpu_slots));
  }
  if (options.max_pending_reports < 1) {
    return absl::InvalidArgumentError("max_pending_reports must be at least 1");
  }
  if (options.acquire_wait <= absl::ZeroDuration() || options.rpc_timeout <= absl::ZeroDuration() ||
      options.heartbeat_interval <= absl::ZeroDuration() ||
      options.retry_initial <= absl::ZeroDuration() || options.retry_max < options.retry_initial) {
    return absl::InvalidArgumentError(
        "agent timeouts and intervals must be positive (and retry_max >= retry_initial)");
  }
  if (options.name.empty()) options.name = Hostname();
  if (options.executor.host == "local" || options.executor.host.empty()) {
    options.executor.host = options.name;
  }
  std::unique_ptr<Agent> agent(new Agent(std::move(options)));
  AgentOptions& o = agent->options_;
  // Create probes the cuda devices (a missing driver or GPU fails here, before registering).
  LOOM_ASSIGN_OR_RETURN(agent->executor_, StageExecutor::Create(o.executor));
  sched::CorePlacerOptions po{.cpu_slots = o.cpu_slots, .cpu_cores = o.executor.cpu_cores};
  // Without lending, a device-only agent still runs a CPU stage it is granted, one at a time.
  if (!o.lend_device_cores) po.cpu_slots = std::max(1, o.cpu_slots);
  for (const Device& d : agent->executor_->options().devices) {
    v1::DeviceInfo info = DescribeDevice(d);
    // A GPU's launching cores lend no slots (as engine::MachineLayout::gpu): CPU stages never
    // delay a kernel launch.
    if (o.lend_device_cores && d.kind == "cpu" && !d.cores.empty()) {
      info.set_lends_cpu_slots(static_cast<int>(d.cores.size()));
      po.lending.push_back({.name = d.name, .cores = d.cores});
    }
    agent->device_infos_.push_back(std::move(info));
  }
  LOOM_ASSIGN_OR_RETURN(agent->placer_,
                        sched::CorePlacer::Create(std::move(po), sched::MakeSchedPinner()));

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (o.tls_ca_file.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    std::ifstream f(o.tls_ca_file);
    std::stringstream ss;
    ss << f.rdbuf();
    if (!f || ss.str().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot read the TLS CA file ", o.tls_ca_file));
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ss.str();
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  // Artifacts travel in stage requests and reports: a build of 64 kernels is several MB.
  args.SetMaxReceiveMessageSize(512 << 20);
  args.SetMaxSendMessageSize(512 << 20);
  // Reconnect quickly after a daemon restart (gRPC's default back-off grows to two minutes).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(o.retry_max)));
  agent->creds_ = std::move(creds);
  agent->channel_args_ = args;
  {
    absl::MutexLock lock(&agent->mu_);
    agent->heartbeat_interval_ = o.heartbeat_interval;
    agent->server_ = o.server;
  }
  return agent;
}

Agent::~Agent() {
  Shutdown();
  // Stage threads end on their own (cancelled); wait for every one before members go away.
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* live) { return *live == 0; }, &live_stage_threads_));
}

void Agent::Log(absl::string_view level, absl::string_view event, absl::string_view fields) {
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      " loom-agent level=", level, " event=", event, fields.empty() ? "" : " ", fields);
  std::lock_guard<std::mutex> lock(log_mu_);
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

void Agent::PrepareContext(grpc::ClientContext& ctx, absl::Duration timeout) const {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  if (!options_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + options_.token);
}

std::pair<std::string, std::shared_ptr<v1::AgentService::Stub>> Agent::Daemon() {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<v1::AgentService::Stub>& stub = stubs_[server_];
  if (stub == nullptr) {
    stub = v1::AgentService::NewStub(grpc::CreateCustomChannel(server_, creds_, channel_args_));
  }
  return {server_, stub};
}

void Agent::CallFailed(const std::string& server, const grpc::ClientContext& ctx,
                       const grpc::Status& status) {
  if (!options_.next_server) return;
  const std::string next = options_.next_server(server, ctx, status);
  if (next == server) return;
  {
    absl::MutexLock lock(&mu_);
    if (server_ != server) return;  // another thread moved on already
    server_ = next;
  }
  Log("warn", "server_switch",
      absl::StrCat("from=", Value(server), " to=", Value(next),
                   " code=", absl::StatusCodeToString(FromGrpc(status).code()),
                   " msg=", Value(status.error_message())));
}

std::string Agent::agent_id() const {
  absl::MutexLock lock(&mu_);
  return agent_id_;
}

AgentStats Agent::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool Agent::SleepUnlessStopping(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  return !mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
}

void Agent::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  stopping_ = true;
  for (auto& [id, r] : running_) r.cancel->store(true);
  if (acquire_ctx_ != nullptr) acquire_ctx_->TryCancel();
}

absl::Status Agent::RegisterOnce() {
  v1::RegisterRequest req;
  req.set_hostname(options_.name);
  req.set_cpu_slots(options_.cpu_slots);
  req.set_version(options_.version);
  for (const v1::DeviceInfo& d : device_infos_) *req.add_devices() = d;
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  PrepareContext(ctx, options_.rpc_timeout);
  auto [daemon, stub] = Daemon();
  grpc::Status s = stub->Register(&ctx, req, &resp);
  if (!s.ok()) CallFailed(daemon, ctx, s);
  if (!s.ok()) return FromGrpc(s);
  if (resp.agent_id().empty()) return absl::InternalError("the daemon returned no agent id");
  absl::Duration interval = resp.heartbeat_interval_ms() > 0
                                ? absl::Milliseconds(resp.heartbeat_interval_ms())
                                : options_.heartbeat_interval;
  {
    absl::MutexLock lock(&mu_);
    agent_id_ = resp.agent_id();
    session_ = resp.session();
    heartbeat_interval_ = interval;
    reregister_ = false;
    ++stats_.registrations;
    stats_.agent_id = agent_id_;
  }
  std::vector<std::string> names;
  for (const v1::DeviceInfo& d : device_infos_) names.push_back(d.name());
  Log("info", "registered",
      absl::StrCat("agent_id=", Value(resp.agent_id()), " server=", Value(daemon),
                   " cpu_slots=", options_.cpu_slots,
                   " devices=", Value(names.empty() ? "none" : absl::StrJoin(names, ",")),
                   " heartbeat_ms=", absl::ToInt64Milliseconds(interval)));
  return absl::OkStatus();
}

absl::Status Agent::RegisterLoop() {
  absl::Duration backoff = options_.retry_initial;
  bool logged = false;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return absl::CancelledError("shutting down");
    }
    absl::Status s = RegisterOnce();
    if (s.ok()) return s;
    grpc::StatusCode code = static_cast<grpc::StatusCode>(s.code());
    // ALREADY_EXISTS: an earlier run of this agent (killed without a goodbye) still holds the
    // credential until the daemon stops hearing from it.
    if (!Transient(code) && code != grpc::StatusCode::ALREADY_EXISTS) {
      Log("error", "register_refused",
          absl::StrCat("code=", absl::StatusCodeToString(s.code()), " msg=", Value(s.message())));
      return absl::Status(s.code(), absl::StrCat("the daemon at ", options_.server,
                                                 " refused this agent: ", s.message()));
    }
    if (!logged) {
      Log("warn", "register_retry",
          absl::StrCat("server=", Value(options_.server),
                       " code=", absl::StatusCodeToString(s.code()), " msg=", Value(s.message())));
      logged = true;
    }
    if (!SleepUnlessStopping(backoff)) return absl::CancelledError("shutting down");
    backoff = std::min(backoff * 2, options_.retry_max);
  }
}

absl::Status Agent::Run() {
  absl::Status registered = RegisterLoop();
  if (!registered.ok()) {
    return registered.code() == absl::StatusCode::kCancelled ? absl::OkStatus() : registered;
  }
  std::thread heartbeat([this] { HeartbeatLoop(); });
  std::thread reporter([this] { ReportLoop(); });

  absl::Status fatal;
  absl::Duration backoff = options_.retry_initial;
  for (;;) {
    {
      // Back-pressure: no new stage while the report buffer is full.
      absl::MutexLock lock(&mu_);
      auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ ||
               static_cast<int>(pending_.size() + running_.size()) < options_.max_pending_reports;
      };
      mu_.Await(absl::Condition(&room));
      if (stopping_) break;
    }
    v1::AcquireStagesRequest req;
    {
      absl::MutexLock lock(&mu_);  // the id and secret of one registration
      req.set_agent_id(agent_id_);
      req.set_session(session_);
    }
    req.set_wait_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(options_.acquire_wait)));
    v1::AcquireStagesResponse resp;
    grpc::ClientContext ctx;
    PrepareContext(ctx, options_.acquire_wait + options_.rpc_timeout);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      acquire_ctx_ = &ctx;
    }
    auto [daemon, stub] = Daemon();
    grpc::Status s = stub->AcquireStages(&ctx, req, &resp);
    if (!s.ok()) CallFailed(daemon, ctx, s);
    {
      absl::MutexLock lock(&mu_);
      acquire_ctx_ = nullptr;
      if (stopping_) break;
    }
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
          s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        fatal = absl::Status(FromGrpc(s).code(),
                             absl::StrCat("the daemon refused this agent: ", s.error_message()));
        Log("error", "acquire_refused", absl::StrCat("msg=", Value(s.error_message())));
        break;
      }
      if (s.error_code() == grpc::StatusCode::NOT_FOUND ||
          s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        absl::MutexLock lock(&mu_);
        // The heartbeat thread registers again, unless it already did since this call started
        // (a second registration of this credential would be refused while the first lives).
        if (req.agent_id() == agent_id_) reregister_ = true;
      }
      if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        if (backoff == options_.retry_initial) {  // once per outage
          Log("warn", "acquire_failed",
              absl::StrCat("code=", absl::StatusCodeToString(FromGrpc(s).code()),
                           " msg=", Value(s.error_message())));
        }
        if (!SleepUnlessStopping(backoff)) break;
        backoff = std::min(backoff * 2, options_.retry_max);
      }
      continue;
    }
    backoff = options_.retry_initial;
    if (!resp.cancelled_lease_ids().empty()) {
      absl::MutexLock lock(&mu_);
      for (const std::string& id : resp.cancelled_lease_ids()) CancelLease(id);
    }
    for (v1::StageRequest& stage : *resp.mutable_stages()) {
      auto cancel = std::make_shared<CancelFlag>(false);
      {
        absl::MutexLock lock(&mu_);
        if (running_.contains(stage.lease_id())) continue;  // granted twice: already running
        running_[stage.lease_id()] = Running{stage, cancel};
        ++live_stage_threads_;
        ++stats_.stages_started;
      }
      Log("info", "stage_start",
          absl::StrCat("lease=", Value(stage.lease_id()), " job=", Value(stage.job_id()),
                       " kind=", tune::WireKindName(stage.kind()), " round=", stage.round(),
                       " cpu_slots=", stage.cpu_slots(), " device=", Value(stage.device())));
      std::thread(&Agent::StageThread, this, std::move(stage), std::move(cancel)).detach();
    }
  }

  Shutdown();
  // Grace: running stages finish (cancelled ones end early) and reports drain.
  const absl::Time deadline = absl::Now() + options_.shutdown_grace;
  {
    absl::MutexLock lock(&mu_);
    auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return live_stage_threads_ == 0 && pending_.empty();
    };
    mu_.AwaitWithDeadline(absl::Condition(&drained), deadline);
    if (live_stage_threads_ > 0 || !pending_.empty()) {
      Log("warn", "shutdown_incomplete",
          absl::StrCat("running=", live_stage_threads_, " unreported=", pending_.size()));
    }
  }
  heartbeat.join();
  reporter.join();
  bool refused;
  {
    absl::MutexLock lock(&mu_);
    refused = !refused_.ok();
  }
  // A refused agent is not the daemon's any more; any other tells it that it leaves.
  if (!refused && fatal.ok()) Deregister();
  Log("info", "stopped", absl::StrCat("agent_id=", Value(agent_id())));
  absl::MutexLock lock(&mu_);
  return refused_.ok() ? fatal : refused_;
}

void Agent::Deregister() {
  const std::string id = agent_id();
  if (id.empty()) return;
  v1::DeregisterRequest req;
  req.set_agent_id(id);
  {
    absl::MutexLock lock(&mu_);
    req.set_session(session_);
  }
  req.set_reason("the agent stopped");
  // Twice at most: the second call goes to the daemon a failed first one pointed at (a standby's
  // redirect, the next of the server list). Past that, the heartbeat timeout takes the agent out.
  grpc::Status s;
  for (int attempt = 0; attempt < 2; ++attempt) {
    v1::DeregisterResponse resp;
    grpc::ClientContext ctx;
    PrepareContext(ctx, std::min(options_.rpc_timeout, absl::Seconds(5)));
    auto [daemon, stub] = Daemon();
    s = stub->Deregister(&ctx, req, &resp);
    if (s.ok()) {
      Log("info", "deregistered",
          absl::StrCat("agent_id=", Value(id), " stages_requeued=", resp.stages_requeued()));
      return;
    }
    CallFailed(daemon, ctx, s);
    if (!Transient(s.error_code())) break;
  }
  Log("warn", "deregister_failed",
      absl::StrCat("code=", absl::StatusCodeToString(FromGrpc(s).code()),
                   " msg=", Value(s.error_message())));
}

void Agent::HeartbeatLoop() {
  bool failing = false;
  for (;;) {
    absl::Duration interval;
    bool reregister;
    {
      absl::MutexLock lock(&mu_);
      interval = heartbeat_interval_;
      reregister = reregister_;
    }
    if (reregister) {
      Log("info", "reregister", "");
      absl::Status s = RegisterLoop();
      if (!s.ok()) {
        // Shutting down, or refused for good (a flagged credential): the agent stops.
        if (s.code() != absl::StatusCode::kCancelled) {
          {
            absl::MutexLock lock(&mu_);
            refused_ = s;
          }
          Shutdown();
        }
        return;
      }
    }
    if (!SleepUnlessStopping(interval)) return;
    v1::HeartbeatRequest req;
    {
      absl::MutexLock lock(&mu_);
      req.set_agent_id(agent_id_);
      req.set_session(session_);
      // Finished but unreported stages still hold their leases.
      for (const auto& [id, r] : running_) req.add_running_lease_ids(id);
      for (const Pending& p : pending_) req.add_running_lease_ids(p.result.lease_id());
    }
    const StageExecutor::CacheCounts cache = executor_->cache_counts();
    req.set_build_cache_hits(cache.hits);
    req.set_build_cache_misses(cache.misses);
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    PrepareContext(ctx, options_.rpc_timeout);
    auto [daemon, stub] = Daemon();
    grpc::Status s = stub->Heartbeat(&ctx, req, &resp);
    if (!s.ok()) CallFailed(daemon, ctx, s);
    if (!s.ok()) {
      if (!failing) {
        Log("warn", "heartbeat_failed",
            absl::StrCat("code=", absl::StatusCodeToString(FromGrpc(s).code()),
                         " msg=", Value(s.error_message())));
      }
      failing = true;
      if (s.error_code() == grpc::StatusCode::NOT_FOUND ||
          s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        absl::MutexLock lock(&mu_);
        if (req.agent_id() == agent_id_) reregister_ = true;
      }
      continue;
    }
    if (failing) Log("info", "heartbeat_ok", "");
    failing = false;
    absl::MutexLock lock(&mu_);
    ++stats_.heartbeats;
    if (resp.reregister() && req.agent_id() == agent_id_) reregister_ = true;
    for (const std::string& id : resp.cancelled_lease_ids()) CancelLease(id);
  }
}

void Agent::CancelLease(const std::string& lease) {
  cancelled_.insert(lease);
  auto it = running_.find(lease);
  if (it == running_.end()) return;
  if (!it->second.cancel->exchange(true)) {
    Log("info", "stage_cancel", absl::StrCat("lease=", Value(lease)));
  }
  executor_->Cancel(lease);
}

namespace {

bool IsDeviceStage(const v1::StageRequest& request) {
  return request.kind() == v1::STAGE_KIND_MEASURE ||
         (request.kind() == v1::STAGE_KIND_SIMULATED && !request.device().empty());
}

// CPU slots a CPU stage takes: what it was granted (a real stage at least one).
int SlotsOf(const v1::StageRequest& request) {
  int need = std::max(0, request.cpu_slots());
  if (request.kind() != v1::STAGE_KIND_SIMULATED) need = std::max(need, 1);
  return need;
}

}  // namespace

bool Agent::AcquireResources(const v1::StageRequest& request, const CancelFlag& cancel,
                             sched::CorePlacer::PlacementId* placement) {
  *placement = 0;
  absl::MutexLock lock(&mu_);
  if (IsDeviceStage(request)) {
    bool ours = std::any_of(options_.executor.devices.begin(), options_.executor.devices.end(),
                            [&](const Device& d) { return d.name == request.device(); });
    if (!ours) return true;  // the executor reports the unknown device
    if (!request.oversubscribed()) {
      auto free = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        auto it = device_users_.find(request.device());
        return stopping_ || cancel.load() || it == device_users_.end() || it->second == 0;
      };
      mu_.Await(absl::Condition(&free));
      if (stopping_ || cancel.load()) return false;
    }
    ++device_users_[request.device()];
    // Before measuring: CPU stages on the device's lent cores move to general slots.
    const int moved = placer_->BeginMeasure(request.device());
    if (moved > 0) {
      Log("info", "vacate_device",
          absl::StrCat("device=", Value(request.device()), " stages_moved=", moved));
    }
    return true;
  }
  if (request.oversubscribed()) {
    *placement = placer_->TakeShared();
    return true;
  }
  const int need = SlotsOf(request);
  auto free = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || cancel.load() || placer_->CanTake(need);
  };
  mu_.Await(absl::Condition(&free));
  if (stopping_ || cancel.load()) return false;
  std::optional<sched::CorePlacer::PlacementId> taken = placer_->Take(need);
  if (!taken.has_value()) return false;  // cannot happen: checked under mu_ just now
  *placement = *taken;
  return true;
}

void Agent::ReleaseResources(const v1::StageRequest& request,
                             sched::CorePlacer::PlacementId placement) {
  absl::MutexLock lock(&mu_);
  if (IsDeviceStage(request)) {
    auto it = device_users_.find(request.device());
    if (it == device_users_.end()) return;
    if (--it->second <= 0) device_users_.erase(it);
    placer_->EndMeasure(request.device());
    return;
  }
  placer_->Release(placement);
}

void Agent::StageThread(const v1::StageRequest& request,
                        const std::shared_ptr<CancelFlag>& cancel) {
  const std::string& lease = request.lease_id();
  sched::CorePlacer::PlacementId placement = 0;
  bool ran = AcquireResources(request, *cancel, &placement);
  v1::StageResult result;
  if (ran) {
    StageHooks hooks;
    if (placement != 0) {
      hooks.enter_thread = [this, placement] { placer_->EnterThread(placement); };
      hooks.compile_started = [this, placement](int pid) {
        placer_->CompileStarted(placement, pid);
      };
    }
    result = executor_->Execute(request, cancel.get(), &hooks);
    ReleaseResources(request, placement);
  }
  const bool abandoned = !ran || cancel->load();
  if (abandoned) {
    Log("info", "stage_abandoned", absl::StrCat("lease=", Value(lease)));
  } else {
    const double secs = static_cast<double>(result.timing().end_unix_micros() -
                                            result.timing().start_unix_micros()) /
                        1e6;
    Log(result.error().empty() ? "info" : "warn", "stage_done",
        absl::StrCat("lease=", Value(lease), " kind=", tune::WireKindName(request.kind()),
                     " secs=", absl::StrFormat("%.3f", secs),
                     result.error().empty() ? "" : absl::StrCat(" error=", Value(result.error()))));
  }
  absl::MutexLock lock(&mu_);
  running_.erase(lease);
  if (abandoned) {
    ++stats_.stages_abandoned;
  } else {
    ++stats_.stages_finished;
    pending_.push_back(Pending{std::move(result), 0});
  }
  --live_stage_threads_;  // last touch of *this: the destructor waits for zero under mu_
}

void Agent::ReportLoop() {
  absl::Duration backoff = options_.retry_initial;
  absl::Time stop_deadline = absl::InfiniteFuture();
  for (;;) {
    v1::ReportStageRequest req;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !pending_.empty() || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) {
        // Deliver what is left, and what running stages still produce, within the grace.
        if (stop_deadline == absl::InfiniteFuture()) {
          stop_deadline = absl::Now() + options_.shutdown_grace;
        }
        auto work_or_drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !pending_.empty() || live_stage_threads_ == 0;
        };
        mu_.AwaitWithDeadline(absl::Condition(&work_or_drained), stop_deadline);
        if (pending_.empty() || absl::Now() >= stop_deadline) return;
      }
      if (cancelled_.contains(pending_.front().result.lease_id())) {
        // The daemon dropped the lease (job cancelled, or requeued after its restart).
        Log("info", "report_abandoned",
            absl::StrCat("lease=", Value(pending_.front().result.lease_id())));
        ++stats_.stages_abandoned;
        pending_.pop_front();
        continue;
      }
      // Stays queued (and heartbeated) until delivered; sent with the id and the secret of the
      // current registration.
      *req.mutable_result() = pending_.front().result;
      req.set_agent_id(agent_id_);
      req.set_session(session_);
    }
    const v1::StageResult& result = req.result();
    v1::ReportStageResponse resp;
    grpc::ClientContext ctx;
    PrepareContext(ctx, options_.rpc_timeout);
    auto [daemon, stub] = Daemon();
    grpc::Status s = stub->ReportStage(&ctx, req, &resp);
    if (!s.ok()) CallFailed(daemon, ctx, s);
    if (s.ok() || !Transient(s.error_code())) {
      backoff = options_.retry_initial;
      absl::MutexLock lock(&mu_);
      if (s.ok() && resp.accepted()) {
        ++stats_.reports_delivered;
      } else {
        ++stats_.reports_rejected;
      }
      pending_.pop_front();
      if (s.ok()) {
        Log(resp.accepted() ? "info" : "warn", resp.accepted() ? "reported" : "report_rejected",
            absl::StrCat("lease=", Value(result.lease_id())));
      } else {
        // The daemon answered and will not take it (bad request, unknown lease): dropping it is
        // the only way forward; the stage is requeued by its lease expiring.
        Log("error", "report_dropped",
            absl::StrCat("lease=", Value(result.lease_id()),
                         " code=", absl::StatusCodeToString(FromGrpc(s).code()),
                         " msg=", Value(s.error_message())));
      }
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      ++stats_.report_retries;
      if (!pending_.empty()) ++pending_.front().attempts;
      if (!pending_.empty() && pending_.front().attempts == 1) {
        Log("warn", "report_retry",
            absl::StrCat("lease=", Value(result.lease_id()),
                         " code=", absl::StatusCodeToString(FromGrpc(s).code()),
                         " pending=", pending_.size()));
      }
    }
    // Keep retrying through shutdown until the grace runs out.
    absl::SleepFor(std::min(backoff, std::max(absl::ZeroDuration(), stop_deadline - absl::Now())));
    backoff = std::min(backoff * 2, options_.retry_max);
  }
}

}  // namespace loom::agent
