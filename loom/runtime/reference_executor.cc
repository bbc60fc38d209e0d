#include "loom/runtime/reference_executor.h"

#include <chrono>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/reference.h"

namespace loom::runtime {

using graph::Tensor;

namespace {

// Bytes of the values in `env`, counting a buffer shared by several views once.
int64_t LiveBytes(const absl::flat_hash_map<std::string, Tensor>& env) {
  absl::flat_hash_map<const void*, size_t> buffers;
  for (const auto& [_, t] : env) {
    size_t& bytes = buffers[t.raw_data()];
    bytes = std::max(bytes, t.num_bytes());
  }
  int64_t total = 0;
  for (const auto& [_, bytes] : buffers) total += static_cast<int64_t>(bytes);
  return total;
}

bool TypeMatches(const graph::TensorType& expected, const graph::TensorType& actual) {
  if (expected.dtype != actual.dtype || expected.shape.size() != actual.shape.size()) return false;
  for (size_t i = 0; i < expected.shape.size(); ++i) {
    if (expected.shape[i] != -1 && expected.shape[i] != actual.shape[i]) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<ReferenceExecutor> ReferenceExecutor::Create(graph::Graph graph) {
  LOOM_RETURN_IF_ERROR(graph.Validate());
  for (const auto& node : graph.nodes) {
    if (!kernels::HasReferenceKernel(node.op_type)) {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), ": no reference kernel for op type '", node.op_type, "'"));
    }
  }
  for (const auto& in : graph.inputs) {
    if (graph.IsInitializer(in.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph input '", in.name, "' is also an initializer"));
    }
  }
  ReferenceExecutor executor(std::move(graph));
  const graph::Graph& g = executor.graph_;
  std::set<std::string> keep;  // never freed: graph outputs (returned) and initializers (owned)
  for (const auto& out : g.outputs) keep.insert(out.name);
  for (const auto& [name, _] : g.initializers) keep.insert(name);
  absl::flat_hash_map<std::string, size_t> last_reader;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& in : g.nodes[i].inputs) {
      if (!in.empty()) last_reader[in] = i;
    }
  }
  executor.free_after_.resize(g.nodes.size());
  for (const auto& [value, i] : last_reader) {
    if (!keep.count(value)) executor.free_after_[i].push_back(value);
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& out : g.nodes[i].outputs) {
      if (!out.empty() && !keep.count(out) && !last_reader.count(out)) {
        executor.free_after_[i].push_back(out);
      }
    }
  }
  return executor;
}

absl::Status ReferenceExecutor::CheckInputs(const std::map<std::string, Tensor>& inputs) const {
  std::set<std::string> declared;
  for (const auto& in : graph_.inputs) {
    declared.insert(in.name);
    auto it = inputs.find(in.name);
    if (it == inputs.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", in.name, "' (", in.type.ToString(), ") is missing"));
    }
    graph::TensorType expected = in.type;
    if (auto vt = graph_.value_types.find(in.name); vt != graph_.value_types.end()) {
      expected = vt->second;
    }
    if (expected.dtype == graph::DType::kUndefined) continue;  // type not declared
    const graph::TensorType actual = it->second.type();
    if (!TypeMatches(expected, actual)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", in.name, "' expects ", expected.ToString(), ", got ", actual.ToString()));
    }
  }
  for (const auto& [name, _] : inputs) {
    if (!declared.count(name)) {
      std::string names;
      for (const auto& in : graph_.inputs) {
        absl::StrAppend(&names, names.empty() ? "" : ", ", in.name);
      }
      return absl::InvalidArgumentError(
          absl::StrCat("'", name, "' is not an input of the graph (inputs: ", names, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Tensor>> ReferenceExecutor::Run(
    const std::map<std::string, Tensor>& inputs) const {
  return RunProfiled(inputs, nullptr);
}

absl::StatusOr<std::vector<Tensor>> ReferenceExecutor::RunProfiled(
    const std::map<std::string, Tensor>& inputs, std::vector<NodeTiming>* timings) const {
  LOOM_RETURN_IF_ERROR(CheckInputs(inputs));
  // Live values by name; initializers are read from the graph directly.
  absl::flat_hash_map<std::string, Tensor> env;
  for (const auto& in : graph_.inputs) env[in.name] = inputs.at(in.name);
  auto lookup = [&](const std::string& name) -> const Tensor* {
    if (auto it = env.find(name); it != env.end()) return &it->second;
    return graph_.FindInitializer(name);
  };

  std::vector<Tensor> args;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const graph::Node& node = graph_.nodes[i];
    args.clear();
    for (const auto& name : node.inputs) {
      if (name.empty()) {
        args.emplace_back();
        continue;
      }
      const Tensor* t = lookup(name);
      if (t == nullptr) {  // Validate() makes this unreachable unless an optional output is read
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), " reads '", name, "', which was not produced"));
      }
      args.push_back(*t);
    }
    const auto start = std::chrono::steady_clock::now();
    LOOM_ASSIGN_OR_RETURN(std::vector<Tensor> outs,
                          kernels::EvaluateNode(node, graph_.opset, args));
    const auto stop = std::chrono::steady_clock::now();
    args.clear();
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      if (!node.outputs[k].empty() && outs[k].defined()) {
        env[node.outputs[k]] = std::move(outs[k]);
      }
    }
    for (const auto& name : free_after_[i]) env.erase(name);
    if (timings != nullptr) {
      timings->push_back({.node = node.name,
                          .op_type = node.op_type,
                          .seconds = std::chrono::duration<double>(stop - start).count(),
                          .live_bytes = LiveBytes(env)});
    }
  }

  std::vector<Tensor> results;
  results.reserve(graph_.outputs.size());
  for (const auto& out : graph_.outputs) {
    const Tensor* t = lookup(out.name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph output '", out.name, "' was not produced"));
    }
    results.push_back(*t);
  }
  return results;
}

}  // namespace loom::runtime
