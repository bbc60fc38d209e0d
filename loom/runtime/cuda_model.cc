#include "loom/runtime/cuda_model.h"

#include <algorithm>
#include <set>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "loom/kernels/reference.h"
#include "loom/ops/template.h"
#include "loom/runtime/activation.h"
#include "loom/runtime/cuda_aux_kernels.h"

namespace loom::runtime {
namespace {

using Buffer = CudaBackend::Buffer;
using graph::Shape;
using graph::Tensor;

int64_t Elements(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

int64_t Product(const Shape& s, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t i = from; i < to && i < s.size(); ++i) n *= s[i];
  return n;
}

// A value on the device: its buffer (shared by views) and its shape.
struct DeviceValue {
  Buffer buffer = 0;
  Shape shape;
};

struct LaunchStep {
  CudaBackend::KernelId kernel = 0;
  std::vector<Buffer> args;
};

// A node run by its reference kernel on the host: inputs downloaded (or, for constants, taken
// from the graph), outputs uploaded.
struct HostStep {
  graph::Node node;
  std::vector<std::variant<std::monostate, DeviceValue, Tensor>> inputs;  // monostate: omitted
  std::vector<DeviceValue> outputs;
};

using Step = std::variant<LaunchStep, HostStep>;

}  // namespace

struct CudaModel::Impl {
  CudaBackend* backend = nullptr;
  int64_t opset = 0;
  std::vector<Step> steps;
  std::vector<std::pair<std::string, DeviceValue>> inputs;  // graph inputs
  std::vector<DeviceValue> outputs;                         // graph outputs, in order
  CudaModelStats stats;
};

namespace {

class Compiler {
 public:
  Compiler(const graph::Graph& g, CudaBackend* backend, const CudaModelOptions& o,
           CudaModel::Impl* m)
      : g_(g), b_(backend), o_(o), m_(m), done_(g.nodes.size(), false) {}

  absl::Status Run() {
    const int64_t hits_before = b_->cache_hits();
    m_->backend = b_;
    m_->opset = g_.opset;
    for (const graph::ValueInfo& in : g_.inputs) {
      LOOM_ASSIGN_OR_RETURN(DeviceValue v, NewValue(in.name));
      m_->inputs.emplace_back(in.name, v);
    }
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (done_[i]) continue;
      done_[i] = true;
      LOOM_ASSIGN_OR_RETURN(bool on_device, PlaceOnDevice(static_cast<int64_t>(i)));
      if (!on_device) LOOM_RETURN_IF_ERROR(AddHostStep(g_.nodes[i]));
    }
    for (const graph::ValueInfo& out : g_.outputs) {
      auto it = values_.find(out.name);
      if (it == values_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph output '", out.name, "' is not computed on the device"));
      }
      m_->outputs.push_back(it->second);
    }
    LOOM_RETURN_IF_ERROR(PlanArena());
    m_->stats.kernels_built = static_cast<int64_t>(loaded_.size());
    m_->stats.cache_hits = b_->cache_hits() - hits_before;
    return absl::OkStatus();
  }

 private:
  // Values are compiled against placeholder addresses, kValueTag | value id; once every step is
  // known, PlanArena places them in one allocation where values whose lifetimes (first to last
  // step that touches them) do not overlap share memory, and patches the steps.
  static constexpr Buffer kValueTag = Buffer{1} << 63;
  static constexpr size_t kAlign = 256;  // what cudaMalloc guarantees, for every value

  absl::Status PlanArena() {
    const size_t n = value_bytes_.size();
    const int64_t end = static_cast<int64_t>(m_->steps.size());
    std::vector<int64_t> first(n, end), last(n, -1);
    auto touch = [&](Buffer b, int64_t step) {
      if ((b & kValueTag) == 0) return;  // a constant
      const size_t id = b & ~kValueTag;
      first[id] = std::min(first[id], step);
      last[id] = std::max(last[id], step);
    };
    for (const auto& [name, v] : m_->inputs) touch(v.buffer, -1);  // uploaded before step 0
    for (int64_t s = 0; s < end; ++s) {
      const Step& step = m_->steps[static_cast<size_t>(s)];
      if (const auto* l = std::get_if<LaunchStep>(&step)) {
        for (Buffer b : l->args) touch(b, s);
      } else {
        const HostStep& h = std::get<HostStep>(step);
        for (const auto& in : h.inputs) {
          if (const auto* v = std::get_if<DeviceValue>(&in)) touch(v->buffer, s);
        }
        for (const DeviceValue& v : h.outputs) touch(v.buffer, s);
      }
    }
    for (const DeviceValue& v : m_->outputs) touch(v.buffer, end);  // downloaded after the last

    // Largest first, each at the lowest aligned offset clear of every placed value alive at the
    // same time (the greedy-by-size plan of TFLite's and ONNX Runtime's memory planners).
    auto rounded = [](size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; };
    std::vector<size_t> order(n), offset(n, 0);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return value_bytes_[a] > value_bytes_[b]; });
    std::vector<size_t> placed;
    size_t arena = 0, total = 0;
    for (size_t id : order) {
      total += value_bytes_[id];
      if (last[id] < 0) continue;  // touched by no step: nothing reads or writes it
      std::vector<std::pair<size_t, size_t>> busy;  // [begin, end) of overlapping lifetimes
      for (size_t p : placed) {
        if (first[p] <= last[id] && first[id] <= last[p]) {
          busy.emplace_back(offset[p], offset[p] + rounded(value_bytes_[p]));
        }
      }
      std::sort(busy.begin(), busy.end());
      size_t at = 0;
      for (const auto& [begin, finish] : busy) {
        if (at + rounded(value_bytes_[id]) <= begin) break;
        at = std::max(at, finish);
      }
      offset[id] = at;
      arena = std::max(arena, at + rounded(value_bytes_[id]));
      placed.push_back(id);
    }
    Buffer base = 0;
    if (arena > 0) {
      LOOM_ASSIGN_OR_RETURN(base, b_->Alloc(arena));
    }
    auto patch = [&](Buffer& b) {
      if ((b & kValueTag) != 0) b = base + offset[b & ~kValueTag];
    };
    for (auto& [name, v] : m_->inputs) patch(v.buffer);
    for (DeviceValue& v : m_->outputs) patch(v.buffer);
    for (Step& step : m_->steps) {
      if (auto* l = std::get_if<LaunchStep>(&step)) {
        for (Buffer& b : l->args) patch(b);
      } else {
        HostStep& h = std::get<HostStep>(step);
        for (auto& in : h.inputs) {
          if (auto* v = std::get_if<DeviceValue>(&in)) patch(v->buffer);
        }
        for (DeviceValue& v : h.outputs) patch(v.buffer);
      }
    }
    m_->stats.value_bytes = static_cast<int64_t>(total);
    m_->stats.arena_bytes = static_cast<int64_t>(arena);
    m_->stats.device_bytes += static_cast<int64_t>(arena);
    return absl::OkStatus();
  }

  // The node as device kernels (or a view), when one of the device paths takes it.
  absl::StatusOr<bool> PlaceOnDevice(int64_t i) {
    const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
    LOOM_ASSIGN_OR_RETURN(bool placed, TryTemplate(i));
    if (placed) return true;
    LOOM_ASSIGN_OR_RETURN(placed, TryView(node));
    if (placed) return true;
    LOOM_ASSIGN_OR_RETURN(placed, TryPool(node));
    if (placed) return true;
    LOOM_ASSIGN_OR_RETURN(placed, TryEltwise(i));
    if (placed) return true;
    return TryConcat(node);
  }

  // A fresh device buffer for value `name`, from its inferred type (float32, static shape).
  absl::StatusOr<DeviceValue> NewValue(const std::string& name) {
    LOOM_ASSIGN_OR_RETURN(graph::TensorType t, g_.TypeOf(name));
    if (t.dtype != graph::DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat("value '", name,
                       "' is not float32; the CUDA model keeps only float32 "
                       "values on the device"));
    }
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "value '", name, "' has a dynamic shape; pin it (--input-shape) to compile for cuda"));
      }
    }
    DeviceValue v;
    v.shape = t.shape;
    v.buffer = kValueTag | value_bytes_.size();  // PlanArena gives it its address
    value_bytes_.push_back(static_cast<size_t>(Elements(t.shape)) * sizeof(float));
    values_[name] = v;
    return v;
  }

  // A float32 constant uploaded once.
  absl::StatusOr<Buffer> Constant(const Tensor& t) {
    if (t.dtype() != graph::DType::kFloat32) {
      return absl::InvalidArgumentError("only float32 constants go to the device");
    }
    const size_t bytes = static_cast<size_t>(t.num_elements()) * sizeof(float);
    LOOM_ASSIGN_OR_RETURN(Buffer b, b_->Alloc(bytes));
    LOOM_CHECK((b & kValueTag) == 0);  // real addresses never carry the placeholder tag
    LOOM_RETURN_IF_ERROR(b_->Upload(b, t.raw_data(), bytes));
    m_->stats.device_bytes += static_cast<int64_t>(bytes);
    return b;
  }

  // The device value `name`, when it is one (a graph input or a value computed so far).
  const DeviceValue* Device(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : &it->second;
  }

  // The node that alone reads `v`, when `v` is not also a graph output; -1 otherwise.
  int64_t SoleConsumer(const std::string& v) const {
    if (g_.UseCount(v) != 1) return -1;
    for (const graph::ValueInfo& out : g_.outputs) {
      if (out.name == v) return -1;
    }
    for (size_t j = 0; j < g_.nodes.size(); ++j) {
      if (done_[j]) continue;
      for (const std::string& in : g_.nodes[j].inputs) {
        if (in == v) return static_cast<int64_t>(j);
      }
    }
    return -1;
  }

  // A launch of `source`'s kernel, loaded once however many steps run it (ResNet-18 repeats
  // whole layers).
  absl::Status Launch(const ops::KernelSource& source, std::vector<Buffer> args) {
    auto it = loaded_.find(source.code);
    if (it == loaded_.end()) {
      LOOM_ASSIGN_OR_RETURN(CudaBackend::KernelId id, b_->Load(source));
      it = loaded_.emplace(source.code, id).first;
    }
    m_->steps.push_back(LaunchStep{it->second, std::move(args)});
    return absl::OkStatus();
  }

  // Follows `out` through a sole-consumer residual Add and then an activation, as the CPU
  // compiler does, marking the nodes it takes; returns the value the epilogue finally writes.
  std::string FuseTail(std::string out, ops::Epilogue* ep, Buffer* residual, bool allow_residual) {
    int64_t j = SoleConsumer(out);
    if (allow_residual && j >= 0 && g_.nodes[j].op_type == "Add" &&
        g_.nodes[j].inputs.size() == 2) {
      const graph::Node& add = g_.nodes[j];
      const std::string& other = add.inputs[0] == out ? add.inputs[1] : add.inputs[0];
      const DeviceValue* ov = Device(other);
      auto mt = g_.value_types.find(out);
      if (other != out && ov != nullptr && mt != g_.value_types.end() &&
          ov->shape == mt->second.shape) {
        ep->residual = true;
        *residual = ov->buffer;
        done_[j] = true;
        ++m_->stats.fused_ops;
        out = add.outputs[0];
        j = SoleConsumer(out);
      }
    }
    if (j >= 0 && g_.nodes[j].inputs[0] == out && ParseActivation(g_, g_.nodes[j], ep)) {
      done_[j] = true;
      ++m_->stats.fused_ops;
      out = g_.nodes[j].outputs[0];
    }
    return out;
  }

  // Conv / depthwise conv / dense through the CUDA templates, with the epilogue fused.
  absl::StatusOr<bool> TryTemplate(int64_t i) {
    const graph::Node& node = g_.nodes[i];
    if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") return false;
    absl::StatusOr<graph::Workload> w = graph::WorkloadFromNode(g_, node);
    if (!w.ok()) return false;
    const bool conv = node.op_type == "Conv";
    if (!conv && node.op_type == "Gemm" &&
        (node.GetFloat("alpha", 1.0f) != 1.0f || node.GetFloat("beta", 1.0f) != 1.0f)) {
      return false;
    }
    const DeviceValue* data = Device(node.inputs[0]);
    const Tensor* weight = g_.FindInitializer(node.inputs[1]);
    if (data == nullptr || weight == nullptr) return false;
    const int64_t channels = conv ? w->k : w->n;
    const Tensor* bias = nullptr;
    if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
      bias = g_.FindInitializer(node.inputs[2]);
      if (bias == nullptr || bias->num_elements() != channels ||
          bias->dtype() != graph::DType::kFloat32) {
        return false;
      }
    }
    ops::TemplateOptions topt;
    topt.cuda_host_emulation = b_->host_emulation();
    absl::StatusOr<std::unique_ptr<ops::Template>> made = ops::MakeTemplate(*w, b_->target(), topt);
    if (!made.ok()) return false;
    const ops::Template& tmpl = **made;
    const std::vector<Shape> natural = tmpl.NaturalInputShapes();
    if (natural.size() != 2 || natural[0] != data->shape) return false;

    ops::Config config = tmpl.DefaultConfig();
    bool tuned = false;
    if (o_.records != nullptr) {
      absl::StatusOr<std::vector<tune::Record>> best =
          o_.records->BestK(graph::WorkloadKey(*w), b_->target().Key(), 1);
      if (best.ok() && !best->empty() && (*best)[0].template_name == tmpl.name() &&
          tmpl.space().IsValid(ops::Config{(*best)[0].config_index})) {
        config = ops::Config{(*best)[0].config_index};
        tuned = true;
      }
    }
    const std::vector<ops::BufferSpec> specs = tmpl.Buffers(config);
    absl::StatusOr<Tensor> natural_weight = weight->Reshaped(natural[1]);
    if (!natural_weight.ok()) return false;
    std::vector<Tensor> packed =
        tmpl.PackInputs(config, {Tensor(graph::DType::kFloat32, natural[0]), *natural_weight});
    LOOM_ASSIGN_OR_RETURN(Buffer wbuf, Constant(packed[1]));

    ops::Epilogue ep;
    ep.bias = bias != nullptr;
    Buffer residual = 0;
    const std::string out = FuseTail(node.outputs[0], &ep, &residual, /*allow_residual=*/conv);
    LOOM_ASSIGN_OR_RETURN(graph::TensorType out_type, g_.TypeOf(out));
    if (Elements(out_type.shape) != Elements(specs.back().shape)) {
      return absl::InternalError(absl::StrCat(node.Describe(), ": the ", tmpl.name(),
                                              " kernel's output does not match the node's"));
    }
    // One kernel: the epilogue is part of its output store.
    LOOM_ASSIGN_OR_RETURN(ops::KernelSource source, tmpl.EmitFused(config, ep));
    std::vector<Buffer> args = {data->buffer, wbuf};
    if (ep.bias) {
      LOOM_ASSIGN_OR_RETURN(Buffer bias_buffer, Constant(*bias));
      args.push_back(bias_buffer);
    }
    if (ep.residual) args.push_back(residual);
    LOOM_ASSIGN_OR_RETURN(DeviceValue y, NewValue(out));
    args.push_back(y.buffer);
    LOOM_RETURN_IF_ERROR(Launch(source, std::move(args)));
    ++m_->stats.kernel_steps;
    if (tuned) ++m_->stats.tuned_kernels;
    return true;
  }

  // Reshapes: the output shares the input's buffer.
  absl::StatusOr<bool> TryView(const graph::Node& node) {
    static const std::set<std::string> kViews = {"Flatten",   "Reshape",  "Squeeze",
                                                 "Unsqueeze", "Identity", "Dropout"};
    if (kViews.count(node.op_type) == 0 || node.outputs.empty() || node.outputs[0].empty()) {
      return false;
    }
    if (node.op_type == "Dropout" && node.outputs.size() > 1 && !node.outputs[1].empty()) {
      return false;  // the mask output is not a view
    }
    const DeviceValue* in = Device(node.inputs[0]);
    auto out = g_.value_types.find(node.outputs[0]);
    if (in == nullptr || out == g_.value_types.end() ||
        out->second.dtype != graph::DType::kFloat32 ||
        Elements(out->second.shape) != Elements(in->shape)) {
      return false;
    }
    values_[node.outputs[0]] = DeviceValue{in->buffer, out->second.shape};
    ++m_->stats.views;
    return true;
  }

  absl::StatusOr<bool> TryPool(const graph::Node& node) {
    const std::string& op = node.op_type;
    const bool global = op == "GlobalAveragePool" || op == "GlobalMaxPool";
    if (!global && op != "MaxPool" && op != "AveragePool") return false;
    if (node.outputs.size() != 1) return false;  // MaxPool's Indices output
    const DeviceValue* in = Device(node.inputs[0]);
    auto out = g_.value_types.find(node.outputs[0]);
    if (in == nullptr || in->shape.size() != 4 || out == g_.value_types.end() ||
        out->second.shape.size() != 4) {
      return false;
    }
    CudaPool p;
    p.max = op == "MaxPool" || op == "GlobalMaxPool";
    p.planes = in->shape[0] * in->shape[1];
    p.h = in->shape[2];
    p.w = in->shape[3];
    p.oh = out->second.shape[2];
    p.ow = out->second.shape[3];
    if (global) {
      p.kh = p.h;
      p.kw = p.w;
    } else {
      const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
      const std::vector<int64_t> k = node.GetInts("kernel_shape");
      const std::vector<int64_t> s = node.GetInts("strides", {1, 1});
      const std::vector<int64_t> pads = node.GetInts("pads", {0, 0, 0, 0});
      const std::vector<int64_t> d = node.GetInts("dilations", {1, 1});
      if (auto_pad != "NOTSET" || k.size() != 2 || s.size() != 2 || pads.size() != 4 ||
          d != std::vector<int64_t>{1, 1} || node.GetInt("storage_order", 0) != 0) {
        return false;
      }
      // Average pooling here divides by the window size: exact without padding and ceil mode.
      if (!p.max &&
          (node.GetInt("ceil_mode", 0) != 0 || (pads != std::vector<int64_t>{0, 0, 0, 0} &&
                                                node.GetInt("count_include_pad", 0) == 0))) {
        return false;
      }
      p.kh = k[0];
      p.kw = k[1];
      p.stride_h = s[0];
      p.stride_w = s[1];
      p.pad_top = pads[0];
      p.pad_left = pads[1];
    }
    LOOM_ASSIGN_OR_RETURN(ops::KernelSource src, EmitCudaPool(p, b_->host_emulation()));
    LOOM_ASSIGN_OR_RETURN(DeviceValue y, NewValue(node.outputs[0]));
    LOOM_RETURN_IF_ERROR(Launch(src, {in->buffer, y.buffer}));
    ++m_->stats.aux_steps;
    return true;
  }

  // Activations, and Add of two same-shape values or of a per-channel constant (a bias).
  absl::StatusOr<bool> TryEltwise(int64_t i) {
    const graph::Node& node = g_.nodes[i];
    if (node.outputs.size() != 1 || node.inputs.empty()) return false;
    // Elementwise in the first operand's shape only (an op that broadcasts it stays on the host).
    auto out_type = g_.value_types.find(node.outputs[0]);
    if (out_type == g_.value_types.end()) return false;
    auto keeps_shape = [&](const DeviceValue* v) {
      return v != nullptr && v->shape == out_type->second.shape;
    };
    ops::Epilogue ep;
    std::vector<Buffer> args;
    const DeviceValue* x = nullptr;
    int64_t channels = 1, inner = 1;
    if (node.op_type == "Add" && node.inputs.size() == 2) {
      const DeviceValue* a = Device(node.inputs[0]);
      const DeviceValue* b = Device(node.inputs[1]);
      if (keeps_shape(a) && b != nullptr && a->shape == b->shape) {
        ep.residual = true;
        args = {a->buffer, b->buffer};
      } else {
        // value + constant of shape [C,1,1] or [1,C,1,1] (or a vector on the last axis).
        x = a != nullptr ? a : b;
        const Tensor* c = g_.FindInitializer(a != nullptr ? node.inputs[1] : node.inputs[0]);
        if (!keeps_shape(x) || c == nullptr || c->dtype() != graph::DType::kFloat32) return false;
        const Shape& xs = x->shape;
        const Shape cs = c->shape();
        if (xs.empty() || cs.size() > xs.size()) return false;
        // The constant's one non-1 axis, aligned to the right of x's shape.
        int64_t axis = -1;
        for (size_t k = 0; k < cs.size(); ++k) {
          if (cs[k] == 1) continue;
          if (axis >= 0) return false;
          axis = static_cast<int64_t>(xs.size() - cs.size() + k);
        }
        if (axis < 0) return false;
        if (xs[static_cast<size_t>(axis)] != c->num_elements()) return false;
        channels = c->num_elements();
        inner = Product(xs, static_cast<size_t>(axis) + 1, xs.size());
        LOOM_ASSIGN_OR_RETURN(Buffer cb, Constant(*c));
        ep.bias = true;
        args = {x->buffer, cb};
      }
    } else if (ParseActivation(g_, node, &ep)) {
      x = Device(node.inputs[0]);
      if (!keeps_shape(x)) return false;
      args = {x->buffer};
    } else {
      return false;
    }
    std::string out = node.outputs[0];
    if (ep.activation == ops::Epilogue::Activation::kNone) {
      Buffer unused = 0;
      out = FuseTail(out, &ep, &unused, /*allow_residual=*/false);
    }
    LOOM_ASSIGN_OR_RETURN(DeviceValue y, NewValue(out));
    args.push_back(y.buffer);
    CudaEltwise e{.total = Elements(y.shape), .channels = channels, .inner = inner, .epilogue = ep};
    LOOM_ASSIGN_OR_RETURN(ops::KernelSource src, EmitCudaEltwise(e, b_->host_emulation()));
    LOOM_RETURN_IF_ERROR(Launch(src, std::move(args)));
    ++m_->stats.aux_steps;
    return true;
  }

  absl::StatusOr<bool> TryConcat(const graph::Node& node) {
    if (node.op_type != "Concat" || node.outputs.size() != 1) return false;
    auto out = g_.value_types.find(node.outputs[0]);
    if (out == g_.value_types.end()) return false;
    const Shape& os = out->second.shape;
    int64_t axis = node.GetInt("axis", 1);
    if (axis < 0) axis += static_cast<int64_t>(os.size());
    if (axis < 0 || axis >= static_cast<int64_t>(os.size())) return false;
    std::vector<const DeviceValue*> ins;
    for (const std::string& name : node.inputs) {
      const DeviceValue* v = Device(name);
      if (v == nullptr || v->shape.size() != os.size()) return false;
      ins.push_back(v);
    }
    LOOM_ASSIGN_OR_RETURN(DeviceValue y, NewValue(node.outputs[0]));
    const auto ax = static_cast<size_t>(axis);
    const int64_t outer = Product(os, 0, ax), out_len = Product(os, ax, os.size());
    int64_t offset = 0;
    for (const DeviceValue* v : ins) {
      const int64_t in_len = Product(v->shape, ax, v->shape.size());
      if (Elements(v->shape) == 0) continue;
      CudaSlice s{.outer = outer, .in_len = in_len, .out_len = out_len, .offset = offset};
      LOOM_ASSIGN_OR_RETURN(ops::KernelSource src, EmitCudaSlice(s, b_->host_emulation()));
      LOOM_RETURN_IF_ERROR(Launch(src, {v->buffer, y.buffer}));
      ++m_->stats.aux_steps;
      offset += in_len;
    }
    if (offset != out_len) {
      return absl::InternalError(absl::StrCat(node.Describe(), ": concat sizes do not add up"));
    }
    return true;
  }

  absl::Status AddHostStep(const graph::Node& node) {
    if (!kernels::HasReferenceKernel(node.op_type)) {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), ": no CUDA kernel and no reference kernel"));
    }
    HostStep step;
    step.node = node;
    for (const std::string& name : node.inputs) {
      if (name.empty()) {
        step.inputs.emplace_back(std::monostate{});
      } else if (const Tensor* c = g_.FindInitializer(name)) {
        step.inputs.emplace_back(*c);
      } else if (const DeviceValue* v = Device(name)) {
        step.inputs.emplace_back(*v);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), ": input '", name, "' is not a float32 device value"));
      }
    }
    for (const std::string& name : node.outputs) {
      if (name.empty()) {
        step.outputs.push_back(DeviceValue{});
        continue;
      }
      LOOM_ASSIGN_OR_RETURN(DeviceValue v, NewValue(name));
      step.outputs.push_back(v);
    }
    m_->steps.push_back(std::move(step));
    ++m_->stats.host_steps;
    return absl::OkStatus();
  }

  const graph::Graph& g_;
  CudaBackend* b_;
  const CudaModelOptions& o_;
  CudaModel::Impl* m_;
  std::vector<bool> done_;
  std::map<std::string, DeviceValue> values_;
  std::map<std::string, CudaBackend::KernelId> loaded_;  // by source
  std::vector<size_t> value_bytes_;                      // by value id (see kValueTag)
};

absl::Status RunHostStep(const HostStep& step, int64_t opset, CudaBackend& b) {
  LOOM_RETURN_IF_ERROR(b.Synchronize());
  std::vector<Tensor> ins;
  ins.reserve(step.inputs.size());
  for (const auto& in : step.inputs) {
    if (const auto* v = std::get_if<DeviceValue>(&in)) {
      Tensor t(graph::DType::kFloat32, v->shape);
      LOOM_RETURN_IF_ERROR(b.Download(t.raw_data(), v->buffer,
                                      static_cast<size_t>(t.num_elements()) * sizeof(float)));
      ins.push_back(std::move(t));
    } else if (const auto* c = std::get_if<Tensor>(&in)) {
      ins.push_back(*c);
    } else {
      ins.emplace_back();
    }
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> outs, kernels::EvaluateNode(step.node, opset, ins));
  for (size_t k = 0; k < step.outputs.size() && k < outs.size(); ++k) {
    const DeviceValue& v = step.outputs[k];
    if (v.buffer == 0) continue;
    if (outs[k].dtype() != graph::DType::kFloat32 || outs[k].shape() != v.shape) {
      return absl::InternalError(
          absl::StrCat(step.node.Describe(), ": output ", k, " has another type than inferred"));
    }
    LOOM_RETURN_IF_ERROR(b.Upload(v.buffer, outs[k].raw_data(),
                                  static_cast<size_t>(outs[k].num_elements()) * sizeof(float)));
  }
  return absl::OkStatus();
}

}  // namespace

CudaModel::CudaModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaModel::~CudaModel() = default;

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::Compile(const graph::Graph& graph,
                                                              CudaBackend* backend,
                                                              const CudaModelOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("CudaModel::Compile: no backend");
  const absl::Time start = absl::Now();
  auto impl = std::make_unique<Impl>();
  Compiler c(graph, backend, options, impl.get());
  LOOM_RETURN_IF_ERROR(c.Run());
  impl->stats.compile_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

absl::StatusOr<std::vector<Tensor>> CudaModel::Run(const std::map<std::string, Tensor>& inputs) {
  Impl& m = *impl_;
  CudaBackend& b = *m.backend;
  if (inputs.size() != m.inputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", m.inputs.size(), " inputs, got ", inputs.size()));
  }
  for (const auto& [name, v] : m.inputs) {
    auto it = inputs.find(name);
    if (it == inputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", name, "'"));
    }
    const Tensor& t = it->second;
    if (t.dtype() != graph::DType::kFloat32 || t.shape() != v.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", name, "': expected float32 [", absl::StrJoin(v.shape, ","), "], got ",
          graph::DTypeName(t.dtype()), " [", absl::StrJoin(t.shape(), ","), "]"));
    }
    LOOM_RETURN_IF_ERROR(
        b.Upload(v.buffer, t.raw_data(), static_cast<size_t>(t.num_elements()) * sizeof(float)));
  }
  for (const Step& step : m.steps) {
    if (const auto* l = std::get_if<LaunchStep>(&step)) {
      LOOM_RETURN_IF_ERROR(b.Launch(l->kernel, l->args));
    } else {
      LOOM_RETURN_IF_ERROR(RunHostStep(std::get<HostStep>(step), m.opset, b));
    }
  }
  LOOM_RETURN_IF_ERROR(b.Synchronize());
  std::vector<Tensor> outs;
  outs.reserve(m.outputs.size());
  for (const DeviceValue& v : m.outputs) {
    Tensor t(graph::DType::kFloat32, v.shape);
    LOOM_RETURN_IF_ERROR(
        b.Download(t.raw_data(), v.buffer, static_cast<size_t>(t.num_elements()) * sizeof(float)));
    outs.push_back(std::move(t));
  }
  return outs;
}

const CudaModelStats& CudaModel::stats() const { return impl_->stats; }

}  // namespace loom::runtime
