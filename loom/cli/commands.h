// Registration of the `loom` subcommands. Each subcommand lives in its own <name>_command.cc and
// adds itself to the root CLI11 app; main.cc only calls these. A command's callback returns
// through ExitWith so that every user error ends as one line on stderr and a non-zero exit.
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "loom/records/record_store.h"
#include "loom/toolchain/confine.h"

namespace loom::cli {

// Thrown from a subcommand callback to end the program: prints `status` as one line
// ("loom: error: ...") and exits with 1 (2 for usage errors). main() catches it.
struct CommandFailure {
  absl::Status status;
};
[[noreturn]] void Fail(absl::Status status);
// Fails if !status.ok().
void FailIfError(const absl::Status& status);
// Record databases as every command names them: a SQLite file or a `postgresql://` URI
// (tune::OpenRecordStore picks the store). RecordDbExists: a URI, or a file that exists.
// OpenExistingRecordDb fails with "record database 'DB' does not exist (make one with 'loom
// tune')" for a missing file, and with the store's error otherwise; OpenRecordDb creates a
// missing file (tune, records import).
bool RecordDbExists(const std::string& db);
std::unique_ptr<tune::RecordStore> OpenExistingRecordDb(const std::string& db);
std::unique_ptr<tune::RecordStore> OpenRecordDb(const std::string& db);
// --device "cuda:N" -> N ("" -> 0); fails with a usage error otherwise.
int CudaOrdinalOrFail(const std::string& device);

// `--no-confine` and `--measure-user` of the commands that run candidates (tune, tune-task,
// agent): the sandbox of measure workers and compilers (toolchain/confine.h, docs/SECURITY.md).
struct ConfineFlags {
  bool no_confine = false;
  std::string measure_user;
};
void AddConfineFlags(CLI::App* cmd, ConfineFlags* flags);
// The measure workers' sandbox the flags ask for.
tune::ConfineOptions ConfineOptionsFrom(const ConfineFlags& flags);
// With --no-confine, the warning `command` prints once at start (stderr).
void WarnIfUnconfined(const ConfineFlags& flags, const std::string& command);

// The flags every subcommand takes, before or after its name: `-v`, `--json`, `--server`,
// `--token-file`. main.cc puts them on the root app (AddGlobalFlags), whose subcommands fall
// through to it; a subcommand that shows one in its own --help adds it with AddJsonFlag /
// AddServerOption / AddTokenFileOption, bound to its own options, and ApplyGlobalFlags (run by
// the root before any subcommand's callback) copies a root value into every such binding.
struct GlobalFlags {
  bool verbose = false;
  bool json = false;
  std::string server;
  std::string token_file;
};
GlobalFlags& Globals();
void AddGlobalFlags(CLI::App& app);
void ApplyGlobalFlags();
void AddJsonFlag(CLI::App* cmd, bool* json, const std::string& help = "Print JSON instead of text");
// For a flag whose "not given" value is a sentinel (-1: not given): --help, the man page and the
// completions show no default for it, where they would show the sentinel. Its help says what
// happens without it. Returns `opt`.
CLI::Option* NoDefaultShown(CLI::Option* opt);
void AddServerOption(CLI::App* cmd, std::string* server,
                     const std::string& help =
                         "HOST:PORT of loom serve, or a list A:PORT,B:PORT (default: "
                         "$LOOM_SERVER, then the config file, then 127.0.0.1:7070)");
// The token in --token-file, read now; "" when the flag is not given (the client then falls back
// to $LOOM_TOKEN and the config file). Fails with the file's error.
std::string TokenFromFlag();
void AddTokenFileOption(CLI::App* cmd, std::string* token_file,
                        const std::string& help =
                            "File holding the token (default: $LOOM_TOKEN, "
                            "then the config file); never pass a token in "
                            "argv");

// "loom 0.1.0 (commit abc1234, RelWithDebInfo, g++ 12.2.0, cuda off)" and a line of build options:
// what `loom --version` and `loom version` print.
std::string VersionText();
void RegisterVersionCommand(CLI::App& app);
void RegisterSimulateCommand(CLI::App& app);
void RegisterInspectCommand(CLI::App& app);
void RegisterTasksCommand(CLI::App& app);
void RegisterRunCommand(CLI::App& app);
void RegisterZooCommand(CLI::App& app);
void RegisterTuneCommands(CLI::App& app);  // tune, tune-task
void RegisterBenchCommand(CLI::App& app);
void RegisterCompileCommand(CLI::App& app);
void RegisterRecordsCommand(CLI::App& app);
void RegisterExperimentCommand(CLI::App& app);
void RegisterServeCommand(CLI::App& app);
void RegisterJobCommands(CLI::App& app);   // submit, jobs, status, watch, cancel, result, logs
void RegisterAgentCommand(CLI::App& app);  // agent (the service's per-host agent)
void RegisterCacheCommand(CLI::App& app);  // cache info|prune (the kernel cache)
void RegisterStatsCommand(CLI::App& app);  // stats (the scheduler's view of loom serve)
void RegisterTopCommand(CLI::App& app);    // top (a refreshing view of jobs and devices)
void RegisterFleetCommand(CLI::App& app);  // fleet slurm (agents started through Slurm)
// completion bash|zsh and the hidden help-man, generated from `app`: register it last.
void RegisterCompletionCommand(CLI::App& app);

}  // namespace loom::cli
