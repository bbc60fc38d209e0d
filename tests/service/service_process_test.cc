// Reliability of `loom serve` with real processes: agents killed with SIGKILL mid-stage, the
// daemon killed and restarted on the same state file, bad requests and tokens, several agents on
// one daemon. Users are driven through the `loom` CLI; agents are `loom agent` processes.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <libpq-fe.h>
#include <onnx/onnx_pb.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/testing/subprocess.h"
#include "loom/records/testing/postgres_cluster.h"
#include "loom/v1/agent.grpc.pb.h"
#include "loom/v1/version.h"
#include "nlohmann/json.hpp"

namespace fs = std::filesystem;
namespace v1 = loom::v1;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

// ---------------------------------------------------------------------------------------------
// Processes

struct Proc {
  pid_t pid = -1;
  std::string log;
};

Proc Spawn(const std::vector<std::string>& argv, const std::string& log,
           const std::map<std::string, std::string>& env = {}) {
  return Proc{.pid = loom::base::testing::SpawnLogged(argv, log, {.env = env}), .log = log};
}

void Kill(Proc& p, int sig = SIGKILL) {
  if (p.pid <= 0) return;
  kill(p.pid, sig);
  int status = 0;
  waitpid(p.pid, &status, 0);
  p.pid = -1;
}

bool Alive(const Proc& p) { return loom::base::testing::ChildAlive(p.pid); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

using loom::base::testing::WaitFor;

// Waits (30 s at most) until the `loom serve` of `p` logs "event=serving ... port=N" and sets
// *port; false when it exited or never did.
bool WaitForServing(const Proc& p, int* port) {
  std::regex port_re("event=serving .* port=([0-9]+)");
  std::smatch m;
  return WaitFor(
             [&] {
               std::string s = ReadAll(p.log);
               if (std::regex_search(s, m, port_re)) {
                 *port = std::stoi(m[1]);
                 return true;
               }
               return !Alive(p);
             },
             30) &&
         Alive(p);
}

class ServiceProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("loom_service_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    state_ = (dir_ / "state.db").string();
    // Every agent has its own token, named after its host; user limits as a site would set them.
    std::ofstream tokens(dir_ / "tokens");
    tokens << "# test tokens\n"
           << "tok-alice alice user max_priority=10\n"
           << "tok-bob bob user max_jobs=50\n"
           << "tok-root root admin\n";
    for (const char* agent :
         {"host-a", "host-b", "host-c", "host-tls", "honest-dev", "honest-full", "evil", "evil2"}) {
      tokens << "tok-agent-" << agent << " " << agent << " agent\n";
      std::ofstream(dir_ / absl::StrCat("token-", agent)) << "tok-agent-" << agent << "\n";
    }
  }
  void TearDown() override {
    for (Proc& a : agents_) Kill(a);
    Kill(serve_);
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Starts `loom serve` (port 0 the first time, then the same port) and waits until it listens.
  // The default state is state_ (a file, or a PostgreSQL database in the backend tests).
  void StartServe(std::vector<std::string> extra = {}, const std::string& state = "state.db") {
    fs::create_directories(dir_ / "tmp");
    std::vector<std::string> argv = {LOOM_BINARY,
                                     "serve",
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", port_),
                                     "--state",
                                     state == "state.db" ? state_ : (dir_ / state).string(),
                                     "--heartbeat-timeout",
                                     "1"};
    if (!without_tokens_) argv.insert(argv.end(), {"--tokens", (dir_ / "tokens").string()});
    argv.insert(argv.end(), extra.begin(), extra.end());
    const std::string log = (dir_ / absl::StrCat("serve", ++serve_starts_, ".log")).string();
    // Uploads go to the daemon's TMPDIR: this test's own folder.
    serve_ = Spawn(argv, log, {{"TMPDIR", (dir_ / "tmp").string()}});
    ASSERT_TRUE(WaitForServing(serve_, &port_)) << ReadAll(log);
    ASSERT_TRUE(Alive(serve_)) << ReadAll(log);
    server_ = absl::StrCat("127.0.0.1:", port_);
  }

  // Starts `loom agent` with the token of `host` (read from its file, never from argv).
  pid_t StartAgent(const std::string& host, const std::vector<std::string>& extra = {},
                   bool default_slots = true) {
    const std::string log = (dir_ / (host + ".log")).string();
    std::vector<std::string> argv = {
        LOOM_BINARY, "agent", "--server",    server_,
        "--name",    host,    "--cache-dir", (dir_ / ("cache-" + host)).string()};
    if (!without_tokens_) {
      argv.insert(argv.end(), {"--token-file", (dir_ / ("token-" + host)).string()});
    }
    if (default_slots) argv.insert(argv.end(), {"--cpu-slots", "2"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    agents_.push_back(Spawn(argv, log));
    return agents_.back().pid;
  }

  // The current serve log (of the latest start).
  std::string ServeLog() const {
    return ReadAll((dir_ / absl::StrCat("serve", serve_starts_, ".log")).string());
  }

  Outcome Loom(const std::string& args, const std::string& token = "tok-alice") {
    fs::path out = dir_ / "cmd.out", err = dir_ / "cmd.err";
    std::string cmd = absl::StrCat("env LOOM_SERVER=", server_, " LOOM_TOKEN=", token,
                                   " HOME=", dir_.string(), " ", client_env_, " ", LOOM_BINARY, " ",
                                   args, " >", out.string(), " 2>", err.string());
    Outcome o;
    int rc = std::system(cmd.c_str());
    o.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    o.out = ReadAll(out.string());
    o.err = ReadAll(err.string());
    return o;
  }

  std::string Submit(const std::string& simulated, const std::string& token = "tok-alice") {
    Outcome o = Loom("submit --simulated " + simulated, token);
    EXPECT_EQ(o.code, 0) << o.err;
    std::smatch m;
    std::regex re("submitted (j[0-9]+)");
    if (!std::regex_search(o.out, m, re)) {
      ADD_FAILURE() << "no job id in: " << o.out << o.err;
      return "";
    }
    return m[1];
  }

  nlohmann::json Jobs(const std::string& token = "tok-root") {
    Outcome o = Loom("jobs --all --ended --json", token);
    if (o.code != 0) return nlohmann::json::object();
    auto j = nlohmann::json::parse(o.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json::object() : j;
  }

  // state name per job id; records per job id.
  std::map<std::string, std::string> States(std::map<std::string, int64_t>* records = nullptr) {
    std::map<std::string, std::string> s;
    nlohmann::json j = Jobs();
    for (const auto& job : j.value("jobs", nlohmann::json::array())) {
      s[job.value("id", "")] = job.value("state", "");
      if (records) (*records)[job.value("id", "")] = job.value("records", int64_t{0});
    }
    return s;
  }

  bool AllSucceeded(const std::vector<std::string>& ids) {
    auto s = States();
    for (const auto& id : ids) {
      if (s[id] != "succeeded") return false;
    }
    return true;
  }

  fs::path dir_;
  std::string state_;  // the daemon's --state
  int port_ = 0;
  int serve_starts_ = 0;
  std::string server_;
  Proc serve_;
  std::vector<Proc> agents_;
  std::string client_env_;  // extra NAME=VALUE words for the CLI's environment
  // The daemon runs `--insecure` without a tokens file, and agents start with no token.
  bool without_tokens_ = false;
};

// The tests that run once per state backend: the daemon on an SQLite file, and on a PostgreSQL
// database of a throw-away cluster (skipped only when the server binaries are absent).
class ServiceBackendTest : public ServiceProcessTest,
                           public ::testing::WithParamInterface<loom::tune::testing::StoreBackend> {
 protected:
  void SetUp() override {
    ServiceProcessTest::SetUp();
    if (GetParam() == loom::tune::testing::StoreBackend::kSqlite) return;
    auto cluster = loom::tune::testing::SharedPostgresCluster();
    if (absl::IsNotFound(cluster.status())) GTEST_SKIP() << cluster.status().message();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    auto uri = (*cluster)->CreateDatabase();
    ASSERT_TRUE(uri.ok()) << uri.status();
    state_ = *uri;
  }
  // Where `loom records --db` finds the daemon's records.
  std::string RecordsDb() const {
    return GetParam() == loom::tune::testing::StoreBackend::kSqlite
               ? (dir_ / "state.db.records").string()
               : state_;
  }
};
INSTANTIATE_TEST_SUITE_P(Backends, ServiceBackendTest,
                         ::testing::Values(loom::tune::testing::StoreBackend::kSqlite,
                                           loom::tune::testing::StoreBackend::kPostgres),
                         loom::tune::testing::StoreBackendName<
                             ::testing::TestParamInfo<loom::tune::testing::StoreBackend>>);

TEST_F(ServiceProcessTest, AgentKilledMidStageIsRequeuedAndJobsFinishOnTheOthers) {
  StartServe();
  for (const char* h : {"host-a", "host-b", "host-c"}) StartAgent(h);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(Submit("tasks=1,rounds=2,propose=0.3,build=0.3,measure=0.3,update=0.3"));
  }
  // Wait until all three agents hold stages, then kill host-a's agent mid-stage.
  ASSERT_TRUE(WaitFor(
      [&] {
        nlohmann::json j = Jobs();
        int busy = 0;
        for (const auto& r : j.value("resources", nlohmann::json::array())) {
          busy += r.value("leases", 0) > 0 ? 1 : 0;
        }
        return busy == 3;
      },
      20))
      << Jobs().dump();
  Kill(agents_[0]);
  ASSERT_TRUE(WaitFor([&] { return AllSucceeded(ids); }, 60)) << Jobs().dump(1);
  nlohmann::json j = Jobs();
  int lost = 0;
  for (const auto& r : j["resources"]) lost += r.value("alive", false) ? 0 : 1;
  EXPECT_EQ(lost, 1);
  std::string all_logs;
  for (const auto& id : ids) all_logs += Loom("logs " + id).out;
  EXPECT_THAT(all_logs, HasSubstr("requeued"));
  EXPECT_THAT(all_logs, HasSubstr("no heartbeat"));
  EXPECT_THAT(ReadAll((dir_ / "serve1.log").string()), HasSubstr("event=agent_lost"));
  std::map<std::string, int64_t> records;
  States(&records);
  for (const auto& id : ids) EXPECT_GE(records[id], 2) << id;
}

TEST_P(ServiceBackendTest, ServeKilledAndRestartedResumesEveryJobWithoutLosingRecords) {
  StartServe();
  StartAgent("host-a");
  StartAgent("host-b");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(Submit("tasks=2,rounds=3,propose=0.05,build=0.1,measure=0.1,update=0.05"));
  }
  std::map<std::string, int64_t> before;
  ASSERT_TRUE(WaitFor(
      [&] {
        before.clear();
        States(&before);
        int64_t total = 0;
        for (auto& [id, n] : before) total += n;
        return total >= 4;
      },
      30));
  Kill(serve_);
  StartServe();
  ASSERT_TRUE(WaitFor([&] { return AllSucceeded(ids); }, 60)) << Jobs().dump(1);
  std::map<std::string, int64_t> after;
  States(&after);
  for (const auto& id : ids) {
    EXPECT_LE(before[id], after[id]) << id;
    EXPECT_GE(after[id], 6) << id;  // tasks x rounds
  }
  EXPECT_THAT(ReadAll((dir_ / "serve2.log").string()), HasSubstr("event=daemon_loaded"));
  // Every job's records survive into the result database.
  Outcome r = Loom("result " + ids[0] + " -o " + (dir_ / "result").string());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "result" / "records.db"));
  EXPECT_TRUE(fs::exists(dir_ / "result" / "best.json"));
}

TEST_F(ServiceProcessTest, BadTokensIdsAndRequestsGetSpecificCodesAndTheDaemonStaysUp) {
  StartServe({"--max-message-bytes", "1000000"});
  const std::string id = Submit("tasks=1,rounds=1");

  Outcome o = Loom("jobs", "");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("UNAUTHENTICATED"));
  o = Loom("jobs", "tok-wrong");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("UNAUTHENTICATED: invalid token"));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;

  o = Loom("status j424242");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("NOT_FOUND"));
  o = Loom("status " + id, "tok-bob");  // not bob's
  EXPECT_THAT(o.err, HasSubstr("NOT_FOUND"));
  o = Loom("cancel " + id, "tok-bob");
  EXPECT_THAT(o.err, HasSubstr("NOT_FOUND"));
  o = Loom("jobs --all", "tok-bob");
  EXPECT_THAT(o.err, HasSubstr("PERMISSION_DENIED"));
  o = Loom("status " + id, "tok-agent-host-a");
  EXPECT_THAT(o.err, HasSubstr("PERMISSION_DENIED"));
  // Limits from the tokens file: alice may not go above priority 10.
  o = Loom("submit --simulated tasks=1 --priority 11");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("PERMISSION_DENIED: priority 11 is above your limit of 10"));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_EQ(Loom("status " + id, "tok-root").code, 0);

  std::ofstream(dir_ / "garbage.onnx") << "this is not a protobuf";
  o = Loom("submit " + (dir_ / "garbage.onnx").string() + " --trials 2");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("INVALID_ARGUMENT"));
  {
    std::ofstream big(dir_ / "big.onnx", std::ios::binary);
    big << std::string(2'000'000, 'x');
  }
  o = Loom("submit " + (dir_ / "big.onnx").string() + " --trials 2");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("RESOURCE_EXHAUSTED"));
  o = Loom("submit --simulated tasks=0");
  EXPECT_THAT(o.err, HasSubstr("INVALID_ARGUMENT"));

  // Raw bytes that are not a SubmitJobRequest.
  auto channel = grpc::CreateChannel(server_, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer tok-alice");
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const char junk[] = "\xff\xff\xff\xff\x0f\x12\x34";
  grpc::Slice slice(junk, sizeof(junk) - 1);
  grpc::ByteBuffer req(&slice, 1), resp;
  grpc::CompletionQueue cq;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  generic.UnaryCall(&ctx, "/loom.v1.JobService/SubmitJob", grpc::StubOptions(), &req, &resp,
                    [&](grpc::Status s) {
                      std::lock_guard<std::mutex> l(mu);
                      status = s;
                      done = true;
                      cv.notify_all();
                    });
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait_for(l, std::chrono::seconds(10), [&] { return done; });
  }
  ASSERT_TRUE(done);
  EXPECT_NE(status.error_code(), grpc::StatusCode::OK);
  EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE);

  // Still up and answering.
  EXPECT_TRUE(Alive(serve_));
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("waiting for an agent"));
  EXPECT_EQ(Loom("cancel " + id).code, 0);
  o = Loom("cancel " + id);
  EXPECT_THAT(o.err, HasSubstr("FAILED_PRECONDITION"));
}

TEST_F(ServiceProcessTest, WatchStreamsUntilTheJobEnds) {
  StartServe();
  StartAgent("host-a");
  const std::string id =
      Submit("tasks=2,rounds=1,propose=0.15,build=0.15,measure=0.15,update=0.15");
  Outcome o = Loom("watch " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("task 2/2: round 0 measured"));
  EXPECT_THAT(o.out, HasSubstr("succeeded"));

  // --json (before or after the subcommand): numbers as numbers, the tables' short state names.
  for (const std::string& args : {"status " + id + " --json", "--json status " + id}) {
    o = Loom(args);
    ASSERT_EQ(o.code, 0) << o.err;
    nlohmann::json j = nlohmann::json::parse(o.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << o.out;
    EXPECT_EQ(j["id"], id);
    EXPECT_EQ(j["state"], "succeeded");
    EXPECT_TRUE(j["records"].is_number_integer()) << o.out;
    EXPECT_EQ(j["tasks"].size(), 2u);
  }
  o = Loom("watch " + id + " --json");
  ASSERT_EQ(o.code, 0) << o.err;
  std::istringstream lines(o.out);
  int events = 0;
  for (std::string line; std::getline(lines, line); ++events) {
    EXPECT_TRUE(nlohmann::json::parse(line, nullptr, false).is_object()) << line;
  }
  EXPECT_GT(events, 0);
  o = Loom("logs " + id + " --json");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_TRUE(nlohmann::json::parse(o.out)["lines"].is_array()) << o.out;
  o = Loom("submit --simulated tasks=1,rounds=1 --json");
  ASSERT_EQ(o.code, 0) << o.err;
  nlohmann::json submitted = nlohmann::json::parse(o.out, nullptr, false);
  ASSERT_TRUE(submitted.is_object()) << o.out;
  EXPECT_THAT(submitted["state"].get<std::string>(), ::testing::AnyOf("queued", "running"));
  o = Loom("submit --simulated tasks=1,rounds=100,measure=1 --parsable");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, ::testing::MatchesRegex("j[0-9]+\n"));
  o = Loom("cancel " + o.out.substr(0, o.out.size() - 1) + " --json");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(nlohmann::json::parse(o.out)["state"], "cancelled");
}

TEST_F(ServiceProcessTest, RealTinyCnnJobThroughServeAndTwoAgents) {
  StartServe();
  StartAgent("host-a");
  StartAgent("host-b");
  Outcome o = Loom("submit tiny_cnn --trials 4 --batch-size 2 --max-tasks 2");
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)"))) << o.out;
  const std::string id = m[1];
  o = Loom("watch " + id);
  ASSERT_EQ(o.code, 0) << o.err << o.out;
  EXPECT_THAT(o.out, HasSubstr("task 2/2 done"));
  o = Loom("result " + id + " -o " + (dir_ / "out").string());
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("8 records"));
  EXPECT_THAT(o.out, HasSubstr("2 best configs"));
  auto best = nlohmann::json::parse(ReadAll((dir_ / "out" / "best.json").string()));
  ASSERT_EQ(best["best"].size(), 2u);
  for (const auto& b : best["best"]) {
    EXPECT_GT(b["gflops"].get<double>(), 0);
    EXPECT_EQ(b["template"], "conv2d_nchwc");
  }
  // The compiled model from the job's records runs with no database.
  EXPECT_THAT(o.out, HasSubstr("compiled model ->"));
  // Compiled for the class the job tuned on; every compile says how many kernels were tuned.
  EXPECT_THAT(o.out, HasSubstr("tuned: 2 of 3 kernels tuned"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "model" / "plan.json"));
  o = Loom("run " + (dir_ / "out" / "model").string());
  EXPECT_EQ(o.code, 0) << o.err;
  // A second job with a generous latency goal is answered from these records at once.
  o = Loom("submit tiny_cnn --trials 4 --max-tasks 2 --latency-goal 1000");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("succeeded"));
}

// Generates a CA, a server certificate it signs (for 127.0.0.1 and localhost) and an unrelated
// CA in `dir`; false when openssl is not installed.
bool MakeCertificates(const fs::path& dir) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) return false;
  const std::string d = dir.string();
  std::ofstream(dir / "ext.cnf") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  const std::string cmd = absl::StrCat(
      "cd ", d, " && (",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
      "-subj /CN=loom-test-ca && ",
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost "
      "&& ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
      "server.pem -days 2 -extfile ext.cnf && ",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 "
      "-subj /CN=someone-else) >openssl.log 2>&1");
  return std::system(cmd.c_str()) == 0;
}

TEST_F(ServiceProcessTest, TlsDaemonServesAgentsAndUsersThatTrustItsCa) {
  if (!MakeCertificates(dir_)) GTEST_SKIP() << "openssl is not installed";
  const std::string ca = (dir_ / "ca.pem").string();

  // A certificate that is not one: refused at start with a message naming the flag.
  const std::string tokens = (dir_ / "tokens").string();
  Outcome o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --state ", (dir_ / "x.db").string(),
                                " --tokens ", tokens, " --tls-cert ", (dir_ / "ext.cnf").string(),
                                " --tls-key ", (dir_ / "server.key").string()));
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("holds no PEM certificate"));
  // A key that is not the certificate's: one line of ours, none of gRPC's.
  o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --state ", (dir_ / "x.db").string(),
                        " --tokens ", tokens, " --tls-cert ", (dir_ / "server.pem").string(),
                        " --tls-key ", (dir_ / "other.key").string()));
  EXPECT_NE(o.code, 0);
  EXPECT_EQ(o.err, absl::StrCat("loom: error: --tls-key '", (dir_ / "other.key").string(),
                                "' is not the private key of --tls-cert '",
                                (dir_ / "server.pem").string(), "'\n"));

  StartServe(
      {"--tls-cert", (dir_ / "server.pem").string(), "--tls-key", (dir_ / "server.key").string()});
  EXPECT_THAT(ReadAll((dir_ / "serve1.log").string()), HasSubstr("tls=on"));

  // Plaintext and a client trusting another CA cannot talk to it.
  o = Loom("jobs");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("UNAVAILABLE"));
  client_env_ = "LOOM_TLS_CA=" + (dir_ / "other.pem").string();
  o = Loom("jobs");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("UNAVAILABLE"));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;  // no gRPC log lines

  // Trusting the daemon's CA: an agent registers over TLS and a job runs to the end.
  client_env_ = "LOOM_TLS_CA=" + ca;
  StartAgent("host-tls", {"--tls-ca", ca});
  const std::string id =
      Submit("tasks=2,rounds=1,propose=0.05,build=0.05,measure=0.05,update=0.05");
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(WaitFor([&] { return AllSucceeded({id}); }, 60))
      << ReadAll((dir_ / "host-tls.log").string());
  o = Loom("jobs --all");  // the token is a user's: refused, but over a working TLS channel
  EXPECT_THAT(o.err, HasSubstr("PERMISSION_DENIED"));
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("succeeded"));
}

// ---------------------------------------------------------------------------------------------
// Attacks, each refused while the job in flight finishes with every record kept.

// An agent written by an attacker: a plain gRPC client holding one agent token.
class RawAgent {
 public:
  RawAgent(const std::string& server, std::string token)
      : stub_(v1::AgentService::NewStub(
            grpc::CreateChannel(server, grpc::InsecureChannelCredentials()))),
        token_(std::move(token)) {}

  grpc::Status Register(int cpu_slots, const std::string& device, const std::string& target_key,
                        const std::string& version = v1::kLoomVersion) {
    v1::RegisterRequest r;
    r.set_hostname("attacker");
    r.set_cpu_slots(cpu_slots);
    r.set_version(version);
    if (!device.empty()) {
      v1::DeviceInfo* d = r.add_devices();
      d->set_name(device);
      d->set_kind("cpu");
      d->set_isa("avx2");
      d->set_target_key(target_key);
    }
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx);
    grpc::Status st = stub_->Register(&ctx, r, &resp);
    if (st.ok()) id_ = resp.agent_id();
    return st;
  }
  grpc::Status Heartbeat(const std::string& claimed_id) {
    v1::HeartbeatRequest r;
    r.set_agent_id(claimed_id);
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx);
    return stub_->Heartbeat(&ctx, r, &resp);
  }
  grpc::Status Acquire(int wait_ms, std::vector<v1::StageRequest>* stages) {
    v1::AcquireStagesRequest r;
    r.set_agent_id(id_);
    r.set_wait_ms(wait_ms);
    v1::AcquireStagesResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx);
    grpc::Status st = stub_->AcquireStages(&ctx, r, &resp);
    stages->assign(resp.stages().begin(), resp.stages().end());
    return st;
  }
  std::vector<v1::StageRequest> Acquire(int wait_ms = 1000) {
    std::vector<v1::StageRequest> stages;
    return Acquire(wait_ms, &stages).ok() ? stages : std::vector<v1::StageRequest>{};
  }
  grpc::Status Report(const v1::StageResult& result) {
    v1::ReportStageRequest r;
    r.set_agent_id(id_);
    *r.mutable_result() = result;
    v1::ReportStageResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx);
    return stub_->ReportStage(&ctx, r, &resp);
  }
  const std::string& id() const { return id_; }
  // Names `id` in the calls below without registering: an id learnt, not the agent's own.
  void ClaimId(std::string id) { id_ = std::move(id); }

 private:
  void Prepare(grpc::ClientContext& ctx) const {
    ctx.AddMetadata("authorization", "Bearer " + token_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  }
  std::unique_ptr<v1::AgentService::Stub> stub_;
  std::string token_;
  std::string id_;
};

std::string Sha256Of(const fs::path& file) {
  const fs::path out = file.string() + ".sha";
  std::system(absl::StrCat("sha256sum ", file.string(), " >", out.string()).c_str());
  return ReadAll(out.string()).substr(0, 64);
}

// The records of job `id` in the daemon's record database (JSON objects), read with `loom records`.
// The records of job `id` in the daemon's record database: `db`, or dir/state.db.records.
std::vector<nlohmann::json> JobRecords(const fs::path& dir, const std::string& id,
                                       const std::string& db = "") {
  const fs::path out = dir / "records.jsonl";
  fs::remove(out);
  std::system(absl::StrCat(LOOM_BINARY, " records export --db '",
                           db.empty() ? (dir / "state.db.records").string() : db, "' -o ",
                           out.string(), " >/dev/null 2>&1")
                  .c_str());
  std::vector<nlohmann::json> records;
  std::istringstream in(ReadAll(out.string()));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    // The job's trials: its uid "<id>.<hex>", not its untuned baseline ("<uid>#default").
    const std::string job = j.is_discarded() ? "" : j.value("job_id", "");
    if (job.rfind(id + ".", 0) == 0 && job.find('#') == std::string::npos) records.push_back(j);
  }
  return records;
}

TEST_F(ServiceProcessTest, ForgedAgentsAreRefusedFlaggedAndTheJobsFinishOnHonestAgents) {
  StartServe();
  // A device-only honest agent; its registration line gives its id and its device's target key.
  StartAgent("honest-dev", {"--cpu-slots", "0", "--no-lend-device-cores"}, /*default_slots=*/false);
  std::string honest_id, key;
  ASSERT_TRUE(WaitFor(
      [&] {
        // event=agent_registered agent=ID identity=honest-dev ... devices=NAME=KEY (quoted when
        // the key has spaces).
        std::istringstream in(ServeLog());
        std::string line;
        while (std::getline(in, line)) {
          if (line.find("event=agent_registered") == std::string::npos ||
              line.find("identity=honest-dev ") == std::string::npos) {
            continue;
          }
          const size_t a = line.find(" agent=") + 7;
          honest_id = line.substr(a, line.find(' ', a) - a);
          std::string devices = line.substr(line.find(" devices=") + 9);
          devices = devices.front() == '"' ? devices.substr(1, devices.find('"', 1) - 1)
                                           : devices.substr(0, devices.find(' '));
          key = devices.substr(devices.find('=') + 1);
          return true;
        }
        return false;
      },
      30))
      << ServeLog();
  std::smatch m;

  // A planted object: its constructor would leave a marker if any agent ever loaded it.
  const fs::path marker = dir_ / "PLANTED-RAN";
  std::ofstream(dir_ / "plant.cc") << "#include <cstdio>\n__attribute__((constructor)) static void "
                                      "P() { std::FILE* f = std::fopen(\""
                                   << marker.string() << "\", \"w\"); if (f) std::fclose(f); }\n";
  ASSERT_EQ(std::system(absl::StrCat("g++ -shared -fPIC -o ", (dir_ / "plant.so").string(), " ",
                                     (dir_ / "plant.cc").string())
                            .c_str()),
            0);
  const std::string plant = ReadAll((dir_ / "plant.so").string());
  const std::string plant_hash = Sha256Of(dir_ / "plant.so");

  RawAgent evil(server_, "tok-agent-evil");
  grpc::Status st = evil.Register(1, "", "", "0.0.0-other");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("agent version '0.0.0-other' is not this daemon's"));
  ASSERT_TRUE(evil.Register(1, "", "").ok());
  // Its own token cannot claim the honest agent's id.
  st = evil.Heartbeat(honest_id);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("belongs to another agent's credential"));

  // The evil agent answers every CPU stage (its planted object as each build) while `done`.
  std::atomic<bool> stop{false};
  std::atomic<int> planted{0};
  auto serve_cpu_stages = [&](RawAgent& a) {
    while (!stop.load()) {
      for (const v1::StageRequest& stage : a.Acquire(300)) {
        v1::StageResult r;
        r.set_lease_id(stage.lease_id());
        if (stage.kind() == v1::STAGE_KIND_PROPOSE) {
          r.mutable_propose()->add_config_indices(0);
          r.mutable_propose()->add_config_indices(1);
        } else if (stage.kind() == v1::STAGE_KIND_BUILD) {
          for (int64_t c : stage.build().config_indices()) {
            v1::Artifact* art = r.mutable_build()->add_artifacts();
            art->set_config_index(c);
            art->set_binary(plant);
            art->set_content_hash(plant_hash);
          }
          ++planted;
        } else if (stage.kind() == v1::STAGE_KIND_UPDATE) {
          r.mutable_update();
        } else {
          continue;
        }
        a.Report(r);
      }
    }
  };
  std::thread cpu(serve_cpu_stages, std::ref(evil));
  Outcome o = Loom("submit tiny_cnn --trials 2 --batch-size 2 --tasks 0");
  ASSERT_EQ(o.code, 0) << o.err;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)")));
  const std::string j1 = m[1];
  EXPECT_TRUE(WaitFor([&] { return AllSucceeded({j1}); }, 120)) << Jobs().dump(1);
  EXPECT_GE(planted.load(), 1);
  EXPECT_FALSE(fs::exists(marker)) << "a planted object was loaded";
  std::vector<nlohmann::json> r1 = JobRecords(dir_, j1);
  EXPECT_EQ(r1.size(), 2u);
  for (const auto& r : r1) EXPECT_EQ(r.value("agent_id", ""), "honest-dev") << r.dump();

  // Phase 2: the only device belongs to evil2, which forges its costs; evil reports a stage it
  // does not hold. Both are refused and flagged; an honest agent then finishes the job.
  Kill(agents_[0]);
  ASSERT_TRUE(WaitFor(
      [&] { return ServeLog().find("event=agent_lost agent=" + honest_id) != std::string::npos; },
      30));
  RawAgent evil2(server_, "tok-agent-evil2");
  ASSERT_TRUE(evil2.Register(0, "cpu:0", key).ok());
  o = Loom("submit tiny_cnn --trials 2 --batch-size 2 --tasks 0");
  ASSERT_EQ(o.code, 0) << o.err;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)")));
  const std::string j2 = m[1];
  std::vector<v1::StageRequest> measure;
  ASSERT_TRUE(WaitFor(
      [&] {
        measure = evil2.Acquire(300);
        return !measure.empty();
      },
      60));
  ASSERT_EQ(measure[0].kind(), v1::STAGE_KIND_MEASURE);
  stop = true;
  cpu.join();
  v1::StageResult forged;
  forged.set_lease_id(measure[0].lease_id());
  for (const v1::Artifact& a : measure[0].measure().artifacts()) {
    EXPECT_TRUE(a.binary().empty());  // objects never travel
    v1::MeasureResult* r = forged.mutable_measure()->add_results();
    r->set_config_index(a.config_index());
    r->add_costs(1e-9);
    r->set_checked(true);
  }
  st = evil.Report(forged);  // a stage evil does not hold
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("of another agent"));
  st = evil2.Report(forged);  // 1e-9 s: far above a core's peak
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("above the device's physical bound"));
  st = evil2.Register(0, "cpu:0", key);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("agent 'evil2' is flagged"));
  EXPECT_THAT(ServeLog(), HasSubstr("event=agent_flagged"));

  StartAgent("honest-full");
  EXPECT_TRUE(WaitFor([&] { return AllSucceeded({j2}); }, 120)) << Jobs().dump(1);
  // evil's round (its proposal came without the session tuner's state) does not replay in the
  // honest agent's update stage: the daemon drops that round, names its proposer, and the
  // session proposes again on the honest agent. The dropped round's measurements (by
  // honest-full) stay as records; the job's trials are its session's.
  const std::string log2 = Loom("logs " + j2).out;
  EXPECT_THAT(log2, HasSubstr("task 0: round 0 dropped, its proposal is not the session's tuner's"))
      << log2;
  EXPECT_THAT(log2, HasSubstr("does not replay")) << log2;
  EXPECT_THAT(log2, HasSubstr("proposed by agent " + evil.id())) << log2;
  std::vector<nlohmann::json> r2 = JobRecords(dir_, j2);
  EXPECT_GE(r2.size(), 2u);
  EXPECT_LE(r2.size(), 4u);
  for (const auto& r : r2) {
    EXPECT_EQ(r.value("agent_id", ""), "honest-full") << r.dump();
    EXPECT_GT(r.value("median_cost", 0.0), 1e-7) << r.dump();  // not the forged 1e-9
  }
  EXPECT_FALSE(fs::exists(marker)) << "a planted object was loaded";
  Outcome stats = Loom("jobs --all --ended --json", "tok-root");
  int flagged = 0;
  for (const auto& r :
       nlohmann::json::parse(stats.out).value("resources", nlohmann::json::array())) {
    flagged += r.value("flagged", false) ? 1 : 0;
  }
  EXPECT_EQ(flagged, 2);
}

// `loom serve --insecure` without a tokens file authenticates nobody: an agent's registration
// secret is what tells it from a caller that only knows its id. A real `loom agent` (no token)
// finishes a real job; a client that claims that agent's id without the secret is refused, in one
// line, on heartbeats, AcquireStages and ReportStage (a forged measurement of the agent's running
// stage). It takes no stage and stores nothing: the job's records are all the agent's real ones,
// and the agent is neither flagged nor lost.
TEST_F(ServiceProcessTest, WithoutTokensOnlyTheRegistrationsSecretActsForAnAgent) {
  without_tokens_ = true;
  StartServe({"--insecure"});
  EXPECT_THAT(ServeLog(), HasSubstr("event=insecure auth=off"));
  // Lending no cores, it also starts where this test may use one core only.
  StartAgent("host-a", {"--no-lend-device-cores"});
  std::string agent_id;
  std::smatch m;
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string log = ServeLog();
        if (!std::regex_search(log, m, std::regex("event=agent_registered agent=([^ ]+)"))) {
          return false;
        }
        agent_id = m[1];
        return true;
      },
      30))
      << ServeLog();
  Outcome o = Loom("submit tiny_cnn --trials 4 --batch-size 2 --tasks 0");
  ASSERT_EQ(o.code, 0) << o.err;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)"))) << o.out;
  const std::string id = m[1];
  // The agent's first measurement, by its lease (the agent logs each stage it starts).
  const std::string agent_log = (dir_ / "host-a.log").string();
  std::string lease;
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string log = ReadAll(agent_log);
        if (!std::regex_search(log, m,
                               std::regex("event=stage_start lease=\"?([A-Za-z0-9_.-]+)\"? "
                                          ".*kind=measure"))) {
          return false;
        }
        lease = m[1];
        return true;
      },
      120))
      << ReadAll(agent_log);

  RawAgent forger(server_, "no-token");
  forger.ClaimId(agent_id);
  auto expect_refused = [&](const grpc::Status& st, const char* call) {
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << call;
    EXPECT_EQ(st.error_message(),
              absl::StrCat("agent id '", agent_id,
                           "' is not this caller's registration (its session secret does not "
                           "match)"))
        << call;
  };
  expect_refused(forger.Heartbeat(agent_id), "Heartbeat");
  std::vector<v1::StageRequest> taken;
  expect_refused(forger.Acquire(500, &taken), "AcquireStages");
  EXPECT_TRUE(taken.empty());
  v1::StageResult forged;
  forged.set_lease_id(lease);
  for (int64_t config : {0, 1}) {
    v1::MeasureResult* r = forged.mutable_measure()->add_results();
    r->set_config_index(config);
    r->add_costs(1e-9);
    r->set_checked(true);
  }
  expect_refused(forger.Report(forged), "ReportStage");

  ASSERT_TRUE(WaitFor([&] { return AllSucceeded({id}); }, 180)) << Jobs().dump(1);
  std::vector<nlohmann::json> records = JobRecords(dir_, id);
  EXPECT_EQ(records.size(), 4u);
  for (const auto& r : records) {
    EXPECT_EQ(r.value("agent_id", ""), "unauthenticated:host-a") << r.dump();
    EXPECT_GT(r.value("median_cost", 0.0), 1e-7) << r.dump();  // measured, not the forged 1e-9
  }
  const std::string serve_log = ServeLog();
  size_t refusals = 0;
  for (size_t at = 0; (at = serve_log.find("event=agent_session_refused claimed=" + agent_id,
                                           at)) != std::string::npos;
       ++at) {
    ++refusals;
  }
  EXPECT_EQ(refusals, 3u) << serve_log;
  EXPECT_THAT(serve_log, Not(HasSubstr("event=agent_flagged")));
  EXPECT_THAT(serve_log, Not(HasSubstr("event=agent_lost")));
  nlohmann::json resources = Jobs().value("resources", nlohmann::json::array());
  ASSERT_EQ(resources.size(), 1u) << resources.dump();
  EXPECT_TRUE(resources[0].value("alive", false)) << resources.dump();
  EXPECT_FALSE(resources[0].value("flagged", true)) << resources.dump();
}

// Issue 19's done-when: one job (tiny_cnn's first task, random search, seed 3, 6 trials in rounds
// of 2) run by `loom tune` (the single-job loop), by the embedded engine (`--policy`) and by the
// service (a real daemon and agent on loopback) proposes the same configs in the same order: all
// three only map the task session's requests to resources.
TEST_F(ServiceProcessTest, TuneTheEngineAndTheServiceProposeTheSameConfigsInTheSameOrder) {
  // The configs of the trial records in `db` (not the baseline's "#default"), in stored order.
  auto configs_in = [&](const std::string& db) {
    const fs::path out = dir_ / "order.jsonl";
    fs::remove(out);
    EXPECT_EQ(std::system(absl::StrCat(LOOM_BINARY, " records export --db '", db, "' -o ",
                                       out.string(), " >/dev/null 2>&1")
                              .c_str()),
              0);
    std::vector<int64_t> configs;
    std::istringstream in(ReadAll(out.string()));
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || j.value("job_id", "").find('#') != std::string::npos) continue;
      configs.push_back(j.value("config_index", int64_t{-1}));
    }
    return configs;
  };
  const std::string job = "--tasks 0 --trials 6 --batch-size 2 --tuner random --seed 3";
  const std::string single_db = (dir_ / "single.db").string();
  Outcome o = Loom(absl::StrCat("tune zoo:tiny_cnn ", job, " --db ", single_db));
  ASSERT_EQ(o.code, 0) << o.err;
  const std::string engine_db = (dir_ / "engine.db").string();
  o = Loom(absl::StrCat("tune zoo:tiny_cnn ", job, " --policy interleaved --db ", engine_db));
  ASSERT_EQ(o.code, 0) << o.err;

  StartServe();
  StartAgent("host-a");
  o = Loom("submit tiny_cnn " + job);
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)")));
  const std::string id = m[1];
  ASSERT_TRUE(WaitFor([&] { return AllSucceeded({id}); }, 120)) << Jobs().dump(1);

  const std::vector<int64_t> want = configs_in(single_db);
  ASSERT_EQ(want.size(), 6u);
  EXPECT_EQ(configs_in(engine_db), want);
  EXPECT_EQ(configs_in((dir_ / "state.db.records").string()), want);
}

TEST_F(ServiceProcessTest, UploadsCannotReachServerFilesNorFoldBombsAndErrorsEchoNoPathsOrValues) {
  StartServe();
  // A Reshape whose shape is external data pointing at a server file (the 115 bytes).
  std::ofstream(dir_ / "secret.txt") << "TOP-SECRET-CONTENT";
  auto reshape = [](const std::vector<int64_t>& x, onnx::TensorProto shape) {
    onnx::ModelProto model;
    model.set_ir_version(8);
    model.add_opset_import()->set_version(13);
    onnx::GraphProto* g = model.mutable_graph();
    g->set_name("g");
    shape.set_name("shape");
    shape.set_data_type(onnx::TensorProto::INT64);
    *g->add_initializer() = shape;
    onnx::NodeProto* n = g->add_node();
    n->set_name("r");
    n->set_op_type("Reshape");
    n->add_input("x");
    n->add_input("shape");
    n->add_output("y");
    onnx::ValueInfoProto* in = g->add_input();
    in->set_name("x");
    in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : x) {
      in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
    }
    g->add_output()->set_name("y");
    return model.SerializeAsString();
  };
  onnx::TensorProto external;
  external.add_dims(4);
  external.set_data_location(onnx::TensorProto::EXTERNAL);
  auto* location = external.add_external_data();
  location->set_key("location");
  location->set_value((dir_ / "secret.txt").string().substr(1));
  std::ofstream(dir_ / "external.onnx", std::ios::binary) << reshape({2, 2}, external);
  Outcome o = Loom("submit " + (dir_ / "external.onnx").string() + " --trials 2");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("INVALID_ARGUMENT: model: initializer 'shape' uses external data"));
  EXPECT_THAT(o.err, ::testing::Not(HasSubstr("TOP-SECRET")));
  EXPECT_THAT(o.err, ::testing::Not(HasSubstr(dir_.string())));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;

  // A model the importer refuses: the message names the node, not where the server put it, and
  // not the tensor's values.
  onnx::TensorProto bad_shape;
  bad_shape.add_dims(3);
  for (int i = 0; i < 3; ++i) bad_shape.add_int64_data(7);
  std::ofstream(dir_ / "bad.onnx", std::ios::binary) << reshape({2, 3}, bad_shape);
  o = Loom("submit " + (dir_ / "bad.onnx").string() + " --trials 2");
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("INVALID_ARGUMENT: model: "));
  EXPECT_THAT(o.err, HasSubstr("'r'"));
  EXPECT_THAT(o.err, ::testing::Not(HasSubstr((dir_ / "tmp").string())));
  EXPECT_THAT(o.err, ::testing::Not(HasSubstr("7,7,7")));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  // A folding bomb: a 1-element constant padded by 268435455 (1 GiB once folded) is refused by
  // the folding budget before anything is allocated, and the daemon stays small.
  {
    onnx::ModelProto bomb;
    bomb.set_ir_version(8);
    bomb.add_opset_import()->set_version(13);
    onnx::GraphProto* g = bomb.mutable_graph();
    g->set_name("g");
    onnx::TensorProto* c = g->add_initializer();
    c->set_name("c");
    c->set_data_type(onnx::TensorProto::FLOAT);
    c->add_dims(1);
    c->add_float_data(1);
    onnx::TensorProto* pads = g->add_initializer();
    pads->set_name("pads");
    pads->set_data_type(onnx::TensorProto::INT64);
    pads->add_dims(2);
    pads->add_int64_data(0);
    pads->add_int64_data(268435455);
    onnx::NodeProto* n = g->add_node();
    n->set_name("p");
    n->set_op_type("Pad");
    n->add_input("c");
    n->add_input("pads");
    n->add_output("y");
    g->add_output()->set_name("y");
    std::ofstream(dir_ / "bomb.onnx", std::ios::binary) << bomb.SerializeAsString();
  }
  for (int i = 0; i < 3; ++i) {
    o = Loom("submit " + (dir_ / "bomb.onnx").string() + " --trials 2");
    EXPECT_NE(o.code, 0);
    EXPECT_THAT(o.err, HasSubstr("model: constant folding Pad 'p': output 'y' would be"));
    EXPECT_THAT(o.err, HasSubstr("above the per-tensor limit of 67108864 bytes"));
  }
  std::istringstream status(ReadAll(absl::StrCat("/proc/", serve_.pid, "/status")));
  int64_t peak_kib = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) peak_kib = std::stoll(line.substr(6));
  }
  EXPECT_GT(peak_kib, 0);
  EXPECT_LT(peak_kib, 512 * 1024) << "the daemon's peak RSS grew to " << peak_kib << " KiB";
  EXPECT_TRUE(Alive(serve_));
  // Nothing of the uploads is left on the server.
  EXPECT_TRUE(fs::is_empty(dir_ / "tmp"));
}

TEST_F(ServiceProcessTest, SecondDaemonOnTheSameStateOrPortExitsNamingTheHolder) {
  StartServe();
  const std::string id = Submit("tasks=1,rounds=1");
  pid_t holder = serve_.pid;
  // Same state file, another port.
  Outcome o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --tokens ", (dir_ / "tokens").string(),
                                " --state ", (dir_ / "state.db").string()));
  EXPECT_EQ(o.code, 1);
  EXPECT_EQ(o.err, absl::StrCat("loom: error: state file '", (dir_ / "state.db").string(),
                                "' is in use by another loom serve (pid ", holder,
                                "): one daemon per state file\n"));
  // Same port, another state file.
  o = Loom(absl::StrCat("serve --listen ", server_, " --tokens ", (dir_ / "tokens").string(),
                        " --state ", (dir_ / "other.db").string()));
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr(absl::StrCat("the port is in use by pid ", holder)));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  // The first daemon still owns its job and answers.
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr(absl::StrCat("job ", id)));
}

class PostgresServiceTest : public ServiceBackendTest {};
INSTANTIATE_TEST_SUITE_P(Postgres, PostgresServiceTest,
                         ::testing::Values(loom::tune::testing::StoreBackend::kPostgres),
                         loom::tune::testing::StoreBackendName<
                             ::testing::TestParamInfo<loom::tune::testing::StoreBackend>>);

TEST_P(PostgresServiceTest, SecondDaemonOnTheSameDatabaseExitsNamingTheHolderNeverThePassword) {
  // libpq sends the password only when the server asks (this cluster trusts local users): it
  // must still never be printed.
  state_ += "&password=hunter2";
  StartServe();
  EXPECT_THAT(ServeLog(), HasSubstr("password=***"));
  EXPECT_THAT(ServeLog(), Not(HasSubstr("hunter2")));
  const std::string id = Submit("tasks=1,rounds=1");
  Outcome o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --tokens ", (dir_ / "tokens").string(),
                                " --state '", state_, "'"));
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr(absl::StrCat("loom: error: state '",
                                            state_.substr(0, state_.find("password=")),
                                            "password=***' is in use by another loom serve (loom "
                                            "serve pid ",
                                            serve_.pid, " on ")));
  EXPECT_THAT(o.err, Not(HasSubstr("hunter2")));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  // An unreachable database: one line naming it.
  o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --tokens ", (dir_ / "tokens").string(),
                        " --state 'postgresql://loom:pw@127.0.0.1:1/none?connect_timeout=5'"));
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("loom: error: cannot connect to PostgreSQL at "
                               "'postgresql://loom:***@127.0.0.1:1/none?connect_timeout=5'"));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  // The first daemon still owns its job and answers.
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr(absl::StrCat("job ", id)));
}

// Starts one more `loom serve --standby` on the test's PostgreSQL state (port 0), and waits until
// it listens; its port in *port.
Proc StartStandby(const fs::path& dir, const std::string& state, const std::string& name,
                  int* port) {
  const std::string log = (dir / (name + ".log")).string();
  Proc p = Spawn({LOOM_BINARY, "serve", "--listen", "127.0.0.1:0", "--state", state, "--tokens",
                  (dir / "tokens").string(), "--heartbeat-timeout", "1", "--standby"},
                 log);
  EXPECT_TRUE(WaitForServing(p, port)) << ReadAll(log);
  return p;
}

// A measure stage the agent started and has not reported yet (its log: "stage_start lease=L ...
// kind=measure", later "reported lease=L").
bool MeasuringNow(const std::string& agent_log) {
  std::regex start_re("event=stage_start lease=\"?([A-Za-z0-9_.-]+)\"? .*kind=measure");
  for (auto it = std::sregex_iterator(agent_log.begin(), agent_log.end(), start_re);
       it != std::sregex_iterator(); ++it) {
    const std::string lease = (*it)[1];
    if (!std::regex_search(agent_log, std::regex("event=(reported|report_rejected|report_dropped)"
                                                 " lease=\"?" +
                                                 lease + "\"?( |$)"))) {
      return true;
    }
  }
  return false;
}

TEST_P(PostgresServiceTest, StandbyTakesOverWhenTheActiveDaemonIsKilledMidMeasure) {
  StartServe({"--standby"});  // the first daemon on the state leads at once
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(ServeLog(), "event=lead epoch="); }, 30))
      << ServeLog();
  const std::string active = server_;
  int standby_port = 0;
  Proc standby = StartStandby(dir_, state_, "standby", &standby_port);
  ASSERT_TRUE(Alive(standby));
  const std::string second = absl::StrCat("127.0.0.1:", standby_port);
  EXPECT_THAT(ReadAll((dir_ / "standby.log").string()), HasSubstr("event=standby"));
  // Agents and clients get both daemons, the standby first: its redirect is followed.
  server_ = absl::StrCat(second, ",", active);
  StartAgent("host-a");
  Outcome o = Loom("submit tiny_cnn --trials 6 --batch-size 2 --max-tasks 2");
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)")));
  const std::string id = m[1];
  // A client that knows only the standby is redirected to the active daemon.
  server_ = second;
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr(absl::StrCat("job ", id)));
  server_ = absl::StrCat(active, ",", second);
  auto records = [&] {
    std::map<std::string, int64_t> r;
    States(&r);
    return r[id];
  };
  const std::string agent_log = (dir_ / "host-a.log").string();
  ASSERT_TRUE(WaitFor([&] { return records() >= 2 && MeasuringNow(ReadAll(agent_log)); }, 240))
      << Jobs().dump(1) << ReadAll(agent_log);
  const auto killed = std::chrono::steady_clock::now();
  Kill(serve_);  // SIGKILL of the active daemon, mid-measure
  // The standby leads, and answers a client as the active daemon.
  ASSERT_TRUE(WaitFor(
      [&] {
        server_ = second;
        Outcome s = Loom("status " + id);
        server_ = absl::StrCat(active, ",", second);
        return s.code == 0;
      },
      60))
      << ReadAll((dir_ / "standby.log").string());
  const double failover_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed).count();
  std::printf("failover: kill -9 of the active daemon -> the standby serving: %.0f ms\n",
              failover_ms);
  EXPECT_LT(failover_ms, 15000);
  EXPECT_THAT(ReadAll((dir_ / "standby.log").string()), HasSubstr("event=lead epoch="));
  ASSERT_TRUE(WaitFor([&] { return AllSucceeded({id}); }, 300))
      << Jobs().dump(1) << ReadAll((dir_ / "standby.log").string());
  // Every trial has exactly one record: 2 tasks x 6 trials, no config measured twice.
  std::vector<nlohmann::json> all = JobRecords(dir_, id, state_);
  EXPECT_EQ(all.size(), 12u);
  std::set<std::pair<std::string, int64_t>> distinct;
  for (const auto& r : all) distinct.insert({r.value("task_key", ""), r.value("config_index", -1)});
  EXPECT_EQ(distinct.size(), all.size());
  EXPECT_EQ(records(), 12);

  // A leader that comes back after its lead passed on cannot write: stop the new leader, cut its
  // database session (as a partition would), let a third daemon take over, then wake it up.
  int third_port = 0;
  Proc third = StartStandby(dir_, state_, "third", &third_port);
  ASSERT_TRUE(Alive(third));
  kill(standby.pid, SIGSTOP);
  PGconn* conn = PQconnectdb(state_.c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  const std::string cut = absl::StrCat(
      "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name LIKE "
      "'loom serve pid ",
      standby.pid, " on %'");
  PGresult* res = PQexec(conn, cut.c_str());
  EXPECT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << PQerrorMessage(conn);
  EXPECT_EQ(PQntuples(res), 1);
  PQclear(res);
  PQfinish(conn);
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(ReadAll((dir_ / "third.log").string()), "event=lead"); }, 60))
      << ReadAll((dir_ / "third.log").string());
  kill(standby.pid, SIGCONT);
  ASSERT_TRUE(WaitFor([&] { return !Alive(standby); }, 30));
  const std::string stale = ReadAll((dir_ / "standby.log").string());
  EXPECT_THAT(stale, HasSubstr("loom serve: fatal: state '"));
  EXPECT_THAT(stale, HasSubstr("is led by a newer loom serve (epoch "));
  EXPECT_THAT(stale, HasSubstr(absl::StrCat(", at 127.0.0.1:", third_port)));
  EXPECT_THAT(stale, HasSubstr("has ended and its write is refused; it steps down"));
  // The third daemon holds the state, the job's records untouched.
  server_ = absl::StrCat("127.0.0.1:", third_port);
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("succeeded"));
  EXPECT_EQ(JobRecords(dir_, id, state_).size(), 12u);
  Kill(third);
  Kill(standby);
}

TEST_P(PostgresServiceTest, AHungLeaderLosesTheLeadWhenItsLeaseExpiresAndStepsDownWhenItWakes) {
  constexpr double kLeaseS = 2;
  StartServe({"--standby", "--lease-timeout", absl::StrCat(kLeaseS)});
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(ServeLog(), "event=lead epoch="); }, 30))
      << ServeLog();
  const std::string id = Submit("tasks=1,rounds=2");
  int standby_port = 0;
  Proc standby = StartStandby(dir_, state_, "standby", &standby_port);
  ASSERT_TRUE(Alive(standby));
  const std::string standby_log = (dir_ / "standby.log").string();
  // The leader hangs with its database sessions open (and the state's lock held).
  ASSERT_EQ(kill(serve_.pid, SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  server_ = absl::StrCat("127.0.0.1:", standby_port);
  ASSERT_TRUE(WaitFor([&] { return Loom("status " + id).code == 0; }, kLeaseS + 10))
      << ReadAll(standby_log);
  const double takeover_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  std::printf("hung leader (SIGSTOP) -> the standby serving: %.1f s (lease %.0f s)\n", takeover_s,
              kLeaseS);
  const std::string taken = ReadAll(standby_log);
  EXPECT_THAT(taken, HasSubstr("event=lease_expired"));
  EXPECT_THAT(taken, HasSubstr("event=lead epoch="));
  // The old leader wakes up: its next write (the lease renewal) is refused by the epoch, and it
  // exits with one line.
  ASSERT_EQ(kill(serve_.pid, SIGCONT), 0);
  int status = 0;
  ASSERT_TRUE(WaitFor([&] { return waitpid(serve_.pid, &status, WNOHANG) == serve_.pid; }, 30))
      << ServeLog();
  serve_.pid = -1;
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  const std::string stale = ServeLog();
  std::regex fatal_re("loom serve: fatal: ");
  EXPECT_EQ(std::distance(std::sregex_iterator(stale.begin(), stale.end(), fatal_re),
                          std::sregex_iterator()),
            1)
      << stale;
  EXPECT_THAT(stale, HasSubstr("is led by a newer loom serve (epoch "));
  EXPECT_THAT(stale, HasSubstr(absl::StrCat(", at 127.0.0.1:", standby_port)));
  EXPECT_THAT(stale, HasSubstr("has ended and its write is refused; it steps down"));
  // The job lives on under the new leader.
  Outcome o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr(absl::StrCat("job ", id)));
  Kill(standby);
}

TEST_F(ServiceProcessTest, ASecondDaemonOnAnSqliteStateIsRefusedEvenAsAStandby) {
  StartServe();
  Outcome o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --tokens ", (dir_ / "tokens").string(),
                                " --state ", state_, " --standby"));
  EXPECT_EQ(o.code, 2);  // a usage mistake
  EXPECT_THAT(o.err, HasSubstr(absl::StrCat("loom: error: --standby needs a postgresql:// --state: "
                                            "the SQLite state '",
                                            state_, "' is one daemon's alone")));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_TRUE(Alive(serve_));
}

TEST_F(ServiceProcessTest, EachUsersOpenWatchesAreCapped) {
  StartServe({"--max-watches-per-user", "1"});
  const std::string id = Submit("tasks=1,rounds=1");  // no agent: it waits, watchers stay open
  // Two of alice's watches at once: whichever reaches the daemon second is refused, the other
  // stays open (neither ends by itself: the job waits for an agent).
  const std::string kRefused = "RESOURCE_EXHAUSTED: too many open watches";
  std::vector<Proc> watchers;
  for (int k = 0; k < 2; ++k) {
    watchers.push_back(Spawn({LOOM_BINARY, "watch", id, "--server", server_},
                             (dir_ / absl::StrCat("watch", k, ".log")).string(),
                             {{"LOOM_TOKEN", "tok-alice"}}));
  }
  auto refused = [&](int k) {
    return ReadAll(watchers[k].log).find(kRefused) != std::string::npos;
  };
  EXPECT_TRUE(WaitFor([&] { return refused(0) || refused(1); }, 30))
      << ReadAll(watchers[0].log) << ReadAll(watchers[1].log);
  EXPECT_FALSE(refused(0) && refused(1));
  Outcome o;
  // Another user's watch is not counted against alice.
  const std::string bobs = Submit("tasks=1,rounds=1", "tok-bob");
  EXPECT_EQ(Loom("cancel " + bobs, "tok-bob").code, 0);
  o = Loom("watch " + bobs, "tok-bob");
  EXPECT_THAT(o.err, HasSubstr("cancelled"));
  EXPECT_THAT(o.err, ::testing::Not(HasSubstr("RESOURCE_EXHAUSTED")));
  for (Proc& w : watchers) Kill(w);
}

TEST_F(ServiceProcessTest, InsecureModesMustBeAskedForAndAreLogged) {
  const std::string state = (dir_ / "s.db").string();
  Outcome o = Loom("serve --listen 127.0.0.1:0 --state " + state);
  EXPECT_EQ(o.code, 2);  // a usage error
  EXPECT_THAT(o.err, HasSubstr("no --tokens file: every caller would be an unauthenticated admin"));
  o = Loom(absl::StrCat("serve --listen 0.0.0.0:0 --tokens ", (dir_ / "tokens").string(),
                        " --state ", state));
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("reaches beyond this host but TLS is off"));
  // Agents take no token in argv.
  o = Loom("agent --server 127.0.0.1:1 --token secret");
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("--token"));
  // Asked for: it starts, and says so.
  StartServe({"--insecure"});
  EXPECT_THAT(ServeLog(), HasSubstr("level=warn event=insecure auth=tokens tls=off"));
}

TEST_F(ServiceProcessTest, CancelledJobsMeasureWorkerIsGoneWithinASecond) {
  StartServe();
  const pid_t agent = StartAgent("host-a");
  // Long measurements: 20 repeats of 1 s each per candidate.
  Outcome o = Loom(
      "submit tiny_cnn --trials 2 --batch-size 2 --tasks 0 --repeat 20 "
      "--min-repeat-ms 1000");
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)")));
  const std::string id = m[1];
  // The agent's measure workers: children running the hidden worker subcommand.
  auto workers = [&] {
    std::vector<pid_t> pids;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string stat = ReadAll((e.path() / "stat").string());
      const size_t close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(stat.substr(close + 2));
      std::string state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      if (ppid != agent || state == "Z") continue;
      if (ReadAll((e.path() / "cmdline").string()).find("measure-worker") != std::string::npos) {
        pids.push_back(std::stoi(name));
      }
    }
    return pids;
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return ReadAll((dir_ / "host-a.log").string()).find("kind=measure") != std::string::npos &&
               !workers().empty();
      },
      120))
      << ReadAll((dir_ / "host-a.log").string());
  const auto cancelled_at = std::chrono::steady_clock::now();
  o = Loom("cancel " + id);
  ASSERT_EQ(o.code, 0) << o.err;
  ASSERT_TRUE(WaitFor([&] { return workers().empty(); }, 5));
  const double gone_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - cancelled_at).count();
  EXPECT_LT(gone_s, 1.0) << "the measure worker outlived the cancel by " << gone_s << " s";
  EXPECT_THAT(ReadAll((dir_ / "host-a.log").string()), HasSubstr("event=stage_cancel"));
  // The device is free: another job's measurement runs on it.
  const std::string next = Submit("tasks=1,rounds=1,measure=0.05");
  EXPECT_TRUE(WaitFor([&] { return AllSucceeded({next}); }, 60)) << Jobs().dump(1);
}

TEST_F(ServiceProcessTest, DamagedOrMismatchedStateIsRefusedWithOneLine) {
  StartServe();
  const std::string id = Submit("tasks=1,rounds=1");
  Kill(serve_, SIGTERM);
  const std::string state = (dir_ / "state.db").string();
  const std::string records = (dir_ / "state.db.records").string();
  auto serve = [&](const std::string& state_path) {
    return Loom(absl::StrCat("serve --listen 127.0.0.1:0 --tokens ", (dir_ / "tokens").string(),
                             " --state ", state_path));
  };
  // Garbage over the last page (an index or table page) of the state file.
  fs::copy_file(state, dir_ / "garbage.db");
  {
    const auto size = fs::file_size(dir_ / "garbage.db");
    std::fstream f(dir_ / "garbage.db", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 4096));
    f << std::string(4096, '\x5a');
  }
  Outcome o = serve((dir_ / "garbage.db").string());
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("is damaged (quick_check:"));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  // A state file truncated to zero bytes does not start over at j1.
  fs::copy_file(state, dir_ / "zero.db");
  fs::resize_file(dir_ / "zero.db", 0);
  o = serve((dir_ / "zero.db").string());
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("is empty (0 bytes): it was truncated"));
  // A fresh state beside the old records (the state was lost) is refused...
  fs::copy_file(records, dir_ / "fresh.db.records");
  o = serve((dir_ / "fresh.db").string());
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("has no jobs but its record database"));
  // ...and so is another state's record database.
  fs::remove(dir_ / "fresh.db");
  fs::remove(dir_ / "fresh.db.records");
  fs::remove(dir_ / "fresh.db.lock");
  StartServe({}, "other.db");
  Submit("tasks=1,rounds=1");  // a state with a job, paired with its own records
  Kill(serve_, SIGTERM);
  fs::copy_file(records, dir_ / "other.db.records", fs::copy_options::overwrite_existing);
  o = serve((dir_ / "other.db").string());
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("belongs to another state file"));
  // The intact pair still serves its job.
  StartServe();
  o = Loom("status " + id);
  EXPECT_EQ(o.code, 0) << o.err;
}

TEST_P(ServiceBackendTest, KillingTheDaemonAndAnAgentMidRealJobLosesAndDuplicatesNoRecord) {
  StartServe();
  StartAgent("host-a");
  StartAgent("host-b");
  Outcome o = Loom("submit tiny_cnn --trials 6 --batch-size 2 --max-tasks 2");
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)")));
  const std::string id = m[1];
  auto records = [&] {
    std::map<std::string, int64_t> r;
    States(&r);
    return r[id];
  };
  ASSERT_TRUE(WaitFor([&] { return records() >= 2; }, 180)) << Jobs().dump(1);
  Kill(serve_);  // SIGKILL, mid-job
  StartServe();
  ASSERT_TRUE(WaitFor([&] { return records() >= 6; }, 180)) << Jobs().dump(1);
  Kill(agents_[0]);  // SIGKILL of an agent, mid-job
  ASSERT_TRUE(WaitFor([&] { return AllSucceeded({id}); }, 240)) << Jobs().dump(1);
  // Every trial has exactly one record: 2 tasks x 6 trials, no config measured twice.
  std::vector<nlohmann::json> all = JobRecords(dir_, id, RecordsDb());
  EXPECT_EQ(all.size(), 12u);
  std::set<std::pair<std::string, int64_t>> distinct;
  for (const auto& r : all) distinct.insert({r.value("task_key", ""), r.value("config_index", -1)});
  EXPECT_EQ(distinct.size(), all.size());
  EXPECT_EQ(records(), 12);
}

}  // namespace

// A JSON field that `--json` writes as a number (never protobuf's string for int64); 0 when absent.
double Num(const nlohmann::json& j, const std::string& key) {
  if (!j.contains(key)) return 0;
  const nlohmann::json& v = j[key];
  EXPECT_TRUE(v.is_number()) << key << ": " << v.dump();
  return v.is_number() ? v.get<double>() : 0;
}

TEST_F(ServiceProcessTest, StatusStatsAndTopShowEtaBestSoFarDevicesAndQueues) {
  StartServe();
  StartAgent("host-a");
  Outcome o = Loom("submit tiny_cnn --trials 12 --batch-size 2 --max-tasks 2");
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)"))) << o.out;
  const std::string id = m[1];

  // While it runs: an ETA from its measured rate, and `top` shows its row and the device.
  nlohmann::json running;
  std::string top;
  ASSERT_TRUE(WaitFor(
      [&] {
        Outcome s = Loom("status --json " + id);
        running = nlohmann::json::parse(s.out, nullptr, false);
        if (running.is_discarded() || running.value("state", "") != "running" ||
            !running.contains("eta_seconds")) {
          return false;
        }
        Outcome t = Loom("top --once --all", "tok-root");
        top = t.out;
        return t.code == 0 && top.find(id + " ") != std::string::npos;
      },
      120))
      << running.dump() << top << ServeLog();
  const double done = Num(running, "trials_done"), total = Num(running, "trials_total");
  EXPECT_EQ(total, 24);
  EXPECT_GE(done, 1);
  EXPECT_LT(done, 24);
  ASSERT_GT(Num(running, "trials_per_second"), 0);
  EXPECT_NEAR(Num(running, "eta_seconds"), (total - done) / Num(running, "trials_per_second"),
              1e-6 * Num(running, "eta_seconds") + 1e-9);
  EXPECT_THAT(top, HasSubstr("TRIALS"));
  EXPECT_THAT(top, HasSubstr("ETA"));
  EXPECT_TRUE(std::regex_search(top, std::regex(id + " +alice .* running +[0-9]+/24 "))) << top;
  EXPECT_TRUE(std::regex_search(top, std::regex("\n[^ ]+ +[^ ]+ +host-a .* yes +[0-9]+ ")))
      << top;  // the agent's device row
  EXPECT_THAT(top, HasSubstr("QUEUE (RESOURCE CLASS)"));
  EXPECT_EQ(top.find("\x1b["), std::string::npos) << "escape codes on a pipe";

  o = Loom("watch " + id);
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("ETA"));
  o = Loom("status --json " + id);
  ASSERT_EQ(o.code, 0) << o.err;
  nlohmann::json job = nlohmann::json::parse(o.out);
  ASSERT_EQ(job.value("state", ""), "succeeded") << job.dump();
  EXPECT_EQ(Num(job, "trials_done"), 24);
  EXPECT_EQ(Num(job, "trials_total"), 24);
  EXPECT_FALSE(job.contains("eta_seconds")) << "an ended job has no ETA";
  EXPECT_FALSE(job.contains("trials_per_second"));

  // Best so far agrees with the job's records: each task's last point is its best record, and
  // the latency is the driver's own estimate (this daemon holds no other records).
  std::vector<nlohmann::json> records = JobRecords(dir_, id);
  ASSERT_EQ(records.size(), 24u);
  std::map<std::string, double> best_gflops;
  for (const auto& r : records) {
    if (r.value("error", "") != "none" || !r["median_cost"].is_number()) continue;
    const double g = r["flops"].get<double>() / r["median_cost"].get<double>() / 1e9;
    best_gflops[r["task_key"]] = std::max(best_gflops[r["task_key"]], g);
  }
  ASSERT_EQ(best_gflops.size(), 2u);
  const auto& history = job["best_history"];
  ASSERT_GE(history.size(), 2u);
  ASSERT_LE(history.size(), 24u);
  std::map<int, double> last;
  double prev_trials = 0;
  for (const auto& p : history) {
    const int task = p.value("task", 0);
    EXPECT_GT(Num(p, "trials"), prev_trials);
    EXPECT_GT(p["task_gflops"].get<double>(), last[task]) << "best-so-far never falls";
    prev_trials = Num(p, "trials");
    last[task] = p["task_gflops"].get<double>();
  }
  for (const auto& [task, g] : last) {
    const std::string key = job["tasks"][task]["task_key"];
    EXPECT_NEAR(g, best_gflops[key], 1e-9 * g) << key;
  }
  ASSERT_TRUE(job.contains("best_latency_ms"));
  EXPECT_NEAR(job["best_latency_ms"].get<double>(), job["estimated_latency_ms"].get<double>(),
              1e-9 * job["best_latency_ms"].get<double>());
  EXPECT_NEAR(history.back()["latency_ms"].get<double>(), job["best_latency_ms"].get<double>(),
              1e-12);
  o = Loom("status " + id);
  EXPECT_THAT(o.out, HasSubstr("progress: 24/24 trials, -/s, ETA -, best latency "));

  // The scheduler's view: the device and its busy time, the queues, numbers as numbers.
  o = Loom("stats --json", "tok-root");
  ASSERT_EQ(o.code, 0) << o.err;
  nlohmann::json stats = nlohmann::json::parse(o.out);
  EXPECT_EQ(stats["policy"], "interleaved");
  EXPECT_TRUE(stats["grants"].is_number_integer());
  // Per round: propose, build, measure, update; 6 rounds per task.
  EXPECT_GE(stats["grants"].get<int64_t>(), 2 * 6 * 4);
  EXPECT_EQ(stats["jobs_total"], 1);
  EXPECT_EQ(stats["agents_alive"], 1);
  ASSERT_EQ(stats["devices"].size(), 1u) << stats.dump();
  const auto& dev = stats["devices"][0];
  EXPECT_EQ(dev["hostname"], "host-a");
  EXPECT_EQ(dev["alive"], true);
  EXPECT_EQ(dev["leases"], 0);
  EXPECT_GT(dev["busy_seconds"].get<double>(), 0);
  EXPECT_GT(dev["utilization"].get<double>(), 0);
  EXPECT_LE(dev["utilization"].get<double>(), 1);
  bool cpu_queue = false, device_queue = false;
  for (const auto& q : stats["queues"]) {
    EXPECT_EQ(q["ready"], 0) << q.dump();  // the job ended: nothing waits
    if (q["device_kind"] == "" && q["cpu_slots"].get<int>() >= 1) cpu_queue = true;
    if (q["device_kind"] == dev["target_key"]) device_queue = true;
  }
  EXPECT_TRUE(cpu_queue) << stats.dump();
  EXPECT_TRUE(device_queue) << stats.dump();
  o = Loom("stats", "tok-root");
  EXPECT_THAT(o.out, HasSubstr("policy interleaved"));
  EXPECT_THAT(o.out, HasSubstr("host-a"));
  o = Loom("stats");  // a user token
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("loom: error: PERMISSION_DENIED"));
  EXPECT_THAT(o.err, HasSubstr("admin token"));
  o = Loom("top --once");  // a user sees jobs and agents, no devices
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("(no active jobs)"));
  EXPECT_THAT(o.out, HasSubstr("host-a"));
}

// `loom top` on a pseudo-terminal: what it wrote, its exit code, and whether the terminal was in
// raw input mode while it ran and canonical again after it exited.
struct PtyRun {
  std::string out;
  int code = -1;
  bool raw_while_running = false;
  bool canonical_after = false;
};

// Starts `loom top` as the session leader of a new pty and, once it drew two frames, types
// `keys` (Ctrl-C is "\x03", delivered as SIGINT by the terminal); waits for it to exit.
PtyRun RunTopOnPty(const std::string& server, const std::string& keys) {
  PtyRun r;
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) return r;
  const std::string slave = ptsname(master);
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();
    const int fd = open(slave.c_str(), O_RDWR);
    ioctl(fd, TIOCSCTTY, 0);
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("LOOM_SERVER", server.c_str(), 1);
    setenv("LOOM_TOKEN", "tok-root", 1);
    execl(LOOM_BINARY, LOOM_BINARY, "top", "--interval", "0.3", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool typed = false;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) r.out.append(buf, static_cast<size_t>(n));
    }
    if (!typed) {
      size_t frames = 0;
      for (size_t at = r.out.find("loom top -"); at != std::string::npos;
           at = r.out.find("loom top -", at + 1)) {
        ++frames;
      }
      if (frames >= 2) {
        termios t{};
        r.raw_while_running = tcgetattr(master, &t) == 0 && !(t.c_lflag & ICANON);
        (void)!write(master, keys.data(), keys.size());
        typed = true;
      }
    }
    if (waitpid(pid, &status, WNOHANG) == pid) {
      r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
  }
  if (r.code < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  // Drain what it wrote last.
  for (pollfd p{master, POLLIN, 0}; poll(&p, 1, 100) > 0;) {
    char buf[4096];
    const ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;
    r.out.append(buf, static_cast<size_t>(n));
  }
  termios t{};
  r.canonical_after = tcgetattr(master, &t) == 0 && (t.c_lflag & ICANON) && (t.c_lflag & ECHO);
  close(master);
  return r;
}

TEST_F(ServiceProcessTest, TopOnATerminalRedrawsUntilQOrCtrlCAndRestoresTheTerminal) {
  StartServe();
  StartAgent("host-a");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto j = nlohmann::json::parse(Loom("stats --json", "tok-root").out, nullptr, false);
        return !j.is_discarded() && j.value("agents_alive", 0) == 1;
      },
      30));
  for (const std::string keys : {"q", "\x03"}) {
    PtyRun r = RunTopOnPty(server_, keys);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(r.raw_while_running);
    EXPECT_TRUE(r.canonical_after) << "the terminal's input mode was not restored";
    // Alternate screen and hidden cursor on; each frame redrawn from the top; both undone last.
    EXPECT_EQ(r.out.rfind("\x1b[?1049h\x1b[?25l", 0), 0u) << r.out;
    EXPECT_THAT(r.out, HasSubstr("\x1b[Hloom top - " + server_));
    EXPECT_THAT(r.out, HasSubstr("host-a"));
    const std::string restore = "\x1b[?25h\x1b[?1049l";
    ASSERT_GE(r.out.size(), restore.size());
    EXPECT_EQ(r.out.substr(r.out.size() - restore.size()), restore) << r.out;
  }
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
