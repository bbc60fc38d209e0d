#include "loom/cli/commands.h"

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom::cli {

void Fail(absl::Status status) { throw CommandFailure{std::move(status)}; }

void FailIfError(const absl::Status& status) {
  if (!status.ok()) Fail(status);
}

int CudaOrdinalOrFail(const std::string& device) {
  if (device.empty()) return 0;
  int n = -1;
  if (!absl::StartsWith(device, "cuda:") || !absl::SimpleAtoi(device.substr(5), &n) || n < 0) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("bad --device '", device, "': expected cuda:N, e.g. cuda:0")));
  }
  return n;
}

void RegisterVersionCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "Print Loom's version");
  cmd->callback([] { std::printf("loom 0.1.0\n"); });
}

}  // namespace loom::cli
