#include "loom/graph/tasks.h"

#include <map>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

// Range checks shared by ParseWorkloadKey (untrusted text) and the tests.
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
  } else if (w.kind == TaskKind::kDense) {
    if (w.m < 1 || w.n < 1 || w.k < 1) return bad("extents must be >= 1");
  } else {
    if (w.b < 1 || w.m < 1 || w.n < 1 || w.k < 1) return bad("extents must be >= 1");
  }
  return absl::OkStatus();
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

absl::StatusOr<Workload> GemmWorkload(const Graph& g, const Node& node) {
  LOOM_ASSIGN_OR_RETURN(TensorType a, NeedType(g, node, 0));
  LOOM_ASSIGN_OR_RETURN(TensorType bt, NeedType(g, node, 1));
  if (node.GetInt("transA", 0) != 0) return NotTunable(node, "transA=1 is not covered");
  if (a.dtype != DType::kFloat32) return NotTunable(node, "only float32 is tunable");
  if (!ConstantValueOf(g, node.inputs[1]).has_value()) {
    return NotTunable(node, "B is not a constant weight");
  }
  if (a.shape.size() != 2 || bt.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": A and B must be 2-D"));
  }
  Workload w;
  w.kind = TaskKind::kDense;
  w.dtype = a.dtype;
  w.trans_b = node.GetInt("transB", 0) != 0;
  w.m = a.shape[0];
  w.k = a.shape[1];
  w.n = w.trans_b ? bt.shape[0] : bt.shape[1];
  return w;
}

absl::StatusOr<Workload> MatMulWorkload(const Graph& g, const Node& node) {
  LOOM_ASSIGN_OR_RETURN(TensorType a, NeedType(g, node, 0));
  LOOM_ASSIGN_OR_RETURN(TensorType bt, NeedType(g, node, 1));
  if (a.dtype != DType::kFloat32) return NotTunable(node, "only float32 is tunable");
  const Shape& sa = a.shape;
  const Shape& sb = bt.shape;
  if (sa.empty() || sb.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(node.Describe(), ": operands must have rank >= 1"));
  }
  Workload w;
  w.dtype = a.dtype;
  w.k = sa.back();
  w.n = sb.size() == 1 ? 1 : sb.back();
  if (sb.size() <= 2) {
    // A matrix (or vector) right operand: every leading dim of A folds into M.
    w.m = 1;
    for (size_t i = 0; i + 1 < sa.size(); ++i) w.m *= sa[i];
    if (ConstantValueOf(g, node.inputs[1]).has_value()) {
      w.kind = TaskKind::kDense;
    } else {
      w.kind = TaskKind::kBatchMatmul;
      w.b = 1;
    }
    return w;
  }
  // Batched: A's and B's batch dims must agree exactly (no broadcast).
  Shape batch_b(sb.begin(), sb.end() - 2);
  Shape batch_a = sa.size() > 2 ? Shape(sa.begin(), sa.end() - 2) : Shape();
  while (batch_a.size() < batch_b.size()) batch_a.insert(batch_a.begin(), 1);
  while (batch_b.size() < batch_a.size()) batch_b.insert(batch_b.begin(), 1);
  if (batch_a != batch_b) return NotTunable(node, "broadcast batch dimensions are not covered");
  w.kind = TaskKind::kBatchMatmul;
  w.b = NumElements(batch_a);
  w.m = sa.size() == 1 ? 1 : sa[sa.size() - 2];
  return w;
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
    return absl::StrCat(head, "m", w.m, "_n", w.n, "_k", w.k, "_tb", w.trans_b ? 1 : 0);
  }
  return absl::StrCat(head, "b", w.b, "_m", w.m, "_n", w.n, "_k", w.k);
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

  // Expected tokens, in canonical order, with the fields they fill.
  struct Field {
    const char* prefix;
    std::vector<int64_t*> targets;
  };
  int64_t trans_b = 0;
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
    fields = {{"m", {&w.m}}, {"n", {&w.n}}, {"k", {&w.k}}, {"tb", {&trans_b}}};
  } else {
    fields = {{"b", {&w.b}}, {"m", {&w.m}}, {"n", {&w.n}}, {"k", {&w.k}}};
  }
  std::vector<absl::string_view> tokens = absl::StrSplit(parts[2], '_');
  if (tokens.size() != fields.size()) {
    return bad(absl::StrCat("expected ", fields.size(), " dimension fields, got ", tokens.size()));
  }
  for (size_t i = 0; i < fields.size(); ++i) {
    std::string prefix;
    std::vector<int64_t> values;
    if (!ParseToken(tokens[i], &prefix, &values) || prefix != fields[i].prefix ||
        values.size() != fields[i].targets.size()) {
      return bad(absl::StrCat("field '", tokens[i], "' should be '", fields[i].prefix, "' with ",
                              fields[i].targets.size(), " value(s)"));
    }
    for (size_t j = 0; j < values.size(); ++j) *fields[i].targets[j] = values[j];
  }
  if (trans_b != 0 && trans_b != 1) return bad("tb must be 0 or 1");
  w.trans_b = trans_b == 1;
  if (absl::Status st = ValidateWorkload(w); !st.ok()) return bad(st.message());
  if (WorkloadKey(w) != key) return bad("not in canonical form");
  return w;
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

absl::StatusOr<Workload> WorkloadFromNode(const Graph& graph, const Node& node) {
  if (node.op_type == "Conv") return ConvWorkload(graph, node);
  if (node.op_type == "Gemm") return GemmWorkload(graph, node);
  if (node.op_type == "MatMul") return MatMulWorkload(graph, node);
  return NotTunable(node, "no template for this operator");
}

absl::StatusOr<std::vector<Task>> ExtractTasks(const Graph& graph) {
  std::vector<Task> tasks;
  std::map<std::string, size_t> index;
  for (const Node& node : graph.nodes) {
    absl::StatusOr<Workload> w = WorkloadFromNode(graph, node);
    if (absl::IsNotFound(w.status())) continue;
    if (!w.ok()) return w.status();
    std::string key = WorkloadKey(*w);
    auto [it, inserted] = index.emplace(key, tasks.size());
    if (inserted) {
      Task t;
      t.workload = *w;
      t.key = key;
      t.hash = StableHash(key);
      t.flops = WorkloadFlops(*w);
      tasks.push_back(std::move(t));
    }
    Task& t = tasks[it->second];
    ++t.count;
    t.nodes.push_back(node.name);
  }
  return tasks;
}

}  // namespace loom::graph
