// Issue 3's first figure: conv2d GFLOPS on the 11 distinct ResNet-18 conv layers (batch 1, one
// thread pinned to one core) for Loom's conv2d_nchwc template (default config, and the best of a
// search over a pruned part of its space done here, standing in for the tuner), next to oneDNN
// (format_tag::any, blocked layouts of its choice) and the core's measured FMA peak.
//
//   OMP_NUM_THREADS=1 build/<dir>/bench/conv_vs_onednn [--core N] [--layers 0,4] [--budget N]
//
// Timing protocol for both libraries: 3 warm-up calls, then `repeats` repeats of as many calls
// as fill min_repeat_ms; the median per-call time of the repeats is reported.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "loom/base/thread_pool.h"
#include "loom/graph/tasks.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

using loom::graph::Workload;
using loom::ops::Config;
using loom::ops::Template;

struct Layer {
  const char* label;
  int64_t c, hw, k, r, stride, pad;
};

// The 11 distinct conv2d workloads of ResNet-18 (batch 1, 224x224 input).
const Layer kLayers[] = {
    {"3->64 7x7 s2 224", 3, 224, 64, 7, 2, 3},      {"64->64 3x3 56", 64, 56, 64, 3, 1, 1},
    {"64->128 3x3 s2 56", 64, 56, 128, 3, 2, 1},    {"64->128 1x1 s2 56", 64, 56, 128, 1, 2, 0},
    {"128->128 3x3 28", 128, 28, 128, 3, 1, 1},     {"128->256 3x3 s2 28", 128, 28, 256, 3, 2, 1},
    {"128->256 1x1 s2 28", 128, 28, 256, 1, 2, 0},  {"256->256 3x3 14", 256, 14, 256, 3, 1, 1},
    {"256->512 3x3 s2 14", 256, 14, 512, 3, 2, 1},  {"256->512 1x1 s2 14", 256, 14, 512, 1, 2, 0},
    {"512->512 3x3 7", 512, 7, 512, 3, 1, 1},
};

Workload ToWorkload(const Layer& l) {
  Workload w;
  w.kind = loom::graph::TaskKind::kConv2d;
  w.n = 1;
  w.c = l.c;
  w.h = w.w = l.hw;
  w.k = l.k;
  w.r = w.s = l.r;
  w.stride_h = w.stride_w = l.stride;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = l.pad;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  return w;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Timing {
  double median_s = 0;
  double best_s = 0;
};

// Median (and best) seconds per call of `fn` under the protocol in the file comment.
Timing TimeIt(const std::function<void()>& fn, int repeats, double min_repeat_ms) {
  for (int i = 0; i < 3; ++i) fn();
  double t0 = Now();
  fn();
  const double one = std::max(Now() - t0, 1e-7);
  const int number = std::max(1, static_cast<int>(min_repeat_ms * 1e-3 / one));
  std::vector<double> per_call;
  for (int r = 0; r < repeats; ++r) {
    t0 = Now();
    for (int i = 0; i < number; ++i) fn();
    per_call.push_back((Now() - t0) / number);
  }
  std::sort(per_call.begin(), per_call.end());
  return {per_call[per_call.size() / 2], per_call.front()};
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
    a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;                         \
    a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;                         \
    a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;                     \
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));          \
  }                                                                                             \
  V s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;                            \
  float r = 0;                                                                                  \
  for (size_t i = 0; i < sizeof(V) / 4; ++i) r += s[i];                                         \
  return r;

__attribute__((noinline, target("avx512f,fma"), optimize("fp-contract=fast"))) float Fma512(
    int64_t iters, float x) {
  LOOM_FMA_LOOP(v16)
}
__attribute__((noinline, target("avx2,fma"), optimize("fp-contract=fast"))) float Fma256(
    int64_t iters, float x) {
  LOOM_FMA_LOOP(v8)
}

// GFLOPS of the better of the 512-bit and 256-bit FMA loops (12 FMAs per iteration).
double MeasurePeakGflops(double* gf512, double* gf256) {
  const int64_t iters = 20'000'000;
  volatile float sink = 0;
  auto run = [&](auto fn, int lanes) {
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
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

// --- oneDNN
double OneDnnSeconds(const Workload& w, int repeats, double min_ms) {
  using namespace dnnl;
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  using dims = memory::dims;
  const dims src_dims = {w.n, w.c, w.h, w.w}, wei_dims = {w.k, w.c, w.r, w.s},
             dst_dims = {w.n, w.k, w.OutH(), w.OutW()};
  auto any = [](const dims& d) {
    return memory::desc(d, memory::data_type::f32, memory::format_tag::any);
  };
  convolution_forward::desc desc(prop_kind::forward_inference, algorithm::convolution_direct,
                                 any(src_dims), any(wei_dims), any(dst_dims),
                                 {w.stride_h, w.stride_w}, {w.pad_top, w.pad_left},
                                 {w.pad_bottom, w.pad_right});
  convolution_forward::primitive_desc pd(desc, eng);
  memory src(pd.src_desc(), eng), wei(pd.weights_desc(), eng), dst(pd.dst_desc(), eng);
  // Any values work for timing; fill so denormals do not appear.
  for (memory* m : {&src, &wei}) {
    float* p = static_cast<float*>(m->get_data_handle());
    const size_t n = m->get_desc().get_size() / sizeof(float);
    for (size_t i = 0; i < n; ++i) p[i] = 0.5f + 0.001f * static_cast<float>(i % 97);
  }
  convolution_forward conv(pd);
  std::printf("    oneDNN impl: %s\n", pd.impl_info_str());
  Timing t = TimeIt(
      [&] {
        conv.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
        s.wait();
      },
      repeats, min_ms);
  return t.median_s;
}

// --- Loom
struct Candidate {
  Config config;
  std::unique_ptr<loom::ops::LocalKernel> kernel;
  double seconds = 0;
};

double TimeKernel(const Template& t, const Config& c, const loom::ops::LocalKernel& k,
                  int repeats, double min_ms) {
  std::vector<loom::graph::Tensor> natural = loom::ops::RandomNaturalInputs(t, 1);
  loom::ops::KernelBuffers b = loom::ops::PrepareBuffers(t, c, natural);
  return TimeIt([&] { k.fn()(b.pointers.data(), nullptr); }, repeats, min_ms).median_s;
}

// The pruned search space: vec = the ISA's widest, tile_ic >= 4 (or C when C < 4), register
// blocks that use 10..28 accumulators, all reduce/outer orders, unroll_kw both; parallel_axis 0
// (one thread).
std::vector<Config> PrunedConfigs(const Template& t) {
  std::vector<Config> out;
  const auto& space = t.space();
  for (int64_t i = 0; i < space.size(); ++i) {
    Config c{i};
    const int64_t ic = space.Value(c, "tile_ic"), oc_v = space.Value(c, "tile_oc");
    const int64_t accs = space.Value(c, "tile_ow") * space.Value(c, "tile_oh") * oc_v;
    if (space.Value(c, "vec") != t.target().VectorLanes()) continue;
    if (space.Value(c, "parallel_axis") != 0) continue;
    if (ic < std::min<int64_t>(8, t.workload().c) || ic > 64) continue;
    if (accs < 10 || accs > 28) continue;
    if (!t.Emit(c).ok()) continue;
    out.push_back(c);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {  // oneDNN's OpenMP reads it at load time
    setenv("OMP_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);
  }
  int core = 1, budget = 48, repeats = 7;
  double min_ms = 60;
  std::vector<int> layers;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--core") {
      core = std::atoi(value.c_str());
    } else if (flag == "--budget") {
      budget = std::atoi(value.c_str());
    } else if (flag == "--repeats") {
      repeats = std::atoi(value.c_str());
    } else if (flag == "--layers") {
      for (absl::string_view s : absl::StrSplit(value, ',')) layers.push_back(std::atoi(std::string(s).c_str()));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (layers.empty()) {
    for (int i = 0; i < 11; ++i) layers.push_back(i);
  }
  const loom::ops::Target target = loom::ops::HostCpuTarget();
  std::printf("CPU: %s, ISA %s, core %d, oneDNN %d.%d.%d, OMP_NUM_THREADS=%s\n",
              target.cpu_model.c_str(), loom::ops::IsaName(target.isa).c_str(), core,
              dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch,
              std::getenv("OMP_NUM_THREADS"));

  // Compiles run on a pool (unpinned); timings run on this thread, pinned to `core`.
  loom::base::ThreadPool pool(2);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::perror("sched_setaffinity");
    return 1;
  }
  double gf512 = 0, gf256 = 0;
  const double peak = MeasurePeakGflops(&gf512, &gf256);
  std::printf("FMA peak: %.1f GFLOPS (512-bit %.1f, 256-bit %.1f)\n\n", peak, gf512, gf256);

  char tmpl[] = "/tmp/loom_bench_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  struct Row {
    std::string label;
    double gf_default, gf_best, gf_dnnl;
    std::string best_json;
  };
  std::vector<Row> rows;
  for (int li : layers) {
    const Layer& l = kLayers[li];
    const Workload w = ToWorkload(l);
    const double flops = loom::graph::WorkloadFlops(w);
    auto made = loom::ops::MakeTemplate(w, target);
    if (!made.ok()) {
      std::fprintf(stderr, "%s\n", made.status().ToString().c_str());
      return 1;
    }
    const Template& t = **made;
    std::printf("[%d] %s: space %lld\n", li, l.label, static_cast<long long>(t.space().size()));
    std::fflush(stdout);
    const double dnnl_s = OneDnnSeconds(w, repeats, min_ms);

    // Candidates: the default, then an even sample of the pruned space up to `budget`.
    std::vector<Config> configs = {t.DefaultConfig()};
    std::vector<Config> pruned = PrunedConfigs(t);
    const size_t step = std::max<size_t>(1, pruned.size() / static_cast<size_t>(budget));
    for (size_t i = 0; i < pruned.size() && static_cast<int>(configs.size()) <= budget; i += step) {
      configs.push_back(pruned[i]);
    }
    std::vector<std::future<absl::StatusOr<std::unique_ptr<loom::ops::LocalKernel>>>> builds;
    for (const Config& c : configs) {
      builds.push_back(pool.Submit([&t, c, &dir] {
        auto src = t.Emit(c);
        if (!src.ok()) return absl::StatusOr<std::unique_ptr<loom::ops::LocalKernel>>(src.status());
        return loom::ops::LocalKernel::Compile(*src, dir);
      }));
    }
    std::vector<Candidate> cands;
    for (size_t i = 0; i < configs.size(); ++i) {
      auto k = builds[i].get();
      if (!k.ok()) {
        std::fprintf(stderr, "  build failed: %s\n", k.status().ToString().c_str());
        continue;
      }
      Candidate c{configs[i], std::move(*k), 0};
      // Quick screen: 3 repeats of >= 10 ms.
      c.seconds = TimeKernel(t, c.config, *c.kernel, 3, 10);
      cands.push_back(std::move(c));
    }
    const double default_s = TimeKernel(t, cands[0].config, *cands[0].kernel, repeats, min_ms);
    // Re-time the 3 best of the screen under the full protocol.
    std::vector<size_t> order(cands.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return cands[a].seconds < cands[b].seconds; });
    double best_s = default_s;
    Config best = cands[0].config;
    for (size_t i = 0; i < std::min<size_t>(3, order.size()); ++i) {
      Candidate& c = cands[order[i]];
      const double s = TimeKernel(t, c.config, *c.kernel, repeats, min_ms);
      if (s < best_s) {
        best_s = s;
        best = c.config;
      }
    }
    Row row{l.label, flops / default_s * 1e-9, flops / best_s * 1e-9, flops / dnnl_s * 1e-9,
            t.space().ToJson(best)};
    std::printf("    loom default %.1f  loom best %.1f (of %zu)  oneDNN %.1f GFLOPS  best %s\n",
                row.gf_default, row.gf_best, cands.size(), row.gf_dnnl, row.best_json.c_str());
    std::fflush(stdout);
    rows.push_back(row);
  }
  std::filesystem::remove_all(dir);

  std::printf("\n| layer | Loom default | Loom best | oneDNN | Loom best / oneDNN | Loom %% of peak | oneDNN %% of peak |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  double log_sum = 0, log_sum_default = 0;
  for (const Row& r : rows) {
    std::printf("| %s | %.1f | %.1f | %.1f | %.2f | %.0f%% | %.0f%% |\n", r.label.c_str(),
                r.gf_default, r.gf_best, r.gf_dnnl, r.gf_best / r.gf_dnnl, 100 * r.gf_best / peak,
                100 * r.gf_dnnl / peak);
    log_sum += std::log(r.gf_best / r.gf_dnnl);
    log_sum_default += std::log(r.gf_default / r.gf_dnnl);
  }
  std::printf("\nFMA peak %.1f GFLOPS. Geomean Loom best / oneDNN: %.3f (default / oneDNN: %.3f)\n",
              peak, std::exp(log_sum / rows.size()), std::exp(log_sum_default / rows.size()));
  std::printf("\nbest configs:\n");
  for (const Row& r : rows) std::printf("  %s: %s\n", r.label.c_str(), r.best_json.c_str());
  return 0;
}
