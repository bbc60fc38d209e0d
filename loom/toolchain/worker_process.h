// A sandbox child process that answers one JSON object per line over a socket pair (a socket
// rather than pipes, so that a write to a dead worker is an error, not a SIGPIPE). The CPU and
// CUDA measurers (local_measurer.cc, cuda_measurer.cc) keep one each: a request past its timeout
// gets the worker SIGKILLed, and a worker that dies is reported with how it ended, so the caller
// can record the candidate's error and start a fresh worker.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/graph/tensor.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/measure_result.h"
#include "nlohmann/json.hpp"

namespace loom::tune {

// One answer from the worker, or why there is none.
struct WorkerReply {  // NOLINT(bugprone-exception-escape): json moves without throwing
  enum class Kind { kOk, kTimeout, kDied } kind = Kind::kDied;
  nlohmann::json body;  // kOk: a JSON object
  std::string reason;   // kDied: how the worker ended ("was killed by signal SIGSEGV (...)")
};

// Not thread-safe: the owning measurer serializes calls.
class WorkerProcess {
 public:
  WorkerProcess() = default;
  ~WorkerProcess() { Stop(); }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // True while the worker process lives; reaps it when it has ended (e.g. killed with the thread
  // that started it), so a stale worker is replaced before a candidate is sent to it.
  bool Alive();
  pid_t pid() const { return pid_; }

  // fork + exec of `argv` with the socket on its stdin and stdout; the child dies with the
  // thread that started it (PR_SET_PDEATHSIG). `env`: the child's whole environment (null: this
  // process's). Returns an error message, empty on success.
  std::string Start(const std::vector<std::string>& argv,
                    const std::vector<std::string>* env = nullptr);

  // Sends `request` and waits up to `timeout` for its answer. On a timeout the worker is killed;
  // when it dies the reason is its exit status.
  WorkerReply Call(const nlohmann::json& request, absl::Duration timeout);

  // Closes the socket (a healthy worker exits at end of input) and reaps the process, killing
  // it if it does not exit within `grace`.
  void Stop(absl::Duration grace = absl::Milliseconds(500));

 private:
  void Kill();
  // The worker closed its end: collect how it ended (it may take a moment to finish dying).
  std::string Reap();

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_;  // received bytes not yet consumed as a line
};

// Reading a measure worker's answers into a candidate's result, shared by both measurers;
// `worker` names the process in messages ("measure worker", "CUDA measure worker").
// The answer to a task-setup request: true when the task is loaded, else fills `r`'s error.
bool ReadSetupReply(const WorkerReply& reply, std::string_view worker, MeasureResult& r);
// The answer to a measure request sent with `timeout`: the costs, or the candidate's error
// (run timeout, a dead worker as a runtime error, or the error kind the worker reported).
void ReadMeasureReply(const WorkerReply& reply, absl::Duration timeout, std::string_view worker,
                      MeasureResult& r);

// "exited with status 3", "was killed by signal SIGSEGV (Segmentation fault)".
std::string DescribeExit(int wait_status);

// The worker's side of the protocol (measure_worker.cc, cuda_measure_worker.cc).

// Reads newline-terminated lines from a file descriptor.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  // False at end of input.
  bool Next(std::string* line);

 private:
  int fd_;
  std::string buffer_;
};

// The measurer's side of a confined worker (confine.h), shared by both measurers.
// Starts `worker` with `argv`: with `confine.enabled`, inside a sandbox (made in `*sandbox` at the
// first start, emptied at each start) and with its cleared environment, and puts the sandbox's
// plan into the `init` request as "confine". kUnavailable when the worker cannot start; the
// sandbox's own errors (no such user, no usable folder) as they are.
absl::Status StartWorker(WorkerProcess& worker, const std::vector<std::string>& argv,
                         const ConfineOptions& confine, ConfinePlan::Profile profile,
                         std::unique_ptr<WorkerSandbox>* sandbox, nlohmann::json* init,
                         const std::string& name);
// The confinement in an answer to init: kFailedPrecondition when the worker could not confine
// itself (naming the layer the kernel refused, and --no-confine) or, with a sandbox, answered
// without confining itself. OK otherwise, including other failures, which the caller describes.
absl::Status CheckConfinedInit(const WorkerReply& reply, const WorkerSandbox* sandbox,
                               const std::string& name);
// The path the worker loads `artifact` from: a copy staged in `sandbox` (Unstage it after the
// measurement), or `artifact` itself without a sandbox.
absl::StatusOr<std::string> StageArtifact(WorkerSandbox* sandbox, const std::string& artifact);

// The worker's side of its init request's "confine" member (a ConfinePlan): confines this
// process, answering on `reply_fd`, and records what is in force as `reply["confined"]`. Returns
// an error message naming the layer the kernel refused, empty on success.
std::string ConfineWorker(const nlohmann::json& plan, int reply_fd, nlohmann::json& reply);
// How ConfineWorker's messages start, so that a measurer can tell a refused layer from other
// init failures.
inline constexpr char kCannotConfine[] = "cannot confine the worker: ";

// Confines this process (and the threads it creates later) to `cores`; empty: unchanged.
// Returns an error message, empty on success.
std::string PinThisProcess(const std::vector<int>& cores);
// This process's allowed CPU set, ascending.
std::vector<int> AllowedCpus();

// Writes all of `data`; false when the peer is gone.
bool WriteAll(int fd, const std::string& data);

// The correctness check of a candidate's first run: empty when `got` matches `want` (the
// reference kernel's output) within 1e-3 x max|want| + 1e-5 everywhere (NaN never matches),
// else the kWrongAnswer message naming the worst element.
std::string CompareToReference(const graph::Tensor& got, const graph::Tensor& want);

}  // namespace loom::tune
