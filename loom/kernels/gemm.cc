#include "loom/kernels/gemm.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels {

namespace {
// acc[i*n + j] = sum_k A'[i, k] * B'[k, j], in increasing k order. When B' rows are contiguous
// (no trans_b) a whole output row is accumulated at once; otherwise each element is a dot product
// over two contiguous-in-k vectors when A is not transposed. Both orders are the same per element.
void Product(const GemmParams& p, const float* a, const float* b, float* acc) {
  const int64_t m = p.m, n = p.n, k = p.k;
  auto a_at = [&](int64_t i, int64_t kk) { return p.trans_a ? a[kk * m + i] : a[i * k + kk]; };
  for (int64_t i = 0; i < m; ++i) {
    float* row = acc + i * n;
    if (!p.trans_b) {
      std::fill(row, row + n, 0.0f);
      for (int64_t kk = 0; kk < k; ++kk) {
        const float aik = a_at(i, kk);
        const float* b_row = b + kk * n;
        for (int64_t j = 0; j < n; ++j) row[j] += aik * b_row[j];
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const float* b_row = b + j * k;  // B'[:, j] = b[j, :]
        float sum = 0.0f;
        for (int64_t kk = 0; kk < k; ++kk) sum += a_at(i, kk) * b_row[kk];
        row[j] = sum;
      }
    }
  }
}
}  // namespace

void Gemm(const GemmParams& p, const float* a, const float* b, const float* c_or_null, float* y) {
  Product(p, a, b, y);
  const int64_t size = p.m * p.n;
  for (int64_t i = 0; i < size; ++i) {
    float v = p.alpha * y[i];
    if (c_or_null != nullptr) v += p.beta * c_or_null[i];
    y[i] = v;
  }
}

void MatMul(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* y) {
  Product(GemmParams{.m = m, .n = n, .k = k}, a, b, y);
}

void Dense(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
           const float* bias_or_null, float* y) {
  Product(GemmParams{.m = m, .n = n, .k = k, .trans_b = true}, x, w, y);
  if (bias_or_null == nullptr) return;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) y[i * n + j] += bias_or_null[j];
  }
}

namespace internal {
namespace {

// ONNX Gemm: A, B 2-D; optional C unidirectionally broadcast to [M, N].
OpResult GemmOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 3, 2));
  const Tensor& a = ctx.inputs[0];
  const Tensor& b = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDType(a, "A", DType::kFloat32));
  LOOM_RETURN_IF_ERROR(CheckDType(b, "B", DType::kFloat32));
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
  // Broadcast C to [M, N] (C may be a scalar, [N], [1, N], [M, 1], [M, N]).
  std::vector<float> c_full;
  if (ctx.HasInput(2)) {
    const Tensor& c = ctx.inputs[2];
    LOOM_RETURN_IF_ERROR(CheckDType(c, "C", DType::kFloat32));
    Shape cs = c.shape();
    if (cs.size() > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("C ", c.type().ToString(), " has rank above 2"));
    }
    while (cs.size() < 2) cs.insert(cs.begin(), 1);
    if ((cs[0] != 1 && cs[0] != p.m) || (cs[1] != 1 && cs[1] != p.n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("C ", c.type().ToString(), " does not broadcast to [", p.m, ",", p.n, "]"));
    }
    c_full.resize(static_cast<size_t>(p.m * p.n));
    const float* cd = c.data<float>();
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t j = 0; j < p.n; ++j) {
        c_full[static_cast<size_t>(i * p.n + j)] =
            cd[(cs[0] == 1 ? 0 : i) * cs[1] + (cs[1] == 1 ? 0 : j)];
      }
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, {p.m, p.n}));
  Gemm(p, a.data<float>(), b.data<float>(), c_full.empty() ? nullptr : c_full.data(),
       y.data<float>());
  return std::vector<Tensor>{std::move(y)};
}

// ONNX MatMul: numpy matmul, batch dims broadcast, 1-D operands promoted and the added dim
// removed from the result.
OpResult MatMulOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& a = ctx.inputs[0];
  const Tensor& b = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDType(a, "A", DType::kFloat32));
  LOOM_RETURN_IF_ERROR(CheckDType(b, "B", DType::kFloat32));
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
  const size_t batch_rank = std::max(a_batch.size(), b_batch.size());
  a_batch.insert(a_batch.begin(), batch_rank - a_batch.size(), 1);
  b_batch.insert(b_batch.begin(), batch_rank - b_batch.size(), 1);
  Shape batch(batch_rank);
  for (size_t i = 0; i < batch_rank; ++i) {
    if (a_batch[i] != b_batch[i] && a_batch[i] != 1 && b_batch[i] != 1) {
      return absl::InvalidArgumentError(absl::StrCat("batch dimensions of A ", a.type().ToString(),
                                                     " and B ", b.type().ToString(),
                                                     " do not broadcast"));
    }
    batch[i] = a_batch[i] == 1 ? b_batch[i] : a_batch[i];
  }
  Shape out_shape = batch;
  if (!a_vector) out_shape.push_back(m);
  if (!b_vector) out_shape.push_back(n);
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, out_shape));
  const std::vector<int64_t> a_strides = RowMajorStrides(a_batch);
  const std::vector<int64_t> b_strides = RowMajorStrides(b_batch);
  const int64_t num_batches = graph::NumElements(batch);
  std::vector<int64_t> index(batch_rank, 0);
  for (int64_t t = 0; t < num_batches; ++t) {
    int64_t a_off = 0, b_off = 0;
    for (size_t i = 0; i < batch_rank; ++i) {
      if (a_batch[i] != 1) a_off += index[i] * a_strides[i];
      if (b_batch[i] != 1) b_off += index[i] * b_strides[i];
    }
    MatMul(m, n, k, a.data<float>() + a_off * m * k, b.data<float>() + b_off * k * n,
           y.data<float>() + t * m * n);
    for (size_t i = batch_rank; i-- > 0;) {
      if (++index[i] < batch[i]) break;
      index[i] = 0;
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterGemmKernels(KernelTable* table) {
  (*table)["Gemm"] = &GemmOp;
  (*table)["MatMul"] = &MatMulOp;
}

}  // namespace internal
}  // namespace loom::kernels
