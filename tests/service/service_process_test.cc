// Reliability of `loom serve` with real processes: agents killed with SIGKILL mid-stage, the
// daemon killed and restarted on the same state file, bad requests and tokens, several agents on
// one daemon. Users are driven through the `loom` CLI; agents are `loom agent` processes.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
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
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

// ---------------------------------------------------------------------------------------------
// Processes

struct Proc {
  pid_t pid = -1;
  std::string log;
};

Proc Spawn(const std::vector<std::string>& argv, const std::string& log,
           const std::map<std::string, std::string>& env = {}) {
  Proc p;
  p.log = log;
  p.pid = fork();
  if (p.pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return p;
}

void Kill(Proc& p, int sig = SIGKILL) {
  if (p.pid <= 0) return;
  kill(p.pid, sig);
  int status = 0;
  waitpid(p.pid, &status, 0);
  p.pid = -1;
}

bool Alive(const Proc& p) {
  if (p.pid <= 0) return false;
  int status = 0;
  return waitpid(p.pid, &status, WNOHANG) == 0;
}

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

bool WaitFor(const std::function<bool()>& pred, double seconds) {
  auto end = std::chrono::steady_clock::now() +
             std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

class ServiceProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("loom_service_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "tokens") << "# test tokens\n"
                                   << "tok-alice alice\n"
                                   << "tok-bob bob user\n"
                                   << "tok-root root admin\n"
                                   << "tok-agent fleet agent\n";
  }
  void TearDown() override {
    for (Proc& a : agents_) Kill(a);
    Kill(serve_);
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Starts `loom serve` (port 0 the first time, then the same port) and waits until it listens.
  void StartServe(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {LOOM_BINARY,
                                     "serve",
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", port_),
                                     "--state",
                                     (dir_ / "state.db").string(),
                                     "--tokens",
                                     (dir_ / "tokens").string(),
                                     "--heartbeat-timeout",
                                     "1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const std::string log = (dir_ / absl::StrCat("serve", ++serve_starts_, ".log")).string();
    serve_ = Spawn(argv, log);
    std::regex port_re("event=serving .* port=([0-9]+)");
    std::smatch m;
    ASSERT_TRUE(WaitFor(
        [&] {
          std::string s = ReadAll(log);
          if (std::regex_search(s, m, port_re)) {
            port_ = std::stoi(m[1]);
            return true;
          }
          return !Alive(serve_);
        },
        30))
        << ReadAll(log);
    ASSERT_TRUE(Alive(serve_)) << ReadAll(log);
    server_ = absl::StrCat("127.0.0.1:", port_);
  }

  void StartAgent(const std::string& host, const std::vector<std::string>& extra = {}) {
    const std::string log = (dir_ / (host + ".log")).string();
    std::vector<std::string> argv = {
        LOOM_BINARY,   "agent",     "--server",    server_,
        "--token",     "tok-agent", "--name",      host,
        "--cpu-slots", "2",         "--cache-dir", (dir_ / ("cache-" + host)).string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    agents_.push_back(Spawn(argv, log));
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
      if (records) (*records)[job.value("id", "")] = std::stoll(job.value("records", "0"));
    }
    return s;
  }

  bool AllSucceeded(const std::vector<std::string>& ids) {
    auto s = States();
    for (const auto& id : ids) {
      if (s[id] != "JOB_STATE_SUCCEEDED") return false;
    }
    return true;
  }

  fs::path dir_;
  int port_ = 0;
  int serve_starts_ = 0;
  std::string server_;
  Proc serve_;
  std::vector<Proc> agents_;
  std::string client_env_;  // extra NAME=VALUE words for the CLI's environment
};

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

TEST_F(ServiceProcessTest, ServeKilledAndRestartedResumesEveryJobWithoutLosingRecords) {
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
  o = Loom("status " + id, "tok-agent");
  EXPECT_THAT(o.err, HasSubstr("PERMISSION_DENIED"));
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
  Outcome o = Loom(absl::StrCat("serve --listen 127.0.0.1:0 --state ", (dir_ / "x.db").string(),
                                " --tls-cert ", (dir_ / "ext.cnf").string(), " --tls-key ",
                                (dir_ / "server.key").string()));
  EXPECT_NE(o.code, 0);
  EXPECT_THAT(o.err, HasSubstr("holds no PEM certificate"));

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

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
