#include "loom/base/affinity.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace loom::base {
namespace {

std::vector<int> CoresOf(pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(pid, sizeof(set), &set) != 0) return {};
  std::vector<int> cores;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cores.push_back(c);
  }
  return cores;
}

TEST(AffinityTest, PinsTheCallingThreadAndIgnoresAnEmptySet) {
  std::thread t([] {
    SetThreadAffinity(0, {0});
    EXPECT_EQ(CoresOf(0), std::vector<int>{0});
    SetThreadAffinity(0, {});  // no-op
    EXPECT_EQ(CoresOf(0), std::vector<int>{0});
  });
  t.join();
}

TEST(AffinityTest, PinsEveryProcessOfAProcessGroup) {
  // A group leader that starts a child in its group, both sleeping.
  pid_t leader = fork();
  ASSERT_GE(leader, 0);
  if (leader == 0) {
    setpgid(0, 0);
    if (fork() == 0) pause();
    pause();
    _exit(0);
  }
  setpgid(leader, leader);
  usleep(100 * 1000);  // let the child be forked
  PinProcessGroups({leader}, {0});
  EXPECT_EQ(CoresOf(leader), std::vector<int>{0});
  // The child: any process of the group other than the leader.
  bool child_checked = false;
  for (pid_t p = leader + 1; p < leader + 64 && !child_checked; ++p) {
    if (getpgid(p) == leader) {
      EXPECT_EQ(CoresOf(p), std::vector<int>{0});
      child_checked = true;
    }
  }
  EXPECT_TRUE(child_checked);
  kill(-leader, SIGKILL);
  waitpid(leader, nullptr, 0);
}

}  // namespace
}  // namespace loom::base
