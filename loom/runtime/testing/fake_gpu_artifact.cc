#include "loom/runtime/testing/fake_gpu_artifact.h"

#include <dlfcn.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/runtime/cuda_backend.h"

namespace loom::runtime::testing {

std::string FakeLibcudaPath() { return LOOM_FAKE_LIBCUDA; }

absl::Status LoadFakeLibcuda() {
  static void* const handle = dlopen(LOOM_FAKE_LIBCUDA, RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot load the fake CUDA driver ", LOOM_FAKE_LIBCUDA, ": ", dlerror()));
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedCudaArtifact> CompileOnFakeGpu(const graph::Graph& graph,
                                                    const std::string& cache_dir) {
  LOOM_RETURN_IF_ERROR(LoadFakeLibcuda());
  CudaDeviceOptions o;
  o.build.num_threads = 2;
  o.build.cache_dir = cache_dir;
  o.driver_library = LOOM_FAKE_LIBCUDA;
  o.host_emulation_kernels = true;
  LoadedCudaArtifact compiled;
  LOOM_ASSIGN_OR_RETURN(compiled.backend, MakeCudaDeviceBackend(o));
  LOOM_ASSIGN_OR_RETURN(compiled.model, CudaModel::Compile(graph, compiled.backend.get()));
  return compiled;
}

absl::Status FlipByte(const std::string& file, int64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  const int c = f.get();
  if (!f.good() || c == std::char_traits<char>::eof()) {
    return absl::NotFoundError(absl::StrCat("cannot damage byte ", offset, " of ", file));
  }
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5a));
  return f.good() ? absl::OkStatus()
                  : absl::NotFoundError(absl::StrCat("cannot write byte ", offset, " of ", file));
}

}  // namespace loom::runtime::testing
