#include "loom/runtime/cuda_model.h"

#include <algorithm>
#include <optional>
#include <set>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/kernels/reference.h"
#include "loom/ops/cuda_lowering.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/template.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/cuda_aux_kernels.h"

namespace loom::runtime {
namespace {

using Buffer = CudaBackend::Buffer;
using graph::DType;
using graph::Shape;
using graph::Tensor;
using graph::TensorType;

constexpr int64_t kAlign = 256;  // what cudaMalloc guarantees, for every value

int64_t Bytes(const TensorType& t) {
  return graph::NumElements(t.shape) * static_cast<int64_t>(graph::DTypeSize(t.dtype));
}

}  // namespace

int64_t CudaValueRef::bytes() const { return Bytes(type); }

bool CudaPlan::has_host_steps() const {
  for (const CudaStep& s : steps) {
    if (std::holds_alternative<CudaHostStep>(s)) return true;
  }
  return false;
}

absl::Status ValidateCudaPlan(const CudaPlan& plan) {
  auto bad = [](auto... parts) { return absl::DataLossError(absl::StrCat(parts...)); };
  if (plan.arena_bytes < 0) return bad("negative arena size");
  // An operand spans [start, start + bytes) of its buffer, checked without overflow.
  auto check = [&](const CudaOperand& op, int64_t bytes, const std::string& what) -> absl::Status {
    if (bytes < 0) return bad(what, ": negative size");
    if (op.kind == CudaOperand::Kind::kConstant) {
      if (op.index < 0 || op.index >= static_cast<int64_t>(plan.constants.size())) {
        return bad(what, ": constant ", op.index, " does not exist");
      }
      if (bytes > static_cast<int64_t>(plan.constants[static_cast<size_t>(op.index)].num_bytes())) {
        return bad(what, ": reads ", bytes, " bytes of a ",
                   plan.constants[static_cast<size_t>(op.index)].num_bytes(), "-byte constant");
      }
      return absl::OkStatus();
    }
    if (op.offset < 0 || op.offset % kAlign != 0 || op.offset > plan.arena_bytes ||
        bytes > plan.arena_bytes - op.offset) {
      return bad(what, ": arena range [", op.offset, ", +", bytes, ") is outside the ",
                 plan.arena_bytes, "-byte arena or unaligned");
    }
    return absl::OkStatus();
  };
  auto check_ref = [&](const CudaValueRef& r, const std::string& what) -> absl::Status {
    for (int64_t d : r.type.shape) {
      if (d < 0 || d > (int64_t{1} << 40)) return bad(what, ": bad dimension ", d);
    }
    int64_t elems = 1;
    for (int64_t d : r.type.shape) {
      if (d != 0 && elems > (int64_t{1} << 40) / d) return bad(what, ": too many elements");
      elems *= d;
    }
    if (r.type.dtype == DType::kUndefined) return bad(what, ": no dtype");
    return check(r.at, elems * static_cast<int64_t>(graph::DTypeSize(r.type.dtype)), what);
  };
  for (size_t k = 0; k < plan.kernels.size(); ++k) {
    for (int64_t b : plan.kernels[k].arg_bytes) {
      if (b < 0) return bad("kernel ", k, ": negative argument size");
    }
    for (uint32_t d : plan.kernels[k].launch.grid) {
      if (d == 0) return bad("kernel ", k, ": empty grid");
    }
    for (uint32_t d : plan.kernels[k].launch.block) {
      if (d == 0 || d > 1024) return bad("kernel ", k, ": bad block dimension ", d);
    }
  }
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    const std::string what = absl::StrCat("step ", s);
    if (const auto* l = std::get_if<CudaLaunchStep>(&plan.steps[s])) {
      if (l->kernel < 0 || l->kernel >= static_cast<int32_t>(plan.kernels.size())) {
        return bad(what, ": kernel ", l->kernel, " does not exist");
      }
      const CudaKernelInfo& k = plan.kernels[static_cast<size_t>(l->kernel)];
      if (l->args.size() != k.arg_bytes.size()) {
        return bad(what, ": ", l->args.size(), " arguments for a kernel of ", k.arg_bytes.size());
      }
      for (size_t a = 0; a < l->args.size(); ++a) {
        LOOM_RETURN_IF_ERROR(
            check(l->args[a], k.arg_bytes[a], absl::StrCat(what, " argument ", a)));
      }
    } else {
      const CudaHostStep& h = std::get<CudaHostStep>(plan.steps[s]);
      for (const auto& in : h.inputs) {
        if (in.has_value()) LOOM_RETURN_IF_ERROR(check_ref(*in, what));
      }
      for (const auto& out : h.outputs) {
        if (!out.has_value()) continue;
        if (out->at.kind != CudaOperand::Kind::kArena) return bad(what, ": writes a constant");
        LOOM_RETURN_IF_ERROR(check_ref(*out, what));
      }
    }
  }
  for (const auto* list : {&plan.inputs, &plan.outputs}) {
    for (const auto& [name, ref] : *list) {
      LOOM_RETURN_IF_ERROR(check_ref(ref, absl::StrCat("value '", name, "'")));
      if (list == &plan.inputs && ref.at.kind != CudaOperand::Kind::kArena) {
        return bad("input '", name, "' is not in the arena");
      }
    }
  }
  return absl::OkStatus();
}

struct CudaModel::Impl {
  CudaBackend* backend = nullptr;
  CudaPlan plan;
  std::vector<CudaBackend::KernelId> kernel_ids;  // per plan kernel
  std::vector<Buffer> constant_buffers;           // per plan constant
  Buffer arena = 0;
  CudaModelStats stats;
  CudaRunStats run_stats;
  bool graph_replay = true;
  std::optional<CudaBackend::GraphId> graph;

  Buffer Address(const CudaOperand& op) const {
    return op.kind == CudaOperand::Kind::kArena ? arena + static_cast<Buffer>(op.offset)
                                                : constant_buffers[static_cast<size_t>(op.index)];
  }

  // Allocates the arena and uploads the constants.
  absl::Status Prepare() {
    if (plan.arena_bytes > 0) {
      LOOM_ASSIGN_OR_RETURN(arena, backend->Alloc(static_cast<size_t>(plan.arena_bytes)));
    }
    stats.device_bytes = plan.arena_bytes;
    for (const Tensor& c : plan.constants) {
      LOOM_ASSIGN_OR_RETURN(Buffer b, backend->Alloc(c.num_bytes()));
      LOOM_RETURN_IF_ERROR(backend->Upload(b, c.raw_data(), c.num_bytes()));
      constant_buffers.push_back(b);
      stats.device_bytes += static_cast<int64_t>(c.num_bytes());
    }
    return absl::OkStatus();
  }

  absl::Status Launch(const CudaLaunchStep& l) {
    std::vector<Buffer> args;
    args.reserve(l.args.size());
    for (const CudaOperand& op : l.args) args.push_back(Address(op));
    return backend->Launch(kernel_ids[static_cast<size_t>(l.kernel)], args);
  }

  absl::Status RunHostStep(const CudaHostStep& step) {
    LOOM_RETURN_IF_ERROR(backend->Synchronize());
    std::vector<Tensor> ins;
    ins.reserve(step.inputs.size());
    for (const auto& in : step.inputs) {
      if (!in.has_value()) {
        ins.emplace_back();
      } else if (in->at.kind == CudaOperand::Kind::kConstant) {
        ins.push_back(plan.constants[static_cast<size_t>(in->at.index)]);
      } else {
        Tensor t(in->type.dtype, in->type.shape);
        LOOM_RETURN_IF_ERROR(backend->Download(t.raw_data(), Address(in->at), t.num_bytes()));
        ins.push_back(std::move(t));
      }
    }
    LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> outs,
                          kernels::EvaluateNode(step.node, plan.opset, ins));
    for (size_t k = 0; k < step.outputs.size() && k < outs.size(); ++k) {
      if (!step.outputs[k].has_value()) continue;
      const CudaValueRef& v = *step.outputs[k];
      if (outs[k].type() != v.type) {
        return absl::InternalError(absl::StrCat(step.node.Describe(), ": output ", k, " is ",
                                                outs[k].type().ToString(), ", inferred ",
                                                v.type.ToString()));
      }
      LOOM_RETURN_IF_ERROR(backend->Upload(Address(v.at), outs[k].raw_data(), outs[k].num_bytes()));
    }
    return absl::OkStatus();
  }

  // Every step in order, host steps included.
  absl::Status RunSteps() {
    for (const CudaStep& step : plan.steps) {
      if (const auto* l = std::get_if<CudaLaunchStep>(&step)) {
        LOOM_RETURN_IF_ERROR(Launch(*l));
      } else {
        LOOM_RETURN_IF_ERROR(RunHostStep(std::get<CudaHostStep>(step)));
      }
    }
    return absl::OkStatus();
  }

  // Captures every launch into a graph, once; graph_status says why when it cannot.
  void Capture() {
    if (plan.has_host_steps()) {
      run_stats.graph_status = "host steps need the host between kernels";
      return;
    }
    absl::Status st = backend->BeginCapture();
    if (!st.ok()) {
      run_stats.graph_status = std::string(st.message());
      return;
    }
    absl::Status launched = RunSteps();
    absl::StatusOr<CudaBackend::GraphId> g = backend->EndCapture();
    if (!launched.ok() || !g.ok()) {
      run_stats.graph_status = std::string((launched.ok() ? g.status() : launched).message());
      return;
    }
    graph = *g;
    run_stats.graph_captured = true;
    run_stats.graph_status.clear();
  }
};

namespace {

// A compile-time operand: a value (placed in the arena once every step is known) or a constant.
struct Arg {
  bool is_value = true;
  int64_t id = 0;  // value id, or constant index
};

struct PendingLaunch {
  int32_t kernel = 0;
  std::vector<Arg> args;
  std::string name;
  int64_t CudaModelStats::*counter = nullptr;  // the stat that counts it (undone if dropped)
};
struct PendingHost {
  graph::Node node;
  std::vector<std::optional<std::pair<Arg, TensorType>>> inputs, outputs;
};
using PendingStep = std::variant<PendingLaunch, PendingHost>;

// A device value: its id (the arena slot, shared by views) and its type.
struct Value {
  int64_t id = 0;
  TensorType type;
};

// An elementwise chain being grown: nodes, the program computing them, its external operands
// (one per program input after the accumulator, for epilogues; one per input otherwise) and the
// program value of every graph value it computes.
struct Chain {
  std::vector<int64_t> nodes;
  ops::ElementwiseProgram program;
  std::vector<std::string> operands;
  std::vector<ops::EpilogueOperand> kinds;  // epilogues: how each operand is laid out
  std::map<std::string, int32_t> computed;
  std::string output;
  Shape shape;
};

// Adds a program input to `c` once instructions exist: a program numbers its inputs first, so
// every instruction value (in the program, the chain's computed values and `args`) moves up by
// one. Returns the new input's value.
int32_t AppendInput(Chain& c, DType dtype, std::vector<int32_t>* args) {
  const int32_t n = static_cast<int32_t>(c.program.inputs.size());
  auto shift = [n](int32_t& v) {
    if (v >= n) ++v;
  };
  for (ops::EwInstr& i : c.program.instrs) {
    shift(i.a);
    shift(i.b);
    shift(i.c);
  }
  for (int32_t& o : c.program.outputs) shift(o);
  for (auto& [name, v] : c.computed) shift(v);
  for (int32_t& v : *args) shift(v);
  return c.program.AddInput(dtype);
}

// The template output a fused epilogue runs on: its shape, the axis of its channels (a conv's
// output channels, a product's columns) and the axes of its batch (a conv's images, a batched
// product's batch dims; empty for dense).
struct EpilogueSiteShape {
  Shape shape;
  int64_t channel_axis = 0;
  std::vector<int64_t> batch_axes;
};

class Compiler {
 public:
  Compiler(const graph::Graph& g, CudaBackend* backend, const CudaModelOptions& o,
           CudaModel::Impl* m)
      : g_(g), b_(backend), o_(o), m_(m), done_(g.nodes.size(), false) {
    for (size_t j = 0; j < g.nodes.size(); ++j) {
      for (const std::string& in : g.nodes[j].inputs) {
        if (!in.empty()) consumers_[in].push_back(static_cast<int64_t>(j));
      }
    }
    for (const graph::ValueInfo& out : g.outputs) graph_outputs_.insert(out.name);
  }

  absl::Status Run() {
    const int64_t hits_before = b_->cache_hits();
    m_->backend = b_;
    m_->plan.opset = g_.opset;
    m_->plan.arch = b_->target().cuda_arch;
    for (const graph::ValueInfo& in : g_.inputs) {
      if (g_.FindInitializer(in.name) != nullptr) continue;  // an input with a default value
      LOOM_ASSIGN_OR_RETURN(Value v, NewValue(in.name));
      inputs_.emplace_back(in.name, v);
    }
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (done_[i]) continue;
      done_[i] = true;
      LOOM_RETURN_IF_ERROR(Place(static_cast<int64_t>(i)));
    }
    for (const graph::ValueInfo& out : g_.outputs) {
      auto it = values_.find(out.name);
      if (it == values_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph output '", out.name, "' is not computed on the device"));
      }
      outputs_.emplace_back(out.name, it->second);
    }
    DropDeadSteps();
    LOOM_RETURN_IF_ERROR(PlanArena());
    CudaModelStats& st = m_->stats;
    st.kernels_built = static_cast<int64_t>(m_->plan.kernels.size());
    st.cache_hits = b_->cache_hits() - hits_before;
    st.aux_steps = st.elementwise_steps + st.lowered_steps + st.pool_steps;
    st.launches = st.kernel_steps + st.aux_steps;
    return absl::OkStatus();
  }

 private:
  absl::Status Place(int64_t i) {
    const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
    LOOM_ASSIGN_OR_RETURN(bool placed, TryView(node));
    if (placed) return absl::OkStatus();
    LOOM_ASSIGN_OR_RETURN(placed, TryTemplate(i));
    if (placed) return absl::OkStatus();
    LOOM_ASSIGN_OR_RETURN(placed, TryPool(node));
    if (placed) return absl::OkStatus();
    LOOM_ASSIGN_OR_RETURN(placed, TryElementwise(i));
    if (placed) return absl::OkStatus();
    LOOM_ASSIGN_OR_RETURN(placed, TryLowered(node));
    if (placed) return absl::OkStatus();
    return AddHostStep(node);
  }

  // ---- values, constants, kernels

  // A fresh device value `name`, from its inferred type (static shape).
  absl::StatusOr<Value> NewValue(const std::string& name) {
    LOOM_ASSIGN_OR_RETURN(TensorType t, g_.TypeOf(name));
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "value '", name, "' has a dynamic shape; pin it (--input-shape) to compile for cuda"));
      }
    }
    if (t.dtype == DType::kUndefined) {
      return absl::InvalidArgumentError(
          absl::StrCat("value '", name, "' has no numeric type the device can hold"));
    }
    Value v{static_cast<int64_t>(value_bytes_.size()), t};
    value_bytes_.push_back(Bytes(t));
    values_[name] = v;
    return v;
  }

  const Value* Device(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : &it->second;
  }

  // The constant value of `name` (an initializer or a folded Constant), if it is one.
  std::optional<Tensor> ConstantOf(const std::string& name) const {
    if (name.empty() || Device(name) != nullptr) return std::nullopt;
    if (const Tensor* t = g_.FindInitializer(name)) return *t;
    return graph::ConstantValueOf(g_, name);
  }

  int64_t AddConstant(Tensor t) {
    m_->plan.constants.push_back(std::move(t));
    return static_cast<int64_t>(m_->plan.constants.size() - 1);
  }

  // The graph constant `name`, added once however many kernels read it.
  absl::StatusOr<Arg> ConstantArg(const std::string& name) {
    auto it = named_constants_.find(name);
    if (it != named_constants_.end()) return Arg{false, it->second};
    std::optional<Tensor> t = ConstantOf(name);
    if (!t.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a constant"));
    }
    const int64_t index = AddConstant(std::move(*t));
    named_constants_[name] = index;
    return Arg{false, index};
  }

  // `name` as a kernel operand: a device value, or a constant (uploaded once).
  absl::StatusOr<Arg> Operand(const std::string& name) {
    if (const Value* v = Device(name)) return Arg{true, v->id};
    return ConstantArg(name);
  }

  absl::StatusOr<TensorType> TypeOfOperand(const std::string& name) const {
    if (const Value* v = Device(name)) return v->type;
    return g_.TypeOf(name);
  }

  int64_t ArgBytes(const Arg& a) const {
    return a.is_value
               ? value_bytes_[static_cast<size_t>(a.id)]
               : static_cast<int64_t>(m_->plan.constants[static_cast<size_t>(a.id)].num_bytes());
  }

  // A launch of `source`'s kernel, built and loaded once however many steps run it (ResNet-18
  // repeats whole layers).
  // `counter`: the stat that counts launches of its kind.
  absl::Status Launch(const ops::KernelSource& source, std::vector<Arg> args,
                      const std::string& kind, const std::string& name,
                      int64_t CudaModelStats::*counter) {
    const std::string key = absl::StrCat(source.compile_flags, "\n", source.code);
    auto it = loaded_.find(key);
    if (it == loaded_.end()) {
      LOOM_ASSIGN_OR_RETURN(CudaBackend::KernelId id, b_->Load(source));
      CudaKernelInfo info;
      info.launch = source.cuda_launch;
      info.kind = kind;
      for (const Arg& a : args) info.arg_bytes.push_back(ArgBytes(a));
      m_->plan.kernels.push_back(std::move(info));
      m_->kernel_ids.push_back(id);
      it = loaded_.emplace(key, static_cast<int32_t>(m_->plan.kernels.size() - 1)).first;
    }
    steps_.push_back(PendingLaunch{it->second, std::move(args), name, counter});
    ++(m_->stats.*counter);
    return absl::OkStatus();
  }

  // ---- views

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
    const Value* in = Device(node.inputs[0]);
    absl::StatusOr<TensorType> out = g_.TypeOf(node.outputs[0]);
    if (in == nullptr || !out.ok() || out->dtype != in->type.dtype ||
        graph::NumElements(out->shape) != graph::NumElements(in->type.shape)) {
      return false;
    }
    values_[node.outputs[0]] = Value{in->id, *out};
    ++m_->stats.views;
    return true;
  }

  // ---- elementwise chains

  bool IsGraphOutput(const std::string& v) const { return graph_outputs_.count(v) > 0; }

  // The first node after `after` (not yet placed) that reads a value the chain computes; -1 when
  // there is none.
  int64_t NextConsumer(const Chain& c, int64_t after) const {
    int64_t best = -1;
    for (const auto& [value, id] : c.computed) {
      auto it = consumers_.find(value);
      if (it == consumers_.end()) continue;
      for (int64_t j : it->second) {
        if (j > after && !done_[static_cast<size_t>(j)] && (best < 0 || j < best)) best = j;
      }
    }
    return best;
  }

  // How an epilogue reads operand `shape` against the template output `site`; nullopt when it
  // cannot (the operand must broadcast to the output as a whole output, a per-channel vector or
  // a per-(batch, channel) table).
  static std::optional<ops::EpilogueOperand::Kind> Classify(const Shape& shape,
                                                            const EpilogueSiteShape& site) {
    const Shape& o = site.shape;
    if (shape.size() > o.size()) return std::nullopt;
    Shape s(o.size() - shape.size(), 1);
    s.insert(s.end(), shape.begin(), shape.end());
    if (s == o) return ops::EpilogueOperand::Kind::kElement;
    bool channel = true, batch_channel = !site.batch_axes.empty();
    for (size_t d = 0; d < s.size(); ++d) {
      const bool is_channel = static_cast<int64_t>(d) == site.channel_axis;
      const bool is_batch =
          std::count(site.batch_axes.begin(), site.batch_axes.end(), static_cast<int64_t>(d)) > 0;
      if (is_channel) {
        if (s[d] != o[d]) return std::nullopt;
      } else if (s[d] != 1) {
        channel = false;
        if (!is_batch || s[d] != o[d]) batch_channel = false;
      }
    }
    if (channel) return ops::EpilogueOperand::Kind::kChannel;
    if (batch_channel) {
      // Every batch axis present, so the table is [batch, channels] in order.
      for (int64_t a : site.batch_axes) {
        if (s[static_cast<size_t>(a)] != o[static_cast<size_t>(a)]) return std::nullopt;
      }
      return ops::EpilogueOperand::Kind::kBatchChannel;
    }
    return std::nullopt;
  }

  // Appends node j to `c` when it can join: an elementwise op whose other operands are computed
  // (device values, constants, or values of the chain) and whose output has the chain's shape;
  // for an epilogue (`site`), float32 throughout with operands the epilogue can read.
  bool TryAppend(Chain& c, int64_t j, const EpilogueSiteShape* site) const {
    const graph::Node& node = g_.nodes[static_cast<size_t>(j)];
    if (!ops::IsElementwiseOp(node.op_type) || node.outputs.size() != 1) return false;
    absl::StatusOr<TensorType> out = g_.TypeOf(node.outputs[0]);
    if (!out.ok()) return false;
    if (c.nodes.empty() && site == nullptr) {
      c.shape = out->shape;  // a standalone chain iterates over its first node's output
    }
    if (out->shape != c.shape) return false;
    if (site != nullptr && out->dtype != DType::kFloat32) return false;
    Chain next = c;
    std::vector<int32_t> args;
    for (const std::string& in : node.inputs) {
      if (in.empty()) {
        args.push_back(-1);
        continue;
      }
      if (auto it = next.computed.find(in); it != next.computed.end()) {
        args.push_back(it->second);
        continue;
      }
      absl::StatusOr<TensorType> t = TypeOfOperand(in);
      if (!t.ok()) return false;
      std::optional<Tensor> constant = ConstantOf(in);
      if (Device(in) == nullptr && !constant.has_value()) return false;  // not computed yet
      if (constant.has_value() && constant->num_elements() == 1 &&
          (graph::IsFloatingDType(t->dtype) || graph::IsIntegerDType(t->dtype) ||
           t->dtype == DType::kBool) &&
          !graph::IsHalfDType(t->dtype)) {
        // A scalar literal (Clip bounds, Pow exponents and integer divisors specialize on it).
        const double v = constant->DoubleAt(0);
        if (graph::IsIntegerDType(t->dtype) && static_cast<double>(constant->Int64At(0)) != v) {
          return false;
        }
        args.push_back(next.program.Const(t->dtype, v));
        continue;
      }
      auto seen = std::find(next.operands.begin(), next.operands.end(), in);
      if (seen != next.operands.end()) {
        // The same operand again: its program input (after the accumulator in an epilogue).
        args.push_back(static_cast<int32_t>(seen - next.operands.begin()) + (site ? 1 : 0));
        continue;
      }
      if (site != nullptr) {
        if (t->dtype != DType::kFloat32) return false;
        std::optional<ops::EpilogueOperand::Kind> kind = Classify(t->shape, *site);
        if (!kind.has_value()) return false;
        next.kinds.push_back({*kind});
      }
      next.operands.push_back(in);
      args.push_back(AppendInput(next, t->dtype, &args));
    }
    absl::StatusOr<int32_t> v = ops::AppendNode(node, g_.opset, args, out->dtype, &next.program);
    if (!v.ok()) return false;
    next.computed[node.outputs[0]] = *v;
    next.nodes.push_back(j);
    next.output = node.outputs[0];
    c = std::move(next);
    return true;
  }

  // True when every value the first `n` snapshots' chain computes, but its last, is read only by
  // the chain's own nodes and is no graph output: only the last value leaves the kernel.
  bool Contained(const Chain& c, const std::string& accumulator) const {
    std::set<int64_t> inside(c.nodes.begin(), c.nodes.end());
    for (const auto& [value, id] : c.computed) {
      if (value == c.output) continue;
      if (IsGraphOutput(value)) return false;
      auto it = consumers_.find(value);
      if (it == consumers_.end()) continue;
      for (int64_t j : it->second) {
        if (inside.count(j) == 0) return false;
      }
    }
    (void)accumulator;
    return true;
  }

  // Grows the longest chain from `c` (the first node, or for an epilogue the accumulator alone)
  // over the next consumers of its values, then keeps the longest prefix whose intermediate
  // values stay inside (and, for an epilogue, that is a float32 program).
  Chain Grow(Chain c, int64_t after, const EpilogueSiteShape* site) const {
    std::vector<Chain> snapshots = {c};
    for (int64_t last = after;;) {
      const int64_t j = NextConsumer(snapshots.back(), last);
      if (j < 0) break;
      Chain next = snapshots.back();
      if (!TryAppend(next, j, site)) break;
      snapshots.push_back(std::move(next));
      last = j;
    }
    for (size_t n = snapshots.size(); n-- > 1;) {
      const Chain& s = snapshots[n];
      if (!Contained(s, "")) continue;
      if (site != nullptr && !ops::IsVectorizable(s.program)) continue;
      return s;
    }
    return snapshots.front();
  }

  void MarkDone(const Chain& c, int64_t first) {
    for (int64_t j : c.nodes) {
      if (j != first) {
        done_[static_cast<size_t>(j)] = true;
        ++m_->stats.fused_ops;
      }
    }
  }

  // A standalone chain from elementwise node i: one kernel over broadcast operands.
  absl::StatusOr<bool> TryElementwise(int64_t i) {
    const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
    if (!ops::IsElementwiseOp(node.op_type)) return false;
    Chain first;
    if (!TryAppend(first, i, nullptr)) return false;
    const Chain c = o_.fuse ? Grow(first, i, nullptr) : first;
    ops::ElementwiseProgram p = c.program;
    // The program's output is the chain's last value, stored as its graph type.
    LOOM_ASSIGN_OR_RETURN(TensorType out_type, g_.TypeOf(c.output));
    p.AddOutput(c.computed.at(c.output), out_type.dtype);
    std::vector<Shape> shapes;
    std::vector<Arg> args;
    for (const std::string& name : c.operands) {
      LOOM_ASSIGN_OR_RETURN(TensorType t, TypeOfOperand(name));
      shapes.push_back(t.shape);
      LOOM_ASSIGN_OR_RETURN(Arg a, Operand(name));
      args.push_back(a);
    }
    LOOM_ASSIGN_OR_RETURN(ops::ElementwiseSpec spec, ops::BroadcastSpec(p, shapes, c.shape));
    LOOM_ASSIGN_OR_RETURN(ops::KernelSource src,
                          ops::EmitCudaElementwise(spec, b_->host_emulation()));
    MarkDone(c, i);
    LOOM_ASSIGN_OR_RETURN(Value y, NewValue(c.output));
    args.push_back(Arg{true, y.id});
    LOOM_RETURN_IF_ERROR(
        Launch(src, std::move(args), "elementwise", node.name, &CudaModelStats::elementwise_steps));
    return true;
  }

  // ---- templates

  // Conv / dense / matrix products through the CUDA templates, with the elementwise chain after
  // them fused into the output store.
  absl::StatusOr<bool> TryTemplate(int64_t i) {
    const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
    if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") return false;
    absl::StatusOr<graph::NodeWorkload> analyzed = graph::AnalyzeTunableNode(g_, node);
    if (!analyzed.ok()) return false;
    // The operands as the template reads them: through an absorbed Transpose, its input (the
    // workload's trans_b says so; MakeTemplate refuses a transposed A on CUDA, and then the node
    // is no template step here).
    const std::string& a_in = analyzed->a;
    const std::string& b_in = analyzed->b;
    const graph::Workload* w = &analyzed->workload;
    const bool conv = node.op_type == "Conv";
    if (node.op_type == "Gemm" &&
        (node.GetFloat("alpha", 1.0f) != 1.0f || node.GetFloat("beta", 1.0f) != 1.0f)) {
      return false;
    }
    ops::TemplateOptions topt;
    topt.cuda_host_emulation = b_->host_emulation();
    absl::StatusOr<std::unique_ptr<ops::Template>> made = ops::MakeTemplate(*w, b_->target(), topt);
    if (!made.ok()) return false;
    const ops::Template& tmpl = **made;
    const std::vector<Shape> natural = tmpl.NaturalInputShapes();
    absl::StatusOr<TensorType> a_type = TypeOfOperand(a_in);
    absl::StatusOr<TensorType> b_type = TypeOfOperand(b_in);
    if (!a_type.ok() || !b_type.ok() || natural.size() != 2 ||
        graph::NumElements(a_type->shape) != graph::NumElements(natural[0]) ||
        graph::NumElements(b_type->shape) != graph::NumElements(natural[1])) {
      return false;
    }
    // Convolutions read their data as NCHW and a constant weight.
    if (conv && (a_type->shape != natural[0] || !ConstantOf(b_in).has_value())) {
      return false;
    }
    if (Device(a_in) == nullptr && !ConstantOf(a_in).has_value()) return false;
    if (Device(b_in) == nullptr && !ConstantOf(b_in).has_value()) return false;
    const int64_t channels = conv ? w->k : w->n;
    std::optional<Tensor> bias;
    if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
      bias = ConstantOf(node.inputs[2]);
      if (!bias.has_value() || bias->num_elements() != channels ||
          bias->dtype() != DType::kFloat32) {
        return false;
      }
    }
    absl::StatusOr<TensorType> out_type = g_.TypeOf(node.outputs[0]);
    if (!out_type.ok()) return false;

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

    // The epilogue: the template's bias, then the chain that follows.
    ops::Epilogue ep;
    ep.bias = bias.has_value();
    Chain c;
    c.shape = out_type->shape;
    c.output = node.outputs[0];
    if (o_.fuse) {
      EpilogueSiteShape site;
      site.shape = out_type->shape;
      const int64_t rank = static_cast<int64_t>(site.shape.size());
      if (conv) {
        site.channel_axis = 1;
        site.batch_axes = {0};
      } else {
        site.channel_axis = rank - 1;
        if (w->kind == graph::TaskKind::kBatchMatmul) {
          for (int64_t d = 0; d + 2 < rank; ++d) site.batch_axes.push_back(d);
        }
      }
      c.computed[node.outputs[0]] = c.program.AddInput(DType::kFloat32);
      c = Grow(c, i, &site);
      if (c.nodes.empty()) c.program = ops::ElementwiseProgram();
    }
    if (!c.nodes.empty()) {
      ep.program = c.program;
      ep.program.AddOutput(c.computed.at(c.output), DType::kFloat32);
      ep.operands = c.kinds;
    }
    absl::StatusOr<ops::KernelSource> source = tmpl.EmitFused(config, ep);
    if (!source.ok()) {
      return absl::InternalError(absl::StrCat(node.Describe(), ": cannot emit ", tmpl.name(), ": ",
                                              source.status().message()));
    }
    std::vector<Arg> args;
    LOOM_ASSIGN_OR_RETURN(Arg a, Operand(a_in));
    args.push_back(a);
    if (conv) {
      // The weight in the template's natural KCRS.
      std::optional<Tensor> wt = ConstantOf(b_in);
      absl::StatusOr<Tensor> natural_weight = wt->Reshaped(natural[1]);
      if (!natural_weight.ok()) return false;
      args.push_back(Arg{false, AddConstant(*std::move(natural_weight))});
    } else {
      LOOM_ASSIGN_OR_RETURN(Arg b, Operand(b_in));
      args.push_back(b);
    }
    if (bias.has_value()) {
      LOOM_ASSIGN_OR_RETURN(Arg bias_arg, ConstantArg(node.inputs[2]));
      args.push_back(bias_arg);
    }
    for (const std::string& name : c.operands) {
      LOOM_ASSIGN_OR_RETURN(Arg op, Operand(name));
      args.push_back(op);
    }
    MarkDone(c, -1);
    LOOM_ASSIGN_OR_RETURN(Value y, NewValue(c.output));
    args.push_back(Arg{true, y.id});
    LOOM_RETURN_IF_ERROR(
        Launch(*source, std::move(args), tmpl.name(), node.name, &CudaModelStats::kernel_steps));
    if (tuned) ++m_->stats.tuned_kernels;
    return true;
  }

  // ---- pooling, lowered kernels, host steps

  absl::StatusOr<bool> TryPool(const graph::Node& node) {
    const std::string& op = node.op_type;
    const bool global = op == "GlobalAveragePool" || op == "GlobalMaxPool";
    if (!global && op != "MaxPool" && op != "AveragePool") return false;
    if (node.outputs.size() != 1) return false;  // MaxPool's Indices output
    const Value* in = Device(node.inputs[0]);
    absl::StatusOr<TensorType> out = g_.TypeOf(node.outputs[0]);
    if (in == nullptr || in->type.dtype != DType::kFloat32 || in->type.shape.size() != 4 ||
        !out.ok() || out->shape.size() != 4) {
      return false;
    }
    const Shape& s = in->type.shape;
    CudaPool p;
    p.max = op == "MaxPool" || op == "GlobalMaxPool";
    p.planes = s[0] * s[1];
    p.h = s[2];
    p.w = s[3];
    p.oh = out->shape[2];
    p.ow = out->shape[3];
    if (global) {
      p.kh = p.h;
      p.kw = p.w;
    } else {
      const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
      const std::vector<int64_t> k = node.GetInts("kernel_shape");
      const std::vector<int64_t> st = node.GetInts("strides", {1, 1});
      const std::vector<int64_t> pads = node.GetInts("pads", {0, 0, 0, 0});
      const std::vector<int64_t> d = node.GetInts("dilations", {1, 1});
      if (auto_pad != "NOTSET" || k.size() != 2 || st.size() != 2 || pads.size() != 4 ||
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
      p.stride_h = st[0];
      p.stride_w = st[1];
      p.pad_top = pads[0];
      p.pad_left = pads[1];
    }
    LOOM_ASSIGN_OR_RETURN(ops::KernelSource src, EmitCudaPool(p, b_->host_emulation()));
    const int64_t x = in->id;
    LOOM_ASSIGN_OR_RETURN(Value y, NewValue(node.outputs[0]));
    LOOM_RETURN_IF_ERROR(Launch(src, {Arg{true, x}, Arg{true, y.id}}, p.max ? "maxpool" : "avgpool",
                                node.name, &CudaModelStats::pool_steps));
    return true;
  }

  absl::StatusOr<bool> TryLowered(const graph::Node& node) {
    for (const std::string& in : node.inputs) {
      if (!in.empty() && Device(in) == nullptr && !ConstantOf(in).has_value()) return false;
    }
    absl::StatusOr<ops::LoweredKernel> k =
        ops::LowerNodeCuda(g_, node, b_->target(), b_->host_emulation());
    if (k.status().code() == absl::StatusCode::kUnimplemented) return false;
    if (!k.ok()) return k.status();
    std::vector<Arg> args;
    for (const ops::LoweredKernel::Arg& a : k->args) {
      if (a.kind == ops::LoweredKernel::Arg::Kind::kConstant) {
        args.push_back(Arg{false, AddConstant(a.constant)});
      } else if (a.is_output) {
        LOOM_ASSIGN_OR_RETURN(Value v, NewValue(a.value));
        args.push_back(Arg{true, v.id});
      } else {
        LOOM_ASSIGN_OR_RETURN(Arg in, Operand(a.value));
        args.push_back(in);
      }
    }
    LOOM_RETURN_IF_ERROR(
        Launch(k->source, std::move(args), k->kind, node.name, &CudaModelStats::lowered_steps));
    return true;
  }

  absl::Status AddHostStep(const graph::Node& node) {
    if (!kernels::HasReferenceKernel(node.op_type)) {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), ": no CUDA kernel and no reference kernel"));
    }
    PendingHost step;
    step.node = node;
    for (const std::string& name : node.inputs) {
      if (name.empty()) {
        step.inputs.emplace_back(std::nullopt);
        continue;
      }
      absl::StatusOr<TensorType> t = TypeOfOperand(name);
      absl::StatusOr<Arg> a = Operand(name);
      if (!t.ok() || !a.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), ": input '", name, "' is not computed before it"));
      }
      step.inputs.emplace_back(std::make_pair(*a, *t));
    }
    for (const std::string& name : node.outputs) {
      if (name.empty()) {
        step.outputs.emplace_back(std::nullopt);
        continue;
      }
      LOOM_ASSIGN_OR_RETURN(Value v, NewValue(name));
      step.outputs.emplace_back(std::make_pair(Arg{true, v.id}, v.type));
    }
    steps_.push_back(std::move(step));
    ++m_->stats.host_steps;
    return absl::OkStatus();
  }

  // ---- the arena

  // Removes the launches whose results nothing reads: a Transpose that every template consuming
  // it reads through (the template takes its input, transposed), as the CPU planner's
  // DropDeadSteps does. A value is written by the first step that touches it (every launch and
  // host step writes fresh values); walked backward, a step is live when it writes a graph
  // output or a value a live step touches, or when it writes no fresh value (kept: nothing says
  // what it writes).
  void DropDeadSteps() {
    const size_t n = value_bytes_.size();
    constexpr int64_t kNone = -2;
    std::vector<int64_t> writer(n, kNone);
    for (const auto& [name, v] : inputs_) writer[static_cast<size_t>(v.id)] = -1;
    auto for_each_value = [](const PendingStep& step, const auto& f) {
      if (const auto* l = std::get_if<PendingLaunch>(&step)) {
        for (const Arg& a : l->args) {
          if (a.is_value) f(a.id);
        }
        return;
      }
      const PendingHost& h = std::get<PendingHost>(step);
      for (const auto* list : {&h.inputs, &h.outputs}) {
        for (const auto& a : *list) {
          if (a.has_value() && a->first.is_value) f(a->first.id);
        }
      }
    };
    for (size_t s = 0; s < steps_.size(); ++s) {
      for_each_value(steps_[s], [&](int64_t id) {
        int64_t& w = writer[static_cast<size_t>(id)];
        if (w == kNone) w = static_cast<int64_t>(s);
      });
    }
    std::vector<bool> live_value(n, false);
    for (const auto& [name, v] : outputs_) live_value[static_cast<size_t>(v.id)] = true;
    std::vector<bool> keep(steps_.size(), false);
    for (size_t s = steps_.size(); s-- > 0;) {
      bool writes = false, live = false;
      for_each_value(steps_[s], [&](int64_t id) {
        if (writer[static_cast<size_t>(id)] != static_cast<int64_t>(s)) return;
        writes = true;
        live = live || live_value[static_cast<size_t>(id)];
      });
      if (writes && !live) continue;
      keep[s] = true;
      for_each_value(steps_[s], [&](int64_t id) { live_value[static_cast<size_t>(id)] = true; });
    }
    std::vector<PendingStep> kept;
    for (size_t s = 0; s < steps_.size(); ++s) {
      if (keep[s]) {
        kept.push_back(std::move(steps_[s]));
        continue;
      }
      if (const auto* l = std::get_if<PendingLaunch>(&steps_[s])) {
        --(m_->stats.*(l->counter));
      } else {
        --m_->stats.host_steps;
      }
      ++m_->stats.dropped_steps;
    }
    steps_ = std::move(kept);
  }

  // Places every value in one allocation where values whose lifetimes (first to last step that
  // touches them) do not overlap share memory, largest first at the lowest aligned offset clear
  // of every placed value alive at the same time (the greedy-by-size plan of TFLite's and ONNX
  // Runtime's memory planners), and writes the plan's steps with arena offsets.
  absl::Status PlanArena() {
    const size_t n = value_bytes_.size();
    const int64_t end = static_cast<int64_t>(steps_.size());
    std::vector<int64_t> first(n, end), last(n, -1);
    auto touch = [&](const Arg& a, int64_t step) {
      if (!a.is_value) return;
      const size_t id = static_cast<size_t>(a.id);
      first[id] = std::min(first[id], step);
      last[id] = std::max(last[id], step);
    };
    for (const auto& [name, v] : inputs_) touch(Arg{true, v.id}, -1);  // uploaded before step 0
    for (int64_t s = 0; s < end; ++s) {
      const PendingStep& step = steps_[static_cast<size_t>(s)];
      if (const auto* l = std::get_if<PendingLaunch>(&step)) {
        for (const Arg& a : l->args) touch(a, s);
      } else {
        const PendingHost& h = std::get<PendingHost>(step);
        for (const auto* list : {&h.inputs, &h.outputs}) {
          for (const auto& in : *list) {
            if (in.has_value()) touch(in->first, s);
          }
        }
      }
    }
    for (const auto& [name, v] : outputs_) touch(Arg{true, v.id}, end);  // downloaded after

    auto rounded = [](int64_t bytes) {
      return (std::max<int64_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
    };
    std::vector<size_t> order(n);
    std::vector<int64_t> offset(n, 0);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return value_bytes_[a] > value_bytes_[b]; });
    std::vector<size_t> placed;
    int64_t arena = 0, total = 0;
    for (size_t id : order) {
      total += value_bytes_[id];
      if (last[id] < 0) continue;  // touched by no step: nothing reads or writes it
      std::vector<std::pair<int64_t, int64_t>> busy;  // [begin, end) of overlapping lifetimes
      for (size_t p : placed) {
        if (first[p] <= last[id] && first[id] <= last[p]) {
          busy.emplace_back(offset[p], offset[p] + rounded(value_bytes_[p]));
        }
      }
      std::sort(busy.begin(), busy.end());
      int64_t at = 0;
      for (const auto& [begin, finish] : busy) {
        if (at + rounded(value_bytes_[id]) <= begin) break;
        at = std::max(at, finish);
      }
      offset[id] = at;
      arena = std::max(arena, at + rounded(value_bytes_[id]));
      placed.push_back(id);
    }
    auto operand = [&](const Arg& a) {
      CudaOperand op;
      if (a.is_value) {
        op.kind = CudaOperand::Kind::kArena;
        op.offset = offset[static_cast<size_t>(a.id)];
      } else {
        op.kind = CudaOperand::Kind::kConstant;
        op.index = a.id;
      }
      return op;
    };
    CudaPlan& plan = m_->plan;
    for (const PendingStep& step : steps_) {
      if (const auto* l = std::get_if<PendingLaunch>(&step)) {
        CudaLaunchStep out{l->kernel, {}, l->name};
        for (const Arg& a : l->args) out.args.push_back(operand(a));
        plan.steps.push_back(std::move(out));
      } else {
        const PendingHost& h = std::get<PendingHost>(step);
        CudaHostStep out;
        out.node = h.node;
        for (const auto& in : h.inputs) {
          out.inputs.push_back(in.has_value() ? std::optional<CudaValueRef>(
                                                    CudaValueRef{operand(in->first), in->second})
                                              : std::nullopt);
        }
        for (const auto& o : h.outputs) {
          out.outputs.push_back(o.has_value() ? std::optional<CudaValueRef>(
                                                    CudaValueRef{operand(o->first), o->second})
                                              : std::nullopt);
        }
        plan.steps.push_back(std::move(out));
      }
    }
    for (const auto& [name, v] : inputs_) {
      plan.inputs.emplace_back(name, CudaValueRef{operand(Arg{true, v.id}), v.type});
    }
    for (const auto& [name, v] : outputs_) {
      plan.outputs.emplace_back(name, CudaValueRef{operand(Arg{true, v.id}), v.type});
    }
    plan.arena_bytes = arena;
    m_->stats.value_bytes = total;
    m_->stats.arena_bytes = arena;
    return absl::OkStatus();
  }

  const graph::Graph& g_;
  CudaBackend* b_;
  const CudaModelOptions& o_;
  CudaModel::Impl* m_;
  std::vector<bool> done_;
  std::map<std::string, std::vector<int64_t>> consumers_;  // value -> nodes reading it
  std::set<std::string> graph_outputs_;
  std::map<std::string, Value> values_;
  std::map<std::string, int64_t> named_constants_;  // graph constant -> plan constant
  std::map<std::string, int32_t> loaded_;           // flags + source -> plan kernel
  std::vector<int64_t> value_bytes_;                // by value id
  std::vector<PendingStep> steps_;
  std::vector<std::pair<std::string, Value>> inputs_, outputs_;
};

}  // namespace

CudaModel::CudaModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaModel::~CudaModel() = default;

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::Compile(const graph::Graph& graph,
                                                              CudaBackend* backend,
                                                              const CudaModelOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("CudaModel::Compile: no backend");
  const absl::Time start = absl::Now();
  auto impl = std::make_unique<Impl>();
  impl->graph_replay = options.graph_replay;
  Compiler c(graph, backend, options, impl.get());
  LOOM_RETURN_IF_ERROR(c.Run());
  LOOM_RETURN_IF_ERROR(ValidateCudaPlan(impl->plan));
  LOOM_RETURN_IF_ERROR(impl->Prepare());
  impl->stats.compile_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

absl::StatusOr<std::vector<Tensor>> CudaModel::Run(const std::map<std::string, Tensor>& inputs) {
  Impl& m = *impl_;
  CudaBackend& b = *m.backend;
  if (inputs.size() != m.plan.inputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", m.plan.inputs.size(), " inputs, got ", inputs.size()));
  }
  for (const auto& [name, v] : m.plan.inputs) {
    auto it = inputs.find(name);
    if (it == inputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", name, "'"));
    }
    const Tensor& t = it->second;
    if (t.type() != v.type) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': expected ", graph::DTypeName(v.type.dtype), " [",
                       absl::StrJoin(v.type.shape, ","), "], got ", graph::DTypeName(t.dtype()),
                       " [", absl::StrJoin(t.shape(), ","), "]"));
    }
    LOOM_RETURN_IF_ERROR(b.Upload(m.Address(v.at), t.raw_data(), t.num_bytes()));
  }
  if (m.graph_replay && !m.graph.has_value() && m.run_stats.graph_status.empty()) m.Capture();
  if (m.graph.has_value()) {
    LOOM_RETURN_IF_ERROR(b.LaunchGraph(*m.graph));
    ++m.run_stats.graph_replays;
  } else {
    LOOM_RETURN_IF_ERROR(m.RunSteps());
  }
  LOOM_RETURN_IF_ERROR(b.Synchronize());
  ++m.run_stats.runs;
  std::vector<Tensor> outs;
  outs.reserve(m.plan.outputs.size());
  for (const auto& [name, v] : m.plan.outputs) {
    Tensor t(v.type.dtype, v.type.shape);
    LOOM_RETURN_IF_ERROR(b.Download(t.raw_data(), m.Address(v.at), t.num_bytes()));
    outs.push_back(std::move(t));
  }
  return outs;
}

absl::Status CudaModel::Export(const std::string& dir, const CudaExportOptions& options) const {
  (void)options;
  const Impl& m = *impl_;
  CudaArtifact a;
  a.plan = m.plan;
  a.key = m.backend->target().Key();
  a.image_kind = m.backend->image_kind();
  for (CudaBackend::KernelId id : m.kernel_ids) {
    LOOM_ASSIGN_OR_RETURN(std::string image, m.backend->Image(id));
    a.images.push_back(std::move(image));
  }
  return WriteCudaArtifact(dir, a);
}

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::Load(const std::string& dir,
                                                           CudaBackend* backend,
                                                           const std::string& verify_key) {
  if (backend == nullptr) return absl::InvalidArgumentError("CudaModel::Load: no backend");
  const absl::Time start = absl::Now();
  LOOM_ASSIGN_OR_RETURN(CudaArtifact a, ReadCudaArtifact(dir, verify_key));
  const std::string& arch = backend->target().cuda_arch;
  if (a.plan.arch != arch) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " was compiled for ", a.plan.arch, " but the GPU is ", arch, " (",
                     backend->target().device_name, "): compile the model again for this GPU"));
  }
  if (a.image_kind != backend->image_kind()) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " holds ", a.image_kind,
                                                      " kernels; this backend loads ",
                                                      backend->image_kind(), " kernels"));
  }
  auto impl = std::make_unique<Impl>();
  impl->backend = backend;
  impl->plan = std::move(a.plan);
  for (size_t k = 0; k < a.images.size(); ++k) {
    absl::StatusOr<CudaBackend::KernelId> id =
        backend->LoadImage(a.images[k], impl->plan.kernels[k].launch);
    if (!id.ok()) {
      return absl::Status(id.status().code(),
                          absl::StrCat(dir, ": kernel ", k, ": ", id.status().message()));
    }
    impl->kernel_ids.push_back(*id);
  }
  LOOM_RETURN_IF_ERROR(impl->Prepare());
  CudaModelStats& st = impl->stats;
  for (const CudaStep& step : impl->plan.steps) {
    if (std::holds_alternative<CudaHostStep>(step)) ++st.host_steps;
  }
  st.launches = static_cast<int64_t>(impl->plan.steps.size()) - st.host_steps;
  st.arena_bytes = impl->plan.arena_bytes;
  st.kernels_built = static_cast<int64_t>(impl->plan.kernels.size());
  st.compile_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

const CudaModelStats& CudaModel::stats() const { return impl_->stats; }
const CudaRunStats& CudaModel::run_stats() const { return impl_->run_stats; }
const CudaPlan& CudaModel::plan() const { return impl_->plan; }

std::vector<graph::ValueInfo> CudaModel::inputs() const {
  std::vector<graph::ValueInfo> v;
  for (const auto& [name, ref] : impl_->plan.inputs) v.push_back({name, ref.type});
  return v;
}

std::vector<graph::ValueInfo> CudaModel::outputs() const {
  std::vector<graph::ValueInfo> v;
  for (const auto& [name, ref] : impl_->plan.outputs) v.push_back({name, ref.type});
  return v;
}

absl::StatusOr<LoadedCudaArtifact> LoadCudaArtifact(const std::string& dir, int ordinal,
                                                    const std::string& verify_key) {
  LOOM_ASSIGN_OR_RETURN(const std::string image_kind, CudaArtifactImageKind(dir));
  LoadedCudaArtifact loaded;
  LOOM_ASSIGN_OR_RETURN(
      loaded.backend,
      MakeCudaDeviceBackend({.ordinal = ordinal, .host_emulation_kernels = image_kind != "cubin"}));
  LOOM_ASSIGN_OR_RETURN(loaded.model, CudaModel::Load(dir, loaded.backend.get(), verify_key));
  return loaded;
}

}  // namespace loom::runtime
