#include "loom/graph/testing/shared_models.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "loom/graph/onnx_importer.h"

namespace loom::graph {
namespace {

namespace fs = std::filesystem;

fs::path FolderDir(const std::string& folder) {
  const char* shared = std::getenv("LOOM_SHARED_DIR");
  return shared == nullptr ? fs::path() : fs::path(shared) / folder;
}

fs::path BuildDir() {
  if (const char* build = std::getenv("LOOM_BUILD_DIR")) return build;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::temp_directory_path() : exe.parent_path().parent_path().parent_path();
}

// Graph input names of a model: from the folder's MANIFEST.json when it lists them
// ({"NAME": {"inputs": [{"name": ...}]}}), else from the model file itself.
std::vector<std::string> InputNames(const std::string& folder, const std::string& name,
                                    const std::string& onnx) {
  std::vector<std::string> names;
  std::ifstream in(FolderDir(folder) / "MANIFEST.json");
  const nlohmann::json manifest = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_object() && manifest.contains(name) && manifest[name].contains("inputs") &&
      manifest[name]["inputs"].is_array()) {
    for (const auto& input : manifest[name]["inputs"]) {
      if (input.is_object() && input.contains("name") && input["name"].is_string()) {
        names.push_back(input["name"].get<std::string>());
      }
    }
    return names;
  }
  auto graph = ImportOnnxFile(onnx);
  if (!graph.ok()) return names;
  for (const ValueInfo& v : graph->inputs) names.push_back(v.name);
  return names;
}

}  // namespace

std::vector<std::string> SharedModelNames(const std::string& folder) {
  std::vector<std::string> names;
  const fs::path dir = FolderDir(folder);
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

std::string UnpackSharedArchive(const std::string& folder, const std::string& name,
                                const std::string& marker) {
  const fs::path archive = FolderDir(folder) / (name + ".tar.xz");
  std::error_code ec;
  if (FolderDir(folder).empty() || !fs::exists(archive, ec)) return "";
  const fs::path root = BuildDir() / ("shared_" + folder);
  const fs::path dir = root / name;
  if (fs::exists(dir / marker, ec)) return dir.string();
  const fs::path tmp = root / (name + ".tmp." + std::to_string(::getpid()));
  fs::create_directories(tmp, ec);
  const std::string cmd = "tar -xJf '" + archive.string() + "' -C '" + tmp.string() + "'";
  if (std::system(cmd.c_str()) == 0) fs::rename(tmp, dir, ec);
  fs::remove_all(tmp, ec);
  return fs::exists(dir / marker, ec) ? dir.string() : "";
}

std::string UnpackSharedModel(const std::string& name, const std::string& folder) {
  return UnpackSharedArchive(folder, name, name + ".onnx");
}

std::vector<SharedModel> AllSharedModels(std::vector<std::string>* problems) {
  std::vector<SharedModel> models;
  auto problem = [&](const std::string& what) {
    if (problems != nullptr) problems->push_back(what);
  };
  for (const std::string folder : {kSharedCnnFolder, kSharedTransformerFolder}) {
    for (const std::string& name : SharedModelNames(folder)) {
      const std::string dir = UnpackSharedModel(name, folder);
      if (dir.empty()) {
        problem(folder + "/" + name + ": cannot unpack");
        continue;
      }
      SharedModel model{.folder = folder, .name = name, .onnx = dir + "/" + name + ".onnx"};
      const std::vector<std::string> inputs = InputNames(folder, name, model.onnx);
      // Input sets: the main one ("") and every NAME.<set>.ort_output.npy.
      std::vector<std::string> labels = {""};
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const std::string file = entry.path().filename().string();
        const std::string prefix = name + ".", suffix = ".ort_output.npy";
        if (file.size() > prefix.size() + suffix.size() && file.starts_with(prefix) &&
            file.ends_with(suffix)) {
          labels.push_back(file.substr(prefix.size(), file.size() - prefix.size() - suffix.size()));
        }
      }
      std::sort(labels.begin(), labels.end());
      for (const std::string& label : labels) {
        const std::string stem = dir + "/" + name + "." + (label.empty() ? "" : label + ".");
        SharedModelCase c{.label = label, .ort_output = stem + "ort_output.npy"};
        for (const std::string& input : inputs) {
          const std::string own = stem + input + ".npy";
          // A one-input model's input is NAME.input.npy.
          c.inputs[input] = fs::exists(own, ec) || inputs.size() > 1 ? own : stem + "input.npy";
          if (!fs::exists(c.inputs[input], ec)) {
            problem(folder + "/" + name + ": no input file " + c.inputs[input]);
          }
        }
        if (inputs.empty()) problem(folder + "/" + name + ": no graph inputs found");
        if (!inputs.empty() && fs::exists(c.ort_output, ec)) model.cases.push_back(std::move(c));
      }
      if (!model.cases.empty()) models.push_back(std::move(model));
    }
  }
  return models;
}

}  // namespace loom::graph
