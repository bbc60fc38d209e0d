// Shape rules: convolution, pooling, matrix products, normalization, reductions, softmax, TopK,
// CumSum and Einsum. Operand element types are checked against the sets their ONNX schemas allow
// within Loom's (float16/bfloat16 are computed in float32 by the kernels).
#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/dtype_set.h"
#include "loom/graph/einsum.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph {
namespace internal {
namespace {

// An input that must have the element type of `like`.
absl::StatusOr<TensorType> SameTypeIn(const Ctx& c, size_t i, const TensorType& like,
                                      absl::string_view what) {
  LOOM_ASSIGN_OR_RETURN(TensorType t, c.In(i));
  if (t.dtype != like.dtype) {
    return c.Error(
        absl::StrCat(what, " ", t.ToString(), " must have the element type of ", like.ToString()));
  }
  return t;
}

absl::StatusOr<Types> InferSoftmax(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kFloatDTypes));
  LOOM_RETURN_IF_ERROR(
      ResolveSoftmax(c.node(), c.opset(), static_cast<int64_t>(x.shape.size())).status());
  return Same(c.node(), x);
}

absl::Status CheckWindowAttrs(const Ctx& c) {
  return c.CheckAttrs({{"auto_pad", AttrKind::kString},
                       {"ceil_mode", AttrKind::kInt},
                       {"count_include_pad", AttrKind::kInt},
                       {"dilations", AttrKind::kInts},
                       {"group", AttrKind::kInt},
                       {"kernel_shape", AttrKind::kInts},
                       {"output_padding", AttrKind::kInts},
                       {"output_shape", AttrKind::kInts},
                       {"p", AttrKind::kInt},
                       {"pads", AttrKind::kInts},
                       {"storage_order", AttrKind::kInt},
                       {"strides", AttrKind::kInts}});
}

// Conv and ConvTranspose share the operand checks: X [N, C, spatial...], W of X's rank, group,
// optional B of the output channels.
struct ConvOperands {
  TensorType x, w;
  int64_t group = 1;
  std::vector<int64_t> spatial, kernel;
};

absl::StatusOr<ConvOperands> ReadConvOperands(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(CheckWindowAttrs(c));
  ConvOperands op;
  LOOM_ASSIGN_OR_RETURN(op.x, TypedIn(c, 0, kFloatDTypes));
  LOOM_ASSIGN_OR_RETURN(op.w, SameTypeIn(c, 1, op.x, "weight"));
  LOOM_RETURN_IF_ERROR(CheckRank(c, op.x, 3, "input"));
  if (op.w.shape.size() != op.x.shape.size()) {
    return c.Error(
        absl::StrCat("weight ", op.w.ToString(), " must have the rank of input ", op.x.ToString()));
  }
  op.group = c.node().GetInt("group", 1);
  if (op.group < 1)
    return c.Error(absl::StrCat("attribute 'group' is ", op.group, "; it must be >= 1"));
  op.spatial.assign(op.x.shape.begin() + 2, op.x.shape.end());
  op.kernel.assign(op.w.shape.begin() + 2, op.w.shape.end());
  if (c.node().HasAttr("kernel_shape") && c.node().GetInts("kernel_shape") != op.kernel) {
    return c.Error(absl::StrCat("kernel_shape [",
                                absl::StrJoin(c.node().GetInts("kernel_shape"), ","),
                                "] does not match weight ", op.w.ToString()));
  }
  return op;
}

absl::Status CheckBias(const Ctx& c, const TensorType& x, int64_t out_channels) {
  if (!c.Has(2)) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(TensorType b, SameTypeIn(c, 2, x, "bias"));
  if (b.shape != Shape{out_channels}) {
    return c.Error(absl::StrCat("bias ", b.ToString(), " must have shape [", out_channels, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Types> InferConv(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(ConvOperands op, ReadConvOperands(c));
  const int64_t channels = op.x.shape[1];
  const int64_t out_channels = op.w.shape[0];
  if (channels != op.w.shape[1] * op.group) {
    return c.Error(absl::StrCat("input channels ", channels, " do not match weight channels ",
                                op.w.shape[1], " x group ", op.group));
  }
  if (out_channels % op.group != 0) {
    return c.Error(
        absl::StrCat("output channels ", out_channels, " are not divisible by group ", op.group));
  }
  LOOM_RETURN_IF_ERROR(CheckBias(c, op.x, out_channels));
  LOOM_ASSIGN_OR_RETURN(WindowGeometry geo, ResolveWindowGeometry(c.node(), op.spatial, op.kernel,
                                                                  /*ceil_mode=*/false));
  Shape out = {op.x.shape[0], out_channels};
  out.insert(out.end(), geo.output.begin(), geo.output.end());
  return Types{{op.x.dtype, out}};
}

// ConvTranspose: W is [C, M / group, k...]; the output has M channels.
absl::StatusOr<Types> InferConvTranspose(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(ConvOperands op, ReadConvOperands(c));
  const int64_t channels = op.x.shape[1];
  if (op.w.shape[0] != channels || channels % op.group != 0) {
    return c.Error(absl::StrCat("weight ", op.w.ToString(), " must have ", channels,
                                " input channels, divisible by group ", op.group));
  }
  const int64_t out_channels = op.w.shape[1] * op.group;
  LOOM_RETURN_IF_ERROR(CheckBias(c, op.x, out_channels));
  LOOM_ASSIGN_OR_RETURN(ConvTransposeGeometry geo,
                        ResolveConvTransposeGeometry(c.node(), op.spatial, op.kernel));
  Shape out = {op.x.shape[0], out_channels};
  out.insert(out.end(), geo.output.begin(), geo.output.end());
  return Types{{op.x.dtype, out}};
}

// MaxPool (with its optional int64 Indices), AveragePool and LpPool over 1-D..3-D windows.
absl::StatusOr<Types> InferPool(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(CheckWindowAttrs(c));
  const Node& node = c.node();
  const bool max_pool = node.op_type == "MaxPool";
  LOOM_ASSIGN_OR_RETURN(
      TensorType x,
      TypedIn(c, 0,
              max_pool ? kFloatDTypes | DTypeSet{DType::kInt8, DType::kUint8} : kFloatDTypes));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 3, "input"));
  if (!node.HasAttr("kernel_shape")) return c.Error("attribute 'kernel_shape' is required");
  const int64_t storage_order = node.GetInt("storage_order", 0);
  if (storage_order != 0 && storage_order != 1) {
    return c.Error(
        absl::StrCat("attribute 'storage_order' is ", storage_order, "; it must be 0 or 1"));
  }
  if (node.op_type == "LpPool" && node.GetInt("p", 2) < 1) {
    return c.Error(absl::StrCat("attribute 'p' is ", node.GetInt("p", 2), "; it must be >= 1"));
  }
  std::vector<int64_t> kernel = node.GetInts("kernel_shape");
  std::vector<int64_t> spatial(x.shape.begin() + 2, x.shape.end());
  LOOM_ASSIGN_OR_RETURN(
      WindowGeometry geo,
      ResolveWindowGeometry(node, spatial, kernel, node.GetInt("ceil_mode", 0) != 0));
  Shape out = {x.shape[0], x.shape[1]};
  out.insert(out.end(), geo.output.begin(), geo.output.end());
  Types types = {{x.dtype, out}};
  if (max_pool) types.push_back({DType::kInt64, out});
  return types;
}

absl::StatusOr<Types> InferGlobalPool(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kFloatDTypes));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 3, "input"));
  Shape out = x.shape;
  std::fill(out.begin() + 2, out.end(), 1);
  return Types{{x.dtype, out}};
}

const DTypeSet kMatMulDTypes =
    kFloatDTypes | DTypeSet{DType::kInt32, DType::kInt64, DType::kUint32, DType::kUint64};

absl::StatusOr<Types> InferGemm(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"alpha", AttrKind::kFloat},
                                     {"beta", AttrKind::kFloat},
                                     {"transA", AttrKind::kInt},
                                     {"transB", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType a, TypedIn(c, 0, kMatMulDTypes));
  LOOM_ASSIGN_OR_RETURN(TensorType b, SameTypeIn(c, 1, a, "B"));
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
    LOOM_ASSIGN_OR_RETURN(TensorType cc, SameTypeIn(c, 2, a, "C"));
    // Unidirectional broadcast of C to [M, N].
    auto bc = BroadcastShapes(cc.shape, {m, n});
    if (cc.shape.size() > 2 || !bc.ok() || *bc != Shape{m, n}) {
      return c.Error(
          absl::StrCat("C ", cc.ToString(), " cannot be broadcast to [", m, ",", n, "]"));
    }
  }
  return Types{{a.dtype, {m, n}}};
}

absl::StatusOr<Types> InferMatMul(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType a, TypedIn(c, 0, kMatMulDTypes));
  LOOM_ASSIGN_OR_RETURN(TensorType b, SameTypeIn(c, 1, a, "B"));
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
  return Types{{a.dtype, out}};
}

absl::StatusOr<Types> InferEinsum(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"equation", AttrKind::kString}}));
  if (!c.node().HasAttr("equation")) return c.Error("attribute 'equation' is required");
  if (c.node().inputs.empty()) return c.Error("expects at least 1 input, got 0");
  LOOM_ASSIGN_OR_RETURN(TensorType first, TypedIn(c, 0, kMatMulDTypes));
  std::vector<Shape> shapes;
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType t, SameTypeIn(c, i, first, absl::StrCat("input ", i)));
    shapes.push_back(t.shape);
  }
  auto spec = ParseEinsum(c.node().GetString("equation", ""), shapes);
  if (!spec.ok()) return c.Error(spec.status().message());
  return Types{{first.dtype, spec->output_shape}};
}

// Reductions: axes are an attribute before `axes_input_opset` (13 for ReduceSum, 18 for the
// others) and an optional constant input from it.
absl::StatusOr<Types> InferReduce(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axes", AttrKind::kInts},
                                     {"keepdims", AttrKind::kInt},
                                     {"noop_with_empty_axes", AttrKind::kInt}}));
  const Node& node = c.node();
  const bool max_min = node.op_type == "ReduceMax" || node.op_type == "ReduceMin";
  LOOM_ASSIGN_OR_RETURN(TensorType x,
                        TypedIn(c, 0, max_min ? kNumericDTypes | kBoolDTypes : kNumericDTypes));
  const int64_t axes_input_opset = node.op_type == "ReduceSum" ? 13 : 18;
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> axes;
  if (c.opset() < axes_input_opset) {
    if (node.inputs.size() > 1) {
      return c.Error(absl::StrCat("before opset ", axes_input_opset,
                                  " the axes are an attribute, not an input"));
    }
    axes = node.GetInts("axes");
  } else {
    if (node.HasAttr("axes")) {
      return c.Error(absl::StrCat("from opset ", axes_input_opset,
                                  " the axes are an input, not an attribute"));
    }
    if (node.inputs.size() > 2) return c.Error("expects 1 or 2 inputs");
    if (c.Has(1)) {
      LOOM_ASSIGN_OR_RETURN(axes, c.ConstInts(1, "axes"));
    }
  }
  const bool keepdims = node.GetInt("keepdims", 1) != 0;
  const bool noop = node.GetInt("noop_with_empty_axes", 0) != 0;
  if (axes.empty()) {
    if (noop) return Types{x};
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  }
  LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(node, axes, rank));
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

absl::StatusOr<Types> InferArgMinMax(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt},
                                     {"keepdims", AttrKind::kInt},
                                     {"select_last_index", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kNumericDTypes));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(c.node(), c.node().GetInt("axis", 0), rank));
  if (x.shape[axis] == 0)
    return c.Error(absl::StrCat("input ", x.ToString(), " is empty along axis ", axis));
  Shape out = x.shape;
  if (c.node().GetInt("keepdims", 1) != 0) {
    out[axis] = 1;
  } else {
    out.erase(out.begin() + axis);
  }
  return Types{{DType::kInt64, out}};
}

absl::StatusOr<Types> InferCumSum(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"exclusive", AttrKind::kInt}, {"reverse", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kNumericDTypes));
  LOOM_ASSIGN_OR_RETURN(TensorType axis, TypedIn(c, 1, DTypeSet{DType::kInt32, DType::kInt64}));
  if (axis.shape.size() > 1 || NumElements(axis.shape) != 1) {
    return c.Error(absl::StrCat("axis ", axis.ToString(), " must be a scalar"));
  }
  if (std::optional<Tensor> a = c.MaybeConst(1)) {
    LOOM_RETURN_IF_ERROR(
        NormalizeAxis(c.node(), a->Int64At(0), static_cast<int64_t>(x.shape.size())).status());
  }
  return Types{x};
}

absl::StatusOr<Types> InferTopK(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs(
      {{"axis", AttrKind::kInt}, {"largest", AttrKind::kInt}, {"sorted", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kNumericDTypes));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(c.node(), c.node().GetInt("axis", -1), rank));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> k, c.ConstInts(1, "K"));
  if (k.size() != 1 || k[0] < 0 || k[0] > x.shape[axis]) {
    return c.Error(absl::StrCat("K [", absl::StrJoin(k, ","), "] must be one value in 0..",
                                x.shape[axis], " (the extent of axis ", axis, ")"));
  }
  Shape out = x.shape;
  out[axis] = k[0];
  return Types{{x.dtype, out}, {DType::kInt64, out}};
}

absl::StatusOr<Types> InferBatchNorm(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"epsilon", AttrKind::kFloat},
                                     {"momentum", AttrKind::kFloat},
                                     {"training_mode", AttrKind::kInt}}));
  const Node& node = c.node();
  if (node.GetInt("training_mode", 0) != 0) {
    return absl::UnimplementedError(absl::StrCat(
        node.Describe(), ": attribute 'training_mode' is 1; only inference is supported"));
  }
  for (size_t i = 1; i < node.outputs.size(); ++i) {
    if (!node.outputs[i].empty()) {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), ": only the first output is supported (inference only)"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kFloatDTypes));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 2, "input"));
  static constexpr const char* kNames[] = {"", "scale", "B", "mean", "var"};
  for (size_t i = 1; i <= 4; ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType p, TypedIn(c, i, kFloatDTypes));
    if (p.shape != Shape{x.shape[1]}) {
      return c.Error(absl::StrCat(kNames[i], " ", p.ToString(), " must have shape [", x.shape[1],
                                  "] (the channel count of input ", x.ToString(), ")"));
    }
  }
  return Same(node, x);
}

absl::Status CheckStashType(const Ctx& c) {
  const int64_t stash = c.node().GetInt("stash_type", 1);
  if (stash != 1) {
    return absl::UnimplementedError(absl::StrCat(c.node().Describe(),
                                                 ": attribute 'stash_type' is ", stash,
                                                 "; only 1 (float32 statistics) is supported"));
  }
  return absl::OkStatus();
}

// LayerNormalization: Y like X; Mean and InvStdDev float32 of X.shape[:axis] + [1, ...].
absl::StatusOr<Types> InferLayerNorm(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs(
      {{"axis", AttrKind::kInt}, {"epsilon", AttrKind::kFloat}, {"stash_type", AttrKind::kInt}}));
  LOOM_RETURN_IF_ERROR(CheckStashType(c));
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kFloatDTypes));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) return c.Error("X must have rank >= 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(c.node(), c.node().GetInt("axis", -1), rank));
  for (size_t i = 1; i <= 2; ++i) {
    if (i == 2 && !c.Has(2)) continue;
    LOOM_ASSIGN_OR_RETURN(TensorType p, SameTypeIn(c, i, x, i == 1 ? "Scale" : "B"));
    auto bc = BroadcastShapes(x.shape, p.shape);
    if (!bc.ok() || *bc != x.shape) {
      return c.Error(absl::StrCat(i == 1 ? "Scale " : "B ", p.ToString(),
                                  " does not broadcast to X ", x.ToString()));
    }
  }
  Shape stats = x.shape;
  std::fill(stats.begin() + axis, stats.end(), 1);
  return Types{x, {DType::kFloat32, stats}, {DType::kFloat32, stats}};
}

// InstanceNormalization (scale/B per channel) and GroupNormalization (per group at opset 18,
// per channel from 21).
absl::StatusOr<Types> InferChannelNorm(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"epsilon", AttrKind::kFloat},
                                     {"num_groups", AttrKind::kInt},
                                     {"stash_type", AttrKind::kInt}}));
  const Node& node = c.node();
  LOOM_ASSIGN_OR_RETURN(TensorType x, TypedIn(c, 0, kFloatDTypes));
  LOOM_RETURN_IF_ERROR(CheckRank(c, x, 3, "input"));
  const int64_t channels = x.shape[1];
  int64_t params = channels;
  if (node.op_type == "GroupNormalization") {
    LOOM_RETURN_IF_ERROR(CheckStashType(c));
    if (!node.HasAttr("num_groups")) return c.Error("attribute 'num_groups' is required");
    const int64_t groups = node.GetInt("num_groups", 0);
    if (groups < 1 || channels % groups != 0) {
      return c.Error(absl::StrCat("attribute 'num_groups' is ", groups,
                                  "; it must be positive and divide the ", channels, " channels"));
    }
    if (c.opset() < 21) params = groups;
  }
  for (size_t i = 1; i <= 2; ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType p, TypedIn(c, i, kFloatDTypes));
    if (p.shape != Shape{params}) {
      return c.Error(absl::StrCat(i == 1 ? "scale " : "bias ", p.ToString(), " must have shape [",
                                  params, "]"));
    }
  }
  return Types{x};
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

}  // namespace
}  // namespace internal

absl::StatusOr<ConvTransposeGeometry> ResolveConvTransposeGeometry(
    const Node& node, const std::vector<int64_t>& input_spatial,
    const std::vector<int64_t>& kernel) {
  const size_t n = input_spatial.size();
  auto list_error = [&](const char* name, size_t want) {
    return internal::NodeError(
        node, absl::StrCat("attribute '", name, "' [", absl::StrJoin(node.GetInts(name), ","),
                           "] must have ", want, " values"));
  };
  ConvTransposeGeometry g;
  g.kernel = kernel;
  g.strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  if (g.strides.size() != n) return list_error("strides", n);
  g.dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  if (g.dilations.size() != n) return list_error("dilations", n);
  std::vector<int64_t> output_padding = node.GetInts("output_padding", std::vector<int64_t>(n, 0));
  if (output_padding.size() != n) return list_error("output_padding", n);
  g.pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  if (g.pads.size() != 2 * n) return list_error("pads", 2 * n);
  std::vector<int64_t> output_shape = node.GetInts("output_shape");
  if (output_shape.size() == n + 2)
    output_shape.erase(output_shape.begin(), output_shape.begin() + 2);
  if (!output_shape.empty() && output_shape.size() != n) return list_error("output_shape", n);
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" &&
      auto_pad != "VALID") {
    return internal::NodeError(
        node, absl::StrCat("attribute 'auto_pad' is '", auto_pad,
                           "'; it must be NOTSET, SAME_UPPER, SAME_LOWER or VALID"));
  }
  // Python's floor division (the reference's), for negative total paddings.
  auto floor_half = [](int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  g.output.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (g.strides[i] < 1 || g.dilations[i] < 1 || kernel[i] < 1) {
      return internal::NodeError(
          node,
          absl::StrCat("kernel, strides and dilations must be >= 1 (dim ", i, ": kernel ",
                       kernel[i], ", stride ", g.strides[i], ", dilation ", g.dilations[i], ")"));
    }
    if (output_padding[i] < 0 || g.pads[i] < 0 || g.pads[i + n] < 0) {
      return internal::NodeError(node, "pads and output_padding must be non-negative");
    }
    const int64_t natural = g.strides[i] * (input_spatial[i] - 1) + output_padding[i] +
                            (kernel[i] - 1) * g.dilations[i] + 1;
    int64_t target = -1;
    if (!output_shape.empty()) {
      target = output_shape[i];
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      target = input_spatial[i] * g.strides[i];
    }
    if (auto_pad == "VALID" && output_shape.empty()) g.pads[i] = g.pads[i + n] = 0;
    if (target >= 0) {
      const int64_t total = natural - target;
      if (auto_pad == "SAME_UPPER") {
        g.pads[i] = floor_half(total);
        g.pads[i + n] = total - g.pads[i];
      } else {
        g.pads[i + n] = floor_half(total);
        g.pads[i] = total - g.pads[i + n];
      }
    }
    g.output[i] = natural - g.pads[i] - g.pads[i + n];
    if (g.output[i] < 1) {
      return internal::NodeError(node, absl::StrCat("output extent ", g.output[i],
                                                    " of spatial dim ", i, " is not positive"));
    }
  }
  return g;
}

namespace internal {

void RegisterNnShapeRules(RuleTable* table) {
  table->insert({
      {"ArgMax", InferArgMinMax},
      {"ArgMin", InferArgMinMax},
      {"AveragePool", InferPool},
      {"BatchNormalization", InferBatchNorm},
      {"Conv", InferConv},
      {"ConvTranspose", InferConvTranspose},
      {"CumSum", InferCumSum},
      {"Dropout", InferDropout},
      {"Einsum", InferEinsum},
      {"Gemm", InferGemm},
      {"GlobalAveragePool", InferGlobalPool},
      {"GlobalMaxPool", InferGlobalPool},
      {"GroupNormalization", InferChannelNorm},
      {"Hardmax", InferSoftmax},
      {"InstanceNormalization", InferChannelNorm},
      {"LayerNormalization", InferLayerNorm},
      {"LogSoftmax", InferSoftmax},
      {"LpPool", InferPool},
      {"MatMul", InferMatMul},
      {"MaxPool", InferPool},
      {"Softmax", InferSoftmax},
      {"TopK", InferTopK},
  });
  for (const char* op : {"ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                         "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"}) {
    table->insert({op, InferReduce});
  }
}

}  // namespace internal
}  // namespace loom::graph
