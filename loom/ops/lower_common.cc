#include "loom/ops/lower_common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/codegen/vector_math.h"
#include "loom/graph/shape_inference.h"

namespace loom::ops::lower {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using graph::TensorType;

absl::StatusOr<TensorType> LowerCtx::In(size_t i) const {
  if (!Has(i)) return Invalid(absl::StrCat("missing required input #", i));
  auto t = graph_.TypeOf(node_.inputs[i]);
  if (!t.ok()) return Invalid(absl::StrCat("input '", node_.inputs[i], "' has no known type"));
  return *t;
}

absl::StatusOr<TensorType> LowerCtx::Out(size_t i) const {
  if (!HasOutput(i)) return Invalid(absl::StrCat("missing output #", i));
  auto t = graph_.TypeOf(node_.outputs[i]);
  if (!t.ok()) return Invalid(absl::StrCat("output '", node_.outputs[i], "' has no known type"));
  return *t;
}

std::optional<Tensor> LowerCtx::Const(size_t i) const {
  if (!Has(i)) return std::nullopt;
  return graph::ConstantValueOf(graph_, node_.inputs[i]);
}

absl::StatusOr<std::vector<int64_t>> LowerCtx::ConstInts(size_t i, absl::string_view what) const {
  std::optional<Tensor> t = Const(i);
  if (!t.has_value()) {
    return Unimplemented(absl::StrCat(what, " (input #", i, ") is not a constant"));
  }
  if (t->dtype() != DType::kInt64 && t->dtype() != DType::kInt32) {
    return Invalid(absl::StrCat(what, " must be int64 or int32, got ", t->type().ToString()));
  }
  std::vector<int64_t> v(static_cast<size_t>(t->num_elements()));
  for (int64_t k = 0; k < t->num_elements(); ++k) v[static_cast<size_t>(k)] = t->Int64At(k);
  return v;
}

absl::StatusOr<std::optional<std::vector<int64_t>>> LowerCtx::OptionalConstInts(
    size_t i, absl::string_view what) const {
  if (!Has(i)) return std::optional<std::vector<int64_t>>();
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> v, ConstInts(i, what));
  return std::optional<std::vector<int64_t>>(std::move(v));
}

absl::StatusOr<std::optional<std::vector<double>>> LowerCtx::OptionalConstDoubles(
    size_t i, absl::string_view what) const {
  if (!Has(i)) return std::optional<std::vector<double>>();
  std::optional<Tensor> t = Const(i);
  if (!t.has_value()) {
    return Unimplemented(absl::StrCat(what, " (input #", i, ") is not a constant"));
  }
  std::vector<double> v(static_cast<size_t>(t->num_elements()));
  for (int64_t k = 0; k < t->num_elements(); ++k) v[static_cast<size_t>(k)] = t->DoubleAt(k);
  return std::optional<std::vector<double>>(std::move(v));
}

absl::Status LowerCtx::Invalid(absl::string_view msg) const {
  return absl::InvalidArgumentError(absl::StrCat(node_.Describe(), ": ", msg));
}

absl::Status LowerCtx::Unimplemented(absl::string_view msg) const {
  return absl::UnimplementedError(absl::StrCat(node_.Describe(), ": no generated kernel: ", msg));
}

absl::Status LowerCtx::RequireDType(DType dtype, std::initializer_list<DType> allowed,
                                    absl::string_view what) const {
  for (DType d : allowed) {
    if (d == dtype) return absl::OkStatus();
  }
  return Unimplemented(absl::StrCat(what, " of dtype ", graph::DTypeName(dtype)));
}

absl::StatusOr<int64_t> LowerCtx::Axis(int64_t axis, int64_t rank, absl::string_view what) const {
  if (axis < -rank || axis >= rank) {
    return Invalid(absl::StrCat(what, " ", axis, " is out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

std::string StorageCType(DType dtype) {
  switch (graph::DTypeSize(dtype)) {
    case 1:
      return "uint8_t";
    case 2:
      return "uint16_t";
    case 8:
      return "uint64_t";
    default:
      return "uint32_t";
  }
}

AxisSplit SplitAtAxis(const Shape& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const int64_t e = shape[static_cast<size_t>(d)];
    if (d < axis) {
      s.outer *= e;
    } else if (d == axis) {
      s.n = e;
    } else {
      s.inner *= e;
    }
  }
  return s;
}

std::vector<int64_t> RowMajorStrides(const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t k = shape.size(); k-- > 1;) s[k - 1] = s[k] * shape[k];
  return s;
}

std::string FloatLiteral(float v) {
  if (std::isnan(v)) return "__builtin_nanf(\"\")";
  if (std::isinf(v)) return v > 0 ? "__builtin_inff()" : "(-__builtin_inff())";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9gf", static_cast<double>(v));
  std::string s = buf;
  // "1f" is not a literal; "1e+10f" and "1.5f" are.
  if (s.find_first_of(".en") == std::string::npos) s.insert(s.size() - 1, ".0");
  return absl::StrCat("(", s, ")");
}

// --- KernelWriter ---

void KernelWriter::Input(const std::string& value, const std::string& ctype,
                         const std::string& name) {
  LoweredKernel::Arg arg;
  arg.value = value;
  args_.push_back(std::move(arg));
  decls_.push_back(absl::StrCat("const ", ctype, "* __restrict ", name, " = (const ", ctype,
                                "*)loom_buffers[", args_.size() - 1, "];"));
}

void KernelWriter::Output(const std::string& value, const std::string& ctype,
                          const std::string& name) {
  LoweredKernel::Arg arg;
  arg.value = value;
  arg.is_output = true;
  args_.push_back(std::move(arg));
  decls_.push_back(absl::StrCat(ctype, "* __restrict ", name, " = (", ctype, "*)loom_buffers[",
                                args_.size() - 1, "];"));
}

void KernelWriter::Constant(Tensor tensor, const std::string& ctype, const std::string& name) {
  LoweredKernel::Arg arg;
  arg.kind = LoweredKernel::Arg::Kind::kConstant;
  arg.constant = std::move(tensor);
  args_.push_back(std::move(arg));
  decls_.push_back(absl::StrCat("const ", ctype, "* __restrict ", name, " = (const ", ctype,
                                "*)loom_buffers[", args_.size() - 1, "];"));
}

void KernelWriter::Global(const std::string& text) { globals_.push_back(text); }

LoweredKernel KernelWriter::Finish(int64_t units, int64_t unit_bytes,
                                   const std::string& body) const {
  const int64_t per_task = std::max<int64_t>(1, kTaskBytes / std::max<int64_t>(1, unit_bytes));
  const int64_t tasks = (units + per_task - 1) / per_task;
  std::string code = absl::StrCat("// Generated by Loom: ", kind_, "\n",
                                  codegen::CppPrelude(target_.VectorLanes()));
  if (vector_math_) {
    absl::StrAppend(&code, codegen::VectorMathSource(),
                    "static inline float loom_hsum(vf v) { float s = v[0]; for (int l = 1; l < ",
                    target_.VectorLanes(), "; ++l) s += v[l]; return s; }\n",
                    "static inline float loom_hmax(vf v) { float m = v[0]; for (int l = 1; l < ",
                    target_.VectorLanes(), "; ++l) m = v[l] > m ? v[l] : m; return m; }\n",
                    "static inline float loom_hmin(vf v) { float m = v[0]; for (int l = 1; l < ",
                    target_.VectorLanes(), "; ++l) m = v[l] < m ? v[l] : m; return m; }\n");
  }
  absl::StrAppend(&code, "#include <string.h>\n#define LOOM_L ", target_.VectorLanes(), "\n");
  for (const std::string& g : globals_) absl::StrAppend(&code, g, "\n");
  absl::StrAppend(&code,
                  "\nstatic void loom_tasks(int64_t loom_begin, int64_t loom_end, void* loom_ctx) "
                  "{\n  void* const* loom_buffers = (void* const*)loom_ctx;\n");
  for (const std::string& d : decls_) absl::StrAppend(&code, "  ", d, "\n");
  absl::StrAppend(&code, "  const int64_t loom_u0 = loom_begin * ", per_task, ";\n",
                  "  const int64_t loom_u1 = loom_end * ", per_task, " < ", units, " ? loom_end * ",
                  per_task, " : ", units, ";\n", body, "}\n\n",
                  "extern \"C\" void loom_kernel(void* const* buffers, const loom_parallel_t* par) "
                  "{\n",
                  "  if (par != 0 && par->num_threads > 1 && par->parallel_for != 0 && ", tasks,
                  " > 1) {\n", "    par->parallel_for(", tasks,
                  ", loom_tasks, (void*)buffers, par->pool);\n", "  } else if (", tasks,
                  " > 0) {\n", "    loom_tasks(0, ", tasks, ", (void*)buffers);\n", "  }\n}\n");
  LoweredKernel k;
  k.source.code = std::move(code);
  k.source.compile_flags = target_.CompilerFlags();
  k.args = args_;
  k.kind = kind_;
  return k;
}

// --- StridedView ---

void StridedView::Simplify() {
  Shape shape;
  std::vector<int64_t> strides;
  for (size_t k = 0; k < out_shape.size(); ++k) {
    if (out_shape[k] == 1) continue;
    if (!shape.empty() && strides.back() == in_strides[k] * out_shape[k]) {
      shape.back() *= out_shape[k];
      strides.back() = in_strides[k];
    } else {
      shape.push_back(out_shape[k]);
      strides.push_back(in_strides[k]);
    }
  }
  out_shape = std::move(shape);
  in_strides = std::move(strides);
}

StridedView TransposeView(const Shape& in_shape, const std::vector<int64_t>& perm) {
  const std::vector<int64_t> s = RowMajorStrides(in_shape);
  StridedView v;
  for (int64_t p : perm) {
    v.out_shape.push_back(in_shape[static_cast<size_t>(p)]);
    v.in_strides.push_back(s[static_cast<size_t>(p)]);
  }
  return v;
}

std::string UnitOffsets(const std::vector<int64_t>& sizes, const std::vector<int64_t>& in_strides,
                        const std::vector<int64_t>& out_strides, int64_t offset,
                        const std::string& unit) {
  std::string s = absl::StrCat("    int64_t loom_r = ", unit, ";\n    int64_t src = ", offset,
                               ";\n    int64_t dst = 0;\n");
  for (size_t k = sizes.size(); k-- > 0;) {
    absl::StrAppend(&s, "    { const int64_t i = loom_r % ", sizes[k], "; loom_r /= ", sizes[k],
                    "; src += i * ", in_strides[k], "; dst += i * ", out_strides[k], "; }\n");
  }
  return s;
}

LoweredKernel LowerStridedCopy(const Target& target, const std::string& kind,
                               const std::string& in_value, const std::string& out_value,
                               DType dtype, StridedView view) {
  view.Simplify();
  KernelWriter w(target, kind);
  const std::string t = StorageCType(dtype);
  const int64_t esize = static_cast<int64_t>(graph::DTypeSize(dtype));
  w.Input(in_value, t, "in");
  w.Output(out_value, t, "out");
  const Shape& shape = view.out_shape;
  const int64_t total = graph::NumElements(shape);
  if (total == 0) return w.Finish(0, 1, "");
  if (shape.empty()) return w.Finish(1, esize, absl::StrCat("  out[0] = in[", view.offset, "];\n"));

  const int64_t r = static_cast<int64_t>(shape.size());
  const std::vector<int64_t> out_strides = RowMajorStrides(shape);
  const int64_t n = shape.back();
  const int64_t s = view.in_strides.back();

  // Transpose-like: the input's contiguous dim p is not the output's innermost. Tiles of
  // kTile x kTile (p, inner) keep both the reads and the writes within a few cache lines.
  int64_t p = -1;
  for (int64_t k = 0; k + 1 < r; ++k) {
    if (view.in_strides[static_cast<size_t>(k)] == 1) p = k;
  }
  if (s != 1 && s != 0 && p >= 0) {
    constexpr int64_t kTile = 16;
    const int64_t pn = shape[static_cast<size_t>(p)];
    const int64_t op = out_strides[static_cast<size_t>(p)];
    const int64_t pblocks = (pn + kTile - 1) / kTile;
    std::vector<int64_t> sizes, ins, outs;
    for (int64_t k = 0; k + 1 < r; ++k) {
      if (k == p) continue;
      sizes.push_back(shape[static_cast<size_t>(k)]);
      ins.push_back(view.in_strides[static_cast<size_t>(k)]);
      outs.push_back(out_strides[static_cast<size_t>(k)]);
    }
    int64_t outer = 1;
    for (int64_t d : sizes) outer *= d;
    const std::string body =
        absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
                     UnitOffsets(sizes, ins, outs, view.offset, absl::StrCat("u / ", pblocks)),
                     "    const int64_t pb = (u % ", pblocks, ") * ", kTile, ";\n",
                     "    const int64_t pe = pb + ", kTile, " < ", pn, " ? pb + ", kTile, " : ", pn,
                     ";\n", "    for (int64_t jb = 0; jb < ", n, "; jb += ", kTile, ") {\n",
                     "      const int64_t je = jb + ", kTile, " < ", n, " ? jb + ", kTile, " : ", n,
                     ";\n", "      for (int64_t q = pb; q < pe; ++q) {\n", "        ", t,
                     "* __restrict o = out + dst + q * ", op, ";\n", "        const ", t,
                     "* __restrict i = in + src + q;\n",
                     "        for (int64_t j = jb; j < je; ++j) o[j] = i[j * ", s, "];\n",
                     "      }\n    }\n  }\n");
    return w.Finish(outer * pblocks, kTile * n * esize * 2, body);
  }

  // Row copies: a unit is one output row (or a chunk of a long row, so that one large
  // contiguous copy still spreads over the threads).
  const int64_t chunk = std::max<int64_t>(1, KernelWriter::kTaskBytes / esize);
  const int64_t chunks = (s == 1 && n > 2 * chunk) ? (n + chunk - 1) / chunk : 1;
  const int64_t len = chunks > 1 ? chunk : n;
  std::vector<int64_t> sizes(shape.begin(), shape.end() - 1);
  std::vector<int64_t> ins(view.in_strides.begin(), view.in_strides.end() - 1);
  std::vector<int64_t> outs(out_strides.begin(), out_strides.end() - 1);
  int64_t rows = 1;
  for (int64_t d : sizes) rows *= d;
  std::string body =
      absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
                   UnitOffsets(sizes, ins, outs, view.offset, absl::StrCat("u / ", chunks)),
                   "    const int64_t c0 = (u % ", chunks, ") * ", len, ";\n",
                   "    const int64_t cn = c0 + ", len, " < ", n, " ? ", len, " : ", n, " - c0;\n");
  if (s == 1) {
    absl::StrAppend(&body, "    memcpy(out + dst + c0, in + src + c0, cn * ", esize, ");\n");
  } else if (s == 0) {
    absl::StrAppend(&body, "    const ", t, " v = in[src];\n",
                    "    for (int64_t j = 0; j < cn; ++j) out[dst + c0 + j] = v;\n");
  } else {
    absl::StrAppend(&body,
                    "    for (int64_t j = 0; j < cn; ++j) out[dst + c0 + j] = in[src + (c0 + j) * ",
                    s, "];\n");
  }
  absl::StrAppend(&body, "  }\n");
  return w.Finish(rows * chunks, len * esize * 2, body);
}

}  // namespace loom::ops::lower
