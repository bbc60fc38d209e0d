// `loom tasks MODEL`: the unique tunable workloads of a model (what `loom tune` will search).
#include <cstdio>

#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/graph/tasks.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct TasksOptions {
  ModelOptions model;
  bool json = false;
};

void RunTasks(const TasksOptions& opts) {
  auto loaded = LoadModelFromOptions(opts.model);
  FailIfError(loaded.status());
  auto tasks = graph::ExtractTasks(loaded->graph);
  FailIfError(tasks.status());

  double total = 0;
  for (const auto& t : *tasks) total += t.flops * static_cast<double>(t.count);
  if (opts.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& t : *tasks) {
      j.push_back({{"kind", graph::TaskKindName(t.workload.kind)},
                   {"key", t.key},
                   {"hash", t.hash},
                   {"count", t.count},
                   {"flops", t.flops},
                   {"nodes", t.nodes},
                   {"absorbed", t.absorbed}});
    }
    PrintJson(j, 2);
    return;
  }
  std::printf("%3s  %-18s %5s %10s %7s  %s\n", "#", "kind", "count", "GFLOP", "share", "key");
  for (size_t i = 0; i < tasks->size(); ++i) {
    const auto& t = (*tasks)[i];
    double share = total > 0 ? 100.0 * t.flops * static_cast<double>(t.count) / total : 0.0;
    std::printf("%3zu  %-18s %5lld %10.4f %6.1f%%  %s\n", i,
                graph::TaskKindName(t.workload.kind).c_str(), static_cast<long long>(t.count),
                t.flops / 1e9, share, t.key.c_str());
  }
  std::printf("%zu tasks, %.3f GFLOP per inference\n", tasks->size(), total / 1e9);
  size_t absorbed = 0;
  for (const auto& t : *tasks) absorbed += t.absorbed.size();
  if (absorbed > 0) {
    std::printf("%zu Transpose nodes are read in place by the matrix products (trans_a/trans_b)\n",
                absorbed);
  }
}

}  // namespace

void RegisterTasksCommand(CLI::App& app) {
  auto opts = std::make_shared<TasksOptions>();
  auto* cmd = app.add_subcommand("tasks", "List a model's unique tunable workloads");
  AddModelOptions(cmd, &opts->model);
  AddJsonFlag(cmd, &opts->json, "Print JSON instead of a table");
  cmd->callback([opts] { RunTasks(*opts); });
}

}  // namespace loom::cli
