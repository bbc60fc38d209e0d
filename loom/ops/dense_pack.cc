// dense_pack: Y[M,N] = A[M,K] * B as TVM's dense_pack, for a constant B (ONNX Gemm and MatMul
// weights). B ([N,K] with trans_b, else [K,N]) is packed once, ahead of the calls, into column
// panels [N/nr, K, nr] of nr = tile_n * vec columns (N zero-padded to whole panels). A is read in
// place ([M,K], or [K,M] with trans_a) and Y is written in its natural layout [M,N]. The loops are
// batch_matmul's (matmul_common.h: K blocks of tile_k, a tile_m x tile_n register block per row
// block, a narrow last panel stored through a staging tile) over the prepacked panels; `order`
// puts the panels (0) or the row blocks (1) in the parallel loop.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/gemm.h"
#include "loom/ops/matmul_common.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

struct DenseKnobs {
  int64_t vec, n_v, nr, tile_m, tile_k, unroll_k, order;
};

class DensePack : public TemplateBase {
 public:
  DensePack(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : TemplateBase(w, t, o) {
    const std::vector<int64_t> vecs = VectorWidthChoices();
    space_.AddKnob("vec", vecs);
    std::vector<int64_t> n_v;
    for (int64_t j = 1; j <= 4; ++j) {
      if (j == 1 || (j - 1) * vecs.back() < w.n) n_v.push_back(j);
    }
    space_.AddKnob("tile_n", n_v);
    std::vector<int64_t> tile_m;
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14}) {
      if (m == 1 || m <= w.m) tile_m.push_back(m);
    }
    space_.AddKnob("tile_m", tile_m);
    space_.AddKnob("tile_k", KBlockChoices(w.k));
    space_.AddKnob("unroll_k", {1, 2, 4, 8});
    // 0: column panels outer (the parallel loop), row blocks inner; 1: the reverse.
    space_.AddKnob("order", {0, 1});
    MaybeAddFaultKnob();
    AddRegisterConstraint(
        "tile_m*tile_n accumulators + tile_n + 1 operands", {"tile_m", "tile_n"},
        [](std::span<const int64_t> v) { return RegisterBlockRegisters(v[0], v[1]); });
  }

  std::string name() const override { return "dense_pack"; }

  DenseKnobs Knobs(const Config& c) const {
    DenseKnobs k;
    k.vec = Knob(c, "vec");
    k.n_v = Knob(c, "tile_n");
    k.nr = k.vec * k.n_v;
    k.tile_m = Knob(c, "tile_m");
    k.tile_k = Knob(c, "tile_k");
    k.unroll_k = Knob(c, "unroll_k");
    k.order = Knob(c, "order");
    return k;
  }

  int64_t PaddedN(const DenseKnobs& k) const { return CeilDiv(workload_.n, k.nr) * k.nr; }

  absl::StatusOr<KernelSource> EmitFused(const Config& config, const Epilogue& ep) const override {
    if (ep.residual) return absl::UnimplementedError("dense_pack cannot fuse a residual input");
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    PanelSpec spec;
    spec.m = w.m;
    spec.n = w.n;
    spec.k = w.k;
    spec.trans_a = w.trans_a;
    spec.vec = k.vec;
    spec.n_v = k.n_v;
    spec.tile_m = k.tile_m;
    spec.tile_k = k.tile_k;
    spec.unroll_k = k.unroll_k;
    spec.b_source = PanelSpec::BSource::kPrepacked;
    const int64_t panels = CeilDiv(w.n, k.nr), full_panels = w.n / k.nr;
    const int64_t mblocks = CeilDiv(w.m, k.tile_m);

    // One panel nb for the row blocks [mb_begin, mb_end).
    std::vector<Stmt> panel;
    panel.push_back(Raw(absl::StrCat("const int64_t n0 = nb * ", k.nr, ";")));
    panel.push_back(Raw(absl::StrCat("const float* b_base = weight + nb * ", w.k * k.nr, ";")));
    if (full_panels == panels) {
      panel.push_back(codegen::Block(PanelLoops(spec, ep, k.nr)));
    } else if (full_panels == 0) {
      panel.push_back(codegen::Block(PanelLoops(spec, ep, w.n % k.nr)));
    } else {
      panel.push_back(codegen::If(absl::StrCat("nb < ", full_panels), PanelLoops(spec, ep, k.nr)));
      panel.push_back(
          codegen::If(absl::StrCat("nb == ", full_panels), PanelLoops(spec, ep, w.n % k.nr)));
    }
    std::vector<Stmt> body = PanelBuffers(spec, ep);
    body.push_back(Raw("const float* a_base = data;"));
    body.push_back(Raw("float* y_base = output;"));
    if (k.order == 0) {
      body.push_back(Raw("const int64_t nb = p;"));
      body.push_back(Raw("const int64_t mb_begin = 0;"));
      body.push_back(Raw(absl::StrCat("const int64_t mb_end = ", mblocks, ";")));
      body.push_back(codegen::Block(std::move(panel)));
    } else {
      body.push_back(Raw("const int64_t mb_begin = p;"));
      body.push_back(Raw("const int64_t mb_end = p + 1;"));
      body.push_back(Loop("nb", panels, LoopKind::kSerial, std::move(panel)));
    }
    codegen::Kernel kernel = StartKernel(config, ep, k.vec);
    kernel.body.push_back(
        Loop("p", k.order == 0 ? panels : mblocks, LoopKind::kParallel, std::move(body)));
    return FinishKernel(config, std::move(kernel));
  }

  std::vector<BufferSpec> FusedBuffers(const Config& config,
                                       const Epilogue& epilogue) const override {
    return FusedBufferList(Buffers(config), epilogue, PaddedN(Knobs(config)));
  }

  std::vector<BufferSpec> Buffers(const Config& config) const override {
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    return {{"data", NaturalInputShapes()[0], false},
            {"weight", {PaddedN(k) / k.nr, w.k, k.nr}, false},
            {"output", {w.m, w.n}, true}};
  }

  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    LOOM_CHECK(natural.size() == 2);
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    graph::Tensor weight(graph::DType::kFloat32, Buffers(config)[1].shape);
    const float* src = natural[1].data<float>();
    float* p = weight.data<float>();
    std::fill(p, p + weight.num_elements(), 0.0f);
    for (int64_t n = 0; n < w.n; ++n) {
      for (int64_t kk = 0; kk < w.k; ++kk) {
        p[(n / k.nr * w.k + kk) * k.nr + n % k.nr] =
            w.trans_b ? src[n * w.k + kk] : src[kk * w.n + n];
      }
    }
    return {natural[0], weight};
  }

  graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const override {
    (void)config;
    return output;
  }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    const graph::Workload& w = workload_;
    graph::Tensor y(graph::DType::kFloat32, {w.m, w.n});
    kernels::Gemm({.m = w.m, .n = w.n, .k = w.k, .trans_a = w.trans_a, .trans_b = w.trans_b},
                  natural[0].data<float>(), natural[1].data<float>(), nullptr, y.data<float>());
    return y;
  }

  std::vector<graph::Shape> NaturalInputShapes() const override {
    const graph::Workload& w = workload_;
    return {w.trans_a ? graph::Shape{w.k, w.m} : graph::Shape{w.m, w.k},
            w.trans_b ? graph::Shape{w.n, w.k} : graph::Shape{w.k, w.n}};
  }

  std::vector<std::string> FeatureNames() const override {
    std::vector<std::string> names;
    for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
    for (const char* n : {"nr", "accumulators", "registers_used", "k_blocks", "m_tail_rows",
                          "weight_tile_bytes", "x_tile_bytes", "log_arith_intensity", "n_pad_ratio",
                          "model_cycles_per_fma", "parallel_items"}) {
      names.push_back(n);
    }
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f;
    for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const double w_bytes = static_cast<double>(k.tile_k * k.nr) * 4;
    const double x_bytes = static_cast<double>(k.tile_k * k.tile_m) * 4;
    const double flops = 2.0 * static_cast<double>(k.tile_k * k.tile_m * k.nr);
    f.push_back(static_cast<float>(k.nr));
    f.push_back(static_cast<float>(k.tile_m * k.n_v));
    f.push_back(static_cast<float>(RegisterBlockRegisters(k.tile_m, k.n_v)));
    f.push_back(static_cast<float>(CeilDiv(w.k, k.tile_k)));
    f.push_back(static_cast<float>(w.m % k.tile_m));
    f.push_back(static_cast<float>(w_bytes));
    f.push_back(static_cast<float>(x_bytes));
    f.push_back(static_cast<float>(std::log(flops / (w_bytes + x_bytes))));
    f.push_back(static_cast<float>(PaddedN(k)) / static_cast<float>(w.n));
    f.push_back(static_cast<float>(RegisterBlockCost(w.m, w.n, k.vec, {k.tile_m, k.n_v})));
    f.push_back(static_cast<float>(k.order == 0 ? CeilDiv(w.n, k.nr) : CeilDiv(w.m, k.tile_m)));
    return f;
  }

  Config DefaultConfig() const override { return InitialConfigs().front(); }

  // The cost model's best register blocks (matmul_common.h), K split so that a weight panel
  // slice stays in L2 (at most 256 KiB) when K is long: longer K blocks store and reload fewer
  // partial sums, and measured better than L1-sized ones on the transformer shapes.
  std::vector<Config> InitialConfigs() const override {
    std::vector<Config> out;
    const int64_t lanes = target_.VectorLanes();
    const std::vector<RegisterBlock> blocks =
        RankRegisterBlocks(workload_.m, workload_.n, lanes, NumVectorRegisters(),
                           space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_m"))].values,
                           space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_n"))].values);
    for (size_t i = 0; i < blocks.size() && out.size() < 3; ++i) {
      const int64_t tile_k =
          DefaultKBlock(space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_k"))].values,
                        workload_.k, lanes * blocks[i].n_v, 256 << 10);
      const Config c = ClosestConfig({{"vec", lanes},
                                      {"tile_n", blocks[i].n_v},
                                      {"tile_m", blocks[i].rows},
                                      {"tile_k", tile_k},
                                      {"unroll_k", 4},
                                      {"order", 0},
                                      {"fault", 0}});
      if (space_.IsValid(c) &&
          std::none_of(out.begin(), out.end(), [&](const Config& o) { return o == c; })) {
        out.push_back(c);
      }
    }
    if (out.empty()) out.push_back(ClosestConfig({{"vec", lanes}, {"fault", 0}}));
    return out;
  }

  // `order` only decides which loop is parallel: the one that keeps `threads` busiest (the
  // config's own on a tie).
  Config ForThreads(const Config& config, int32_t threads) const override {
    if (threads <= 1 || !space_.IsValid(config)) return config;
    const DenseKnobs k = Knobs(config);
    const int64_t extents[] = {CeilDiv(workload_.n, k.nr), CeilDiv(workload_.m, k.tile_m)};
    auto busy = [&](int64_t extent) {
      return static_cast<double>(extent) / static_cast<double>(CeilDiv(extent, threads) * threads);
    };
    const int64_t other = 1 - k.order;
    if (busy(extents[other]) <= busy(extents[k.order]) + 1e-9) return config;
    std::vector<int64_t> choices = space_.Choices(config);
    choices[static_cast<size_t>(space_.KnobIndex("order"))] = other;
    return space_.FromChoices(choices);
  }
};

}  // namespace

std::unique_ptr<Template> MakeDensePack(const graph::Workload& w, const Target& t,
                                        const TemplateOptions& o) {
  return std::make_unique<DensePack>(w, t, o);
}

}  // namespace loom::ops::internal
