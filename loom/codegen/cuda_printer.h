// Prints a codegen::Kernel (loop_nest.h) as CUDA C++ for NVRTC: `extern "C" __global__ void
// loom_kernel(const float* __restrict__ in0, ..., float* __restrict__ out)`, with loops bound to
// blockIdx/threadIdx, virtual threads, unroll hints, `__shared__` staging buffers and barriers.
// Also derives the launch geometry from the bound loops. Called by the ops/ CUDA templates' Emit.
//
// With `host_emulation` the same kernel body is printed as host C++ for g++: CUDA's keywords become
// macros, every block of the grid runs in turn, and its threads run as fibers (ucontext) that
// switch at each __syncthreads(), so shared memory and barriers behave as on a GPU (a kernel
// without barriers runs its threads as plain calls, one after another). The result
// exports the CPU kernel ABI (kernel_abi.h), so CI checks generated CUDA kernels against the
// reference kernels without a GPU.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "loom/codegen/loop_nest.h"

namespace loom::codegen {

struct CudaPrintOptions {
  // Print the host C++ emulation instead of CUDA (see above).
  bool host_emulation = false;
};

struct CudaKernelSource {
  std::string code;
  std::string entry = "loom_kernel";
  std::array<uint32_t, 3> grid{1, 1, 1};   // extents of the kBlockX/Y/Z loops (1 when unbound)
  std::array<uint32_t, 3> block{1, 1, 1};  // extents of the kThreadX/Y/Z loops (1 when unbound)
  int64_t shared_bytes = 0;                // static shared memory of Kernel::shared
  // Flags the compiler of `code` needs (ops::KernelSource::compile_flags): NVRTC flags for CUDA,
  // g++ flags for the host emulation.
  std::string compile_flags;
  int64_t ThreadsPerBlock() const {
    return int64_t{block[0]} * int64_t{block[1]} * int64_t{block[2]};
  }
};

// The CUDA (or host emulation) source of `kernel`. Parameters may have any C arithmetic element
// type (KernelParam::type); `globals` may hold plain C++ helper functions (they become device
// functions). kInvalidArgument when the nest is malformed:
// an unbound `${var}`, a bound, unrolled or virtual-thread loop without a constant extent, a block
// dimension bound twice, a thread dimension bound again with another extent, a parallel loop,
// vector statements with vector_lanes != 1.
absl::StatusOr<CudaKernelSource> PrintCuda(const Kernel& kernel,
                                           const CudaPrintOptions& options = {});

}  // namespace loom::codegen
