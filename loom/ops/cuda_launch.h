// Launch geometry of a generated CUDA kernel: the entry point, grid and block dimensions and the
// dynamic shared memory it needs. Filled by the CUDA templates' Emit (ops/cuda_*.cc) and read by
// the CUDA measurer (toolchain/cuda_measurer.cc) and the runtime when they launch the cubin.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace loom::ops {

struct CudaLaunch {
  std::string entry = "loom_kernel";
  std::array<uint32_t, 3> grid{1, 1, 1};
  std::array<uint32_t, 3> block{1, 1, 1};
  uint32_t dynamic_shared_bytes = 0;
};

}  // namespace loom::ops
