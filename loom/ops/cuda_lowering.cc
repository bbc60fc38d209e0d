// The CUDA lowerings' writer, the elementwise kernel, the data-movement family (strided views,
// Concat, Split, Pad, Gather, GatherElements) and the operator table. Row kernels (softmax,
// normalizations, reductions) are in cuda_lower_rows.cc.
#include "loom/ops/cuda_lowering.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/vector_math.h"
#include "loom/graph/data_movement.h"
#include "loom/graph/shape_inference.h"
#include "loom/ops/cuda_kernel.h"
#include "loom/ops/cuda_lower_common.h"

namespace loom::ops {
namespace cuda_lower {

using codegen::If;
using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;
using graph::DType;
using graph::Shape;
using graph::TensorType;
using lower::LowerCtx;

void CudaKernelWriter::Input(const std::string& value, const std::string& ctype,
                             const std::string& name) {
  LoweredKernel::Arg a;
  a.value = value;
  args_.push_back(std::move(a));
  params_.push_back({name, false, ctype});
}

void CudaKernelWriter::Output(const std::string& value, const std::string& ctype,
                              const std::string& name) {
  LoweredKernel::Arg a;
  a.value = value;
  a.is_output = true;
  args_.push_back(std::move(a));
  params_.push_back({name, true, ctype});
}

void CudaKernelWriter::Constant(graph::Tensor tensor, const std::string& ctype,
                                const std::string& name) {
  LoweredKernel::Arg a;
  a.kind = LoweredKernel::Arg::Kind::kConstant;
  a.constant = std::move(tensor);
  args_.push_back(std::move(a));
  params_.push_back({name, false, ctype});
}

absl::StatusOr<LoweredKernel> CudaKernelWriter::Print(codegen::Kernel k,
                                                      int64_t shared_floats) const {
  k.comment = absl::StrCat("loom ", kind_);
  k.params = params_;
  if (math_) k.globals = ElementwiseGlobals();
  if (shared_floats > 0) k.shared = {{"loom_red", shared_floats}};
  LoweredKernel out;
  LOOM_ASSIGN_OR_RETURN(out.source, PrintCudaKernel(std::move(k), host_emulation_));
  out.args = args_;
  out.kind = kind_;
  return out;
}

absl::StatusOr<LoweredKernel> CudaKernelWriter::PerElement(int64_t total,
                                                           std::vector<Stmt> body) const {
  const int64_t blocks = std::max<int64_t>(1, (total + kElementThreads - 1) / kElementThreads);
  std::vector<Stmt> inner = {
      Raw(absl::StrCat("const long long i = (long long)${b} * ", kElementThreads, " + ${t};")),
      If(absl::StrCat("i < ", total, "LL"), {codegen::Block(std::move(body))})};
  codegen::Kernel k;
  k.body = {Loop("b", blocks, LoopKind::kBlockX,
                 {Loop("t", kElementThreads, LoopKind::kThreadX, std::move(inner))})};
  return Print(std::move(k), 0);
}

absl::StatusOr<LoweredKernel> CudaKernelWriter::PerRow(int64_t rows, int64_t threads,
                                                       std::vector<Stmt> body) const {
  std::vector<Stmt> inner = {Raw("const long long row = (long long)${b};"),
                             Raw("const int tid = ${t};")};
  for (Stmt& s : body) inner.push_back(std::move(s));
  codegen::Kernel k;
  k.body = {Loop("b", std::max<int64_t>(rows, 1), LoopKind::kBlockX,
                 {Loop("t", threads, LoopKind::kThreadX, std::move(inner))})};
  return Print(std::move(k), threads);
}

std::vector<Stmt> BlockReduce(const std::string& var, const std::string& combine, int64_t threads) {
  std::vector<Stmt> s = {Raw(absl::StrCat("loom_red[tid] = ", var, ";")), codegen::Barrier()};
  for (int64_t half = threads / 2; half > 0; half /= 2) {
    s.push_back(
        If(absl::StrCat("tid < ", half),
           {Raw(absl::StrCat("const float a = loom_red[tid], b = loom_red[tid + ", half, "];")),
            Raw(absl::StrCat("loom_red[tid] = ", combine, ";"))}));
    s.push_back(codegen::Barrier());
  }
  s.push_back(Raw(absl::StrCat(var, " = loom_red[0];")));
  s.push_back(codegen::Barrier());  // loom_red is free again
  return s;
}

int64_t RowThreads(int64_t n) {
  int64_t t = 32;
  while (t < n && t < 256) t *= 2;
  return t;
}

std::vector<Stmt> DecomposeIndex(const std::vector<int64_t>& dims, const std::string& index,
                                 const std::string& prefix) {
  std::vector<Stmt> s = {Raw(absl::StrCat("long long ", prefix, "rest = ", index, ";"))};
  for (size_t d = dims.size(); d-- > 0;) {
    s.push_back(
        Raw(absl::StrCat("const long long ", prefix, d, " = ", prefix, "rest % ", dims[d], "LL;")));
    s.push_back(Raw(absl::StrCat(prefix, "rest /= ", dims[d], "LL;")));
  }
  s.push_back(Raw(absl::StrCat("(void)", prefix, "rest;")));
  return s;
}

namespace {

// out[i] = in[offset + sum_k i_k * in_strides[k]].
absl::StatusOr<LoweredKernel> LowerView(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(lower::MovementViewSpec spec, lower::MovementView(ctx));
  lower::StridedView view = std::move(spec.view);
  view.Simplify();
  const std::string t = lower::StorageCType(x.dtype);
  CudaKernelWriter w(spec.kind, emu);
  w.Input(ctx.node().inputs[0], t, "in");
  w.Output(ctx.node().outputs[0], t, "out");
  std::vector<Stmt> body = DecomposeIndex(view.out_shape, "i", "d");
  std::string src = absl::StrCat(view.offset, "LL");
  for (size_t d = 0; d < view.out_shape.size(); ++d) {
    if (view.in_strides[d] != 0) absl::StrAppend(&src, " + d", d, " * ", view.in_strides[d], "LL");
  }
  body.push_back(Raw(absl::StrCat("out[i] = in[", src, "];")));
  return w.PerElement(graph::NumElements(view.out_shape), std::move(body));
}

// Concat: out viewed as [outer, total] with part k at columns [offset_k, offset_k + width_k).
absl::StatusOr<LoweredKernel> LowerConcat(const LowerCtx& ctx, bool emu) {
  std::vector<TensorType> inputs;
  for (size_t k = 0; k < ctx.node().inputs.size(); ++k) {
    LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(k));
    inputs.push_back(x);
  }
  LOOM_ASSIGN_OR_RETURN(graph::ConcatSpec spec, graph::ResolveConcat(ctx.node(), inputs));
  const lower::AxisSplit split = lower::SplitAtAxis(spec.out, spec.axis);
  const std::string t = lower::StorageCType(inputs[0].dtype);
  CudaKernelWriter w("concat", emu);
  int64_t total = 0;
  std::vector<int64_t> widths;
  for (size_t k = 0; k < inputs.size(); ++k) {
    w.Input(ctx.node().inputs[k], t, absl::StrCat("p", k));
    widths.push_back(inputs[k].shape[static_cast<size_t>(spec.axis)] * split.inner);
    total += widths.back();
  }
  w.Output(ctx.node().outputs[0], t, "out");
  std::vector<Stmt> body;
  if (total > 0) {
    body = {Raw(absl::StrCat("const long long r = i / ", total, "LL, c = i % ", total, "LL;"))};
    int64_t offset = 0;
    std::string chain;
    for (size_t k = 0; k < widths.size(); ++k) {
      if (widths[k] == 0) continue;
      absl::StrAppend(&chain, chain.empty() ? "" : "else ", "if (c < ", offset + widths[k],
                      "LL) out[i] = p", k, "[r * ", widths[k], "LL + c - ", offset, "LL];\n");
      offset += widths[k];
    }
    body.push_back(Raw(chain));
  }
  return w.PerElement(split.outer * total, std::move(body));
}

// Split: the input viewed as [outer, total], part k from columns [offset_k, offset_k + width_k);
// one thread per input element writes it to its part.
absl::StatusOr<LoweredKernel> LowerSplit(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts sizes, ctx.OptionalConstInts(1, "split"));
  LOOM_ASSIGN_OR_RETURN(
      graph::SplitSpec spec,
      graph::ResolveSplit(ctx.node(), ctx.opset(), x.shape, sizes, ctx.node().outputs.size()));
  const lower::AxisSplit split = lower::SplitAtAxis(x.shape, spec.axis);
  const std::string t = lower::StorageCType(x.dtype);
  CudaKernelWriter w("split", emu);
  w.Input(ctx.node().inputs[0], t, "in");
  std::vector<int64_t> widths;
  int64_t total = 0;
  for (size_t k = 0; k < ctx.node().outputs.size(); ++k) {
    if (!ctx.HasOutput(k)) return ctx.Unimplemented("an omitted Split output");
    w.Output(ctx.node().outputs[k], t, absl::StrCat("p", k));
    widths.push_back(spec.sizes[k] * split.inner);
    total += widths.back();
  }
  std::vector<Stmt> body;
  if (total > 0) {
    body = {Raw(absl::StrCat("const long long r = i / ", total, "LL, c = i % ", total, "LL;"))};
    int64_t offset = 0;
    std::string chain;
    for (size_t k = 0; k < widths.size(); ++k) {
      if (widths[k] == 0) continue;
      absl::StrAppend(&chain, chain.empty() ? "" : "else ", "if (c < ", offset + widths[k], "LL) p",
                      k, "[r * ", widths[k], "LL + c - ", offset, "LL] = in[i];\n");
      offset += widths[k];
    }
    body.push_back(Raw(chain));
  }
  return w.PerElement(split.outer * total, std::move(body));
}

// Pad: per output element, each dim's input index by the mode (constant: outside gives the
// value; edge: clamped; reflect: mirrored without the edge; wrap: modulo).
absl::StatusOr<LoweredKernel> LowerPad(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  LOOM_ASSIGN_OR_RETURN(graph::IntList pads, ctx.ConstInts(1, "pads"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ctx.OptionalConstInts(3, "axes"));
  LOOM_ASSIGN_OR_RETURN(graph::PadSpec spec,
                        graph::ResolvePad(ctx.node(), ctx.opset(), x.shape, pads, axes));
  const size_t rank = x.shape.size();
  const std::string t = lower::StorageCType(x.dtype);
  CudaKernelWriter w("pad", emu);
  w.Input(ctx.node().inputs[0], t, "in");
  const bool has_value = spec.mode == graph::PadMode::kConstant && ctx.Has(2);
  if (has_value) w.Input(ctx.node().inputs[2], t, "cval");
  w.Output(ctx.node().outputs[0], t, "out");
  const int64_t total = graph::NumElements(y.shape);
  for (size_t k = 0; k < rank; ++k) {
    if (x.shape[k] == 0 && y.shape[k] > 0 && spec.mode != graph::PadMode::kConstant) {
      return ctx.Invalid("only constant padding can pad an empty dim");
    }
  }
  std::vector<Stmt> body = DecomposeIndex(y.shape, "i", "o");
  const std::vector<int64_t> strides = lower::RowMajorStrides(x.shape);
  body.push_back(Raw("long long src = 0;"));
  body.push_back(Raw("bool inside = true;"));
  for (size_t k = 0; k < rank; ++k) {
    const int64_t d = x.shape[k];
    std::string idx = absl::StrCat("long long s", k, " = o", k, " - ", spec.begin[k], "LL;");
    switch (spec.mode) {
      case graph::PadMode::kConstant:
        absl::StrAppend(&idx, " if (s", k, " < 0 || s", k, " >= ", d, "LL) inside = false;");
        break;
      case graph::PadMode::kEdge:
        absl::StrAppend(&idx, " s", k, " = s", k, " < 0 ? 0 : (s", k, " >= ", d, "LL ? ", d - 1,
                        "LL : s", k, ");");
        break;
      case graph::PadMode::kWrap:
        absl::StrAppend(&idx, " s", k, " = ((s", k, " % ", d, "LL) + ", d, "LL) % ", d, "LL;");
        break;
      default: {  // reflect
        if (d == 1) {
          absl::StrAppend(&idx, " s", k, " = 0;");
        } else {
          const int64_t period = 2 * (d - 1);
          absl::StrAppend(&idx, " s", k, " = ((s", k, " % ", period, "LL) + ", period, "LL) % ",
                          period, "LL; if (s", k, " >= ", d, "LL) s", k, " = ", period, "LL - s", k,
                          ";");
        }
        break;
      }
    }
    absl::StrAppend(&idx, " src += s", k, " * ", strides[k], "LL;");
    body.push_back(Raw(idx));
  }
  body.push_back(
      Raw(absl::StrCat("out[i] = inside ? in[src] : (", has_value ? "cval[0]" : "0", ");")));
  return w.PerElement(total, std::move(body));
}

absl::Status CheckConstIndices(const LowerCtx& ctx, int64_t dim, int64_t axis) {
  std::optional<graph::Tensor> t = ctx.Const(1);
  if (!t.has_value()) return absl::OkStatus();
  return graph::CheckIndexRange(ctx.node(), *t, dim, absl::StrCat("axis ", axis));
}

// Gather: out [outer, count, inner] = in [outer, dim, inner] at index ind[count].
absl::StatusOr<LoweredKernel> LowerGather(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType ind, ctx.In(1));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(ind.dtype, {DType::kInt64, DType::kInt32}, "indices"));
  LOOM_ASSIGN_OR_RETURN(graph::GatherSpec spec, graph::ResolveGather(ctx.node(), x.shape, ind));
  const int64_t dim = x.shape[static_cast<size_t>(spec.axis)];
  LOOM_RETURN_IF_ERROR(CheckConstIndices(ctx, dim, spec.axis));
  const lower::AxisSplit split = lower::SplitAtAxis(x.shape, spec.axis);
  const int64_t count = graph::NumElements(ind.shape);
  const std::string t = lower::StorageCType(x.dtype);
  CudaKernelWriter w("gather", emu);
  w.Input(ctx.node().inputs[0], t, "in");
  w.Input(ctx.node().inputs[1], ind.dtype == DType::kInt64 ? "int64_t" : "int32_t", "ind");
  w.Output(ctx.node().outputs[0], t, "out");
  const int64_t inner = std::max<int64_t>(split.inner, 1);
  std::vector<Stmt> body = {
      Raw(absl::StrCat("const long long e = i % ", inner, "LL, u = i / ", inner, "LL;")),
      Raw(absl::StrCat("long long idx = (long long)ind[u % ", std::max<int64_t>(count, 1), "LL];")),
      Raw(absl::StrCat("if (idx < 0) idx += ", dim, "LL;")),
      Raw(absl::StrCat("out[i] = (unsigned long long)idx < ", dim, "ULL ? in[((u / ",
                       std::max<int64_t>(count, 1), "LL) * ", dim, "LL + idx) * ", inner,
                       "LL + e] : (", t, ")0;"))};
  return w.PerElement(split.outer * count * split.inner, std::move(body));
}

// GatherElements: out[j] = in[j with its axis coordinate replaced by ind[j]].
absl::StatusOr<LoweredKernel> LowerGatherElements(const LowerCtx& ctx, bool emu) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType ind, ctx.In(1));
  LOOM_RETURN_IF_ERROR(ctx.RequireDType(ind.dtype, {DType::kInt64, DType::kInt32}, "indices"));
  LOOM_ASSIGN_OR_RETURN(const int64_t axis, graph::ResolveGatherElements(ctx.node(), x.shape, ind));
  const int64_t dim = x.shape[static_cast<size_t>(axis)];
  LOOM_RETURN_IF_ERROR(CheckConstIndices(ctx, dim, axis));
  const std::vector<int64_t> xs = lower::RowMajorStrides(x.shape);
  const std::string t = lower::StorageCType(x.dtype);
  CudaKernelWriter w("gather_elements", emu);
  w.Input(ctx.node().inputs[0], t, "in");
  w.Input(ctx.node().inputs[1], ind.dtype == DType::kInt64 ? "int64_t" : "int32_t", "ind");
  w.Output(ctx.node().outputs[0], t, "out");
  std::vector<Stmt> body = DecomposeIndex(ind.shape, "i", "d");
  std::string src = "0LL";
  for (size_t k = 0; k < ind.shape.size(); ++k) {
    if (static_cast<int64_t>(k) != axis) absl::StrAppend(&src, " + d", k, " * ", xs[k], "LL");
  }
  body.push_back(Raw("long long idx = (long long)ind[i];"));
  body.push_back(Raw(absl::StrCat("if (idx < 0) idx += ", dim, "LL;")));
  body.push_back(
      Raw(absl::StrCat("out[i] = (unsigned long long)idx < ", dim, "ULL ? in[", src, " + idx * ",
                       xs[static_cast<size_t>(axis)], "LL] : (", t, ")0;")));
  return w.PerElement(graph::NumElements(ind.shape), std::move(body));
}

const CudaLowerTable& Table() {
  static const CudaLowerTable* table = [] {
    auto* t = new CudaLowerTable();
    RegisterCudaMovementLowerings(t);
    RegisterCudaRowLowerings(t);
    return t;
  }();
  return *table;
}

}  // namespace

void RegisterCudaMovementLowerings(CudaLowerTable* table) {
  for (const char* op : {"Transpose", "Slice", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"}) {
    (*table)[op] = &LowerView;
  }
  (*table)["Concat"] = &LowerConcat;
  (*table)["Split"] = &LowerSplit;
  (*table)["Pad"] = &LowerPad;
  (*table)["Gather"] = &LowerGather;
  (*table)["GatherElements"] = &LowerGatherElements;
}

}  // namespace cuda_lower

absl::StatusOr<KernelSource> EmitCudaElementwise(const ElementwiseSpec& spec, bool host_emulation) {
  LOOM_RETURN_IF_ERROR(CheckElementwiseSpec(spec));
  const ElementwiseProgram& p = spec.program;
  const size_t ni = p.inputs.size();
  codegen::Kernel k;
  k.comment = absl::StrCat("loom elementwise ", p.instrs.size(), " ops");
  k.globals = ElementwiseGlobals();
  for (size_t i = 0; i < ni; ++i) {
    k.params.push_back({absl::StrCat("in", i), false, CType(p.inputs[i])});
  }
  for (size_t o = 0; o < p.outputs.size(); ++o) {
    k.params.push_back({absl::StrCat("out", o), true, CType(p.output_types[o])});
  }
  int64_t total = 1;
  for (int64_t d : spec.dims) total *= d;
  std::vector<codegen::Stmt> body = cuda_lower::DecomposeIndex(spec.dims, "i", "d");
  std::vector<std::string> in_exprs;
  for (size_t i = 0; i < ni; ++i) {
    std::string off = "0LL";
    for (size_t d = 0; d < spec.dims.size(); ++d) {
      if (spec.strides[i][d] != 0)
        absl::StrAppend(&off, " + d", d, " * ", spec.strides[i][d], "LL");
    }
    in_exprs.push_back(ElementwiseLoadExpr(p.inputs[i], absl::StrCat("in", i, "[", off, "]")));
  }
  LOOM_ASSIGN_OR_RETURN(PrintedElementwise printed,
                        PrintElementwise(p, in_exprs, EwMode::kScalar, "v"));
  for (std::string& line : printed.lines) body.push_back(codegen::Raw(std::move(line)));
  for (size_t o = 0; o < p.outputs.size(); ++o) {
    body.push_back(codegen::Raw(absl::StrCat(
        "out", o, "[i] = ",
        ElementwiseStoreExpr(p.output_types[o], p.TypeOf(p.outputs[o]), printed.outputs[o]), ";")));
  }
  const int64_t threads = cuda_lower::kElementThreads;
  const int64_t blocks = std::max<int64_t>(1, (total + threads - 1) / threads);
  std::vector<codegen::Stmt> inner = {
      codegen::Raw(absl::StrCat("const long long i = (long long)${b} * ", threads, " + ${t};")),
      codegen::If(absl::StrCat("i < ", total, "LL"), {codegen::Block(std::move(body))})};
  k.body = {
      codegen::Loop("b", blocks, codegen::LoopKind::kBlockX,
                    {codegen::Loop("t", threads, codegen::LoopKind::kThreadX, std::move(inner))})};
  return PrintCudaKernel(std::move(k), host_emulation);
}

absl::StatusOr<LoweredKernel> LowerNodeCuda(const graph::Graph& graph, const graph::Node& node,
                                            const Target& target, bool host_emulation) {
  if (target.kind != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("LowerNodeCuda needs a cuda target, got ", target.Key()));
  }
  const lower::LowerCtx ctx(graph, node, target);
  const cuda_lower::CudaLowerTable& table = cuda_lower::Table();
  auto it = table.find(node.op_type);
  if (it == table.end()) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": no generated CUDA kernel for ", node.op_type));
  }
  // Malformed nodes get shape inference's errors, as LowerNode's.
  absl::StatusOr<std::vector<graph::TensorType>> types = graph::InferNodeOutputTypes(graph, node);
  if (!types.ok() && types.status().code() != absl::StatusCode::kUnimplemented) {
    return types.status();
  }
  return it->second(ctx, host_emulation);
}

std::vector<std::string> CudaLoweredOps() {
  std::vector<std::string> ops;
  for (const auto& [op, fn] : cuda_lower::Table()) ops.push_back(op);
  return ops;
}

}  // namespace loom::ops
