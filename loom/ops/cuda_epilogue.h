// The scalar form of an Epilogue (bias, residual, activation) for CUDA kernels and their host
// emulation: the CUDA templates fuse it into their output store (EmitFused) and the runtime's
// elementwise kernel (runtime/cuda_aux_kernels.cc) applies it after a template kernel that cannot.
#pragma once

#include <string>
#include <vector>

#include "loom/codegen/loop_nest.h"
#include "loom/ops/template.h"

namespace loom::ops {

// Statements that turn the float variable `v` into act(v + bias + residual): `bias` and
// `residual` are the expressions of the element's bias and residual values (unused when `e` has
// none). Clip bounds that are infinite are left out.
std::vector<codegen::Stmt> CudaEpilogueStmts(const Epilogue& e, const std::string& bias,
                                             const std::string& residual);

}  // namespace loom::ops
