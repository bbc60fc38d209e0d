// NvrtcBuilder: see nvrtc_builder.h. Artifacts are written under a temporary name and renamed
// into place, so concurrent builders sharing the cache never see a partial cubin.
#include "loom/toolchain/nvrtc_builder.h"

#include "absl/strings/str_cat.h"

#ifdef LOOM_WITH_CUDA
#include <nvrtc.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "loom/base/thread_pool.h"
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

constexpr size_t kErrorTailBytes = 2048;

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(s.size() - n);
}

// FNV-1a over 128 bits of the parts, with a separator between parts.
std::string ContentHash(std::initializer_list<std::string_view> parts) {
  unsigned __int128 h =
      (static_cast<unsigned __int128>(0x6c62272e07bb0142ULL) << 64) | 0x62b821756295c58dULL;
  const unsigned __int128 prime = (static_cast<unsigned __int128>(1) << 88) + 0x13b;
  for (std::string_view part : parts) {
    for (unsigned char c : part) {
      h ^= c;
      h *= prime;
    }
    h ^= 0xff;
    h *= prime;
  }
  return absl::StrFormat("%016x%016x", static_cast<uint64_t>(h >> 64), static_cast<uint64_t>(h));
}

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

bool WriteFile(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return false;
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.close();
  return static_cast<bool>(f);
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
    const absl::Time start = absl::Now();
    BuildResult result = Compile(source, default_arch_);
    result.config = config;
    result.build_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
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
    const std::string key = ContentHash({version_, absl::StrJoin(options, " "), code});
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
      result.error_msg =
          absl::StrCat("NVRTC (", arch, ") failed:\n", Tail(outcome.log, kErrorTailBytes));
      return result;
    }
    const std::string tmp_stem =
        absl::StrCat(cache_dir_, "/tmp-", key, "-", getpid(), "-", counter_.fetch_add(1));
    if (!WriteFile(tmp_stem + ".cubin", outcome.cubin) || !WriteFile(tmp_stem + ".cu", code)) {
      result.error = ErrorKind::kCompile;
      result.error_msg = absl::StrCat("cannot write ", tmp_stem, ".cubin");
    } else {
      // Keep the source beside the artifact for inspection; both renames are atomic.
      std::filesystem::rename(tmp_stem + ".cu", absl::StrCat(cache_dir_, "/", key, ".cu"), ec);
      std::filesystem::rename(tmp_stem + ".cubin", final_path, ec);
      if (ec) {
        result.error = ErrorKind::kCompile;
        result.error_msg =
            absl::StrCat("cannot move the artifact into ", final_path, ": ", ec.message());
      } else {
        result.artifact_path = final_path;
      }
    }
    std::filesystem::remove(tmp_stem + ".cubin", ec);
    std::filesystem::remove(tmp_stem + ".cu", ec);
    return result;
  }

  const BuildOptions options_;
  const std::string default_arch_;
  const std::string version_;  // part of the cache key: a new NVRTC rebuilds all
  const std::string cache_dir_;
  std::vector<std::string> extra_;
  std::atomic<uint64_t> counter_{0};
  base::ThreadPool pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Builder>> MakeNvrtcBuilder(const BuildOptions& options,
                                                          std::string default_arch) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("BuildOptions.num_threads must be at least 1, got ", options.num_threads));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("BuildOptions.timeout must be positive");
  }
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) {
    return absl::FailedPreconditionError("NVRTC is not usable (nvrtcVersion failed)");
  }
  const std::string cache_dir =
      options.cache_dir.empty() ? DefaultKernelCacheDir() : options.cache_dir;
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec || !std::filesystem::is_directory(cache_dir)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the kernel cache directory ",
                                                      cache_dir, ": ",
                                                      ec ? ec.message() : "not a directory"));
  }
  return std::unique_ptr<Builder>(new NvrtcBuilder(
      options, std::move(default_arch), absl::StrCat("nvrtc ", major, ".", minor), cache_dir));
}

#endif  // LOOM_WITH_CUDA

}  // namespace loom::tune
