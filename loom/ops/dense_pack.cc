// dense_pack: y[M,N] = x[M,K] * W^T as TVM's dense_pack. W ([N,K], or [K,N] without trans_b) is
// packed to [N/bn, K, bn] (N zero-padded to a multiple of bn); the output buffer is [M, Np] with
// Np = N rounded up to bn (unpack drops the padding columns). A tile_m x (bn/vec) accumulator
// block stays in registers over a tile_k slice of K; rows left over by tile_m run in a smaller
// tail block.
//
// batch_matmul (Y[b,M,N] = A[b,M,K] * B[b,K,N]) is the same template over a batch axis
// (batch_matmul_pack): every batch has its own packed B, and the batch index is fused into the
// parallel loop with the outer block loop. Records name it batch_matmul_pack.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/kernels/gemm.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

using codegen::Kernel;
using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

struct DenseKnobs {
  int64_t vec, n_v, bn, tile_m, tile_k, unroll_k, order;
};

class DensePack : public TemplateBase {
 public:
  DensePack(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : TemplateBase(w, t, o),
        batched_(w.kind == graph::TaskKind::kBatchMatmul),
        batch_(batched_ ? w.b : 1),
        trans_b_(!batched_ && w.trans_b) {
    space_.AddKnob("vec", VectorWidthChoices());
    std::vector<int64_t> n_v;
    for (int64_t j = 1; j <= 4; ++j) {
      if (j == 1 || (j - 1) * t.VectorLanes() < w.n) n_v.push_back(j);
    }
    space_.AddKnob("tile_n", n_v);
    std::vector<int64_t> tile_m;
    for (int64_t m : {1, 2, 3, 4, 6, 8}) {
      if (m == 1 || m <= w.m) tile_m.push_back(m);
    }
    space_.AddKnob("tile_m", tile_m);
    std::vector<int64_t> tile_k;
    for (int64_t d : Divisors(w.k)) {
      if (d == w.k || (d >= 64 && d <= 1024)) tile_k.push_back(d);
    }
    if (tile_k.size() > 6) tile_k.erase(tile_k.begin(), tile_k.end() - 6);
    space_.AddKnob("tile_k", tile_k);
    space_.AddKnob("unroll_k", {1, 2, 4, 8});
    // 0: n blocks outer (parallel over them), m blocks inner; 1: the reverse.
    space_.AddKnob("order", {0, 1});
    MaybeAddFaultKnob();
    AddRegisterConstraint("tile_m*tile_n accumulators + tile_n + tile_m operands",
                          {"tile_m", "tile_n"},
                          [](std::span<const int64_t> v) { return v[0] * v[1] + v[1] + v[0]; });
  }

  std::string name() const override { return batched_ ? "batch_matmul_pack" : "dense_pack"; }

  DenseKnobs Knobs(const Config& c) const {
    DenseKnobs k;
    k.vec = Knob(c, "vec");
    k.n_v = Knob(c, "tile_n");
    k.bn = k.vec * k.n_v;
    k.tile_m = Knob(c, "tile_m");
    k.tile_k = Knob(c, "tile_k");
    k.unroll_k = Knob(c, "unroll_k");
    k.order = Knob(c, "order");
    return k;
  }

  int64_t PaddedN(const DenseKnobs& k) const { return CeilDiv(workload_.n, k.bn) * k.bn; }

  // The register block for `rows` rows starting at m0 (a C expression) and n block nb.
  Stmt RowBlock(const DenseKnobs& k, int64_t rows, const Epilogue& ep) const {
    const graph::Workload& w = workload_;
    const int64_t np = PaddedN(k);
    auto step = [&](const std::string& kexpr) {
      std::vector<Stmt> s;
      s.push_back(Raw(absl::StrCat("const int64_t kk = ", kexpr, ";")));
      s.push_back(Loop(
          "j", k.n_v, LoopKind::kUnrolled,
          {codegen::VecLoad("w_${j}", absl::StrCat("wp + kk * ", k.bn, " + ${j} * ", k.vec))}));
      s.push_back(Loop("r", rows, LoopKind::kUnrolled,
                       {codegen::VecBroadcast("b_${r}", absl::StrCat("xp[${r} * ", w.k, " + kk]")),
                        Loop("j", k.n_v, LoopKind::kUnrolled,
                             {codegen::VecFma("acc_${r}_${j}", "b_${r}", "w_${j}")})}));
      return codegen::Block(std::move(s));
    };
    const int64_t main_trips = k.tile_k / k.unroll_k, rest = k.tile_k % k.unroll_k;
    std::vector<Stmt> kb_body;
    kb_body.push_back(Loop(
        "r", rows, LoopKind::kUnrolled,
        {Loop("j", k.n_v, LoopKind::kUnrolled,
              {codegen::VecZero("acc_${r}_${j}"),
               If("kb > 0",
                  {codegen::VecAdd("acc_${r}_${j}", absl::StrCat("loom_load(op + ${r} * ", np,
                                                                 " + ${j} * ", k.vec, ")"))})})}));
    kb_body.push_back(
        Loop("ko", main_trips, LoopKind::kSerial,
             {Loop("ki", k.unroll_k, LoopKind::kUnrolled,
                   {step(absl::StrCat("kb * ", k.tile_k, " + ko * ", k.unroll_k, " + ${ki}"))})}));
    if (rest > 0) {
      kb_body.push_back(
          Loop("kr", rest, LoopKind::kSerial,
               {step(absl::StrCat("kb * ", k.tile_k, " + ", main_trips * k.unroll_k, " + kr"))}));
    }
    if (!ep.empty()) {
      // The epilogue runs once, after the last K block.
      const int64_t kblocks = w.k / k.tile_k;
      // Channels are the output's columns; an element is (row, column) of the [M, Np] output.
      const EpilogueSite site{
          .channel = absl::StrCat("nb * ", k.bn, " + ${j} * ", k.vec),
          .element = absl::StrCat("(op - output) + ${r} * ", np, " + ${j} * ", k.vec),
          .batch = batched_ ? "bi" : "0",
          .channels = np};
      Stmt apply =
          Loop("r", rows, LoopKind::kUnrolled,
               {Loop("j", k.n_v, LoopKind::kUnrolled, EpilogueStmts(ep, "acc_${r}_${j}", site))});
      kb_body.push_back(kblocks == 1 ? std::move(apply)
                                     : If(absl::StrCat("kb == ", kblocks - 1), {std::move(apply)}));
    }
    kb_body.push_back(
        Loop("r", rows, LoopKind::kUnrolled,
             {Loop("j", k.n_v, LoopKind::kUnrolled,
                   {codegen::VecStore(absl::StrCat("op + ${r} * ", np, " + ${j} * ", k.vec),
                                      "acc_${r}_${j}")})}));
    // Batched: `bi` (set by the parallel loop) selects the batch's matrices.
    const std::string x_batch = batched_ ? absl::StrCat("bi * ", w.m * w.k, " + ") : "";
    const std::string w_batch = batched_ ? absl::StrCat("bi * ", np * w.k, " + ") : "";
    const std::string o_batch = batched_ ? absl::StrCat("bi * ", w.m * np, " + ") : "";
    return codegen::Block(
        {Raw(absl::StrCat("const int64_t m0 = mb * ", k.tile_m, ";")),
         Raw(absl::StrCat("const float* xp = data + ", x_batch, "m0 * ", w.k, ";")),
         Raw(absl::StrCat("const float* wp = weight + ", w_batch, "nb * ", w.k * k.bn, ";")),
         Raw(absl::StrCat("float* op = output + ", o_batch, "m0 * ", np, " + nb * ", k.bn, ";")),
         Loop("kb", w.k / k.tile_k, LoopKind::kSerial, std::move(kb_body))});
  }

  static Stmt If(std::string cond, std::vector<Stmt> body) {
    return codegen::If(std::move(cond), std::move(body));
  }

  absl::StatusOr<KernelSource> EmitFused(const Config& config,
                                         const Epilogue& epilogue) const override {
    LOOM_RETURN_IF_ERROR(CheckEpilogue(epilogue));
    return EmitImpl(config, epilogue);
  }

  std::vector<BufferSpec> FusedBuffers(const Config& config,
                                       const Epilogue& epilogue) const override {
    return FusedBufferList(Buffers(config), epilogue, PaddedN(Knobs(config)), batch_);
  }

  absl::StatusOr<KernelSource> EmitImpl(const Config& config, const Epilogue& ep) const {
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t nb = PaddedN(k) / k.bn;
    const int64_t full = w.m / k.tile_m, tail = w.m % k.tile_m;
    const int64_t mblocks = full + (tail > 0 ? 1 : 0);
    std::vector<Stmt> block;
    if (tail == 0) {
      block.push_back(RowBlock(k, k.tile_m, ep));
    } else {
      block.push_back(If(absl::StrCat("mb < ", full), {RowBlock(k, k.tile_m, ep)}));
      block.push_back(If(absl::StrCat("mb == ", full), {RowBlock(k, tail, ep)}));
    }
    const bool n_outer = k.order == 0;
    Stmt inner =
        Loop(n_outer ? "mb" : "nb", n_outer ? mblocks : nb, LoopKind::kSerial, std::move(block));
    Kernel kernel = StartKernel(config, ep, k.vec);
    const std::string outer_var = n_outer ? "nb" : "mb";
    const int64_t outer_extent = n_outer ? nb : mblocks;
    if (!batched_) {
      kernel.body.push_back(Loop(outer_var, outer_extent, LoopKind::kParallel, {std::move(inner)}));
    } else {
      // The batch and the outer block loop form one parallel loop.
      kernel.body.push_back(
          Loop("p", batch_ * outer_extent, LoopKind::kParallel,
               {Raw(absl::StrCat("const int64_t bi = p / ", outer_extent, ";")),
                Raw(absl::StrCat("const int64_t ", outer_var, " = p % ", outer_extent, ";")),
                std::move(inner)}));
    }
    return FinishKernel(config, std::move(kernel));
  }

  std::vector<BufferSpec> Buffers(const Config& config) const override {
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    if (batched_) {
      return {{"data", {batch_, w.m, w.k}, false},
              {"weight", {batch_, PaddedN(k) / k.bn, w.k, k.bn}, false},
              {"output", {batch_, w.m, PaddedN(k)}, true}};
    }
    return {{"data", {w.m, w.k}, false},
            {"weight", {PaddedN(k) / k.bn, w.k, k.bn}, false},
            {"output", {w.m, PaddedN(k)}, true}};
  }

  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    LOOM_CHECK(natural.size() == 2);
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    graph::Tensor weight(graph::DType::kFloat32, Buffers(config)[1].shape);
    const int64_t packed = PaddedN(k) * w.k;  // floats per batch
    for (int64_t bi = 0; bi < batch_; ++bi) {
      const float* src = natural[1].data<float>() + bi * w.n * w.k;
      float* p = weight.data<float>() + bi * packed;
      for (int64_t n = 0; n < w.n; ++n) {
        for (int64_t kk = 0; kk < w.k; ++kk) {
          p[(n / k.bn * w.k + kk) * k.bn + n % k.bn] =
              trans_b_ ? src[n * w.k + kk] : src[kk * w.n + n];
        }
      }
    }
    return {natural[0].Clone(), weight};
  }

  graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const override {
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t np = PaddedN(k);
    graph::Tensor y(graph::DType::kFloat32,
                    batched_ ? graph::Shape{batch_, w.m, w.n} : graph::Shape{w.m, w.n});
    for (int64_t bi = 0; bi < batch_; ++bi) {
      for (int64_t m = 0; m < w.m; ++m) {
        for (int64_t n = 0; n < w.n; ++n) {
          y.data<float>()[(bi * w.m + m) * w.n + n] = output.data<float>()[(bi * w.m + m) * np + n];
        }
      }
    }
    return y;
  }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    const graph::Workload& w = workload_;
    if (batched_) {
      graph::Tensor y(graph::DType::kFloat32, {batch_, w.m, w.n});
      for (int64_t bi = 0; bi < batch_; ++bi) {
        kernels::MatMul(w.m, w.n, w.k, natural[0].data<float>() + bi * w.m * w.k,
                        natural[1].data<float>() + bi * w.k * w.n,
                        y.data<float>() + bi * w.m * w.n);
      }
      return y;
    }
    graph::Tensor y(graph::DType::kFloat32, {w.m, w.n});
    if (w.trans_b) {
      kernels::Dense(w.m, w.n, w.k, natural[0].data<float>(), natural[1].data<float>(), nullptr,
                     y.data<float>());
    } else {
      kernels::MatMul(w.m, w.n, w.k, natural[0].data<float>(), natural[1].data<float>(),
                      y.data<float>());
    }
    return y;
  }

  std::vector<graph::Shape> NaturalInputShapes() const override {
    const graph::Workload& w = workload_;
    if (batched_) return {{batch_, w.m, w.k}, {batch_, w.k, w.n}};
    if (w.trans_b) return {{w.m, w.k}, {w.n, w.k}};
    return {{w.m, w.k}, {w.k, w.n}};
  }

  std::vector<std::string> FeatureNames() const override {
    std::vector<std::string> names;
    for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
    for (const char* n :
         {"bn", "accumulators", "registers_used", "k_blocks", "m_tail_rows", "weight_tile_bytes",
          "x_tile_bytes", "log_arith_intensity", "n_pad_ratio"}) {
      names.push_back(n);
    }
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f;
    for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
    const DenseKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const double w_bytes = static_cast<double>(k.tile_k * k.bn) * 4;
    const double x_bytes = static_cast<double>(k.tile_k * k.tile_m) * 4;
    const double flops = 2.0 * static_cast<double>(k.tile_k * k.tile_m * k.bn);
    f.push_back(static_cast<float>(k.bn));
    f.push_back(static_cast<float>(k.tile_m * k.n_v));
    f.push_back(static_cast<float>(k.tile_m * k.n_v + k.n_v + k.tile_m));
    const int64_t k_steps = w.k / k.tile_k;  // tile_k divides K
    f.push_back(static_cast<float>(k_steps));
    f.push_back(static_cast<float>(w.m % k.tile_m));
    f.push_back(static_cast<float>(w_bytes));
    f.push_back(static_cast<float>(x_bytes));
    f.push_back(static_cast<float>(std::log(flops / (w_bytes + x_bytes))));
    f.push_back(static_cast<float>(PaddedN(k)) / static_cast<float>(w.n));
    return f;
  }

  Config DefaultConfig() const override {
    return ClosestConfig({{"vec", target_.VectorLanes()},
                          {"tile_n", 2},
                          {"tile_m", 4},
                          {"tile_k", workload_.k},
                          {"unroll_k", 4},
                          {"order", 0},
                          {"fault", 0}});
  }

 private:
  const bool batched_;   // batch_matmul: a batch axis over independent products
  const int64_t batch_;  // 1 for dense
  const bool trans_b_;   // dense with B given as [N, K]
};

}  // namespace

std::unique_ptr<Template> MakeDensePack(const graph::Workload& w, const Target& t,
                                        const TemplateOptions& o) {
  return std::make_unique<DensePack>(w, t, o);
}

}  // namespace loom::ops::internal
