// The agent process: registers this host's CPU slots and devices with the scheduler daemon
// (loom.v1.AgentService), keeps a heartbeat, long-polls for leased stages, runs them through the
// StageExecutor (CPU stages concurrently up to the CPU slots, placed on cores by the CorePlacer;
// one stage at a time per device; both at once when the daemon oversubscribes) and
// reports each result, retrying while the daemon is away. Holds no job state. `loom agent`
// (cli/agent_command.cc) builds AgentOptions from flags and calls Run until SIGTERM/SIGINT.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "loom/agent/stage_executor.h"
#include "loom/sched/core_placer.h"
#include "loom/v1/agent.grpc.pb.h"
#include "loom/v1/version.h"

namespace loom::agent {

struct AgentOptions {
  std::string server;  // "HOST:PORT" of `loom serve`: the daemon called first
  // After a call to `tried` failed with `status` (its context holds the trailing metadata): the
  // daemon to call from now on; `tried` to stay. `loom agent` sets it to service::ServerList's
  // Failover (service/client.h, the one resolver of clients and agents: a standby's redirect, or
  // the next daemon of --server's list); unset: always `server`. Called from several threads.
  std::function<std::string(const std::string& tried, const grpc::ClientContext& ctx,
                            const grpc::Status& status)>
      next_server{};
  // Sent as `authorization: Bearer <token>` on every call; empty: no header. The daemon binds
  // this agent's id to it: one agent per token.
  std::string token{};
  // PEM file of the CA that signed the daemon's certificate; empty: plaintext (loopback, tests).
  std::string tls_ca_file{};
  std::string name{};  // registered hostname; empty: this host's name
  int cpu_slots = 1;   // CPU slots offered (>= 0; a device-only agent offers 0)
  // The executor's devices are registered; its other options govern the stages. CPU stages are
  // pinned per slot to executor.cpu_cores (round robin), as the embedded engine pins them.
  ExecutorOptions executor{};
  // Each device lends its cores (one CPU slot per core, DeviceInfo.lends_cpu_slots) to CPU stages
  // while it does not measure, as engine::MachineLayout::device_shares_cores; a measurement moves
  // the CPU stages on its cores to general slots first. Needs executor.cpu_cores when cpu_slots >
  // 0. `loom agent` turns it on by default (--lend-device-cores).
  bool lend_device_cores = false;
  std::string version = v1::kLoomVersion;  // the daemon refuses another release

  // AcquireStages long-poll wait asked of the daemon (it may cap it).
  absl::Duration acquire_wait = absl::Seconds(10);
  // Deadline of the short calls (Register, Heartbeat, ReportStage).
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Heartbeat interval until the daemon says otherwise (RegisterResponse).
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // Retry back-off while the daemon is unreachable: doubles from `retry_initial` to `retry_max`.
  absl::Duration retry_initial = absl::Milliseconds(100);
  absl::Duration retry_max = absl::Seconds(2);
  // Finished results kept while they cannot be reported. When full, no new stage is acquired
  // until one is delivered (no finished result is dropped for lack of room).
  int max_pending_reports = 256;
  // On shutdown, how long Run waits for running stages and undelivered reports before it returns
  // (their leases then expire on the daemon and the stages are requeued).
  absl::Duration shutdown_grace = absl::Seconds(10);
  // Receives the structured log lines ("event=registered agent_id=..."); empty: stderr.
  std::function<void(const std::string&)> log{};
};

// Counters for tests and the status line.
struct AgentStats {
  int64_t registrations = 0;
  int64_t heartbeats = 0;  // answered
  int64_t stages_started = 0;
  int64_t stages_finished = 0;
  int64_t stages_abandoned = 0;  // cancelled by the daemon or by shutdown; not reported
  int64_t reports_delivered = 0;
  int64_t reports_rejected = 0;  // answered accepted=false (lease gone)
  int64_t report_retries = 0;    // failed attempts that were retried
  std::string agent_id;
};

class Agent {
 public:
  // kInvalidArgument for bad options (no server, negative slots, a bad device, zero buffer);
  // kFailedPrecondition when the TLS CA file cannot be read or the executor cannot start.
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  ~Agent();  // Shutdown() and join

  // Registers (retrying while the daemon is unreachable, or while an earlier run of this agent
  // still holds its credential: ALREADY_EXISTS), then serves stages until Shutdown(). Returns OK
  // after a clean shutdown; an error when the daemon refuses this agent for good
  // (UNAUTHENTICATED, PERMISSION_DENIED such as a flagged credential, INVALID_ARGUMENT,
  // FAILED_PRECONDITION such as another Loom version), at the first registration or a later one.
  // Call once.
  absl::Status Run();

  // Asks Run to return: stops acquiring, cancels running stages (simulated ones stop at once,
  // real ones finish their current step and are dropped), flushes reports within the grace, then
  // deregisters (the daemon requeues the stages still held at once, not after its heartbeat
  // timeout).
  // Thread-safe; callable from a signal-watching thread, not from a signal handler.
  void Shutdown();

  AgentStats stats() const;

 private:
  explicit Agent(AgentOptions options) : options_(std::move(options)) {}

  struct Running {
    v1::StageRequest request;
    std::shared_ptr<CancelFlag> cancel;
  };
  struct Pending {
    v1::StageResult result;
    int attempts = 0;
  };

  absl::Status RegisterLoop();  // until registered, refused for good, or shutdown
  absl::Status RegisterOnce();
  void HeartbeatLoop();
  void ReportLoop();
  // Tells the daemon this agent stops (Deregister): it requeues the stages still held at once.
  void Deregister();
  // Runs on its own detached thread, which owns `request` and `cancel` (std::thread copies them).
  void StageThread(const v1::StageRequest& request, const std::shared_ptr<CancelFlag>& cancel);
  // Waits for the stage's resources (CPU slots or its device; an oversubscribed stage takes them
  // at once); false when shutting down or cancelled meanwhile. A CPU stage gets its placement.
  bool AcquireResources(const v1::StageRequest& request, const CancelFlag& cancel,
                        sched::CorePlacer::PlacementId* placement);
  void ReleaseResources(const v1::StageRequest& request, sched::CorePlacer::PlacementId placement);
  void PrepareContext(grpc::ClientContext& ctx, absl::Duration timeout) const;
  // The daemon calls go to now, and its stub (a channel per daemon, made on first use).
  std::pair<std::string, std::shared_ptr<v1::AgentService::Stub>> Daemon();
  // After a call to `server` failed: moves on to the daemon options_.next_server names.
  void CallFailed(const std::string& server, const grpc::ClientContext& ctx,
                  const grpc::Status& status);
  // The daemon revoked `lease` (or no longer knows it): abandon it, killing its processes.
  void CancelLease(const std::string& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string agent_id() const;
  void Log(absl::string_view level, absl::string_view event, absl::string_view fields);
  // Sleeps up to `d`, returning early (false) when shutting down.
  bool SleepUnlessStopping(absl::Duration d);

  AgentOptions options_;
  std::unique_ptr<StageExecutor> executor_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  grpc::ChannelArguments channel_args_;
  std::vector<v1::DeviceInfo> device_infos_;

  mutable absl::Mutex mu_;
  std::string server_ ABSL_GUARDED_BY(mu_);  // the daemon calls go to
  std::map<std::string, std::shared_ptr<v1::AgentService::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string agent_id_ ABSL_GUARDED_BY(mu_);
  // RegisterResponse.session of that registration: shown in every call that names the agent.
  std::string session_ ABSL_GUARDED_BY(mu_);
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_);
  bool reregister_ ABSL_GUARDED_BY(mu_) = false;  // the daemon forgot us: Register again
  absl::Status refused_ ABSL_GUARDED_BY(mu_);     // a re-registration refused for good
  std::map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);  // by lease id
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);             // results to report, in order
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);         // leases the daemon dropped
  // CPU slots and lent device cores. Taken and released under mu_ (so waiters re-check), its
  // threads and compilers registered from stage threads without it.
  std::unique_ptr<sched::CorePlacer> placer_;
  std::map<std::string, int> device_users_ ABSL_GUARDED_BY(mu_);  // measurements running
  int live_stage_threads_ ABSL_GUARDED_BY(mu_) = 0;
  AgentStats stats_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* acquire_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // to cancel the long poll

  std::mutex log_mu_;
  std::vector<std::thread> stage_threads_;  // touched by Run's thread only
};

}  // namespace loom::agent
