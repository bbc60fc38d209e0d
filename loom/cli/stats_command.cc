// `loom stats`: the scheduler's view of `loom serve` from GetStats (an admin token): jobs by
// state, the ready queue of each resource class, every device with its leases and utilization,
// grant rate, dispatch and queue-wait latency, agents and the policy. A table, or with --json one
// object whose numbers are JSON numbers. The figures and their JSON are shared with `loom top`
// (top_command.cc) through stats_view.h.
#include <cstdio>
#include <memory>
#include <string>

#include "loom/api/job_client.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/stats_view.h"
#include "loom/service/client.h"

namespace loom::cli {
namespace {

struct StatsOptions {
  std::string server;
  bool json = false;
};

void RunStats(const StatsOptions& o) {
  service::QuietGrpcLogs();
  auto client = JobClient::Connect({.server = o.server, .token = TokenFromFlag()});
  FailIfError(client.status());
  absl::StatusOr<v1::ServerStats> stats = (*client)->Stats();
  FailIfError(stats.status());
  if (o.json) {
    PrintJson(StatsJson(*stats));
    return;
  }
  for (const std::string& line : StatsLines(*stats)) std::printf("%s\n", line.c_str());
}

}  // namespace

void RegisterStatsCommand(CLI::App& app) {
  auto o = std::make_shared<StatsOptions>();
  auto* cmd = app.add_subcommand(
      "stats", "The scheduler's view of loom serve: queues, devices, rates (admin token)");
  AddServerOption(cmd, &o->server);
  AddTokenFileOption(cmd, &Globals().token_file);
  AddJsonFlag(cmd, &o->json, "One JSON object (numbers as numbers)");
  cmd->callback([o] { RunStats(*o); });
}

}  // namespace loom::cli
