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

// The window positions k in [0, kernel) whose input position start + k * dilation lies in
// [lo, hi): the range [*first, *last], empty when *first > *last. Arithmetic, not a loop over
// the kernel, which an attribute may make huge.
void InRange(int64_t start, int64_t dilation, int64_t kernel, int64_t lo, int64_t hi,
             int64_t* first, int64_t* last) {
  auto ceil_div = [](int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
  auto floor_div = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  *first = std::max<int64_t>(0, ceil_div(lo - start, dilation));
  *last = std::min<int64_t>(kernel - 1, floor_div(hi - 1 - start, dilation));
}

// For every output position o of one plane, calls visit(o, offsets, padded_count): `offsets`
// lists the input offsets of the window's elements inside the input (at most the input's size,
// however large the kernel), `padded_count` how many window elements lie inside the padded
// input (the divisor of count_include_pad).
template <typename Visit>
void ForEachWindow(const Pool& p, Visit visit) {
  const size_t dims = p.in.size();
  const std::vector<int64_t> in_strides = RowMajorStrides(p.in);
  const int64_t windows = graph::NumElements(p.out);
  std::vector<int64_t> o_index(dims, 0), first(dims), last(dims), k_index(dims);
  std::vector<int64_t> offsets;
  for (int64_t o = 0; o < windows; ++o) {
    offsets.clear();
    int64_t padded_count = 1;
    bool empty = false;
    for (size_t d = 0; d < dims; ++d) {
      const int64_t start = o_index[d] * p.geo.strides[d] - p.geo.pads[d];
      int64_t pf, pl;
      InRange(start, p.geo.dilations[d], p.geo.kernel[d], -p.geo.pads[d],
              p.in[d] + p.geo.pads[d + dims], &pf, &pl);
      padded_count *= std::max<int64_t>(0, pl - pf + 1);
      InRange(start, p.geo.dilations[d], p.geo.kernel[d], 0, p.in[d], &first[d], &last[d]);
      empty = empty || first[d] > last[d];
    }
    if (!empty) {
      k_index = first;
      while (true) {
        int64_t offset = 0;
        for (size_t d = 0; d < dims; ++d) {
          offset +=
              (o_index[d] * p.geo.strides[d] - p.geo.pads[d] + k_index[d] * p.geo.dilations[d]) *
              in_strides[d];
        }
        offsets.push_back(offset);
        size_t d = dims;
        while (d-- > 0) {
          if (++k_index[d] <= last[d]) break;
          k_index[d] = first[d];
        }
        if (d == static_cast<size_t>(-1)) break;
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

// y[o] = f(in-range values of the window, padded_count) for a float pool.
template <typename F>
OpResult FloatPool(const OpContext& ctx, F f) {
  LOOM_ASSIGN_OR_RETURN(Pool p, ReadPool(ctx, kFloatDTypes));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), p.out_shape));
  const int64_t in_size = graph::NumElements(p.in), out_size = graph::NumElements(p.out);
  std::vector<double> values;
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_floating_point_v<T>) {
      for (int64_t plane = 0; plane < p.planes; ++plane) {
        const T* px = x.data<T>() + plane * in_size;
        T* py = y.data<T>() + plane * out_size;
        ForEachWindow(p, [&](int64_t o, const std::vector<int64_t>& offsets, int64_t padded) {
          values.clear();
          for (int64_t off : offsets) values.push_back(static_cast<double>(px[off]));
          py[o] = static_cast<T>(f(values, padded));
        });
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// AveragePool (ONNX/PyTorch semantics): the sum of the window's in-range elements divided by
// their number, or, with count_include_pad, by the number of window elements inside the padded
// input (so a ceil_mode window hanging past the padded input does not count the overhang).
OpResult AveragePoolOp(const OpContext& ctx) {
  const bool count_include_pad = ctx.node.GetInt("count_include_pad", 0) != 0;
  return FloatPool(ctx, [count_include_pad](const std::vector<double>& v, int64_t padded) {
    double sum = 0.0;
    for (double e : v) sum += e;
    const int64_t count = count_include_pad ? padded : static_cast<int64_t>(v.size());
    return count > 0 ? sum / static_cast<double>(count) : 0.0;
  });
}

// LpPool: (sum over the window's in-range elements of |x|^p)^(1/p); padding adds nothing.
OpResult LpPoolOp(const OpContext& ctx) {
  const int64_t norm = ctx.node.GetInt("p", 2);
  if (norm < 1) {
    return absl::InvalidArgumentError(absl::StrCat("attribute 'p' is ", norm, "; it must be >= 1"));
  }
  const double p = static_cast<double>(norm);
  return FloatPool(ctx, [p](const std::vector<double>& v, int64_t) {
    double sum = 0.0;
    for (double e : v) sum += std::pow(std::fabs(e), p);
    return std::pow(sum, 1.0 / p);
  });
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
