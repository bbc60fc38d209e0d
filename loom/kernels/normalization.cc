// Normalization reference kernels: Softmax, LogSoftmax, Hardmax, BatchNormalization (inference),
// LayerNormalization, GroupNormalization and InstanceNormalization, over float32 and float64
// (float16/bfloat16 arrive as float32, see EvaluateNode). Means and variances accumulate in
// double, so the oracle is more accurate than the kernels checked against it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

using graph::kFloatDTypes;

// Calls f(T{}) with float or double for a float32 or float64 dtype.
template <typename F>
decltype(auto) VisitFloat(DType dtype, F&& f) {
  if (dtype == DType::kFloat64) return f(double{});
  return f(float{});
}

// ---------------------------------------------------------------------------------------------
// Softmax family. Opset < 13 coerces the input to 2-D [prod(dims[:axis]), prod(dims[axis:])]
// (default axis 1) and normalises each row; opset >= 13 normalises along one axis (default -1).

enum class SoftmaxKind { kSoftmax, kLogSoftmax, kHardmax };

template <SoftmaxKind kKind>
OpResult SoftmaxOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "input", kFloatDTypes));
  const bool coerce_2d = ctx.opset < 13;
  const int64_t rank = x.rank();
  if (rank == 0) return absl::InvalidArgumentError("input must have rank at least 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis,
                        NormalizeAxis(ctx.node.GetInt("axis", coerce_2d ? 1 : -1), rank, "axis"));
  AxisSplit split = SplitAtAxis(x.shape(), axis);
  if (coerce_2d) {
    split.n *= split.inner;
    split.inner = 1;
  }
  const int64_t outer = split.outer, n = split.n, inner = split.inner;
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  VisitFloat(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t base = o * n * inner + i;
        auto at = [&](int64_t j) { return base + j * inner; };
        T max = -std::numeric_limits<T>::infinity();
        int64_t argmax = 0;
        for (int64_t j = 0; j < n; ++j) {
          if (px[at(j)] > max) {
            max = px[at(j)];
            argmax = j;
          }
        }
        if constexpr (kKind == SoftmaxKind::kHardmax) {
          // 1 at the first maximum of the row, 0 elsewhere.
          for (int64_t j = 0; j < n; ++j) py[at(j)] = j == argmax ? T(1) : T(0);
        } else {
          double sum = 0.0;
          for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(px[at(j)] - max));
          for (int64_t j = 0; j < n; ++j) {
            const double shifted = static_cast<double>(px[at(j)] - max);
            py[at(j)] = static_cast<T>(kKind == SoftmaxKind::kSoftmax ? std::exp(shifted) / sum
                                                                      : shifted - std::log(sum));
          }
        }
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// ---------------------------------------------------------------------------------------------
// BatchNormalization in inference mode:
// Y = (X - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + B[c], c = dim 1.
OpResult BatchNormOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 5, 5, 5));
  if (ctx.node.GetInt("training_mode", 0) != 0) {
    return absl::UnimplementedError(
        "attribute 'training_mode' is 1; only inference (training_mode=0) is supported");
  }
  for (size_t i = 1; i < ctx.NumOutputs(); ++i) {
    if (ctx.WantsOutput(i)) {
      return absl::UnimplementedError(
          "the running mean/var outputs (training) are not supported; inference has one output");
    }
  }
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kFloatDTypes));
  if (x.rank() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must have rank at least 2"));
  }
  const int64_t channels = x.dim(1);
  static constexpr const char* kNames[] = {"X", "scale", "B", "input_mean", "input_var"};
  std::vector<std::vector<double>> params(5);
  for (size_t i = 1; i < 5; ++i) {
    const Tensor& p = ctx.inputs[i];
    LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, p, kNames[i], kFloatDTypes));
    if (p.shape() != Shape{channels}) {
      return absl::InvalidArgumentError(absl::StrCat(kNames[i], " ", p.type().ToString(),
                                                     " must be [", channels, "] for X ",
                                                     x.type().ToString()));
    }
    for (int64_t c = 0; c < channels; ++c) params[i].push_back(p.DoubleAt(c));
  }
  const double epsilon = ctx.node.GetFloat("epsilon", 1e-5f);
  int64_t inner = 1;
  for (int64_t d = 2; d < x.rank(); ++d) inner *= x.dim(d);
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  VisitFloat(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t n = 0; n < x.dim(0); ++n) {
      for (int64_t c = 0; c < channels; ++c) {
        const double mul = params[1][c] / std::sqrt(params[4][c] + epsilon);
        const double add = params[2][c] - params[3][c] * mul;
        const int64_t base = (n * channels + c) * inner;
        for (int64_t i = 0; i < inner; ++i) {
          py[base + i] = static_cast<T>(static_cast<double>(px[base + i]) * mul + add);
        }
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// Mean and 1/sqrt(variance + epsilon) of `count` elements of x starting at `first`, `stride`
// apart, in double.
template <typename T>
void Moments(const T* x, int64_t first, int64_t count, int64_t stride, double epsilon, double* mean,
             double* inv_std) {
  double sum = 0.0;
  for (int64_t i = 0; i < count; ++i) sum += static_cast<double>(x[first + i * stride]);
  *mean = sum / static_cast<double>(count);
  double sq = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(x[first + i * stride]) - *mean;
    sq += d * d;
  }
  *inv_std = 1.0 / std::sqrt(sq / static_cast<double>(count) + epsilon);
}

// stash_type (LayerNormalization 17, GroupNormalization 21) names the precision of the
// statistics; Loom computes them in double and accepts float32 (1), the default.
absl::Status CheckStashType(const OpContext& ctx) {
  const int64_t stash = ctx.node.GetInt("stash_type", 1);
  if (stash != 1) {
    return absl::UnimplementedError(absl::StrCat("attribute 'stash_type' is ", stash,
                                                 "; only 1 (float32 statistics) is supported"));
  }
  return absl::OkStatus();
}

// LayerNormalization (opset 17): normalises over dims [axis, rank) of X; Scale and B broadcast to
// X. Optional outputs Mean and InvStdDev are float32 of shape X.shape[:axis] + [1] * (rank - axis).
OpResult LayerNormOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 3, 2));
  LOOM_RETURN_IF_ERROR(CheckStashType(ctx));
  const Tensor& x = ctx.inputs[0];
  const Tensor& scale = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kFloatDTypes));
  const int64_t rank = x.rank();
  if (rank == 0) return absl::InvalidArgumentError("X must have rank at least 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(ctx.node.GetInt("axis", -1), rank, "axis"));
  const double epsilon = ctx.node.GetFloat("epsilon", 1e-5f);
  const Tensor* bias = ctx.HasInput(2) ? &ctx.inputs[2] : nullptr;
  for (const Tensor* p : {&scale, bias}) {
    if (p == nullptr) continue;
    const char* what = p == &scale ? "Scale" : "B";
    if (p->dtype() != x.dtype()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", p->type().ToString(), " must have the type of X ", x.type().ToString()));
    }
    auto shape = BroadcastShapes(x.shape(), p->shape());
    if (!shape.ok() || *shape != x.shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", p->type().ToString(), " does not broadcast to X ", x.type().ToString()));
    }
  }
  int64_t outer = 1, n = 1;
  Shape stat_shape;
  for (int64_t d = 0; d < rank; ++d) {
    if (d < axis) {
      outer *= x.dim(d);
      stat_shape.push_back(x.dim(d));
    } else {
      n *= x.dim(d);
      stat_shape.push_back(1);
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  LOOM_ASSIGN_OR_RETURN(Tensor mean_out, NewTensor(DType::kFloat32, stat_shape));
  LOOM_ASSIGN_OR_RETURN(Tensor inv_std_out, NewTensor(DType::kFloat32, stat_shape));
  VisitFloat(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    std::vector<double> mean(static_cast<size_t>(outer)), inv_std(static_cast<size_t>(outer));
    for (int64_t o = 0; o < outer; ++o) {
      Moments(px, o * n, n, 1, epsilon, &mean[o], &inv_std[o]);
      mean_out.data<float>()[o] = static_cast<float>(mean[o]);
      inv_std_out.data<float>()[o] = static_cast<float>(inv_std[o]);
    }
    const T* ps = scale.data<T>();
    const T* pb = bias != nullptr ? bias->data<T>() : nullptr;
    const Shape& bias_shape = bias != nullptr ? bias->shape() : scale.shape();
    ForEachBroadcast<2>(x.shape(), {&scale.shape(), &bias_shape},
                        [&](int64_t i, const std::array<int64_t, 2>& off) {
                          const int64_t o = i / n;
                          double v = (static_cast<double>(px[i]) - mean[o]) * inv_std[o] *
                                     static_cast<double>(ps[off[0]]);
                          if (pb != nullptr) v += static_cast<double>(pb[off[1]]);
                          py[i] = static_cast<T>(v);
                        });
  });
  return std::vector<Tensor>{std::move(y), std::move(mean_out), std::move(inv_std_out)};
}

// Normalises X [N, C, spatial...] over each (n, group of channels): InstanceNormalization has
// one group per channel, GroupNormalization `num_groups`. scale/bias hold one value per channel,
// or (GroupNormalization before opset 21) one per group.
OpResult NormalizeGroups(const OpContext& ctx, int64_t groups, bool per_group_params) {
  const Tensor& x = ctx.inputs[0];
  const Tensor& scale = ctx.inputs[1];
  const Tensor& bias = ctx.inputs[2];
  const int64_t channels = x.dim(1);
  const int64_t params = per_group_params ? groups : channels;
  for (const Tensor* p : {&scale, &bias}) {
    const char* what = p == &scale ? "scale" : "bias";
    LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, *p, what, kFloatDTypes));
    if (p->shape() != Shape{params}) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", p->type().ToString(), " must be [", params, "] (one value per ",
                       per_group_params ? "group" : "channel", ") for X ", x.type().ToString()));
    }
  }
  const double epsilon = ctx.node.GetFloat("epsilon", 1e-5f);
  int64_t spatial = 1;
  for (int64_t d = 2; d < x.rank(); ++d) spatial *= x.dim(d);
  const int64_t group_channels = channels / groups;
  const int64_t group_size = group_channels * spatial;
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  VisitFloat(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t ng = 0; ng < x.dim(0) * groups; ++ng) {
      const int64_t g = ng % groups;
      double mean, inv_std;
      Moments(px, ng * group_size, group_size, 1, epsilon, &mean, &inv_std);
      for (int64_t gc = 0; gc < group_channels; ++gc) {
        const int64_t p = per_group_params ? g : g * group_channels + gc;
        const double s = scale.DoubleAt(p), b = bias.DoubleAt(p);
        const int64_t base = ng * group_size + gc * spatial;
        for (int64_t i = 0; i < spatial; ++i) {
          py[base + i] =
              static_cast<T>((static_cast<double>(px[base + i]) - mean) * inv_std * s + b);
        }
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

absl::Status CheckNchwInput(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 3, 3));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kFloatDTypes));
  if (x.rank() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must be [N, C, spatial...]"));
  }
  return absl::OkStatus();
}

OpResult InstanceNormOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckNchwInput(ctx));
  return NormalizeGroups(ctx, ctx.inputs[0].dim(1), /*per_group_params=*/false);
}

// GroupNormalization: scale and bias are per group at opset 18, per channel from opset 21.
OpResult GroupNormOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckNchwInput(ctx));
  LOOM_RETURN_IF_ERROR(CheckStashType(ctx));
  if (!ctx.node.HasAttr("num_groups")) {
    return absl::InvalidArgumentError("attribute 'num_groups' is missing");
  }
  const int64_t groups = ctx.node.GetInt("num_groups", 0);
  const int64_t channels = ctx.inputs[0].dim(1);
  if (groups < 1 || channels % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attribute 'num_groups' is ", groups,
                                                   "; it must be positive and divide the ",
                                                   channels, " channels"));
  }
  return NormalizeGroups(ctx, groups, /*per_group_params=*/ctx.opset < 21);
}

}  // namespace

void RegisterNormalizationKernels(KernelTable* table) {
  (*table)["Softmax"] = &SoftmaxOp<SoftmaxKind::kSoftmax>;
  (*table)["LogSoftmax"] = &SoftmaxOp<SoftmaxKind::kLogSoftmax>;
  (*table)["Hardmax"] = &SoftmaxOp<SoftmaxKind::kHardmax>;
  (*table)["BatchNormalization"] = &BatchNormOp;
  (*table)["LayerNormalization"] = &LayerNormOp;
  (*table)["GroupNormalization"] = &GroupNormOp;
  (*table)["InstanceNormalization"] = &InstanceNormOp;
}

}  // namespace loom::kernels::internal
