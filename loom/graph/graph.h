// Loom's model IR: a topologically ordered list of nodes over named values, with initializers
// (weights) and the static type of every value. Built by the ONNX importer and the model zoo,
// rewritten by passes, read by task extraction and the runtime.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

// An operator attribute, as in ONNX (INT, FLOAT, STRING, INTS, FLOATS, STRINGS, TENSOR).
using AttrValue = std::variant<int64_t, float, std::string, std::vector<int64_t>,
                               std::vector<float>, std::vector<std::string>, Tensor>;

struct Node {
  std::string name;     // unique within the graph (the importer invents one if ONNX had none)
  std::string op_type;  // ONNX op type, e.g. "Conv"
  // Value names. An empty string is an omitted optional input, as in ONNX.
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::map<std::string, AttrValue> attrs;

  bool HasAttr(const std::string& key) const { return attrs.count(key) > 0; }
  // Typed getters with defaults. A present attribute of the wrong kind yields the default; the
  // validators in shape inference reject such nodes first, with a message naming the node.
  int64_t GetInt(const std::string& key, int64_t def) const;
  float GetFloat(const std::string& key, float def) const;
  std::string GetString(const std::string& key, const std::string& def) const;
  std::vector<int64_t> GetInts(const std::string& key, std::vector<int64_t> def = {}) const;
  std::vector<float> GetFloats(const std::string& key, std::vector<float> def = {}) const;
  const Tensor* GetTensor(const std::string& key) const;

  // "Conv 'resnet.conv1'": how errors name a node.
  std::string Describe() const;
};

struct ValueInfo {
  std::string name;
  TensorType type;
};

class Graph {
 public:
  std::string name;
  int64_t opset = 17;             // the default ("" / ai.onnx) domain's opset
  std::vector<ValueInfo> inputs;  // runtime inputs only (initializers excluded)
  std::vector<ValueInfo> outputs;
  std::vector<Node> nodes;  // topologically sorted
  std::map<std::string, Tensor> initializers;
  // Static type of every value (inputs, initializers, node outputs), filled by InferShapes().
  std::map<std::string, TensorType> value_types;

  bool IsInitializer(const std::string& value) const { return initializers.count(value) > 0; }
  const Tensor* FindInitializer(const std::string& value) const;
  // Type of `value`, or kNotFound naming it.
  absl::StatusOr<TensorType> TypeOf(const std::string& value) const;

  // Index of the node producing `value`, or -1 for inputs/initializers/unknown.
  int64_t ProducerOf(const std::string& value) const;
  // Number of node inputs (plus graph outputs) that read `value`.
  int64_t UseCount(const std::string& value) const;

  // Structural checks: unique node names and value producers, every input defined before use,
  // outputs produced. Returns kInvalidArgument naming the first offending node.
  absl::Status Validate() const;
  // Reorders nodes topologically (stable); kInvalidArgument on a cycle.
  absl::Status TopologicalSort();
  // Drops nodes whose outputs reach no graph output, and unused initializers.
  void RemoveDeadNodes();

  // Total parameter count (elements of all float initializers).
  int64_t NumParameters() const;
};

}  // namespace loom::graph
