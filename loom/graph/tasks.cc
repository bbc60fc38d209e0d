#include "loom/graph/tasks.h"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"

namespace loom::graph {
namespace {

constexpr TaskKind kAllKinds[] = {TaskKind::kConv2d, TaskKind::kDepthwiseConv2d,
                                  TaskKind::kGroupedConv2d, TaskKind::kDense,
                                  TaskKind::kBatchMatmul};
bool IsConv(TaskKind kind) {
  return kind == TaskKind::kConv2d || kind == TaskKind::kDepthwiseConv2d ||
         kind == TaskKind::kGroupedConv2d;
}

const char* DTypeShortName(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "f32";
    case DType::kInt64:
      return "i64";
    case DType::kInt32:
      return "i32";
    case DType::kBool:
      return "bool";
    case DType::kUint8:
      return "u8";
    case DType::kInt8:
      return "i8";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat64:
      return "f64";
    case DType::kInt16:
      return "i16";
    case DType::kUint16:
      return "u16";
    case DType::kUint32:
      return "u32";
    case DType::kUint64:
      return "u64";
    case DType::kUndefined:
      return "undef";
  }
  return "undef";
}

absl::Status NotTunable(const Node& node, absl::string_view why) {
  return absl::NotFoundError(absl::StrCat(node.Describe(), " is not a tunable workload: ", why));
}

absl::StatusOr<TensorType> NeedType(const Graph& g, const Node& node, size_t i) {
  if (i >= node.inputs.size() || node.inputs[i].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": missing input #", i));
  }
  auto t = g.TypeOf(node.inputs[i]);
  if (!t.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(node.Describe(), ": input '", node.inputs[i],
                                                      "' has no type; run InferShapes first"));
  }
  return *t;
}

absl::StatusOr<Workload> ConvWorkload(const Graph& g, const Node& node) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, NeedType(g, node, 0));
  LOOM_ASSIGN_OR_RETURN(TensorType wt, NeedType(g, node, 1));
  if (x.shape.size() != 4 || wt.shape.size() != 4) {
    return NotTunable(node, "only 2-D convolutions are tunable");
  }
  if (x.dtype != DType::kFloat32) return NotTunable(node, "only float32 is tunable");
  Workload w;
  w.dtype = x.dtype;
  w.n = x.shape[0];
  w.c = x.shape[1];
  w.h = x.shape[2];
  w.w = x.shape[3];
  w.k = wt.shape[0];
  w.r = wt.shape[2];
  w.s = wt.shape[3];
  w.groups = node.GetInt("group", 1);
  if (w.groups < 1 || w.c != wt.shape[1] * w.groups) {
    return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": input channels ", w.c,
                                                   " do not match weight channels ", wt.shape[1],
                                                   " x group ", w.groups));
  }
  LOOM_ASSIGN_OR_RETURN(WindowGeometry geo,
                        ResolveWindowGeometry(node, {w.h, w.w}, {w.r, w.s}, false));
  w.stride_h = geo.strides[0];
  w.stride_w = geo.strides[1];
  w.dilation_h = geo.dilations[0];
  w.dilation_w = geo.dilations[1];
  w.pad_top = geo.pads[0];
  w.pad_left = geo.pads[1];
  w.pad_bottom = geo.pads[2];
  w.pad_right = geo.pads[3];
  if (w.groups == 1) {
    w.kind = TaskKind::kConv2d;
  } else if (w.c == w.groups) {  // one input channel per group; K is a multiple of C
    w.kind = TaskKind::kDepthwiseConv2d;
  } else {
    w.kind = TaskKind::kGroupedConv2d;
  }
  return w;
}

// Whether `value` is a Transpose's output that a matrix product may read in place as the
// transposed operand: the Transpose swaps only the last two dims (rank >= 2) and nothing else
// reads its output (not another input of the same node, not a graph output). Returns the
// Transpose's node index, else -1.
int64_t AbsorbableTranspose(const Graph& g, const std::string& value) {
  const int64_t p = g.ProducerOf(value);
  if (p < 0) return -1;
  const Node& t = g.nodes[static_cast<size_t>(p)];
  if (t.op_type != "Transpose" || t.inputs.empty() || t.inputs[0].empty()) return -1;
  if (g.UseCount(value) != 1) return -1;
  absl::StatusOr<TensorType> in = g.TypeOf(t.inputs[0]);
  if (!in.ok()) return -1;
  const int64_t rank = static_cast<int64_t>(in->shape.size());
  if (rank < 2) return -1;
  const std::vector<int64_t> perm = t.GetInts("perm");
  if (static_cast<int64_t>(perm.size()) != rank) return -1;  // the default perm reverses all
  for (int64_t i = 0; i < rank; ++i) {
    const int64_t want = i < rank - 2 ? i : (i == rank - 2 ? rank - 1 : rank - 2);
    if (perm[static_cast<size_t>(i)] != want) return -1;
  }
  return p;
}

// One operand of a matrix product as the kernel reads it: the value, whether it is the input of
// an absorbed last-two-dims Transpose (then `shape` is still the logical, transposed shape), and
// that Transpose.
struct Operand {
  std::string value;
  Shape shape;
  bool transposed = false;
  int64_t transpose_node = -1;
};

absl::StatusOr<Operand> MatrixOperand(const Graph& g, const Node& node, size_t i) {
  LOOM_ASSIGN_OR_RETURN(TensorType t, NeedType(g, node, i));
  Operand o;
  o.value = node.inputs[i];
  o.shape = t.shape;
  if (t.dtype != DType::kFloat32) return NotTunable(node, "only float32 is tunable");
  if (o.shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(node.Describe(), ": operands must have rank >= 1"));
  }
  for (int64_t d : o.shape) {
    if (d < 1) return NotTunable(node, "empty operands are not tunable");
  }
  o.transpose_node = AbsorbableTranspose(g, o.value);
  return o;
}

// Reads operand `o` through its Transpose (the product's trans flag is set by the caller).
void Absorb(const Graph& g, Operand* o, NodeWorkload* out) {
  const Node& t = g.nodes[static_cast<size_t>(o->transpose_node)];
  o->value = t.inputs[0];
  o->transposed = true;
  out->absorbed.push_back(t.name);
}

bool IsConstant(const Graph& g, const std::string& value) {
  return ConstantValueOf(g, value).has_value();
}

absl::Status CheckOperandSizes(const Node& node, const Workload& w) {
  const double b = static_cast<double>(std::max<int64_t>(w.b, 1));
  const double m = static_cast<double>(w.m), n = static_cast<double>(w.n),
               k = static_cast<double>(w.k);
  const double limit = static_cast<double>(kMaxMatrixOperandElements);
  if (b * m * k > limit || b * k * n > limit || b * m * n > limit) {
    return NotTunable(node, "operands above 2^31 elements");
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeWorkload> GemmWorkload(const Graph& g, const Node& node) {
  LOOM_ASSIGN_OR_RETURN(Operand a, MatrixOperand(g, node, 0));
  LOOM_ASSIGN_OR_RETURN(Operand bt, MatrixOperand(g, node, 1));
  if (a.shape.size() != 2 || bt.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": A and B must be 2-D"));
  }
  NodeWorkload out;
  Workload& w = out.workload;
  w.dtype = DType::kFloat32;
  w.trans_a = node.GetInt("transA", 0) != 0;
  w.trans_b = node.GetInt("transB", 0) != 0;
  w.m = w.trans_a ? a.shape[1] : a.shape[0];
  w.k = w.trans_a ? a.shape[0] : a.shape[1];
  w.n = w.trans_b ? bt.shape[0] : bt.shape[1];
  const int64_t kb = w.trans_b ? bt.shape[1] : bt.shape[0];
  if (kb != w.k) {
    return absl::InvalidArgumentError(
        absl::StrCat(node.Describe(), ": A has K=", w.k, " but B has K=", kb));
  }
  if (IsConstant(g, bt.value)) {
    w.kind = TaskKind::kDense;
  } else {
    // An activation B: one product of the batch_matmul template (which reads both operands in
    // place, in either layout). Gemm's own trans flags are the layout; no Transpose is absorbed.
    w.kind = TaskKind::kBatchMatmul;
    w.b = 1;
  }
  LOOM_RETURN_IF_ERROR(CheckOperandSizes(node, w));
  out.a = a.value;
  out.b = bt.value;
  return out;
}

// Batch dims of the two operands, right-aligned (numpy broadcasting), as the workload holds
// them: dims of extent 1 in both dropped, neighbours with the same pattern (both hold it, only A,
// only B) merged. Fills b and, when some dim broadcasts, batch_a / batch_b.
absl::Status MergeBatchDims(const Node& node, Shape pa, Shape pb, Workload* w) {
  while (pa.size() < pb.size()) pa.insert(pa.begin(), 1);
  while (pb.size() < pa.size()) pb.insert(pb.begin(), 1);
  std::vector<int64_t> da, db;
  std::vector<int> pattern;  // 0: both hold the dim, 1: A broadcasts it, 2: B broadcasts it
  for (size_t i = 0; i < pa.size(); ++i) {
    if (pa[i] != pb[i] && pa[i] != 1 && pb[i] != 1) {
      return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": batch dims ", pa[i],
                                                     " and ", pb[i], " do not broadcast"));
    }
    if (pa[i] == 1 && pb[i] == 1) continue;
    const int p = pa[i] == pb[i] ? 0 : (pa[i] == 1 ? 1 : 2);
    if (!pattern.empty() && pattern.back() == p) {
      da.back() *= pa[i];
      db.back() *= pb[i];
    } else {
      pattern.push_back(p);
      da.push_back(pa[i]);
      db.push_back(pb[i]);
    }
  }
  w->b = 1;
  for (size_t i = 0; i < da.size(); ++i) w->b *= std::max(da[i], db[i]);
  if (std::any_of(pattern.begin(), pattern.end(), [](int p) { return p != 0; })) {
    w->batch_a = std::move(da);
    w->batch_b = std::move(db);
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeWorkload> MatMulWorkload(const Graph& g, const Node& node) {
  LOOM_ASSIGN_OR_RETURN(Operand a, MatrixOperand(g, node, 0));
  LOOM_ASSIGN_OR_RETURN(Operand bo, MatrixOperand(g, node, 1));
  NodeWorkload out;
  Workload& w = out.workload;
  w.dtype = DType::kFloat32;
  const Shape& sa = a.shape;  // logical shapes (after any Transpose)
  const Shape& sb = bo.shape;
  w.k = sa.back();
  w.n = sb.size() == 1 ? 1 : sb.back();
  const int64_t kb = sb.size() == 1 ? sb[0] : sb[sb.size() - 2];
  if (kb != w.k) {
    return absl::InvalidArgumentError(
        absl::StrCat(node.Describe(), ": A has K=", w.k, " but B has K=", kb));
  }
  const bool b_matrix = sb.size() <= 2;
  if (b_matrix && IsConstant(g, bo.value)) {
    // Dense: every leading dim of A folds into M, so A is read as [M, K], or in place as [K, M]
    // when it is a 2-D transposed operand.
    w.kind = TaskKind::kDense;
    w.m = 1;
    for (size_t i = 0; i + 1 < sa.size(); ++i) w.m *= sa[i];
    if (a.transpose_node >= 0 && sa.size() == 2) {
      Absorb(g, &a, &out);
      w.trans_a = true;
    }
    LOOM_RETURN_IF_ERROR(CheckOperandSizes(node, w));
    out.a = a.value;
    out.b = bo.value;
    return out;
  }
  w.kind = TaskKind::kBatchMatmul;
  w.m = sa.size() == 1 ? 1 : sa[sa.size() - 2];
  // Transposed operands are read in place. A rank-1 operand is a vector, never transposed.
  if (a.transpose_node >= 0) {
    Absorb(g, &a, &out);
    w.trans_a = true;
  }
  if (bo.transpose_node >= 0) {
    Absorb(g, &bo, &out);
    w.trans_b = true;
  }
  const Shape batch_a = sa.size() > 2 ? Shape(sa.begin(), sa.end() - 2) : Shape();
  const Shape batch_b = sb.size() > 2 ? Shape(sb.begin(), sb.end() - 2) : Shape();
  LOOM_RETURN_IF_ERROR(MergeBatchDims(node, batch_a, batch_b, &w));
  // Batch dims that only A holds, innermost, are rows of one taller product when A is row-major
  // ([.., j, M, K] with B shared across j is [j*M, K] @ B): fold them into M.
  if (!w.trans_a && !w.batch_a.empty() && w.batch_b.back() == 1) {
    w.m *= w.batch_a.back();
    w.b /= w.batch_a.back();
    w.batch_a.pop_back();
    w.batch_b.pop_back();
    const bool broadcast =
        std::any_of(w.batch_a.begin(), w.batch_a.end(), [](int64_t d) { return d == 1; }) ||
        std::any_of(w.batch_b.begin(), w.batch_b.end(), [](int64_t d) { return d == 1; });
    if (!broadcast) {
      w.batch_a.clear();
      w.batch_b.clear();
    }
  }
  LOOM_RETURN_IF_ERROR(CheckOperandSizes(node, w));
  out.a = a.value;
  out.b = bo.value;
  return out;
}

// Splits "st1x2" into ("st", {1, 2}).
bool ParseToken(absl::string_view token, std::string* prefix, std::vector<int64_t>* values) {
  size_t i = 0;
  while (i < token.size() && token[i] >= 'a' && token[i] <= 'z') ++i;
  *prefix = std::string(token.substr(0, i));
  values->clear();
  if (i == token.size()) return false;
  for (absl::string_view part : absl::StrSplit(token.substr(i), 'x')) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v)) return false;
    values->push_back(v);
  }
  return true;
}

}  // namespace

int64_t Workload::OutH() const {
  const int64_t span = h + pad_top + pad_bottom - dilation_h * (r - 1) - 1;
  if (stride_h < 1 || span < 0) return 0;
  return span / stride_h + 1;
}

int64_t Workload::OutW() const {
  const int64_t span = w + pad_left + pad_right - dilation_w * (s - 1) - 1;
  if (stride_w < 1 || span < 0) return 0;
  return span / stride_w + 1;
}

std::string TaskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kConv2d:
      return "conv2d";
    case TaskKind::kDepthwiseConv2d:
      return "depthwise_conv2d";
    case TaskKind::kGroupedConv2d:
      return "grouped_conv2d";
    case TaskKind::kDense:
      return "dense";
    case TaskKind::kBatchMatmul:
      return "batch_matmul";
  }
  return "unknown";
}

std::string WorkloadKey(const Workload& w) {
  std::string head = absl::StrCat(TaskKindName(w.kind), ":", DTypeShortName(w.dtype), ":");
  if (IsConv(w.kind)) {
    return absl::StrCat(head, "n", w.n, "_c", w.c, "_h", w.h, "_w", w.w, "_k", w.k, "_r", w.r, "_s",
                        w.s, "_st", w.stride_h, "x", w.stride_w, "_p", w.pad_top, "x", w.pad_left,
                        "x", w.pad_bottom, "x", w.pad_right, "_d", w.dilation_h, "x", w.dilation_w,
                        "_g", w.groups);
  }
  if (w.kind == TaskKind::kDense) {
    return absl::StrCat(head, "m", w.m, "_n", w.n, "_k", w.k, "_tb", w.trans_b ? 1 : 0,
                        w.trans_a ? "_ta1" : "");
  }
  std::string key = absl::StrCat(head, "b", w.b, "_m", w.m, "_n", w.n, "_k", w.k,
                                 w.trans_a ? "_ta1" : "", w.trans_b ? "_tb1" : "");
  if (!w.batch_a.empty()) {
    absl::StrAppend(&key, "_ba", absl::StrJoin(w.batch_a, "x"), "_bb",
                    absl::StrJoin(w.batch_b, "x"));
  }
  return key;
}

absl::StatusOr<Workload> ParseWorkloadKey(std::string_view key_in) {
  // This abseil build has its own string_view type.
  const absl::string_view key(key_in.data(), key_in.size());
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' is not a workload key: ", why));
  };
  std::vector<absl::string_view> parts = absl::StrSplit(key, ':');
  if (parts.size() != 3) return bad("expected kind:dtype:dims");
  Workload w;
  bool kind_found = false;
  for (TaskKind k : kAllKinds) {
    if (parts[0] == TaskKindName(k)) {
      w.kind = k;
      kind_found = true;
    }
  }
  if (!kind_found) return bad(absl::StrCat("unknown kind '", parts[0], "'"));
  bool dtype_found = false;
  for (DType d : AllDTypes()) {
    if (parts[1] == DTypeShortName(d)) {
      w.dtype = d;
      dtype_found = true;
    }
  }
  if (!dtype_found) return bad(absl::StrCat("unknown dtype '", parts[1], "'"));
  // WorkloadFromNode makes only float32 workloads: no template computes another type.
  if (w.dtype != DType::kFloat32) {
    return bad(absl::StrCat("dtype '", parts[1], "' is not tunable (only f32 is)"));
  }

  // Expected tokens, in canonical order, with the fields they fill. Optional tokens follow the
  // required ones, each at most once, in this order; a variable-length field takes any count.
  struct Field {
    const char* prefix;
    std::vector<int64_t*> targets;
    bool optional = false;
    std::vector<int64_t>* list = nullptr;  // a variable-length field
  };
  int64_t trans_a = 0, trans_b = 0;
  std::vector<Field> fields;
  if (IsConv(w.kind)) {
    fields = {{"n", {&w.n}},
              {"c", {&w.c}},
              {"h", {&w.h}},
              {"w", {&w.w}},
              {"k", {&w.k}},
              {"r", {&w.r}},
              {"s", {&w.s}},
              {"st", {&w.stride_h, &w.stride_w}},
              {"p", {&w.pad_top, &w.pad_left, &w.pad_bottom, &w.pad_right}},
              {"d", {&w.dilation_h, &w.dilation_w}},
              {"g", {&w.groups}}};
  } else if (w.kind == TaskKind::kDense) {
    fields = {
        {"m", {&w.m}}, {"n", {&w.n}}, {"k", {&w.k}}, {"tb", {&trans_b}}, {"ta", {&trans_a}, true}};
  } else {
    fields = {{"b", {&w.b}},
              {"m", {&w.m}},
              {"n", {&w.n}},
              {"k", {&w.k}},
              {"ta", {&trans_a}, true},
              {"tb", {&trans_b}, true},
              {"ba", {}, true, &w.batch_a},
              {"bb", {}, true, &w.batch_b}};
  }
  std::vector<absl::string_view> tokens = absl::StrSplit(parts[2], '_');
  size_t t = 0;
  for (const Field& f : fields) {
    std::string prefix;
    std::vector<int64_t> values;
    const bool parsed = t < tokens.size() && ParseToken(tokens[t], &prefix, &values);
    if (!parsed || prefix != f.prefix) {
      if (f.optional && (t == tokens.size() || parsed)) continue;
      if (t == tokens.size()) return bad(absl::StrCat("missing field '", f.prefix, "'"));
      return bad(absl::StrCat("field '", tokens[t], "' should be '", f.prefix, "'"));
    }
    if (f.list != nullptr) {
      if (values.size() > 8) return bad(absl::StrCat("field '", tokens[t], "' has over 8 dims"));
      *f.list = values;
    } else {
      if (values.size() != f.targets.size()) {
        return bad(absl::StrCat("field '", tokens[t], "' should be '", f.prefix, "' with ",
                                f.targets.size(), " value(s)"));
      }
      for (size_t j = 0; j < values.size(); ++j) *f.targets[j] = values[j];
    }
    ++t;
  }
  if (t != tokens.size()) return bad(absl::StrCat("unexpected field '", tokens[t], "'"));
  if (trans_a != 0 && trans_a != 1) return bad("ta must be 0 or 1");
  if (trans_b != 0 && trans_b != 1) return bad("tb must be 0 or 1");
  w.trans_a = trans_a == 1;
  w.trans_b = trans_b == 1;
  if (absl::Status st = ValidateWorkload(w); !st.ok()) return bad(st.message());
  if (WorkloadKey(w) != key) return bad("not in canonical form");
  return w;
}

absl::Status ValidateWorkload(const Workload& w) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", TaskKindName(w.kind), " workload: ", what));
  };
  if (IsConv(w.kind)) {
    if (w.n < 1 || w.c < 1 || w.h < 1 || w.w < 1 || w.k < 1 || w.r < 1 || w.s < 1) {
      return bad("extents must be >= 1");
    }
    if (w.stride_h < 1 || w.stride_w < 1 || w.dilation_h < 1 || w.dilation_w < 1) {
      return bad("strides and dilations must be >= 1");
    }
    if (w.pad_top < 0 || w.pad_left < 0 || w.pad_bottom < 0 || w.pad_right < 0) {
      return bad("pads must be >= 0");
    }
    if (w.groups < 1 || w.c % w.groups != 0 || w.k % w.groups != 0) {
      return bad("groups must divide input and output channels");
    }
    const bool depthwise = w.groups > 1 && w.c == w.groups;
    if ((w.kind == TaskKind::kConv2d) != (w.groups == 1) ||
        (w.kind == TaskKind::kDepthwiseConv2d) != depthwise) {
      return bad("kind does not match groups");
    }
    if (w.OutH() < 1 || w.OutW() < 1) return bad("empty output");
  } else {
    const bool batched = w.kind == TaskKind::kBatchMatmul;
    if (w.m < 1 || w.n < 1 || w.k < 1 || (batched && w.b < 1)) {
      return bad("extents must be >= 1");
    }
    // Products in double: no overflow on hostile extents.
    const double b = batched ? static_cast<double>(w.b) : 1.0, m = static_cast<double>(w.m),
                 n = static_cast<double>(w.n), k = static_cast<double>(w.k);
    const double limit = static_cast<double>(kMaxMatrixOperandElements);
    if (b * m * k > limit || b * k * n > limit || b * m * n > limit) {
      return bad("an operand exceeds 2^31 elements");
    }
    if (!batched && (w.b != 0 || !w.batch_a.empty())) {
      return bad("dense has no batch");
    }
    if (w.batch_a.size() != w.batch_b.size()) return bad("batch dims of A and B differ in rank");
    if (!w.batch_a.empty()) {
      if (w.batch_a.size() > 8) return bad("more than 8 merged batch dims");
      double total = 1;
      bool broadcast = false;
      int previous = -1;
      for (size_t i = 0; i < w.batch_a.size(); ++i) {
        const int64_t x = w.batch_a[i], y = w.batch_b[i];
        if (x < 1 || y < 1 || (x == 1 && y == 1) || (x != y && x != 1 && y != 1)) {
          return bad("each batch dim is one extent > 1, in both operands or in one");
        }
        const int pattern = x == y ? 0 : (x == 1 ? 1 : 2);
        if (pattern == previous) return bad("neighbouring batch dims are not merged");
        previous = pattern;
        broadcast = broadcast || pattern != 0;
        total *= static_cast<double>(std::max(x, y));
      }
      if (!broadcast) return bad("batch dims without a broadcast are written as b alone");
      if (total != static_cast<double>(w.b)) return bad("b is not the product of the batch dims");
    }
  }
  return absl::OkStatus();
}

uint64_t StableHash(std::string_view data) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : data) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

double WorkloadFlops(const Workload& w) {
  if (IsConv(w.kind)) {
    const double groups = static_cast<double>(std::max<int64_t>(w.groups, 1));
    return 2.0 * static_cast<double>(w.n) * static_cast<double>(w.k) *
           static_cast<double>(w.OutH()) * static_cast<double>(w.OutW()) *
           (static_cast<double>(w.c) / groups) * static_cast<double>(w.r) *
           static_cast<double>(w.s);
  }
  const double batch = w.kind == TaskKind::kBatchMatmul ? static_cast<double>(w.b) : 1.0;
  return 2.0 * batch * static_cast<double>(w.m) * static_cast<double>(w.n) *
         static_cast<double>(w.k);
}

absl::StatusOr<NodeWorkload> AnalyzeTunableNode(const Graph& graph, const Node& node) {
  if (node.op_type == "Conv") {
    LOOM_ASSIGN_OR_RETURN(Workload w, ConvWorkload(graph, node));
    return NodeWorkload{w, node.inputs[0], node.inputs[1], {}};
  }
  if (node.op_type == "Gemm") return GemmWorkload(graph, node);
  if (node.op_type == "MatMul") return MatMulWorkload(graph, node);
  return NotTunable(node, "no template for this operator");
}

absl::StatusOr<Workload> WorkloadFromNode(const Graph& graph, const Node& node) {
  LOOM_ASSIGN_OR_RETURN(NodeWorkload nw, AnalyzeTunableNode(graph, node));
  return std::move(nw.workload);
}

absl::StatusOr<std::vector<Task>> ExtractTasks(const Graph& graph) {
  std::vector<Task> tasks;
  std::map<std::string, size_t> index;
  for (const Node& node : graph.nodes) {
    absl::StatusOr<NodeWorkload> nw = AnalyzeTunableNode(graph, node);
    if (absl::IsNotFound(nw.status())) continue;
    if (!nw.ok()) return nw.status();
    std::string key = WorkloadKey(nw->workload);
    auto [it, inserted] = index.emplace(key, tasks.size());
    if (inserted) {
      Task t;
      t.workload = nw->workload;
      t.key = key;
      t.hash = StableHash(key);
      t.flops = WorkloadFlops(nw->workload);
      tasks.push_back(std::move(t));
    }
    Task& t = tasks[it->second];
    ++t.count;
    t.nodes.push_back(node.name);
    for (std::string& a : nw->absorbed) t.absorbed.push_back(std::move(a));
  }
  return tasks;
}

}  // namespace loom::graph
