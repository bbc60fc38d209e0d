// Lowered normalizations (float32): LayerNormalization (axis, epsilon, Scale/B broadcast to the
// normalized dims, optional Mean and InvStdDev outputs), GroupNormalization (opset 18: scale and
// bias per group; opset 21: per channel) and InstanceNormalization. Each normalizes contiguous
// rows: a work unit is one row, read twice with the row in cache: one pass of per-lane Welford
// updates (mean and sum of squared deviations, combined over the lanes in a fixed order: stable
// when the mean is large against the spread) and one pass that writes
// (x - mean) * rsqrt(var + epsilon) * scale + bias.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using graph::TensorType;

// C statements computing `mean` and `rstd` of the row x[0, n): per-lane Welford updates of
// x - x[0] (the shift keeps the running means small, so their rounding stays small against the
// spread), the lanes combined in order, then the tail one element at a time.
std::string RowStats(int64_t n, float epsilon) {
  return absl::StrCat(
      "    const float shift = x[0];\n",
      "    vf mv = loom_splat<vf>(0.0f), qv = loom_splat<vf>(0.0f);\n",
      "    int64_t j = 0, k = 0;\n", "    for (; j + LOOM_L <= ", n, "; j += LOOM_L) {\n",
      "      const float rk = 1.0f / (float)(++k);\n",
      "      const vf v = loom_load(x + j) - shift;\n", "      const vf d = v - mv;\n",
      "      mv += d * rk;\n", "      qv += d * (v - mv);\n", "    }\n",
      "    float cnt = (float)k, mean = k > 0 ? mv[0] : 0.0f, q = k > 0 ? qv[0] : 0.0f;\n",
      "    for (int l = 1; l < LOOM_L && k > 0; ++l) {\n",
      "      const float nb = (float)k, na = cnt, nt = na + nb, d = mv[l] - mean;\n",
      "      mean += d * (nb / nt);\n", "      q += qv[l] + d * d * (na * nb / nt);\n",
      "      cnt = nt;\n", "    }\n", "    for (; j < ", n, "; ++j) {\n",
      "      const float v = x[j] - shift;\n", "      cnt += 1.0f;\n",
      "      const float d = v - mean;\n", "      mean += d / cnt;\n",
      "      q += d * (v - mean);\n", "    }\n", "    mean += shift;\n",
      "    const float rstd = 1.0f / __builtin_sqrtf(q / (float)", n, " + ", FloatLiteral(epsilon),
      ");\n");
}

}  // namespace

absl::StatusOr<std::optional<Tensor>> RowParamConstant(const LowerCtx& ctx, size_t input,
                                                       const Shape& norm, const std::string& name) {
  LOOM_ASSIGN_OR_RETURN(TensorType t, ctx.In(input));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(t.dtype, {DType::kFloat32}, name));
  const int64_t n = graph::NumElements(norm);
  if (t.shape.size() > norm.size()) {
    return ctx.Invalid(absl::StrCat(name, " ", t.ToString(), " has more dims than the normalized ",
                                    graph::ShapeToString(norm)));
  }
  const size_t lead = norm.size() - t.shape.size();
  for (size_t k = 0; k < t.shape.size(); ++k) {
    if (t.shape[k] != 1 && t.shape[k] != norm[lead + k]) {
      return ctx.Invalid(absl::StrCat(name, " ", t.ToString(), " does not broadcast to ",
                                      graph::ShapeToString(norm)));
    }
  }
  if (graph::NumElements(t.shape) == n) return std::optional<Tensor>();
  std::optional<Tensor> c = ctx.Const(input);
  if (!c.has_value()) {
    return ctx.Unimplemented(
        absl::StrCat(name, " ", t.ToString(), " broadcast at run time (not a constant)"));
  }
  Tensor full(DType::kFloat32, norm);
  const std::vector<int64_t> fs = RowMajorStrides(norm);
  for (int64_t i = 0; i < n; ++i) {
    int64_t src = 0, stride = 1;
    for (size_t k = norm.size(); k-- > lead;) {
      const int64_t idx = (i / fs[k]) % norm[k];
      const int64_t dim = t.shape[k - lead];
      if (dim != 1) src += idx * stride;
      stride *= dim;
    }
    full.data<float>()[i] = c->data<float>()[src];
  }
  return std::optional<Tensor>(std::move(full));
}

absl::StatusOr<ChannelNormSpec> ResolveChannelNorm(const LowerCtx& ctx, int64_t groups,
                                                   bool per_channel) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  if (x.shape.size() < 2)
    return ctx.Invalid(absl::StrCat("input ", x.ToString(), " has no channels"));
  const int64_t c = x.shape[1];
  if (groups <= 0 || c % groups != 0) {
    return ctx.Invalid(
        absl::StrCat("num_groups ", groups, " does not divide the ", c, " channels"));
  }
  ChannelNormSpec spec;
  spec.groups = groups;
  spec.per_channel = per_channel;
  for (size_t d = 2; d < x.shape.size(); ++d) spec.spatial *= x.shape[d];
  spec.cg = c / groups;
  spec.n = spec.cg * spec.spatial;
  spec.rows = x.shape[0] * groups;
  spec.epsilon = ctx.node().GetFloat("epsilon", 1e-5f);
  const int64_t params = per_channel ? c : groups;
  for (size_t i : {size_t{1}, size_t{2}}) {
    LOOM_ASSIGN_OR_RETURN(TensorType t, ctx.In(i));
    LOOM_RETURN_IF_ERROR(ctx.RequireDType(t.dtype, {DType::kFloat32}, i == 1 ? "scale" : "bias"));
    if (graph::NumElements(t.shape) != params) {
      return ctx.Invalid(absl::StrCat(i == 1 ? "scale " : "bias ", t.ToString(), " must have ",
                                      params, " elements"));
    }
  }
  return spec;
}

absl::StatusOr<LayerNormSpec> ResolveLayerNorm(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(ctx.node().GetInt("axis", -1), rank));
  const float epsilon = ctx.node().GetFloat("epsilon", 1e-5f);
  const Shape norm(x.shape.begin() + axis, x.shape.end());
  int64_t rows = 1;
  for (int64_t d = 0; d < axis; ++d) rows *= x.shape[static_cast<size_t>(d)];
  const int64_t n = graph::NumElements(norm);
  LayerNormSpec spec;
  spec.norm = norm;
  spec.rows = rows;
  spec.n = n;
  spec.epsilon = epsilon;
  return spec;
}

namespace {

// Scale or bias of LayerNormalization as n per-element values: a constant broadcast to the
// normalized shape at lowering time, or a value of exactly that many elements.
absl::Status AddRowParam(const LowerCtx& ctx, KernelWriter& w, size_t input, const Shape& norm,
                         const std::string& name) {
  LOOM_ASSIGN_OR_RETURN(std::optional<Tensor> c, RowParamConstant(ctx, input, norm, name));
  if (c.has_value()) {
    w.Constant(std::move(*c), "float", name);
  } else {
    w.Input(ctx.node().inputs[input], "float", name);
  }
  return absl::OkStatus();
}

absl::StatusOr<LoweredKernel> LowerLayerNorm(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(LayerNormSpec spec, ResolveLayerNorm(ctx));
  const Shape& norm = spec.norm;
  const int64_t rows = spec.rows, n = spec.n;
  const float epsilon = spec.epsilon;

  KernelWriter w(ctx.target(), "layernorm");
  w.UseVectorMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  LOOM_RETURN_IF_ERROR(AddRowParam(ctx, w, 1, norm, "scale"));
  const bool bias = ctx.Has(2);
  if (bias) LOOM_RETURN_IF_ERROR(AddRowParam(ctx, w, 2, norm, "bias"));
  w.Output(ctx.node().outputs[0], "float", "out");
  const bool mean_out = ctx.HasOutput(1), rstd_out = ctx.HasOutput(2);
  if (mean_out) w.Output(ctx.node().outputs[1], "float", "mean_out");
  if (rstd_out) w.Output(ctx.node().outputs[2], "float", "rstd_out");
  if (rows * n == 0) return w.Finish(0, 1, "");
  std::string body =
      absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
                   "    const float* __restrict x = in + u * ", n, ";\n",
                   "    float* __restrict y = out + u * ", n, ";\n", RowStats(n, epsilon));
  if (mean_out) absl::StrAppend(&body, "    mean_out[u] = mean;\n");
  if (rstd_out) absl::StrAppend(&body, "    rstd_out[u] = rstd;\n");
  const std::string b = bias ? " + loom_load(bias + j)" : "";
  const std::string bs = bias ? " + bias[j]" : "";
  absl::StrAppend(&body, "    for (j = 0; j + LOOM_L <= ", n,
                  "; j += LOOM_L) loom_store(y + j, (loom_load(x + j) - mean) * rstd * "
                  "loom_load(scale + j)",
                  b, ");\n", "    for (; j < ", n, "; ++j) y[j] = (x[j] - mean) * rstd * scale[j]",
                  bs, ";\n  }\n");
  return w.Finish(rows, n * 8, body);
}

// GroupNormalization and InstanceNormalization: X [N, C, spatial...]; a row is one (n, group)
// block of C/G channels; `per_channel` scale/bias (length C) or per group (length G).
absl::StatusOr<LoweredKernel> LowerChannelNorm(const LowerCtx& ctx, int64_t groups,
                                               bool per_channel, const std::string& kind) {
  LOOM_ASSIGN_OR_RETURN(ChannelNormSpec spec, ResolveChannelNorm(ctx, groups, per_channel));
  const int64_t spatial = spec.spatial, cg = spec.cg, n = spec.n;
  const float epsilon = spec.epsilon;
  KernelWriter w(ctx.target(), kind);
  w.UseVectorMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Input(ctx.node().inputs[1], "float", "scale");
  w.Input(ctx.node().inputs[2], "float", "bias");
  w.Output(ctx.node().outputs[0], "float", "out");
  const int64_t rows = spec.rows;
  if (rows * n == 0) return w.Finish(0, 1, "");
  const std::string param = per_channel ? absl::StrCat("(u % ", groups, ") * ", cg, " + ch")
                                        : absl::StrCat("u % ", groups);
  const std::string body = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
      "    const float* __restrict x = in + u * ", n, ";\n", "    float* __restrict y = out + u * ",
      n, ";\n", RowStats(n, epsilon), "    for (int64_t ch = 0; ch < ", cg, "; ++ch) {\n",
      "      const float a = rstd * scale[", param, "], b = bias[", param, "];\n",
      "      const float* __restrict xc = x + ch * ", spatial, ";\n",
      "      float* __restrict yc = y + ch * ", spatial, ";\n",
      "      for (j = 0; j + LOOM_L <= ", spatial,
      "; j += LOOM_L) loom_store(yc + j, (loom_load(xc + j) - mean) * a + b);\n",
      "      for (; j < ", spatial, "; ++j) yc[j] = (xc[j] - mean) * a + b;\n", "    }\n  }\n");
  return w.Finish(rows, n * 8, body);
}

absl::StatusOr<LoweredKernel> LowerGroupNorm(const LowerCtx& ctx) {
  if (!ctx.node().HasAttr("num_groups")) return ctx.Invalid("num_groups is required");
  return LowerChannelNorm(ctx, ctx.node().GetInt("num_groups", 0), ctx.opset() >= 21, "groupnorm");
}

absl::StatusOr<LoweredKernel> LowerInstanceNorm(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  if (x.shape.size() < 2)
    return ctx.Invalid(absl::StrCat("input ", x.ToString(), " has no channels"));
  return LowerChannelNorm(ctx, x.shape[1], /*per_channel=*/true, "instancenorm");
}

}  // namespace

void RegisterNormLowerings(LowerTable* table) {
  (*table)["LayerNormalization"] = &LowerLayerNorm;
  (*table)["GroupNormalization"] = &LowerGroupNorm;
  (*table)["InstanceNormalization"] = &LowerInstanceNorm;
}

}  // namespace loom::ops::lower
