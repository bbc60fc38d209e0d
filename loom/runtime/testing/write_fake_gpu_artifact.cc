// loom_write_fake_gpu_artifact MODEL DIR [CACHE_DIR]: writes the GPU artifact of MODEL ("zoo:NAME"
// or an ONNX file) compiled on the fake CUDA driver (fake_gpu_artifact.h) to DIR, and prints one
// JSON object {"libcuda": PATH}: the fake driver a process must load (Python: ctypes.CDLL(PATH,
// RTLD_GLOBAL)) or find on LD_LIBRARY_PATH to load the artifact. For the Python package's tests,
// which have no C++ access to the runtime. Errors: one line on stderr, exit 1.
#include <cstdio>
#include <string>

#include "loom/frontend/model_loader.h"
#include "loom/runtime/testing/fake_gpu_artifact.h"
#include "nlohmann/json.hpp"

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL DIR [CACHE_DIR]\n", argv[0]);
    return 2;
  }
  const std::string cache_dir = argc == 4 ? argv[3] : "";
  absl::Status status = [&]() -> absl::Status {
    auto loaded = loom::frontend::LoadModel(argv[1]);
    if (!loaded.ok()) return loaded.status();
    auto compiled = loom::runtime::testing::CompileOnFakeGpu(loaded->graph, cache_dir);
    if (!compiled.ok()) return compiled.status();
    return compiled->model->Export(argv[2]);
  }();
  if (!status.ok()) {
    std::fprintf(stderr, "%s: error: %s\n", argv[0], std::string(status.message()).c_str());
    return 1;
  }
  std::printf(
      "%s\n",
      nlohmann::json({{"libcuda", loom::runtime::testing::FakeLibcudaPath()}}).dump().c_str());
  return 0;
}
