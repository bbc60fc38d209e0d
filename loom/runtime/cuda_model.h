// A model compiled for a CUDA GPU, every node on the device: convolutions, dense layers and
// matrix products run the CUDA templates' kernels (conv2d_nchw_cuda, depthwise_conv2d_nchw_cuda,
// dense_cuda, batch_matmul_cuda) with each task's best record on the device, else the default
// config, with the elementwise chain that follows them fused into the kernel's output store
// (Template::EmitFused with an Epilogue program); other elementwise chains of any dtype are one
// generated kernel each (ops::EmitCudaElementwise); pooling runs small generated kernels
// (cuda_aux_kernels.h); softmax, normalizations, reductions, transposes, gathers, slices,
// concats, pads, ... run generated CUDA kernels (ops::LowerNodeCuda); reshapes are views. A node
// with none of these runs its reference kernel on the host between downloads and uploads (a host
// step; none for the models of ../shared). Values stay on the device, natural row-major, in one
// arena planned at compile time where values whose lifetimes do not overlap share memory.
//
// The first Run of a model without host steps captures its launches as a CUDA graph
// (CudaBackend::BeginCapture) and every run replays it with one launch; a backend that cannot
// capture runs the launches one by one. Export writes a GPU artifact (kernel images, weights,
// plan; artifact.h) that Load runs on a backend of the same kind and architecture.
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
#include "loom/records/record_store.h"
#include "loom/runtime/cuda_backend.h"
#include "loom/runtime/cuda_plan.h"

namespace loom::runtime {

struct CudaModelOptions {
  // Best configs per task on the backend's target; null compiles every task with its default.
  tune::RecordStore* records = nullptr;
  // Fuse elementwise chains into the templates' output stores and into one kernel each; off,
  // every elementwise node is its own kernel (a baseline for launch counts).
  bool fuse = true;
  // Replay the launches as a CUDA graph where the backend can capture one.
  bool graph_replay = true;
};

struct CudaModelStats {
  int64_t kernel_steps = 0;       // template kernel launches (conv, depthwise, dense, matmul)
  int64_t tuned_kernels = 0;      // of them, with a config from the records
  int64_t elementwise_steps = 0;  // generated elementwise-chain kernel launches
  int64_t lowered_steps = 0;      // generated kernels of ops::LowerNodeCuda (softmax, ...)
  int64_t pool_steps = 0;         // pooling kernel launches
  int64_t aux_steps = 0;          // elementwise + lowered + pool launches
  int64_t launches = 0;           // every kernel launch of one run
  int64_t fused_ops = 0;          // elementwise nodes taken into another node's kernel
  int64_t views = 0;              // reshapes that share their input's buffer
  int64_t host_steps = 0;         // nodes run by the reference kernels on the host
  int64_t dropped_steps = 0;      // planned steps removed as nothing read their results
  int64_t device_bytes = 0;       // device memory: the value arena and the constants
  int64_t value_bytes = 0;        // every value's size added up (what the arena saves on)
  int64_t arena_bytes = 0;        // one allocation for all values, reused across disjoint lifetimes
  int64_t kernels_built = 0;  // distinct kernels (built by NVRTC or, emulated, the host compiler)
  int64_t cache_hits = 0;     // of them, found in the build cache instead of built
  double compile_seconds = 0;
};

// Where a run went: launched one by one, or replayed from the captured graph.
struct CudaRunStats {
  int64_t runs = 0;
  int64_t graph_replays = 0;  // runs that were one graph launch
  bool graph_captured = false;
  std::string graph_status;  // why a model is not replayed ("" when it is)
};

struct CudaExportOptions {};

class CudaModel {
 public:
  // `graph` must be shape-inferred with static shapes (as LoadModel gives). `backend` must
  // outlive the model. Errors: kInvalidArgument for graphs it cannot place (a dynamic shape, a
  // graph output that is not computed), kUnimplemented for an op with neither a kernel here nor a
  // reference kernel, and the backend's build/launch errors.
  static absl::StatusOr<std::unique_ptr<CudaModel>> Compile(const graph::Graph& graph,
                                                            CudaBackend* backend,
                                                            const CudaModelOptions& options = {});
  // The model of the GPU artifact in `dir` (written by Export) on `backend`, which must outlive
  // it. Refuses (one line each) another format version, a plan for another architecture than
  // the backend's (an sm mismatch) or another kind of kernel image, missing or corrupt files, and
  // any plan ValidateCudaPlan refuses; `verify_key` (a PEM public key; empty: none) checks the
  // artifact's Ed25519 signature first, as for CPU artifacts.
  static absl::StatusOr<std::unique_ptr<CudaModel>> Load(const std::string& dir,
                                                         CudaBackend* backend,
                                                         const std::string& verify_key = "");
  ~CudaModel();

  // Uploads `inputs` (by name; dtype and shape as declared), runs every step and downloads the
  // graph outputs, in graph.outputs order.
  absl::StatusOr<std::vector<graph::Tensor>> Run(
      const std::map<std::string, graph::Tensor>& inputs);

  // Writes the GPU artifact: plan.json, weights.bin and one kernel image per kernel
  // (kernels/k<i>.cubin, or .so for the host emulation).
  absl::Status Export(const std::string& dir, const CudaExportOptions& options = {}) const;

  const CudaModelStats& stats() const;
  const CudaRunStats& run_stats() const;
  const CudaPlan& plan() const;
  // The declared inputs and outputs (name, dtype, shape).
  std::vector<graph::ValueInfo> inputs() const;
  std::vector<graph::ValueInfo> outputs() const;

  struct Impl;

 private:
  explicit CudaModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A GPU artifact opened on a GPU of this machine: the device backend (through the dlopen'ed
// driver) and the model on it. The backend is declared first, so it outlives the model.
struct LoadedCudaArtifact {
  std::unique_ptr<CudaBackend> backend;
  std::unique_ptr<CudaModel> model;
};

// Opens GPU `ordinal` (its architecture from the driver) and CudaModel::Load's `dir` on it, with
// the same checks and one-line errors: kUnavailable without a driver or device, an sm mismatch,
// missing or corrupt files, a signature that does not verify. The backend takes the artifact's
// kind of kernel image; an artifact of host-emulation images loads only where the driver is the
// fake one of the tests (the real driver refuses those images). Called by the C API.
absl::StatusOr<LoadedCudaArtifact> LoadCudaArtifact(const std::string& dir, int ordinal = 0,
                                                    const std::string& verify_key = "");

}  // namespace loom::runtime
