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

class BatchMatmul : public MatrixTemplate {
 public:
  BatchMatmul(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : MatrixTemplate(w, t, o) {
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
    // 0: B is read in place (row-major B only; a narrow last panel is still packed), 1: packed.
    space_.AddKnob("pack_b", w.trans_b ? std::vector<int64_t>{1} : std::vector<int64_t>{0, 1});
    space_.AddKnob("parallel_axis", {0, 1, 2});
    MaybeAddFaultKnob();
    AddMatrixConstraints();
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

  absl::StatusOr<KernelSource> EmitFused(const Config& config, const Epilogue& ep) const override {
    LOOM_RETURN_IF_ERROR(CheckEpilogue(ep));
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    const MatrixKnobs k = MatrixKnobsOf(config);
    const int64_t par_axis = Knob(config, "parallel_axis");
    const graph::Workload& w = workload_;
    const int64_t panels = CeilDiv(w.n, k.nr);
    const int64_t mblocks = CeilDiv(w.m, k.tile_m);
    const int64_t chunks = par_axis == 2 ? std::min(kRowChunks, mblocks) : 1;
    PanelSpec spec = Spec(k, Knob(config, "pack_b") == 1 ? PanelSpec::BSource::kPackInKernel
                                                         : PanelSpec::BSource::kInPlace);
    spec.batch_var = "bi";
    // The work of one (batch bi, panel nb, row blocks [mb_begin, mb_end)).
    std::vector<Stmt> item;
    item.push_back(Raw(absl::StrCat("const int64_t n0 = nb * ", k.nr, ";")));
    for (Stmt& s : BatchOffsets()) item.push_back(std::move(s));
    for (Stmt& s : PanelForNb(spec, ep)) item.push_back(std::move(s));

    std::vector<Stmt> body = PanelBuffers(spec, ep);
    switch (par_axis) {
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
    const int64_t extent = w.b * (par_axis == 0 ? 1 : panels) * chunks;
    codegen::Kernel kernel = StartKernel(config, ep, k.vec);
    for (std::string& g : PanelGlobals(spec)) kernel.globals.push_back(std::move(g));
    kernel.body.push_back(Loop("p", extent, LoopKind::kParallel, std::move(body)));
    return FinishKernel(config, std::move(kernel));
  }

  std::vector<BufferSpec> FusedBuffers(const Config& config, const Epilogue& ep) const override {
    return FusedBufferList(Buffers(config), ep, workload_.n, workload_.b);
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
    std::vector<std::string> names = MatrixFeatureNames();
    names.push_back("packs_per_panel");
    names.push_back("parallel_items");
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f = MatrixFeatures(config);
    const MatrixKnobs k = MatrixKnobsOf(config);
    const int64_t par_axis = Knob(config, "parallel_axis");
    const int64_t panels = CeilDiv(workload_.n, k.nr), mblocks = CeilDiv(workload_.m, k.tile_m);
    const int64_t chunks = par_axis == 2 ? std::min(kRowChunks, mblocks) : 1;
    f.push_back(static_cast<float>(Knob(config, "pack_b") == 1 ? chunks : 0));
    f.push_back(static_cast<float>(workload_.b * (par_axis == 0 ? 1 : panels) * chunks));
    return f;
  }

  Config DefaultConfig() const override { return InitialConfigs().front(); }

  // The best register blocks of the cost model (matmul_common.h) with the default's other knobs,
  // then the best one with the other way of reading B when there is one.
  std::vector<Config> InitialConfigs() const override {
    std::vector<Config> out;
    const std::vector<RegisterBlock> blocks = RankedBlocks();
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
      add(DefaultBlockConfig(blocks[i], pack_b));
    }
    if (!workload_.trans_b && !blocks.empty()) add(DefaultBlockConfig(blocks[0], 1 - pack_b));
    if (out.empty()) add(ClosestConfig({{"vec", target_.VectorLanes()}, {"fault", 0}}));
    LOOM_CHECK(!out.empty());
    return out;
  }

  // parallel_axis only splits the work among threads: the axis whose parallel loop keeps
  // `threads` busiest, the fewest row chunks (which repack panels) on a tie.
  Config ForThreads(const Config& config, int32_t threads) const override {
    if (threads <= 1 || !space_.IsValid(config)) return config;
    const MatrixKnobs k = MatrixKnobsOf(config);
    const graph::Workload& w = workload_;
    const int64_t panels = CeilDiv(w.n, k.nr), mblocks = CeilDiv(w.m, k.tile_m);
    const int64_t extents[] = {w.b, w.b * panels, w.b * panels * std::min(kRowChunks, mblocks)};
    int64_t best = 0;
    for (int64_t axis = 1; axis < 3; ++axis) {
      if (BusyShare(extents[axis], threads) > BusyShare(extents[best], threads) + 1e-9) {
        best = axis;
      }
    }
    const int at = space_.KnobIndex("parallel_axis");
    std::vector<int64_t> choices = space_.Choices(config);
    choices[static_cast<size_t>(at)] = best;
    return space_.FromChoices(choices);
  }

 private:
  // Block `b` with the longest K block whose packed panel fits the stack budget (the whole K for
  // attention), B read as `pack_b` says, the batch and the panels in the parallel loop.
  Config DefaultBlockConfig(const RegisterBlock& b, int64_t pack_b) const {
    const int64_t tile_k =
        DefaultKBlock(space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_k"))].values,
                      workload_.k, target_.VectorLanes() * b.n_v, kMaxPanelBytes);
    return BlockConfig(b, tile_k, {{"pack_b", pack_b}, {"parallel_axis", 1}});
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
