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
  for (size_t k = 0; k < e.operands.size(); ++k) p.push_back({absl::StrCat("ep", k), false});
  p.push_back({"output", true});
  return p;
}

absl::Status CheckEpilogue(const Epilogue& e) {
  if (!e.has_program()) {
    if (!e.operands.empty())
      return absl::InvalidArgumentError("epilogue operands without a program");
    return absl::OkStatus();
  }
  const ElementwiseProgram& p = e.program;
  if (p.inputs.size() != e.operands.size() + 1 || p.outputs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("an epilogue program takes the accumulator and its ", e.operands.size(),
                     " operands and has one output; this one has ", p.inputs.size(), " inputs and ",
                     p.outputs.size(), " outputs"));
  }
  if (!IsVectorizable(p)) {
    return absl::InvalidArgumentError(
        absl::StrCat("an epilogue program must be float32 throughout:\n", p.ToString()));
  }
  return absl::OkStatus();
}

ElementwiseProgram EpilogueProgram(const Epilogue& e) {
  using A = Epilogue::Activation;
  using graph::DType;
  ElementwiseProgram p;
  int32_t x = p.AddInput(DType::kFloat32);
  const int32_t bias = e.bias ? p.AddInput(DType::kFloat32) : -1;
  const int32_t residual = e.residual ? p.AddInput(DType::kFloat32) : -1;
  std::vector<int32_t> operands;
  for (size_t k = 0; k < e.operands.size(); ++k) operands.push_back(p.AddInput(DType::kFloat32));
  auto emit = [&](EwOp op, int32_t a, int32_t b = -1, double p0 = 0, double p1 = 0) {
    EwInstr i;
    i.op = op;
    i.a = a;
    i.b = b;
    i.p0 = p0;
    i.p1 = p1;
    return p.Add(i);
  };
  if (bias >= 0) x = emit(EwOp::kAdd, x, bias);
  if (residual >= 0) x = emit(EwOp::kAdd, x, residual);
  switch (e.activation) {
    case A::kNone:
      break;
    case A::kRelu:
      x = emit(EwOp::kRelu, x);
      break;
    case A::kClip:
      x = emit(EwOp::kClip, x, -1, e.clip_min, e.clip_max);
      break;
    case A::kHardSwish:
      x = emit(EwOp::kHardSwish, x);
      break;
    case A::kSigmoid:
      x = emit(EwOp::kSigmoid, x);
      break;
  }
  if (e.has_program()) {
    // Renumber e.program's values into p: its input 0 is x, input k the k-th operand.
    const ElementwiseProgram& q = e.program;
    std::vector<int32_t> map(static_cast<size_t>(q.num_values()), -1);
    map[0] = x;
    for (size_t k = 1; k < q.inputs.size() && k - 1 < operands.size(); ++k) {
      map[k] = operands[k - 1];
    }
    for (size_t k = 0; k < q.instrs.size(); ++k) {
      EwInstr i = q.instrs[k];
      for (int32_t* a : {&i.a, &i.b, &i.c}) {
        if (*a >= 0) *a = map[static_cast<size_t>(*a)];
      }
      map[q.inputs.size() + k] = p.Add(i);
    }
    x = map[static_cast<size_t>(q.outputs[0])];
  }
  p.AddOutput(x, DType::kFloat32);
  return p;
}

namespace {

std::vector<codegen::Stmt> EpilogueStmtsAt(const Epilogue& e, const std::string& acc,
                                           const std::vector<std::string>& addrs) {
  if (e.empty()) return {};
  const ElementwiseProgram p = EpilogueProgram(e);
  std::vector<std::string> inputs = {acc};
  for (const std::string& a : addrs) inputs.push_back(absl::StrCat("loom_load(", a, ")"));
  absl::StatusOr<PrintedElementwise> printed = PrintElementwise(p, inputs, EwMode::kVector, "ep_v");
  // Templates call CheckEpilogue first; the shorthand alone is always vectorizable.
  LOOM_CHECK(printed.ok());
  std::vector<codegen::Stmt> body;
  for (std::string& line : printed->lines) body.push_back(codegen::Raw(std::move(line)));
  body.push_back(codegen::Raw(absl::StrCat(acc, " = ", printed->outputs[0], ";")));
  return {codegen::Block(std::move(body))};
}

}  // namespace

std::vector<std::string> EpilogueGlobals(const Epilogue& e, int64_t lanes) {
  (void)lanes;
  if (e.empty()) return {};
  return ElementwiseGlobals();
}

std::vector<codegen::Stmt> EpilogueStmts(const Epilogue& e, const std::string& acc,
                                         const EpilogueSite& site) {
  std::vector<std::string> addrs;
  if (e.bias) addrs.push_back(absl::StrCat("bias + ", site.channel));
  if (e.residual) addrs.push_back(absl::StrCat("residual + ", site.element));
  for (size_t k = 0; k < e.operands.size(); ++k) {
    const std::string name = absl::StrCat("ep", k);
    switch (e.operands[k].kind) {
      case EpilogueOperand::Kind::kChannel:
        addrs.push_back(absl::StrCat(name, " + ", site.channel));
        break;
      case EpilogueOperand::Kind::kElement:
        addrs.push_back(absl::StrCat(name, " + ", site.element));
        break;
      case EpilogueOperand::Kind::kBatchChannel:
        addrs.push_back(
            absl::StrCat(name, " + (", site.batch, ") * ", site.channels, " + ", site.channel));
        break;
    }
  }
  return EpilogueStmtsAt(e, acc, addrs);
}

std::vector<codegen::Stmt> EpilogueStmts(const Epilogue& e, const std::string& acc,
                                         const std::string& bias_addr,
                                         const std::string& residual_addr) {
  LOOM_CHECK(e.operands.empty());
  std::vector<std::string> addrs;
  if (e.bias) addrs.push_back(bias_addr);
  if (e.residual) addrs.push_back(residual_addr);
  return EpilogueStmtsAt(e, acc, addrs);
}

std::vector<BufferSpec> FusedBufferList(std::vector<BufferSpec> plain, const Epilogue& e,
                                        int64_t channels, int64_t batch) {
  LOOM_CHECK(plain.size() == 3);
  std::vector<BufferSpec> out = {plain[0], plain[1]};
  if (e.bias) out.push_back({"bias", {channels}, false});
  if (e.residual) out.push_back({"residual", plain[2].shape, false});
  for (size_t k = 0; k < e.operands.size(); ++k) {
    const std::string name = absl::StrCat("ep", k);
    switch (e.operands[k].kind) {
      case EpilogueOperand::Kind::kChannel:
        out.push_back({name, {channels}, false});
        break;
      case EpilogueOperand::Kind::kElement:
        out.push_back({name, plain[2].shape, false});
        break;
      case EpilogueOperand::Kind::kBatchChannel:
        out.push_back({name, {batch, channels}, false});
        break;
    }
  }
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

std::vector<int64_t> RowBlockWidths(int64_t width, int64_t max_divisor) {
  std::vector<int64_t> out;
  for (int64_t d = 1; d <= std::min(width, max_divisor); ++d) {
    if (width % d == 0) out.push_back(d);
  }
  if (LargestDivisorAtMost(width, 14) >= std::min<int64_t>(width, 8)) return out;
  for (int64_t d = 4; d <= std::min<int64_t>(width - 1, 16); ++d) {
    if (width % d != 0) out.push_back(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t DefaultRowBlockWidth(int64_t width, int64_t limit, const std::vector<int64_t>& offered) {
  const int64_t exact = LargestDivisorAtMost(width, limit);
  const int64_t blocks = CeilDiv(width, std::max<int64_t>(1, std::min(width, limit)));
  const int64_t even = CeilDiv(width, blocks);
  if (blocks < width / exact && std::find(offered.begin(), offered.end(), even) != offered.end()) {
    return even;
  }
  return exact;
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
