#include "loom/toolchain/confine.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"

extern char** environ;

namespace loom::tune {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string Errno(int err = errno) { return std::strerror(err); }

std::string Bytes(int64_t b) {
  if (b >= (int64_t{1} << 30))
    return absl::StrFormat("%.1f GiB", static_cast<double>(b) / (1 << 30));
  return absl::StrFormat("%.0f MiB", static_cast<double>(b) / (1 << 20));
}

// ---- Seccomp ---------------------------------------------------------------------------------

// System calls of the CPU worker: what loading a shared object (under Landlock) and running a
// kernel on threads needs, plus the worker's own protocol I/O. Names missing on an architecture
// are skipped. Everything else kills the worker with SIGSYS (see OnForbiddenSyscall), except
// the calls with argument rules in CpuFilter.
constexpr const char* kCpuAllowed[] = {
    // I/O on descriptors it holds or opens under Landlock
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "lseek", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "fsync",
    "fdatasync", "ftruncate", "poll", "ppoll", "select", "pselect6", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd",
    "eventfd2", "pipe", "pipe2",
    // files: Landlock decides which
    "open", "openat", "openat2", "creat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs",
    "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getcwd", "getdents",
    "getdents64", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "truncate", "chdir", "fchdir", "umask",
    // memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "membarrier",
    // threads (clone is allowed for threads only, below)
    "futex", "futex_waitv", "set_robust_list", "get_robust_list", "set_tid_address", "rseq",
    "arch_prctl", "sched_yield", "sched_getaffinity", "sched_getparam", "sched_getscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "getcpu",
    // signals (sent only to itself, below)
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "sigaltstack", "restart_syscall",
    // time
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    // identity and limits
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getpgrp", "getpgid", "getsid", "uname", "sysinfo", "getrusage",
    "times", "getrlimit", "setrlimit", "getrandom", "exit", "exit_group"};

// System calls the CUDA worker may never make (its driver needs everything else it may do).
constexpr const char* kCudaDenied[] = {"execve",
                                       "execveat",
                                       "fork",
                                       "vfork",
                                       "ptrace",
                                       "process_vm_readv",
                                       "process_vm_writev",
                                       "kcmp",
                                       "pidfd_open",
                                       "pidfd_getfd",
                                       "pidfd_send_signal",
                                       "tkill",
                                       "unshare",
                                       "setns",
                                       "mount",
                                       "umount2",
                                       "pivot_root",
                                       "chroot",
                                       "move_mount",
                                       "open_tree",
                                       "fsopen",
                                       "fsmount",
                                       "fspick",
                                       "mount_setattr",
                                       "bpf",
                                       "keyctl",
                                       "add_key",
                                       "request_key",
                                       "init_module",
                                       "finit_module",
                                       "delete_module",
                                       "kexec_load",
                                       "kexec_file_load",
                                       "reboot",
                                       "swapon",
                                       "swapoff",
                                       "acct",
                                       "quotactl",
                                       "iopl",
                                       "ioperm",
                                       "personality",
                                       "userfaultfd",
                                       "io_uring_setup",
                                       "perf_event_open"};

// Names of system calls by number, filled before the filter is loaded so that the SIGSYS
// handler only reads memory.
constexpr int kMaxSyscallNumber = 1024;
const char* g_syscall_names[kMaxSyscallNumber];
int g_reply_fd = -1;
std::atomic<bool> g_reported{false};

void Append(char* buf, size_t cap, size_t* n, const char* s) {
  while (*s != '\0' && *n + 1 < cap) buf[(*n)++] = *s++;
}

void AppendNumber(char* buf, size_t cap, size_t* n, int v) {
  char digits[16];
  int k = 0;
  unsigned u = v < 0 ? 0u : static_cast<unsigned>(v);
  do {
    digits[k++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0 && k < 15);
  while (k > 0 && *n + 1 < cap) buf[(*n)++] = digits[--k];
}

// SECCOMP_RET_TRAP lands here: the call was not made. Answers the request in flight with the
// call's name (async-signal-safe: fixed buffer, write), then dies of SIGSYS, so the measurer
// records the candidate as a runtime error and starts a fresh worker. A candidate that installs
// its own handler gains nothing: the call still is not made.
void OnForbiddenSyscall(int, siginfo_t* info, void*) {
  const int nr = info->si_syscall;
  const char* name = nr >= 0 && nr < kMaxSyscallNumber && g_syscall_names[nr] != nullptr
                         ? g_syscall_names[nr]
                         : "unknown";
  if (g_reply_fd >= 0 && !g_reported.exchange(true)) {
    char line[400];
    size_t n = 0;
    Append(line, sizeof(line), &n, R"({"ok":false,"fatal":true,"error_kind":3,"error":")");
    Append(line, sizeof(line), &n,
           "the sandbox killed the measure worker with SIGSYS: system call '");
    Append(line, sizeof(line), &n, name);
    Append(line, sizeof(line), &n, "' (");
    AppendNumber(line, sizeof(line), &n, nr);
    Append(line, sizeof(line), &n,
           ") is forbidden to candidates (seccomp); the worker will be restarted\"}\n");
    ssize_t unused = write(g_reply_fd, line, n);
    (void)unused;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGSYS, &dfl, nullptr);
  raise(SIGSYS);  // delivered when this handler returns
}

void FillSyscallNames() {
  for (int nr = 0; nr < kMaxSyscallNumber; ++nr) {
    // Kept for the life of the process: the handler may need any of them.
    g_syscall_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  }
}

struct SeccompCtx {
  scmp_filter_ctx ctx = nullptr;
  ~SeccompCtx() {
    if (ctx != nullptr) seccomp_release(ctx);
  }
};

absl::Status RuleError(const char* what, int rc) {
  return absl::UnavailableError(
      absl::StrCat("seccomp: cannot add the rule for ", what, ": ", Errno(-rc)));
}

absl::Status AddRule(scmp_filter_ctx ctx, uint32_t action, const char* name, unsigned count,
                     const scmp_arg_cmp* args) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return absl::OkStatus();  // not on this architecture
  const int rc = seccomp_rule_add_array(ctx, action, nr, count, args);
  if (rc != 0) return RuleError(name, rc);
  return absl::OkStatus();
}

absl::Status AddPlain(scmp_filter_ctx ctx, uint32_t action, const char* name) {
  return AddRule(ctx, action, name, 0, nullptr);
}

absl::Status AddOneArg(scmp_filter_ctx ctx, uint32_t action, const char* name, scmp_arg_cmp arg) {
  return AddRule(ctx, action, name, 1, &arg);
}

// kill and tgkill may target only this process: not the agent, not another worker. `action`
// applies to the calls that target anything else (the default action allows the rest), or, with
// SCMP_ACT_ALLOW, to the calls that target this process (the default action takes the rest).
absl::Status SignalsToSelfOnly(scmp_filter_ctx ctx, uint32_t action) {
  const auto self = static_cast<scmp_datum_t>(getpid());
  const scmp_arg_cmp arg =
      action == SCMP_ACT_ALLOW ? SCMP_A0(SCMP_CMP_EQ, self) : SCMP_A0(SCMP_CMP_NE, self);
  for (const char* name : {"kill", "tgkill"}) {
    LOOM_RETURN_IF_ERROR(AddOneArg(ctx, action, name, arg));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CpuFilter(scmp_filter_ctx ctx) {
  int allowed = 0;
  for (const char* name : kCpuAllowed) {
    LOOM_RETURN_IF_ERROR(AddPlain(ctx, SCMP_ACT_ALLOW, name));
    ++allowed;
  }
  // Threads, never processes: a clone without CLONE_THREAD (fork) is killed.
  LOOM_RETURN_IF_ERROR(AddOneArg(ctx, SCMP_ACT_ALLOW, "clone",
                                 SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)));
  // clone3 passes its flags in memory a filter cannot read: ENOSYS makes glibc fall back to clone.
  LOOM_RETURN_IF_ERROR(AddPlain(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3"));
  LOOM_RETURN_IF_ERROR(SignalsToSelfOnly(ctx, SCMP_ACT_ALLOW));
  LOOM_RETURN_IF_ERROR(AddOneArg(ctx, SCMP_ACT_ALLOW, "prlimit64", SCMP_A0(SCMP_CMP_EQ, 0)));
  LOOM_RETURN_IF_ERROR(AddOneArg(ctx, SCMP_ACT_ALLOW, "prlimit64",
                                 SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(getpid()))));
  for (int option : {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_GET_NO_NEW_PRIVS,
                     0x53564d41 /* PR_SET_VMA: glibc names its mappings */}) {
    LOOM_RETURN_IF_ERROR(AddOneArg(ctx, SCMP_ACT_ALLOW, "prctl",
                                   SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(option))));
  }
  // Probed by libraries (isatty, unpinning): refused, not fatal. The worker is pinned already.
  LOOM_RETURN_IF_ERROR(AddPlain(ctx, SCMP_ACT_ERRNO(ENOTTY), "ioctl"));
  LOOM_RETURN_IF_ERROR(AddPlain(ctx, SCMP_ACT_ERRNO(EPERM), "sched_setaffinity"));
  return absl::StrCat("seccomp allow-list (", allowed,
                      " system calls, threads but no processes, signals to itself only; no "
                      "sockets, exec, fork, ptrace)");
}

absl::StatusOr<std::string> CudaFilter(scmp_filter_ctx ctx) {
  for (const char* name : kCudaDenied) LOOM_RETURN_IF_ERROR(AddPlain(ctx, SCMP_ACT_TRAP, name));
  LOOM_RETURN_IF_ERROR(
      AddOneArg(ctx, SCMP_ACT_TRAP, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0)));
  LOOM_RETURN_IF_ERROR(AddPlain(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3"));
  LOOM_RETURN_IF_ERROR(SignalsToSelfOnly(ctx, SCMP_ACT_TRAP));
  for (int family : {AF_INET, AF_INET6, AF_PACKET}) {
    LOOM_RETURN_IF_ERROR(AddOneArg(ctx, SCMP_ACT_TRAP, "socket",
                                   SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))));
  }
  return absl::StrCat("seccomp deny-list (", std::size(kCudaDenied) + 3,
                      " system calls: no network sockets, exec, fork, ptrace, namespaces; "
                      "signals to itself only)");
}

absl::StatusOr<std::string> LoadSeccomp(const ConfinePlan& plan) {
  FillSyscallNames();
  g_reply_fd = plan.reply_fd;
  struct sigaction sa {};
  sa.sa_sigaction = &OnForbiddenSyscall;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, nullptr) != 0) {
    return absl::UnavailableError(absl::StrCat("seccomp: cannot handle SIGSYS: ", Errno()));
  }
  SeccompCtx filter;
  filter.ctx =
      seccomp_init(plan.profile == ConfinePlan::Profile::kCpu ? SCMP_ACT_TRAP : SCMP_ACT_ALLOW);
  if (filter.ctx == nullptr) return absl::UnavailableError("seccomp: seccomp_init failed");
  // Threads that already exist get the filter too.
  seccomp_attr_set(filter.ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  absl::StatusOr<std::string> what =
      plan.profile == ConfinePlan::Profile::kCpu ? CpuFilter(filter.ctx) : CudaFilter(filter.ctx);
  if (!what.ok()) return what.status();
  if (const int rc = seccomp_load(filter.ctx); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("seccomp: the kernel refused the filter: ", Errno(-rc),
                     rc == -EINVAL || rc == -ENOSYS ? " (a kernel without seccomp filters?)" : ""));
  }
  return what;
}

// ---- Landlock --------------------------------------------------------------------------------
// The constants of Landlock ABIs newer than Debian 12's kernel headers.

constexpr uint64_t kFsExecute = LANDLOCK_ACCESS_FS_EXECUTE;
constexpr uint64_t kFsWriteFile = LANDLOCK_ACCESS_FS_WRITE_FILE;
constexpr uint64_t kFsReadFile = LANDLOCK_ACCESS_FS_READ_FILE;
constexpr uint64_t kFsReadDir = LANDLOCK_ACCESS_FS_READ_DIR;
constexpr uint64_t kFsAbi1 = (uint64_t{1} << 13) - 1;  // EXECUTE .. MAKE_SYM
constexpr uint64_t kFsRefer = uint64_t{1} << 13;       // ABI 2
constexpr uint64_t kFsTruncate = uint64_t{1} << 14;    // ABI 3
constexpr uint64_t kFsIoctlDev = uint64_t{1} << 15;    // ABI 5
constexpr uint64_t kFileRights =
    kFsExecute | kFsWriteFile | kFsReadFile | kFsTruncate | kFsIoctlDev;
constexpr uint64_t kNetBindTcp = uint64_t{1} << 0;         // ABI 4
constexpr uint64_t kNetConnectTcp = uint64_t{1} << 1;      // ABI 4
constexpr uint64_t kScopeAbstractUnix = uint64_t{1} << 0;  // ABI 6
constexpr uint64_t kScopeSignal = uint64_t{1} << 1;        // ABI 6

struct LandlockRulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};

struct __attribute__((packed)) LandlockPathBeneath {
  uint64_t allowed_access;
  int32_t parent_fd;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// What every CPU worker may read: the system's libraries (a candidate links libstdc++, libm),
// the loader's cache, the CPU topology, its own /proc entry and the harmless device files.
constexpr const char* kSystemReadPaths[] = {"/usr",
                                            "/lib",
                                            "/lib64",
                                            "/lib32",
                                            "/etc/ld.so.cache",
                                            "/etc/ld.so.conf",
                                            "/etc/ld.so.conf.d",
                                            "/sys/devices/system/cpu",
                                            "/proc/self",
                                            "/dev/null",
                                            "/dev/zero",
                                            "/dev/urandom"};

absl::StatusOr<std::string> ApplyLandlock(const ConfinePlan& plan) {
  const long abi =
      syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    const int err = errno;
    return absl::UnavailableError(absl::StrCat(
        "Landlock: ", err == ENOSYS ? "this kernel has no Landlock (Linux 5.13 or later with "
                                      "CONFIG_SECURITY_LANDLOCK)"
                      : err == EOPNOTSUPP
                          ? "Landlock is disabled (add landlock to the kernel's lsm= list)"
                          : Errno(err)));
  }
  uint64_t handled_fs = kFsAbi1;
  if (abi >= 2) handled_fs |= kFsRefer;
  if (abi >= 3) handled_fs |= kFsTruncate;
  if (abi >= 5) handled_fs |= kFsIoctlDev;
  const LandlockRulesetAttr attr{handled_fs, abi >= 4 ? kNetBindTcp | kNetConnectTcp : 0,
                                 abi >= 6 ? kScopeAbstractUnix | kScopeSignal : 0};
  const size_t attr_size = abi >= 6   ? sizeof(attr)
                           : abi >= 4 ? 2 * sizeof(uint64_t)
                                      : sizeof(uint64_t);
  Fd ruleset;
  ruleset.fd = static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0));
  if (ruleset.fd < 0) {
    return absl::UnavailableError(absl::StrCat("Landlock: cannot create a ruleset: ", Errno()));
  }
  auto allow = [&](const std::string& path, uint64_t access, bool required) -> absl::Status {
    Fd target;
    target.fd = open(path.c_str(), O_PATH | O_CLOEXEC);
    if (target.fd < 0) {
      if (!required && errno == ENOENT) return absl::OkStatus();
      return absl::UnavailableError(
          absl::StrCat("Landlock: cannot open '", path, "' for a rule: ", Errno()));
    }
    struct stat st {};
    if (fstat(target.fd, &st) == 0 && !S_ISDIR(st.st_mode)) access &= kFileRights;
    const LandlockPathBeneath rule{access & handled_fs, target.fd};
    if (syscall(SYS_landlock_add_rule, ruleset.fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
      return absl::UnavailableError(
          absl::StrCat("Landlock: cannot add the rule for '", path, "': ", Errno()));
    }
    return absl::OkStatus();
  };
  const uint64_t read = kFsReadFile | kFsReadDir;
  for (const char* path : kSystemReadPaths) LOOM_RETURN_IF_ERROR(allow(path, read, false));
  for (const std::string& path : plan.read_paths) LOOM_RETURN_IF_ERROR(allow(path, read, true));
  if (!plan.inbox_dir.empty()) LOOM_RETURN_IF_ERROR(allow(plan.inbox_dir, read, true));
  if (!plan.work_dir.empty()) LOOM_RETURN_IF_ERROR(allow(plan.work_dir, handled_fs, true));
  if (syscall(SYS_landlock_restrict_self, ruleset.fd, 0) != 0) {
    return absl::UnavailableError(absl::StrCat("Landlock: restrict_self failed: ", Errno()));
  }
  return absl::StrCat("Landlock ABI ", abi,
                      " (reads: system libraries and its folders; writes: its work folder only",
                      abi >= 4 ? "; no TCP" : "",
                      abi >= 6 ? "; no signals or abstract sockets outside the sandbox" : "", ")");
}

// ---- Limits and identity ---------------------------------------------------------------------

// Bytes this process has mapped (VmSize), so that the address-space limit is a budget on top of
// what the binary and its runtime (a sanitizer's shadow, for instance) reserved.
int64_t MappedBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "VmSize:")) continue;
    int64_t kb = 0;
    absl::string_view rest = absl::string_view(line).substr(7);
    rest = rest.substr(0, rest.find("kB"));
    if (absl::SimpleAtoi(rest, &kb)) return kb * 1024;
  }
  return 0;
}

absl::Status SetLimit(int resource, const char* name, uint64_t value) {
  const rlimit limit{value, value};
  if (setrlimit(resource, &limit) != 0) {
    return absl::UnavailableError(absl::StrCat("resource limit ", name, "=", value, ": ", Errno()));
  }
  return absl::OkStatus();
}

// Descriptors a careless parent let through exec (anything but stdin, stdout, stderr and the
// answer channel) are closed: a candidate must not write to the agent's files or sockets.
void CloseInheritedFds(int keep) {
  const unsigned max = ~0u;
  if (keep > 3) syscall(SYS_close_range, 3u, static_cast<unsigned>(keep - 1), 0u);
  syscall(SYS_close_range, static_cast<unsigned>(std::max(3, keep + 1)), max, 0u);
}

json::array_t Strings(const std::vector<std::string>& v) {
  return json::array_t(v.begin(), v.end());
}

}  // namespace

// ---- ConfinePlan -----------------------------------------------------------------------------

json ConfinePlan::ToJson() const {
  return json{{"profile", profile == Profile::kCpu ? "cpu" : "cuda"},
              {"uid", uid},
              {"gid", gid},
              {"user_name", user_name},
              {"user_namespace", user_namespace},
              {"work_dir", work_dir},
              {"inbox_dir", inbox_dir},
              {"read_paths", Strings(read_paths)},
              {"memory_bytes", memory_bytes},
              {"max_open_files", max_open_files},
              {"max_threads", max_threads},
              {"max_file_bytes", max_file_bytes}};
}

absl::StatusOr<ConfinePlan> ConfinePlan::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("confine plan: expected a JSON object");
  ConfinePlan p;
  auto need = [&](const char* key, json::value_t type) -> absl::StatusOr<const json*> {
    auto it = j.find(key);
    const bool ok =
        it != j.end() &&
        (type == json::value_t::number_integer ? it->is_number_integer() : it->type() == type);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("confine plan: '", key, "' is missing or has the wrong type"));
    }
    return &*it;
  };
  LOOM_ASSIGN_OR_RETURN(const json* profile, need("profile", json::value_t::string));
  if (*profile == "cpu") {
    p.profile = Profile::kCpu;
  } else if (*profile == "cuda") {
    p.profile = Profile::kCuda;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("confine plan: unknown profile ", profile->dump()));
  }
  LOOM_ASSIGN_OR_RETURN(const json* uid, need("uid", json::value_t::number_integer));
  LOOM_ASSIGN_OR_RETURN(const json* gid, need("gid", json::value_t::number_integer));
  LOOM_ASSIGN_OR_RETURN(const json* name, need("user_name", json::value_t::string));
  LOOM_ASSIGN_OR_RETURN(const json* userns, need("user_namespace", json::value_t::boolean));
  LOOM_ASSIGN_OR_RETURN(const json* work, need("work_dir", json::value_t::string));
  LOOM_ASSIGN_OR_RETURN(const json* inbox, need("inbox_dir", json::value_t::string));
  LOOM_ASSIGN_OR_RETURN(const json* reads, need("read_paths", json::value_t::array));
  LOOM_ASSIGN_OR_RETURN(const json* memory, need("memory_bytes", json::value_t::number_integer));
  LOOM_ASSIGN_OR_RETURN(const json* files, need("max_open_files", json::value_t::number_integer));
  LOOM_ASSIGN_OR_RETURN(const json* threads, need("max_threads", json::value_t::number_integer));
  LOOM_ASSIGN_OR_RETURN(const json* fsize, need("max_file_bytes", json::value_t::number_integer));
  p.uid = uid->get<int64_t>();
  p.gid = gid->get<int64_t>();
  p.user_name = name->get<std::string>();
  p.user_namespace = userns->get<bool>();
  p.work_dir = work->get<std::string>();
  p.inbox_dir = inbox->get<std::string>();
  for (const json& r : *reads) {
    if (!r.is_string())
      return absl::InvalidArgumentError("confine plan: 'read_paths' holds a non-string");
    p.read_paths.push_back(r.get<std::string>());
  }
  p.memory_bytes = memory->get<int64_t>();
  p.max_open_files = files->get<int32_t>();
  p.max_threads = threads->get<int32_t>();
  p.max_file_bytes = fsize->get<int64_t>();
  if (p.memory_bytes < 0 || p.max_open_files < 16 || p.max_threads < 0 || p.max_file_bytes < 0) {
    return absl::InvalidArgumentError(
        "confine plan: limits must not be negative, and at least 16 open files are needed");
  }
  return p;
}

// ---- ConfineThisProcess ----------------------------------------------------------------------

absl::Status ValidateConfineOptions(const ConfineOptions& options) {
  if (options.memory_bytes < 0 || options.max_file_bytes < 0) {
    return absl::InvalidArgumentError(
        "ConfineOptions.memory_bytes and .max_file_bytes must not be negative");
  }
  if (options.max_open_files < 16 || options.max_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ConfineOptions.max_open_files must be at least 16 and .max_threads at least 1, got ",
        options.max_open_files, " and ", options.max_threads));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ConfineThisProcess(const ConfinePlan& plan) {
  // The network namespace and Landlock bind the calling thread and the threads it starts (where
  // candidates run); seccomp and the user bind every thread. A user namespace needs a
  // single-threaded process. Other threads exist only under a sanitizer's runtime.
  std::error_code ec;
  const auto threads =
      std::distance(fs::directory_iterator("/proc/self/task", ec), fs::directory_iterator());
  if (plan.user_namespace && (ec || threads != 1)) {
    return absl::UnavailableError(absl::StrCat(
        "a user namespace needs a single-threaded worker; this one has ", threads, " threads"));
  }
  std::vector<std::string> done;
  if (threads > 1) done.push_back(absl::StrCat(threads - 1, " runtime threads predate it"));
  const pid_t parent = getppid();
  const int64_t mapped = plan.profile == ConfinePlan::Profile::kCpu ? MappedBytes() : 0;

  // 1. A network namespace of its own, with only a loopback interface that is down.
  const int flags = CLONE_NEWNET | (plan.user_namespace ? CLONE_NEWUSER : 0);
  if (unshare(flags) != 0) {
    const int err = errno;
    return absl::UnavailableError(
        absl::StrCat("network namespace: unshare(", plan.user_namespace ? "CLONE_NEWUSER|" : "",
                     "CLONE_NEWNET) failed: ", Errno(err),
                     err == EPERM || err == ENOSPC || err == EINVAL
                         ? " (the kernel or the container refuses namespaces to this process)"
                         : ""));
  }
  done.push_back(plan.user_namespace ? "user and network namespaces" : "network namespace");

  // 2. Its own folder.
  if (!plan.work_dir.empty() && chdir(plan.work_dir.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot enter its work folder ", plan.work_dir, ": ", Errno()));
  }

  // 3. Resource limits (hard = soft: a candidate cannot raise them) and no core files.
  CloseInheritedFds(plan.reply_fd);
  std::vector<std::string> limits;
  if (plan.profile == ConfinePlan::Profile::kCpu && plan.memory_bytes > 0) {
    LOOM_RETURN_IF_ERROR(
        SetLimit(RLIMIT_AS, "RLIMIT_AS", static_cast<uint64_t>(mapped + plan.memory_bytes)));
    limits.push_back(absl::StrCat("address space +", Bytes(plan.memory_bytes)));
  }
  LOOM_RETURN_IF_ERROR(
      SetLimit(RLIMIT_NOFILE, "RLIMIT_NOFILE", static_cast<uint64_t>(plan.max_open_files)));
  limits.push_back(absl::StrCat(plan.max_open_files, " open files"));
  if (plan.uid >= 0 && plan.max_threads > 0) {
    LOOM_RETURN_IF_ERROR(
        SetLimit(RLIMIT_NPROC, "RLIMIT_NPROC", static_cast<uint64_t>(plan.max_threads)));
    limits.push_back(absl::StrCat(plan.max_threads, " threads for its user"));
  }
  if (plan.max_file_bytes > 0) {
    LOOM_RETURN_IF_ERROR(
        SetLimit(RLIMIT_FSIZE, "RLIMIT_FSIZE", static_cast<uint64_t>(plan.max_file_bytes)));
    limits.push_back(absl::StrCat("files up to ", Bytes(plan.max_file_bytes)));
  }
  LOOM_RETURN_IF_ERROR(SetLimit(RLIMIT_CORE, "RLIMIT_CORE", 0));
  limits.push_back("no core files");
  done.push_back(absl::StrCat("limits: ", absl::StrJoin(limits, ", ")));

  // 4. An unprivileged user (from root).
  if (plan.uid >= 0) {
    const auto uid = static_cast<uid_t>(plan.uid);
    const auto gid = static_cast<gid_t>(plan.gid);
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot become user ", plan.user_name, " (",
                                                 plan.uid, ":", plan.gid, "): ", Errno()));
    }
    uid_t r = 0, e = 0, s = 0;
    if (getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid) {
      return absl::UnavailableError(
          absl::StrCat("still not user ", plan.user_name, " after setresuid"));
    }
    done.push_back(absl::StrCat("user ", plan.user_name, " (", plan.uid, ":", plan.gid, ")"));
  }
  // A change of credentials (the user, or a user namespace) clears the parent-death signal: arm it
  // again, so that the worker still dies with the thread that started it.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    return absl::UnavailableError(absl::StrCat("PR_SET_PDEATHSIG: ", Errno()));
  }
  if (getppid() != parent) return absl::UnavailableError("the parent process is gone");

  // 5. No privileges through exec, ever (Landlock and seccomp need it unprivileged).
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return absl::UnavailableError(absl::StrCat("PR_SET_NO_NEW_PRIVS: ", Errno()));
  }
  done.push_back("no_new_privs");

  // 6. The filesystem: read the system's libraries and its inbox, write its work folder.
  if (plan.profile == ConfinePlan::Profile::kCpu) {
    LOOM_ASSIGN_OR_RETURN(std::string landlock, ApplyLandlock(plan));
    done.push_back(std::move(landlock));
  }

  // 7. System calls, last: the steps above need calls the filter forbids.
  LOOM_ASSIGN_OR_RETURN(std::string seccomp, LoadSeccomp(plan));
  done.push_back(std::move(seccomp));
  return absl::StrJoin(done, "; ");
}

// ---- WorkerSandbox ---------------------------------------------------------------------------

absl::StatusOr<std::string> MakePrivateDir(const std::string& parent, const std::string& prefix) {
  std::string root = parent;
  if (root.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    root = tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp";
  }
  std::string templ = absl::StrCat(root, "/", prefix, "XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot make a private folder under ", root, ": ", Errno()));
  }
  return templ;
}

namespace {

// Where sandboxes go: the worker loads candidates from there, so the folder must allow mapping
// code (a /tmp mounted noexec does not) and be reachable by others (the worker's user).
absl::StatusOr<std::string> PickScratchRoot(const std::string& configured) {
  auto usable = [](const std::string& dir) -> std::string {
    struct stat st {};
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "is not a folder";
    if ((st.st_mode & S_IXOTH) == 0) return "is not reachable by other users";
    struct statvfs vfs {};
    if (statvfs(dir.c_str(), &vfs) == 0 && (vfs.f_flag & ST_NOEXEC) != 0) {
      return "is on a filesystem mounted noexec";
    }
    return "";
  };
  if (!configured.empty()) {
    if (std::string why = usable(configured); !why.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("ConfineOptions.scratch_root ", configured, " ", why));
    }
    return configured;
  }
  std::vector<std::string> candidates;
  if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && tmp[0] != '\0') {
    candidates.emplace_back(tmp);
  }
  candidates.insert(candidates.end(), {"/tmp", "/var/tmp", "/dev/shm"});
  std::vector<std::string> reasons;
  for (const std::string& dir : candidates) {
    std::string why = usable(dir);
    if (why.empty()) return dir;
    reasons.push_back(absl::StrCat(dir, " ", why));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no folder for the measure worker's sandbox: ", absl::StrJoin(reasons, "; "),
                   " (set ConfineOptions.scratch_root)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerSandbox>> WorkerSandbox::Create(const ConfineOptions& options,
                                                                     ConfinePlan::Profile profile) {
  LOOM_RETURN_IF_ERROR(ValidateConfineOptions(options));
  std::unique_ptr<WorkerSandbox> box(new WorkerSandbox());
  ConfinePlan& plan = box->plan_;
  plan.profile = profile;
  if (geteuid() == 0) {
    std::string user = options.user;
    if (user.empty()) user = getpwnam("loom-measure") != nullptr ? "loom-measure" : "nobody";
    const passwd* pw = getpwnam(user.c_str());
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker's user '", user,
                       "' does not exist on this host (create it, or "
                       "name another with --measure-user)"));
    }
    if (pw->pw_uid == 0 || pw->pw_gid == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("the measure worker's user '", user,
                       "' is root (uid or gid 0); name an unprivileged one"));
    }
    plan.uid = pw->pw_uid;
    plan.gid = pw->pw_gid;
    plan.user_name = user;
    plan.max_threads = options.max_threads;
  } else {
    const passwd* pw = getpwuid(geteuid());
    plan.user_name = pw != nullptr ? pw->pw_name : absl::StrCat(geteuid());
    plan.user_namespace = true;
  }
  plan.memory_bytes = profile == ConfinePlan::Profile::kCpu ? options.memory_bytes : 0;
  plan.max_open_files = profile == ConfinePlan::Profile::kCpu
                            ? options.max_open_files
                            : std::max(options.max_open_files, 4096);
  plan.max_file_bytes = options.max_file_bytes;
  plan.read_paths = options.read_paths;
  box->pass_env_ = options.pass_env;

  LOOM_ASSIGN_OR_RETURN(const std::string scratch_root, PickScratchRoot(options.scratch_root));
  LOOM_ASSIGN_OR_RETURN(box->root_, MakePrivateDir(scratch_root, "loom-sandbox-"));
  plan.inbox_dir = box->root_ + "/in";
  plan.work_dir = box->root_ + "/work";
  // The worker's user may pass through the root (not list it) to its two folders.
  if (chmod(box->root_.c_str(), 0711) != 0 || mkdir(plan.inbox_dir.c_str(), 0755) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot prepare the sandbox folder ", box->root_, ": ", Errno()));
  }
  LOOM_RETURN_IF_ERROR(box->Reset());
  return box;
}

WorkerSandbox::~WorkerSandbox() {
  std::error_code ec;
  if (!root_.empty()) fs::remove_all(root_, ec);
}

std::vector<std::string> WorkerSandbox::Environment() const {
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C",
                                  absl::StrCat("HOME=", plan_.work_dir),
                                  absl::StrCat("TMPDIR=", plan_.work_dir)};
  std::vector<std::string> keep = {"LD_LIBRARY_PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                   "LSAN_OPTIONS", "TSAN_OPTIONS"};
  if (plan_.profile == ConfinePlan::Profile::kCuda) {
    keep.insert(keep.end(), {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"});
  }
  keep.insert(keep.end(), pass_env_.begin(), pass_env_.end());
  for (const std::string& name : keep) {
    if (const char* v = std::getenv(name.c_str()); v != nullptr) env.push_back(name + "=" + v);
  }
  return env;
}

absl::StatusOr<std::string> WorkerSandbox::Stage(const std::string& artifact) {
  const std::string staged =
      absl::StrCat(plan_.inbox_dir, "/", ++staged_, "-", fs::path(artifact).filename().string());
  std::error_code ec;
  // Only this process writes `in`, so the fresh name cannot be a link planted by a candidate.
  if (!fs::copy_file(artifact, staged, fs::copy_options::none, ec)) {
    return absl::NotFoundError(
        absl::StrCat("cannot stage ", artifact,
                     " for the sandboxed worker: ", ec ? ec.message() : "copy failed"));
  }
  fs::permissions(staged,
                  fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                      fs::perms::others_read,
                  ec);
  return staged;
}

void WorkerSandbox::Unstage(const std::string& staged) {
  std::error_code ec;
  fs::remove(staged, ec);
}

absl::Status WorkerSandbox::Reset() {
  std::error_code ec;
  // remove_all deletes links, never what they point at.
  fs::remove_all(plan_.work_dir, ec);
  for (const fs::directory_entry& e : fs::directory_iterator(plan_.inbox_dir, ec)) {
    fs::remove_all(e.path(), ec);
  }
  if (mkdir(plan_.work_dir.c_str(), 0700) != 0 ||
      (plan_.uid >= 0 && chown(plan_.work_dir.c_str(), static_cast<uid_t>(plan_.uid),
                               static_cast<gid_t>(plan_.gid)) != 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot make the sandbox's work folder ", plan_.work_dir, ": ", Errno()));
  }
  return absl::OkStatus();
}

// ---- Compilers -------------------------------------------------------------------------------

CompilerConfinement CompilerConfinementFor(const std::string& temp_dir, absl::Duration timeout) {
  CompilerConfinement c;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const absl::string_view var(*e);
    const absl::string_view name = var.substr(0, var.find('='));
    if (name == "PATH" || name == "HOME" || name == "LANG" || name == "LC_ALL" ||
        name == "LD_LIBRARY_PATH" || absl::StartsWith(name, "CCACHE_")) {
      c.env.emplace_back(var);
    }
  }
  c.env.push_back(absl::StrCat("TMPDIR=", temp_dir));
  c.memory_bytes = int64_t{4} << 30;
  c.cpu_seconds = static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(timeout))) + 1;
  c.max_file_bytes = int64_t{1} << 30;
  c.max_open_files = 1024;
  c.network_namespace = geteuid() == 0;
  return c;
}

namespace {

struct SpawnLimit {
  int resource;
  rlimit value;
};

// What the child of SpawnProcess needs, made before vfork; the child reports a failed step here.
struct SpawnArgs {
  char* const* argv;
  char* const* envp;
  const SpawnLimit* limits;
  size_t num_limits;
  bool netns;
  int devnull;
  int output_fd;
  const char* volatile failed_step;
  volatile int failed_errno;
};

// The vfork child: it shares the parent's memory until it execs, so it only makes system calls,
// and runs in a frame of its own (below the parent's) so it cannot clobber the parent's locals.
[[noreturn]] __attribute__((noinline)) void RunSpawnedChild(SpawnArgs* a) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
  const char* step = nullptr;
  if (setpgid(0, 0) != 0) {
    step = "setpgid";
  } else if (dup2(a->devnull, STDIN_FILENO) < 0 || dup2(a->output_fd, STDOUT_FILENO) < 0 ||
             dup2(a->output_fd, STDERR_FILENO) < 0) {
    step = "dup2";
  }
  for (size_t i = 0; step == nullptr && i < a->num_limits; ++i) {
    if (setrlimit(a->limits[i].resource, &a->limits[i].value) != 0) step = "setrlimit";
  }
  if (step == nullptr && a->netns && unshare(CLONE_NEWNET) != 0) step = "unshare(CLONE_NEWNET)";
  if (step == nullptr) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(a->argv[0], a->argv, a->envp);
    step = "exec";
  }
  a->failed_errno = errno;
  a->failed_step = step;
  _exit(127);
}

}  // namespace

absl::StatusOr<pid_t> SpawnProcess(const std::vector<std::string>& argv, int output_fd,
                                   const CompilerConfinement* confinement) {
  if (argv.empty()) return absl::InvalidArgumentError("SpawnProcess: empty argv");
  std::vector<char*> cargv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<char*> cenv;
  if (confinement != nullptr) {
    for (const std::string& e : confinement->env) cenv.push_back(const_cast<char*>(e.c_str()));
  }
  cenv.push_back(nullptr);
  std::vector<SpawnLimit> limits;
  if (confinement != nullptr) {
    auto add = [&](int resource, int64_t v) {
      if (v > 0) limits.push_back({resource, {static_cast<rlim_t>(v), static_cast<rlim_t>(v)}});
    };
    add(RLIMIT_AS, confinement->memory_bytes);
    add(RLIMIT_CPU, confinement->cpu_seconds);
    add(RLIMIT_FSIZE, confinement->max_file_bytes);
    add(RLIMIT_NOFILE, confinement->max_open_files);
    limits.push_back({RLIMIT_CORE, {0, 0}});
  }
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return absl::UnavailableError(absl::StrCat("cannot open /dev/null: ", Errno()));
  SpawnArgs args{.argv = cargv.data(),
                 .envp = confinement != nullptr ? cenv.data() : environ,
                 .limits = limits.data(),
                 .num_limits = limits.size(),
                 .netns = confinement != nullptr && confinement->network_namespace,
                 .devnull = devnull,
                 .output_fd = output_fd,
                 .failed_step = nullptr,
                 .failed_errno = 0};
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);  // no handler of this process may run in the child
  const pid_t pid = vfork();
  if (pid == 0) RunSpawnedChild(&args);
  const int spawn_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  close(devnull);
  if (pid < 0) return absl::UnavailableError(absl::StrCat("vfork: ", Errno(spawn_errno)));
  if (args.failed_step != nullptr) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const std::string step(args.failed_step);
    if (step == "exec") {
      return absl::UnavailableError(
          absl::StrCat("cannot run '", argv[0], "': ", Errno(args.failed_errno)));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot confine '", argv[0], "': ", step, ": ", Errno(args.failed_errno)));
  }
  return pid;
}

}  // namespace loom::tune
