#include "loom/service/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "loom/base/chart.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "loom/service/http_pages.h"
#include "nlohmann/json.hpp"

namespace loom::service {
namespace {

constexpr char kCookie[] = "loom_token";

// A fixed set of threads with a bounded queue: when `max_queued` connections wait, the accept
// loop waits too (the kernel's backlog holds further clients), so a flood of connections costs
// neither threads nor memory.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int threads, int max_queued) : max_queued_(static_cast<size_t>(max_queued)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queue_.size() < max_queued_ || shutdown_; });
    queue_.push_back(std::move(fn));
    ready_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !queue_.empty() || shutdown_; });
        if (queue_.empty()) return;  // shut down and drained
        fn = std::move(queue_.front());
        queue_.pop_front();
        space_.notify_one();
      }
      fn();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::function<void()>> queue_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

// Tokens that may travel in a cookie unchanged (RFC 6265 cookie-octets, less a few).
bool CookieSafe(const std::string& token) {
  if (token.empty() || token.size() > 512) return false;
  return std::all_of(token.begin(), token.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
           c == '~' || c == '+' || c == '/' || c == '=';
  });
}

// The value of cookie `name` in a Cookie header ("a=1; loom_token=x").
std::string CookieValue(const std::string& header, const std::string& name) {
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::StartsWith(part, name) && part.size() > name.size() && part[name.size()] == '=') {
      return std::string(part.substr(name.size() + 1));
    }
  }
  return "";
}

void SecurityHeaders(httplib::Response& res) {
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                 "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                 "frame-ancestors 'none'; base-uri 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("Cache-Control", "no-store");
}

// A strong entity tag of `body`: its FNV-1a hash, quoted.
std::string ETagOf(std::string_view body) {
  return absl::StrFormat("\"%016x\"", graph::StableHash(body));
}

// A body drawn from one shared snapshot (DriverView::version), and its entity tag: a strong
// ETag of the bytes, so that a poll of an unchanged page (If-None-Match) is answered 304. A page's
// fragment also serves its JSON (FragmentJsonPiece), streamed from `body`: only the size is kept.
struct Drawn {
  int64_t version = 0;
  std::string body;
  std::string etag;
  size_t json_size = 0;  // FragmentJsonSize(body) of a fragment; 0 for other bodies
};

// What the readers of one snapshot share: each page drawn once per snapshot, whoever asks and
// however often. Keys are bounded: a fixed set of pages, 60 Gantt windows, the jobs page per
// viewer (the tokens file's users).
class DrawCache {
 public:
  // The body of page `key` for snapshot `version`: the one drawn before, or `draw()` now; a
  // `fragment` with the size of its JSON.
  std::shared_ptr<const Drawn> Get(const std::string& key, int64_t version,
                                   const std::function<std::string()>& draw, bool fragment) {
    Slot* slot;
    {
      absl::MutexLock lock(&mu_);
      std::unique_ptr<Slot>& s = slots_[key];
      if (s == nullptr) s = std::make_unique<Slot>();
      slot = s.get();
    }
    // One draw per page and snapshot: readers of the same page wait for it, other pages do not.
    absl::MutexLock lock(&slot->mu);
    if (slot->drawn == nullptr || slot->drawn->version != version) {
      slot->drawn = nullptr;  // not kept while its successor is drawn
      auto d = std::make_shared<Drawn>();
      d->version = version;
      d->body = draw();
      d->etag = ETagOf(d->body);
      if (fragment) d->json_size = FragmentJsonSize(d->body);
      slot->drawn = std::move(d);
      draws_.fetch_add(1, std::memory_order_relaxed);
    }
    return slot->drawn;
  }
  int64_t draws() const { return draws_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    absl::Mutex mu;
    std::shared_ptr<const Drawn> drawn ABSL_GUARDED_BY(mu);
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> draws_{0};
};

// Sets `d`'s ETag on `res`; true (and 304, no body) when the client holds these bytes already
// (If-None-Match names the ETag).
bool NotModified(const httplib::Request& req, httplib::Response& res, const Drawn& d) {
  res.set_header("ETag", d.etag);
  for (absl::string_view tag : absl::StrSplit(req.get_header_value("If-None-Match"), ',')) {
    if (absl::StripAsciiWhitespace(tag) == d.etag) {
      res.status = 304;
      return true;
    }
  }
  return false;
}

// Sends `d` with its ETag, or 304 (NotModified). The bytes are streamed from `d` itself, neither
// copied nor compressed: cpp-httplib compresses a plain body for every request that accepts it,
// with brotli at its slowest quality when the client offers "br" (browsers do), which for a page
// drawn once per snapshot would cost the daemon more than drawing it.
void SendDrawn(const httplib::Request& req, httplib::Response& res, std::shared_ptr<const Drawn> d,
               const char* content_type) {
  if (NotModified(req, res, *d)) return;
  const size_t size = d->body.size();
  res.set_content_provider(
      size, content_type,
      [d = std::move(d)](size_t offset, size_t length, httplib::DataSink& sink) {
        return sink.write(d->body.data() + offset, length);
      });
}

// Sends the JSON of fragment `d` ({"html": ...}, FragmentJsonPiece) with the fragment's ETag, or
// 304, as SendDrawn does: encoded piece by piece while it is written, so that no escaped copy of
// a page (a devices page is megabytes at a thousand jobs) is built or kept.
void SendFragmentJson(const httplib::Request& req, httplib::Response& res,
                      std::shared_ptr<const Drawn> d) {
  if (NotModified(req, res, *d)) return;
  struct Stream {
    std::shared_ptr<const Drawn> d;
    size_t next = 0;      // the fragment's bytes encoded so far
    std::string piece;    // the newest piece
    size_t piece_at = 0;  // its offset in the JSON
  };
  auto s = std::make_shared<Stream>(Stream{.d = std::move(d)});
  res.set_content_provider(s->d->json_size, "application/json",
                           [s](size_t offset, size_t length, httplib::DataSink& sink) {
                             const std::string& body = s->d->body;
                             if (offset < s->piece_at)
                               *s = Stream{.d = s->d};  // asked to go back: from the start
                             while (offset >= s->piece_at + s->piece.size()) {
                               if (s->piece_at + s->piece.size() > 0 && s->next >= body.size())
                                 return false;
                               s->piece_at += s->piece.size();
                               s->piece.clear();
                               s->next = FragmentJsonPiece(body, s->next, &s->piece);
                             }
                             const size_t at = offset - s->piece_at;
                             return sink.write(s->piece.data() + at,
                                               std::min(length, s->piece.size() - at));
                           });
}

int HttpCode(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    default:
      return 500;
  }
}

}  // namespace

struct HttpServer::Impl {
  HttpOptions options;
  JobDriver* driver = nullptr;
  const TokenTable* tokens = nullptr;
  bool tls = false;

  // The caller: a bearer token first, else the login cookie.
  absl::StatusOr<Principal> Who(const httplib::Request& req) const {
    if (req.has_header("Authorization")) {
      return tokens->Authenticate(req.get_header_value("Authorization"));
    }
    const std::string cookie = CookieValue(req.get_header_value("Cookie"), kCookie);
    if (cookie.empty() && tokens->open()) return tokens->Authenticate("");
    if (cookie.empty()) {
      return absl::UnauthenticatedError("sign in with a token from the daemon's tokens file");
    }
    return tokens->Authenticate(absl::StrCat("Bearer ", cookie));
  }

  void Html(httplib::Response& res, int code, std::string body) const {
    SecurityHeaders(res);
    res.status = code;
    res.set_content(std::move(body), "text/html; charset=utf-8");
  }
  void Refuse(httplib::Response& res, const absl::Status& s, bool json) const {
    SecurityHeaders(res);
    const int code = HttpCode(s);
    if (json) {
      res.status = code;
      res.set_content(nlohmann::json{{"error", std::string(s.message())}}.dump(),
                      "application/json");
    } else if (code == 401) {
      Html(res, 401, LoginPageHtml(s.message()));
    } else {
      Html(res, code,
           PageHtml({.title = "error",
                     .fragment = absl::StrCat("<h1>", code, "</h1><p class=\"error\">",
                                              base::XmlEscape(std::string(s.message())), "</p>")}));
    }
  }

  // A page's fragment (the contents of <main>) for `page` ("jobs", "job/j3", "devices",
  // "scheduler") and its title: the shared pages are drawn once per snapshot (DrawCache), one
  // job's page per request (its `version` is 0).
  struct Fragment {
    std::shared_ptr<const Drawn> html;
    std::string title;
  };
  absl::StatusOr<Fragment> PageFragment(const Principal& who, const std::string& page,
                                        const httplib::Request& req) {
    if (absl::StartsWith(page, "job/")) {
      const std::string id = page.substr(4);
      auto d = driver->Detail(who, id);
      if (!d.ok()) return d.status();
      auto drawn = std::make_shared<Drawn>();
      drawn->body = JobFragment(*d);
      drawn->etag = ETagOf(drawn->body);
      drawn->json_size = FragmentJsonSize(drawn->body);
      return Fragment{std::move(drawn), absl::StrCat("job ", id)};
    }
    if (page == "jobs") {
      // The caller's newest jobs, as every reader who sees the same jobs shares them.
      auto view = driver->SharedJobsView(who);
      if (!view.ok()) return view.status();
      const std::string key = absl::StrCat("jobs:", who.admin() ? "" : who.user);
      return Fragment{cache.Get(
                          key, (*view)->version, [&] { return JobsFragment(**view); }, true),
                      "jobs"};
    }
    if (page != "devices" && page != "scheduler") {
      return absl::NotFoundError(absl::StrCat("no page '", page.substr(0, 64), "'"));
    }
    if (!who.admin()) {
      return absl::PermissionDeniedError(
          absl::StrCat("the ", page, " page shows every user's work: it needs an admin token"));
    }
    DevicesOptions devices{.window = options.gantt_window};
    if (req.has_param("minutes")) {
      int minutes = 0;
      if (!absl::SimpleAtoi(req.get_param_value("minutes"), &minutes) || minutes < 1 ||
          minutes > 60) {
        return absl::InvalidArgumentError("minutes must be a whole number from 1 to 60");
      }
      devices.window = absl::Minutes(minutes);
    }
    // Admins' pages: the snapshot every reader shares (at most a second old).
    auto view = driver->SharedView(who);
    if (!view.ok()) return view.status();
    if (page == "devices") {
      const std::string key = absl::StrCat("devices?", absl::ToInt64Seconds(devices.window), "s");
      return Fragment{
          cache.Get(
              key, (*view)->version, [&] { return DevicesFragment(**view, devices); }, true),
          "devices"};
    }
    return Fragment{
        cache.Get(
            "scheduler", (*view)->version, [&] { return SchedulerFragment(**view); }, true),
        "scheduler"};
  }

  void Page(const httplib::Request& req, httplib::Response& res, const std::string& page) {
    auto who = Who(req);
    if (!who.ok()) return Refuse(res, who.status(), false);
    auto f = PageFragment(*who, page, req);
    if (!f.ok()) return Refuse(res, f.status(), false);
    std::string url = absl::StrCat("/api/fragment/", page);
    if (req.has_param("minutes")) {
      absl::StrAppend(&url, "?minutes=", req.get_param_value("minutes"));
    }
    const std::string active = absl::StartsWith(page, "job") ? "jobs" : page;
    Html(res, 200,
         PageHtml({.title = f->title,
                   .active = active,
                   .fragment = f->html->body,
                   .fragment_url = url,
                   .user = who->user}));
  }

  // The fragment as JSON ({"html": ...}) for the page's script, with the fragment's ETag: a poll
  // of an unchanged page gets 304 and no body; the JSON is streamed from the drawn fragment.
  void Api(const httplib::Request& req, httplib::Response& res, const std::string& page) {
    auto who = Who(req);
    if (!who.ok()) return Refuse(res, who.status(), true);
    auto f = PageFragment(*who, page, req);
    if (!f.ok()) return Refuse(res, f.status(), true);
    SecurityHeaders(res);
    SendFragmentJson(req, res, std::move(f->html));
  }

  DrawCache cache;
};

absl::StatusOr<std::pair<std::string, int>> ParseHttpListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http '", listen, "' is not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              JobDriver* driver,
                                                              const TokenTable* tokens) {
  LOOM_ASSIGN_OR_RETURN(auto address, ParseHttpListen(options.listen));
  const auto& [host, port] = address;
  if (options.threads < 1 || options.max_queued < 1 || options.max_body_bytes < 1 ||
      options.timeout_seconds < 1) {
    return absl::InvalidArgumentError("http threads, queue, body size and timeout must be >= 1");
  }
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->impl_ = std::make_unique<Impl>();
  Impl* impl = s->impl_.get();
  impl->options = options;
  impl->driver = driver;
  impl->tokens = tokens;
  if (!options.tls_cert.empty()) {
    auto ssl =
        std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(), options.tls_key.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("--tls-cert '", options.tls_cert,
                                                     "' and --tls-key do not make a TLS server"));
    }
    s->server_ = std::move(ssl);
    impl->tls = true;
  } else {
    s->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& svr = *s->server_;
  const int threads = options.threads, queued = options.max_queued;
  svr.new_task_queue = [threads, queued] { return new BoundedPool(threads, queued); };
  svr.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  svr.set_read_timeout(options.timeout_seconds, 0);
  svr.set_write_timeout(options.timeout_seconds, 0);
  svr.set_keep_alive_timeout(options.timeout_seconds);
  svr.set_keep_alive_max_count(100);
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    SecurityHeaders(res);
    res.set_content(absl::StrCat("HTTP ", res.status, "\n"), "text/plain; charset=utf-8");
  });
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content("500 internal error\n", "text/plain; charset=utf-8");
      });

  svr.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain; charset=utf-8");
  });
  svr.Get("/readyz", [impl](const httplib::Request&, httplib::Response& res) {
    const bool ready = impl->driver->Running();
    res.status = ready ? 200 : 503;
    res.set_content(ready ? "ready\n" : "not ready: the scheduler loop is not running\n",
                    "text/plain; charset=utf-8");
  });
  svr.Get("/metrics", [impl](const httplib::Request& req, httplib::Response& res) {
    auto who = impl->Who(req);
    if (!who.ok()) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer realm=\"loom\"");
      res.set_content(absl::StrCat(who.status().message(), "\n"), "text/plain; charset=utf-8");
      return;
    }
    if (!who->admin()) {
      res.status = 403;
      res.set_content("/metrics needs an admin token\n", "text/plain; charset=utf-8");
      return;
    }
    // The shared snapshot (at most a second old), built from the driver's counters, drawn once.
    auto view = impl->driver->SharedView(*who);
    if (!view.ok()) return impl->Refuse(res, view.status(), true);
    SendDrawn(req, res,
              impl->cache.Get(
                  "metrics", (*view)->version, [&] { return MetricsText(**view); }, false),
              "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Get("/assets/app.js", [](const httplib::Request&, httplib::Response& res) {
    SecurityHeaders(res);
    res.set_content(std::string(AppScript()), "text/javascript; charset=utf-8");
  });
  svr.Get("/assets/app.css", [](const httplib::Request&, httplib::Response& res) {
    SecurityHeaders(res);
    res.set_content(std::string(AppStyle()), "text/css; charset=utf-8");
  });
  svr.Get("/login", [impl](const httplib::Request&, httplib::Response& res) {
    impl->Html(res, 200, LoginPageHtml(""));
  });
  svr.Post("/login", [impl](const httplib::Request& req, httplib::Response& res) {
    httplib::Params form;
    httplib::detail::parse_query_text(req.body, form);
    auto it = form.find("token");
    const std::string token = it == form.end() ? "" : it->second;
    if (!CookieSafe(token)) {
      return impl->Html(res, 401,
                        LoginPageHtml(token.empty() ? "give a token"
                                                    : "this token cannot be kept in a cookie; "
                                                      "send it as Authorization: Bearer"));
    }
    auto who = impl->tokens->Authenticate(absl::StrCat("Bearer ", token));
    if (!who.ok()) return impl->Html(res, 401, LoginPageHtml(who.status().message()));
    if (who->role == Role::kAgent) {
      return impl->Html(res, 403, LoginPageHtml("agent tokens cannot use the web view"));
    }
    SecurityHeaders(res);
    res.set_header("Set-Cookie",
                   absl::StrCat(kCookie, "=", token, "; Path=/; HttpOnly; SameSite=Strict",
                                impl->tls ? "; Secure" : ""));
    res.set_redirect("/", 303);
  });
  svr.Post("/logout", [impl](const httplib::Request&, httplib::Response& res) {
    SecurityHeaders(res);
    res.set_header("Set-Cookie", absl::StrCat(kCookie,
                                              "=; Path=/; Max-Age=0; HttpOnly; "
                                              "SameSite=Strict",
                                              impl->tls ? "; Secure" : ""));
    res.set_redirect("/login", 303);
  });
  svr.Get("/", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->Page(req, res, "jobs");
  });
  svr.Get("/devices", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->Page(req, res, "devices");
  });
  svr.Get("/scheduler", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->Page(req, res, "scheduler");
  });
  svr.Get(R"(/job/([A-Za-z0-9_.-]{1,64}))",
          [impl](const httplib::Request& req, httplib::Response& res) {
            impl->Page(req, res, absl::StrCat("job/", req.matches[1].str()));
          });
  svr.Get(R"(/api/fragment/(jobs|devices|scheduler|job/[A-Za-z0-9_.-]{1,64}))",
          [impl](const httplib::Request& req, httplib::Response& res) {
            impl->Api(req, res, req.matches[1].str());
          });
  svr.Get("/api/jobs", [impl](const httplib::Request& req, httplib::Response& res) {
    auto who = impl->Who(req);
    if (!who.ok()) return impl->Refuse(res, who.status(), true);
    auto view = impl->driver->View(
        *who, ViewOptions{.history = absl::ZeroDuration(), .include_daemon = false});
    if (!view.ok()) return impl->Refuse(res, view.status(), true);
    nlohmann::json jobs = nlohmann::json::array();
    for (const v1::Job& j : view->jobs) {
      std::string text;
      google::protobuf::util::JsonPrintOptions o;
      o.preserve_proto_field_names = true;
      if (!google::protobuf::util::MessageToJsonString(j, &text, o).ok()) continue;
      jobs.push_back(nlohmann::json::parse(text));
    }
    SecurityHeaders(res);
    res.set_content(nlohmann::json{{"jobs", jobs}}.dump(), "application/json");
  });

  if (port == 0) {
    s->port_ = svr.bind_to_any_port(host);
  } else {
    s->port_ = svr.bind_to_port(host, port) ? port : -1;
  }
  if (s->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --http '", options.listen,
                     "': the port is in use or the address is not HOST:PORT of this host"));
  }
  s->thread_ = std::thread([&svr] { svr.listen_after_bind(); });
  // httplib's stop() does nothing before the accept loop runs; wait for it (bounded), so that a
  // Stop() right after Start() cannot leave the loop running and the join waiting forever.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!svr.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  if (!svr.is_running()) {
    return absl::UnavailableError(
        absl::StrCat("the web view on --http '", options.listen, "' did not start"));
  }
  return s;
}

HttpServer::~HttpServer() { Stop(); }

int64_t HttpServer::draws() const { return impl_->cache.draws(); }

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace loom::service
