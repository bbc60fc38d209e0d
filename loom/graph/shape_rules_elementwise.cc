// Shape rules: elementwise and broadcasting operators.
#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph::internal {
namespace {

absl::StatusOr<Types> InferUnaryFloat(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  return Same(c.node(), x);
}

absl::StatusOr<Types> InferActivation(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"alpha", AttrKind::kFloat}, {"beta", AttrKind::kFloat}}));
  return InferUnaryFloat(c);
}

absl::StatusOr<Types> InferClip(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.Has(i)) continue;
    LOOM_ASSIGN_OR_RETURN(TensorType b, c.In(i));
    if (b.dtype != x.dtype || NumElements(b.shape) != 1 || b.shape.size() > 1) {
      return c.Error(absl::StrCat(i == 1 ? "min" : "max", " must be a ", DTypeName(x.dtype),
                                  " scalar, got ", b.ToString()));
    }
  }
  return Same(c.node(), x);
}

absl::StatusOr<Types> InferBinary(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType a, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType b, c.In(1));
  if (a.dtype != b.dtype) {
    return c.Error(absl::StrCat("operand types differ: ", a.ToString(), " and ", b.ToString()));
  }
  if (a.dtype != DType::kFloat32 && !IsIntegerDType(a.dtype)) {
    return c.Error(absl::StrCat("type ", DTypeName(a.dtype), " is not supported"));
  }
  auto shape = BroadcastShapes(a.shape, b.shape);
  if (!shape.ok()) return c.Error(shape.status().message());
  return Types{{a.dtype, *shape}};
}

}  // namespace

void RegisterElementwiseShapeRules(RuleTable* table) {
  table->insert({
      {"Add", InferBinary},
      {"Clip", InferClip},
      {"Div", InferBinary},
      {"HardSigmoid", InferActivation},
      {"HardSwish", InferUnaryFloat},
      {"LeakyRelu", InferActivation},
      {"Mul", InferBinary},
      {"Relu", InferUnaryFloat},
      {"Sigmoid", InferUnaryFloat},
      {"Sub", InferBinary},
      {"Tanh", InferUnaryFloat},
  });
}

}  // namespace loom::graph::internal
