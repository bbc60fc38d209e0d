// Runs a Plan (plan.h): resolves operands to addresses and executes each step, and checks a plan
// read from disk before it runs (ValidatePlan).
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/reference.h"
#include "loom/runtime/plan.h"

namespace loom::runtime {

using graph::Tensor;

SharedLibrary::~SharedLibrary() {
  if (handle_ != nullptr) dlclose(handle_);
}

namespace {

// Runs f(begin, end) over [0, n) on the model's threads.
template <typename F>
void ParFor(const loom_parallel_t* par, int64_t n, const F& f) {
  if (par == nullptr || par->num_threads <= 1 || par->parallel_for == nullptr || n <= 1) {
    if (n > 0) f(int64_t{0}, n);
    return;
  }
  par->parallel_for(
      n, [](int64_t b, int64_t e, void* ctx) { (*static_cast<const F*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)), par->pool);
}

// out[x * out_stride + i] = in[x * in_stride + i] for x < pixels, i < lanes: a run of lanes that
// is contiguous in both blocked layouts, copied at every pixel. The common run lengths get loops
// of constant length (vectorized, or unrolled for one lane).
template <int64_t L>
void CopyLanesOf(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                 int64_t pixels) {
  for (int64_t x = 0; x < pixels; ++x) {
    for (int64_t i = 0; i < L; ++i) out[x * out_stride + i] = in[x * in_stride + i];
  }
}
void CopyLanes(const float* in, int64_t in_stride, float* out, int64_t out_stride, int64_t pixels,
               int64_t lanes) {
  switch (lanes) {
    case 1:
      return CopyLanesOf<1>(in, in_stride, out, out_stride, pixels);
    case 2:
      return CopyLanesOf<2>(in, in_stride, out, out_stride, pixels);
    case 4:
      return CopyLanesOf<4>(in, in_stride, out, out_stride, pixels);
    case 8:
      return CopyLanesOf<8>(in, in_stride, out, out_stride, pixels);
    case 16:
      return CopyLanesOf<16>(in, in_stride, out, out_stride, pixels);
    default:
      for (int64_t x = 0; x < pixels; ++x) {
        for (int64_t i = 0; i < lanes; ++i) out[x * out_stride + i] = in[x * in_stride + i];
      }
  }
}

// Copies `src` (blocked or NCHW, unpadded) into `dst` (its own block size and zero pads).
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
        CopyLanes(in, s.bn, interior + i0, d.bn, d.w, valid);
        for (int64_t x = 0; valid < g && x < d.w; ++x) {
          for (int64_t l = valid; l < g; ++l) interior[x * d.bn + i0 + l] = 0;
        }
      }
    }
  });
}

struct Exec {
  CompiledModel::Impl* impl;
  std::vector<const void*> inputs;
  std::vector<Tensor>* outputs;
  const loom_parallel_t* par;

  void* Resolve(const Ref& r) const {
    switch (r.kind) {
      case Ref::Kind::kArena:
        return impl->arena.get() + impl->plan.buffers[static_cast<size_t>(r.index)].offset;
      case Ref::Kind::kConst:
        return impl->plan.consts[static_cast<size_t>(r.index)].raw_data();
      case Ref::Kind::kInput:
        return const_cast<void*>(inputs[static_cast<size_t>(r.index)]);
      case Ref::Kind::kOutput:
        return (*outputs)[static_cast<size_t>(r.index)].raw_data();
    }
    return nullptr;
  }
  float* F(const Ref& r) const { return static_cast<float*>(Resolve(r)); }
};

absl::Status RunOp(const RelayoutStep& op, const Exec& ex) {
  Relayout(ex.F(op.src), op.src_geo, ex.F(op.dst), op.dst_geo, ex.par);
  return absl::OkStatus();
}

absl::Status RunOp(const KernelStep& op, const Exec& ex) {
  constexpr size_t kMaxArgs = 64;
  void* ptrs[kMaxArgs];
  const size_t n = std::min(op.args.size(), kMaxArgs);  // ValidatePlan / the planner cap it
  for (size_t a = 0; a < n; ++a) ptrs[a] = ex.Resolve(op.args[a]);
  ex.impl->kernels[static_cast<size_t>(op.kernel)](ptrs, ex.par);
  return absl::OkStatus();
}

// Output rows [b, e) of a pool on the blocked layout; BN > 0 is the block size as a constant
// (the lane loops vectorize), 0 reads it from the step.
template <int64_t BN>
void PoolRows(const PoolStep& op, const float* x, float* y, int64_t b, int64_t e) {
  using K = PoolStep::Kind;
  const BlockedGeo& ig = op.in;
  const BlockedGeo& og = op.out;
  const int64_t bn = BN > 0 ? BN : og.bn;
  for (int64_t r = b; r < e; ++r) {
    const int64_t oy = r % og.h, nc = r / og.h;
    const float* xp = x + nc * ig.h * ig.w * bn;
    for (int64_t ox = 0; ox < og.w; ++ox) {
      float* yp = y + (r * og.w + ox) * bn;
      if (op.kind == K::kGlobalAverage || op.kind == K::kGlobalMax) {
        const bool avg = op.kind == K::kGlobalAverage;
        for (int64_t l = 0; l < bn; ++l) yp[l] = avg ? 0 : xp[l];
        for (int64_t p = avg ? 0 : 1; p < ig.h * ig.w; ++p) {
          const float* v = xp + p * bn;
          if (avg) {
            for (int64_t l = 0; l < bn; ++l) yp[l] += v[l];
          } else {
            for (int64_t l = 0; l < bn; ++l) yp[l] = std::max(yp[l], v[l]);
          }
        }
        if (avg) {
          const float inv = 1.0f / static_cast<float>(ig.h * ig.w);
          for (int64_t l = 0; l < bn; ++l) yp[l] *= inv;
        }
        continue;
      }
      const bool avg = op.kind == K::kAverage;
      for (int64_t l = 0; l < bn; ++l) yp[l] = avg ? 0 : -std::numeric_limits<float>::infinity();
      int64_t count = 0;
      for (int64_t ky = 0; ky < op.kh; ++ky) {
        const int64_t iy = oy * op.sh - op.pt + ky * op.dh;
        if (iy < 0 || iy >= ig.h) continue;
        for (int64_t kx = 0; kx < op.kw; ++kx) {
          const int64_t ix = ox * op.sw - op.pl + kx * op.dw;
          if (ix < 0 || ix >= ig.w) continue;
          const float* v = xp + (iy * ig.w + ix) * bn;
          ++count;
          if (avg) {
            for (int64_t l = 0; l < bn; ++l) yp[l] += v[l];
          } else {
            for (int64_t l = 0; l < bn; ++l) yp[l] = std::max(yp[l], v[l]);
          }
        }
      }
      if (avg) {
        // count_include_pad counts the window clipped to the padded input (ONNX).
        int64_t div = count;
        if (op.count_include_pad) {
          const int64_t y0 = oy * op.sh - op.pt, x0 = ox * op.sw - op.pl;
          const int64_t y1 = std::min(y0 + (op.kh - 1) * op.dh + 1, ig.h + op.pb);
          const int64_t x1 = std::min(x0 + (op.kw - 1) * op.dw + 1, ig.w + op.pr);
          div = ((y1 - y0 + op.dh - 1) / op.dh) * ((x1 - x0 + op.dw - 1) / op.dw);
        }
        const float inv = div > 0 ? 1.0f / static_cast<float>(div) : 0.0f;
        for (int64_t l = 0; l < bn; ++l) yp[l] *= inv;
      }
    }
  }
}

absl::Status RunOp(const PoolStep& op, const Exec& ex) {
  const float* x = ex.F(op.src);
  float* y = ex.F(op.dst);
  const BlockedGeo& og = op.out;
  ParFor(ex.par, og.n * og.cb() * og.h, [&](int64_t b, int64_t e) {
    switch (og.bn) {
      case 8:
        PoolRows<8>(op, x, y, b, e);
        break;
      case 16:
        PoolRows<16>(op, x, y, b, e);
        break;
      case 32:
        PoolRows<32>(op, x, y, b, e);
        break;
      default:
        PoolRows<0>(op, x, y, b, e);
        break;
    }
  });
  return absl::OkStatus();
}

absl::Status RunOp(const ChannelMapStep& op, const Exec& ex) {
  const BlockedGeo& d = op.dst_geo;
  const int64_t plane = d.h * d.w;
  // Per destination channel: its source and source channel.
  std::vector<std::pair<int64_t, int64_t>> from(static_cast<size_t>(d.c), {-1, 0});
  for (const ChannelRun& r : op.runs) {
    for (int64_t i = 0; i < r.len; ++i)
      from[static_cast<size_t>(r.dst_c + i)] = {r.src, r.src_c + i};
  }
  std::vector<const float*> srcs;
  for (const Ref& s : op.srcs) srcs.push_back(ex.F(s));
  float* dst = ex.F(op.dst);
  ParFor(ex.par, d.n * d.cb(), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / d.cb(), ob = t % d.cb();
      float* out = dst + t * plane * d.bn;
      const int64_t c0 = ob * d.bn;
      // Runs of destination lanes that are consecutive channels of one source block: each is
      // copied over the whole plane (a whole block with the same block size: one memcpy).
      for (int64_t l = 0; l < d.bn;) {
        const int64_t c = c0 + l;
        if (c >= d.c) {  // padding lanes
          for (int64_t p = 0; p < plane; ++p) {
            for (int64_t k = l; k < d.bn; ++k) out[p * d.bn + k] = 0.0f;
          }
          break;
        }
        const auto [s, sc] = from[static_cast<size_t>(c)];
        const BlockedGeo& sg = op.src_geos[static_cast<size_t>(s)];
        int64_t len = 1;
        while (l + len < d.bn && c + len < d.c && (sc + len) % sg.bn != 0 &&
               from[static_cast<size_t>(c + len)] == std::make_pair(s, sc + len)) {
          ++len;
        }
        const float* in =
            srcs[static_cast<size_t>(s)] + (n * sg.cb() + sc / sg.bn) * plane * sg.bn + sc % sg.bn;
        if (len == d.bn && sg.bn == d.bn) {
          std::memcpy(out, in, sizeof(float) * static_cast<size_t>(plane * d.bn));
        } else {
          CopyLanes(in, sg.bn, out + l, d.bn, plane, len);
        }
        l += len;
      }
    }
  });
  return absl::OkStatus();
}

absl::Status RunOp(const CopyStep& op, const Exec& ex) {
  const char* src = static_cast<const char*>(ex.Resolve(op.src));
  char* dst = static_cast<char*>(ex.Resolve(op.dst));
  for (int64_t r = 0; r < op.rows; ++r) {
    std::memcpy(dst + r * op.dst_stride, src + r * op.src_stride,
                static_cast<size_t>(op.row_bytes));
  }
  return absl::OkStatus();
}

absl::Status RunOp(const ReferenceStep& op, const Exec& ex) {
  std::vector<Tensor> ins;
  ins.reserve(op.inputs.size());
  for (const TypedRef& in : op.inputs) {
    if (!in.present) {
      ins.emplace_back();
      continue;
    }
    Tensor t(in.type.dtype, in.type.shape);
    if (t.num_bytes() > 0) std::memcpy(t.raw_data(), ex.Resolve(in.ref), t.num_bytes());
    ins.push_back(std::move(t));
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> outs, kernels::EvaluateNode(op.node, op.opset, ins));
  for (size_t k = 0; k < op.outputs.size(); ++k) {
    const TypedRef& out = op.outputs[k];
    if (!out.present) continue;
    if (k >= outs.size() || outs[k].dtype() != out.type.dtype ||
        outs[k].shape() != out.type.shape) {
      return absl::InternalError(absl::StrCat(op.node.Describe(),
                                              ": the reference kernel's output ", k, " is not ",
                                              graph::TensorType(out.type).ToString()));
    }
    if (outs[k].num_bytes() > 0) {
      std::memcpy(ex.Resolve(out.ref), outs[k].raw_data(), outs[k].num_bytes());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Tensor>> CompiledModel::Impl::Execute(
    const std::map<std::string, Tensor>& in, std::vector<StepTiming>* timings) {
  std::vector<Tensor> outputs;
  Exec ex{this, std::vector<const void*>(plan.inputs.size(), nullptr), &outputs, &par};
  for (size_t k = 0; k < plan.inputs.size(); ++k) {
    const graph::ValueInfo& info = plan.inputs[k];
    auto it = in.find(info.name);
    if (it == in.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", info.name, "'"));
    }
    if (it->second.dtype() != info.type.dtype || it->second.shape() != info.type.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", info.name, "' is ", graph::TensorType(it->second.type()).ToString(),
          ", the model was compiled for ", info.type.ToString()));
    }
    ex.inputs[k] = it->second.raw_data();
  }
  if (in.size() != plan.inputs.size()) {
    for (const auto& [name, t] : in) {
      bool known = false;
      for (const graph::ValueInfo& info : plan.inputs) known |= info.name == name;
      if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown input '", name, "'"));
    }
  }
  outputs.reserve(plan.outputs.size());
  for (const graph::ValueInfo& info : plan.outputs) {
    LOOM_ASSIGN_OR_RETURN(Tensor t, Tensor::Create(info.type.dtype, info.type.shape));
    outputs.push_back(std::move(t));
  }
  // Small steps run on the caller alone (ParallelSteps): the same kernels, with no pool.
  loom_parallel_t serial{};
  serial.num_threads = 1;
  for (size_t k = 0; k < plan.steps.size(); ++k) {
    const Step& s = plan.steps[k];
    ex.par = k < parallel_steps.size() && !parallel_steps[k] ? &serial : &par;
    auto t0 = std::chrono::steady_clock::now();
    LOOM_RETURN_IF_ERROR(std::visit([&](const auto& op) { return RunOp(op, ex); }, s.op));
    if (timings != nullptr) {
      timings->push_back(
          {s.name, s.kind,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
    }
  }
  return outputs;
}

// ---------------------------------------------------------------------------------------------
// Operands and validation.

namespace {

// Largest dimension or byte count a plan may carry: far above any real model, far below where
// products of a few of them overflow int64.
constexpr int64_t kMaxExtent = int64_t{1} << 40;
// Largest channel block.
constexpr int64_t kMaxBlock = 4096;

bool MulOk(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_mul_overflow(a, b, out) && *out <= kMaxExtent;
}
bool AddOk(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_add_overflow(a, b, out) && *out <= kMaxExtent;
}

// The bytes of a geometry, or -1 when a field is out of range or the size overflows.
int64_t GeoBytes(const BlockedGeo& g) {
  for (int64_t v : {g.n, g.c, g.h, g.w, g.pt, g.pl, g.pb, g.pr}) {
    if (v < 0 || v > kMaxExtent) return -1;
  }
  if (g.bn < 1 || g.bn > kMaxBlock) return -1;
  int64_t hp, wp, cb = (g.c + g.bn - 1) / g.bn, e;
  if (!AddOk(g.h, g.pt + g.pb, &hp) || !AddOk(g.w, g.pl + g.pr, &wp)) return -1;
  if (!MulOk(g.n, cb, &e) || !MulOk(e, hp, &e) || !MulOk(e, wp, &e) || !MulOk(e, g.bn, &e) ||
      !MulOk(e, 4, &e)) {
    return -1;
  }
  return e;
}

// Bytes of a tensor type, or -1 when a dimension is negative or the size overflows.
int64_t TypeBytes(const graph::TensorType& t) {
  int64_t e = static_cast<int64_t>(graph::DTypeSize(t.dtype));
  if (e == 0) return -1;
  for (int64_t d : t.shape) {
    if (d < 0 || !MulOk(e, d, &e)) return -1;
  }
  return e;
}

}  // namespace

void ForEachRef(const StepOp& step, const std::function<void(const Ref&, int64_t, bool)>& f) {
  constexpr int64_t kOverflow = std::numeric_limits<int64_t>::max();
  auto geo_bytes = [](const BlockedGeo& g) {
    const int64_t b = GeoBytes(g);
    return b < 0 ? kOverflow : b;
  };
  auto type_bytes = [](const graph::TensorType& t) {
    const int64_t b = TypeBytes(t);
    return b < 0 ? kOverflow : b;
  };
  // (rows - 1) * stride + row_bytes, or kOverflow.
  auto span = [](int64_t rows, int64_t stride, int64_t row_bytes) {
    if (rows <= 0) return int64_t{0};
    int64_t s;
    if (stride < 0 || row_bytes < 0 || !MulOk(rows - 1, stride, &s) || !AddOk(s, row_bytes, &s)) {
      return kOverflow;
    }
    return s;
  };
  std::visit(
      [&](const auto& op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, RelayoutStep>) {
          f(op.src, geo_bytes(op.src_geo), false);
          f(op.dst, geo_bytes(op.dst_geo), true);
        } else if constexpr (std::is_same_v<T, KernelStep>) {
          for (const Ref& r : op.args) f(r, -1, false);
        } else if constexpr (std::is_same_v<T, PoolStep>) {
          f(op.src, geo_bytes(op.in), false);
          f(op.dst, geo_bytes(op.out), true);
        } else if constexpr (std::is_same_v<T, ChannelMapStep>) {
          for (size_t k = 0; k < op.srcs.size() && k < op.src_geos.size(); ++k) {
            f(op.srcs[k], geo_bytes(op.src_geos[k]), false);
          }
          f(op.dst, geo_bytes(op.dst_geo), true);
        } else if constexpr (std::is_same_v<T, CopyStep>) {
          f(op.src, span(op.rows, op.src_stride, op.row_bytes), false);
          f(op.dst, span(op.rows, op.dst_stride, op.row_bytes), true);
        } else if constexpr (std::is_same_v<T, ReferenceStep>) {
          for (const TypedRef& r : op.inputs) {
            if (r.present) f(r.ref, type_bytes(r.type), false);
          }
          for (const TypedRef& r : op.outputs) {
            if (r.present) f(r.ref, type_bytes(r.type), true);
          }
        }
      },
      step);
}

int64_t StepWorkBytes(const Plan& plan, const Step& step) {
  constexpr int64_t kOverflow = std::numeric_limits<int64_t>::max();
  int64_t total = 0;
  auto add = [&](int64_t bytes) {
    if (bytes < 0 || __builtin_add_overflow(total, bytes, &total)) total = kOverflow;
  };
  if (const auto* k = std::get_if<KernelStep>(&step.op)) {
    if (k->kernel < 0 || static_cast<size_t>(k->kernel) >= plan.kernels.size()) return 0;
    for (int64_t b : plan.kernels[static_cast<size_t>(k->kernel)].bytes) add(b);
    return total;
  }
  ForEachRef(step.op, [&](const Ref&, int64_t bytes, bool) { add(bytes); });
  return total;
}

std::vector<bool> ParallelSteps(const Plan& plan, int64_t min_bytes) {
  std::vector<bool> parallel;
  parallel.reserve(plan.steps.size());
  for (const Step& s : plan.steps) parallel.push_back(StepWorkBytes(plan, s) >= min_bytes);
  return parallel;
}

absl::Status ValidatePlan(const Plan& p) {
  auto bad = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("plan.json is inconsistent: ", what));
  };
  if (p.arena_bytes < 0 || p.arena_bytes > static_cast<int64_t>(Tensor::kMaxBytes)) {
    return bad("arena size out of range");
  }
  for (const BufferInfo& b : p.buffers) {
    if (b.offset < 0 || b.bytes < 0 || b.offset % 64 != 0 || b.bytes > p.arena_bytes ||
        b.offset > p.arena_bytes - b.bytes) {
      return bad(absl::StrCat("buffer '", b.what, "' lies outside the arena"));
    }
  }
  std::vector<int64_t> in_bytes, out_bytes;
  for (const graph::ValueInfo& v : p.inputs) {
    in_bytes.push_back(TypeBytes(v.type));
    if (in_bytes.back() < 0) return bad(absl::StrCat("input '", v.name, "' has a bad type"));
  }
  for (const graph::ValueInfo& v : p.outputs) {
    out_bytes.push_back(TypeBytes(v.type));
    if (out_bytes.back() < 0) return bad(absl::StrCat("output '", v.name, "' has a bad type"));
  }
  for (const KernelArgs& k : p.kernels) {
    if (k.bytes.size() > 64 || k.written.size() != k.bytes.size()) {
      return bad("a kernel's argument table is malformed");
    }
  }
  // The size of what `r` points at, or -1 when it points nowhere (or at something read-only and
  // `written`).
  auto size_of = [&](const Ref& r, bool written) -> int64_t {
    const auto i = static_cast<size_t>(r.index);
    switch (r.kind) {
      case Ref::Kind::kArena:
        return r.index >= 0 && i < p.buffers.size() ? p.buffers[i].bytes : -1;
      case Ref::Kind::kConst:
        return !written && r.index >= 0 && i < p.consts.size()
                   ? static_cast<int64_t>(p.consts[i].num_bytes())
                   : -1;
      case Ref::Kind::kInput:
        return !written && r.index >= 0 && i < in_bytes.size() ? in_bytes[i] : -1;
      case Ref::Kind::kOutput:
        return r.index >= 0 && i < out_bytes.size() ? out_bytes[i] : -1;
    }
    return -1;
  };
  for (const Step& s : p.steps) {
    bool ok = true;
    std::string why;
    ForEachRef(s.op, [&](const Ref& r, int64_t need, bool written) {
      const int64_t have = size_of(r, written);
      if (have < 0) {
        ok = false;
        why = "an operand out of range";
      } else if (need > have) {
        ok = false;
        why = absl::StrCat("an operand of ", have, " bytes where ", need, " are used");
      }
    });
    // Step-specific checks the generic walk cannot make.
    std::visit(
        [&](const auto& op) {
          using T = std::decay_t<decltype(op)>;
          auto geo_ok = [&](const BlockedGeo& g) {
            if (GeoBytes(g) < 0) {
              ok = false;
              why = "a geometry out of range";
            }
          };
          if constexpr (std::is_same_v<T, RelayoutStep>) {
            geo_ok(op.src_geo);
            geo_ok(op.dst_geo);
            if (op.src_geo.n != op.dst_geo.n || op.src_geo.c != op.dst_geo.c ||
                op.src_geo.h != op.dst_geo.h || op.src_geo.w != op.dst_geo.w ||
                op.src_geo.pt + op.src_geo.pl + op.src_geo.pb + op.src_geo.pr != 0) {
              ok = false;
              why = "geometries that differ";
            }
          } else if constexpr (std::is_same_v<T, KernelStep>) {
            if (op.kernel < 0 || op.kernel >= static_cast<int64_t>(p.kernels.size())) {
              ok = false;
              why = "a kernel out of range";
              return;
            }
            const KernelArgs& need = p.kernels[static_cast<size_t>(op.kernel)];
            if (op.args.size() != need.bytes.size()) {
              ok = false;
              why = absl::StrCat(op.args.size(), " arguments for a kernel that takes ",
                                 need.bytes.size());
              return;
            }
            for (size_t a = 0; a < need.bytes.size(); ++a) {
              const int64_t have = size_of(op.args[a], need.written[a]);
              if (have < 0) {
                ok = false;
                why = absl::StrCat("argument ", a, " pointing out of range",
                                   need.written[a] ? " or at read-only memory" : "");
                return;
              }
              if (need.bytes[a] < 0 || need.bytes[a] > have) {
                ok = false;
                why = absl::StrCat("argument ", a, " with ", have, " bytes where the kernel ",
                                   need.written[a] ? "writes " : "reads ", need.bytes[a]);
                return;
              }
            }
          } else if constexpr (std::is_same_v<T, PoolStep>) {
            geo_ok(op.in);
            geo_ok(op.out);
            if (op.in.bn != op.out.bn || op.in.n != op.out.n || op.in.c != op.out.c || op.kh < 1 ||
                op.kw < 1 || op.sh < 1 || op.sw < 1 || op.dh < 1 || op.dw < 1 ||
                op.kh > kMaxExtent || op.kw > kMaxExtent || op.pt < 0 || op.pl < 0 || op.pb < 0 ||
                op.pr < 0 || op.pb > kMaxExtent || op.pr > kMaxExtent || op.pt > kMaxExtent ||
                op.pl > kMaxExtent || op.sh > kMaxExtent || op.sw > kMaxExtent ||
                op.dh > kMaxExtent || op.dw > kMaxExtent) {
              ok = false;
              why = "a bad window";
            }
          } else if constexpr (std::is_same_v<T, ChannelMapStep>) {
            geo_ok(op.dst_geo);
            if (op.srcs.size() != op.src_geos.size()) {
              ok = false;
              why = "sources and geometries differ";
              return;
            }
            for (const BlockedGeo& g : op.src_geos) {
              geo_ok(g);
              if (g.n != op.dst_geo.n || g.h != op.dst_geo.h || g.w != op.dst_geo.w ||
                  g.pt + g.pl + g.pb + g.pr != 0) {
                ok = false;
                why = "a source of another shape";
              }
            }
            if (op.dst_geo.pt + op.dst_geo.pl + op.dst_geo.pb + op.dst_geo.pr != 0) {
              ok = false;
              why = "a padded destination";
            }
            // The runs, in destination order, must tile [0, C) exactly.
            std::vector<std::pair<int64_t, int64_t>> spans;
            for (const ChannelRun& r : op.runs) {
              if (r.src < 0 || r.src >= static_cast<int64_t>(op.srcs.size()) || r.len < 1 ||
                  r.src_c < 0 || r.dst_c < 0 || r.len > kMaxExtent || r.src_c > kMaxExtent ||
                  r.dst_c > kMaxExtent ||
                  r.src_c + r.len > op.src_geos[static_cast<size_t>(r.src)].c) {
                ok = false;
                why = "a channel run out of range";
                return;
              }
              spans.emplace_back(r.dst_c, r.len);
            }
            std::sort(spans.begin(), spans.end());
            int64_t next = 0;
            for (const auto& [c, len] : spans) {
              if (c != next) break;
              next = c + len;
            }
            if (next != op.dst_geo.c) {
              ok = false;
              why = "channel runs that do not cover the destination once";
            }
          } else if constexpr (std::is_same_v<T, CopyStep>) {
            if (op.rows < 0 || op.row_bytes < 0 || op.src_stride < 0 || op.dst_stride < 0 ||
                op.rows > kMaxExtent || op.row_bytes > kMaxExtent || op.src_stride > kMaxExtent ||
                op.dst_stride > kMaxExtent) {
              ok = false;
              why = "a copy out of range";
            }
          } else if constexpr (std::is_same_v<T, ReferenceStep>) {
            for (const auto* list : {&op.inputs, &op.outputs}) {
              for (const TypedRef& r : *list) {
                if (r.present && TypeBytes(r.type) < 0) {
                  ok = false;
                  why = "an operand of a bad type";
                }
              }
            }
          }
        },
        s.op);
    if (!ok) return bad(absl::StrCat("step '", s.name, "' (", s.kind, ") has ", why));
  }
  return absl::OkStatus();
}

}  // namespace loom::runtime
