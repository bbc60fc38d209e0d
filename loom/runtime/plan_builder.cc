// Builds a compiled model's Plan (plan.h) from a graph. Nodes are visited in order; each is run
// by the first of these that takes it:
//   1. views: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout share their input's bytes;
//   2. templates: Conv, Gemm/MatMul with a constant weight (ops::MakeTemplate), with the
//      elementwise chain that follows fused into the kernel's output store;
//   3. the blocked layout: pooling, channel Concat/Split/Slice, the Reshape-Transpose-Reshape
//      channel shuffle, and elementwise chains whose operands are per channel, per element or
//      broadcast spatially, on NCHW[x]c buffers;
//   4. elementwise chains on natural tensors of any dtype (ops::EmitElementwise);
//   5. Transposes of blocked values (or of views of them) read the blocked buffer in place;
//   6. ops::LowerNode's generated kernels;
//   7. the reference kernel (a copy in and out of the arena).
// Layout steps are added only where a consumer needs a representation the value lacks. Then
// kernels are compiled (deduplicated by source, in parallel, through the builder's cache) and the
// arena is planned from the buffers' lifetimes.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/base/thread_pool.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/graph/data_movement.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/kernels/reference.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/lowering.h"
#include "loom/ops/template.h"
#include "loom/runtime/plan.h"

namespace loom::runtime {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;

constexpr int64_t kAlign = 64;
// Tuning records weighed for one convolution's config (a task has one per measured config).
constexpr int kConfigsWeighed = 4096;
// Estimated time of a repack (a gather between two channel blocks) per element moved: the
// repack steps of tuned MobileNetV2 plans ran at 0.6-1.3 ns per element on the AMD EPYC this
// was tuned on (`loom bench --profile`); the larger figure keeps a config's measured gain from
// being spent on repacks.
constexpr double kRepackSecondsPerElement = 1.2e-9;
// Most nodes one generated elementwise kernel takes, and most operands (kernel arguments).
constexpr size_t kMaxGroupNodes = 48;
constexpr size_t kMaxGroupOperands = 24;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

int64_t TypeBytes(const graph::TensorType& t) {
  return graph::NumElements(t.shape) * static_cast<int64_t>(graph::DTypeSize(t.dtype));
}

bool IsViewOp(const std::string& op) {
  return op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
         op == "Identity" || op == "Dropout";
}

// A Transpose that moves only dims of extent 1 (ViT's [S, 1, D] <-> [1, S, D] at batch 1): its
// output has its input's bytes in the same order, so it is a view like a Reshape.
bool IsUnitDimTranspose(const graph::Node& node, const Shape& in) {
  if (node.op_type != "Transpose") return false;
  const auto rank = static_cast<int64_t>(in.size());
  std::vector<int64_t> perm = node.GetInts("perm");
  if (perm.empty()) {
    for (int64_t d = rank - 1; d >= 0; --d) perm.push_back(d);
  }
  if (static_cast<int64_t>(perm.size()) != rank) return false;
  int64_t last = -1;
  for (int64_t p : perm) {
    if (p < 0 || p >= rank) return false;
    if (in[static_cast<size_t>(p)] == 1) continue;
    if (p < last) return false;
    last = p;
  }
  return true;
}

// `shape` left-padded with ones to `rank`.
Shape PadTo(const Shape& shape, size_t rank) {
  Shape s(rank > shape.size() ? rank - shape.size() : 0, 1);
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}

// `config` with the knob that sets the kernel's input block size (conv2d: tile_ic; depthwise:
// tile_c, times vec) changed so that the block is `bn`; `config` itself when no choice gives it.
ops::Config AdaptInputBlock(const ops::Template& t, const ops::Config& config, int64_t bn) {
  const ops::ConfigSpace& space = t.space();
  std::vector<int64_t> choices = space.Choices(config);
  const std::vector<ops::Knob>& knobs = space.knobs();
  for (size_t k = 0; k < knobs.size(); ++k) {
    int64_t want = -1;
    if (knobs[k].name == "tile_ic") {
      want = bn;
    } else if (knobs[k].name == "tile_c") {
      const int64_t vec = space.Value(config, "vec");
      if (bn % vec == 0) want = bn / vec;
    }
    if (want < 0) continue;
    for (size_t v = 0; v < knobs[k].values.size(); ++v) {
      if (knobs[k].values[v] == want) {
        choices[k] = static_cast<int64_t>(v);
        return space.FromChoices(choices);
      }
    }
    return config;
  }
  return config;
}

// A value's natural (row-major) index order as digits, outermost first: (extent, stride) pairs,
// the strides in elements of the buffer the value is read from (a blocked buffer, or the input
// of the Transposes it was made by).
using Digits = std::vector<std::pair<int64_t, int64_t>>;

// A reshape x of a value with `digits`, as dims of the source buffer: x's dim k is the dims
// `of[k]` (in row-major order; none for an extent of 1), each an (extent, stride) pair. Each dim
// of x takes the next digits whose extents multiply to its own, splitting a digit where its
// extent divides (MobileViT's unfold splits H and W into patches). nullopt when a dim of x cuts
// a digit unevenly.
struct ViewDims {
  std::vector<int64_t> extent, stride;
  std::vector<std::vector<int64_t>> of;
};
std::optional<ViewDims> MatchDigits(Digits digits, const Shape& x) {
  ViewDims out;
  size_t p = 0;
  for (int64_t e : x) {
    std::vector<int64_t>& of = out.of.emplace_back();
    while (e > 1) {
      while (p < digits.size() && digits[p].first == 1) ++p;
      if (p == digits.size()) return std::nullopt;
      auto& [extent, stride] = digits[p];
      int64_t take = 0;
      if (e % extent == 0) {
        take = extent;  // the whole digit
      } else if (extent % e == 0) {
        take = e;  // its outer part
      } else {
        return std::nullopt;
      }
      of.push_back(static_cast<int64_t>(out.extent.size()));
      out.extent.push_back(take);
      out.stride.push_back(stride * (extent / take));
      extent /= take;
      e /= take;
    }
  }
  for (; p < digits.size(); ++p) {
    if (digits[p].first != 1) return std::nullopt;
  }
  return out;
}

// The digits of a 4-D value y = [N, C, H, W] stored blocked in blocks of `bn`: (n, c / bn,
// c % bn, h, w) with their strides in the blocked buffer. Empty unless bn divides C (then the
// buffer holds no padding channels).
Digits BlockedDigits(const Shape& y, int64_t bn) {
  if (y.size() != 4 || bn <= 0 || y[1] % bn != 0) return {};
  const int64_t cb = y[1] / bn, h = y[2], w = y[3];
  return {{y[0], cb * h * w * bn}, {cb, h * w * bn}, {bn, 1}, {h, w * bn}, {w, bn}};
}

// The digits of a Transpose's output read from its natural input of shape `in`.
Digits TransposeDigits(const Shape& in, const std::vector<int64_t>& perm) {
  std::vector<int64_t> strides(in.size(), 1);
  for (size_t k = in.size(); k-- > 1;) strides[k - 1] = strides[k] * in[k];
  Digits d;
  for (int64_t p : perm)
    d.emplace_back(in[static_cast<size_t>(p)], strides[static_cast<size_t>(p)]);
  return d;
}

struct KernelJob {
  ops::KernelSource source;
  ops::Config config;
  KernelArgs args;
};

class Planner {
 public:
  Planner(const graph::Graph& g, const CompileOptions& o, CompiledModel::Impl* impl)
      : g_(g), o_(o), m_(impl) {}

  absl::Status Run();

 private:
  struct Blocked {
    Ref ref;
    int64_t bn;
  };
  struct Padded {
    int64_t bn, pt, pl, pb, pr;
    auto operator<=>(const Padded&) const =
        default;  // NOLINT(modernize-use-nullptr): a false positive on defaulted <=>
  };
  // A value made of other values' channels (concat, slice, split, shuffle), not copied until a
  // consumer asks for a representation: then one ChannelMapStep writes it in the block size that
  // consumer wants. Maps of maps compose, so a chain of them is one gather.
  struct PendingMap {
    std::vector<std::string> srcs;  // source values
    std::vector<ChannelRun> runs;   // ChannelRun::src indexes `srcs`
    int64_t bn = 16;                // the block size a consumer without a preference gets
    std::string kind;               // "Concat", "channel_shuffle", "channel_map" (composed)
    std::string name;               // the last node's
  };
  struct State {
    graph::TensorType type;
    std::optional<Ref> natural;  // row-major storage
    std::vector<Blocked> blocked;
    std::map<Padded, Ref> padded;
    const Tensor* constant = nullptr;  // the graph constant this value is (or views)
    std::optional<PendingMap> pending;
  };
  // An elementwise chain: nodes (graph order) computed by one kernel.
  struct Group {
    std::vector<int64_t> nodes;
    std::set<std::string> produced;
    Shape shape;
  };
  // How an operand of a blocked-layout program or an epilogue is read.
  enum class OperandKind { kLiteral, kElement, kChannel, kBatchChannel, kSpatial, kScalar, kNone };

  // ---- values
  const graph::TensorType* TypeOf(const std::string& v) const {
    auto it = g_.value_types.find(v);
    if (it != g_.value_types.end()) return &it->second;
    auto s = synthetic_.find(v);
    return s == synthetic_.end() ? nullptr : &s->second.first;
  }
  // A graph constant, or one the planner made (a BatchNormalization's scale and shift).
  const Tensor* ConstantOf(const std::string& v) const {
    if (const Tensor* t = g_.FindInitializer(v)) return t;
    auto s = synthetic_.find(v);
    if (s != synthetic_.end()) return &s->second.second;
    auto st = states_.find(v);
    return st == states_.end() ? nullptr : st->second.constant;
  }
  // A node one elementwise kernel can take: an elementwise operator, or an inference
  // BatchNormalization with constant statistics (a per-channel scale and shift).
  bool IsGroupable(const graph::Node& node) const;
  // The scale and shift values of BatchNormalization `node` (made on first use).
  std::pair<std::string, std::string> BatchNormScaleShift(const graph::Node& node);
  bool Is4dFloat(const std::string& v) const {
    const graph::TensorType* t = TypeOf(v);
    return t != nullptr && t->dtype == DType::kFloat32 && t->shape.size() == 4;
  }
  bool Available(const std::string& v) const {
    return states_.count(v) > 0 || ConstantOf(v) != nullptr;
  }
  absl::StatusOr<State*> StateOf(const std::string& v);
  Ref NewBuffer(int64_t bytes, std::string what) {
    BufferInfo b;
    b.bytes = RoundUp(std::max<int64_t>(bytes, 1), kAlign);
    b.what = std::move(what);
    m_->plan.buffers.push_back(b);
    return {Ref::Kind::kArena, static_cast<int64_t>(m_->plan.buffers.size()) - 1};
  }
  Ref NewConst(Tensor t) {
    m_->plan.consts.push_back(std::move(t));
    return {Ref::Kind::kConst, static_cast<int64_t>(m_->plan.consts.size()) - 1};
  }
  // Fresh natural storage for value `v` (the graph output it is, when it is one not yet claimed).
  Ref NewNaturalStorage(const std::string& v);
  // The geometry of a value of rank <= 4 (left-padded with ones) in blocks of `bn`.
  BlockedGeo GeoOf(const Shape& shape, int64_t bn) const {
    const Shape s = PadTo(shape, 4);
    BlockedGeo g;
    g.n = s[0];
    g.c = s[1];
    g.h = s[2];
    g.w = s[3];
    g.bn = bn;
    return g;
  }
  void AddStep(std::string name, std::string kind, StepOp op) {
    m_->plan.steps.push_back({std::move(name), std::move(kind), std::move(op)});
  }
  // The values a group node reads: its inputs, or a BatchNormalization's X, scale and shift.
  std::vector<std::string> GroupOperands(const graph::Node& node) {
    if (node.op_type != "BatchNormalization") return node.inputs;
    const auto [scale, shift] = BatchNormScaleShift(node);
    return {node.inputs[0], scale, shift};
  }
  // Representations, with the layout step that makes them when missing.
  absl::StatusOr<Ref> Natural(const std::string& v);
  absl::StatusOr<Ref> BlockedBuf(const std::string& v, int64_t bn);
  absl::StatusOr<Ref> PaddedBuf(const std::string& v, const Padded& p);
  // The block size `v` has, or would get without a preference (a pending channel map); 0 when
  // it is not on the blocked layout.
  int64_t BlockedBn(const std::string& v) const {
    auto it = states_.find(v);
    if (it == states_.end()) return 0;
    if (!it->second.blocked.empty()) return it->second.blocked.front().bn;
    return it->second.pending ? it->second.pending->bn : 0;
  }
  // Writes pending value `v` as blocked `bn` (bn 1: NCHW, into `dst` when given).
  absl::StatusOr<Ref> Materialize(const std::string& v, int64_t bn, std::optional<Ref> dst = {});
  // `map` with every source that is itself an unmaterialized pending map replaced by its
  // sources.
  PendingMap Compose(PendingMap map) const;
  // Defines value `v` (a node output) with its graph type.
  State& Define(const std::string& v) {
    State& s = states_[v];
    if (const graph::TensorType* t = TypeOf(v)) s.type = *t;
    return s;
  }

  // ---- kernels
  int64_t AddKernel(const ops::KernelSource& src, const ops::Config& config, KernelArgs args);
  void AddKernelStep(const std::string& name, const std::string& kind, int64_t kernel,
                     std::vector<Ref> args) {
    AddStep(name, kind, KernelStep{.kernel = kernel, .args = std::move(args)});
  }

  // ---- the node handlers (true: the node is done)
  absl::StatusOr<bool> TryView(int64_t i);
  absl::StatusOr<bool> TryTemplate(int64_t i);
  // A product of two activations (attention's Q K^T and P V): the batch_matmul template over the
  // natural operands, with the elementwise chain after it fused.
  absl::StatusOr<bool> TryBatchMatmul(int64_t i, const graph::NodeWorkload& analysed);
  // The config a template runs: the best record of (its task, this target) that the template
  // can instantiate, else the default. Sets *tuned when a record was taken.
  ops::Config BestConfig(const ops::Template& tmpl, const graph::Workload& w, bool* tuned) const;
  // A matrix product's output followed through the views after it that keep its last dim `n`
  // (marked done), so the chain after them fuses too. The last value reached.
  std::string FollowViews(std::string out, int64_t n);
  // EmitFused under the config for the thread count; a tuned config that does not take the
  // epilogue falls back to the default (*config and *tuned updated).
  absl::StatusOr<ops::KernelSource> EmitForThreads(const graph::Node& node,
                                                   const ops::Template& tmpl,
                                                   const ops::Epilogue& ep, ops::Config* config,
                                                   bool* tuned) const;
  absl::StatusOr<bool> TryPool(int64_t i);
  absl::StatusOr<bool> TryChannelMap(int64_t i);
  absl::StatusOr<bool> TryChannelShuffle(int64_t i);
  absl::StatusOr<bool> TryElementwise(int64_t i);
  // A float Transpose of a value on the blocked layout, or of the output of Transposes (each
  // through views), as one strided copy from that blocked buffer or those Transposes' input:
  // no unpack before it, no copy for the Transposes before it (channels-last LayerNorms after a
  // convolution, patch embeddings, MobileViT's unfold and fold).
  absl::StatusOr<bool> TryStridedTranspose(int64_t i);
  // After a Transpose was lowered on its natural input: its output's digits, so that a
  // Transpose after it composes with it.
  void RecordTranspose(const graph::Node& node);
  absl::StatusOr<bool> TryLowered(int64_t i);
  absl::Status Reference(int64_t i);

  // ---- elementwise groups
  // Grows a group from `seed_nodes` / `seed_values` (values it computes without a node) by the
  // consumers whose other inputs are available, while `accept` takes them.
  Group GrowGroup(const std::vector<int64_t>& seed_nodes, const std::set<std::string>& seed_values,
                  const Shape& shape, const std::function<bool(const graph::Node&)>& accept);
  // Values of `g` read by nodes outside it or by the graph's outputs.
  std::vector<std::string> Escaping(const Group& g, const std::set<std::string>& extra) const;
  // The program of `g`: external inputs in first-use order (scalar constants become literals,
  // `bound` values are already inputs), outputs `outs`.
  absl::StatusOr<ops::ElementwiseProgram> GroupProgram(const Group& g,
                                                       std::vector<std::string>* inputs,
                                                       const std::vector<std::string>& outs,
                                                       const std::vector<std::string>& bound);
  // How `v` broadcasts against a 4-D output of `out` shape in NCHW (for blocked programs).
  OperandKind Classify4d(const std::string& v, const Shape& out) const;
  // Epilogue fusion after a template writing value `out` (its channels are the last dim for a
  // dense output, dim 1 for a convolution's); fills the epilogue and its operands, marks the
  // nodes done and returns the value the kernel finally stores.
  struct Fusion {
    ops::Epilogue ep;
    std::vector<std::string> operand_values;
    std::vector<std::string> fused_ops;
    std::string final_value;
  };
  Fusion FuseEpilogue(const std::string& out, bool conv, bool dense_padded);
  // The config a convolution runs, given the fusion planned after it. Untuned: the default with
  // its input block adapted to the block the producer writes (the step between them is then a
  // plain copy). Tuned: the measured config (the default's own record included) with the least
  // kernel time plus the estimated time of the layout steps it adds, i.e. a repack of its input
  // when its input block differs from the producer's and of each blocked residual its epilogue
  // reads when its output block differs from the residual's. Tuning measures a kernel alone, so
  // without this a config a few percent faster there can cost a repack several times its gain.
  ops::Config ConvConfig(const graph::Node& node, const ops::Template& tmpl,
                         const graph::Workload& w, const Fusion& fusion, bool* tuned) const;
  // The view node (Reshape, Flatten, ...) that is the only reader of `v` when it keeps the last
  // dim `last` (so a matrix product's columns stay its columns), else -1.
  int64_t SoleViewConsumer(const std::string& v, int64_t last) const {
    auto c = consumers_.find(v);
    if (c == consumers_.end() || c->second.size() != 1 || output_slots_.count(v) > 0) return -1;
    const graph::Node& n = g_.nodes[static_cast<size_t>(c->second[0])];
    if (!IsViewOp(n.op_type) || n.outputs.size() != 1 || n.inputs[0] != v) return -1;
    const graph::TensorType* in = TypeOf(v);
    const graph::TensorType* out = TypeOf(n.outputs[0]);
    if (in == nullptr || out == nullptr || out->shape.empty() || out->shape.back() != last ||
        in->dtype != out->dtype ||
        graph::NumElements(in->shape) != graph::NumElements(out->shape)) {
      return -1;
    }
    return c->second[0];
  }
  absl::StatusOr<bool> RunBlockedGroup(int64_t i);
  absl::StatusOr<bool> RunNaturalGroup(int64_t i);

  // Removes the steps whose results no later step and no graph output reads (a Transpose that
  // its only reader, a matrix product, reads in place; a representation made and not used),
  // and the kernels only they called.
  void DropDeadSteps();
  absl::Status BuildKernels();
  void PlanMemory();

  const graph::Graph& g_;
  const CompileOptions& o_;
  CompiledModel::Impl* m_;
  std::map<std::string, State> states_;
  std::map<std::string, std::vector<int64_t>> consumers_;
  std::map<std::string, std::vector<int64_t>> output_slots_;  // graph output name -> indices
  std::vector<bool> output_claimed_;
  std::vector<bool> done_;
  std::vector<KernelJob> jobs_;
  std::map<std::string, int64_t> job_by_code_;
  // Constants the planner made, by the names it gave them.
  std::map<std::string, std::pair<graph::TensorType, Tensor>> synthetic_;
  // Values whose bytes a graph output shares through views (Reshape ... -> output): value ->
  // the output's name.
  std::map<std::string, std::string> view_of_output_;
  // A view's output -> the value at the start of its chain of views.
  std::map<std::string, std::string> view_root_;
  // A Transpose's output -> the buffer its copy read and its digits there.
  struct StridedSource {
    Ref src;
    int64_t src_bytes = 0;
    Digits digits;
  };
  std::map<std::string, StridedSource> strided_;
};

bool Planner::IsGroupable(const graph::Node& node) const {
  if (node.outputs.size() != 1 && node.op_type != "BatchNormalization") return false;
  if (ops::IsElementwiseOp(node.op_type)) return node.outputs.size() == 1;
  if (node.op_type != "BatchNormalization" || node.inputs.size() != 5) return false;
  if (node.GetInt("training_mode", 0) != 0) return false;
  for (size_t k = 1; k < node.outputs.size(); ++k) {
    if (!node.outputs[k].empty() && consumers_.count(node.outputs[k]) > 0) return false;
  }
  const graph::TensorType* x = TypeOf(node.inputs[0]);
  if (x == nullptr || x->dtype != DType::kFloat32 || x->shape.size() < 2) return false;
  for (size_t k = 1; k < 5; ++k) {
    const Tensor* t = ConstantOf(node.inputs[k]);
    if (t == nullptr || t->dtype() != DType::kFloat32 || t->num_elements() != x->shape[1]) {
      return false;
    }
  }
  return true;
}

std::pair<std::string, std::string> Planner::BatchNormScaleShift(const graph::Node& node) {
  const std::string scale = absl::StrCat(node.name, "#bn_scale"),
                    shift = absl::StrCat(node.name, "#bn_shift");
  if (synthetic_.count(scale) > 0) return {scale, shift};
  const graph::TensorType& x = *TypeOf(node.inputs[0]);
  const int64_t c = x.shape[1];
  // [C, 1, ..., 1]: per channel against [N, C, ...].
  Shape shape(x.shape.size() - 1, 1);
  shape[0] = c;
  Tensor s(DType::kFloat32, shape), t(DType::kFloat32, shape);
  const float* gamma = ConstantOf(node.inputs[1])->data<float>();
  const float* beta = ConstantOf(node.inputs[2])->data<float>();
  const float* mean = ConstantOf(node.inputs[3])->data<float>();
  const float* var = ConstantOf(node.inputs[4])->data<float>();
  const float eps = node.GetFloat("epsilon", 1e-5f);
  for (int64_t i = 0; i < c; ++i) {
    const float k = gamma[i] / std::sqrt(var[i] + eps);
    s.data<float>()[i] = k;
    t.data<float>()[i] = beta[i] - mean[i] * k;
  }
  synthetic_[scale] = {s.type(), s};
  synthetic_[shift] = {t.type(), t};
  return {scale, shift};
}

absl::StatusOr<Planner::State*> Planner::StateOf(const std::string& v) {
  auto it = states_.find(v);
  if (it != states_.end()) return &it->second;
  const Tensor* init = ConstantOf(v);
  if (init != nullptr) {
    State s;
    s.type = init->type();
    s.natural = NewConst(*init);
    s.constant = init;
    return &states_.emplace(v, std::move(s)).first->second;
  }
  return absl::InternalError(absl::StrCat("value '", v, "' used before it is computed"));
}

Ref Planner::NewNaturalStorage(const std::string& v) {
  std::string name = v;
  if (output_slots_.count(v) == 0) {
    auto view = view_of_output_.find(v);
    if (view != view_of_output_.end()) name = view->second;
  }
  auto it = output_slots_.find(name);
  if (it != output_slots_.end()) {
    for (int64_t k : it->second) {
      if (!output_claimed_[static_cast<size_t>(k)]) {
        output_claimed_[static_cast<size_t>(k)] = true;
        return {Ref::Kind::kOutput, k};
      }
    }
  }
  const graph::TensorType* t = TypeOf(v);
  return NewBuffer(t != nullptr ? TypeBytes(*t) : 0, v);
}

absl::StatusOr<Ref> Planner::Natural(const std::string& v) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  if (s->natural) return *s->natural;
  if (s->blocked.empty() && s->pending) {
    const Ref dst = NewNaturalStorage(v);
    LOOM_RETURN_IF_ERROR(Materialize(v, 1, dst).status());
    s = &states_.at(v);
    s->natural = dst;
    return dst;
  }
  if (s->blocked.empty()) {
    return absl::InternalError(absl::StrCat("value '", v, "' has no representation"));
  }
  const Blocked b = s->blocked.front();
  const BlockedGeo src = GeoOf(s->type.shape, b.bn);
  // [N, C, 1, 1] with whole blocks is the same bytes in both layouts.
  if (src.h * src.w == 1 && src.c % b.bn == 0) {
    s->natural = b.ref;
    return b.ref;
  }
  const Ref dst = NewNaturalStorage(v);
  s->natural = dst;
  ++m_->stats.layout_steps;
  AddStep(
      v, "unpack",
      RelayoutStep{.src = b.ref, .src_geo = src, .dst = dst, .dst_geo = GeoOf(s->type.shape, 1)});
  return dst;
}

absl::StatusOr<Ref> Planner::BlockedBuf(const std::string& v, int64_t bn) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  for (const Blocked& b : s->blocked) {
    if (b.bn == bn) return b.ref;
  }
  if (s->pending) return Materialize(v, bn);
  // NCHW is the blocked layout with blocks of one channel.
  if (bn == 1 && s->natural) return *s->natural;
  const BlockedGeo dst = GeoOf(s->type.shape, bn);
  if (s->constant != nullptr) {
    // Constants are packed once, here.
    Tensor packed(DType::kFloat32, {dst.elems()});
    const float* x = s->constant->data<float>();
    float* y = packed.data<float>();
    for (int64_t n = 0; n < dst.n; ++n) {
      for (int64_t c = 0; c < dst.c; ++c) {
        for (int64_t p = 0; p < dst.h * dst.w; ++p) {
          y[((n * dst.cb() + c / bn) * dst.h * dst.w + p) * bn + c % bn] =
              x[(n * dst.c + c) * dst.h * dst.w + p];
        }
      }
    }
    const Ref r = NewConst(std::move(packed));
    s->blocked.push_back({r, bn});
    return r;
  }
  // [N, C, 1, 1] natural with whole blocks is already blocked.
  if (s->natural && dst.h * dst.w == 1 && dst.c % bn == 0) {
    s->blocked.push_back({*s->natural, bn});
    return *s->natural;
  }
  const Ref buf = NewBuffer(dst.elems() * 4, absl::StrCat(v, " nchw", bn, "c"));
  const Blocked* from = s->blocked.empty() ? nullptr : &s->blocked.front();
  RelayoutStep step;
  if (from != nullptr) {
    step = {
        .src = from->ref, .src_geo = GeoOf(s->type.shape, from->bn), .dst = buf, .dst_geo = dst};
  } else {
    LOOM_ASSIGN_OR_RETURN(Ref nat, Natural(v));
    step = {.src = nat, .src_geo = GeoOf(s->type.shape, 1), .dst = buf, .dst_geo = dst};
  }
  ++m_->stats.layout_steps;
  AddStep(v, from != nullptr ? "repack" : "pack", step);
  s->blocked.push_back({buf, bn});
  return buf;
}

absl::StatusOr<Ref> Planner::PaddedBuf(const std::string& v, const Padded& p) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  auto it = s->padded.find(p);
  if (it != s->padded.end()) return it->second;
  // Without padding the conv reads the plain blocked layout: no step when the block matches.
  if (p.pt == 0 && p.pl == 0 && p.pb == 0 && p.pr == 0) return BlockedBuf(v, p.bn);
  BlockedGeo dst = GeoOf(s->type.shape, p.bn);
  dst.pt = p.pt;
  dst.pl = p.pl;
  dst.pb = p.pb;
  dst.pr = p.pr;
  const Ref buf = NewBuffer(dst.elems() * 4, absl::StrCat(v, " padded nchw", p.bn, "c"));
  if (s->blocked.empty() && s->pending) {
    LOOM_RETURN_IF_ERROR(Materialize(v, p.bn).status());
    s = &states_.at(v);
  }
  // Prefer a blocked source with the same block size: then rows are plain copies.
  const Blocked* from = nullptr;
  for (const Blocked& b : s->blocked) {
    if (from == nullptr || b.bn == p.bn) from = &b;
  }
  RelayoutStep step;
  std::string kind;
  if (from != nullptr) {
    step = {
        .src = from->ref, .src_geo = GeoOf(s->type.shape, from->bn), .dst = buf, .dst_geo = dst};
    kind = from->bn == p.bn ? "pad" : "repack+pad";
  } else {
    LOOM_ASSIGN_OR_RETURN(Ref nat, Natural(v));
    step = {.src = nat, .src_geo = GeoOf(s->type.shape, 1), .dst = buf, .dst_geo = dst};
    kind = "pack+pad";
  }
  ++m_->stats.layout_steps;
  AddStep(v, kind, step);
  s->padded.emplace(p, buf);
  return buf;
}

Planner::PendingMap Planner::Compose(PendingMap map) const {
  PendingMap out;
  out.bn = map.bn;
  out.kind = map.kind;
  out.name = map.name;
  auto source = [&](const std::string& v) {
    for (size_t k = 0; k < out.srcs.size(); ++k) {
      if (out.srcs[k] == v) return static_cast<int64_t>(k);
    }
    out.srcs.push_back(v);
    return static_cast<int64_t>(out.srcs.size()) - 1;
  };
  auto add = [&](int64_t src, int64_t src_c, int64_t dst_c, int64_t len) {
    if (!out.runs.empty()) {
      ChannelRun& last = out.runs.back();
      if (last.src == src && last.src_c + last.len == src_c && last.dst_c + last.len == dst_c) {
        last.len += len;
        return;
      }
    }
    out.runs.push_back({src, src_c, dst_c, len});
  };
  std::string inner_kind;
  for (const ChannelRun& r : map.runs) {
    const std::string& v = map.srcs[static_cast<size_t>(r.src)];
    auto st = states_.find(v);
    const bool compose = st != states_.end() && st->second.pending && st->second.blocked.empty() &&
                         !st->second.natural;
    if (!compose) {
      add(source(v), r.src_c, r.dst_c, r.len);
      continue;
    }
    const PendingMap& inner = *st->second.pending;
    if (inner_kind.empty()) inner_kind = inner.kind;
    // Each channel of the run through the inner map's runs (sorted by destination channel).
    for (const ChannelRun& q : inner.runs) {
      const int64_t lo = std::max(r.src_c, q.dst_c);
      const int64_t hi = std::min(r.src_c + r.len, q.dst_c + q.len);
      if (lo >= hi) continue;
      add(source(inner.srcs[static_cast<size_t>(q.src)]), q.src_c + (lo - q.dst_c),
          r.dst_c + (lo - r.src_c), hi - lo);
    }
  }
  std::sort(out.runs.begin(), out.runs.end(),
            [](const ChannelRun& a, const ChannelRun& b) { return a.dst_c < b.dst_c; });
  // Composed maps are one gather, whatever made them.
  if (!inner_kind.empty()) out.kind = "channel_map";
  return out;
}

absl::StatusOr<Ref> Planner::Materialize(const std::string& v, int64_t bn, std::optional<Ref> dst) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  const PendingMap map = *s->pending;
  const graph::TensorType type = s->type;
  ChannelMapStep step;
  for (const std::string& src : map.srcs) {
    const int64_t sbn = BlockedBn(src) > 0 ? BlockedBn(src) : bn;
    LOOM_ASSIGN_OR_RETURN(Ref r, BlockedBuf(src, sbn));
    step.srcs.push_back(r);
    step.src_geos.push_back(GeoOf(TypeOf(src)->shape, sbn));
  }
  step.dst_geo = GeoOf(type.shape, bn);
  step.dst = dst ? *dst : NewBuffer(step.dst_geo.elems() * 4, absl::StrCat(v, " nchw", bn, "c"));
  step.runs = map.runs;
  const Ref out = step.dst;
  AddStep(map.name, absl::StrCat(map.kind, "(nchwc)"), std::move(step));
  ++m_->stats.blocked_steps;
  // A blocked representation (NCHW written for Natural is recorded there).
  if (!dst) states_.at(v).blocked.push_back({out, bn});
  return out;
}

int64_t Planner::AddKernel(const ops::KernelSource& src, const ops::Config& config,
                           KernelArgs args) {
  std::string key = absl::StrCat(src.compile_flags, "\n", src.code, "\n");
  for (size_t a = 0; a < args.bytes.size(); ++a) {
    absl::StrAppend(&key, args.bytes[a], args.written[a] ? "w," : "r,");
  }
  auto found = job_by_code_.find(key);
  if (found != job_by_code_.end()) return found->second;
  const auto k = static_cast<int64_t>(jobs_.size());
  job_by_code_.emplace(std::move(key), k);
  jobs_.push_back({src, config, std::move(args)});
  return k;
}

// ---------------------------------------------------------------------------------------------
// Views.

absl::StatusOr<bool> Planner::TryView(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  if (node.inputs.empty() || node.outputs.empty()) return false;
  if (node.op_type == "Transpose") {
    const graph::TensorType* t = TypeOf(node.inputs[0]);
    if (t == nullptr || !IsUnitDimTranspose(node, t->shape)) return false;
  } else if (!IsViewOp(node.op_type)) {
    return false;
  }
  if (node.op_type == "Dropout") {
    // Inference: the identity. A named mask output (read by a node or a graph output) must be
    // written, so such a Dropout is not a view; the passes drop the ones whose mask is unused.
    if (node.outputs.size() > 1 && !node.outputs[1].empty()) return false;
  } else if (node.outputs.size() != 1) {
    return false;
  }
  const graph::TensorType* in = TypeOf(node.inputs[0]);
  const graph::TensorType* out = TypeOf(node.outputs[0]);
  if (in == nullptr || out == nullptr || in->dtype != out->dtype ||
      graph::NumElements(in->shape) != graph::NumElements(out->shape)) {
    return false;
  }
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(node.inputs[0]));
  const Tensor* constant = s->constant;
  LOOM_ASSIGN_OR_RETURN(Ref r, Natural(node.inputs[0]));
  State& st = Define(node.outputs[0]);
  st.natural = r;
  st.constant = constant;
  auto root = view_root_.find(node.inputs[0]);
  view_root_[node.outputs[0]] = root == view_root_.end() ? node.inputs[0] : root->second;
  ++m_->stats.views;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Elementwise groups.

Planner::Group Planner::GrowGroup(const std::vector<int64_t>& seed_nodes,
                                  const std::set<std::string>& seed_values, const Shape& shape,
                                  const std::function<bool(const graph::Node&)>& accept) {
  Group g;
  g.shape = shape;
  g.produced = seed_values;
  std::set<int64_t> in_group;
  for (int64_t n : seed_nodes) {
    g.nodes.push_back(n);
    in_group.insert(n);
    for (const std::string& o : g_.nodes[static_cast<size_t>(n)].outputs) g.produced.insert(o);
  }
  bool grew = true;
  while (o_.fuse && grew && g.nodes.size() < kMaxGroupNodes) {
    grew = false;
    // The earliest candidate in graph order, so the group's instructions stay in order.
    int64_t best = -1;
    for (const std::string& v : g.produced) {
      auto c = consumers_.find(v);
      if (c == consumers_.end()) continue;
      for (int64_t n : c->second) {
        if (done_[static_cast<size_t>(n)] || in_group.count(n) > 0 || (best >= 0 && n >= best)) {
          continue;
        }
        const graph::Node& node = g_.nodes[static_cast<size_t>(n)];
        if (!IsGroupable(node)) continue;
        const graph::TensorType* t = TypeOf(node.outputs[0]);
        if (t == nullptr || t->shape != shape) continue;
        bool inputs_ok = true;
        for (const std::string& in : node.inputs) {
          if (!in.empty() && g.produced.count(in) == 0 && !Available(in)) inputs_ok = false;
        }
        if (inputs_ok && accept(node)) best = n;
      }
    }
    if (best >= 0) {
      g.nodes.push_back(best);
      in_group.insert(best);
      g.produced.insert(g_.nodes[static_cast<size_t>(best)].outputs[0]);
      grew = true;
    }
  }
  std::sort(g.nodes.begin(), g.nodes.end());
  return g;
}

std::vector<std::string> Planner::Escaping(const Group& g,
                                           const std::set<std::string>& extra) const {
  std::set<int64_t> in_group(g.nodes.begin(), g.nodes.end());
  std::vector<std::string> out;
  auto escapes = [&](const std::string& v) {
    if (output_slots_.count(v) > 0) return true;
    auto c = consumers_.find(v);
    if (c == consumers_.end()) return false;
    for (int64_t n : c->second) {
      if (in_group.count(n) == 0) return true;
    }
    return false;
  };
  for (const std::string& v : extra) {
    if (escapes(v)) out.push_back(v);
  }
  for (int64_t n : g.nodes) {
    const std::string& v = g_.nodes[static_cast<size_t>(n)].outputs[0];
    if (escapes(v)) out.push_back(v);
  }
  return out;
}

absl::StatusOr<ops::ElementwiseProgram> Planner::GroupProgram(
    const Group& g, std::vector<std::string>* inputs, const std::vector<std::string>& outs,
    const std::vector<std::string>& bound) {
  ops::ElementwiseProgram p;
  std::map<std::string, int32_t> value;
  for (const std::string& b : bound) {
    const graph::TensorType* t = TypeOf(b);
    value[b] = p.AddInput(t != nullptr ? t->dtype : DType::kFloat32);
    inputs->push_back(b);
  }
  // External inputs first (inputs precede instructions in a program), literals aside. A
  // BatchNormalization reads X and its scale and shift.
  std::set<std::string> produced;
  for (int64_t n : g.nodes) produced.insert(g_.nodes[static_cast<size_t>(n)].outputs[0]);
  std::map<int64_t, std::vector<std::string>> operands;
  for (int64_t n : g.nodes) {
    const graph::Node& node = g_.nodes[static_cast<size_t>(n)];
    if (node.op_type == "BatchNormalization") {
      const auto [scale, shift] = BatchNormScaleShift(node);
      operands[n] = {node.inputs[0], scale, shift};
    } else {
      operands[n] = node.inputs;
    }
  }
  std::vector<std::pair<std::string, double>> literals;
  for (int64_t n : g.nodes) {
    for (const std::string& in : operands[n]) {
      if (in.empty() || produced.count(in) > 0 || value.count(in) > 0) continue;
      const Tensor* c = ConstantOf(in);
      if (c != nullptr && c->num_elements() == 1 && c->dtype() != DType::kFloat16 &&
          c->dtype() != DType::kBFloat16) {
        value[in] = -2;  // placeholder: a literal, made below
        literals.emplace_back(in, c->DoubleAt(0));
        continue;
      }
      const graph::TensorType* t = TypeOf(in);
      if (t == nullptr) return absl::InternalError(absl::StrCat("no type for '", in, "'"));
      value[in] = p.AddInput(t->dtype);
      inputs->push_back(in);
    }
  }
  for (const auto& [name, v] : literals) {
    value[name] = p.Const(TypeOf(name)->dtype, v);
  }
  for (int64_t n : g.nodes) {
    const graph::Node& node = g_.nodes[static_cast<size_t>(n)];
    std::vector<int32_t> args;
    for (const std::string& in : operands[n]) args.push_back(in.empty() ? -1 : value.at(in));
    if (node.op_type == "BatchNormalization") {
      ops::EwInstr mul{.op = ops::EwOp::kMul, .dtype = DType::kFloat32, .a = args[0], .b = args[1]};
      ops::EwInstr add{
          .op = ops::EwOp::kAdd, .dtype = DType::kFloat32, .a = p.Add(mul), .b = args[2]};
      value[node.outputs[0]] = p.Add(add);
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(
        int32_t v, ops::AppendNode(node, g_.opset, args, TypeOf(node.outputs[0])->dtype, &p));
    value[node.outputs[0]] = v;
  }
  for (const std::string& o : outs) p.AddOutput(value.at(o), TypeOf(o)->dtype);
  return p;
}

Planner::OperandKind Planner::Classify4d(const std::string& v, const Shape& out) const {
  const graph::TensorType* t = TypeOf(v);
  if (t == nullptr || t->shape.size() > 4) return OperandKind::kNone;
  const Shape s = PadTo(t->shape, 4);
  if (graph::NumElements(s) == 1) return OperandKind::kScalar;
  if (t->dtype != DType::kFloat32) return OperandKind::kNone;
  for (size_t d = 0; d < 4; ++d) {
    if (s[d] != 1 && s[d] != out[d]) return OperandKind::kNone;
  }
  const bool hw_full = s[2] == out[2] && s[3] == out[3];
  const bool hw_one = s[2] == 1 && s[3] == 1;
  if (s[1] == out[1] && out[1] != 1) {
    if (hw_full && s[0] == out[0]) return OperandKind::kElement;
    if (hw_one)
      return s[0] == out[0] && out[0] != 1 ? OperandKind::kBatchChannel : OperandKind::kChannel;
    return OperandKind::kNone;
  }
  // One channel: spatial maps (or per image), read in NCHW.
  if (hw_full || hw_one) return OperandKind::kSpatial;
  return OperandKind::kNone;
}

absl::StatusOr<bool> Planner::RunBlockedGroup(int64_t i) {
  const graph::Node& seed = g_.nodes[static_cast<size_t>(i)];
  if (!Is4dFloat(seed.outputs[0])) return false;
  const Shape shape = TypeOf(seed.outputs[0])->shape;
  // A blocked operand of the output's shape decides the block size; without one, the chain runs
  // on natural tensors.
  int64_t bn = 0;
  for (const std::string& in : seed.inputs) {
    const int64_t b = in.empty() ? 0 : BlockedBn(in);
    if (b > 0 && Classify4d(in, shape) == OperandKind::kElement) {
      bn = b;
      break;
    }
  }
  if (bn == 0) return false;
  auto accept = [&](const graph::Node& node) {
    if (!Is4dFloat(node.outputs[0])) return false;
    for (const std::string& in : GroupOperands(node)) {
      if (in.empty()) continue;
      const graph::TensorType* t = TypeOf(in);
      if (t == nullptr) return false;
      // Non-float operands are fine when they are scalar constants (Clip bounds).
      if (Classify4d(in, shape) == OperandKind::kNone) return false;
    }
    return true;
  };
  if (!accept(seed)) return false;
  Group g = GrowGroup({i}, {}, shape, accept);
  std::vector<std::string> outs = Escaping(g, {});
  std::vector<std::string> inputs;
  absl::StatusOr<ops::ElementwiseProgram> prog = GroupProgram(g, &inputs, outs, {});
  if (!prog.ok() || inputs.size() + outs.size() > kMaxGroupOperands) return false;
  for (DType t : prog->inputs) {
    if (t != DType::kFloat32) return false;
  }
  for (DType t : prog->output_types) {
    if (t != DType::kFloat32) return false;
  }
  for (const ops::EwInstr& ins : prog->instrs) {
    if (ins.dtype != DType::kFloat32 && ins.op != ops::EwOp::kEqual && ins.op != ops::EwOp::kLess &&
        ins.op != ops::EwOp::kLessOrEqual && ins.op != ops::EwOp::kGreater &&
        ins.op != ops::EwOp::kGreaterOrEqual && ins.op != ops::EwOp::kIsNaN &&
        ins.op != ops::EwOp::kIsInf) {
      return false;
    }
  }
  // The iteration space [N, C blocks, H*W, bn]; operands by their broadcast pattern.
  const BlockedGeo og = GeoOf(shape, bn);
  const int64_t hw = og.h * og.w;
  ops::ElementwiseSpec spec;
  spec.program = *std::move(prog);
  spec.dims = {og.n, og.cb(), hw, bn};
  std::vector<Ref> args;
  for (const std::string& in : inputs) {
    const Shape s = PadTo(TypeOf(in)->shape, 4);
    std::vector<int64_t> strides;
    switch (Classify4d(in, shape)) {
      case OperandKind::kElement: {
        LOOM_ASSIGN_OR_RETURN(Ref r, BlockedBuf(in, bn));
        args.push_back(r);
        strides = {og.cb() * hw * bn, hw * bn, bn, 1};
        break;
      }
      case OperandKind::kChannel:
      case OperandKind::kBatchChannel: {
        LOOM_ASSIGN_OR_RETURN(Ref r, BlockedBuf(in, bn));
        args.push_back(r);
        strides = {s[0] == og.n && og.n > 1 ? og.cb() * bn : 0, bn, 0, 1};
        break;
      }
      case OperandKind::kSpatial:
      case OperandKind::kScalar: {
        LOOM_ASSIGN_OR_RETURN(Ref r, Natural(in));
        args.push_back(r);
        const int64_t shw = s[2] * s[3];
        strides = {s[0] == og.n && og.n > 1 ? shw : 0, 0, shw > 1 ? 1 : 0, 0};
        break;
      }
      default:
        return absl::InternalError(absl::StrCat("operand '", in, "' of a blocked chain"));
    }
    spec.strides.push_back(std::move(strides));
  }
  absl::StatusOr<ops::KernelSource> src = ops::EmitElementwise(spec, o_.target);
  if (!src.ok()) return false;
  KernelArgs ka;
  ka.bytes = ops::ElementwiseArgBytes(spec);
  ka.written.assign(ka.bytes.size(), false);
  std::vector<std::string> kinds;
  for (const std::string& o : outs) {
    const Ref buf = NewBuffer(og.elems() * 4, absl::StrCat(o, " nchw", bn, "c"));
    args.push_back(buf);
    Define(o).blocked.push_back({buf, bn});
  }
  for (size_t k = inputs.size(); k < ka.written.size(); ++k) ka.written[k] = true;
  for (int64_t n : g.nodes) {
    done_[static_cast<size_t>(n)] = true;
    kinds.push_back(g_.nodes[static_cast<size_t>(n)].op_type);
  }
  const int64_t kidx = AddKernel(*src, ops::Config{}, std::move(ka));
  AddKernelStep(seed.name, absl::StrCat(absl::StrJoin(kinds, "+"), "(nchwc)"), kidx,
                std::move(args));
  ++m_->stats.blocked_steps;
  m_->stats.fused_ops += static_cast<int64_t>(g.nodes.size()) - 1;
  return true;
}

absl::StatusOr<bool> Planner::RunNaturalGroup(int64_t i) {
  const graph::Node& seed = g_.nodes[static_cast<size_t>(i)];
  const graph::TensorType* ot = TypeOf(seed.outputs[0]);
  if (ot == nullptr) return false;
  const Shape shape = ot->shape;
  auto accept = [&](const graph::Node& node) {
    for (const std::string& in : GroupOperands(node)) {
      const graph::TensorType* t = in.empty() ? nullptr : TypeOf(in);
      if (!in.empty() && (t == nullptr || t->shape.size() > shape.size())) return false;
    }
    return true;
  };
  if (!accept(seed)) return false;
  // A trial program for the seed alone: an operator or dtype the IR does not generate stops here.
  Group single{{i}, {seed.outputs[0]}, shape};
  std::vector<std::string> trial_inputs;
  if (!GroupProgram(single, &trial_inputs, {seed.outputs[0]}, {}).ok()) return false;
  Group g = GrowGroup({i}, {}, shape, [&](const graph::Node& node) {
    if (!accept(node)) return false;
    // The grown group must still print: try the node on its own.
    Group one{{static_cast<int64_t>(&node - g_.nodes.data())}, {node.outputs[0]}, shape};
    std::vector<std::string> ins;
    return GroupProgram(one, &ins, {node.outputs[0]}, {}).ok();
  });
  std::vector<std::string> outs = Escaping(g, {});
  std::vector<std::string> inputs;
  absl::StatusOr<ops::ElementwiseProgram> prog = GroupProgram(g, &inputs, outs, {});
  if (!prog.ok() || inputs.size() + outs.size() > kMaxGroupOperands) {
    // Too many operands for one kernel: the seed alone.
    g = single;
    outs = {seed.outputs[0]};
    inputs.clear();
    prog = GroupProgram(g, &inputs, outs, {});
    if (!prog.ok()) return false;
  }
  std::vector<Shape> shapes;
  for (const std::string& in : inputs) shapes.push_back(TypeOf(in)->shape);
  absl::StatusOr<ops::ElementwiseSpec> spec = ops::BroadcastSpec(*std::move(prog), shapes, shape);
  if (!spec.ok()) return false;
  absl::StatusOr<ops::KernelSource> src = ops::EmitElementwise(*spec, o_.target);
  if (!src.ok()) return false;
  std::vector<Ref> args;
  for (const std::string& in : inputs) {
    LOOM_ASSIGN_OR_RETURN(Ref r, Natural(in));
    args.push_back(r);
  }
  KernelArgs ka;
  ka.bytes = ops::ElementwiseArgBytes(*spec);
  ka.written.assign(ka.bytes.size(), false);
  for (size_t k = inputs.size(); k < ka.written.size(); ++k) ka.written[k] = true;
  for (const std::string& o : outs) {
    const Ref r = NewNaturalStorage(o);
    args.push_back(r);
    Define(o).natural = r;
  }
  std::vector<std::string> kinds;
  for (int64_t n : g.nodes) {
    done_[static_cast<size_t>(n)] = true;
    kinds.push_back(g_.nodes[static_cast<size_t>(n)].op_type);
  }
  const int64_t kidx = AddKernel(*src, ops::Config{}, std::move(ka));
  AddKernelStep(seed.name, absl::StrJoin(kinds, "+"), kidx, std::move(args));
  ++m_->stats.generated_steps;
  m_->stats.fused_ops += static_cast<int64_t>(g.nodes.size()) - 1;
  return true;
}

absl::StatusOr<bool> Planner::TryElementwise(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  if (!IsGroupable(node)) return false;
  LOOM_ASSIGN_OR_RETURN(bool blocked, RunBlockedGroup(i));
  if (blocked) return true;
  return RunNaturalGroup(i);
}

// ---------------------------------------------------------------------------------------------
// Templates and their epilogues.

Planner::Fusion Planner::FuseEpilogue(const std::string& out, bool conv, bool dense_padded) {
  Fusion f;
  f.final_value = out;
  if (!o_.fuse) return f;
  const graph::TensorType* ot = TypeOf(out);
  if (ot == nullptr || ot->dtype != DType::kFloat32 || ot->shape.empty()) return f;
  const Shape shape = ot->shape;
  // Operands the epilogue can read: computed (or constant) float32 values laid out per channel,
  // per element or per (image, channel).
  auto operand_kind = [&](const std::string& v) -> OperandKind {
    const graph::TensorType* t = TypeOf(v);
    if (t == nullptr || t->dtype != DType::kFloat32 || t->shape.size() > shape.size()) {
      return OperandKind::kNone;
    }
    if (graph::NumElements(t->shape) == 1) {
      return ConstantOf(v) != nullptr ? OperandKind::kLiteral : OperandKind::kNone;
    }
    if (conv) {
      const OperandKind k = Classify4d(v, shape);
      return k == OperandKind::kSpatial || k == OperandKind::kScalar ? OperandKind::kNone : k;
    }
    // A matrix product's output [..., M, N]: channels are its columns.
    const Shape s = PadTo(t->shape, shape.size());
    bool channel = s.back() == shape.back();
    for (size_t d = 0; d + 1 < s.size(); ++d) channel = channel && s[d] == 1;
    if (channel) return ConstantOf(v) != nullptr ? OperandKind::kChannel : OperandKind::kNone;
    if (s == shape && !dense_padded) return OperandKind::kElement;
    return OperandKind::kNone;
  };
  auto accept = [&](const graph::Node& node) {
    const graph::TensorType* t = TypeOf(node.outputs[0]);
    if (t == nullptr || t->dtype != DType::kFloat32) return false;
    for (const std::string& in : GroupOperands(node)) {
      if (in.empty()) continue;
      const graph::TensorType* it = TypeOf(in);
      if (it == nullptr) return false;
      // Produced inside the group, or a usable operand.
      if (!Available(in)) continue;
      if (in != out && operand_kind(in) == OperandKind::kNone) {
        const Tensor* c = ConstantOf(in);
        if (c == nullptr || c->num_elements() != 1) return false;
      }
    }
    return true;
  };
  std::vector<int64_t> seeds;
  Group g = GrowGroup(seeds, {out}, shape, accept);
  // Shrink until only one value leaves the group (the one the kernel stores) and the program is
  // a float32 program the template can apply.
  while (!g.nodes.empty()) {
    std::vector<std::string> esc = Escaping(g, {out});
    const std::string last = g_.nodes[static_cast<size_t>(g.nodes.back())].outputs[0];
    bool ok = esc.size() == 1 && esc[0] == last;
    std::vector<std::string> inputs;
    absl::StatusOr<ops::ElementwiseProgram> p;
    if (ok) {
      p = GroupProgram(g, &inputs, {last}, {out});
      ok = p.ok() && ops::IsVectorizable(*p) && inputs.size() <= kMaxGroupOperands;
    }
    if (ok) {
      f.ep.program = *std::move(p);
      for (size_t k = 1; k < inputs.size(); ++k) {
        ops::EpilogueOperand op;
        switch (operand_kind(inputs[k])) {
          case OperandKind::kChannel:
            op.kind = ops::EpilogueOperand::Kind::kChannel;
            break;
          case OperandKind::kBatchChannel:
            op.kind = ops::EpilogueOperand::Kind::kBatchChannel;
            break;
          default:
            op.kind = ops::EpilogueOperand::Kind::kElement;
            break;
        }
        f.ep.operands.push_back(op);
        f.operand_values.push_back(inputs[k]);
      }
      for (int64_t n : g.nodes) f.fused_ops.push_back(g_.nodes[static_cast<size_t>(n)].op_type);
      f.final_value = last;
      for (int64_t n : g.nodes) done_[static_cast<size_t>(n)] = true;
      return f;
    }
    // Drop the latest node and everything that depended on it.
    g.nodes.pop_back();
    std::set<std::string> produced = {out};
    std::vector<int64_t> kept;
    for (int64_t n : g.nodes) {
      bool deps_ok = true;
      for (const std::string& in : g_.nodes[static_cast<size_t>(n)].inputs) {
        if (in.empty() || produced.count(in) > 0 || Available(in)) continue;
        deps_ok = false;
      }
      if (deps_ok) {
        kept.push_back(n);
        produced.insert(g_.nodes[static_cast<size_t>(n)].outputs[0]);
      }
    }
    g.nodes = kept;
    g.produced = produced;
  }
  return f;
}

ops::Config Planner::BestConfig(const ops::Template& tmpl, const graph::Workload& w,
                                bool* tuned) const {
  *tuned = false;
  if (o_.records != nullptr) {
    absl::StatusOr<std::vector<tune::Record>> best =
        o_.records->BestK(graph::WorkloadKey(w), o_.target.Key(), 1);
    if (best.ok() && !best->empty() && (*best)[0].template_name == tmpl.name() &&
        tmpl.space().Contains(ops::Config{(*best)[0].config_index})) {
      *tuned = true;
      return ops::Config{(*best)[0].config_index};
    }
  }
  return tmpl.DefaultConfig();
}

ops::Config Planner::ConvConfig(const graph::Node& node, const ops::Template& tmpl,
                                const graph::Workload& w, const Fusion& fusion, bool* tuned) const {
  *tuned = false;
  const ops::Config default_config = tmpl.DefaultConfig();
  const int64_t in_bn = BlockedBn(node.inputs[0]);
  ops::Config untuned = default_config;
  if (in_bn > 0) {
    ops::Config adapted = AdaptInputBlock(tmpl, default_config, in_bn);
    if (!(adapted == default_config) && tmpl.EmitFused(adapted, fusion.ep).ok()) {
      untuned = adapted;
    }
  }
  if (o_.records == nullptr) return untuned;
  absl::StatusOr<std::vector<tune::Record>> measured =
      o_.records->BestK(graph::WorkloadKey(w), o_.target.Key(), kConfigsWeighed);
  if (!measured.ok()) return untuned;

  // Elements the layout steps this config adds would move.
  auto layout_elements = [&](const ops::Config& c) {
    const std::vector<ops::BufferSpec> buffers = tmpl.Buffers(c);
    int64_t elements = 0;
    if (in_bn > 0 && buffers.front().shape[4] != in_bn) {
      const graph::TensorType* t = TypeOf(node.inputs[0]);
      if (t != nullptr) elements += graph::NumElements(t->shape);
    }
    const int64_t out_bn = buffers.back().shape[4];
    for (size_t k = 0; k < fusion.ep.operands.size(); ++k) {
      if (fusion.ep.operands[k].kind == ops::EpilogueOperand::Kind::kChannel) continue;
      const std::string& v = fusion.operand_values[k];
      const int64_t bn = BlockedBn(v);
      const graph::TensorType* t = TypeOf(v);
      if (bn > 0 && bn != out_bn && t != nullptr) elements += graph::NumElements(t->shape);
    }
    return elements;
  };
  struct Candidate {
    ops::Config config;
    double seconds = 0;
  };
  std::vector<Candidate> candidates;
  std::optional<double> default_seconds;
  for (const tune::Record& r : *measured) {
    if (r.template_name != tmpl.name() || !tmpl.space().Contains(ops::Config{r.config_index})) {
      continue;
    }
    const ops::Config c{r.config_index};
    if (c == default_config || c == untuned) {
      // The adapted default runs the default's tiles over another input block: it is taken to
      // run as fast as the default measured (the untuned plan's premise too).
      default_seconds = std::min(r.median_cost, default_seconds.value_or(r.median_cost));
      continue;
    }
    candidates.push_back(
        {c, r.median_cost + static_cast<double>(layout_elements(c)) * kRepackSecondsPerElement});
  }
  if (default_seconds.has_value()) {
    candidates.push_back(
        {untuned, *default_seconds +
                      static_cast<double>(layout_elements(untuned)) * kRepackSecondsPerElement});
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.seconds < b.seconds; });
  for (const Candidate& c : candidates) {
    if (tmpl.EmitFused(c.config, fusion.ep).ok()) {
      *tuned = true;
      return c.config;
    }
  }
  return untuned;
}

std::string Planner::FollowViews(std::string out, int64_t n) {
  if (!o_.fuse) return out;
  for (int64_t v = SoleViewConsumer(out, n); v >= 0; v = SoleViewConsumer(out, n)) {
    done_[static_cast<size_t>(v)] = true;
    out = g_.nodes[static_cast<size_t>(v)].outputs[0];
    ++m_->stats.views;
  }
  return out;
}

absl::StatusOr<ops::KernelSource> Planner::EmitForThreads(const graph::Node& node,
                                                          const ops::Template& tmpl,
                                                          const ops::Epilogue& ep,
                                                          ops::Config* config, bool* tuned) const {
  // Records are measured on one core: the template re-picks thread-only knobs.
  *config = tmpl.ForThreads(*config, o_.num_threads);
  absl::StatusOr<ops::KernelSource> src = tmpl.EmitFused(*config, ep);
  if (!src.ok() && *tuned) {
    *config = tmpl.DefaultConfig();
    *tuned = false;
    src = tmpl.EmitFused(*config, ep);
  }
  if (!src.ok()) {
    return absl::InternalError(absl::StrCat(node.Describe(), ": ", src.status().message()));
  }
  return *std::move(src);
}

absl::StatusOr<bool> Planner::TryTemplate(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") return false;
  if (node.outputs.size() != 1) return false;
  // The operands as the workload reads them: a dense A may be the input of a Transpose read in
  // place (trans_a; graph::AnalyzeTunableNode decides it for the tasks too).
  absl::StatusOr<graph::NodeWorkload> analysed = graph::AnalyzeTunableNode(g_, node);
  if (!analysed.ok()) return false;
  const graph::Workload* w = &analysed->workload;
  const std::string& data_value = analysed->a;
  const bool conv = node.op_type == "Conv";
  if (conv && !Is4dFloat(node.inputs[0])) return false;
  if (!conv && w->kind == graph::TaskKind::kBatchMatmul) return TryBatchMatmul(i, *analysed);
  if (!conv && w->kind != graph::TaskKind::kDense) return false;
  if (node.GetFloat("alpha", 1.0f) != 1.0f || node.GetFloat("beta", 1.0f) != 1.0f) return false;
  const Tensor* weight = g_.FindInitializer(node.inputs[1]);
  if (weight == nullptr || weight->dtype() != DType::kFloat32) return false;
  const int64_t channels = conv ? w->k : w->n;
  const Tensor* bias = nullptr;
  if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
    bias = g_.FindInitializer(node.inputs[2]);
    if (bias == nullptr || bias->num_elements() != channels || bias->dtype() != DType::kFloat32) {
      return false;
    }
  }
  // The data operand's element count must be what the workload reads.
  const graph::TensorType* in_t = TypeOf(data_value);
  if (in_t == nullptr || in_t->dtype != DType::kFloat32) return false;
  if (!conv && graph::NumElements(in_t->shape) != w->m * w->k) return false;
  absl::StatusOr<std::unique_ptr<ops::Template>> made = ops::MakeTemplate(*w, o_.target);
  if (!made.ok()) return false;
  const ops::Template& tmpl = **made;

  bool tuned = false;
  ops::Config config = conv ? tmpl.DefaultConfig() : BestConfig(tmpl, *w, &tuned);
  // A dense output is [M, Np] with N padded to the template's block; a residual in the
  // epilogue must share that layout, so it fuses only without padding.
  const int64_t np_default = tmpl.Buffers(config).back().shape.back();
  // A dense output seen through the views after it (Reshape to [B, S, N] and the like: the same
  // row-major bytes with the same last dim), so the chain after them fuses too.
  const std::string out = conv ? node.outputs[0] : FollowViews(node.outputs[0], w->n);
  Fusion fusion = FuseEpilogue(out, conv, !conv && np_default != w->n);
  ops::Epilogue& ep = fusion.ep;
  ep.bias = bias != nullptr;

  if (conv) config = ConvConfig(node, tmpl, *w, fusion, &tuned);
  LOOM_ASSIGN_OR_RETURN(ops::KernelSource src, EmitForThreads(node, tmpl, ep, &config, &tuned));
  const std::vector<ops::BufferSpec> specs = tmpl.FusedBuffers(config, ep);
  const Shape& out_shape = specs.back().shape;
  if (!conv && out_shape.back() != w->n) {
    // Padded columns: a residual operand cannot share the layout (FuseEpilogue allowed it only
    // without padding under the default config; a tuned config may pad).
    for (const ops::EpilogueOperand& op : ep.operands) {
      if (op.kind == ops::EpilogueOperand::Kind::kElement) {
        return absl::InternalError(absl::StrCat(node.Describe(), ": padded residual"));
      }
    }
  }

  std::vector<Ref> args;
  int64_t out_bn = conv ? out_shape[4] : 0;
  if (conv) {
    const int64_t in_bn = specs[0].shape[4];
    LOOM_ASSIGN_OR_RETURN(Ref in, PaddedBuf(node.inputs[0], Padded{in_bn, w->pad_top, w->pad_left,
                                                                   w->pad_bottom, w->pad_right}));
    args.push_back(in);
  } else {
    LOOM_ASSIGN_OR_RETURN(Ref in, Natural(data_value));
    args.push_back(in);
  }
  // The packed weight (the data operand only fixes shapes), then the padded bias.
  const std::vector<Shape> nat = tmpl.NaturalInputShapes();
  std::vector<Tensor> packed = tmpl.PackInputs(config, {Tensor(DType::kFloat32, nat[0]), *weight});
  args.push_back(NewConst(std::move(packed[1])));
  const int64_t padded_channels = conv ? CeilDiv(w->k, out_bn) * out_bn : out_shape.back();
  auto channel_vector = [&](const Tensor& t) {
    Tensor b(DType::kFloat32, {padded_channels});
    std::copy(t.data<float>(), t.data<float>() + std::min(t.num_elements(), padded_channels),
              b.data<float>());
    return b;
  };
  if (ep.bias) args.push_back(NewConst(channel_vector(*bias)));
  for (size_t k = 0; k < ep.operands.size(); ++k) {
    const std::string& v = fusion.operand_values[k];
    switch (ep.operands[k].kind) {
      case ops::EpilogueOperand::Kind::kChannel: {
        LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
        if (s->constant != nullptr) {
          args.push_back(NewConst(channel_vector(*s->constant)));
        } else if (conv) {
          LOOM_ASSIGN_OR_RETURN(Ref r, BlockedBuf(v, out_bn));
          args.push_back(r);
        } else {
          return absl::InternalError(
              absl::StrCat(node.Describe(), ": a computed per-column epilogue operand"));
        }
        break;
      }
      case ops::EpilogueOperand::Kind::kElement:
      case ops::EpilogueOperand::Kind::kBatchChannel: {
        if (conv) {
          LOOM_ASSIGN_OR_RETURN(Ref r, BlockedBuf(v, out_bn));
          args.push_back(r);
        } else {
          LOOM_ASSIGN_OR_RETURN(Ref r, Natural(v));
          args.push_back(r);
        }
        break;
      }
    }
  }
  const std::string& final_value = fusion.final_value;
  Ref out_ref;
  std::optional<Ref> crop_src;
  if (conv) {
    out_ref = NewBuffer(graph::NumElements(out_shape) * 4,
                        absl::StrCat(final_value, " nchw", out_bn, "c"));
  } else if (out_shape.back() == w->n) {
    out_ref = NewNaturalStorage(final_value);
  } else {
    out_ref = NewBuffer(graph::NumElements(out_shape) * 4, absl::StrCat(final_value, " padded"));
    crop_src = out_ref;
  }
  args.push_back(out_ref);

  KernelArgs ka;
  for (const ops::BufferSpec& b : specs) {
    ka.bytes.push_back(graph::NumElements(b.shape) * 4);
    ka.written.push_back(b.is_output);
  }
  const int64_t kidx = AddKernel(src, config, std::move(ka));
  std::string kind = tmpl.name();
  if (ep.bias) absl::StrAppend(&kind, "+bias");
  for (const std::string& op : fusion.fused_ops) absl::StrAppend(&kind, "+", op);
  AddKernelStep(node.name, kind, kidx, std::move(args));
  ++m_->stats.kernel_steps;
  if (tuned) ++m_->stats.tuned_kernels;
  m_->stats.fused_ops += static_cast<int64_t>(fusion.fused_ops.size());

  State& st = Define(final_value);
  if (conv) {
    st.blocked.push_back({out_ref, out_bn});
  } else if (crop_src) {
    const Ref dst = NewNaturalStorage(final_value);
    AddStep(final_value, "crop",
            CopyStep{.src = *crop_src,
                     .dst = dst,
                     .rows = w->m,
                     .row_bytes = w->n * 4,
                     .src_stride = out_shape.back() * 4,
                     .dst_stride = w->n * 4});
    ++m_->stats.layout_steps;
    st.natural = dst;
  } else {
    st.natural = out_ref;
  }
  return true;
}

absl::StatusOr<bool> Planner::TryBatchMatmul(int64_t i, const graph::NodeWorkload& analysed) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  const graph::Workload& w = analysed.workload;
  if (node.op_type != "MatMul" || node.outputs.size() != 1) return false;
  // Both operands float32 with the element counts the workload reads (a Transpose read in
  // place is the operand named by `analysed`; it still runs for any other reader).
  const graph::TensorType* a_t = TypeOf(analysed.a);
  const graph::TensorType* b_t = TypeOf(analysed.b);
  const graph::TensorType* y_t = TypeOf(node.outputs[0]);
  if (a_t == nullptr || b_t == nullptr || y_t == nullptr || a_t->dtype != DType::kFloat32 ||
      b_t->dtype != DType::kFloat32 || y_t->dtype != DType::kFloat32 ||
      graph::NumElements(y_t->shape) != w.b * w.m * w.n) {
    return false;
  }
  absl::StatusOr<std::unique_ptr<ops::Template>> made = ops::MakeTemplate(w, o_.target);
  if (!made.ok()) return false;
  const ops::Template& tmpl = **made;
  const std::vector<Shape> nat = tmpl.NaturalInputShapes();
  if (nat.size() != 2 || graph::NumElements(a_t->shape) != graph::NumElements(nat[0]) ||
      graph::NumElements(b_t->shape) != graph::NumElements(nat[1])) {
    return false;
  }

  bool tuned = false;
  ops::Config config = BestConfig(tmpl, w, &tuned);
  Fusion fusion =
      FuseEpilogue(FollowViews(node.outputs[0], w.n), /*conv=*/false, /*dense_padded=*/false);
  const ops::Epilogue& ep = fusion.ep;
  LOOM_ASSIGN_OR_RETURN(ops::KernelSource src, EmitForThreads(node, tmpl, ep, &config, &tuned));
  const std::vector<ops::BufferSpec> specs = tmpl.FusedBuffers(config, ep);

  std::vector<Ref> args;
  LOOM_ASSIGN_OR_RETURN(Ref a, Natural(analysed.a));
  LOOM_ASSIGN_OR_RETURN(Ref b, Natural(analysed.b));
  args.push_back(a);
  args.push_back(b);
  for (size_t k = 0; k < ep.operands.size(); ++k) {
    const std::string& v = fusion.operand_values[k];
    if (ep.operands[k].kind == ops::EpilogueOperand::Kind::kChannel) {
      LOOM_ASSIGN_OR_RETURN(State * st, StateOf(v));
      if (st->constant == nullptr) {
        return absl::InternalError(
            absl::StrCat(node.Describe(), ": a computed per-column epilogue operand"));
      }
      Tensor col(DType::kFloat32, {w.n});
      std::copy(st->constant->data<float>(),
                st->constant->data<float>() + std::min(st->constant->num_elements(), w.n),
                col.data<float>());
      args.push_back(NewConst(std::move(col)));
    } else {
      LOOM_ASSIGN_OR_RETURN(Ref r, Natural(v));
      args.push_back(r);
    }
  }
  const Ref out_ref = NewNaturalStorage(fusion.final_value);
  args.push_back(out_ref);

  KernelArgs ka;
  for (const ops::BufferSpec& spec : specs) {
    ka.bytes.push_back(graph::NumElements(spec.shape) * 4);
    ka.written.push_back(spec.is_output);
  }
  const int64_t kidx = AddKernel(src, config, std::move(ka));
  std::string kind = tmpl.name();
  for (const std::string& op : fusion.fused_ops) absl::StrAppend(&kind, "+", op);
  AddKernelStep(node.name, kind, kidx, std::move(args));
  ++m_->stats.kernel_steps;
  if (tuned) ++m_->stats.tuned_kernels;
  m_->stats.fused_ops += static_cast<int64_t>(fusion.fused_ops.size());
  Define(fusion.final_value).natural = out_ref;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The blocked layout: pooling and channel maps.

absl::StatusOr<bool> Planner::TryPool(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  using K = ops::BlockedPoolSpec::Kind;
  K kind;
  if (node.op_type == "MaxPool") {
    kind = K::kMax;
  } else if (node.op_type == "AveragePool") {
    kind = K::kAverage;
  } else if (node.op_type == "GlobalAveragePool") {
    kind = K::kGlobalAverage;
  } else if (node.op_type == "GlobalMaxPool") {
    kind = K::kGlobalMax;
  } else if (node.op_type == "ReduceMean" || node.op_type == "ReduceMax") {
    // Over H and W of a 4-D activation: a global pool (squeeze-excite blocks write it so).
    kind = node.op_type == "ReduceMean" ? K::kGlobalAverage : K::kGlobalMax;
  } else {
    return false;
  }
  const bool reduce = node.op_type == "ReduceMean" || node.op_type == "ReduceMax";
  bool keepdims = true;
  if (reduce) {
    if (node.outputs.size() != 1 || node.inputs.empty() || !Is4dFloat(node.inputs[0])) return false;
    std::vector<int64_t> axes = node.GetInts("axes");
    if (node.inputs.size() > 1 && !node.inputs[1].empty()) {
      const Tensor* t = ConstantOf(node.inputs[1]);
      if (t == nullptr) return false;
      axes.clear();
      for (int64_t e = 0; e < t->num_elements(); ++e) axes.push_back(t->Int64At(e));
    }
    for (int64_t& a : axes) a = a < 0 ? a + 4 : a;
    std::sort(axes.begin(), axes.end());
    if (axes != std::vector<int64_t>{2, 3}) return false;
    keepdims = node.GetInt("keepdims", 1) != 0;
    const graph::TensorType* ot = TypeOf(node.outputs[0]);
    if (ot == nullptr || ot->dtype != DType::kFloat32) return false;
  } else {
    // MaxPool's Indices output needs NCHW positions: the reference kernel computes it.
    if (node.outputs.size() != 1 || node.inputs.size() != 1) return false;
    if (!Is4dFloat(node.inputs[0]) || !Is4dFloat(node.outputs[0])) return false;
  }
  const Shape in = TypeOf(node.inputs[0])->shape;
  const Shape out = reduce ? Shape{in[0], in[1], 1, 1} : TypeOf(node.outputs[0])->shape;
  const int64_t bn =
      BlockedBn(node.inputs[0]) > 0 ? BlockedBn(node.inputs[0]) : o_.target.VectorLanes();
  absl::StatusOr<ops::BlockedPoolSpec> spec = ops::ResolveBlockedPool(node, kind, in, out, bn);
  if (!spec.ok()) return false;
  absl::StatusOr<ops::KernelSource> src = ops::EmitBlockedPool(*spec, o_.target);
  if (!src.ok()) return false;  // a geometry the kernel refuses: the reference kernel runs it
  LOOM_ASSIGN_OR_RETURN(Ref x, BlockedBuf(node.inputs[0], bn));
  const BlockedGeo in_geo = GeoOf(in, bn);
  const BlockedGeo out_geo = GeoOf(out, bn);
  const Ref dst = NewBuffer(out_geo.elems() * 4, absl::StrCat(node.outputs[0], " nchw", bn, "c"));
  KernelArgs ka;
  ka.bytes = {in_geo.elems() * 4, out_geo.elems() * 4};
  ka.written = {false, true};
  const int64_t kidx = AddKernel(*src, ops::Config{}, std::move(ka));
  AddKernelStep(node.name, absl::StrCat(node.op_type, "(nchwc)"), kidx, {x, dst});
  State& st = Define(node.outputs[0]);
  if (keepdims) {
    st.blocked.push_back({dst, bn});
  } else if (in[1] % bn == 0) {
    st.natural = dst;  // [N, C] in whole blocks: the same bytes as [N, C, 1, 1] blocked
  } else {
    const Ref nat = NewNaturalStorage(node.outputs[0]);
    st.natural = nat;
    BlockedGeo natural_geo = out_geo;
    natural_geo.bn = 1;
    AddStep(node.outputs[0], "unpack",
            RelayoutStep{.src = dst, .src_geo = out_geo, .dst = nat, .dst_geo = natural_geo});
    ++m_->stats.layout_steps;
  }
  ++m_->stats.blocked_steps;
  return true;
}

absl::StatusOr<bool> Planner::TryChannelMap(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  const bool concat = node.op_type == "Concat";
  const bool split = node.op_type == "Split";
  const bool slice = node.op_type == "Slice";
  if (!concat && !split && !slice) return false;
  if (node.inputs.empty() || node.outputs.empty()) return false;
  // At least one blocked source; every value 4-D float.
  bool any_blocked = false;
  const std::vector<std::string> data =
      concat ? node.inputs : std::vector<std::string>{node.inputs[0]};
  for (const std::string& in : data) {
    if (in.empty() || !Is4dFloat(in)) return false;
    any_blocked |= BlockedBn(in) > 0;
  }
  for (const std::string& o : node.outputs) {
    if (o.empty() || !Is4dFloat(o)) return false;
  }
  if (!any_blocked) return false;
  const Shape in0 = TypeOf(data[0])->shape;
  // Per output: its runs over the sources.
  std::vector<std::vector<ChannelRun>> runs(node.outputs.size());
  if (concat) {
    int64_t axis = node.GetInt("axis", 0);
    if (axis < 0) axis += 4;
    if (axis != 1) return false;
    int64_t at = 0;
    for (size_t k = 0; k < data.size(); ++k) {
      const int64_t c = TypeOf(data[k])->shape[1];
      if (c > 0) runs[0].push_back({static_cast<int64_t>(k), 0, at, c});
      at += c;
    }
  } else if (split) {
    int64_t axis = node.GetInt("axis", 0);
    if (axis < 0) axis += 4;
    if (axis != 1) return false;
    int64_t at = 0;
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const Shape os = TypeOf(node.outputs[k])->shape;
      if (os[0] != in0[0] || os[2] != in0[2] || os[3] != in0[3]) return false;
      if (os[1] > 0) runs[k].push_back({0, at, 0, os[1]});
      at += os[1];
    }
    if (at != in0[1]) return false;
  } else {
    // Slice along the channels with step 1; other axes whole. Opset >= 10: constant inputs.
    if (g_.opset < 10 || node.inputs.size() < 3) return false;
    // The constant integers of input k; nullopt when absent; sets `runtime` when computed.
    bool runtime = false;
    auto ints = [&](size_t k) -> std::optional<std::vector<int64_t>> {
      if (k >= node.inputs.size() || node.inputs[k].empty()) return std::nullopt;
      const Tensor* t = g_.FindInitializer(node.inputs[k]);
      auto st = states_.find(node.inputs[k]);
      if (t == nullptr && st != states_.end()) t = st->second.constant;
      if (t == nullptr) {
        runtime = true;
        return std::nullopt;
      }
      std::vector<int64_t> v;
      for (int64_t e = 0; e < t->num_elements(); ++e) v.push_back(t->Int64At(e));
      return v;
    };
    const auto starts = ints(1), ends = ints(2);
    auto axes = ints(3), steps = ints(4);
    if (runtime || !starts || !ends || starts->size() != ends->size()) return false;
    if (!axes) {
      axes = std::vector<int64_t>();
      for (size_t k = 0; k < starts->size(); ++k) axes->push_back(static_cast<int64_t>(k));
    }
    if (axes->size() != starts->size()) return false;
    const Shape os = TypeOf(node.outputs[0])->shape;
    int64_t c0 = -1;
    for (size_t k = 0; k < axes->size(); ++k) {
      int64_t a = (*axes)[k];
      if (a < 0) a += 4;
      if (steps && (steps->size() != axes->size() || (*steps)[k] != 1)) return false;
      if (a != 1) {
        if (os[static_cast<size_t>(a)] != in0[static_cast<size_t>(a)]) return false;
        continue;
      }
      int64_t s = (*starts)[k];
      if (s < 0) s += in0[1];
      c0 = std::clamp<int64_t>(s, 0, in0[1]);
    }
    if (c0 < 0 || os[0] != in0[0] || os[2] != in0[2] || os[3] != in0[3] || c0 + os[1] > in0[1]) {
      return false;
    }
    if (os[1] > 0) runs[0].push_back({0, c0, 0, os[1]});
  }
  // The outputs are pending maps of the sources: written when a consumer needs them, in the
  // block size it needs.
  int64_t bn = 0;
  for (const std::string& in : data) {
    bn = BlockedBn(in);
    if (bn > 0) break;
  }
  for (size_t k = 0; k < node.outputs.size(); ++k) {
    PendingMap map;
    map.srcs = data;
    map.runs = runs[k];
    map.bn = bn;
    map.kind = node.op_type;
    map.name = node.outputs.size() > 1 ? absl::StrCat(node.name, ":", k) : node.name;
    Define(node.outputs[k]).pending = Compose(std::move(map));
  }
  return true;
}

// Reshape [N, C, H, W] -> [N, a, b, H, W], Transpose (0, 2, 1, 3, 4), Reshape -> [N, C, H, W]:
// the channel shuffle, a permutation of channels on the blocked layout.
absl::StatusOr<bool> Planner::TryChannelShuffle(int64_t i) {
  const graph::Node& r1 = g_.nodes[static_cast<size_t>(i)];
  if (r1.op_type != "Reshape" || r1.outputs.size() != 1 || !Is4dFloat(r1.inputs[0])) return false;
  if (BlockedBn(r1.inputs[0]) == 0) return false;
  const Shape in = TypeOf(r1.inputs[0])->shape;
  const graph::TensorType* t5 = TypeOf(r1.outputs[0]);
  if (t5 == nullptr || t5->shape.size() != 5) return false;
  const Shape s5 = t5->shape;
  if (s5[0] != in[0] || s5[1] * s5[2] != in[1] || s5[3] != in[2] || s5[4] != in[3]) return false;
  auto sole = [&](const std::string& v) -> int64_t {
    auto c = consumers_.find(v);
    if (c == consumers_.end() || c->second.size() != 1 || output_slots_.count(v) > 0) return -1;
    return c->second[0];
  };
  const int64_t ti = sole(r1.outputs[0]);
  if (ti < 0) return false;
  const graph::Node& tr = g_.nodes[static_cast<size_t>(ti)];
  if (tr.op_type != "Transpose" || tr.GetInts("perm") != std::vector<int64_t>{0, 2, 1, 3, 4}) {
    return false;
  }
  const int64_t ri = sole(tr.outputs[0]);
  if (ri < 0) return false;
  const graph::Node& r2 = g_.nodes[static_cast<size_t>(ri)];
  if (r2.op_type != "Reshape" || !Is4dFloat(r2.outputs[0]) || TypeOf(r2.outputs[0])->shape != in) {
    return false;
  }
  // Output channel k * a + j reads input channel j * b + k.
  const int64_t a = s5[1], b = s5[2];
  std::vector<ChannelRun> runs;
  for (int64_t k = 0; k < b; ++k) {
    for (int64_t j = 0; j < a; ++j) runs.push_back({0, j * b + k, k * a + j, 1});
  }
  PendingMap map;
  map.srcs = {r1.inputs[0]};
  map.runs = std::move(runs);
  map.bn = BlockedBn(r1.inputs[0]);
  map.kind = "channel_shuffle";
  map.name = tr.name;
  Define(r2.outputs[0]).pending = Compose(std::move(map));
  done_[static_cast<size_t>(ti)] = true;
  done_[static_cast<size_t>(ri)] = true;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Lowered kernels and the reference fallback.

absl::StatusOr<bool> Planner::TryStridedTranspose(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  if (node.op_type != "Transpose" || node.inputs.size() != 1 || node.outputs.size() != 1) {
    return false;
  }
  const std::string& x = node.inputs[0];
  auto root_it = view_root_.find(x);
  const std::string root = root_it == view_root_.end() ? x : root_it->second;
  const graph::TensorType* xt = TypeOf(x);
  const graph::TensorType* out = TypeOf(node.outputs[0]);
  if (xt == nullptr || out == nullptr || xt->dtype != DType::kFloat32 ||
      out->dtype != DType::kFloat32) {
    return false;
  }
  absl::StatusOr<graph::IntList> perm =
      graph::ResolvePerm(node, static_cast<int64_t>(xt->shape.size()));
  if (!perm.ok()) return false;  // the lowering or the reference kernel names the error
  // The source: the input of the Transposes that made `root`, else a blocked buffer of it.
  std::optional<StridedSource> source;
  std::optional<ViewDims> dims;
  auto made = strided_.find(root);
  if (made != strided_.end()) {
    dims = MatchDigits(made->second.digits, xt->shape);
    if (dims) source = made->second;
  }
  auto st = states_.find(root);
  if (!dims && st != states_.end() && Is4dFloat(root)) {
    for (const Blocked& b : st->second.blocked) {
      dims = MatchDigits(BlockedDigits(st->second.type.shape, b.bn), xt->shape);
      if (dims) {
        // A blocked buffer whose block divides C holds exactly the value's elements.
        source = StridedSource{.src = b.ref, .src_bytes = TypeBytes(st->second.type)};
        break;
      }
    }
  }
  if (!dims) return false;
  Shape shape;
  std::vector<int64_t> strides;
  for (int64_t p : *perm) {
    for (int64_t d : dims->of[static_cast<size_t>(p)]) {
      shape.push_back(dims->extent[static_cast<size_t>(d)]);
      strides.push_back(dims->stride[static_cast<size_t>(d)]);
    }
  }
  const ops::LoweredKernel lk = ops::LowerStridedCopyKernel(
      o_.target, "transpose", root, node.outputs[0], DType::kFloat32, shape, strides);
  const Ref dst = NewNaturalStorage(node.outputs[0]);
  Define(node.outputs[0]).natural = dst;
  KernelArgs ka{.bytes = {source->src_bytes, TypeBytes(*out)}, .written = {false, true}};
  const int64_t kidx = AddKernel(lk.source, ops::Config{}, std::move(ka));
  AddKernelStep(node.name, lk.kind, kidx, {source->src, dst});
  ++m_->stats.generated_steps;
  StridedSource& rec = strided_[node.outputs[0]];
  rec = *source;
  rec.digits.clear();
  for (size_t k = 0; k < shape.size(); ++k) rec.digits.emplace_back(shape[k], strides[k]);
  return true;
}

void Planner::RecordTranspose(const graph::Node& node) {
  if (node.op_type != "Transpose" || node.inputs.size() != 1 || node.outputs.size() != 1) return;
  const graph::TensorType* xt = TypeOf(node.inputs[0]);
  auto st = states_.find(node.inputs[0]);
  if (xt == nullptr || xt->dtype != DType::kFloat32 || st == states_.end() || !st->second.natural) {
    return;
  }
  absl::StatusOr<graph::IntList> perm =
      graph::ResolvePerm(node, static_cast<int64_t>(xt->shape.size()));
  if (!perm.ok()) return;
  strided_[node.outputs[0]] = StridedSource{.src = *st->second.natural,
                                            .src_bytes = TypeBytes(*xt),
                                            .digits = TransposeDigits(xt->shape, *perm)};
}

absl::StatusOr<bool> Planner::TryLowered(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  absl::StatusOr<ops::LoweredKernel> lk = ops::LowerNode(g_, node, o_.target);
  if (!lk.ok()) {
    if (absl::IsUnimplemented(lk.status())) return false;
    return lk.status();
  }
  std::vector<Ref> args;
  KernelArgs ka;
  // Inputs first, so that every output's storage is made after its operands' layout steps.
  for (const ops::LoweredKernel::Arg& a : lk->args) {
    if (a.kind == ops::LoweredKernel::Arg::Kind::kConstant) {
      ka.bytes.push_back(static_cast<int64_t>(a.constant.num_bytes()));
      ka.written.push_back(false);
      args.push_back(NewConst(a.constant));
      continue;
    }
    const graph::TensorType* t = TypeOf(a.value);
    if (t == nullptr) {
      return absl::InternalError(absl::StrCat(node.Describe(), ": no type for '", a.value, "'"));
    }
    ka.bytes.push_back(TypeBytes(*t));
    ka.written.push_back(a.is_output);
    if (a.is_output) {
      args.push_back(Ref{});  // filled below
    } else {
      LOOM_ASSIGN_OR_RETURN(Ref r, Natural(a.value));
      args.push_back(r);
    }
  }
  for (size_t k = 0; k < lk->args.size(); ++k) {
    const ops::LoweredKernel::Arg& a = lk->args[k];
    if (a.kind != ops::LoweredKernel::Arg::Kind::kValue || !a.is_output) continue;
    const Ref r = NewNaturalStorage(a.value);
    args[k] = r;
    Define(a.value).natural = r;
  }
  const int64_t kidx = AddKernel(lk->source, ops::Config{}, std::move(ka));
  AddKernelStep(node.name, lk->kind, kidx, std::move(args));
  ++m_->stats.generated_steps;
  return true;
}

absl::Status Planner::Reference(int64_t i) {
  const graph::Node& node = g_.nodes[static_cast<size_t>(i)];
  if (!kernels::HasReferenceKernel(node.op_type)) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": no generated kernel and no reference kernel"));
  }
  ReferenceStep step;
  step.node = node;
  step.opset = g_.opset;
  for (const std::string& in : node.inputs) {
    TypedRef tr;
    if (in.empty()) {
      tr.present = false;
    } else {
      LOOM_ASSIGN_OR_RETURN(Ref r, Natural(in));
      tr.ref = r;
      LOOM_ASSIGN_OR_RETURN(State * s, StateOf(in));
      tr.type = s->type;
    }
    step.inputs.push_back(std::move(tr));
  }
  for (const std::string& out : node.outputs) {
    TypedRef tr;
    const graph::TensorType* t = out.empty() ? nullptr : TypeOf(out);
    if (t == nullptr && !out.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          node.Describe(), ": output '", out, "' has no type (the graph is not shape-inferred)"));
    }
    if (t == nullptr) {
      tr.present = false;
    } else {
      tr.ref = NewNaturalStorage(out);
      tr.type = *t;
      Define(out).natural = tr.ref;
    }
    step.outputs.push_back(std::move(tr));
  }
  AddStep(node.name, absl::StrCat("ref:", node.op_type), std::move(step));
  ++m_->stats.reference_steps;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Kernels and memory.

void Planner::DropDeadSteps() {
  std::vector<Step>& steps = m_->plan.steps;
  // Walked backward: a step is live when it writes something other than an arena buffer (an
  // output tensor) or an arena buffer a live step reads. Every operand of a live step is then
  // live: before PlanMemory no two values share a buffer, so this keeps every writer of a
  // buffer that is read (partial writes, such as a channel map's into a concat, included).
  std::vector<bool> live_buffer(m_->plan.buffers.size(), false);
  std::vector<bool> keep(steps.size(), false);
  for (size_t s = steps.size(); s-- > 0;) {
    bool live = false;
    std::vector<Ref> refs;
    auto visit = [&](const Ref& r, bool written) {
      refs.push_back(r);
      if (written && (r.kind != Ref::Kind::kArena || live_buffer[static_cast<size_t>(r.index)])) {
        live = true;
      }
    };
    if (const auto* k = std::get_if<KernelStep>(&steps[s].op)) {
      const KernelArgs& ka = jobs_[static_cast<size_t>(k->kernel)].args;
      for (size_t a = 0; a < k->args.size(); ++a)
        visit(k->args[a], a < ka.written.size() && ka.written[a]);
    } else {
      ForEachRef(steps[s].op, [&](const Ref& r, int64_t, bool written) { visit(r, written); });
    }
    if (!live) continue;
    keep[s] = true;
    for (const Ref& r : refs) {
      if (r.kind == Ref::Kind::kArena) live_buffer[static_cast<size_t>(r.index)] = true;
    }
  }
  std::vector<Step> kept;
  std::vector<int64_t> new_index(jobs_.size(), -1);
  std::vector<KernelJob> jobs;
  for (size_t s = 0; s < steps.size(); ++s) {
    if (!keep[s]) continue;
    if (auto* k = std::get_if<KernelStep>(&steps[s].op)) {
      int64_t& idx = new_index[static_cast<size_t>(k->kernel)];
      if (idx < 0) {
        idx = static_cast<int64_t>(jobs.size());
        jobs.push_back(std::move(jobs_[static_cast<size_t>(k->kernel)]));
      }
      k->kernel = idx;
    }
    kept.push_back(std::move(steps[s]));
  }
  m_->stats.dropped_steps = static_cast<int64_t>(steps.size() - kept.size());
  steps = std::move(kept);
  jobs_ = std::move(jobs);
  job_by_code_.clear();  // indexes jobs_; no kernel is added after this
}

absl::Status Planner::BuildKernels() {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Builder> builder, tune::MakeLocalBuilder(o_.build));
  std::vector<tune::BuildResult> results(jobs_.size());
  {
    base::ThreadPool pool(static_cast<size_t>(std::max<int32_t>(1, o_.build.num_threads)));
    pool.ParallelFor(jobs_.size(), [&](size_t k) {
      results[k] = builder->BuildSource(jobs_[k].source, jobs_[k].config);
    });
  }
  for (size_t k = 0; k < jobs_.size(); ++k) {
    const tune::BuildResult& r = results[k];
    if (r.error != tune::ErrorKind::kNone) {
      return absl::InternalError(absl::StrCat("kernel ", k, " failed to build: ", r.error_msg));
    }
    if (r.cache_hit) ++m_->stats.cache_hits;
    void* h = dlopen(r.artifact_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      return absl::InternalError(absl::StrCat("dlopen ", r.artifact_path, ": ", dlerror()));
    }
    m_->libraries.push_back(std::make_unique<SharedLibrary>(h));
    void* sym = dlsym(h, codegen::kKernelEntry);
    if (sym == nullptr) {
      return absl::InternalError(absl::StrCat(r.artifact_path, " has no ", codegen::kKernelEntry));
    }
    m_->kernels.push_back(reinterpret_cast<loom_kernel_fn>(sym));
    m_->kernel_sources.push_back(jobs_[k].source);
    m_->plan.kernels.push_back(jobs_[k].args);
  }
  m_->stats.unique_kernels = static_cast<int64_t>(jobs_.size());
  return absl::OkStatus();
}

void Planner::PlanMemory() {
  Plan& plan = m_->plan;
  std::vector<BufferInfo>& bufs = plan.buffers;
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    ForEachRef(plan.steps[s].op, [&](const Ref& r, int64_t, bool) {
      if (r.kind != Ref::Kind::kArena) return;
      BufferInfo& b = bufs[static_cast<size_t>(r.index)];
      if (b.first < 0) b.first = static_cast<int64_t>(s);
      b.last = static_cast<int64_t>(s);
    });
  }
  // Largest first; each at the lowest offset clear of the placed buffers it overlaps in time.
  std::vector<size_t> order(bufs.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return bufs[a].bytes > bufs[b].bytes; });
  std::vector<size_t> placed;
  int64_t total = 0, sum = 0;
  for (size_t k : order) {
    if (bufs[k].first < 0) {  // never used
      bufs[k].offset = 0;
      bufs[k].bytes = 0;
      continue;
    }
    sum += bufs[k].bytes;
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t p : placed) {
      if (bufs[p].first <= bufs[k].last && bufs[k].first <= bufs[p].last) {
        busy.push_back({bufs[p].offset, bufs[p].offset + bufs[p].bytes});
      }
    }
    std::sort(busy.begin(), busy.end());
    int64_t off = 0;
    for (const auto& [lo, hi] : busy) {
      if (off + bufs[k].bytes <= lo) break;
      off = std::max(off, hi);
    }
    bufs[k].offset = off;
    total = std::max(total, off + bufs[k].bytes);
    placed.push_back(k);
  }
  plan.arena_bytes = total;
  m_->stats.arena_bytes = total;
  m_->stats.intermediate_bytes = sum;
}

absl::Status Planner::Run() {
  for (size_t i = 0; i < g_.nodes.size(); ++i) {
    for (const std::string& in : g_.nodes[i].inputs) {
      if (!in.empty()) consumers_[in].push_back(static_cast<int64_t>(i));
    }
  }
  for (const graph::ValueInfo& in : g_.inputs) {
    graph::ValueInfo info = in;
    if (const graph::TensorType* t = TypeOf(in.name)) info.type = *t;
    State& s = states_[in.name];
    s.type = info.type;
    s.natural = Ref{Ref::Kind::kInput, static_cast<int64_t>(m_->plan.inputs.size())};
    m_->plan.inputs.push_back(std::move(info));
  }
  for (const graph::ValueInfo& out : g_.outputs) {
    graph::ValueInfo info = out;
    if (const graph::TensorType* t = TypeOf(out.name)) info.type = *t;
    output_slots_[out.name].push_back(static_cast<int64_t>(m_->plan.outputs.size()));
    m_->plan.outputs.push_back(std::move(info));
  }
  output_claimed_.assign(m_->plan.outputs.size(), false);
  // A graph output made by views (Reshape, Flatten, ...) of a value: that value is written into
  // the output tensor directly.
  for (const graph::ValueInfo& out : g_.outputs) {
    std::string v = out.name;
    for (int64_t p = g_.ProducerOf(v); p >= 0; p = g_.ProducerOf(v)) {
      const graph::Node& node = g_.nodes[static_cast<size_t>(p)];
      if (!IsViewOp(node.op_type) || node.inputs.empty()) break;
      v = node.inputs[0];
      if (view_of_output_.count(v) == 0 && output_slots_.count(v) == 0) {
        view_of_output_[v] = out.name;
      }
    }
  }
  done_.assign(g_.nodes.size(), false);
  for (size_t n = 0; n < g_.nodes.size(); ++n) {
    if (done_[n]) continue;
    const auto i = static_cast<int64_t>(n);
    done_[n] = true;
    LOOM_ASSIGN_OR_RETURN(bool shuffle, TryChannelShuffle(i));
    if (shuffle) continue;
    LOOM_ASSIGN_OR_RETURN(bool view, TryView(i));
    if (view) continue;
    LOOM_ASSIGN_OR_RETURN(bool kernel, TryTemplate(i));
    if (kernel) continue;
    LOOM_ASSIGN_OR_RETURN(bool pool, TryPool(i));
    if (pool) continue;
    LOOM_ASSIGN_OR_RETURN(bool map, TryChannelMap(i));
    if (map) continue;
    LOOM_ASSIGN_OR_RETURN(bool ew, TryElementwise(i));
    if (ew) continue;
    LOOM_ASSIGN_OR_RETURN(bool strided_transpose, TryStridedTranspose(i));
    if (strided_transpose) continue;
    LOOM_ASSIGN_OR_RETURN(bool lowered, TryLowered(i));
    if (lowered) {
      RecordTranspose(g_.nodes[n]);
      continue;
    }
    LOOM_RETURN_IF_ERROR(Reference(i));
  }
  // Every graph output in its output tensor.
  for (size_t k = 0; k < m_->plan.outputs.size(); ++k) {
    const std::string& name = m_->plan.outputs[k].name;
    LOOM_ASSIGN_OR_RETURN(Ref r, Natural(name));
    const Ref want{Ref::Kind::kOutput, static_cast<int64_t>(k)};
    if (r == want) continue;
    const int64_t bytes = TypeBytes(m_->plan.outputs[k].type);
    AddStep(name, "copy",
            CopyStep{.src = r,
                     .dst = want,
                     .rows = 1,
                     .row_bytes = bytes,
                     .src_stride = 0,
                     .dst_stride = 0});
  }
  DropDeadSteps();
  LOOM_RETURN_IF_ERROR(BuildKernels());
  PlanMemory();
  return ValidatePlan(m_->plan);
}

}  // namespace

absl::Status BuildPlan(const graph::Graph& graph, const CompileOptions& options,
                       CompiledModel::Impl* impl) {
  impl->plan.isa = options.target.isa;
  impl->plan.target_key = options.target.Key();
  Planner planner(graph, options, impl);
  return planner.Run();
}

}  // namespace loom::runtime
