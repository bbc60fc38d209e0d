// Tests of the test-only child-process helpers (testing/subprocess.h), on real processes: the
// cases the process tests that use them never reach (a failed exec, an ended child, a deadline).
#include "loom/base/testing/subprocess.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace loom::base::testing {
namespace {

namespace fs = std::filesystem;

class SubprocessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loom-subprocess-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    log_ = (dir_ / "child.log").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // The exit status of `pid`, waited for (-1 when it did not exit normally).
  static int ExitStatus(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }

  fs::path dir_;
  std::string log_;
};

TEST_F(SubprocessTest, RunsFromPathWithEnvAndAppendsBothStreamsToTheLog) {
  std::ofstream(log_) << "earlier\n";
  const pid_t pid = SpawnLogged({"sh", "-c", "echo out=$LOOM_SPAWN_TEST; echo err >&2"}, log_,
                                {.env = {{"LOOM_SPAWN_TEST", "42"}}});
  ASSERT_GT(pid, 0);
  EXPECT_EQ(ExitStatus(pid), 0);
  EXPECT_EQ(Log(), "earlier\nout=42\nerr\n");
}

TEST_F(SubprocessTest, AFailedExecExitsWith127) {
  const pid_t pid = SpawnLogged({(dir_ / "no-such-binary").string()}, log_);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(ExitStatus(pid), 127);
}

TEST_F(SubprocessTest, EmptyArgvStartsNothing) { EXPECT_EQ(SpawnLogged({}, log_), -1); }

TEST_F(SubprocessTest, NewProcessGroupAndChildAlive) {
  const pid_t pid = SpawnLogged({"sleep", "30"}, log_, {.new_process_group = true});
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(WaitFor([&] { return getpgid(pid) == pid; }, 10));
  EXPECT_TRUE(ChildAlive(pid));
  kill(pid, SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return !ChildAlive(pid); }, 10));
  EXPECT_FALSE(ChildAlive(-1));
}

TEST_F(SubprocessTest, ChildKeepsThisProcessGroupByDefault) {
  const pid_t pid = SpawnLogged({"sleep", "30"}, log_);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(getpgid(pid), getpgrp());
  kill(pid, SIGKILL);
  EXPECT_EQ(ExitStatus(pid), -1);
}

TEST(WaitForTest, TrueAtOnceWhenThePredicateHoldsFalseAfterTheDeadline) {
  EXPECT_TRUE(WaitFor([] { return true; }, 0));
  const auto start = std::chrono::steady_clock::now();
  int calls = 0;
  EXPECT_FALSE(WaitFor(
      [&] {
        ++calls;
        return false;
      },
      0.2, 0.05));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  EXPECT_GE(calls, 2);
}

}  // namespace
}  // namespace loom::base::testing
