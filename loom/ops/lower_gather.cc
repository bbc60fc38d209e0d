// Lowered Gather, GatherElements and GatherND, every data dtype (moved by element size), int32 or
// int64 indices (GatherND: int64, as its schema says). An index in [-D, D) reads element index
// (+ D if negative). An index outside that range never reads memory: its output row (Gather),
// element (GatherElements) or slice (GatherND) is zero, as TensorFlow's GPU gather does; the
// reference kernel rejects such an index with kInvalidArgument, and indices that are constants are
// rejected the same way here, before any kernel runs.
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/data_movement.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::TensorType;

// Constant indices are range-checked now, as shape inference and the reference kernel do.
absl::Status CheckConstIndices(const LowerCtx& ctx, int64_t dim, int64_t axis) {
  std::optional<graph::Tensor> t = ctx.Const(1);
  if (!t.has_value()) return absl::OkStatus();
  return graph::CheckIndexRange(ctx.node(), *t, dim, absl::StrCat("axis ", axis));
}

absl::StatusOr<LoweredKernel> LowerGather(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType ind, ctx.In(1));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(ind.dtype, {DType::kInt64, DType::kInt32}, "indices"));
  LOOM_ASSIGN_OR_RETURN(graph::GatherSpec spec, graph::ResolveGather(ctx.node(), x.shape, ind));
  const int64_t axis = spec.axis;
  const int64_t dim = x.shape[static_cast<size_t>(axis)];
  LOOM_RETURN_IF_ERROR(CheckConstIndices(ctx, dim, axis));
  const AxisSplit split = SplitAtAxis(x.shape, axis);
  const int64_t outer = split.outer, inner = split.inner;
  const int64_t count = graph::NumElements(ind.shape);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(x.dtype));
  const std::string t = StorageCType(x.dtype);

  KernelWriter w(ctx.target(), "gather");
  w.Input(ctx.node().inputs[0], t, "in");
  w.Input(ctx.node().inputs[1], ind.dtype == DType::kInt64 ? "int64_t" : "int32_t", "ind");
  w.Output(ctx.node().outputs[0], t, "out");
  const std::string body = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    int64_t idx = (int64_t)ind[u % ",
      count, "];\n", "    if (idx < 0) idx += ", dim, ";\n", "    ", t,
      "* __restrict dst = out + u * ", inner, ";\n", "    if ((uint64_t)idx < (uint64_t)", dim,
      ") {\n", "      memcpy(dst, in + ((u / ", count, ") * ", dim, " + idx) * ", inner, ", ",
      inner * esize, ");\n", "    } else {\n", "      memset(dst, 0, ", inner * esize, ");\n",
      "    }\n  }\n");
  return w.Finish(outer * count * inner == 0 ? 0 : outer * count, inner * esize * 2, body);
}

absl::StatusOr<LoweredKernel> LowerGatherElements(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType ind, ctx.In(1));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(ind.dtype, {DType::kInt64, DType::kInt32}, "indices"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, graph::ResolveGatherElements(ctx.node(), x.shape, ind));
  const int64_t dim = x.shape[static_cast<size_t>(axis)];
  LOOM_RETURN_IF_ERROR(CheckConstIndices(ctx, dim, axis));
  const std::vector<int64_t> xs = RowMajorStrides(x.shape);
  const int64_t n = ind.shape.back();
  const int64_t total = graph::NumElements(ind.shape);
  // A unit is one row of the indices' last dim; the row's data offset comes from every other dim
  // but the axis.
  std::vector<int64_t> sizes(ind.shape.begin(), ind.shape.end() - 1);
  std::vector<int64_t> in_strides(xs.begin(), xs.end() - 1);
  if (axis < rank - 1) in_strides[static_cast<size_t>(axis)] = 0;
  std::vector<int64_t> out_strides(sizes.size(), 0);
  const int64_t along = axis == rank - 1 ? 0 : 1;  // the last dim's own data stride is 1
  const std::string t = StorageCType(x.dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(x.dtype));
  KernelWriter w(ctx.target(), "gather_elements");
  w.Input(ctx.node().inputs[0], t, "in");
  w.Input(ctx.node().inputs[1], ind.dtype == DType::kInt64 ? "int64_t" : "int32_t", "ind");
  w.Output(ctx.node().outputs[0], t, "out");
  const std::string body = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
      UnitOffsets(sizes, in_strides, out_strides, 0, "u"), "    (void)dst;\n",
      "    for (int64_t j = 0; j < ", n, "; ++j) {\n", "      int64_t idx = (int64_t)ind[u * ", n,
      " + j];\n", "      if (idx < 0) idx += ", dim, ";\n", "      out[u * ", n,
      " + j] = (uint64_t)idx < (uint64_t)", dim, " ? in[src + j * ", along, " + idx * ",
      xs[static_cast<size_t>(axis)], "] : (", t, ")0;\n", "    }\n  }\n");
  return w.Finish(total == 0 ? 0 : total / n, n * (esize * 2 + 8), body);
}

// GatherND: one unit per index row (the indices' last dim holds k coordinates into data's dims
// [batch_dims, batch_dims + k)); the unit copies the slice of the remaining dims. The batch dims
// come from the row's position, as in the reference kernel. Dynamo-exported decoders index their
// attention mask this way (aten.index: mask[batch, kv positions]).
absl::StatusOr<LoweredKernel> LowerGatherND(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType ind, ctx.In(1));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(ind.dtype, {DType::kInt64}, "indices"));
  LOOM_ASSIGN_OR_RETURN(graph::GatherNDSpec spec, graph::ResolveGatherND(ctx.node(), x.shape, ind));
  if (std::optional<graph::Tensor> t = ctx.Const(1); t.has_value()) {
    LOOM_RETURN_IF_ERROR(graph::CheckNDIndexRange(ctx.node(), *t, x.shape, spec.batch_dims));
  }
  const int64_t b = spec.batch_dims;
  const int64_t k = ind.shape.back();
  const std::vector<int64_t> xs = RowMajorStrides(x.shape);
  const int64_t batch_stride = b > 0 ? xs[static_cast<size_t>(b - 1)] : 0;
  int64_t slice = 1;
  for (size_t d = static_cast<size_t>(b + k); d < x.shape.size(); ++d) slice *= x.shape[d];
  int64_t rows = 1, rows_per_batch = 1;  // index rows, in all and within one batch entry
  for (size_t d = 0; d + 1 < ind.shape.size(); ++d) {
    rows *= ind.shape[d];
    if (d >= static_cast<size_t>(b)) rows_per_batch *= ind.shape[d];
  }
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(x.dtype));
  const std::string t = StorageCType(x.dtype);

  std::string coords;
  for (int64_t j = 0; j < k; ++j) {
    const int64_t dim = x.shape[static_cast<size_t>(b + j)];
    absl::StrAppend(&coords, "    {\n      int64_t idx = ind[u * ", k, " + ", j, "];\n",
                    "      if (idx < 0) idx += ", dim, ";\n",
                    "      if ((uint64_t)idx >= (uint64_t)", dim, ") ok = 0;\n",
                    "      src += idx * ", xs[static_cast<size_t>(b + j)], ";\n    }\n");
  }
  KernelWriter w(ctx.target(), "gather_nd");
  w.Input(ctx.node().inputs[0], t, "in");
  w.Input(ctx.node().inputs[1], "int64_t", "ind");
  w.Output(ctx.node().outputs[0], t, "out");
  const std::string body =
      absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    int64_t src = (u / ",
                   rows_per_batch, ") * ", batch_stride, ";\n", "    int ok = 1;\n", coords, "    ",
                   t, "* __restrict dst = out + u * ", slice, ";\n", "    if (ok) {\n",
                   "      memcpy(dst, in + src, ", slice * esize, ");\n", "    } else {\n",
                   "      memset(dst, 0, ", slice * esize, ");\n", "    }\n  }\n");
  return w.Finish(slice == 0 || rows_per_batch == 0 ? 0 : rows, slice * esize * 2 + k * 8, body);
}

}  // namespace

void RegisterGatherLowerings(LowerTable* table) {
  (*table)["Gather"] = &LowerGather;
  (*table)["GatherElements"] = &LowerGatherElements;
  (*table)["GatherND"] = &LowerGatherND;
}

}  // namespace loom::ops::lower
