#include "loom/toolchain/worker_process.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "loom/ops/local_kernel.h"
#include "loom/toolchain/confine.h"

extern char** environ;

namespace loom::tune {

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

bool WorkerProcess::Alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == 0) return true;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  pid_ = -1;
  return false;
}

std::string WorkerProcess::Start(const std::vector<std::string>& argv,
                                 const std::vector<std::string>* env) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::StrCat("socketpair: ", std::strerror(errno));
  }
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<char*> cenv;
  if (env != nullptr) {
    for (const std::string& e : *env) cenv.push_back(const_cast<char*>(e.c_str()));
  }
  cenv.push_back(nullptr);
  char* const* envp = env != nullptr ? cenv.data() : environ;
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
    execvpe(cargv[0], cargv.data(), envp);
    _exit(127);
  }
  close(sv[1]);
  fd_ = sv[0];
  pid_ = pid;
  buffer_.clear();
  return "";
}

WorkerReply WorkerProcess::Call(const nlohmann::json& request, absl::Duration timeout) {
  WorkerReply reply;
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
      reply.body =
          nlohmann::json::parse(buffer_.substr(0, nl), nullptr, /*allow_exceptions=*/false);
      buffer_.erase(0, nl + 1);
      if (reply.body.is_discarded() || !reply.body.is_object()) {
        Kill();
        reply.reason = "sent a malformed answer";
        return reply;
      }
      reply.kind = WorkerReply::Kind::kOk;
      return reply;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      Kill();
      reply.kind = WorkerReply::Kind::kTimeout;
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

void WorkerProcess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return;
  close(fd_);
  fd_ = -1;
  const absl::Time deadline = absl::Now() + grace;
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

void WorkerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  pid_ = -1;
}

std::string WorkerProcess::Reap() {
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

json WorkerFailure(ErrorKind kind, const std::string& message) {
  return json{{"ok", false}, {"error_kind", static_cast<int>(kind)}, {"error", message}};
}

int ServeWorkerRequests(int in_fd, int out_fd, const WorkerHandler& handle) {
  if (out_fd == STDOUT_FILENO) {
    out_fd = dup(STDOUT_FILENO);
    if (out_fd < 0) return 1;
    dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  LineReader reader(in_fd);
  std::string line;
  while (reader.Next(&line)) {
    WorkerAnswer answer;
    json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (request.is_discarded() || !request.is_object()) {
      answer.body = WorkerFailure(ErrorKind::kUnknown, "malformed request (not a JSON object)");
    } else {
      const std::string op = request.value("op", "");
      try {
        answer = handle(op, request, out_fd);
      } catch (const std::exception& e) {
        answer.body =
            WorkerFailure(ErrorKind::kUnknown, absl::StrCat("worker exception: ", e.what()));
      }
    }
    if (!WriteAll(out_fd, answer.body.dump() + "\n")) return 1;
    if (answer.fatal) return 3;
  }
  return 0;
}

WorkerTask::WorkerTask(std::unique_ptr<ops::Template> t, uint64_t seed)
    : tmpl(std::move(t)),
      natural_inputs(ops::RandomNaturalInputs(*tmpl, seed)),
      reference(tmpl->Reference(natural_inputs)) {}

absl::StatusOr<json> TimeRepeats(
    const json& request, int64_t max_number,
    const std::function<absl::StatusOr<double>(int64_t n)>& time_runs) {
  const int32_t repeat = std::max(1, request.value("repeat", 3));
  const double min_repeat_s = std::max(0, request.value("min_repeat_ms", 0)) * 1e-3;
  int64_t number = std::max<int64_t>(1, request.value("number", int64_t{1}));
  std::vector<double> costs;
  while (static_cast<int32_t>(costs.size()) < repeat) {
    absl::StatusOr<double> seconds = time_runs(number);
    if (!seconds.ok()) return seconds.status();
    if (*seconds < min_repeat_s && number < max_number) {
      // Too short to time well: grow `number` and retry this repeat.
      const double scale = *seconds > 0 ? min_repeat_s / *seconds * 1.2 : 100.0;
      number =
          std::min(max_number,
                   std::max(number + 1, static_cast<int64_t>(std::ceil(static_cast<double>(number) *
                                                                       std::min(scale, 100.0)))));
      continue;
    }
    costs.push_back(*seconds / static_cast<double>(number));
  }
  return json{{"ok", true}, {"costs", costs}, {"number", number}};
}

bool LineReader::Next(std::string* line) {
  while (true) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      line->assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      return true;
    }
    char chunk[65536];
    const ssize_t n = read(fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

absl::Status StartWorker(WorkerProcess& worker, const std::vector<std::string>& argv,
                         const ConfineOptions& confine, ConfinePlan::Profile profile,
                         std::unique_ptr<WorkerSandbox>* sandbox, nlohmann::json* init,
                         const std::string& name) {
  std::vector<std::string> env;
  if (confine.enabled) {
    if (*sandbox == nullptr) {
      absl::StatusOr<std::unique_ptr<WorkerSandbox>> made = WorkerSandbox::Create(confine, profile);
      if (!made.ok()) return made.status();
      *sandbox = *std::move(made);
    }
    if (absl::Status s = (*sandbox)->Reset(); !s.ok()) return s;
    env = (*sandbox)->Environment();
    (*init)["confine"] = (*sandbox)->plan().ToJson();
  }
  if (std::string err = worker.Start(argv, confine.enabled ? &env : nullptr); !err.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot start the ", name, ": ", err));
  }
  return absl::OkStatus();
}

absl::Status CheckConfinedInit(const WorkerReply& reply, const WorkerSandbox* sandbox,
                               const std::string& name) {
  if (reply.kind != WorkerReply::Kind::kOk) return absl::OkStatus();
  if (!reply.body.value("ok", false)) {
    const std::string error = reply.body.value("error", "");
    if (!absl::StartsWith(error, kCannotConfine)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot confine the ", name, ": ", error.substr(std::strlen(kCannotConfine)),
        "; to measure unconfined on this host, start with --no-confine (docs/SECURITY.md)"));
  }
  if (sandbox != nullptr && !reply.body.contains("confined")) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", name,
                     " did not confine itself (a binary from before confinement?); refusing to "
                     "run candidates in it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> StageArtifact(WorkerSandbox* sandbox, const std::string& artifact) {
  if (sandbox == nullptr) return artifact;
  return sandbox->Stage(artifact);
}

std::string ConfineWorker(const nlohmann::json& plan_json, int reply_fd, nlohmann::json& reply) {
  absl::StatusOr<ConfinePlan> plan = ConfinePlan::FromJson(plan_json);
  if (!plan.ok()) return absl::StrCat(kCannotConfine, plan.status().message());
  plan->reply_fd = reply_fd;
  absl::StatusOr<std::string> confined = ConfineThisProcess(*plan);
  if (!confined.ok()) return absl::StrCat(kCannotConfine, confined.status().message());
  reply["confined"] = *confined;
  return "";
}

std::string PinThisProcess(const std::vector<int>& cores) {
  if (cores.empty()) return "";
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cores) {
    if (c < 0 || c >= CPU_SETSIZE) return absl::StrCat("core ", c, " is out of range");
    CPU_SET(c, &set);
  }
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return absl::StrCat("sched_setaffinity failed: ", std::strerror(errno));
  }
  return "";
}

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) cpus.push_back(i);
  }
  return cpus;
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string CompareToReference(const graph::Tensor& got, const graph::Tensor& want) {
  if (got.shape() != want.shape()) {
    return absl::StrCat("output shape ", graph::ShapeToString(got.shape()),
                        " differs from the reference's ", graph::ShapeToString(want.shape()));
  }
  double max_err = 0, max_ref = 0;
  int64_t worst = 0;
  const float* g = got.data<float>();
  const float* w = want.data<float>();
  for (int64_t i = 0; i < want.num_elements(); ++i) {
    const double err = std::fabs(static_cast<double>(g[i]) - w[i]);
    if (!(err <= max_err)) {  // also catches NaN
      max_err = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
      worst = i;
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(w[i])));
  }
  const double tolerance = 1e-3 * max_ref + 1e-5;
  if (!(max_err <= tolerance)) {
    return absl::StrCat("max abs error ", max_err, " > tolerance ", tolerance, " (element ", worst,
                        ": got ", g[worst], ", want ", w[worst], ")");
  }
  return "";
}

bool ReadSetupReply(const WorkerReply& reply, std::string_view worker, MeasureResult& r) {
  if (reply.kind == WorkerReply::Kind::kOk && reply.body.value("ok", false)) return true;
  if (reply.kind == WorkerReply::Kind::kOk) {
    r.error = static_cast<ErrorKind>(reply.body.value("error_kind", 7));
    r.error_msg = reply.body.value("error", "");
  } else {
    r.error = ErrorKind::kUnknown;
    r.error_msg = absl::StrCat("the ", std::string(worker), " ",
                               reply.kind == WorkerReply::Kind::kTimeout
                                   ? "timed out preparing the task"
                                   : reply.reason + " while preparing the task");
  }
  return false;
}

void ReadMeasureReply(const WorkerReply& reply, absl::Duration timeout, std::string_view worker,
                      MeasureResult& r) {
  switch (reply.kind) {
    case WorkerReply::Kind::kTimeout:
      r.error = ErrorKind::kRunTimeout;
      r.error_msg =
          absl::StrCat("the kernel ran past the run timeout of ", absl::FormatDuration(timeout),
                       "; the ", std::string(worker), " was killed and will be restarted");
      return;
    case WorkerReply::Kind::kDied:
      r.error = ErrorKind::kRuntime;
      r.error_msg = absl::StrCat(
          "the ", std::string(worker), " ", reply.reason, " while running the kernel",
          absl::StrContains(reply.reason, "SIGSYS")
              ? " (a system call its sandbox forbids: seccomp)"
          : absl::StrContains(reply.reason, "SIGXFSZ") ? " (a file past its size limit)"
                                                       : "",
          "; it will be restarted");
      return;
    case WorkerReply::Kind::kOk:
      if (reply.body.value("ok", false)) {
        r.costs = reply.body.value("costs", std::vector<double>{});
        if (r.costs.empty()) {
          r.error = ErrorKind::kUnknown;
          r.error_msg = absl::StrCat("the ", std::string(worker), " returned no costs");
        }
      } else {
        const int kind = reply.body.value("error_kind", 7);
        r.error = kind >= 1 && kind <= 7 ? static_cast<ErrorKind>(kind) : ErrorKind::kUnknown;
        r.error_msg = reply.body.value("error", "");
      }
      return;
  }
}

}  // namespace loom::tune
