#include "loom/kernels/conv.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels {

namespace {
int64_t OutSize(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                int64_t dilation) {
  return (in + pad_begin + pad_end - (kernel - 1) * dilation - 1) / stride + 1;
}

// Half-open range [lo, hi) of output positions o < out whose input position o*stride + offset
// lies inside [0, in).
void ValidOutputRange(int64_t offset, int64_t stride, int64_t in, int64_t out, int64_t* lo,
                      int64_t* hi) {
  *lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  *hi = in - 1 - offset >= 0 ? std::min(out, (in - 1 - offset) / stride + 1) : 0;
  if (*hi < *lo) *hi = *lo;
}
}  // namespace

int64_t Conv2dParams::out_h() const {
  return OutSize(in_h, pad_top, pad_bottom, kernel_h, stride_h, dilation_h);
}
int64_t Conv2dParams::out_w() const {
  return OutSize(in_w, pad_left, pad_right, kernel_w, stride_w, dilation_w);
}

absl::Status ValidateConv2dParams(const Conv2dParams& p) {
  if (p.batch < 0 || p.in_channels < 1 || p.in_h < 1 || p.in_w < 1 || p.out_channels < 1) {
    return absl::InvalidArgumentError(absl::StrCat("conv sizes must be positive: batch ", p.batch,
                                                   ", in_channels ", p.in_channels, ", in ", p.in_h,
                                                   "x", p.in_w, ", out_channels ", p.out_channels));
  }
  if (p.groups < 1 || p.in_channels % p.groups != 0 || p.out_channels % p.groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("group ", p.groups, " must divide in_channels ",
                                                   p.in_channels, " and out_channels ",
                                                   p.out_channels));
  }
  if (p.kernel_h < 1 || p.kernel_w < 1 || p.stride_h < 1 || p.stride_w < 1 || p.dilation_h < 1 ||
      p.dilation_w < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel ", p.kernel_h, "x", p.kernel_w, ", strides ", p.stride_h, "x", p.stride_w,
        " and dilations ", p.dilation_h, "x", p.dilation_w, " must be positive"));
  }
  if (p.pad_top < 0 || p.pad_left < 0 || p.pad_bottom < 0 || p.pad_right < 0) {
    return absl::InvalidArgumentError("conv pads must be non-negative");
  }
  int64_t span_h = p.in_h + p.pad_top + p.pad_bottom - (p.kernel_h - 1) * p.dilation_h - 1;
  int64_t span_w = p.in_w + p.pad_left + p.pad_right - (p.kernel_w - 1) * p.dilation_w - 1;
  if (span_h < 0 || span_w < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "padded input ", p.in_h + p.pad_top + p.pad_bottom, "x", p.in_w + p.pad_left + p.pad_right,
        " is smaller than the dilated kernel ", (p.kernel_h - 1) * p.dilation_h + 1, "x",
        (p.kernel_w - 1) * p.dilation_w + 1));
  }
  return absl::OkStatus();
}

void Conv2dNchw(const Conv2dParams& p, const float* x, const float* w, const float* bias_or_null,
                float* y) {
  LOOM_CHECK(ValidateConv2dParams(p).ok());
  const int64_t out_h = p.out_h(), out_w = p.out_w();
  const int64_t in_per_group = p.in_channels / p.groups;
  const int64_t out_per_group = p.out_channels / p.groups;
  // One output row is accumulated at a time; each element still sums its own terms in
  // (ic, kh, kw) order, but the innermost loop runs along the contiguous output row.
  std::vector<float> acc(static_cast<size_t>(out_w));
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t oc = 0; oc < p.out_channels; ++oc) {
      const int64_t g = oc / out_per_group;
      const float* w_oc = w + oc * in_per_group * p.kernel_h * p.kernel_w;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t ic = 0; ic < in_per_group; ++ic) {
          const float* x_c = x + ((n * p.in_channels) + g * in_per_group + ic) * p.in_h * p.in_w;
          for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const int64_t ih = oh * p.stride_h + kh * p.dilation_h - p.pad_top;
            if (ih < 0 || ih >= p.in_h) continue;  // zero padding
            const float* x_row = x_c + ih * p.in_w;
            for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const float wv = w_oc[(ic * p.kernel_h + kh) * p.kernel_w + kw];
              const int64_t offset = kw * p.dilation_w - p.pad_left;  // iw = ow*stride_w + offset
              int64_t lo, hi;
              ValidOutputRange(offset, p.stride_w, p.in_w, out_w, &lo, &hi);
              for (int64_t ow = lo; ow < hi; ++ow) {
                acc[static_cast<size_t>(ow)] += wv * x_row[ow * p.stride_w + offset];
              }
            }
          }
        }
        float* y_row = y + ((n * p.out_channels + oc) * out_h + oh) * out_w;
        const float b = bias_or_null != nullptr ? bias_or_null[oc] : 0.0f;
        for (int64_t ow = 0; ow < out_w; ++ow) {
          y_row[ow] = bias_or_null != nullptr ? acc[static_cast<size_t>(ow)] + b
                                              : acc[static_cast<size_t>(ow)];
        }
      }
    }
  }
}

namespace internal {
namespace {

// ONNX Conv: X [N, C, spatial...], W [M, C/group, k...], optional B [M]; 1-D or 2-D spatial.
OpResult ConvOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 3, 2));
  const Tensor& x = ctx.inputs[0];
  const Tensor& w = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDType(x, "X", DType::kFloat32));
  LOOM_RETURN_IF_ERROR(CheckDType(w, "W", DType::kFloat32));
  if (x.rank() < 3 || w.rank() != x.rank()) {
    return absl::InvalidArgumentError(absl::StrCat("X ", x.type().ToString(), " and W ",
                                                   w.type().ToString(),
                                                   " must have the same rank, at least 3"));
  }
  const int64_t spatial = x.rank() - 2;
  if (spatial > 2) {
    return absl::UnimplementedError(
        absl::StrCat("only 1-D and 2-D convolutions are supported, got X ", x.type().ToString()));
  }
  const int64_t group = ctx.node.GetInt("group", 1);
  if (group < 1 || w.dim(0) % group != 0) {
    return absl::InvalidArgumentError(absl::StrCat("group ", group, " must be positive and divide ",
                                                   "the output channels of W ",
                                                   w.type().ToString()));
  }
  if (x.dim(1) != w.dim(1) * group) {
    return absl::InvalidArgumentError(
        absl::StrCat("X ", x.type().ToString(), " has ", x.dim(1), " channels, but W ",
                     w.type().ToString(), " with group ", group, " expects ", w.dim(1) * group));
  }
  Shape kernel(w.shape().begin() + 2, w.shape().end());
  if (ctx.node.HasAttr("kernel_shape") && ctx.node.GetInts("kernel_shape") != kernel) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel_shape ", graph::ShapeToString(ctx.node.GetInts("kernel_shape")),
                     " does not match W ", w.type().ToString()));
  }
  const float* bias = nullptr;
  if (ctx.HasInput(2)) {
    const Tensor& b = ctx.inputs[2];
    LOOM_RETURN_IF_ERROR(CheckDType(b, "B", DType::kFloat32));
    if (b.shape() != Shape{w.dim(0)}) {
      return absl::InvalidArgumentError(absl::StrCat("B ", b.type().ToString(), " must be [",
                                                     w.dim(0), "] for W ", w.type().ToString()));
    }
    bias = b.data<float>();
  }
  Shape in_spatial(x.shape().begin() + 2, x.shape().end());
  LOOM_ASSIGN_OR_RETURN(Window win, ReadWindow(ctx.node, in_spatial, kernel, true));
  // A 1-D convolution is a 2-D one with a height-1 input and kernel.
  Conv2dParams p;
  p.batch = x.dim(0);
  p.in_channels = x.dim(1);
  p.out_channels = w.dim(0);
  p.groups = group;
  const size_t wd = spatial == 2 ? 1 : 0;  // index of the width dim in the window vectors
  if (spatial == 2) {
    p.in_h = in_spatial[0];
    p.kernel_h = kernel[0];
    p.stride_h = win.strides[0];
    p.dilation_h = win.dilations[0];
    p.pad_top = win.pads_begin[0];
    p.pad_bottom = win.pads_end[0];
  }
  p.in_w = in_spatial[wd];
  p.kernel_w = kernel[wd];
  p.stride_w = win.strides[wd];
  p.dilation_w = win.dilations[wd];
  p.pad_left = win.pads_begin[wd];
  p.pad_right = win.pads_end[wd];
  LOOM_RETURN_IF_ERROR(ValidateConv2dParams(p));
  Shape out_shape = {p.batch, p.out_channels};
  if (spatial == 2) out_shape.push_back(p.out_h());
  out_shape.push_back(p.out_w());
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kFloat32, out_shape));
  Conv2dNchw(p, x.data<float>(), w.data<float>(), bias, y.data<float>());
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterConvKernels(KernelTable* table) { (*table)["Conv"] = &ConvOp; }

}  // namespace internal
}  // namespace loom::kernels
