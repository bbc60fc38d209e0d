// The `loom` binary: parses the command line and dispatches to the subcommands registered in
// commands.h. Errors from user input end as one line on stderr and a non-zero exit code.
#include <cstdio>
#include <string>

#include "loom/base/logging.h"
#include "loom/cli/commands.h"
#include "loom/toolchain/cuda_measure_worker.h"
#include "loom/toolchain/measure_worker.h"

// The command runs inside the try below, which turns any exception into a one-line error;
// before it, only the subcommands are registered.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  // The measurer's sandbox child is this same binary: answer its pipe protocol, nothing else.
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kMeasureWorkerArg) {
    return loom::tune::RunMeasureWorker(0, 1);
  }
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kCudaMeasureWorkerArg) {
    return loom::tune::RunCudaMeasureWorker(0, 1);
  }
  CLI::App app{"Loom: autotune neural networks, many jobs at once under a load-aware scheduler",
               "loom"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  app.set_version_flag("--version", loom::cli::VersionText(),
                       "Print version, commit and build options");
  // Every option's default shows in --help; subcommands inherit this.
  app.option_defaults()->always_capture_default();
  loom::cli::AddGlobalFlags(app);

  // Runs after parsing, before any subcommand's callback.
  app.parse_complete_callback([] {
    loom::cli::ApplyGlobalFlags();
    loom::base::SetLogLevel(loom::cli::Globals().verbose ? loom::base::LogLevel::kInfo
                                                         : loom::base::LogLevel::kWarning);
  });
  loom::cli::RegisterInspectCommand(app);
  loom::cli::RegisterTasksCommand(app);
  loom::cli::RegisterRunCommand(app);
  loom::cli::RegisterZooCommand(app);
  loom::cli::RegisterTuneCommands(app);
  loom::cli::RegisterBenchCommand(app);
  loom::cli::RegisterCompileCommand(app);
  loom::cli::RegisterRecordsCommand(app);
  loom::cli::RegisterExperimentCommand(app);
  loom::cli::RegisterAgentCommand(app);
  loom::cli::RegisterServeCommand(app);
  loom::cli::RegisterJobCommands(app);
  loom::cli::RegisterStatsCommand(app);
  loom::cli::RegisterTopCommand(app);
  loom::cli::RegisterFleetCommand(app);
  loom::cli::RegisterSimulateCommand(app);
  loom::cli::RegisterCacheCommand(app);
  loom::cli::RegisterVersionCommand(app);
  loom::cli::RegisterCompletionCommand(app);

  // CLI11 reports an unknown first word as "a subcommand is required"; name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known |= sub->check_name(argv[1]);
    if (!known) {
      std::fprintf(stderr, "loom: error: unknown subcommand '%s' (see 'loom --help')\n", argv[1]);
      return 2;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, no usage dump: the user can ask for --help.
    std::fprintf(stderr, "loom: error: %s (see 'loom --help')\n", e.what());
    return 2;
  } catch (const loom::cli::CommandFailure& f) {
    std::fprintf(stderr, "loom: error: %s\n", std::string(f.status.message()).c_str());
    return f.status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    // A bug or an exhausted resource (bad_alloc): one line and a failed exit, not an abort.
    std::fprintf(stderr, "loom: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
