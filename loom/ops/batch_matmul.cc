// batch_matmul: Y[b,M,N] = A[b,M,K] * B[b,K,N] over natural row-major operands, for products of
// two activations (attention's Q K^T and P V, any Gemm or MatMul whose B is not a constant).
// Nothing is packed ahead of the call: the kernel's buffers are A, B (each in its natural layout:
// [K,M] per batch when trans_a, [N,K] when trans_b, batch dims broadcast as the workload says),
// the epilogue's operands, and Y.
//
// The kernel walks column panels of nr = tile_n * vec columns. For each panel and K block
// (tile_k), it packs B's panel into a contiguous [tile_k, nr] buffer on its stack (pack_b; a
// transposed B is always packed, and so is a last panel narrower than nr, zero-padded), then runs
// every row block of A over it: a tile_m x tile_n register block of accumulators (matmul_common.h)
// that broadcasts A straight from the operand, in either layout. Partial sums of a split K live in
// Y; the epilogue runs after the last K block. Columns of a narrow last panel go through a small
// staging tile, so every access stays inside its buffer. The parallel loop covers the batch
// (parallel_axis 0), the batch and the column panels (1), or those and four row chunks (2; each
// chunk packs its own panel).
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

// The stack buffer a B panel is packed into may not exceed this: kernels run on the caller's
// thread too, whose stack the runtime does not choose.
constexpr int64_t kMaxPanelBytes = 64 << 10;
// Row chunks of parallel_axis 2.
constexpr int64_t kRowChunks = 4;

struct BmmKnobs {
  int64_t vec, n_v, nr, tile_m, tile_k, unroll_k, pack_b, par_axis;
};

class BatchMatmul : public TemplateBase {
 public:
  BatchMatmul(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : TemplateBase(w, t, o) {
    // Output batch dims and each operand's batch strides (0 where it broadcasts).
    if (w.batch_a.empty()) {
      dims_ = {w.b};
      a_strides_ = {w.m * w.k};
      b_strides_ = {w.k * w.n};
    } else {
      int64_t sa = w.m * w.k, sb = w.k * w.n;
      dims_.assign(w.batch_a.size(), 0);
      a_strides_.assign(w.batch_a.size(), 0);
      b_strides_.assign(w.batch_a.size(), 0);
      for (size_t i = w.batch_a.size(); i-- > 0;) {
        dims_[i] = std::max(w.batch_a[i], w.batch_b[i]);
        a_strides_[i] = w.batch_a[i] == 1 ? 0 : sa;
        b_strides_[i] = w.batch_b[i] == 1 ? 0 : sb;
        sa *= w.batch_a[i];
        sb *= w.batch_b[i];
      }
    }
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
    // 0: B is read in place (row-major B only; a narrow last panel is still packed), 1: packed.
    space_.AddKnob("pack_b", w.trans_b ? std::vector<int64_t>{1} : std::vector<int64_t>{0, 1});
    space_.AddKnob("parallel_axis", {0, 1, 2});
    MaybeAddFaultKnob();
    AddRegisterConstraint(
        "tile_m*tile_n accumulators + tile_n + 1 operands", {"tile_m", "tile_n"},
        [](std::span<const int64_t> v) { return RegisterBlockRegisters(v[0], v[1]); });
    const int vec_pos = space_.KnobIndex("vec"), n_pos = space_.KnobIndex("tile_n"),
              k_pos = space_.KnobIndex("tile_k");
    space_.AddConstraint(absl::StrCat("tile_k*tile_n*vec*4 <= ", kMaxPanelBytes, " panel bytes"),
                         [=](std::span<const int64_t> v) {
                           return v[static_cast<size_t>(k_pos)] * v[static_cast<size_t>(n_pos)] *
                                      v[static_cast<size_t>(vec_pos)] * 4 <=
                                  kMaxPanelBytes;
                         });
  }

  std::string name() const override { return "batch_matmul"; }

  BmmKnobs Knobs(const Config& c) const {
    BmmKnobs k;
    k.vec = Knob(c, "vec");
    k.n_v = Knob(c, "tile_n");
    k.nr = k.vec * k.n_v;
    k.tile_m = Knob(c, "tile_m");
    k.tile_k = Knob(c, "tile_k");
    k.unroll_k = Knob(c, "unroll_k");
    k.pack_b = Knob(c, "pack_b");
    k.par_axis = Knob(c, "parallel_axis");
    return k;
  }

  int64_t PaddedN(const BmmKnobs& k) const { return CeilDiv(workload_.n, k.nr) * k.nr; }

  absl::StatusOr<KernelSource> EmitFused(const Config& config, const Epilogue& ep) const override {
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    const BmmKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t panels = CeilDiv(w.n, k.nr), full_panels = w.n / k.nr;
    const int64_t mblocks = CeilDiv(w.m, k.tile_m);
    const int64_t chunks = k.par_axis == 2 ? std::min(kRowChunks, mblocks) : 1;

    const PanelSpec spec = Spec(k);
    // The work of one (batch bi, panel nb, row blocks [mb_begin, mb_end)).
    std::vector<Stmt> item;
    item.push_back(Raw(absl::StrCat("const int64_t n0 = nb * ", k.nr, ";")));
    for (Stmt& s : BatchOffsets()) item.push_back(std::move(s));
    if (full_panels == panels) {
      item.push_back(codegen::Block(PanelLoops(spec, ep, k.nr)));
    } else if (full_panels == 0) {
      item.push_back(codegen::Block(PanelLoops(spec, ep, w.n % k.nr)));
    } else {
      item.push_back(codegen::If(absl::StrCat("nb < ", full_panels), PanelLoops(spec, ep, k.nr)));
      item.push_back(
          codegen::If(absl::StrCat("nb == ", full_panels), PanelLoops(spec, ep, w.n % k.nr)));
    }

    std::vector<Stmt> body = PanelBuffers(spec, ep);
    switch (k.par_axis) {
      case 0:
        body.push_back(Raw("const int64_t bi = p;"));
        body.push_back(Raw("const int64_t mb_begin = 0;"));
        body.push_back(Raw(absl::StrCat("const int64_t mb_end = ", mblocks, ";")));
        body.push_back(Loop("nb", panels, LoopKind::kSerial, std::move(item)));
        break;
      case 1:
        body.push_back(Raw(absl::StrCat("const int64_t bi = p / ", panels, ";")));
        body.push_back(Raw(absl::StrCat("const int64_t nb = p % ", panels, ";")));
        body.push_back(Raw("const int64_t mb_begin = 0;"));
        body.push_back(Raw(absl::StrCat("const int64_t mb_end = ", mblocks, ";")));
        body.push_back(codegen::Block(std::move(item)));
        break;
      default:
        body.push_back(Raw(absl::StrCat("const int64_t bi = p / ", panels * chunks, ";")));
        body.push_back(Raw(absl::StrCat("const int64_t nb = p / ", chunks, " % ", panels, ";")));
        body.push_back(Raw(absl::StrCat("const int64_t mc = p % ", chunks, ";")));
        body.push_back(
            Raw(absl::StrCat("const int64_t mb_begin = mc * ", mblocks, " / ", chunks, ";")));
        body.push_back(
            Raw(absl::StrCat("const int64_t mb_end = (mc + 1) * ", mblocks, " / ", chunks, ";")));
        body.push_back(codegen::Block(std::move(item)));
        break;
    }
    const int64_t extent = w.b * (k.par_axis == 0 ? 1 : panels) * chunks;
    codegen::Kernel kernel = StartKernel(config, ep, k.vec);
    for (std::string& g : PanelGlobals(spec)) kernel.globals.push_back(std::move(g));
    kernel.body.push_back(Loop("p", extent, LoopKind::kParallel, std::move(body)));
    return FinishKernel(config, std::move(kernel));
  }

  std::vector<BufferSpec> FusedBuffers(const Config& config, const Epilogue& ep) const override {
    return FusedBufferList(Buffers(config), ep, PaddedN(Knobs(config)));
  }

  std::vector<BufferSpec> Buffers(const Config& config) const override {
    (void)config;
    const std::vector<graph::Shape> nat = NaturalInputShapes();
    const graph::Workload& w = workload_;
    return {{"data", nat[0], false}, {"weight", nat[1], false}, {"output", {w.b, w.m, w.n}, true}};
  }

  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    (void)config;
    LOOM_CHECK(natural.size() == 2);
    return {natural[0], natural[1]};  // read in place
  }

  graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const override {
    (void)config;
    return output;
  }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    const graph::Workload& w = workload_;
    graph::Tensor y(graph::DType::kFloat32, {w.b, w.m, w.n});
    const kernels::GemmParams p{
        .m = w.m, .n = w.n, .k = w.k, .trans_a = w.trans_a, .trans_b = w.trans_b};
    for (int64_t bi = 0; bi < w.b; ++bi) {
      int64_t rem = bi, a_off = 0, b_off = 0;
      for (size_t i = dims_.size(); i-- > 0;) {
        const int64_t idx = rem % dims_[i];
        rem /= dims_[i];
        a_off += idx * a_strides_[i];
        b_off += idx * b_strides_[i];
      }
      kernels::Gemm(p, natural[0].data<float>() + a_off, natural[1].data<float>() + b_off, nullptr,
                    y.data<float>() + bi * w.m * w.n);
    }
    return y;
  }

  std::vector<graph::Shape> NaturalInputShapes() const override {
    const graph::Workload& w = workload_;
    graph::Shape a = w.batch_a.empty() ? graph::Shape{w.b} : graph::Shape(w.batch_a);
    graph::Shape b = w.batch_b.empty() ? graph::Shape{w.b} : graph::Shape(w.batch_b);
    a.push_back(w.trans_a ? w.k : w.m);
    a.push_back(w.trans_a ? w.m : w.k);
    b.push_back(w.trans_b ? w.n : w.k);
    b.push_back(w.trans_b ? w.k : w.n);
    return {a, b};
  }

  std::vector<std::string> FeatureNames() const override {
    std::vector<std::string> names;
    for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
    for (const char* n : {"nr", "accumulators", "registers_used", "k_blocks", "m_tail_rows",
                          "n_pad_ratio", "panel_bytes", "packs_per_panel", "parallel_items",
                          "model_cycles_per_fma", "log_arith_intensity"}) {
      names.push_back(n);
    }
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f;
    for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
    const BmmKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t panels = CeilDiv(w.n, k.nr), mblocks = CeilDiv(w.m, k.tile_m);
    const int64_t chunks = k.par_axis == 2 ? std::min(kRowChunks, mblocks) : 1;
    const double panel_bytes = static_cast<double>(k.tile_k * k.nr) * 4;
    const double a_bytes = static_cast<double>(k.tile_k * k.tile_m) * 4;
    const double flops = 2.0 * static_cast<double>(k.tile_k * k.tile_m * k.nr);
    f.push_back(static_cast<float>(k.nr));
    f.push_back(static_cast<float>(k.tile_m * k.n_v));
    f.push_back(static_cast<float>(RegisterBlockRegisters(k.tile_m, k.n_v)));
    f.push_back(static_cast<float>(CeilDiv(w.k, k.tile_k)));
    f.push_back(static_cast<float>(w.m % k.tile_m));
    f.push_back(static_cast<float>(PaddedN(k)) / static_cast<float>(w.n));
    f.push_back(static_cast<float>(panel_bytes));
    f.push_back(static_cast<float>(k.pack_b == 1 || w.trans_b ? chunks : 0));
    f.push_back(static_cast<float>(w.b * (k.par_axis == 0 ? 1 : panels) * chunks));
    f.push_back(static_cast<float>(RegisterBlockCost(w.m, w.n, k.vec, {k.tile_m, k.n_v})));
    f.push_back(static_cast<float>(std::log(flops / (panel_bytes + a_bytes))));
    return f;
  }

  Config DefaultConfig() const override { return InitialConfigs().front(); }

  // The best register blocks of the cost model (matmul_common.h) with the default's other knobs,
  // then the best one with the other way of reading B when there is one.
  std::vector<Config> InitialConfigs() const override {
    std::vector<Config> out;
    const int64_t lanes = target_.VectorLanes();
    const std::vector<RegisterBlock> blocks =
        RankRegisterBlocks(workload_.m, workload_.n, lanes, NumVectorRegisters(),
                           space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_m"))].values,
                           space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_n"))].values);
    auto add = [&](const Config& c) {
      if (!space_.IsValid(c)) return;
      if (std::none_of(out.begin(), out.end(), [&](const Config& o) { return o == c; })) {
        out.push_back(c);
      }
    };
    // A row-major B with short rows (attention's P V: head-sized rows) is read in place by
    // default; wider rows are packed, as their stride can alias in the L1 cache.
    const int64_t pack_b = workload_.trans_b || workload_.n > 128 ? 1 : 0;
    for (size_t i = 0; i < blocks.size() && out.size() < 3; ++i) {
      add(BlockConfig(lanes, blocks[i], pack_b));
    }
    if (!workload_.trans_b && !blocks.empty()) add(BlockConfig(lanes, blocks[0], 1 - pack_b));
    if (out.empty()) add(ClosestConfig({{"vec", lanes}, {"fault", 0}}));
    LOOM_CHECK(!out.empty());
    return out;
  }

  // parallel_axis only splits the work among threads: the axis whose parallel loop keeps
  // `threads` busiest, the fewest row chunks (which repack panels) on a tie.
  Config ForThreads(const Config& config, int32_t threads) const override {
    if (threads <= 1 || !space_.IsValid(config)) return config;
    const BmmKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t panels = CeilDiv(w.n, k.nr), mblocks = CeilDiv(w.m, k.tile_m);
    const int64_t extents[] = {w.b, w.b * panels, w.b * panels * std::min(kRowChunks, mblocks)};
    auto busy = [&](int64_t extent) {
      return static_cast<double>(extent) / static_cast<double>(CeilDiv(extent, threads) * threads);
    };
    int64_t best = 0;
    for (int64_t axis = 1; axis < 3; ++axis) {
      if (busy(extents[axis]) > busy(extents[best]) + 1e-9) best = axis;
    }
    const int at = space_.KnobIndex("parallel_axis");
    std::vector<int64_t> choices = space_.Choices(config);
    choices[static_cast<size_t>(at)] = best;
    return space_.FromChoices(choices);
  }

 private:
  PanelSpec Spec(const BmmKnobs& k) const {
    const graph::Workload& w = workload_;
    PanelSpec p;
    p.m = w.m;
    p.n = w.n;
    p.k = w.k;
    p.trans_a = w.trans_a;
    p.trans_b = w.trans_b;
    p.vec = k.vec;
    p.n_v = k.n_v;
    p.tile_m = k.tile_m;
    p.tile_k = k.tile_k;
    p.unroll_k = k.unroll_k;
    p.b_source = k.pack_b == 1 ? PanelSpec::BSource::kPackInKernel : PanelSpec::BSource::kInPlace;
    return p;
  }

  Config BlockConfig(int64_t lanes, const RegisterBlock& b, int64_t pack_b) const {
    // The longest K block whose packed panel fits the stack budget (the whole K for attention).
    const int64_t tile_k =
        DefaultKBlock(space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_k"))].values,
                      workload_.k, lanes * b.n_v, kMaxPanelBytes);
    return ClosestConfig({{"vec", lanes},
                          {"tile_n", b.n_v},
                          {"tile_m", b.rows},
                          {"tile_k", tile_k},
                          {"unroll_k", 4},
                          {"pack_b", pack_b},
                          {"parallel_axis", 1},
                          {"fault", 0}});
  }

  // `bi` -> a_base, b_base and y_base, the batch's matrices.
  std::vector<Stmt> BatchOffsets() const {
    const graph::Workload& w = workload_;
    std::vector<Stmt> s;
    if (dims_.size() == 1) {
      s.push_back(Raw(absl::StrCat("const float* a_base = data + bi * ", a_strides_[0], ";")));
      s.push_back(Raw(absl::StrCat("const float* b_base = weight + bi * ", b_strides_[0], ";")));
    } else {
      s.push_back(Raw("int64_t loom_rem = bi, loom_a = 0, loom_b = 0, loom_i = 0;"));
      for (size_t i = dims_.size(); i-- > 0;) {
        s.push_back(Raw(absl::StrCat("loom_i = loom_rem % ", dims_[i], "; loom_rem /= ", dims_[i],
                                     "; loom_a += loom_i * ", a_strides_[i],
                                     "; loom_b += loom_i * ", b_strides_[i], ";")));
      }
      s.push_back(Raw("const float* a_base = data + loom_a;"));
      s.push_back(Raw("const float* b_base = weight + loom_b;"));
    }
    s.push_back(Raw(absl::StrCat("float* y_base = output + bi * ", w.m * w.n, ";")));
    return s;
  }

  std::vector<int64_t> dims_;       // the output's batch dims (one when nothing broadcasts)
  std::vector<int64_t> a_strides_;  // A's element stride per batch dim, 0 where A broadcasts
  std::vector<int64_t> b_strides_;  // the same for B
};

}  // namespace

std::unique_ptr<Template> MakeBatchMatmul(const graph::Workload& w, const Target& t,
                                          const TemplateOptions& o) {
  return std::make_unique<BatchMatmul>(w, t, o);
}

}  // namespace loom::ops::internal
