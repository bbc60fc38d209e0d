// Confinement of the processes that run code the tuner did not write: the measure workers
// (measure_worker.h loads each candidate's shared object and runs it; cuda_measure_worker.h hands
// cubins to the GPU driver) and the builder's compiler processes (local_builder.cc).
//
// Who calls what: a measurer (local_measurer.cc, cuda_measurer.cc) makes a WorkerSandbox, starts
// its worker with the sandbox's environment and sends the sandbox's ConfinePlan in the worker's
// init request; the worker applies it to itself with ConfineThisProcess before it touches any
// candidate, and answers with the description of what is in force (or the layer the kernel
// refused, which fails the measurer's start: `--no-confine` is then the way to run unconfined).
// The builder starts every compiler through SpawnProcess with CompilerConfinement's limits.
// docs/SECURITY.md ("Confinement of candidates") says what each layer stops and what it cannot.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace loom::tune {

struct ConfineOptions {
  // Off (`loom agent --no-confine`, `loom tune --no-confine`): the worker runs as this process's
  // user, with its environment, network and filesystem; only a crash or hang is contained.
  bool enabled = true;
  // The user the worker runs as when this process is root. Empty: "loom-measure" when that user
  // exists, else "nobody"; its group is the user's primary group. Never root. Ignored when this
  // process is not root (the worker keeps its user, in a user namespace of its own).
  std::string user{};
  // Address space the CPU worker may map beyond what it has mapped when it confines itself
  // (RLIMIT_AS): buffers, the candidate's allocations, thread stacks. 0: unlimited. Not applied
  // to the CUDA worker (the driver reserves terabytes of address space).
  int64_t memory_bytes = int64_t{8} << 30;
  int32_t max_open_files = 256;  // RLIMIT_NOFILE
  // RLIMIT_NPROC of the worker's user, threads included; applied only where the worker has a
  // user of its own (this process is root), since the limit counts every process of the user.
  int32_t max_threads = 4096;
  int64_t max_file_bytes = int64_t{1} << 30;  // RLIMIT_FSIZE: the largest file it may write
  // Where each worker's private folder is made; the worker loads candidates from there, so it
  // must allow mapping code (not mounted noexec) and be reachable by the worker's user (not under
  // a 0700 home). Empty: the first such of $TMPDIR, /tmp, /var/tmp, /dev/shm.
  std::string scratch_root{};
  // Files or folders the CPU worker may read besides the system's (/usr, /lib*, the loader's
  // cache, /sys/devices/system/cpu) and its own folders, e.g. a compiler's library folder
  // outside /usr that the candidates link against.
  std::vector<std::string> read_paths{};
  // Names of this process's environment variables passed on to the worker (whose environment
  // is otherwise cleared), e.g. a driver's setting; never put a secret here.
  std::vector<std::string> pass_env{};
};

// kInvalidArgument for negative byte limits, fewer than 16 open files or no thread.
absl::Status ValidateConfineOptions(const ConfineOptions& options);

// What a worker does to itself at start: the resolved form of ConfineOptions, sent to the worker
// as JSON in its init request (one process resolves users and makes folders; the worker only
// applies).
struct ConfinePlan {
  // kCpu: an allow-list of system calls (default: killed), Landlock, an address-space limit.
  // kCuda: the GPU driver needs its device files, ioctls and whatever files it opens, so only a
  // deny-list of system calls (sockets to other hosts, exec, fork, ptrace, namespaces, ...) and
  // no filesystem or address-space rules.
  enum class Profile { kCpu, kCuda };
  Profile profile = Profile::kCpu;
  int64_t uid = -1;  // -1: keep this process's (then `user_namespace`)
  int64_t gid = -1;
  std::string user_name;  // for the description
  // Not root: a user namespace of its own, which is what lets an unprivileged process make a
  // network namespace.
  bool user_namespace = false;
  std::string work_dir;   // its working directory, HOME and TMPDIR; the only folder it writes
  std::string inbox_dir;  // artifacts the parent stages for it: read-only to it
  std::vector<std::string> read_paths;
  int64_t memory_bytes = 0;
  int32_t max_open_files = 256;
  int32_t max_threads = 0;  // 0: RLIMIT_NPROC untouched
  int64_t max_file_bytes = 0;
  // The fd the worker answers on: a forbidden system call is reported there (one answer line,
  // "fatal") before the worker dies of SIGSYS. -1: not reported.
  int reply_fd = -1;

  nlohmann::json ToJson() const;
  // kInvalidArgument naming the field that is missing or of the wrong type.
  static absl::StatusOr<ConfinePlan> FromJson(const nlohmann::json& json);
};

// Applies `plan` to the calling process, in this order: network namespace (and user namespace
// when not root), working directory, resource limits (no core files), the user (root only; the
// parent-death signal is re-armed since a credential change clears it), no_new_privs, Landlock
// (kCpu), seccomp. Call it single-threaded, after anything that needs files outside the plan's
// paths. On success, a one-line description of every layer in force; on failure, kUnavailable
// naming the layer and the kernel's answer (the process is then partly confined and should exit).
absl::StatusOr<std::string> ConfineThisProcess(const ConfinePlan& plan);

// The private folders of one measurer's worker: <root>/loom-sandbox-XXXXXX/ holding `in` (the
// artifacts the measurer stages for the worker; only this process writes there) and `work` (the
// worker's own folder). Made for the worker's user; removed with the object.
class WorkerSandbox {
 public:
  // kFailedPrecondition when the user does not exist or is root, or the folders cannot be made.
  static absl::StatusOr<std::unique_ptr<WorkerSandbox>> Create(const ConfineOptions& options,
                                                               ConfinePlan::Profile profile);
  ~WorkerSandbox();
  WorkerSandbox(const WorkerSandbox&) = delete;
  WorkerSandbox& operator=(const WorkerSandbox&) = delete;

  const ConfinePlan& plan() const { return plan_; }
  // The worker's whole environment: PATH, LANG=C, HOME and TMPDIR (its work folder), and from
  // this process only LD_LIBRARY_PATH, the sanitizers' *SAN_OPTIONS and, for kCuda,
  // CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER, and ConfineOptions.pass_env. Nothing else of
  // this process's (no LOOM_TOKEN).
  std::vector<std::string> Environment() const;
  // Copies `artifact` into `in` under a fresh name and returns the copy's path; the worker reads
  // only that copy. kNotFound when `artifact` cannot be read.
  absl::StatusOr<std::string> Stage(const std::string& artifact);
  void Unstage(const std::string& staged);
  // Empties `work` and `in`: a fresh worker finds nothing an earlier candidate left.
  absl::Status Reset();

 private:
  WorkerSandbox() = default;
  ConfinePlan plan_;
  std::vector<std::string> pass_env_;
  std::string root_;
  uint64_t staged_ = 0;  // names staged copies
};

// The resource limits and isolation of one compiler process (and the processes it starts).
struct CompilerConfinement {
  std::vector<std::string> env;    // its whole environment
  int64_t memory_bytes = 0;        // RLIMIT_AS; 0: unlimited
  int64_t cpu_seconds = 0;         // RLIMIT_CPU; 0: unlimited
  int64_t max_file_bytes = 0;      // RLIMIT_FSIZE; 0: unlimited
  int32_t max_open_files = 0;      // RLIMIT_NOFILE; 0: unchanged
  bool network_namespace = false;  // a new, empty network namespace (needs root)
};

// What the builder gives its compilers when confinement is on: this process's PATH, HOME,
// LANG, LC_ALL, LD_LIBRARY_PATH and CCACHE_* variables with TMPDIR set to `temp_dir`; 4 GiB of
// address space, `timeout` + 1 s of CPU time, 1 GiB files, 1024 open files, no core files; a
// network namespace when this process is root.
CompilerConfinement CompilerConfinementFor(const std::string& temp_dir, absl::Duration timeout);

// Starts argv[0] (looked up on PATH) with stdin from /dev/null and stdout and stderr on
// `output_fd`, in a new process group, with `confinement` applied between fork and exec (null:
// this process's environment, no limits). Returns the pid, or kUnavailable naming the step that
// failed (exec included: "cannot run 'g++': No such file or directory").
absl::StatusOr<pid_t> SpawnProcess(const std::vector<std::string>& argv, int output_fd,
                                   const CompilerConfinement* confinement);

// Makes a private folder `<parent>/<prefix>XXXXXX` (mode 0700); `parent` empty: $TMPDIR, else
// /tmp. kFailedPrecondition when it cannot.
absl::StatusOr<std::string> MakePrivateDir(const std::string& parent, const std::string& prefix);

}  // namespace loom::tune
