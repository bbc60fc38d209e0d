// The CUDA kernels a compiled CUDA model needs besides the tuned operator templates: elementwise
// ops (an Add or an activation that no template kernel took), 2-D pooling, and the slices of a
// concat.
// Built from the same loop-nest IR and printer as the templates (one thread per output element),
// so they also have a host emulation. Used by cuda_model.cc.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "loom/ops/template.h"

namespace loom::runtime {

// out[i] = act(x[i] + bias[(i / inner) % channels] + residual[i]) for i in [0, total).
// Parameters: x, [bias], [residual], out (in that order; bias and residual as `epilogue` asks).
struct CudaEltwise {
  int64_t total = 0;
  int64_t channels = 1;  // bias: the channel of element i is (i / inner) % channels
  int64_t inner = 1;
  ops::Epilogue epilogue;  // bias, residual, activation
};
absl::StatusOr<ops::KernelSource> EmitCudaEltwise(const CudaEltwise& op, bool host_emulation);

// Max or average pooling over each of n * c planes of an NCHW tensor; window positions outside
// the h x w image are skipped (max) or count as zeros (average, which always divides by kh * kw).
// Parameters: x, out.
struct CudaPool {
  bool max = true;
  int64_t planes = 1, h = 1, w = 1, oh = 1, ow = 1;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_top = 0, pad_left = 0;
};
absl::StatusOr<ops::KernelSource> EmitCudaPool(const CudaPool& op, bool host_emulation);

// One input of a concat: in, seen as [outer, in_len], is copied to out, seen as [outer, out_len],
// at columns [offset, offset + in_len). Parameters: in, out.
struct CudaSlice {
  int64_t outer = 1, in_len = 1, out_len = 1, offset = 0;
};
absl::StatusOr<ops::KernelSource> EmitCudaSlice(const CudaSlice& op, bool host_emulation);

}  // namespace loom::runtime
