// Lowered Resize: nearest (every dtype, by element size; the four nearest_modes) and linear
// (float32), with the coordinate transformations half_pixel, pytorch_half_pixel, align_corners,
// asymmetric and half_pixel_symmetric; modes, scales (from `scales`, or `sizes` with axes and
// keep_aspect_ratio_policy) and output extents come from graph::ResolveResize. Every dim is
// separable: at lowering time each
// resized dim gets a table of source indices (and, for linear, the second index and the weight),
// computed in double precision as ONNX's reference does; the kernel only reads tables. A work unit
// is one output row. Refused (kUnimplemented, naming it): cubic, tf_crop_and_resize, antialias
// when downsampling, linear over more than three non-innermost dims.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/data_movement.h"
#include "loom/ops/lower_common.h"

namespace loom::ops::lower {
namespace {

using graph::DType;
using graph::Shape;
using graph::TensorType;

int64_t Nearest(graph::NearestMode mode, double x) {
  if (mode == graph::NearestMode::kFloor) return static_cast<int64_t>(std::floor(x));
  if (mode == graph::NearestMode::kCeil) return static_cast<int64_t>(std::ceil(x));
  const double f = std::floor(x);
  if (x - f == 0.5) {
    return static_cast<int64_t>(mode == graph::NearestMode::kRoundPreferCeil ? f + 1 : f);
  }
  return static_cast<int64_t>(std::round(x));
}

absl::StatusOr<LoweredKernel> LowerResize(const LowerCtx& ctx) {
  const graph::Node& node = ctx.node();
  LOOM_ASSIGN_OR_RETURN(TensorType x, ctx.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType y, ctx.Out(0));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  LOOM_ASSIGN_OR_RETURN(auto roi, ctx.OptionalConstDoubles(1, "roi"));
  LOOM_ASSIGN_OR_RETURN(auto scales, ctx.OptionalConstDoubles(2, "scales"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts sizes, ctx.OptionalConstInts(3, "sizes"));
  LOOM_ASSIGN_OR_RETURN(graph::ResizeSpec spec,
                        graph::ResolveResize(node, ctx.opset(), x.shape, roi, scales, sizes));
  if (spec.mode == graph::ResizeMode::kCubic) return ctx.Unimplemented("mode 'cubic'");
  if (spec.coordinate_mode == graph::CoordinateMode::kTfCropAndResize) {
    return ctx.Unimplemented("coordinate_transformation_mode 'tf_crop_and_resize'");
  }
  const bool linear = spec.mode == graph::ResizeMode::kLinear;
  if (spec.antialias && linear) {
    for (int64_t d = 0; d < rank; ++d) {
      if (spec.scales[static_cast<size_t>(d)] < 1) return ctx.Unimplemented("antialias 1");
    }
  }
  if (linear) {
    LOOM_RETURN_IF_ERROR(ctx.RequireDType(x.dtype, {DType::kFloat32}, "linear input"));
  }
  if (y.shape != spec.out) return ctx.Invalid("output shape differs from the resolved one");
  const std::vector<double>& scale = spec.scales;
  const int64_t total = graph::NumElements(y.shape);
  const std::string t = linear ? "float" : StorageCType(x.dtype);
  KernelWriter w(ctx.target(), "resize");
  w.Input(node.inputs[0], t, "in");
  w.Output(node.outputs[0], t, "out");
  if (total == 0) return w.Finish(0, 1, "");
  if (graph::NumElements(x.shape) == 0) return ctx.Invalid("cannot resize an empty input");

  const std::vector<int64_t> strides = RowMajorStrides(x.shape);
  // Tables per dim: first source offset (element offset, stride applied), and for linear the
  // second offset and the weight of the second.
  std::vector<bool> interpolated(static_cast<size_t>(rank), false);
  for (int64_t d = 0; d < rank; ++d) {
    const size_t k = static_cast<size_t>(d);
    const int64_t in = x.shape[k], out = y.shape[k];
    std::vector<int64_t> i0, i1;
    std::vector<std::string> wt;
    for (int64_t o = 0; o < out; ++o) {
      const double src = graph::ResizeSourceCoordinate(spec, k, static_cast<double>(o), in, out);
      if (!linear) {
        int64_t i = Nearest(spec.nearest_mode, src);
        i = std::min<int64_t>(std::max<int64_t>(i, 0), in - 1);
        i0.push_back(i * strides[k]);
      } else {
        const double c = std::min(std::max(src, 0.0), static_cast<double>(in - 1));
        const int64_t lo = static_cast<int64_t>(std::floor(c));
        const int64_t hi = std::min<int64_t>(lo + 1, in - 1);
        i0.push_back(lo * strides[k]);
        i1.push_back(hi * strides[k]);
        wt.push_back(FloatLiteral(static_cast<float>(c - static_cast<double>(lo))));
      }
    }
    // A dim whose extent and scale are unchanged reads straight through (no table).
    interpolated[k] = linear && !(in == out && scale[k] == 1.0);
    w.Global(
        absl::StrCat("static const int64_t loom_i0_", d, "[] = {", absl::StrJoin(i0, ","), "};"));
    if (interpolated[k]) {
      w.Global(
          absl::StrCat("static const int64_t loom_i1_", d, "[] = {", absl::StrJoin(i1, ","), "};"));
      w.Global(
          absl::StrCat("static const float loom_w_", d, "[] = {", absl::StrJoin(wt, ","), "};"));
    }
  }
  const int64_t n = y.shape.back();
  const int64_t last = rank - 1;
  std::vector<int64_t> outer_interp;  // non-innermost interpolated dims
  for (int64_t d = 0; d < last; ++d) {
    if (interpolated[static_cast<size_t>(d)]) outer_interp.push_back(d);
  }
  if (outer_interp.size() > 3) {
    return ctx.Unimplemented(absl::StrCat("linear resize over ", outer_interp.size() + 1, " dims"));
  }
  // The unit's offsets: dims not interpolated add their table entry to `base`; interpolated
  // ones keep (a, b, weight) for the corners.
  std::string body =
      absl::StrCat("  for (int64_t u = loom_u0; u < loom_u1; ++u) {\n", "    ", t,
                   "* __restrict yr = out + u * ", n, ";\n", "    int64_t loom_r = u, base = 0;\n");
  for (int64_t d = last; d-- > 0;) {
    const int64_t e = y.shape[static_cast<size_t>(d)];
    absl::StrAppend(&body, "    const int64_t o", d, " = loom_r % ", e, "; loom_r /= ", e, ";\n");
    if (!interpolated[static_cast<size_t>(d)]) {
      absl::StrAppend(&body, "    base += loom_i0_", d, "[o", d, "];\n");
    }
  }
  // Rows of the corners and their weights.
  const int64_t corners = int64_t{1} << outer_interp.size();
  for (int64_t c = 0; c < corners; ++c) {
    std::string off = "base", weight = "1.0f";
    for (size_t q = 0; q < outer_interp.size(); ++q) {
      const int64_t d = outer_interp[q];
      const bool second = (c >> q) & 1;
      absl::StrAppend(&off, " + loom_i", second ? 1 : 0, "_", d, "[o", d, "]");
      absl::StrAppend(&weight, " * ",
                      second ? absl::StrCat("loom_w_", d, "[o", d, "]")
                             : absl::StrCat("(1.0f - loom_w_", d, "[o", d, "])"));
    }
    absl::StrAppend(&body, "    const ", t, "* __restrict x", c, " = in + ", off, ";\n");
    if (linear) absl::StrAppend(&body, "    const float c", c, " = ", weight, ";\n");
  }
  const bool interp_last = interpolated[static_cast<size_t>(last)];
  absl::StrAppend(&body, "    for (int64_t j = 0; j < ", n, "; ++j) {\n");
  if (!linear) {
    absl::StrAppend(&body, "      yr[j] = x0[loom_i0_", last, "[j]];\n");
  } else {
    absl::StrAppend(
        &body, "      const int64_t a = loom_i0_", last, "[j]",
        interp_last ? absl::StrCat(", b = loom_i1_", last, "[j]") : "", ";\n",
        interp_last ? absl::StrCat("      const float wb = loom_w_", last, "[j];\n") : "",
        "      float acc = 0.0f;\n");
    for (int64_t c = 0; c < corners; ++c) {
      absl::StrAppend(&body, "      acc += c", c, " * ",
                      interp_last ? absl::StrCat("(x", c, "[a] * (1.0f - wb) + x", c, "[b] * wb)")
                                  : absl::StrCat("x", c, "[a]"),
                      ";\n");
    }
    absl::StrAppend(&body, "      yr[j] = acc;\n");
  }
  absl::StrAppend(&body, "    }\n  }\n");
  return w.Finish(total / n, n * static_cast<int64_t>(graph::DTypeSize(x.dtype)) * (corners + 1),
                  body);
}

}  // namespace

void RegisterResizeLowerings(LowerTable* table) { (*table)["Resize"] = &LowerResize; }

}  // namespace loom::ops::lower
