// The fused epilogue (template.h's Epilogue: bias, residual, activation and an elementwise program
// with per-channel, per-element and per-(batch, channel) operands) in the scalar form CUDA kernels
// and their host emulation apply to one output element: the CUDA templates (cuda_common.cc,
// cuda_matmul.cc) call it in their output store. The epilogue is printed as one program
// (EpilogueProgram, shared with the CPU templates), so both targets compute the same function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "loom/codegen/loop_nest.h"
#include "loom/ops/template.h"

namespace loom::ops {

// Where the output element sits, as C expressions: its channel (a convolution's output channel, a
// matrix product's column), its offset in the output, and its batch (image or batched-product
// batch), with `channels` the row length of a kBatchChannel operand.
struct CudaEpilogueSite {
  std::string channel;
  std::string element;
  std::string batch = "0";
  int64_t channels = 1;
};

// kInvalidArgument unless `e` can be fused (template_common's CheckEpilogue).
absl::Status CheckCudaEpilogue(const Epilogue& e);

// Statements (one block) that replace the float variable `v` with the epilogue applied to it,
// reading the kernel parameters `bias`, `residual` and `ep<k>` (template_common's FusedParams) at
// `site`. Empty for an empty epilogue. `e` must pass CheckCudaEpilogue.
std::vector<codegen::Stmt> CudaEpilogueStmts(const Epilogue& e, const std::string& v,
                                             const CudaEpilogueSite& site);

// File-scope helpers those statements need (codegen::Kernel::globals); empty for an empty one.
std::vector<std::string> CudaEpilogueGlobals(const Epilogue& e);

}  // namespace loom::ops
