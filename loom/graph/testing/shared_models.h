// Test support: the reference models in $LOOM_SHARED_DIR/<folder>, unpacked once per build tree
// for every test that uses them. Two folders share one layout: "models" (torchvision CNNs, one
// input each) and "transformers" (ViT, BERT: several inputs, several input sets). Each model is
// NAME.tar.xz holding NAME.onnx, its inputs (NAME.input.npy for a one-input model, else
// NAME.<input>.npy), ONNX Runtime's output NAME.ort_output.npy, and optional further input sets
// NAME.<set>.<input>.npy with NAME.<set>.ort_output.npy; MANIFEST.json lists the inputs. Tests
// skip when the folder is absent (a checkout without ../shared).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace loom::graph {

inline constexpr char kSharedCnnFolder[] = "models";
inline constexpr char kSharedTransformerFolder[] = "transformers";

// NAME of every NAME.tar.xz in $LOOM_SHARED_DIR/<folder>, sorted; empty when there is none.
std::vector<std::string> SharedModelNames(const std::string& folder = kSharedCnnFolder);

// The folder holding NAME's unpacked files: <build>/shared_<folder>/NAME (<build>/shared_models
// for "models"), where <build> is $LOOM_BUILD_DIR (else three folders above the test binary,
// <build>/loom/<module>/). Unpacks the archive the first time, safely when parallel test
// processes race (each unpacks privately and renames into place; a loser uses the winner's copy).
// "" when the archive is missing or cannot be unpacked.
std::string UnpackSharedModel(const std::string& name,
                              const std::string& folder = kSharedCnnFolder);

// The general form: unpacks $LOOM_SHARED_DIR/<folder>/<name>.tar.xz into
// <build>/shared_<folder>/<name> the same way, once; `marker` is a file (relative to that folder)
// the archive must hold. "" when the archive is missing or cannot be unpacked.
std::string UnpackSharedArchive(const std::string& folder, const std::string& name,
                                const std::string& marker);

// One input set of a shared model and ONNX Runtime's output for it.
struct SharedModelCase {
  std::string label;                          // "" for the main set, else the set's name
  std::map<std::string, std::string> inputs;  // graph input name -> .npy path
  std::string ort_output;                     // .npy path
};

// A shared model, unpacked, with every input set found next to it.
struct SharedModel {
  std::string folder;
  std::string name;
  std::string onnx;  // path of NAME.onnx
  std::vector<SharedModelCase> cases;
};

// Every model of both folders ("models", then "transformers"), unpacked; a model whose archive
// cannot be unpacked or whose inputs cannot be found is left out (and `problems` says why, when
// given). Empty without $LOOM_SHARED_DIR.
std::vector<SharedModel> AllSharedModels(std::vector<std::string>* problems = nullptr);

}  // namespace loom::graph
