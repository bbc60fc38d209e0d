// Test support: the reference models in $LOOM_SHARED_DIR/models (torchvision ONNX exports, one
// NAME.tar.xz each holding NAME.onnx, NAME.input.npy, NAME.ort_output.npy and
// NAME.torch_output.npy), unpacked once per build tree for every test that uses them. Tests skip
// when the folder is absent (a checkout without ../shared).
#pragma once

#include <string>
#include <vector>

namespace loom::graph {

// NAME of every NAME.tar.xz in $LOOM_SHARED_DIR/models, sorted; empty when there is none.
std::vector<std::string> SharedModelNames();

// The folder holding NAME's unpacked files: <build>/shared_models/NAME, where <build> is
// $LOOM_BUILD_DIR (else three folders above the test binary, <build>/loom/<module>/). Unpacks the
// archive the first time, safely when parallel test processes race (each unpacks privately and
// renames into place; a loser uses the winner's copy). "" when the archive is missing or cannot
// be unpacked.
std::string UnpackSharedModel(const std::string& name);

}  // namespace loom::graph
