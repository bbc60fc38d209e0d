// Data-movement and shape reference kernels: Concat, Flatten, Reshape, Transpose, Slice, Gather,
// Shape, Unsqueeze, Squeeze, Constant, ConstantOfShape, Expand, Identity, Pad, Dropout. They work
// on any dtype by copying elements as bytes; views (Identity, Reshape, ...) share the input buffer.
#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

const std::byte* Bytes(const Tensor& t) { return static_cast<const std::byte*>(t.raw_data()); }
std::byte* Bytes(Tensor& t) { return static_cast<std::byte*>(t.raw_data()); }

absl::Status CheckDefined(const Tensor& t, absl::string_view what) {
  if (t.defined()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " is undefined"));
}

// Advances a row-major multi-index over `shape`.
void Next(std::vector<int64_t>& index, const Shape& shape) {
  for (size_t d = index.size(); d-- > 0;) {
    if (++index[d] < shape[d]) return;
    index[d] = 0;
  }
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

// Constant: exactly one of value, value_float, value_floats, value_int, value_ints.
OpResult ConstantOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 0, 0, 0));
  const graph::Node& node = ctx.node;
  if (node.attrs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expects exactly one value attribute, got ", node.attrs.size()));
  }
  if (const Tensor* value = node.GetTensor("value")) return std::vector<Tensor>{*value};
  const auto& [key, attr] = *node.attrs.begin();
  if (key == "value_float" && std::holds_alternative<float>(attr)) {
    return std::vector<Tensor>{Tensor::ScalarFloat(std::get<float>(attr))};
  }
  if (key == "value_floats" && std::holds_alternative<std::vector<float>>(attr)) {
    const auto& v = std::get<std::vector<float>>(attr);
    return std::vector<Tensor>{Tensor::FromFloats({static_cast<int64_t>(v.size())}, v)};
  }
  if (key == "value_int" && std::holds_alternative<int64_t>(attr)) {
    return std::vector<Tensor>{Tensor::ScalarInt64(std::get<int64_t>(attr))};
  }
  if (key == "value_ints" && std::holds_alternative<std::vector<int64_t>>(attr)) {
    const auto& v = std::get<std::vector<int64_t>>(attr);
    return std::vector<Tensor>{Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v)};
  }
  return absl::UnimplementedError(absl::StrCat(
      "attribute '", key,
      "' is not supported (value, value_float, value_floats, value_int, value_ints are)"));
}

// ConstantOfShape: a tensor of the given shape filled with `value` (a 1-element tensor, default
// float32 0).
OpResult ConstantOfShapeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ReadInts(ctx.inputs[0], "shape"));
  const Tensor* value = ctx.node.GetTensor("value");
  Tensor fill = value != nullptr ? *value : Tensor::ScalarFloat(0.0f);
  if (fill.num_elements() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("value ", fill.type().ToString(), " must have one element"));
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(fill.dtype(), shape));
  const size_t esize = graph::DTypeSize(fill.dtype());
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    std::memcpy(Bytes(y) + i * esize, Bytes(fill), esize);
  }
  return std::vector<Tensor>{std::move(y)};
}

// Shape (start/end from opset 15, clamped to [0, rank] after adding rank to negatives).
OpResult ShapeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  const int64_t rank = x.rank();
  auto clamp = [rank](int64_t v) {
    if (v < 0) v += rank;
    return std::clamp<int64_t>(v, 0, rank);
  };
  int64_t start = 0, end = rank;
  if (ctx.opset >= 15) {
    start = clamp(ctx.node.GetInt("start", 0));
    end = clamp(ctx.node.GetInt("end", rank));
  }
  std::vector<int64_t> dims;
  for (int64_t d = start; d < end; ++d) dims.push_back(x.dim(d));
  return std::vector<Tensor>{Tensor::FromInt64s({static_cast<int64_t>(dims.size())}, dims)};
}

// Flatten to 2-D [prod(dims[:axis]), prod(dims[axis:])]; axis in [-rank, rank], default 1.
OpResult FlattenOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  const int64_t rank = x.rank();
  int64_t axis = ctx.node.GetInt("axis", 1);
  if (axis < -rank || axis > rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis ", axis, " is out of range for rank ", rank));
  }
  if (axis < 0) axis += rank;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < rank; ++d) (d < axis ? outer : inner) *= x.dim(d);
  return std::vector<Tensor>{*x.Reshaped({outer, inner})};
}

// Reshape: 0 copies the input dim (unless allowzero, opset 14), one -1 is inferred.
OpResult ReshapeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ReadInts(ctx.inputs[1], "shape"));
  const bool allowzero = ctx.node.GetInt("allowzero", 0) != 0;
  int64_t infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0 && !allowzero) {
      if (static_cast<int64_t>(i) >= x.rank()) {
        return absl::InvalidArgumentError(
            absl::StrCat("shape ", graph::ShapeToString(shape), " copies dim ", i, " of input ",
                         x.type().ToString(), ", which has no such dim"));
      }
      shape[i] = x.dim(static_cast<int64_t>(i));
    }
    if (shape[i] == -1) {
      if (infer >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("shape ", graph::ShapeToString(shape), " has more than one -1"));
      }
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", graph::ShapeToString(shape), " has a negative dim"));
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.num_elements() % known != 0) {
      return absl::InvalidArgumentError(absl::StrCat("cannot infer the -1 in ",
                                                     graph::ShapeToString(shape), " for input ",
                                                     x.type().ToString()));
    }
    shape[static_cast<size_t>(infer)] = x.num_elements() / known;
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, x.Reshaped(shape));
  return std::vector<Tensor>{std::move(y)};
}

// Unsqueeze: axes attribute before opset 13, input from 13; axes index the output.
OpResult UnsqueezeOp(const OpContext& ctx) {
  std::vector<int64_t> axes;
  if (ctx.opset >= 13) {
    LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
    LOOM_ASSIGN_OR_RETURN(axes, ReadInts(ctx.inputs[1], "axes"));
  } else {
    LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
    if (!ctx.node.HasAttr("axes")) {
      return absl::InvalidArgumentError("attribute 'axes' is missing");
    }
    axes = ctx.node.GetInts("axes");
  }
  const Tensor& x = ctx.inputs[0];
  const int64_t out_rank = x.rank() + static_cast<int64_t>(axes.size());
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : axes) {
    LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, out_rank, "axis"));
    if (inserted[static_cast<size_t>(axis)]) {
      return absl::InvalidArgumentError(absl::StrCat("axis ", a, " is repeated in axes"));
    }
    inserted[static_cast<size_t>(axis)] = true;
  }
  Shape shape;
  int64_t next = 0;
  for (int64_t d = 0; d < out_rank; ++d) {
    shape.push_back(inserted[static_cast<size_t>(d)] ? 1 : x.dim(next++));
  }
  return std::vector<Tensor>{*x.Reshaped(shape)};
}

// Squeeze: axes attribute before opset 13, optional input from 13; no axes drops every 1.
OpResult SqueezeOp(const OpContext& ctx) {
  std::vector<int64_t> axes;
  bool have_axes = false;
  if (ctx.opset >= 13) {
    LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 2, 1));
    if (ctx.HasInput(1)) {
      LOOM_ASSIGN_OR_RETURN(axes, ReadInts(ctx.inputs[1], "axes"));
      have_axes = true;
    }
  } else {
    LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
    have_axes = ctx.node.HasAttr("axes");
    axes = ctx.node.GetInts("axes");
  }
  const Tensor& x = ctx.inputs[0];
  const int64_t rank = x.rank();
  std::vector<bool> drop(static_cast<size_t>(rank), false);
  if (!have_axes) {
    for (int64_t d = 0; d < rank; ++d) drop[static_cast<size_t>(d)] = x.dim(d) == 1;
  }
  for (int64_t a : axes) {
    LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, rank, "axis"));
    if (x.dim(axis) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("cannot squeeze axis ", a, " of input ",
                                                     x.type().ToString(), ": its size is not 1"));
    }
    drop[static_cast<size_t>(axis)] = true;
  }
  Shape shape;
  for (int64_t d = 0; d < rank; ++d) {
    if (!drop[static_cast<size_t>(d)]) shape.push_back(x.dim(d));
  }
  return std::vector<Tensor>{*x.Reshaped(shape)};
}

// Transpose: output dim i is input dim perm[i]; the default perm reverses the dims.
OpResult TransposeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "input"));
  const int64_t rank = x.rank();
  std::vector<int64_t> perm;
  for (int64_t d = rank; d-- > 0;) perm.push_back(d);
  perm = ctx.node.GetInts("perm", perm);
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t d = 0; d < rank; ++d) {
    if (static_cast<int64_t>(sorted.size()) != rank || sorted[static_cast<size_t>(d)] != d) {
      return absl::InvalidArgumentError(absl::StrCat("perm ", graph::ShapeToString(perm),
                                                     " is not a permutation of 0..", rank - 1));
    }
  }
  if (perm.size() != static_cast<size_t>(rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("perm ", graph::ShapeToString(perm), " must have ", rank, " entries"));
  }
  Shape shape;
  for (int64_t p : perm) shape.push_back(x.dim(p));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  const size_t esize = graph::DTypeSize(x.dtype());
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    int64_t src = 0;
    for (int64_t d = 0; d < rank; ++d) src += index[d] * in_strides[perm[d]];
    std::memcpy(Bytes(y) + i * esize, Bytes(x) + src * esize, esize);
    Next(index, shape);
  }
  return std::vector<Tensor>{std::move(y)};
}

// Concat along `axis`; every other dim must agree.
OpResult ConcatOp(const OpContext& ctx) {
  if (ctx.inputs.empty()) return absl::InvalidArgumentError("expects at least 1 input, got 0");
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, ctx.inputs.size(), ctx.inputs.size()));
  if (!ctx.node.HasAttr("axis")) return absl::InvalidArgumentError("attribute 'axis' is missing");
  const Tensor& first = ctx.inputs[0];
  const int64_t rank = first.rank();
  LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(ctx.node.GetInt("axis", 0), rank, "axis"));
  Shape shape = first.shape();
  shape[static_cast<size_t>(axis)] = 0;
  for (const Tensor& t : ctx.inputs) {
    bool ok = t.dtype() == first.dtype() && t.rank() == rank;
    for (int64_t d = 0; ok && d < rank; ++d) ok = d == axis || t.dim(d) == first.dim(d);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("input ", t.type().ToString(),
                                                     " does not match ", first.type().ToString(),
                                                     " outside axis ", axis));
    }
    shape[static_cast<size_t>(axis)] += t.dim(axis);
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(first.dtype(), shape));
  const size_t esize = graph::DTypeSize(first.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= shape[d];
  const int64_t out_row = shape[static_cast<size_t>(axis)] * inner;
  int64_t col = 0;  // offset (in elements) of the current input's block inside an output row
  for (const Tensor& t : ctx.inputs) {
    const int64_t row = t.dim(axis) * inner;
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(Bytes(y) + (o * out_row + col) * esize, Bytes(t) + o * row * esize,
                  static_cast<size_t>(row) * esize);
    }
    col += row;
  }
  return std::vector<Tensor>{std::move(y)};
}

// Slice (opset >= 10): starts, ends, optional axes and steps as inputs, with ONNX clamping.
OpResult SliceOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 5, 3));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "data"));
  const int64_t rank = x.rank();
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> starts, ReadInts(ctx.inputs[1], "starts"));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> ends, ReadInts(ctx.inputs[2], "ends"));
  std::vector<int64_t> axes, steps;
  if (ctx.HasInput(3)) {
    LOOM_ASSIGN_OR_RETURN(axes, ReadInts(ctx.inputs[3], "axes"));
  } else {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (ctx.HasInput(4)) {
    LOOM_ASSIGN_OR_RETURN(steps, ReadInts(ctx.inputs[4], "steps"));
  } else {
    steps.assign(starts.size(), 1);
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("starts, ends, axes and steps must have the same length, got ", starts.size(),
                     ", ", ends.size(), ", ", axes.size(), ", ", steps.size()));
  }
  std::vector<int64_t> begin(static_cast<size_t>(rank), 0), step(static_cast<size_t>(rank), 1);
  Shape shape = x.shape();
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(axes[i], rank, "axis"));
    if (seen[static_cast<size_t>(axis)]) {
      return absl::InvalidArgumentError(absl::StrCat("axis ", axes[i], " is repeated in axes"));
    }
    seen[static_cast<size_t>(axis)] = true;
    const int64_t dim = x.dim(axis);
    const int64_t s = steps[i];
    if (s == 0) return absl::InvalidArgumentError("steps must not be 0");
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t end = ends[i] < 0 ? ends[i] + dim : ends[i];
    int64_t count;
    if (s > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      count = end > start ? (end - start + s - 1) / s : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      count = start > end ? (start - end + (-s) - 1) / (-s) : 0;
    }
    begin[static_cast<size_t>(axis)] = start;
    step[static_cast<size_t>(axis)] = s;
    shape[static_cast<size_t>(axis)] = count;
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  const size_t esize = graph::DTypeSize(x.dtype());
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    int64_t src = 0;
    for (int64_t d = 0; d < rank; ++d) src += (begin[d] + index[d] * step[d]) * in_strides[d];
    std::memcpy(Bytes(y) + i * esize, Bytes(x) + src * esize, esize);
    Next(index, shape);
  }
  return std::vector<Tensor>{std::move(y)};
}

// Gather along `axis` (default 0): out = data[..., indices[...], ...]; negative indices count
// from the end; an index outside [-n, n) is kInvalidArgument.
OpResult GatherOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& data = ctx.inputs[0];
  const Tensor& indices = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDefined(data, "data"));
  if (data.rank() == 0) return absl::InvalidArgumentError("data must have rank at least 1");
  LOOM_ASSIGN_OR_RETURN(int64_t axis,
                        NormalizeAxis(ctx.node.GetInt("axis", 0), data.rank(), "axis"));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> idx, ReadInts(indices, "indices"));
  const int64_t n = data.dim(axis);
  for (int64_t& i : idx) {
    if (i < -n || i >= n) {
      return absl::InvalidArgumentError(absl::StrCat("index ", i, " is out of range for axis ",
                                                     axis, " of size ", n, " (data ",
                                                     data.type().ToString(), ")"));
    }
    if (i < 0) i += n;
  }
  Shape shape(data.shape().begin(), data.shape().begin() + axis);
  shape.insert(shape.end(), indices.shape().begin(), indices.shape().end());
  shape.insert(shape.end(), data.shape().begin() + axis + 1, data.shape().end());
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(data.dtype(), shape));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= data.dim(d);
  for (int64_t d = axis + 1; d < data.rank(); ++d) inner *= data.dim(d);
  const size_t block = static_cast<size_t>(inner) * graph::DTypeSize(data.dtype());
  std::byte* out = Bytes(y);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i : idx) {
      std::memcpy(out, Bytes(data) + ((o * n + i) * inner) * graph::DTypeSize(data.dtype()), block);
      out += block;
    }
  }
  return std::vector<Tensor>{std::move(y)};
}

// Expand: numpy-broadcast the input to `shape` (the result may be larger than shape).
OpResult ExpandOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "input"));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> target, ReadInts(ctx.inputs[1], "shape"));
  LOOM_ASSIGN_OR_RETURN(Shape shape, BroadcastShapes(x.shape(), target));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  const std::vector<int64_t> strides = BroadcastStrides(x.shape(), shape);
  const size_t esize = graph::DTypeSize(x.dtype());
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    int64_t src = 0;
    for (size_t d = 0; d < shape.size(); ++d) src += index[d] * strides[d];
    std::memcpy(Bytes(y) + i * esize, Bytes(x) + src * esize, esize);
    Next(index, shape);
  }
  return std::vector<Tensor>{std::move(y)};
}

// Source coordinate of output coordinate `o` along a dim of size n padded by `pad_begin`, or
// -1 when it falls on a constant pad.
int64_t PadSource(int64_t o, int64_t pad_begin, int64_t n, const std::string& mode) {
  const int64_t s = o - pad_begin;
  if (s >= 0 && s < n) return s;
  if (mode == "constant") return -1;
  if (mode == "edge") return s < 0 ? 0 : n - 1;
  // reflect: mirror about the edges without repeating them (period 2 * (n - 1)).
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = s % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

// Pad: pads (and, from opset 11, constant_value and, from 18, axes) as inputs; attributes before
// opset 11. Negative pads crop.
OpResult PadOp(const OpContext& ctx) {
  const std::string mode = ctx.node.GetString("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge") {
    return absl::UnimplementedError(
        absl::StrCat("mode '", mode, "' is not supported (constant, reflect, edge are)"));
  }
  std::vector<int64_t> pads;
  std::vector<int64_t> axes;
  const Tensor& x = ctx.inputs.empty() ? Tensor() : ctx.inputs[0];
  Tensor fill;  // one element of x's dtype; zero when absent
  if (ctx.opset >= 11) {
    LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 4, 2));
    LOOM_ASSIGN_OR_RETURN(pads, ReadInts(ctx.inputs[1], "pads"));
    if (ctx.HasInput(2)) {
      fill = ctx.inputs[2];
      if (fill.dtype() != x.dtype() || fill.num_elements() != 1) {
        return absl::InvalidArgumentError(absl::StrCat("constant_value ", fill.type().ToString(),
                                                       " must be a ", graph::DTypeName(x.dtype()),
                                                       " scalar"));
      }
    }
    if (ctx.HasInput(3)) {
      LOOM_ASSIGN_OR_RETURN(axes, ReadInts(ctx.inputs[3], "axes"));
    }
  } else {
    LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
    pads = ctx.node.GetInts("pads");
    if (x.dtype() == DType::kFloat32) fill = Tensor::ScalarFloat(ctx.node.GetFloat("value", 0));
  }
  LOOM_RETURN_IF_ERROR(CheckDefined(x, "data"));
  const int64_t rank = x.rank();
  if (axes.empty()) {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  if (pads.size() != 2 * axes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("pads ", graph::ShapeToString(pads),
                                                   " must have ", 2 * axes.size(), " entries"));
  }
  std::vector<int64_t> pad_begin(static_cast<size_t>(rank), 0), pad_end(pad_begin);
  for (size_t i = 0; i < axes.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(axes[i], rank, "axis"));
    pad_begin[static_cast<size_t>(axis)] = pads[i];
    pad_end[static_cast<size_t>(axis)] = pads[i + axes.size()];
  }
  Shape shape = x.shape();
  for (int64_t d = 0; d < rank; ++d) {
    shape[d] += pad_begin[d] + pad_end[d];
    if (shape[d] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("pads ", graph::ShapeToString(pads),
                                                     " crop more than input ", x.type().ToString(),
                                                     " has"));
    }
    if (mode != "constant" && x.dim(d) == 0 && shape[d] > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot ", mode, "-pad empty dim ", d, " of input ", x.type().ToString()));
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  const size_t esize = graph::DTypeSize(x.dtype());
  const std::vector<int64_t> in_strides = RowMajorStrides(x.shape());
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  for (int64_t i = 0; i < y.num_elements(); ++i) {
    int64_t src = 0;
    bool constant = false;
    for (int64_t d = 0; d < rank && !constant; ++d) {
      const int64_t s = PadSource(index[d], pad_begin[d], x.dim(d), mode);
      constant = s < 0;
      src += s * in_strides[d];
    }
    if (!constant) {
      std::memcpy(Bytes(y) + i * esize, Bytes(x) + src * esize, esize);
    } else if (fill.defined()) {
      std::memcpy(Bytes(y) + i * esize, Bytes(fill), esize);
    }  // else: the zero the tensor was allocated with
    Next(index, shape);
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
  (*table)["Flatten"] = &FlattenOp;
  (*table)["Reshape"] = &ReshapeOp;
  (*table)["Unsqueeze"] = &UnsqueezeOp;
  (*table)["Squeeze"] = &SqueezeOp;
  (*table)["Transpose"] = &TransposeOp;
  (*table)["Concat"] = &ConcatOp;
  (*table)["Slice"] = &SliceOp;
  (*table)["Gather"] = &GatherOp;
  (*table)["Expand"] = &ExpandOp;
  (*table)["Pad"] = &PadOp;
}

}  // namespace loom::kernels::internal
