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

void AddConfineFlags(CLI::App* cmd, ConfineFlags* flags) {
  cmd->add_flag("--no-confine", flags->no_confine,
                "Run candidates unconfined: the measure worker keeps this process's user, "
                "environment, network and files (for hosts whose kernel refuses namespaces, "
                "Landlock or seccomp; see docs/SECURITY.md)");
  cmd->add_option("--measure-user", flags->measure_user,
                  "Unprivileged user the measure worker runs as when started as root (default: "
                  "loom-measure if it exists, else nobody)")
      ->excludes("--no-confine");
}

tune::ConfineOptions ConfineOptionsFrom(const ConfineFlags& flags) {
  return {.enabled = !flags.no_confine, .user = flags.measure_user};
}

void WarnIfUnconfined(const ConfineFlags& flags, const std::string& command) {
  if (!flags.no_confine) return;
  std::fprintf(stderr,
               "%s: warning: --no-confine: candidates run unconfined, as this process's user, "
               "with its environment (tokens included), network and files\n",
               command.c_str());
}

void RegisterVersionCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "Print Loom's version");
  cmd->callback([] { std::printf("loom 0.1.0\n"); });
}

}  // namespace loom::cli
