#include "loom/runtime/activation.h"

#include <limits>

namespace loom::runtime {

bool ParseActivation(const graph::Graph& g, const graph::Node& node, ops::Epilogue* e) {
  using A = ops::Epilogue::Activation;
  if (node.op_type == "Relu") {
    e->activation = A::kRelu;
  } else if (node.op_type == "Sigmoid") {
    e->activation = A::kSigmoid;
  } else if (node.op_type == "HardSwish") {
    e->activation = A::kHardSwish;
  } else if (node.op_type == "Clip") {
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (g.opset < 11) {
      lo = node.GetFloat("min", lo);
      hi = node.GetFloat("max", hi);
    } else {
      for (size_t k = 1; k < node.inputs.size() && k <= 2; ++k) {
        if (node.inputs[k].empty()) continue;
        const graph::Tensor* t = g.FindInitializer(node.inputs[k]);
        if (t == nullptr || t->dtype() != graph::DType::kFloat32 || t->num_elements() != 1) {
          return false;
        }
        (k == 1 ? lo : hi) = t->data<float>()[0];
      }
    }
    e->activation = A::kClip;
    e->clip_min = lo;
    e->clip_max = hi;
  } else {
    return false;
  }
  return node.inputs.size() >= 1 && node.outputs.size() == 1;
}

}  // namespace loom::runtime
