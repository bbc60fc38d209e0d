// NvrtcBuilder: see nvrtc_builder.h. Artifacts are written under a temporary name and renamed
// into place, so concurrent builders sharing the cache never see a partial cubin.
#include "loom/toolchain/nvrtc_builder.h"

#include "absl/strings/str_cat.h"

#ifdef LOOM_WITH_CUDA
#include <nvrtc.h>

#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "loom/base/status_macros.h"
#include "loom/base/thread_pool.h"
#include "loom/toolchain/kernel_cache.h"
#endif

namespace loom::tune {

#ifndef LOOM_WITH_CUDA

absl::StatusOr<std::unique_ptr<Builder>> MakeNvrtcBuilder(const BuildOptions& options,
                                                          std::string default_arch) {
  return absl::UnimplementedError(
      "Loom was built without the CUDA toolkit (NVRTC); reconfigure with the toolkit installed "
      "and -DLOOM_WITH_CUDA=ON to build CUDA kernels");
}

#else

namespace {

struct CompileOutcome {
  bool ok = false;
  std::string cubin;
  std::string log;
};

// One NVRTC compile; thread-safe (separate programs).
CompileOutcome NvrtcCompile(const std::string& code, const std::vector<std::string>& options) {
  CompileOutcome out;
  nvrtcProgram prog;
  nvrtcResult r = nvrtcCreateProgram(&prog, code.c_str(), "loom_kernel.cu", 0, nullptr, nullptr);
  if (r != NVRTC_SUCCESS) {
    out.log = absl::StrCat("nvrtcCreateProgram: ", nvrtcGetErrorString(r));
    return out;
  }
  std::vector<const char*> opts;
  opts.reserve(options.size());
  for (const std::string& o : options) opts.push_back(o.c_str());
  r = nvrtcCompileProgram(prog, static_cast<int>(opts.size()), opts.data());
  size_t log_size = 0;
  if (nvrtcGetProgramLogSize(prog, &log_size) == NVRTC_SUCCESS && log_size > 1) {
    std::string log(log_size, '\0');
    if (nvrtcGetProgramLog(prog, log.data()) == NVRTC_SUCCESS) {
      log.resize(log_size - 1);
      out.log = std::move(log);
    }
  }
  if (r != NVRTC_SUCCESS) {
    out.log = absl::StrCat("nvrtcCompileProgram: ", nvrtcGetErrorString(r), "\n", out.log);
    nvrtcDestroyProgram(&prog);
    return out;
  }
  size_t size = 0;
  r = nvrtcGetCUBINSize(prog, &size);
  if (r == NVRTC_SUCCESS && size > 0) {
    out.cubin.resize(size);
    r = nvrtcGetCUBIN(prog, out.cubin.data());
  }
  if (r != NVRTC_SUCCESS || size == 0) {
    out.log = absl::StrCat("nvrtcGetCUBIN: ", nvrtcGetErrorString(r),
                           " (is the architecture a real sm_XY, not compute_XY?)\n", out.log);
  } else {
    out.ok = true;
  }
  nvrtcDestroyProgram(&prog);
  return out;
}

class NvrtcBuilder : public Builder {
 public:
  NvrtcBuilder(const BuildOptions& options, std::string default_arch, std::string version,
               std::string cache_dir)
      : options_(options),
        default_arch_(std::move(default_arch)),
        version_(std::move(version)),
        cache_dir_(std::move(cache_dir)),
        pool_(static_cast<size_t>(options.num_threads)) {
    for (absl::string_view w :
         absl::StrSplit(options.extra_flags, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
      extra_.emplace_back(w);
    }
  }

  std::vector<BuildResult> Build(const ops::Template& tmpl,
                                 const std::vector<ops::Config>& configs) override {
    return BuildEach(pool_, configs,
                     [this, &tmpl](const ops::Config& config) { return BuildOne(tmpl, config); });
  }

  BuildResult BuildSource(const ops::KernelSource& source, const ops::Config& config) override {
    return TimedBuild(config, [&] { return Compile(source, default_arch_); });
  }

  const std::string& cache_dir() const override { return cache_dir_; }

 private:
  BuildResult BuildOne(const ops::Template& tmpl, const ops::Config& config) {
    if (tmpl.target().kind != "cuda") {
      BuildResult result;
      result.config = config;
      result.error = ErrorKind::kInstantiation;
      result.error_msg = absl::StrCat("the NVRTC builder needs a cuda target, got ",
                                      tmpl.target().Key(), " (template ", tmpl.name(), ")");
      return result;
    }
    return EmitAndCompile(tmpl, config, [&](const ops::KernelSource& source) {
      return Compile(source, tmpl.target().cuda_arch);
    });
  }

  BuildResult Compile(const ops::KernelSource& source, const std::string& arch) {
    const std::string& code = source.code;
    BuildResult result;
    std::vector<std::string> options = {absl::StrCat("--gpu-architecture=", arch), "--std=c++17"};
    // The flags the source asks for (codegen::CudaKernelSource::compile_flags), then the user's.
    for (absl::string_view w :
         absl::StrSplit(source.compile_flags, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
      options.emplace_back(w);
    }
    options.insert(options.end(), extra_.begin(), extra_.end());
    const std::string key = KernelCacheKey({version_, absl::StrJoin(options, " "), code});
    const std::string final_path = absl::StrCat(cache_dir_, "/", key, ".cubin");
    std::error_code ec;
    if (options_.use_cache && std::filesystem::exists(final_path, ec)) {
      result.artifact_path = final_path;
      result.cache_hit = true;
      return result;
    }
    if (options_.before_compile) options_.before_compile();

    // The compile runs on its own thread so that a compile past the timeout can be abandoned.
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      CompileOutcome outcome;
    };
    auto shared = std::make_shared<Shared>();
    std::thread([shared, code, options] {
      CompileOutcome o = NvrtcCompile(code, options);
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->outcome = std::move(o);
      shared->done = true;
      shared->cv.notify_all();
    }).detach();
    CompileOutcome outcome;
    {
      std::unique_lock<std::mutex> lock(shared->mu);
      const bool finished = shared->cv.wait_for(lock, absl::ToChronoNanoseconds(options_.timeout),
                                                [&] { return shared->done; });
      if (!finished) {
        result.error = ErrorKind::kBuildTimeout;
        result.error_msg = absl::StrCat("NVRTC compile exceeded the build timeout of ",
                                        absl::FormatDuration(options_.timeout));
        return result;
      }
      outcome = std::move(shared->outcome);
    }
    if (!outcome.ok) {
      result.error = ErrorKind::kCompile;
      result.error_msg = absl::StrCat("NVRTC (", arch, ") failed:\n", OutputTail(outcome.log));
      return result;
    }
    const KernelCacheEntry entry = KernelCacheEntry::Make(cache_dir_, key, ".cubin", ".cu");
    if (!WriteCacheFile(entry.temp_artifact, outcome.cubin) ||
        !WriteCacheFile(entry.temp_source, code)) {
      result.error = ErrorKind::kCompile;
      result.error_msg = absl::StrCat("cannot write ", entry.temp_artifact);
    } else if (absl::Status published = entry.Publish(); !published.ok()) {
      result.error = ErrorKind::kCompile;
      result.error_msg = std::string(published.message());
    } else {
      result.artifact_path = entry.artifact;
    }
    entry.RemoveTemporaries();
    return result;
  }

  const BuildOptions options_;
  const std::string default_arch_;
  const std::string version_;  // part of the cache key: a new NVRTC rebuilds all
  const std::string cache_dir_;
  std::vector<std::string> extra_;
  base::ThreadPool pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Builder>> MakeNvrtcBuilder(const BuildOptions& options,
                                                          std::string default_arch) {
  LOOM_RETURN_IF_ERROR(ValidateBuildOptions(options));
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) {
    return absl::FailedPreconditionError("NVRTC is not usable (nvrtcVersion failed)");
  }
  const std::string cache_dir =
      options.cache_dir.empty() ? DefaultKernelCacheDir() : options.cache_dir;
  LOOM_RETURN_IF_ERROR(CreateKernelCacheDir(cache_dir));
  return std::unique_ptr<Builder>(new NvrtcBuilder(
      options, std::move(default_arch), absl::StrCat("nvrtc ", major, ".", minor), cache_dir));
}

#endif  // LOOM_WITH_CUDA

}  // namespace loom::tune
