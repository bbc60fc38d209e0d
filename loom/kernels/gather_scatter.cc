// Indexed data movement: GatherElements, GatherND, ScatterElements, ScatterND (with reductions)
// and OneHot. Every index is range-checked before any element is read or written; an index
// outside [-extent, extent) is kInvalidArgument naming it.
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/data_movement_internal.h"

namespace loom::kernels::internal {
namespace {

using graph::ScatterReduction;

int64_t Wrap(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

// Product of indices dims [from, rank - 1): the number of index rows (tuples) below dim `from`.
int64_t IndexRows(const Tensor& indices, int64_t from) {
  int64_t n = 1;
  for (int64_t d = from; d + 1 < indices.rank(); ++d) n *= indices.dim(d);
  return n;
}

// dst = reduction(dst, src) on one element of `dtype` (half types computed in float32).
void Reduce(DType dtype, ScatterReduction r, std::byte* dst, const std::byte* src) {
  if (r == ScatterReduction::kNone) {
    std::memcpy(dst, src, graph::DTypeSize(dtype));
    return;
  }
  auto combine = [r](auto a, auto b) {
    switch (r) {
      case ScatterReduction::kAdd:
        return static_cast<decltype(a)>(a + b);
      case ScatterReduction::kMul:
        return static_cast<decltype(a)>(a * b);
      case ScatterReduction::kMax:
        return std::max(a, b);
      case ScatterReduction::kMin:
        return std::min(a, b);
      case ScatterReduction::kNone:
        break;
    }
    return b;
  };
  if (graph::IsHalfDType(dtype)) {
    uint16_t a, b;
    std::memcpy(&a, dst, 2);
    std::memcpy(&b, src, 2);
    const bool bf = dtype == DType::kBFloat16;
    const float fa = bf ? graph::BFloat16ToFloat(a) : graph::HalfToFloat(a);
    const float fb = bf ? graph::BFloat16ToFloat(b) : graph::HalfToFloat(b);
    const float f = combine(fa, fb);
    const uint16_t h = bf ? graph::FloatToBFloat16(f) : graph::FloatToHalf(f);
    std::memcpy(dst, &h, 2);
    return;
  }
  if (dtype == DType::kBool) {
    const bool a = *reinterpret_cast<const uint8_t*>(dst) != 0;
    const bool b = *reinterpret_cast<const uint8_t*>(src) != 0;
    bool v = b;
    if (r == ScatterReduction::kAdd || r == ScatterReduction::kMax) v = a || b;
    if (r == ScatterReduction::kMul || r == ScatterReduction::kMin) v = a && b;
    *reinterpret_cast<uint8_t*>(dst) = v;
    return;
  }
  VisitDType(dtype, [&](auto zero) {
    using T = decltype(zero);
    T a, b;
    std::memcpy(&a, dst, sizeof(T));
    std::memcpy(&b, src, sizeof(T));
    const T v = combine(a, b);
    std::memcpy(dst, &v, sizeof(T));
  });
}

OpResult GatherElementsOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& data = ctx.inputs[0];
  const Tensor& indices = ctx.inputs[1];
  LOOM_ASSIGN_OR_RETURN(int64_t axis,
                        graph::ResolveGatherElements(ctx.node, data.shape(), indices.type()));
  const int64_t n = data.dim(axis);
  LOOM_RETURN_IF_ERROR(graph::CheckIndexRange(ctx.node, indices, n, absl::StrCat("axis ", axis)));
  // Every other dim of indices indexes data directly: it may not exceed data's.
  for (int64_t d = 0; d < data.rank(); ++d) {
    if (d != axis && indices.dim(d) > data.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat("indices ", indices.type().ToString(),
                                                     " exceed data ", data.type().ToString(),
                                                     " in dim ", d));
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(data.dtype(), indices.shape()));
  const std::vector<int64_t> strides = RowMajorStrides(data.shape());
  const size_t esize = graph::DTypeSize(data.dtype());
  std::vector<int64_t> index(indices.shape().size(), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    int64_t src = 0;
    for (size_t d = 0; d < index.size(); ++d) {
      const int64_t at = static_cast<int64_t>(d) == axis ? Wrap(indices.Int64At(i), n) : index[d];
      src += at * strides[d];
    }
    std::memcpy(Bytes(y) + i * esize, Bytes(data) + src * esize, esize);
    NextIndex(index, indices.shape());
  }
  return std::vector<Tensor>{std::move(y)};
}

// The data offset (in elements) of the slice that row `row` of an ND index tensor selects:
// batch dims come from the row's position, the next k dims from its k index values.
int64_t NDOffset(const Tensor& indices, int64_t row, int64_t k, int64_t batch_dims,
                 const Shape& data, const std::vector<int64_t>& strides, int64_t rows_per_batch) {
  int64_t off = 0;
  int64_t batch = row / rows_per_batch;
  for (int64_t d = batch_dims; d-- > 0;) {
    off += batch % data[static_cast<size_t>(d)] * strides[static_cast<size_t>(d)];
    batch /= data[static_cast<size_t>(d)];
  }
  for (int64_t j = 0; j < k; ++j) {
    const size_t dim = static_cast<size_t>(batch_dims + j);
    off += Wrap(indices.Int64At(row * k + j), data[dim]) * strides[dim];
  }
  return off;
}

OpResult GatherNDOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& data = ctx.inputs[0];
  const Tensor& indices = ctx.inputs[1];
  LOOM_ASSIGN_OR_RETURN(graph::GatherNDSpec spec,
                        graph::ResolveGatherND(ctx.node, data.shape(), indices.type()));
  LOOM_RETURN_IF_ERROR(graph::CheckNDIndexRange(ctx.node, indices, data.shape(), spec.batch_dims));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(data.dtype(), spec.out));
  const int64_t k = indices.shape().back();
  const std::vector<int64_t> strides = RowMajorStrides(data.shape());
  int64_t slice = 1;  // elements per selected slice
  for (int64_t d = spec.batch_dims + k; d < data.rank(); ++d) slice *= data.dim(d);
  const size_t esize = graph::DTypeSize(data.dtype());
  const size_t bytes = static_cast<size_t>(slice) * esize;
  const int64_t rows = IndexRows(indices, 0);
  const int64_t rows_per_batch = IndexRows(indices, spec.batch_dims);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t off =
        NDOffset(indices, r, k, spec.batch_dims, data.shape(), strides, rows_per_batch);
    std::memcpy(Bytes(y) + r * bytes, Bytes(data) + off * esize, bytes);
  }
  return std::vector<Tensor>{std::move(y)};
}

OpResult ScatterElementsOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 3, 3));
  const Tensor& data = ctx.inputs[0];
  const Tensor& indices = ctx.inputs[1];
  const Tensor& updates = ctx.inputs[2];
  LOOM_ASSIGN_OR_RETURN(ScatterReduction r, graph::ResolveScatterReduction(ctx.node, ctx.opset));
  LOOM_ASSIGN_OR_RETURN(int64_t axis, graph::ResolveScatterElements(
                                          ctx.node, data.type(), indices.type(), updates.type()));
  const int64_t n = data.dim(axis);
  LOOM_RETURN_IF_ERROR(graph::CheckIndexRange(ctx.node, indices, n, absl::StrCat("axis ", axis)));
  for (int64_t d = 0; d < data.rank(); ++d) {
    if (d != axis && indices.dim(d) > data.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat("indices ", indices.type().ToString(),
                                                     " exceed data ", data.type().ToString(),
                                                     " in dim ", d));
    }
  }
  Tensor y = data.Clone();
  const std::vector<int64_t> strides = RowMajorStrides(data.shape());
  const size_t esize = graph::DTypeSize(data.dtype());
  std::vector<int64_t> index(indices.shape().size(), 0);
  for (int64_t i = 0; i < indices.num_elements(); ++i) {
    int64_t dst = 0;
    for (size_t d = 0; d < index.size(); ++d) {
      const int64_t at = static_cast<int64_t>(d) == axis ? Wrap(indices.Int64At(i), n) : index[d];
      dst += at * strides[d];
    }
    Reduce(data.dtype(), r, Bytes(y) + dst * esize, Bytes(updates) + i * esize);
    NextIndex(index, indices.shape());
  }
  return std::vector<Tensor>{std::move(y)};
}

OpResult ScatterNDOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 3, 3));
  const Tensor& data = ctx.inputs[0];
  const Tensor& indices = ctx.inputs[1];
  const Tensor& updates = ctx.inputs[2];
  LOOM_ASSIGN_OR_RETURN(ScatterReduction r, graph::ResolveScatterReduction(ctx.node, ctx.opset));
  LOOM_RETURN_IF_ERROR(
      graph::CheckScatterND(ctx.node, data.type(), indices.type(), updates.type()));
  LOOM_RETURN_IF_ERROR(graph::CheckNDIndexRange(ctx.node, indices, data.shape(), 0));
  Tensor y = data.Clone();
  const int64_t k = indices.shape().back();
  const std::vector<int64_t> strides = RowMajorStrides(data.shape());
  int64_t slice = 1;
  for (int64_t d = k; d < data.rank(); ++d) slice *= data.dim(d);
  const int64_t rows = IndexRows(indices, 0);
  const size_t esize = graph::DTypeSize(data.dtype());
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t off = NDOffset(indices, row, k, 0, data.shape(), strides, 1);
    for (int64_t e = 0; e < slice; ++e) {
      Reduce(data.dtype(), r, Bytes(y) + (off + e) * esize,
             Bytes(updates) + (row * slice + e) * esize);
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

// OneHot: y[..., j, ...] (j on `axis`) = on where j == index (negative indices count from
// depth), else off; an index outside [-depth, depth) gives a row of off values.
OpResult OneHotOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 3, 3));
  const Tensor& indices = ctx.inputs[0];
  const Tensor& values = ctx.inputs[2];
  if (values.rank() != 1 || values.num_elements() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("values must be [off, on], got ", values.type().ToString()));
  }
  LOOM_ASSIGN_OR_RETURN(graph::OneHotSpec spec,
                        graph::ResolveOneHot(ctx.node, indices.shape(), ctx.inputs[1]));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(values.dtype(), spec.out));
  const size_t esize = graph::DTypeSize(values.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < spec.axis; ++d) outer *= spec.out[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(spec.axis) + 1; d < spec.out.size(); ++d) {
    inner *= spec.out[d];
  }
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < spec.depth; ++j) {
      for (int64_t i = 0; i < inner; ++i) {
        const double raw = indices.DoubleAt(o * inner + i);
        int64_t idx = raw >= -9.0e18 && raw <= 9.0e18 ? static_cast<int64_t>(raw) : spec.depth;
        if (idx < 0) idx += spec.depth;
        const bool on = idx == j;
        std::memcpy(Bytes(y) + ((o * spec.depth + j) * inner + i) * esize,
                    Bytes(values) + (on ? esize : 0), esize);
      }
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterGatherScatterKernels(KernelTable* table) {
  (*table)["GatherElements"] = &GatherElementsOp;
  (*table)["GatherND"] = &GatherNDOp;
  (*table)["ScatterElements"] = &ScatterElementsOp;
  (*table)["ScatterND"] = &ScatterNDOp;
  (*table)["OneHot"] = &OneHotOp;
}

}  // namespace loom::kernels::internal
