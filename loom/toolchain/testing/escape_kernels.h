// Test-only candidates that try to break out of the measure worker's sandbox (confine.h): each is
// a template's real generated kernel whose entry point first makes one escape attempt. Used by the
// confinement tests of the measurer (loom/toolchain/confine_test.cc) and of the agent's measure
// stage (loom/agent/stage_executor_confine_test.cc). Never built into the product.
//
// An attempt that the sandbox refuses without killing the worker ends the worker with exit status
// kRefused; one that gets what it tried ends it with kEscaped; one the seccomp filter forbids
// kills it with SIGSYS. kNone and kWriteInScratch then run the real kernel, so they measure
// normally (the controls: a test can tell an escape from a refusal).
#pragma once

#include <string>
#include <string_view>

namespace loom::tune::testing {

enum class Escape {
  kNone,
  kWriteInScratch,  // create and write a file in its working directory (allowed)
  kSocket,          // socket(AF_INET)
  kUnixSocket,      // socket(AF_UNIX)
  kEnvToken,        // find LOOM_TOKEN in its environment
  kReadFile,        // open `path` for reading
  kWriteFile,       // create `path` and write to it
  kParentEnviron,   // read /proc/<parent>/environ
  kForkBomb,        // fork, up to 64 times
  kExec,            // execv("/bin/true")
  kSignalParent,    // kill(parent, 0): probes the right to signal, harmless if it had it
  kPtraceParent,    // ptrace(PTRACE_PEEKUSER, parent): harmless if allowed (ESRCH)
  kExhaustMemory,   // malloc and touch 64 MiB blocks, up to 2 GiB
  kThreadBomb,      // start sleeping threads, up to 2000
};

inline constexpr int kRefused = 10;
inline constexpr int kEscaped = 20;

// `kernel_source`: a CPU template's generated source (it defines loom_kernel). `path`: the file
// of kReadFile and kWriteFile.
inline std::string EscapeSource(std::string kernel_source, Escape escape,
                                const std::string& path = "") {
  const std::string_view entry = "extern \"C\" void loom_kernel(";
  const size_t at = kernel_source.find(entry);
  if (at == std::string::npos) return "#error the kernel source defines no loom_kernel\n";
  kernel_source.replace(at, entry.size(), "static void loom_real_kernel(");
  std::string attempt;
  switch (escape) {
    case Escape::kNone:
      break;
    case Escape::kWriteInScratch:
      attempt = R"(int fd = open("probe.txt", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd < 0 || write(fd, "ok", 2) != 2) _exit(kRefused);
    close(fd);)";
      break;
    case Escape::kSocket:
      attempt = "_exit(socket(AF_INET, SOCK_STREAM, 0) >= 0 ? kEscaped : kRefused);";
      break;
    case Escape::kUnixSocket:
      attempt = "_exit(socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? kEscaped : kRefused);";
      break;
    case Escape::kEnvToken:
      attempt = R"(for (char** e = environ; *e != nullptr; ++e) {
      if (strncmp(*e, "LOOM_TOKEN=", 11) == 0) _exit(kEscaped);
    }
    _exit(getenv("LOOM_TOKEN") != nullptr ? kEscaped : kRefused);)";
      break;
    case Escape::kReadFile:
      attempt = "int fd = open(\"" + path + R"(", O_RDONLY);
    char c;
    if (fd >= 0 && read(fd, &c, 1) == 1) _exit(kEscaped);
    _exit(kRefused);)";
      break;
    case Escape::kWriteFile:
      attempt = "int fd = open(\"" + path + R"(", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd >= 0 && write(fd, "escaped", 7) == 7) _exit(kEscaped);
    _exit(kRefused);)";
      break;
    case Escape::kParentEnviron:
      attempt = R"(char name[64];
    snprintf(name, sizeof(name), "/proc/%d/environ", (int)getppid());
    int fd = open(name, O_RDONLY);
    char buf[4096];
    if (fd >= 0 && read(fd, buf, sizeof(buf)) > 0) _exit(kEscaped);
    _exit(kRefused);)";
      break;
    case Escape::kForkBomb:
      attempt = R"(for (int i = 0; i < 64; ++i) {
      pid_t p = fork();
      if (p == 0) _exit(0);
      if (p < 0) _exit(kRefused);
    }
    _exit(kEscaped);)";
      break;
    case Escape::kExec:
      attempt = R"c(char* argv[] = {(char*)"/bin/true", nullptr};
    execv("/bin/true", argv);
    _exit(kRefused);)c";
      break;
    case Escape::kSignalParent:
      attempt = "_exit(kill(getppid(), 0) == 0 ? kEscaped : kRefused);";
      break;
    case Escape::kPtraceParent:
      attempt = "_exit(ptrace(PTRACE_PEEKUSER, getppid(), 0, 0) != -1 ? kEscaped : kRefused);";
      break;
    case Escape::kExhaustMemory:
      attempt = R"(for (int i = 0; i < 32; ++i) {
      char* p = (char*)malloc(size_t{64} << 20);
      if (p == nullptr) _exit(kRefused);
      memset(p, 1, size_t{64} << 20);
    }
    _exit(kEscaped);)";
      break;
    case Escape::kThreadBomb:
      attempt = R"(for (int i = 0; i < 2000; ++i) {
      pthread_t t;
      if (pthread_create(&t, nullptr, loom_sleeper, nullptr) != 0) _exit(kRefused);
    }
    _exit(kEscaped);)";
      break;
  }
  return "#include <errno.h>\n#include <fcntl.h>\n#include <pthread.h>\n#include <signal.h>\n"
         "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <sys/ptrace.h>\n"
         "#include <sys/socket.h>\n#include <unistd.h>\n"
         "extern char** environ;\n"
         "static const int kRefused = " +
         std::to_string(kRefused) + ", kEscaped = " + std::to_string(kEscaped) +
         ";\nstatic void* loom_sleeper(void*) { for (;;) sleep(10); return nullptr; }\n" +
         kernel_source +
         "\nextern \"C\" void loom_kernel(void* const* buffers, const loom_parallel_t* par) {\n"
         "  {\n    " +
         attempt + "\n  }\n  loom_real_kernel(buffers, par);\n}\n";
}

}  // namespace loom::tune::testing
