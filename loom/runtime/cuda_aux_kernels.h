// The 2-D pooling kernels of a compiled CUDA model (everything else besides the templates is
// ops/cuda_lowering.h's). Built from the same loop-nest IR and printer as the templates (one
// thread per output element), so they also have a host emulation. Used by cuda_model.cc.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "loom/ops/template.h"

namespace loom::runtime {

// Max or average pooling over each of n * c planes of an NCHW tensor; window positions outside
// the h x w image are skipped (max) or count as zeros (average, which always divides by kh * kw).
// Parameters: x, out.
struct CudaPool {
  bool max = true;
  int64_t planes = 1, h = 1, w = 1, oh = 1, ow = 1;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_top = 0, pad_left = 0;
};
absl::StatusOr<ops::KernelSource> EmitCudaPool(const CudaPool& op, bool host_emulation);

}  // namespace loom::runtime
