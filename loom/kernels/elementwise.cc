// Elementwise reference kernels: broadcasting arithmetic, activations, Clip, Softmax,
// BatchNormalization (inference). Cast is in cast.cc.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

// out[i] = f(a[ia], b[ib]) over the broadcast of a and b. The innermost output dim is the inner
// loop; the outer dims are walked with an index counter.
template <typename T, typename F>
void BroadcastBinary(const Tensor& a, const Tensor& b, Tensor* out, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out->data<T>();
  const int64_t total = out->num_elements();
  if (total == 0) return;
  if (a.shape() == b.shape()) {
    for (int64_t i = 0; i < total; ++i) po[i] = f(pa[i], pb[i]);
    return;
  }
  const Shape& os = out->shape();
  const std::vector<int64_t> sa = BroadcastStrides(a.shape(), os);
  const std::vector<int64_t> sb = BroadcastStrides(b.shape(), os);
  const size_t rank = os.size();
  const int64_t inner = os.back();
  const int64_t ia = sa.back(), ib = sb.back();
  std::vector<int64_t> index(rank - 1, 0);
  for (int64_t o = 0; o < total / inner; ++o) {
    int64_t a_off = 0, b_off = 0;
    for (size_t d = 0; d + 1 < rank; ++d) {
      a_off += index[d] * sa[d];
      b_off += index[d] * sb[d];
    }
    for (int64_t j = 0; j < inner; ++j) {
      po[o * inner + j] = f(pa[a_off + j * ia], pb[b_off + j * ib]);
    }
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < os[d]) break;
      index[d] = 0;
    }
  }
}

enum class BinaryKind { kAdd, kSub, kMul, kDiv };

template <BinaryKind kKind>
OpResult BinaryOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& a = ctx.inputs[0];
  const Tensor& b = ctx.inputs[1];
  if (a.dtype() != b.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("operand types differ: A ", a.type().ToString(), ", B ", b.type().ToString()));
  }
  if (a.dtype() != DType::kFloat32 && a.dtype() != DType::kInt64 && a.dtype() != DType::kInt32) {
    return absl::UnimplementedError(absl::StrCat("dtype ", graph::DTypeName(a.dtype()),
                                                 " is not supported (float32, int64, "
                                                 "int32 are)"));
  }
  LOOM_ASSIGN_OR_RETURN(Shape shape, BroadcastShapes(a.shape(), b.shape()));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(a.dtype(), shape));
  absl::Status status = VisitDType(a.dtype(), [&](auto zero) -> absl::Status {
    using T = decltype(zero);
    if constexpr (kKind == BinaryKind::kAdd) {
      BroadcastBinary<T>(a, b, &y, [](T x, T z) { return x + z; });
    } else if constexpr (kKind == BinaryKind::kSub) {
      BroadcastBinary<T>(a, b, &y, [](T x, T z) { return x - z; });
    } else if constexpr (kKind == BinaryKind::kMul) {
      BroadcastBinary<T>(a, b, &y, [](T x, T z) { return x * z; });
    } else {
      if constexpr (std::is_integral_v<T>) {
        // Integer division truncates toward zero (C++ and ONNX Runtime semantics).
        for (T v : b.values<T>()) {
          if (v == 0) return absl::InvalidArgumentError("integer division by zero");
        }
      }
      BroadcastBinary<T>(a, b, &y, [](T x, T z) { return x / z; });
    }
    return absl::OkStatus();
  });
  LOOM_RETURN_IF_ERROR(status);
  return std::vector<Tensor>{std::move(y)};
}

// Applies f to every element of a float32 (or, with `allow_int64`, int64) input.
template <typename F>
OpResult UnaryOp(const OpContext& ctx, bool allow_int64, F f) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  if (x.dtype() != DType::kFloat32 && !(allow_int64 && x.dtype() == DType::kInt64)) {
    return absl::UnimplementedError(
        absl::StrCat("input ", x.type().ToString(), " has an unsupported dtype"));
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  if (x.dtype() == DType::kFloat32) {
    const float* px = x.data<float>();
    float* py = y.data<float>();
    for (int64_t i = 0; i < x.num_elements(); ++i) py[i] = f(px[i]);
  } else {
    const int64_t* px = x.data<int64_t>();
    int64_t* py = y.data<int64_t>();
    for (int64_t i = 0; i < x.num_elements(); ++i) py[i] = f(px[i]);
  }
  return std::vector<Tensor>{std::move(y)};
}

OpResult ReluOp(const OpContext& ctx) {
  return UnaryOp(ctx, true, [](auto v) { return v > decltype(v){0} ? v : decltype(v){0}; });
}

OpResult LeakyReluOp(const OpContext& ctx) {
  const float alpha = ctx.node.GetFloat("alpha", 0.01f);
  return UnaryOp(ctx, false, [alpha](auto v) { return v >= 0 ? v : decltype(v)(alpha * v); });
}

OpResult SigmoidOp(const OpContext& ctx) {
  // Written so that exp never overflows.
  return UnaryOp(ctx, false, [](auto v) {
    using T = decltype(v);
    if (v >= 0) return T(1.0f / (1.0f + std::exp(-float(v))));
    const float e = std::exp(float(v));
    return T(e / (1.0f + e));
  });
}

OpResult HardSigmoidOp(const OpContext& ctx) {
  const float alpha = ctx.node.GetFloat("alpha", 0.2f);
  const float beta = ctx.node.GetFloat("beta", 0.5f);
  return UnaryOp(ctx, false, [alpha, beta](auto v) {
    return decltype(v)(std::max(0.0f, std::min(1.0f, alpha * float(v) + beta)));
  });
}

OpResult HardSwishOp(const OpContext& ctx) {
  // x * HardSigmoid(x) with alpha = 1/6, beta = 0.5.
  return UnaryOp(ctx, false, [](auto v) {
    return decltype(v)(float(v) * std::max(0.0f, std::min(1.0f, float(v) / 6.0f + 0.5f)));
  });
}

OpResult TanhOp(const OpContext& ctx) {
  return UnaryOp(ctx, false, [](auto v) { return decltype(v)(std::tanh(float(v))); });
}

// Clip: bounds are optional inputs from opset 11 (an empty name omits one), attributes before.
OpResult ClipOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 3, 1));
  const Tensor& x = ctx.inputs[0];
  if (x.dtype() != DType::kFloat32 && x.dtype() != DType::kInt64) {
    return absl::UnimplementedError(
        absl::StrCat("input ", x.type().ToString(), " has an unsupported dtype"));
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  if (ctx.opset < 11) {
    LOOM_RETURN_IF_ERROR(CheckDType(x, "input", DType::kFloat32));
    const float lo = ctx.node.GetFloat("min", std::numeric_limits<float>::lowest());
    const float hi = ctx.node.GetFloat("max", std::numeric_limits<float>::max());
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      y.data<float>()[i] = std::min(hi, std::max(lo, x.data<float>()[i]));
    }
    return std::vector<Tensor>{std::move(y)};
  }
  for (size_t i = 1; i < 3; ++i) {
    if (!ctx.HasInput(i)) continue;
    const Tensor& bound = ctx.inputs[i];
    if (bound.dtype() != x.dtype() || bound.num_elements() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(i == 1 ? "min " : "max ",
                                                     bound.type().ToString(), " must be a ",
                                                     graph::DTypeName(x.dtype()), " scalar"));
    }
  }
  absl::Status status = VisitDType(x.dtype(), [&](auto zero) -> absl::Status {
    using T = decltype(zero);
    const T lo = ctx.HasInput(1) ? ctx.inputs[1].data<T>()[0] : std::numeric_limits<T>::lowest();
    const T hi = ctx.HasInput(2) ? ctx.inputs[2].data<T>()[0] : std::numeric_limits<T>::max();
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      // ONNX: min(max(x, lo), hi); with lo > hi every element becomes hi.
      y.data<T>()[i] = std::min(hi, std::max(lo, x.data<T>()[i]));
    }
    return absl::OkStatus();
  });
  LOOM_RETURN_IF_ERROR(status);
  return std::vector<Tensor>{std::move(y)};
}

// Softmax. Opset < 13 coerces the input to 2-D [prod(dims[:axis]), prod(dims[axis:])] (default
// axis 1) and normalises each row; opset >= 13 normalises along one axis (default -1).
OpResult SoftmaxOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDType(x, "input", DType::kFloat32));
  const bool coerce_2d = ctx.opset < 13;
  const int64_t rank = x.rank();
  int64_t axis = ctx.node.GetInt("axis", coerce_2d ? 1 : -1);
  if (rank == 0) {
    return absl::InvalidArgumentError("input must have rank at least 1");
  }
  LOOM_ASSIGN_OR_RETURN(axis, NormalizeAxis(axis, rank, "axis"));
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.dim(d);
  if (coerce_2d) {
    for (int64_t d = axis; d < rank; ++d) n *= x.dim(d);
  } else {
    n = x.dim(axis);
    for (int64_t d = axis + 1; d < rank; ++d) inner *= x.dim(d);
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, x.shape()));
  const float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * n * inner + i;
      auto at = [&](int64_t j) { return base + j * inner; };
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) max = std::max(max, px[at(j)]);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        py[at(j)] = std::exp(px[at(j)] - max);
        sum += py[at(j)];
      }
      for (int64_t j = 0; j < n; ++j) py[at(j)] /= sum;
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

// BatchNormalization in inference mode:
// Y = (X - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + B[c], c = dim 1.
OpResult BatchNormOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 5, 5, 5));
  if (ctx.node.GetInt("training_mode", 0) != 0) {
    return absl::UnimplementedError("training_mode=1 is not supported (inference only)");
  }
  if (ctx.NumOutputs() > 1) {
    return absl::UnimplementedError("running mean/var outputs (training) are not supported");
  }
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDType(x, "X", DType::kFloat32));
  if (x.rank() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must have rank at least 2"));
  }
  const int64_t channels = x.dim(1);
  const char* names[] = {"X", "scale", "B", "input_mean", "input_var"};
  for (size_t i = 1; i < 5; ++i) {
    LOOM_RETURN_IF_ERROR(CheckDType(ctx.inputs[i], names[i], DType::kFloat32));
    if (ctx.inputs[i].shape() != Shape{channels}) {
      return absl::InvalidArgumentError(absl::StrCat(names[i], " ", ctx.inputs[i].type().ToString(),
                                                     " must be [", channels, "] for X ",
                                                     x.type().ToString()));
    }
  }
  const float epsilon = ctx.node.GetFloat("epsilon", 1e-5f);
  const float* scale = ctx.inputs[1].data<float>();
  const float* bias = ctx.inputs[2].data<float>();
  const float* mean = ctx.inputs[3].data<float>();
  const float* var = ctx.inputs[4].data<float>();
  int64_t inner = 1;
  for (int64_t d = 2; d < x.rank(); ++d) inner *= x.dim(d);
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, x.shape()));
  const float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t n = 0; n < x.dim(0); ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float denom = std::sqrt(var[c] + epsilon);
      const int64_t base = (n * channels + c) * inner;
      for (int64_t i = 0; i < inner; ++i) {
        py[base + i] = (px[base + i] - mean[c]) / denom * scale[c] + bias[c];
      }
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterElementwiseKernels(KernelTable* table) {
  (*table)["Add"] = &BinaryOp<BinaryKind::kAdd>;
  (*table)["Sub"] = &BinaryOp<BinaryKind::kSub>;
  (*table)["Mul"] = &BinaryOp<BinaryKind::kMul>;
  (*table)["Div"] = &BinaryOp<BinaryKind::kDiv>;
  (*table)["Relu"] = &ReluOp;
  (*table)["LeakyRelu"] = &LeakyReluOp;
  (*table)["Sigmoid"] = &SigmoidOp;
  (*table)["HardSigmoid"] = &HardSigmoidOp;
  (*table)["HardSwish"] = &HardSwishOp;
  (*table)["Tanh"] = &TanhOp;
  (*table)["Clip"] = &ClipOp;
  (*table)["Softmax"] = &SoftmaxOp;
  (*table)["BatchNormalization"] = &BatchNormOp;
}

}  // namespace loom::kernels::internal
