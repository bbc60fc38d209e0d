// `loom serve --listen HOST:PORT --state FILE|URI --tokens FILE [--tls-cert C --tls-key K]
// [--http HOST:PORT] [--standby] [--lease-timeout S] [--advertise HOST:PORT]`: the scheduler daemon
// (loom/service/server.h), with its web view, /metrics and HTTP probes on --http
// (loom/service/http_server.h). Without --tokens, or without TLS beyond loopback, it starts only
// with --insecure. Runs until SIGINT/SIGTERM; restarting on the same state file resumes every job.
// Structured key=value log lines go to stderr.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "loom/cli/commands.h"
#include "loom/records/postgres.h"
#include "loom/service/server.h"

namespace loom::cli {
namespace {

struct ServeOptions {
  std::string listen = "127.0.0.1:7070";
  std::string state;
  std::string tokens;
  std::string tls_cert;
  std::string tls_key;
  std::string http;
  int http_threads = 8;
  std::string policy = "interleaved";
  double heartbeat_timeout = 10;
  int max_attempts = 3;
  int build_slots = 2;
  int64_t max_model_bytes = 64 << 20;
  int64_t max_message_bytes = 256 << 20;
  int64_t max_fold_bytes = 64 << 20;
  int64_t max_fold_total_bytes = 256 << 20;
  service::MeasureCaps caps;
  int max_watches_per_user = 8;
  bool insecure = false;
  bool quiet = false;
  bool standby = false;
  double lease_timeout = 5;
  std::string advertise;
};

void RunServe(const ServeOptions& o) {
  service::ServerOptions so;
  so.listen = o.listen;
  so.state_path = o.state;
  so.tokens_path = o.tokens;
  so.tls_cert = o.tls_cert;
  so.tls_key = o.tls_key;
  so.insecure = o.insecure;
  so.standby = o.standby;
  so.lease_timeout = absl::Seconds(o.lease_timeout);
  so.advertise = o.advertise;
  so.max_message_bytes = o.max_message_bytes;
  so.max_watches_per_user = o.max_watches_per_user;
  so.http.listen = o.http;
  so.http.threads = o.http_threads;
  so.driver.policy = o.policy;
  so.driver.heartbeat_timeout = absl::Seconds(o.heartbeat_timeout);
  so.driver.max_attempts = o.max_attempts;
  so.driver.build_slots = o.build_slots;
  so.driver.max_model_bytes = o.max_model_bytes;
  so.driver.max_fold_bytes = o.max_fold_bytes;
  so.driver.max_fold_total_bytes = o.max_fold_total_bytes;
  so.driver.measure_caps = o.caps;
  so.driver.log_to_stderr = !o.quiet;

  // Signals are taken by a waiting thread (sigwait), never by an async handler.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto server = service::Server::Start(so);
  FailIfError(server.status());
  std::fprintf(stderr,
               "ts=%s event=serving listen=%s port=%d state=%s auth=%s tls=%s http_port=%d\n",
               absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
               o.listen.c_str(), (*server)->port(), tune::RedactUri(o.state).c_str(),
               o.tokens.empty() ? "off" : "tokens", o.tls_cert.empty() ? "off" : "on",
               (*server)->http_port());
  std::fflush(stderr);
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "ts=%s event=shutdown signal=%d\n",
                 absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
                 sig);
    (*server)->Shutdown();
  });
  (*server)->Wait();
  waiter.join();
}

}  // namespace

void RegisterServeCommand(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Run the scheduler daemon (gRPC) for agents and users");
  cmd->add_option("--listen", o->listen, "HOST:PORT to listen on (port 0: any free port)");
  cmd->add_option("--state", o->state,
                  "State file (SQLite; records go to FILE.records), or a postgresql:// URI (state "
                  "and records in that database)")
      ->required();
  cmd->add_option("--tokens", o->tokens,
                  "Tokens file: lines 'TOKEN NAME [user|admin|agent] [max_priority=N max_jobs=N "
                  "max_device_seconds=S]' (agents: one token each, NAME is the agent)");
  cmd->add_option("--tls-cert", o->tls_cert, "PEM certificate (serve TLS with --tls-key)");
  cmd->add_option("--tls-key", o->tls_key, "PEM private key");
  cmd->add_option("--http", o->http,
                  "HOST:PORT of the web view, /metrics, /healthz and /readyz (port 0: any free "
                  "port; HTTPS with --tls-cert; off when not given)");
  cmd->add_option("--http-threads", o->http_threads, "Web requests served at once")
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--insecure", o->insecure,
                "Start without --tokens (no authentication) or without TLS beyond loopback");
  cmd->add_option("--policy", o->policy, "interleaved | predictive | sequential | uncontrolled")
      ->check(CLI::IsMember({"interleaved", "predictive", "sequential", "uncontrolled"}));
  cmd->add_option("--heartbeat-timeout", o->heartbeat_timeout,
                  "Seconds without a heartbeat before an agent is lost and its stages requeued")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--max-attempts", o->max_attempts, "Tries per stage before its job fails")
      ->check(CLI::Range(1, 100));
  cmd->add_option("--build-slots", o->build_slots, "CPU slots a build stage asks for")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--max-model-bytes", o->max_model_bytes, "Largest ONNX model accepted")
      ->check(CLI::Range(int64_t{1}, (int64_t{1} << 31) - 1));
  cmd->add_option("--max-fold-bytes", o->max_fold_bytes,
                  "Largest tensor constant folding may build for an uploaded model")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--max-fold-total-bytes", o->max_fold_total_bytes,
                  "Bytes constant folding may build in total for an uploaded model")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--max-measure-repeat", o->caps.max_repeat,
                  "Most timed repeats per candidate a job may ask for")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--max-measure-min-repeat-ms", o->caps.max_min_repeat_ms,
                  "Longest repeat (ms) a job may ask for")
      ->check(CLI::Range(1, 60000));
  cmd->add_option("--max-measure-number", o->caps.max_number,
                  "Most runs per repeat a job may start from")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--max-measure-run-timeout", o->caps.max_run_timeout_s,
                  "Longest run timeout (s) a job may ask for")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--max-measure-batch", o->caps.max_batch,
                  "Most candidates per round (batch size) a job may ask for")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--max-watches-per-user", o->max_watches_per_user,
                  "Watch streams one user may have open at once")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--max-message-bytes", o->max_message_bytes, "Largest gRPC request accepted")
      ->check(CLI::Range(int64_t{1024}, (int64_t{1} << 31) - 1));
  cmd->add_flag("--standby", o->standby,
                "With a postgresql:// --state another daemon leads: wait as its standby "
                "(redirecting every call to it) and take over when it dies, instead of refusing");
  cmd->add_option("--lease-timeout", o->lease_timeout,
                  "With a postgresql:// --state: seconds the lead's lease lasts unless renewed "
                  "(every second); a standby takes over from a leader hung that long")
      ->check(CLI::Range(0.5, 600.0));
  cmd->add_option("--advertise", o->advertise,
                  "HOST:PORT standbys send clients to while this daemon leads (default: the "
                  "--listen address, this host's name for a wildcard host)");
  cmd->add_flag("--quiet", o->quiet, "No structured log lines on stderr");
  cmd->callback([o] { RunServe(*o); });
}

}  // namespace loom::cli
