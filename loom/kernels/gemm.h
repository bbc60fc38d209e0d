// Reference matrix products with plain parameters, callable directly: tuned dense/matmul kernels
// are checked against these, and the ONNX Gemm and MatMul reference kernels wrap them.
// All matrices are row-major float32; every output element sums its k terms in float, in
// increasing k order starting from 0.
#pragma once

#include <cstdint>

namespace loom::kernels {

struct GemmParams {
  int64_t m = 1;
  int64_t n = 1;
  int64_t k = 1;
  // A is [m, k] ([k, m] when trans_a); B is [k, n] ([n, k] when trans_b).
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  float beta = 1.0f;
};

// y[i, j] = alpha * sum_k A'[i, k] * B'[k, j] + beta * c[i, j]; c is [m, n] (already broadcast)
// or null (then the beta term is absent). y is [m, n] and must not alias the inputs.
void Gemm(const GemmParams& p, const float* a, const float* b, const float* c_or_null, float* y);

// y[i, j] = sum_k a[i, k] * b[k, j]: a [m, k], b [k, n], y [m, n].
void MatMul(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* y);

// TVM's dense layout: y[i, j] = sum_k x[i, k] * w[j, k] (+ bias[j]): x [m, k], w [n, k],
// bias [n] or null, y [m, n].
void Dense(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
           const float* bias_or_null, float* y);

}  // namespace loom::kernels
