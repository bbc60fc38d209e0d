// Resize (opsets 11..19): nearest, linear and cubic interpolation, separably one axis at a time
// in double precision, as ONNX's reference implementation (onnx/reference/ops/op_resize.py)
// computes it: per output coordinate, the source coordinate under the coordinate transformation
// mode, the interpolation coefficients (antialiased when downsampling with `antialias`), and
// the nearest source elements, clamped to the edge (or excluded with `exclude_outside`).
// Integer outputs round half to even and saturate, as the reference's saturate_cast does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/data_movement_internal.h"

namespace loom::kernels::internal {
namespace {

using graph::CoordinateMode;
using graph::NearestMode;
using graph::ResizeMode;
using graph::ResizeSpec;

// Interpolation weights of one output coordinate: source indices (clamped) and coefficients.
struct Taps {
  std::vector<int64_t> index;
  std::vector<double> coeff;
  bool extrapolated = false;  // tf_crop_and_resize outside the input: the extrapolation value
};

std::vector<double> NearestCoeffs(double ratio, NearestMode mode) {
  if (ratio == std::floor(ratio)) return {0, 1};
  switch (mode) {
    case NearestMode::kRoundPreferFloor:
      return {ratio <= 0.5 ? 1.0 : 0.0, ratio > 0.5 ? 1.0 : 0.0};
    case NearestMode::kRoundPreferCeil:
      return {ratio < 0.5 ? 1.0 : 0.0, ratio >= 0.5 ? 1.0 : 0.0};
    case NearestMode::kFloor:
      return {1, 0};
    case NearestMode::kCeil:
      break;
  }
  return {0, 1};
}

std::vector<double> LinearCoeffs(double ratio, double scale, bool antialias) {
  if (!antialias) return {1 - ratio, ratio};
  scale = std::min(scale, 1.0);
  const int64_t start = static_cast<int64_t>(std::floor(-1 / scale) + 1);
  const int64_t footprint = 2 - 2 * start;
  std::vector<double> c(static_cast<size_t>(footprint));
  double sum = 0;
  for (int64_t i = 0; i < footprint; ++i) {
    const double arg = (static_cast<double>(start + i) - ratio) * scale;
    c[static_cast<size_t>(i)] = std::clamp(1 - std::fabs(arg), 0.0, 1.0);
    sum += c[static_cast<size_t>(i)];
  }
  for (double& v : c) v /= sum;
  return c;
}

std::vector<double> CubicCoeffs(double ratio, double scale, double a, bool antialias) {
  if (!antialias) {
    const double r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;
    return {((a * r1 - 5 * a) * r1 + 8 * a) * r1 - 4 * a,
            ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1, ((a + 2) * q - (a + 3)) * q * q + 1,
            ((a * q1 - 5 * a) * q1 + 8 * a) * q1 - 4 * a};
  }
  scale = std::min(scale, 1.0);
  auto kernel = [a](double x) {
    x = std::fabs(x);
    const double x2 = x * x, x3 = x * x2;
    if (x <= 1) return (a + 2) * x3 - (a + 3) * x2 + 1;
    if (x < 2) return a * x3 - 5 * a * x2 + 8 * a * x - 4 * a;
    return 0.0;
  };
  const int64_t start = static_cast<int64_t>(std::floor(-2 / scale) + 1);
  const int64_t end = 2 - start;
  std::vector<double> c;
  double sum = 0;
  for (int64_t i = start; i < end; ++i) {
    c.push_back(kernel(scale * (static_cast<double>(i) - ratio)));
    sum += c.back();
  }
  for (double& v : c) v /= sum;
  return c;
}

Taps TapsFor(const ResizeSpec& spec, size_t axis, int64_t y, int64_t in, int64_t out) {
  Taps t;
  const double x = graph::ResizeSourceCoordinate(spec, axis, static_cast<double>(y), in, out);
  if (spec.coordinate_mode == CoordinateMode::kTfCropAndResize &&
      (x < 0 || x > static_cast<double>(in - 1))) {
    t.extrapolated = true;
    return t;
  }
  const double floor_x = std::floor(x);
  const double ratio = x == floor_x ? 1.0 : x - floor_x;
  switch (spec.mode) {
    case ResizeMode::kNearest:
      t.coeff = NearestCoeffs(ratio, spec.nearest_mode);
      break;
    case ResizeMode::kLinear:
      t.coeff = LinearCoeffs(ratio, spec.scales[axis], spec.antialias);
      break;
    case ResizeMode::kCubic:
      t.coeff = CubicCoeffs(ratio, spec.scales[axis], spec.cubic_coeff_a, spec.antialias);
      break;
  }
  // The n source indices nearest x, ties to the smaller (op_resize.py's neighbour selection in
  // edge-padded coordinates).
  const int64_t n = static_cast<int64_t>(t.coeff.size());
  const int64_t pad = (n + 1) / 2;
  const double xp = x + static_cast<double>(pad);
  const double p = std::floor(xp);
  const double frac = xp - p;
  int64_t offset;
  if (n % 2 == 0) {
    offset = frac == 0 ? -(n / 2) : -(n / 2) + 1;
  } else {
    offset = frac <= 0.5 ? -((n - 1) / 2) : -((n - 1) / 2) + 1;
  }
  const int64_t start = static_cast<int64_t>(p) + offset - pad;
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t idx = start + k;
    if (spec.exclude_outside && (idx < 0 || idx >= in)) t.coeff[static_cast<size_t>(k)] = 0;
    sum += t.coeff[static_cast<size_t>(k)];
    t.index.push_back(std::clamp<int64_t>(idx, 0, in - 1));
  }
  if (spec.exclude_outside && sum != 0) {
    for (double& c : t.coeff) c /= sum;
  }
  return t;
}

// Resizes `data` (row-major, `shape`) along `axis` to `out` elements.
std::vector<double> ResizeAxis(const std::vector<double>& data, Shape& shape, size_t axis,
                               int64_t out, const ResizeSpec& spec) {
  const int64_t in = shape[axis];
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  std::vector<Taps> taps;
  taps.reserve(static_cast<size_t>(out));
  for (int64_t y = 0; y < out; ++y) taps.push_back(TapsFor(spec, axis, y, in, out));
  std::vector<double> result(static_cast<size_t>(outer * out * inner));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t y = 0; y < out; ++y) {
      const Taps& t = taps[static_cast<size_t>(y)];
      double* dst = &result[static_cast<size_t>((o * out + y) * inner)];
      if (t.extrapolated) {
        std::fill_n(dst, inner, spec.extrapolation_value);
        continue;
      }
      for (size_t k = 0; k < t.index.size(); ++k) {
        if (t.coeff[k] == 0) continue;
        const double* src = &data[static_cast<size_t>((o * in + t.index[k]) * inner)];
        for (int64_t i = 0; i < inner; ++i) dst[i] += t.coeff[k] * src[i];
      }
    }
  }
  shape[axis] = out;
  return result;
}

// Rounds and saturates a double into `dtype`, as the reference's saturate_cast does.
void StoreResult(DType dtype, double v, std::byte* p) {
  auto put = [p](auto x) { std::memcpy(p, &x, sizeof(x)); };
  if (graph::IsIntegerDType(dtype) || dtype == DType::kBool) {
    v = std::nearbyint(v);  // half to even (the default rounding mode)
  }
  VisitDType(dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_integral_v<T>) {
      if (graph::IsHalfDType(dtype)) {
        const float f = static_cast<float>(v);
        put(dtype == DType::kFloat16 ? graph::FloatToHalf(f) : graph::FloatToBFloat16(f));
      } else if (std::isnan(v)) {
        put(T{0});
      } else {
        const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
        const double hi = static_cast<double>(std::numeric_limits<T>::max());
        put(v <= lo   ? std::numeric_limits<T>::lowest()
            : v >= hi ? std::numeric_limits<T>::max()
                      : static_cast<T>(v));
      }
    } else {
      put(static_cast<T>(v));
    }
  });
}

OpResult ResizeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 4, 1));
  const Tensor& x = ctx.inputs[0];
  auto doubles = [&](size_t i) -> std::optional<std::vector<double>> {
    if (!ctx.HasInput(i)) return std::nullopt;
    std::vector<double> v(static_cast<size_t>(ctx.inputs[i].num_elements()));
    for (size_t k = 0; k < v.size(); ++k) v[k] = ctx.inputs[i].DoubleAt(static_cast<int64_t>(k));
    return v;
  };
  for (size_t i : {size_t{1}, size_t{2}}) {
    if (ctx.HasInput(i) && !graph::IsFloatingDType(ctx.inputs[i].dtype())) {
      return absl::InvalidArgumentError(absl::StrCat(i == 1 ? "roi" : "scales",
                                                     " must be a floating-point tensor, got ",
                                                     ctx.inputs[i].type().ToString()));
    }
  }
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts sizes, ReadOptionalInts(ctx, 3, "sizes"));
  LOOM_ASSIGN_OR_RETURN(ResizeSpec spec, graph::ResolveResize(ctx.node, ctx.opset, x.shape(),
                                                              doubles(1), doubles(2), sizes));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), spec.out));
  std::vector<double> data(static_cast<size_t>(x.num_elements()));
  for (size_t i = 0; i < data.size(); ++i) data[i] = x.DoubleAt(static_cast<int64_t>(i));
  Shape shape = x.shape();
  for (size_t axis = 0; axis < shape.size(); ++axis) {
    // An axis with scale 1, the same extent and the full roi is left as it is.
    const bool identity =
        std::fabs(spec.scales[axis] - 1.0) <= 1e-9 && spec.out[axis] == shape[axis] &&
        (spec.coordinate_mode != CoordinateMode::kTfCropAndResize ||
         (spec.roi_start[axis] == 0 && std::fabs(spec.roi_end[axis] - 1.0) <= 1e-9));
    if (identity) continue;
    data = ResizeAxis(data, shape, axis, spec.out[axis], spec);
  }
  const size_t esize = graph::DTypeSize(x.dtype());
  for (size_t i = 0; i < data.size(); ++i) StoreResult(x.dtype(), data[i], Bytes(y) + i * esize);
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterResizeKernels(KernelTable* table) { (*table)["Resize"] = &ResizeOp; }

}  // namespace loom::kernels::internal
