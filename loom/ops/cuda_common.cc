#include "loom/ops/cuda_common.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cuda_printer.h"
#include "loom/ops/cuda_epilogue.h"

namespace loom::ops::internal {

using codegen::Barrier;
using codegen::If;
using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

namespace {

// Registers a thread needs besides its accumulators (indices, addresses, staged operands).
constexpr int64_t kRegisterOverhead = 24;
constexpr int64_t kMaxRegistersPerThread = 255;
constexpr int64_t kMaxVirtualThreads = 8;  // TVM's verify_gpu_code default
constexpr int64_t kMaxBlockDim[3] = {1024, 1024, 64};
constexpr int64_t kMaxGridDim[3] = {2147483647, 65535, 65535};

void Factorizations(int64_t extent, int ways, std::vector<int64_t>& prefix,
                    std::vector<std::vector<int64_t>>& out) {
  if (ways == 1) {
    prefix.push_back(extent);
    out.push_back(prefix);
    prefix.pop_back();
    return;
  }
  for (int64_t d : Divisors(extent)) {
    prefix.push_back(d);
    Factorizations(extent / d, ways - 1, prefix, out);
    prefix.pop_back();
  }
}

int64_t Product(const std::array<int64_t, 4>& a, int from = 1) {
  int64_t p = 1;
  for (int i = from; i < 4; ++i) p *= a[static_cast<size_t>(i)];
  return p;
}

// Position of knob `name` in the space; -1 when absent.
int KnobPos(const ConfigSpace& space, const std::string& name) {
  for (size_t i = 0; i < space.knobs().size(); ++i) {
    if (space.knobs()[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

float Log2(int64_t v) {
  return static_cast<float>(std::log2(static_cast<double>(std::max<int64_t>(v, 1))));
}

}  // namespace

int64_t SplitRadix(int ways) { return ways == 2 ? 100000000 : 10000; }

std::vector<int64_t> SplitKnobValues(int64_t extent, int ways) {
  LOOM_CHECK(extent >= 1 && extent < SplitRadix(ways) && (ways == 2 || ways == 4));
  std::vector<std::vector<int64_t>> all;
  std::vector<int64_t> prefix;
  Factorizations(extent, ways, prefix, all);
  std::vector<int64_t> values;
  for (const auto& f : all) {
    int64_t v = 0;
    for (int64_t x : f) v = v * SplitRadix(ways) + x;
    values.push_back(v);
  }
  std::sort(values.begin(), values.end());
  return values;
}

std::vector<int64_t> DecodeSplit(int64_t value, int ways) {
  std::vector<int64_t> f(static_cast<size_t>(ways));
  for (int i = ways - 1; i >= 0; --i) {
    f[static_cast<size_t>(i)] = value % SplitRadix(ways);
    value /= SplitRadix(ways);
  }
  return f;
}

DirectConvFacts ComputeFacts(const DirectConvShape& sh, const DirectConvTiles& t) {
  DirectConvFacts f;
  f.threads = t.f[2] * t.y[2] * t.x[2];
  f.vthreads = t.f[1] * t.y[1] * t.x[1];
  f.accumulators = f.vthreads * t.f[3] * t.y[3] * t.x[3];
  f.est_registers = f.accumulators + kRegisterOverhead;
  f.grid[0] = t.x[0];
  f.grid[1] = t.y[0];
  f.grid[2] = sh.n * t.f[0];
  f.blocks = f.grid[0] * f.grid[1] * f.grid[2];
  const int64_t fb = Product(t.f), yb = Product(t.y), xb = Product(t.x);
  const int64_t ih = (yb - 1) * sh.stride_h + (t.ry[1] - 1) * sh.dil_h + 1;
  const int64_t iw = (xb - 1) * sh.stride_w + (t.rx[1] - 1) * sh.dil_w + 1;
  f.data_tile = (sh.depthwise ? fb : t.rc[1]) * ih * iw;
  f.weight_tile = fb * t.rc[1] * t.ry[1] * t.rx[1];
  f.shared_bytes = 4 * (f.data_tile + f.weight_tile);
  f.reduction_steps = t.rc[0] * t.ry[0] * t.rx[0];
  return f;
}

absl::Status CheckDirectConvLimits(const DirectConvShape& shape, const DirectConvTiles& t,
                                   const CudaDeviceLimits& limits) {
  const DirectConvFacts f = ComputeFacts(shape, t);
  if (f.threads > limits.max_threads_per_block) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.threads, " threads per block exceed the limit ", limits.max_threads_per_block));
  }
  const int64_t block[3] = {t.x[2], t.y[2], t.f[2]};
  static constexpr const char* kAxis[] = {"x", "y", "z"};
  for (int d = 0; d < 3; ++d) {
    if (block[d] > kMaxBlockDim[d]) {
      return absl::InvalidArgumentError(absl::StrCat("block dimension ", kAxis[d], " = ", block[d],
                                                     " exceeds ", kMaxBlockDim[d]));
    }
    if (f.grid[d] > kMaxGridDim[d]) {
      return absl::InvalidArgumentError(
          absl::StrCat("grid dimension ", kAxis[d], " = ", f.grid[d], " exceeds ", kMaxGridDim[d]));
    }
  }
  if (f.shared_bytes > limits.max_shared_bytes_per_block) {
    return absl::InvalidArgumentError(absl::StrCat(f.shared_bytes,
                                                   " bytes of shared memory exceed the limit ",
                                                   limits.max_shared_bytes_per_block));
  }
  if (f.vthreads > kMaxVirtualThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.vthreads, " virtual threads exceed ", kMaxVirtualThreads));
  }
  if (f.est_registers > kMaxRegistersPerThread) {
    return absl::InvalidArgumentError(absl::StrCat(f.accumulators,
                                                   " accumulators per thread need more than ",
                                                   kMaxRegistersPerThread, " registers"));
  }
  if (f.est_registers * f.threads > limits.max_regs_per_block) {
    return absl::InvalidArgumentError(absl::StrCat("about ", f.est_registers * f.threads,
                                                   " registers per block exceed the limit ",
                                                   limits.max_regs_per_block));
  }
  return absl::OkStatus();
}

codegen::Kernel BuildDirectConvKernel(const DirectConvShape& sh, const DirectConvTiles& t,
                                      std::string comment, std::vector<Stmt> prologue,
                                      std::vector<Stmt> epilogue, const Epilogue& fused) {
  const DirectConvFacts facts = ComputeFacts(sh, t);
  const int64_t BF = t.f[0], VF = t.f[1], TF = t.f[2], FI = t.f[3];
  const int64_t BY = t.y[0], VY = t.y[1], TY = t.y[2], YI = t.y[3];
  const int64_t BX = t.x[0], VX = t.x[1], TX = t.x[2], XI = t.x[3];
  const int64_t FB = Product(t.f), YB = Product(t.y), XB = Product(t.x);
  const int64_t RCO = t.rc[0], RCI = t.rc[1], RYO = t.ry[0], RYI = t.ry[1], RXO = t.rx[0],
                RXI = t.rx[1];
  const int64_t IH = (YB - 1) * sh.stride_h + (RYI - 1) * sh.dil_h + 1;
  const int64_t IW = (XB - 1) * sh.stride_w + (RXI - 1) * sh.dil_w + 1;
  const int64_t T = facts.threads;

  // Positions of this thread's register-tile element within the block tile.
  const std::string lf = absl::StrCat("((${vf} * ", TF, " + ${tz}) * ", FI, " + ${fi})");
  const std::string ly = absl::StrCat("((${vy} * ", TY, " + ${ty}) * ", YI, " + ${yi})");
  const std::string lx = absl::StrCat("((${vx} * ", TX, " + ${tx}) * ", XI, " + ${xi})");
  const std::string acc = absl::StrCat("acc[((((${vf} * ", VY, " + ${vy}) * ", VX, " + ${vx}) * ",
                                       FI, " + ${fi}) * ", YI, " + ${yi}) * ", XI, " + ${xi}]");

  // The unroll policy of TVM's auto_unroll_max_step: a loop is unrolled when the iterations of
  // the nest below it (itself included) are at most max_step; unroll_explicit chooses between
  // the printer's copies and `#pragma unroll`. Register-tile loops are always at least hinted,
  // so the accumulators stay in registers; virtual threads are always copied.
  auto reduce_kind = [&](int64_t steps) {
    if (steps > t.auto_unroll_max_step) return LoopKind::kSerial;
    return t.unroll_explicit ? LoopKind::kUnrolled : LoopKind::kUnrollHint;
  };
  auto tile_kind = [&](int64_t steps) {
    return steps <= t.auto_unroll_max_step && t.unroll_explicit ? LoopKind::kUnrolled
                                                                : LoopKind::kUnrollHint;
  };
  // Nest vf, vy, vx (virtual threads), fi, yi, xi around `body`.
  auto register_nest = [&](std::vector<Stmt> body) {
    Stmt s = Loop("xi", XI, tile_kind(XI), std::move(body));
    s = Loop("yi", YI, tile_kind(YI * XI), {std::move(s)});
    s = Loop("fi", FI, tile_kind(FI * YI * XI), {std::move(s)});
    s = Loop("vx", VX, LoopKind::kVThread, {std::move(s)});
    s = Loop("vy", VY, LoopKind::kVThread, {std::move(s)});
    return Loop("vf", VF, LoopKind::kVThread, {std::move(s)});
  };

  // Cooperative fetch of `elems` floats by the block's T threads; `body` reads `e`.
  auto fetch = [&](const std::string& var, int64_t elems, std::vector<Stmt> body) {
    std::vector<Stmt> inner = {Raw(absl::StrCat("const int e = ${", var, "} * ", T, " + tid;"))};
    if (elems % T == 0) {
      inner.insert(inner.end(), body.begin(), body.end());
    } else {
      inner.push_back(If(absl::StrCat("e < ", elems), std::move(body)));
    }
    return Loop(var, (elems + T - 1) / T, LoopKind::kSerial, std::move(inner));
  };

  const std::string in_bounds =
      absl::StrCat("iy >= 0 && iy < ", sh.h, " && ix >= 0 && ix < ", sh.w);
  std::vector<Stmt> data_body = {
      Raw(absl::StrCat("const int cc = e / ", IH * IW, ";")),
      Raw(absl::StrCat("const int iy = iy0 + (e % ", IH * IW, ") / ", IW, ";")),
      Raw(absl::StrCat("const int ix = ix0 + e % ", IW, ";")),
      Raw(sh.depthwise ? "const int ch = f0 + cc;"
                       : absl::StrCat("const int ch = ${rco} * ", RCI, " + cc;")),
      Raw(absl::StrCat("data_sh[e] = (", in_bounds, ") ? data[((n * ", sh.c, " + ch) * ", sh.h,
                       " + iy) * ", sh.w, " + ix] : 0.0f;"))};

  std::vector<Stmt> weight_body;
  if (sh.weight_ck) {  // dense without trans_b: weight [K(reduction), N(f)], f fastest
    weight_body = {Raw(absl::StrCat("const int wf = e % ", FB, ";")),
                   Raw(absl::StrCat("const int wc = e / ", FB, ";")),
                   Raw(absl::StrCat("weight_sh[wf * ", RCI, " + wc] = weight[(${rco} * ", RCI,
                                    " + wc) * ", sh.k, " + f0 + wf];"))};
  } else {
    const int64_t per_f = RCI * RYI * RXI;
    weight_body = {
        Raw(absl::StrCat("const int wf = e / ", per_f, ";")),
        Raw(absl::StrCat("const int wc = (e % ", per_f, ") / ", RYI * RXI, ";")),
        Raw(absl::StrCat("const int wy = (e % ", RYI * RXI, ") / ", RXI, ";")),
        Raw(absl::StrCat("const int wx = e % ", RXI, ";")),
        Raw(absl::StrCat("weight_sh[e] = weight[(((f0 + wf) * ", sh.ReduceChannels(),
                         (sh.depthwise ? " + wc" : absl::StrCat(" + ${rco} * ", RCI, " + wc")),
                         ") * ", sh.r, " + ${ryo} * ", RYI, " + wy) * ", sh.s, " + ${rxo} * ", RXI,
                         " + wx];"))};
  }

  const std::string data_ch = sh.depthwise ? lf : "${rci}";
  const std::string compute =
      absl::StrCat(acc, " += data_sh[(", data_ch, " * ", IH, " + ", ly, " * ", sh.stride_h,
                   " + ${ryi} * ", sh.dil_h, ") * ", IW, " + ", lx, " * ", sh.stride_w,
                   " + ${rxi} * ", sh.dil_w, "] * weight_sh[((", lf, " * ", RCI, " + ${rci}) * ",
                   RYI, " + ${ryi}) * ", RXI, " + ${rxi}];");
  const int64_t reg_steps = facts.accumulators;
  Stmt compute_nest = register_nest({Raw(compute)});
  compute_nest = Loop("rxi", RXI, reduce_kind(RXI * reg_steps), {std::move(compute_nest)});
  compute_nest = Loop("ryi", RYI, reduce_kind(RYI * RXI * reg_steps), {std::move(compute_nest)});
  compute_nest =
      Loop("rci", RCI, reduce_kind(RCI * RYI * RXI * reg_steps), {std::move(compute_nest)});

  std::vector<Stmt> step = {Raw(absl::StrCat("const int iy0 = oy0 * ", sh.stride_h, " - ",
                                             sh.pad_top, " + ${ryo} * ", RYI * sh.dil_h, ";")),
                            Raw(absl::StrCat("const int ix0 = ox0 * ", sh.stride_w, " - ",
                                             sh.pad_left, " + ${rxo} * ", RXI * sh.dil_w, ";")),
                            Barrier(),
                            fetch("i", facts.data_tile, std::move(data_body)),
                            fetch("j", facts.weight_tile, std::move(weight_body)),
                            Barrier(),
                            std::move(compute_nest)};
  Stmt reduction = Loop("rxo", RXO, LoopKind::kSerial, std::move(step));
  reduction = Loop("ryo", RYO, LoopKind::kSerial, {std::move(reduction)});
  reduction = Loop("rco", RCO, LoopKind::kSerial, {std::move(reduction)});

  // The output store, through the fused epilogue when there is one.
  const std::string out_at = absl::StrCat("((n * ", sh.k, " + f0 + ", lf, ") * ", sh.oh,
                                          " + oy0 + ", ly, ") * ", sh.ow, " + ox0 + ", lx);
  std::vector<Stmt> store;
  if (fused.empty()) {
    store.push_back(Raw(absl::StrCat("output[", out_at, "] = ", acc, ";")));
  } else {
    std::vector<Stmt> apply = {Raw(absl::StrCat("float v = ", acc, ";"))};
    for (Stmt& s : CudaEpilogueStmts(fused, absl::StrCat("bias[f0 + ", lf, "]"),
                                     absl::StrCat("residual[", out_at, "]"))) {
      apply.push_back(std::move(s));
    }
    apply.push_back(Raw(absl::StrCat("output[", out_at, "] = v;")));
    store.push_back(codegen::Block(std::move(apply)));
  }

  std::vector<Stmt> thread_body = std::move(prologue);
  for (Stmt s : std::vector<Stmt>{
           Raw(absl::StrCat("const int n = ${bz} / ", BF, ";")),
           Raw(absl::StrCat("const int f0 = (${bz} % ", BF, ") * ", FB, ";")),
           Raw(absl::StrCat("const int oy0 = ${by} * ", YB, ";")),
           Raw(absl::StrCat("const int ox0 = ${bx} * ", XB, ";")),
           Raw(absl::StrCat("const int tid = (${tz} * ", TY, " + ${ty}) * ", TX, " + ${tx};")),
           Raw(absl::StrCat("float acc[", facts.accumulators, "];")),
           Loop("a", facts.accumulators, LoopKind::kUnrollHint, {Raw("acc[${a}] = 0.0f;")}),
           std::move(reduction), register_nest(std::move(store))}) {
    thread_body.push_back(std::move(s));
  }
  if (!epilogue.empty()) {
    thread_body.push_back(
        If("${bz} == 0 && ${by} == 0 && ${bx} == 0 && tid == 0", std::move(epilogue)));
  }

  codegen::Kernel k;
  k.vector_lanes = 1;
  k.comment = std::move(comment);
  k.params = FusedParams(fused);
  k.shared = {{"data_sh", facts.data_tile}, {"weight_sh", facts.weight_tile}};
  Stmt threads = Loop("tx", TX, LoopKind::kThreadX, std::move(thread_body));
  threads = Loop("ty", TY, LoopKind::kThreadY, {std::move(threads)});
  threads = Loop("tz", TF, LoopKind::kThreadZ, {std::move(threads)});
  Stmt blocks = Loop("bx", BX, LoopKind::kBlockX, {std::move(threads)});
  blocks = Loop("by", BY, LoopKind::kBlockY, {std::move(blocks)});
  k.body = {Loop("bz", sh.n * BF, LoopKind::kBlockZ, {std::move(blocks)})};
  return k;
}

std::vector<std::string> DirectConvFeatureNames() {
  std::vector<std::string> names;
  for (const char* axis : {"f", "y", "x"}) {
    for (const char* part : {"block", "vthread", "thread", "inner"}) {
      names.push_back(absl::StrCat("log2_", axis, "_", part));
    }
  }
  for (const char* axis : {"rc", "ry", "rx"}) {
    for (const char* part : {"outer", "inner"}) {
      names.push_back(absl::StrCat("log2_", axis, "_", part));
    }
  }
  for (const char* n : {"auto_unroll_max_step", "unroll_explicit", "log2_threads", "vthreads",
                        "accumulators", "log2_blocks", "shared_bytes", "log2_reduction_steps",
                        "flops_per_shared_load", "threads_mod_warp"}) {
    names.push_back(n);
  }
  return names;
}

std::vector<float> DirectConvFeatures(const DirectConvShape& shape, const DirectConvTiles& t) {
  std::vector<float> v;
  for (const auto* a : {&t.f, &t.y, &t.x}) {
    for (int64_t x : *a) v.push_back(Log2(x));
  }
  for (const auto* a : {&t.rc, &t.ry, &t.rx}) {
    for (int64_t x : *a) v.push_back(Log2(x));
  }
  const DirectConvFacts f = ComputeFacts(shape, t);
  const double macs_per_step = static_cast<double>(f.accumulators * f.threads) *
                               static_cast<double>(t.rc[1] * t.ry[1] * t.rx[1]);
  v.push_back(static_cast<float>(t.auto_unroll_max_step));
  v.push_back(t.unroll_explicit ? 1.0f : 0.0f);
  v.push_back(Log2(f.threads));
  v.push_back(static_cast<float>(f.vthreads));
  v.push_back(static_cast<float>(f.accumulators));
  v.push_back(Log2(f.blocks));
  v.push_back(static_cast<float>(f.shared_bytes));
  v.push_back(Log2(f.reduction_steps));
  v.push_back(static_cast<float>(macs_per_step / static_cast<double>(f.data_tile + f.weight_tile)));
  v.push_back(static_cast<float>(f.threads % 32));
  return v;
}

// --- CudaDirectTemplate ---

void CudaDirectTemplate::DefineSpace(bool split_f, bool split_y, bool split_x, bool split_rc,
                                     bool split_ry, bool split_rx) {
  if (split_f) space_.AddKnob(f_knob_, SplitKnobValues(shape_.k, 4));
  if (split_y) space_.AddKnob(y_knob_, SplitKnobValues(shape_.oh, 4));
  if (split_x) space_.AddKnob(x_knob_, SplitKnobValues(shape_.ow, 4));
  if (split_rc) space_.AddKnob(rc_knob_, SplitKnobValues(shape_.ReduceChannels(), 2));
  if (split_ry) space_.AddKnob(ry_knob_, SplitKnobValues(shape_.r, 2));
  if (split_rx) space_.AddKnob(rx_knob_, SplitKnobValues(shape_.s, 2));
  space_.AddKnob("auto_unroll_max_step", {0, 512, 1500});
  space_.AddKnob("unroll_explicit", {0, 1});
  // Tuners propose only configs the device can launch (most of a split space is not).
  space_.AddConstraint(
      absl::StrCat("threads, shared memory, registers and grid within the ", target_.cuda_arch,
                   " limits"),
      [this](std::span<const int64_t> values) {
        return CheckDirectConvLimits(shape_, TilesFromValues(values), target_.cuda_limits).ok();
      });
  MaybeAddFaultKnob();
}

DirectConvTiles CudaDirectTemplate::Tiles(const Config& config) const {
  return TilesFromValues(space_.Values(config));
}

DirectConvTiles CudaDirectTemplate::TilesFromValues(std::span<const int64_t> values) const {
  DirectConvTiles t;
  auto value = [&](const std::string& knob) {
    return values[static_cast<size_t>(KnobPos(space_, knob))];
  };
  auto split4 = [&](const std::string& knob, int64_t extent, std::array<int64_t, 4>& out) {
    out = {extent, 1, 1, 1};
    if (KnobPos(space_, knob) < 0) return;
    const std::vector<int64_t> f = DecodeSplit(value(knob), 4);
    std::copy(f.begin(), f.end(), out.begin());
  };
  auto split2 = [&](const std::string& knob, int64_t extent, std::array<int64_t, 2>& out) {
    out = {extent, 1};
    if (KnobPos(space_, knob) < 0) return;
    const std::vector<int64_t> f = DecodeSplit(value(knob), 2);
    out = {f[0], f[1]};
  };
  split4(f_knob_, shape_.k, t.f);
  split4(y_knob_, shape_.oh, t.y);
  split4(x_knob_, shape_.ow, t.x);
  split2(rc_knob_, shape_.ReduceChannels(), t.rc);
  split2(ry_knob_, shape_.r, t.ry);
  split2(rx_knob_, shape_.s, t.rx);
  t.auto_unroll_max_step = value("auto_unroll_max_step");
  t.unroll_explicit = value("unroll_explicit") != 0;
  return t;
}

absl::Status CudaDirectTemplate::CheckValid(const Config& config) const {
  if (!space_.Contains(config)) return CheckInSpace(config);  // out of range: its message
  // The device limits first: their message names the limit (the space constraint only says that
  // one is exceeded).
  absl::Status st = CheckDirectConvLimits(shape_, Tiles(config), target_.cuda_limits);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name(), ": config ", space_.ToJson(config),
                                                   " is invalid for ", target_.Key(), ": ",
                                                   st.message()));
  }
  return CheckInSpace(config);
}

absl::StatusOr<KernelSource> CudaDirectTemplate::EmitFused(const Config& config,
                                                           const Epilogue& epilogue) const {
  LOOM_RETURN_IF_ERROR(CheckValid(config));
  if (epilogue.has_program()) {
    return absl::UnimplementedError(absl::StrCat(
        name(), " fuses bias, residual and one activation; not an elementwise program"));
  }
  const DirectConvTiles t = Tiles(config);
  // The fault statements are written for one thread; a GPU crash/hang is any thread's.
  codegen::Kernel k = BuildDirectConvKernel(
      shape_, t,
      absl::StrCat(name(), " ", graph::WorkloadKey(workload_), " ", space_.ToJson(config)),
      FaultPrologue(config), FaultEpilogue(config, "output"), epilogue);
  LOOM_ASSIGN_OR_RETURN(codegen::CudaKernelSource src,
                        codegen::PrintCuda(k, {.host_emulation = options_.cuda_host_emulation}));
  KernelSource out;
  out.code = std::move(src.code);
  out.cuda_launch.entry = src.entry;
  out.cuda_launch.grid = src.grid;
  out.cuda_launch.block = src.block;
  out.cuda_launch.dynamic_shared_bytes = 0;  // all shared memory is static
  if (options_.cuda_host_emulation) out.compile_flags = "-Wno-unknown-pragmas";
  return out;
}

std::vector<BufferSpec> CudaDirectTemplate::FusedBuffers(const Config& config,
                                                         const Epilogue& epilogue) const {
  return FusedBufferList(Buffers(config), epilogue, shape_.k);
}

std::vector<BufferSpec> CudaDirectTemplate::Buffers(const Config& config) const {
  return {{"data", DataShape(), false},
          {"weight", WeightShape(), false},
          {"output", OutputShape(), true}};
}

std::vector<graph::Tensor> CudaDirectTemplate::PackInputs(
    const Config& config, const std::vector<graph::Tensor>& natural) const {
  return {natural[0], natural[1]};  // natural layouts: nothing to pack
}

graph::Tensor CudaDirectTemplate::UnpackOutput(const Config& config,
                                               const graph::Tensor& output) const {
  return output;
}

std::vector<float> CudaDirectTemplate::Features(const Config& config) const {
  return DirectConvFeatures(shape_, Tiles(config));
}

std::vector<std::string> CudaDirectTemplate::FeatureNames() const {
  return DirectConvFeatureNames();
}

Config CudaDirectTemplate::PickDefault(const std::array<int64_t, 3>& threads,
                                       const std::array<int64_t, 3>& inner,
                                       int64_t rc_inner) const {
  // Per axis: no virtual threads, the largest thread factor up to the wish, then the largest
  // inner factor up to the wish, the rest to blocks. Reduction inner tiles: whole kernel rows and
  // columns, `rc_inner` channels. Unroll 512, explicit. Halve wishes until the config is valid.
  std::vector<int64_t> choices(space_.knobs().size(), 0);
  auto set = [&](const std::string& knob, int64_t value) {
    const int i = KnobPos(space_, knob);
    if (i < 0) return;
    const std::vector<int64_t>& values = space_.knobs()[static_cast<size_t>(i)].values;
    const auto it = std::find(values.begin(), values.end(), value);
    LOOM_CHECK(it != values.end());
    choices[static_cast<size_t>(i)] = it - values.begin();
  };
  auto split4 = [](int64_t extent, int64_t t_wish, int64_t i_wish) {
    const int64_t t = LargestDivisorAtMost(extent, std::max<int64_t>(t_wish, 1));
    const int64_t i = LargestDivisorAtMost(extent / t, std::max<int64_t>(i_wish, 1));
    const int64_t r = SplitRadix(4);
    return ((extent / t / i * r + 1) * r + t) * r + i;
  };
  auto split2 = [](int64_t extent, int64_t i_wish) {
    const int64_t i = LargestDivisorAtMost(extent, std::max<int64_t>(i_wish, 1));
    return extent / i * SplitRadix(2) + i;
  };
  set("auto_unroll_max_step", 512);
  set("unroll_explicit", 1);
  Config c;
  for (int attempt = 0; attempt < 12; ++attempt) {
    const int64_t div = int64_t{1} << (attempt / 2);
    // Small images leave threads to spare: give them to the channels, up to ~128 per block.
    const int64_t ty =
        KnobPos(space_, y_knob_) < 0 ? 1 : LargestDivisorAtMost(shape_.oh, threads[1]);
    const int64_t tx =
        KnobPos(space_, x_knob_) < 0 ? 1 : LargestDivisorAtMost(shape_.ow, threads[2]);
    const int64_t tf_wish = std::max(threads[0], 128 / (ty * tx));
    set(f_knob_, split4(shape_.k, tf_wish / div, inner[0]));
    set(y_knob_, split4(shape_.oh, threads[1], inner[1] / div));
    set(x_knob_, split4(shape_.ow, threads[2], inner[2]));
    set(rc_knob_, split2(shape_.ReduceChannels(), rc_inner / div));
    set(ry_knob_, split2(shape_.r, attempt % 2 == 0 ? shape_.r : 1));
    set(rx_knob_, split2(shape_.s, shape_.s));
    c = space_.FromChoices(choices);
    if (CheckValid(c).ok()) return c;
  }
  return c;
}

}  // namespace loom::ops::internal
