// Reference kernels: plain, obviously correct implementations of every operator Loom supports,
// with ONNX semantics from opset 11 to the newest (per-version behaviour keyed on `opset`). They
// are the oracle that tuned kernels and compiled models are checked against; the
// ReferenceExecutor (loom/runtime/) runs whole graphs with them, and constant folding evaluates
// nodes with them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::kernels {

// True when EvaluateNode knows `op_type` (default ONNX domain).
bool HasReferenceKernel(std::string_view op_type);

// Sorted names of every operator with a reference kernel (for error messages and docs).
std::vector<std::string> ReferenceKernelOps();

// Runs `node` under `opset` on `inputs`: one Tensor per node input, where an omitted optional
// input (empty name) is a default-constructed Tensor. Returns one Tensor per node output (an
// omitted optional output gets a default-constructed Tensor). Outputs may share storage with
// inputs (Identity, Reshape, ...): neither inputs nor outputs are ever written in place.
// float16/bfloat16 inputs are computed in float32 and float outputs rounded back (see
// ARCHITECTURE.md). Errors name the node via node.Describe(): kInvalidArgument for bad shapes,
// attributes, element types or values; kUnimplemented for an unknown op or an unsupported
// feature (BatchNormalization training, a stash_type other than float32, ...).
absl::StatusOr<std::vector<graph::Tensor>> EvaluateNode(const graph::Node& node, int64_t opset,
                                                        const std::vector<graph::Tensor>& inputs);

}  // namespace loom::kernels
