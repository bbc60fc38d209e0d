// depthwise_conv2d_nchwc: depthwise convolution (groups == C == K) on channel-blocked data
// N C/c_bn Hp Wp c_bn (zero-padded, C padded up to a multiple of c_bn), weights C/c_bn R S c_bn,
// output N C/c_bn OH OW c_bn. Vectorized over channels; a tile_ow x (c_bn/vec) block of
// accumulators stays in registers while the kernel window is walked; rows whose width has no good
// divisor are full blocks and one narrower block (RowBlockWidths, as in conv2d_nchwc).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/kernels/conv.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

using codegen::Kernel;
using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

struct DwKnobs {
  int64_t vec, c_v, c_bn, reg_n, unroll_kw, outer_order, par_axis;
};

class DepthwiseConv2dNchwc : public TemplateBase {
 public:
  DepthwiseConv2dNchwc(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : TemplateBase(w, t, o) {
    oh_ = w.OutH();
    ow_ = w.OutW();
    hp_ = w.h + w.pad_top + w.pad_bottom;
    wp_ = w.w + w.pad_left + w.pad_right;
    space_.AddKnob("vec", VectorWidthChoices());
    std::vector<int64_t> c_v;
    for (int64_t j = 1; j <= 4; ++j) {
      if (j == 1 || (j - 1) * t.VectorLanes() < w.c) c_v.push_back(j);
    }
    space_.AddKnob("tile_c", c_v);
    space_.AddKnob("tile_ow", RowBlockWidths(ow_, 28));
    space_.AddKnob("unroll_kw", {0, 1});
    space_.AddKnob("outer_order", {0, 1});  // 0: c_chunk, oh, ow   1: oh, c_chunk, ow
    space_.AddKnob("parallel_axis", {0, 1});
    MaybeAddFaultKnob();
    AddRegisterConstraint("tile_ow*tile_c accumulators + tile_c + 1 operands",
                          {"tile_ow", "tile_c"},
                          [](std::span<const int64_t> v) { return v[0] * v[1] + v[1] + 1; });
  }

  std::string name() const override { return "depthwise_conv2d_nchwc"; }

  DwKnobs Knobs(const Config& c) const {
    DwKnobs k;
    k.vec = Knob(c, "vec");
    k.c_v = Knob(c, "tile_c");
    k.c_bn = k.vec * k.c_v;
    k.reg_n = Knob(c, "tile_ow");
    k.unroll_kw = Knob(c, "unroll_kw");
    k.outer_order = Knob(c, "outer_order");
    k.par_axis = Knob(c, "parallel_axis");
    return k;
  }

  std::vector<BufferSpec> FusedBuffers(const Config& config,
                                       const Epilogue& epilogue) const override {
    const DwKnobs k = Knobs(config);
    return FusedBufferList(Buffers(config), epilogue, CeilDiv(workload_.c, k.c_bn) * k.c_bn,
                           workload_.n);
  }

  absl::StatusOr<KernelSource> EmitFused(const Config& config, const Epilogue& ep) const override {
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    LOOM_RETURN_IF_ERROR(CheckEpilogue(ep));
    const DwKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t cb = CeilDiv(w.c, k.c_bn);
    // One register block of reg_n output columns starting at column ow0 (an expression).
    auto make_block = [&](int64_t reg_n, const std::string& ow0) {
      std::vector<Stmt> window;
      window.push_back(
          Raw(absl::StrCat("const float* ip = data + (((n * ", cb, " + cb) * ", hp_, " + oh * ",
                           w.stride_h, " + kh * ", w.dilation_h, ") * ", wp_, " + ow0 * ",
                           w.stride_w, " + ${kw} * ", w.dilation_w, ") * ", k.c_bn, ";")));
      window.push_back(Raw(absl::StrCat("const float* wp = weight + ((cb * ", w.r, " + kh) * ", w.s,
                                        " + ${kw}) * ", k.c_bn, ";")));
      window.push_back(Loop("j", k.c_v, LoopKind::kUnrolled,
                            {codegen::VecLoad("w_${j}", absl::StrCat("wp + ${j} * ", k.vec))}));
      window.push_back(Loop(
          "rw", reg_n, LoopKind::kUnrolled,
          {Loop("j", k.c_v, LoopKind::kUnrolled,
                {codegen::VecLoad("x_${rw}_${j}", absl::StrCat("ip + ${rw} * ", w.stride_w * k.c_bn,
                                                               " + ${j} * ", k.vec)),
                 codegen::VecFma("acc_${rw}_${j}", "x_${rw}_${j}", "w_${j}")})}));

      std::vector<Stmt> block;
      block.push_back(Raw(absl::StrCat("const int64_t ow0 = ", ow0, ";")));
      block.push_back(
          Loop("rw", reg_n, LoopKind::kUnrolled,
               {Loop("j", k.c_v, LoopKind::kUnrolled, {codegen::VecZero("acc_${rw}_${j}")})}));
      block.push_back(Loop("kh", w.r, LoopKind::kSerial,
                           {Loop("kw", w.s, k.unroll_kw ? LoopKind::kUnrolled : LoopKind::kSerial,
                                 {codegen::Block(std::move(window))})}));
      block.push_back(Raw(absl::StrCat("float* op = output + (((n * ", cb, " + cb) * ", oh_,
                                       " + oh) * ", ow_, " + ow0) * ", k.c_bn, ";")));
      const std::string out_off = absl::StrCat("${rw} * ", k.c_bn, " + ${j} * ", k.vec);
      std::vector<Stmt> store =
          EpilogueStmts(ep, "acc_${rw}_${j}",
                        EpilogueSite{.channel = absl::StrCat("cb * ", k.c_bn, " + ${j} * ", k.vec),
                                     .element = absl::StrCat("(op - output) + ", out_off),
                                     .batch = "n",
                                     .channels = cb * k.c_bn});
      store.push_back(codegen::VecStore(absl::StrCat("op + ", out_off), "acc_${rw}_${j}"));
      block.push_back(Loop("rw", reg_n, LoopKind::kUnrolled,
                           {Loop("j", k.c_v, LoopKind::kUnrolled, std::move(store))}));
      return block;
    };
    // A row is full blocks of tile_ow columns, then (ragged rows) one block of the rest.
    const int64_t full = ow_ / k.reg_n, rest = ow_ % k.reg_n;
    std::vector<Stmt> row = {
        Loop("owb", full, LoopKind::kSerial,
             {codegen::Block(make_block(k.reg_n, absl::StrCat("owb * ", k.reg_n)))})};
    if (rest > 0) row.push_back(codegen::Block(make_block(rest, absl::StrCat(full * k.reg_n))));

    std::vector<OuterLoop> outer = {{"n", w.n}};
    if (k.outer_order == 0) {
      outer.push_back({"cb", cb});
      outer.push_back({"oh", oh_});
    } else {
      outer.push_back({"oh", oh_});
      outer.push_back({"cb", cb});
    }
    // parallel_axis 0: n and the first outer loop form the parallel loop; 1: n and the first two.
    return EmitBlockedKernel(config, ep, k.vec, outer, k.par_axis == 0 ? 2 : 3, std::move(row));
  }

  std::vector<BufferSpec> Buffers(const Config& config) const override {
    const DwKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t cb = CeilDiv(w.c, k.c_bn);
    return {{"data", {w.n, cb, hp_, wp_, k.c_bn}, false},
            {"weight", {cb, w.r, w.s, k.c_bn}, false},
            {"output", {w.n, cb, oh_, ow_, k.c_bn}, true}};
  }

  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    LOOM_CHECK(natural.size() == 2);
    const DwKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t cb = CeilDiv(w.c, k.c_bn);
    std::vector<BufferSpec> specs = Buffers(config);
    graph::Tensor data(graph::DType::kFloat32, specs[0].shape);
    graph::Tensor weight(graph::DType::kFloat32, specs[1].shape);
    const float* x = natural[0].data<float>();
    const float* wt = natural[1].data<float>();
    float* d = data.data<float>();
    for (int64_t n = 0; n < w.n; ++n) {
      for (int64_t c = 0; c < w.c; ++c) {
        for (int64_t h = 0; h < w.h; ++h) {
          for (int64_t x0 = 0; x0 < w.w; ++x0) {
            d[(((n * cb + c / k.c_bn) * hp_ + h + w.pad_top) * wp_ + x0 + w.pad_left) * k.c_bn +
              c % k.c_bn] = x[((n * w.c + c) * w.h + h) * w.w + x0];
          }
        }
      }
    }
    float* p = weight.data<float>();
    for (int64_t c = 0; c < w.c; ++c) {
      for (int64_t r = 0; r < w.r; ++r) {
        for (int64_t s = 0; s < w.s; ++s) {
          p[((c / k.c_bn * w.r + r) * w.s + s) * k.c_bn + c % k.c_bn] = wt[(c * w.r + r) * w.s + s];
        }
      }
    }
    return {data, weight};
  }

  graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const override {
    return UnblockNchwc(output, workload_.n, workload_.c, oh_, ow_, Knobs(config).c_bn);
  }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    return ConvReference(workload_, natural);
  }

  std::vector<graph::Shape> NaturalInputShapes() const override {
    const graph::Workload& w = workload_;
    return {{w.n, w.c, w.h, w.w}, {w.k, 1, w.r, w.s}};
  }

  std::vector<std::string> FeatureNames() const override {
    std::vector<std::string> names;
    for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
    for (const char* n :
         {"c_bn", "accumulators", "registers_used", "window", "outer_iterations",
          "input_tile_bytes", "weight_tile_bytes", "log_arith_intensity", "c_pad_ratio"}) {
      names.push_back(n);
    }
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f;
    for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
    const DwKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t cb = CeilDiv(w.c, k.c_bn);
    const double in_cols =
        static_cast<double>((k.reg_n - 1) * w.stride_w + (w.s - 1) * w.dilation_w + 1);
    const double in_bytes = in_cols * static_cast<double>(w.r * k.c_bn) * 4;
    const double w_bytes = static_cast<double>(w.r * w.s * k.c_bn) * 4;
    const double flops = 2.0 * static_cast<double>(k.reg_n * k.c_bn * w.r * w.s);
    f.push_back(static_cast<float>(k.c_bn));
    f.push_back(static_cast<float>(k.reg_n * k.c_v));
    f.push_back(static_cast<float>(k.reg_n * k.c_v + k.c_v + 1));
    f.push_back(static_cast<float>(w.r * w.s));
    const int64_t blocks = w.n * cb * oh_ * CeilDiv(ow_, k.reg_n);  // ragged rows too
    f.push_back(static_cast<float>(blocks));
    f.push_back(static_cast<float>(in_bytes));
    f.push_back(static_cast<float>(w_bytes));
    f.push_back(static_cast<float>(std::log(flops / (in_bytes + w_bytes))));
    f.push_back(static_cast<float>(cb * k.c_bn) / static_cast<float>(w.c));
    return f;
  }

  Config ForThreads(const Config& config, int32_t threads) const override {
    if (!space_.IsValid(config)) return config;
    const DwKnobs k = Knobs(config);
    const int64_t cb = CeilDiv(workload_.c, k.c_bn);
    return k.outer_order == 0 ? WithParallelAxisFor(space_, config, workload_.n, cb, oh_, threads)
                              : WithParallelAxisFor(space_, config, workload_.n, oh_, cb, threads);
  }

  Config DefaultConfig() const override {
    return ClosestConfig(
        {{"vec", target_.VectorLanes()},
         {"tile_c", 1},
         {"tile_ow",
          DefaultRowBlockWidth(
              ow_, 8, space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_ow"))].values)},
         {"unroll_kw", 1},
         {"outer_order", 0},
         {"parallel_axis", 0},
         {"fault", 0}});
  }

 private:
  int64_t oh_ = 0, ow_ = 0, hp_ = 0, wp_ = 0;
};

}  // namespace

std::unique_ptr<Template> MakeDepthwiseConv2dNchwc(const graph::Workload& w, const Target& t,
                                                   const TemplateOptions& o) {
  return std::make_unique<DepthwiseConv2dNchwc>(w, t, o);
}

}  // namespace loom::ops::internal
