// `loom serve`: the gRPC daemon. Locks and opens the state file and its record database (checked
// and paired, state_files.h), builds the JobDriver, and serves loom.v1.JobService (users) and
// loom.v1.AgentService (agents) with bearer-token auth and TLS, plus gRPC's standard health service
// (grpc.health.v1.Health) and server reflection. With `http.listen`, also the web view, /metrics
// and the HTTP probes (http_server.h), under the same tokens and TLS. Without a tokens file, or
// without TLS beyond loopback, it starts only when told `insecure`. Called by
// cli/serve_command.cc and by in-process tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
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
  // The web view: off while http.listen is empty. Its TLS files are the gRPC port's (tls_cert,
  // tls_key above); those of `http` are ignored.
  HttpOptions http;
};

// Whether `listen` (HOST:PORT) only accepts connections from this host: 127.0.0.0/8, ::1,
// localhost, or a unix: socket.
bool IsLoopbackAddress(const std::string& listen);

// The records database next to a state file; a PostgreSQL state's own URI.
std::string RecordsPathFor(const std::string& state_path);

class Server {
 public:
  // Opens the state, resumes its jobs, and starts serving. kInvalidArgument for bad options,
  // kUnavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  int port() const { return port_; }
  int http_port() const { return http_ ? http_->port() : 0; }  // 0: no web view
  JobDriver& driver() { return *driver_; }
  // Stops accepting calls, ends long polls and streams, and stops the driver. Idempotent.
  void Shutdown();
  // Blocks until Shutdown() (from another thread or a signal handler thread).
  void Wait();

 private:
  Server() = default;
  struct Services;
  StateLock lock_;  // released last: no second daemon opens the state before this one is gone
  std::unique_ptr<JobDriver> driver_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpServer> http_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace loom::service
