// Graph rewrites that prepare an imported model for inference: identity removal, constant folding
// (which resolves torchvision's Shape->Gather->Concat->Reshape chains into static shapes),
// BatchNormalization folding into the preceding Conv and trimming Conv taps that read only
// padding. The runtime's model loader calls OptimizeForInference; the passes are public for tests
// and for `loom inspect`.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

// Evaluates one node on constant inputs; the runtime supplies the reference kernels. `inputs`
// has one entry per entry of node.inputs (an undefined Tensor for an omitted optional input).
// Must return one tensor per entry of node.outputs (at least up to the last named output).
using NodeEvaluator = std::function<absl::StatusOr<std::vector<Tensor>>(
    const Node& node, int64_t opset, const std::vector<Tensor>& inputs)>;

// Removes Identity nodes and inference Dropout nodes (whose mask output is unused) by rewiring
// their consumers to the input. When the removed node's output is a graph output, the producer's
// output is renamed instead; a node that merely forwards a graph input or initializer to a graph
// output is kept. Returns the number of nodes removed through `removed` when non-null.
absl::Status RemoveIdentityLike(Graph& g, int64_t* removed = nullptr);

// How much constant folding may materialize. Folding computes each node's output types first
// and refuses, before allocating, a tensor above `max_tensor_bytes` or a running total of folded
// bytes above `max_total_bytes` (initializers the model already has do not count). The
// defaults are generous (the CLI's); a service folding uploaded models sets tight ones.
struct FoldOptions {
  int64_t max_tensor_bytes = int64_t{1} << 30;
  int64_t max_total_bytes = int64_t{4} << 30;
};

// Walks nodes in topological order, infers each node's output types (stored in value_types) and
// folds a node when all its inputs are initializers, when it is a Shape or Size node (its
// input's type is static), or when it is a Constant node: its outputs become initializers and
// the node is removed. Shape, Size and Constant nodes are evaluated here; every other node
// through `eval`. A graph output that becomes constant stays, as an initializer that is also a
// graph output. This resolves the shape arithmetic exporters write (Shape -> Gather ->
// Unsqueeze -> Concat -> Reshape, ConstantOfShape, Range, Equal/Where on shapes, Cast) once the
// input shapes are fixed. A fold above `options`' budget is kInvalidArgument naming the node,
// the output, its size and the limit.
// Precondition: graph inputs have static shapes (see SeedInputTypes).
absl::Status ConstantFold(Graph& g, const NodeEvaluator& eval, const FoldOptions& options = {},
                          int64_t* folded = nullptr);

// Folds BatchNormalization into the Conv that feeds it: W' = W * gamma/sqrt(var+eps) per output
// channel, b' = (b - mean) * gamma/sqrt(var+eps) + beta (bias created when absent). Applies only
// when the BN's parameters and the Conv's weights (and bias) are float32 initializers and the
// Conv's output has no other use. New weights get fresh initializer names, so weights shared with
// other nodes are left untouched.
absl::Status FoldBatchNormIntoConv(Graph& g, int64_t* folded = nullptr);

// Drops the kernel taps of a Conv that read only padding, for every output position: a tap
// whose dilated offset lies beyond the input on all outputs (DeepLabV3's atrous convolutions,
// dilation 24 and 36 on a 14x14 map, are 1x1 convolutions in effect). The kernel shrinks to the
// live taps along each spatial dim, and the pads shrink with it, so the output and its values are
// unchanged. Applies when the weight is a float32 initializer and the input's shape is static;
// a dim keeps its taps when trimming would need a negative pad. Trimmed weights get fresh names.
absl::Status TrimConvPaddingTaps(Graph& g, int64_t* trimmed = nullptr);

// Rewrites each 1-D Conv (input [N, C, L] of static shape, float32 weight initializer
// [K, C/groups, k]) as Reshape [N, C, 1, L] -> 2-D Conv (kernel [1, k], the same strides,
// dilations and pads along W, explicit pads instead of auto_pad) -> Reshape [N, K, L'], the last
// writing the original output. The Reshapes are views and the 2-D Conv is a tunable conv2d /
// depthwise / grouped workload, so audio front ends (Whisper's, wav2vec2's feature encoder and
// grouped positional convolution) run on the convolution templates instead of the reference
// kernel. The 2-D weight gets a fresh name. Requires the value types (ConstantFold infers them).
absl::Status Conv1dAsConv2d(Graph& g, int64_t* rewritten = nullptr);

// Keeps a 4-D value 4-D through a Reshape that only drops its unit H or W ([N, C, 1, L] ->
// [N, C, L], as Conv1dAsConv2d writes after each 1-D convolution): the elementwise nodes after
// the Reshape (IsBroadcastElementwiseOp) whose operands are its output, each other, or
// initializers run on the 4-D value instead (such an initializer is copied with the unit dim
// inserted where it has that dim), and a Reshape of any of them back to the 4-D shape has its
// readers read the 4-D value. A value still read as 3-D, or a graph output, is a Reshape of its
// 4-D twin. Audio front ends (Conv1d -> GELU -> Conv1d) then are a 2-D conv chain that the
// compiled runtime keeps in its blocked layout, with the GELU in the convolution's epilogue.
// Requires the value types; the Reshapes left dead are for RemoveDeadNodes. `moved` counts the
// Reshapes handled.
absl::Status SinkUnitDimReshapes(Graph& g, int64_t* moved = nullptr);

// Moves scalar factors from a MatMul's operands to its output: MatMul(Mul(X, a), Div(Y, b))
// becomes Mul(MatMul(X, Y), a / b), for float32 constants a, b of one element (either operand
// order of Mul; Div only as X / b), when the scaled operand has no other use and the scale does
// not change its shape. Attention as exporters write it (Q * s and K^T * s before Q K^T) then
// reads K^T in place and fuses the one scale into the product's epilogue. The rewritten Mul /
// Div nodes are left dead (RemoveDeadNodes drops them). Requires a topologically sorted graph
// whose value types are known.
absl::Status MoveScalesPastMatMul(Graph& g, int64_t* moved = nullptr);

struct PassStats {
  int64_t removed_identity = 0;
  int64_t folded_constants = 0;
  int64_t folded_batchnorms = 0;
  int64_t trimmed_convs = 0;
  int64_t conv1d_as_2d = 0;
  int64_t sunk_reshapes = 0;
  int64_t moved_scales = 0;
};

// The inference pipeline: RemoveIdentityLike, ConstantFold (which infers shapes as it goes),
// FoldBatchNormIntoConv, TrimConvPaddingTaps, Conv1dAsConv2d, SinkUnitDimReshapes,
// MoveScalesPastMatMul, RemoveDeadNodes, InferShapes.
// Used by the runtime's model loader.
absl::StatusOr<PassStats> OptimizeForInference(Graph& g, const NodeEvaluator& eval,
                                               const FoldOptions& options = {});

}  // namespace loom::graph
