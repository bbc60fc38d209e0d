#include "loom/graph/graph.h"

#include <deque>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace loom::graph {

int64_t Node::GetInt(const std::string& key, int64_t def) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (const auto* v = std::get_if<int64_t>(&it->second)) return *v;
  return def;
}

float Node::GetFloat(const std::string& key, float def) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (const auto* v = std::get_if<float>(&it->second)) return *v;
  if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<float>(*i);
  return def;
}

std::string Node::GetString(const std::string& key, const std::string& def) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (const auto* v = std::get_if<std::string>(&it->second)) return *v;
  return def;
}

std::vector<int64_t> Node::GetInts(const std::string& key, std::vector<int64_t> def) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (const auto* v = std::get_if<std::vector<int64_t>>(&it->second)) return *v;
  return def;
}

std::vector<float> Node::GetFloats(const std::string& key, std::vector<float> def) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (const auto* v = std::get_if<std::vector<float>>(&it->second)) return *v;
  return def;
}

const Tensor* Node::GetTensor(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return nullptr;
  return std::get_if<Tensor>(&it->second);
}

std::string Node::Describe() const { return absl::StrCat(op_type, " '", name, "'"); }

const Tensor* Graph::FindInitializer(const std::string& value) const {
  auto it = initializers.find(value);
  return it == initializers.end() ? nullptr : &it->second;
}

absl::StatusOr<TensorType> Graph::TypeOf(const std::string& value) const {
  auto it = value_types.find(value);
  if (it != value_types.end()) return it->second;
  if (const Tensor* t = FindInitializer(value)) return t->type();
  for (const auto& in : inputs) {
    if (in.name == value) return in.type;
  }
  return absl::NotFoundError(absl::StrCat("value '", value, "' has no known type"));
}

int64_t Graph::ProducerOf(const std::string& value) const {
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& out : nodes[i].outputs) {
      if (out == value) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

int64_t Graph::UseCount(const std::string& value) const {
  int64_t uses = 0;
  for (const auto& node : nodes) {
    for (const auto& in : node.inputs) uses += (in == value);
  }
  for (const auto& out : outputs) uses += (out.name == value);
  return uses;
}

absl::Status Graph::Validate() const {
  std::set<std::string> defined;
  for (const auto& in : inputs) defined.insert(in.name);
  for (const auto& [name, _] : initializers) defined.insert(name);
  std::set<std::string> node_names;
  for (const auto& node : nodes) {
    if (!node_names.insert(node.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate node name in ", node.Describe()));
    }
    for (const auto& in : node.inputs) {
      if (!in.empty() && !defined.count(in)) {
        return absl::InvalidArgumentError(absl::StrCat(
            node.Describe(), " reads '", in,
            "', which is neither a graph input, an initializer nor an earlier node's output"));
      }
    }
    for (const auto& out : node.outputs) {
      if (out.empty()) continue;
      if (!defined.insert(out).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), " writes '", out, "', which is already defined"));
      }
    }
  }
  for (const auto& out : outputs) {
    if (!defined.count(out.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph output '", out.name, "' is not produced by any node"));
    }
  }
  return absl::OkStatus();
}

absl::Status Graph::TopologicalSort() {
  // Kahn's algorithm, always taking the lowest original index ready, so an already sorted graph
  // keeps its order.
  absl::flat_hash_map<std::string, size_t> producer;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& out : nodes[i].outputs) {
      if (!out.empty()) producer[out] = i;
    }
  }
  std::vector<std::vector<size_t>> consumers(nodes.size());
  std::vector<int> pending(nodes.size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::set<size_t> deps;
    for (const auto& in : nodes[i].inputs) {
      auto it = producer.find(in);
      if (it != producer.end() && it->second != i) deps.insert(it->second);
    }
    pending[i] = static_cast<int>(deps.size());
    for (size_t d : deps) consumers[d].push_back(i);
  }
  std::set<size_t> ready;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (pending[i] == 0) ready.insert(i);
  }
  std::vector<size_t> order;
  order.reserve(nodes.size());
  while (!ready.empty()) {
    size_t i = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(i);
    for (size_t c : consumers[i]) {
      if (--pending[c] == 0) ready.insert(c);
    }
  }
  if (order.size() != nodes.size()) {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (pending[i] > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph has a cycle through ", nodes[i].Describe()));
      }
    }
  }
  std::vector<Node> sorted;
  sorted.reserve(nodes.size());
  for (size_t i : order) sorted.push_back(std::move(nodes[i]));
  nodes = std::move(sorted);
  return absl::OkStatus();
}

void Graph::RemoveDeadNodes() {
  std::set<std::string> live;
  for (const auto& out : outputs) live.insert(out.name);
  std::vector<bool> keep(nodes.size(), false);
  for (size_t k = nodes.size(); k-- > 0;) {
    for (const auto& out : nodes[k].outputs) {
      if (live.count(out)) keep[k] = true;
    }
    if (keep[k]) {
      for (const auto& in : nodes[k].inputs) live.insert(in);
    }
  }
  std::vector<Node> kept;
  for (size_t k = 0; k < nodes.size(); ++k) {
    if (keep[k]) {
      kept.push_back(std::move(nodes[k]));
    } else {
      for (const auto& out : nodes[k].outputs) value_types.erase(out);
    }
  }
  nodes = std::move(kept);
  for (auto it = initializers.begin(); it != initializers.end();) {
    if (!live.count(it->first)) {
      value_types.erase(it->first);
      it = initializers.erase(it);
    } else {
      ++it;
    }
  }
}

int64_t Graph::NumParameters() const {
  int64_t n = 0;
  for (const auto& [_, t] : initializers) {
    if (t.dtype() == DType::kFloat32) n += t.num_elements();
  }
  return n;
}

}  // namespace loom::graph
