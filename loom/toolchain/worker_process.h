// A sandbox child process that answers one JSON object per line over a socket pair (a socket
// rather than pipes, so that a write to a dead worker is an error, not a SIGPIPE). The CPU and
// CUDA measurers (local_measurer.cc, cuda_measurer.cc) keep one each: a request past its timeout
// gets the worker SIGKILLed, and a worker that dies is reported with how it ended, so the caller
// can record the candidate's error and start a fresh worker.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "loom/graph/tensor.h"
#include "loom/ops/template.h"
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

// One answer of a worker, and whether the worker must end once it is sent (its state, e.g. a
// CUDA context after a sticky error, is unusable).
struct WorkerAnswer {  // NOLINT(bugprone-exception-escape): json moves without throwing
  nlohmann::json body;
  bool fatal = false;
};

// A failure answer: {"ok":false,"error_kind":K,"error":message}.
nlohmann::json WorkerFailure(ErrorKind kind, const std::string& message);

// The request loop of a worker: reads one JSON object per line from `in_fd` until end of input
// and writes `handle(op, request, reply_fd)`'s answer to each (`op`: its "op" member, "" when
// absent); a line that is no JSON object, or a handler that throws, gets a kUnknown failure
// answer. When `out_fd` is standard output, the answers go to a private duplicate and fd 1 is
// pointed at stderr, so a stray print from a kernel or a library cannot corrupt them; `reply_fd`
// is where they go. Returns the worker's exit code: 0 at the end of input, 1 when an answer cannot
// be written, 3 after a fatal answer.
using WorkerHandler =
    std::function<WorkerAnswer(const std::string& op, const nlohmann::json& request, int reply_fd)>;
int ServeWorkerRequests(int in_fd, int out_fd, const WorkerHandler& handle);

// What a measure worker keeps of a task it prepared: the template, the natural inputs every
// candidate runs on (uniform in [-1, 1) from `seed`: ops::RandomNaturalInputs) and the reference
// kernels' output on them, built once.
struct WorkerTask {
  WorkerTask(std::unique_ptr<ops::Template> t, uint64_t seed);
  std::unique_ptr<ops::Template> tmpl;
  std::vector<graph::Tensor> natural_inputs;
  graph::Tensor reference;
};

// What a measure worker does for each op of the protocol (measure_worker.h): `init` answers
// {"op":"init",...} (on `reply_fd`'s behalf, for ConfineWorker); `prepare` builds the state of
// a task from a {"op":"task",...} request; `measure` answers {"op":"measure",...} with the
// current task (null before any task was prepared, or after one failed to).
template <typename Task>
struct MeasureWorkerOps {
  std::function<nlohmann::json(const nlohmann::json& request, int reply_fd)> init;
  std::function<absl::StatusOr<std::unique_ptr<Task>>(const nlohmann::json& request)> prepare;
  std::function<WorkerAnswer(const nlohmann::json& request, Task* task)> measure;
};

// The loop both measure workers run (ServeWorkerRequests): init, task and measure requests go to
// `ops`; a task is prepared once per distinct request (its members but "op") and kept while the
// worker lives; a task that fails to prepare is a kInstantiation answer; any other op is a
// kUnknown one.
template <typename Task>
int ServeMeasureWorker(int in_fd, int out_fd, const MeasureWorkerOps<Task>& ops) {
  std::map<std::string, std::unique_ptr<Task>> tasks;  // by the task request's text
  Task* current = nullptr;
  return ServeWorkerRequests(
      in_fd, out_fd,
      [&](const std::string& op, const nlohmann::json& request, int reply_fd) -> WorkerAnswer {
        if (op == "init") return {ops.init(request, reply_fd)};
        if (op == "measure") return ops.measure(request, current);
        if (op != "task") {
          return {WorkerFailure(ErrorKind::kUnknown, absl::StrCat("unknown op '", op, "'"))};
        }
        nlohmann::json id = request;
        id.erase("op");
        const std::string task_id = id.dump();
        auto it = tasks.find(task_id);
        if (it == tasks.end()) {
          absl::StatusOr<std::unique_ptr<Task>> state = ops.prepare(request);
          if (!state.ok()) {
            current = nullptr;
            return {WorkerFailure(ErrorKind::kInstantiation, state.status().ToString())};
          }
          it = tasks.emplace(task_id, std::move(*state)).first;
        }
        current = it->second.get();
        return {nlohmann::json{{"ok", true}}};
      });
}

// The timing of a measure request, after the warm-up: `time_runs(n)` returns the seconds n
// back-to-back runs take; `number` (the request's "number", at least 1) grows, up to
// `max_number`, until one repeat lasts the request's "min_repeat_ms", then the request's
// "repeat" repeats (at least 1) are timed. The answer {"ok":true,"costs":[s,...],"number":N}
// (seconds per run), or the first error of time_runs.
absl::StatusOr<nlohmann::json> TimeRepeats(
    const nlohmann::json& request, int64_t max_number,
    const std::function<absl::StatusOr<double>(int64_t n)>& time_runs);

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
