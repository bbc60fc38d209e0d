// Lowered Softmax and LogSoftmax (float32), both opset semantics (graph::ResolveSoftmax): the
// input is [outer, n, inner] with the normalized axis n. With inner = 1 a work unit is one
// contiguous row, read twice (max; exp and sum, writing exp for Softmax) and then scaled in
// cache; with inner > 1 a unit is a block of columns, vectorized across the columns.
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::TensorType;

// Columns per unit in the strided case: the block's running max and sum stay in registers/L1.
constexpr int64_t kColumnBlock = 64;

std::string RowBody(int64_t n, bool log) {
  // m: row max; s: sum of exp(x - m).
  std::string b = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
      "    const float* __restrict x = in + u * ", n, ";\n", "    float* __restrict y = out + u * ",
      n, ";\n", "    vf mv = loom_splat<vf>(-__builtin_inff());\n", "    int64_t j = 0;\n",
      "    for (; j + LOOM_L <= ", n, "; j += LOOM_L) mv = loom_max(loom_load(x + j), mv);\n",
      "    float m = loom_hmax(mv);\n", "    for (; j < ", n, "; ++j) m = x[j] > m ? x[j] : m;\n",
      "    vf sv = loom_splat<vf>(0.0f);\n", "    for (j = 0; j + LOOM_L <= ", n,
      "; j += LOOM_L) {\n", "      const vf e = loom_exp(loom_load(x + j) - m);\n");
  if (!log) absl::StrAppend(&b, "      loom_store(y + j, e);\n");
  absl::StrAppend(&b, "      sv += e;\n    }\n", "    float s = loom_hsum(sv);\n",
                  "    for (; j < ", n, "; ++j) {\n",
                  "      const float e = loom_exp(x[j] - m);\n");
  if (!log) absl::StrAppend(&b, "      y[j] = e;\n");
  absl::StrAppend(&b, "      s += e;\n    }\n");
  if (log) {
    absl::StrAppend(&b, "    const float c = m + loom_log(s);\n", "    for (j = 0; j < ", n,
                    "; ++j) y[j] = x[j] - c;\n");
  } else {
    absl::StrAppend(&b, "    const float r = 1.0f / s;\n", "    for (j = 0; j < ", n,
                    "; ++j) y[j] *= r;\n");
  }
  absl::StrAppend(&b, "  }\n");
  return b;
}

std::string ColumnBody(int64_t n, int64_t inner, bool log) {
  const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  std::string b = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    const int64_t c0 = (u % ", blocks,
      ") * ", kColumnBlock, ";\n", "    const int64_t cn = c0 + ", kColumnBlock, " < ", inner,
      " ? ", kColumnBlock, " : ", inner, " - c0;\n", "    const float* __restrict x = in + (u / ",
      blocks, ") * ", n * inner, " + c0;\n", "    float* __restrict y = out + (u / ", blocks,
      ") * ", n * inner, " + c0;\n", "    float m[", kColumnBlock, "], s[", kColumnBlock, "];\n",
      "    for (int64_t c = 0; c < cn; ++c) { m[c] = -__builtin_inff(); s[c] = 0.0f; }\n",
      "    for (int64_t j = 0; j < ", n, "; ++j)\n",
      "      for (int64_t c = 0; c < cn; ++c) m[c] = x[j * ", inner, " + c] > m[c] ? x[j * ", inner,
      " + c] : m[c];\n", "    for (int64_t j = 0; j < ", n, "; ++j)\n",
      "      for (int64_t c = 0; c < cn; ++c) {\n", "        const float e = loom_exp(x[j * ",
      inner, " + c] - m[c]);\n");
  if (!log) absl::StrAppend(&b, "        y[j * ", inner, " + c] = e;\n");
  absl::StrAppend(&b, "        s[c] += e;\n      }\n");
  if (log) {
    absl::StrAppend(&b, "    for (int64_t c = 0; c < cn; ++c) s[c] = m[c] + loom_log(s[c]);\n",
                    "    for (int64_t j = 0; j < ", n, "; ++j)\n",
                    "      for (int64_t c = 0; c < cn; ++c) y[j * ", inner, " + c] = x[j * ", inner,
                    " + c] - s[c];\n");
  } else {
    absl::StrAppend(&b, "    for (int64_t c = 0; c < cn; ++c) s[c] = 1.0f / s[c];\n",
                    "    for (int64_t j = 0; j < ", n, "; ++j)\n",
                    "      for (int64_t c = 0; c < cn; ++c) y[j * ", inner, " + c] *= s[c];\n");
  }
  absl::StrAppend(&b, "  }\n");
  return b;
}

absl::StatusOr<LoweredKernel> LowerSoftmaxFamily(const LowerCtx& ctx, bool log) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(graph::SoftmaxSpec spec,
                        graph::ResolveSoftmax(ctx.node(), ctx.opset(), rank));
  // Before opset 13 the dims from the axis on are one row.
  auto [outer, n, inner] = SplitAtAxis(x.shape, spec.axis);
  if (spec.coerce_2d) {
    n *= inner;
    inner = 1;
  }
  KernelWriter w(ctx.target(), log ? "log_softmax" : "softmax");
  w.UseVectorMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Output(ctx.node().outputs[0], "float", "out");
  if (outer * n * inner == 0) return w.Finish(0, 1, "");
  if (inner == 1) return w.Finish(outer, n * 8, RowBody(n, log));
  const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  return w.Finish(outer * blocks, n * std::min(inner, kColumnBlock) * 8, ColumnBody(n, inner, log));
}

absl::StatusOr<LoweredKernel> LowerSoftmax(const LowerCtx& ctx) {
  return LowerSoftmaxFamily(ctx, /*log=*/false);
}
absl::StatusOr<LoweredKernel> LowerLogSoftmax(const LowerCtx& ctx) {
  return LowerSoftmaxFamily(ctx, /*log=*/true);
}

}  // namespace

void RegisterSoftmaxLowerings(LowerTable* table) {
  (*table)["Softmax"] = &LowerSoftmax;
  (*table)["LogSoftmax"] = &LowerLogSoftmax;
}

}  // namespace loom::ops::lower
