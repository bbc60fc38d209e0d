// Issue 17's matrix figure: GFLOPS of the matrix products of ViT-tiny, BERT-small and BERT-base
// (batch 1, one thread pinned to one core) for Loom's dense_pack and batch_matmul templates
// (default config, and the best of a screen of configs done here or the tuner's best record with
// --db), next to oneDNN's sgemm (dnnl_sgemm, row-major, one call per batch) and the core's
// measured FMA peak, printed as ratios side by side.
//
//   build/<dir>/bench/matmul_vs_onednn [--core N] [--shapes 0,4] [--budget N] [--rounds N]
//                                      [--clock wall|cpu]
//   build/<dir>/bench/matmul_vs_onednn --db FILE [--core N] [--shapes 0,4] [--rounds N]
//
// --clock cpu times calls by the thread's CPU time instead of the wall clock: on a machine busy
// with other work it leaves out the time the (single-threaded) calls spend descheduled.
//
// Shapes are the workloads `loom tasks` lists for those models: dense (activation x weight,
// weights packed ahead as compiled models do; oneDNN gets the natural weight) and batch_matmul
// (attention's Q K^T with K read in place as [s, d], and P V). Timing as conv_vs_onednn.cc: every
// contender gets 3 warm-up calls and a call count filling 1 ms, then all are timed in
// interleaved rounds; the best of the rounds estimates the uncontended time.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_common.h"
#include "loom/base/thread_pool.h"
#include "loom/graph/tasks.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "oneapi/dnnl/dnnl.h"

namespace {

using loom::bench::Candidate;
using loom::bench::Timed;
using loom::bench::TimeIt;
using loom::bench::Timing;
using loom::graph::Workload;
using loom::ops::Config;
using loom::ops::Template;

struct Shape {
  const char* label;
  const char* key;  // the workload key
};

const Shape kShapes[] = {
    {"vit qkv 197x192->576", "dense:f32:m197_n576_k192_tb0"},
    {"vit proj 197x192->192", "dense:f32:m197_n192_k192_tb1"},
    {"vit fc1 197x192->768", "dense:f32:m197_n768_k192_tb0"},
    {"vit fc2 197x768->192", "dense:f32:m197_n192_k768_tb0"},
    {"vit q.kT 3x197x197x64", "batch_matmul:f32:b3_m197_n197_k64_tb1"},
    {"vit p.v 3x197x64x197", "batch_matmul:f32:b3_m197_n64_k197"},
    {"bert-s 128x256->256", "dense:f32:m128_n256_k256_tb0"},
    {"bert-s fc1 128x256->1024", "dense:f32:m128_n1024_k256_tb0"},
    {"bert-s fc2 128x1024->256", "dense:f32:m128_n256_k1024_tb0"},
    {"bert-s q.kT 4x128x128x64", "batch_matmul:f32:b4_m128_n128_k64_tb1"},
    {"bert-s p.v 4x128x64x128", "batch_matmul:f32:b4_m128_n64_k128"},
    {"bert-b 128x768->768", "dense:f32:m128_n768_k768_tb0"},
    {"bert-b fc1 128x768->3072", "dense:f32:m128_n3072_k768_tb0"},
    {"bert-b fc2 128x3072->768", "dense:f32:m128_n768_k3072_tb0"},
    {"bert-b q.kT 12x128x128x64", "batch_matmul:f32:b12_m128_n128_k64_tb1"},
    {"bert-b p.v 12x128x64x128", "batch_matmul:f32:b12_m128_n64_k128"},
};
constexpr int kNumShapes = sizeof(kShapes) / sizeof(kShapes[0]);

// oneDNN's sgemm on the natural operands: one row-major call per batch.
struct OneDnnGemm {
  Workload w;
  std::vector<float> a, b, c;
  OneDnnGemm(const Workload& wl, const std::vector<loom::graph::Tensor>& natural) : w(wl) {
    a.assign(natural[0].data<float>(), natural[0].data<float>() + natural[0].num_elements());
    b.assign(natural[1].data<float>(), natural[1].data<float>() + natural[1].num_elements());
    c.assign(static_cast<size_t>(std::max<int64_t>(w.b, 1) * w.m * w.n), 0.0f);
  }
  void Run() {
    const int64_t batches = std::max<int64_t>(w.b, 1);
    const int64_t lda = w.trans_a ? w.m : w.k, ldb = w.trans_b ? w.k : w.n;
    for (int64_t i = 0; i < batches; ++i) {
      dnnl_sgemm(w.trans_a ? 'T' : 'N', w.trans_b ? 'T' : 'N', w.m, w.n, w.k, 1.0f,
                 a.data() + i * w.m * w.k, lda, b.data() + i * w.k * w.n, ldb, 0.0f,
                 c.data() + i * w.m * w.n, w.n);
    }
  }
};

// The screen: valid configs with the widest vectors and one parallel-loop choice (one thread),
// at most `budget`, evenly spread, the initial configs first.
std::vector<Config> ScreenConfigs(const Template& t, int budget) {
  std::vector<Config> out = t.InitialConfigs();
  std::vector<Config> pool;
  const auto& space = t.space();
  const int par = space.KnobIndex("parallel_axis");
  for (int64_t i = 0; i < space.size(); ++i) {
    const Config c{i};
    if (!space.IsValid(c) || space.Value(c, "vec") != t.target().VectorLanes()) continue;
    if (par >= 0 && space.Value(c, "parallel_axis") != 1) continue;
    pool.push_back(c);
  }
  const size_t step = std::max<size_t>(1, pool.size() / static_cast<size_t>(std::max(1, budget)));
  for (size_t i = 0; i < pool.size() && static_cast<int>(out.size()) < budget; i += step) {
    if (std::find(out.begin(), out.end(), pool[i]) == out.end()) out.push_back(pool[i]);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  loom::bench::ReexecWithOneOmpThread(argv);
  int core = 1, budget = 24, rounds = 100;
  loom::bench::Clock clock = loom::bench::Clock::kWall;
  std::vector<int> shapes;
  std::string db;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--core") {
      core = std::atoi(value.c_str());
    } else if (flag == "--budget") {
      budget = std::atoi(value.c_str());
    } else if (flag == "--rounds") {
      rounds = std::max(1, std::atoi(value.c_str()));
    } else if (flag == "--db") {
      db = value;
    } else if (flag == "--clock" && (value == "wall" || value == "cpu")) {
      clock = value == "wall" ? loom::bench::Clock::kWall : loom::bench::Clock::kThreadCpu;
    } else if (flag == "--shapes") {
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        const int s = std::atoi(std::string(v).c_str());
        if (s < 0 || s >= kNumShapes) {
          std::fprintf(stderr, "--shapes: %d is not in [0, %d)\n", s, kNumShapes);
          return 2;
        }
        shapes.push_back(s);
      }
    } else {
      std::fprintf(stderr,
                   "unknown flag %s (--core N --budget N --rounds N --shapes i,j --db FILE "
                   "--clock wall|cpu)\n",
                   flag.c_str());
      return 2;
    }
  }
  if (shapes.empty()) {
    for (int i = 0; i < kNumShapes; ++i) shapes.push_back(i);
  }
  const loom::ops::Target target = loom::ops::HostCpuTarget();
  std::unique_ptr<loom::tune::RecordStore> store;
  if (!db.empty()) {
    store = loom::bench::OpenDbOrNull(db);
    if (store == nullptr) return 1;
  }
  loom::bench::PrintHost(target, core,
                         absl::StrFormat("oneDNN %d.%d.%d sgemm", dnnl_version()->major,
                                         dnnl_version()->minor, dnnl_version()->patch));

  // Compiles run on a pool started before pinning; all timing runs on this thread, pinned.
  loom::base::ThreadPool pool(2);
  const double peak = loom::bench::PinAndMeasurePeak(core);
  if (peak < 0) return 1;

  char tmpl[] = "/tmp/loom_bench_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  struct Row {
    std::string label;
    Timing loom_default, loom_best, dnnl;
    double flops;
    bool has_best = true;
  };
  std::vector<Row> rows;
  for (int si : shapes) {
    const Shape& sh = kShapes[si];
    auto parsed = loom::graph::ParseWorkloadKey(sh.key);
    if (!parsed.ok()) {
      std::fprintf(stderr, "%s\n", parsed.status().ToString().c_str());
      return 1;
    }
    const Workload w = *parsed;
    auto made = loom::ops::MakeTemplate(w, target);
    if (!made.ok()) {
      std::fprintf(stderr, "%s\n", made.status().ToString().c_str());
      return 1;
    }
    const Template& t = **made;
    const std::vector<loom::graph::Tensor> natural = loom::ops::RandomNaturalInputs(t, 1);
    std::vector<Config> configs = {t.DefaultConfig()};
    bool has_best = true;
    if (store != nullptr) {
      has_best = false;
      auto best = store->BestK(sh.key, target.Key(), 1);
      for (const loom::tune::Record& r : best.ok() ? *best : std::vector<loom::tune::Record>{}) {
        auto c = t.space().FromJson(r.config_json);
        if (r.template_name != t.name() || !c.ok() || !t.space().IsValid(*c)) continue;
        has_best = true;
        if (!(*c == configs[0])) configs.push_back(*c);
      }
      std::printf("[%d] %s (%s): DB best: %s\n", si, sh.label, t.name().c_str(),
                  has_best ? t.space().ToJson(configs.back()).c_str() : "no record");
    } else {
      configs = ScreenConfigs(t, budget);
      std::printf("[%d] %s (%s): space %lld, screening %zu\n", si, sh.label, t.name().c_str(),
                  static_cast<long long>(t.space().size()), configs.size());
    }
    std::fflush(stdout);
    std::vector<Candidate> cands = loom::bench::BuildCandidates(t, configs, natural, dir, pool);
    if (cands.size() != configs.size()) return 1;
    for (Candidate& c : cands) c.screen_s = TimeIt([&c] { c.Run(); }, 3, 2, clock).best_s;
    // The default (candidate 0), the screen's best (or the DB's config), and oneDNN, timed in
    // interleaved rounds.
    size_t best = cands.size() > 1 ? 1 : 0;
    if (store == nullptr) {
      best = 0;
      for (size_t i = 1; i < cands.size(); ++i) {
        if (cands[i].screen_s < cands[best].screen_s) best = i;
      }
    }
    OneDnnGemm dnnl(w, natural);
    std::vector<Timed> timed = {Timed{[&] { cands[0].Run(); }}, Timed{[&] { cands[best].Run(); }},
                                Timed{[&] { dnnl.Run(); }}};
    for (Timed& x : timed) {
      x.clock = clock;
      x.Calibrate(1);
    }
    for (int r = 0; r < rounds; ++r) {
      for (Timed& x : timed) x.Repeat();
    }
    // The figures only count if the kernels are right.
    for (size_t f : {size_t{0}, best}) {
      const loom::ops::ErrorStats e = loom::ops::CompareTensors(
          loom::ops::RunOnce(t, cands[f].config, *cands[f].kernel, natural), t.Reference(natural));
      if (!e.WithinTolerance()) {
        std::fprintf(stderr, "WRONG RESULT for %s: max abs err %g\n",
                     t.space().ToJson(cands[f].config).c_str(), e.max_abs_err);
        return 1;
      }
    }
    const double flops = loom::graph::WorkloadFlops(w);
    Row row{sh.label, timed[0].Summary(), timed[1].Summary(), timed[2].Summary(), flops, has_best};
    std::printf("    GFLOPS: default %.1f  best %.1f  oneDNN %.1f   best config %s\n",
                flops / row.loom_default.best_s * 1e-9, flops / row.loom_best.best_s * 1e-9,
                flops / row.dnnl.best_s * 1e-9, t.space().ToJson(cands[best].config).c_str());
    std::fflush(stdout);
    rows.push_back(row);
  }
  std::filesystem::remove_all(dir);

  const char* best_name = store != nullptr ? "Loom tuned (DB)" : "Loom best";
  std::printf(
      "\nGFLOPS from the best of %d interleaved rounds (>= 1 ms each, %s), 1 thread, core %d\n\n",
      rounds, clock == loom::bench::Clock::kWall ? "wall clock" : "thread CPU time", core);
  std::printf(
      "| shape | Loom default | %s | oneDNN sgemm | default / oneDNN | %s / oneDNN | default %% "
      "of peak | %s %% of peak | oneDNN %% of peak "
      "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
      best_name, best_name, best_name);
  double log_default = 0, log_best = 0;
  int counted = 0;
  for (const Row& r : rows) {
    auto gf = [&](const Timing& t) { return r.flops / t.best_s * 1e-9; };
    const double d = gf(r.loom_default), b = gf(r.loom_best), o = gf(r.dnnl);
    const std::string no = "-";
    std::printf("| %s | %.1f | %s | %.1f | %.2f | %s | %.0f%% | %s | %.0f%% |\n", r.label.c_str(),
                d, r.has_best ? absl::StrFormat("%.1f", b).c_str() : "(no record)", o, d / o,
                r.has_best ? absl::StrFormat("%.2f", b / o).c_str() : no.c_str(), 100 * d / peak,
                r.has_best ? absl::StrFormat("%.0f%%", 100 * b / peak).c_str() : no.c_str(),
                100 * o / peak);
    log_default += std::log(d / o);
    if (r.has_best) {
      log_best += std::log(b / o);
      ++counted;
    }
  }
  std::printf(
      "\nFMA peak %.1f GFLOPS. Geomean Loom default / oneDNN %.3f over %zu shapes; %s / "
      "oneDNN %.3f over %d\n",
      peak, std::exp(log_default / static_cast<double>(std::max<size_t>(1, rows.size()))),
      rows.size(), best_name, std::exp(log_best / std::max(1, counted)), counted);
  return 0;
}
