// Shape rules: elementwise and broadcasting operators (unary math and activations, arithmetic,
// comparisons and logic, the variadic Max/Min/Mean/Sum, Where, Clip, PRelu, Pow, Mod). Every
// operand's element type is checked against the set its ONNX schema allows within Loom's.
#include <limits>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/dtype_set.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph::internal {
namespace {

// The attributes elementwise operators take, with their kinds.
absl::Status CheckElementwiseAttrs(const Ctx& c) {
  return c.CheckAttrs({{"alpha", AttrKind::kFloat},
                       {"beta", AttrKind::kFloat},
                       {"gamma", AttrKind::kFloat},
                       {"approximate", AttrKind::kString},
                       {"fmod", AttrKind::kInt},
                       {"detect_negative", AttrKind::kInt},
                       {"detect_positive", AttrKind::kInt},
                       {"min", AttrKind::kFloat},
                       {"max", AttrKind::kFloat}});
}

absl::Status CheckInputCount(const Ctx& c, size_t min, size_t max) {
  const size_t n = c.node().inputs.size();
  if (n < min || n > max) {
    return c.Error(min == max ? absl::StrCat("expects ", min, " inputs, got ", n)
                              : absl::StrCat("expects ", min, " to ", max, " inputs, got ", n));
  }
  return absl::OkStatus();
}

// An operator whose inputs share one element type from `types` and broadcast together; the
// output has that type, or bool for a predicate.
struct Spec {
  DTypeSet types;
  size_t min_inputs = 1;
  size_t max_inputs = 1;
  bool bool_output = false;
};

absl::StatusOr<Types> InferBroadcast(const Ctx& c, const Spec& spec) {
  LOOM_RETURN_IF_ERROR(CheckElementwiseAttrs(c));
  LOOM_RETURN_IF_ERROR(CheckInputCount(c, spec.min_inputs, spec.max_inputs));
  LOOM_ASSIGN_OR_RETURN(TensorType first, TypedIn(c, 0, spec.types));
  Shape shape = first.shape;
  for (size_t i = 1; i < c.node().inputs.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType t, c.In(i));
    if (t.dtype != first.dtype) {
      return c.Error(
          absl::StrCat("operand types differ: ", first.ToString(), " and ", t.ToString()));
    }
    auto s = BroadcastShapes(shape, t.shape);
    if (!s.ok()) return c.Error(s.status().message());
    shape = *s;
  }
  return Types{{spec.bool_output ? DType::kBool : first.dtype, shape}};
}

const std::map<std::string, Spec, std::less<>>& Specs() {
  static const auto* specs = [] {
    const DTypeSet kSignedNumeric = kFloatDTypes | kSignedIntDTypes;
    auto* m = new std::map<std::string, Spec, std::less<>>;
    for (const char* op :
         {"Acos", "Acosh",          "Asin",       "Asinh",       "Atan",      "Atanh",
          "Ceil", "Celu",           "Cos",        "Cosh",        "Elu",       "Erf",
          "Exp",  "Floor",          "Gelu",       "HardSigmoid", "HardSwish", "LeakyRelu",
          "Log",  "Mish",           "Reciprocal", "Round",       "Selu",      "Sigmoid",
          "Sin",  "Sinh",           "Softplus",   "Softsign",    "Sqrt",      "Tan",
          "Tanh", "ThresholdedRelu"}) {
      (*m)[op] = {.types = kFloatDTypes};
    }
    (*m)["Abs"] = {.types = kNumericDTypes};
    (*m)["Sign"] = {.types = kNumericDTypes};
    (*m)["Neg"] = {.types = kSignedNumeric};
    (*m)["Relu"] = {.types = kSignedNumeric};
    (*m)["IsNaN"] = {.types = kFloatDTypes, .bool_output = true};
    (*m)["IsInf"] = {.types = kFloatDTypes, .bool_output = true};
    (*m)["Not"] = {.types = kBoolDTypes, .bool_output = true};
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Mod"}) {
      (*m)[op] = {.types = kNumericDTypes, .min_inputs = 2, .max_inputs = 2};
    }
    (*m)["PRelu"] = {.types = kFloatDTypes | kIntDTypes, .min_inputs = 2, .max_inputs = 2};
    (*m)["Equal"] = {.types = kAllDTypes, .min_inputs = 2, .max_inputs = 2, .bool_output = true};
    for (const char* op : {"Greater", "GreaterOrEqual", "Less", "LessOrEqual"}) {
      (*m)[op] = {.types = kNumericDTypes, .min_inputs = 2, .max_inputs = 2, .bool_output = true};
    }
    for (const char* op : {"And", "Or", "Xor"}) {
      (*m)[op] = {.types = kBoolDTypes, .min_inputs = 2, .max_inputs = 2, .bool_output = true};
    }
    const size_t kAny = std::numeric_limits<size_t>::max();
    (*m)["Max"] = {.types = kNumericDTypes, .max_inputs = kAny};
    (*m)["Min"] = {.types = kNumericDTypes, .max_inputs = kAny};
    (*m)["Sum"] = {.types = kFloatDTypes, .max_inputs = kAny};
    (*m)["Mean"] = {.types = kFloatDTypes, .max_inputs = kAny};
    return m;
  }();
  return *specs;
}

absl::StatusOr<Types> InferSpec(const Ctx& c) {
  const Spec& spec = Specs().find(c.node().op_type)->second;
  return InferBroadcast(c, spec);
}

absl::StatusOr<Types> InferGelu(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(Types out, InferSpec(c));
  const std::string approximate = c.node().GetString("approximate", "none");
  if (approximate != "none" && approximate != "tanh") {
    return c.Error(
        absl::StrCat("attribute 'approximate' is '", approximate, "'; it must be none or tanh"));
  }
  return out;
}

absl::StatusOr<Types> InferMod(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(Types out, InferSpec(c));
  const int64_t fmod = c.node().GetInt("fmod", 0);
  if (fmod != 0 && fmod != 1) {
    return c.Error(absl::StrCat("attribute 'fmod' is ", fmod, "; it must be 0 or 1"));
  }
  return out;
}

// PRelu: slope broadcasts to X unidirectionally, so the output has X's shape.
absl::StatusOr<Types> InferPRelu(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(Types out, InferSpec(c));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  if (out[0].shape != x.shape) {
    LOOM_ASSIGN_OR_RETURN(TensorType slope, c.In(1));
    return c.Error(
        absl::StrCat("slope ", slope.ToString(), " does not broadcast to X ", x.ToString()));
  }
  return out;
}

// Pow: base and exponent have their own types; the output has the base's.
absl::StatusOr<Types> InferPow(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(CheckInputCount(c, 2, 2));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kNumericDTypes));
  LOOM_ASSIGN_OR_RETURN(TensorType y, TypedIn(c, 1, kNumericDTypes));
  auto shape = BroadcastShapes(x.shape, y.shape);
  if (!shape.ok()) return c.Error(shape.status().message());
  return Types{{x.dtype, *shape}};
}

absl::StatusOr<Types> InferWhere(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(CheckInputCount(c, 3, 3));
  LOOM_ASSIGN_OR_RETURN(TensorType cond, TypedIn(c, 0, kBoolDTypes));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 1, kAllDTypes));
  LOOM_ASSIGN_OR_RETURN(TensorType y, c.In(2));
  if (x.dtype != y.dtype) {
    return c.Error(absl::StrCat("X ", x.ToString(), " and Y ", y.ToString(), " differ in type"));
  }
  auto shape = BroadcastShapes(cond.shape, x.shape);
  if (shape.ok()) shape = BroadcastShapes(*shape, y.shape);
  if (!shape.ok()) return c.Error(shape.status().message());
  return Types{{x.dtype, *shape}};
}

// Clip: optional scalar min and max inputs of X's type (opset 11), float attributes before.
absl::StatusOr<Types> InferClip(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(CheckElementwiseAttrs(c));
  LOOM_RETURN_IF_ERROR(CheckInputCount(c, 1, c.opset() < 11 ? 1 : 3));
  LOOM_ASSIGN_OR_RETURN(TensorType x,
                        TypedIn(c, 0, c.opset() < 11 ? kFloatDTypes : kNumericDTypes));
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.Has(i)) continue;
    LOOM_ASSIGN_OR_RETURN(TensorType b, c.In(i));
    if (b.dtype != x.dtype || NumElements(b.shape) != 1 || b.shape.size() > 1) {
      return c.Error(absl::StrCat(i == 1 ? "min" : "max", " must be a ", DTypeName(x.dtype),
                                  " scalar, got ", b.ToString()));
    }
  }
  return Types{x};
}

}  // namespace

absl::StatusOr<TensorType> TypedIn(const Ctx& c, size_t i, DTypeSet allowed) {
  LOOM_ASSIGN_OR_RETURN(TensorType t, c.In(i));
  if (!allowed.Contains(t.dtype)) {
    return c.Error(absl::StrCat("input '", c.node().inputs[i], "' has type ", t.ToString(), "; ",
                                c.node().op_type, " accepts ", allowed.ToString()));
  }
  return t;
}

void RegisterElementwiseShapeRules(RuleTable* table) {
  for (const auto& [op, spec] : Specs()) table->insert({op, InferSpec});
  (*table)["Gelu"] = InferGelu;
  (*table)["Mod"] = InferMod;
  (*table)["PRelu"] = InferPRelu;
  (*table)["Pow"] = InferPow;
  (*table)["Where"] = InferWhere;
  (*table)["Clip"] = InferClip;
}

}  // namespace loom::graph::internal

namespace loom::graph {

bool IsBroadcastElementwiseOp(std::string_view op_type) {
  return internal::Specs().count(op_type) > 0 || op_type == "Gelu" || op_type == "Mod" ||
         op_type == "PRelu" || op_type == "Pow" || op_type == "Where" || op_type == "Clip";
}

}  // namespace loom::graph
