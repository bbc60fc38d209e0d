#include "loom/ops/template_common.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/kernels/conv.h"

namespace loom::ops::internal {

using codegen::Raw;
using codegen::Stmt;

absl::Status TemplateBase::CheckInSpace(const Config& c) const {
  absl::Status st = space_.Validate(c);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(name(), ": ", st.message()));
  return absl::OkStatus();
}

void TemplateBase::AddRegisterConstraint(const std::string& formula,
                                         const std::vector<std::string>& knobs,
                                         std::function<int64_t(std::span<const int64_t>)> regs) {
  std::vector<int> pos;
  for (const std::string& k : knobs) {
    pos.push_back(space_.KnobIndex(k));
    LOOM_CHECK(pos.back() >= 0);
  }
  const int64_t limit = NumVectorRegisters();
  space_.AddConstraint(
      absl::StrCat(formula, " <= ", limit, " vector registers"),
      [pos = std::move(pos), regs = std::move(regs), limit](std::span<const int64_t> values) {
        int64_t picked[8] = {};
        LOOM_CHECK(pos.size() <= 8);
        for (size_t i = 0; i < pos.size(); ++i) picked[i] = values[static_cast<size_t>(pos[i])];
        return regs(std::span<const int64_t>(picked, pos.size())) <= limit;
      });
}

void TemplateBase::MaybeAddFaultKnob() {
  if (options_.test_faults) space_.AddKnob("fault", {0, 1, 2, 3});
}

int64_t TemplateBase::Fault(const Config& c) const {
  return options_.test_faults ? Knob(c, "fault") : 0;
}

std::vector<Stmt> TemplateBase::FaultPrologue(const Config& c) const {
  switch (Fault(c)) {
    case 1:
      return {Raw("{ volatile float* loom_null = 0; *loom_null = 1.0f; }  // test fault: crash")};
    case 2:
      return {Raw("{ volatile int loom_spin = 1; while (loom_spin) {} }  // test fault: hang")};
    default:
      return {};
  }
}

std::vector<Stmt> TemplateBase::FaultEpilogue(const Config& c, const std::string& output) const {
  if (Fault(c) != 3) return {};
  return {Raw(absl::StrCat(output, "[0] += 1.0f;  // test fault: wrong answer"))};
}

Config TemplateBase::ClosestConfig(
    const std::vector<std::pair<std::string, int64_t>>& wanted) const {
  std::vector<int64_t> choices;
  for (const ops::Knob& k : space_.knobs()) {
    int64_t pick = 0;
    for (const auto& [name, value] : wanted) {
      if (name != k.name) continue;
      int64_t best = -1;
      for (size_t i = 0; i < k.values.size(); ++i) {
        if (k.values[i] <= value &&
            (best < 0 || k.values[i] > k.values[static_cast<size_t>(best)])) {
          best = static_cast<int64_t>(i);
        }
      }
      pick = best < 0 ? 0 : best;
    }
    choices.push_back(pick);
  }
  return space_.FromChoices(choices);
}

int64_t TemplateBase::NumVectorRegisters() const { return target_.isa == Isa::kAvx512 ? 32 : 16; }

std::vector<int64_t> TemplateBase::VectorWidthChoices() const {
  if (target_.isa == Isa::kAvx512) return {16, 8};
  return {target_.VectorLanes()};
}

codegen::Kernel TemplateBase::StartKernel(const Config& config, const Epilogue& ep,
                                          int64_t vec) const {
  codegen::Kernel kernel;
  kernel.vector_lanes = static_cast<int32_t>(vec);
  kernel.params = FusedParams(ep);
  kernel.globals = EpilogueGlobals(ep, vec);
  kernel.comment =
      absl::StrCat(name(), " ", graph::WorkloadKey(workload_), " ", space_.ToJson(config));
  kernel.body = FaultPrologue(config);
  return kernel;
}

absl::StatusOr<KernelSource> TemplateBase::FinishKernel(const Config& config,
                                                        codegen::Kernel kernel) const {
  for (codegen::Stmt& s : FaultEpilogue(config, "output")) kernel.body.push_back(std::move(s));
  LOOM_ASSIGN_OR_RETURN(std::string code, codegen::PrintCpp(kernel));
  KernelSource source;
  source.code = std::move(code);
  // Vector-extension `acc += a * b` must become one FMA whatever the builder's -std mode.
  source.compile_flags = absl::StrCat(target_.CompilerFlags(), " -ffp-contract=fast");
  return source;
}

absl::StatusOr<KernelSource> TemplateBase::EmitBlockedKernel(
    const Config& config, const Epilogue& ep, int64_t vec, const std::vector<OuterLoop>& outer,
    size_t parallel, std::vector<codegen::Stmt> block) const {
  using codegen::Loop;
  using codegen::LoopKind;
  LOOM_CHECK(parallel >= 1 && parallel <= outer.size());
  std::vector<codegen::Stmt> body = {codegen::Block(std::move(block))};
  for (size_t i = outer.size(); i-- > parallel;) {
    body = {Loop(outer[i].var, outer[i].extent, LoopKind::kSerial, std::move(body))};
  }
  int64_t total = 1;
  for (size_t i = 0; i < parallel; ++i) total *= outer[i].extent;
  std::vector<codegen::Stmt> par_body;
  int64_t inner = total;
  for (size_t i = 0; i < parallel; ++i) {
    inner /= outer[i].extent;
    par_body.push_back(codegen::Raw(absl::StrCat("const int64_t ", outer[i].var, " = (p / ", inner,
                                                 ") % ", outer[i].extent, ";")));
  }
  for (codegen::Stmt& s : body) par_body.push_back(std::move(s));
  codegen::Kernel kernel = StartKernel(config, ep, vec);
  kernel.body.push_back(Loop("p", total, LoopKind::kParallel, std::move(par_body)));
  return FinishKernel(config, std::move(kernel));
}

std::vector<codegen::KernelParam> FusedParams(const Epilogue& e) {
  std::vector<codegen::KernelParam> p = {{"data", false}, {"weight", false}};
  if (e.bias) p.push_back({"bias", false});
  if (e.residual) p.push_back({"residual", false});
  p.push_back({"output", true});
  return p;
}

namespace {
std::string FloatLiteral(float v) {
  if (!std::isfinite(v)) v = v > 0 ? 3.0e38f : -3.0e38f;
  return absl::StrFormat("%.9ef", v);
}
}  // namespace

std::vector<std::string> EpilogueGlobals(const Epilogue& e, int64_t lanes) {
  using A = Epilogue::Activation;
  std::vector<std::string> g;
  if (e.activation == A::kNone) return g;
  g.push_back(
      "static inline __attribute__((always_inline)) vf loom_max(vf a, vf b) { return a > b ? a : "
      "b; }");
  g.push_back(
      "static inline __attribute__((always_inline)) vf loom_min(vf a, vf b) { return a < b ? a : "
      "b; }");
  if (e.activation == A::kSigmoid) {
    g.push_back(
        absl::StrCat("static inline vf loom_sigmoid(vf x) { float t[", lanes,
                     "]; __builtin_memcpy(t, &x, sizeof(x)); for (int i = 0; i < ", lanes,
                     "; ++i) t[i] = 1.0f / (1.0f + __builtin_expf(-t[i])); __builtin_memcpy(&x, t, "
                     "sizeof(x)); return x; }"));
  }
  return g;
}

std::vector<codegen::Stmt> EpilogueStmts(const Epilogue& e, const std::string& acc,
                                         const std::string& bias_addr,
                                         const std::string& residual_addr) {
  using A = Epilogue::Activation;
  std::vector<codegen::Stmt> s;
  if (e.bias) s.push_back(codegen::VecAdd(acc, absl::StrCat("loom_load(", bias_addr, ")")));
  if (e.residual) {
    s.push_back(codegen::VecAdd(acc, absl::StrCat("loom_load(", residual_addr, ")")));
  }
  switch (e.activation) {
    case A::kNone:
      break;
    case A::kRelu:
      s.push_back(codegen::Raw(absl::StrCat(acc, " = loom_max(", acc, ", loom_bcast(0.0f));")));
      break;
    case A::kClip:
      s.push_back(codegen::Raw(absl::StrCat(acc, " = loom_min(loom_max(", acc, ", loom_bcast(",
                                            FloatLiteral(e.clip_min), ")), loom_bcast(",
                                            FloatLiteral(e.clip_max), "));")));
      break;
    case A::kHardSwish:
      s.push_back(codegen::Raw(absl::StrCat(
          acc, " = ", acc, " * loom_min(loom_max(", acc,
          " * loom_bcast(1.0f / 6.0f) + loom_bcast(0.5f), loom_bcast(0.0f)), loom_bcast(1.0f));")));
      break;
    case A::kSigmoid:
      s.push_back(codegen::Raw(absl::StrCat(acc, " = loom_sigmoid(", acc, ");")));
      break;
  }
  return s;
}

std::vector<BufferSpec> FusedBufferList(std::vector<BufferSpec> plain, const Epilogue& e,
                                        int64_t bias_elems) {
  LOOM_CHECK(plain.size() == 3);
  std::vector<BufferSpec> out = {plain[0], plain[1]};
  if (e.bias) out.push_back({"bias", {bias_elems}, false});
  if (e.residual) out.push_back({"residual", plain[2].shape, false});
  out.push_back(plain[2]);
  return out;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t LargestDivisorAtMost(int64_t n, int64_t limit) {
  int64_t best = 1;
  for (int64_t d = 1; d <= std::min(n, limit); ++d) {
    if (n % d == 0) best = d;
  }
  return best;
}

Config WithParallelAxisFor(const ConfigSpace& space, const Config& config, int64_t n, int64_t first,
                           int64_t second, int32_t threads) {
  if (threads <= 1) return config;
  const int knob = space.KnobIndex("parallel_axis");
  if (knob < 0) return config;
  const auto at = static_cast<size_t>(knob);
  const std::vector<int64_t>& values = space.knobs()[at].values;
  auto busy = [&](size_t choice) {
    const int64_t extent = values[choice] == 0 ? n * first : n * first * second;
    return static_cast<double>(extent) / static_cast<double>(CeilDiv(extent, threads) * threads);
  };
  std::vector<int64_t> choices = space.Choices(config);
  auto best_choice = static_cast<size_t>(choices[at]);
  for (size_t v = 0; v < values.size(); ++v) {
    if (busy(v) > busy(best_choice)) best_choice = v;
  }
  choices[at] = static_cast<int64_t>(best_choice);
  return space.FromChoices(choices);
}

graph::Tensor UnblockNchwc(const graph::Tensor& blocked, int64_t n, int64_t channels, int64_t oh,
                           int64_t ow, int64_t bn) {
  const int64_t blocks = CeilDiv(channels, bn);
  graph::Tensor y(graph::DType::kFloat32, {n, channels, oh, ow});
  const float* src = blocked.data<float>();
  float* dst = y.data<float>();
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t h = 0; h < oh; ++h) {
        for (int64_t x = 0; x < ow; ++x) {
          dst[((b * channels + c) * oh + h) * ow + x] =
              src[(((b * blocks + c / bn) * oh + h) * ow + x) * bn + c % bn];
        }
      }
    }
  }
  return y;
}

graph::Tensor ConvReference(const graph::Workload& w, const std::vector<graph::Tensor>& natural) {
  kernels::Conv2dParams p;
  p.batch = w.n;
  p.in_channels = w.c;
  p.in_h = w.h;
  p.in_w = w.w;
  p.out_channels = w.k;
  p.groups = w.groups;
  p.kernel_h = w.r;
  p.kernel_w = w.s;
  p.stride_h = w.stride_h;
  p.stride_w = w.stride_w;
  p.dilation_h = w.dilation_h;
  p.dilation_w = w.dilation_w;
  p.pad_top = w.pad_top;
  p.pad_left = w.pad_left;
  p.pad_bottom = w.pad_bottom;
  p.pad_right = w.pad_right;
  graph::Tensor y(graph::DType::kFloat32, {w.n, w.k, w.OutH(), w.OutW()});
  kernels::Conv2dNchw(p, natural[0].data<float>(), natural[1].data<float>(), nullptr,
                      y.data<float>());
  return y;
}

}  // namespace loom::ops::internal
