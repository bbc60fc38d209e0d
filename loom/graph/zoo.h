// The built-in model zoo: well-known CNNs built in C++ with deterministic seeded weights, so Loom
// runs and is tested with nothing downloaded. Called by the model loader ("zoo:NAME"), the
// `loom zoo` command, and tests of passes, task extraction and the runtime.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

// Graphs are built the way torchvision's ONNX export (opset 17, eval mode, no constant folding)
// expresses them, so the same passes and kernels serve zoo models and user models:
//   Conv (bias-free where torchvision's is) -> BatchNormalization -> Relu, or Clip(min, max) with
//   min/max as scalar initializer inputs for ReLU6; MaxPool; Add for residuals;
//   GlobalAveragePool -> Flatten(axis=1) -> Gemm(transB=1, weight [classes, features], bias).
// Graph input "input" float32 [batch,3,H,W], output "output" float32 [batch,classes]. Node names
// follow the PyTorch module paths ("layer1.0.conv1", "features.2.conv.1.0"); a node's output
// value has the node's name, and parameters are "<module>.weight", "<module>.bias",
// "<module>.running_mean", "<module>.running_var".
//
// Models:
//   resnet18      torchvision resnet18 (BasicBlock [2,2,2,2]), 224x224, 1000 classes.
//   resnet50      torchvision resnet50 v1.5 (Bottleneck [3,4,6,3], stride on the 3x3 conv).
//   mobilenet_v2  torchvision mobilenet_v2, width 1.0, depthwise convs with group = channels,
//                 ReLU6 as Clip(0, 6); the classifier keeps an inference Dropout node (ratio
//                 defaults to 0.5; it is a no-op at inference) so the pass removing it is
//                 exercised.
//   vgg11         a VGG-style net: torchvision vgg11_bn's features (eight conv3x3(+bias)+BN+ReLU,
//                 five MaxPool 2x2), but a light classifier: GlobalAveragePool -> Flatten ->
//                 Gemm 512->1000 instead of the 7x7x512->4096->4096->1000 MLP (which would hold
//                 ~120M parameters). Convs keep a bias as torchvision's VGG does.
//   tiny_cnn      for fast tests: [batch,3,32,32] -> conv(8)+BN+Relu -> MaxPool 2x2 ->
//                 conv(8)+BN -> Add (residual) -> Relu -> GlobalAveragePool -> Flatten -> Gemm 10.
//
// Weights: every initializer gets its own stream, seeded from (options.seed, initializer name),
// so one tensor does not depend on the build order of the others. Conv weights are normal-like
// (an Irwin-Hall sum of four uniforms, bounded at +-3.46 std) with He scale std = sqrt(2/fan_in),
// so activations stay O(1) through the depth; Gemm weights std 0.01; biases uniform in +-0.01.
// BatchNormalization: gamma in [0.75,1.25] (times 0.2 on the last BN of a residual branch, like
// torchvision's zero_init_residual but non-zero, so residual sums do not grow with depth), beta
// and running_mean in [-0.1,0.1], running_var in [0.5,1.5], so folding BN is not an identity.
// The generator is mt19937_64 (base::Rng) raw output with Loom's own conversion to floats, so
// the same name and seed give bit-identical tensors on every platform and standard library.
struct ZooOptions {
  int64_t batch = 1;  // must be >= 1
  uint64_t seed = 0;
};

struct ZooModelInfo {
  std::string name;
  std::string description;
  Shape input_shape;  // with batch 1
};

// The models BuildZooModel knows, in a fixed order.
std::vector<ZooModelInfo> ListZooModels();

// Builds model `name`. The graph passes Validate(), is topologically ordered, and has
// value_types filled for the graph input only (run shape inference for the rest).
// Errors: kNotFound listing the available names when `name` is unknown; kInvalidArgument for a
// batch below 1.
absl::StatusOr<Graph> BuildZooModel(std::string_view name, const ZooOptions& options = {});

}  // namespace loom::graph
