// Options shared by every subcommand that takes a MODEL argument (inspect, tasks, run, ...):
// the model spec, pinned input shapes for ONNX files, and the zoo batch/seed.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "loom/frontend/model_loader.h"

namespace loom::cli {

struct ModelOptions {
  std::string model;
  std::vector<std::string> input_shapes;  // "name=1,3,224,224"
  std::vector<std::string> binds;         // "name=FILE.npy": values for shape-defining inputs
  int64_t batch = 1;
  uint64_t seed = 0;
};

// Adds MODEL (positional, required), --input-shape, --bind, --batch and --seed to `cmd`.
void AddModelOptions(CLI::App* cmd, ModelOptions* options);

// The LoadOptions `options` describe: pinned shapes, zoo batch and seed, and the --bind values
// (read as .npy files). Errors are one-line statuses.
absl::StatusOr<frontend::LoadOptions> LoadOptionsFrom(const ModelOptions& options);

// Parses the options and loads the model; errors are one-line statuses.
absl::StatusOr<frontend::LoadedModel> LoadModelFromOptions(const ModelOptions& options);

}  // namespace loom::cli
