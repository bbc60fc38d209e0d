// Generated CUDA kernels for everything a CUDA model runs besides the tuned templates
// (convolutions, matrix products): elementwise programs over broadcast operands, and the CUDA
// form of ops::LowerNode (lowering.h): transposes and the other strided views, concat, split, pad,
// gather, gather-elements, softmax and log-softmax, the normalizations, reductions and
// arg-reductions. Called by the CUDA model's compiler (runtime/cuda_model.cc); each kernel is
// printed through the loop-nest IR and the CUDA printer, so it also has a host emulation
// (`host_emulation`) that CI runs against the reference kernels.
//
// Contract (as LowerNode's): arguments are the LoweredKernel's `args` in order, each a dense
// row-major tensor of its graph dtype; outputs never alias inputs; shapes are baked in. Launch
// geometry is in KernelSource::cuda_launch. Float math is float32 through codegen/vector_math.h
// (within 1e-6 relative of libm); results match the reference kernels to float rounding (data
// movement: exactly). A Gather / GatherElements index outside [-D, D) reads nothing and gives
// zero, as the CPU kernels do.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/kernel_source.h"
#include "loom/ops/lowering.h"
#include "loom/ops/target.h"

namespace loom::ops {

// The CUDA kernel of `spec` (elementwise.h): one thread per point of spec.dims; arguments are the
// program's inputs then its outputs (each dense over the dims). kInvalidArgument for a malformed
// spec.
absl::StatusOr<KernelSource> EmitCudaElementwise(const ElementwiseSpec& spec, bool host_emulation);

// The CUDA kernel for `node` (a cuda `target`), or with `host_emulation` its host emulation.
// kUnimplemented when the operator, a dtype or an attribute value has no CUDA kernel here (the
// caller runs the reference kernel); kInvalidArgument for a malformed node (shape inference's
// errors).
absl::StatusOr<LoweredKernel> LowerNodeCuda(const graph::Graph& graph, const graph::Node& node,
                                            const Target& target, bool host_emulation);

// Operator types LowerNodeCuda handles at least for float32.
std::vector<std::string> CudaLoweredOps();

}  // namespace loom::ops
