#include "loom/runtime/compiled_model.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"
#include "loom/base/fork_join_pool.h"
#include "loom/base/status_macros.h"
#include "loom/base/thread_pool.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/kernels/reference.h"
#include "loom/ops/template.h"
#include "loom/runtime/activation.h"
#include "loom/runtime/plan.h"

namespace loom::runtime {
namespace {

using graph::Shape;
using graph::Tensor;

constexpr int64_t kAlign = 64;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// parallel_for of loom_parallel_t over a base::ForkJoinPool: one even chunk per thread.
void PoolParallelFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  static_cast<base::ForkJoinPool*>(pool)->Run(n, fn, ctx);
}

// Runs f(begin, end) over [0, n) on the model's threads.
template <typename F>
void ParFor(const loom_parallel_t* par, int64_t n, const F& f) {
  if (par == nullptr || par->num_threads <= 1 || n <= 1) {
    f(int64_t{0}, n);
    return;
  }
  par->parallel_for(
      n, [](int64_t b, int64_t e, void* ctx) { (*static_cast<const F*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)), par->pool);
}

// Copies `src` (blocked, unpadded) into `dst` (blocked with its own block size and zero pads).
// Channels past C in dst are zeroed unless the block sizes match (then copied as they are: no
// consumer reads padding channels into a reduction).
void Relayout(const float* src, const BlockedGeo& s, float* dst, const BlockedGeo& d,
              const loom_parallel_t* par) {
  const int64_t rows = d.n * d.cb() * d.hp();
  const int64_t row_len = d.wp() * d.bn;
  ParFor(par, rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % d.hp();
      const int64_t cbd = (r / d.hp()) % d.cb();
      const int64_t n = r / (d.hp() * d.cb());
      float* out = dst + r * row_len;
      if (y < d.pt || y >= d.pt + d.h) {
        std::memset(out, 0, sizeof(float) * static_cast<size_t>(row_len));
        continue;
      }
      const int64_t sy = y - d.pt;
      std::memset(out, 0, sizeof(float) * static_cast<size_t>(d.pl * d.bn));
      std::memset(out + (d.pl + d.w) * d.bn, 0, sizeof(float) * static_cast<size_t>(d.pr * d.bn));
      float* interior = out + d.pl * d.bn;
      if (s.bn == d.bn) {
        const float* in = src + ((n * s.cb() + cbd) * s.h + sy) * s.w * s.bn;
        std::memcpy(interior, in, sizeof(float) * static_cast<size_t>(d.w * d.bn));
        continue;
      }
      // Runs of g = gcd(bs, bd) channels are contiguous in both layouts.
      const int64_t g = std::gcd(s.bn, d.bn);
      for (int64_t i0 = 0; i0 < d.bn; i0 += g) {
        const int64_t c = cbd * d.bn + i0;
        if (c >= d.c) {
          for (int64_t x = 0; x < d.w; ++x) {
            std::memset(interior + x * d.bn + i0, 0, sizeof(float) * static_cast<size_t>(g));
          }
          continue;
        }
        const int64_t valid = std::min(g, d.c - c);
        const float* in = src + ((n * s.cb() + c / s.bn) * s.h + sy) * s.w * s.bn + c % s.bn;
        for (int64_t x = 0; x < d.w; ++x) {
          float* o = interior + x * d.bn + i0;
          const float* v = in + x * s.bn;
          for (int64_t l = 0; l < valid; ++l) o[l] = v[l];
          for (int64_t l = valid; l < g; ++l) o[l] = 0;
        }
      }
    }
  });
}

std::string ActivationName(ops::Epilogue::Activation a) {
  using A = ops::Epilogue::Activation;
  switch (a) {
    case A::kNone:
      return "";
    case A::kRelu:
      return "relu";
    case A::kClip:
      return "clip";
    case A::kHardSwish:
      return "hardswish";
    case A::kSigmoid:
      return "sigmoid";
  }
  return "";
}

float ApplyActivation(const ops::Epilogue& e, float x) {
  using A = ops::Epilogue::Activation;
  switch (e.activation) {
    case A::kNone:
      return x;
    case A::kRelu:
      return x > 0 ? x : 0;
    case A::kClip:
      return std::min(std::max(x, e.clip_min), e.clip_max);
    case A::kHardSwish:
      return x * std::min(std::max(x / 6.0f + 0.5f, 0.0f), 1.0f);
    case A::kSigmoid:
      return 1.0f / (1.0f + std::exp(-x));
  }
  return x;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The executor.

SharedLibrary::~SharedLibrary() {
  if (handle_ != nullptr) dlclose(handle_);
}

namespace {

struct Exec {
  CompiledModel::Impl* impl;
  std::vector<Tensor> tensors;
  const loom_parallel_t* par;

  float* Buf(int64_t id) const {
    return reinterpret_cast<float*>(impl->arena.get() + impl->plan.buffers[id].offset);
  }
  void* Resolve(const Ref& r) {
    switch (r.kind) {
      case Ref::Kind::kArena:
        return Buf(r.index);
      case Ref::Kind::kConst:
        return impl->plan.consts[r.index].raw_data();
      case Ref::Kind::kTensor:
        return tensors[r.index].raw_data();
    }
    return nullptr;
  }
};

absl::Status RunOp(const ConstStep& op, Exec& ex) {
  ex.tensors[op.slot] = ex.impl->plan.consts[op.constant];
  return absl::OkStatus();
}

absl::Status RunOp(const RelayoutStep& op, Exec& ex) {
  const float* src = op.src.kind == Ref::Kind::kTensor ? ex.tensors[op.src.index].data<float>()
                                                       : ex.Buf(op.src.index);
  if (op.dst.kind == Ref::Kind::kTensor) {
    const BlockedGeo& d = op.dst_geo;
    Tensor t(graph::DType::kFloat32, {d.n, d.c, d.h, d.w});
    Relayout(src, op.src_geo, t.data<float>(), d, ex.par);
    ex.tensors[op.dst.index] = std::move(t);
  } else {
    Relayout(src, op.src_geo, ex.Buf(op.dst.index), op.dst_geo, ex.par);
  }
  return absl::OkStatus();
}

absl::Status RunOp(const KernelStep& op, Exec& ex) {
  if (op.dense) ex.tensors[op.out_slot] = Tensor(graph::DType::kFloat32, op.out_shape);
  void* ptrs[16];
  for (size_t a = 0; a < op.args.size(); ++a) ptrs[a] = ex.Resolve(op.args[a]);
  ex.impl->kernels[op.kernel](ptrs, ex.par);
  if (op.dense && op.out_shape[1] != op.n_real) {
    Tensor y(graph::DType::kFloat32, {op.m_rows, op.n_real});
    const float* s = ex.tensors[op.out_slot].data<float>();
    for (int64_t r = 0; r < op.m_rows; ++r) {
      std::memcpy(y.data<float>() + r * op.n_real, s + r * op.out_shape[1],
                  sizeof(float) * static_cast<size_t>(op.n_real));
    }
    ex.tensors[op.out_slot] = std::move(y);
  }
  return absl::OkStatus();
}

absl::Status RunOp(const PoolStep& op, Exec& ex) {
  const float* x = ex.Buf(op.src);
  float* y = ex.Buf(op.dst);
  const BlockedGeo& ig = op.in;
  const BlockedGeo& og = op.out;
  const int64_t bn = og.bn;
  ParFor(ex.par, og.n * og.cb() * og.h, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t oy = r % og.h, nc = r / og.h;
      const float* xp = x + nc * ig.h * ig.w * bn;
      for (int64_t ox = 0; ox < og.w; ++ox) {
        float* yp = y + (r * og.w + ox) * bn;
        if (op.global) {
          for (int64_t l = 0; l < bn; ++l) yp[l] = 0;
          for (int64_t p = 0; p < ig.h * ig.w; ++p) {
            for (int64_t l = 0; l < bn; ++l) yp[l] += xp[p * bn + l];
          }
          const float inv = 1.0f / static_cast<float>(ig.h * ig.w);
          for (int64_t l = 0; l < bn; ++l) yp[l] *= inv;
          continue;
        }
        for (int64_t l = 0; l < bn; ++l) yp[l] = -std::numeric_limits<float>::infinity();
        for (int64_t ky = 0; ky < op.kh; ++ky) {
          const int64_t iy = oy * op.sh - op.pt + ky;
          if (iy < 0 || iy >= ig.h) continue;
          for (int64_t kx = 0; kx < op.kw; ++kx) {
            const int64_t ix = ox * op.sw - op.pl + kx;
            if (ix < 0 || ix >= ig.w) continue;
            const float* v = xp + (iy * ig.w + ix) * bn;
            for (int64_t l = 0; l < bn; ++l) yp[l] = std::max(yp[l], v[l]);
          }
        }
      }
    }
  });
  return absl::OkStatus();
}

absl::Status RunOp(const EltwiseStep& op, Exec& ex) {
  const float* x = ex.Buf(op.src);
  const float* x2 = op.other >= 0 ? ex.Buf(op.other) : nullptr;
  float* y = ex.Buf(op.dst);
  const int64_t total = op.total;
  ParFor(ex.par, CeilDiv(total, 1024), [&](int64_t b, int64_t e) {
    const int64_t lo = b * 1024, hi = std::min(total, e * 1024);
    if (x2 != nullptr) {
      for (int64_t k = lo; k < hi; ++k) y[k] = x[k] + x2[k];
    } else {
      for (int64_t k = lo; k < hi; ++k) y[k] = ApplyActivation(op.act, x[k]);
    }
  });
  return absl::OkStatus();
}

absl::Status RunOp(const ConcatStep& op, Exec& ex) {
  float* y = ex.Buf(op.dst);
  for (int64_t n = 0; n < op.n; ++n) {
    int64_t at = n * op.out_blocks * op.plane;
    for (size_t k = 0; k < op.srcs.size(); ++k) {
      const size_t len = static_cast<size_t>(op.blocks[k] * op.plane);
      std::memcpy(y + at, ex.Buf(op.srcs[k]) + n * op.blocks[k] * op.plane, sizeof(float) * len);
      at += op.blocks[k] * op.plane;
    }
  }
  return absl::OkStatus();
}

absl::Status RunOp(const ReferenceStep& op, Exec& ex) {
  std::vector<Tensor> ins;
  ins.reserve(op.in_slots.size());
  for (int64_t s : op.in_slots) ins.push_back(s >= 0 ? ex.tensors[s] : Tensor());
  LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> outs, kernels::EvaluateNode(op.node, op.opset, ins));
  for (size_t k = 0; k < op.out_slots.size() && k < outs.size(); ++k) {
    if (op.out_slots[k] >= 0) ex.tensors[op.out_slots[k]] = std::move(outs[k]);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Tensor>> CompiledModel::Impl::Execute(
    const std::map<std::string, Tensor>& in, std::vector<StepTiming>* timings) {
  Exec ex{this, std::vector<Tensor>(plan.num_tensor_slots), &par};
  for (const auto& [info, slot] : plan.inputs) {
    auto it = in.find(info.name);
    if (it == in.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", info.name, "'"));
    }
    if (it->second.dtype() != info.type.dtype || it->second.shape() != info.type.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", info.name, "' is ", graph::TensorType(it->second.type()).ToString(),
          ", the model was compiled for ", info.type.ToString()));
    }
    ex.tensors[slot] = it->second;
  }
  if (in.size() != plan.inputs.size()) {
    for (const auto& [name, t] : in) {
      bool known = false;
      for (const auto& [info, slot] : plan.inputs) known |= info.name == name;
      if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown input '", name, "'"));
    }
  }
  for (const Step& s : plan.steps) {
    auto t0 = std::chrono::steady_clock::now();
    LOOM_RETURN_IF_ERROR(std::visit([&](const auto& op) { return RunOp(op, ex); }, s.op));
    if (timings != nullptr) {
      timings->push_back(
          {s.name, s.kind,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
    }
    for (int64_t slot : s.release) ex.tensors[slot] = Tensor();
  }
  std::vector<Tensor> out;
  for (int64_t slot : plan.outputs) out.push_back(ex.tensors[slot]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The compiler.

namespace {

struct KernelJob {
  ops::KernelSource source;
  ops::Config config;
};

class Compiler {
 public:
  Compiler(const graph::Graph& g, const CompileOptions& o, CompiledModel::Impl* impl)
      : g_(g), o_(o), m_(impl) {}

  absl::Status Run();

 private:
  struct Blocked {
    int64_t buf;
    int64_t bn;
  };
  struct Padded {
    int64_t bn, pt, pl, pb, pr;
    auto operator<=>(const Padded&) const =
        default;  // NOLINT(modernize-use-nullptr): a false positive on defaulted <=>
  };
  struct State {
    Shape shape;
    int64_t tensor = -1;  // natural layout, tensor slot
    std::vector<Blocked> blocked;
    std::map<Padded, int64_t> padded;
  };

  int64_t NewBuffer(int64_t elems, std::string what) {
    BufferInfo b;
    b.bytes = RoundUp(elems * 4, kAlign);
    b.what = std::move(what);
    m_->plan.buffers.push_back(b);
    return static_cast<int64_t>(m_->plan.buffers.size()) - 1;
  }
  int64_t NewSlot() { return m_->plan.num_tensor_slots++; }
  int64_t NewConst(Tensor t) {
    m_->plan.consts.push_back(std::move(t));
    return static_cast<int64_t>(m_->plan.consts.size()) - 1;
  }
  void AddStep(Step s) { m_->plan.steps.push_back(std::move(s)); }

  bool Is4dFloat(const std::string& v) const {
    auto it = g_.value_types.find(v);
    return it != g_.value_types.end() && it->second.dtype == graph::DType::kFloat32 &&
           it->second.shape.size() == 4;
  }
  absl::StatusOr<State*> StateOf(const std::string& v);
  BlockedGeo GeoOf(const State& s, int64_t bn) const {
    BlockedGeo g;
    g.n = s.shape[0];
    g.c = s.shape[1];
    g.h = s.shape[2];
    g.w = s.shape[3];
    g.bn = bn;
    return g;
  }
  // Representations, with the layout step that makes them when missing.
  absl::StatusOr<int64_t> Natural(const std::string& v);
  absl::StatusOr<int64_t> BlockedBuf(const std::string& v, int64_t bn);
  absl::StatusOr<int64_t> PaddedBuf(const std::string& v, const Padded& p);
  // Adds the step that writes value `v` into `buf` (laid out as `dst`) from its blocked buffer
  // `from`, or from its NCHW tensor when `from` is null.
  void AddRelayoutStep(const std::string& v, const State& s, const Blocked* from,
                       const BlockedGeo& dst, int64_t buf, std::string kind);

  // Single consumer of `v` (node index) or -1.
  int64_t SoleConsumer(const std::string& v) const {
    if (g_.UseCount(v) != 1) return -1;
    auto it = consumers_.find(v);
    if (it == consumers_.end() || it->second.size() != 1) return -1;
    return it->second[0];
  }
  // When node j is an activation the epilogue can take, fills `e`.

  absl::StatusOr<bool> TryKernel(int64_t i);
  absl::StatusOr<bool> TryBlockedOp(int64_t i);
  absl::Status Reference(int64_t i);
  absl::Status BuildKernels();
  void PlanMemory();

  const graph::Graph& g_;
  const CompileOptions& o_;
  CompiledModel::Impl* m_;
  std::map<std::string, State> states_;
  std::map<std::string, std::vector<int64_t>> consumers_;
  std::vector<bool> done_;
  std::vector<KernelJob> jobs_;
  std::map<std::string, int64_t> job_by_code_;
};

absl::StatusOr<Compiler::State*> Compiler::StateOf(const std::string& v) {
  auto it = states_.find(v);
  if (it != states_.end()) return &it->second;
  const Tensor* init = g_.FindInitializer(v);
  if (init != nullptr) {
    State s;
    s.shape = init->shape();
    s.tensor = NewSlot();
    const int64_t c = NewConst(*init);
    // Constants are copied into their slot by a step at the start of every run.
    const int64_t slot = s.tensor;
    Step step;
    step.name = v;
    step.kind = "const";
    step.tensors = {slot};
    step.op = ConstStep{.slot = slot, .constant = c};
    AddStep(std::move(step));
    return &states_.emplace(v, std::move(s)).first->second;
  }
  return absl::InternalError(absl::StrCat("value '", v, "' used before it is computed"));
}

absl::StatusOr<int64_t> Compiler::Natural(const std::string& v) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  if (s->tensor >= 0) return s->tensor;
  LOOM_CHECK(!s->blocked.empty());
  const Blocked b = s->blocked.front();
  const BlockedGeo src = GeoOf(*s, b.bn);
  BlockedGeo dst = GeoOf(*s, 1);
  const int64_t slot = NewSlot();
  s->tensor = slot;
  Step step;
  step.name = v;
  step.kind = "unpack";
  step.buffers = {b.buf};
  step.tensors = {slot};
  step.op = RelayoutStep{.src = {Ref::Kind::kArena, b.buf},
                         .src_geo = src,
                         .dst = {Ref::Kind::kTensor, slot},
                         .dst_geo = dst};
  ++m_->stats.layout_steps;
  AddStep(std::move(step));
  return slot;
}

absl::StatusOr<int64_t> Compiler::BlockedBuf(const std::string& v, int64_t bn) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  for (const Blocked& b : s->blocked) {
    if (b.bn == bn) return b.buf;
  }
  const BlockedGeo dst = GeoOf(*s, bn);
  const int64_t buf = NewBuffer(dst.elems(), absl::StrCat(v, " nchw", bn, "c"));
  const Blocked* from = s->blocked.empty() ? nullptr : &s->blocked.front();
  AddRelayoutStep(v, *s, from, dst, buf, from != nullptr ? "repack" : "pack");
  s->blocked.push_back({buf, bn});
  return buf;
}

void Compiler::AddRelayoutStep(const std::string& v, const State& s, const Blocked* from,
                               const BlockedGeo& dst, int64_t buf, std::string kind) {
  Step step;
  step.name = v;
  step.kind = std::move(kind);
  if (from != nullptr) {
    const int64_t src_buf = from->buf;
    const BlockedGeo src = GeoOf(s, from->bn);
    step.buffers = {src_buf, buf};
    step.op = RelayoutStep{.src = {Ref::Kind::kArena, src_buf},
                           .src_geo = src,
                           .dst = {Ref::Kind::kArena, buf},
                           .dst_geo = dst};
  } else {
    const int64_t slot = s.tensor;
    const BlockedGeo src = GeoOf(s, 1);
    step.tensors = {slot};
    step.buffers = {buf};
    step.op = RelayoutStep{.src = {Ref::Kind::kTensor, slot},
                           .src_geo = src,
                           .dst = {Ref::Kind::kArena, buf},
                           .dst_geo = dst};
  }
  ++m_->stats.layout_steps;
  AddStep(std::move(step));
}

absl::StatusOr<int64_t> Compiler::PaddedBuf(const std::string& v, const Padded& p) {
  LOOM_ASSIGN_OR_RETURN(State * s, StateOf(v));
  auto it = s->padded.find(p);
  if (it != s->padded.end()) return it->second;
  // Without padding the conv reads the plain blocked layout: no step when the block matches.
  if (p.pt == 0 && p.pl == 0 && p.pb == 0 && p.pr == 0) return BlockedBuf(v, p.bn);
  BlockedGeo dst = GeoOf(*s, p.bn);
  dst.pt = p.pt;
  dst.pl = p.pl;
  dst.pb = p.pb;
  dst.pr = p.pr;
  const int64_t buf = NewBuffer(dst.elems(), absl::StrCat(v, " padded nchw", p.bn, "c"));
  // Prefer a blocked source with the same block size: then rows are plain copies.
  const Blocked* from = nullptr;
  for (const Blocked& b : s->blocked) {
    if (from == nullptr || b.bn == p.bn) from = &b;
  }
  AddRelayoutStep(v, *s, from, dst, buf,
                  from == nullptr ? "pack+pad" : (from->bn == p.bn ? "pad" : "repack+pad"));
  s->padded.emplace(p, buf);
  return buf;
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

// Conv / depthwise conv / dense through a template, with its epilogue. False when the node is
// not one (or no template covers it).
absl::StatusOr<bool> Compiler::TryKernel(int64_t i) {
  const graph::Node& node = g_.nodes[i];
  if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") return false;
  // The operands as the workload reads them: a dense A may be a Transpose's input, read in place
  // (trans_a); the Transpose then still runs, with no consumer but the graph's.
  absl::StatusOr<graph::NodeWorkload> analysed = graph::AnalyzeTunableNode(g_, node);
  if (!analysed.ok()) return false;
  const graph::Workload* w = &analysed->workload;
  const std::string& data_value = analysed->a;
  const bool conv = node.op_type == "Conv";
  if (conv && !Is4dFloat(node.inputs[0])) return false;
  if (!conv) {
    if (w->kind != graph::TaskKind::kDense) return false;
    auto a = g_.value_types.find(data_value);
    if (a == g_.value_types.end() || a->second.shape.size() != 2) return false;
    if (node.GetFloat("alpha", 1.0f) != 1.0f || node.GetFloat("beta", 1.0f) != 1.0f) return false;
  }
  const Tensor* weight = g_.FindInitializer(node.inputs[1]);
  if (weight == nullptr) return false;
  const Tensor* bias = nullptr;
  if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
    bias = g_.FindInitializer(node.inputs[2]);
    if (bias == nullptr) return false;
    const int64_t channels = conv ? w->k : w->n;
    if (bias->num_elements() != channels || bias->dtype() != graph::DType::kFloat32) return false;
  }
  absl::StatusOr<std::unique_ptr<ops::Template>> made = ops::MakeTemplate(*w, o_.target);
  if (!made.ok()) return false;
  const ops::Template& tmpl = **made;

  // The config: best record, else the default.
  ops::Config config = tmpl.DefaultConfig();
  bool tuned = false;
  if (o_.records != nullptr) {
    absl::StatusOr<std::vector<tune::Record>> best =
        o_.records->BestK(graph::WorkloadKey(*w), o_.target.Key(), 1);
    if (best.ok() && !best->empty() && (*best)[0].template_name == tmpl.name() &&
        tmpl.space().Contains(ops::Config{(*best)[0].config_index})) {
      config = ops::Config{(*best)[0].config_index};
      tuned = true;
    }
  }

  // Epilogue: bias, then (convs) a residual Add, then an activation.
  ops::Epilogue ep;
  ep.bias = bias != nullptr;
  std::string out = node.outputs[0];
  std::vector<std::string> fused_names;
  std::string residual;
  if (o_.fuse) {
    int64_t j = SoleConsumer(out);
    if (conv && j >= 0 && g_.nodes[j].op_type == "Add" && g_.nodes[j].inputs.size() == 2) {
      const graph::Node& add = g_.nodes[j];
      const std::string& other = add.inputs[0] == out ? add.inputs[1] : add.inputs[0];
      auto ot = g_.value_types.find(other);
      auto mt = g_.value_types.find(out);
      if (other != out && states_.count(other) > 0 && ot != g_.value_types.end() &&
          mt != g_.value_types.end() && ot->second.shape == mt->second.shape &&
          ot->second.dtype == graph::DType::kFloat32) {
        ep.residual = true;
        residual = other;
        done_[j] = true;
        fused_names.push_back(add.name);
        out = add.outputs[0];
        j = SoleConsumer(out);
      }
    }
    if (j >= 0 && ParseActivation(g_, g_.nodes[j], &ep) && g_.nodes[j].inputs[0] == out) {
      done_[j] = true;
      fused_names.push_back(g_.nodes[j].name);
      out = g_.nodes[j].outputs[0];
    }
  }
  // Untuned convolutions take their input block size from the producer when the space allows
  // it, so the step between them is a plain row copy instead of a gather.
  if (!tuned && conv) {
    auto st = states_.find(node.inputs[0]);
    if (st != states_.end() && !st->second.blocked.empty()) {
      ops::Config adapted = AdaptInputBlock(tmpl, config, st->second.blocked.front().bn);
      if (!(adapted == config) && tmpl.EmitFused(adapted, ep).ok()) config = adapted;
    }
  }
  // Records are measured on one core, where the knobs that only split the work among threads
  // change nothing: the template re-picks them for this model's thread count (valid in, valid
  // out; a config that still fails to emit falls back below like any other).
  config = tmpl.ForThreads(config, o_.num_threads);
  absl::StatusOr<ops::KernelSource> src = tmpl.EmitFused(config, ep);
  if (!src.ok() && tuned) {
    config = tmpl.DefaultConfig();
    tuned = false;
    src = tmpl.EmitFused(config, ep);
  }
  if (!src.ok()) {
    return absl::InternalError(absl::StrCat(node.Describe(), ": ", src.status().message()));
  }
  const std::vector<ops::BufferSpec> specs = tmpl.FusedBuffers(config, ep);

  // Packed weight (the data operand only fixes shapes) and padded bias.
  const std::vector<Shape> nat = tmpl.NaturalInputShapes();
  std::vector<Tensor> packed =
      tmpl.PackInputs(config, {Tensor(graph::DType::kFloat32, nat[0]), *weight});
  std::vector<Ref> args;
  Step step;
  step.name = node.name;
  step.kind = tmpl.name();
  if (ep.bias) absl::StrAppend(&step.kind, "+bias");
  if (ep.residual) absl::StrAppend(&step.kind, "+add");
  if (ep.activation != ops::Epilogue::Activation::kNone) {
    absl::StrAppend(&step.kind, "+", ActivationName(ep.activation));
  }
  int64_t out_buf = -1, out_slot = -1;
  int64_t out_bn = 0;
  Shape dense_out_shape;
  if (conv) {
    const bool dw = w->kind == graph::TaskKind::kDepthwiseConv2d;
    // data: N, C/bn, Hp, Wp, bn  -> the block size is its last dim.
    const int64_t in_bn = specs[0].shape[4];
    out_bn = specs.back().shape[4];
    LOOM_ASSIGN_OR_RETURN(int64_t in_buf,
                          PaddedBuf(node.inputs[0], Padded{in_bn, w->pad_top, w->pad_left,
                                                           w->pad_bottom, w->pad_right}));
    (void)dw;
    args.push_back({Ref::Kind::kArena, in_buf});
    step.buffers.push_back(in_buf);
  } else {
    LOOM_ASSIGN_OR_RETURN(int64_t slot, Natural(data_value));
    args.push_back({Ref::Kind::kTensor, slot});
    step.tensors.push_back(slot);
  }
  args.push_back({Ref::Kind::kConst, NewConst(packed[1])});
  if (ep.bias) {
    const int64_t elems = specs[2].shape[0];
    Tensor b(graph::DType::kFloat32, {elems});
    std::fill(b.data<float>(), b.data<float>() + elems, 0.0f);
    std::copy(bias->data<float>(), bias->data<float>() + bias->num_elements(), b.data<float>());
    args.push_back({Ref::Kind::kConst, NewConst(std::move(b))});
  }
  if (ep.residual) {
    LOOM_ASSIGN_OR_RETURN(int64_t rbuf, BlockedBuf(residual, out_bn));
    args.push_back({Ref::Kind::kArena, rbuf});
    step.buffers.push_back(rbuf);
  }
  if (conv) {
    out_buf = NewBuffer(specs.back().shape[0] * specs.back().shape[1] * specs.back().shape[2] *
                            specs.back().shape[3] * specs.back().shape[4],
                        absl::StrCat(out, " nchw", out_bn, "c"));
    args.push_back({Ref::Kind::kArena, out_buf});
    step.buffers.push_back(out_buf);
  } else {
    out_slot = NewSlot();
    args.push_back({Ref::Kind::kTensor, out_slot});
    step.tensors.push_back(out_slot);
    dense_out_shape = specs.back().shape;
  }

  // The kernel itself (deduplicated by source).
  int64_t kidx;
  auto found = job_by_code_.find(src->code);
  if (found != job_by_code_.end()) {
    kidx = found->second;
  } else {
    kidx = static_cast<int64_t>(jobs_.size());
    job_by_code_.emplace(src->code, kidx);
    jobs_.push_back({*src, config});
  }
  KernelStep ks;
  ks.kernel = kidx;
  ks.args = std::move(args);
  ks.dense = !conv;
  ks.out_slot = out_slot;
  ks.out_shape = dense_out_shape;
  ks.n_real = ks.dense ? w->n : 0;
  ks.m_rows = ks.dense ? w->m : 0;
  step.op = std::move(ks);
  AddStep(std::move(step));
  ++m_->stats.kernel_steps;
  if (tuned) ++m_->stats.tuned_kernels;
  m_->stats.fused_ops += static_cast<int64_t>(fused_names.size());

  State st;
  auto ot = g_.value_types.find(out);
  if (ot != g_.value_types.end()) st.shape = ot->second.shape;
  if (conv) {
    st.blocked.push_back({out_buf, out_bn});
  } else {
    st.tensor = out_slot;
  }
  states_[out] = std::move(st);
  return true;
}

// Channel-wise ops on the blocked layout: MaxPool, GlobalAveragePool, Add, activations, Concat
// over channels. False when the node is not one of them or its inputs are not blocked already.
absl::StatusOr<bool> Compiler::TryBlockedOp(int64_t i) {
  const graph::Node& node = g_.nodes[i];
  if (node.outputs.size() != 1 || !Is4dFloat(node.outputs[0])) return false;
  for (const std::string& in : node.inputs) {
    if (in.empty()) return false;
  }
  if (node.inputs.empty() || !Is4dFloat(node.inputs[0])) return false;
  auto state_blocked = [&](const std::string& v) -> const Blocked* {
    auto it = states_.find(v);
    if (it == states_.end() || it->second.blocked.empty()) return nullptr;
    return &it->second.blocked.front();
  };
  const Blocked* in0 = state_blocked(node.inputs[0]);
  if (in0 == nullptr) return false;
  const std::string& out = node.outputs[0];
  State st;
  st.shape = g_.value_types.at(out).shape;
  const int64_t bn = in0->bn;
  const int64_t src_buf = in0->buf;
  const BlockedGeo ig = GeoOf(states_.at(node.inputs[0]), bn);
  const BlockedGeo og = GeoOf(st, bn);
  Step step;
  step.name = node.name;
  step.kind = absl::StrCat(node.op_type, "(nchwc)");

  ops::Epilogue act;
  if (node.op_type == "MaxPool" || node.op_type == "GlobalAveragePool") {
    if (node.op_type == "MaxPool") {
      if (node.outputs.size() != 1) return false;
      for (int64_t d : node.GetInts("dilations")) {
        if (d != 1) return false;
      }
    }
    const bool global = node.op_type == "GlobalAveragePool";
    int64_t kh = ig.h, kw = ig.w, sh = 1, sw = 1, pt = 0, pl = 0;
    if (!global) {
      absl::StatusOr<graph::WindowGeometry> geo = graph::ResolveWindowGeometry(
          node, {ig.h, ig.w}, node.GetInts("kernel_shape"), node.GetInt("ceil_mode", 0) != 0);
      if (!geo.ok()) return false;
      kh = geo->kernel[0];
      kw = geo->kernel[1];
      sh = geo->strides[0];
      sw = geo->strides[1];
      pt = geo->pads[0];
      pl = geo->pads[1];
      if (geo->output[0] != og.h || geo->output[1] != og.w) return false;
    }
    const int64_t out_buf = NewBuffer(og.elems(), absl::StrCat(out, " nchw", bn, "c"));
    step.buffers = {src_buf, out_buf};
    step.op = PoolStep{.src = src_buf,
                       .dst = out_buf,
                       .in = ig,
                       .out = og,
                       .global = global,
                       .kh = kh,
                       .kw = kw,
                       .sh = sh,
                       .sw = sw,
                       .pt = pt,
                       .pl = pl};
    st.blocked.push_back({out_buf, bn});
  } else if ((node.op_type == "Add" && node.inputs.size() == 2) ||
             ParseActivation(g_, node, &act)) {
    int64_t other_buf = -1;
    if (node.op_type == "Add") {
      auto a = g_.value_types.find(node.inputs[0]);
      auto b = g_.value_types.find(node.inputs[1]);
      if (b == g_.value_types.end() || a->second.shape != b->second.shape ||
          b->second.dtype != graph::DType::kFloat32) {
        return false;
      }
      LOOM_ASSIGN_OR_RETURN(other_buf, BlockedBuf(node.inputs[1], bn));
      step.buffers.push_back(other_buf);
    }
    const int64_t out_buf = NewBuffer(og.elems(), absl::StrCat(out, " nchw", bn, "c"));
    step.buffers.push_back(src_buf);
    step.buffers.push_back(out_buf);
    step.op = EltwiseStep{
        .src = src_buf, .other = other_buf, .dst = out_buf, .total = og.elems(), .act = act};
    st.blocked.push_back({out_buf, bn});
  } else if (node.op_type == "Concat") {
    int64_t axis = node.GetInt("axis", 0);
    if (axis < 0) axis += 4;
    if (axis != 1) return false;
    std::vector<int64_t> srcs, cbs;
    for (const std::string& in : node.inputs) {
      if (!Is4dFloat(in)) return false;
      const int64_t c = g_.value_types.at(in).shape[1];
      if (c % bn != 0) return false;
      cbs.push_back(c / bn);
    }
    for (const std::string& in : node.inputs) {
      LOOM_ASSIGN_OR_RETURN(int64_t b, BlockedBuf(in, bn));
      srcs.push_back(b);
      step.buffers.push_back(b);
    }
    const int64_t out_buf = NewBuffer(og.elems(), absl::StrCat(out, " nchw", bn, "c"));
    step.buffers.push_back(out_buf);
    step.op = ConcatStep{.srcs = srcs,
                         .blocks = cbs,
                         .dst = out_buf,
                         .n = og.n,
                         .out_blocks = og.cb(),
                         .plane = og.h * og.w * bn};
    st.blocked.push_back({out_buf, bn});
  } else {
    return false;
  }
  AddStep(std::move(step));
  ++m_->stats.blocked_steps;
  states_[out] = std::move(st);
  return true;
}

absl::Status Compiler::Reference(int64_t i) {
  const graph::Node& node = g_.nodes[i];
  if (!kernels::HasReferenceKernel(node.op_type)) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": no template and no reference kernel"));
  }
  std::vector<int64_t> in_slots;
  Step step;
  for (const std::string& in : node.inputs) {
    if (in.empty()) {
      in_slots.push_back(-1);
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(int64_t slot, Natural(in));
    in_slots.push_back(slot);
    step.tensors.push_back(slot);
  }
  std::vector<int64_t> out_slots;
  for (const std::string& out : node.outputs) {
    const int64_t slot = out.empty() ? -1 : NewSlot();
    out_slots.push_back(slot);
    if (slot >= 0) {
      step.tensors.push_back(slot);
      State st;
      auto t = g_.value_types.find(out);
      if (t != g_.value_types.end()) st.shape = t->second.shape;
      st.tensor = slot;
      states_[out] = std::move(st);
    }
  }
  step.name = node.name;
  step.kind = absl::StrCat("ref:", node.op_type);
  step.op =
      ReferenceStep{.node = node, .opset = g_.opset, .in_slots = in_slots, .out_slots = out_slots};
  AddStep(std::move(step));
  ++m_->stats.reference_steps;
  return absl::OkStatus();
}

absl::Status Compiler::BuildKernels() {
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
  }
  m_->plan.num_kernels = static_cast<int64_t>(jobs_.size());
  m_->stats.unique_kernels = static_cast<int64_t>(jobs_.size());
  return absl::OkStatus();
}

void Compiler::PlanMemory() {
  Plan& plan = m_->plan;
  std::vector<BufferInfo>& bufs = plan.buffers;
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    for (int64_t b : plan.steps[s].buffers) {
      if (bufs[b].first < 0) bufs[b].first = static_cast<int64_t>(s);
      bufs[b].last = static_cast<int64_t>(s);
    }
  }
  // Largest first; each at the lowest offset clear of the placed buffers it overlaps in time.
  std::vector<size_t> order(bufs.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return bufs[a].bytes > bufs[b].bytes; });
  std::vector<size_t> placed;
  int64_t total = 0, sum = 0;
  for (size_t k : order) {
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

  // Tensor slots: released after their last use, graph outputs never.
  std::vector<int64_t> last(static_cast<size_t>(plan.num_tensor_slots), -1);
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    for (int64_t t : plan.steps[s].tensors) last[t] = static_cast<int64_t>(s);
  }
  for (int64_t t : plan.outputs) last[t] = -1;
  for (size_t t = 0; t < last.size(); ++t) {
    if (last[t] >= 0) plan.steps[last[t]].release.push_back(static_cast<int64_t>(t));
  }
}

absl::Status Compiler::Run() {
  for (size_t i = 0; i < g_.nodes.size(); ++i) {
    for (const std::string& in : g_.nodes[i].inputs) {
      if (!in.empty()) consumers_[in].push_back(static_cast<int64_t>(i));
    }
  }
  for (const graph::ValueInfo& in : g_.inputs) {
    State s;
    s.shape = in.type.shape;
    s.tensor = NewSlot();
    graph::ValueInfo info = in;
    auto t = g_.value_types.find(in.name);
    if (t != g_.value_types.end()) info.type = t->second;
    m_->plan.inputs.push_back({info, s.tensor});
    states_[in.name] = std::move(s);
  }
  done_.assign(g_.nodes.size(), false);
  for (size_t i = 0; i < g_.nodes.size(); ++i) {
    if (done_[i]) continue;
    LOOM_ASSIGN_OR_RETURN(bool k, TryKernel(static_cast<int64_t>(i)));
    if (k) continue;
    LOOM_ASSIGN_OR_RETURN(bool b, TryBlockedOp(static_cast<int64_t>(i)));
    if (b) continue;
    LOOM_RETURN_IF_ERROR(Reference(static_cast<int64_t>(i)));
  }
  for (const graph::ValueInfo& out : g_.outputs) {
    LOOM_ASSIGN_OR_RETURN(int64_t slot, Natural(out.name));
    m_->plan.outputs.push_back(slot);
    graph::ValueInfo info = out;
    auto t = g_.value_types.find(out.name);
    if (t != g_.value_types.end()) info.type = t->second;
    m_->plan.output_infos.push_back(std::move(info));
  }
  LOOM_RETURN_IF_ERROR(BuildKernels());
  PlanMemory();
  return absl::OkStatus();
}

}  // namespace

CompiledModel::CompiledModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CompiledModel::~CompiledModel() = default;

absl::StatusOr<std::unique_ptr<CompiledModel>> CompiledModel::Instantiate(
    std::unique_ptr<Impl> impl, int32_t num_threads) {
  if (num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be at least 1, got ", num_threads));
  }
  impl->num_threads = num_threads;
  if (impl->plan.arena_bytes > 0) {
    void* p =
        std::aligned_alloc(kAlign, static_cast<size_t>(RoundUp(impl->plan.arena_bytes, kAlign)));
    if (p == nullptr) return absl::ResourceExhaustedError("cannot allocate the arena");
    impl->arena.reset(static_cast<char*>(p));
  }
  impl->par.num_threads = num_threads;
  if (num_threads > 1) {
    impl->pool = std::make_unique<base::ForkJoinPool>(num_threads);
    impl->par.pool = impl->pool.get();
    impl->par.parallel_for = &PoolParallelFor;
  }
  return std::unique_ptr<CompiledModel>(new CompiledModel(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CompiledModel>> CompiledModel::Compile(
    const graph::Graph& graph, const CompileOptions& options) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be at least 1, got ", options.num_threads));
  }
  auto t0 = std::chrono::steady_clock::now();
  auto impl = std::make_unique<Impl>();
  impl->plan.isa = options.target.isa;
  impl->plan.target_key = options.target.Key();
  Compiler compiler(graph, options, impl.get());
  LOOM_RETURN_IF_ERROR(compiler.Run());
  impl->stats.compile_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Instantiate(std::move(impl), options.num_threads);
}

absl::StatusOr<std::vector<Tensor>> CompiledModel::Run(
    const std::map<std::string, Tensor>& inputs) {
  return impl_->Execute(inputs, nullptr);
}

absl::StatusOr<std::vector<Tensor>> CompiledModel::RunProfiled(
    const std::map<std::string, Tensor>& inputs, std::vector<StepTiming>* timings) {
  return impl_->Execute(inputs, timings);
}

const CompileStats& CompiledModel::stats() const { return impl_->stats; }
int32_t CompiledModel::num_threads() const { return impl_->num_threads; }
const std::string& CompiledModel::target_key() const { return impl_->plan.target_key; }

std::vector<graph::ValueInfo> CompiledModel::inputs() const {
  std::vector<graph::ValueInfo> v;
  for (const auto& [info, slot] : impl_->plan.inputs) v.push_back(info);
  return v;
}
std::vector<graph::ValueInfo> CompiledModel::outputs() const { return impl_->plan.output_infos; }

std::string CompiledModel::DescribePlan() const {
  std::string s;
  for (const Step& st : impl_->plan.steps) {
    absl::StrAppend(&s, st.kind, " ", st.name);
    for (int64_t b : st.buffers) {
      const BufferInfo& info = impl_->plan.buffers[b];
      absl::StrAppend(&s, " [", info.what, " @", info.offset, "+", info.bytes, "]");
    }
    absl::StrAppend(&s, "\n");
  }
  return s;
}

}  // namespace loom::runtime
