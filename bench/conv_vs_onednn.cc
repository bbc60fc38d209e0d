// Issue 3's first figure: conv2d GFLOPS on the 11 distinct ResNet-18 conv layers (batch 1, one
// thread pinned to one core) for Loom's conv2d_nchwc template (default config, and the best of a
// search over a pruned part of its space done here, standing in for the tuner), next to oneDNN
// (format_tag::any, blocked layouts of its choice) and the core's measured FMA peak.
//
//   build/<dir>/bench/conv_vs_onednn [--core N] [--layers 0,4] [--budget N] [--rounds N]
//   build/<dir>/bench/conv_vs_onednn --db FILE [--core N] [--layers 0,4] [--rounds N]
//
// Without --db, "Loom best" is the best of this benchmark's own screen of an even sample of
// --budget configs. With --db (a `loom tune` / `loom tune-task` record database), "Loom tuned" is
// the tuner's best record (BestK, the configs `loom bench --db` and compiled models use) of each
// layer for this host's target key, timed here next to the default config, oneDNN and the FMA
// peak; a layer with no successful record in the DB is listed and left out of the geomean.
//
// Timing: every contender (Loom default, Loom's 3 best screened configs, oneDNN's primitive
// execute) gets 3 warm-up calls and a call count filling 1 ms, then all are timed in 150
// interleaved rounds; best and median per-call times are kept. On a shared machine the best of
// the rounds estimates the uncontended time, and interleaving gives every contender the same
// background load. The FMA peak is the best of 200 short runs of 12 independent FMA chains.
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
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_common.h"
#include "loom/base/thread_pool.h"
#include "loom/graph/tasks.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

using loom::bench::Candidate;
using loom::bench::Timed;
using loom::bench::TimeIt;
using loom::bench::Timing;
using loom::graph::Workload;
using loom::ops::Config;
using loom::ops::Template;

struct Layer {
  const char* label;
  int64_t c, hw, k, r, stride, pad;
};

// The 11 distinct conv2d workloads of ResNet-18 (batch 1, 224x224 input).
const Layer kLayers[] = {
    {"3->64 7x7 s2 224", 3, 224, 64, 7, 2, 3},     {"64->64 3x3 56", 64, 56, 64, 3, 1, 1},
    {"64->128 3x3 s2 56", 64, 56, 128, 3, 2, 1},   {"64->128 1x1 s2 56", 64, 56, 128, 1, 2, 0},
    {"128->128 3x3 28", 128, 28, 128, 3, 1, 1},    {"128->256 3x3 s2 28", 128, 28, 256, 3, 2, 1},
    {"128->256 1x1 s2 28", 128, 28, 256, 1, 2, 0}, {"256->256 3x3 14", 256, 14, 256, 3, 1, 1},
    {"256->512 3x3 s2 14", 256, 14, 512, 3, 2, 1}, {"256->512 1x1 s2 14", 256, 14, 512, 1, 2, 0},
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

// --- oneDNN: the primitive and its memories; Run() is one execute (timed alone).
struct OneDnnConv {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::memory src, wei, dst;
  dnnl::convolution_forward conv;
  std::string impl;

  explicit OneDnnConv(const Workload& w) {
    using namespace dnnl;
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
    src = memory(pd.src_desc(), eng);
    wei = memory(pd.weights_desc(), eng);
    dst = memory(pd.dst_desc(), eng);
    // Any values work for timing; these keep clear of denormals.
    for (memory* m : {&src, &wei}) {
      float* p = static_cast<float*>(m->get_data_handle());
      const size_t n = m->get_desc().get_size() / sizeof(float);
      for (size_t i = 0; i < n; ++i) p[i] = 0.5f + 0.001f * static_cast<float>(i % 97);
    }
    conv = convolution_forward(pd);
    impl = pd.impl_info_str();
  }
  void Run() {
    conv.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
    strm.wait();
  }
};

// --- Loom: a compiled candidate with its packed buffers.
// The pruned search space: vec = the ISA's widest, tile_ic in [min(8, C), 64], register blocks
// of 10..28 accumulators, all tile shapes/orders/unrolls; parallel_axis 0 (one thread).
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
  loom::bench::ReexecWithOneOmpThread(argv);
  int core = 1, budget = 48, rounds = 150;
  double min_ms = 1;
  std::vector<int> layers;
  std::string db;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--core") {
      core = std::atoi(value.c_str());
    } else if (flag == "--budget") {
      budget = std::atoi(value.c_str());
    } else if (flag == "--rounds") {
      rounds = std::atoi(value.c_str());
    } else if (flag == "--db") {
      db = value;
    } else if (flag == "--layers") {
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        layers.push_back(std::atoi(std::string(v).c_str()));
      }
    } else {
      std::fprintf(stderr,
                   "unknown flag %s (--core N --budget N --rounds N --layers i,j --db FILE)\n",
                   flag.c_str());
      return 2;
    }
  }
  if (layers.empty()) {
    for (int i = 0; i < 11; ++i) layers.push_back(i);
  }
  const loom::ops::Target target = loom::ops::HostCpuTarget();
  std::unique_ptr<loom::tune::RecordStore> store;
  if (!db.empty()) {
    store = loom::bench::OpenDbOrNull(db);
    if (store == nullptr) return 1;
    std::printf("tuned configs: best record per layer in %s for target %s\n", db.c_str(),
                target.Key().c_str());
  }
  loom::bench::PrintHost(target, core,
                         absl::StrCat("oneDNN ", dnnl_version()->major, ".", dnnl_version()->minor,
                                      ".", dnnl_version()->patch));

  // Compiles run on a pool started before pinning (so they may use every core); all timing runs
  // on this thread, pinned to `core`.
  loom::base::ThreadPool pool(2);
  const double peak = loom::bench::PinAndMeasurePeak(core);
  if (peak < 0) return 1;

  char tmpl[] = "/tmp/loom_bench_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  struct Row {
    std::string label;
    Timing loom_default, loom_best, dnnl;
    double flops;
    std::string best_json;
    bool has_best = true;  // false: --db has no successful record of this layer
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
    OneDnnConv dnnl_conv(w);
    // Candidates: the default, then either the DB's best record or an even sample of the pruned
    // space up to `budget`.
    std::vector<Config> configs = {t.DefaultConfig()};
    bool has_best = true;  // with --db: the DB has a usable record (it may be the default)
    if (store != nullptr) {
      has_best = false;
      const std::string key = loom::graph::WorkloadKey(w);
      auto best = store->BestK(key, target.Key(), 1);
      if (!best.ok()) {
        std::fprintf(stderr, "%s\n", best.status().ToString().c_str());
        return 1;
      }
      std::string from = "no record";
      for (const loom::tune::Record& r : *best) {
        auto c = t.space().FromJson(r.config_json);
        if (r.template_name != t.name() || !c.ok() || !t.space().IsValid(*c)) {
          from = "a stale record (template changed)";
          continue;
        }
        from = absl::StrCat("job ", r.job_id, ", ", r.config_json);
        has_best = true;
        if (!(*c == configs[0])) configs.push_back(*c);
      }
      std::printf("[%d] %s: space %lld, DB best: %s, oneDNN impl %s\n", li, l.label,
                  static_cast<long long>(t.space().size()), from.c_str(), dnnl_conv.impl.c_str());
    } else {
      std::vector<Config> pruned = PrunedConfigs(t);
      std::printf("[%d] %s: space %lld, pruned %zu, oneDNN impl %s\n", li, l.label,
                  static_cast<long long>(t.space().size()), pruned.size(), dnnl_conv.impl.c_str());
      const size_t step = std::max<size_t>(1, pruned.size() / static_cast<size_t>(budget));
      for (size_t i = 0; i < pruned.size() && static_cast<int>(configs.size()) <= budget;
           i += step) {
        if (!(pruned[i] == configs[0])) configs.push_back(pruned[i]);
      }
    }
    std::fflush(stdout);
    const std::vector<loom::graph::Tensor> natural = loom::ops::RandomNaturalInputs(t, 1);
    std::vector<Candidate> cands = loom::bench::BuildCandidates(t, configs, natural, dir, pool);
    // Screen: best of 5 repeats of >= 5 ms.
    for (Candidate& c : cands) c.screen_s = TimeIt([&c] { c.Run(); }, 5, 5).best_s;
    // Final: the default, the 3 best of the screen and oneDNN, timed in interleaved rounds so
    // that every contender sees the same background load.
    std::vector<size_t> order(cands.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return cands[a].screen_s < cands[b].screen_s; });
    std::vector<Timed> timed;
    std::vector<size_t> finalists = {0};
    for (size_t i = 0; i < std::min<size_t>(3, order.size()); ++i) {
      if (order[i] != 0) finalists.push_back(order[i]);
    }
    for (size_t f : finalists) timed.push_back(Timed{[&cands, f] { cands[f].Run(); }});
    timed.push_back(Timed{[&dnnl_conv] { dnnl_conv.Run(); }});
    for (Timed& x : timed) x.Calibrate(min_ms);
    for (int r = 0; r < rounds; ++r) {
      for (Timed& x : timed) x.Repeat();
    }
    // Without --db: the fastest Loom finalist. With --db: the DB's config itself (finalist 1, or
    // the default when that is what the DB holds), even where the default times faster here.
    size_t best = 0;
    if (store != nullptr) {
      best = finalists.size() > 1 ? 1 : 0;
    } else {
      for (size_t i = 1; i + 1 < timed.size(); ++i) {
        if (timed[i].Summary().best_s < timed[best].Summary().best_s) best = i;
      }
    }
    Row row{l.label,
            timed[0].Summary(),
            timed[best].Summary(),
            timed.back().Summary(),
            flops,
            t.space().ToJson(cands[finalists[best]].config),
            has_best};
    std::printf(
        "    GFLOPS (best/median of %d rounds): loom default %.1f/%.1f  loom best %.1f/%.1f"
        " (of %zu)  oneDNN %.1f/%.1f\n    best %s\n",
        rounds, flops / row.loom_default.best_s * 1e-9, flops / row.loom_default.median_s * 1e-9,
        flops / row.loom_best.best_s * 1e-9, flops / row.loom_best.median_s * 1e-9, cands.size(),
        flops / row.dnnl.best_s * 1e-9, flops / row.dnnl.median_s * 1e-9, row.best_json.c_str());
    // The figures only count if the kernels are right: check default and best against the
    // reference kernel.
    for (size_t f : {finalists[0], finalists[best]}) {
      loom::ops::ErrorStats e = loom::ops::CompareTensors(
          loom::ops::RunOnce(t, cands[f].config, *cands[f].kernel, natural), t.Reference(natural));
      if (!e.WithinTolerance()) {
        std::fprintf(stderr, "WRONG RESULT for %s: max abs err %g\n",
                     t.space().ToJson(cands[f].config).c_str(), e.max_abs_err);
        return 1;
      }
    }
    std::fflush(stdout);
    rows.push_back(row);
  }
  std::filesystem::remove_all(dir);

  auto gf = [](const Row& r, const Timing& t) { return r.flops / t.best_s * 1e-9; };
  const char* best_name = store != nullptr ? "Loom tuned (DB)" : "Loom best";
  std::printf(
      "\nGFLOPS from the best of %d interleaved rounds (>= %.0f ms each), 1 thread, core %d\n\n",
      rounds, min_ms, core);
  std::printf(
      "| layer | Loom default | %s | oneDNN | FMA peak | %s / oneDNN | default / oneDNN | "
      "Loom %% of peak | oneDNN %% of peak |\n",
      best_name, best_name);
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  double log_sum = 0, log_sum_default = 0, log_sum_median = 0;
  int counted = 0;
  for (const Row& r : rows) {
    const double best = gf(r, r.loom_best), dflt = gf(r, r.loom_default), dn = gf(r, r.dnnl);
    if (!r.has_best) {
      std::printf("| %s | %.1f | (no record) | %.1f | %.1f | - | %.2f | %.0f%% | %.0f%% |\n",
                  r.label.c_str(), dflt, dn, peak, dflt / dn, 100 * dflt / peak, 100 * dn / peak);
      continue;
    }
    std::printf("| %s | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.0f%% | %.0f%% |\n",
                r.label.c_str(), dflt, best, dn, peak, best / dn, dflt / dn, 100 * best / peak,
                100 * dn / peak);
    log_sum += std::log(best / dn);
    log_sum_default += std::log(dflt / dn);
    log_sum_median += std::log(r.dnnl.median_s / r.loom_best.median_s);
    ++counted;
  }
  const double n = std::max(1, counted);
  std::printf(
      "\nFMA peak %.1f GFLOPS. Geomean over %d of %zu layers: %s / oneDNN %.3f (from medians: "
      "%.3f); Loom default / oneDNN %.3f\n",
      peak, counted, rows.size(), best_name, std::exp(log_sum / n), std::exp(log_sum_median / n),
      std::exp(log_sum_default / n));
  return 0;
}
