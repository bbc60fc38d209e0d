// The Build stage: turns candidate configs of one template into loadable artifacts (for CPUs, a
// shared object per candidate built by the system C++ compiler), in parallel, each with its own
// error and a content-hash cache. Called by the tune loop's Build stage; its output feeds the
// Measurer (measurer.h).
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "loom/base/thread_pool.h"
#include "loom/ops/config_space.h"
#include "loom/ops/template.h"
#include "loom/toolchain/kernel_cache.h"
#include "loom/toolchain/measure_result.h"

namespace loom::tune {

struct BuildOptions {
  // Compiles run at once (the scheduler sizes this to the CPU slots it grants). At least 1.
  int32_t num_threads = 1;
  // Wall-clock limit of one compile; the compiler's whole process group is killed past it and
  // the candidate gets ErrorKind::kBuildTimeout.
  absl::Duration timeout = absl::Seconds(60);
  // The compiler command, split on whitespace ("g++", "ccache g++", "/usr/bin/clang++").
  // Empty: the documented override $CXX when set, else "g++".
  std::string compiler{};
  // Where artifacts live, named by content hash. Empty: $XDG_CACHE_HOME/loom/kernels, else
  // $HOME/.cache/loom/kernels. Created if missing.
  std::string cache_dir{};
  // When false every candidate is compiled even if its artifact exists (the artifact is still
  // written to the cache dir, atomically).
  bool use_cache = true;
  // Size cap of the cache dir: past it, the least recently used entries are removed
  // (kernel_cache.h: checked at the builder's first new artifact, then every 1/64 of the cap
  // written). 0: no cap.
  int64_t cache_max_bytes = kDefaultKernelCacheMaxBytes;
  // Appended after the fixed flags `-O3 -std=c++17 -shared -fPIC -fno-math-errno` and the
  // template's KernelSource::compile_flags (e.g. "-march=native" or "-g").
  std::string extra_flags{};
  // Placement hooks, for a scheduler that confines compiles to the CPU cores it granted (the
  // engine): `before_compile` runs on the thread about to spawn a compile (the compiler inherits
  // that thread's CPU affinity); `compile_started` gets the new compiler's pid, which is also its
  // process group id (the group holds cc1plus, as and ld). Either may be empty.
  std::function<void()> before_compile{};
  std::function<void(int pid)> compile_started{};
  // Compilers run confined (confine.h, CompilerConfinementFor): only PATH, HOME, LANG, LC_ALL,
  // LD_LIBRARY_PATH and CCACHE_* of this process's environment, a private TMPDIR removed with
  // the builder, 4 GiB of address space, the timeout (+1 s) of CPU time, 1 GiB files, no core
  // files, and under root an empty network namespace. Off: `--no-confine`.
  bool confine = true;
};

class Builder {
 public:
  virtual ~Builder() = default;

  // Builds one artifact per config, results in the order of `configs`. Emit failures are
  // kInstantiation, compiler failures kCompile (error_msg ends with the compiler's last ~2 KB of
  // output), compiles past the timeout kBuildTimeout. Never fails as a whole. `tmpl` must stay
  // alive for the call and its Emit must be safe to call from several threads (it is const).
  virtual std::vector<BuildResult> Build(const ops::Template& tmpl,
                                         const std::vector<ops::Config>& configs) = 0;

  // Builds one already-emitted source (what Build does per candidate after Emit). `config` is
  // only copied into the result.
  virtual BuildResult BuildSource(const ops::KernelSource& source, const ops::Config& config) = 0;

  // The directory artifacts are written to.
  virtual const std::string& cache_dir() const = 0;
};

// The parallel fan-out every builder's Build does: build_one(config) for each config on `pool`,
// results in the order of `configs`.
template <typename BuildOneFn>
std::vector<BuildResult> BuildEach(base::ThreadPool& pool, const std::vector<ops::Config>& configs,
                                   const BuildOneFn& build_one) {
  std::vector<std::future<BuildResult>> futures;
  futures.reserve(configs.size());
  for (const ops::Config& config : configs) {
    futures.push_back(pool.Submit([&build_one, config] { return build_one(config); }));
  }
  std::vector<BuildResult> results;
  results.reserve(configs.size());
  for (auto& f : futures) results.push_back(f.get());
  return results;
}

// What every builder's BuildSource does around its compiler: `build()`, with `config` and the
// wall time of the call stamped on the result.
template <typename BuildFn>
BuildResult TimedBuild(const ops::Config& config, const BuildFn& build) {
  const absl::Time start = absl::Now();
  BuildResult result = build();
  result.config = config;
  result.build_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

// What every builder's BuildOne does around its compiler: emits `config`'s source from `tmpl`
// (an instantiation error when it cannot), compiles it with `compile(source)`, and stamps the
// config and the wall time of both on the result.
template <typename CompileFn>
BuildResult EmitAndCompile(const ops::Template& tmpl, const ops::Config& config,
                           const CompileFn& compile) {
  return TimedBuild(config, [&] {
    absl::StatusOr<ops::KernelSource> source = tmpl.Emit(config);
    if (source.ok()) return compile(*source);
    BuildResult result;
    result.error = ErrorKind::kInstantiation;
    result.error_msg = std::string(source.status().message());
    return result;
  });
}

// How much of a failed compiler's output a kCompile message keeps: its end.
inline constexpr size_t kCompilerOutputTailBytes = 2048;
// The last `n` bytes of `output` (all of it when shorter).
inline std::string OutputTail(const std::string& output, size_t n = kCompilerOutputTailBytes) {
  return output.size() <= n ? output : output.substr(output.size() - n);
}

// The checks of options every builder's factory makes: kInvalidArgument when num_threads < 1 or
// the timeout is not positive.
absl::Status ValidateBuildOptions(const BuildOptions& options);

// The default artifact directory (see BuildOptions::cache_dir).
std::string DefaultKernelCacheDir();

// A builder that runs the host's C++ compiler in child processes. kInvalidArgument for bad
// options; kFailedPrecondition when the compiler cannot be run (`<compiler> --version` fails) or
// the cache dir cannot be created.
absl::StatusOr<std::unique_ptr<Builder>> MakeLocalBuilder(const BuildOptions& options);

}  // namespace loom::tune
