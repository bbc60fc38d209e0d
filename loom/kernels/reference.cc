#include "loom/kernels/reference.h"

#include <algorithm>
#include <string>
#include <string_view>

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

absl::Status CheckDTypeIn(const OpContext& ctx, const Tensor& t, absl::string_view what,
                          DTypeSet allowed) {
  if (allowed.Contains(t.dtype())) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " has type ", t.type().ToString(), "; ",
                                                 ctx.node.op_type, " accepts ",
                                                 allowed.ToString()));
}

absl::StatusOr<int64_t> NormalizeAxis(int64_t axis, int64_t rank, absl::string_view what) {
  if (axis < -rank || axis >= rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", axis, " is out of range for rank ",
                                                   rank, " (valid: ", -rank, "..", rank - 1, ")"));
  }
  return axis < 0 ? axis + rank : axis;
}

AxisSplit SplitAtAxis(const Shape& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const int64_t extent = shape[static_cast<size_t>(d)];
    if (d < axis) s.outer *= extent;
    if (d == axis) s.n = extent;
    if (d > axis) s.inner *= extent;
  }
  return s;
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

namespace {

const KernelTable& Table() {
  static const KernelTable* table = [] {
    auto* t = new KernelTable();
    RegisterConvKernels(t);
    RegisterGemmKernels(t);
    RegisterElementwiseKernels(t);
    RegisterPoolingKernels(t);
    RegisterShapeKernels(t);
    RegisterReduceKernels(t);
    RegisterNormalizationKernels(t);
    RegisterEinsumKernels(t);
    return t;
  }();
  return *table;
}

// float16 and bfloat16 are storage types: EvaluateNode widens every half input to float32, runs
// the float32 kernel, and rounds the float32 outputs back to the half type of the operator's
// type-defining input. The operators below are the exceptions.

// Operators whose output type does not follow their inputs (or that move any dtype as storage
// and must see it unchanged): they get their inputs as given.
bool TakesHalfAsIs(std::string_view op) {
  return op == "Cast" || op == "CastLike" || op == "EyeLike";
}

// The input whose element type is the output's T (input 0 unless listed).
size_t TypeDefiningInput(std::string_view op) {
  if (op == "Where") return 1;
  if (op == "OneHot") return 2;
  return 0;
}

// Outputs that stay float32 whatever T is (LayerNormalization's Mean and InvStdDev have the
// stash type, float32).
bool KeepsFloat32Output(std::string_view op, size_t output) {
  return op == "LayerNormalization" && output > 0;
}

Tensor HalfToFloat32(const Tensor& t) {
  Tensor out(DType::kFloat32, t.shape());
  const uint16_t* src = t.data<uint16_t>();
  float* dst = out.data<float>();
  const bool bf16 = t.dtype() == DType::kBFloat16;
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    dst[i] = bf16 ? graph::BFloat16ToFloat(src[i]) : graph::HalfToFloat(src[i]);
  }
  return out;
}

Tensor Float32ToHalf(const Tensor& t, DType half) {
  Tensor out(half, t.shape());
  const float* src = t.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  const bool bf16 = half == DType::kBFloat16;
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    dst[i] = bf16 ? graph::FloatToBFloat16(src[i]) : graph::FloatToHalf(src[i]);
  }
  return out;
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
  // Half inputs are computed in float32 (see TakesHalfAsIs).
  std::vector<graph::Tensor> widened;
  graph::DType half = graph::DType::kUndefined;
  if (!internal::TakesHalfAsIs(node.op_type) &&
      std::any_of(inputs.begin(), inputs.end(),
                  [](const graph::Tensor& t) { return graph::IsHalfDType(t.dtype()); })) {
    const size_t type_input = internal::TypeDefiningInput(node.op_type);
    if (type_input < inputs.size() && graph::IsHalfDType(inputs[type_input].dtype())) {
      half = inputs[type_input].dtype();
    }
    widened.reserve(inputs.size());
    for (const graph::Tensor& t : inputs) {
      widened.push_back(graph::IsHalfDType(t.dtype()) ? internal::HalfToFloat32(t) : t);
    }
  }
  internal::OpContext ctx{node, opset, widened.empty() ? inputs : widened};
  absl::StatusOr<std::vector<graph::Tensor>> result = it->second(ctx);
  if (!result.ok()) {
    // Errors from graph/ helpers (window geometry, ...) already name the node.
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
  if (half != graph::DType::kUndefined) {
    for (size_t i = 0; i < result->size(); ++i) {
      graph::Tensor& out = (*result)[i];
      if (out.dtype() == graph::DType::kFloat32 && !internal::KeepsFloat32Output(node.op_type, i)) {
        out = internal::Float32ToHalf(out, half);
      }
    }
  }
  return result;
}

}  // namespace loom::kernels
