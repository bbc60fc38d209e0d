// One way every generated CUDA kernel becomes a KernelSource: the CUDA templates (cuda_common.cc,
// cuda_matmul.cc), the CUDA elementwise kernels (cuda_elementwise.h) and the CUDA lowerings
// (cuda_lowering.h) print their loop nests through PrintCudaKernel, so launch geometry and
// compiler flags are filled in one place.
#pragma once

#include "absl/status/statusor.h"
#include "loom/codegen/loop_nest.h"
#include "loom/ops/kernel_source.h"

namespace loom::ops {

// `kernel` printed as CUDA for NVRTC, or with `host_emulation` as its host C++ emulation
// (codegen/cuda_printer.h), with the launch geometry and compiler flags; vector_lanes is set to 1.
absl::StatusOr<KernelSource> PrintCudaKernel(codegen::Kernel kernel, bool host_emulation);

}  // namespace loom::ops
