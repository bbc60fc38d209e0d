#include "loom/runtime/model_loader.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/onnx_importer.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/zoo.h"
#include "loom/kernels/reference.h"

namespace loom::runtime {

graph::NodeEvaluator ReferenceEvaluator() {
  return [](const graph::Node& node, int64_t opset, const std::vector<graph::Tensor>& inputs) {
    return kernels::EvaluateNode(node, opset, inputs);
  };
}

absl::StatusOr<LoadedModel> LoadModel(std::string_view spec_view, const LoadOptions& options) {
  LoadedModel model;
  model.source = std::string(spec_view);
  std::string spec(spec_view);
  if (spec.starts_with(kZooPrefix)) {
    spec = spec.substr(kZooPrefix.size());
    if (!options.input_shapes.empty()) {
      return absl::InvalidArgumentError(
          "--input-shape applies to ONNX files; zoo models take --batch instead");
    }
    LOOM_ASSIGN_OR_RETURN(model.graph, graph::BuildZooModel(spec, {.batch = options.zoo_batch,
                                                                   .seed = options.zoo_seed}));
  } else {
    std::error_code ec;
    if (!std::filesystem::exists(spec, ec)) {
      return absl::NotFoundError(absl::StrCat(
          "model file '", spec, "' does not exist (use a path to an .onnx file or zoo:NAME)"));
    }
    graph::ImportOptions import_options;
    import_options.input_shapes = options.input_shapes;
    LOOM_ASSIGN_OR_RETURN(model.graph, graph::ImportOnnxFile(spec, import_options));
  }
  if (options.optimize) {
    LOOM_ASSIGN_OR_RETURN(model.pass_stats,
                          graph::OptimizeForInference(model.graph, ReferenceEvaluator()));
  } else {
    LOOM_RETURN_IF_ERROR(graph::InferShapes(model.graph));
  }
  return model;
}

}  // namespace loom::runtime
