// `loom run MODEL [--input X.npy] [--output Y.npy]`: runs a model with the reference executor;
// `loom run DIR ...` runs a compiled artifact (`loom compile`) through the library API instead.
// Without --input a seeded normal input is generated, so a model can be tried with nothing else.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "loom/base/rng.h"
#include "loom/cli/commands.h"
#include "loom/cli/model_options.h"
#include "loom/graph/npy.h"
#include "loom/loom.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/reference_executor.h"

namespace loom::cli {
namespace {

struct RunOptions {
  ModelOptions model;
  std::vector<std::string> inputs;  // "X.npy" or "NAME=X.npy"
  std::string output;
  uint64_t input_seed = 1;
  int32_t threads = 0;     // artifacts only; 0: as compiled
  std::string verify_key;  // artifacts only: the signing key to check
};

absl::StatusOr<std::map<std::string, graph::Tensor>> ReadInputs(
    const std::vector<graph::ValueInfo>& inputs, const RunOptions& opts) {
  std::map<std::string, graph::Tensor> feeds;
  for (const std::string& spec : opts.inputs) {
    std::string name, path;
    std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.size() == 2) {
      name = kv[0];
      path = kv[1];
    } else if (inputs.size() == 1) {
      name = inputs[0].name;
      path = spec;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "the model has ", inputs.size(), " inputs: give each as --input NAME=FILE.npy"));
    }
    auto tensor = graph::ReadNpy(path);
    if (!tensor.ok()) return tensor.status();
    feeds[name] = *std::move(tensor);
  }
  // Inputs not given get seeded standard-normal data (float) or zeros (integer types).
  base::Rng rng(opts.input_seed);
  for (const auto& in : inputs) {
    if (feeds.count(in.name)) continue;
    if (!opts.inputs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("missing --input for model input '", in.name,
                                                     "' (", in.type.ToString(), ")"));
    }
    auto t = graph::Tensor::Create(in.type.dtype, in.type.shape);
    if (!t.ok()) return t.status();
    if (in.type.dtype == graph::DType::kFloat32) {
      for (float& v : t->values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    feeds[in.name] = *std::move(t);
  }
  return feeds;
}

void PrintTopK(const graph::Tensor& out) {
  if (out.dtype() != graph::DType::kFloat32 || out.rank() != 2 || out.dim(0) != 1) return;
  auto v = out.values<float>();
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  size_t k = std::min<size_t>(5, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(k), idx.end(),
                    [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  std::printf("top-%zu     ", k);
  for (size_t i = 0; i < k; ++i) {
    std::printf(" %lld:%.4g", static_cast<long long>(idx[i]), v[idx[i]]);
  }
  std::printf("\n");
}

void RunRun(const RunOptions& opts) {
  if (opts.threads < 0) Fail(absl::InvalidArgumentError("--threads must be at least 1"));
  std::vector<graph::ValueInfo> output_infos;
  absl::StatusOr<std::vector<graph::Tensor>> outputs;
  double ms = 0;
  std::string how;
  if (runtime::IsArtifactDir(opts.model.model)) {
    // A compiled artifact: no graph, no compiler, no records.
    Model model = Model::Load(opts.model.model, {.verify_key = opts.verify_key});
    FailIfError(model.status());
    if (opts.threads > 0) FailIfError(model.Compile({.threads = opts.threads}).status());
    auto feeds = ReadInputs(model.inputs(), opts);
    FailIfError(feeds.status());
    FailIfError(model.Run(*feeds).status());  // first run: page in weights, touch the arena
    auto start = std::chrono::steady_clock::now();
    outputs = model.Run(*feeds);
    ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    output_infos = model.outputs();
    how = absl::StrCat("compiled artifact, ", model.compiled()->num_threads(), " thread",
                       model.compiled()->num_threads() == 1 ? "" : "s", ", second run");
  } else {
    auto loaded = LoadModelFromOptions(opts.model);
    FailIfError(loaded.status());
    auto feeds = ReadInputs(loaded->graph.inputs, opts);
    FailIfError(feeds.status());
    auto executor = runtime::ReferenceExecutor::Create(loaded->graph);
    FailIfError(executor.status());
    auto start = std::chrono::steady_clock::now();
    outputs = executor->Run(*feeds);
    ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    output_infos = executor->graph().outputs;
    how = "reference executor, 1 run";
  }
  FailIfError(outputs.status());

  for (size_t i = 0; i < outputs->size(); ++i) {
    std::printf("output      %s: %s\n", output_infos[i].name.c_str(),
                (*outputs)[i].type().ToString().c_str());
  }
  std::printf("latency     %.2f ms (%s)\n", ms, how.c_str());
  if (!outputs->empty()) PrintTopK((*outputs)[0]);
  if (!opts.output.empty()) {
    if (outputs->size() != 1) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--output writes one tensor but the model has ",
                                                   outputs->size(), " outputs")));
    }
    FailIfError(graph::WriteNpy((*outputs)[0], opts.output));
    std::printf("wrote       %s\n", opts.output.c_str());
  }
}

}  // namespace

void RegisterRunCommand(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand(
      "run", "Run a model on .npy inputs (reference executor), or a compiled artifact DIR");
  AddModelOptions(cmd, &opts->model);
  cmd->add_option("--input", opts->inputs,
                  "Input tensor as FILE.npy (single-input models) or NAME=FILE.npy; "
                  "default: seeded normal noise");
  cmd->add_option("--output", opts->output, "Write the (single) output to this .npy file");
  cmd->add_option("--input-seed", opts->input_seed, "Seed for generated inputs");
  cmd->add_option("--threads", opts->threads,
                  "Threads running a compiled artifact (default: as compiled)");
  cmd->add_option("--verify", opts->verify_key,
                  "Refuse a compiled artifact unless it is signed with the Ed25519 key in this "
                  "public-key PEM file (loom compile --sign)");
  cmd->callback([opts] { RunRun(*opts); });
}

}  // namespace loom::cli
