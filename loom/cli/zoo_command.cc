// `loom zoo list` and `loom zoo export NAME -o FILE.onnx`: the built-in models.
#include <cstdio>

#include "absl/strings/str_join.h"
#include "loom/cli/commands.h"
#include "loom/graph/onnx_exporter.h"
#include "loom/graph/zoo.h"

namespace loom::cli {
namespace {

struct ZooExportOptions {
  std::string name;
  std::string output;
  int64_t batch = 1;
  uint64_t seed = 0;
};

void RunZooList() {
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
  std::printf("wrote %s (%zu nodes, %lld parameters)\n", opts.output.c_str(), g->nodes.size(),
              static_cast<long long>(g->NumParameters()));
}

}  // namespace

void RegisterZooCommand(CLI::App& app) {
  auto* zoo = app.add_subcommand("zoo", "Built-in models with seeded weights");
  zoo->require_subcommand(1);
  zoo->add_subcommand("list", "List the built-in models")->callback([] { RunZooList(); });
  auto opts = std::make_shared<ZooExportOptions>();
  auto* exp = zoo->add_subcommand("export", "Write a built-in model as an ONNX file");
  exp->add_option("NAME", opts->name, "Model name (see 'loom zoo list')")->required();
  exp->add_option("-o,--output", opts->output, "Output .onnx file")->required();
  exp->add_option("--batch", opts->batch, "Batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  exp->add_option("--seed", opts->seed, "Weight seed");
  exp->callback([opts] { RunZooExport(*opts); });
}

}  // namespace loom::cli
