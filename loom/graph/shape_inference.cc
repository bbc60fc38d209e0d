#include "loom/graph/shape_inference.h"

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/op_versions.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph {
namespace internal {

const char* AttrKindName(AttrKind kind) {
  switch (kind) {
    case AttrKind::kInt:
      return "an int";
    case AttrKind::kFloat:
      return "a float";
    case AttrKind::kString:
      return "a string";
    case AttrKind::kInts:
      return "a list of ints";
    case AttrKind::kFloats:
      return "a list of floats";
    case AttrKind::kTensor:
      return "a tensor";
  }
  return "?";
}

bool AttrHasKind(const AttrValue& v, AttrKind kind) {
  switch (kind) {
    case AttrKind::kInt:
      return std::holds_alternative<int64_t>(v);
    case AttrKind::kFloat:
      return std::holds_alternative<float>(v) || std::holds_alternative<int64_t>(v);
    case AttrKind::kString:
      return std::holds_alternative<std::string>(v);
    case AttrKind::kInts:
      return std::holds_alternative<std::vector<int64_t>>(v);
    case AttrKind::kFloats:
      return std::holds_alternative<std::vector<float>>(v);
    case AttrKind::kTensor:
      return std::holds_alternative<Tensor>(v);
  }
  return false;
}

absl::Status NodeError(const Node& node, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": ", msg));
}

// Rank-agnostic axis normalization: [-rank, rank) -> [0, rank).
absl::StatusOr<int64_t> NormalizeAxis(const Node& node, int64_t axis, int64_t rank,
                                      absl::string_view what) {
  if (axis < -rank || axis >= rank) {
    return NodeError(node, absl::StrCat(what, " ", axis, " is out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

// Normalizes a list of axes and rejects duplicates.
absl::StatusOr<std::vector<int64_t>> NormalizeAxes(const Node& node,
                                                   const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<int64_t> out;
  std::set<int64_t> seen;
  for (int64_t a : axes) {
    LOOM_ASSIGN_OR_RETURN(int64_t n, NormalizeAxis(node, a, rank));
    if (!seen.insert(n).second) {
      return NodeError(
          node, absl::StrCat("axis ", a, " is repeated in axes [", absl::StrJoin(axes, ","), "]"));
    }
    out.push_back(n);
  }
  return out;
}

std::vector<int64_t> TensorToInt64s(const Tensor& t) {
  std::vector<int64_t> v(static_cast<size_t>(t.num_elements()));
  for (int64_t i = 0; i < t.num_elements(); ++i) v[static_cast<size_t>(i)] = t.Int64At(i);
  return v;
}

Types Same(const Node& node, const TensorType& t) {
  return Types(std::max<size_t>(node.outputs.size(), 1), t);
}

absl::Status CheckRank(const Ctx& c, const TensorType& t, int64_t min_rank,
                       absl::string_view what) {
  if (static_cast<int64_t>(t.shape.size()) < min_rank) {
    return c.Error(absl::StrCat(what, " must have rank >= ", min_rank, ", got ", t.ToString()));
  }
  return absl::OkStatus();
}

}  // namespace internal

namespace {

using internal::AttrHasKind;
using internal::AttrKind;
using internal::NodeError;
using internal::NormalizeAxis;

const internal::RuleTable& Rules() {
  static const internal::RuleTable* rules = [] {
    auto* t = new internal::RuleTable();
    internal::RegisterElementwiseShapeRules(t);
    internal::RegisterNnShapeRules(t);
    internal::RegisterTensorShapeRules(t);
    return t;
  }();
  return *rules;
}

absl::Status CheckSaneType(const TensorType& t, absl::string_view what) {
  for (int64_t d : t.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has a negative dimension: ", t.ToString()));
    }
  }
  // Same limit as Tensor::Create, computed without overflow.
  const size_t elem = std::max<size_t>(DTypeSize(t.dtype), 1);
  size_t elems = 1;
  for (int64_t d : t.shape) {
    if (d == 0) return absl::OkStatus();
    if (elems > Tensor::kMaxBytes / elem / static_cast<size_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is too large: ", t.ToString(),
                                                     " exceeds ", Tensor::kMaxBytes >> 30, " GiB"));
    }
    elems *= static_cast<size_t>(d);
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API.

bool IsSupportedOp(std::string_view op_type) { return Rules().count(op_type) > 0; }

std::vector<std::string> SupportedOps() {
  std::vector<std::string> ops;
  for (const auto& [name, _] : Rules()) ops.push_back(name);
  return ops;
}

std::optional<Tensor> ConstantValueOf(const Graph& graph, const std::string& value) {
  if (value.empty()) return std::nullopt;
  if (const Tensor* t = graph.FindInitializer(value)) return *t;
  const int64_t producer = graph.ProducerOf(value);
  if (producer < 0) return std::nullopt;
  const Node& node = graph.nodes[static_cast<size_t>(producer)];
  if (node.op_type != "Constant") return std::nullopt;
  auto t = ConstantNodeValue(node);
  if (!t.ok()) return std::nullopt;
  return *t;
}

absl::StatusOr<Tensor> ConstantNodeValue(const Node& node) {
  int present = 0;
  for (const char* key : {"value", "value_float", "value_floats", "value_int", "value_ints",
                          "sparse_value", "value_string", "value_strings"}) {
    present += node.HasAttr(key);
  }
  if (present != 1) {
    return NodeError(node,
                     "needs exactly one of the attributes value, value_float, "
                     "value_floats, value_int, value_ints");
  }
  if (const Tensor* t = node.GetTensor("value")) {
    if (!t->defined()) return NodeError(node, "attribute 'value' is an undefined tensor");
    return *t;
  }
  auto it = node.attrs.find("value_float");
  if (it != node.attrs.end()) {
    if (!AttrHasKind(it->second, AttrKind::kFloat)) {
      return NodeError(node, "attribute 'value_float' must be a float");
    }
    return Tensor::ScalarFloat(node.GetFloat("value_float", 0));
  }
  it = node.attrs.find("value_int");
  if (it != node.attrs.end()) {
    if (!AttrHasKind(it->second, AttrKind::kInt)) {
      return NodeError(node, "attribute 'value_int' must be an int");
    }
    return Tensor::ScalarInt64(node.GetInt("value_int", 0));
  }
  it = node.attrs.find("value_floats");
  if (it != node.attrs.end()) {
    if (!AttrHasKind(it->second, AttrKind::kFloats)) {
      return NodeError(node, "attribute 'value_floats' must be a list of floats");
    }
    std::vector<float> f = node.GetFloats("value_floats");
    return Tensor::FromFloats({static_cast<int64_t>(f.size())}, f);
  }
  it = node.attrs.find("value_ints");
  if (it != node.attrs.end()) {
    if (!AttrHasKind(it->second, AttrKind::kInts)) {
      return NodeError(node, "attribute 'value_ints' must be a list of ints");
    }
    std::vector<int64_t> i = node.GetInts("value_ints");
    return Tensor::FromInt64s({static_cast<int64_t>(i.size())}, i);
  }
  if (node.HasAttr("value")) return NodeError(node, "attribute 'value' must be a tensor");
  return absl::UnimplementedError(
      absl::StrCat(node.Describe(), ": sparse and string constants are not supported"));
}

absl::StatusOr<Shape> BroadcastShapes(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db || db == 1) {
      out[i] = da;
    } else if (da == 1) {
      out[i] = db;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("shapes ", ShapeToString(a), " and ",
                                                     ShapeToString(b), " do not broadcast"));
    }
  }
  return out;
}

absl::StatusOr<SoftmaxSpec> ResolveSoftmax(const Node& node, int64_t opset, int64_t rank) {
  // Before opset 13 the input is coerced to 2-D at `axis` (default 1); from 13 the softmax runs
  // along `axis` alone (default -1). Both accept axis in [-rank, rank).
  const bool coerce = opset < 13;
  const int64_t axis = node.GetInt("axis", coerce ? 1 : -1);
  if (rank == 0) return NodeError(node, "input must have rank >= 1");
  LOOM_ASSIGN_OR_RETURN(int64_t normalized, NormalizeAxis(node, axis, rank));
  return SoftmaxSpec{.axis = normalized, .coerce_2d = coerce};
}

namespace {
constexpr int64_t kMaxWindowValue = (int64_t{1} << 31) - 1;
}  // namespace

absl::StatusOr<WindowGeometry> ResolveWindowGeometry(const Node& node,
                                                     const std::vector<int64_t>& input_spatial,
                                                     const std::vector<int64_t>& kernel,
                                                     bool ceil_mode) {
  const size_t n = input_spatial.size();
  auto list_error = [&](const char* name, size_t want) {
    return NodeError(
        node, absl::StrCat("attribute '", name, "' [", absl::StrJoin(node.GetInts(name), ","),
                           "] must have ", want, " values"));
  };
  WindowGeometry g;
  g.kernel = kernel;
  if (g.kernel.size() != n) return list_error("kernel_shape", n);
  g.strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  if (g.strides.size() != n) return list_error("strides", n);
  g.dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  if (g.dilations.size() != n) return list_error("dilations", n);
  g.pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  if (g.pads.size() != 2 * n) return list_error("pads", 2 * n);
  for (size_t i = 0; i < n; ++i) {
    if (g.kernel[i] < 1 || g.strides[i] < 1 || g.dilations[i] < 1) {
      return NodeError(node, absl::StrCat("kernel, strides and dilations must be >= 1 (dim ", i,
                                          ": kernel ", g.kernel[i], ", stride ", g.strides[i],
                                          ", dilation ", g.dilations[i], ")"));
    }
    if (g.pads[i] < 0 || g.pads[i + n] < 0) {
      return NodeError(
          node, absl::StrCat("pads [", absl::StrJoin(g.pads, ","), "] must be non-negative"));
    }
    // Bounded so that the extent arithmetic below cannot overflow (no real window comes near).
    for (int64_t v :
         {g.kernel[i], g.strides[i], g.dilations[i], g.pads[i], g.pads[i + n], input_spatial[i]}) {
      if (v > kMaxWindowValue) {
        return NodeError(node, absl::StrCat("window values (kernel, strides, dilations, pads, "
                                            "input extent) must be at most ",
                                            kMaxWindowValue, " (dim ", i, ": ", v, ")"));
      }
    }
  }
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" &&
      auto_pad != "VALID") {
    return NodeError(node, absl::StrCat("auto_pad '", auto_pad,
                                        "' is not one of NOTSET, "
                                        "SAME_UPPER, SAME_LOWER, VALID"));
  }
  g.output.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = input_spatial[i];
    const int64_t s = g.strides[i];
    const int64_t eff = g.dilations[i] * (g.kernel[i] - 1) + 1;  // dilated kernel extent
    int64_t out;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + eff - in);
      const int64_t small = total / 2, big = total - small;
      g.pads[i] = auto_pad == "SAME_UPPER" ? small : big;
      g.pads[i + n] = auto_pad == "SAME_UPPER" ? big : small;
    } else {
      if (auto_pad == "VALID") g.pads[i] = g.pads[i + n] = 0;
      const int64_t span = in + g.pads[i] + g.pads[i + n] - eff;
      if (span < 0) {
        return NodeError(node, absl::StrCat("kernel extent ", eff, " exceeds padded input ",
                                            in + g.pads[i] + g.pads[i + n], " in spatial dim ", i));
      }
      if (ceil_mode && auto_pad == "NOTSET") {
        out = (span + s - 1) / s + 1;
        // The last window must start inside the input or the begin padding.
        if ((out - 1) * s >= in + g.pads[i]) --out;
      } else {
        out = span / s + 1;
      }
    }
    g.output[i] = out;
  }
  return g;
}

absl::StatusOr<std::vector<TensorType>> InferNodeOutputTypes(const Graph& graph, const Node& node) {
  auto it = Rules().find(node.op_type);
  if (it == Rules().end()) {
    return absl::UnimplementedError(
        absl::StrCat("unsupported operator '", node.op_type, "' in node '", node.name, "'"));
  }
  if (node.outputs.empty()) return NodeError(node, "has no outputs");
  LOOM_RETURN_IF_ERROR(CheckOpVersion(node, graph.opset));
  internal::Ctx ctx(graph, node);
  LOOM_ASSIGN_OR_RETURN(internal::Types types, it->second(ctx));
  if (types.size() < node.outputs.size()) {
    return NodeError(node, absl::StrCat("has ", node.outputs.size(), " outputs; at most ",
                                        types.size(), " are supported"));
  }
  types.resize(node.outputs.size());
  for (size_t i = 0; i < types.size(); ++i) {
    LOOM_RETURN_IF_ERROR(CheckSaneType(types[i], absl::StrCat(node.Describe(), ": output #", i)));
  }
  return types;
}

absl::Status SeedInputTypes(Graph& graph) {
  for (const ValueInfo& in : graph.inputs) {
    if (in.type.dtype == DType::kUndefined) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph input '", in.name, "' has no element type"));
    }
    if (std::count(in.type.shape.begin(), in.type.shape.end(), -1) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph input '", in.name, "' has unknown dimensions ", in.type.ToString(),
                       "; pin it with --input-shape"));
    }
    LOOM_RETURN_IF_ERROR(CheckSaneType(in.type, absl::StrCat("graph input '", in.name, "'")));
    graph.value_types[in.name] = in.type;
  }
  for (const auto& [name, t] : graph.initializers) graph.value_types[name] = t.type();
  return absl::OkStatus();
}

absl::Status InferShapes(Graph& graph) {
  LOOM_RETURN_IF_ERROR(graph.TopologicalSort());
  LOOM_RETURN_IF_ERROR(graph.Validate());
  graph.value_types.clear();
  LOOM_RETURN_IF_ERROR(SeedInputTypes(graph));
  for (const Node& node : graph.nodes) {
    LOOM_ASSIGN_OR_RETURN(std::vector<TensorType> types, InferNodeOutputTypes(graph, node));
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      if (!node.outputs[i].empty()) graph.value_types[node.outputs[i]] = types[i];
    }
  }
  for (ValueInfo& out : graph.outputs) {
    const TensorType& t = graph.value_types.at(out.name);
    if (out.type.dtype != DType::kUndefined && out.type.dtype != t.dtype) {
      return absl::InvalidArgumentError(absl::StrCat("graph output '", out.name, "' is declared ",
                                                     out.type.ToString(), " but computes ",
                                                     t.ToString()));
    }
    out.type = t;
  }
  return absl::OkStatus();
}

}  // namespace loom::graph