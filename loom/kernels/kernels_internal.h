// Private to loom/kernels/: the signature every reference operator kernel has, the per-family
// registration functions that reference.cc collects into its dispatch table, and the small
// helpers (arity and dtype checks, axis normalisation, broadcasting) the families share.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loom/graph/dtype_set.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::kernels::internal {

using graph::DType;
using graph::DTypeSet;
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
void RegisterReduceKernels(KernelTable* table);         // reduce.cc
void RegisterNormalizationKernels(KernelTable* table);  // normalization.cc
void RegisterEinsumKernels(KernelTable* table);         // einsum.cc

// Checks min <= inputs.size() <= max and that inputs [0, required) are present.
absl::Status CheckInputs(const OpContext& ctx, size_t min, size_t max, size_t required);
// kInvalidArgument "<what> must be <dtype>, got <actual type>" unless t.dtype() == dtype.
absl::Status CheckDType(const Tensor& t, absl::string_view what, DType dtype);
// kInvalidArgument "<what> has type <type>; <op> accepts <allowed>" unless allowed has t's dtype.
absl::Status CheckDTypeIn(const OpContext& ctx, const Tensor& t, absl::string_view what,
                          DTypeSet allowed);
// Maps axis in [-rank, rank) to [0, rank); kInvalidArgument otherwise.
absl::StatusOr<int64_t> NormalizeAxis(int64_t axis, int64_t rank, absl::string_view what);
// A tensor viewed as [outer, n, inner] around `axis` (in [0, rank)): the products of the dims
// before it, its extent, and the product of the dims after it.
struct AxisSplit {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
};
AxisSplit SplitAtAxis(const Shape& shape, int64_t axis);
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

// Calls body(o, offsets) for every element o (row-major) of the broadcast shape `out`, with
// offsets[j] the element offset in input j (of shape in[j], broadcast to `out`). The innermost
// dim is the inner loop. Precondition: every in[j] broadcasts to `out`.
template <size_t N, typename Body>
void ForEachBroadcast(const Shape& out, const std::array<const Shape*, N>& in, Body&& body) {
  const int64_t total = graph::NumElements(out);
  if (total == 0) return;
  std::array<int64_t, N> off{};
  if (out.empty()) {
    body(int64_t{0}, off);
    return;
  }
  const size_t rank = out.size();
  std::array<std::vector<int64_t>, N> strides;
  for (size_t j = 0; j < N; ++j) strides[j] = BroadcastStrides(*in[j], out);
  const int64_t inner = out.back();
  std::vector<int64_t> index(rank, 0);
  for (int64_t o = 0; o < total; o += inner) {
    for (size_t j = 0; j < N; ++j) {
      off[j] = 0;
      for (size_t d = 0; d + 1 < rank; ++d) off[j] += index[d] * strides[j][d];
    }
    for (int64_t i = 0; i < inner; ++i) {
      body(o + i, off);
      for (size_t j = 0; j < N; ++j) off[j] += strides[j][rank - 1];
    }
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < out[d]) break;
      index[d] = 0;
    }
  }
}

// numpy matmul of two same-typed tensors (float32, float64, int32, int64, uint32, uint64): batch
// dims broadcast, a 1-D operand is promoted to a matrix and its dim dropped from the result.
// Used by MatMul and Einsum (gemm.cc).
absl::StatusOr<Tensor> MatMulTensors(const Tensor& a, const Tensor& b);
extern const DTypeSet kMatMulDTypes;  // the element types MatMulTensors accepts

// An N-D convolution over [N, C, spatial...] data with resolved geometry (conv.cc). One
// implementation for every spatial rank: Conv2dNchw (conv.h) and the ONNX Conv kernel call it.
struct ConvNdParams {
  int64_t batch = 1;
  int64_t in_channels = 1;
  int64_t out_channels = 1;
  int64_t groups = 1;
  // One entry per spatial dim.
  std::vector<int64_t> in, kernel, strides, dilations, pads_begin, out;
};
// y[n, oc, o...] = sum over (ic, k...) of x[n, g*icg + ic, o*stride + k*dilation - pad_begin]
// * w[oc, ic, k...] (+ bias[oc]); out-of-range x reads as 0. T is float or double.
template <typename T>
void ConvNd(const ConvNdParams& p, const T* x, const T* w, const T* bias_or_null, T* y);

}  // namespace loom::kernels::internal
