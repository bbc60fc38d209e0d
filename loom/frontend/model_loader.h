// The frontend: turns what a user names (on the command line, in the library API, in a job
// uploaded to the daemon) into an inference-ready graph with static shapes: "zoo:NAME" builds a
// built-in model, anything else is an ONNX file; then the inference passes and constant folding
// with the reference kernels. Called by the CLI, the library API and the service's job driver
// before inspection, task extraction, execution and tuning.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/passes.h"

namespace loom::frontend {

struct LoadOptions {
  // Pins dynamic input dimensions by input name (ONNX files only).
  std::map<std::string, graph::Shape> input_shapes;
  // Batch size and weight seed for zoo models.
  int64_t zoo_batch = 1;
  uint64_t zoo_seed = 0;
  // Run the inference pipeline (identity removal, constant folding, BN folding, shape inference).
  // Without it only shape inference runs.
  bool optimize = true;
  // Constant-folding budget (graph::FoldOptions): the largest tensor folding may materialize
  // and the most bytes it may add to the model in all. The defaults suit the CLI; a service
  // loading uploaded models sets tight ones.
  int64_t max_fold_bytes = graph::FoldOptions{}.max_tensor_bytes;
  int64_t max_fold_total_bytes = graph::FoldOptions{}.max_total_bytes;
  // Values of graph inputs known when the model is loaded (`loom run --input`, `--bind`). An
  // input is bound to its value (it becomes an initializer and leaves the graph's inputs) only
  // where shape inference needs a value computed from it as a constant: a Reshape target, Resize
  // scales, reduction axes or pads given as (or computed from) graph inputs. Loom needs static
  // shapes; the model is then specialized to these values. Other inputs stay inputs.
  std::map<std::string, graph::Tensor> input_values;
};

struct LoadedModel {
  graph::Graph graph;
  graph::PassStats pass_stats;
  std::string source;  // the spec it was loaded from
  // Graph inputs bound to their LoadOptions::input_values (no longer graph inputs), sorted.
  std::vector<std::string> bound_inputs;
};

inline constexpr std::string_view kZooPrefix = "zoo:";

// Errors: kNotFound for a missing file or unknown zoo name, kInvalidArgument for malformed models
// or shapes, kUnimplemented for unsupported operators; each message names the culprit.
absl::StatusOr<LoadedModel> LoadModel(std::string_view spec, const LoadOptions& options = {});

// The graph inputs a model spec declares (names, dtypes, shapes after options.input_shapes;
// -1 where still dynamic), without shape inference: what a caller reads input files against
// before loading.
absl::StatusOr<std::vector<graph::ValueInfo>> DeclaredInputs(std::string_view spec,
                                                             const LoadOptions& options = {});

// The reference kernels as a graph::NodeEvaluator, for constant folding.
graph::NodeEvaluator ReferenceEvaluator();

}  // namespace loom::frontend
