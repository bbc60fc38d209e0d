#include "loom/cli/commands.h"

#include <cstdio>

namespace loom::cli {

void Fail(absl::Status status) { throw CommandFailure{std::move(status)}; }

void FailIfError(const absl::Status& status) {
  if (!status.ok()) Fail(status);
}

void RegisterVersionCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "Print Loom's version");
  cmd->callback([] { std::printf("loom 0.1.0\n"); });
}

}  // namespace loom::cli
