// Reduction reference kernels: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
// ReduceL1, ReduceL2, ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin, CumSum and TopK.
// Float reductions accumulate in double; integer sums and products wrap in their own type.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

using graph::kBoolDTypes;
using graph::kNumericDTypes;

// Which dims of an input a reduction folds, and the output it makes.
struct Reduction {
  std::vector<bool> reduced;  // one per input dim
  Shape kept_shape;           // the input's shape with reduced dims set to 1
  Shape out_shape;            // kept_shape, without the reduced dims unless keepdims
  bool noop = false;          // empty axes with noop_with_empty_axes: the output is the input
};

// Reads axes (an attribute before `axes_input_opset`, an optional input from it), keepdims and
// noop_with_empty_axes, as ONNX's Reduce* operators do.
absl::StatusOr<Reduction> ResolveReduction(const OpContext& ctx, int64_t axes_input_opset) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, ctx.opset >= axes_input_opset ? 2 : 1, 1));
  const Tensor& x = ctx.inputs[0];
  std::vector<int64_t> axes;
  if (ctx.opset >= axes_input_opset) {
    if (ctx.node.HasAttr("axes")) {
      return absl::InvalidArgumentError(absl::StrCat("from opset ", axes_input_opset, " ",
                                                     ctx.node.op_type,
                                                     " takes axes as an input, not an attribute"));
    }
    if (ctx.HasInput(1)) {
      LOOM_ASSIGN_OR_RETURN(axes, ReadInts(ctx.inputs[1], "axes"));
    }
  } else {
    axes = ctx.node.GetInts("axes");
  }
  Reduction r;
  const int64_t rank = x.rank();
  if (axes.empty() && ctx.node.GetInt("noop_with_empty_axes", 0) != 0) {
    r.noop = true;
    return r;
  }
  r.reduced.assign(static_cast<size_t>(rank), axes.empty());
  for (int64_t a : axes) {
    LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, rank, "axis"));
    if (r.reduced[static_cast<size_t>(axis)]) {
      return absl::InvalidArgumentError(absl::StrCat("axis ", a, " is repeated in axes"));
    }
    r.reduced[static_cast<size_t>(axis)] = true;
  }
  const bool keepdims = ctx.node.GetInt("keepdims", 1) != 0;
  for (int64_t d = 0; d < rank; ++d) {
    const bool red = r.reduced[static_cast<size_t>(d)];
    r.kept_shape.push_back(red ? 1 : x.dim(d));
    if (!red || keepdims) r.out_shape.push_back(red ? 1 : x.dim(d));
  }
  return r;
}

// For every input element i in increasing order, calls f(i, o) with o the output element it
// folds into.
template <typename F>
void ForEachReduced(const Shape& in_shape, const Shape& kept_shape, F f) {
  const int64_t total = graph::NumElements(in_shape);
  if (total == 0) return;
  ForEachBroadcast<1>(in_shape, {&kept_shape},
                      [&](int64_t i, const std::array<int64_t, 1>& off) { f(i, off[0]); });
}

enum class ReduceKind { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSumExp, kSumSquare };

template <ReduceKind kKind>
OpResult ReduceOp(const OpContext& ctx) {
  const int64_t axes_input_opset = kKind == ReduceKind::kSum ? 13 : 18;
  LOOM_ASSIGN_OR_RETURN(Reduction r, ResolveReduction(ctx, axes_input_opset));
  const Tensor& x = ctx.inputs[0];
  constexpr bool kMaxMin = kKind == ReduceKind::kMax || kKind == ReduceKind::kMin;
  LOOM_RETURN_IF_ERROR(
      CheckDTypeIn(ctx, x, "data", kMaxMin ? kNumericDTypes | kBoolDTypes : kNumericDTypes));
  if (r.noop) return std::vector<Tensor>{x};
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), r.out_shape));
  const int64_t count =
      graph::NumElements(x.shape()) == 0
          ? 0
          : graph::NumElements(x.shape()) / std::max<int64_t>(1, y.num_elements());
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    // Floats accumulate in double; integers in T, wrapping.
    using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const size_t n_out = static_cast<size_t>(y.num_elements());
    Acc init = 0;
    if constexpr (kKind == ReduceKind::kProd) init = 1;
    if constexpr (kKind == ReduceKind::kMax || kKind == ReduceKind::kLogSumExp) {
      init = std::numeric_limits<Acc>::has_infinity ? -std::numeric_limits<Acc>::infinity()
                                                    : std::numeric_limits<Acc>::lowest();
    }
    if constexpr (kKind == ReduceKind::kMin) {
      init = std::numeric_limits<Acc>::has_infinity ? std::numeric_limits<Acc>::infinity()
                                                    : std::numeric_limits<Acc>::max();
    }
    if constexpr (std::is_same_v<T, uint8_t>) {
      if (x.dtype() == DType::kBool && kKind == ReduceKind::kMax) init = 0;
      if (x.dtype() == DType::kBool && kKind == ReduceKind::kMin) init = 1;
    }
    std::vector<Acc> acc(n_out, init);
    auto wrap_add = [](Acc a, Acc b) -> Acc {
      if constexpr (std::is_floating_point_v<Acc>) {
        return a + b;
      } else {
        return static_cast<Acc>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
      }
    };
    if constexpr (kKind == ReduceKind::kLogSumExp) {
      // Stable: max first, then log(sum(exp(x - max))) + max.
      std::vector<Acc> max(n_out, init);
      ForEachReduced(x.shape(), r.kept_shape, [&](int64_t i, int64_t o) {
        max[o] = std::max<Acc>(max[o], static_cast<Acc>(px[i]));
      });
      std::vector<double> sum(n_out, 0.0);
      ForEachReduced(x.shape(), r.kept_shape, [&](int64_t i, int64_t o) {
        sum[o] += std::exp(static_cast<double>(px[i]) - static_cast<double>(max[o]));
      });
      for (size_t o = 0; o < n_out; ++o) {
        const double m = sum[o] > 0 ? static_cast<double>(max[o]) : 0.0;
        py[o] = static_cast<T>(std::log(sum[o]) + m);
      }
      return;
    }
    ForEachReduced(x.shape(), r.kept_shape, [&](int64_t i, int64_t o) {
      const Acc v = static_cast<Acc>(px[i]);
      Acc& a = acc[static_cast<size_t>(o)];
      if constexpr (kKind == ReduceKind::kSum || kKind == ReduceKind::kMean) {
        a = wrap_add(a, v);
      } else if constexpr (kKind == ReduceKind::kMax) {
        a = std::isnan(static_cast<double>(v)) ? v : std::max(a, v);
      } else if constexpr (kKind == ReduceKind::kMin) {
        a = std::isnan(static_cast<double>(v)) ? v : std::min(a, v);
      } else if constexpr (kKind == ReduceKind::kProd) {
        if constexpr (std::is_floating_point_v<Acc>) {
          a *= v;
        } else {
          a = static_cast<Acc>(static_cast<uint64_t>(a) * static_cast<uint64_t>(v));
        }
      } else if constexpr (kKind == ReduceKind::kL1) {
        if constexpr (std::is_floating_point_v<Acc>) {
          a += std::fabs(v);
        } else if constexpr (std::is_signed_v<Acc>) {
          a = wrap_add(a, v < 0 ? static_cast<Acc>(0 - static_cast<uint64_t>(v)) : v);
        } else {
          a = wrap_add(a, v);
        }
      } else {  // kL2, kSumSquare
        if constexpr (std::is_floating_point_v<Acc>) {
          a += v * v;
        } else {
          a = wrap_add(a, static_cast<Acc>(static_cast<uint64_t>(v) * static_cast<uint64_t>(v)));
        }
      }
    });
    for (size_t o = 0; o < n_out; ++o) {
      if constexpr (kKind == ReduceKind::kMean) {
        // 0 / 0 (an empty reduction) is NaN for floats; integers give 0.
        if constexpr (std::is_floating_point_v<Acc>) {
          py[o] = static_cast<T>(acc[o] / static_cast<double>(count));
        } else {
          py[o] = count == 0 ? T(0) : static_cast<T>(acc[o] / static_cast<Acc>(count));
        }
      } else if constexpr (kKind == ReduceKind::kL2) {
        py[o] = static_cast<T>(std::sqrt(static_cast<double>(acc[o])));
      } else {
        py[o] = static_cast<T>(acc[o]);
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// ArgMax / ArgMin along `axis`: int64 indices of the first extreme value (the last one with
// select_last_index).
template <bool kMax>
OpResult ArgOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "data", kNumericDTypes));
  const int64_t rank = x.rank();
  if (rank == 0) return absl::InvalidArgumentError("data must have rank at least 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(ctx.node.GetInt("axis", 0), rank, "axis"));
  const bool keepdims = ctx.node.GetInt("keepdims", 1) != 0;
  const bool last = ctx.node.GetInt("select_last_index", 0) != 0;
  const int64_t n = x.dim(axis);
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data ", x.type().ToString(), " is empty along axis ", axis));
  }
  const AxisSplit split = SplitAtAxis(x.shape(), axis);
  const int64_t outer = split.outer, inner = split.inner;
  Shape out_shape;
  for (int64_t d = 0; d < rank; ++d) {
    if (d != axis) {
      out_shape.push_back(x.dim(d));
    } else if (keepdims) {
      out_shape.push_back(1);
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kInt64, out_shape));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    int64_t* py = y.data<int64_t>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* row = px + o * n * inner + i;
        int64_t best = 0;
        for (int64_t j = 1; j < n; ++j) {
          const T v = row[j * inner], b = row[best * inner];
          const bool better = kMax ? (last ? v >= b : v > b) : (last ? v <= b : v < b);
          if (better) best = j;
        }
        py[o * inner + i] = best;
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// CumSum along the axis given as a scalar input; exclusive leaves out the element itself,
// reverse sums from the end.
OpResult CumSumOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "x", kNumericDTypes));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> axis_values, ReadInts(ctx.inputs[1], "axis"));
  if (axis_values.size() != 1 || ctx.inputs[1].rank() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis ", ctx.inputs[1].type().ToString(), " must be a scalar (one element)"));
  }
  const int64_t rank = x.rank();
  if (rank == 0) return absl::InvalidArgumentError("x must have rank at least 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(axis_values[0], rank, "axis"));
  const bool exclusive = ctx.node.GetInt("exclusive", 0) != 0;
  const bool reverse = ctx.node.GetInt("reverse", 0) != 0;
  const AxisSplit split = SplitAtAxis(x.shape(), axis);
  const int64_t outer = split.outer, n = split.n, inner = split.inner;
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        Acc sum = 0;
        for (int64_t s = 0; s < n; ++s) {
          const int64_t j = reverse ? n - 1 - s : s;
          const int64_t at = (o * n + j) * inner + i;
          if (exclusive) py[at] = static_cast<T>(sum);
          if constexpr (std::is_floating_point_v<Acc>) {
            sum += static_cast<Acc>(px[at]);
          } else {
            sum = static_cast<Acc>(static_cast<uint64_t>(sum) + static_cast<uint64_t>(px[at]));
          }
          if (!exclusive) py[at] = static_cast<T>(sum);
        }
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// TopK: the k largest (or smallest) elements along `axis` and their int64 indices. Equal values
// keep their input order, so ties resolve to the lower index; the output is always sorted.
OpResult TopKOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kNumericDTypes));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> k_values, ReadInts(ctx.inputs[1], "K"));
  if (k_values.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("K ", ctx.inputs[1].type().ToString(), " must hold one value"));
  }
  const int64_t rank = x.rank();
  if (rank == 0) return absl::InvalidArgumentError("X must have rank at least 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(ctx.node.GetInt("axis", -1), rank, "axis"));
  const int64_t n = x.dim(axis);
  const int64_t k = k_values[0];
  if (k < 0 || k > n) {
    return absl::InvalidArgumentError(absl::StrCat("K ", k, " is out of range for axis ", axis,
                                                   " of X ", x.type().ToString(), " (0..", n, ")"));
  }
  const bool largest = ctx.node.GetInt("largest", 1) != 0;
  const AxisSplit split = SplitAtAxis(x.shape(), axis);
  const int64_t outer = split.outer, inner = split.inner;
  Shape out_shape = x.shape();
  out_shape[static_cast<size_t>(axis)] = k;
  LOOM_ASSIGN_OR_RETURN(Tensor values, NewTensor(x.dtype(), out_shape));
  LOOM_ASSIGN_OR_RETURN(Tensor indices, NewTensor(DType::kInt64, out_shape));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* row = px + o * n * inner + i;
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
          return largest ? row[a * inner] > row[b * inner] : row[a * inner] < row[b * inner];
        });
        for (int64_t j = 0; j < k; ++j) {
          const int64_t at = (o * k + j) * inner + i;
          values.data<T>()[at] = row[order[static_cast<size_t>(j)] * inner];
          indices.data<int64_t>()[at] = order[static_cast<size_t>(j)];
        }
      }
    }
  });
  return std::vector<Tensor>{std::move(values), std::move(indices)};
}

}  // namespace

void RegisterReduceKernels(KernelTable* table) {
  (*table)["ReduceSum"] = &ReduceOp<ReduceKind::kSum>;
  (*table)["ReduceMean"] = &ReduceOp<ReduceKind::kMean>;
  (*table)["ReduceMax"] = &ReduceOp<ReduceKind::kMax>;
  (*table)["ReduceMin"] = &ReduceOp<ReduceKind::kMin>;
  (*table)["ReduceProd"] = &ReduceOp<ReduceKind::kProd>;
  (*table)["ReduceL1"] = &ReduceOp<ReduceKind::kL1>;
  (*table)["ReduceL2"] = &ReduceOp<ReduceKind::kL2>;
  (*table)["ReduceLogSumExp"] = &ReduceOp<ReduceKind::kLogSumExp>;
  (*table)["ReduceSumSquare"] = &ReduceOp<ReduceKind::kSumSquare>;
  (*table)["ArgMax"] = &ArgOp<true>;
  (*table)["ArgMin"] = &ArgOp<false>;
  (*table)["CumSum"] = &CumSumOp;
  (*table)["TopK"] = &TopKOp;
}

}  // namespace loom::kernels::internal
