// `loom serve --http HOST:PORT`: the daemon's read-only web view and its probes, on cpp-httplib.
// Pages (jobs, one job, devices and agents, scheduler) are rendered by http_pages.h from
// snapshots the JobDriver copies under its lock (JobDriver::View/Detail), so a slow client never
// holds the scheduler; /metrics and the admins' pages share one snapshot, rebuilt at most once a
// second (JobDriver::SharedView), the jobs page one per viewer (SharedJobsView), and each is drawn
// once per snapshot: a poll of an unchanged page (If-None-Match: its ETag) gets 304. Started by
// Server::Start (server.h) beside the gRPC port; tested in http_server_test.cc.
//
// Auth: the gRPC tokens (auth.h). A browser posts its token to /login and gets it back as an
// HttpOnly, SameSite=Strict cookie (Secure under TLS); scripts send `Authorization: Bearer`. A
// missing or wrong token gets 401 and the login page. /metrics needs an admin token (Prometheus
// scrapes with a bearer token); /healthz and /readyz are open (they say only "ok"/"ready").
// Nothing changes state except the login cookie, so there is nothing to forge across sites.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "loom/service/auth.h"
#include "loom/service/job_driver.h"

namespace httplib {
class Server;
}

namespace loom::service {

struct HttpOptions {
  std::string listen;    // HOST:PORT; port 0 picks a free one (see port())
  std::string tls_cert;  // PEM files; both set: HTTPS only
  std::string tls_key;
  int threads = 8;      // requests served at once
  int max_queued = 64;  // accepted connections waiting for a thread; beyond, accept waits
  int64_t max_body_bytes = 16 << 10;  // larger request bodies: 413
  int timeout_seconds = 5;            // read and write timeouts per request, keep-alive idle
  absl::Duration gantt_window = absl::Minutes(10);  // default span of the devices page
};

// `listen` ("HOST:PORT", "[::1]:PORT") split into host and port; kInvalidArgument naming --http
// when it is not that, or the port is not 0..65535.
absl::StatusOr<std::pair<std::string, int>> ParseHttpListen(const std::string& listen);

class HttpServer {
 public:
  // Binds and starts serving on its own threads. `driver` and `tokens` must outlive the server.
  // kInvalidArgument for a bad listen address or TLS files, kUnavailable when it cannot bind.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           JobDriver* driver,
                                                           const TokenTable* tokens);
  ~HttpServer();

  int port() const { return port_; }
  // Bodies drawn since Start: a shared page (jobs, devices, scheduler, /metrics, and their JSON)
  // is drawn once per snapshot however many readers ask (DriverView::version); one job's page
  // per request.
  int64_t draws() const;
  // Stops accepting and waits for the serving thread. Idempotent.
  void Stop();

 private:
  HttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace loom::service
