// CUDA row kernels (cuda_lowering.h): Softmax and LogSoftmax, LayerNormalization,
// GroupNormalization, InstanceNormalization, the Reduce* family and ArgMax/ArgMin. A row (a
// softmax row, a normalized row, the elements one reduction output combines) is one block; its
// threads stride over the row and combine their partial results in shared memory (BlockReduce).
// Softmax over a strided axis and the arg-reductions are one thread per output column instead.
// Statistics are two-pass (mean, then the sum of squared deviations), as stable as the CPU
// kernels' shifted Welford updates when the mean is large against the spread.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
#include "loom/ops/cuda_lower_common.h"

namespace loom::ops::cuda_lower {
namespace {

using codegen::If;
using codegen::Raw;
using codegen::Stmt;
using graph::DType;
using graph::Shape;
using graph::TensorType;
using lower::LowerCtx;

constexpr const char* kMaxOf = "a > b ? a : b";
constexpr const char* kSum = "a + b";

void Append(std::vector<Stmt>* to, std::vector<Stmt> more) {
  for (Stmt& s : more) to->push_back(std::move(s));
}

// `for (long long j = tid; j < n; j += threads) <body>` as one statement.
std::string RowLoop(int64_t n, int64_t threads, const std::string& body) {
  return absl::StrCat("for (long long j = tid; j < ", n, "LL; j += ", threads, ") { ", body, " }");
}

absl::StatusOr<LoweredKernel> LowerSoftmaxFamily(const LowerCtx& ctx, bool emu, bool log) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  LOOM_ASSIGN_OR_RETURN(
      graph::SoftmaxSpec spec,
      graph::ResolveSoftmax(ctx.node(), ctx.opset(), static_cast<int64_t>(x.shape.size())));
  auto [outer, n, inner] = lower::SplitAtAxis(x.shape, spec.axis);
  if (spec.coerce_2d) {  // before opset 13 the dims from the axis on are one row
    n *= inner;
    inner = 1;
  }
  CudaKernelWriter w(log ? "log_softmax" : "softmax", emu);
  w.UseMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Output(ctx.node().outputs[0], "float", "out");
  if (inner == 1 && n > 0) {
    const int64_t t = RowThreads(n);
    std::vector<Stmt> body = {
        Raw(absl::StrCat("const float* x = in + row * ", n, "LL;")),
        Raw(absl::StrCat("float* y = out + row * ", n, "LL;")),
        Raw("float m = -__builtin_inff();"),
        Raw(RowLoop(n, t, "m = loom_max(x[j], m);")),
    };
    Append(&body, BlockReduce("m", kMaxOf, t));
    body.push_back(Raw("float s = 0.0f;"));
    body.push_back(Raw(RowLoop(n, t,
                               log ? "s += loom_exp(x[j] - m);"
                                   : "const float e = loom_exp(x[j] - m); y[j] = e; s += e;")));
    Append(&body, BlockReduce("s", kSum, t));
    body.push_back(
        Raw(log ? RowLoop(n, t, "y[j] = x[j] - (m + loom_log(s));")
                : absl::StrCat("const float r = 1.0f / s; ", RowLoop(n, t, "y[j] *= r;"))));
    return w.PerRow(outer, t, std::move(body));
  }
  // A strided axis: one thread per (outer, inner) column, serial along the axis.
  const std::string at = absl::StrCat("base + j * ", inner, "LL");
  std::vector<Stmt> body = {
      Raw(absl::StrCat("const long long base = (i / ", inner, "LL) * ", n * inner, "LL + i % ",
                       inner, "LL;")),
      Raw("float m = -__builtin_inff();"),
      Raw(absl::StrCat("for (long long j = 0; j < ", n, "LL; ++j) m = loom_max(in[", at, "], m);")),
      Raw("float s = 0.0f;"),
      Raw(absl::StrCat("for (long long j = 0; j < ", n, "LL; ++j) { const float e = loom_exp(in[",
                       at, "] - m); ", log ? "" : absl::StrCat("out[", at, "] = e; "),
                       "s += e; }")),
      Raw(log ? absl::StrCat("for (long long j = 0; j < ", n, "LL; ++j) out[", at, "] = in[", at,
                             "] - (m + loom_log(s));")
              : absl::StrCat("const float r = 1.0f / s; for (long long j = 0; j < ", n,
                             "LL; ++j) out[", at, "] *= r;"))};
  return w.PerElement(outer * inner, std::move(body));
}

absl::StatusOr<LoweredKernel> LowerSoftmax(const LowerCtx& ctx, bool emu) {
  return LowerSoftmaxFamily(ctx, emu, /*log=*/false);
}
absl::StatusOr<LoweredKernel> LowerLogSoftmax(const LowerCtx& ctx, bool emu) {
  return LowerSoftmaxFamily(ctx, emu, /*log=*/true);
}

// Statements computing `mean` and `rstd` of the row x[0, n) (two block reductions).
std::vector<Stmt> RowStats(int64_t n, int64_t t, float epsilon) {
  std::vector<Stmt> s = {Raw("float mean = 0.0f;"), Raw(RowLoop(n, t, "mean += x[j];"))};
  Append(&s, BlockReduce("mean", kSum, t));
  s.push_back(
      Raw(absl::StrCat("mean *= ", lower::FloatLiteral(1.0f / static_cast<float>(n)), ";")));
  s.push_back(Raw("float q = 0.0f;"));
  s.push_back(Raw(RowLoop(n, t, "const float d = x[j] - mean; q += d * d;")));
  Append(&s, BlockReduce("q", kSum, t));
  s.push_back(Raw(absl::StrCat("const float rstd = 1.0f / __builtin_sqrtf(q / (float)", n, " + ",
                               lower::FloatLiteral(epsilon), ");")));
  return s;
}

absl::StatusOr<LoweredKernel> LowerLayerNorm(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(lower::LayerNormSpec spec, lower::ResolveLayerNorm(ctx));
  const Shape& norm = spec.norm;
  const int64_t rows = spec.rows, n = spec.n;
  const float epsilon = spec.epsilon;

  CudaKernelWriter w("layernorm", emu);
  w.UseMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  const bool bias = ctx.Has(2);
  for (size_t input = 1; input <= (bias ? 2u : 1u); ++input) {
    const std::string name = input == 1 ? "scale" : "bias";
    LOOM_ASSIGN_OR_RETURN(std::optional<graph::Tensor> c,
                          lower::RowParamConstant(ctx, input, norm, name));
    if (c.has_value()) {
      w.Constant(std::move(*c), "float", name);
    } else {
      w.Input(ctx.node().inputs[input], "float", name);
    }
  }
  w.Output(ctx.node().outputs[0], "float", "out");
  const bool mean_out = ctx.HasOutput(1), rstd_out = ctx.HasOutput(2);
  if (mean_out) w.Output(ctx.node().outputs[1], "float", "mean_out");
  if (rstd_out) w.Output(ctx.node().outputs[2], "float", "rstd_out");
  if (n == 0) return w.PerElement(0, {});
  const int64_t t = RowThreads(n);
  std::vector<Stmt> body = {Raw(absl::StrCat("const float* x = in + row * ", n, "LL;")),
                            Raw(absl::StrCat("float* y = out + row * ", n, "LL;"))};
  Append(&body, RowStats(n, t, epsilon));
  if (mean_out) body.push_back(If("tid == 0", {Raw("mean_out[row] = mean;")}));
  if (rstd_out) body.push_back(If("tid == 0", {Raw("rstd_out[row] = rstd;")}));
  body.push_back(Raw(RowLoop(
      n, t,
      absl::StrCat("y[j] = (x[j] - mean) * rstd * scale[j]", bias ? " + bias[j]" : "", ";"))));
  return w.PerRow(rows, t, std::move(body));
}

absl::StatusOr<LoweredKernel> LowerChannelNorm(const LowerCtx& ctx, bool emu, int64_t groups,
                                               bool per_channel, const std::string& kind) {
  LOOM_ASSIGN_OR_RETURN(lower::ChannelNormSpec spec,
                        lower::ResolveChannelNorm(ctx, groups, per_channel));
  CudaKernelWriter w(kind, emu);
  w.UseMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Input(ctx.node().inputs[1], "float", "scale");
  w.Input(ctx.node().inputs[2], "float", "bias");
  w.Output(ctx.node().outputs[0], "float", "out");
  if (spec.n == 0) return w.PerElement(0, {});
  const int64_t t = RowThreads(spec.n);
  const std::string param = spec.per_channel ? absl::StrCat("(row % ", spec.groups, ") * ", spec.cg,
                                                            " + j / ", spec.spatial)
                                             : absl::StrCat("row % ", spec.groups);
  std::vector<Stmt> body = {Raw(absl::StrCat("const float* x = in + row * ", spec.n, "LL;")),
                            Raw(absl::StrCat("float* y = out + row * ", spec.n, "LL;"))};
  Append(&body, RowStats(spec.n, t, spec.epsilon));
  body.push_back(Raw(RowLoop(spec.n, t,
                             absl::StrCat("const long long p = ", param,
                                          "; y[j] = (x[j] - mean) * rstd * scale[p] + bias[p];"))));
  return w.PerRow(spec.rows, t, std::move(body));
}

absl::StatusOr<LoweredKernel> LowerGroupNorm(const LowerCtx& ctx, bool emu) {
  if (!ctx.node().HasAttr("num_groups")) return ctx.Invalid("num_groups is required");
  return LowerChannelNorm(ctx, emu, ctx.node().GetInt("num_groups", 0), ctx.opset() >= 21,
                          "groupnorm");
}

absl::StatusOr<LoweredKernel> LowerInstanceNorm(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  if (x.shape.size() < 2) {
    return ctx.Invalid(absl::StrCat("input ", x.ToString(), " has no channels"));
  }
  return LowerChannelNorm(ctx, emu, x.shape[1], /*per_channel=*/true, "instancenorm");
}

std::string ExpandReducer(const std::string& text, const std::string& a, const std::string& v) {
  return absl::StrReplaceAll(text, {{"$a", a}, {"$v", v}, {"$x", v}});
}

// A reduction: one block per output; the block's threads stride over the `count` reduced
// elements (decomposed over the reduced dims), then combine.
absl::StatusOr<LoweredKernel> LowerReduce(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(lower::ReduceSpec spec, lower::ResolveReduceNode(ctx));
  const std::vector<int64_t> strides = lower::RowMajorStrides(x.shape);
  std::vector<int64_t> kept_dims, kept_strides, red_dims, red_strides;
  for (size_t d = 0; d < x.shape.size(); ++d) {
    if (x.shape[d] == 1) continue;
    (spec.reduced[d] ? red_dims : kept_dims).push_back(x.shape[d]);
    (spec.reduced[d] ? red_strides : kept_strides).push_back(strides[d]);
  }
  const int64_t outputs = graph::NumElements(kept_dims);
  CudaKernelWriter w("reduce", emu);
  w.UseMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Output(ctx.node().outputs[0], "float", "out");
  if (outputs == 0) return w.PerElement(0, {});
  if (spec.count == 0) {  // every output reduces no element
    const lower::Reducer& r = spec.passes.back();
    const std::string empty =
        spec.log_sum_exp ? "-__builtin_inff()"
                         : ExpandReducer(absl::StrReplaceAll(r.finish, {{"$n", "0"}}), r.init, "");
    return w.PerElement(outputs, {Raw(absl::StrCat("out[i] = ", empty, ";"))});
  }
  const int64_t t = RowThreads(spec.count);
  std::vector<Stmt> body = DecomposeIndex(kept_dims, "row", "k");
  std::string base = "0LL";
  for (size_t d = 0; d < kept_dims.size(); ++d)
    absl::StrAppend(&base, " + k", d, " * ", kept_strides[d], "LL");
  body.push_back(Raw(absl::StrCat("const float* x = in + (", base, ");")));
  // The offset of reduced element j.
  std::string offset;
  {
    std::string rest = "j";
    for (size_t d = red_dims.size(); d-- > 0;) {
      absl::StrAppend(&offset, offset.empty() ? "" : " + ", "((", rest, ") % ", red_dims[d],
                      "LL) * ", red_strides[d], "LL");
      rest = absl::StrCat("(", rest, ") / ", red_dims[d], "LL");
    }
    if (offset.empty()) offset = "0LL";
  }
  const std::vector<std::string> accs =
      spec.log_sum_exp ? std::vector<std::string>{"m", "a"} : std::vector<std::string>{"a"};
  for (size_t p = 0; p < spec.passes.size(); ++p) {
    const lower::Reducer& r = spec.passes[p];
    const std::string& acc = accs[p];
    body.push_back(Raw(absl::StrCat("float ", acc, " = ", r.init, ";")));
    body.push_back(Raw(RowLoop(
        spec.count, t,
        absl::StrCat("const float v = ", ExpandReducer(r.map, "", absl::StrCat("x[", offset, "]")),
                     "; ", acc, " = ", ExpandReducer(r.combine, acc, "v"), ";"))));
    Append(&body, BlockReduce(acc, ExpandReducer(r.combine, "a", "b"), t));
    if (spec.log_sum_exp && p == 0) {
      // exp(x - max) with max = -inf or +inf would be NaN.
      body.push_back(Raw("const float m_fin = (m == m && m - m != m - m) ? 0.0f : m;"));
    }
  }
  const std::string result =
      spec.log_sum_exp ? "m - m != m - m ? m : m_fin + loom_log(a)"
                       : ExpandReducer(absl::StrReplaceAll(spec.passes.back().finish,
                                                           {{"$n", absl::StrCat(spec.count)}}),
                                       "a", "a");
  body.push_back(If("tid == 0", {Raw(absl::StrCat("out[row] = ", result, ";"))}));
  return w.PerRow(outputs, t, std::move(body));
}

// ArgMax / ArgMin over one axis: [outer, n, inner] -> int64 [outer, inner], one thread per
// output. The first (select_last_index: the last) index of the extreme; a NaN is the extreme and
// the first NaN wins, as numpy's argmax.
absl::StatusOr<LoweredKernel> LowerArgReduce(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(ctx.node().GetInt("axis", 0), rank));
  const bool last = ctx.node().GetInt("select_last_index", 0) != 0;
  const bool is_max = ctx.node().op_type == "ArgMax";
  const auto [outer, n, inner] = lower::SplitAtAxis(x.shape, axis);
  if (n == 0) return ctx.Invalid("cannot take the arg-extreme of an empty axis");
  CudaKernelWriter w(is_max ? "argmax" : "argmin", emu);
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Output(ctx.node().outputs[0], "int64_t", "out");
  const std::string better =
      absl::StrCat("v != v || v ", is_max ? ">" : "<", last ? "=" : "", " b");
  std::vector<Stmt> body = {Raw(absl::StrCat("const float* x = in + (i / ", inner, "LL) * ",
                                             n * inner, "LL + i % ", inner, "LL;")),
                            Raw("float b = x[0]; long long at = 0;"),
                            Raw(absl::StrCat("for (long long j = 1; j < ", n,
                                             "LL && b == b; ++j) { const float v = x[j * ", inner,
                                             "LL]; if (", better, ") { b = v; at = j; } }")),
                            Raw("out[i] = at;")};
  return w.PerElement(outer * inner, std::move(body));
}

}  // namespace

void RegisterCudaRowLowerings(CudaLowerTable* table) {
  (*table)["Softmax"] = &LowerSoftmax;
  (*table)["LogSoftmax"] = &LowerLogSoftmax;
  (*table)["LayerNormalization"] = &LowerLayerNorm;
  (*table)["GroupNormalization"] = &LowerGroupNorm;
  (*table)["InstanceNormalization"] = &LowerInstanceNorm;
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                         "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"}) {
    (*table)[op] = &LowerReduce;
  }
  (*table)["ArgMax"] = &LowerArgReduce;
  (*table)["ArgMin"] = &LowerArgReduce;
}

}  // namespace loom::ops::cuda_lower
