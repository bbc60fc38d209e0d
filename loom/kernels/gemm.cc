#include "loom/kernels/gemm.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels {

namespace {

// a * b + c, wrapping for integers (computed on uint64_t, where overflow is defined).
template <typename T>
T MulAdd(T a, T b, T c) {
  if constexpr (std::is_floating_point_v<T>) {
    return c + a * b;
  } else {
    return static_cast<T>(static_cast<uint64_t>(c) +
                          static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  }
}

// acc[i*n + j] = sum_k A'[i, k] * B'[k, j], in increasing k order. When B' rows are contiguous
// (no trans_b) a whole output row is accumulated at once; otherwise each element is a dot product
// over two contiguous-in-k vectors when A is not transposed. Both orders are the same per element.
template <typename T>
void Product(const GemmParams& p, const T* a, const T* b, T* acc) {
  const int64_t m = p.m, n = p.n, k = p.k;
  auto a_at = [&](int64_t i, int64_t kk) { return p.trans_a ? a[kk * m + i] : a[i * k + kk]; };
  for (int64_t i = 0; i < m; ++i) {
    T* row = acc + i * n;
    if (!p.trans_b) {
      std::fill(row, row + n, T(0));
      for (int64_t kk = 0; kk < k; ++kk) {
        const T aik = a_at(i, kk);
        const T* b_row = b + kk * n;
        for (int64_t j = 0; j < n; ++j) row[j] = MulAdd(aik, b_row[j], row[j]);
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const T* b_row = b + j * k;  // B'[:, j] = b[j, :]
        T sum = 0;
        for (int64_t kk = 0; kk < k; ++kk) sum = MulAdd(a_at(i, kk), b_row[kk], sum);
        row[j] = sum;
      }
    }
  }
}
}  // namespace

void Gemm(const GemmParams& p, const float* a, const float* b, const float* c_or_null, float* y) {
  Product<float>(p, a, b, y);
  const int64_t size = p.m * p.n;
  for (int64_t i = 0; i < size; ++i) {
    float v = p.alpha * y[i];
    if (c_or_null != nullptr) v += p.beta * c_or_null[i];
    y[i] = v;
  }
}

void MatMul(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* y) {
  Product<float>(GemmParams{.m = m, .n = n, .k = k}, a, b, y);
}

void Dense(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
           const float* bias_or_null, float* y) {
  Product<float>(GemmParams{.m = m, .n = n, .k = k, .trans_b = true}, x, w, y);
  if (bias_or_null == nullptr) return;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) y[i * n + j] += bias_or_null[j];
  }
}

namespace internal {

const DTypeSet kMatMulDTypes =
    graph::kFloatDTypes | DTypeSet{DType::kInt32, DType::kInt64, DType::kUint32, DType::kUint64};

absl::StatusOr<Tensor> MatMulTensors(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("A ", a.type().ToString(), " and B ", b.type().ToString(), " differ in type"));
  }
  if (a.rank() == 0 || b.rank() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("operands must not be scalars, got A ",
                                                   a.type().ToString(), " and B ",
                                                   b.type().ToString()));
  }
  Shape as = a.shape(), bs = b.shape();
  const bool a_vector = as.size() == 1, b_vector = bs.size() == 1;
  if (a_vector) as.insert(as.begin(), 1);
  if (b_vector) bs.push_back(1);
  const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  if (bs[bs.size() - 2] != k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inner dimensions differ: A ", a.type().ToString(), " and B ", b.type().ToString()));
  }
  // Broadcast the batch dims.
  Shape a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  auto batch_or = BroadcastShapes(a_batch, b_batch);
  if (!batch_or.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("batch dimensions of A ", a.type().ToString(),
                                                   " and B ", b.type().ToString(),
                                                   " do not broadcast"));
  }
  const Shape& batch = *batch_or;
  Shape out_shape = batch;
  if (!a_vector) out_shape.push_back(m);
  if (!b_vector) out_shape.push_back(n);
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(a.dtype(), out_shape));
  const GemmParams p{.m = m, .n = n, .k = k};
  VisitDType(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* py = y.data<T>();
    ForEachBroadcast<2>(batch, {&a_batch, &b_batch},
                        [&](int64_t t, const std::array<int64_t, 2>& off) {
                          Product<T>(p, pa + off[0] * m * k, pb + off[1] * k * n, py + t * m * n);
                        });
  });
  return y;
}

namespace {

// ONNX Gemm: A, B 2-D; optional C unidirectionally broadcast to [M, N].
OpResult GemmOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 3, 2));
  const Tensor& a = ctx.inputs[0];
  const Tensor& b = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, a, "A", kMatMulDTypes));
  if (a.dtype() != b.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("A ", a.type().ToString(), " and B ", b.type().ToString(), " differ in type"));
  }
  if (a.rank() != 2 || b.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("A ", a.type().ToString(), " and B ", b.type().ToString(), " must be 2-D"));
  }
  GemmParams p;
  p.trans_a = ctx.node.GetInt("transA", 0) != 0;
  p.trans_b = ctx.node.GetInt("transB", 0) != 0;
  p.alpha = ctx.node.GetFloat("alpha", 1.0f);
  p.beta = ctx.node.GetFloat("beta", 1.0f);
  p.m = p.trans_a ? a.dim(1) : a.dim(0);
  p.k = p.trans_a ? a.dim(0) : a.dim(1);
  p.n = p.trans_b ? b.dim(0) : b.dim(1);
  const int64_t kb = p.trans_b ? b.dim(1) : b.dim(0);
  if (kb != p.k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inner dimensions differ: A ", a.type().ToString(), " (transA ", p.trans_a, ") has K=", p.k,
        ", B ", b.type().ToString(), " (transB ", p.trans_b, ") has K=", kb));
  }
  const Tensor* c = ctx.HasInput(2) ? &ctx.inputs[2] : nullptr;
  if (c != nullptr) {
    if (c->dtype() != a.dtype()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "C ", c->type().ToString(), " must have the type of A ", a.type().ToString()));
    }
    auto bc = BroadcastShapes(c->shape(), {p.m, p.n});
    if (c->rank() > 2 || !bc.ok() || *bc != Shape{p.m, p.n}) {
      return absl::InvalidArgumentError(
          absl::StrCat("C ", c->type().ToString(), " does not broadcast to [", p.m, ",", p.n, "]"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(a.dtype(), {p.m, p.n}));
  VisitDType(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* py = y.data<T>();
    Product<T>(p, a.data<T>(), b.data<T>(), py);
    // alpha and beta are float attributes; integer Gemm scales in double and truncates.
    using S = std::conditional_t<std::is_same_v<T, float>, float, double>;
    const S alpha = static_cast<S>(p.alpha), beta = static_cast<S>(p.beta);
    const Shape out_shape = {p.m, p.n};
    const Shape c_shape = c != nullptr ? c->shape() : Shape{};
    const T* pc = c != nullptr ? c->data<T>() : nullptr;
    ForEachBroadcast<1>(out_shape, {&c_shape}, [&](int64_t o, const std::array<int64_t, 1>& off) {
      S v = alpha * static_cast<S>(py[o]);
      if (pc != nullptr) v += beta * static_cast<S>(pc[off[0]]);
      py[o] = static_cast<T>(v);
    });
  });
  return std::vector<Tensor>{std::move(y)};
}

// ONNX MatMul: numpy matmul, batch dims broadcast, 1-D operands promoted and the added dim
// removed from the result.
OpResult MatMulOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, ctx.inputs[0], "A", kMatMulDTypes));
  LOOM_ASSIGN_OR_RETURN(Tensor y, MatMulTensors(ctx.inputs[0], ctx.inputs[1]));
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterGemmKernels(KernelTable* table) {
  (*table)["Gemm"] = &GemmOp;
  (*table)["MatMul"] = &MatMulOp;
}

}  // namespace internal
}  // namespace loom::kernels
