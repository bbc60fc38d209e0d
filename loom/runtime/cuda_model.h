// A model compiled for a CUDA GPU: convolutions, depthwise convolutions and dense layers run the
// CUDA templates' kernels with each task's best record on the device (its default config
// otherwise), with what follows them in the graph (bias, a residual Add, an activation) fused into
// the kernel's output store (Template::EmitFused); pooling, elementwise ops and concats run small
// generated kernels (cuda_aux_kernels.h); reshapes are views; any other op runs its reference
// kernel on the host between downloads and uploads. Values stay on the device in the natural NCHW
// layout, in one arena allocated at compile time where values whose lifetimes do not overlap
// share memory.
//
// The counterpart of CompiledModel (compiled_model.h) for `--target cuda`; kernels run through a
// CudaBackend: the GPU, or in tests the host emulation. Use a model from one thread at a time
// (the CUDA context is current on the thread that made the backend).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/runtime/cuda_backend.h"
#include "loom/tune/record_store.h"

namespace loom::runtime {

struct CudaModelOptions {
  // Best configs per task on the backend's target; null compiles every task with its default.
  tune::RecordStore* records = nullptr;
};

struct CudaModelStats {
  int64_t kernel_steps = 0;   // nodes run by a template's kernel (conv, depthwise, dense)
  int64_t tuned_kernels = 0;  // of them, with a config from the records
  int64_t aux_steps = 0;      // elementwise, pooling and concat kernel launches
  int64_t fused_ops = 0;      // graph nodes applied by a kernel step's fused epilogue
  int64_t views = 0;          // reshapes that share their input's buffer
  int64_t host_steps = 0;     // nodes run by the reference kernels on the host
  int64_t device_bytes = 0;   // device memory: the value arena and the constants
  int64_t value_bytes = 0;    // every value's size added up (what the arena saves on)
  int64_t arena_bytes = 0;    // one allocation for all values, reused across disjoint lifetimes
  int64_t kernels_built = 0;  // distinct kernels (built by NVRTC or, emulated, the host compiler)
  int64_t cache_hits = 0;     // of them, found in the build cache instead of built
  double compile_seconds = 0;
};

class CudaModel {
 public:
  // `graph` must be shape-inferred with static shapes and float32 values (as LoadModel gives).
  // `backend` must outlive the model. Errors: kInvalidArgument for graphs it cannot place (a
  // dynamic shape, a non-float value crossing to the device), kUnimplemented for an op with
  // neither a kernel here nor a reference kernel, and the backend's build/launch errors.
  static absl::StatusOr<std::unique_ptr<CudaModel>> Compile(const graph::Graph& graph,
                                                            CudaBackend* backend,
                                                            const CudaModelOptions& options = {});
  ~CudaModel();

  // Uploads `inputs` (by name; dtype and shape as declared), runs every step and downloads the
  // graph outputs, in graph.outputs order.
  absl::StatusOr<std::vector<graph::Tensor>> Run(
      const std::map<std::string, graph::Tensor>& inputs);

  const CudaModelStats& stats() const;

  struct Impl;

 private:
  explicit CudaModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::runtime
