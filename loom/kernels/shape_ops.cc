// Shape and data-movement reference kernels: Identity, Dropout, Constant, ConstantOfShape, Shape,
// Size, Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Gather, Expand,
// Tile, Pad, DepthToSpace, SpaceToDepth, Range, NonZero, Trilu. What each node means comes from
// graph/data_movement.h, the same functions shape inference uses. They work on any dtype by
// copying elements as bytes; views (Identity, Reshape, ...) share the input buffer.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_inference.h"
#include "loom/kernels/data_movement_internal.h"

namespace loom::kernels::internal {

absl::StatusOr<graph::OptionalInts> ReadOptionalInts(const OpContext& ctx, size_t i,
                                                     absl::string_view what) {
  if (!ctx.HasInput(i)) return graph::OptionalInts();
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> v, ReadInts(ctx.inputs[i], what));
  return graph::OptionalInts(std::move(v));
}

namespace {

using graph::IntList;

absl::Status CheckDefined(const Tensor& t, absl::string_view what) {
  if (t.defined()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " is undefined"));
}

// Copies the elements of `x` at the source offsets the callback gives, one per output element
// in row-major order: y[i] = x[src(index of i)].
template <typename SourceOf>
absl::StatusOr<Tensor> Remap(const Tensor& x, const Shape& shape, SourceOf&& src) {
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  const size_t esize = graph::DTypeSize(x.dtype());
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    std::memcpy(Bytes(y) + i * esize, Bytes(x) + src(index) * esize, esize);
    NextIndex(index, shape);
  }
  return y;
}

OpResult IdentityOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  return std::vector<Tensor>{ctx.inputs[0]};
}

// Dropout in inference: Y = X; the optional mask is all true.
OpResult DropoutOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 3, 1));
  if (ctx.HasInput(2)) {
    const Tensor& training = ctx.inputs[2];
    if (training.num_elements() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("training_mode ", training.type().ToString(), " must be a scalar"));
    }
    if (training.Int64At(0) != 0) {
      return absl::UnimplementedError("training_mode=true is not supported (inference only)");
    }
  }
  std::vector<Tensor> outs{ctx.inputs[0]};
  if (ctx.WantsOutput(1)) {
    LOOM_ASSIGN_OR_RETURN(Tensor mask, NewTensor(DType::kBool, ctx.inputs[0].shape()));
    std::fill_n(mask.data<uint8_t>(), mask.num_elements(), uint8_t{1});
    outs.push_back(std::move(mask));
  }
  return outs;
}

OpResult ConstantOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 0, 0, 0));
  LOOM_ASSIGN_OR_RETURN(Tensor value, graph::ConstantNodeValue(ctx.node));
  return std::vector<Tensor>{std::move(value)};
}

OpResult ConstantOfShapeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  LOOM_ASSIGN_OR_RETURN(IntList shape, ReadInts(ctx.inputs[0], "shape"));
  LOOM_ASSIGN_OR_RETURN(graph::TensorType type, graph::ResolveConstantOfShape(ctx.node, shape));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(type.dtype, type.shape));
  const Tensor* value = ctx.node.GetTensor("value");
  if (value != nullptr) {
    const size_t esize = graph::DTypeSize(type.dtype);
    for (int64_t i = 0; i < y.num_elements(); ++i) {
      std::memcpy(Bytes(y) + i * esize, Bytes(*value), esize);
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

OpResult ShapeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  const graph::DimRange r = graph::ResolveShapeRange(ctx.node, ctx.opset, x.rank());
  const IntList dims(x.shape().begin() + r.start, x.shape().begin() + r.end);
  return std::vector<Tensor>{Tensor::FromInt64s({static_cast<int64_t>(dims.size())}, dims)};
}

OpResult SizeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  return std::vector<Tensor>{Tensor::ScalarInt64(ctx.inputs[0].num_elements())};
}

OpResult FlattenOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  LOOM_ASSIGN_OR_RETURN(Shape shape, graph::ResolveFlatten(ctx.node, ctx.inputs[0].shape()));
  LOOM_ASSIGN_OR_RETURN(Tensor y, ctx.inputs[0].Reshaped(shape));
  return std::vector<Tensor>{std::move(y)};
}

OpResult ReshapeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  LOOM_ASSIGN_OR_RETURN(IntList spec, ReadInts(ctx.inputs[1], "shape"));
  LOOM_ASSIGN_OR_RETURN(Shape shape, graph::ResolveReshape(ctx.node, ctx.inputs[0].shape(), spec));
  LOOM_ASSIGN_OR_RETURN(Tensor y, ctx.inputs[0].Reshaped(shape));
  return std::vector<Tensor>{std::move(y)};
}

OpResult UnsqueezeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 2, 1));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ReadOptionalInts(ctx, 1, "axes"));
  LOOM_ASSIGN_OR_RETURN(Shape shape,
                        graph::ResolveUnsqueeze(ctx.node, ctx.opset, ctx.inputs[0].shape(), axes));
  LOOM_ASSIGN_OR_RETURN(Tensor y, ctx.inputs[0].Reshaped(shape));
  return std::vector<Tensor>{std::move(y)};
}

OpResult SqueezeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 2, 1));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ReadOptionalInts(ctx, 1, "axes"));
  LOOM_ASSIGN_OR_RETURN(Shape shape,
                        graph::ResolveSqueeze(ctx.node, ctx.opset, ctx.inputs[0].shape(), axes));
  LOOM_ASSIGN_OR_RETURN(Tensor y, ctx.inputs[0].Reshaped(shape));
  return std::vector<Tensor>{std::move(y)};
}

OpResult TransposeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(IntList perm, graph::ResolvePerm(ctx.node, x.rank()));
  Shape shape;
  for (int64_t p : perm) shape.push_back(x.dim(p));
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  LOOM_ASSIGN_OR_RETURN(Tensor y, Remap(x, shape, [&](const std::vector<int64_t>& index) {
                          int64_t src = 0;
                          for (size_t d = 0; d < perm.size(); ++d) {
                            src += index[d] * in_strides[static_cast<size_t>(perm[d])];
                          }
                          return src;
                        }));
  return std::vector<Tensor>{std::move(y)};
}

OpResult ConcatOp(const OpContext& ctx) {
  if (ctx.inputs.empty()) return absl::InvalidArgumentError("expects at least 1 input, got 0");
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, ctx.inputs.size(), ctx.inputs.size()));
  std::vector<graph::TensorType> types;
  for (const Tensor& t : ctx.inputs) types.push_back(t.type());
  LOOM_ASSIGN_OR_RETURN(graph::ConcatSpec spec, graph::ResolveConcat(ctx.node, types));
  const Tensor& first = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(first.dtype(), spec.out));
  const size_t esize = graph::DTypeSize(first.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < spec.axis; ++d) outer *= spec.out[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(spec.axis) + 1; d < spec.out.size(); ++d) {
    inner *= spec.out[d];
  }
  const int64_t out_row = spec.out[static_cast<size_t>(spec.axis)] * inner;
  int64_t col = 0;  // offset (in elements) of the current input's block inside an output row
  for (const Tensor& t : ctx.inputs) {
    const int64_t row = t.dim(spec.axis) * inner;
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(Bytes(y) + (o * out_row + col) * esize, Bytes(t) + o * row * esize,
                  static_cast<size_t>(row) * esize);
    }
    col += row;
  }
  return std::vector<Tensor>{std::move(y)};
}

OpResult SplitOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 2, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts split, ReadOptionalInts(ctx, 1, "split"));
  LOOM_ASSIGN_OR_RETURN(graph::SplitSpec spec, graph::ResolveSplit(ctx.node, ctx.opset, x.shape(),
                                                                   split, ctx.NumOutputs()));
  const size_t esize = graph::DTypeSize(x.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < spec.axis; ++d) outer *= x.dim(d);
  for (int64_t d = spec.axis + 1; d < x.rank(); ++d) inner *= x.dim(d);
  const int64_t in_row = x.dim(spec.axis) * inner;
  std::vector<Tensor> outs;
  int64_t col = 0;
  for (int64_t size : spec.sizes) {
    Shape shape = x.shape();
    shape[static_cast<size_t>(spec.axis)] = size;
    LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
    const int64_t row = size * inner;
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(Bytes(y) + o * row * esize, Bytes(x) + (o * in_row + col) * esize,
                  static_cast<size_t>(row) * esize);
    }
    col += row;
    outs.push_back(std::move(y));
  }
  return outs;
}

OpResult SliceOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 5, 3));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "data"));
  LOOM_ASSIGN_OR_RETURN(IntList starts, ReadInts(ctx.inputs[1], "starts"));
  LOOM_ASSIGN_OR_RETURN(IntList ends, ReadInts(ctx.inputs[2], "ends"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ReadOptionalInts(ctx, 3, "axes"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts steps, ReadOptionalInts(ctx, 4, "steps"));
  LOOM_ASSIGN_OR_RETURN(graph::SliceSpec spec,
                        graph::ResolveSlice(ctx.node, x.shape(), starts, ends, axes, steps));
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  LOOM_ASSIGN_OR_RETURN(Tensor y, Remap(x, spec.out, [&](const std::vector<int64_t>& index) {
                          int64_t src = 0;
                          for (size_t d = 0; d < index.size(); ++d) {
                            src += (spec.start[d] + index[d] * spec.step[d]) * in_strides[d];
                          }
                          return src;
                        }));
  return std::vector<Tensor>{std::move(y)};
}

OpResult GatherOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& data = ctx.inputs[0];
  const Tensor& indices = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDefined(data, "data"));
  LOOM_ASSIGN_OR_RETURN(graph::GatherSpec spec,
                        graph::ResolveGather(ctx.node, data.shape(), indices.type()));
  const int64_t n = data.dim(spec.axis);
  LOOM_RETURN_IF_ERROR(
      graph::CheckIndexRange(ctx.node, indices, n, absl::StrCat("axis ", spec.axis)));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(data.dtype(), spec.out));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < spec.axis; ++d) outer *= data.dim(d);
  for (int64_t d = spec.axis + 1; d < data.rank(); ++d) inner *= data.dim(d);
  const size_t esize = graph::DTypeSize(data.dtype());
  const size_t block = static_cast<size_t>(inner) * esize;
  std::byte* out = Bytes(y);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t k = 0; k < indices.num_elements(); ++k) {
      int64_t i = indices.Int64At(k);
      if (i < 0) i += n;
      std::memcpy(out, Bytes(data) + static_cast<size_t>((o * n + i) * inner) * esize, block);
      out += block;
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

OpResult ExpandOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "input"));
  LOOM_ASSIGN_OR_RETURN(IntList target, ReadInts(ctx.inputs[1], "shape"));
  LOOM_ASSIGN_OR_RETURN(Shape shape, graph::ResolveExpand(ctx.node, x.shape(), target));
  const std::vector<int64_t> strides = BroadcastStrides(x.shape(), shape);
  LOOM_ASSIGN_OR_RETURN(Tensor y, Remap(x, shape, [&](const std::vector<int64_t>& index) {
                          int64_t src = 0;
                          for (size_t d = 0; d < index.size(); ++d) src += index[d] * strides[d];
                          return src;
                        }));
  return std::vector<Tensor>{std::move(y)};
}

OpResult TileOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(IntList repeats, ReadInts(ctx.inputs[1], "repeats"));
  LOOM_ASSIGN_OR_RETURN(Shape shape, graph::ResolveTile(ctx.node, x.shape(), repeats));
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  LOOM_ASSIGN_OR_RETURN(Tensor y, Remap(x, shape, [&](const std::vector<int64_t>& index) {
                          int64_t src = 0;
                          for (size_t d = 0; d < index.size(); ++d) {
                            src += index[d] % x.shape()[d] * in_strides[d];
                          }
                          return src;
                        }));
  return std::vector<Tensor>{std::move(y)};
}

// Source coordinate of output coordinate `o` along a dim of size n padded by `pad_begin`, or
// -1 when it falls on a constant pad. Negative pads crop: the kept range is [lo, hi).
int64_t PadSource(int64_t o, int64_t pad_begin, int64_t pad_end, int64_t n, graph::PadMode mode) {
  const int64_t s = o - pad_begin;
  if (s >= 0 && s < n) return s;
  if (mode == graph::PadMode::kConstant) return -1;
  // Edge, reflect and wrap read from the data that cropping leaves.
  const int64_t lo = std::max<int64_t>(0, -pad_begin);
  const int64_t hi = n - std::max<int64_t>(0, -pad_end);
  const int64_t len = hi - lo;
  if (mode == graph::PadMode::kEdge) return s < lo ? lo : hi - 1;
  if (mode == graph::PadMode::kWrap) {
    int64_t m = (s - lo) % len;
    if (m < 0) m += len;
    return lo + m;
  }
  // Reflect: mirror about the edges without repeating them (period 2 * (len - 1)).
  if (len == 1) return lo;
  const int64_t period = 2 * (len - 1);
  int64_t m = (s - lo) % period;
  if (m < 0) m += period;
  return lo + (m < len ? m : period - m);
}

OpResult PadOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 4, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "data"));
  LOOM_ASSIGN_OR_RETURN(IntList pads, ReadInts(ctx.inputs[1], "pads"));
  LOOM_ASSIGN_OR_RETURN(graph::OptionalInts axes, ReadOptionalInts(ctx, 3, "axes"));
  LOOM_ASSIGN_OR_RETURN(graph::PadSpec spec,
                        graph::ResolvePad(ctx.node, ctx.opset, x.shape(), pads, axes));
  Tensor fill;  // one element of x's dtype; zero when absent
  if (ctx.HasInput(2)) {
    fill = ctx.inputs[2];
    if (fill.dtype() != x.dtype() || fill.num_elements() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("constant_value ", fill.type().ToString(),
                                                     " must be a ", graph::DTypeName(x.dtype()),
                                                     " scalar"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), spec.out));
  const size_t esize = graph::DTypeSize(x.dtype());
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  std::vector<int64_t> index(spec.out.size(), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    int64_t src = 0;
    bool constant = false;
    for (size_t d = 0; d < index.size() && !constant; ++d) {
      const int64_t s = PadSource(index[d], spec.begin[d], spec.end[d], x.shape()[d], spec.mode);
      constant = s < 0;
      src += s * in_strides[d];
    }
    if (!constant) {
      std::memcpy(Bytes(y) + i * esize, Bytes(x) + src * esize, esize);
    } else if (fill.defined()) {
      std::memcpy(Bytes(y) + i * esize, Bytes(fill), esize);
    }  // else: the zero the tensor was allocated with
    NextIndex(index, spec.out);
  }
  return std::vector<Tensor>{std::move(y)};
}

// DepthToSpace: y[n, c, h*b + i, w*b + j] = x[n, channel(c, i, j), h, w] with the channel
// DCR: (i * b + j) * C' + c, CRD: c * b * b + i * b + j.
OpResult DepthToSpaceOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(graph::DepthSpaceSpec spec,
                        graph::ResolveDepthToSpace(ctx.node, x.shape()));
  const int64_t b = spec.blocksize, c_out = spec.out[1], h_in = x.dim(2), w_in = x.dim(3);
  LOOM_ASSIGN_OR_RETURN(Tensor y, Remap(x, spec.out, [&](const std::vector<int64_t>& o) {
                          const int64_t i = o[2] % b, j = o[3] % b;
                          const int64_t c =
                              spec.crd ? o[1] * b * b + i * b + j : (i * b + j) * c_out + o[1];
                          return ((o[0] * x.dim(1) + c) * h_in + o[2] / b) * w_in + o[3] / b;
                        }));
  return std::vector<Tensor>{std::move(y)};
}

// SpaceToDepth, the inverse: y[n, channel(c, i, j), h, w] = x[n, c, h*b + i, w*b + j].
OpResult SpaceToDepthOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(graph::DepthSpaceSpec spec,
                        graph::ResolveSpaceToDepth(ctx.node, ctx.opset, x.shape()));
  const int64_t b = spec.blocksize, c_in = x.dim(1), h_in = x.dim(2), w_in = x.dim(3);
  LOOM_ASSIGN_OR_RETURN(Tensor y, Remap(x, spec.out, [&](const std::vector<int64_t>& o) {
                          int64_t c, i, j;
                          if (spec.crd) {
                            c = o[1] / (b * b);
                            i = o[1] / b % b;
                            j = o[1] % b;
                          } else {
                            c = o[1] % c_in;
                            i = o[1] / c_in / b;
                            j = o[1] / c_in % b;
                          }
                          return ((o[0] * c_in + c) * h_in + o[2] * b + i) * w_in + o[3] * b + j;
                        }));
  return std::vector<Tensor>{std::move(y)};
}

// Range: start + i * delta for i < count, in the inputs' dtype. Floats are computed in double
// and rounded once (NumPy's arange, which ONNX's reference uses); float16/bfloat16 in the
// stash type of opset 27 (float32 by default, or double).
OpResult RangeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 3, 3));
  const Tensor& start = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(int64_t n,
                        graph::ResolveRangeCount(ctx.node, start, ctx.inputs[1], ctx.inputs[2]));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(start.dtype(), {n}));
  const DType dtype = start.dtype();
  if (graph::IsHalfDType(dtype)) {
    const int64_t stash = ctx.node.GetInt("stash_type", 1);
    if (stash != 1 && stash != 11) {
      return absl::InvalidArgumentError(
          absl::StrCat("stash_type ", stash, " is not FLOAT (1) or DOUBLE (11)"));
    }
    const double s = start.DoubleAt(0), d = ctx.inputs[2].DoubleAt(0);
    for (int64_t i = 0; i < n; ++i) {
      const float v = stash == 1
                          ? static_cast<float>(s) + static_cast<float>(i) * static_cast<float>(d)
                          : static_cast<float>(s + static_cast<double>(i) * d);
      y.data<uint16_t>()[i] =
          dtype == DType::kFloat16 ? graph::FloatToHalf(v) : graph::FloatToBFloat16(v);
    }
    return std::vector<Tensor>{std::move(y)};
  }
  VisitDType(dtype, [&](auto zero) {
    using T = decltype(zero);
    T* out = y.data<T>();
    if constexpr (std::is_floating_point_v<T>) {
      const double s = start.DoubleAt(0), d = ctx.inputs[2].DoubleAt(0);
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(s + static_cast<double>(i) * d);
    } else {
      const T s = *static_cast<const T*>(start.raw_data());
      const T d = *static_cast<const T*>(ctx.inputs[2].raw_data());
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(s + static_cast<T>(i) * d);
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// NonZero: the indices of the non-zero elements, one row per dim, in row-major order.
OpResult NonZeroOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  std::vector<int64_t> hits;
  for (int64_t i = 0; i < x.num_elements(); ++i) {
    if (x.DoubleAt(i) != 0) hits.push_back(i);
  }
  const int64_t count = static_cast<int64_t>(hits.size());
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kInt64, {x.rank(), count}));
  const std::vector<int64_t> strides = RowMajorStrides(x.shape());
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t d = 0; d < x.rank(); ++d) {
      y.data<int64_t>()[d * count + k] = hits[static_cast<size_t>(k)] / strides[d] % x.dim(d);
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

// Trilu: zeroes the elements below (upper) or above (lower) diagonal k of the last two dims.
OpResult TriluOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 2, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(bool upper, graph::ResolveTriluUpper(ctx.node, x.shape()));
  int64_t k = 0;
  if (ctx.HasInput(1)) {
    if (ctx.inputs[1].dtype() != DType::kInt64 || ctx.inputs[1].num_elements() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("k must be an int64 scalar, got ", ctx.inputs[1].type().ToString()));
    }
    k = ctx.inputs[1].Int64At(0);
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  const int64_t rows = x.dim(x.rank() - 2), cols = x.dim(x.rank() - 1);
  const size_t esize = graph::DTypeSize(x.dtype());
  for (int64_t i = 0; i < x.num_elements(); ++i) {
    const int64_t r = i / cols % std::max<int64_t>(rows, 1), col = i % cols;
    // Compare in 128 bits: k is untrusted and may be near the int64 limits.
    const __int128 diff = static_cast<__int128>(col) - r;
    if (upper ? diff >= k : diff <= k) {
      std::memcpy(Bytes(y) + i * esize, Bytes(x) + i * esize, esize);
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterShapeKernels(KernelTable* table) {
  (*table)["Identity"] = &IdentityOp;
  (*table)["Dropout"] = &DropoutOp;
  (*table)["Constant"] = &ConstantOp;
  (*table)["ConstantOfShape"] = &ConstantOfShapeOp;
  (*table)["Shape"] = &ShapeOp;
  (*table)["Size"] = &SizeOp;
  (*table)["Flatten"] = &FlattenOp;
  (*table)["Reshape"] = &ReshapeOp;
  (*table)["Unsqueeze"] = &UnsqueezeOp;
  (*table)["Squeeze"] = &SqueezeOp;
  (*table)["Transpose"] = &TransposeOp;
  (*table)["Concat"] = &ConcatOp;
  (*table)["Split"] = &SplitOp;
  (*table)["Slice"] = &SliceOp;
  (*table)["Gather"] = &GatherOp;
  (*table)["Expand"] = &ExpandOp;
  (*table)["Tile"] = &TileOp;
  (*table)["Pad"] = &PadOp;
  (*table)["DepthToSpace"] = &DepthToSpaceOp;
  (*table)["SpaceToDepth"] = &SpaceToDepthOp;
  (*table)["Range"] = &RangeOp;
  (*table)["NonZero"] = &NonZeroOp;
  (*table)["Trilu"] = &TriluOp;
  RegisterGatherScatterKernels(table);
  RegisterCastKernels(table);
  RegisterResizeKernels(table);
}

}  // namespace loom::kernels::internal
