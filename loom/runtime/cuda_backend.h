// Where a CUDA model's kernels run (cuda_model.h): a GPU through the CUDA driver, or the host
// emulation of the same kernels (codegen/cuda_printer.h), which runs every generated CUDA kernel
// on the CPU so that the model's compiler and executor are tested on machines without a GPU. The
// emulation is a test double for the layer above; models for a GPU always use the device backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/tune/builder.h"

namespace loom::runtime {

class CudaBackend {
 public:
  using Buffer = uint64_t;  // a device address (emulation: a host address)
  using KernelId = int64_t;

  virtual ~CudaBackend() = default;

  // The cuda target of the device: architecture, limits, and the name records are keyed by.
  virtual const ops::Target& target() const = 0;
  // True when kernels must be emitted as host emulation (TemplateOptions::cuda_host_emulation,
  // codegen::CudaPrintOptions::host_emulation).
  virtual bool host_emulation() const = 0;

  // Device memory, freed with the backend.
  virtual absl::StatusOr<Buffer> Alloc(size_t bytes) = 0;
  virtual absl::Status Upload(Buffer dst, const void* src, size_t bytes) = 0;
  virtual absl::Status Download(void* dst, Buffer src, size_t bytes) = 0;

  // Builds `source` (cached by content) and loads it; its launch geometry is kept with it.
  virtual absl::StatusOr<KernelId> Load(const ops::KernelSource& source) = 0;
  // Queues one launch with one buffer per kernel parameter, in order.
  virtual absl::Status Launch(KernelId kernel, const std::vector<Buffer>& args) = 0;
  // Waits for every queued launch; reports their errors.
  virtual absl::Status Synchronize() = 0;

  // Kernels loaded so far, and how many of them came from the build cache.
  virtual int64_t kernels_loaded() const = 0;
  virtual int64_t cache_hits() const = 0;
};

// The GPU `ordinal` through the CUDA driver (dlopen'ed libcuda.so.1), kernels built by NVRTC with
// `build` (cache dir, timeout). kUnavailable without a driver or device; kUnimplemented when Loom
// was built without the CUDA toolkit.
absl::StatusOr<std::unique_ptr<CudaBackend>> MakeCudaDeviceBackend(
    int ordinal, const tune::BuildOptions& build = {});

// The host emulation of a GPU with `target`'s limits: buffers are host memory, kernels are the
// host emulation of their CUDA source compiled by the system compiler (`build`), run one launch
// at a time on the calling thread. For tests.
absl::StatusOr<std::unique_ptr<CudaBackend>> MakeEmulatedCudaBackend(
    const ops::Target& target, const tune::BuildOptions& build = {});

}  // namespace loom::runtime
