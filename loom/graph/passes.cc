#include "loom/graph/passes.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/graph/data_movement.h"
#include "loom/graph/shape_inference.h"

namespace loom::graph {
namespace {

bool IsGraphOutput(const Graph& g, const std::string& value) {
  return std::any_of(g.outputs.begin(), g.outputs.end(),
                     [&](const ValueInfo& v) { return v.name == value; });
}

bool IsGraphInput(const Graph& g, const std::string& value) {
  return std::any_of(g.inputs.begin(), g.inputs.end(),
                     [&](const ValueInfo& v) { return v.name == value; });
}

void ReplaceInputs(Graph& g, const std::string& from, const std::string& to) {
  for (Node& n : g.nodes) {
    for (std::string& in : n.inputs) {
      if (in == from) in = to;
    }
  }
}

// Whether an Identity or Dropout node can be dropped: Dropout only in inference mode with its
// mask unused.
bool IsRemovableIdentityLike(const Graph& g, const Node& n) {
  if (n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) {
    return false;
  }
  if (n.op_type == "Identity") return n.inputs.size() == 1 && n.outputs.size() == 1;
  if (n.op_type != "Dropout") return false;
  for (size_t i = 1; i < n.outputs.size(); ++i) {
    if (!n.outputs[i].empty() && g.UseCount(n.outputs[i]) > 0) return false;
  }
  if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
    std::optional<Tensor> training = ConstantValueOf(g, n.inputs[2]);
    if (!training.has_value() || training->num_elements() != 1 || training->Int64At(0) != 0) {
      return false;
    }
  }
  return true;
}

// Output values of a Shape node whose input type is static.
Tensor EvaluateShape(const Node& node, int64_t opset, const TensorType& input) {
  const DimRange r = ResolveShapeRange(node, opset, static_cast<int64_t>(input.shape.size()));
  const std::vector<int64_t> dims(input.shape.begin() + r.start, input.shape.begin() + r.end);
  return Tensor::FromInt64s({static_cast<int64_t>(dims.size())}, dims);
}

std::string FreshName(const Graph& g, const std::string& base) {
  std::set<std::string> used;
  for (const auto& v : g.inputs) used.insert(v.name);
  for (const auto& v : g.outputs) used.insert(v.name);
  for (const auto& [name, _] : g.initializers) used.insert(name);
  for (const auto& [name, _] : g.value_types) used.insert(name);
  for (const Node& n : g.nodes) {
    used.insert(n.inputs.begin(), n.inputs.end());
    used.insert(n.outputs.begin(), n.outputs.end());
  }
  if (!used.count(base)) return base;
  for (int i = 1;; ++i) {
    std::string name = absl::StrCat(base, "_", i);
    if (!used.count(name)) return name;
  }
}

// A float32 initializer of shape [k], or nullptr.
const Tensor* ChannelParam(const Graph& g, const std::string& name, int64_t k) {
  const Tensor* t = g.FindInitializer(name);
  if (t == nullptr || t->dtype() != DType::kFloat32 || t->shape() != Shape{k}) return nullptr;
  return t;
}

// Tries to fold the BatchNormalization at `bn_index` into its producing Conv.
bool TryFoldBatchNorm(Graph& g, size_t bn_index) {
  const Node& bn = g.nodes[bn_index];
  if (bn.inputs.size() < 5 || bn.GetInt("training_mode", 0) != 0) return false;
  for (size_t i = 1; i < bn.outputs.size(); ++i) {
    if (!bn.outputs[i].empty()) return false;
  }
  const std::string& x = bn.inputs[0];
  const int64_t p = g.ProducerOf(x);
  if (p < 0) return false;
  Node& conv = g.nodes[static_cast<size_t>(p)];
  if (conv.op_type != "Conv" || conv.outputs.size() != 1 || conv.outputs[0] != x) return false;
  if (g.UseCount(x) != 1) return false;  // counts graph outputs too
  const Tensor* w = conv.inputs.size() > 1 ? g.FindInitializer(conv.inputs[1]) : nullptr;
  if (w == nullptr || w->dtype() != DType::kFloat32 || w->rank() < 3) return false;
  const int64_t k = w->dim(0);
  const Tensor* bias = nullptr;
  if (conv.inputs.size() > 2 && !conv.inputs[2].empty()) {
    bias = ChannelParam(g, conv.inputs[2], k);
    if (bias == nullptr) return false;
  }
  const Tensor* gamma = ChannelParam(g, bn.inputs[1], k);
  const Tensor* beta = ChannelParam(g, bn.inputs[2], k);
  const Tensor* mean = ChannelParam(g, bn.inputs[3], k);
  const Tensor* var = ChannelParam(g, bn.inputs[4], k);
  if (!gamma || !beta || !mean || !var) return false;
  const double eps = bn.GetFloat("epsilon", 1e-5f);

  Tensor new_w(DType::kFloat32, w->shape());
  Tensor new_b(DType::kFloat32, {k});
  const int64_t per_channel = w->num_elements() / std::max<int64_t>(k, 1);
  const float* wv = w->data<float>();
  float* nw = new_w.data<float>();
  for (int64_t c = 0; c < k; ++c) {
    const double scale =
        static_cast<double>(gamma->data<float>()[c]) / std::sqrt(var->data<float>()[c] + eps);
    for (int64_t j = 0; j < per_channel; ++j) {
      nw[c * per_channel + j] = static_cast<float>(wv[c * per_channel + j] * scale);
    }
    const double b0 = bias ? bias->data<float>()[c] : 0.0;
    new_b.data<float>()[c] =
        static_cast<float>((b0 - mean->data<float>()[c]) * scale + beta->data<float>()[c]);
  }
  const std::string w_name = FreshName(g, absl::StrCat(conv.inputs[1], "_bnfold"));
  g.initializers[w_name] = new_w;
  g.value_types[w_name] = new_w.type();
  const std::string b_name = FreshName(g, absl::StrCat(conv.name, "_bias_bnfold"));
  g.initializers[b_name] = new_b;
  g.value_types[b_name] = new_b.type();

  const std::string y = bn.outputs[0];
  conv.inputs.resize(3);
  conv.inputs[1] = w_name;
  conv.inputs[2] = b_name;
  conv.outputs[0] = y;
  g.value_types.erase(x);
  g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(bn_index));
  return true;
}

// The first and last kernel tap along one spatial dim that reads an input element for some
// output position (the others read only padding); false when none does.
bool LiveTaps(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t dilation,
              int64_t pad_begin, int64_t* first, int64_t* last) {
  *first = -1;
  for (int64_t t = 0; t < kernel; ++t) {
    const int64_t offset = t * dilation - pad_begin;  // input index of output 0
    // The first output position whose input index is >= 0.
    const int64_t o = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    if (o < out && o * stride + offset < in) {
      if (*first < 0) *first = t;
      *last = t;
    }
  }
  return *first >= 0;
}

// Trims the Conv at `i` to its live taps; true when it did.
bool TryTrimConvTaps(Graph& g, size_t i) {
  Node& conv = g.nodes[i];
  const Tensor* w = g.FindInitializer(conv.inputs.size() > 1 ? conv.inputs[1] : "");
  if (w == nullptr || w->dtype() != DType::kFloat32 || w->shape().size() < 3) return false;
  absl::StatusOr<TensorType> x = g.TypeOf(conv.inputs[0]);
  if (!x.ok() || x->shape.size() != w->shape().size()) return false;
  const size_t dims = w->shape().size() - 2;
  const std::vector<int64_t> in_spatial(x->shape.begin() + 2, x->shape.end());
  const std::vector<int64_t> kernel(w->shape().begin() + 2, w->shape().end());
  for (int64_t d : in_spatial) {
    if (d <= 0) return false;
  }
  absl::StatusOr<WindowGeometry> geo = ResolveWindowGeometry(conv, in_spatial, kernel, false);
  if (!geo.ok()) return false;
  std::vector<int64_t> first(dims), count(dims), pads = geo->pads;
  bool trimmed = false;
  for (size_t d = 0; d < dims; ++d) {
    int64_t lo = 0, hi = 0;
    if (!LiveTaps(in_spatial[d], geo->output[d], kernel[d], geo->strides[d], geo->dilations[d],
                  geo->pads[d], &lo, &hi)) {
      return false;  // every output reads padding only: left to the kernels
    }
    const int64_t begin = geo->pads[d] - lo * geo->dilations[d];
    const int64_t end = geo->pads[dims + d] - (kernel[d] - 1 - hi) * geo->dilations[d];
    if (begin < 0 || end < 0 || (lo == 0 && hi == kernel[d] - 1)) {
      first[d] = 0;
      count[d] = kernel[d];
      continue;
    }
    first[d] = lo;
    count[d] = hi - lo + 1;
    pads[d] = begin;
    pads[dims + d] = end;
    trimmed = true;
  }
  if (!trimmed) return false;

  // The weight's live taps, [K, C/groups, count...].
  Shape shape = {w->shape()[0], w->shape()[1]};
  shape.insert(shape.end(), count.begin(), count.end());
  Tensor trimmed_w(DType::kFloat32, shape);
  const int64_t outer = w->shape()[0] * w->shape()[1];
  int64_t taps = 1, old_taps = 1;
  for (size_t d = 0; d < dims; ++d) {
    taps *= count[d];
    old_taps *= kernel[d];
  }
  const float* src = w->data<float>();
  float* dst = trimmed_w.data<float>();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t t = 0; t < taps; ++t) {
      int64_t rest = t, at = 0, stride = 1;
      for (size_t d = dims; d-- > 0;) {
        at += (rest % count[d] + first[d]) * stride;
        rest /= count[d];
        stride *= kernel[d];
      }
      dst[o * taps + t] = src[o * old_taps + at];
    }
  }
  const std::string name = FreshName(g, absl::StrCat(conv.inputs[1], "_taps"));
  g.value_types[name] = trimmed_w.type();
  g.initializers[name] = std::move(trimmed_w);
  conv.inputs[1] = name;
  conv.attrs.erase("auto_pad");
  conv.attrs["pads"] = pads;
  conv.attrs["kernel_shape"] = count;
  return true;
}

}  // namespace

absl::Status RemoveIdentityLike(Graph& g, int64_t* removed) {
  int64_t count = 0;
  for (size_t i = 0; i < g.nodes.size();) {
    const Node& n = g.nodes[i];
    if (!IsRemovableIdentityLike(g, n)) {
      ++i;
      continue;
    }
    const std::string x = n.inputs[0];
    const std::string y = n.outputs[0];
    if (IsGraphOutput(g, y)) {
      // Keep the graph output's name: rename the producer's output x -> y instead.
      const int64_t p = g.ProducerOf(x);
      if (p < 0 || IsGraphOutput(g, x) || IsGraphInput(g, x) || g.IsInitializer(x)) {
        ++i;
        continue;
      }
      for (std::string& out : g.nodes[static_cast<size_t>(p)].outputs) {
        if (out == x) out = y;
      }
      ReplaceInputs(g, x, y);
      auto t = g.value_types.find(x);
      if (t != g.value_types.end()) {
        g.value_types[y] = t->second;
        g.value_types.erase(x);
      }
    } else {
      ReplaceInputs(g, y, x);
      g.value_types.erase(y);
    }
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    ++count;
  }
  if (removed != nullptr) *removed = count;
  return absl::OkStatus();
}

absl::Status ConstantFold(Graph& g, const NodeEvaluator& eval, const FoldOptions& options,
                          int64_t* folded) {
  LOOM_RETURN_IF_ERROR(g.TopologicalSort());
  LOOM_RETURN_IF_ERROR(g.Validate());
  LOOM_RETURN_IF_ERROR(SeedInputTypes(g));
  int64_t count = 0;
  int64_t total_bytes = 0;
  for (size_t i = 0; i < g.nodes.size();) {
    const Node& node = g.nodes[i];
    LOOM_ASSIGN_OR_RETURN(std::vector<TensorType> types, InferNodeOutputTypes(g, node));
    for (size_t j = 0; j < node.outputs.size(); ++j) {
      if (!node.outputs[j].empty()) g.value_types[node.outputs[j]] = types[j];
    }
    bool all_const = !node.inputs.empty();
    for (const std::string& in : node.inputs) {
      if (!in.empty() && !g.IsInitializer(in)) all_const = false;
    }
    const bool from_type = node.op_type == "Shape" || node.op_type == "Size";
    if (node.op_type != "Constant" && !from_type && !(all_const && eval)) {
      ++i;
      continue;
    }
    // The budget, checked on the inferred types before anything is allocated. InferNodeOutputTypes
    // has bounded each type, so the byte counts cannot overflow.
    for (size_t j = 0; j < node.outputs.size(); ++j) {
      if (node.outputs[j].empty()) continue;
      const int64_t bytes =
          NumElements(types[j].shape) * static_cast<int64_t>(DTypeSize(types[j].dtype));
      if (bytes > options.max_tensor_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "constant folding ", node.Describe(), ": output '", node.outputs[j], "' would be ",
            types[j].ToString(), " (", bytes, " bytes), above the per-tensor limit of ",
            options.max_tensor_bytes, " bytes"));
      }
      total_bytes += bytes;
      if (total_bytes > options.max_total_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "constant folding ", node.Describe(), ": output '", node.outputs[j], "' (",
            types[j].ToString(), ", ", bytes, " bytes) brings the folded constants to ",
            total_bytes, " bytes, above the per-model limit of ", options.max_total_bytes,
            " bytes"));
      }
    }
    std::vector<Tensor> results;
    if (node.op_type == "Constant") {
      LOOM_ASSIGN_OR_RETURN(Tensor t, ConstantNodeValue(node));
      results.push_back(std::move(t));
    } else if (node.op_type == "Shape") {
      LOOM_ASSIGN_OR_RETURN(TensorType in, g.TypeOf(node.inputs[0]));
      results.push_back(EvaluateShape(node, g.opset, in));
    } else if (node.op_type == "Size") {
      LOOM_ASSIGN_OR_RETURN(TensorType in, g.TypeOf(node.inputs[0]));
      results.push_back(Tensor::ScalarInt64(NumElements(in.shape)));
    } else {
      std::vector<Tensor> inputs;
      for (const std::string& in : node.inputs) {
        inputs.push_back(in.empty() ? Tensor() : *g.FindInitializer(in));
      }
      auto r = eval(node, g.opset, inputs);
      if (!r.ok()) {
        return absl::Status(r.status().code(), absl::StrCat("constant folding ", node.Describe(),
                                                            ": ", r.status().message()));
      }
      results = *std::move(r);
    }
    for (size_t j = 0; j < node.outputs.size(); ++j) {
      if (node.outputs[j].empty()) continue;
      if (j >= results.size()) {
        return absl::InternalError(absl::StrCat("constant folding ", node.Describe(), ": got ",
                                                results.size(), " outputs, expected ",
                                                node.outputs.size()));
      }
      if (results[j].type() != types[j]) {
        return absl::InternalError(absl::StrCat(
            "constant folding ", node.Describe(), ": output '", node.outputs[j], "' evaluated to ",
            results[j].type().ToString(), " but shape inference says ", types[j].ToString()));
      }
    }
    for (size_t j = 0; j < node.outputs.size(); ++j) {
      if (!node.outputs[j].empty()) g.initializers[node.outputs[j]] = results[j];
    }
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    ++count;
  }
  if (folded != nullptr) *folded = count;
  return absl::OkStatus();
}

absl::Status FoldBatchNormIntoConv(Graph& g, int64_t* folded) {
  int64_t count = 0;
  for (size_t i = 0; i < g.nodes.size();) {
    if (g.nodes[i].op_type == "BatchNormalization" && TryFoldBatchNorm(g, i)) {
      ++count;  // the BN at i is gone; look at the node that took its place
    } else {
      ++i;
    }
  }
  if (folded != nullptr) *folded = count;
  return absl::OkStatus();
}

absl::Status TrimConvPaddingTaps(Graph& g, int64_t* trimmed) {
  int64_t count = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (g.nodes[i].op_type == "Conv" && TryTrimConvTaps(g, i)) ++count;
  }
  if (trimmed != nullptr) *trimmed = count;
  return absl::OkStatus();
}

namespace {

// The scalar factor of operand `v` of a MatMul: *x is what it scales, *factor the factor (a
// Div's divisor inverted). False when `v` is not such a product, or has another use.
bool ScaledOperand(const Graph& g, const std::string& v, std::string* x, double* factor) {
  const int64_t p = g.ProducerOf(v);
  if (p < 0 || g.UseCount(v) != 1 || IsGraphOutput(g, v)) return false;
  const Node& n = g.nodes[static_cast<size_t>(p)];
  if ((n.op_type != "Mul" && n.op_type != "Div") || n.inputs.size() != 2 || n.outputs.size() != 1) {
    return false;
  }
  auto type_of = [&](const std::string& name) -> std::optional<TensorType> {
    auto t = g.TypeOf(name);
    return t.ok() ? std::optional<TensorType>(*t) : std::nullopt;
  };
  for (size_t k : {size_t{1}, size_t{0}}) {
    if (n.op_type == "Div" && k == 0) break;  // c / X is no scale of X
    const Tensor* c = g.FindInitializer(n.inputs[k]);
    if (c == nullptr || c->dtype() != DType::kFloat32 || c->num_elements() != 1) continue;
    const std::string& other = n.inputs[1 - k];
    const std::optional<TensorType> xt = type_of(other);
    const std::optional<TensorType> vt = type_of(v);
    // The product must keep X's type: the scale's rank may not add dims.
    if (!xt || !vt || xt->dtype != DType::kFloat32 || xt->shape != vt->shape) return false;
    const double value = c->DoubleAt(0);
    if (!std::isfinite(value) || (n.op_type == "Div" && value == 0)) return false;
    *x = other;
    *factor = n.op_type == "Div" ? 1.0 / value : value;
    return true;
  }
  return false;
}

// The 2-D form of the 1-D Conv `conv` (input [N, C, L], float32 weight initializer [K, C/g, k]):
// appends Reshape [N, C, 1, L] -> Conv (kernel [1, k]) -> Reshape [N, K, L'] to `out`, the last
// writing the Conv's output. False (nothing appended) when the Conv is not such a node.
bool AppendConv1dAs2d(Graph& g, const Node& conv, std::vector<Node>* out) {
  if (conv.op_type != "Conv" || conv.inputs.size() < 2 || conv.outputs.size() != 1) return false;
  const Tensor* w = g.FindInitializer(conv.inputs[1]);
  if (w == nullptr || w->dtype() != DType::kFloat32 || w->shape().size() != 3) return false;
  absl::StatusOr<TensorType> x = g.TypeOf(conv.inputs[0]);
  absl::StatusOr<TensorType> y = g.TypeOf(conv.outputs[0]);
  if (!x.ok() || !y.ok() || x->shape.size() != 3 || y->shape.size() != 3) return false;
  for (int64_t d : x->shape) {
    if (d <= 0) return false;
  }
  for (int64_t d : y->shape) {
    if (d <= 0) return false;
  }
  absl::StatusOr<WindowGeometry> geo =
      ResolveWindowGeometry(conv, {x->shape[2]}, {w->shape()[2]}, false);
  if (!geo.ok()) return false;
  absl::StatusOr<Tensor> w2 = w->Reshaped({w->shape()[0], w->shape()[1], 1, w->shape()[2]});
  if (!w2.ok()) return false;

  const std::string w_name = FreshName(g, absl::StrCat(conv.inputs[1], "_2d"));
  g.value_types[w_name] = w2->type();
  g.initializers[w_name] = *std::move(w2);
  auto reshape = [&](const std::string& from, const std::string& to, const Shape& shape) {
    const std::string target = FreshName(g, absl::StrCat(to, "_shape"));
    g.initializers[target] = Tensor::FromInt64s({static_cast<int64_t>(shape.size())}, shape);
    g.value_types[target] = g.initializers[target].type();
    g.value_types[to] = TensorType{x->dtype, shape};
    Node r;
    r.name = FreshName(g, absl::StrCat(conv.name, "_reshape_", to));
    r.op_type = "Reshape";
    r.inputs = {from, target};
    r.outputs = {to};
    return r;
  };
  const std::string x2 = FreshName(g, absl::StrCat(conv.inputs[0], "_2d"));
  const std::string y2 = FreshName(g, absl::StrCat(conv.outputs[0], "_2d"));
  out->push_back(reshape(conv.inputs[0], x2, {x->shape[0], x->shape[1], 1, x->shape[2]}));
  Node c = conv;
  c.inputs[0] = x2;
  c.inputs[1] = w_name;
  c.outputs[0] = y2;
  c.attrs.erase("auto_pad");
  c.attrs["kernel_shape"] = std::vector<int64_t>{1, geo->kernel[0]};
  c.attrs["strides"] = std::vector<int64_t>{1, geo->strides[0]};
  c.attrs["dilations"] = std::vector<int64_t>{1, geo->dilations[0]};
  c.attrs["pads"] = std::vector<int64_t>{0, geo->pads[0], 0, geo->pads[1]};
  out->push_back(std::move(c));
  Node back = reshape(y2, conv.outputs[0], y->shape);
  g.value_types[y2] = TensorType{y->dtype, {y->shape[0], y->shape[1], 1, y->shape[2]}};
  out->push_back(std::move(back));
  return true;
}

}  // namespace

absl::Status Conv1dAsConv2d(Graph& g, int64_t* rewritten) {
  int64_t count = 0;
  std::vector<Node> nodes;
  nodes.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (AppendConv1dAs2d(g, g.nodes[i], &nodes)) {
      ++count;
    } else {
      nodes.push_back(g.nodes[i]);
    }
  }
  g.nodes = std::move(nodes);
  if (rewritten != nullptr) *rewritten = count;
  return absl::OkStatus();
}

namespace {

// The dim of 4-D `from` that `to` drops, when `to` is `from` without its unit H or W (dim 2 or
// 3): Conv1dAsConv2d's [N, C, 1, L] -> [N, C, L]. -1 otherwise.
int64_t DroppedUnitSpatialDim(const Shape& from, const Shape& to) {
  if (from.size() != 4 || to.size() != 3) return -1;
  for (int64_t d : {2, 3}) {
    Shape s = from;
    s.erase(s.begin() + d);
    if (from[static_cast<size_t>(d)] == 1 && s == to) return d;
  }
  return -1;
}

}  // namespace

absl::Status SinkUnitDimReshapes(Graph& g, int64_t* moved) {
  LOOM_RETURN_IF_ERROR(g.TopologicalSort());
  int64_t count = 0;
  std::vector<Node> added;
  // Every value given a 4-D twin so far, so that a later chain reads the twin (a residual Add
  // of two such values).
  std::map<std::string, std::string> twins;
  for (size_t r = 0; r < g.nodes.size(); ++r) {
    const Node& reshape = g.nodes[r];
    if (reshape.op_type != "Reshape" || reshape.inputs.empty() || reshape.outputs.size() != 1) {
      continue;
    }
    const std::string x = reshape.inputs[0], y = reshape.outputs[0];
    absl::StatusOr<TensorType> xt = g.TypeOf(x), yt = g.TypeOf(y);
    if (!xt.ok() || !yt.ok() || xt->dtype != yt->dtype) continue;
    const int64_t dim = DroppedUnitSpatialDim(xt->shape, yt->shape);
    if (dim < 0) continue;
    // The chain: later elementwise nodes of y's shape that read y or the chain, else constants.
    std::map<std::string, std::string> lifted = {{y, x}};  // 3-D value -> its 4-D twin
    // An earlier value's twin where it has this Reshape's 4-D shape (the same dim dropped).
    auto earlier_twin = [&](const std::string& v) -> const std::string* {
      auto it = twins.find(v);
      if (it == twins.end()) return nullptr;
      absl::StatusOr<TensorType> t = g.TypeOf(it->second);
      return t.ok() && t->shape == xt->shape ? &it->second : nullptr;
    };
    std::vector<size_t> chain;
    for (size_t i = r + 1; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (!IsBroadcastElementwiseOp(n.op_type) || n.outputs.size() != 1) continue;
      bool reads_chain = false, operands_ok = true;
      for (const std::string& in : n.inputs) {
        if (lifted.count(in) > 0) {
          reads_chain = true;
        } else if (in.empty() || (!g.IsInitializer(in) && earlier_twin(in) == nullptr)) {
          operands_ok = false;
        }
      }
      absl::StatusOr<TensorType> t = g.TypeOf(n.outputs[0]);
      if (!reads_chain || !operands_ok || !t.ok() || t->shape != yt->shape) continue;
      chain.push_back(i);
      const std::string name = FreshName(g, absl::StrCat(n.outputs[0], "_4d"));
      g.value_types[name] = TensorType{t->dtype, xt->shape};
      lifted[n.outputs[0]] = name;
    }
    // A constant operand in the 4-D frame: its dims right-aligned to y's rank, then the unit dim
    // inserted (a copy with that shape where the dim falls within its rank).
    std::map<std::string, std::string> constants;
    auto lift_constant = [&](const std::string& c) {
      auto it = constants.find(c);
      if (it != constants.end()) return it->second;
      const Tensor t = *g.FindInitializer(c);
      const auto rank = static_cast<int64_t>(t.shape().size());
      std::string name = c;
      if (rank > 3 - dim) {
        Shape shape(static_cast<size_t>(3 - rank), 1);
        shape.insert(shape.end(), t.shape().begin(), t.shape().end());
        shape.insert(shape.begin() + dim, 1);
        name = FreshName(g, absl::StrCat(c, "_4d"));
        absl::StatusOr<Tensor> r4 = t.Reshaped(shape);  // the same elements
        LOOM_CHECK(r4.ok());
        g.initializers[name] = *r4;
        g.value_types[name] = r4->type();
      }
      constants[c] = name;
      return name;
    };
    for (size_t i : chain) {
      Node& n = g.nodes[i];
      for (std::string& in : n.inputs) {
        auto l = lifted.find(in);
        if (l != lifted.end()) {
          in = l->second;
        } else if (const std::string* t = earlier_twin(in)) {
          in = *t;
        } else {
          in = lift_constant(in);
        }
      }
      n.outputs[0] = lifted.at(n.outputs[0]);
    }
    // Readers outside the chain: the readers of a Reshape back to the 4-D shape read the twin
    // instead (that Reshape is left dead); the others read the value, reshaped back.
    bool changed = !chain.empty();
    for (const auto& [v, v4] : lifted) {
      for (const Node& n : g.nodes) {
        if (n.op_type != "Reshape" || n.inputs.empty() || n.inputs[0] != v ||
            n.outputs.size() != 1 || IsGraphOutput(g, n.outputs[0]) ||
            g.UseCount(n.outputs[0]) == 0) {
          continue;
        }
        absl::StatusOr<TensorType> t = g.TypeOf(n.outputs[0]);
        if (!t.ok() || t->shape != xt->shape) continue;
        ReplaceInputs(g, n.outputs[0], v4);
        changed = true;
      }
      if (v == y || (g.UseCount(v) == 0 && !IsGraphOutput(g, v))) continue;
      Node back;
      back.name = FreshName(g, absl::StrCat(v, "_reshape"));
      back.op_type = "Reshape";
      const std::string target = FreshName(g, absl::StrCat(v, "_shape"));
      g.initializers[target] =
          Tensor::FromInt64s({static_cast<int64_t>(yt->shape.size())}, yt->shape);
      g.value_types[target] = g.initializers[target].type();
      back.inputs = {v4, target};
      back.outputs = {v};
      added.push_back(std::move(back));
    }
    twins.insert(lifted.begin(), lifted.end());
    if (changed) ++count;
  }
  for (Node& n : added) g.nodes.push_back(std::move(n));
  LOOM_RETURN_IF_ERROR(g.TopologicalSort());
  if (moved != nullptr) *moved = count;
  return absl::OkStatus();
}

absl::Status MoveScalesPastMatMul(Graph& g, int64_t* moved) {
  int64_t count = 0;
  std::vector<Node> nodes;
  nodes.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node node = g.nodes[i];
    if (node.op_type != "MatMul" || node.inputs.size() != 2 || node.outputs.size() != 1) {
      nodes.push_back(std::move(node));
      continue;
    }
    double scale = 1.0;
    bool any = false;
    for (std::string& in : node.inputs) {
      std::string x;
      double f = 1.0;
      if (!ScaledOperand(g, in, &x, &f)) continue;
      in = x;
      scale *= f;
      any = true;
    }
    if (!any) {
      nodes.push_back(std::move(node));
      continue;
    }
    // MatMul -> fresh value; the original output is now the scaled product.
    const std::string out = node.outputs[0];
    const std::string unscaled = FreshName(g, absl::StrCat(out, "_unscaled"));
    const std::string factor = FreshName(g, absl::StrCat(out, "_scale"));
    g.initializers[factor] = Tensor::ScalarFloat(static_cast<float>(scale));
    if (auto t = g.TypeOf(out); t.ok()) g.value_types[unscaled] = *t;
    node.outputs[0] = unscaled;
    Node mul;
    mul.name = FreshName(g, absl::StrCat(node.name, "_scale"));
    mul.op_type = "Mul";
    mul.inputs = {unscaled, factor};
    mul.outputs = {out};
    nodes.push_back(std::move(node));
    nodes.push_back(std::move(mul));
    ++count;
  }
  // The scaled operands' nodes stay until RemoveDeadNodes: their outputs have no use now.
  g.nodes = std::move(nodes);
  if (moved != nullptr) *moved = count;
  return absl::OkStatus();
}

absl::StatusOr<PassStats> OptimizeForInference(Graph& g, const NodeEvaluator& eval,
                                               const FoldOptions& options) {
  PassStats stats;
  LOOM_RETURN_IF_ERROR(g.TopologicalSort());
  LOOM_RETURN_IF_ERROR(g.Validate());
  LOOM_RETURN_IF_ERROR(RemoveIdentityLike(g, &stats.removed_identity));
  LOOM_RETURN_IF_ERROR(ConstantFold(g, eval, options, &stats.folded_constants));
  LOOM_RETURN_IF_ERROR(FoldBatchNormIntoConv(g, &stats.folded_batchnorms));
  LOOM_RETURN_IF_ERROR(TrimConvPaddingTaps(g, &stats.trimmed_convs));
  LOOM_RETURN_IF_ERROR(Conv1dAsConv2d(g, &stats.conv1d_as_2d));
  LOOM_RETURN_IF_ERROR(SinkUnitDimReshapes(g, &stats.sunk_reshapes));
  LOOM_RETURN_IF_ERROR(MoveScalesPastMatMul(g, &stats.moved_scales));
  g.RemoveDeadNodes();
  LOOM_RETURN_IF_ERROR(InferShapes(g));
  return stats;
}

}  // namespace loom::graph
