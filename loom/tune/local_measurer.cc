// LocalMeasurer: the CPU Measurer. Keeps one long-lived worker process (measure_worker.h) pinned
// to the device's cores and talks to it over a socket pair (a socket rather than pipes so that a
// write to a dead worker is an error, not a SIGPIPE). A candidate that outlives its run timeout
// gets the worker SIGKILLed; a worker that dies mid-candidate is a runtime error naming the
// signal. Either way the next candidate gets a fresh worker.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"
#include "loom/tune/measure_worker.h"
#include "loom/tune/measurer.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return absl::StrCat("was killed by signal SIG", abbrev ? abbrev : "?", " (", strsignal(sig),
                        ")");
  }
  return absl::StrCat("ended with wait status ", status);
}

// One answer from the worker, or why there is none.
struct Reply {
  enum class Kind { kOk, kTimeout, kDied } kind = Kind::kDied;
  json body;           // kOk
  std::string reason;  // kDied: how the worker ended
};

class WorkerProcess {
 public:
  WorkerProcess() = default;
  ~WorkerProcess() { Stop(); }

  // True while the worker process lives; reaps it when it has ended (e.g. killed with the thread
  // that started it), so a stale worker is replaced before a candidate is sent to it.
  bool Alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == 0) return true;
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    pid_ = -1;
    return false;
  }
  pid_t pid() const { return pid_; }

  // fork + exec of `argv` with the socket on its stdin and stdout. Error: a message.
  std::string Start(const std::vector<std::string>& argv) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return absl::StrCat("socketpair: ", std::strerror(errno));
    }
    std::vector<char*> cargv;
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(sv[0]);
      close(sv[1]);
      return absl::StrCat("fork: ", std::strerror(errno));
    }
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      // Dies with the thread that started it, so a hung kernel never outlives the tuner (a
      // caller whose thread exits between calls just gets a fresh worker on the next call).
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(126);
      if (dup2(sv[1], STDIN_FILENO) < 0 || dup2(sv[1], STDOUT_FILENO) < 0) _exit(126);
      execvp(cargv[0], cargv.data());
      _exit(127);
    }
    close(sv[1]);
    fd_ = sv[0];
    pid_ = pid;
    buffer_.clear();
    return "";
  }

  // Sends `request` and waits up to `timeout` for its answer. On a timeout the worker is killed;
  // when it dies the reason is its exit status.
  Reply Call(const json& request, absl::Duration timeout) {
    Reply reply;
    const std::string line = request.dump() + "\n";
    size_t sent = 0;
    while (sent < line.size()) {
      const ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        reply.reason = Reap();
        return reply;
      }
      sent += static_cast<size_t>(n);
    }
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        reply.body = json::parse(buffer_.substr(0, nl), nullptr, /*allow_exceptions=*/false);
        buffer_.erase(0, nl + 1);
        if (reply.body.is_discarded() || !reply.body.is_object()) {
          Kill();
          reply.reason = "sent a malformed answer";
          return reply;
        }
        reply.kind = Reply::Kind::kOk;
        return reply;
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        Kill();
        reply.kind = Reply::Kind::kTimeout;
        return reply;
      }
      pollfd p{fd_, POLLIN, 0};
      const int64_t ms = std::clamp<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1, 1 << 30);
      const int pr = poll(&p, 1, static_cast<int>(ms));
      if (pr < 0 && errno == EINTR) continue;
      if (pr == 0) continue;
      char chunk[65536];
      const ssize_t n = read(fd_, chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        reply.reason = Reap();
        return reply;
      }
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  // Closes the socket (a healthy worker exits at end of input) and reaps the process, killing
  // it if it does not exit promptly.
  void Stop() {
    if (pid_ <= 0) return;
    close(fd_);
    fd_ = -1;
    const absl::Time deadline = absl::Now() + absl::Milliseconds(500);
    int status = 0;
    while (absl::Now() < deadline) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) {
        pid_ = -1;
        return;
      }
      usleep(2000);
    }
    Kill();
  }

 private:
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    pid_ = -1;
  }

  // The worker closed its end: collect how it ended (it may take a moment to finish dying).
  std::string Reap() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    int status = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    while (true) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (r < 0 && errno != EINTR) {
        pid_ = -1;
        return "ended (status unavailable)";
      }
      if (absl::Now() > deadline) {
        kill(pid_, SIGKILL);
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return "closed its connection and was killed";
      }
      usleep(1000);
    }
    pid_ = -1;
    return DescribeExit(status);
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_;  // received bytes not yet consumed as a line
};

class LocalMeasurer : public Measurer {
 public:
  explicit LocalMeasurer(MeasureOptions options) : options_(std::move(options)) {
    if (options_.worker_command.empty()) {
      options_.worker_command = {"/proc/self/exe", kMeasureWorkerArg};
    }
    std::sort(options_.cores.begin(), options_.cores.end());
  }

  std::vector<MeasureResult> Measure(const MeasureTask& task,
                                     const std::vector<BuildResult>& built) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<MeasureResult> results;
    results.reserve(built.size());
    const json task_request = TaskRequest(task);
    for (const BuildResult& b : built) {
      const absl::Time start = absl::Now();
      MeasureResult r = b.error != ErrorKind::kNone ? PassThrough(b) : MeasureOne(task_request, b);
      r.config = b.config;
      r.timestamp = absl::Now();
      r.measure_seconds = absl::ToDoubleSeconds(r.timestamp - start);
      results.push_back(std::move(r));
    }
    return results;
  }

  absl::StatusOr<DeviceInfo> Probe() override {
    std::lock_guard<std::mutex> lock(mu_);
    LOOM_RETURN_IF_ERROR(EnsureWorker());
    return info_;
  }

 private:
  static MeasureResult PassThrough(const BuildResult& b) {
    MeasureResult r;
    r.error = b.error;
    r.error_msg = b.error_msg;
    return r;
  }

  json TaskRequest(const MeasureTask& task) const {
    return json{{"op", "task"},
                {"workload", task.workload_key},
                {"isa", ops::IsaName(task.target.isa)},
                {"cpu_model", task.target.cpu_model},
                {"num_threads", task.target.num_threads},
                {"test_faults", task.template_options.test_faults},
                {"seed", options_.seed}};
  }

  // A running, pinned worker, or why there is none.
  absl::Status EnsureWorker() {
    if (worker_.Alive()) return absl::OkStatus();
    loaded_task_.clear();
    if (std::string err = worker_.Start(options_.worker_command); !err.empty()) {
      return absl::UnavailableError(absl::StrCat("cannot start the measure worker: ", err));
    }
    Reply reply =
        worker_.Call(json{{"op", "init"}, {"cores", options_.cores}}, options_.setup_timeout);
    const std::string command = absl::StrJoin(options_.worker_command, " ");
    if (reply.kind == Reply::Kind::kTimeout) {
      return absl::UnavailableError(absl::StrCat("the measure worker '", command,
                                                 "' did not answer within the setup timeout"));
    }
    if (reply.kind == Reply::Kind::kDied) {
      return absl::UnavailableError(
          absl::StrCat("the measure worker '", command, "' ", reply.reason,
                       " before answering; check that the binary hosts the worker (argument ",
                       kMeasureWorkerArg, ")"));
    }
    if (!reply.body.value("ok", false)) {
      worker_.Stop();
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker could not be pinned to cores [",
                       absl::StrJoin(options_.cores, ","), "]: ", reply.body.value("error", "")));
    }
    info_.worker_pid = reply.body.value("pid", int64_t{0});
    info_.cpus = reply.body.value("cpus", std::vector<int>{});
    if (!options_.cores.empty() && info_.cpus != options_.cores) {
      worker_.Stop();
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker runs on cores [", absl::StrJoin(info_.cpus, ","),
                       "] instead of the requested [", absl::StrJoin(options_.cores, ","),
                       "]; request only cores this process may use"));
    }
    return absl::OkStatus();
  }

  MeasureResult MeasureOne(const json& task_request, const BuildResult& b) {
    MeasureResult r;
    if (absl::Status s = EnsureWorker(); !s.ok()) {
      r.error = ErrorKind::kUnknown;
      r.error_msg = s.ToString();
      return r;
    }
    if (loaded_task_ != task_request.dump()) {
      Reply reply = worker_.Call(task_request, options_.setup_timeout);
      if (reply.kind != Reply::Kind::kOk || !reply.body.value("ok", false)) {
        r.error = reply.kind == Reply::Kind::kOk
                      ? static_cast<ErrorKind>(reply.body.value("error_kind", 7))
                      : ErrorKind::kUnknown;
        r.error_msg = reply.kind == Reply::Kind::kOk
                          ? reply.body.value("error", "")
                          : absl::StrCat("the measure worker ",
                                         reply.kind == Reply::Kind::kTimeout
                                             ? "timed out preparing the task"
                                             : reply.reason + " while preparing the task");
        return r;
      }
      loaded_task_ = task_request.dump();
    }
    const absl::Duration expected =
        absl::Milliseconds(int64_t{options_.repeat + 3} * options_.min_repeat_ms);
    const absl::Duration timeout = options_.timeout + expected;
    Reply reply = worker_.Call(json{{"op", "measure"},
                                    {"artifact", b.artifact_path},
                                    {"config", b.config.index},
                                    {"number", options_.number},
                                    {"repeat", options_.repeat},
                                    {"min_repeat_ms", options_.min_repeat_ms},
                                    {"flush_cache", options_.flush_cache}},
                               timeout);
    switch (reply.kind) {
      case Reply::Kind::kTimeout:
        r.error = ErrorKind::kRunTimeout;
        r.error_msg =
            absl::StrCat("the kernel ran past the run timeout of ", absl::FormatDuration(timeout),
                         "; the measure worker was killed and will be restarted");
        break;
      case Reply::Kind::kDied:
        r.error = ErrorKind::kRuntime;
        r.error_msg = absl::StrCat("the measure worker ", reply.reason,
                                   " while running the kernel; it will be restarted");
        break;
      case Reply::Kind::kOk:
        if (reply.body.value("ok", false)) {
          r.costs = reply.body.value("costs", std::vector<double>{});
          if (r.costs.empty()) {
            r.error = ErrorKind::kUnknown;
            r.error_msg = "the measure worker returned no costs";
          }
        } else {
          const int kind = reply.body.value("error_kind", 7);
          r.error = kind >= 1 && kind <= 7 ? static_cast<ErrorKind>(kind) : ErrorKind::kUnknown;
          r.error_msg = reply.body.value("error", "");
        }
        break;
    }
    return r;
  }

  MeasureOptions options_;
  std::mutex mu_;  // one measurement at a time
  WorkerProcess worker_;
  DeviceInfo info_;
  std::string loaded_task_;  // the task request the running worker last prepared
};

}  // namespace

absl::StatusOr<std::unique_ptr<Measurer>> MakeLocalMeasurer(const MeasureOptions& options) {
  if (options.number < 1 || options.repeat < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MeasureOptions.number and .repeat must be at least 1, got ", options.number,
                     " and ", options.repeat));
  }
  if (options.min_repeat_ms < 0) {
    return absl::InvalidArgumentError("MeasureOptions.min_repeat_ms must not be negative");
  }
  if (options.timeout <= absl::ZeroDuration() || options.setup_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("MeasureOptions.timeout and .setup_timeout must be positive");
  }
  std::set<int> seen;
  for (int c : options.cores) {
    if (c < 0 || c >= CPU_SETSIZE) {
      return absl::InvalidArgumentError(
          absl::StrCat("MeasureOptions.cores: core ", c, " is out of range"));
    }
    if (!seen.insert(c).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("MeasureOptions.cores: core ", c, " is listed twice"));
    }
  }
  return std::unique_ptr<Measurer>(new LocalMeasurer(options));
}

}  // namespace loom::tune
