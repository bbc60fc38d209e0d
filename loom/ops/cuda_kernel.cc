#include "loom/ops/cuda_kernel.h"

#include <utility>

#include "loom/base/status_macros.h"
#include "loom/codegen/cuda_printer.h"

namespace loom::ops {

absl::StatusOr<KernelSource> PrintCudaKernel(codegen::Kernel kernel, bool host_emulation) {
  kernel.vector_lanes = 1;
  LOOM_ASSIGN_OR_RETURN(codegen::CudaKernelSource src,
                        codegen::PrintCuda(kernel, {.host_emulation = host_emulation}));
  KernelSource out;
  out.code = std::move(src.code);
  out.compile_flags = std::move(src.compile_flags);
  out.cuda_launch.entry = src.entry;
  out.cuda_launch.grid = src.grid;
  out.cuda_launch.block = src.block;
  out.cuda_launch.dynamic_shared_bytes = 0;  // shared memory is static (Kernel::shared)
  return out;
}

}  // namespace loom::ops
