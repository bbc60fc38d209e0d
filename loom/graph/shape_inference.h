// Static shape inference for Loom's supported ONNX operators (opsets 11..18). Called by the ONNX
// importer and the model zoo after building a graph, by ConstantFold (passes.h) node by node, and
// by the runtime before planning memory. Every error names the node it is about.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

bool IsSupportedOp(std::string_view op_type);
// Sorted op type names.
std::vector<std::string> SupportedOps();

// Output types of one node from the types (and, where needed, constant values) of its inputs,
// read from graph.value_types / graph.initializers / graph.inputs. Validates attributes and ranks.
// Errors: kUnimplemented "unsupported operator 'Foo' in node 'bar'" for unknown ops (and for
// unsupported features of known ops, e.g. MaxPool's Indices output); kInvalidArgument for bad
// attributes or shapes; kInvalidArgument when a shape-defining input (Reshape shape, Slice
// starts, ...) is not a constant. The result has one entry per entry of node.outputs (an omitted
// optional output, named "", gets the type it would have had).
absl::StatusOr<std::vector<TensorType>> InferNodeOutputTypes(const Graph& graph, const Node& node);

// The payload (absl::Status::GetPayload) of the kInvalidArgument a rule returns when an input
// whose value it needs (a shape-defining input) is not constant: the value's name. The model
// loader uses it to bind graph inputs whose values the caller knows (frontend::LoadOptions).
inline constexpr char kNeedsConstantPayload[] = "loom.graph.needs_constant";

// Sorts the nodes topologically, validates the graph, and fills graph.value_types for every
// input, initializer and node output (stale entries are dropped). Graph inputs with -1 dims are
// an error naming the input; so are negative dims and tensors above Tensor::kMaxBytes. The types
// of graph.outputs are updated to the inferred ones.
absl::Status InferShapes(Graph& graph);

// Checks that every graph input has a fully static, sane shape, and seeds graph.value_types with
// the types of the inputs and initializers. Used by InferShapes and ConstantFold.
absl::Status SeedInputTypes(Graph& graph);

// The value of `value` when it is known before run time: an initializer, or the output of a
// Constant node. nullopt otherwise.
std::optional<Tensor> ConstantValueOf(const Graph& graph, const std::string& value);

// The tensor a Constant node produces (attribute value, value_float(s) or value_int(s)).
absl::StatusOr<Tensor> ConstantNodeValue(const Node& node);

// True for the operators whose output is their operands' NumPy broadcast, computed element by
// element (Add, Erf, Equal, Max, Where, Clip, PRelu, Pow, Gelu, ...): one reshape of the output
// and of every operand, by the same broadcast-preserving map, commutes with them.
bool IsBroadcastElementwiseOp(std::string_view op_type);

// NumPy (multidirectional) broadcasting of two shapes; kInvalidArgument when incompatible.
absl::StatusOr<Shape> BroadcastShapes(const Shape& a, const Shape& b);

// Resolved window geometry of a Conv, MaxPool or AveragePool node over `num_spatial` dims, with
// auto_pad turned into explicit pads. Shared with the kernels and task extraction so that every
// consumer agrees on the padding.
struct WindowGeometry {
  std::vector<int64_t> kernel;     // kernel extent per spatial dim
  std::vector<int64_t> strides;    // per spatial dim
  std::vector<int64_t> dilations;  // per spatial dim
  // ONNX order: begin of every spatial dim, then end of every spatial dim.
  std::vector<int64_t> pads;
  std::vector<int64_t> output;  // output extent per spatial dim
};
// `input_spatial`: the input's spatial extents; `kernel`: the kernel extents (the weight's for a
// Conv, kernel_shape for a pool). `ceil_mode` only applies to pools.
absl::StatusOr<WindowGeometry> ResolveWindowGeometry(const Node& node,
                                                     const std::vector<int64_t>& input_spatial,
                                                     const std::vector<int64_t>& kernel,
                                                     bool ceil_mode);

// Resolved geometry of a ConvTranspose node: the output extent and the pads per spatial dim
// (pads may be negative when output_shape asks for more than the natural extent). From
// `input_spatial` and the weight's kernel extents, with strides, dilations, output_padding,
// pads, auto_pad and output_shape as ONNX defines them. Implemented in shape_rules_nn.cc.
struct ConvTransposeGeometry {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;  // ONNX order: every begin, then every end
  std::vector<int64_t> output;
};
absl::StatusOr<ConvTransposeGeometry> ResolveConvTransposeGeometry(
    const Node& node, const std::vector<int64_t>& input_spatial,
    const std::vector<int64_t>& kernel);

// How a Softmax node applies to an input of rank `rank` under `opset`: before opset 13 the input
// is coerced to 2-D [prod(dims < axis), prod(dims >= axis)] and normalized per row (axis default
// 1); from 13 it is normalized along `axis` alone (default -1). `axis` comes back in [0, rank).
struct SoftmaxSpec {
  int64_t axis = 0;
  bool coerce_2d = false;
};
absl::StatusOr<SoftmaxSpec> ResolveSoftmax(const Node& node, int64_t opset, int64_t rank);

}  // namespace loom::graph
