// conv2d_nchwc: the CPU conv2d template in the style of TVM's x86 conv2d_NCHWc. Data is packed
// (and zero-padded) to N C/ic_bn Hp Wp ic_bn, weights to K/oc_bn C/ic_bn R S ic_bn oc_bn, the
// output is N K/oc_bn OH OW oc_bn. The micro-kernel keeps a tile_oh x tile_ow x (oc_bn/vec)
// block of accumulators in vector registers, broadcasts one input value per (row, column) and
// FMAs it against oc_bn/vec weight vectors. tile_ow need not divide OW where OW's divisors are
// poor (17, 35, 71, 149: Inception's and any odd-sized input's rows): a row is then covered by
// full blocks and one narrower block of the remaining columns (RowBlockWidths).
//
// Grouped convolution (1 < groups, not depthwise; e.g. ResNeXt) is the same template with a group
// loop folded into the output-channel blocks: each group reduces over its own C/groups input
// channels, so the input block of output block ocb starts at group (ocb / blocks per group). The
// space then requires oc_bn to divide K/groups (a block never straddles two groups) and offers
// vector widths down to 4 and 1 for narrow groups, so every layout stays the plain NCHW[x]c one
// that the runtime and the other templates use. Records name it group_conv2d_nchwc.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/kernels/conv.h"
#include "loom/ops/matmul_common.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

// An operand DefaultOuterOrder takes to be re-read from cache: the smallest per-core L2 of the
// CPUs Loom runs on (Zen 3's 512 KiB; Zen 4 has 1 MiB, Sapphire Rapids 2 MiB). Layers whose
// input is smaller (SqueezeNet's 13x13 and 27x27 1x1 convs, MobileNetV2's 28x28 ones) measured
// within noise either way (0.89-1.10 on Zen 3) and keep order 0.
constexpr int64_t kOuterCacheBytes = 512 << 10;

using codegen::Kernel;
using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

struct ConvKnobs {
  int64_t vec, ic_bn, oc_v, oc_bn, reg_n, oh_b, unroll_kw, red_order, outer_order, par_axis;
};

class Conv2dNchwc : public TemplateBase {
 public:
  Conv2dNchwc(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : TemplateBase(w, t, o) {
    oh_ = w.OutH();
    ow_ = w.OutW();
    hp_ = w.h + w.pad_top + w.pad_bottom;
    wp_ = w.w + w.pad_left + w.pad_right;
    groups_ = w.groups;
    cg_ = w.c / w.groups;
    kg_ = w.k / w.groups;
    const int64_t max_lanes = t.VectorLanes();
    std::vector<int64_t> vec = VectorWidthChoices();
    if (groups_ > 1) {
      // Widths that divide a group's output channels, narrower ones included.
      vec.clear();
      for (int64_t v : {16, 8, 4, 1}) {
        if (v <= max_lanes && kg_ % v == 0) vec.push_back(v);
      }
    }
    space_.AddKnob("vec", vec);
    space_.AddKnob("tile_ic", Divisors(cg_));
    // oc_bn = tile_oc * vec; K is zero-padded up to a multiple of oc_bn when needed (groups == 1).
    std::vector<int64_t> oc_v;
    for (int64_t j = 1; j <= 4; ++j) {
      if (j == 1 || (j - 1) * (groups_ > 1 ? vec.back() : max_lanes) < kg_) oc_v.push_back(j);
    }
    space_.AddKnob("tile_oc", oc_v);
    space_.AddKnob("tile_ow", RowBlockWidths(ow_, 32));
    std::vector<int64_t> oh_b;
    for (int64_t d : {1, 2, 4}) {
      if (oh_ % d == 0) oh_b.push_back(d);
    }
    space_.AddKnob("tile_oh", oh_b);
    space_.AddKnob("unroll_kw", {0, 1});
    // 0: ic_outer, kh, kw, ic_inner   1: kh, kw, ic_outer, ic_inner   2: ic_outer, kh, ic_inner, kw
    space_.AddKnob("reduce_order", {0, 1, 2});
    // 0: oc_chunk, oh, ow   1: oh, oc_chunk, ow
    space_.AddKnob("outer_order", {0, 1});
    // Which outer loops are fused into the parallel loop: 0: n and the first outer loop,
    // 1: n and the first two.
    space_.AddKnob("parallel_axis", {0, 1});
    MaybeAddFaultKnob();
    // Accumulators, the tile_oc weight vectors and the broadcast input must stay in registers.
    AddRegisterConstraint("tile_oh*tile_ow*tile_oc accumulators + tile_oc + 1 operands",
                          {"tile_oh", "tile_ow", "tile_oc"},
                          [](std::span<const int64_t> v) { return v[0] * v[1] * v[2] + v[2] + 1; });
    if (groups_ > 1) {
      const int64_t kg = kg_;
      const int vec_pos = space_.KnobIndex("vec"), oc_pos = space_.KnobIndex("tile_oc");
      space_.AddConstraint(
          absl::StrCat("vec*tile_oc divides the ", kg, " output channels per group"),
          [kg, vec_pos, oc_pos](std::span<const int64_t> v) {
            return kg % (v[static_cast<size_t>(vec_pos)] * v[static_cast<size_t>(oc_pos)]) == 0;
          });
    }
  }

  std::string name() const override { return groups_ > 1 ? "group_conv2d_nchwc" : "conv2d_nchwc"; }

  ConvKnobs Knobs(const Config& c) const {
    ConvKnobs k;
    k.vec = Knob(c, "vec");
    k.ic_bn = Knob(c, "tile_ic");
    k.oc_v = Knob(c, "tile_oc");
    k.oc_bn = k.oc_v * k.vec;
    k.reg_n = Knob(c, "tile_ow");
    k.oh_b = Knob(c, "tile_oh");
    k.unroll_kw = Knob(c, "unroll_kw");
    k.red_order = Knob(c, "reduce_order");
    k.outer_order = Knob(c, "outer_order");
    k.par_axis = Knob(c, "parallel_axis");
    return k;
  }

  int64_t Accumulators(const ConvKnobs& k) const { return k.oh_b * k.reg_n * k.oc_v; }

  std::vector<BufferSpec> FusedBuffers(const Config& config,
                                       const Epilogue& epilogue) const override {
    const ConvKnobs k = Knobs(config);
    return FusedBufferList(Buffers(config), epilogue, CeilDiv(workload_.k, k.oc_bn) * k.oc_bn,
                           workload_.n);
  }

  absl::StatusOr<KernelSource> EmitFused(const Config& config, const Epilogue& ep) const override {
    LOOM_RETURN_IF_ERROR(CheckInSpace(config));
    LOOM_RETURN_IF_ERROR(CheckEpilogue(ep));
    const ConvKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    // kp: output channel blocks (all groups); cb: input channel blocks of one group.
    const int64_t kp = CeilDiv(w.k, k.oc_bn), cb = cg_ / k.ic_bn;
    // The input block index: with groups, output block ocb reads its group's input blocks.
    const std::string in_block = groups_ == 1 ? absl::StrCat("n * ", cb, " + icb")
                                              : absl::StrCat("n * ", w.c / k.ic_bn, " + (ocb / ",
                                                             kg_ / k.oc_bn, ") * ", cb, " + icb");
    const int64_t sh = w.stride_h, sw = w.stride_w, dh = w.dilation_h, dw = w.dilation_w;
    const int64_t ohb = oh_ / k.oh_b;

    // Kernel rows that read only padding for every row of a block (dilated convolutions with wide
    // pads: DeepLabV3's atrous 3x3 at dilation 12 on a 14x14 map reads padding on 24 of its 42
    // (row, tap) pairs) are skipped when they are at least a quarter of all (row block, tap)
    // pairs. The test costs more than it saves where it skips little: on GoogLeNet's 3x3 convs
    // over 7x7 maps (2 of 21 pairs) it made the model 5-10% slower (CPU time on a loaded machine).
    // Taps are kept conservatively (a tap is live when some row of the block may read the input).
    const int64_t pt = w.pad_top;
    auto row_tap_live = [&](int64_t oh0, int64_t kh) {
      return (oh0 + k.oh_b - 1) * sh - pt + kh * dh >= 0 && oh0 * sh - pt + kh * dh <= w.h - 1;
    };
    int64_t dead_row_taps = 0;
    for (int64_t b = 0; b < ohb; ++b) {
      for (int64_t kh = 0; kh < w.r; ++kh) dead_row_taps += row_tap_live(b * k.oh_b, kh) ? 0 : 1;
    }
    const bool skip_dead_rows = dead_row_taps * 4 >= ohb * w.r;
    auto kh_body = [&](std::vector<Stmt> body) {
      if (skip_dead_rows) body.insert(body.begin(), Raw("if (kh < kh_lo || kh > kh_hi) continue;"));
      return body;
    };

    // One register block of reg_n output columns starting at column ow0 (an expression):
    // accumulators, the reduction, the epilogue and the stores.
    auto make_block = [&](int64_t reg_n, const std::string& ow0) {
      // Loop bodies, innermost first. Register names carry the unrolled indices.
      std::vector<Stmt> ic_body;
      for (int64_t j = 0; j < k.oc_v; ++j) {
        ic_body.push_back(codegen::VecLoad(absl::StrCat("w", j),
                                           absl::StrCat("wp + ic * ", k.oc_bn, " + ", j * k.vec)));
      }
      std::vector<Stmt> fma_body;
      fma_body.push_back(codegen::VecBroadcast(
          "b_${rh}_${rw}",
          absl::StrCat("ip[(${rh} * ", sh * wp_, " + ${rw} * ", sw, ") * ", k.ic_bn, " + ic]")));
      for (int64_t j = 0; j < k.oc_v; ++j) {
        fma_body.push_back(codegen::VecFma(absl::StrCat("acc_${rh}_${rw}_", j), "b_${rh}_${rw}",
                                           absl::StrCat("w", j)));
      }
      ic_body.push_back(Loop("rh", k.oh_b, LoopKind::kUnrolled,
                             {Loop("rw", reg_n, LoopKind::kUnrolled, std::move(fma_body))}));

      const std::string in_ptr = absl::StrCat(
          "const float* ip = data + (((", in_block, ") * ", hp_, " + oh0 * ", sh, " + kh * ", dh,
          ") * ", wp_, " + ow0 * ", sw, " + ${kw} * ", dw, ") * ", k.ic_bn, ";");
      const std::string w_ptr =
          absl::StrCat("const float* wp = weight + (((ocb * ", cb, " + icb) * ", w.r, " + kh) * ",
                       w.s, " + ${kw}) * ", k.ic_bn * k.oc_bn, ";");
      const LoopKind kw_kind = k.unroll_kw ? LoopKind::kUnrolled : LoopKind::kSerial;
      auto ic_loop = [&]() { return Loop("ic", k.ic_bn, LoopKind::kSerial, ic_body); };
      auto ptrs_then = [&](std::vector<Stmt> tail) {
        std::vector<Stmt> v = {Raw(in_ptr), Raw(w_ptr)};
        for (Stmt& s : tail) v.push_back(std::move(s));
        return v;
      };
      Stmt reduction;
      switch (k.red_order) {
        case 0:
          reduction = Loop(
              "icb", cb, LoopKind::kSerial,
              {Loop(
                  "kh", w.r, LoopKind::kSerial,
                  kh_body({Loop("kw", w.s, kw_kind, {codegen::Block(ptrs_then({ic_loop()}))})}))});
          break;
        case 1:
          reduction = Loop("kh", w.r, LoopKind::kSerial,
                           kh_body({Loop("kw", w.s, kw_kind,
                                         {Loop("icb", cb, LoopKind::kSerial,
                                               {codegen::Block(ptrs_then({ic_loop()}))})})}));
          break;
        default: {
          // kw inside ic: the pointers move with kw, so they are formed per kw.
          std::vector<Stmt> per_kw = ptrs_then({});
          for (Stmt& s : ic_body) per_kw.push_back(s);
          reduction = Loop(
              "icb", cb, LoopKind::kSerial,
              {Loop("kh", w.r, LoopKind::kSerial,
                    kh_body(
                        {Loop("ic", k.ic_bn, LoopKind::kSerial,
                              {Loop("kw", w.s, kw_kind, {codegen::Block(std::move(per_kw))})})}))});
          break;
        }
      }

      std::vector<Stmt> block;
      block.push_back(Raw(absl::StrCat("const int64_t oh0 = ohb * ", k.oh_b, ";")));
      block.push_back(Raw(absl::StrCat("const int64_t ow0 = ", ow0, ";")));
      if (skip_dead_rows) {
        // The block's live kernel rows (see row_tap_live).
        block.push_back(Raw(
            absl::StrCat("const int64_t kh_x = ", pt, " - (oh0 + ", k.oh_b - 1, ") * ", sh, ";")));
        block.push_back(Raw(absl::StrCat("const int64_t kh_lo = kh_x > 0 ? (kh_x + ", dh - 1,
                                         ") / ", dh, " : 0;")));
        block.push_back(Raw(absl::StrCat("const int64_t kh_hi = (", w.h - 1 + pt, " - oh0 * ", sh,
                                         ") / ", dh, ";")));
      }
      block.push_back(Loop("rh", k.oh_b, LoopKind::kUnrolled,
                           {Loop("rw", reg_n, LoopKind::kUnrolled,
                                 {Loop("j", k.oc_v, LoopKind::kUnrolled,
                                       {codegen::VecZero("acc_${rh}_${rw}_${j}")})})}));
      block.push_back(std::move(reduction));
      block.push_back(Raw(absl::StrCat("float* op = output + ((n * ", kp, " + ocb) * ", oh_,
                                       " + oh0) * ", ow_ * k.oc_bn, " + ow0 * ", k.oc_bn, ";")));
      const std::string out_off =
          absl::StrCat("(${rh} * ", ow_, " + ${rw}) * ", k.oc_bn, " + ${j} * ", k.vec);
      std::vector<Stmt> store = EpilogueStmts(
          ep, "acc_${rh}_${rw}_${j}",
          EpilogueSite{.channel = absl::StrCat("ocb * ", k.oc_bn, " + ${j} * ", k.vec),
                       .element = absl::StrCat("(op - output) + ", out_off),
                       .batch = "n",
                       .channels = kp * k.oc_bn});
      store.push_back(codegen::VecStore(absl::StrCat("op + ", out_off), "acc_${rh}_${rw}_${j}"));
      block.push_back(Loop("rh", k.oh_b, LoopKind::kUnrolled,
                           {Loop("rw", reg_n, LoopKind::kUnrolled,
                                 {Loop("j", k.oc_v, LoopKind::kUnrolled, std::move(store))})}));
      return block;
    };

    // A row is owb full blocks of tile_ow columns, then (ragged rows) one block of the rest.
    const int64_t full = ow_ / k.reg_n, rest = ow_ % k.reg_n;
    std::vector<Stmt> row = {
        Loop("owb", full, LoopKind::kSerial,
             {codegen::Block(make_block(k.reg_n, absl::StrCat("owb * ", k.reg_n)))})};
    if (rest > 0) row.push_back(codegen::Block(make_block(rest, absl::StrCat(full * k.reg_n))));

    // Outer loops: n, then (ocb, ohb) in outer_order; the row's blocks inside.
    std::vector<OuterLoop> outer = {{"n", w.n}};
    if (k.outer_order == 0) {
      outer.push_back({"ocb", kp});
      outer.push_back({"ohb", ohb});
    } else {
      outer.push_back({"ohb", ohb});
      outer.push_back({"ocb", kp});
    }
    // parallel_axis 0: n and the first outer loop form the parallel loop; 1: n and the first two.
    return EmitBlockedKernel(config, ep, k.vec, outer, k.par_axis == 0 ? 2 : 3, std::move(row));
  }

  std::vector<BufferSpec> Buffers(const Config& config) const override {
    const ConvKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t kp = CeilDiv(w.k, k.oc_bn), cb = cg_ / k.ic_bn;
    return {{"data", {w.n, w.c / k.ic_bn, hp_, wp_, k.ic_bn}, false},
            {"weight", {kp, cb, w.r, w.s, k.ic_bn, k.oc_bn}, false},
            {"output", {w.n, kp, oh_, ow_, k.oc_bn}, true}};
  }

  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override {
    LOOM_CHECK(natural.size() == 2);
    const ConvKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t cb_all = w.c / k.ic_bn, cb = cg_ / k.ic_bn;
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
            const int64_t dst =
                (((n * cb_all + c / k.ic_bn) * hp_ + h + w.pad_top) * wp_ + x0 + w.pad_left) *
                    k.ic_bn +
                c % k.ic_bn;
            d[dst] = x[((n * w.c + c) * w.h + h) * w.w + x0];
          }
        }
      }
    }
    float* p = weight.data<float>();
    // Weight input channels are those of the output channel's group (cg_ of them).
    for (int64_t o = 0; o < w.k; ++o) {
      for (int64_t c = 0; c < cg_; ++c) {
        for (int64_t r = 0; r < w.r; ++r) {
          for (int64_t s = 0; s < w.s; ++s) {
            const int64_t dst =
                ((((o / k.oc_bn * cb + c / k.ic_bn) * w.r + r) * w.s + s) * k.ic_bn + c % k.ic_bn) *
                    k.oc_bn +
                o % k.oc_bn;
            p[dst] = wt[((o * cg_ + c) * w.r + r) * w.s + s];
          }
        }
      }
    }
    return {data, weight};
  }

  graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const override {
    return UnblockNchwc(output, workload_.n, workload_.k, oh_, ow_, Knobs(config).oc_bn);
  }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    return ConvReference(workload_, natural);
  }

  std::vector<graph::Shape> NaturalInputShapes() const override {
    const graph::Workload& w = workload_;
    return {{w.n, w.c, w.h, w.w}, {w.k, w.c / w.groups, w.r, w.s}};
  }

  std::vector<std::string> FeatureNames() const override {
    std::vector<std::string> names;
    for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
    for (const char* n :
         {"oc_bn", "accumulators", "registers_used", "reg_block_outputs", "ic_inner_trip",
          "reduction_trip", "outer_iterations", "input_tile_bytes", "weight_tile_bytes",
          "output_tile_bytes", "log_arith_intensity", "oc_pad_ratio", "loads_per_fma"}) {
      names.push_back(n);
    }
    return names;
  }

  std::vector<float> Features(const Config& config) const override {
    std::vector<float> f;
    for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
    const ConvKnobs k = Knobs(config);
    const graph::Workload& w = workload_;
    const int64_t kp = CeilDiv(w.k, k.oc_bn);
    const double accs = static_cast<double>(Accumulators(k));
    const double in_rows =
        static_cast<double>((k.oh_b - 1) * w.stride_h + (w.r - 1) * w.dilation_h + 1);
    const double in_cols =
        static_cast<double>((k.reg_n - 1) * w.stride_w + (w.s - 1) * w.dilation_w + 1);
    const double in_bytes = in_rows * in_cols * static_cast<double>(cg_) * 4;
    const double w_bytes = static_cast<double>(cg_ * w.r * w.s * k.oc_bn) * 4;
    const double out_bytes = static_cast<double>(k.oh_b * k.reg_n * k.oc_bn) * 4;
    const double flops = 2.0 * static_cast<double>(k.oh_b * k.reg_n * k.oc_bn * cg_ * w.r * w.s);
    f.push_back(static_cast<float>(k.oc_bn));
    f.push_back(static_cast<float>(accs));
    f.push_back(static_cast<float>(accs + static_cast<double>(k.oc_v) + 1));
    f.push_back(static_cast<float>(k.oh_b * k.reg_n));
    f.push_back(static_cast<float>(k.ic_bn));
    f.push_back(static_cast<float>(cg_ * w.r * w.s));
    const int64_t blocks = w.n * kp * (oh_ / k.oh_b) * CeilDiv(ow_, k.reg_n);  // ragged rows too
    f.push_back(static_cast<float>(blocks));
    f.push_back(static_cast<float>(in_bytes));
    f.push_back(static_cast<float>(w_bytes));
    f.push_back(static_cast<float>(out_bytes));
    f.push_back(static_cast<float>(std::log(flops / (in_bytes + w_bytes + out_bytes))));
    f.push_back(static_cast<float>(kp * k.oc_bn) / static_cast<float>(w.k));
    f.push_back(static_cast<float>((static_cast<double>(k.oc_v) + k.oh_b * k.reg_n) / accs));
    return f;
  }

  // Two output-channel vectors by up to 14 columns, unless the register-block cost model
  // (RegisterBlockCost, with the FMAs spent on padded output channels) finds a block at least
  // 10% cheaper: channel counts that two vectors would pad by a quarter or more (40 or 80
  // channels in blocks of 32 compute 64 or 96) take single vectors instead.
  Config DefaultConfig() const override {
    const int64_t lanes = DefaultLanes();
    int64_t oc_v = kg_ >= 2 * lanes ? 2 : 1;
    if (groups_ > 1 && kg_ % (oc_v * lanes) != 0) oc_v = 1;
    const int64_t max_regs = NumVectorRegisters() - oc_v - 1;
    const int64_t reg_n =
        DefaultRowBlockWidth(ow_, std::min<int64_t>(max_regs / oc_v, 14), RowWidths());
    if (groups_ > 1) return BlockConfig(lanes, oc_v, reg_n, 1);
    // Ties go to the block with more accumulators.
    double best = 0.9 * BlockCost(lanes, oc_v, reg_n);
    int64_t best_oc_v = oc_v, best_reg_n = reg_n;
    for (int64_t v : space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_oc"))].values) {
      // Blocks of 3 vectors (48 channels) are left out: their consumers and the branches a
      // Concat joins them with use power-of-two blocks, so they would cost conversions.
      if (v == 3) continue;
      for (int64_t n : RowWidths()) {
        if (n > 16 || RegisterBlockRegisters(n, v) > NumVectorRegisters()) continue;
        const double cost = BlockCost(lanes, v, n);
        if (cost < best - 1e-9 ||
            (cost < best + 1e-9 && best_oc_v * best_reg_n < v * n && best_oc_v != oc_v)) {
          best = cost;
          best_oc_v = v;
          best_reg_n = n;
        }
      }
    }
    return BlockConfig(lanes, best_oc_v, best_reg_n, 1);
  }

  Config ForThreads(const Config& config, int32_t threads) const override {
    if (!space_.IsValid(config)) return config;
    const ConvKnobs k = Knobs(config);
    const int64_t kp = CeilDiv(workload_.k, k.oc_bn), ohb = oh_ / k.oh_b;
    return k.outer_order == 0 ? WithParallelAxisFor(space_, config, workload_.n, kp, ohb, threads)
                              : WithParallelAxisFor(space_, config, workload_.n, ohb, kp, threads);
  }

  // The default (which fills most of the register file with accumulators), then register blocks
  // that keep a quarter to a half of it: R/2 accumulators as 2 or 4 output-channel vectors, R/4
  // as 1 or 2, 3R/8 as 3 (R vector registers), other knobs as the default's. On layers with a
  // short reduction (few input channels: stems, MobileNet's 1x1 convs) the full block is often far
  // from the best while these are near it; on the others they are about as good as the default.
  std::vector<Config> InitialConfigs() const override {
    std::vector<Config> out = {DefaultConfig()};
    const int64_t lanes = DefaultLanes();
    const int64_t regs = NumVectorRegisters();
    const std::pair<int64_t, int64_t> blocks[] = {
        {2, regs / 2}, {4, regs / 2}, {1, regs / 4}, {2, regs / 4}, {3, 3 * regs / 8}};
    for (const auto& [oc_v, accumulators] : blocks) {
      // Output columns first; rows (tile_oh) make up a block when the width is short or prime.
      const int64_t per_row = accumulators / oc_v;
      const int64_t reg_n = DefaultRowBlockWidth(ow_, per_row, RowWidths());
      int64_t oh_b = 1;
      for (int64_t b : {4, 2}) {
        if (oh_ % b == 0 && reg_n * b <= per_row) {
          oh_b = b;
          break;
        }
      }
      // No such block in this space: too few output channels, or a width and height whose
      // divisors leave the block at under half its accumulators (a 7-wide output has 1 or 7).
      if (oc_v * reg_n * oh_b * 2 < accumulators) continue;
      // Nor one that pads the output channels where single vectors would not (96 channels in
      // blocks of 64 computes 128): the padding's FMAs are wasted.
      if (kg_ % lanes == 0 && kg_ % (oc_v * lanes) != 0) continue;
      const Config c = BlockConfig(lanes, oc_v, reg_n, oh_b);
      if (Knobs(c).oc_v != oc_v || !space_.IsValid(c)) continue;
      if (std::none_of(out.begin(), out.end(),
                       [&](const Config& o) { return o.index == c.index; })) {
        out.push_back(c);
      }
    }
    return out;
  }

 private:
  // The vector width of the default and initial configs. Grouped: the widest width dividing a
  // group's output channels (the space's first).
  int64_t DefaultLanes() const {
    return groups_ > 1 ? space_.knobs()[0].values.front() : target_.VectorLanes();
  }

  // Modelled cycles per useful FMA of an oc_v x reg_n register block (one output row): the
  // matrix templates' RegisterBlockCost over the row and the padded output channels, times the
  // padding's share.
  double BlockCost(int64_t lanes, int64_t oc_v, int64_t reg_n) const {
    const int64_t padded = CeilDiv(kg_, oc_v * lanes) * oc_v * lanes;
    return RegisterBlockCost(ow_, padded, lanes, RegisterBlock{.rows = reg_n, .n_v = oc_v}) *
           static_cast<double>(padded) / static_cast<double>(kg_);
  }

  // The default's outer loop order (issue 17). outer_order 0 (output-channel blocks outermost)
  // keeps one block's weights in cache and reads the whole input once per output-channel block;
  // 1 (row blocks outermost) keeps one row block's input rows and reads all the weights once per
  // row block. An operand's re-reads count only when it exceeds kOuterCacheBytes (else they hit
  // the cache); rows go outermost when that moves fewer bytes. Segformer-b0's decode-head 1x1
  // conv (1024 -> 256 channels at 64x64: a 16 MiB input read 16 times against 1 MiB of weights
  // read 64 times) ran 3-4x slower under order 0, at power-of-two (64x64) and other (64x65)
  // plane strides alike. Grouped convolutions keep order 0 (each block reads only its group's
  // input).
  int64_t DefaultOuterOrder(int64_t oc_bn, int64_t oh_b) const {
    if (groups_ > 1) return 0;
    const graph::Workload& w = workload_;
    const int64_t kp = CeilDiv(w.k, oc_bn), ohb = oh_ / oh_b;
    const int64_t input = w.c * hp_ * wp_ * 4;  // one image's: the batch loop is outermost
    const int64_t weight = kp * oc_bn * w.c * w.r * w.s * 4;
    const int64_t rows_outer = input + weight * (weight > kOuterCacheBytes ? ohb : 1);
    const int64_t channels_outer = weight + input * (input > kOuterCacheBytes ? kp : 1);
    return rows_outer < channels_outer ? 1 : 0;
  }

  // The tile_ow knob's values.
  const std::vector<int64_t>& RowWidths() const {
    return space_.knobs()[static_cast<size_t>(space_.KnobIndex("tile_ow"))].values;
  }

  // The config with vectors of `lanes`, register block oc_v x reg_n x oh_b and the default's
  // other knobs.
  Config BlockConfig(int64_t lanes, int64_t oc_v, int64_t reg_n, int64_t oh_b) const {
    return ClosestConfig({{"vec", lanes},
                          {"tile_ic", LargestDivisorAtMost(cg_, lanes)},
                          {"tile_oc", oc_v},
                          {"tile_ow", reg_n},
                          {"tile_oh", oh_b},
                          {"unroll_kw", workload_.s <= 3 ? 1 : 0},
                          {"reduce_order", 0},
                          {"outer_order", DefaultOuterOrder(oc_v * lanes, oh_b)},
                          {"parallel_axis", 0},
                          {"fault", 0}});
  }

  int64_t oh_ = 0, ow_ = 0, hp_ = 0, wp_ = 0;
  int64_t groups_ = 1, cg_ = 0, kg_ = 0;  // groups, input and output channels per group
};

}  // namespace

std::unique_ptr<Template> MakeConv2dNchwc(const graph::Workload& w, const Target& t,
                                          const TemplateOptions& o) {
  return std::make_unique<Conv2dNchwc>(w, t, o);
}

}  // namespace loom::ops::internal
