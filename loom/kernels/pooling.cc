// Pooling and reduction reference kernels: MaxPool, AveragePool, GlobalAveragePool,
// GlobalMaxPool, ReduceMean. Windowed pools handle 1-D and 2-D spatial inputs (a 1-D pool is a
// 2-D one over a height-1 input).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

// One windowed pool, reduced to two spatial dims.
struct Pool2d {
  int64_t batch = 0, channels = 0;
  int64_t in_h = 1, in_w = 1, out_h = 1, out_w = 1;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  Shape out_shape;
};

absl::StatusOr<Pool2d> ReadPool(const OpContext& ctx, bool allow_dilations) {
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDType(x, "X", DType::kFloat32));
  if (x.rank() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must be [N, C, spatial...]"));
  }
  const int64_t spatial = x.rank() - 2;
  if (spatial > 2) {
    return absl::UnimplementedError(
        absl::StrCat("only 1-D and 2-D pooling is supported, got X ", x.type().ToString()));
  }
  if (!ctx.node.HasAttr("kernel_shape")) {
    return absl::InvalidArgumentError("attribute 'kernel_shape' is missing");
  }
  Shape in_spatial(x.shape().begin() + 2, x.shape().end());
  LOOM_ASSIGN_OR_RETURN(Window win, ReadWindow(ctx.node, in_spatial,
                                               ctx.node.GetInts("kernel_shape"), allow_dilations));
  const bool ceil_mode = ctx.node.GetInt("ceil_mode", 0) != 0;
  Pool2d p;
  p.batch = x.dim(0);
  p.channels = x.dim(1);
  p.out_shape = {p.batch, p.channels};
  std::vector<int64_t> out(static_cast<size_t>(spatial));
  for (size_t d = 0; d < out.size(); ++d) {
    LOOM_ASSIGN_OR_RETURN(out[d], WindowOutputSize(win, d, in_spatial[d], ceil_mode));
    p.out_shape.push_back(out[d]);
  }
  const size_t wd = spatial == 2 ? 1 : 0;
  if (spatial == 2) {
    p.in_h = in_spatial[0];
    p.out_h = out[0];
    p.kernel_h = win.kernel[0];
    p.stride_h = win.strides[0];
    p.dilation_h = win.dilations[0];
    p.pad_top = win.pads_begin[0];
    p.pad_bottom = win.pads_end[0];
  }
  p.in_w = in_spatial[wd];
  p.out_w = out[wd];
  p.kernel_w = win.kernel[wd];
  p.stride_w = win.strides[wd];
  p.dilation_w = win.dilations[wd];
  p.pad_left = win.pads_begin[wd];
  p.pad_right = win.pads_end[wd];
  return p;
}

// MaxPool: the maximum over the window's in-range elements (padding never wins). The optional
// Indices output holds the flat row-major index of the first maximum in X (storage_order 0).
OpResult MaxPoolOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  LOOM_ASSIGN_OR_RETURN(Pool2d p, ReadPool(ctx, /*allow_dilations=*/true));
  const bool want_indices = ctx.WantsOutput(1);
  if (want_indices && ctx.node.GetInt("storage_order", 0) != 0) {
    return absl::UnimplementedError("Indices with storage_order=1 are not supported");
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, p.out_shape));
  Tensor indices;
  if (want_indices) {
    LOOM_ASSIGN_OR_RETURN(indices, NewTensor(DType::kInt64, p.out_shape));
  }
  const float* px = ctx.inputs[0].data<float>();
  float* py = y.data<float>();
  int64_t out_i = 0;
  for (int64_t nc = 0; nc < p.batch * p.channels; ++nc) {
    const int64_t plane = nc * p.in_h * p.in_w;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      for (int64_t ow = 0; ow < p.out_w; ++ow, ++out_i) {
        float best = -std::numeric_limits<float>::infinity();
        int64_t best_index = -1;
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) continue;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            if (iw < 0 || iw >= p.in_w) continue;
            const int64_t idx = plane + ih * p.in_w + iw;
            if (best_index < 0 || px[idx] > best) {
              best = px[idx];
              best_index = idx;
            }
          }
        }
        py[out_i] = best;
        if (want_indices) indices.data<int64_t>()[out_i] = best_index;
      }
    }
  }
  std::vector<Tensor> outs{std::move(y)};
  if (want_indices) outs.push_back(std::move(indices));
  return outs;
}

// AveragePool (ONNX/PyTorch semantics). A window covers [start, start + kernel) clipped to the
// padded input [-pad_begin, in + pad_end); with count_include_pad the divisor is that clipped
// size (so a ceil_mode window hanging past the padded input does not count the overhang),
// otherwise only the elements inside the real input count.
OpResult AveragePoolOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  LOOM_ASSIGN_OR_RETURN(Pool2d p, ReadPool(ctx, /*allow_dilations=*/false));
  const bool count_include_pad = ctx.node.GetInt("count_include_pad", 0) != 0;
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, p.out_shape));
  const float* px = ctx.inputs[0].data<float>();
  float* py = y.data<float>();
  int64_t out_i = 0;
  for (int64_t nc = 0; nc < p.batch * p.channels; ++nc) {
    const float* plane = px + nc * p.in_h * p.in_w;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = oh * p.stride_h - p.pad_top;
      const int64_t h1 = std::min(h0 + p.kernel_h, p.in_h + p.pad_bottom);
      const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h1, p.in_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow, ++out_i) {
        const int64_t w0 = ow * p.stride_w - p.pad_left;
        const int64_t w1 = std::min(w0 + p.kernel_w, p.in_w + p.pad_right);
        const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w1, p.in_w);
        float sum = 0.0f;
        for (int64_t ih = hs; ih < he; ++ih) {
          for (int64_t iw = ws; iw < we; ++iw) sum += plane[ih * p.in_w + iw];
        }
        const int64_t count = count_include_pad ? (h1 - h0) * (w1 - w0) : (he - hs) * (we - ws);
        py[out_i] = count > 0 ? sum / static_cast<float>(count) : 0.0f;
      }
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

// GlobalAveragePool / GlobalMaxPool: X [N, C, spatial...] -> [N, C, 1, ...].
template <bool kMax>
OpResult GlobalPoolOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDType(x, "X", DType::kFloat32));
  if (x.rank() < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " must be [N, C, spatial...]"));
  }
  Shape out_shape = {x.dim(0), x.dim(1)};
  int64_t inner = 1;
  for (int64_t d = 2; d < x.rank(); ++d) {
    inner *= x.dim(d);
    out_shape.push_back(1);
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, out_shape));
  const float* px = x.data<float>();
  for (int64_t nc = 0; nc < x.dim(0) * x.dim(1); ++nc) {
    const float* plane = px + nc * inner;
    float acc = kMax ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t i = 0; i < inner; ++i) acc = kMax ? std::max(acc, plane[i]) : acc + plane[i];
    y.data<float>()[nc] = kMax ? acc : acc / static_cast<float>(inner);
  }
  return std::vector<Tensor>{std::move(y)};
}

// ReduceMean: axes are an attribute before opset 18 and an optional input from 18. No axes
// reduces everything, unless noop_with_empty_axes (then the input is returned).
OpResult ReduceMeanOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 2, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDType(x, "data", DType::kFloat32));
  std::vector<int64_t> axes;
  if (ctx.opset >= 18) {
    if (ctx.HasInput(1)) {
      LOOM_ASSIGN_OR_RETURN(axes, ReadInts(ctx.inputs[1], "axes"));
    }
  } else {
    if (ctx.inputs.size() > 1) {
      return absl::InvalidArgumentError("axes is an attribute before opset 18, not an input");
    }
    axes = ctx.node.GetInts("axes");
  }
  const bool keepdims = ctx.node.GetInt("keepdims", 1) != 0;
  if (axes.empty() && ctx.node.GetInt("noop_with_empty_axes", 0) != 0) {
    return std::vector<Tensor>{x};
  }
  const int64_t rank = x.rank();
  std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty());
  for (int64_t a : axes) {
    LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, rank, "axis"));
    if (reduced[static_cast<size_t>(axis)]) {
      return absl::InvalidArgumentError(absl::StrCat("axis ", a, " is repeated in axes"));
    }
    reduced[static_cast<size_t>(axis)] = true;
  }
  Shape kept_shape;  // x's shape with reduced dims set to 1
  Shape out_shape;
  int64_t count = 1;
  for (int64_t d = 0; d < rank; ++d) {
    const bool r = reduced[static_cast<size_t>(d)];
    kept_shape.push_back(r ? 1 : x.dim(d));
    if (r) count *= x.dim(d);
    if (!r || keepdims) out_shape.push_back(r ? 1 : x.dim(d));
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, out_shape));
  // Each output element accumulates its inputs in increasing input order.
  const std::vector<int64_t> out_strides = BroadcastStrides(kept_shape, x.shape());
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t i = 0; i < x.num_elements(); ++i) {
    int64_t o = 0;
    for (int64_t d = 0; d < rank; ++d) o += index[d] * out_strides[d];
    py[o] += px[i];
    for (int64_t d = rank; d-- > 0;) {
      if (++index[d] < x.dim(d)) break;
      index[d] = 0;
    }
  }
  for (int64_t o = 0; o < y.num_elements(); ++o) py[o] /= static_cast<float>(count);
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterPoolingKernels(KernelTable* table) {
  (*table)["MaxPool"] = &MaxPoolOp;
  (*table)["AveragePool"] = &AveragePoolOp;
  (*table)["GlobalAveragePool"] = &GlobalPoolOp<false>;
  (*table)["GlobalMaxPool"] = &GlobalPoolOp<true>;
  (*table)["ReduceMean"] = &ReduceMeanOp;
}

}  // namespace loom::kernels::internal
