// Lowered data movement: Transpose, Slice, Expand, Tile, DepthToSpace and SpaceToDepth as strided
// copies (lower_common.h), Concat and Split as row copies, Pad as per-dimension index tables,
// Trilu and OneHot. Every dtype, moved by element size.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/data_movement.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::Shape;
using graph::TensorType;

absl::StatusOr<StridedView> TransposeNodeView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::IntList perm,
                        graph::ResolvePerm(ctx.node(), static_cast<int64_t>(x.shape.size())));
  return TransposeView(x.shape, perm);
}

absl::StatusOr<StridedView> SliceView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::IntList starts, ctx.ConstInts(1, "starts"));
  LOOM_ASSIGN_OR_RETURN(graph::IntList ends, ctx.ConstInts(2, "ends"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ctx.OptionalConstInts(3, "axes"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts steps, ctx.OptionalConstInts(4, "steps"));
  LOOM_ASSIGN_OR_RETURN(graph::SliceSpec spec,
                        graph::ResolveSlice(ctx.node(), x.shape, starts, ends, axes, steps));
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  StridedView view{spec.out, strides, 0};
  for (size_t d = 0; d < x.shape.size(); ++d) {
    view.in_strides[d] = strides[d] * spec.step[d];
    if (spec.out[d] > 0) view.offset += spec.start[d] * strides[d];
  }
  return view;
}

absl::StatusOr<StridedView> ExpandView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::IntList shape, ctx.ConstInts(1, "shape"));
  LOOM_ASSIGN_OR_RETURN(Shape out, graph::ResolveExpand(ctx.node(), x.shape, shape));
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  StridedView view{out, std::vector<int64_t>(out.size(), 0), 0};
  const size_t lead = out.size() - x.shape.size();
  for (size_t k = 0; k < x.shape.size(); ++k) {
    if (x.shape[k] != 1) view.in_strides[lead + k] = strides[k];
  }
  return view;
}

absl::StatusOr<StridedView> TileView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::IntList repeats, ctx.ConstInts(1, "repeats"));
  LOOM_RETURN_IF_ERROR(graph::ResolveTile(ctx.node(), x.shape, repeats).status());
  // Output dim k of extent r * d is the pair (r, d) with input strides (0, stride_k).
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  StridedView view;
  for (size_t k = 0; k < x.shape.size(); ++k) {
    view.out_shape.push_back(repeats[k]);
    view.in_strides.push_back(0);
    view.out_shape.push_back(x.shape[k]);
    view.in_strides.push_back(strides[k]);
  }
  return view;
}

// DepthToSpace / SpaceToDepth are a reshape to 6-D, a transpose and a reshape back.
absl::StatusOr<StridedView> DepthToSpaceView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::DepthSpaceSpec spec,
                        graph::ResolveDepthToSpace(ctx.node(), x.shape));
  const int64_t b = spec.blocksize;
  const int64_t n = x.shape[0], c = x.shape[1] / (b * b), h = x.shape[2], w = x.shape[3];
  return spec.crd ? TransposeView({n, c, b, b, h, w}, {0, 1, 4, 2, 5, 3})
                  : TransposeView({n, b, b, c, h, w}, {0, 3, 4, 1, 5, 2});
}

absl::StatusOr<StridedView> SpaceToDepthView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::DepthSpaceSpec spec,
                        graph::ResolveSpaceToDepth(ctx.node(), ctx.opset(), x.shape));
  const int64_t b = spec.blocksize;
  const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2] / b, w = x.shape[3] / b;
  return spec.crd ? TransposeView({n, c, h, b, w, b}, {0, 1, 3, 5, 2, 4})
                  : TransposeView({n, c, h, b, w, b}, {0, 3, 5, 1, 2, 4});
}

// The pure data-movement ops: the view, and the kind profiles show.
struct ViewOp {
  const char* op;
  const char* kind;
  absl::StatusOr<StridedView> (*view)(const LowerCtx& ctx);
};
constexpr ViewOp kViewOps[] = {
    {"Transpose", "transpose", &TransposeNodeView},
    {"Slice", "slice", &SliceView},
    {"Expand", "expand", &ExpandView},
    {"Tile", "tile", &TileView},
    {"DepthToSpace", "depth_to_space", &DepthToSpaceView},
    {"SpaceToDepth", "space_to_depth", &SpaceToDepthView},
};

absl::StatusOr<LoweredKernel> LowerView(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  for (const ViewOp& v : kViewOps) {
    if (ctx.node().op_type != v.op) continue;
    LOOM_ASSIGN_OR_RETURN(StridedView view, v.view(ctx));
    return LowerStridedCopy(ctx.target(), v.kind, ctx.node().inputs[0], ctx.node().outputs[0],
                            x.dtype, std::move(view));
  }
  return ctx.Unimplemented("not a data-movement view");
}

// One tensor cut into `parts` along an axis, or assembled from them: viewed as [outer, total],
// part k owns columns [offset_k, offset_k + width_k) of every row. A work unit is one (row,
// part) pair, so that even a single row spreads over the threads.
LoweredKernel LowerRowPieces(const LowerCtx& ctx, const std::string& kind, bool gather_parts,
                             DType dtype, int64_t outer, const std::vector<int64_t>& widths,
                             const std::vector<std::string>& part_values,
                             const std::string& whole_value) {
  KernelWriter w(ctx.target(), kind);
  const std::string t = StorageCType(dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(dtype));
  int64_t total = 0;
  for (int64_t width : widths) total += width;
  if (gather_parts) {
    for (size_t k = 0; k < part_values.size(); ++k) {
      w.Input(part_values[k], t, absl::StrCat("p", k));
    }
    w.Output(whole_value, t, "whole");
  } else {
    w.Input(whole_value, t, "whole");
    for (size_t k = 0; k < part_values.size(); ++k) {
      w.Output(part_values[k], t, absl::StrCat("p", k));
    }
  }
  const int64_t parts = static_cast<int64_t>(widths.size());
  std::string body = absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
                                  "    const int64_t row = u / ", parts, ";\n", "    switch (u % ",
                                  parts, ") {\n");
  int64_t offset = 0;
  for (int64_t k = 0; k < parts; ++k) {
    const int64_t width = widths[static_cast<size_t>(k)];
    if (width > 0) {
      const std::string part = absl::StrCat("p", k, " + row * ", width);
      const std::string whole = absl::StrCat("whole + row * ", total, " + ", offset);
      absl::StrAppend(&body, "      case ", k, ": memcpy(", gather_parts ? whole : part, ", ",
                      gather_parts ? part : whole, ", ", width * esize, "); break;\n");
    }
    offset += width;
  }
  absl::StrAppend(&body, "      default: break;\n    }\n  }\n");
  const int64_t avg = parts > 0 ? total / parts : 0;
  return w.Finish(total == 0 ? 0 : outer * parts, avg * esize * 2, body);
}

absl::StatusOr<LoweredKernel> LowerConcat(const LowerCtx& ctx) {
  std::vector<TensorType> inputs;
  for (size_t k = 0; k < ctx.node().inputs.size(); ++k) {
    LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(k));
    inputs.push_back(x);
  }
  LOOM_ASSIGN_OR_RETURN(graph::ConcatSpec spec, graph::ResolveConcat(ctx.node(), inputs));
  const AxisSplit split = SplitAtAxis(spec.out, spec.axis);
  std::vector<int64_t> widths;
  for (const TensorType& x : inputs) {
    widths.push_back(x.shape[static_cast<size_t>(spec.axis)] * split.inner);
  }
  return LowerRowPieces(ctx, "concat", /*gather_parts=*/true, inputs[0].dtype, split.outer, widths,
                        ctx.node().inputs, ctx.node().outputs[0]);
}

absl::StatusOr<LoweredKernel> LowerSplit(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts sizes, ctx.OptionalConstInts(1, "split"));
  LOOM_ASSIGN_OR_RETURN(
      graph::SplitSpec spec,
      graph::ResolveSplit(ctx.node(), ctx.opset(), x.shape, sizes, ctx.node().outputs.size()));
  const AxisSplit split = SplitAtAxis(x.shape, spec.axis);
  std::vector<int64_t> widths;
  for (size_t k = 0; k < ctx.node().outputs.size(); ++k) {
    if (!ctx.HasOutput(k)) return ctx.Unimplemented("an omitted Split output");
    widths.push_back(spec.sizes[k] * split.inner);
  }
  return LowerRowPieces(ctx, "split", /*gather_parts=*/false, x.dtype, split.outer, widths,
                        ctx.node().outputs, ctx.node().inputs[0]);
}

// Pad: per output dim, a table of input indices (-1: the constant). The innermost dim copies its
// in-range run with memcpy and the rest through its table.
absl::StatusOr<LoweredKernel> LowerPad(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(graph::IntList pads, ctx.ConstInts(1, "pads"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ctx.OptionalConstInts(3, "axes"));
  LOOM_ASSIGN_OR_RETURN(graph::PadSpec spec,
                        graph::ResolvePad(ctx.node(), ctx.opset(), x.shape, pads, axes));
  const std::vector<int64_t>& begin = spec.begin;
  const int64_t total = graph::NumElements(y.shape);
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape);
  KernelWriter w(ctx.target(), "pad");
  const std::string t = StorageCType(x.dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(x.dtype));
  w.Input(ctx.node().inputs[0], t, "in");
  const bool has_value = spec.mode == graph::PadMode::kConstant && ctx.Has(2);
  if (has_value) w.Input(ctx.node().inputs[2], t, "cval");
  const std::string fill = has_value ? "cval[0]" : "0";
  w.Output(ctx.node().outputs[0], t, "out");
  if (total == 0) return w.Finish(0, 1, "");
  if (rank == 0) return w.Finish(1, esize, "  out[0] = in[0];\n");

  // table[k][o]: element offset of output index o of dim k in the input, or -1.
  std::vector<std::vector<int64_t>> tables(static_cast<size_t>(rank));
  for (int64_t k = 0; k < rank; ++k) {
    const int64_t d = x.shape[static_cast<size_t>(k)];
    const int64_t o_n = y.shape[static_cast<size_t>(k)];
    if (d == 0 && spec.mode != graph::PadMode::kConstant && o_n > 0) {
      return ctx.Invalid("only constant padding can pad an empty dim");
    }
    for (int64_t o = 0; o < o_n; ++o) {
      int64_t i = o - begin[static_cast<size_t>(k)];
      if (i < 0 || i >= d) {
        if (spec.mode == graph::PadMode::kConstant) {
          i = -1;
        } else if (spec.mode == graph::PadMode::kEdge) {
          i = std::clamp<int64_t>(i, 0, d - 1);
        } else if (spec.mode == graph::PadMode::kWrap) {
          i = ((i % d) + d) % d;
        } else if (d == 1) {  // reflect
          i = 0;
        } else {
          const int64_t period = 2 * (d - 1);
          i = ((i % period) + period) % period;
          if (i >= d) i = period - i;
        }
      }
      tables[static_cast<size_t>(k)].push_back(i < 0 ? -1 : i * in_strides[static_cast<size_t>(k)]);
    }
    w.Global(absl::StrCat("static const int64_t loom_pad_t", k, "[] = {",
                          absl::StrJoin(tables[static_cast<size_t>(k)], ","), "};"));
  }
  // The innermost dim's in-range run [lo, hi): output o reads input o - begin.
  const int64_t n = y.shape.back(), d = x.shape.back(), b = begin.back();
  const int64_t lo = std::clamp<int64_t>(b, 0, n), hi = std::clamp<int64_t>(b + d, lo, n);
  int64_t rows = 1;
  for (int64_t k = 0; k + 1 < rank; ++k) rows *= y.shape[static_cast<size_t>(k)];
  std::string body = absl::StrCat("  const ", t, " v = ", fill, ";\n",
                                  "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    ", t,
                                  "* __restrict o = out + u * ", n, ";\n", "    int64_t src = 0;\n",
                                  "    int64_t loom_r = u;\n");
  for (int64_t k = rank - 1; k-- > 0;) {
    absl::StrAppend(&body, "    { const int64_t s = loom_pad_t", k, "[loom_r % ",
                    y.shape[static_cast<size_t>(k)],
                    "]; loom_r /= ", y.shape[static_cast<size_t>(k)],
                    "; src = (s < 0 || src < 0) ? -1 : src + s; }\n");
  }
  absl::StrAppend(&body, "    if (src < 0) {\n      for (int64_t j = 0; j < ", n,
                  "; ++j) o[j] = v;\n      continue;\n    }\n", "    const ", t,
                  "* __restrict i = in + src;\n", "    for (int64_t j = 0; j < ", lo,
                  "; ++j) { const int64_t s = loom_pad_t", rank - 1,
                  "[j]; o[j] = s < 0 ? v : i[s]; }\n");
  if (hi > lo) {
    absl::StrAppend(&body, "    memcpy(o + ", lo, ", i + ", lo - b, ", ", (hi - lo) * esize,
                    ");\n");
  }
  absl::StrAppend(&body, "    for (int64_t j = ", hi, "; j < ", n,
                  "; ++j) { const int64_t s = loom_pad_t", rank - 1,
                  "[j]; o[j] = s < 0 ? v : i[s]; }\n  }\n");
  return w.Finish(rows, n * esize * 2, body);
}

// Trilu: the upper (j - i >= k) or lower (j - i <= k) triangle of every matrix of the last two
// dims, the rest zero; k (an optional scalar input) is read at run time. A unit is one row.
absl::StatusOr<LoweredKernel> LowerTrilu(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  if (x.shape.size() < 2)
    return ctx.Invalid(absl::StrCat("input ", x.ToString(), " is not a matrix"));
  const bool upper = ctx.node().GetInt("upper", 1) != 0;
  const int64_t rows = x.shape[x.shape.size() - 2], m = x.shape.back();
  const int64_t total = graph::NumElements(x.shape);
  const std::string t = StorageCType(x.dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(x.dtype));
  KernelWriter w(ctx.target(), "trilu");
  w.Input(ctx.node().inputs[0], t, "in");
  const bool has_k = ctx.Has(1);
  if (has_k) {
    LOOM_ASSIGN_OR_RETURN(TensorType kt, ctx.In(1));
    LOOM_RETURN_IF_ERROR(ctx.RequireDType(kt.dtype, {DType::kInt64}, "k"));
    w.Input(ctx.node().inputs[1], "int64_t", "kk");
  }
  w.Output(ctx.node().outputs[0], t, "out");
  if (total == 0) return w.Finish(0, 1, "");
  // Columns [lo, hi) of row i are kept.
  const std::string body = absl::StrCat(
      "  const int64_t k = ", has_k ? "kk[0]" : "0", ";\n",
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    const int64_t i = u % ", rows,
      ";\n", "    const ", t, "* __restrict x = in + u * ", m, ";\n", "    ", t,
      "* __restrict y = out + u * ", m, ";\n",
      // Clamped in int64 before adding, so that no k overflows.
      "    const int64_t kc = k < -", m + rows, " ? -", m + rows, " : (k > ", m + rows, " ? ",
      m + rows, " : k);\n",
      upper ? absl::StrCat("    int64_t lo = i + kc; lo = lo < 0 ? 0 : (lo > ", m, " ? ", m,
                           " : lo);\n    const int64_t hi = ", m, ";\n")
            : absl::StrCat("    int64_t hi = i + kc + 1; hi = hi < 0 ? 0 : (hi > ", m, " ? ", m,
                           " : hi);\n    const int64_t lo = 0;\n"),
      "    for (int64_t j = 0; j < lo; ++j) y[j] = 0;\n",
      "    if (hi > lo) memcpy(y + lo, x + lo, (hi - lo) * ", esize, ");\n",
      "    for (int64_t j = hi > lo ? hi : lo; j < ", m, "; ++j) y[j] = 0;\n  }\n");
  return w.Finish(total / m, m * esize * 2, body);
}

// OneHot: indices [outer, inner] -> [outer, depth, inner] (depth inserted at `axis`), `values`
// = [off, on] read at run time. An index in [-depth, depth) (negative counts from the end) sets
// one element; any other index leaves its column all `off`, as ONNX specifies.
absl::StatusOr<LoweredKernel> LowerOneHot(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType ind, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType vals, ctx.In(2));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  LOOM_RETURN_IF_ERROR(
      ctx.RequireDType(ind.dtype, {DType::kInt64, DType::kInt32, DType::kFloat32}, "indices"));
  std::optional<graph::Tensor> depth_value = ctx.Const(1);
  if (!depth_value.has_value()) return ctx.Unimplemented("depth (input #1) is not a constant");
  LOOM_ASSIGN_OR_RETURN(graph::OneHotSpec spec,
                        graph::ResolveOneHot(ctx.node(), ind.shape, *depth_value));
  const int64_t axis = spec.axis;
  if (graph::NumElements(vals.shape) != 2) {
    return ctx.Invalid(absl::StrCat("values ", vals.ToString(), " must hold [off, on]"));
  }
  const AxisSplit split = SplitAtAxis(y.shape, axis);
  const int64_t depth = split.n, inner = split.inner;
  const std::string t = StorageCType(y.dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(y.dtype));
  const std::string it = ind.dtype == DType::kInt64   ? "int64_t"
                         : ind.dtype == DType::kInt32 ? "int32_t"
                                                      : "float";
  KernelWriter w(ctx.target(), "one_hot");
  w.Input(ctx.node().inputs[0], it, "ind");
  w.Input(ctx.node().inputs[2], t, "vals");
  w.Output(ctx.node().outputs[0], t, "out");
  const int64_t total = graph::NumElements(y.shape);
  // A float index is truncated toward zero, as a cast; NaN and huge values select nothing.
  const std::string body = absl::StrCat(
      "  const ", t, " off = vals[0], on = vals[1];\n",
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    ", t, "* __restrict y = out + u * ",
      depth * inner, ";\n", "    for (int64_t e = 0; e < ", depth * inner, "; ++e) y[e] = off;\n",
      "    for (int64_t i = 0; i < ", inner, "; ++i) {\n", "      const ", it, " raw = ind[u * ",
      inner, " + i];\n",
      it == "float" ? absl::StrCat("      if (!(raw > -", depth + 1, ".0f && raw < ", depth,
                                   ".0f)) continue;\n")
                    : "",
      "      int64_t d = (int64_t)raw;\n", "      if (d < 0) d += ", depth, ";\n",
      "      if ((uint64_t)d < (uint64_t)", depth, ") y[d * ", inner, " + i] = on;\n",
      "    }\n  }\n");
  return w.Finish(total == 0 ? 0 : split.outer, depth * inner * esize, body);
}

}  // namespace

absl::StatusOr<MovementViewSpec> MovementView(const LowerCtx& ctx) {
  for (const ViewOp& v : kViewOps) {
    if (ctx.node().op_type != v.op) continue;
    LOOM_ASSIGN_OR_RETURN(StridedView view, v.view(ctx));
    return MovementViewSpec{v.kind, std::move(view)};
  }
  return ctx.Unimplemented("not a data-movement view");
}

void RegisterMovementLowerings(LowerTable* table) {
  for (const ViewOp& v : kViewOps) (*table)[v.op] = &LowerView;
  (*table)["Concat"] = &LowerConcat;
  (*table)["Split"] = &LowerSplit;
  (*table)["Pad"] = &LowerPad;
  (*table)["Trilu"] = &LowerTrilu;
  (*table)["OneHot"] = &LowerOneHot;
}

}  // namespace loom::ops::lower
