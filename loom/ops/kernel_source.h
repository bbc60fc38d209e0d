// The generated source of one kernel, as every generator in ops/ returns it (templates' Emit,
// the elementwise and lowered kernels) and the builders in tune/ compile it.
#pragma once

#include <string>

#include "loom/ops/cuda_launch.h"

namespace loom::ops {

// Generated source for one config, self-contained (no Loom headers). cpu: C++ defining
// `extern "C" void loom_kernel(void* const* buffers, const loom_parallel_t* par)`. cuda: CUDA C++
// for NVRTC defining `extern "C" __global__ void loom_kernel(const float* __restrict__ ...,
// float* __restrict__ out)`, one pointer per Buffers(config) entry in order.
struct KernelSource {
  std::string code;
  std::string compile_flags;  // cpu: ISA flags the code needs (Target::CompilerFlags())
  CudaLaunch cuda_launch;     // cuda: how to launch `code`'s entry point (unused for cpu)
};

}  // namespace loom::ops
