// `loom serve`: the gRPC daemon. Locks and opens the state file and its record database (checked
// and paired, state_files.h), builds the JobDriver, and serves loom.v1.JobService (users) and
// loom.v1.AgentService (agents) with bearer-token auth and TLS, plus gRPC's standard health service
// (grpc.health.v1.Health) and server reflection. With `http.listen`, also the web view, /metrics
// and the HTTP probes (http_server.h), under the same tokens and TLS. Without a tokens file, or
// without TLS beyond loopback, it starts only when told `insecure`. On a PostgreSQL state, with
// `standby`, several daemons share one state: one leads (state_store.h's epoch), the others answer
// every call with a redirect to it (client.h: kLeaderMetadataKey) and take over when its lock
// goes or its lease expires; the leader's record writes are fenced by its epoch as its state
// writes are (LeaderFence). Called by cli/serve_command.cc and by in-process tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loom/service/http_server.h"
#include "loom/service/job_driver.h"
#include "loom/service/state_files.h"

namespace grpc {
class Server;
}

namespace loom::service {

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";  // HOST:PORT; port 0 picks a free one (see port())
  // The state file; tuning records go to "<state>.records" (a tune record database that
  // `loom records` and `loom compile --db` read). Or a `postgresql://` URI: state and records in
  // that database (OpenStateStore, tune::OpenRecordStore).
  std::string state_path;
  std::string tokens_path;  // empty: authentication off (every caller is admin "local")
  std::string tls_cert;     // PEM; with tls_key, serve TLS only
  std::string tls_key;
  // Allows no tokens file, and plaintext on a non-loopback address; a warning is logged at start.
  bool insecure = false;
  int64_t max_message_bytes = 256 << 20;  // larger requests: RESOURCE_EXHAUSTED
  // WatchJob streams one user may have open at once (each holds a server thread).
  int max_watches_per_user = 8;
  DriverOptions driver;
  // PostgreSQL states only: when another daemon leads the state, wait as its standby (redirecting
  // every call to it, gRPC health NOT_SERVING, no web view) and take over when its lock goes,
  // instead of refusing to start.
  bool standby = false;
  // PostgreSQL states only: how long the lead's lease lasts unless renewed (StateStoreOptions::
  // lease_timeout). The leader renews it every second (a third of it when shorter); a standby
  // takes over from a leader that has not renewed it for this long (hung, or cut off with its
  // session open).
  absl::Duration lease_timeout = absl::Seconds(5);
  // HOST:PORT that standbys send clients to while this daemon leads; empty: the listen address
  // (its bound port; this host's name for a wildcard host).
  std::string advertise;
  // The web view: off while http.listen is empty. Its TLS files are the gRPC port's (tls_cert,
  // tls_key above); those of `http` are ignored.
  HttpOptions http;
};

// Whether `listen` (HOST:PORT) only accepts connections from this host: 127.0.0.0/8, ::1,
// localhost, or a unix: socket.
bool IsLoopbackAddress(const std::string& listen);

// The address standbys redirect to (ServerOptions::advertise, or the listen address with `port`).
std::string AdvertisedAddress(const ServerOptions& options, int port);

// The records database next to a state file; a PostgreSQL state's own URI.
std::string RecordsPathFor(const std::string& state_path);

class Server {
 public:
  // Opens the state, resumes its jobs, and starts serving. kInvalidArgument for bad options,
  // kUnavailable when the address cannot be bound. A standby returns once it serves redirects; it
  // takes the lead on a thread of its own later (a failure then ends the process with one line).
  // While leading a PostgreSQL state, a lead taken over by another daemon ends the process with
  // one line "loom serve: fatal: ... led by a newer loom serve ...", exit status 3.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  int port() const { return port_; }
  int http_port() const { return http_ ? http_->port() : 0; }  // 0: no web view
  JobDriver& driver() { return *driver_; }                     // not while standing by
  const std::string& advertise() const { return advertise_; }
  // Stops accepting calls, ends long polls and streams, and stops the driver. Idempotent.
  void Shutdown();
  // Blocks until Shutdown() (from another thread or a signal handler thread).
  void Wait();

 private:
  Server() = default;
  // Opens the state (waiting as a standby when `lead.standby` is set) and its records, and builds
  // the driver; serves (Serve) when the port is bound already.
  absl::Status TakeLead(const StateStoreOptions& lead);
  // Starts the driver and the web view, and answers calls.
  absl::Status Serve();
  void Log(const char* event, const std::string& fields) const;

  struct Services;
  ServerOptions options_;
  StateLock lock_;  // released last: no second daemon opens the state before this one is gone
  std::unique_ptr<JobDriver> driver_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpServer> http_;
  int port_ = 0;
  std::string advertise_;
  std::thread takeover_;  // a standby's wait for the lead
  std::thread watchdog_;  // checks the lead every second
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace loom::service
