// Test-only: which confinement layer (confine.h) this kernel refuses to this process, probed in a
// child without the code under test, so that a confinement test skips only where the kernel
// says no (an unprivileged container) and fails where confine.cc is wrong. Used by
// toolchain/confine_test.cc, toolchain/cuda_measurer_test.cc, agent/stage_executor_confine_test.cc.
#pragma once

#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace loom::tune::testing {

// Empty when every layer is available; else the first refused one, named for a skip message.
inline std::string RefusedConfinementLayer() {
  const pid_t pid = fork();
  if (pid == 0) {
    const int ns = geteuid() == 0 ? CLONE_NEWNET : CLONE_NEWUSER | CLONE_NEWNET;
    if (unshare(ns) != 0) _exit(1);
    if (syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION) < 1) {
      _exit(2);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(3);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == nullptr || seccomp_load(ctx) != 0) _exit(4);
    _exit(0);
  }
  if (pid < 0) return "fork (the probe could not run)";
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return "the probe (it could not be waited for)";
  }
  if (!WIFEXITED(status)) return "the probe (it died)";
  switch (WEXITSTATUS(status)) {
    case 0:
      return "";
    case 1:
      return "network namespaces (unshare(CLONE_NEWNET))";
    case 2:
      return "Landlock";
    case 3:
      return "no_new_privs";
    default:
      return "seccomp filters";
  }
}

}  // namespace loom::tune::testing
