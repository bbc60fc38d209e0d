#include "loom/graph/testing/shared_models.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace loom::graph {
namespace {

namespace fs = std::filesystem;

fs::path ModelsDir() {
  const char* shared = std::getenv("LOOM_SHARED_DIR");
  return shared == nullptr ? fs::path() : fs::path(shared) / "models";
}

fs::path BuildDir() {
  if (const char* build = std::getenv("LOOM_BUILD_DIR")) return build;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::temp_directory_path() : exe.parent_path().parent_path().parent_path();
}

}  // namespace

std::vector<std::string> SharedModelNames() {
  std::vector<std::string> names;
  const fs::path dir = ModelsDir();
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.size() > 7 && file.ends_with(".tar.xz")) {
      names.push_back(file.substr(0, file.size() - 7));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string UnpackSharedModel(const std::string& name) {
  const fs::path archive = ModelsDir() / (name + ".tar.xz");
  std::error_code ec;
  if (ModelsDir().empty() || !fs::exists(archive, ec)) return "";
  const fs::path root = BuildDir() / "shared_models";
  const fs::path dir = root / name;
  const fs::path onnx = dir / (name + ".onnx");
  if (fs::exists(onnx, ec)) return dir.string();
  const fs::path tmp = root / (name + ".tmp." + std::to_string(::getpid()));
  fs::create_directories(tmp, ec);
  const std::string cmd = "tar -xJf '" + archive.string() + "' -C '" + tmp.string() + "'";
  if (std::system(cmd.c_str()) == 0) fs::rename(tmp, dir, ec);
  fs::remove_all(tmp, ec);
  return fs::exists(onnx, ec) ? dir.string() : "";
}

}  // namespace loom::graph
