// `loom simulate SPEC.yaml [-o DIR] [--json] [--jobs N,...] [--policy NAME,...]`: runs the
// discrete-event simulator (sim/) for each policy and job count, prints a summary table (or the
// results JSON), and writes results.json, one SVG Gantt chart per run and trace.json (every run as
// a Chrome trace, for Perfetto) into DIR.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/sched/policy.h"
#include "loom/sim/report.h"
#include "loom/sim/simulator.h"
#include "loom/sim/spec.h"

namespace loom::cli {
namespace {

struct SimulateOptions {
  std::string spec;
  std::string out_dir;
  bool json = false;
  std::vector<int> jobs;
  std::vector<std::string> policies;
};

absl::Status WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path.string(), "'"));
  return absl::OkStatus();
}

void RunSimulate(const SimulateOptions& opts) {
  auto spec = sim::LoadSimSpec(opts.spec);
  FailIfError(spec.status());
  if (!opts.jobs.empty()) {
    for (int n : opts.jobs) {
      if (n < 1) Fail(absl::InvalidArgumentError("--jobs values must be >= 1"));
    }
    spec->sweep_jobs = opts.jobs;
  }
  if (!opts.policies.empty()) {
    for (const std::string& p : opts.policies) FailIfError(sched::MakePolicy(p).status());
    spec->policies = opts.policies;
  }
  auto results = sim::SimulateAll(*spec);
  FailIfError(results.status());
  nlohmann::json json = sim::ResultsToJson(*results);
  json["spec"] = opts.spec;
  json["seed"] = spec->seed;
  if (opts.json) {
    PrintJson(json, 2);
  } else {
    std::printf("%s", sim::FormatSummaryTable(*results).c_str());
  }
  if (opts.out_dir.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(opts.out_dir, ec);
  if (ec) {
    Fail(absl::PermissionDeniedError(
        absl::StrCat("cannot create output directory '", opts.out_dir, "': ", ec.message())));
  }
  std::filesystem::path dir(opts.out_dir);
  FailIfError(WriteFile(dir / "results.json", json.dump(2) + "\n"));
  FailIfError(WriteFile(dir / "summary.txt", sim::FormatSummaryTable(*results)));
  // The charts of one job count share a time axis (the longest makespan among the policies).
  std::map<int, double> axis_end;
  for (const sim::SimResult& r : *results) {
    axis_end[r.jobs] = std::max(axis_end[r.jobs], r.metrics.makespan_s);
  }
  for (const sim::SimResult& r : *results) {
    FailIfError(WriteFile(dir / absl::StrCat("gantt_", r.policy, "_", r.jobs, "jobs.svg"),
                          sim::GanttSvg(r, axis_end[r.jobs])));
  }
  FailIfError(WriteFile(dir / "trace.json", sim::SimTrace(*results).ToJson().dump() + "\n"));
  if (!opts.json) std::printf("wrote %s\n", opts.out_dir.c_str());
}

}  // namespace

void RegisterSimulateCommand(CLI::App& app) {
  auto opts = std::make_shared<SimulateOptions>();
  auto* cmd = app.add_subcommand(
      "simulate", "Simulate tuning jobs under each scheduling policy (discrete-event)");
  cmd->add_option("SPEC", opts->spec, "Simulation spec (YAML; see examples/sim/)")->required();
  cmd->add_option("-o,--output", opts->out_dir,
                  "Write results.json, summary.txt, SVG Gantt charts and trace.json here");
  AddJsonFlag(cmd, &opts->json, "Print the results JSON instead of the table");
  cmd->add_option("--jobs", opts->jobs, "Job counts to sweep (replaces the spec's sweep_jobs)")
      ->delimiter(',');
  cmd->add_option("--policy", opts->policies, "Policies to run (replaces the spec's policies)")
      ->delimiter(',');
  cmd->callback([opts] { RunSimulate(*opts); });
}

}  // namespace loom::cli
