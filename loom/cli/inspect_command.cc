// `loom inspect MODEL`: operators, parameters, FLOPs and input/output types of a model.
#include <cstdio>
#include <map>

#include "absl/strings/str_format.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/graph/tasks.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct InspectOptions {
  ModelOptions model;
  bool json = false;
};

void RunInspect(const InspectOptions& opts) {
  auto loaded = LoadModelFromOptions(opts.model);
  FailIfError(loaded.status());
  const graph::Graph& g = loaded->graph;
  auto tasks = graph::ExtractTasks(g);
  FailIfError(tasks.status());

  std::map<std::string, int64_t> op_counts;
  for (const auto& node : g.nodes) op_counts[node.op_type]++;
  double tunable_flops = 0;
  for (const auto& t : *tasks) tunable_flops += t.flops * static_cast<double>(t.count);

  if (opts.json) {
    nlohmann::json j;
    j["model"] = loaded->source;
    j["name"] = g.name;
    j["opset"] = g.opset;
    j["parameters"] = g.NumParameters();
    j["nodes"] = g.nodes.size();
    j["flops"] = tunable_flops;
    j["operators"] = op_counts;
    for (const auto& in : g.inputs) {
      j["inputs"].push_back({{"name", in.name}, {"type", in.type.ToString()}});
    }
    j["bound_inputs"] = loaded->bound_inputs;
    for (const auto& out : g.outputs) {
      auto type = g.TypeOf(out.name);
      j["outputs"].push_back(
          {{"name", out.name}, {"type", type.ok() ? type->ToString() : out.type.ToString()}});
    }
    j["passes"] = {{"removed_identity", loaded->pass_stats.removed_identity},
                   {"folded_constants", loaded->pass_stats.folded_constants},
                   {"folded_batchnorms", loaded->pass_stats.folded_batchnorms}};
    PrintJson(j, 2);
    return;
  }
  std::printf("model       %s%s\n", loaded->source.c_str(),
              g.name.empty() ? "" : absl::StrCat(" (", g.name, ")").c_str());
  std::printf("opset       %lld\n", static_cast<long long>(g.opset));
  for (const auto& in : g.inputs) {
    std::printf("input       %s: %s\n", in.name.c_str(), in.type.ToString().c_str());
  }
  for (const std::string& name : loaded->bound_inputs) {
    std::printf("bound       %s (--bind: the model is specialized to its value)\n", name.c_str());
  }
  for (const auto& out : g.outputs) {
    auto type = g.TypeOf(out.name);
    std::printf("output      %s: %s\n", out.name.c_str(),
                (type.ok() ? *type : out.type).ToString().c_str());
  }
  std::printf("parameters  %s\n",
              absl::StrFormat("%d (%.1f MB fp32)", g.NumParameters(), g.NumParameters() * 4.0 / 1e6)
                  .c_str());
  std::printf("FLOPs       %.3f G (conv + dense, per inference)\n", tunable_flops / 1e9);
  std::printf(
      "nodes       %zu after passes (identity removed %lld, constants folded %lld, "
      "batch norms folded %lld)\n",
      g.nodes.size(), static_cast<long long>(loaded->pass_stats.removed_identity),
      static_cast<long long>(loaded->pass_stats.folded_constants),
      static_cast<long long>(loaded->pass_stats.folded_batchnorms));
  std::printf("operators\n");
  for (const auto& [op, n] : op_counts) {
    std::printf("  %-20s %lld\n", op.c_str(), static_cast<long long>(n));
  }
}

}  // namespace

void RegisterInspectCommand(CLI::App& app) {
  auto opts = std::make_shared<InspectOptions>();
  auto* cmd = app.add_subcommand("inspect", "Show a model's operators, parameters, FLOPs and I/O");
  AddModelOptions(cmd, &opts->model);
  AddJsonFlag(cmd, &opts->json, "Print JSON instead of text");
  cmd->callback([opts] { RunInspect(*opts); });
}

}  // namespace loom::cli
