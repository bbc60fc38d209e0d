// Runs any imported graph node by node with the reference kernels (loom/kernels/), freeing each
// intermediate value after its last use. It is the oracle compiled models are checked against,
// and the slow-but-sure path `loom run --reference` / `loom bench --profile` can time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::runtime {

class ReferenceExecutor {
 public:
  // The graph must Validate() and every op must have a reference kernel (kUnimplemented naming
  // the first node without one). value_types may be empty: input checks then use graph.inputs.
  static absl::StatusOr<ReferenceExecutor> Create(graph::Graph graph);

  // Runs the graph on `inputs` (by name) and returns the graph outputs in graph.outputs order.
  // A missing or extra input, or one whose dtype or shape differs from the declared type (a
  // declared -1 matches any size) is kInvalidArgument naming the input, the expected and the
  // actual type. Kernel errors are returned as the kernel reports them (naming the node).
  // Thread-safe: runs share nothing but the immutable graph.
  absl::StatusOr<std::vector<graph::Tensor>> Run(
      const std::map<std::string, graph::Tensor>& inputs) const;

  struct NodeTiming {
    std::string node;
    std::string op_type;
    double seconds = 0;
    // Bytes held by live values (graph inputs and intermediates, not initializers) right after
    // this node ran and its dead inputs were freed; buffers shared by views count once.
    int64_t live_bytes = 0;
  };
  // Same as Run, also appending one NodeTiming per node, in execution order, to `*timings`.
  absl::StatusOr<std::vector<graph::Tensor>> RunProfiled(
      const std::map<std::string, graph::Tensor>& inputs, std::vector<NodeTiming>* timings) const;

  const graph::Graph& graph() const { return graph_; }

 private:
  explicit ReferenceExecutor(graph::Graph graph) : graph_(std::move(graph)) {}

  absl::Status CheckInputs(const std::map<std::string, graph::Tensor>& inputs) const;

  graph::Graph graph_;
  // Per node, the values whose last reader it is (never graph outputs or initializers), and
  // values it writes that nothing reads: both are dropped right after the node runs.
  std::vector<std::vector<std::string>> free_after_;
};

}  // namespace loom::runtime
