// LocalBuilder: the CPU Builder. Each candidate is emitted, hashed, and (on a cache miss) compiled
// by a child compiler process in its own process group, so a timeout kills the driver and its
// cc1plus together. Confined (BuildOptions::confine), compilers get a cleared environment,
// resource limits, the builder's private TMPDIR and, under root, an empty network namespace
// (confine.h). Artifacts are written under a temporary name and renamed into place, so a
// concurrent builder (another thread or process sharing the cache) never sees a partial file.
// A cache hit marks its artifact as used; new artifacts count toward the cache's size cap
// (kernel_cache.h), enforced least recently used first.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"
#include "loom/base/thread_pool.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/confine.h"
#include "loom/toolchain/kernel_cache.h"
#include "loom/toolchain/worker_process.h"

namespace loom::tune {
namespace {

struct ProcessOutcome {
  bool started = false;
  std::string spawn_error;  // set when !started
  bool timed_out = false;
  int wait_status = 0;
  std::string output;  // stdout + stderr, the last few KB
};

std::vector<std::string> SplitWords(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view w : absl::StrSplit(s, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
    out.emplace_back(w);
  }
  return out;
}

// Runs argv[0] (looked up on PATH) with stdout+stderr captured, stdin from /dev/null, in a new
// process group, confined as `confinement` says (null: unconfined, this process's environment).
// Past `timeout` the whole group is SIGKILLed.
ProcessOutcome RunCaptured(const std::vector<std::string>& argv, absl::Duration timeout,
                           const CompilerConfinement* confinement,
                           const BuildOptions* hooks = nullptr) {
  ProcessOutcome outcome;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    outcome.spawn_error = absl::StrCat("pipe: ", std::strerror(errno));
    return outcome;
  }
  if (hooks != nullptr && hooks->before_compile) hooks->before_compile();
  absl::StatusOr<pid_t> spawned = SpawnProcess(argv, fds[1], confinement);
  close(fds[1]);
  if (!spawned.ok()) {
    close(fds[0]);
    outcome.spawn_error = std::string(spawned.status().message());
    return outcome;
  }
  const pid_t pid = *spawned;
  if (hooks != nullptr && hooks->compile_started) hooks->compile_started(pid);
  outcome.started = true;

  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      outcome.timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int64_t ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(left));
    const int pr = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) continue;  // re-check the deadline
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: every writer (the compiler and its children) is gone
    outcome.output.append(buf, static_cast<size_t>(n));
    if (outcome.output.size() > 4 * kCompilerOutputTailBytes) {
      outcome.output = OutputTail(outcome.output, 2 * kCompilerOutputTailBytes);
    }
  }
  close(fds[0]);
  if (outcome.timed_out) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
  while (waitpid(pid, &outcome.wait_status, 0) < 0 && errno == EINTR) {
  }
  return outcome;
}

bool Succeeded(const ProcessOutcome& o) {
  return o.started && !o.timed_out && WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 0;
}

// The builder's private temporary folder (its compilers' TMPDIR), removed with the builder.
struct TempDir {
  std::string path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

class LocalBuilder : public Builder {
 public:
  LocalBuilder(const BuildOptions& options, std::vector<std::string> compiler,
               std::string compiler_version, std::string cache_dir,
               std::unique_ptr<TempDir> temp_dir, std::optional<CompilerConfinement> confinement)
      : options_(options),
        compiler_(std::move(compiler)),
        compiler_version_(std::move(compiler_version)),
        cache_dir_(std::move(cache_dir)),
        temp_dir_(std::move(temp_dir)),
        confinement_(std::move(confinement)),
        pool_(static_cast<size_t>(options.num_threads)) {}

  std::vector<BuildResult> Build(const ops::Template& tmpl,
                                 const std::vector<ops::Config>& configs) override {
    return BuildEach(pool_, configs,
                     [this, &tmpl](const ops::Config& config) { return BuildOne(tmpl, config); });
  }

  BuildResult BuildSource(const ops::KernelSource& source, const ops::Config& config) override {
    return TimedBuild(config, [&] { return Compile(source); });
  }

  const std::string& cache_dir() const override { return cache_dir_; }

 private:
  BuildResult BuildOne(const ops::Template& tmpl, const ops::Config& config) {
    return EmitAndCompile(tmpl, config,
                          [this](const ops::KernelSource& source) { return Compile(source); });
  }

  BuildResult Compile(const ops::KernelSource& source) {
    BuildResult result;
    const std::vector<std::string> flags = SplitWords(source.compile_flags);
    const std::vector<std::string> extra = SplitWords(options_.extra_flags);
    const std::string key =
        KernelCacheKey({compiler_version_, absl::StrJoin(compiler_, " "), absl::StrJoin(flags, " "),
                        absl::StrJoin(extra, " "), source.code});
    const KernelCacheEntry entry = KernelCacheEntry::Make(cache_dir_, key, ".so", ".cc");
    std::error_code ec;
    if (options_.use_cache && std::filesystem::exists(entry.artifact, ec)) {
      TouchCacheEntry(entry.artifact);
      result.artifact_path = entry.artifact;
      result.cache_hit = true;
      return result;
    }
    if (!WriteCacheFile(entry.temp_source, source.code)) {
      result.error = ErrorKind::kCompile;
      result.error_msg =
          absl::StrCat("cannot write ", entry.temp_source, ": ", std::strerror(errno));
      return result;
    }
    std::vector<std::string> argv = compiler_;
    for (const char* f : {"-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno"}) {
      argv.emplace_back(f);
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.end(), {entry.temp_source, "-o", entry.temp_artifact});

    const ProcessOutcome o =
        RunCaptured(argv, options_.timeout, confinement_ ? &*confinement_ : nullptr, &options_);
    if (Succeeded(o)) {
      if (absl::Status published = entry.Publish(); !published.ok()) {
        result.error = ErrorKind::kCompile;
        result.error_msg = std::string(published.message());
      } else {
        result.artifact_path = entry.artifact;
        const uintmax_t bytes = std::filesystem::file_size(entry.artifact, ec);
        NoteWritten(ec ? 0 : static_cast<int64_t>(bytes + source.code.size()));
      }
    } else if (o.timed_out) {
      result.error = ErrorKind::kBuildTimeout;
      result.error_msg = absl::StrCat("compile exceeded the build timeout of ",
                                      absl::FormatDuration(options_.timeout));
    } else {
      result.error = ErrorKind::kCompile;
      result.error_msg = o.started ? absl::StrCat("compiler ", DescribeExit(o.wait_status), ":\n",
                                                  OutputTail(o.output))
                                   : o.spawn_error;
    }
    entry.RemoveTemporaries();
    return result;
  }

  // Keeps the cache under options_.cache_max_bytes: checks at the first artifact this builder
  // writes (the cache may have grown meanwhile, or under another cap), then every 1/64 of the
  // cap written. One thread checks at a time; the others do not wait for it.
  void NoteWritten(int64_t bytes) {
    const int64_t cap = options_.cache_max_bytes;
    if (cap <= 0) return;
    const int64_t since = written_since_check_.fetch_add(bytes) + bytes;
    if (checked_ && since < cap / 64) return;
    std::unique_lock<std::mutex> lock(cap_mu_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    written_since_check_ = 0;
    checked_ = true;
    absl::StatusOr<PruneResult> pruned = CapKernelCache(cache_dir_, cap);
    if (!pruned.ok()) {
      base::LogWarning("kernel cache cap: ", pruned.status().message());
    } else if (pruned->removed_entries > 0) {
      base::LogInfo("kernel cache ", cache_dir_, " over its cap of ", FormatByteSize(cap),
                    ": removed the ", pruned->removed_entries, " least recently used entries (",
                    FormatByteSize(pruned->removed_bytes), ")");
    }
  }

  const BuildOptions options_;
  const std::vector<std::string> compiler_;
  const std::string compiler_version_;  // part of the cache key: a new compiler rebuilds all
  const std::string cache_dir_;
  const std::unique_ptr<TempDir> temp_dir_;               // confined: the compilers' TMPDIR
  const std::optional<CompilerConfinement> confinement_;  // unset: compilers run unconfined
  std::atomic<int64_t> written_since_check_{0};  // bytes of new artifacts since the last check
  std::atomic<bool> checked_{false};
  std::mutex cap_mu_;  // held by the thread checking the cap
  base::ThreadPool pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Builder>> MakeLocalBuilder(const BuildOptions& options) {
  LOOM_RETURN_IF_ERROR(ValidateBuildOptions(options));
  if (options.cache_max_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("BuildOptions.cache_max_bytes must not be negative (0: no cap), got ",
                     options.cache_max_bytes));
  }
  std::string compiler_cmd = options.compiler;
  if (compiler_cmd.empty()) {
    const char* cxx = std::getenv("CXX");
    compiler_cmd = (cxx != nullptr && cxx[0] != '\0') ? cxx : "g++";
  }
  std::vector<std::string> compiler = SplitWords(compiler_cmd);
  if (compiler.empty()) {
    return absl::InvalidArgumentError("BuildOptions.compiler is blank");
  }
  auto temp_dir = std::make_unique<TempDir>();
  std::optional<CompilerConfinement> confinement;
  if (options.confine) {
    absl::StatusOr<std::string> dir = MakePrivateDir("", "loom-build-");
    if (!dir.ok()) return dir.status();
    temp_dir->path = *dir;
    confinement = CompilerConfinementFor(temp_dir->path, options.timeout);
  }
  // The probe runs as every compile will, confinement included: a kernel that refuses it fails
  // here, at start.
  std::vector<std::string> version_argv = compiler;
  version_argv.emplace_back("--version");
  const ProcessOutcome v =
      RunCaptured(version_argv, absl::Seconds(30), confinement ? &*confinement : nullptr);
  if (!Succeeded(v)) {
    const bool confine_failed = absl::StartsWith(v.spawn_error, "cannot confine");
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot run the kernel compiler '", compiler_cmd, " --version': ",
        v.started
            ? absl::StrCat("it ", DescribeExit(v.wait_status), ": ", OutputTail(v.output, 512))
            : v.spawn_error,
        confine_failed
            ? "; to compile unconfined on this host, start with --no-confine (docs/SECURITY.md)"
            : "; install g++ or point $CXX / BuildOptions.compiler at a C++17 compiler"));
  }
  const std::string cache_dir =
      options.cache_dir.empty() ? DefaultKernelCacheDir() : options.cache_dir;
  LOOM_RETURN_IF_ERROR(CreateKernelCacheDir(cache_dir));
  return std::unique_ptr<Builder>(new LocalBuilder(options, std::move(compiler), v.output,
                                                   cache_dir, std::move(temp_dir),
                                                   std::move(confinement)));
}

}  // namespace loom::tune
