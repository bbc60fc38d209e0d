// The web view, /metrics and the probes of a real in-process daemon (Server with --http on a free
// loopback port), driven with cpp-httplib's client; and gRPC's health and reflection services
// on its gRPC port, called the way grpcurl does (generic calls, no generated stubs).
#include "loom/service/http_server.h"

#include <gmock/gmock.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "loom/service/http_pages.h"
#include "loom/service/server.h"
#include "loom/v1/version.h"
#include "nlohmann/json.hpp"

namespace loom::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const Principal kAlice{"alice", Role::kUser};
const Principal kAgentH1{"h1", Role::kAgent};
constexpr char kHostileName[] = "<script>alert(1)</script>\"'&";

v1::SubmitJobRequest Sim(int tasks, int rounds) {
  v1::SubmitJobRequest r;
  r.set_target("cpu");
  r.set_name(kHostileName);
  v1::SimulatedWorkload* w = r.mutable_simulated();
  w->set_tasks(tasks);
  w->set_rounds(rounds);
  w->set_propose_seconds(0.01);
  w->set_build_seconds(0.01);
  w->set_measure_seconds(0.01);
  w->set_update_seconds(0.01);
  return r;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("loom_http_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "tokens") << "tok-alice alice user\ntok-bob bob user\n"
                                   << "tok-root root admin\ntok-agent-h1 h1 agent\n"
                                   << "tok;odd carol user\n";
    ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.state_path = (dir_ / "state.db").string();
    o.tokens_path = (dir_ / "tokens").string();
    o.driver.log_to_stderr = false;
    o.http.listen = "127.0.0.1:0";
    auto s = Server::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    ASSERT_GT(server_->http_port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->http_port());
    client_->set_read_timeout(10, 0);
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  httplib::Result Get(const std::string& path, const std::string& token = "") {
    httplib::Headers h;
    if (!token.empty()) h.emplace("Authorization", absl::StrCat("Bearer ", token));
    return client_->Get(path.c_str(), h);
  }

  // Registers agent h1 and runs every stage granted to it (reporting success at once) until the
  // job ends: a simulated job has no compiler or device work.
  void RunSimulatedJob(const std::string& job_id) {
    v1::RegisterRequest reg;
    reg.set_version(v1::kLoomVersion);
    reg.set_hostname("evil\"host\nname");
    reg.set_cpu_slots(2);
    v1::DeviceInfo* d = reg.add_devices();
    d->set_name("cpu:1");
    d->set_kind("cpu");
    d->set_isa("avx2");
    d->set_target_key("cpu:avx2:test");
    auto r = server_->driver().Register(kAgentH1, reg);
    ASSERT_TRUE(r.ok()) << r.status();
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      auto job = server_->driver().Get(kAlice, job_id);
      ASSERT_TRUE(job.ok());
      if (job->state() == v1::JOB_STATE_SUCCEEDED) return;
      v1::AcquireStagesRequest a;
      a.set_agent_id(r->agent_id());
      a.set_wait_ms(200);
      auto got = server_->driver().Acquire(kAgentH1, a);
      ASSERT_TRUE(got.ok()) << got.status();
      for (const v1::StageRequest& s : got->stages()) {
        v1::ReportStageRequest rep;
        rep.set_agent_id(r->agent_id());
        rep.mutable_result()->set_lease_id(s.lease_id());
        ASSERT_TRUE(server_->driver().Report(kAgentH1, rep).ok());
      }
    }
    FAIL() << "the simulated job did not end within 30 s";
  }

  std::filesystem::path dir_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, ProbesAreOpenAndSayTheDaemonIsReady) {
  auto h = Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, "ok\n");
  auto r = Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ready\n");
}

TEST_F(HttpServerTest, MissingOrWrongTokenGets401AndTheLoginPage) {
  for (const std::string& token : {std::string(""), std::string("tok-wrong")}) {
    for (const char* path : {"/", "/devices", "/job/j1", "/api/fragment/jobs", "/api/jobs"}) {
      auto r = Get(path, token);
      ASSERT_TRUE(r) << path;
      EXPECT_EQ(r->status, 401) << path << " token '" << token << "'";
      EXPECT_THAT(r->body, Not(HasSubstr("tok-wrong")));
    }
    auto page = Get("/", token);
    EXPECT_THAT(page->body, HasSubstr("<form class=\"login\" method=\"post\" action=\"/login\""));
    auto m = Get("/metrics", token);
    EXPECT_EQ(m->status, 401);
    EXPECT_EQ(m->get_header_value("WWW-Authenticate"), "Bearer realm=\"loom\"");
  }
  // Right tokens of the wrong role.
  EXPECT_EQ(Get("/metrics", "tok-alice")->status, 403);
  EXPECT_EQ(Get("/devices", "tok-alice")->status, 403);
  EXPECT_THAT(Get("/scheduler", "tok-alice")->body, HasSubstr("needs an admin token"));
  EXPECT_EQ(Get("/", "tok-agent-h1")->status, 403);
  EXPECT_EQ(Get("/", "tok-alice")->status, 200);
  EXPECT_EQ(Get("/metrics", "tok-root")->status, 200);
}

TEST_F(HttpServerTest, LoginSetsAnHttpOnlyStrictCookieThatOpensThePages) {
  auto bad = client_->Post("/login", "token=tok-nope", "application/x-www-form-urlencoded");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 401);
  EXPECT_THAT(bad->body, HasSubstr("class=\"error\""));
  EXPECT_FALSE(bad->has_header("Set-Cookie"));
  auto odd = client_->Post("/login", "token=tok%3Bodd", "application/x-www-form-urlencoded");
  EXPECT_EQ(odd->status, 401);
  EXPECT_THAT(odd->body, HasSubstr("cannot be kept in a cookie"));
  auto agent = client_->Post("/login", "token=tok-agent-h1", "application/x-www-form-urlencoded");
  EXPECT_EQ(agent->status, 403);

  auto ok = client_->Post("/login", "token=tok-alice", "application/x-www-form-urlencoded");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 303);
  EXPECT_EQ(ok->get_header_value("Location"), "/");
  EXPECT_EQ(ok->get_header_value("Set-Cookie"),
            "loom_token=tok-alice; Path=/; HttpOnly; SameSite=Strict");
  auto page = client_->Get("/", {{"Cookie", "other=1; loom_token=tok-alice"}});
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("signed in as alice"));
  EXPECT_EQ(page->get_header_value("X-Frame-Options"), "DENY");
  EXPECT_THAT(page->get_header_value("Content-Security-Policy"), HasSubstr("script-src 'self'"));
  EXPECT_EQ(client_->Get("/", {{"Cookie", "loom_token=tok-forged"}})->status, 401);
}

TEST_F(HttpServerTest, HostileJobNameIsEscapedEverywhereItIsShown) {
  auto job = server_->driver().Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&apos;&amp;";
  for (const std::string& path : {std::string("/"), absl::StrCat("/job/", job->id())}) {
    auto r = Get(path, "tok-alice");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << path;
    EXPECT_THAT(r->body, HasSubstr(escaped)) << path;
    EXPECT_THAT(r->body, Not(HasSubstr("<script>alert"))) << path;
  }
  auto api = Get("/api/fragment/jobs", "tok-alice");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->get_header_value("Content-Type"), "application/json");
  EXPECT_THAT(api->body, Not(HasSubstr("<script>alert")));
  // Bob neither sees alice's job in his list nor opens it.
  EXPECT_THAT(Get("/", "tok-bob")->body, Not(HasSubstr(escaped)));
  EXPECT_EQ(Get(absl::StrCat("/job/", job->id()), "tok-bob")->status, 404);
  EXPECT_EQ(Get("/job/j999", "tok-alice")->status, 404);
}

TEST_F(HttpServerTest, OversizedAndTraversingRequestsAreRefused) {
  const std::string big(64 << 10, 'a');
  auto r =
      client_->Post("/login", absl::StrCat("token=", big), "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  auto uri = Get(absl::StrCat("/job/", std::string(10000, 'j')), "tok-alice");
  ASSERT_TRUE(uri);
  EXPECT_EQ(uri->status, 414);
  httplib::Headers big_header{{"X-Filler", std::string(16 << 10, 'h')}};
  auto header = client_->Get("/healthz", big_header);
  EXPECT_TRUE(!header || header->status == 400);
  for (const char* path : {"/assets/../../../etc/passwd", "/assets/%2e%2e/%2e%2e/etc/passwd",
                           "/job/..%2f..%2fetc%2fpasswd", "/etc/passwd"}) {
    auto t = Get(path, "tok-root");
    ASSERT_TRUE(t) << path;
    EXPECT_EQ(t->status, 404) << path;
    EXPECT_THAT(t->body, Not(HasSubstr("root:")));
  }
  EXPECT_EQ(Get("/devices?minutes=100000", "tok-root")->status, 400);
}

// Parses the Prometheus text format strictly: HELP and TYPE before each family's samples, label
// values quoted with escapes, numeric values. Returns "name{labels}" -> value.
std::map<std::string, double> ParseMetrics(const std::string& text, std::string* error) {
  std::map<std::string, double> out;
  std::map<std::string, std::string> types;
  const std::regex sample(
      R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+))re");
  for (const std::string& line :
       std::vector<std::string>(absl::StrSplit(text, '\n', absl::SkipEmpty()))) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() != 4) *error = absl::StrCat("bad TYPE line: ", line);
      types[f[2]] = f[3];
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, sample)) {
      *error = absl::StrCat("bad sample line: ", line);
      return out;
    }
    std::string family = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (!types.contains(family) && absl::EndsWith(family, suffix)) {
        family = family.substr(0, family.size() - std::strlen(suffix));
      }
    }
    if (!types.contains(family)) *error = absl::StrCat("sample before its TYPE: ", line);
    double v = 0;
    if (m[3] == "+Inf") {
      v = std::numeric_limits<double>::infinity();
    } else if (!absl::SimpleAtod(std::string(m[3]), &v)) {
      *error = absl::StrCat("bad value: ", line);
    }
    out[absl::StrCat(m[1].str(), m[2].str())] = v;
  }
  return out;
}

TEST_F(HttpServerTest, MetricsAreValidPrometheusTextAndAgreeWithTheJob) {
  auto job = server_->driver().Submit(kAlice, Sim(2, 3));
  ASSERT_TRUE(job.ok()) << job.status();
  RunSimulatedJob(job->id());
  auto done = server_->driver().Get(kAlice, job->id());
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->records(), 6);  // 2 tasks x 3 rounds

  auto r = Get("/metrics", "tok-root");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  std::string error;
  const auto m = ParseMetrics(r->body, &error);
  ASSERT_EQ(error, "") << r->body;
  EXPECT_EQ(m.at("loom_up"), 1);
  EXPECT_EQ(m.at("loom_jobs{state=\"succeeded\"}"), 1);
  EXPECT_EQ(m.at("loom_jobs{state=\"queued\"}"), 0);
  EXPECT_EQ(m.at("loom_records_written_total"), 6);
  EXPECT_EQ(m.at("loom_stages_ended_total{kind=\"simulated\",outcome=\"reported\"}"), 24);
  EXPECT_EQ(m.at("loom_scheduler_grants_total"), 24);
  EXPECT_EQ(m.at("loom_dispatch_seconds_count"), 24);
  EXPECT_EQ(m.at("loom_dispatch_seconds_bucket{le=\"+Inf\"}"), 24);
  EXPECT_EQ(m.at("loom_queue_wait_seconds_count"), 24);
  EXPECT_EQ(m.at("loom_agents{state=\"alive\"}"), 1);
  // The hostile hostname is escaped as a label value, not a broken line.
  EXPECT_THAT(r->body, HasSubstr("hostname=\"evil\\\"host\\nname\""));
  int devices = 0;
  for (const auto& [key, value] : m) {
    if (key.rfind("loom_device_busy{", 0) == 0) {
      ++devices;
      EXPECT_THAT(key, HasSubstr("device=\"cpu:1\""));
      EXPECT_EQ(value, 0);
    }
  }
  EXPECT_EQ(devices, 1);
  // Cumulative buckets never decrease.
  double last = 0;
  for (const auto& [key, value] : m) {
    if (key.rfind("loom_dispatch_seconds_bucket", 0) != 0 ||
        key.find("+Inf") != std::string::npos) {
      continue;
    }
    EXPECT_GE(value, 0);
    last = std::max(last, value);
  }
  EXPECT_LE(last, 24);
}

// Every reader of a snapshot gets each page drawn once (HttpServer::draws), and a poll that names
// the ETag of the page it holds gets 304 and no body while the page is unchanged; a change shows
// once the snapshot is rebuilt (within a second of it).
TEST_F(HttpServerTest, ASharedPageIsDrawnOncePerSnapshotAndAnUnchangedPollGets304) {
  // A web server of its own over the daemon's driver, so that its draws are the test's alone.
  auto tokens = TokenTable::Load((dir_ / "tokens").string());
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  auto http = HttpServer::Start({.listen = "127.0.0.1:0"}, &server_->driver(), &*tokens);
  ASSERT_TRUE(http.ok()) << http.status();
  httplib::Client c("127.0.0.1", (*http)->port());
  c.set_read_timeout(10, 0);
  const Principal root{"root", Role::kAdmin};
  // As a browser asks: cpp-httplib would compress every such response anew, the daemon does not.
  auto get = [&](const std::string& path, const std::string& etag = "") {
    httplib::Headers h{{"Authorization", "Bearer tok-root"}, {"Accept-Encoding", "br, gzip"}};
    if (!etag.empty()) h.emplace("If-None-Match", etag);
    return c.Get(path.c_str(), h);
  };
  auto version = [&](const std::string& path) -> int64_t {
    auto v = absl::StrContains(path, "jobs") ? server_->driver().SharedJobsView(root)
                                             : server_->driver().SharedView(root);
    return v.ok() ? (*v)->version : -1;
  };
  for (const std::string path :
       {"/api/fragment/jobs", "/api/fragment/devices", "/api/fragment/scheduler", "/metrics"}) {
    SCOPED_TRACE(path);
    // One draw per page and snapshot: a page's fragment (its JSON is streamed from it, not drawn
    // and kept as a second, escaped copy), /metrics' text.
    const int64_t drawn_per_snapshot = 1;
    bool checked = false;
    for (int attempt = 0; attempt < 5 && !checked; ++attempt) {
      const int64_t before = version(path), draws = (*http)->draws();
      auto first = get(path), second = get(path);
      ASSERT_TRUE(first && second);
      const int64_t drew = (*http)->draws() - draws;
      if (version(path) != before) continue;  // rebuilt in between (a slow machine): again
      checked = true;
      EXPECT_EQ(first->status, 200);
      EXPECT_EQ(second->status, 200);
      EXPECT_EQ(drew, drawn_per_snapshot);
      EXPECT_EQ(second->body, first->body);
      EXPECT_FALSE(first->has_header("Content-Encoding"))
          << first->get_header_value("Content-Encoding");
      EXPECT_EQ(first->get_header_value("Content-Length"), absl::StrCat(first->body.size()));
      if (path != "/metrics") {  // the fragment's JSON, as the page's script parses it
        const nlohmann::json json = nlohmann::json::parse(first->body);
        EXPECT_THAT(json.at("html").get<std::string>(), HasSubstr("</"));
        EXPECT_EQ((nlohmann::json{{"html", json.at("html")}}.dump()), first->body);
      }
      const std::string etag = first->get_header_value("ETag");
      EXPECT_THAT(etag, ::testing::MatchesRegex("\"[0-9a-f]{16}\""));
      EXPECT_EQ(second->get_header_value("ETag"), etag);
      auto unchanged = get(path, etag);
      ASSERT_TRUE(unchanged);
      EXPECT_EQ(unchanged->status, 304);
      EXPECT_EQ(unchanged->body, "");
      EXPECT_EQ(unchanged->get_header_value("ETag"), etag);
      auto other = get(path, "\"0000000000000000\", \"1\"");
      ASSERT_TRUE(other);
      EXPECT_EQ(other->status, 200);
      EXPECT_EQ(other->body, first->body);
      EXPECT_EQ((*http)->draws() - draws, drawn_per_snapshot);
    }
    EXPECT_TRUE(checked) << "the snapshot was rebuilt during every attempt";
  }

  // A new job: the poll that held the old page gets the new one once the snapshot is rebuilt.
  auto before = get("/api/fragment/jobs");
  ASSERT_TRUE(before);
  ASSERT_EQ(before->status, 200);
  auto job = server_->driver().Submit(kAlice, Sim(1, 1));
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  int status = 0;
  std::string body, etag;
  for (;;) {
    auto now = get("/api/fragment/jobs", before->get_header_value("ETag"));
    ASSERT_TRUE(now);
    status = now->status;
    body = now->body;
    etag = now->get_header_value("ETag");
    if (status != 304 || absl::Now() > deadline) break;
    absl::SleepFor(absl::Milliseconds(50));  // polls, as the page's script does every 3 s
  }
  EXPECT_EQ(status, 200);
  EXPECT_THAT(body, HasSubstr(absl::StrCat("data-job=\\\"", job->id(), "\\\"")));
  EXPECT_NE(etag, before->get_header_value("ETag"));
}

// A fragment's JSON is streamed in pieces (FragmentJsonPiece) from the drawn fragment: a page of
// many pieces arrives whole, with its length announced, and as nlohmann::json would write it.
TEST_F(HttpServerTest, AFragmentOfManyPiecesArrivesAsOneJsonDocument) {
  std::vector<std::string> names;
  for (int i = 0; i < 100; ++i) {
    v1::SubmitJobRequest r = Sim(1, 1);
    r.set_name(absl::StrCat("caf\xc3\xa9-", i, "-", std::string(200, 'x'), "\"\\"));
    auto job = server_->driver().Submit(kAlice, r);
    ASSERT_TRUE(job.ok()) << job.status();
    names.push_back(absl::StrCat("caf\xc3\xa9-", i, "-"));
  }
  auto r = Get("/api/fragment/jobs", "tok-alice");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_GT(r->body.size(), 2 * kFragmentJsonBlock);
  EXPECT_EQ(r->get_header_value("Content-Length"), absl::StrCat(r->body.size()));
  const nlohmann::json json = nlohmann::json::parse(r->body);
  const std::string html = json.at("html").get<std::string>();
  for (const std::string& name : names) EXPECT_THAT(html, HasSubstr(name));
  EXPECT_EQ((nlohmann::json{{"html", html}}.dump()), r->body);
  // The page itself embeds the same fragment.
  auto page = Get("/", "tok-alice");
  ASSERT_TRUE(page);
  EXPECT_THAT(page->body, HasSubstr(html));
}

// Under TLS on the gRPC port the web view serves HTTPS with the same files, and its cookie is
// Secure; plain HTTP gets no page.
TEST(HttpServerTlsTest, TlsDaemonServesHttpsOnlyAndMarksTheCookieSecure) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / absl::StrCat("loom_http_tls_test_", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "ext.cnf") << "subjectAltName=IP:127.0.0.1\n";
  const std::string cmd = absl::StrCat(
      "cd ", dir.string(),
      " && openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.pem -days 2 "
      "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >openssl.log 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "openssl is not installed";
  }
  std::ofstream(dir / "tokens") << "tok-root root admin\n";
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.state_path = ":memory:";
  o.tokens_path = (dir / "tokens").string();
  o.tls_cert = (dir / "server.pem").string();
  o.tls_key = (dir / "server.key").string();
  o.driver.log_to_stderr = false;
  o.http.listen = "127.0.0.1:0";
  auto server = Server::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->http_port();
  httplib::SSLClient tls("127.0.0.1", port);
  tls.set_ca_cert_path((dir / "server.pem").c_str());
  tls.enable_server_certificate_verification(true);
  auto h = tls.Get("/healthz");
  ASSERT_TRUE(h) << httplib::to_string(h.error());
  EXPECT_EQ(h->status, 200);
  auto login = tls.Post("/login", "token=tok-root", "application/x-www-form-urlencoded");
  ASSERT_TRUE(login);
  EXPECT_EQ(login->get_header_value("Set-Cookie"),
            "loom_token=tok-root; Path=/; HttpOnly; SameSite=Strict; Secure");
  httplib::Client plain("127.0.0.1", port);
  plain.set_read_timeout(5, 0);
  auto p = plain.Get("/healthz");
  EXPECT_TRUE(!p || p->status != 200);
  server->reset();
  std::filesystem::remove_all(dir);
}

TEST(ParseHttpListenTest, SplitsHostAndPortAndNamesTheFlagWhenBad) {
  auto v4 = ParseHttpListen("127.0.0.1:8080");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 8080);
  auto v6 = ParseHttpListen("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  for (const char* bad : {"bogus", ":80", "host:", "host:65536", "host:-1", "host:8o"}) {
    EXPECT_EQ(ParseHttpListen(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(ParseHttpListen(bad).status().message(), HasSubstr("is not HOST:PORT")) << bad;
  }
}

TEST(HttpServerStartTest, PlaintextWebViewBeyondLoopbackIsRefused) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.state_path = ":memory:";
  o.insecure = false;
  o.tokens_path = "/nonexistent-tokens";  // refused before the file is read
  o.driver.log_to_stderr = false;
  o.http.listen = "192.0.2.1:8080";
  auto s = Server::Start(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("--http 192.0.2.1:8080 reaches beyond this host"));
  o.http.listen = "bogus";
  EXPECT_THAT(Server::Start(o).status().message(), HasSubstr("--http 'bogus' is not HOST:PORT"));
}

TEST(PrometheusLabelValueTest, EscapesBackslashQuoteAndNewline) {
  EXPECT_EQ(PrometheusLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(PrometheusLabelValue("plain"), "plain");
}

TEST(MakeHistogramTest, CountsCumulativelyWithInfinityAsTheTotal) {
  const Histogram h = MakeHistogram({0.5, 1, 2, 9}, {1, 5});
  EXPECT_EQ(h.cumulative, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.count, 4);
  EXPECT_DOUBLE_EQ(h.sum, 12.5);
}

// grpcurl's two calls, made with generic (ByteBuffer) calls and hand-decoded messages.
std::string ToBytes(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(b.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer FromBytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

TEST_F(HttpServerTest, GrpcHealthSaysServingAndReflectionListsTheServices) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::InsecureChannelCredentials());
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::ByteBuffer response;
    const grpc::Status st = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        channel.get(),
        grpc::internal::RpcMethod("/grpc.health.v1.Health/Check",
                                  grpc::internal::RpcMethod::NORMAL_RPC),
        &ctx, FromBytes(""), &response);
    ASSERT_TRUE(st.ok()) << st.error_message();
    // HealthCheckResponse { status = SERVING (1) }: field 1, varint 1.
    EXPECT_EQ(ToBytes(response), std::string("\x08\x01", 2));
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod(
              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
              grpc::internal::RpcMethod::BIDI_STREAMING),
          &ctx));
  // ServerReflectionRequest { list_services = "" }: field 7, length 0.
  ASSERT_TRUE(stream->Write(FromBytes(std::string("\x3a\x00", 2))));
  stream->WritesDone();
  grpc::ByteBuffer reply;
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(stream->Finish().ok());
  // ServerReflectionResponse.list_services_response (6) -> ListServiceResponse.service (1) ->
  // ServiceResponse.name (1).
  google::protobuf::UnknownFieldSet top;
  ASSERT_TRUE(top.ParseFromString(ToBytes(reply)));
  std::set<std::string> names;
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    ASSERT_TRUE(list.ParseFromString(top.field(i).length_delimited()));
    for (int j = 0; j < list.field_count(); ++j) {
      google::protobuf::UnknownFieldSet service;
      ASSERT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
      ASSERT_GE(service.field_count(), 1);
      names.insert(service.field(0).length_delimited());
    }
  }
  EXPECT_TRUE(names.contains("loom.v1.JobService"));
  EXPECT_TRUE(names.contains("loom.v1.AgentService"));
  EXPECT_TRUE(names.contains("grpc.health.v1.Health"));
  EXPECT_TRUE(names.contains("grpc.reflection.v1alpha.ServerReflection"));
}

}  // namespace
}  // namespace loom::service
