// Test support: GPU artifacts without a GPU. CompileOnFakeGpu compiles a graph on the fake CUDA
// driver (toolchain/testing/fake_libcuda.cc, sm_90) with host-emulation kernel images; its
// Export writes the GPU artifact that `loom compile --target cuda -o DIR` writes on a GPU.
// LoadCudaArtifact, the one loader behind the C API, loom::Model, Python and `loom run DIR`,
// opens "libcuda.so.1": in this process that is the fake once LoadFakeLibcuda has run; a child
// process finds it with LD_LIBRARY_PATH=<FakeLibcudaPath()'s folder>. Used by the API's and the
// CLI's tests, and by the Python package's tests through loom_write_fake_gpu_artifact.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/runtime/cuda_model.h"

namespace loom::runtime::testing {

// The fake driver built with the tests (loom/toolchain's loom_fake_libcuda), named libcuda.so.1.
std::string FakeLibcudaPath();

// Loads the fake driver for the rest of the process (it is never unloaded), so that a later
// dlopen("libcuda.so.1") finds it by its soname. kUnavailable when it cannot be loaded.
absl::Status LoadFakeLibcuda();

// Loads the fake driver and compiles `graph` (shape-inferred, as LoadModel gives) for its device,
// kernels built as host emulation into `cache_dir`. The backend comes first in the result, so it
// outlives the model.
absl::StatusOr<LoadedCudaArtifact> CompileOnFakeGpu(const graph::Graph& graph,
                                                    const std::string& cache_dir);

// Damages `file` (of an artifact) by flipping the bits of its byte at `offset`. kNotFound when
// the file cannot be opened for writing or is shorter.
absl::Status FlipByte(const std::string& file, int64_t offset);

}  // namespace loom::runtime::testing
