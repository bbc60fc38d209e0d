// Shape rules: shape arithmetic and data movement.
#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph::internal {
namespace {

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

}  // namespace

void RegisterTensorShapeRules(RuleTable* table) {
  table->insert({
      {"Concat", InferConcat},
      {"Constant", InferConstant},
      {"Flatten", InferFlatten},
      {"Gather", InferGather},
      {"Identity", InferIdentity},
      {"Pad", InferPad},
      {"Reshape", InferReshape},
      {"Shape", InferShape},
      {"Slice", InferSlice},
      {"Squeeze", InferSqueeze},
      {"Transpose", InferTranspose},
      {"Unsqueeze", InferUnsqueeze},
  });
}

}  // namespace loom::graph::internal
