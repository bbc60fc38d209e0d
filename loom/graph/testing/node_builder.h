// Test support: one-line construction of graph nodes for tests that build graphs by hand.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loom/graph/graph.h"

namespace loom::graph::testing {

inline Node MakeNode(const std::string& name, const std::string& op,
                     std::vector<std::string> inputs, std::vector<std::string> outputs,
                     std::map<std::string, AttrValue> attrs = {}) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attrs = std::move(attrs);
  return n;
}

}  // namespace loom::graph::testing
