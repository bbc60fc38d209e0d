// Lowered reductions (float32): the Reduce* family over any set of axes (keepdims only changes the
// output's shape, not its layout), ArgMax/ArgMin (int64 indices, select_last_index) and CumSum
// (float32, int32, int64; exclusive, reverse).
//
// A reduction canonicalizes the input into alternating groups of kept and reduced dims (size-1
// dims dropped, neighbours of one kind merged). When the innermost group is reduced, a work unit
// is one output element and the innermost group is summed as a contiguous row in vf lanes; when
// it is kept, a unit is a block of up to kColumns adjacent outputs, accumulated side by side
// (contiguous, vectorized across the block). Each output is computed by one unit in a fixed order:
// bit-identical for any thread count.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "loom/base/status_macros.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::Shape;
using graph::TensorType;

constexpr int64_t kColumns = 128;

// How one reduction combines: `map` turns an element $x into a term, `combine` folds a term $v
// into the accumulator $a (for floats and vf alike), `finish` turns the accumulator $a into the
// output (`$n`: the number of reduced elements).
struct Reducer {
  std::string init;
  std::string map = "$x";
  std::string combine = "$a + $v";
  std::string finish = "$a";
};

const char* kMaxCombine = "loom_select(($v > $a) | ($v != $v), $v, $a)";
const char* kMinCombine = "loom_select(($v < $a) | ($v != $v), $v, $a)";

absl::StatusOr<Reducer> ReducerFor(const LowerCtx& ctx, const std::string& op) {
  if (op == "ReduceSum") return Reducer{"0.0f"};
  if (op == "ReduceMean") return Reducer{"0.0f", "$x", "$a + $v", "$a / (float)$n"};
  if (op == "ReduceMax") return Reducer{"(-__builtin_inff())", "$x", kMaxCombine};
  if (op == "ReduceMin") return Reducer{"__builtin_inff()", "$x", kMinCombine};
  if (op == "ReduceProd") return Reducer{"1.0f", "$x", "$a * $v"};
  if (op == "ReduceL1") return Reducer{"0.0f", "loom_abs($x)"};
  if (op == "ReduceL2") return Reducer{"0.0f", "$x * $x", "$a + $v", "__builtin_sqrtf($a)"};
  if (op == "ReduceSumSquare") return Reducer{"0.0f", "$x * $x"};
  return ctx.Unimplemented(absl::StrCat("reduction '", op, "'"));
}

std::string Expand(const std::string& text, const std::string& a, const std::string& v) {
  return absl::StrReplaceAll(text, {{"$a", a}, {"$v", v}, {"$x", v}});
}

// Alternating groups of the canonical input: size and whether reduced, outermost first.
struct Group {
  int64_t size;
  bool reduced;
  int64_t stride = 0;  // input stride, filled by Canonicalize
};

std::vector<Group> Canonicalize(const Shape& shape, const std::vector<bool>& reduced) {
  std::vector<Group> groups;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!groups.empty() && groups.back().reduced == reduced[d]) {
      groups.back().size *= shape[d];
    } else {
      groups.push_back({shape[d], reduced[d]});
    }
  }
  int64_t stride = 1;
  for (size_t g = groups.size(); g-- > 0;) {
    groups[g].stride = stride;
    stride *= groups[g].size;
  }
  return groups;
}

// Nested loops over the reduced groups in `groups` (each a loop adding to `roff`), around `body`.
std::string ReducedLoops(const std::vector<Group>& groups, const std::string& body) {
  std::string open = "    {\n    int64_t roff = 0;\n", close;
  int idx = 0;
  for (const Group& g : groups) {
    absl::StrAppend(&open, "    for (int64_t r", idx, " = 0; r", idx, " < ", g.size, "; ++r", idx,
                    ") {\n", "    const int64_t roff", idx, " = roff + r", idx, " * ", g.stride,
                    ";\n    { const int64_t roff = roff", idx, ";\n");
    close = "    }}\n" + close;
    ++idx;
  }
  return absl::StrCat(open, body, close, "    }\n");
}

absl::StatusOr<LoweredKernel> LowerReduce(const LowerCtx& ctx) {
  const std::string& op = ctx.node().op_type;
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const bool axes_input = op == "ReduceSum" ? ctx.opset() >= 13 : ctx.opset() >= 18;
  std::vector<int64_t> axes = ctx.node().GetInts("axes");
  if (axes_input && ctx.Has(1)) {
    LOOM_ASSIGN_OR_RETURN(axes, ctx.ConstInts(1, "axes"));
  }
  const bool noop = axes.empty() && ctx.node().GetInt("noop_with_empty_axes", 0) != 0;
  std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty() && !noop);
  for (int64_t a : axes) {
    LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(a, rank, "axes entry"));
    reduced[static_cast<size_t>(axis)] = true;
  }
  int64_t count = 1;
  for (int64_t d = 0; d < rank; ++d) {
    if (reduced[static_cast<size_t>(d)]) count *= x.shape[static_cast<size_t>(d)];
  }
  const bool log_sum_exp = op == "ReduceLogSumExp";
  Reducer r;
  if (!log_sum_exp) {
    LOOM_ASSIGN_OR_RETURN(r, ReducerFor(ctx, op));
  }
  const std::vector<Group> groups = Canonicalize(x.shape, reduced);

  KernelWriter w(ctx.target(), "reduce");
  w.UseVectorMath();
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Output(ctx.node().outputs[0], "float", "out");
  int64_t outputs = 1;
  for (const Group& g : groups) {
    if (!g.reduced) outputs *= g.size;
  }
  if (outputs == 0) return w.Finish(0, 1, "");
  const std::string finish = absl::StrReplaceAll(r.finish, {{"$n", absl::StrCat(count)}});

  // Passes of the accumulation: one, or for LogSumExp a max and then a sum of exp(x - max).
  struct Pass {
    Reducer r;
    std::string acc;  // the accumulator's C name
  };
  std::vector<Pass> passes;
  if (log_sum_exp) {
    passes.push_back({Reducer{"(-__builtin_inff())", "$x", kMaxCombine}, "m"});
    passes.push_back({Reducer{"0.0f", "loom_exp($x - m_fin)"}, "a"});
  } else {
    passes.push_back({r, "a"});
  }

  // Every group but the innermost: the reduced ones become loops, the kept ones (sizes and
  // strides) index the work units.
  std::vector<Group> outer_reduced;
  std::vector<int64_t> sizes, strides;
  for (size_t g = 0; g + 1 < groups.size(); ++g) {
    if (groups[g].reduced) {
      outer_reduced.push_back(groups[g]);
    } else {
      sizes.push_back(groups[g].size);
      strides.push_back(groups[g].stride);
    }
  }
  const bool row = !groups.empty() && groups.back().reduced;
  if (row) {
    // A unit is one output; the innermost reduced group is a contiguous row of rn elements.
    const int64_t rn = groups.back().size;
    std::string body =
        absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
                     UnitOffsets(sizes, strides, std::vector<int64_t>(sizes.size()), 0, "u"),
                     "    (void)dst;\n");
    for (const Pass& p : passes) {
      const std::string a = p.acc, va = p.acc + "_v";
      absl::StrAppend(&body, "    float ", a, " = ", p.r.init, ";\n", "    vf ", va,
                      " = loom_splat<vf>(", p.r.init, ");\n");
      const std::string row_body =
          absl::StrCat("    const float* __restrict x = in + src + roff;\n", "    int64_t j = 0;\n",
                       "    for (; j + LOOM_L <= ", rn,
                       "; j += LOOM_L) { const vf v = ", Expand(p.r.map, "", "loom_load(x + j)"),
                       "; ", va, " = ", Expand(p.r.combine, va, "v"), "; }\n", "    for (; j < ",
                       rn, "; ++j) { const float v = ", Expand(p.r.map, "", "x[j]"), "; ", a, " = ",
                       Expand(p.r.combine, a, "v"), "; }\n");
      absl::StrAppend(&body, ReducedLoops(outer_reduced, row_body),
                      "    for (int l = 0; l < LOOM_L; ++l) { const float v = ", va, "[l]; ", a,
                      " = ", Expand(p.r.combine, a, "v"), "; }\n");
      if (log_sum_exp && p.acc == "m") {
        // exp(x - max) with max = -inf (all -inf, or nothing to reduce) or +inf would be NaN.
        absl::StrAppend(&body, "    const float m_fin = (m == m && m - m != m - m) ? 0.0f : m;\n");
      }
    }
    absl::StrAppend(
        &body, "    out[u] = ",
        log_sum_exp ? "m - m != m - m ? m : m_fin + loom_log(a)" : Expand(finish, "a", "a"),
        ";\n  }\n");
    return w.Finish(outputs, count * 4, body);
  }

  // Columns: the innermost group is kept; a unit is a block of adjacent outputs.
  const int64_t kn = groups.empty() ? 1 : groups.back().size;
  const int64_t blocks = (kn + kColumns - 1) / kColumns;
  std::string body = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
      UnitOffsets(sizes, strides, std::vector<int64_t>(sizes.size()), 0,
                  absl::StrCat("u / ", blocks)),
      "    (void)dst;\n", "    const int64_t c0 = (u % ", blocks, ") * ", kColumns, ";\n",
      "    const int64_t cn = c0 + ", kColumns, " < ", kn, " ? ", kColumns, " : ", kn, " - c0;\n",
      "    float* __restrict y = out + (u / ", blocks, ") * ", kn, " + c0;\n");
  for (const Pass& p : passes) {
    const std::string a = p.acc;
    absl::StrAppend(&body, "    float ", a, "[", kColumns, "];\n",
                    "    for (int64_t c = 0; c < cn; ++c) ", a, "[c] = ", p.r.init, ";\n");
    const std::string col_body =
        absl::StrCat("    const float* __restrict x = in + src + roff + c0;\n",
                     "    for (int64_t c = 0; c < cn; ++c) { ",
                     log_sum_exp && a == "a" ? "const float m_fin = m_fin_c[c]; " : "",
                     "const float v = ", Expand(p.r.map, "", "x[c]"), "; ", a,
                     "[c] = ", Expand(p.r.combine, a + "[c]", "v"), "; }\n");
    absl::StrAppend(&body, ReducedLoops(outer_reduced, col_body));
    if (log_sum_exp && a == "m") {
      absl::StrAppend(&body, "    float m_fin_c[", kColumns, "];\n",
                      "    for (int64_t c = 0; c < cn; ++c) m_fin_c[c] = (m[c] == m[c] && m[c] - "
                      "m[c] != m[c] - m[c]) ? 0.0f : m[c];\n");
    }
  }
  absl::StrAppend(&body, "    for (int64_t c = 0; c < cn; ++c) y[c] = ",
                  log_sum_exp ? "m[c] - m[c] != m[c] - m[c] ? m[c] : m_fin_c[c] + loom_log(a[c])"
                              : Expand(finish, "a[c]", "a[c]"),
                  ";\n  }\n");
  int64_t prefix = 1;
  for (int64_t s : sizes) prefix *= s;
  return w.Finish(prefix * blocks, count * std::min(kn, kColumns) * 4, body);
}

// ArgMax / ArgMin over one axis: [outer, n, inner] -> int64 [outer, inner].
absl::StatusOr<LoweredKernel> LowerArgReduce(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "input"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(ctx.node().GetInt("axis", 0), rank));
  const bool last = ctx.node().GetInt("select_last_index", 0) != 0;
  const bool is_max = ctx.node().op_type == "ArgMax";
  const auto [outer, n, inner] = SplitAtAxis(x.shape, axis);
  if (n == 0) return ctx.Invalid("cannot take the arg-extreme of an empty axis");
  // The first (or, with select_last_index, the last) index of the extreme. A NaN is the extreme,
  // the first NaN wins (as numpy's argmax).
  const std::string better =
      absl::StrCat("v != v || v ", is_max ? ">" : "<", last ? "=" : "", " b");
  KernelWriter w(ctx.target(), is_max ? "argmax" : "argmin");
  w.Input(ctx.node().inputs[0], "float", "in");
  w.Output(ctx.node().outputs[0], "int64_t", "out");
  const int64_t blocks = (inner + kColumns - 1) / kColumns;
  const std::string body = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    const int64_t c0 = (u % ", blocks,
      ") * ", kColumns, ";\n", "    const int64_t cn = c0 + ", kColumns, " < ", inner, " ? ",
      kColumns, " : ", inner, " - c0;\n", "    const float* __restrict x = in + (u / ", blocks,
      ") * ", n * inner, " + c0;\n", "    float best[", kColumns, "]; int64_t at[", kColumns,
      "];\n", "    for (int64_t c = 0; c < cn; ++c) { best[c] = x[c]; at[c] = 0; }\n",
      "    for (int64_t j = 1; j < ", n, "; ++j)\n", "      for (int64_t c = 0; c < cn; ++c) {\n",
      "        const float v = x[j * ", inner, " + c], b = best[c];\n",
      "        if (b != b) continue;\n", "        if (", better, ") { best[c] = v; at[c] = j; }\n",
      "      }\n", "    for (int64_t c = 0; c < cn; ++c) out[(u / ", blocks, ") * ", inner,
      " + c0 + c] = at[c];\n  }\n");
  return w.Finish(outer * blocks, n * std::min(inner, kColumns) * 4, body);
}

// CumSum along a constant axis: [outer, n, inner], a running sum per column.
absl::StatusOr<LoweredKernel> LowerCumSum(const LowerCtx& ctx) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(
      x.dtype, {DType::kFloat32, DType::kInt32, DType::kInt64, DType::kFloat64}, "input"));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> axis_v, ctx.ConstInts(1, "axis"));
  if (axis_v.size() != 1) return ctx.Invalid("axis must hold one value");
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, ctx.Axis(axis_v[0], rank));
  const bool exclusive = ctx.node().GetInt("exclusive", 0) != 0;
  const bool reverse = ctx.node().GetInt("reverse", 0) != 0;
  const auto [outer, n, inner] = SplitAtAxis(x.shape, axis);
  const std::string t = x.dtype == DType::kFloat32   ? "float"
                        : x.dtype == DType::kFloat64 ? "double"
                        : x.dtype == DType::kInt32   ? "int32_t"
                                                     : "int64_t";
  KernelWriter w(ctx.target(), "cumsum");
  w.Input(ctx.node().inputs[0], t, "in");
  w.Output(ctx.node().outputs[0], t, "out");
  const int64_t blocks = (inner + kColumns - 1) / kColumns;
  const std::string j = reverse ? absl::StrCat("(", n - 1, " - k)") : "k";
  const std::string body = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    const int64_t c0 = (u % ", blocks,
      ") * ", kColumns, ";\n", "    const int64_t cn = c0 + ", kColumns, " < ", inner, " ? ",
      kColumns, " : ", inner, " - c0;\n", "    const int64_t base = (u / ", blocks, ") * ",
      n * inner, " + c0;\n", "    ", t, " acc[", kColumns, "];\n",
      "    for (int64_t c = 0; c < cn; ++c) acc[c] = 0;\n", "    for (int64_t k = 0; k < ", n,
      "; ++k) {\n", "      const int64_t off = base + ", j, " * ", inner, ";\n",
      "      for (int64_t c = 0; c < cn; ++c) {\n",
      exclusive ? "        out[off + c] = acc[c];\n        acc[c] += in[off + c];\n"
                : "        acc[c] += in[off + c];\n        out[off + c] = acc[c];\n",
      "      }\n    }\n  }\n");
  return w.Finish(n == 0 ? 0 : outer * blocks, n * std::min(inner, kColumns) * 8, body);
}

}  // namespace

void RegisterReduceLowerings(LowerTable* table) {
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                         "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"}) {
    (*table)[op] = &LowerReduce;
  }
  (*table)["ArgMax"] = &LowerArgReduce;
  (*table)["ArgMin"] = &LowerArgReduce;
  (*table)["CumSum"] = &LowerCumSum;
}

}  // namespace loom::ops::lower
