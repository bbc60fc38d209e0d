// Reference 2-D convolution over NCHW data with plain parameters, callable directly: tuned conv
// kernels (ops/, tune/ measurer) are checked against Conv2dNchw, and the ONNX Conv reference
// kernel (1-D and 2-D spatial) is a thin wrapper around it.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace loom::kernels {

struct Conv2dParams {
  int64_t batch = 1;
  int64_t in_channels = 1;
  int64_t in_h = 1;
  int64_t in_w = 1;
  int64_t out_channels = 1;
  // in_channels and out_channels are both divisible by groups; groups == in_channels ==
  // out_channels is a depthwise convolution.
  int64_t groups = 1;
  int64_t kernel_h = 1;
  int64_t kernel_w = 1;
  int64_t stride_h = 1;
  int64_t stride_w = 1;
  int64_t dilation_h = 1;
  int64_t dilation_w = 1;
  int64_t pad_top = 0;
  int64_t pad_left = 0;
  int64_t pad_bottom = 0;
  int64_t pad_right = 0;

  // floor((in + pads - dilated kernel) / stride) + 1.
  int64_t out_h() const;
  int64_t out_w() const;
  // Elements of x, w and y.
  int64_t x_size() const { return batch * in_channels * in_h * in_w; }
  int64_t w_size() const { return out_channels * (in_channels / groups) * kernel_h * kernel_w; }
  int64_t y_size() const { return batch * out_channels * out_h() * out_w(); }
};

// kInvalidArgument (saying which field) unless the parameters describe a valid convolution with
// a non-empty output.
absl::Status ValidateConv2dParams(const Conv2dParams& p);

// y[n, oc, oh, ow] = sum over (ic, kh, kw) of x[n, g*icg + ic, oh*sh + kh*dh - pt, ow*sw + kw*dw -
// pl]
//                    * w[oc, ic, kh, kw]   (+ bias[oc]),
// g = oc / (out_channels / groups), icg = in_channels / groups, out-of-range x reads as 0.
// Every output element sums its terms in float, in (ic, kh, kw) order starting from 0, then adds
// the bias. Layouts: x [batch, in_channels, in_h, in_w], w [out_channels, in_channels/groups,
// kernel_h, kernel_w], bias [out_channels] or null, y [batch, out_channels, out_h, out_w].
// Precondition: ValidateConv2dParams(p).ok() (checked).
void Conv2dNchw(const Conv2dParams& p, const float* x, const float* w, const float* bias_or_null,
                float* y);

}  // namespace loom::kernels
