// Agents under Slurm (issue 22 item 3), with real processes. The batch script's mapping of a
// node's GRES GPUs and CPUs to `loom agent` flags (its dry-run mode, no Slurm needed); `loom fleet
// slurm`'s one-line refusals before anything is submitted; and a whole cluster started by the test
// in a temporary folder (munged with its own key and socket, slurmctld and slurmd from a generated
// slurm.conf, one node = this host), a real `loom serve`, `loom fleet slurm --nodes 1`, a real
// tiny_cnn job, `scancel` of the allocation mid-job (its agent exits on SIGTERM and the daemon
// requeues its stages), a second allocation that finishes the job with every trial recorded once.
// The cluster test skips, saying why, where the Slurm or munge binaries are absent or the test is
// not root (slurmd must be).
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
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
#include "nlohmann/json.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

const std::string kScript = std::string(LOOM_SOURCE_DIR) + "/scripts/slurm/loom-agents.sbatch";
// The daemon's heartbeat timeout, and how soon after `scancel` the stages must be requeued (by
// the agent's Deregister, not by the timeout).
constexpr int kHeartbeatTimeoutS = 60;
constexpr double kRequeueDeadlineS = 25;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& path, const std::string& text, int mode = 0600) {
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
}

using loom::base::testing::WaitFor;

struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `command` under /bin/sh with `env` (NAME=VALUE words) prepended, capturing both streams.
Outcome Shell(const fs::path& dir, const std::string& env, const std::string& command) {
  const fs::path out = dir / "cmd.out", err = dir / "cmd.err";
  const std::string line =
      absl::StrCat("env ", env, " ", command, " >", out.string(), " 2>", err.string());
  const int rc = std::system(line.c_str());
  Outcome o;
  o.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  o.out = ReadAll(out);
  o.err = ReadAll(err);
  return o;
}

fs::path MakeDir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("loom_", name, "_", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// The batch script's per-node part, in its dry-run mode.

class SlurmScriptTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeDir("slurm_script"); }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  Outcome Node(const std::string& env, const std::string& args = "") {
    return Shell(dir_,
                 absl::StrCat("-i PATH=/usr/bin:/bin LOOM_FLEET_DRY_RUN=1 LOOM_BIN=/opt/loom ",
                              "SLURM_JOB_ID=77 SLURMD_NODENAME=n4 ", env),
                 absl::StrCat("bash ", kScript, " --node ", args));
  }
  fs::path dir_;
};

TEST_F(SlurmScriptTest, GresGpusBecomeCudaDevicesAndTheOtherCpusSlots) {
  // CUDA_VISIBLE_DEVICES renumbers the job's GPUs from 0; each GPU's launcher keeps a core.
  Outcome o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=8 CUDA_VISIBLE_DEVICES=2,3");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            "/opt/loom agent --name slurm-77-n4 --device cuda:0 --device cuda:1 --cpu-slots 6\n");
  // Without it, SLURM_STEP_GPUS (then SLURM_JOB_GPUS) names the physical ordinals.
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=4 SLURM_STEP_GPUS=5 SLURM_JOB_GPUS=1,5");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "/opt/loom agent --name slurm-77-n4 --device cuda:5 --cpu-slots 3\n");
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=4 SLURM_JOB_GPUS=1,5");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            "/opt/loom agent --name slurm-77-n4 --device cuda:1 --device cuda:5 --cpu-slots 2\n");
  // No GPU: the agent's default device (the last core) measures, the other CPUs are slots.
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=6 CUDA_VISIBLE_DEVICES=NoDevFiles");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "/opt/loom agent --name slurm-77-n4 --cpu-slots 5\n");
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=1");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "/opt/loom agent --name slurm-77-n4 --cpu-slots 0\n");
  // The user's own --device and --cpu-slots replace the derived ones; other flags pass through.
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=8 CUDA_VISIBLE_DEVICES=0",
           "--device cpu:1 --cpu-slots=3 --cache-dir '/s p/k'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            "/opt/loom agent --name slurm-77-n4 --device cpu:1 --cpu-slots=3 --cache-dir /s\\ "
            "p/k\n");
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=x");
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("SLURM_CPUS_ON_NODE='x' is not a number"));
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=2 SLURM_JOB_GPUS=gpu0");
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("GPU id 'gpu0'"));
}

TEST_F(SlurmScriptTest, EachNodeTakesItsOwnTokenThroughADescriptorFromAPrivateFile) {
  WriteFile(dir_ / "tokens", "# agents\ntok-a\n\n  tok-b  \ntok-c\n");
  const std::string tokens = (dir_ / "tokens").string();
  Outcome o = Node("SLURM_NODEID=1 SLURM_CPUS_ON_NODE=2 LOOM_AGENT_TOKENS=" + tokens);
  ASSERT_EQ(o.code, 0) << o.err;
  // The token is never in argv: the agent reads it from descriptor 3 (node 1: the second line).
  EXPECT_EQ(o.out,
            "/opt/loom agent --name slurm-77-n4 --cpu-slots 1 --token-file /dev/fd/3 3<token-1\n");
  EXPECT_THAT(o.out, Not(HasSubstr("tok-")));
  o = Node("SLURM_NODEID=3 SLURM_CPUS_ON_NODE=2 LOOM_AGENT_TOKENS=" + tokens);
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("has no token for node index 3 (one line per node)"));
  chmod(tokens.c_str(), 0644);
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=2 LOOM_AGENT_TOKENS=" + tokens);
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("is readable by others (mode 644): chmod 600 it"));
  o = Node("SLURM_NODEID=0 SLURM_CPUS_ON_NODE=2 LOOM_AGENT_TOKENS=" + (dir_ / "none").string());
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("cannot read the agent tokens file"));
  // The batch part refuses to run without a daemon address or outside an allocation.
  o = Shell(dir_, "-i PATH=/usr/bin:/bin", "bash " + kScript);
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("LOOM_SERVER is not set"));
  o = Shell(dir_, "-i PATH=/usr/bin:/bin LOOM_SERVER=h:1", "bash " + kScript);
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("not inside a Slurm allocation"));
  // The binary carries the script it submits.
  o = Shell(dir_, "", std::string(LOOM_BINARY) + " fleet slurm --print-script");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, ReadAll(kScript));
}

// `loom fleet slurm` refuses with one line before submitting anything.
TEST_F(SlurmScriptTest, FleetSlurmRefusesBadTokensFilesAndAMissingSbatch) {
  const std::string loom = LOOM_BINARY;
  WriteFile(dir_ / "tokens", "tok-a\n");
  const std::string tokens = (dir_ / "tokens").string();
  Outcome o = Shell(dir_, "PATH=/nonexistent", loom + " fleet slurm --nodes 1");
  EXPECT_EQ(o.code, 1);
  EXPECT_EQ(o.err,
            "loom: error: fleet slurm: sbatch not found on PATH: run on a Slurm submit host "
            "(Debian: apt-get install slurm-client)\n");
  o = Shell(dir_, "", loom + " fleet slurm --nodes 2 --agent-token-file " + tokens);
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("holds 1 token(s) for 2 node(s): one agent token per node"));
  chmod(tokens.c_str(), 0640);
  o = Shell(dir_, "", loom + " fleet slurm --nodes 1 --agent-token-file " + tokens);
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("is readable by others (mode 640): chmod 600 it"));
  WriteFile(dir_ / "spaced", "tok a\n");
  o = Shell(dir_, "",
            loom + " fleet slurm --nodes 1 --agent-token-file " + (dir_ / "spaced").string());
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("line 1 holds spaces"));
  o = Shell(dir_, "", loom + " fleet slurm");
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("--nodes N (N >= 1) is required"));
  o = Shell(dir_, "", loom + " fleet slurm --nodes 0");
  EXPECT_EQ(o.code, 2);
  o = Shell(dir_, "", loom + " fleet slurm --nodes 1 --wait-timeout nan");
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("--wait-timeout must be 0.1 to 604800 seconds"));
}

// ---------------------------------------------------------------------------------------------
// A Slurm cluster of one node in a temporary folder.

struct Proc {
  pid_t pid = -1;
};

Proc Spawn(const std::vector<std::string>& argv, const fs::path& log,
           const std::map<std::string, std::string>& env = {}) {
  return Proc{.pid = loom::base::testing::SpawnLogged(argv, log.string(),
                                                      {.env = env, .new_process_group = true})};
}

bool Alive(const Proc& p) { return loom::base::testing::ChildAlive(p.pid); }

// SIGTERM, then SIGKILL when it has not ended within `grace` seconds.
void Stop(Proc& p, double grace = 5) {
  if (p.pid <= 0) return;
  kill(p.pid, SIGTERM);
  if (!WaitFor([&] { return !Alive(p); }, grace)) {
    kill(p.pid, SIGKILL);
    int status = 0;
    waitpid(p.pid, &status, 0);
  }
  p.pid = -1;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string Which(const std::string& name) {
  for (const char* d :
       {"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"}) {
    const std::string p = absl::StrCat(d, "/", name);
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

class SlurmFleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> missing;
    for (const char* tool :
         {"munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scancel", "squeue", "sinfo"}) {
      if (Which(tool).empty()) missing.push_back(tool);
    }
    if (!missing.empty()) {
      GTEST_SKIP() << "Slurm cannot start here: " << absl::StrJoin(missing, ", ")
                   << " not installed (Debian: slurm-wlm munge)";
    }
    if (geteuid() != 0) GTEST_SKIP() << "Slurm cannot start here: slurmd must run as root";
    dir_ = MakeDir("slurm_fleet");
    conf_ = (dir_ / "slurm.conf").string();
  }

  void TearDown() override {
    if (!dir_.empty() && ctld_.pid > 0) {
      Shell(dir_, Env(), "scancel --user=root");
      WaitFor([&] { return Squeue().empty(); }, 20);
    }
    Stop(serve_);
    Stop(slurmd_, 10);
    Stop(ctld_, 10);
    Stop(munged_);
    // Anything of ours a dying step left behind (its command line names this test's folder).
    if (!dir_.empty()) KillStragglers();
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  void KillStragglers() {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string cmdline = ReadAll(entry.path() / "cmdline");
      if (cmdline.find(dir_.string()) != std::string::npos) kill(std::stoi(name), SIGKILL);
    }
  }

  // The client environment: this cluster's slurm.conf, the daemon, the user's token.
  std::string Env() const {
    return absl::StrCat("SLURM_CONF=", conf_, " LOOM_SERVER=", server_,
                        " LOOM_TOKEN=tok-alice HOME=", dir_.string());
  }

  std::string Squeue() { return Shell(dir_, Env(), "squeue --noheader --format=%i:%T").out; }

  void StartCluster() {
    const fs::path munge = dir_ / "munge";
    fs::create_directories(munge);
    chmod(munge.c_str(), 0755);
    fs::create_directories(dir_ / "key");
    chmod((dir_ / "key").c_str(), 0700);
    ASSERT_EQ(
        Shell(dir_, "", "mungekey -c -b 1024 -k " + (dir_ / "key" / "munge.key").string()).code, 0);
    const std::string socket = (munge / "sock").string();
    munged_ = Spawn({"munged", "-F", "-f", "--socket=" + socket,
                     "--key-file=" + (dir_ / "key" / "munge.key").string(),
                     "--pid-file=" + (munge / "munged.pid").string(),
                     "--seed-file=" + (munge / "seed").string(),
                     "--log-file=" + (dir_ / "munged.log").string()},
                    dir_ / "munged.out");
    ASSERT_TRUE(WaitFor([&] { return fs::exists(socket) || !Alive(munged_); }, 20))
        << ReadAll(dir_ / "munged.out");
    ASSERT_TRUE(Alive(munged_)) << ReadAll(dir_ / "munged.out");

    for (const char* d : {"state", "spool"}) fs::create_directories(dir_ / d);
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    std::ofstream conf(conf_);
    conf << "ClusterName=loomtest\n"
         << "SlurmctldHost=localhost(127.0.0.1)\n"
         << "SlurmctldPort=" << FreePort() << "\n"
         << "SlurmdPort=" << FreePort() << "\n"
         << "SlurmUser=root\nSlurmdUser=root\n"
         << "AuthType=auth/munge\nCredType=cred/munge\n"
         << "AuthInfo=socket=" << socket << "\n"
         << "StateSaveLocation=" << (dir_ / "state").string() << "\n"
         << "SlurmdSpoolDir=" << (dir_ / "spool").string() << "\n"
         << "SlurmctldPidFile=" << (dir_ / "slurmctld.pid").string() << "\n"
         << "SlurmdPidFile=" << (dir_ / "slurmd.pid").string() << "\n"
         << "SlurmctldLogFile=" << (dir_ / "slurmctld.log").string() << "\n"
         << "SlurmdLogFile=" << (dir_ / "slurmd.log").string() << "\n"
         << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
         << "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
         << "JobCompType=jobcomp/none\nMpiDefault=none\n"
         << "SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n"
         << "ReturnToService=2\nKillWait=15\nInactiveLimit=0\nMinJobAge=300\n"
         << "NodeName=localhost NodeAddr=127.0.0.1 CPUs=" << cpus
         << " RealMemory=100 State=UNKNOWN\n"
         << "PartitionName=loom Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n";
    conf.close();
    const std::map<std::string, std::string> env = {{"SLURM_CONF", conf_}};
    ctld_ = Spawn({"slurmctld", "-D", "-i"}, dir_ / "slurmctld.out", env);
    slurmd_ = Spawn({"slurmd", "-D", "-N", "localhost"}, dir_ / "slurmd.out", env);
    std::string state;
    ASSERT_TRUE(WaitFor(
        [&] {
          state = Shell(dir_, Env(), "sinfo --noheader --format=%T").out;
          return state == "idle\n" || !Alive(ctld_) || !Alive(slurmd_);
        },
        40))
        << state << ReadAll(dir_ / "slurmctld.out") << ReadAll(dir_ / "slurmd.out");
    ASSERT_TRUE(Alive(ctld_) && Alive(slurmd_))
        << ReadAll(dir_ / "slurmctld.out") << ReadAll(dir_ / "slurmd.out");
  }

  void StartServe() {
    WriteFile(dir_ / "tokens",
              "tok-alice alice user\ntok-root root admin\ntok-agent-1 slurm-agent agent\n");
    WriteFile(dir_ / "agent-tokens", "# one per node\ntok-agent-1\n");
    // A long heartbeat timeout: the requeue after scancel must come from the agent's
    // deregistration, well before the daemon would miss its heartbeats.
    serve_ = Spawn({LOOM_BINARY, "serve", "--listen", "127.0.0.1:0", "--state",
                    (dir_ / "state.db").string(), "--tokens", (dir_ / "tokens").string(),
                    "--heartbeat-timeout", absl::StrCat(kHeartbeatTimeoutS)},
                   dir_ / "serve.log");
    std::smatch m;
    ASSERT_TRUE(WaitFor(
        [&] {
          const std::string s = ReadAll(dir_ / "serve.log");
          if (std::regex_search(s, m, std::regex("event=serving .* port=([0-9]+)"))) {
            server_ = absl::StrCat("127.0.0.1:", m[1].str());
            return true;
          }
          return !Alive(serve_);
        },
        30))
        << ReadAll(dir_ / "serve.log");
    ASSERT_TRUE(Alive(serve_)) << ReadAll(dir_ / "serve.log");
  }

  // `loom fleet slurm --nodes 1 --json`: the Slurm job id, after its agent registered.
  std::string Allocate() {
    Outcome o = Shell(dir_, Env(),
                      absl::StrCat(LOOM_BINARY, " fleet slurm --nodes 1 --json --wait-timeout 60",
                                   " --agent-token-file ", (dir_ / "agent-tokens").string(),
                                   " --output ", (dir_ / "agents-%j.out").string(),
                                   " --agent-arg=--cache-dir=", (dir_ / "cache").string()));
    EXPECT_EQ(o.code, 0) << o.err << Squeue() << ReadAll(dir_ / "serve.log");
    nlohmann::json j = nlohmann::json::parse(o.out, nullptr, false);
    if (j.is_discarded() || !j.contains("slurm_job")) {
      ADD_FAILURE() << "no JSON from fleet slurm: " << o.out << o.err;
      return "";
    }
    EXPECT_EQ(j["agents"].size(), 1u) << o.out;
    if (j["agents"].size() == 1) {
      EXPECT_EQ(j["agents"][0].value("hostname", ""),
                absl::StrCat("slurm-", j.value("slurm_job", ""), "-localhost"));
      // Whole node: the last core measures and lends itself to CPU stages while idle; the
      // others are CPU slots (the capacity the daemon lists counts both).
      const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
      EXPECT_EQ(j["agents"][0].value("devices", -1), 1);
      EXPECT_EQ(j["agents"][0].value("cpu_slots", -1), cpus);
      const std::string log =
          ReadAll(dir_ / absl::StrCat("agents-", j.value("slurm_job", ""), ".out"));
      EXPECT_THAT(log, HasSubstr(absl::StrCat("event=registered agent_id=")));
      EXPECT_THAT(log, HasSubstr(absl::StrCat("cpu_slots=", cpus - 1, " devices=cpu:", cpus - 1)))
          << log;
    }
    return j.value("slurm_job", "");
  }

  nlohmann::json Loom(const std::string& args, const std::string& token = "tok-alice") {
    Outcome o = Shell(dir_, Env() + " LOOM_TOKEN=" + token, absl::StrCat(LOOM_BINARY, " ", args));
    nlohmann::json j = nlohmann::json::parse(o.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json::object() : j;
  }

  fs::path dir_;
  std::string conf_;
  std::string server_ = "127.0.0.1:1";
  Proc munged_, ctld_, slurmd_, serve_;
};

TEST_F(SlurmFleetTest, ScancelMidJobRequeuesItsStagesAndASecondAllocationFinishesTheJob) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  ASSERT_NO_FATAL_FAILURE(StartServe());

  // sbatch's refusal is one line naming it.
  Outcome o =
      Shell(dir_, Env(), absl::StrCat(LOOM_BINARY, " fleet slurm --nodes 1 --partition nosuch"));
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("loom: error: fleet slurm: sbatch refused the job: "));
  EXPECT_THAT(o.err, HasSubstr("nosuch")) << o.err;

  // An allocation whose agent the daemon refuses (a token it does not know) ends at once, and
  // the command says so instead of waiting out its deadline.
  WriteFile(dir_ / "bad-tokens", "tok-unknown\n");
  o = Shell(
      dir_, Env(),
      absl::StrCat(LOOM_BINARY, " fleet slurm --nodes 1 --wait-timeout 60 --agent-token-file ",
                   (dir_ / "bad-tokens").string(), " --output ", (dir_ / "bad-%j.out").string()));
  EXPECT_EQ(o.code, 1) << o.out;
  EXPECT_TRUE(std::regex_search(
      o.err,
      std::regex("loom: error: fleet slurm: Slurm job [0-9]+ ended \\([A-Z_]+\\) with 0 of 1 "
                 "agent\\(s\\) registered: see .*bad-[0-9]+\\.out\n")))
      << o.err;

  const std::string first = Allocate();
  ASSERT_FALSE(first.empty());
  o = Shell(dir_, Env(),
            absl::StrCat(LOOM_BINARY, " submit tiny_cnn --trials 6 --batch-size 2 --max-tasks 2"));
  ASSERT_EQ(o.code, 0) << o.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex("submitted (j[0-9]+)"))) << o.out;
  const std::string id = m[1];
  auto records = [&] {
    for (const auto& job :
         Loom("jobs --all --ended --json", "tok-root").value("jobs", nlohmann::json::array())) {
      if (job.value("id", "") == id) return job.value("records", int64_t{0});
    }
    return int64_t{-1};
  };
  auto stats = [&] { return Loom("stats --json", "tok-root"); };
  // Mid-job: some records in, a stage out on the allocation's agent.
  ASSERT_TRUE(WaitFor(
      [&] { return records() >= 2 && stats().value("running_stages", int64_t{0}) > 0; }, 180))
      << stats().dump(1) << ReadAll(dir_ / "serve.log");
  ASSERT_LT(records(), 12);
  const int64_t requeued_before = stats().value("stages_requeued", int64_t{0});

  const auto cancelled_at = std::chrono::steady_clock::now();
  ASSERT_EQ(Shell(dir_, Env(), "scancel " + first).code, 0);
  // Its agent exits cleanly on Slurm's SIGTERM, and the daemon requeues what it held.
  const fs::path first_out = dir_ / absl::StrCat("agents-", first, ".out");
  EXPECT_TRUE(
      WaitFor([&] { return ReadAll(first_out).find("SIGTERM received") != std::string::npos; }, 20))
      << ReadAll(first_out);
  // The agent deregisters once its reports are flushed (its grace is 10 s, Slurm's KillWait 15 s):
  // the requeue comes well inside the heartbeat timeout.
  ASSERT_TRUE(
      WaitFor([&] { return stats().value("stages_requeued", int64_t{0}) > requeued_before; },
              kRequeueDeadlineS))
      << stats().dump(1) << ReadAll(dir_ / "serve.log") << ReadAll(first_out);
  const double requeue_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - cancelled_at).count();
  std::printf("stages requeued %.1f s after scancel (heartbeat timeout %d s)\n", requeue_s,
              kHeartbeatTimeoutS);
  EXPECT_LT(requeue_s, kHeartbeatTimeoutS);
  EXPECT_NE(ReadAll(first_out).find("event=deregistered"), std::string::npos) << ReadAll(first_out);
  EXPECT_NE(ReadAll(dir_ / "serve.log").find("event=agent_deregistered"), std::string::npos);
  EXPECT_GE(stats().value("agents_lost", int64_t{0}), 1);
  EXPECT_LT(records(), 12) << "the job should still need an agent";

  // A second allocation (the same agent token, free again once the first agent expired).
  const std::string second = Allocate();
  ASSERT_FALSE(second.empty());
  EXPECT_NE(second, first);
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& job :
             Loom("jobs --all --ended --json", "tok-root").value("jobs", nlohmann::json::array())) {
          if (job.value("id", "") == id) return job.value("state", "") == "succeeded";
        }
        return false;
      },
      240))
      << Loom("jobs --all --ended --json", "tok-root").dump(1) << ReadAll(dir_ / "serve.log");

  // Every trial has exactly one record: 2 tasks x 6 trials, no config measured twice. The
  // untuned baselines ("<uid>#default", at most one a task) are not trials.
  const fs::path out = dir_ / "records.jsonl";
  ASSERT_EQ(Shell(dir_, "",
                  absl::StrCat(LOOM_BINARY, " records export --db ",
                               (dir_ / "state.db.records").string(), " -o ", out.string()))
                .code,
            0);
  std::set<std::pair<std::string, int64_t>> distinct;
  int n = 0;
  int baselines = 0;
  std::istringstream in(ReadAll(out));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("job_id", "").rfind(id + ".", 0) != 0) continue;
    if (absl::EndsWith(j.value("job_id", ""), "#default")) {
      ++baselines;
      continue;
    }
    ++n;
    distinct.insert({j.value("task_key", ""), j.value("config_index", int64_t{-1})});
  }
  EXPECT_EQ(n, 12);
  EXPECT_EQ(distinct.size(), 12u);
  EXPECT_LE(baselines, 2);
  EXPECT_EQ(records(), 12);
}

}  // namespace
