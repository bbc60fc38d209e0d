// Private to loom/kernels/: the signature every reference operator kernel has, the per-family
// registration functions that reference.cc collects into its dispatch table, and the small
// helpers (arity and dtype checks, axis normalisation, window/padding rules) the families share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::kernels::internal {

using graph::DType;
using graph::Shape;
using graph::Tensor;

// What a kernel sees. Errors a kernel returns need not name the node: EvaluateNode prefixes
// every message with node.Describe().
struct OpContext {
  const graph::Node& node;
  int64_t opset;
  const std::vector<Tensor>& inputs;

  // True when input i was given (an omitted optional input is a default-constructed Tensor).
  bool HasInput(size_t i) const { return i < inputs.size() && inputs[i].defined(); }
  // Number of outputs the node asks for (a kernel may skip optional outputs beyond it).
  size_t NumOutputs() const { return node.outputs.size(); }
  // True when output i is requested (present and named).
  bool WantsOutput(size_t i) const { return i < node.outputs.size() && !node.outputs[i].empty(); }
};

using OpResult = absl::StatusOr<std::vector<Tensor>>;
using KernelFn = OpResult (*)(const OpContext&);
using KernelTable = absl::flat_hash_map<std::string, KernelFn>;

// Each family adds its operators to the table.
void RegisterConvKernels(KernelTable* table);
void RegisterGemmKernels(KernelTable* table);
void RegisterElementwiseKernels(KernelTable* table);
void RegisterPoolingKernels(KernelTable* table);
void RegisterShapeKernels(KernelTable* table);

// Checks min <= inputs.size() <= max and that inputs [0, required) are present.
absl::Status CheckInputs(const OpContext& ctx, size_t min, size_t max, size_t required);
// kInvalidArgument "<what> must be <dtype>, got <actual type>" unless t.dtype() == dtype.
absl::Status CheckDType(const Tensor& t, absl::string_view what, DType dtype);
// Maps axis in [-rank, rank) to [0, rank); kInvalidArgument otherwise.
absl::StatusOr<int64_t> NormalizeAxis(int64_t axis, int64_t rank, absl::string_view what);
// Reads an integer tensor (int64 or int32, any shape) into a vector.
absl::StatusOr<std::vector<int64_t>> ReadInts(const Tensor& t, absl::string_view what);
// Reads one float from a float32 scalar (or 1-element) tensor.
absl::StatusOr<float> ReadFloatScalar(const Tensor& t, absl::string_view what);
// Row-major element strides of `shape`.
std::vector<int64_t> RowMajorStrides(const Shape& shape);
// Allocates an output, failing with kInvalidArgument for absurd sizes.
absl::StatusOr<Tensor> NewTensor(DType dtype, Shape shape);

// Calls f(T{}) with the C++ arithmetic type of `dtype` (uint8_t for kBool) and returns its
// result. float16 and bfloat16 are storage types with no arithmetic of their own: kernels compute
// them in float32 (EvaluateNode converts), so they, like kUndefined, must be excluded by the
// caller (they reach f as uint16_t). For kernels that only move elements, see VisitStorage.
template <typename F>
decltype(auto) VisitDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      return f(double{});
    case DType::kInt64:
      return f(int64_t{});
    case DType::kInt32:
      return f(int32_t{});
    case DType::kInt16:
      return f(int16_t{});
    case DType::kInt8:
      return f(int8_t{});
    case DType::kUint64:
      return f(uint64_t{});
    case DType::kUint32:
      return f(uint32_t{});
    case DType::kUint16:
    case DType::kFloat16:
    case DType::kBFloat16:
      return f(uint16_t{});
    case DType::kBool:
    case DType::kUint8:
    case DType::kUndefined:
      break;
  }
  return f(uint8_t{});
}

// Calls f(T{}) with an unsigned integer type of the element's size (uint8_t .. uint64_t): for
// kernels that copy, gather or scatter elements without looking at their values.
template <typename F>
decltype(auto) VisitStorage(DType dtype, F&& f) {
  switch (graph::DTypeSize(dtype)) {
    case 8:
      return f(uint64_t{});
    case 4:
      return f(uint32_t{});
    case 2:
      return f(uint16_t{});
    default:
      break;
  }
  return f(uint8_t{});
}

// Numpy-style broadcast of two shapes; kInvalidArgument when they are incompatible.
absl::StatusOr<Shape> BroadcastShapes(const Shape& a, const Shape& b);
// Element strides for reading a tensor of `shape` as if broadcast to `out` (right-aligned; 0 on
// dims where `shape` has 1 or is absent).
std::vector<int64_t> BroadcastStrides(const Shape& shape, const Shape& out);

// Sliding-window geometry over the spatial dims, shared by Conv and the pools. Vectors have one
// entry per spatial dim.
struct Window {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads_begin;
  std::vector<int64_t> pads_end;
  // True for auto_pad SAME_UPPER/SAME_LOWER: the output size is ceil(in / stride).
  bool same = false;
};

// Reads strides, dilations (when `allow_dilations`), pads and auto_pad for a window of `kernel`
// over `in_spatial`, resolving auto_pad SAME_UPPER/SAME_LOWER/VALID/NOTSET as ONNX does.
absl::StatusOr<Window> ReadWindow(const graph::Node& node, const Shape& in_spatial,
                                  std::vector<int64_t> kernel, bool allow_dilations);

// Output size of one spatial dim: floor (or ceil, with `ceil_mode`) division, then, for
// ceil_mode, dropping a last window that would start in the end padding (PyTorch/ONNX rule).
// kInvalidArgument when the (padded) input is smaller than the dilated kernel.
absl::StatusOr<int64_t> WindowOutputSize(const Window& w, size_t dim, int64_t in, bool ceil_mode);

}  // namespace loom::kernels::internal
