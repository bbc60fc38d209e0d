// Lowered data movement: Transpose, Slice, Expand, Tile, DepthToSpace and SpaceToDepth as strided
// copies (lower_common.h), Concat and Split as row copies, Pad as per-dimension index tables.
// Every dtype, moved by element size.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::Shape;
using graph::TensorType;

absl::StatusOr<LoweredKernel> LowerTranspose(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> perm = ctx.node().GetInts("perm");
  if (!ctx.node().HasAttr("perm")) {
    for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
  }
  return LowerStridedCopy(ctx, "transpose", ctx.node().inputs[0], ctx.node().outputs[0], x.dtype,
                          TransposeView(x.shape, perm));
}

absl::StatusOr<LoweredKernel> LowerSlice(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> starts, ctx.ConstInts(1, "starts"));
  std::vector<int64_t> axes, steps(starts.size(), 1);
  for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (ctx.Has(3)) {
    LOOM_ASSIGN_OR_RETURN(axes, ctx.ConstInts(3, "axes"));
  }
  if (ctx.Has(4)) {
    LOOM_ASSIGN_OR_RETURN(steps, ctx.ConstInts(4, "steps"));
  }
  if (axes.size() != starts.size() || steps.size() != starts.size()) {
    return ctx.Invalid("starts, axes and steps must have the same length");
  }
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  StridedView view{y.shape, strides, 0};
  for (size_t i = 0; i < axes.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(const int64_t a, ctx.Axis(axes[i], rank, "axes entry"));
    const int64_t dim = x.shape[static_cast<size_t>(a)];
    const int64_t step = steps[i];
    if (step == 0) return ctx.Invalid("a step is 0");
    // The first index read (ONNX clamping; the output extent came from shape inference).
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    start = step > 0 ? std::clamp<int64_t>(start, 0, dim) : std::clamp<int64_t>(start, 0, dim - 1);
    view.in_strides[static_cast<size_t>(a)] = strides[static_cast<size_t>(a)] * step;
    if (y.shape[static_cast<size_t>(a)] > 0) view.offset += start * strides[static_cast<size_t>(a)];
  }
  return LowerStridedCopy(ctx, "slice", ctx.node().inputs[0], ctx.node().outputs[0], x.dtype, view);
}

absl::StatusOr<LoweredKernel> LowerExpand(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  StridedView view{y.shape, std::vector<int64_t>(y.shape.size(), 0), 0};
  const size_t lead = y.shape.size() - x.shape.size();
  for (size_t k = 0; k < x.shape.size(); ++k) {
    if (x.shape[k] != 1) view.in_strides[lead + k] = strides[k];
  }
  return LowerStridedCopy(ctx, "expand", ctx.node().inputs[0], ctx.node().outputs[0], x.dtype,
                          view);
}

absl::StatusOr<LoweredKernel> LowerTile(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, ctx.ConstInts(1, "repeats"));
  if (repeats.size() != x.shape.size()) {
    return ctx.Invalid(
        absl::StrCat("repeats has ", repeats.size(), " entries for rank ", x.shape.size()));
  }
  // Output dim k of extent r * d is the pair (r, d) with input strides (0, stride_k).
  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  StridedView view;
  for (size_t k = 0; k < x.shape.size(); ++k) {
    if (repeats[k] < 0) return ctx.Invalid("a repeat is negative");
    view.out_shape.push_back(repeats[k]);
    view.in_strides.push_back(0);
    view.out_shape.push_back(x.shape[k]);
    view.in_strides.push_back(strides[k]);
  }
  return LowerStridedCopy(ctx, "tile", ctx.node().inputs[0], ctx.node().outputs[0], x.dtype, view);
}

// DepthToSpace / SpaceToDepth are a reshape to 6-D, a transpose and a reshape back.
absl::StatusOr<LoweredKernel> LowerDepthToSpace(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  const int64_t b = ctx.node().GetInt("blocksize", 0);
  if (x.shape.size() != 4 || b <= 0 || x.shape[1] % (b * b) != 0) {
    return ctx.Invalid(
        absl::StrCat("needs a 4-D input with channels divisible by blocksize^2, got ", x.ToString(),
                     " and blocksize ", b));
  }
  const int64_t n = x.shape[0], c = x.shape[1] / (b * b), h = x.shape[2], w = x.shape[3];
  const std::string mode = ctx.node().GetString("mode", "DCR");
  if (mode == "DCR") {
    return LowerStridedCopy(ctx, "depth_to_space", ctx.node().inputs[0], ctx.node().outputs[0],
                            x.dtype, TransposeView({n, b, b, c, h, w}, {0, 3, 4, 1, 5, 2}));
  }
  if (mode == "CRD") {
    return LowerStridedCopy(ctx, "depth_to_space", ctx.node().inputs[0], ctx.node().outputs[0],
                            x.dtype, TransposeView({n, c, b, b, h, w}, {0, 1, 4, 2, 5, 3}));
  }
  return ctx.Invalid(absl::StrCat("mode '", mode, "' is not DCR or CRD"));
}

absl::StatusOr<LoweredKernel> LowerSpaceToDepth(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  const int64_t b = ctx.node().GetInt("blocksize", 0);
  if (x.shape.size() != 4 || b <= 0 || x.shape[2] % b != 0 || x.shape[3] % b != 0) {
    return ctx.Invalid(absl::StrCat("needs a 4-D input with H and W divisible by blocksize, got ",
                                    x.ToString(), " and blocksize ", b));
  }
  const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2] / b, w = x.shape[3] / b;
  return LowerStridedCopy(ctx, "space_to_depth", ctx.node().inputs[0], ctx.node().outputs[0],
                          x.dtype, TransposeView({n, c, h, b, w, b}, {0, 3, 5, 1, 2, 4}));
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
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  const int64_t rank = static_cast<int64_t>(y.shape.size());
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(ctx.node().GetInt("axis", 0), rank));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= y.shape[static_cast<size_t>(d)];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= y.shape[static_cast<size_t>(d)];
  std::vector<int64_t> widths;
  std::vector<std::string> values;
  for (size_t k = 0; k < ctx.node().inputs.size(); ++k) {
    LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(k));
    if (static_cast<int64_t>(x.shape.size()) != rank) return ctx.Invalid("inputs differ in rank");
    widths.push_back(x.shape[static_cast<size_t>(axis)] * inner);
    values.push_back(ctx.node().inputs[k]);
  }
  return LowerRowPieces(ctx, "concat", /*gather_parts=*/true, y.dtype, outer, widths, values,
                        ctx.node().outputs[0]);
}

absl::StatusOr<LoweredKernel> LowerSplit(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(ctx.node().GetInt("axis", 0), rank));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[static_cast<size_t>(d)];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= x.shape[static_cast<size_t>(d)];
  // The parts' extents are the outputs' (shape inference resolved `split` / num_outputs).
  std::vector<int64_t> widths;
  std::vector<std::string> values;
  for (size_t k = 0; k < ctx.node().outputs.size(); ++k) {
    if (!ctx.HasOutput(k)) return ctx.Unimplemented("an omitted Split output");
    LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(k));
    if (static_cast<int64_t>(y.shape.size()) != rank) return ctx.Invalid("outputs differ in rank");
    widths.push_back(y.shape[static_cast<size_t>(axis)] * inner);
    values.push_back(ctx.node().outputs[k]);
  }
  int64_t total = 0;
  for (int64_t width : widths) total += width;
  if (total != x.shape[static_cast<size_t>(axis)] * inner) {
    return ctx.Invalid("the outputs do not add up to the input along the axis");
  }
  return LowerRowPieces(ctx, "split", /*gather_parts=*/false, x.dtype, outer, widths, values,
                        ctx.node().inputs[0]);
}

// Pad: per output dim, a table of input indices (-1: the constant). The innermost dim copies its
// in-range run with memcpy and the rest through its table.
absl::StatusOr<LoweredKernel> LowerPad(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const std::string mode = ctx.node().GetString("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap") {
    return ctx.Unimplemented(absl::StrCat("mode '", mode, "'"));
  }
  // Before opset 11, pads and the (float) value are attributes.
  const bool attr_form = ctx.opset() < 11;
  std::vector<int64_t> pads = ctx.node().GetInts("pads");
  if (!attr_form) {
    LOOM_ASSIGN_OR_RETURN(pads, ctx.ConstInts(1, "pads"));
  }
  std::vector<int64_t> axes;
  if (!attr_form && ctx.Has(3)) {
    LOOM_ASSIGN_OR_RETURN(axes, ctx.ConstInts(3, "axes"));
  } else {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  if (pads.size() != 2 * axes.size()) {
    return ctx.Invalid(
        absl::StrCat("pads has ", pads.size(), " entries for ", axes.size(), " axes"));
  }
  std::vector<int64_t> begin(static_cast<size_t>(rank), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(const int64_t a, ctx.Axis(axes[i], rank, "axes entry"));
    begin[static_cast<size_t>(a)] = pads[i];
  }
  const int64_t total = graph::NumElements(y.shape);
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape);
  KernelWriter w(ctx.target(), "pad");
  const std::string t = StorageCType(x.dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(x.dtype));
  w.Input(ctx.node().inputs[0], t, "in");
  const bool has_value = mode == "constant" && !attr_form && ctx.Has(2);
  if (has_value) w.Input(ctx.node().inputs[2], t, "cval");
  std::string fill = "0";
  if (attr_form && x.dtype == DType::kFloat32) {
    w.Global(absl::StrCat("static const float loom_pad_value = ",
                          FloatLiteral(ctx.node().GetFloat("value", 0.0f)), ";"));
    fill = "({ uint32_t b; memcpy(&b, &loom_pad_value, 4); b; })";
  }
  if (has_value) fill = "cval[0]";
  w.Output(ctx.node().outputs[0], t, "out");
  if (total == 0) return w.Finish(0, 1, "");
  if (rank == 0) return w.Finish(1, esize, "  out[0] = in[0];\n");

  // table[k][o]: element offset of output index o of dim k in the input, or -1.
  std::vector<std::vector<int64_t>> tables(static_cast<size_t>(rank));
  for (int64_t k = 0; k < rank; ++k) {
    const int64_t d = x.shape[static_cast<size_t>(k)];
    const int64_t o_n = y.shape[static_cast<size_t>(k)];
    if (d == 0 && mode != "constant" && o_n > 0) {
      return ctx.Invalid(absl::StrCat("mode '", mode, "' cannot pad an empty dim"));
    }
    for (int64_t o = 0; o < o_n; ++o) {
      int64_t i = o - begin[static_cast<size_t>(k)];
      if (i < 0 || i >= d) {
        if (mode == "constant") {
          i = -1;
        } else if (mode == "edge") {
          i = std::clamp<int64_t>(i, 0, d - 1);
        } else if (mode == "wrap") {
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

}  // namespace

void RegisterMovementLowerings(LowerTable* table) {
  (*table)["Transpose"] = &LowerTranspose;
  (*table)["Slice"] = &LowerSlice;
  (*table)["Expand"] = &LowerExpand;
  (*table)["Tile"] = &LowerTile;
  (*table)["DepthToSpace"] = &LowerDepthToSpace;
  (*table)["SpaceToDepth"] = &LowerSpaceToDepth;
  (*table)["Concat"] = &LowerConcat;
  (*table)["Split"] = &LowerSplit;
  (*table)["Pad"] = &LowerPad;
}

}  // namespace loom::ops::lower
