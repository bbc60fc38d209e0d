// Pooling on the blocked layout (EmitBlockedPool, lowering.h). A work unit is one output row of
// one channel block (a whole plane for the global kinds); every output pixel keeps its window's
// accumulator in `bn` lanes, so the lane loops are fixed-length and vectorize. The window's
// geometry is baked in: the rows and columns whose window lies inside the input take a loop with
// constant bounds, the border ones clip the window arithmetically (never a test per tap).
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
#include "loom/ops/lower_common.h"
#include "loom/ops/lowering.h"

namespace loom::ops {
namespace {

using Kind = BlockedPoolSpec::Kind;

// Extents above this are refused: the planner's shapes are far below it, and products of them
// stay far from int64 overflow in the generated index arithmetic.
constexpr int64_t kMaxExtent = int64_t{1} << 24;
constexpr int64_t kMaxBlock = 64;

absl::Status Validate(const BlockedPoolSpec& s) {
  auto in = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  if (!in(s.bn, 1, kMaxBlock)) {
    return absl::InvalidArgumentError(absl::StrCat("pool: block size ", s.bn, " out of [1, 64]"));
  }
  for (int64_t v : {s.n, s.c, s.h, s.w, s.oh, s.ow}) {
    if (!in(v, 1, kMaxExtent)) {
      return absl::InvalidArgumentError(absl::StrCat("pool: extent ", v, " out of range"));
    }
  }
  if (s.kind == Kind::kGlobalAverage || s.kind == Kind::kGlobalMax) {
    if (s.oh != 1 || s.ow != 1) {
      return absl::InvalidArgumentError("pool: a global pool has a 1x1 output");
    }
    return absl::OkStatus();
  }
  for (int64_t v : {s.kh, s.kw, s.sh, s.sw, s.dh, s.dw}) {
    if (!in(v, 1, kMaxExtent)) {
      return absl::InvalidArgumentError(
          absl::StrCat("pool: kernel, stride or dilation ", v, " out of range"));
    }
  }
  for (int64_t v : {s.pt, s.pl, s.pb, s.pr}) {
    if (!in(v, 0, kMaxExtent)) {
      return absl::InvalidArgumentError(absl::StrCat("pool: pad ", v, " out of range"));
    }
  }
  return absl::OkStatus();
}

// The output columns [lo, hi) whose window lies inside [0, w): start = o * s - p, last tap at
// start + (k - 1) * d.
std::pair<int64_t, int64_t> Interior(int64_t out, int64_t w, int64_t k, int64_t s, int64_t d,
                                     int64_t p) {
  const int64_t lo = std::min(out, (p + s - 1) / s);
  const int64_t span = w - 1 - (k - 1) * d + p;  // o * s <= span
  const int64_t hi = span < 0 ? lo : std::clamp(span / s + 1, lo, out);
  return {lo, hi};
}

// File-scope helpers: the clipped tap range, and the window of one output pixel from its first
// valid tap. loom_window is always inlined, so the interior calls (constant tap counts) unroll.
std::string Globals(const BlockedPoolSpec& s) {
  const bool avg = s.kind == Kind::kAverage;
  const int64_t bn = s.bn;
  return absl::StrCat(
      "static inline int64_t loom_cdiv(int64_t a, int64_t b) {\n",
      "  return a >= 0 ? (a + b - 1) / b : -((-a) / b);\n}\n",
      "static inline int64_t loom_fdiv(int64_t a, int64_t b) {\n",
      "  return a >= 0 ? a / b : -((-a + b - 1) / b);\n}\n",
      "// The taps k in [*k0, *k1) whose position start + k * d lies in [0, n).\n",
      "static inline void loom_taps(int64_t start, int64_t d, int64_t k, int64_t n, int64_t* k0,\n",
      "                             int64_t* k1) {\n",
      "  const int64_t a = loom_cdiv(-start, d), b = loom_fdiv(n - 1 - start, d) + 1;\n",
      "  *k0 = a > 0 ? a : 0;\n  *k1 = b < k ? b : k;\n  if (*k1 < *k0) *k1 = *k0;\n}\n",
      "static inline __attribute__((always_inline)) void loom_window(\n",
      "    const float* __restrict x, float* __restrict y, int64_t ny, int64_t nx, float inv) {\n",
      "  float acc[", bn, "];\n",  //
      "  for (int l = 0; l < ", bn, "; ++l) acc[l] = ", avg ? "0.0f" : "-__builtin_inff()", ";\n",
      "  for (int64_t ky = 0; ky < ny; ++ky) {\n",  //
      "    for (int64_t kx = 0; kx < nx; ++kx) {\n", "      const float* __restrict v = x + (ky * ",
      s.dh * s.w, " + kx * ", s.dw, ") * ", bn,
      ";\n",  //
      "      for (int l = 0; l < ", bn, "; ++l) ",
      avg ? "acc[l] += v[l];" : "acc[l] = acc[l] < v[l] ? v[l] : acc[l];", "\n",
      "    }\n  }\n",  //
      "  for (int l = 0; l < ", bn, "; ++l) y[l] = acc[l]", avg ? " * inv" : "", ";\n",
      "  (void)inv;\n}\n");
}

// One output row (n, channel block, oy) per unit.
std::string WindowBody(const BlockedPoolSpec& s) {
  const int64_t bn = s.bn;
  const auto [xlo, xhi] = Interior(s.ow, s.w, s.kw, s.sw, s.dw, s.pl);
  std::string b =
      absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",  //
                   "    const int64_t oy = u % ", s.oh, ";\n",
                   "    const float* __restrict xp = in + (u / ", s.oh, ") * ", s.h * s.w * bn,
                   ";\n", "    float* __restrict yp = out + u * ", s.ow * bn, ";\n",  //
                   "    const int64_t iy = oy * ", s.sh, " - ", s.pt, ";\n",
                   "    int64_t ky0, ky1;\n",  //
                   "    loom_taps(iy, ", s.dh, ", ", s.kh, ", ", s.h, ", &ky0, &ky1);\n",
                   "    const int64_t ny = ky1 - ky0;\n",  //
                   "    const int64_t y0 = iy + ky0 * ", s.dh, ";\n",
                   "    for (int64_t ox = 0; ox < ", s.ow, "; ++ox) {\n");
  if (xlo < xhi) {
    // The whole window inside the input: the count is the kernel's area either way.
    absl::StrAppend(&b, "      if (ny == ", s.kh, " && ox >= ", xlo, " && ox < ", xhi, ") {\n",
                    "        loom_window(xp + (y0 * ", s.w, " + ox * ", s.sw, " - ", s.pl, ") * ",
                    bn, ", yp + ox * ", bn, ", ", s.kh, ", ", s.kw, ", ",
                    lower::FloatLiteral(1.0f / static_cast<float>(s.kh * s.kw)), ");\n",
                    "        continue;\n      }\n");
  }
  absl::StrAppend(&b, "      const int64_t ix = ox * ", s.sw, " - ", s.pl, ";\n",
                  "      int64_t kx0, kx1;\n",  //
                  "      loom_taps(ix, ", s.dw, ", ", s.kw, ", ", s.w, ", &kx0, &kx1);\n",
                  "      const int64_t nx = kx1 - kx0;\n");
  if (s.kind == Kind::kAverage && s.count_include_pad) {
    // The window clipped to the padded input (ONNX), in taps.
    absl::StrAppend(&b, "      int64_t ye = iy + ", (s.kh - 1) * s.dh + 1, ", xe = ix + ",
                    (s.kw - 1) * s.dw + 1, ";\n",                                 //
                    "      if (ye > ", s.h + s.pb, ") ye = ", s.h + s.pb, ";\n",  //
                    "      if (xe > ", s.w + s.pr, ") xe = ", s.w + s.pr, ";\n",
                    "      const int64_t div = ((ye - iy + ", s.dh - 1, ") / ", s.dh,
                    ") * ((xe - ix + ", s.dw - 1, ") / ", s.dw, ");\n");
  } else {
    absl::StrAppend(&b, "      const int64_t div = ny * nx;\n");
  }
  absl::StrAppend(&b, "      const float inv = div > 0 ? 1.0f / (float)div : 0.0f;\n",
                  "      loom_window(xp + (y0 * ", s.w, " + ix + kx0 * ", s.dw, ") * ", bn,
                  ", yp + ox * ", bn, ", ny, nx, inv);\n", "    }\n  }\n");
  return b;
}

// One plane (n, channel block) per unit: four interleaved accumulators, combined in a fixed
// order, so the sum does not wait on one add chain.
std::string GlobalBody(const BlockedPoolSpec& s) {
  const bool avg = s.kind == Kind::kGlobalAverage;
  const int64_t bn = s.bn, hw = s.h * s.w;
  const std::string init = avg ? "0.0f" : "-__builtin_inff()";
  auto fold = [&](const std::string& a, const std::string& v) {
    return avg ? absl::StrCat(a, " += ", v, ";")
               : absl::StrCat(a, " = ", a, " < ", v, " ? ", v, " : ", a, ";");
  };
  std::string b = absl::StrCat(
      "  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n",
      "    const float* __restrict xp = in + u * ", hw * bn, ";\n",
      "    float* __restrict yp = out + u * ", bn, ";\n", "    float a0[", bn, "], a1[", bn,
      "], a2[", bn, "], a3[", bn, "];\n", "    for (int l = 0; l < ", bn,
      "; ++l) a0[l] = a1[l] = a2[l] = a3[l] = ", init, ";\n",
      "    int64_t p = 0;\n",  //
      "    for (; p + 4 <= ", hw, "; p += 4) {\n", "      const float* __restrict v = xp + p * ",
      bn, ";\n", "      for (int l = 0; l < ", bn, "; ++l) {\n",  //
      "        ", fold("a0[l]", "v[l]"), "\n",                    //
      "        ", fold("a1[l]", absl::StrCat("v[", bn, " + l]")), "\n", "        ",
      fold("a2[l]", absl::StrCat("v[", 2 * bn, " + l]")), "\n", "        ",
      fold("a3[l]", absl::StrCat("v[", 3 * bn, " + l]")), "\n",  //
      "      }\n    }\n",                                        //
      "    for (; p < ", hw, "; ++p) {\n", "      for (int l = 0; l < ", bn, "; ++l) ",
      fold("a0[l]", absl::StrCat("xp[p * ", bn, " + l]")),
      "\n    }\n",                                   //
      "    for (int l = 0; l < ", bn, "; ++l) {\n",  //
      "      ", fold("a0[l]", "a1[l]"), "\n",        //
      "      ", fold("a2[l]", "a3[l]"), "\n",        //
      "      ", fold("a0[l]", "a2[l]"), "\n");
  absl::StrAppend(
      &b, "      yp[l] = a0[l]",
      avg ? absl::StrCat(" * ", lower::FloatLiteral(1.0f / static_cast<float>(hw))) : "",
      ";\n    }\n  }\n");
  return b;
}

}  // namespace

absl::StatusOr<BlockedPoolSpec> ResolveBlockedPool(const graph::Node& node, Kind kind,
                                                   const graph::Shape& in, const graph::Shape& out,
                                                   int64_t bn) {
  if (in.size() != 4 || out.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": a blocked pool is 2-D"));
  }
  BlockedPoolSpec s{.kind = kind,
                    .n = in[0],
                    .c = in[1],
                    .h = in[2],
                    .w = in[3],
                    .bn = bn,
                    .oh = out[2],
                    .ow = out[3]};
  if (kind == Kind::kGlobalAverage || kind == Kind::kGlobalMax) return s;
  LOOM_ASSIGN_OR_RETURN(
      graph::WindowGeometry geo,
      graph::ResolveWindowGeometry(node, {in[2], in[3]}, node.GetInts("kernel_shape"),
                                   node.GetInt("ceil_mode", 0) != 0));
  if (geo.kernel.size() != 2 || geo.strides.size() != 2 || geo.pads.size() != 4 ||
      geo.output.size() != 2 || geo.output[0] != out[2] || geo.output[1] != out[3]) {
    return absl::InvalidArgumentError(absl::StrCat(
        node.Describe(), ": the window does not give the output ", graph::ShapeToString(out)));
  }
  s.kh = geo.kernel[0];
  s.kw = geo.kernel[1];
  s.sh = geo.strides[0];
  s.sw = geo.strides[1];
  s.dh = geo.dilations.size() == 2 ? geo.dilations[0] : 1;
  s.dw = geo.dilations.size() == 2 ? geo.dilations[1] : 1;
  s.pt = geo.pads[0];
  s.pl = geo.pads[1];
  s.pb = geo.pads[2];
  s.pr = geo.pads[3];
  s.count_include_pad = node.GetInt("count_include_pad", 0) != 0;
  return s;
}

absl::StatusOr<KernelSource> EmitBlockedPool(const BlockedPoolSpec& spec, const Target& target) {
  LOOM_RETURN_IF_ERROR(Validate(spec));
  const bool global = spec.kind == Kind::kGlobalAverage || spec.kind == Kind::kGlobalMax;
  static constexpr const char* kKinds[] = {"max_pool_nchwc", "average_pool_nchwc",
                                           "global_average_pool_nchwc", "global_max_pool_nchwc"};
  lower::KernelWriter w(target, kKinds[static_cast<int>(spec.kind)]);
  w.Input("x", "float", "in");
  w.Output("y", "float", "out");
  const int64_t planes = spec.n * ((spec.c + spec.bn - 1) / spec.bn);
  const int64_t pixel_bytes = spec.bn * 4;
  if (global) {
    return w.Finish(planes, spec.h * spec.w * pixel_bytes, GlobalBody(spec)).source;
  }
  w.Global(Globals(spec));
  return w.Finish(planes * spec.oh, spec.ow * pixel_bytes * (spec.kh + 1), WindowBody(spec)).source;
}

}  // namespace loom::ops
