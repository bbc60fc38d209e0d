#include "loom/graph/data_movement.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/onnx_types.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph {
namespace {

using internal::NodeError;
using internal::NormalizeAxes;
using internal::NormalizeAxis;

std::string List(const IntList& v) { return absl::StrCat("[", absl::StrJoin(v, ","), "]"); }

// a * b, or nullopt when it overflows int64 (operands non-negative).
std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// Fails unless every dim is non-negative and the element count fits in int64.
absl::Status CheckShape(const Node& node, const Shape& shape, absl::string_view what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return NodeError(node, absl::StrCat(what, " ", ShapeToString(shape), " has a negative dim"));
    }
    std::optional<int64_t> m = CheckedMul(n, d);
    if (!m.has_value()) {
      return NodeError(node, absl::StrCat(what, " ", ShapeToString(shape), " is too large"));
    }
    n = *m;
  }
  return absl::OkStatus();
}

bool IsIndexType(DType d) { return d == DType::kInt64 || d == DType::kInt32; }

absl::Status CheckIndexType(const Node& node, const TensorType& t, absl::string_view what) {
  if (IsIndexType(t.dtype)) return absl::OkStatus();
  return NodeError(node, absl::StrCat(what, " must be int64 or int32, got ", t.ToString()));
}

}  // namespace

absl::StatusOr<DType> ResolveCastTarget(const Node& node) {
  auto it = node.attrs.find("to");
  if (it == node.attrs.end() || !std::holds_alternative<int64_t>(it->second)) {
    return NodeError(node, "attribute 'to' (an int, the ONNX element type) is required");
  }
  const int64_t to = std::get<int64_t>(it->second);
  if (to < std::numeric_limits<int32_t>::min() || to > std::numeric_limits<int32_t>::max()) {
    return NodeError(node, absl::StrCat("attribute 'to' is ", to, ", not an ONNX element type"));
  }
  auto dtype = SupportedDType(static_cast<int32_t>(to), "attribute 'to'");
  if (!dtype.ok()) return NodeError(node, dtype.status().message());
  return *dtype;
}

absl::StatusOr<Shape> ResolveReshape(const Node& node, const Shape& data, const IntList& spec) {
  const bool allowzero = node.GetInt("allowzero", 0) != 0;
  Shape out;
  int64_t infer_at = -1;
  int64_t known = 1;
  bool has_zero = false;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t d = spec[i];
    if (d == -1) {
      if (infer_at >= 0) return NodeError(node, absl::StrCat("shape ", List(spec), " has two -1"));
      infer_at = static_cast<int64_t>(i);
      out.push_back(-1);
      continue;
    }
    if (d < -1) {
      return NodeError(node, absl::StrCat("shape ", List(spec), " has an invalid dim ", d));
    }
    if (d == 0 && !allowzero) {
      if (i >= data.size()) {
        return NodeError(
            node, absl::StrCat("shape ", List(spec), " copies dim ", i, " (0) but the input ",
                               ShapeToString(data), " has no such dim"));
      }
      d = data[i];
    }
    has_zero = has_zero || d == 0;
    std::optional<int64_t> k = CheckedMul(known, d);
    if (!k.has_value()) return NodeError(node, absl::StrCat("shape ", List(spec), " is too large"));
    known = *k;
    out.push_back(d);
  }
  const int64_t total = NumElements(data);
  if (infer_at >= 0) {
    if (has_zero && allowzero) {
      return NodeError(
          node, absl::StrCat("shape ", List(spec), " has both -1 and 0, which allowzero forbids"));
    }
    if (known == 0 || total % known != 0) {
      return NodeError(node,
                       absl::StrCat("cannot reshape ", ShapeToString(data), " to ", List(spec)));
    }
    out[static_cast<size_t>(infer_at)] = total / known;
  } else if (known != total) {
    return NodeError(node, absl::StrCat("cannot reshape ", ShapeToString(data), " (", total,
                                        " elements) to ", List(spec)));
  }
  return out;
}

absl::StatusOr<Shape> ResolveFlatten(const Node& node, const Shape& data) {
  const int64_t rank = static_cast<int64_t>(data.size());
  int64_t axis = node.GetInt("axis", 1);
  if (axis < -rank || axis > rank) {
    return NodeError(node, absl::StrCat("axis ", axis, " is out of range [", -rank, ", ", rank,
                                        "] for input ", ShapeToString(data)));
  }
  if (axis < 0) axis += rank;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? outer : inner) *= data[static_cast<size_t>(i)];
  return Shape{outer, inner};
}

absl::StatusOr<ConcatSpec> ResolveConcat(const Node& node, const std::vector<TensorType>& inputs) {
  if (!node.HasAttr("axis")) return NodeError(node, "attribute 'axis' is required");
  if (inputs.empty()) return NodeError(node, "needs at least one input");
  const TensorType& first = inputs[0];
  const int64_t rank = static_cast<int64_t>(first.shape.size());
  if (rank == 0) return NodeError(node, "cannot concatenate scalars");
  ConcatSpec spec;
  LOOM_ASSIGN_OR_RETURN(spec.axis, NormalizeAxis(node, node.GetInt("axis", 0), rank));
  spec.out = first.shape;
  spec.out[static_cast<size_t>(spec.axis)] = 0;
  for (const TensorType& t : inputs) {
    bool ok = t.dtype == first.dtype && static_cast<int64_t>(t.shape.size()) == rank;
    for (int64_t d = 0; ok && d < rank; ++d) {
      ok = d == spec.axis || t.shape[static_cast<size_t>(d)] == first.shape[static_cast<size_t>(d)];
    }
    if (!ok) {
      return NodeError(node, absl::StrCat("input ", t.ToString(), " does not match ",
                                          first.ToString(), " outside axis ", spec.axis));
    }
    spec.out[static_cast<size_t>(spec.axis)] += t.shape[static_cast<size_t>(spec.axis)];
  }
  return spec;
}

absl::StatusOr<IntList> ResolvePerm(const Node& node, int64_t rank) {
  IntList perm;
  if (node.HasAttr("perm")) {
    perm = node.GetInts("perm");
  } else {
    for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
  }
  if (static_cast<int64_t>(perm.size()) != rank) {
    return NodeError(node, absl::StrCat("perm ", List(perm), " does not match rank ", rank));
  }
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t p : perm) {
    if (p < 0 || p >= rank || seen[static_cast<size_t>(p)]) {
      return NodeError(node,
                       absl::StrCat("perm ", List(perm), " is not a permutation of 0..", rank - 1));
    }
    seen[static_cast<size_t>(p)] = true;
  }
  return perm;
}

namespace {

// Axes of Squeeze/Unsqueeze: an attribute before opset 13, an input from 13.
absl::StatusOr<OptionalInts> SqueezeAxes(const Node& node, int64_t opset,
                                         const OptionalInts& axes_input) {
  if (opset < 13) {
    if (axes_input.has_value()) {
      return NodeError(node, "before opset 13 the axes are an attribute, not an input");
    }
    if (!node.HasAttr("axes")) return OptionalInts();
    return OptionalInts(node.GetInts("axes"));
  }
  if (node.HasAttr("axes")) {
    return NodeError(node, "from opset 13 the axes are an input, not an attribute");
  }
  return axes_input;
}

}  // namespace

absl::StatusOr<Shape> ResolveSqueeze(const Node& node, int64_t opset, const Shape& data,
                                     const OptionalInts& axes_input) {
  LOOM_ASSIGN_OR_RETURN(OptionalInts axes_opt, SqueezeAxes(node, opset, axes_input));
  const int64_t rank = static_cast<int64_t>(data.size());
  std::vector<bool> drop(static_cast<size_t>(rank), false);
  if (axes_opt.has_value()) {
    LOOM_ASSIGN_OR_RETURN(IntList axes, NormalizeAxes(node, *axes_opt, rank));
    for (int64_t a : axes) {
      if (data[static_cast<size_t>(a)] != 1) {
        return NodeError(node, absl::StrCat("cannot squeeze axis ", a, " of ", ShapeToString(data),
                                            ": its size is not 1"));
      }
      drop[static_cast<size_t>(a)] = true;
    }
  } else {
    for (int64_t i = 0; i < rank; ++i) drop[static_cast<size_t>(i)] = data[i] == 1;
  }
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    if (!drop[static_cast<size_t>(i)]) out.push_back(data[static_cast<size_t>(i)]);
  }
  return out;
}

absl::StatusOr<Shape> ResolveUnsqueeze(const Node& node, int64_t opset, const Shape& data,
                                       const OptionalInts& axes_input) {
  LOOM_ASSIGN_OR_RETURN(OptionalInts axes_opt, SqueezeAxes(node, opset, axes_input));
  if (!axes_opt.has_value() || axes_opt->empty()) return NodeError(node, "axes are required");
  const int64_t out_rank = static_cast<int64_t>(data.size() + axes_opt->size());
  LOOM_ASSIGN_OR_RETURN(IntList axes, NormalizeAxes(node, *axes_opt, out_rank));
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : axes) inserted[static_cast<size_t>(a)] = true;
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < out_rank; ++i) {
    out.push_back(inserted[static_cast<size_t>(i)] ? 1 : data[next++]);
  }
  return out;
}

absl::StatusOr<SliceSpec> ResolveSlice(const Node& node, const Shape& data, const IntList& starts,
                                       const IntList& ends, const OptionalInts& axes_in,
                                       const OptionalInts& steps_in) {
  const int64_t rank = static_cast<int64_t>(data.size());
  IntList axes, steps;
  if (axes_in.has_value()) {
    axes = *axes_in;
  } else {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  steps = steps_in.has_value() ? *steps_in : IntList(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return NodeError(node, absl::StrCat("starts, ends, axes and steps must have the same length (",
                                        starts.size(), ", ", ends.size(), ", ", axes.size(), ", ",
                                        steps.size(), ")"));
  }
  LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(node, axes, rank));
  SliceSpec spec;
  spec.start.assign(static_cast<size_t>(rank), 0);
  spec.step.assign(static_cast<size_t>(rank), 1);
  spec.out = data;
  for (size_t i = 0; i < axes.size(); ++i) {
    const size_t a = static_cast<size_t>(axes[i]);
    const int64_t dim = data[a];
    const int64_t step = steps[i];
    if (step == 0) return NodeError(node, absl::StrCat("steps ", List(steps), " contain a 0"));
    // Clamp before adding dim, so that INT64_MIN/MAX (what exporters write for "to the end")
    // cannot overflow.
    int64_t start = std::clamp<int64_t>(starts[i], -dim - 1, dim + 1);
    int64_t end = std::clamp<int64_t>(ends[i], -dim - 1, dim + 1);
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    int64_t len;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      len = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      len = start > end ? (start - end - 1) / (-step) + 1 : 0;
    }
    spec.start[a] = start;
    spec.step[a] = step;
    spec.out[a] = len;
  }
  return spec;
}

absl::StatusOr<PadSpec> ResolvePad(const Node& node, int64_t opset, const Shape& data,
                                   const IntList& pads, const OptionalInts& axes_in) {
  PadSpec spec;
  const std::string mode = node.GetString("mode", "constant");
  if (mode == "constant") {
    spec.mode = PadMode::kConstant;
  } else if (mode == "reflect") {
    spec.mode = PadMode::kReflect;
  } else if (mode == "edge") {
    spec.mode = PadMode::kEdge;
  } else if (mode == "wrap" && opset >= 19) {
    spec.mode = PadMode::kWrap;
  } else {
    return NodeError(node,
                     absl::StrCat("mode '", mode, "' is not supported (constant, reflect, ", "edge",
                                  opset >= 19 ? ", wrap" : "; wrap from opset 19", ")"));
  }
  if (node.HasAttr("pads")) {
    return NodeError(node, "from opset 11 the pads are an input, not an attribute");
  }
  const int64_t rank = static_cast<int64_t>(data.size());
  IntList axes;
  if (axes_in.has_value()) {
    if (opset < 18) return NodeError(node, "the axes input needs opset 18");
    LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(node, *axes_in, rank));
  } else {
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  }
  const size_t n = axes.size();
  if (pads.size() != 2 * n) {
    return NodeError(
        node, absl::StrCat("pads ", List(pads), " has ", pads.size(), " values; expected ", 2 * n));
  }
  spec.begin.assign(static_cast<size_t>(rank), 0);
  spec.end.assign(static_cast<size_t>(rank), 0);
  spec.out = data;
  for (size_t i = 0; i < n; ++i) {
    const size_t a = static_cast<size_t>(axes[i]);
    const int64_t begin = pads[i], end = pads[i + n];
    const int64_t dim = data[a];
    int64_t out = 0;
    if (__builtin_add_overflow(dim, begin, &out) || __builtin_add_overflow(out, end, &out)) {
      return NodeError(node, absl::StrCat("pads ", List(pads), " are too large"));
    }
    if (out < 0) {
      return NodeError(
          node, absl::StrCat("pads ", List(pads), " crop more than dim ", a, " (", dim, ") has"));
    }
    const int64_t kept = dim + std::min<int64_t>(begin, 0) + std::min<int64_t>(end, 0);
    if (spec.mode != PadMode::kConstant && out > 0 && kept <= 0) {
      return NodeError(
          node, absl::StrCat(mode, " padding of dim ", a, " needs data, but ", ShapeToString(data),
                             " cropped by ", List(pads), " leaves none"));
    }
    spec.begin[a] = begin;
    spec.end[a] = end;
    spec.out[a] = out;
  }
  LOOM_RETURN_IF_ERROR(CheckShape(node, spec.out, "the padded shape"));
  return spec;
}

absl::StatusOr<Shape> ResolveExpand(const Node& node, const Shape& data, const IntList& shape) {
  for (int64_t d : shape) {
    if (d < 0) return NodeError(node, absl::StrCat("shape ", List(shape), " has a negative dim"));
  }
  auto out = BroadcastShapes(data, shape);
  if (!out.ok()) {
    return NodeError(node, absl::StrCat("cannot expand ", ShapeToString(data), " to ", List(shape),
                                        ": ", out.status().message()));
  }
  LOOM_RETURN_IF_ERROR(CheckShape(node, *out, "the expanded shape"));
  return *out;
}

absl::StatusOr<Shape> ResolveTile(const Node& node, const Shape& data, const IntList& repeats) {
  if (repeats.size() != data.size()) {
    return NodeError(node, absl::StrCat("repeats ", List(repeats),
                                        " must have one value per dim of ", ShapeToString(data)));
  }
  Shape out(data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    if (repeats[i] < 0) {
      return NodeError(node, absl::StrCat("repeats ", List(repeats), " has a negative value"));
    }
    std::optional<int64_t> d = CheckedMul(data[i], repeats[i]);
    if (!d.has_value())
      return NodeError(node, absl::StrCat("repeats ", List(repeats), " overflow"));
    out[i] = *d;
  }
  LOOM_RETURN_IF_ERROR(CheckShape(node, out, "the tiled shape"));
  return out;
}

absl::StatusOr<SplitSpec> ResolveSplit(const Node& node, int64_t opset, const Shape& data,
                                       const OptionalInts& split_input, size_t num_outputs) {
  const int64_t rank = static_cast<int64_t>(data.size());
  if (rank == 0) return NodeError(node, "cannot split a scalar");
  SplitSpec spec;
  LOOM_ASSIGN_OR_RETURN(spec.axis, NormalizeAxis(node, node.GetInt("axis", 0), rank));
  const int64_t dim = data[static_cast<size_t>(spec.axis)];
  OptionalInts split;
  if (opset < 13) {
    if (split_input.has_value()) {
      return NodeError(node, "before opset 13 'split' is an attribute, not an input");
    }
    if (node.HasAttr("split")) split = node.GetInts("split");
  } else {
    if (node.HasAttr("split")) {
      return NodeError(node, "from opset 13 'split' is an input, not an attribute");
    }
    split = split_input;
  }
  const bool has_num_outputs = node.HasAttr("num_outputs");
  if (has_num_outputs && opset < 18) {
    return NodeError(node, "attribute 'num_outputs' needs opset 18");
  }
  if (split.has_value()) {
    if (has_num_outputs) {
      return NodeError(node, "give either the split input or num_outputs, not both");
    }
    if (split->size() != num_outputs) {
      return NodeError(node, absl::StrCat("split ", List(*split), " has ", split->size(),
                                          " parts but the node has ", num_outputs, " outputs"));
    }
    int64_t total = 0;
    for (int64_t s : *split) {
      if (s < 0)
        return NodeError(node, absl::StrCat("split ", List(*split), " has a negative part"));
      if (__builtin_add_overflow(total, s, &total)) {
        return NodeError(node, absl::StrCat("split ", List(*split), " overflows"));
      }
    }
    if (total != dim) {
      return NodeError(node, absl::StrCat("split ", List(*split), " sums to ", total, " but axis ",
                                          spec.axis, " has size ", dim));
    }
    spec.sizes = *split;
    return spec;
  }
  int64_t parts = static_cast<int64_t>(num_outputs);
  if (has_num_outputs) {
    parts = node.GetInt("num_outputs", 0);
    if (parts < 1 || parts != static_cast<int64_t>(num_outputs)) {
      return NodeError(node, absl::StrCat("num_outputs ", parts, " must equal the node's ",
                                          num_outputs, " outputs"));
    }
    // Opset 18: ceil(dim / parts) per part, the last one smaller.
    const int64_t chunk = (dim + parts - 1) / parts;
    int64_t left = dim;
    for (int64_t i = 0; i < parts; ++i) {
      const int64_t s = std::max<int64_t>(std::min(chunk, left), 0);
      spec.sizes.push_back(s);
      left -= s;
    }
    return spec;
  }
  if (parts < 1) return NodeError(node, "has no outputs");
  if (dim % parts != 0) {
    return NodeError(node, absl::StrCat("axis ", spec.axis, " of size ", dim,
                                        " does not split evenly into ", parts, " outputs"));
  }
  spec.sizes.assign(static_cast<size_t>(parts), dim / parts);
  return spec;
}

absl::StatusOr<GatherSpec> ResolveGather(const Node& node, const Shape& data,
                                         const TensorType& indices) {
  LOOM_RETURN_IF_ERROR(CheckIndexType(node, indices, "indices"));
  const int64_t rank = static_cast<int64_t>(data.size());
  if (rank == 0) return NodeError(node, "data must have rank >= 1");
  GatherSpec spec;
  LOOM_ASSIGN_OR_RETURN(spec.axis, NormalizeAxis(node, node.GetInt("axis", 0), rank));
  spec.out.assign(data.begin(), data.begin() + spec.axis);
  spec.out.insert(spec.out.end(), indices.shape.begin(), indices.shape.end());
  spec.out.insert(spec.out.end(), data.begin() + spec.axis + 1, data.end());
  return spec;
}

absl::StatusOr<int64_t> ResolveGatherElements(const Node& node, const Shape& data,
                                              const TensorType& indices) {
  LOOM_RETURN_IF_ERROR(CheckIndexType(node, indices, "indices"));
  const int64_t rank = static_cast<int64_t>(data.size());
  if (rank == 0) return NodeError(node, "data must have rank >= 1");
  if (indices.shape.size() != data.size()) {
    return NodeError(node, absl::StrCat("indices ", indices.ToString(), " must have the rank of ",
                                        "data ", ShapeToString(data)));
  }
  return NormalizeAxis(node, node.GetInt("axis", 0), rank);
}

absl::StatusOr<GatherNDSpec> ResolveGatherND(const Node& node, const Shape& data,
                                             const TensorType& indices) {
  if (indices.dtype != DType::kInt64) {
    return NodeError(node, absl::StrCat("indices must be int64, got ", indices.ToString()));
  }
  GatherNDSpec spec;
  spec.batch_dims = node.GetInt("batch_dims", 0);
  const int64_t r = static_cast<int64_t>(data.size());
  const int64_t q = static_cast<int64_t>(indices.shape.size());
  const int64_t b = spec.batch_dims;
  if (r < 1 || q < 1) return NodeError(node, "data and indices must have rank >= 1");
  if (b < 0 || b >= std::min(r, q)) {
    return NodeError(node, absl::StrCat("batch_dims ", b, " must be in [0, min(rank(data), ",
                                        "rank(indices))) = [0, ", std::min(r, q), ")"));
  }
  for (int64_t i = 0; i < b; ++i) {
    if (data[static_cast<size_t>(i)] != indices.shape[static_cast<size_t>(i)]) {
      return NodeError(node, absl::StrCat("the first ", b, " dims of data ", ShapeToString(data),
                                          " and indices ", indices.ToString(), " must agree"));
    }
  }
  const int64_t k = indices.shape.back();
  if (k < 0 || k > r - b) {
    return NodeError(node, absl::StrCat("the last indices dim (", k, ") must be at most rank(data)",
                                        " - batch_dims = ", r - b));
  }
  spec.out.assign(indices.shape.begin(), indices.shape.end() - 1);
  spec.out.insert(spec.out.end(), data.begin() + b + k, data.end());
  return spec;
}

absl::StatusOr<ScatterReduction> ResolveScatterReduction(const Node& node, int64_t opset) {
  const std::string r = node.GetString("reduction", "none");
  if (r == "none") return ScatterReduction::kNone;
  if (opset >= 16 && r == "add") return ScatterReduction::kAdd;
  if (opset >= 16 && r == "mul") return ScatterReduction::kMul;
  if (opset >= 18 && r == "max") return ScatterReduction::kMax;
  if (opset >= 18 && r == "min") return ScatterReduction::kMin;
  return NodeError(node, absl::StrCat("reduction '", r, "' is not supported at opset ", opset,
                                      " (none; add, mul from 16; max, min from 18)"));
}

absl::StatusOr<int64_t> ResolveScatterElements(const Node& node, const TensorType& data,
                                               const TensorType& indices,
                                               const TensorType& updates) {
  LOOM_RETURN_IF_ERROR(CheckIndexType(node, indices, "indices"));
  if (updates.dtype != data.dtype || updates.shape != indices.shape) {
    return NodeError(node, absl::StrCat("updates ", updates.ToString(), " must have data's type (",
                                        DTypeName(data.dtype), ") and indices' shape ",
                                        ShapeToString(indices.shape)));
  }
  const int64_t rank = static_cast<int64_t>(data.shape.size());
  if (rank == 0 || indices.shape.size() != data.shape.size()) {
    return NodeError(node, absl::StrCat("indices ", indices.ToString(), " must have the rank of ",
                                        "data ", data.ToString(), " (>= 1)"));
  }
  return NormalizeAxis(node, node.GetInt("axis", 0), rank);
}

absl::Status CheckScatterND(const Node& node, const TensorType& data, const TensorType& indices,
                            const TensorType& updates) {
  if (indices.dtype != DType::kInt64) {
    return NodeError(node, absl::StrCat("indices must be int64, got ", indices.ToString()));
  }
  const int64_t r = static_cast<int64_t>(data.shape.size());
  const int64_t q = static_cast<int64_t>(indices.shape.size());
  if (r < 1 || q < 1) return NodeError(node, "data and indices must have rank >= 1");
  const int64_t k = indices.shape.back();
  if (k < 0 || k > r) {
    return NodeError(node, absl::StrCat("the last indices dim (", k, ") exceeds rank(data) ", r));
  }
  Shape want(indices.shape.begin(), indices.shape.end() - 1);
  want.insert(want.end(), data.shape.begin() + k, data.shape.end());
  if (updates.dtype != data.dtype || updates.shape != want) {
    return NodeError(node, absl::StrCat("updates ", updates.ToString(), " must be ",
                                        TensorType{data.dtype, want}.ToString()));
  }
  return absl::OkStatus();
}

absl::Status CheckIndexRange(const Node& node, const Tensor& indices, int64_t extent,
                             const std::string& what) {
  for (int64_t i = 0; i < indices.num_elements(); ++i) {
    const int64_t v = indices.Int64At(i);
    if (v < -extent || v >= extent) {
      return NodeError(node, absl::StrCat("index ", v, " (element ", i, " of the indices) is out ",
                                          "of range for ", what, " of size ", extent));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNDIndexRange(const Node& node, const Tensor& indices, const Shape& data,
                               int64_t batch_dims) {
  if (indices.rank() == 0) return absl::OkStatus();
  const int64_t k = indices.shape().back();
  for (int64_t i = 0; i < indices.num_elements(); ++i) {
    const int64_t dim = data[static_cast<size_t>(batch_dims + i % std::max<int64_t>(k, 1))];
    const int64_t v = indices.Int64At(i);
    if (v < -dim || v >= dim) {
      return NodeError(
          node, absl::StrCat("index ", v, " (element ", i, " of the indices) is out ",
                             "of range for data dim ", batch_dims + i % k, " of size ", dim));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<OneHotSpec> ResolveOneHot(const Node& node, const Shape& indices,
                                         const Tensor& depth) {
  if (depth.num_elements() != 1) {
    return NodeError(node,
                     absl::StrCat("depth must have one element, got ", depth.type().ToString()));
  }
  OneHotSpec spec;
  const double d = depth.DoubleAt(0);
  if (!(d >= 1) || d > 9.0e18) {
    return NodeError(node, absl::StrCat("depth ", d, " must be a positive number"));
  }
  spec.depth = static_cast<int64_t>(d);
  const int64_t out_rank = static_cast<int64_t>(indices.size()) + 1;
  LOOM_ASSIGN_OR_RETURN(spec.axis, NormalizeAxis(node, node.GetInt("axis", -1), out_rank));
  spec.out = indices;
  spec.out.insert(spec.out.begin() + spec.axis, spec.depth);
  LOOM_RETURN_IF_ERROR(CheckShape(node, spec.out, "the one-hot shape"));
  return spec;
}

namespace {

absl::StatusOr<int64_t> Blocksize(const Node& node, const Shape& data) {
  if (data.size() != 4) {
    return NodeError(node,
                     absl::StrCat("input must be 4-D [N, C, H, W], got ", ShapeToString(data)));
  }
  if (!node.HasAttr("blocksize")) return NodeError(node, "attribute 'blocksize' is required");
  const int64_t b = node.GetInt("blocksize", 0);
  if (b < 1 || b > (int64_t{1} << 20)) {
    return NodeError(node, absl::StrCat("blocksize ", b, " must be positive"));
  }
  return b;
}

absl::StatusOr<bool> ModeIsCrd(const Node& node, bool crd_allowed) {
  const std::string mode = node.GetString("mode", "DCR");
  if (mode == "DCR") return false;
  if (mode == "CRD" && crd_allowed) return true;
  return NodeError(node, absl::StrCat("mode '", mode, "' is not supported (DCR",
                                      crd_allowed ? ", CRD" : "", ")"));
}

}  // namespace

absl::StatusOr<DepthSpaceSpec> ResolveDepthToSpace(const Node& node, const Shape& data) {
  DepthSpaceSpec spec;
  LOOM_ASSIGN_OR_RETURN(spec.blocksize, Blocksize(node, data));
  LOOM_ASSIGN_OR_RETURN(spec.crd, ModeIsCrd(node, /*crd_allowed=*/true));
  const int64_t b = spec.blocksize;
  if (data[1] % (b * b) != 0) {
    return NodeError(node, absl::StrCat("channels ", data[1],
                                        " are not a multiple of blocksize^2 (", b * b, ")"));
  }
  std::optional<int64_t> h = CheckedMul(data[2], b), w = CheckedMul(data[3], b);
  if (!h || !w) return NodeError(node, "the output is too large");
  spec.out = {data[0], data[1] / (b * b), *h, *w};
  LOOM_RETURN_IF_ERROR(CheckShape(node, spec.out, "the output shape"));
  return spec;
}

absl::StatusOr<DepthSpaceSpec> ResolveSpaceToDepth(const Node& node, int64_t opset,
                                                   const Shape& data) {
  DepthSpaceSpec spec;
  LOOM_ASSIGN_OR_RETURN(spec.blocksize, Blocksize(node, data));
  LOOM_ASSIGN_OR_RETURN(spec.crd, ModeIsCrd(node, /*crd_allowed=*/opset >= 28));
  const int64_t b = spec.blocksize;
  if (data[2] % b != 0 || data[3] % b != 0) {
    return NodeError(node, absl::StrCat("height and width of ", ShapeToString(data),
                                        " are not multiples of blocksize ", b));
  }
  std::optional<int64_t> c = CheckedMul(data[1], b * b);
  if (!c) return NodeError(node, "the output is too large");
  spec.out = {data[0], *c, data[2] / b, data[3] / b};
  LOOM_RETURN_IF_ERROR(CheckShape(node, spec.out, "the output shape"));
  return spec;
}

absl::StatusOr<int64_t> ResolveRangeCount(const Node& node, const Tensor& start,
                                          const Tensor& limit, const Tensor& delta) {
  for (const Tensor* t : {&start, &limit, &delta}) {
    if (t->num_elements() != 1 || t->dtype() != start.dtype()) {
      return NodeError(node,
                       absl::StrCat("start, limit and delta must be scalars of one type, got ",
                                    start.type().ToString(), ", ", limit.type().ToString(), ", ",
                                    delta.type().ToString()));
    }
  }
  if (IsFloatingDType(start.dtype())) {
    const double s = start.DoubleAt(0), l = limit.DoubleAt(0), d = delta.DoubleAt(0);
    if (d == 0 || !std::isfinite(s) || !std::isfinite(l) || !std::isfinite(d)) {
      return NodeError(node, absl::StrCat("Range(", s, ", ", l, ", ", d,
                                          ") needs finite values and a non-zero delta"));
    }
    const double n = std::ceil((l - s) / d);
    if (n > 9.0e18)
      return NodeError(node, absl::StrCat("Range(", s, ", ", l, ", ", d, ") is too long"));
    return std::max<int64_t>(0, static_cast<int64_t>(n));
  }
  if (!IsIntegerDType(start.dtype())) {
    return NodeError(node, absl::StrCat("Range does not take ", DTypeName(start.dtype())));
  }
  const int64_t s = start.Int64At(0), l = limit.Int64At(0), d = delta.Int64At(0);
  if (d == 0) return NodeError(node, "delta must not be 0");
  // ceil((l - s) / d) in 128 bits: the difference of two int64s may overflow.
  const __int128 diff = static_cast<__int128>(l) - s;
  __int128 n = diff / d;
  if (diff % d != 0 && ((diff > 0) == (d > 0))) ++n;
  if (n > std::numeric_limits<int64_t>::max()) {
    return NodeError(node, absl::StrCat("Range(", s, ", ", l, ", ", d, ") is too large"));
  }
  return static_cast<int64_t>(std::max<__int128>(0, n));
}

DimRange ResolveShapeRange(const Node& node, int64_t opset, int64_t rank) {
  int64_t start = 0, end = rank;
  if (opset >= 15) {
    start = node.GetInt("start", 0);
    end = node.GetInt("end", rank);
  }
  auto clamp = [rank](int64_t v) {
    if (v < 0) v = std::max<int64_t>(v, -rank) + rank;
    return std::clamp<int64_t>(v, 0, rank);
  };
  start = clamp(start);
  end = clamp(end);
  return {start, std::max(start, end)};
}

absl::StatusOr<TensorType> ResolveConstantOfShape(const Node& node, const IntList& shape) {
  TensorType type{DType::kFloat32, shape};
  if (node.HasAttr("value")) {
    const Tensor* value = node.GetTensor("value");
    if (value == nullptr || !value->defined() || value->num_elements() != 1) {
      return NodeError(node, "attribute 'value' must be a one-element tensor");
    }
    type.dtype = value->dtype();
  }
  LOOM_RETURN_IF_ERROR(CheckShape(node, shape, "shape"));
  return type;
}

double ResizeSourceCoordinate(const ResizeSpec& spec, size_t axis, double y, int64_t in,
                              int64_t out) {
  const double scale = spec.scales[axis];
  const double length = scale * static_cast<double>(in);  // the unrounded output length
  switch (spec.coordinate_mode) {
    case CoordinateMode::kAlignCorners:
      return length == 1 ? 0.0 : y * static_cast<double>(in - 1) / (length - 1);
    case CoordinateMode::kAsymmetric:
      return y / scale;
    case CoordinateMode::kTfCropAndResize: {
      const double roi = spec.roi_end[axis] - spec.roi_start[axis];
      const double x = length == 1 ? roi * static_cast<double>(in - 1) / 2
                                   : y * roi * static_cast<double>(in - 1) / (length - 1);
      return x + spec.roi_start[axis] * static_cast<double>(in - 1);
    }
    case CoordinateMode::kPytorchHalfPixel:
      return length == 1 ? -0.5 : (y + 0.5) / scale - 0.5;
    case CoordinateMode::kHalfPixel:
      return (y + 0.5) / scale - 0.5;
    case CoordinateMode::kHalfPixelSymmetric: {
      const double adjustment = static_cast<double>(out) / length;
      const double center = static_cast<double>(in) / 2;
      return center * (1 - adjustment) + (y + 0.5) / scale - 0.5;
    }
  }
  return 0;
}

absl::StatusOr<ResizeSpec> ResolveResize(const Node& node, int64_t opset, const Shape& data,
                                         const std::optional<std::vector<double>>& roi_in,
                                         const std::optional<std::vector<double>>& scales_in,
                                         const OptionalInts& sizes_in) {
  ResizeSpec spec;
  const std::string mode = node.GetString("mode", "nearest");
  if (mode == "nearest") {
    spec.mode = ResizeMode::kNearest;
  } else if (mode == "linear") {
    spec.mode = ResizeMode::kLinear;
  } else if (mode == "cubic") {
    spec.mode = ResizeMode::kCubic;
  } else {
    return NodeError(node, absl::StrCat("mode '", mode, "' is not one of nearest, linear, cubic"));
  }
  const std::string nearest = node.GetString("nearest_mode", "round_prefer_floor");
  if (nearest == "round_prefer_floor") {
    spec.nearest_mode = NearestMode::kRoundPreferFloor;
  } else if (nearest == "round_prefer_ceil") {
    spec.nearest_mode = NearestMode::kRoundPreferCeil;
  } else if (nearest == "floor") {
    spec.nearest_mode = NearestMode::kFloor;
  } else if (nearest == "ceil") {
    spec.nearest_mode = NearestMode::kCeil;
  } else {
    return NodeError(node, absl::StrCat("nearest_mode '", nearest, "' is not supported"));
  }
  const std::string coord = node.GetString("coordinate_transformation_mode", "half_pixel");
  if (coord == "half_pixel") {
    spec.coordinate_mode = CoordinateMode::kHalfPixel;
  } else if (coord == "half_pixel_symmetric" && opset >= 19) {
    spec.coordinate_mode = CoordinateMode::kHalfPixelSymmetric;
  } else if (coord == "pytorch_half_pixel") {
    spec.coordinate_mode = CoordinateMode::kPytorchHalfPixel;
  } else if (coord == "align_corners") {
    spec.coordinate_mode = CoordinateMode::kAlignCorners;
  } else if (coord == "asymmetric") {
    spec.coordinate_mode = CoordinateMode::kAsymmetric;
  } else if (coord == "tf_crop_and_resize") {
    spec.coordinate_mode = CoordinateMode::kTfCropAndResize;
  } else {
    return NodeError(node, absl::StrCat("coordinate_transformation_mode '", coord,
                                        "' is not supported at opset ", opset));
  }
  spec.cubic_coeff_a = node.GetFloat("cubic_coeff_a", -0.75f);
  spec.exclude_outside = node.GetInt("exclude_outside", 0) != 0;
  spec.extrapolation_value = node.GetFloat("extrapolation_value", 0.0f);
  spec.antialias = node.GetInt("antialias", 0) != 0;
  if (spec.antialias && spec.mode == ResizeMode::kNearest) {
    return NodeError(node, "antialias applies to linear and cubic modes, not nearest");
  }

  const int64_t rank = static_cast<int64_t>(data.size());
  IntList axes;
  if (node.HasAttr("axes")) {
    LOOM_ASSIGN_OR_RETURN(axes, NormalizeAxes(node, node.GetInts("axes"), rank));
  } else {
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  }
  const size_t n = axes.size();
  const bool has_scales = scales_in.has_value() && !scales_in->empty();
  const bool has_sizes = sizes_in.has_value() && !sizes_in->empty();
  if (has_scales == has_sizes) {
    return NodeError(node, "exactly one of scales and sizes must be given");
  }
  spec.scales.assign(static_cast<size_t>(rank), 1.0);
  spec.out = data;
  spec.roi_start.assign(static_cast<size_t>(rank), 0.0);
  spec.roi_end.assign(static_cast<size_t>(rank), 1.0);
  if (spec.coordinate_mode == CoordinateMode::kTfCropAndResize) {
    if (!roi_in.has_value() || roi_in->size() != 2 * n) {
      return NodeError(node, absl::StrCat("tf_crop_and_resize needs roi with ", 2 * n, " values"));
    }
    for (size_t i = 0; i < n; ++i) {
      spec.roi_start[static_cast<size_t>(axes[i])] = (*roi_in)[i];
      spec.roi_end[static_cast<size_t>(axes[i])] = (*roi_in)[i + n];
    }
  }
  if (has_scales) {
    if (scales_in->size() != n) {
      return NodeError(node,
                       absl::StrCat("scales has ", scales_in->size(), " values; expected ", n));
    }
    for (size_t i = 0; i < n; ++i) {
      const size_t a = static_cast<size_t>(axes[i]);
      const double s = (*scales_in)[i];
      if (!(s > 0) || !std::isfinite(s)) {
        return NodeError(node, absl::StrCat("scale ", s, " must be positive"));
      }
      const double extent =
          static_cast<double>(data[a]) * (spec.roi_end[a] - spec.roi_start[a]) * s;
      if (!(extent < 9.0e18)) return NodeError(node, absl::StrCat("scale ", s, " is too large"));
      spec.scales[a] = s;
      spec.out[a] = static_cast<int64_t>(std::max(0.0, std::floor(extent)));
    }
  } else {
    if (sizes_in->size() != n) {
      return NodeError(node, absl::StrCat("sizes has ", sizes_in->size(), " values; expected ", n));
    }
    for (size_t i = 0; i < n; ++i) {
      const size_t a = static_cast<size_t>(axes[i]);
      if ((*sizes_in)[i] < 0) return NodeError(node, "sizes must be non-negative");
      if (data[a] == 0 && (*sizes_in)[i] != 0) {
        return NodeError(node, absl::StrCat("cannot resize empty dim ", a));
      }
      spec.scales[a] = data[a] == 0 ? 1.0 : static_cast<double>((*sizes_in)[i]) / data[a];
      spec.out[a] = (*sizes_in)[i];
    }
    const std::string policy = node.GetString("keep_aspect_ratio_policy", "stretch");
    if (policy != "stretch") {
      if (policy != "not_larger" && policy != "not_smaller") {
        return NodeError(node, absl::StrCat("keep_aspect_ratio_policy '", policy,
                                            "' is not one of stretch, not_larger, not_smaller"));
      }
      double scale = spec.scales[static_cast<size_t>(axes[0])];
      for (int64_t a : axes) {
        const double s = spec.scales[static_cast<size_t>(a)];
        scale = policy == "not_larger" ? std::min(scale, s) : std::max(scale, s);
      }
      for (int64_t a : axes) {
        spec.scales[static_cast<size_t>(a)] = scale;
        spec.out[static_cast<size_t>(a)] =
            static_cast<int64_t>(scale * static_cast<double>(data[static_cast<size_t>(a)]) + 0.5);
      }
    }
  }
  LOOM_RETURN_IF_ERROR(CheckShape(node, spec.out, "the resized shape"));
  return spec;
}

absl::StatusOr<bool> ResolveTriluUpper(const Node& node, const Shape& data) {
  if (data.size() < 2) {
    return NodeError(node, absl::StrCat("input must have rank >= 2, got ", ShapeToString(data)));
  }
  return node.GetInt("upper", 1) != 0;
}

}  // namespace loom::graph
