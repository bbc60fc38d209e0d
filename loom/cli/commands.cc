#include "loom/cli/commands.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "loom/records/postgres.h"
#include "loom/service/client.h"

namespace loom::cli {

void Fail(absl::Status status) { throw CommandFailure{std::move(status)}; }

bool RecordDbExists(const std::string& db) {
  std::error_code ec;
  return tune::IsPostgresUri(db) || std::filesystem::is_regular_file(db, ec);
}

std::unique_ptr<tune::RecordStore> OpenExistingRecordDb(const std::string& db) {
  if (!RecordDbExists(db)) {
    Fail(absl::NotFoundError(
        absl::StrCat("record database '", db, "' does not exist (make one with 'loom tune')")));
  }
  return OpenRecordDb(db);
}

std::unique_ptr<tune::RecordStore> OpenRecordDb(const std::string& db) {
  absl::StatusOr<std::unique_ptr<tune::RecordStore>> store = tune::OpenRecordStore(db);
  FailIfError(store.status());
  return *std::move(store);
}

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

namespace {

// The bindings of subcommands' own --json, --server and --token-file (ApplyGlobalFlags).
struct GlobalBindings {
  std::vector<bool*> json;
  std::vector<std::string*> server;
  std::vector<std::string*> token_file;
};
GlobalBindings& Bindings() {
  static GlobalBindings* b = new GlobalBindings;
  return *b;
}

}  // namespace

GlobalFlags& Globals() {
  static GlobalFlags* g = new GlobalFlags;
  return *g;
}

void AddGlobalFlags(CLI::App& app) {
  GlobalFlags& g = Globals();
  app.fallthrough();  // a subcommand passes the flags it does not know to the root
  app.add_flag("-v,--verbose", g.verbose, "Log progress details to stderr");
  app.add_flag("--json", g.json, "Print JSON instead of text (commands that print results)");
  app.add_option("--server", g.server,
                 "HOST:PORT of loom serve, or a list A:PORT,B:PORT of a daemon and its standbys, "
                 "for the commands that talk to it (default: $LOOM_SERVER, then the config file, "
                 "then 127.0.0.1:7070)");
  app.add_option("--token-file", g.token_file,
                 "File holding the token sent to loom serve (default: $LOOM_TOKEN, then the "
                 "config file)");
}

void ApplyGlobalFlags() {
  const GlobalFlags& g = Globals();
  GlobalBindings& b = Bindings();
  if (g.json) {
    for (bool* j : b.json) *j = true;
  }
  for (std::string* s : b.server) {
    if (s->empty()) *s = g.server;
  }
  for (std::string* t : b.token_file) {
    if (t->empty()) *t = g.token_file;
  }
}

void AddJsonFlag(CLI::App* cmd, bool* json, const std::string& help) {
  cmd->add_flag("--json", *json, help);
  Bindings().json.push_back(json);
}

CLI::Option* NoDefaultShown(CLI::Option* opt) {
  // The default string is only shown: the bound variable keeps its sentinel.
  return opt->default_str("");
}

void AddServerOption(CLI::App* cmd, std::string* server, const std::string& help) {
  cmd->add_option("--server", *server, help);
  Bindings().server.push_back(server);
}

std::string TokenFromFlag() {
  if (Globals().token_file.empty()) return "";
  absl::StatusOr<std::string> token = service::ReadTokenFile(Globals().token_file);
  FailIfError(token.status());
  return *std::move(token);
}

void AddTokenFileOption(CLI::App* cmd, std::string* token_file, const std::string& help) {
  cmd->add_option("--token-file", *token_file, help);
  Bindings().token_file.push_back(token_file);
}

}  // namespace loom::cli
