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
#include "loom/toolchain/builder.h"

namespace loom::runtime {

class CudaBackend {
 public:
  using Buffer = uint64_t;  // a device address (emulation: a host address)
  using KernelId = int64_t;
  using GraphId = int64_t;

  virtual ~CudaBackend() = default;

  // The cuda target of the device: architecture, limits, and the name records are keyed by.
  virtual const ops::Target& target() const = 0;
  // True when kernels must be emitted as host emulation (TemplateOptions::cuda_host_emulation,
  // codegen::CudaPrintOptions::host_emulation).
  virtual bool host_emulation() const = 0;
  // What a module image is (Image, LoadImage): "cubin" (NVRTC for target().cuda_arch), or
  // "host-emulation" (a shared object of the kernel's host emulation).
  virtual std::string image_kind() const = 0;

  // Device memory, freed with the backend.
  virtual absl::StatusOr<Buffer> Alloc(size_t bytes) = 0;
  virtual absl::Status Upload(Buffer dst, const void* src, size_t bytes) = 0;
  virtual absl::Status Download(void* dst, Buffer src, size_t bytes) = 0;

  // Builds `source` (cached by content) and loads it; its launch geometry is kept with it.
  virtual absl::StatusOr<KernelId> Load(const ops::KernelSource& source) = 0;
  // The module image of a loaded kernel (what an artifact stores).
  virtual absl::StatusOr<std::string> Image(KernelId kernel) const = 0;
  // Loads a module image of image_kind() (from an artifact) with its launch geometry.
  virtual absl::StatusOr<KernelId> LoadImage(const std::string& image,
                                             const ops::CudaLaunch& launch) = 0;
  // Queues one launch with one buffer per kernel parameter, in order.
  virtual absl::Status Launch(KernelId kernel, const std::vector<Buffer>& args) = 0;
  // Waits for every queued launch; reports their errors.
  virtual absl::Status Synchronize() = 0;

  // CUDA graphs: launches between BeginCapture and EndCapture are recorded, not run, into a graph
  // that LaunchGraph replays (all of them, in order, as one submission). No copy may happen during
  // a capture. kUnimplemented when the device cannot capture (the caller launches one by one).
  virtual absl::Status BeginCapture() = 0;
  virtual absl::StatusOr<GraphId> EndCapture() = 0;
  virtual absl::Status LaunchGraph(GraphId graph) = 0;

  // Kernels loaded so far, and how many of them came from the build cache.
  virtual int64_t kernels_loaded() const = 0;
  virtual int64_t cache_hits() const = 0;
};

struct CudaDeviceOptions {
  int ordinal = 0;
  tune::BuildOptions build;  // NVRTC (cache dir, timeout, threads)
  // The driver library to dlopen; empty: libcuda.so.1 from the library path.
  std::string driver_library;
  // Tests only: kernels are built as their host emulation (a shared object, by the system
  // compiler) and handed to the driver as module images, which only the fake driver
  // (toolchain/testing/fake_libcuda.cc) runs. It drives the device backend's whole path (modules,
  // streams, graph capture and replay, artifacts) without a GPU.
  bool host_emulation_kernels = false;
};

// A GPU through the CUDA driver (dlopen'ed), kernels built by NVRTC. kUnavailable without a
// driver or device; kUnimplemented when Loom was built without the CUDA toolkit.
absl::StatusOr<std::unique_ptr<CudaBackend>> MakeCudaDeviceBackend(
    const CudaDeviceOptions& options);
absl::StatusOr<std::unique_ptr<CudaBackend>> MakeCudaDeviceBackend(
    int ordinal, const tune::BuildOptions& build = {});

// The host emulation of a GPU with `target`'s limits: buffers are host memory, kernels are the
// host emulation of their CUDA source compiled by the system compiler (`build`), run one launch
// at a time on the calling thread. For tests.
absl::StatusOr<std::unique_ptr<CudaBackend>> MakeEmulatedCudaBackend(
    const ops::Target& target, const tune::BuildOptions& build = {});

}  // namespace loom::runtime
