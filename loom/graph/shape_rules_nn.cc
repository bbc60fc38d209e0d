// Shape rules: convolution, pooling, matrix products, normalization, reductions, softmax.
#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph::internal {
namespace {

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

void RegisterNnShapeRules(RuleTable* table) {
  table->insert({
      {"AveragePool", InferPool},
      {"BatchNormalization", InferBatchNorm},
      {"Conv", InferConv},
      {"Dropout", InferDropout},
      {"Gemm", InferGemm},
      {"GlobalAveragePool", InferGlobalAveragePool},
      {"MatMul", InferMatMul},
      {"MaxPool", InferPool},
      {"ReduceMean", InferReduceMean},
      {"Softmax", InferSoftmax},
  });
}

}  // namespace loom::graph::internal
