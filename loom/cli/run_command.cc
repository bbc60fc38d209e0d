// `loom run MODEL [--input [NAME=]X.npy]... [--output [NAME=]Y.npy]... [--output-dir DIR]`: runs a
// model with the reference executor; `loom run DIR ...` runs a compiled artifact (`loom compile`)
// through the library API instead, or a GPU artifact (`loom compile --target cuda`) on the GPU
// `--device cuda:N`. Without --input a seeded normal input is generated, so a model
// can be tried with nothing else. Every output can be written: by name (--output NAME=FILE), or
// all of them into a folder (--output-dir), one <name>.npy each. --json prints one object: the
// outputs' names, dtypes, shapes and files, the latency and what ran the model.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loom/base/rng.h"
#include "loom/base/status_macros.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/graph/npy.h"
#include "loom/loom.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_model.h"
#include "loom/runtime/reference_executor.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

namespace fs = std::filesystem;

struct RunOptions {
  ModelOptions model;
  std::vector<std::string> inputs;   // "X.npy" or "NAME=X.npy"
  std::vector<std::string> outputs;  // "Y.npy" or "NAME=Y.npy"
  std::string output_dir;
  uint64_t input_seed = 1;
  int32_t threads = 0;     // artifacts only; 0: as compiled
  std::string verify_key;  // artifacts only: the signing key to check
  std::string device;      // GPU artifacts only: cuda:N
  bool json = false;
};

std::string Names(const std::vector<graph::ValueInfo>& values) {
  std::vector<std::string> names;
  for (const auto& v : values) names.push_back(v.name);
  return absl::StrJoin(names, ", ");
}

// "NAME=PATH" -> {NAME, PATH}; a bare PATH names the only value of a single-value list. `flag`
// and `what` ("input", "output") word the errors.
absl::StatusOr<std::pair<std::string, std::string>> NamedPath(
    const std::string& spec, const std::vector<graph::ValueInfo>& values, const char* flag,
    const char* what) {
  std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
  if (kv.size() == 2) {
    const auto it = std::find_if(values.begin(), values.end(),
                                 [&](const graph::ValueInfo& v) { return v.name == kv[0]; });
    if (it == values.end()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", spec, ": the model has no ", what,
                                                     " '", kv[0], "' (", what, "s: ", Names(values),
                                                     ")"));
    }
    if (kv[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", spec, ": no file after '='"));
    }
    return std::make_pair(kv[0], kv[1]);
  }
  if (values.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", values.size(), " ", what,
                                                   "s (", Names(values), "): give each as ", flag,
                                                   " NAME=FILE.npy"));
  }
  return std::make_pair(values[0].name, spec);
}

bool ShapeMatches(const graph::Shape& declared, const graph::Shape& actual) {
  if (declared.size() != actual.size()) return false;
  for (size_t i = 0; i < declared.size(); ++i) {
    if (declared[i] != -1 && declared[i] != actual[i]) return false;
  }
  return true;
}

absl::StatusOr<std::map<std::string, graph::Tensor>> ReadInputs(
    const std::vector<graph::ValueInfo>& inputs, const RunOptions& opts) {
  std::map<std::string, graph::Tensor> feeds;
  for (const std::string& spec : opts.inputs) {
    LOOM_ASSIGN_OR_RETURN(auto named, NamedPath(spec, inputs, "--input", "input"));
    const auto& [name, path] = named;
    if (feeds.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' is given twice"));
    }
    const graph::ValueInfo& info = *std::find_if(
        inputs.begin(), inputs.end(), [&](const graph::ValueInfo& v) { return v.name == name; });
    LOOM_ASSIGN_OR_RETURN(graph::Tensor t, graph::ReadNpy(path, {.dtype_hint = info.type.dtype}));
    if (t.dtype() != info.type.dtype || !ShapeMatches(info.type.shape, t.shape())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input ", spec, " holds ", t.type().ToString(), " but the model's input '",
                       name, "' is ", info.type.ToString()));
    }
    feeds[name] = std::move(t);
  }
  // Inputs not given get seeded standard-normal data (float) or zeros (other types).
  base::Rng rng(opts.input_seed);
  for (const auto& in : inputs) {
    if (feeds.count(in.name)) continue;
    if (!opts.inputs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("missing --input for model input '", in.name,
                                                     "' (", in.type.ToString(), ")"));
    }
    if (std::count(in.type.shape.begin(), in.type.shape.end(), -1) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", in.name, "' has dynamic dims ", in.type.ToString(),
                       ": give it with --input, or pin them with --input-shape"));
    }
    LOOM_ASSIGN_OR_RETURN(graph::Tensor t, graph::Tensor::Create(in.type.dtype, in.type.shape));
    if (in.type.dtype == graph::DType::kFloat32) {
      for (float& v : t.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    feeds[in.name] = std::move(t);
  }
  return feeds;
}

// A file name for an output name from an (untrusted) model: letters, digits, '.', '-' and '_'
// are kept, anything else (path separators included) becomes '_', and a leading '.' too, so the
// file can neither leave the folder nor be hidden or special ("", ".", "..").
std::string OutputFileName(const std::string& name) {
  std::string file;
  for (char c : name) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_';
    file.push_back(keep ? c : '_');
  }
  if (file.empty() || file[0] == '.') file.insert(file.begin(), '_');
  return file + ".npy";
}

// Where each output goes: output index -> file.
absl::StatusOr<std::map<size_t, std::string>> OutputFiles(
    const std::vector<graph::ValueInfo>& outputs, const RunOptions& opts) {
  std::map<size_t, std::string> files;
  for (const std::string& spec : opts.outputs) {
    LOOM_ASSIGN_OR_RETURN(auto named, NamedPath(spec, outputs, "--output", "output"));
    const size_t index = static_cast<size_t>(
        std::find_if(outputs.begin(), outputs.end(),
                     [&](const graph::ValueInfo& v) { return v.name == named.first; }) -
        outputs.begin());
    if (files.count(index)) {
      return absl::InvalidArgumentError(absl::StrCat("output '", named.first, "' is given twice"));
    }
    files[index] = named.second;
  }
  if (!opts.output_dir.empty()) {
    std::map<std::string, std::string> taken;  // file name -> output name
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string file = OutputFileName(outputs[i].name);
      if (auto it = taken.find(file); it != taken.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--output-dir: outputs '", it->second, "' and '", outputs[i].name,
            "' would both be written to ", file, "; write them with --output NAME=FILE.npy"));
      }
      taken[file] = outputs[i].name;
      if (!files.count(i)) files[i] = (fs::path(opts.output_dir) / file).string();
    }
  }
  return files;
}

// The indices of the five largest values of a float32 [1, N] output (a classifier's scores),
// largest first; empty for any other output.
std::vector<int64_t> TopK(const graph::Tensor& out) {
  if (out.dtype() != graph::DType::kFloat32 || out.rank() != 2 || out.dim(0) != 1) return {};
  auto v = out.values<float>();
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  size_t k = std::min<size_t>(5, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(k), idx.end(),
                    [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  idx.resize(k);
  return idx;
}

void RunRun(const RunOptions& opts) {
  if (opts.threads < 0) Fail(absl::InvalidArgumentError("--threads must be at least 1"));
  std::vector<graph::ValueInfo> output_infos;
  absl::StatusOr<std::vector<graph::Tensor>> outputs;
  std::map<size_t, std::string> files;
  double ms = 0;
  std::string how;
  // --json: what ran it ("reference", "artifact", "gpu_artifact"), timed runs, threads, device.
  nlohmann::json run = nlohmann::json::object();
  if (runtime::IsCudaArtifactDir(opts.model.model)) {
    // A GPU artifact, through the one loader of the C API and loom::Model: its kernel images on
    // the device, refused in one line for another architecture or a damaged file.
    if (opts.threads > 0) Fail(absl::InvalidArgumentError("--threads is for CPU artifacts"));
    auto gpu = runtime::LoadCudaArtifact(opts.model.model, CudaOrdinalOrFail(opts.device),
                                         opts.verify_key);
    FailIfError(gpu.status());
    runtime::CudaModel& model = *gpu->model;
    output_infos = model.outputs();
    auto out_files = OutputFiles(output_infos, opts);
    FailIfError(out_files.status());
    files = *std::move(out_files);
    auto feeds = ReadInputs(model.inputs(), opts);
    FailIfError(feeds.status());
    FailIfError(model.Run(*feeds).status());  // first run: captures the launches
    auto start = std::chrono::steady_clock::now();
    outputs = model.Run(*feeds);
    ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const std::string& device_name = gpu->backend->target().device_name;
    how = absl::StrCat("GPU artifact on ", device_name, ", second run",
                       model.run_stats().graph_captured ? ", graph replay" : "");
    run = {{"executor", "gpu_artifact"},
           {"device", device_name},
           {"graph_replay", model.run_stats().graph_captured},
           {"warmup_runs", 1}};
  } else if (runtime::IsArtifactDir(opts.model.model)) {
    // A compiled artifact: no graph, no compiler, no records.
    Model model = Model::Load(opts.model.model, {.verify_key = opts.verify_key});
    FailIfError(model.status());
    if (opts.threads > 0) FailIfError(model.Compile({.threads = opts.threads}).status());
    output_infos = model.outputs();
    auto out_files = OutputFiles(output_infos, opts);
    FailIfError(out_files.status());
    files = *std::move(out_files);
    auto feeds = ReadInputs(model.inputs(), opts);
    FailIfError(feeds.status());
    FailIfError(model.Run(*feeds).status());  // first run: page in weights, touch the arena
    auto start = std::chrono::steady_clock::now();
    outputs = model.Run(*feeds);
    ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    how = absl::StrCat("compiled artifact, ", model.compiled()->num_threads(), " thread",
                       model.compiled()->num_threads() == 1 ? "" : "s", ", second run");
    run = {{"executor", "artifact"},
           {"threads", model.compiled()->num_threads()},
           {"target", model.compiled()->target_key()},
           {"warmup_runs", 1}};
  } else {
    // Inputs are read against the declared types first: their values may define shapes
    // (LoadOptions::input_values), and their shapes pin dynamic dims.
    auto load = LoadOptionsFrom(opts.model);
    FailIfError(load.status());
    auto declared = frontend::DeclaredInputs(opts.model.model, *load);
    FailIfError(declared.status());
    auto feeds = ReadInputs(*declared, opts);
    FailIfError(feeds.status());
    for (const auto& [name, t] : *feeds) {
      load->input_values.emplace(name, t);
      const auto in = std::find_if(declared->begin(), declared->end(),
                                   [&](const graph::ValueInfo& v) { return v.name == name; });
      if (std::count(in->type.shape.begin(), in->type.shape.end(), -1) > 0) {
        load->input_shapes.emplace(name, t.shape());
      }
    }
    auto loaded = frontend::LoadModel(opts.model.model, *load);
    FailIfError(loaded.status());
    for (const std::string& name : loaded->bound_inputs) feeds->erase(name);
    output_infos = loaded->graph.outputs;
    auto out_files = OutputFiles(output_infos, opts);
    FailIfError(out_files.status());
    files = *std::move(out_files);
    auto executor = runtime::ReferenceExecutor::Create(loaded->graph);
    FailIfError(executor.status());
    auto start = std::chrono::steady_clock::now();
    outputs = executor->Run(*feeds);
    ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    how = "reference executor, 1 run";
    run = {{"executor", "reference"}, {"warmup_runs", 0}};
  }
  FailIfError(outputs.status());
  if (!opts.output_dir.empty()) {
    std::error_code ec;
    fs::create_directories(opts.output_dir, ec);
    if (ec) {
      Fail(absl::PermissionDeniedError(
          absl::StrCat("cannot create --output-dir ", opts.output_dir, ": ", ec.message())));
    }
  }
  for (const auto& [index, file] : files) FailIfError(graph::WriteNpy((*outputs)[index], file));
  const std::vector<int64_t> top = outputs->empty() ? std::vector<int64_t>{} : TopK((*outputs)[0]);

  if (opts.json) {
    nlohmann::json outs = nlohmann::json::array();
    for (size_t i = 0; i < outputs->size(); ++i) {
      const graph::Tensor& t = (*outputs)[i];
      const auto file = files.find(i);
      outs.push_back(
          {{"name", output_infos[i].name},
           {"dtype", graph::DTypeName(t.dtype())},
           {"shape", t.shape()},
           {"file", file == files.end() ? nlohmann::json(nullptr) : nlohmann::json(file->second)}});
    }
    nlohmann::json j = {{"model", opts.model.model}, {"latency_ms", ms}, {"outputs", outs}};
    j.update(run);
    if (!top.empty()) {
      nlohmann::json t = nlohmann::json::array();
      for (int64_t k : top) {
        t.push_back({{"index", k}, {"value", (*outputs)[0].values<float>()[k]}});
      }
      j["top"] = std::move(t);
    }
    PrintJson(j);
    return;
  }

  for (size_t i = 0; i < outputs->size(); ++i) {
    std::printf("output      %s: %s\n", output_infos[i].name.c_str(),
                (*outputs)[i].type().ToString().c_str());
  }
  std::printf("latency     %.2f ms (%s)\n", ms, how.c_str());
  if (!top.empty()) {
    std::printf("top-%zu     ", top.size());
    for (int64_t k : top) {
      std::printf(" %lld:%.4g", static_cast<long long>(k), (*outputs)[0].values<float>()[k]);
    }
    std::printf("\n");
  }
  for (const auto& [index, file] : files) {
    std::printf("wrote       %s (%s)\n", file.c_str(), output_infos[index].name.c_str());
  }
}

}  // namespace

void RegisterRunCommand(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand(
      "run", "Run a model on .npy inputs (reference executor), or a compiled artifact DIR");
  AddModelOptions(cmd, &opts->model);
  cmd->add_option("--input", opts->inputs,
                  "Input tensor as NAME=FILE.npy (repeatable), or FILE.npy for single-input "
                  "models; default: seeded normal noise");
  cmd->add_option("--output", opts->outputs,
                  "Write output NAME to FILE.npy as NAME=FILE.npy (repeatable), or FILE.npy for "
                  "single-output models");
  cmd->add_option("--output-dir", opts->output_dir,
                  "Write every output to DIR/<name>.npy (names sanitized; created if missing)");
  cmd->add_option("--input-seed", opts->input_seed, "Seed for generated inputs");
  NoDefaultShown(cmd->add_option("--threads", opts->threads,
                                 "Threads running a compiled artifact (default: as compiled)"));
  cmd->add_option("--verify", opts->verify_key,
                  "Refuse a compiled artifact unless it is signed with the Ed25519 key in this "
                  "public-key PEM file (loom compile --sign)");
  cmd->add_option("--device", opts->device,
                  "The GPU that runs a GPU artifact: cuda:N (default cuda:0)");
  AddJsonFlag(cmd, &opts->json,
              "One JSON object: outputs (name, dtype, shape, file written), latency, executor");
  cmd->callback([opts] { RunRun(*opts); });
}

}  // namespace loom::cli
