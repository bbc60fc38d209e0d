// `loom zoo list` and `loom zoo export NAME -o FILE.onnx`: the built-in models.
#include <cstdio>
#include <memory>

#include "absl/strings/str_join.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/graph/onnx_exporter.h"
#include "loom/graph/zoo.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct ZooExportOptions {
  std::string name;
  std::string output;
  int64_t batch = 1;
  uint64_t seed = 0;
  bool json = false;
};

void RunZooList(bool json) {
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& m : graph::ListZooModels()) {
      j.push_back(
          {{"name", m.name}, {"input_shape", m.input_shape}, {"description", m.description}});
    }
    PrintJson(j, 2);
    return;
  }
  std::printf("%-14s %-18s %s\n", "name", "input", "description");
  for (const auto& m : graph::ListZooModels()) {
    std::printf("%-14s %-18s %s\n", m.name.c_str(), graph::ShapeToString(m.input_shape).c_str(),
                m.description.c_str());
  }
}

void RunZooExport(const ZooExportOptions& opts) {
  auto g = graph::BuildZooModel(opts.name, {.batch = opts.batch, .seed = opts.seed});
  FailIfError(g.status());
  FailIfError(graph::ExportOnnxFile(*g, opts.output));
  if (opts.json) {
    PrintJson(
        {{"output", opts.output}, {"nodes", g->nodes.size()}, {"parameters", g->NumParameters()}});
    return;
  }
  std::printf("wrote %s (%zu nodes, %lld parameters)\n", opts.output.c_str(), g->nodes.size(),
              static_cast<long long>(g->NumParameters()));
}

}  // namespace

void RegisterZooCommand(CLI::App& app) {
  auto* zoo = app.add_subcommand("zoo", "Built-in models with seeded weights");
  zoo->require_subcommand(1);
  auto list_json = std::make_shared<bool>(false);
  auto* list = zoo->add_subcommand("list", "List the built-in models");
  AddJsonFlag(list, list_json.get(), "A JSON array");
  list->callback([list_json] { RunZooList(*list_json); });
  auto opts = std::make_shared<ZooExportOptions>();
  auto* exp = zoo->add_subcommand("export", "Write a built-in model as an ONNX file");
  exp->add_option("NAME", opts->name, "Model name (see 'loom zoo list')")->required();
  exp->add_option("-o,--output", opts->output, "Output .onnx file")->required();
  exp->add_option("--batch", opts->batch, "Batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  exp->add_option("--weights-seed", opts->seed,
                  "Weight seed (as --weights-seed of the other commands)");
  AddJsonFlag(exp, &opts->json, "One JSON object");
  exp->callback([opts] { RunZooExport(*opts); });
}

}  // namespace loom::cli
