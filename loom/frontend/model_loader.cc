#include "loom/frontend/model_loader.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/onnx_importer.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/zoo.h"
#include "loom/kernels/reference.h"

namespace loom::frontend {

graph::NodeEvaluator ReferenceEvaluator() {
  return [](const graph::Node& node, int64_t opset, const std::vector<graph::Tensor>& inputs) {
    return kernels::EvaluateNode(node, opset, inputs);
  };
}

namespace {

// The model as imported (or built), before any pass.
absl::StatusOr<graph::Graph> ImportSpec(const std::string& spec_in, const LoadOptions& options) {
  std::string spec = spec_in;
  if (spec.starts_with(kZooPrefix)) {
    spec = spec.substr(kZooPrefix.size());
    if (!options.input_shapes.empty()) {
      return absl::InvalidArgumentError(
          "--input-shape applies to ONNX files; zoo models take --batch instead");
    }
    return graph::BuildZooModel(spec, {.batch = options.zoo_batch, .seed = options.zoo_seed});
  }
  std::error_code ec;
  if (!std::filesystem::exists(spec, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "model file '", spec, "' does not exist (use a path to an .onnx file or zoo:NAME)"));
  }
  graph::ImportOptions import_options;
  import_options.input_shapes = options.input_shapes;
  return graph::ImportOnnxFile(spec, import_options);
}

// Makes graph input `name` an initializer holding `value` (which must fit its declared type).
absl::Status BindInput(graph::Graph& g, const std::string& name, const graph::Tensor& value) {
  auto it = std::find_if(g.inputs.begin(), g.inputs.end(),
                         [&](const graph::ValueInfo& v) { return v.name == name; });
  if (it == g.inputs.end()) return absl::InternalError(absl::StrCat("no graph input ", name));
  bool fits = it->type.dtype == value.dtype() && it->type.shape.size() == value.shape().size();
  for (size_t i = 0; fits && i < it->type.shape.size(); ++i) {
    fits = it->type.shape[i] == -1 || it->type.shape[i] == value.shape()[i];
  }
  if (!fits) {
    return absl::InvalidArgumentError(
        absl::StrCat("the value given for input '", name, "' is ", value.type().ToString(),
                     " but the model declares ", it->type.ToString()));
  }
  g.initializers[name] = value;
  g.inputs.erase(it);
  return absl::OkStatus();
}

// The graph inputs `value` is computed from (`value` itself when it is one), sorted.
std::vector<std::string> InputsBehind(const graph::Graph& g, const std::string& value) {
  std::set<std::string> inputs, seen;
  std::vector<std::string> stack = {value};
  while (!stack.empty()) {
    const std::string v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second) continue;
    if (std::any_of(g.inputs.begin(), g.inputs.end(),
                    [&](const graph::ValueInfo& in) { return in.name == v; })) {
      inputs.insert(v);
      continue;
    }
    const int64_t producer = g.ProducerOf(v);
    if (producer < 0) continue;
    for (const std::string& in : g.nodes[static_cast<size_t>(producer)].inputs) {
      if (!in.empty()) stack.push_back(in);
    }
  }
  return {inputs.begin(), inputs.end()};
}

}  // namespace

absl::StatusOr<std::vector<graph::ValueInfo>> DeclaredInputs(std::string_view spec,
                                                             const LoadOptions& options) {
  LOOM_ASSIGN_OR_RETURN(graph::Graph g, ImportSpec(std::string(spec), options));
  return g.inputs;
}

absl::StatusOr<LoadedModel> LoadModel(std::string_view spec_view, const LoadOptions& options) {
  LoadedModel model;
  model.source = std::string(spec_view);
  LOOM_ASSIGN_OR_RETURN(graph::Graph imported, ImportSpec(model.source, options));
  for (const auto& given : options.input_values) {
    // Not a structured binding: clang 14 (the fuzz preset) cannot capture one in a lambda.
    const std::string& name = given.first;
    if (std::none_of(imported.inputs.begin(), imported.inputs.end(),
                     [&](const graph::ValueInfo& v) { return v.name == name; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("a value is given for '", name, "', which is not an input of the model"));
    }
  }
  // Load; when a pass needs the value of a graph input the caller gave, bind it and start over
  // (each input at most once, so this ends).
  while (true) {
    model.graph = imported;
    absl::Status st;
    if (options.optimize) {
      auto stats = graph::OptimizeForInference(model.graph, ReferenceEvaluator(),
                                               {.max_tensor_bytes = options.max_fold_bytes,
                                                .max_total_bytes = options.max_fold_total_bytes});
      if (stats.ok()) model.pass_stats = *stats;
      st = stats.status();
    } else {
      st = graph::InferShapes(model.graph);
    }
    if (st.ok()) break;
    const auto needed = st.GetPayload(graph::kNeedsConstantPayload);
    if (!needed.has_value()) return st;
    // Bind the graph inputs the needed value is computed from (itself, when it is one) whose
    // values the caller gave.
    bool bound = false;
    for (const std::string& name : InputsBehind(imported, std::string(*needed))) {
      auto value = options.input_values.find(name);
      if (value == options.input_values.end()) continue;
      LOOM_RETURN_IF_ERROR(BindInput(imported, name, value->second));
      model.bound_inputs.push_back(name);
      bound = true;
    }
    if (!bound) return st;
  }
  std::sort(model.bound_inputs.begin(), model.bound_inputs.end());
  return model;
}

}  // namespace loom::frontend
