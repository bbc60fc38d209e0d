// Pooling reference kernels: MaxPool (with its Indices output), AveragePool, LpPool,
// GlobalAveragePool and GlobalMaxPool, over any spatial rank. Window geometry (pads, auto_pad,
// ceil_mode, dilations) comes from graph::ResolveWindowGeometry, as in the shape rules.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

using graph::kFloatDTypes;

// One windowed pool over `dims` spatial dims.
struct Pool {
  int64_t planes = 0;  // batch * channels
  Shape in, out;       // spatial extents
  graph::WindowGeometry geo;
  Shape out_shape;  // [N, C, out...]
};

absl::StatusOr<Pool> ReadPool(const OpContext& ctx, DTypeSet allowed) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", allowed));
  if (x.rank() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must be [N, C, spatial...]"));
  }
  if (!ctx.node.HasAttr("kernel_shape")) {
    return absl::InvalidArgumentError("attribute 'kernel_shape' is missing");
  }
  Pool p;
  p.planes = x.dim(0) * x.dim(1);
  p.in.assign(x.shape().begin() + 2, x.shape().end());
  LOOM_ASSIGN_OR_RETURN(
      p.geo, graph::ResolveWindowGeometry(ctx.node, p.in, ctx.node.GetInts("kernel_shape"),
                                          ctx.node.GetInt("ceil_mode", 0) != 0));
  p.out = p.geo.output;
  p.out_shape = {x.dim(0), x.dim(1)};
  p.out_shape.insert(p.out_shape.end(), p.out.begin(), p.out.end());
  return p;
}

// For every output position of one plane, calls visit(out_offset, window) where `window` lists
// the (input offset, in_range) of each window element; and, per dim, how many of the window's
// elements lie within the padded input (for count_include_pad).
template <typename Visit>
void ForEachWindow(const Pool& p, Visit visit) {
  const size_t dims = p.in.size();
  const std::vector<int64_t> in_strides = RowMajorStrides(p.in);
  const int64_t windows = graph::NumElements(p.out);
  const int64_t window_size = graph::NumElements(p.geo.kernel);
  std::vector<int64_t> o_index(dims, 0), k_index(dims);
  std::vector<int64_t> offsets;  // input offsets of the in-range elements
  offsets.reserve(static_cast<size_t>(window_size));
  for (int64_t o = 0; o < windows; ++o) {
    offsets.clear();
    int64_t padded_count = 1;
    for (size_t d = 0; d < dims; ++d) {
      const int64_t start = o_index[d] * p.geo.strides[d] - p.geo.pads[d];
      int64_t n = 0;
      for (int64_t k = 0; k < p.geo.kernel[d]; ++k) {
        const int64_t i = start + k * p.geo.dilations[d];
        n += i >= -p.geo.pads[d] && i < p.in[d] + p.geo.pads[d + dims];
      }
      padded_count *= n;
    }
    std::fill(k_index.begin(), k_index.end(), 0);
    for (int64_t k = 0; k < window_size; ++k) {
      int64_t offset = 0;
      bool inside = true;
      for (size_t d = 0; d < dims && inside; ++d) {
        const int64_t i =
            o_index[d] * p.geo.strides[d] - p.geo.pads[d] + k_index[d] * p.geo.dilations[d];
        inside = i >= 0 && i < p.in[d];
        offset += i * in_strides[d];
      }
      if (inside) offsets.push_back(offset);
      for (size_t d = dims; d-- > 0;) {
        if (++k_index[d] < p.geo.kernel[d]) break;
        k_index[d] = 0;
      }
    }
    visit(o, offsets, padded_count);
    for (size_t d = dims; d-- > 0;) {
      if (++o_index[d] < p.out[d]) break;
      o_index[d] = 0;
    }
  }
}

// MaxPool: the maximum over the window's in-range elements (padding never wins). The optional
// Indices output holds the flat index of the first maximum in X: row-major over [N, C, spatial]
// with storage_order 0; with storage_order 1 the spatial dims are column-major.
OpResult MaxPoolOp(const OpContext& ctx) {
  LOOM_ASSIGN_OR_RETURN(Pool p,
                        ReadPool(ctx, kFloatDTypes | DTypeSet{DType::kInt8, DType::kUint8}));
  const int64_t storage_order = ctx.node.GetInt("storage_order", 0);
  if (storage_order != 0 && storage_order != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attribute 'storage_order' is ", storage_order, "; it must be 0 or 1"));
  }
  const Tensor& x = ctx.inputs[0];
  const bool want_indices = ctx.WantsOutput(1);
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), p.out_shape));
  Tensor indices;
  if (want_indices) {
    LOOM_ASSIGN_OR_RETURN(indices, NewTensor(DType::kInt64, p.out_shape));
  }
  const size_t dims = p.in.size();
  const int64_t in_size = graph::NumElements(p.in), out_size = graph::NumElements(p.out);
  const std::vector<int64_t> row_strides = RowMajorStrides(p.in);
  std::vector<int64_t> col_strides(dims, 1);  // column-major: the first spatial dim is fastest
  for (size_t d = 1; d < dims; ++d) col_strides[d] = col_strides[d - 1] * p.in[d - 1];
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    for (int64_t plane = 0; plane < p.planes; ++plane) {
      const T* px = x.data<T>() + plane * in_size;
      T* py = y.data<T>() + plane * out_size;
      ForEachWindow(p, [&](int64_t o, const std::vector<int64_t>& offsets, int64_t) {
        T best = std::numeric_limits<T>::lowest();
        if constexpr (std::is_floating_point_v<T>) best = -std::numeric_limits<T>::infinity();
        int64_t best_offset = -1;
        for (int64_t off : offsets) {
          if (best_offset < 0 || px[off] > best) {
            best = px[off];
            best_offset = off;
          }
        }
        py[o] = best;
        if (!want_indices) return;
        int64_t index = best_offset;
        if (storage_order == 1 && best_offset >= 0) {
          index = 0;
          for (size_t d = 0; d < dims; ++d) {
            index += (best_offset / row_strides[d] % p.in[d]) * col_strides[d];
          }
        }
        indices.data<int64_t>()[plane * out_size + o] = plane * in_size + index;
      });
    }
  });
  std::vector<Tensor> outs{std::move(y)};
  if (want_indices) outs.push_back(std::move(indices));
  return outs;
}

// AveragePool (ONNX/PyTorch semantics): the sum of the window's in-range elements divided by
// their number, or, with count_include_pad, by the number of window elements inside the padded
// input (so a ceil_mode window hanging past the padded input does not count the overhang).
OpResult AveragePoolOp(const OpContext& ctx) {
  LOOM_ASSIGN_OR_RETURN(Pool p, ReadPool(ctx, kFloatDTypes));
  const bool count_include_pad = ctx.node.GetInt("count_include_pad", 0) != 0;
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), p.out_shape));
  const int64_t in_size = graph::NumElements(p.in), out_size = graph::NumElements(p.out);
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_floating_point_v<T>) {
      for (int64_t plane = 0; plane < p.planes; ++plane) {
        const T* px = x.data<T>() + plane * in_size;
        T* py = y.data<T>() + plane * out_size;
        ForEachWindow(p, [&](int64_t o, const std::vector<int64_t>& offsets, int64_t padded) {
          double sum = 0.0;
          for (int64_t off : offsets) sum += static_cast<double>(px[off]);
          const int64_t count = count_include_pad ? padded : static_cast<int64_t>(offsets.size());
          py[o] = count > 0 ? static_cast<T>(sum / static_cast<double>(count)) : T(0);
        });
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// LpPool: (sum over the window's in-range elements of |x|^p)^(1/p); padding adds nothing.
OpResult LpPoolOp(const OpContext& ctx) {
  LOOM_ASSIGN_OR_RETURN(Pool p, ReadPool(ctx, kFloatDTypes));
  const int64_t norm = ctx.node.GetInt("p", 2);
  if (norm < 1) {
    return absl::InvalidArgumentError(absl::StrCat("attribute 'p' is ", norm, "; it must be >= 1"));
  }
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), p.out_shape));
  const int64_t in_size = graph::NumElements(p.in), out_size = graph::NumElements(p.out);
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_floating_point_v<T>) {
      for (int64_t plane = 0; plane < p.planes; ++plane) {
        const T* px = x.data<T>() + plane * in_size;
        T* py = y.data<T>() + plane * out_size;
        ForEachWindow(p, [&](int64_t o, const std::vector<int64_t>& offsets, int64_t) {
          double sum = 0.0;
          for (int64_t off : offsets) {
            sum += std::pow(std::fabs(static_cast<double>(px[off])), static_cast<double>(norm));
          }
          py[o] = static_cast<T>(std::pow(sum, 1.0 / static_cast<double>(norm)));
        });
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// GlobalAveragePool / GlobalMaxPool: X [N, C, spatial...] -> [N, C, 1, ...].
template <bool kMax>
OpResult GlobalPoolOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kFloatDTypes));
  if (x.rank() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must be [N, C, spatial...]"));
  }
  Shape out_shape = {x.dim(0), x.dim(1)};
  int64_t inner = 1;
  for (int64_t d = 2; d < x.rank(); ++d) {
    inner *= x.dim(d);
    out_shape.push_back(1);
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), out_shape));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_floating_point_v<T>) {
      for (int64_t nc = 0; nc < x.dim(0) * x.dim(1); ++nc) {
        const T* plane = x.data<T>() + nc * inner;
        double acc = kMax ? -std::numeric_limits<double>::infinity() : 0.0;
        for (int64_t i = 0; i < inner; ++i) {
          acc = kMax ? std::max(acc, static_cast<double>(plane[i]))
                     : acc + static_cast<double>(plane[i]);
        }
        y.data<T>()[nc] = static_cast<T>(kMax ? acc : acc / static_cast<double>(inner));
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterPoolingKernels(KernelTable* table) {
  (*table)["MaxPool"] = &MaxPoolOp;
  (*table)["AveragePool"] = &AveragePoolOp;
  (*table)["LpPool"] = &LpPoolOp;
  (*table)["GlobalAveragePool"] = &GlobalPoolOp<false>;
  (*table)["GlobalMaxPool"] = &GlobalPoolOp<true>;
}

}  // namespace loom::kernels::internal
