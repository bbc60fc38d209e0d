// Child processes for tests that drive real binaries (tests/service/service_process_test.cc,
// tests/service/slurm_fleet_test.cc): start one with its output appended to a log file, tell
// whether it still runs, and wait for a condition with a deadline. Test-only (loom_base_testing).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace loom::base::testing {

struct SpawnOptions {
  // Set in the child on top of this process's environment.
  std::map<std::string, std::string> env{};
  // The child leads a new process group (so that a signal to the group reaches its children).
  bool new_process_group = false;
};

// Forks and execs `argv` (argv[0] looked up on PATH when it holds no '/'), with stdout and stderr
// appended to `log` (created 0644 when missing). Returns the child's pid, -1 when fork fails or
// argv is empty; a child whose exec fails exits with status 127.
pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log,
                  const SpawnOptions& options = {});

// Whether child `pid` still runs; reaps it when it has ended. False for pid <= 0.
bool ChildAlive(pid_t pid);

// Polls `pred` every `poll_seconds` until it holds or `seconds` have passed; returns its last
// value (checked once more at the deadline).
bool WaitFor(const std::function<bool()>& pred, double seconds, double poll_seconds = 0.1);

}  // namespace loom::base::testing
