// Reading an activation node as a kernel epilogue: shared by the CPU compiler (compiled_model.cc)
// and the CUDA one (cuda_model.cc), which both fold a conv's or dense layer's activation into it.
#pragma once

#include "loom/graph/graph.h"
#include "loom/ops/template.h"

namespace loom::runtime {

// Sets `e`'s activation to what `node` computes from its first input and returns true for Relu,
// Sigmoid, HardSwish and Clip (with bounds from attributes before opset 11, or constant inputs);
// false for any other node, or a Clip whose bounds are not float constants.
bool ParseActivation(const graph::Graph& g, const graph::Node& node, ops::Epilogue* e);

}  // namespace loom::runtime
