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

// Operator types LowerNode handles at least for float32 (for `loom inspect` and the tests).
std::vector<std::string> LoweredOps();

}  // namespace loom::ops
