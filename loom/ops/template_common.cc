#include "loom/ops/template_common.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace loom::ops::internal {

using codegen::Raw;
using codegen::Stmt;

absl::Status TemplateBase::CheckInSpace(const Config& c) const {
  if (!space_.Contains(c)) {
    return absl::InvalidArgumentError(absl::StrCat("config index ", c.index,
                                                   " is outside the space of ", name(), " (size ",
                                                   space_.size(), ")"));
  }
  return absl::OkStatus();
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
        if (k.values[i] <= value && (best < 0 || k.values[i] > k.values[static_cast<size_t>(best)]))
          best = static_cast<int64_t>(i);
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

KernelSource TemplateBase::MakeSource(std::string code) const {
  KernelSource s;
  s.code = std::move(code);
  // Vector-extension `acc += a * b` must become one FMA whatever the builder's -std mode.
  s.compile_flags = absl::StrCat(target_.CompilerFlags(), " -ffp-contract=fast");
  return s;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t LargestDivisorAtMost(int64_t n, int64_t limit) {
  int64_t best = 1;
  for (int64_t d = 1; d <= std::min(n, limit); ++d) {
    if (n % d == 0) best = d;
  }
  return best;
}

}  // namespace loom::ops::internal
