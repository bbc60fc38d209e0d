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

namespace loom::graph {
namespace {

// ---------------------------------------------------------------------------------------------
// Helpers shared by the per-op rules.

enum class AttrKind { kInt, kFloat, kString, kInts, kFloats, kTensor };

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
                                      absl::string_view what = "axis") {
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

bool IsIntegerDType(DType d) {
  return d == DType::kInt64 || d == DType::kInt32 || d == DType::kInt8 || d == DType::kUint8;
}

// Per-node view: typed access to inputs, constants and attributes, with errors naming the node.
class Ctx {
 public:
  Ctx(const Graph& g, const Node& n) : graph_(g), node_(n) {}

  const Node& node() const { return node_; }
  int64_t opset() const { return graph_.opset; }

  bool Has(size_t i) const { return i < node_.inputs.size() && !node_.inputs[i].empty(); }

  absl::StatusOr<TensorType> In(size_t i) const {
    if (!Has(i)) return Error(absl::StrCat("missing required input #", i));
    auto t = graph_.TypeOf(node_.inputs[i]);
    if (!t.ok()) {
      return Error(absl::StrCat("input '", node_.inputs[i],
                                "' has no known type (is it defined before this node?)"));
    }
    return *t;
  }

  // A float32 input (every compute op in Loom works on float32).
  absl::StatusOr<TensorType> FloatIn(size_t i) const {
    LOOM_ASSIGN_OR_RETURN(TensorType t, In(i));
    if (t.dtype != DType::kFloat32) {
      return Error(absl::StrCat("input '", node_.inputs[i], "' has type ", t.ToString(),
                                "; only float32 is supported"));
    }
    return t;
  }

  // A shape-defining input, which must be known before run time.
  absl::StatusOr<Tensor> ConstIn(size_t i, absl::string_view what) const {
    if (!Has(i)) return Error(absl::StrCat("missing required input ", what));
    std::optional<Tensor> t = ConstantValueOf(graph_, node_.inputs[i]);
    if (!t.has_value()) {
      return Error(absl::StrCat("input '", node_.inputs[i], "' (", what,
                                ") is not constant; Loom needs static shapes"));
    }
    return *t;
  }

  std::optional<Tensor> MaybeConst(size_t i) const {
    if (!Has(i)) return std::nullopt;
    return ConstantValueOf(graph_, node_.inputs[i]);
  }

  // A constant integer list input (shape, axes, pads, starts, ...): int64 or int32, rank <= 1.
  absl::StatusOr<std::vector<int64_t>> ConstInts(size_t i, absl::string_view what) const {
    LOOM_ASSIGN_OR_RETURN(Tensor t, ConstIn(i, what));
    if (t.dtype() != DType::kInt64 && t.dtype() != DType::kInt32) {
      return Error(absl::StrCat(what, " must be int64 or int32, got ", t.type().ToString()));
    }
    if (t.rank() > 1) {
      return Error(absl::StrCat(what, " must be a 1-D tensor, got ", t.type().ToString()));
    }
    return TensorToInt64s(t);
  }

  absl::Status CheckAttrs(std::initializer_list<std::pair<const char*, AttrKind>> spec) const {
    for (const auto& [name, kind] : spec) {
      auto it = node_.attrs.find(name);
      if (it != node_.attrs.end() && !AttrHasKind(it->second, kind)) {
        return Error(absl::StrCat("attribute '", name, "' must be ", AttrKindName(kind)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Error(absl::string_view msg) const { return NodeError(node_, msg); }

 private:
  const Graph& graph_;
  const Node& node_;
};

using Types = std::vector<TensorType>;

// Repeats `t` once per node output.
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

// ---------------------------------------------------------------------------------------------
// Per-op rules.

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

absl::StatusOr<Types> InferSoftmax(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  LOOM_RETURN_IF_ERROR(
      ResolveSoftmax(c.node(), c.opset(), static_cast<int64_t>(x.shape.size())).status());
  return Same(c.node(), x);
}

absl::StatusOr<Types> InferConv(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"auto_pad", AttrKind::kString},
                                     {"dilations", AttrKind::kInts},
                                     {"group", AttrKind::kInt},
                                     {"kernel_shape", AttrKind::kInts},
                                     {"pads", AttrKind::kInts},
                                     {"strides", AttrKind::kInts}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  LOOM_ASSIGN_OR_RETURN(TensorType w, c.FloatIn(1));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 3, "input"));
  if (w.shape.size() != x.shape.size()) {
    return c.Error(
        absl::StrCat("weight ", w.ToString(), " must have the rank of input ", x.ToString()));
  }
  const int64_t group = c.node().GetInt("group", 1);
  if (group < 1) return c.Error(absl::StrCat("group must be >= 1, got ", group));
  const int64_t channels = x.shape[1];
  const int64_t out_channels = w.shape[0];
  if (channels != w.shape[1] * group) {
    return c.Error(absl::StrCat("input channels ", channels, " do not match weight channels ",
                                w.shape[1], " x group ", group));
  }
  if (out_channels % group != 0) {
    return c.Error(
        absl::StrCat("output channels ", out_channels, " are not divisible by group ", group));
  }
  if (c.Has(2)) {
    LOOM_ASSIGN_OR_RETURN(TensorType b, c.FloatIn(2));
    if (b.shape != Shape{out_channels}) {
      return c.Error(absl::StrCat("bias ", b.ToString(), " must have shape [", out_channels, "]"));
    }
  }
  std::vector<int64_t> spatial(x.shape.begin() + 2, x.shape.end());
  std::vector<int64_t> kernel(w.shape.begin() + 2, w.shape.end());
  if (c.node().HasAttr("kernel_shape") && c.node().GetInts("kernel_shape") != kernel) {
    return c.Error(absl::StrCat("kernel_shape [",
                                absl::StrJoin(c.node().GetInts("kernel_shape"), ","),
                                "] does not match weight ", w.ToString()));
  }
  LOOM_ASSIGN_OR_RETURN(WindowGeometry geo,
                        ResolveWindowGeometry(c.node(), spatial, kernel, /*ceil_mode=*/false));
  Shape out = {x.shape[0], out_channels};
  out.insert(out.end(), geo.output.begin(), geo.output.end());
  return Types{{DType::kFloat32, out}};
}

absl::StatusOr<Types> InferPool(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"auto_pad", AttrKind::kString},
                                     {"ceil_mode", AttrKind::kInt},
                                     {"count_include_pad", AttrKind::kInt},
                                     {"dilations", AttrKind::kInts},
                                     {"kernel_shape", AttrKind::kInts},
                                     {"pads", AttrKind::kInts},
                                     {"storage_order", AttrKind::kInt},
                                     {"strides", AttrKind::kInts}}));
  const Node& node = c.node();
  if (node.op_type == "MaxPool" && node.outputs.size() > 1 && !node.outputs[1].empty()) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": the Indices output of MaxPool is not supported"));
  }
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 3, "input"));
  if (!node.HasAttr("kernel_shape")) return c.Error("attribute 'kernel_shape' is required");
  std::vector<int64_t> kernel = node.GetInts("kernel_shape");
  std::vector<int64_t> spatial(x.shape.begin() + 2, x.shape.end());
  LOOM_ASSIGN_OR_RETURN(
      WindowGeometry geo,
      ResolveWindowGeometry(node, spatial, kernel, node.GetInt("ceil_mode", 0) != 0));
  Shape out = {x.shape[0], x.shape[1]};
  out.insert(out.end(), geo.output.begin(), geo.output.end());
  return Types{{DType::kFloat32, out}};
}

absl::StatusOr<Types> InferGlobalAveragePool(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 3, "input"));
  Shape out = x.shape;
  std::fill(out.begin() + 2, out.end(), 1);
  return Types{{DType::kFloat32, out}};
}

absl::StatusOr<Types> InferGemm(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"alpha", AttrKind::kFloat},
                                     {"beta", AttrKind::kFloat},
                                     {"transA", AttrKind::kInt},
                                     {"transB", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType a, c.FloatIn(0));
  LOOM_ASSIGN_OR_RETURN(TensorType b, c.FloatIn(1));
  if (a.shape.size() != 2 || b.shape.size() != 2) {
    return c.Error(absl::StrCat("A and B must be 2-D, got ", a.ToString(), " and ", b.ToString()));
  }
  const bool ta = c.node().GetInt("transA", 0) != 0;
  const bool tb = c.node().GetInt("transB", 0) != 0;
  const int64_t m = ta ? a.shape[1] : a.shape[0];
  const int64_t k = ta ? a.shape[0] : a.shape[1];
  const int64_t kb = tb ? b.shape[1] : b.shape[0];
  const int64_t n = tb ? b.shape[0] : b.shape[1];
  if (k != kb) {
    return c.Error(absl::StrCat("inner dimensions differ: A ", a.ToString(), " (transA=", ta,
                                ") has K=", k, ", B ", b.ToString(), " (transB=", tb,
                                ") has K=", kb));
  }
  if (c.Has(2)) {
    LOOM_ASSIGN_OR_RETURN(TensorType cc, c.FloatIn(2));
    // Unidirectional broadcast of C to [M, N].
    auto bc = BroadcastShapes(cc.shape, {m, n});
    if (cc.shape.size() > 2 || !bc.ok() || *bc != Shape{m, n}) {
      return c.Error(
          absl::StrCat("C ", cc.ToString(), " cannot be broadcast to [", m, ",", n, "]"));
    }
  }
  return Types{{DType::kFloat32, {m, n}}};
}

absl::StatusOr<Types> InferMatMul(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType a, c.FloatIn(0));
  LOOM_ASSIGN_OR_RETURN(TensorType b, c.FloatIn(1));
  if (a.shape.empty() || b.shape.empty()) {
    return c.Error(
        absl::StrCat("operands must have rank >= 1, got ", a.ToString(), " and ", b.ToString()));
  }
  Shape sa = a.shape, sb = b.shape;
  const bool a_vec = sa.size() == 1, b_vec = sb.size() == 1;
  if (a_vec) sa.insert(sa.begin(), 1);
  if (b_vec) sb.push_back(1);
  const int64_t k = sa.back(), kb = sb[sb.size() - 2];
  if (k != kb) {
    return c.Error(absl::StrCat("inner dimensions differ: ", a.ToString(), " x ", b.ToString()));
  }
  Shape batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
  auto batch = BroadcastShapes(batch_a, batch_b);
  if (!batch.ok()) {
    return c.Error(absl::StrCat("batch dimensions of ", a.ToString(), " and ", b.ToString(),
                                " do not broadcast"));
  }
  Shape out = *batch;
  if (!a_vec) out.push_back(sa[sa.size() - 2]);
  if (!b_vec) out.push_back(sb.back());
  return Types{{DType::kFloat32, out}};
}

absl::StatusOr<Types> InferReduceMean(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axes", AttrKind::kInts},
                                     {"keepdims", AttrKind::kInt},
                                     {"noop_with_empty_axes", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> axes;
  if (c.opset() < 18) {
    axes = c.node().GetInts("axes");
  } else {
    if (c.node().HasAttr("axes")) {
      return c.Error("from opset 18 the axes are an input, not an attribute");
    }
    if (c.Has(1)) {
      LOOM_ASSIGN_OR_RETURN(axes, c.ConstInts(1, "axes"));
    }
  }
  const bool keepdims = c.node().GetInt("keepdims", 1) != 0;
  const bool noop = c.node().GetInt("noop_with_empty_axes", 0) != 0;
  if (axes.empty()) {
    if (noop) return Types{x};
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  }
  LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(c.node(), axes, rank));
  std::set<int64_t> reduced(axes.begin(), axes.end());
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    if (!reduced.count(i)) {
      out.push_back(x.shape[i]);
    } else if (keepdims) {
      out.push_back(1);
    }
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferBatchNorm(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"epsilon", AttrKind::kFloat},
                                     {"momentum", AttrKind::kFloat},
                                     {"training_mode", AttrKind::kInt}}));
  const Node& node = c.node();
  if (node.GetInt("training_mode", 0) != 0) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": training_mode=1 is not supported (inference only)"));
  }
  for (size_t i = 1; i < node.outputs.size(); ++i) {
    if (!node.outputs[i].empty()) {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), ": only the first output is supported (inference only)"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.FloatIn(0));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 2, "input"));
  static constexpr const char* kNames[] = {"", "scale", "B", "mean", "var"};
  for (size_t i = 1; i <= 4; ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType p, c.FloatIn(i));
    if (p.shape != Shape{x.shape[1]}) {
      return c.Error(absl::StrCat(kNames[i], " ", p.ToString(), " must have shape [", x.shape[1],
                                  "] (the channel count of input ", x.ToString(), ")"));
    }
  }
  return Same(node, x);
}

absl::StatusOr<Types> InferConcat(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  if (!c.node().HasAttr("axis")) return c.Error("attribute 'axis' is required");
  if (c.node().inputs.empty()) return c.Error("needs at least one input");
  LOOM_ASSIGN_OR_RETURN(TensorType first, c.In(0));
  const int64_t rank = static_cast<int64_t>(first.shape.size());
  if (rank == 0) return c.Error("cannot concatenate scalars");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(c.node(), c.node().GetInt("axis", 0), rank));
  Shape out = first.shape;
  for (size_t i = 1; i < c.node().inputs.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType t, c.In(i));
    if (t.dtype != first.dtype || static_cast<int64_t>(t.shape.size()) != rank) {
      return c.Error(absl::StrCat("input ", t.ToString(), " does not match ", first.ToString()));
    }
    for (int64_t d = 0; d < rank; ++d) {
      if (d == axis) continue;
      if (t.shape[d] != first.shape[d]) {
        return c.Error(absl::StrCat("input ", t.ToString(), " differs from ", first.ToString(),
                                    " outside axis ", axis));
      }
    }
    out[axis] += t.shape[axis];
  }
  return Types{{first.dtype, out}};
}

absl::StatusOr<Types> InferFlatten(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  int64_t axis = c.node().GetInt("axis", 1);
  if (axis < -rank || axis > rank) {
    return c.Error(absl::StrCat("axis ", axis, " is out of range [", -rank, ", ", rank, "]"));
  }
  if (axis < 0) axis += rank;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? outer : inner) *= x.shape[i];
  return Types{{x.dtype, {outer, inner}}};
}

absl::StatusOr<Types> InferReshape(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"allowzero", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> spec, c.ConstInts(1, "shape"));
  const bool allowzero = c.node().GetInt("allowzero", 0) != 0;
  Shape out;
  int64_t infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t d = spec[i];
    if (d == -1) {
      if (infer_at >= 0) return c.Error("shape has more than one -1");
      infer_at = static_cast<int64_t>(i);
      out.push_back(-1);
      continue;
    }
    if (d < -1) return c.Error(absl::StrCat("shape has an invalid dimension ", d));
    if (d == 0 && !allowzero) {
      if (i >= x.shape.size()) {
        return c.Error(absl::StrCat("shape [", absl::StrJoin(spec, ","), "] copies dimension ", i,
                                    " (0) but input ", x.ToString(), " has no such dimension"));
      }
      d = x.shape[i];
    }
    out.push_back(d);
    known *= d;
  }
  const int64_t total = NumElements(x.shape);
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0) {
      return c.Error(
          absl::StrCat("cannot reshape ", x.ToString(), " to [", absl::StrJoin(spec, ","), "]"));
    }
    out[infer_at] = total / known;
  } else if (known != total) {
    return c.Error(absl::StrCat("cannot reshape ", x.ToString(), " (", total, " elements) to [",
                                absl::StrJoin(spec, ","), "]"));
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferTranspose(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"perm", AttrKind::kInts}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> perm;
  if (c.node().HasAttr("perm")) {
    perm = c.node().GetInts("perm");
  } else {
    for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
  }
  if (static_cast<int64_t>(perm.size()) != rank) {
    return c.Error(
        absl::StrCat("perm [", absl::StrJoin(perm, ","), "] does not match rank ", rank));
  }
  std::vector<bool> seen(rank, false);
  Shape out;
  for (int64_t p : perm) {
    if (p < 0 || p >= rank || seen[p]) {
      return c.Error(absl::StrCat("perm [", absl::StrJoin(perm, ","), "] is not a permutation"));
    }
    seen[p] = true;
    out.push_back(x.shape[p]);
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferSlice(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> starts, c.ConstInts(1, "starts"));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> ends, c.ConstInts(2, "ends"));
  std::vector<int64_t> axes, steps;
  if (c.Has(3)) {
    LOOM_ASSIGN_OR_RETURN(axes, c.ConstInts(3, "axes"));
  } else {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (c.Has(4)) {
    LOOM_ASSIGN_OR_RETURN(steps, c.ConstInts(4, "steps"));
  } else {
    steps.assign(starts.size(), 1);
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return c.Error(absl::StrCat("starts, ends, axes and steps must have the same length (",
                                starts.size(), ", ", ends.size(), ", ", axes.size(), ", ",
                                steps.size(), ")"));
  }
  LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(c.node(), axes, rank));
  Shape out = x.shape;
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t dim = x.shape[axes[i]];
    const int64_t step = steps[i];
    if (step == 0) return c.Error("a step is 0");
    int64_t start = starts[i], end = ends[i];
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    int64_t len;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      len = end > start ? (end - start + step - 1) / step : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      len = start > end ? (start - end + (-step) - 1) / (-step) : 0;
    }
    out[axes[i]] = len;
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferGather(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(1));
  if (idx.dtype != DType::kInt64 && idx.dtype != DType::kInt32) {
    return c.Error(absl::StrCat("indices must be int64 or int32, got ", idx.ToString()));
  }
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) return c.Error("data must have rank >= 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(c.node(), c.node().GetInt("axis", 0), rank));
  const int64_t dim = x.shape[axis];
  // Out-of-range indices are caught here when they are known; otherwise by the kernel.
  if (std::optional<Tensor> t = c.MaybeConst(1); t.has_value()) {
    for (int64_t i = 0; i < t->num_elements(); ++i) {
      const int64_t v = t->Int64At(i);
      if (v < -dim || v >= dim) {
        return c.Error(
            absl::StrCat("index ", v, " is out of range for axis ", axis, " of size ", dim));
      }
    }
  }
  Shape out(x.shape.begin(), x.shape.begin() + axis);
  out.insert(out.end(), idx.shape.begin(), idx.shape.end());
  out.insert(out.end(), x.shape.begin() + axis + 1, x.shape.end());
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferShape(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"start", AttrKind::kInt}, {"end", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  int64_t start = 0, end = rank;
  if (c.opset() >= 15) {
    start = c.node().GetInt("start", 0);
    end = c.node().GetInt("end", rank);
  }
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  return Types{{DType::kInt64, {std::max<int64_t>(0, end - start)}}};
}

// Axes of Squeeze/Unsqueeze: an attribute before opset 13, an input from 13.
absl::StatusOr<std::optional<std::vector<int64_t>>> SqueezeAxes(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axes", AttrKind::kInts}}));
  if (c.opset() < 13) {
    if (c.Has(1)) return c.Error("before opset 13 the axes are an attribute, not an input");
    if (!c.node().HasAttr("axes")) return std::optional<std::vector<int64_t>>();
    return std::optional<std::vector<int64_t>>(c.node().GetInts("axes"));
  }
  if (c.node().HasAttr("axes")) {
    return c.Error("from opset 13 the axes are an input, not an attribute");
  }
  if (!c.Has(1)) return std::optional<std::vector<int64_t>>();
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> axes, c.ConstInts(1, "axes"));
  return std::optional<std::vector<int64_t>>(std::move(axes));
}

absl::StatusOr<Types> InferUnsqueeze(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes_opt, SqueezeAxes(c));
  if (!axes_opt.has_value() || axes_opt->empty()) return c.Error("axes are required");
  const int64_t out_rank = static_cast<int64_t>(x.shape.size() + axes_opt->size());
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> axes, NormalizeAxes(c.node(), *axes_opt, out_rank));
  std::set<int64_t> inserted(axes.begin(), axes.end());
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < out_rank; ++i) {
    if (inserted.count(i)) {
      out.push_back(1);
    } else {
      out.push_back(x.shape[next++]);
    }
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferSqueeze(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes_opt, SqueezeAxes(c));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::set<int64_t> removed;
  if (axes_opt.has_value()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> axes, NormalizeAxes(c.node(), *axes_opt, rank));
    for (int64_t a : axes) {
      if (x.shape[a] != 1) {
        return c.Error(
            absl::StrCat("cannot squeeze axis ", a, " of ", x.ToString(), ": its size is not 1"));
      }
      removed.insert(a);
    }
  } else {
    for (int64_t i = 0; i < rank; ++i) {
      if (x.shape[i] == 1) removed.insert(i);
    }
  }
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    if (!removed.count(i)) out.push_back(x.shape[i]);
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferConstant(const Ctx& c) {
  auto value = ConstantNodeValue(c.node());
  if (!value.ok()) return value.status();
  return Types{value->type()};
}

absl::StatusOr<Types> InferIdentity(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  return Types{x};
}

absl::StatusOr<Types> InferPad(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"mode", AttrKind::kString}}));
  const std::string mode = c.node().GetString("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge") {
    return c.Error(absl::StrCat("mode '", mode, "' is not supported (constant, reflect, edge)"));
  }
  if (c.node().HasAttr("pads")) {
    return c.Error("from opset 11 the pads are an input, not an attribute");
  }
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> pads_in, c.ConstInts(1, "pads"));
  if (c.Has(2)) {
    LOOM_ASSIGN_OR_RETURN(TensorType v, c.In(2));
    if (v.dtype != x.dtype || NumElements(v.shape) != 1) {
      return c.Error(absl::StrCat("constant_value must be a ", DTypeName(x.dtype), " scalar, got ",
                                  v.ToString()));
    }
  }
  std::vector<int64_t> axes;
  if (c.Has(3)) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> raw, c.ConstInts(3, "axes"));
    LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(c.node(), raw, rank));
  } else {
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  }
  const int64_t n = static_cast<int64_t>(axes.size());
  if (static_cast<int64_t>(pads_in.size()) != 2 * n) {
    return c.Error(absl::StrCat("pads has ", pads_in.size(), " values; expected ", 2 * n));
  }
  Shape out = x.shape;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = axes[i];
    const int64_t begin = pads_in[i], end = pads_in[i + n];
    const int64_t dim = x.shape[a];
    if (mode == "reflect" && (begin >= dim || end >= dim) && (begin > 0 || end > 0)) {
      return c.Error(absl::StrCat("reflect pads ", begin, ",", end, " must be smaller than dim ", a,
                                  " (", dim, ")"));
    }
    if (mode == "edge" && dim == 0 && (begin > 0 || end > 0)) {
      return c.Error(absl::StrCat("edge padding of empty dim ", a));
    }
    out[a] = dim + begin + end;
    if (out[a] < 0) {
      return c.Error(absl::StrCat("pads ", begin, ",", end, " make dim ", a, " negative"));
    }
  }
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferDropout(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"seed", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  if (c.Has(2)) {
    LOOM_ASSIGN_OR_RETURN(Tensor training, c.ConstIn(2, "training_mode"));
    if (training.num_elements() != 1 || training.Int64At(0) != 0) {
      return absl::UnimplementedError(
          absl::StrCat(c.node().Describe(), ": training_mode must be false (inference only)"));
    }
  }
  Types out = {x};
  if (c.node().outputs.size() > 1) out.push_back({DType::kBool, x.shape});
  return out;
}

using Rule = std::function<absl::StatusOr<Types>(const Ctx&)>;

const std::map<std::string, Rule, std::less<>>& Rules() {
  static const auto* rules = new std::map<std::string, Rule, std::less<>>{
      {"Add", InferBinary},
      {"AveragePool", InferPool},
      {"BatchNormalization", InferBatchNorm},
      {"Clip", InferClip},
      {"Concat", InferConcat},
      {"Constant", InferConstant},
      {"Conv", InferConv},
      {"Div", InferBinary},
      {"Dropout", InferDropout},
      {"Flatten", InferFlatten},
      {"Gather", InferGather},
      {"Gemm", InferGemm},
      {"GlobalAveragePool", InferGlobalAveragePool},
      {"HardSigmoid", InferActivation},
      {"HardSwish", InferUnaryFloat},
      {"Identity", InferIdentity},
      {"LeakyRelu", InferActivation},
      {"MatMul", InferMatMul},
      {"MaxPool", InferPool},
      {"Mul", InferBinary},
      {"Pad", InferPad},
      {"ReduceMean", InferReduceMean},
      {"Relu", InferUnaryFloat},
      {"Reshape", InferReshape},
      {"Shape", InferShape},
      {"Sigmoid", InferUnaryFloat},
      {"Slice", InferSlice},
      {"Softmax", InferSoftmax},
      {"Squeeze", InferSqueeze},
      {"Sub", InferBinary},
      {"Tanh", InferUnaryFloat},
      {"Transpose", InferTranspose},
      {"Unsqueeze", InferUnsqueeze},
  };
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
  Ctx ctx(graph, node);
  LOOM_ASSIGN_OR_RETURN(Types types, it->second(ctx));
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
