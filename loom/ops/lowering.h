// Generated kernels for the operators that are neither tunable (convolutions, matrix products:
// template.h) nor elementwise chains (elementwise.h): softmax and log-softmax, the
// normalizations, reductions and arg-reductions, transposes and the data-movement operators
// (gather, slice, concat, split, pad, expand, tile, resize, ...). The compiled-model planner
// (runtime/compiled_model.cc) calls LowerNode for every node it does not fuse or view, and runs
// the returned kernel on natural-layout tensors in its arena; anything LowerNode refuses falls
// back to the node's reference kernel.
//
// Contract of a lowered kernel: the CPU kernel ABI (codegen/kernel_abi.h). Its arguments are, in
// order, the `args` of the LoweredKernel; every tensor argument is the dense row-major (C order)
// value in its graph dtype, 64-byte aligned, and outputs never alias inputs. Shapes are the
// static ones of graph.value_types and are baked into the source (or passed in a constant
// argument the lowering made). The kernel may use `par` to split its work; it must give the same
// result, bit for bit, for any thread count. Results match the reference kernel (kernels/) to
// within 1e-6 relative error for float math (exact for integer and data-movement operators).
// Where the reference kernel refuses a run-time value, the generated kernel stays in bounds:
// a Gather / GatherElements index outside [-D, D) gives zeros (the reference: kInvalidArgument).
// The family files (lower_<family>.cc) and what they cover: docs/ARCHITECTURE.md, "Lowered
// kernels".
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"

namespace loom::ops {

struct LoweredKernel {
  // One kernel argument.
  struct Arg {
    enum class Kind {
      kValue,     // a graph value: a node input or output, named by `value`
      kConstant,  // a tensor the lowering made (a table, resolved indices, packed parameters)
    };
    Kind kind = Kind::kValue;
    std::string value;       // kValue
    graph::Tensor constant;  // kConstant
    bool is_output = false;  // kValue only: written by the kernel
  };
  KernelSource source;
  std::vector<Arg> args;
  // What profiles show for the step: "softmax", "layernorm", "transpose", "gather", ...
  std::string kind;
};

// The kernel for `node`, whose input and output types are in graph.value_types (and whose
// shape-defining inputs are constants where the operator needs them so). kUnimplemented when the
// operator, a dtype or an attribute value has no generated kernel: the caller then runs the
// reference kernel. kInvalidArgument for a malformed node (the same errors as shape inference).
absl::StatusOr<LoweredKernel> LowerNode(const graph::Graph& graph, const graph::Node& node,
                                        const Target& target);

// A copy of `in_value` into `out_value` (elements of `dtype`) through a strided view:
// out[i] = in[sum_k i_k * in_strides[k]] for every index i of the dense `out_shape` (strides in
// elements). Arguments (input, output); the loops of the lowered Transpose (row copies, or 16 x
// 16 tiles when the input's contiguous dim moves). The compiled-model planner reads a blocked
// buffer as a transposed natural tensor through it (runtime/plan_builder.cc).
LoweredKernel LowerStridedCopyKernel(const Target& target, const std::string& kind,
                                     const std::string& in_value, const std::string& out_value,
                                     graph::DType dtype, graph::Shape out_shape,
                                     std::vector<int64_t> in_strides);

// Operator types LowerNode handles at least for float32 (for `loom inspect` and the tests).
std::vector<std::string> LoweredOps();

// A pool over a float32 tensor in the blocked layout NCHWc ([N, ceil(C / bn), H, W, bn]; output
// the same with OH x OW): MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool (ReduceMean
// and ReduceMax over H and W are the global kinds). The compiled-model planner's TryPool
// (runtime/plan_builder.cc) resolves the window geometry (graph::ResolveWindowGeometry: pads,
// auto_pad, ceil_mode, dilations) and emits the kernel with EmitBlockedPool.
struct BlockedPoolSpec {
  enum class Kind : uint8_t { kMax, kAverage, kGlobalAverage, kGlobalMax };
  Kind kind = Kind::kMax;
  int64_t n = 1, c = 1, h = 1, w = 1, bn = 16;  // the input
  int64_t oh = 1, ow = 1;                       // the output's spatial extents (1 x 1: global)
  // The window (kMax, kAverage): kernel, strides, dilations, pads top, left, bottom, right.
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0, pb = 0, pr = 0;
  bool count_include_pad = false;  // kAverage: divide by the window clipped to the padded input
};

// The spec of pool `node` of `kind` (a global kind also for ReduceMean / ReduceMax over H and W)
// on a float32 NCHW input of shape `in` with output `out`, in blocks of `bn`: the window from
// graph::ResolveWindowGeometry. kInvalidArgument when the node's window is malformed or does
// not give `out`.
absl::StatusOr<BlockedPoolSpec> ResolveBlockedPool(const graph::Node& node,
                                                   BlockedPoolSpec::Kind kind,
                                                   const graph::Shape& in, const graph::Shape& out,
                                                   int64_t bn);

// The kernel of `spec`: arguments (input, output), both 64-byte aligned blocked buffers of the
// spec's geometry. Vectorized over the block's lanes, threaded over output rows (planes for the
// global kinds); results match the reference pooling kernels to 1e-6 relative (max: exactly) and
// are the same bits for any thread count. kInvalidArgument for a geometry out of range.
absl::StatusOr<KernelSource> EmitBlockedPool(const BlockedPoolSpec& spec, const Target& target);

}  // namespace loom::ops
