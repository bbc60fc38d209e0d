// The shape and data-movement operators (Reshape, Slice, Pad, Gather, Resize, ...), resolved: what
// a node's attributes and shape-defining inputs mean, checked and normalized in one place. Shape
// inference (shape_rules_tensor.cc) calls these with the constant inputs to get output types, and
// the reference kernels (loom/kernels/) call the same functions on run-time values, so the two
// always agree. Opset-dependent forms (attribute before, input after) are resolved here from the
// opset. Errors are kInvalidArgument (kUnimplemented for a mode or feature Loom does not support),
// naming the node and what is wrong. Sizes are checked for overflow: every output shape that
// comes back has non-negative dimensions whose product fits in int64.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

using IntList = std::vector<int64_t>;
// An optional integer-list input (axes, steps, split, ...): nullopt when the input is omitted.
using OptionalInts = std::optional<IntList>;

// Cast's `to` (and CastLike's target): kInvalidArgument naming the ONNX type when it is outside
// Loom's set (float8, int4, string, ...).
absl::StatusOr<DType> ResolveCastTarget(const Node& node);

// Reshape: 0 copies the input dim (unless allowzero), one -1 is inferred.
absl::StatusOr<Shape> ResolveReshape(const Node& node, const Shape& data, const IntList& shape);

// Flatten to [prod(dims < axis), prod(dims >= axis)]; axis in [-rank, rank], default 1.
absl::StatusOr<Shape> ResolveFlatten(const Node& node, const Shape& data);

struct ConcatSpec {
  int64_t axis = 0;
  Shape out;
};
// Inputs must share dtype and every dim but `axis`.
absl::StatusOr<ConcatSpec> ResolveConcat(const Node& node, const std::vector<TensorType>& inputs);

// Transpose's perm (default: reversed dims), checked to be a permutation of 0..rank-1.
absl::StatusOr<IntList> ResolvePerm(const Node& node, int64_t rank);

// Squeeze / Unsqueeze: axes are an attribute before opset 13 and an input from 13
// (`axes_input`); the output shape. Squeeze without axes drops every dim of size 1.
absl::StatusOr<Shape> ResolveSqueeze(const Node& node, int64_t opset, const Shape& data,
                                     const OptionalInts& axes_input);
absl::StatusOr<Shape> ResolveUnsqueeze(const Node& node, int64_t opset, const Shape& data,
                                       const OptionalInts& axes_input);

// Slice: per data dim, the first index read, the step, and the output extent (ONNX clamping,
// negative steps).
struct SliceSpec {
  IntList start;
  IntList step;
  Shape out;
};
absl::StatusOr<SliceSpec> ResolveSlice(const Node& node, const Shape& data, const IntList& starts,
                                       const IntList& ends, const OptionalInts& axes,
                                       const OptionalInts& steps);

enum class PadMode { kConstant, kReflect, kEdge, kWrap };
// Pad: per data dim, the pads before and after (negative pads crop) and the output shape.
struct PadSpec {
  PadMode mode = PadMode::kConstant;
  IntList begin;
  IntList end;
  Shape out;
};
absl::StatusOr<PadSpec> ResolvePad(const Node& node, int64_t opset, const Shape& data,
                                   const IntList& pads, const OptionalInts& axes);

// Expand: the bidirectional broadcast of `data` and `shape`.
absl::StatusOr<Shape> ResolveExpand(const Node& node, const Shape& data, const IntList& shape);

// Tile: data dims times repeats (one per dim, non-negative).
absl::StatusOr<Shape> ResolveTile(const Node& node, const Shape& data, const IntList& repeats);

// Split into `num_outputs` parts along `axis`: sizes from the split input (opset >= 13) or
// attribute (< 13), else num_outputs (opset >= 18: the last part may be smaller) or equal parts.
struct SplitSpec {
  int64_t axis = 0;
  IntList sizes;
};
absl::StatusOr<SplitSpec> ResolveSplit(const Node& node, int64_t opset, const Shape& data,
                                       const OptionalInts& split_input, size_t num_outputs);

// Gather: the normalized axis and output shape; constant `indices` (when given) are range-checked.
struct GatherSpec {
  int64_t axis = 0;
  Shape out;
};
absl::StatusOr<GatherSpec> ResolveGather(const Node& node, const Shape& data,
                                         const TensorType& indices);
// GatherElements / ScatterElements: the normalized axis; shapes checked (output = indices shape
// for GatherElements, data shape for ScatterElements).
absl::StatusOr<int64_t> ResolveGatherElements(const Node& node, const Shape& data,
                                              const TensorType& indices);
// GatherND: batch_dims and the output shape.
struct GatherNDSpec {
  int64_t batch_dims = 0;
  Shape out;
};
absl::StatusOr<GatherNDSpec> ResolveGatherND(const Node& node, const Shape& data,
                                             const TensorType& indices);

enum class ScatterReduction { kNone, kAdd, kMul, kMax, kMin };
absl::StatusOr<ScatterReduction> ResolveScatterReduction(const Node& node, int64_t opset);
absl::StatusOr<int64_t> ResolveScatterElements(const Node& node, const TensorType& data,
                                               const TensorType& indices,
                                               const TensorType& updates);
absl::Status CheckScatterND(const Node& node, const TensorType& data, const TensorType& indices,
                            const TensorType& updates);

// Index checks shared by the rules (constant indices) and the kernels (always): every index in
// [-extent, extent), else kInvalidArgument naming the index, its position and the extent.
absl::Status CheckIndexRange(const Node& node, const Tensor& indices, int64_t extent,
                             const std::string& what);
// GatherND / ScatterND: the last indices dim indexes data's dims [batch_dims, ...).
absl::Status CheckNDIndexRange(const Node& node, const Tensor& indices, const Shape& data,
                               int64_t batch_dims);

// OneHot: the normalized axis (into the output), the depth and the output shape.
struct OneHotSpec {
  int64_t axis = 0;
  int64_t depth = 0;
  Shape out;
};
absl::StatusOr<OneHotSpec> ResolveOneHot(const Node& node, const Shape& indices,
                                         const Tensor& depth);

// DepthToSpace (DCR or CRD) and SpaceToDepth (DCR; CRD from opset 28) on [N, C, H, W].
struct DepthSpaceSpec {
  int64_t blocksize = 0;
  bool crd = false;
  Shape out;
};
absl::StatusOr<DepthSpaceSpec> ResolveDepthToSpace(const Node& node, const Shape& data);
absl::StatusOr<DepthSpaceSpec> ResolveSpaceToDepth(const Node& node, int64_t opset,
                                                   const Shape& data);

// Range: the element count max(ceil((limit - start) / delta), 0) of three scalars of one dtype.
absl::StatusOr<int64_t> ResolveRangeCount(const Node& node, const Tensor& start,
                                          const Tensor& limit, const Tensor& delta);

// Shape: the [start, end) dims it returns (start/end from opset 15, clamped).
struct DimRange {
  int64_t start = 0;
  int64_t end = 0;
};
DimRange ResolveShapeRange(const Node& node, int64_t opset, int64_t rank);

// ConstantOfShape: the output type (the value attribute's dtype, float32 by default).
absl::StatusOr<TensorType> ResolveConstantOfShape(const Node& node, const IntList& shape);

// Resize, resolved per data dim. Loom implements every mode of Resize 11..19: nearest (every
// nearest_mode), linear and cubic (cubic_coeff_a, exclude_outside), antialias for linear and
// cubic, every coordinate_transformation_mode, scales or sizes, axes, keep_aspect_ratio_policy.
enum class ResizeMode { kNearest, kLinear, kCubic };
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil };
enum class CoordinateMode {
  kHalfPixel,
  kHalfPixelSymmetric,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfCropAndResize,
};
struct ResizeSpec {
  ResizeMode mode = ResizeMode::kNearest;
  NearestMode nearest_mode = NearestMode::kRoundPreferFloor;
  CoordinateMode coordinate_mode = CoordinateMode::kHalfPixel;
  double cubic_coeff_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;
  double extrapolation_value = 0;
  // Per data dim: the scale (output / input), the output extent and the roi [start, end]
  // (0 and 1 unless tf_crop_and_resize gives one).
  std::vector<double> scales;
  Shape out;
  std::vector<double> roi_start;
  std::vector<double> roi_end;
};
// `roi`, `scales` and `sizes` are the optional inputs' values (nullopt or empty when omitted).
absl::StatusOr<ResizeSpec> ResolveResize(const Node& node, int64_t opset, const Shape& data,
                                         const std::optional<std::vector<double>>& roi,
                                         const std::optional<std::vector<double>>& scales,
                                         const OptionalInts& sizes);

// The source coordinate of output coordinate `y` along `axis` of a resize from `in` to `out`
// elements (ONNX's coordinate_transformation_mode, computed as the ONNX reference does: from the
// unrounded output length scale * in). The one rule for the reference kernel and the lowering.
double ResizeSourceCoordinate(const ResizeSpec& spec, size_t axis, double y, int64_t in,
                              int64_t out);

// Trilu: keeps the upper (default) or lower triangle of the last two dims, shifted by k.
absl::StatusOr<bool> ResolveTriluUpper(const Node& node, const Shape& data);

}  // namespace loom::graph
