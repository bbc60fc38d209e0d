// Tests of the candidates' confinement (confine.h): candidates that try to escape (a socket, the
// token in the environment or in a file, a write outside the sandbox, a fork bomb, exec, signals,
// ptrace, memory and thread exhaustion) run through the real CPU measurer, real compiles and a
// real worker process; each must be refused or killed and become an error record while the next
// candidate measures normally. Also: the plan's wire form, the sandbox's folders and environment,
// the compilers' confinement, and a worker the kernel cannot confine. This binary is its own
// worker: started with `__measure-worker` it runs RunMeasureWorker.
//
// Which layers are checked is printed at the start ("confinement checked: ..."). Where the kernel
// refuses a layer (an unprivileged container), the escape tests skip naming the refused layer;
// the layers' availability is probed independently of the code under test, so a bug in
// confine.cc fails the tests instead of skipping them.
#include "loom/toolchain/confine.h"

#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/measurer.h"
#include "loom/toolchain/testing/confine_support.h"
#include "loom/toolchain/testing/escape_kernels.h"
#include "loom/toolchain/testing/measure_support.h"
#include "loom/toolchain/worker_host.h"

namespace loom::tune {
namespace {

namespace fs = std::filesystem;
using testing::Escape;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::SelfExe;
using testing::SmallDense;

constexpr char kToken[] = "loom-confine-test-secret-token";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ConfineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The token the agent would hold: in this process's environment and in a readable file
    // outside the sandbox (mode 0644: the sandbox, not the file's mode, must stop the reads).
    setenv("LOOM_TOKEN", kToken, 1);
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/loom_confine_test_", getpid()));
    fs::create_directories(*dir_);
    fs::permissions(*dir_, fs::perms::all);  // others may reach the token file and the outside
    token_file_ = new std::string(*dir_ + "/token");
    std::ofstream(*token_file_) << kToken;
    fs::permissions(*token_file_, fs::perms::owner_read | fs::perms::owner_write |
                                      fs::perms::group_read | fs::perms::others_read);
    outside_ = new std::string(*dir_ + "/outside");
    fs::create_directories(*outside_);
    fs::permissions(*outside_, fs::perms::all);
    refused_ = new std::string(testing::RefusedConfinementLayer());

    task_ = new MeasureTask{graph::WorkloadKey(SmallDense()), ops::HostCpuTarget(), {}};
    auto tmpl = ops::MakeTemplate(SmallDense(), task_->target, task_->template_options);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    const ops::Config config = (*tmpl)->DefaultConfig();
    auto source = (*tmpl)->Emit(config);
    ASSERT_TRUE(source.ok()) << source.status();
    auto builder = MakeLocalBuilder({.num_threads = 2, .cache_dir = *dir_ + "/kernels"});
    ASSERT_TRUE(builder.ok()) << builder.status();
    built_ = new std::map<Escape, BuildResult>();
    for (Escape e :
         {Escape::kNone, Escape::kWriteInScratch, Escape::kSocket, Escape::kUnixSocket,
          Escape::kEnvToken, Escape::kReadFile, Escape::kWriteFile, Escape::kParentEnviron,
          Escape::kForkBomb, Escape::kExec, Escape::kSignalParent, Escape::kPtraceParent,
          Escape::kExhaustMemory, Escape::kThreadBomb}) {
      const std::string path = e == Escape::kReadFile    ? *token_file_
                               : e == Escape::kWriteFile ? *outside_ + "/escaped.txt"
                                                         : "";
      ops::KernelSource escape = *source;
      escape.code = testing::EscapeSource(source->code, e, path);
      BuildResult b = (*builder)->BuildSource(escape, config);
      ASSERT_EQ(b.error, ErrorKind::kNone) << b.error_msg;
      (*built_)[e] = b;
    }
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    delete token_file_;
    delete outside_;
    delete refused_;
    delete task_;
    delete built_;
  }

  void SetUp() override {
    if (!refused_->empty()) {
      GTEST_SKIP() << "the kernel refuses " << *refused_
                   << " to this process, so the measure worker cannot be confined here (the "
                      "measurer then fails at start: KernelRefusalFailsTheStartLoudly)";
    }
  }

  static MeasureOptions Options() {
    return {.number = 1,
            .repeat = 3,
            .min_repeat_ms = 1,
            .timeout = absl::Seconds(5),
            .setup_timeout = absl::Seconds(30),
            .worker_command = {SelfExe(), kMeasureWorkerArg},
            .seed = 3};
  }

  static std::unique_ptr<Measurer> Make(const MeasureOptions& options) {
    return testing::MeasurerOrNull(MakeLocalMeasurer(options));
  }

  // Measures the escape, then the plain kernel on the same measurer: the escape must be an error
  // record and the plain kernel must still measure (on a restarted worker).
  static MeasureResult MeasureEscape(Escape e, const MeasureOptions& options = Options()) {
    auto m = Make(options);
    if (m == nullptr) return {};
    std::vector<MeasureResult> r = m->Measure(*task_, {Built(e), Built(Escape::kNone)});
    EXPECT_EQ(r.size(), 2u);
    if (r.size() != 2) return {};
    EXPECT_TRUE(r[1].ok()) << "the candidate after the escape: " << r[1].error_msg;
    EXPECT_EQ(r[1].costs.size(), 3u);
    EXPECT_TRUE(r[0].costs.empty());
    return r[0];
  }

  static const BuildResult& Built(Escape e) { return built_->at(e); }

  static std::string* dir_;
  static std::string* token_file_;
  static std::string* outside_;
  static std::string* refused_;
  static MeasureTask* task_;
  static std::map<Escape, BuildResult>* built_;
};
std::string* ConfineTest::dir_ = nullptr;
std::string* ConfineTest::token_file_ = nullptr;
std::string* ConfineTest::outside_ = nullptr;
std::string* ConfineTest::refused_ = nullptr;
MeasureTask* ConfineTest::task_ = nullptr;
std::map<Escape, BuildResult>* ConfineTest::built_ = nullptr;

TEST_F(ConfineTest, ProbeSaysWhichConfinementIsInForce) {
  auto m = Make(Options());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<DeviceInfo> info = m->Probe();
  ASSERT_TRUE(info.ok()) << info.status();
  std::printf("confinement checked: %s\n", info->confinement.c_str());
  RecordProperty("confinement", info->confinement);
  EXPECT_THAT(info->confinement, HasSubstr("network namespace"));
  EXPECT_THAT(info->confinement, HasSubstr("no core files"));
  EXPECT_THAT(info->confinement, HasSubstr("address space +8.0 GiB"));
  EXPECT_THAT(info->confinement, HasSubstr("no_new_privs"));
  EXPECT_THAT(info->confinement, HasSubstr("Landlock ABI"));
  EXPECT_THAT(info->confinement, HasSubstr("seccomp allow-list"));
  if (geteuid() == 0) {
    EXPECT_THAT(info->confinement,
                HasSubstr(getpwnam("loom-measure") ? "user loom-measure (" : "user nobody ("));
    // The worker really runs as that user.
    struct stat st {};
    ASSERT_EQ(stat(absl::StrCat("/proc/", info->worker_pid).c_str(), &st), 0);
    EXPECT_NE(st.st_uid, 0u);
  } else {
    EXPECT_THAT(info->confinement, HasSubstr("user and network namespaces"));
  }
  // Its network namespace is not this process's.
  EXPECT_NE(fs::read_symlink(absl::StrCat("/proc/", info->worker_pid, "/ns/net")),
            fs::read_symlink("/proc/self/ns/net"));
}

TEST_F(ConfineTest, ControlsMeasureNormally) {
  auto m = Make(Options());
  ASSERT_NE(m, nullptr);
  std::vector<MeasureResult> r =
      m->Measure(*task_, {Built(Escape::kNone), Built(Escape::kWriteInScratch)});
  ASSERT_EQ(r.size(), 2u);
  for (const MeasureResult& x : r) {
    EXPECT_TRUE(x.ok()) << x.error_msg;
    EXPECT_EQ(x.costs.size(), 3u);
  }
}

TEST_F(ConfineTest, SocketsAreKilledBySeccomp) {
  for (Escape e : {Escape::kSocket, Escape::kUnixSocket}) {
    MeasureResult r = MeasureEscape(e);
    EXPECT_EQ(r.error, ErrorKind::kRuntime) << r.error_msg;
    EXPECT_THAT(r.error_msg, HasSubstr("system call 'socket' (41) is forbidden to candidates"));
    EXPECT_THAT(r.error_msg, HasSubstr("SIGSYS"));
  }
}

TEST_F(ConfineTest, TheTokenIsNotInTheEnvironment) {
  MeasureResult r = MeasureEscape(Escape::kEnvToken);
  EXPECT_EQ(r.error, ErrorKind::kRuntime);
  EXPECT_THAT(r.error_msg, HasSubstr(absl::StrCat("exited with status ", testing::kRefused)));
}

TEST_F(ConfineTest, FilesOutsideTheSandboxCannotBeRead) {
  for (Escape e : {Escape::kReadFile, Escape::kParentEnviron}) {
    MeasureResult r = MeasureEscape(e);
    EXPECT_EQ(r.error, ErrorKind::kRuntime);
    EXPECT_THAT(r.error_msg, HasSubstr(absl::StrCat("exited with status ", testing::kRefused)));
  }
}

TEST_F(ConfineTest, WritesOutsideTheSandboxAreRefused) {
  MeasureResult r = MeasureEscape(Escape::kWriteFile);
  EXPECT_EQ(r.error, ErrorKind::kRuntime);
  EXPECT_THAT(r.error_msg, HasSubstr(absl::StrCat("exited with status ", testing::kRefused)));
  EXPECT_FALSE(fs::exists(*outside_ + "/escaped.txt"));
}

TEST_F(ConfineTest, ProcessesExecSignalsAndPtraceAreKilled) {
  const std::pair<Escape, std::string> cases[] = {
      {Escape::kForkBomb, "system call 'clone'"},
      {Escape::kExec, "system call 'execve'"},
      {Escape::kSignalParent, "system call 'kill'"},
      {Escape::kPtraceParent, "system call 'ptrace'"},
  };
  for (const auto& [escape, call] : cases) {
    MeasureResult r = MeasureEscape(escape);
    EXPECT_EQ(r.error, ErrorKind::kRuntime) << call;
    EXPECT_THAT(r.error_msg, HasSubstr(call));
  }
}

TEST_F(ConfineTest, MemoryBeyondTheBudgetIsRefused) {
  MeasureOptions options = Options();
  options.confine.memory_bytes = int64_t{512} << 20;
  MeasureResult r = MeasureEscape(Escape::kExhaustMemory, options);
  EXPECT_EQ(r.error, ErrorKind::kRuntime);
  EXPECT_THAT(r.error_msg, HasSubstr(absl::StrCat("exited with status ", testing::kRefused)));
}

TEST_F(ConfineTest, ThreadsBeyondTheLimitAreRefused) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "RLIMIT_NPROC is set only where the worker has a user of its own (started "
                    "as root); threads are then bounded by the address-space budget";
  }
  MeasureOptions options = Options();
  options.confine.max_threads = 64;
  MeasureResult r = MeasureEscape(Escape::kThreadBomb, options);
  EXPECT_EQ(r.error, ErrorKind::kRuntime);
  EXPECT_THAT(r.error_msg, HasSubstr(absl::StrCat("exited with status ", testing::kRefused)));
}

TEST_F(ConfineTest, EveryEscapeInOneBatchIsAnErrorRecordAndGoodCandidatesStillMeasure) {
  MeasureOptions options = Options();
  options.confine.memory_bytes = int64_t{512} << 20;
  auto m = Make(options);
  ASSERT_NE(m, nullptr);
  std::vector<BuildResult> batch;
  for (const auto& [escape, built] : *built_) {
    if (escape == Escape::kNone || escape == Escape::kWriteInScratch) continue;
    if (escape == Escape::kThreadBomb && geteuid() != 0) continue;
    batch.push_back(built);
    batch.push_back(Built(Escape::kNone));
  }
  std::vector<MeasureResult> r = m->Measure(*task_, batch);
  ASSERT_EQ(r.size(), batch.size());
  for (size_t i = 0; i < r.size(); i += 2) {
    EXPECT_EQ(r[i].error, ErrorKind::kRuntime) << i << ": " << r[i].error_msg;
    EXPECT_THAT(r[i].error_msg, Not(HasSubstr(absl::StrCat("status ", testing::kEscaped)))) << i;
    EXPECT_TRUE(r[i + 1].ok()) << i + 1 << ": " << r[i + 1].error_msg;
  }
}

// The escape candidates do detect what they look for: unconfined, they find it. This runs
// wherever the kernel refuses confinement too (no SetUp skip applies to a plain TEST).
TEST(NoConfineTest, UnconfinedCandidatesReachTheTokenAndTheFilesystem) {
  setenv("LOOM_TOKEN", kToken, 1);
  const std::string dir = absl::StrCat(::testing::TempDir(), "/loom_noconfine_test_", getpid());
  fs::create_directories(dir);
  auto tmpl = ops::MakeTemplate(SmallDense(), ops::HostCpuTarget(), {});
  ASSERT_TRUE(tmpl.ok());
  const ops::Config config = (*tmpl)->DefaultConfig();
  auto source = (*tmpl)->Emit(config);
  ASSERT_TRUE(source.ok());
  auto builder = MakeLocalBuilder({.cache_dir = dir + "/kernels", .confine = false});
  ASSERT_TRUE(builder.ok()) << builder.status();
  std::vector<BuildResult> batch;
  for (auto [e, path] : {std::pair{Escape::kEnvToken, std::string()},
                         std::pair{Escape::kWriteFile, dir + "/escaped.txt"}}) {
    ops::KernelSource s = *source;
    s.code = testing::EscapeSource(source->code, e, path);
    batch.push_back((*builder)->BuildSource(s, config));
    ASSERT_EQ(batch.back().error, ErrorKind::kNone) << batch.back().error_msg;
  }
  auto m = MakeLocalMeasurer({.min_repeat_ms = 1,
                              .worker_command = {SelfExe(), kMeasureWorkerArg},
                              .confine = {.enabled = false}});
  ASSERT_TRUE(m.ok());
  absl::StatusOr<DeviceInfo> info = (*m)->Probe();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->confinement, "");
  MeasureTask task{graph::WorkloadKey(SmallDense()), ops::HostCpuTarget(), {}};
  std::vector<MeasureResult> r = (*m)->Measure(task, batch);
  ASSERT_EQ(r.size(), 2u);
  for (const MeasureResult& x : r) {
    EXPECT_THAT(x.error_msg, HasSubstr(absl::StrCat("exited with status ", testing::kEscaped)));
  }
  EXPECT_EQ(ReadAll(dir + "/escaped.txt"), "escaped");
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// Where the kernel refuses a layer (root without CAP_SYS_ADMIN, as in an unprivileged container:
// setpriv drops it from the worker), the measurer does not start, and says how to go on.
TEST(KernelRefusalTest, KernelRefusalFailsTheStartLoudly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root, to start a worker without CAP_SYS_ADMIN";
  if (!fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs setpriv (util-linux)";
  MeasureOptions options{.min_repeat_ms = 1,
                         .worker_command = {"/usr/bin/setpriv", "--bounding-set=-sys_admin",
                                            SelfExe(), kMeasureWorkerArg}};
  auto m = MakeLocalMeasurer(options);
  ASSERT_TRUE(m.ok());
  absl::StatusOr<DeviceInfo> info = (*m)->Probe();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(info.status().message(),
              HasSubstr("cannot confine the measure worker: network namespace: "
                        "unshare(CLONE_NEWNET) failed: Operation not permitted"));
  EXPECT_THAT(info.status().message(), HasSubstr("start with --no-confine"));
  // Candidates get the reason, none runs unconfined.
  BuildResult b;
  b.artifact_path = "/nonexistent.so";
  std::vector<MeasureResult> r =
      (*m)->Measure({graph::WorkloadKey(SmallDense()), ops::HostCpuTarget(), {}}, {b});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error, ErrorKind::kUnknown);
  EXPECT_THAT(r[0].error_msg, HasSubstr("cannot confine the measure worker"));

  options.confine.enabled = false;
  auto unconfined = MakeLocalMeasurer(options);
  ASSERT_TRUE(unconfined.ok());
  EXPECT_TRUE((*unconfined)->Probe().ok());
}

TEST(ConfinePlanTest, RoundTripsThroughJsonAndNamesBadFields) {
  ConfinePlan plan;
  plan.profile = ConfinePlan::Profile::kCuda;
  plan.uid = 65534;
  plan.gid = 65533;
  plan.user_name = "nobody";
  plan.work_dir = "/tmp/x/work";
  plan.inbox_dir = "/tmp/x/in";
  plan.read_paths = {"/opt/lib"};
  plan.memory_bytes = 5;
  plan.max_open_files = 64;
  plan.max_threads = 7;
  plan.max_file_bytes = 9;
  absl::StatusOr<ConfinePlan> back = ConfinePlan::FromJson(plan.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), plan.ToJson());
  EXPECT_EQ(back->profile, ConfinePlan::Profile::kCuda);

  nlohmann::json j = plan.ToJson();
  j.erase("uid");
  EXPECT_THAT(ConfinePlan::FromJson(j).status().message(),
              HasSubstr("'uid' is missing or has the wrong type"));
  j = plan.ToJson();
  j["profile"] = "gpu";
  EXPECT_THAT(ConfinePlan::FromJson(j).status().message(), HasSubstr("unknown profile \"gpu\""));
  j = plan.ToJson();
  j["max_open_files"] = 3;
  EXPECT_EQ(ConfinePlan::FromJson(j).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfinePlan::FromJson(nlohmann::json::array()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfineOptionsTest, BadLimitsAreInvalidArguments) {
  EXPECT_EQ(ValidateConfineOptions({.memory_bytes = -1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ValidateConfineOptions({.max_open_files = 3}).message(),
              HasSubstr("max_open_files must be at least 16"));
  EXPECT_EQ(MakeLocalMeasurer({.confine = {.max_threads = 0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad_root =
      WorkerSandbox::Create({.scratch_root = "/nonexistent/loom"}, ConfinePlan::Profile::kCpu);
  EXPECT_EQ(bad_root.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad_root.status().message(),
              HasSubstr("ConfineOptions.scratch_root /nonexistent/loom is not a folder"));
  const std::string closed = absl::StrCat(::testing::TempDir(), "/loom_confine_closed_", getpid());
  fs::create_directories(closed);
  fs::permissions(closed, fs::perms::owner_all);
  bad_root = WorkerSandbox::Create({.scratch_root = closed}, ConfinePlan::Profile::kCpu);
  EXPECT_THAT(bad_root.status().message(), HasSubstr("is not reachable by other users"));
  fs::remove(closed);
  if (geteuid() == 0) {
    auto box = WorkerSandbox::Create({.user = "no-such-user-loom"}, ConfinePlan::Profile::kCpu);
    EXPECT_EQ(box.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(box.status().message(), HasSubstr("user 'no-such-user-loom' does not exist"));
    box = WorkerSandbox::Create({.user = "root"}, ConfinePlan::Profile::kCpu);
    EXPECT_THAT(box.status().message(), HasSubstr("is root"));
  }
}

TEST(WorkerSandboxTest, FoldersEnvironmentAndStaging) {
  setenv("LOOM_TOKEN", kToken, 1);
  setenv("LOOM_CONFINE_TEST_PASSED", "yes", 1);
  auto box = WorkerSandbox::Create(
      {.scratch_root = ::testing::TempDir(), .pass_env = {"LOOM_CONFINE_TEST_PASSED"}},
      ConfinePlan::Profile::kCpu);
  ASSERT_TRUE(box.ok()) << box.status();
  const ConfinePlan& plan = (*box)->plan();
  const std::string root = fs::path(plan.work_dir).parent_path();
  EXPECT_TRUE(fs::is_directory(plan.work_dir));
  EXPECT_TRUE(fs::is_directory(plan.inbox_dir));
  struct stat st {};
  ASSERT_EQ(stat(plan.work_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  if (geteuid() == 0) {
    EXPECT_EQ(static_cast<int64_t>(st.st_uid), plan.uid);
    EXPECT_NE(plan.uid, 0);
  }

  const std::vector<std::string> env = (*box)->Environment();
  EXPECT_THAT(env, ::testing::Contains(absl::StrCat("HOME=", plan.work_dir)));
  EXPECT_THAT(env, ::testing::Contains(absl::StrCat("TMPDIR=", plan.work_dir)));
  EXPECT_THAT(env, ::testing::Contains("LOOM_CONFINE_TEST_PASSED=yes"));
  for (const std::string& e : env) EXPECT_THAT(e, Not(HasSubstr(kToken)));

  const std::string src = ::testing::TempDir() + "/loom_confine_stage_src";
  std::ofstream(src) << "object";
  absl::StatusOr<std::string> staged = (*box)->Stage(src);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_EQ(fs::path(*staged).parent_path(), plan.inbox_dir);
  EXPECT_EQ(ReadAll(*staged), "object");
  absl::StatusOr<std::string> again = (*box)->Stage(src);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *staged);  // every candidate gets a fresh name
  EXPECT_EQ((*box)->Stage("/nonexistent/x.so").status().code(), absl::StatusCode::kNotFound);
  (*box)->Unstage(*staged);
  EXPECT_FALSE(fs::exists(*staged));

  std::ofstream(plan.work_dir + "/left-behind") << "x";
  ASSERT_TRUE((*box)->Reset().ok());
  EXPECT_TRUE(fs::is_empty(plan.work_dir));
  EXPECT_TRUE(fs::is_empty(plan.inbox_dir));
  box->reset();
  EXPECT_FALSE(fs::exists(root));
  fs::remove(src);
}

// Runs `script` through SpawnProcess with the builder's confinement; its output.
std::string RunConfined(const std::string& script, const CompilerConfinement& c) {
  int fds[2];
  EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
  absl::StatusOr<pid_t> pid = SpawnProcess({"sh", "-c", script}, fds[1], &c);
  close(fds[1]);
  EXPECT_TRUE(pid.ok()) << pid.status();
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  if (pid.ok()) waitpid(*pid, &status, 0);
  return out;
}

TEST(CompilerConfinementTest, EnvironmentLimitsTempDirAndNetwork) {
  setenv("LOOM_TOKEN", kToken, 1);
  const CompilerConfinement c = CompilerConfinementFor("/tmp/loom-private", absl::Seconds(10));
  for (const std::string& e : c.env) EXPECT_THAT(e, Not(HasSubstr("LOOM_TOKEN")));
  const std::string out = RunConfined(
      "echo token=$LOOM_TOKEN; echo tmp=$TMPDIR; echo as=$(ulimit -v); echo cpu=$(ulimit -t); "
      "echo core=$(ulimit -c); echo files=$(ulimit -n); cat /proc/self/net/dev",
      c);
  EXPECT_THAT(out, HasSubstr("token=\n"));
  EXPECT_THAT(out, HasSubstr("tmp=/tmp/loom-private\n"));
  EXPECT_THAT(out, HasSubstr("as=4194304\n"));  // KiB
  EXPECT_THAT(out, HasSubstr("cpu=11\n"));
  EXPECT_THAT(out, HasSubstr("core=0\n"));
  EXPECT_THAT(out, HasSubstr("files=1024\n"));
  if (geteuid() == 0) {
    if (testing::RefusedConfinementLayer().rfind("network", 0) == 0) {
      GTEST_SKIP() << "the kernel refuses network namespaces here";
    }
    EXPECT_TRUE(c.network_namespace);
    // Only the namespace's own loopback: none of the host's interfaces.
    EXPECT_THAT(out, HasSubstr("lo:"));
    std::string host = ReadAll("/proc/self/net/dev");
    int host_lines = 0, lines = 0;
    for (char ch : host) host_lines += ch == '\n';
    for (char ch : out.substr(out.find("Inter-"))) lines += ch == '\n';
    EXPECT_EQ(lines, 3) << out;  // two header lines and lo
    EXPECT_GT(host_lines, 3) << "this host has no interface but lo: nothing to compare";
  }
}

TEST(CompilerConfinementTest, SpawnFailuresNameTheStep) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  absl::StatusOr<pid_t> pid = SpawnProcess({"/nonexistent/loom-cc"}, fds[1], nullptr);
  EXPECT_EQ(pid.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(pid.status().message(), "cannot run '/nonexistent/loom-cc': No such file or directory");
  CompilerConfinement c;
  c.max_open_files = 1 << 30;  // above the hard limit: setrlimit fails in the child
  pid = SpawnProcess({"true"}, fds[1], &c);
  EXPECT_THAT(pid.status().message(), HasSubstr("cannot confine 'true': setrlimit:"));
  close(fds[0]);
  close(fds[1]);
}

// The builder runs its compilers confined: a stand-in compiler that writes what it sees into
// its "artifact".
TEST(CompilerConfinementTest, TheBuilderConfinesItsCompilers) {
  setenv("LOOM_TOKEN", kToken, 1);
  const std::string dir = absl::StrCat(::testing::TempDir(), "/loom_confine_cc_", getpid());
  fs::create_directories(dir);
  const std::string cc = dir + "/cc.sh";
  std::ofstream(cc) << "#!/bin/sh\n"
                       "[ \"$1\" = --version ] && { echo fake-cc 1; exit 0; }\n"
                       "while [ $# -gt 1 ]; do [ \"$1\" = -o ] && out=$2; shift; done\n"
                       "{ echo token=$LOOM_TOKEN; echo tmp=$TMPDIR; echo as=$(ulimit -v); "
                       "ls -ld \"${TMPDIR:-/tmp}\"; } > \"$out\"\n";
  fs::permissions(cc, fs::perms::owner_all);
  auto builder = MakeLocalBuilder({.compiler = cc, .cache_dir = dir + "/kernels"});
  ASSERT_TRUE(builder.ok()) << builder.status();
  BuildResult b = (*builder)->BuildSource({.code = "int x;"}, ops::Config{0});
  ASSERT_EQ(b.error, ErrorKind::kNone) << b.error_msg;
  const std::string seen = ReadAll(b.artifact_path);
  EXPECT_THAT(seen, HasSubstr("token=\n"));
  EXPECT_THAT(seen, HasSubstr("as=4194304\n"));
  EXPECT_THAT(seen, HasSubstr("tmp=/tmp/loom-build-"));
  EXPECT_THAT(seen, HasSubstr("drwx------"));  // private
  const std::string tmp = seen.substr(seen.find("tmp=") + 4,
                                      seen.find('\n', seen.find("tmp=")) - seen.find("tmp=") - 4);
  EXPECT_TRUE(fs::is_directory(tmp));
  builder->reset();
  EXPECT_FALSE(fs::exists(tmp));  // removed with the builder

  // Off, the compiler sees this process's environment.
  auto open_builder =
      MakeLocalBuilder({.compiler = cc, .cache_dir = dir + "/kernels2", .confine = false});
  ASSERT_TRUE(open_builder.ok());
  b = (*open_builder)->BuildSource({.code = "int x;"}, ops::Config{0});
  ASSERT_EQ(b.error, ErrorKind::kNone) << b.error_msg;
  EXPECT_THAT(ReadAll(b.artifact_path), HasSubstr(absl::StrCat("token=", kToken)));
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace loom::tune

int main(int argc, char** argv) {
  if (std::optional<int> worker = loom::tune::RunHostedWorker(argc, argv)) return *worker;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
