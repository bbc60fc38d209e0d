#include "loom/cli/model_options.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/graph/npy.h"
#include "loom/graph/shape_spec.h"

namespace loom::cli {

void AddModelOptions(CLI::App* cmd, ModelOptions* options) {
  cmd->add_option("MODEL", options->model,
                  "Path to an .onnx file, or zoo:NAME (see 'loom zoo list')")
      ->required();
  cmd->add_option("--input-shape", options->input_shapes,
                  "Pin a dynamic input shape, NAME=D0,D1,... (repeatable; ONNX files)");
  cmd->add_option("--bind", options->binds,
                  "The value of an input that defines shapes (a Reshape target, Resize scales, "
                  "axes), NAME=FILE.npy (repeatable): the model is specialized to it");
  cmd->add_option("--batch", options->batch, "Batch size for zoo models")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  cmd->add_option("--weights-seed", options->seed, "Weight seed for zoo models");
}

absl::StatusOr<frontend::LoadOptions> LoadOptionsFrom(const ModelOptions& options) {
  frontend::LoadOptions load;
  load.zoo_batch = options.batch;
  load.zoo_seed = options.seed;
  for (const std::string& spec : options.input_shapes) {
    LOOM_ASSIGN_OR_RETURN(auto named, graph::ParseInputShape(spec));
    load.input_shapes[named.first] = std::move(named.second);
  }
  if (options.binds.empty()) return load;
  // The declared dtypes name what a raw 2-byte .npy holds (bfloat16).
  LOOM_ASSIGN_OR_RETURN(std::vector<graph::ValueInfo> declared,
                        frontend::DeclaredInputs(options.model, load));
  for (const std::string& spec : options.binds) {
    std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty() || kv[1].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --bind '", spec, "': expected NAME=FILE.npy"));
    }
    if (load.input_values.count(kv[0])) {
      return absl::InvalidArgumentError(absl::StrCat("--bind gives '", kv[0], "' twice"));
    }
    graph::DType hint = graph::DType::kUndefined;
    for (const graph::ValueInfo& in : declared) {
      if (in.name == kv[0]) hint = in.type.dtype;
    }
    LOOM_ASSIGN_OR_RETURN(load.input_values[kv[0]], graph::ReadNpy(kv[1], {.dtype_hint = hint}));
  }
  return load;
}

absl::StatusOr<frontend::LoadedModel> LoadModelFromOptions(const ModelOptions& options) {
  LOOM_ASSIGN_OR_RETURN(frontend::LoadOptions load, LoadOptionsFrom(options));
  return frontend::LoadModel(options.model, load);
}

}  // namespace loom::cli
