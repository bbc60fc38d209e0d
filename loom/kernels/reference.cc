#include "loom/kernels/reference.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels {
namespace internal {

absl::Status CheckInputs(const OpContext& ctx, size_t min, size_t max, size_t required) {
  size_t n = ctx.inputs.size();
  if (n < min || n > max) {
    if (min == max) {
      return absl::InvalidArgumentError(absl::StrCat("expects ", min, " inputs, got ", n));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("expects ", min, " to ", max, " inputs, got ", n));
  }
  for (size_t i = 0; i < required; ++i) {
    if (!ctx.HasInput(i)) {
      return absl::InvalidArgumentError(absl::StrCat("required input ", i, " is missing"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDType(const Tensor& t, absl::string_view what, DType dtype) {
  if (t.dtype() == dtype) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " must be ", graph::DTypeName(dtype), ", got ", t.type().ToString()));
}

absl::StatusOr<int64_t> NormalizeAxis(int64_t axis, int64_t rank, absl::string_view what) {
  if (axis < -rank || axis >= rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", axis, " is out of range for rank ",
                                                   rank, " (valid: ", -rank, "..", rank - 1, ")"));
  }
  return axis < 0 ? axis + rank : axis;
}

absl::StatusOr<std::vector<int64_t>> ReadInts(const Tensor& t, absl::string_view what) {
  if (t.dtype() != DType::kInt64 && t.dtype() != DType::kInt32) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be int64 or int32, got ", t.type().ToString()));
  }
  std::vector<int64_t> out(static_cast<size_t>(t.num_elements()));
  for (int64_t i = 0; i < t.num_elements(); ++i) out[static_cast<size_t>(i)] = t.Int64At(i);
  return out;
}

absl::StatusOr<float> ReadFloatScalar(const Tensor& t, absl::string_view what) {
  if (t.dtype() != DType::kFloat32 || t.num_elements() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a float32 scalar, got ", t.type().ToString()));
  }
  return t.data<float>()[0];
}

std::vector<int64_t> RowMajorStrides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

absl::StatusOr<Tensor> NewTensor(DType dtype, Shape shape) {
  return Tensor::Create(dtype, std::move(shape));
}

absl::StatusOr<Shape> BroadcastShapes(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) {
      return absl::InvalidArgumentError(absl::StrCat("shapes ", graph::ShapeToString(a), " and ",
                                                     graph::ShapeToString(b), " do not broadcast"));
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> BroadcastStrides(const Shape& shape, const Shape& out) {
  std::vector<int64_t> strides(out.size(), 0);
  const std::vector<int64_t> own = RowMajorStrides(shape);
  const size_t lead = out.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) {
    strides[lead + i] = shape[i] == 1 ? 0 : own[i];
  }
  return strides;
}

absl::StatusOr<Window> ReadWindow(const graph::Node& node, const Shape& in_spatial,
                                  std::vector<int64_t> kernel, bool allow_dilations) {
  const size_t rank = in_spatial.size();
  Window w;
  w.kernel = std::move(kernel);
  w.strides = node.GetInts("strides", std::vector<int64_t>(rank, 1));
  w.dilations = node.GetInts("dilations", std::vector<int64_t>(rank, 1));
  if (w.kernel.size() != rank || w.strides.size() != rank || w.dilations.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel_shape/strides/dilations must have one entry per spatial dim (", rank,
        "), got kernel ", graph::ShapeToString(w.kernel), ", strides ",
        graph::ShapeToString(w.strides), ", dilations ", graph::ShapeToString(w.dilations)));
  }
  for (size_t i = 0; i < rank; ++i) {
    if (w.kernel[i] < 1 || w.strides[i] < 1 || w.dilations[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kernel ", graph::ShapeToString(w.kernel), ", strides ", graph::ShapeToString(w.strides),
          " and dilations ", graph::ShapeToString(w.dilations), " must be positive"));
    }
    if (!allow_dilations && w.dilations[i] != 1) {
      return absl::UnimplementedError(absl::StrCat("dilations ", graph::ShapeToString(w.dilations),
                                                   " are not supported by this operator"));
    }
  }
  std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  w.pads_begin.assign(rank, 0);
  w.pads_end.assign(rank, 0);
  if (auto_pad == "NOTSET") {
    std::vector<int64_t> pads = node.GetInts("pads", std::vector<int64_t>(2 * rank, 0));
    if (pads.size() != 2 * rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("pads ", graph::ShapeToString(pads), " must have ", 2 * rank, " entries"));
    }
    for (size_t i = 0; i < rank; ++i) {
      w.pads_begin[i] = pads[i];
      w.pads_end[i] = pads[i + rank];
      if (w.pads_begin[i] < 0 || w.pads_end[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("pads ", graph::ShapeToString(pads), " must be non-negative"));
      }
    }
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    w.same = true;
    for (size_t i = 0; i < rank; ++i) {
      int64_t out = (in_spatial[i] + w.strides[i] - 1) / w.strides[i];
      int64_t effective = (w.kernel[i] - 1) * w.dilations[i] + 1;
      int64_t total = std::max<int64_t>(0, (out - 1) * w.strides[i] + effective - in_spatial[i]);
      int64_t smaller = total / 2;
      // SAME_UPPER puts the odd extra pad at the end, SAME_LOWER at the beginning.
      w.pads_begin[i] = auto_pad == "SAME_UPPER" ? smaller : total - smaller;
      w.pads_end[i] = total - w.pads_begin[i];
    }
  } else if (auto_pad != "VALID") {
    return absl::InvalidArgumentError(absl::StrCat(
        "auto_pad '", auto_pad, "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"));
  }
  return w;
}

absl::StatusOr<int64_t> WindowOutputSize(const Window& w, size_t dim, int64_t in, bool ceil_mode) {
  const int64_t s = w.strides[dim];
  if (w.same) return (in + s - 1) / s;
  const int64_t effective = (w.kernel[dim] - 1) * w.dilations[dim] + 1;
  const int64_t span = in + w.pads_begin[dim] + w.pads_end[dim] - effective;
  if (span < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("spatial dim ", dim, " of size ", in, " plus pads (", w.pads_begin[dim], ",",
                     w.pads_end[dim], ") is smaller than the dilated kernel size ", effective));
  }
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  // A last window that starts in the end padding is dropped.
  if (ceil_mode && (out - 1) * s >= in + w.pads_begin[dim]) --out;
  return out;
}

namespace {

const KernelTable& Table() {
  static const KernelTable* table = [] {
    auto* t = new KernelTable();
    RegisterConvKernels(t);
    RegisterGemmKernels(t);
    RegisterElementwiseKernels(t);
    RegisterPoolingKernels(t);
    RegisterShapeKernels(t);
    return t;
  }();
  return *table;
}

}  // namespace
}  // namespace internal

bool HasReferenceKernel(std::string_view op_type) {
  return internal::Table().contains(std::string(op_type));
}

std::vector<std::string> ReferenceKernelOps() {
  std::vector<std::string> ops;
  for (const auto& [name, _] : internal::Table()) ops.push_back(name);
  std::sort(ops.begin(), ops.end());
  return ops;
}

absl::StatusOr<std::vector<graph::Tensor>> EvaluateNode(const graph::Node& node, int64_t opset,
                                                        const std::vector<graph::Tensor>& inputs) {
  const auto& table = internal::Table();
  auto it = table.find(node.op_type);
  if (it == table.end()) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": no reference kernel for op type '", node.op_type,
                     "' (supported: ", absl::StrJoin(ReferenceKernelOps(), ", "), ")"));
  }
  if (inputs.size() != node.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat(node.Describe(), ": has ", node.inputs.size(),
                                                   " inputs but ", inputs.size(),
                                                   " tensors were passed"));
  }
  internal::OpContext ctx{node, opset, inputs};
  absl::StatusOr<std::vector<graph::Tensor>> result = it->second(ctx);
  if (!result.ok()) {
    // Kernels that share their attribute resolution with the shape rules (graph/) already name
    // the node; every other message gets the name here.
    const std::string prefix = absl::StrCat(node.Describe(), ": ");
    if (absl::StartsWith(result.status().message(), prefix)) return result.status();
    return absl::Status(result.status().code(), absl::StrCat(prefix, result.status().message()));
  }
  if (result->size() < node.outputs.size()) {
    // Optional outputs a kernel does not produce (it produced every one it was asked for, or
    // the check below fires).
    for (size_t i = result->size(); i < node.outputs.size(); ++i) {
      if (!node.outputs[i].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), ": has ", node.outputs.size(), " outputs but ",
                         node.op_type, " produces at most ", result->size()));
      }
    }
    result->resize(node.outputs.size());
  } else if (result->size() > node.outputs.size()) {
    result->resize(node.outputs.size());
  }
  return result;
}

}  // namespace loom::kernels
