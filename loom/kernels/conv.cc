#include "loom/kernels/conv.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
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
  internal::ConvNdParams nd{.batch = p.batch,
                            .in_channels = p.in_channels,
                            .out_channels = p.out_channels,
                            .groups = p.groups,
                            .in = {p.in_h, p.in_w},
                            .kernel = {p.kernel_h, p.kernel_w},
                            .strides = {p.stride_h, p.stride_w},
                            .dilations = {p.dilation_h, p.dilation_w},
                            .pads_begin = {p.pad_top, p.pad_left},
                            .out = {p.out_h(), p.out_w()}};
  internal::ConvNd<float>(nd, x, w, bias_or_null, y);
}

namespace internal {

template <typename T>
void ConvNd(const ConvNdParams& p, const T* x, const T* w, const T* bias_or_null, T* y) {
  const size_t dims = p.in.size();
  const int64_t in_per_group = p.in_channels / p.groups;
  const int64_t out_per_group = p.out_channels / p.groups;
  const int64_t in_w = p.in[dims - 1], out_w = p.out[dims - 1], kernel_w = p.kernel[dims - 1];
  const int64_t stride_w = p.strides[dims - 1];
  const int64_t in_size = graph::NumElements(p.in), out_size = graph::NumElements(p.out);
  const int64_t kernel_size = graph::NumElements(p.kernel);
  // Output rows (every spatial dim but the last) and kernel rows likewise.
  const Shape out_rows(p.out.begin(), p.out.end() - 1);
  const Shape kernel_rows(p.kernel.begin(), p.kernel.end() - 1);
  const int64_t num_out_rows = graph::NumElements(out_rows);
  const int64_t num_kernel_rows = graph::NumElements(kernel_rows);
  const std::vector<int64_t> in_strides = RowMajorStrides(p.in);
  // Valid output range [lo, hi) along the last dim for each kw (input column ow*stride + offset).
  std::vector<int64_t> offset(kernel_w), lo(kernel_w), hi(kernel_w);
  for (int64_t kw = 0; kw < kernel_w; ++kw) {
    offset[kw] = kw * p.dilations[dims - 1] - p.pads_begin[dims - 1];
    ValidOutputRange(offset[kw], stride_w, in_w, out_w, &lo[kw], &hi[kw]);
  }
  // One output row is accumulated at a time; each element still sums its own terms in
  // (ic, kernel position) order, but the innermost loop runs along the contiguous output row.
  std::vector<T> acc(static_cast<size_t>(out_w));
  std::vector<int64_t> orow(dims - 1), krow(dims - 1);
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t oc = 0; oc < p.out_channels; ++oc) {
      const int64_t g = oc / out_per_group;
      const T* w_oc = w + oc * in_per_group * kernel_size;
      std::fill(orow.begin(), orow.end(), 0);
      for (int64_t r = 0; r < num_out_rows; ++r) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t ic = 0; ic < in_per_group; ++ic) {
          const T* x_c = x + ((n * p.in_channels) + g * in_per_group + ic) * in_size;
          const T* w_c = w_oc + ic * kernel_size;
          std::fill(krow.begin(), krow.end(), 0);
          for (int64_t kr = 0; kr < num_kernel_rows; ++kr) {
            // The input row this kernel row reads, unless it falls in the padding.
            int64_t row_offset = 0;
            bool inside = true;
            for (size_t d = 0; d + 1 < dims; ++d) {
              const int64_t i = orow[d] * p.strides[d] + krow[d] * p.dilations[d] - p.pads_begin[d];
              inside = inside && i >= 0 && i < p.in[d];
              row_offset += i * in_strides[d];
            }
            if (inside) {
              const T* x_row = x_c + row_offset;
              const T* w_row = w_c + kr * kernel_w;
              for (int64_t kw = 0; kw < kernel_w; ++kw) {
                const T wv = w_row[kw];
                const T* xs = x_row + offset[kw];
                for (int64_t ow = lo[kw]; ow < hi[kw]; ++ow) {
                  acc[static_cast<size_t>(ow)] += wv * xs[ow * stride_w];
                }
              }
            }
            for (size_t d = dims - 1; d-- > 0;) {
              if (++krow[d] < p.kernel[d]) break;
              krow[d] = 0;
            }
          }
        }
        T* y_row = y + (n * p.out_channels + oc) * out_size + r * out_w;
        for (int64_t ow = 0; ow < out_w; ++ow) {
          y_row[ow] = bias_or_null != nullptr ? acc[static_cast<size_t>(ow)] + bias_or_null[oc]
                                              : acc[static_cast<size_t>(ow)];
        }
        for (size_t d = dims - 1; d-- > 0;) {
          if (++orow[d] < p.out[d]) break;
          orow[d] = 0;
        }
      }
    }
  }
}

template void ConvNd<float>(const ConvNdParams&, const float*, const float*, const float*, float*);
template void ConvNd<double>(const ConvNdParams&, const double*, const double*, const double*,
                             double*);

namespace {

// Checks X, W and the optional B of Conv / ConvTranspose: same float type, X [N, C, spatial...],
// W of X's rank, B [out_channels].
absl::Status CheckConvOperands(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 3, 2));
  const Tensor& x = ctx.inputs[0];
  const Tensor& w = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", graph::kFloatDTypes));
  if (w.dtype() != x.dtype() || (ctx.HasInput(2) && ctx.inputs[2].dtype() != x.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W ", w.type().ToString(), " (and B) must have the type of X ", x.type().ToString()));
  }
  if (x.rank() < 3 || w.rank() != x.rank()) {
    return absl::InvalidArgumentError(absl::StrCat("X ", x.type().ToString(), " and W ",
                                                   w.type().ToString(),
                                                   " must have the same rank, at least 3"));
  }
  Shape kernel(w.shape().begin() + 2, w.shape().end());
  if (ctx.node.HasAttr("kernel_shape") && ctx.node.GetInts("kernel_shape") != kernel) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel_shape ", graph::ShapeToString(ctx.node.GetInts("kernel_shape")),
                     " does not match W ", w.type().ToString()));
  }
  return absl::OkStatus();
}

absl::Status CheckBias(const OpContext& ctx, int64_t out_channels) {
  if (!ctx.HasInput(2)) return absl::OkStatus();
  const Tensor& b = ctx.inputs[2];
  if (b.shape() != Shape{out_channels}) {
    return absl::InvalidArgumentError(
        absl::StrCat("B ", b.type().ToString(), " must be [", out_channels, "]"));
  }
  return absl::OkStatus();
}

int64_t ReadGroup(const OpContext& ctx) { return ctx.node.GetInt("group", 1); }

// ONNX Conv: X [N, C, spatial...], W [M, C/group, k...], optional B [M]; any spatial rank.
OpResult ConvOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckConvOperands(ctx));
  const Tensor& x = ctx.inputs[0];
  const Tensor& w = ctx.inputs[1];
  const int64_t group = ReadGroup(ctx);
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
  LOOM_RETURN_IF_ERROR(CheckBias(ctx, w.dim(0)));
  Shape in_spatial(x.shape().begin() + 2, x.shape().end());
  Shape kernel(w.shape().begin() + 2, w.shape().end());
  LOOM_ASSIGN_OR_RETURN(graph::WindowGeometry geo,
                        graph::ResolveWindowGeometry(ctx.node, in_spatial, kernel, false));
  const size_t dims = in_spatial.size();
  ConvNdParams p{.batch = x.dim(0),
                 .in_channels = x.dim(1),
                 .out_channels = w.dim(0),
                 .groups = group,
                 .in = in_spatial,
                 .kernel = kernel,
                 .strides = geo.strides,
                 .dilations = geo.dilations,
                 .pads_begin = Shape(geo.pads.begin(), geo.pads.begin() + dims),
                 .out = geo.output};
  Shape out_shape = {p.batch, p.out_channels};
  out_shape.insert(out_shape.end(), geo.output.begin(), geo.output.end());
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), out_shape));
  if (y.num_elements() == 0) return std::vector<Tensor>{std::move(y)};
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_floating_point_v<T>) {
      ConvNd<T>(p, x.data<T>(), w.data<T>(), ctx.HasInput(2) ? ctx.inputs[2].data<T>() : nullptr,
                y.data<T>());
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// ONNX ConvTranspose: X [N, C, spatial...], W [C, M/group, k...], optional B [M]. Every input
// element scatters x * w into the output positions i * stride + k * dilation - pad_begin.
OpResult ConvTransposeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckConvOperands(ctx));
  const Tensor& x = ctx.inputs[0];
  const Tensor& w = ctx.inputs[1];
  const int64_t group = ReadGroup(ctx);
  const int64_t channels = x.dim(1);
  if (group < 1 || w.dim(0) != channels || channels % group != 0) {
    return absl::InvalidArgumentError(absl::StrCat("W ", w.type().ToString(), " must have ",
                                                   channels, " input channels, divisible by group ",
                                                   group));
  }
  const int64_t out_per_group = w.dim(1);
  const int64_t out_channels = out_per_group * group;
  const int64_t in_per_group = channels / group;
  LOOM_RETURN_IF_ERROR(CheckBias(ctx, out_channels));
  const Shape in_spatial(x.shape().begin() + 2, x.shape().end());
  const Shape kernel(w.shape().begin() + 2, w.shape().end());
  LOOM_ASSIGN_OR_RETURN(graph::ConvTransposeGeometry geo,
                        graph::ResolveConvTransposeGeometry(ctx.node, in_spatial, kernel));
  const size_t dims = in_spatial.size();
  Shape out_shape = {x.dim(0), out_channels};
  out_shape.insert(out_shape.end(), geo.output.begin(), geo.output.end());
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), out_shape));
  const int64_t in_size = graph::NumElements(in_spatial);
  const int64_t out_size = graph::NumElements(geo.output);
  const int64_t kernel_size = graph::NumElements(kernel);
  const std::vector<int64_t> out_strides = RowMajorStrides(geo.output);
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    T* py = y.data<T>();
    // For each (input position, kernel position) pair that lands inside the output, every
    // (n, c, m) adds x * w there. Offsets are computed per pair: no table of pairs, whose size
    // the attributes could make huge.
    std::vector<int64_t> i_index(dims, 0), k_index(dims);
    for (int64_t i = 0; i < in_size; ++i) {
      std::fill(k_index.begin(), k_index.end(), 0);
      for (int64_t k = 0; k < kernel_size; ++k) {
        int64_t offset = 0;
        bool inside = true;
        for (size_t d = 0; d < dims && inside; ++d) {
          const int64_t o =
              i_index[d] * geo.strides[d] + k_index[d] * geo.dilations[d] - geo.pads[d];
          inside = o >= 0 && o < geo.output[d];
          offset += o * out_strides[d];
        }
        if (inside) {
          for (int64_t n = 0; n < x.dim(0); ++n) {
            for (int64_t c = 0; c < channels; ++c) {
              const T xv = px[(n * channels + c) * in_size + i];
              const int64_t g = c / in_per_group;
              const T* w_c = pw + c * out_per_group * kernel_size + k;
              T* y_g = py + (n * out_channels + g * out_per_group) * out_size + offset;
              for (int64_t m = 0; m < out_per_group; ++m) {
                y_g[m * out_size] += xv * w_c[m * kernel_size];
              }
            }
          }
        }
        for (size_t d = dims; d-- > 0;) {
          if (++k_index[d] < kernel[d]) break;
          k_index[d] = 0;
        }
      }
      for (size_t d = dims; d-- > 0;) {
        if (++i_index[d] < in_spatial[d]) break;
        i_index[d] = 0;
      }
    }
    if (ctx.HasInput(2)) {
      const T* pb = ctx.inputs[2].data<T>();
      for (int64_t nc = 0; nc < x.dim(0) * out_channels; ++nc) {
        for (int64_t o = 0; o < out_size; ++o) py[nc * out_size + o] += pb[nc % out_channels];
      }
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterConvKernels(KernelTable* table) {
  (*table)["Conv"] = &ConvOp;
  (*table)["ConvTranspose"] = &ConvTransposeOp;
}

}  // namespace internal
}  // namespace loom::kernels
