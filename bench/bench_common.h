// Pieces shared by the peer benchmarks (conv_vs_onednn.cc, matmul_vs_onednn.cc): a calibrated,
// repeatable call timer for interleaved rounds, the core's FMA peak measured with independent
// register-only FMA chains, pinning to a core, the set-up of their main() (one OpenMP thread, the
// host line, pinning and the peak), opening the record database of --db, and a template's configs
// compiled in parallel with their buffers.
// Header-only: each benchmark is one executable.
#pragma once

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "loom/base/thread_pool.h"
#include "loom/graph/tensor.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"

namespace loom::bench {

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the calling thread: on a machine shared with other work, the time a single-threaded
// call spends descheduled is not counted (its cache may still be disturbed).
inline double ThreadCpuNow() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

enum class Clock { kWall, kThreadCpu };
inline double Now(Clock clock) { return clock == Clock::kWall ? Now() : ThreadCpuNow(); }

struct Timing {
  double median_s = 0;
  double best_s = 0;
};

// Something to time: `fn` runs one call; `number` calls fill one repeat.
struct Timed {
  std::function<void()> fn;
  int number = 1;
  std::vector<double> per_call;  // seconds per call, one entry per repeat
  Clock clock = Clock::kWall;

  // Warm-up (3 calls) and calibration of `number` to fill `min_repeat_ms`.
  void Calibrate(double min_repeat_ms) {
    for (int i = 0; i < 3; ++i) fn();
    double t0 = Now(clock);
    fn();
    const double one = std::max(Now(clock) - t0, 1e-7);
    number = std::max(1, static_cast<int>(min_repeat_ms * 1e-3 / one));
  }
  void Repeat() {
    const double t0 = Now(clock);
    for (int i = 0; i < number; ++i) fn();
    per_call.push_back((Now(clock) - t0) / number);
  }
  Timing Summary() const {
    std::vector<double> v = per_call;
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v.front()};
  }
};

inline Timing TimeIt(const std::function<void()>& fn, int repeats, double min_repeat_ms,
                     Clock clock = Clock::kWall) {
  Timed t{fn};
  t.clock = clock;
  t.Calibrate(min_repeat_ms);
  for (int r = 0; r < repeats; ++r) t.Repeat();
  return t.Summary();
}

// --- FMA peak: independent register-only FMA chains, enough to cover latency x throughput.
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));

// 12 independent FMA chains per iteration; the asm barrier keeps them in registers and stops the
// compiler from folding the loop.
#define LOOM_FMA_LOOP(V)                                                                        \
  V a0 = V{} + x, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, \
    a7 = a0 + 7, a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11;                        \
  const V m = V{} + 0.999999f, c = V{} + 1e-7f;                                                 \
  for (int64_t i = 0; i < iters; ++i) {                                                         \
    a0 = a0 * m + c;                                                                            \
    a1 = a1 * m + c;                                                                            \
    a2 = a2 * m + c;                                                                            \
    a3 = a3 * m + c;                                                                            \
    a4 = a4 * m + c;                                                                            \
    a5 = a5 * m + c;                                                                            \
    a6 = a6 * m + c;                                                                            \
    a7 = a7 * m + c;                                                                            \
    a8 = a8 * m + c;                                                                            \
    a9 = a9 * m + c;                                                                            \
    a10 = a10 * m + c;                                                                          \
    a11 = a11 * m + c;                                                                          \
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));          \
  }                                                                                             \
  V s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;                            \
  float r = 0;                                                                                  \
  for (size_t i = 0; i < sizeof(V) / 4; ++i) r += s[i];                                         \
  return r;

__attribute__((noinline, target("avx512f,fma"), optimize("fp-contract=fast"))) inline float Fma512(
    int64_t iters, float x) {
  LOOM_FMA_LOOP(v16)
}
__attribute__((noinline, target("avx2,fma"), optimize("fp-contract=fast"))) inline float Fma256(
    int64_t iters, float x) {
  LOOM_FMA_LOOP(v8)
}
#undef LOOM_FMA_LOOP

// GFLOPS of the better of the 512-bit and 256-bit FMA loops (12 FMAs per iteration), the best of
// 200 short runs.
inline double MeasurePeakGflops(double* gf512, double* gf256) {
  const int64_t iters = 1'000'000;
  volatile float sink = 0;
  auto run = [&](auto fn, int lanes) {
    double best = 0;
    for (int rep = 0; rep < 200; ++rep) {
      double t0 = Now();
      sink = sink + fn(iters, 1.0f);
      double dt = Now() - t0;
      best = std::max(best, 12.0 * 2 * lanes * static_cast<double>(iters) / dt * 1e-9);
    }
    return best;
  };
  *gf512 = run(Fma512, 16);
  *gf256 = run(Fma256, 8);
  return std::max(*gf512, *gf256);
}

// Pins the calling thread to `core`; false (after perror) when the kernel refuses.
inline bool PinToCore(int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::perror("sched_setaffinity");
    return false;
  }
  return true;
}

// oneDNN's OpenMP reads OMP_NUM_THREADS when it loads: unless it is set, re-executes this binary
// with OMP_NUM_THREADS=1, so that the peer runs on one thread as Loom's candidates do.
inline void ReexecWithOneOmpThread(char** argv) {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  setenv("OMP_NUM_THREADS", "1", 1);
  execv("/proc/self/exe", argv);
}

// The first line of a peer benchmark: "CPU: <model>, ISA <isa>, core N, <peer>, OMP_NUM_THREADS=.."
inline void PrintHost(const ops::Target& target, int core, const std::string& peer) {
  std::printf("CPU: %s, ISA %s, core %d, %s, OMP_NUM_THREADS=%s\n", target.cpu_model.c_str(),
              ops::IsaName(target.isa).c_str(), core, peer.c_str(), std::getenv("OMP_NUM_THREADS"));
}

// Pins the calling thread to `core` (start the compile pool before, so that it may use every
// core) and measures and prints the core's FMA peak. Returns the peak in GFLOPS; negative when the
// kernel refuses the pinning.
inline double PinAndMeasurePeak(int core) {
  if (!PinToCore(core)) return -1;
  double gf512 = 0, gf256 = 0;
  const double peak = MeasurePeakGflops(&gf512, &gf256);
  std::printf("FMA peak: %.1f GFLOPS (512-bit %.1f, 256-bit %.1f)\n\n", peak, gf512, gf256);
  return peak;
}

// The record database of --db FILE; null after a message on stderr when the file is missing or
// is not a record store.
inline std::unique_ptr<tune::RecordStore> OpenDbOrNull(const std::string& db) {
  if (!std::filesystem::exists(db)) {
    std::fprintf(stderr, "--db %s: no such file\n", db.c_str());
    return nullptr;
  }
  auto opened = tune::OpenSqliteRecordStore(db);
  if (!opened.ok()) {
    std::fprintf(stderr, "--db %s: %s\n", db.c_str(), opened.status().ToString().c_str());
    return nullptr;
  }
  return *std::move(opened);
}

// A compiled config of a template with its packed buffers, ready to time.
struct Candidate {
  ops::Config config;
  std::unique_ptr<ops::LocalKernel> kernel;
  ops::KernelBuffers buffers;
  double screen_s = 0;  // the caller's screening time
  void Run() { kernel->fn()(buffers.pointers.data(), nullptr); }
};

// Compiles `configs` of `t` on `pool` into `dir` and packs `natural` for each, in order; a config
// that fails to build is reported on stderr and left out.
inline std::vector<Candidate> BuildCandidates(const ops::Template& t,
                                              const std::vector<ops::Config>& configs,
                                              const std::vector<graph::Tensor>& natural,
                                              const std::string& dir, base::ThreadPool& pool) {
  std::vector<std::future<absl::StatusOr<std::unique_ptr<ops::LocalKernel>>>> builds;
  for (const ops::Config& c : configs) {
    builds.push_back(pool.Submit([&t, c, &dir] {
      auto src = t.Emit(c);
      if (!src.ok()) return absl::StatusOr<std::unique_ptr<ops::LocalKernel>>(src.status());
      return ops::LocalKernel::Compile(*src, dir);
    }));
  }
  std::vector<Candidate> out;
  for (size_t i = 0; i < configs.size(); ++i) {
    auto k = builds[i].get();
    if (!k.ok()) {
      std::fprintf(stderr, "  build failed: %s\n", k.status().ToString().c_str());
      continue;
    }
    out.push_back({configs[i], std::move(*k), ops::PrepareBuffers(t, configs[i], natural)});
  }
  return out;
}

}  // namespace loom::bench
