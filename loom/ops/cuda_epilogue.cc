#include "loom/ops/cuda_epilogue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/template_common.h"

namespace loom::ops {

absl::Status CheckCudaEpilogue(const Epilogue& e) { return internal::CheckEpilogue(e); }

std::vector<codegen::Stmt> CudaEpilogueStmts(const Epilogue& e, const std::string& v,
                                             const CudaEpilogueSite& site) {
  if (e.empty()) return {};
  std::vector<std::string> inputs = {v};
  if (e.bias) inputs.push_back(absl::StrCat("bias[", site.channel, "]"));
  if (e.residual) inputs.push_back(absl::StrCat("residual[", site.element, "]"));
  for (size_t k = 0; k < e.operands.size(); ++k) {
    const std::string name = absl::StrCat("ep", k);
    switch (e.operands[k].kind) {
      case EpilogueOperand::Kind::kChannel:
        inputs.push_back(absl::StrCat(name, "[", site.channel, "]"));
        break;
      case EpilogueOperand::Kind::kElement:
        inputs.push_back(absl::StrCat(name, "[", site.element, "]"));
        break;
      case EpilogueOperand::Kind::kBatchChannel:
        inputs.push_back(
            absl::StrCat(name, "[(", site.batch, ") * ", site.channels, " + ", site.channel, "]"));
        break;
    }
  }
  absl::StatusOr<PrintedElementwise> printed =
      PrintElementwise(internal::EpilogueProgram(e), inputs, EwMode::kScalar, "ep_v");
  LOOM_CHECK(printed.ok());  // callers check the epilogue first
  std::vector<codegen::Stmt> body;
  for (std::string& line : printed->lines) body.push_back(codegen::Raw(std::move(line)));
  body.push_back(codegen::Raw(absl::StrCat(v, " = ", printed->outputs[0], ";")));
  return {codegen::Block(std::move(body))};
}

std::vector<std::string> CudaEpilogueGlobals(const Epilogue& e) {
  if (e.empty()) return {};
  return ElementwiseGlobals();
}

}  // namespace loom::ops
