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

class DensePack : public MatrixTemplate {
 public:
  DensePack(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : MatrixTemplate(w, t, o) {
    // 0: column panels outer (the parallel loop), row blocks inner; 1: the reverse.
    space_.AddKnob("order", {0, 1});
    MaybeAddFaultKnob();
    AddMatrixConstraints();
  }

  std::string name() const override { return "dense_pack"; }

  absl::StatusOr<KernelSource> EmitFused(const Config& config, const Epilogue& ep) const override {
    LOOM_RETURN_IF_ERROR(CheckEpilogue(ep));
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    const MatrixKnobs k = MatrixKnobsOf(config);
    const int64_t order = Knob(config, "order");
    const graph::Workload& w = workload_;
    const PanelSpec spec = Spec(k, PanelSpec::BSource::kPrepacked);
    const int64_t panels = CeilDiv(w.n, k.nr), mblocks = CeilDiv(w.m, k.tile_m);

    // One panel nb for the row blocks [mb_begin, mb_end).
    std::vector<Stmt> panel;
    panel.push_back(Raw(absl::StrCat("const int64_t n0 = nb * ", k.nr, ";")));
    panel.push_back(Raw(absl::StrCat("const float* b_base = weight + nb * ", w.k * k.nr, ";")));
    for (Stmt& s : PanelForNb(spec, ep)) panel.push_back(std::move(s));
    std::vector<Stmt> body = PanelBuffers(spec, ep);
    body.push_back(Raw("const float* a_base = data;"));
    body.push_back(Raw("float* y_base = output;"));
    if (order == 0) {
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
        Loop("p", order == 0 ? panels : mblocks, LoopKind::kParallel, std::move(body)));
    return FinishKernel(config, std::move(kernel));
  }

  std::vector<BufferSpec> FusedBuffers(const Config& config,
                                       const Epilogue& epilogue) const override {
    return FusedBufferList(Buffers(config), epilogue, workload_.n, 1);
  }

  std::vector<BufferSpec> Buffers(const Config& config) const override {
    const MatrixKnobs k = MatrixKnobsOf(config);
    const graph::Workload& w = workload_;
    return {{"data", NaturalInputShapes()[0], false},
            {"weight", {PaddedN(k) / k.nr, w.k, k.nr}, false},
            {"output", {w.m, w.n}, true}};
  }

  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    LOOM_CHECK(natural.size() == 2);
    const MatrixKnobs k = MatrixKnobsOf(config);
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
    std::vector<std::string> names = MatrixFeatureNames();
    names.push_back("parallel_items");
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f = MatrixFeatures(config);
    const MatrixKnobs k = MatrixKnobsOf(config);
    f.push_back(static_cast<float>(Knob(config, "order") == 0 ? CeilDiv(workload_.n, k.nr)
                                                              : CeilDiv(workload_.m, k.tile_m)));
    return f;
  }

  Config DefaultConfig() const override { return InitialConfigs().front(); }

  // The cost model's best register blocks (matmul_common.h), K split so that a weight panel
  // slice stays in L2 (at most 256 KiB) when K is long: longer K blocks store and reload fewer
  // partial sums, and measured better than L1-sized ones on the transformer shapes.
  std::vector<Config> InitialConfigs() const override {
    std::vector<Config> out;
    const std::vector<RegisterBlock> blocks = RankedBlocks();
    const std::vector<int64_t>& tile_k =
        space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_k"))].values;
    for (size_t i = 0; i < blocks.size() && out.size() < 3; ++i) {
      const int64_t nr = target_.VectorLanes() * blocks[i].n_v;
      const Config c =
          BlockConfig(blocks[i], DefaultKBlock(tile_k, workload_.k, nr, 256 << 10), {{"order", 0}});
      if (space_.IsValid(c) &&
          std::none_of(out.begin(), out.end(), [&](const Config& o) { return o == c; })) {
        out.push_back(c);
      }
    }
    if (out.empty()) out.push_back(ClosestConfig({{"vec", target_.VectorLanes()}, {"fault", 0}}));
    return out;
  }

  // `order` only decides which loop is parallel: the one that keeps `threads` busiest (the
  // config's own on a tie).
  Config ForThreads(const Config& config, int32_t threads) const override {
    if (threads <= 1 || !space_.IsValid(config)) return config;
    const MatrixKnobs k = MatrixKnobsOf(config);
    const int64_t order = Knob(config, "order");
    const int64_t extents[] = {CeilDiv(workload_.n, k.nr), CeilDiv(workload_.m, k.tile_m)};
    const int64_t other = 1 - order;
    if (BusyShare(extents[other], threads) <= BusyShare(extents[order], threads) + 1e-9) {
      return config;
    }
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
