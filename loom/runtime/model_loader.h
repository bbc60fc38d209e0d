// Turns what a user names on the command line into an inference-ready graph: "zoo:NAME" builds a
// built-in model, anything else is an ONNX file. Called by the CLI and the library API before
// inspection, task extraction, execution and (later) tuning.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/passes.h"

namespace loom::runtime {

struct LoadOptions {
  // Pins dynamic input dimensions by input name (ONNX files only).
  std::map<std::string, graph::Shape> input_shapes;
  // Batch size and weight seed for zoo models.
  int64_t zoo_batch = 1;
  uint64_t zoo_seed = 0;
  // Run the inference pipeline (identity removal, constant folding, BN folding, shape inference).
  // Without it only shape inference runs.
  bool optimize = true;
};

struct LoadedModel {
  graph::Graph graph;
  graph::PassStats pass_stats;
  std::string source;  // the spec it was loaded from
};

inline constexpr std::string_view kZooPrefix = "zoo:";

// Errors: kNotFound for a missing file or unknown zoo name, kInvalidArgument for malformed models
// or shapes, kUnimplemented for unsupported operators; each message names the culprit.
absl::StatusOr<LoadedModel> LoadModel(std::string_view spec, const LoadOptions& options = {});

// The reference kernels as a graph::NodeEvaluator, for constant folding.
graph::NodeEvaluator ReferenceEvaluator();

}  // namespace loom::runtime
