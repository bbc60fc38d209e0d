// `loom fleet slurm --nodes N [--partition P] [--gpus-per-node G] [--time T] [--cpus-per-node C]
// [--agent-token-file F] [--wait-timeout S] [--agent-arg ARG ...] [--sbatch-arg ARG ...]`: submits
// scripts/slurm/loom-agents.sbatch (built into the binary as slurm_script.h) with `sbatch`, so
// that Slurm starts one `loom agent` per node of the allocation, prints the Slurm job id, then
// waits (up to --wait-timeout) until those N agents have registered with `loom serve` and reports
// them. The agents are found by name (slurm-JOBID-NODE, set by the script) in ListJobs'
// resources, so the caller's own token is enough (any user's). The agents' tokens come from a file
// only its owner may read, one line per node; the script hands each agent its line through a file
// descriptor, never argv. sbatch gets the daemon address, the tokens file's path and this binary's
// path in its environment (exported to the job), never the caller's own LOOM_TOKEN. docs/FLEET.md.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "loom/api/job_client.h"
#include "loom/base/status_macros.h"
#include "loom/cli/commands.h"
#include "loom/service/client.h"
#include "nlohmann/json.hpp"
#include "slurm_script.h"

extern char** environ;

namespace loom::cli {
namespace {

namespace fs = std::filesystem;

struct FleetSlurmFlags {
  int nodes = 0;
  std::string partition;
  int gpus_per_node = 0;
  std::string time;
  int cpus_per_node = 0;  // 0: whole nodes (--exclusive)
  std::string server;
  std::string agent_server;  // as the nodes reach the daemon; default: the daemon's address
  std::string agent_token_file;
  std::string output;
  std::string job_name = "loom-agents";
  std::vector<std::string> agent_args;
  std::vector<std::string> sbatch_args;
  double wait_timeout = 300;
  bool print_script = false;
  bool json = false;
};

// A private temporary folder, removed with everything in it.
struct TempDir {
  std::string path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

absl::StatusOr<std::unique_ptr<TempDir>> MakeTempDir() {
  std::string tmpl = (fs::temp_directory_path() / "loom-fleet-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("fleet slurm: cannot create a temporary folder: ", std::strerror(errno)));
  }
  auto dir = std::make_unique<TempDir>();
  dir->path = tmpl;
  return dir;
}

// The first executable `name` on PATH; empty when there is none.
std::string FindOnPath(const std::string& name) {
  if (absl::StrContains(name, '/')) return access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  for (absl::string_view dir :
       absl::StrSplit(path != nullptr ? path : "", ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct ToolRun {
  int wait_status = 0;
  std::string out;
  std::string err;
  bool ok() const { return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0; }
};

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first non-blank line of a tool's stderr (its refusal), bounded.
std::string FirstLine(const std::string& text) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) return std::string(line.substr(0, 300));
  }
  return "(no message)";
}

// Runs a Slurm client command (argv[0] an absolute path) with `env` as its whole environment,
// stdin from /dev/null, stdout and stderr captured in `dir`; killed past `timeout` (sbatch keeps
// retrying while slurmctld is unreachable).
absl::StatusOr<ToolRun> RunTool(const std::vector<std::string>& argv,
                                const std::vector<std::string>& env, const std::string& dir,
                                absl::Duration timeout) {
  const std::string out_path = dir + "/out", err_path = dir + "/err";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("fleet slurm: cannot run ", argv[0], ": ", std::strerror(rc)));
  }
  ToolRun run;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const pid_t r = waitpid(pid, &run.wait_status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("waitpid: ", std::strerror(errno)));
    }
    if (absl::Now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &run.wait_status, 0);
      return absl::DeadlineExceededError(absl::StrCat(
          "fleet slurm: ", fs::path(argv[0]).filename().string(), " did not answer within ",
          absl::FormatDuration(timeout), " (is slurmctld up?)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  run.out = ReadFileText(out_path);
  run.err = ReadFileText(err_path);
  return run;
}

// The agents' tokens file: a regular file only its owner may read, holding at least `nodes`
// tokens (one per line; blank and '#' lines skipped, as the batch script reads it).
absl::Status CheckAgentTokens(const std::string& path, int nodes) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("fleet slurm: cannot read the agent tokens file '",
                                            path, "': ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fleet slurm: the agent tokens file '", path, "' is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "fleet slurm: the agent tokens file '%s' is readable by others (mode %03o): chmod 600 it",
        path, st.st_mode & 0777));
  }
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("fleet slurm: cannot read the agent tokens file '", path, "'"));
  }
  int tokens = 0, line_no = 0;
  std::string line;
  while (std::getline(in, line) && line_no < 1000000) {
    ++line_no;
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (t.empty() || t[0] == '#') continue;
    if (t.find_first_of(" \t") != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("fleet slurm: the agent tokens file '", path,
                                                     "' line ", line_no,
                                                     " holds spaces (one token per line)"));
    }
    ++tokens;
  }
  if (tokens < nodes) {
    return absl::InvalidArgumentError(
        absl::StrCat("fleet slurm: the agent tokens file '", path, "' holds ", tokens,
                     " token(s) for ", nodes, " node(s): one agent token per node, one per line"));
  }
  return absl::OkStatus();
}

// sbatch's environment: this one, less the caller's own token (the agents have theirs), plus what
// the batch script reads.
std::vector<std::string> SbatchEnvironment(
    const std::vector<std::pair<std::string, std::string>>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view kv(*e);
    const absl::string_view key = kv.substr(0, kv.find('='));
    if (key == "LOOM_TOKEN") continue;
    bool replaced = false;
    for (const auto& [k, v] : set) replaced |= key == k;
    if (!replaced) env.emplace_back(kv);
  }
  for (const auto& [k, v] : set) env.push_back(absl::StrCat(k, "=", v));
  return env;
}

// The job id of `sbatch --parsable` ("123" or "123;cluster").
absl::StatusOr<std::string> ParseJobId(const std::string& out) {
  std::string last;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipWhitespace())) {
    last = std::string(absl::StripAsciiWhitespace(line));
  }
  const std::string id = last.substr(0, last.find(';'));
  int64_t n = 0;
  if (id.empty() || !absl::SimpleAtoi(id, &n) || n <= 0) {
    return absl::InternalError(
        absl::StrCat("fleet slurm: sbatch printed no job id (output: '", FirstLine(out), "')"));
  }
  return id;
}

bool Ended(const std::string& state) {
  for (const char* s : {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                        "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}) {
    if (state == s) return true;
  }
  return false;
}

void RunFleetSlurm(const FleetSlurmFlags& f) {
  if (f.print_script) {
    std::fputs(kLoomAgentsSbatch, stdout);
    return;
  }
  if (f.nodes < 1) Fail(absl::InvalidArgumentError("fleet slurm: --nodes N (N >= 1) is required"));
  if (!(f.wait_timeout >= 0.1 && f.wait_timeout <= 7 * 86400.0)) {  // NaN too
    Fail(absl::InvalidArgumentError("fleet slurm: --wait-timeout must be 0.1 to 604800 seconds"));
  }
  std::string tokens_path;
  if (!f.agent_token_file.empty()) {
    std::error_code ec;
    tokens_path = fs::absolute(f.agent_token_file, ec).string();
    FailIfError(CheckAgentTokens(tokens_path, f.nodes));
  }
  const std::string sbatch = FindOnPath("sbatch");
  if (sbatch.empty()) {
    Fail(absl::FailedPreconditionError(
        "fleet slurm: sbatch not found on PATH: run on a Slurm submit host (Debian: apt-get "
        "install slurm-client)"));
  }

  // The daemon first: no allocation for a daemon that is down or refuses this token.
  service::QuietGrpcLogs();
  absl::StatusOr<service::ClientConfig> config = service::ResolveClientConfig(f.server);
  FailIfError(config.status());
  JobClientOptions copts{.server = config->server};
  if (!Globals().token_file.empty()) {
    absl::StatusOr<std::string> token = service::ReadTokenFile(Globals().token_file);
    FailIfError(token.status());
    copts.token = *token;
  }
  absl::StatusOr<std::unique_ptr<JobClient>> client = JobClient::Connect(copts);
  FailIfError(client.status());
  FailIfError((*client)->List(/*all_users=*/false, /*include_ended=*/false).status());

  absl::StatusOr<std::unique_ptr<TempDir>> tmp = MakeTempDir();
  FailIfError(tmp.status());
  const std::string script = (*tmp)->path + "/loom-agents.sbatch";
  {
    std::ofstream out(script);
    out << kLoomAgentsSbatch;
    if (!out.flush()) {
      Fail(absl::FailedPreconditionError(absl::StrCat("fleet slurm: cannot write ", script)));
    }
  }
  std::error_code ec;
  const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  std::vector<std::pair<std::string, std::string>> set = {
      {"LOOM_SERVER", f.agent_server.empty() ? config->server : f.agent_server},
      {"LOOM_BIN", self.empty() ? "loom" : self}};
  if (!tokens_path.empty()) set.emplace_back("LOOM_AGENT_TOKENS", tokens_path);
  if (!config->tls_ca.empty()) {
    set.emplace_back("LOOM_TLS_CA", fs::absolute(config->tls_ca, ec).string());
  }
  const std::string output =
      fs::absolute(f.output.empty() ? "loom-agents-%j.out" : f.output, ec).string();

  std::vector<std::string> argv = {sbatch,
                                   "--parsable",
                                   "--job-name=" + f.job_name,
                                   absl::StrCat("--nodes=", f.nodes),
                                   "--ntasks-per-node=1",
                                   "--output=" + output};
  if (f.cpus_per_node > 0) {
    argv.push_back(absl::StrCat("--cpus-per-task=", f.cpus_per_node));
  } else {
    argv.push_back("--exclusive");
  }
  if (!f.partition.empty()) argv.push_back("--partition=" + f.partition);
  if (f.gpus_per_node > 0) argv.push_back(absl::StrCat("--gres=gpu:", f.gpus_per_node));
  if (!f.time.empty()) argv.push_back("--time=" + f.time);
  argv.insert(argv.end(), f.sbatch_args.begin(), f.sbatch_args.end());
  argv.push_back(script);
  argv.push_back("--");
  argv.insert(argv.end(), f.agent_args.begin(), f.agent_args.end());

  absl::StatusOr<ToolRun> run =
      RunTool(argv, SbatchEnvironment(set), (*tmp)->path, absl::Seconds(60));
  FailIfError(run.status());
  if (!run->ok()) {
    Fail(absl::FailedPreconditionError(
        absl::StrCat("fleet slurm: sbatch refused the job: ", FirstLine(run->err))));
  }
  absl::StatusOr<std::string> job = ParseJobId(run->out);
  FailIfError(job.status());
  const std::string output_file = absl::StrReplaceAll(output, {{"%j", *job}});
  if (!f.json) {
    std::printf("slurm job %s: %d node(s), agents log to %s\n", job->c_str(), f.nodes,
                output_file.c_str());
    std::fflush(stdout);
  }

  // Until the allocation's agents are registered, the job has ended, or the deadline.
  const std::string prefix = absl::StrCat("slurm-", *job, "-");
  const std::string squeue = FindOnPath("squeue");
  const absl::Time deadline = absl::Now() + absl::Seconds(f.wait_timeout);
  absl::Time next_squeue = absl::Now() + absl::Seconds(2);
  std::string state = "PENDING";
  std::vector<v1::ResourceUse> agents;
  while (true) {
    absl::StatusOr<v1::ListJobsResponse> list = (*client)->List(false, false);
    FailIfError(list.status());
    agents.clear();
    for (const v1::ResourceUse& r : list->resources()) {
      if (r.alive() && absl::StartsWith(r.hostname(), prefix)) agents.push_back(r);
    }
    if (static_cast<int>(agents.size()) >= f.nodes) break;
    if (!squeue.empty() && absl::Now() >= next_squeue) {
      next_squeue = absl::Now() + absl::Seconds(2);
      absl::StatusOr<ToolRun> q = RunTool({squeue, "--noheader", "--jobs=" + *job, "--format=%T"},
                                          SbatchEnvironment({}), (*tmp)->path, absl::Seconds(30));
      if (q.ok() && q->ok()) {
        std::string s(absl::StripAsciiWhitespace(q->out));
        if (s.empty()) s = "ENDED";
        state = s;
        if (s == "ENDED" || Ended(s)) {
          Fail(absl::FailedPreconditionError(
              absl::StrCat("fleet slurm: Slurm job ", *job, " ended (", s, ") with ", agents.size(),
                           " of ", f.nodes, " agent(s) registered: see ", output_file)));
        }
      }
    }
    if (absl::Now() >= deadline) {
      Fail(absl::DeadlineExceededError(absl::StrCat(
          "fleet slurm: ", agents.size(), " of ", f.nodes, " agent(s) of Slurm job ", *job,
          " registered within ", f.wait_timeout, " s (job ", state, "; its output: ", output_file,
          "); the job keeps running: scancel ", *job, " to end it")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }

  if (f.json) {
    nlohmann::json j;
    j["slurm_job"] = *job;
    j["output"] = output_file;
    j["agents"] = nlohmann::json::array();
    for (const v1::ResourceUse& a : agents) {
      j["agents"].push_back({{"agent_id", a.agent_id()},
                             {"hostname", a.hostname()},
                             {"cpu_slots", a.cpu_slots()},
                             {"devices", a.devices()}});
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%zu agent(s) of slurm job %s registered:\n", agents.size(), job->c_str());
  for (const v1::ResourceUse& a : agents) {
    std::printf("  %s  %s  cpu_slots=%d devices=%d\n", a.agent_id().c_str(), a.hostname().c_str(),
                a.cpu_slots(), a.devices());
  }
}

}  // namespace

void RegisterFleetCommand(CLI::App& app) {
  CLI::App* fleet = app.add_subcommand("fleet", "Start agents through a cluster's batch system");
  fleet->require_subcommand(1);
  auto f = std::make_shared<FleetSlurmFlags>();
  CLI::App* cmd = fleet->add_subcommand(
      "slurm",
      "Submit scripts/slurm/loom-agents.sbatch: one `loom agent` per node of a Slurm allocation; "
      "wait until they have registered with loom serve");
  NoDefaultShown(cmd->add_option("--nodes", f->nodes, "Nodes to allocate (one agent each)"))
      ->check(CLI::PositiveNumber);
  cmd->add_option("--partition", f->partition, "Slurm partition (default: the cluster's)");
  cmd->add_option("--gpus-per-node", f->gpus_per_node,
                  "GPUs per node (GRES gpu:G), each a cuda:N device of its agent")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--time", f->time, "Slurm time limit (sbatch --time: MINUTES, HH:MM:SS, D-HH)");
  NoDefaultShown(cmd->add_option("--cpus-per-node", f->cpus_per_node,
                                 "CPUs per node (default: whole nodes, sbatch --exclusive)"))
      ->check(CLI::NonNegativeNumber);
  AddServerOption(cmd, &f->server);
  cmd->add_option("--agent-server", f->agent_server,
                  "HOST:PORT the nodes reach the daemon at (default: --server)");
  cmd->add_option("--agent-token-file", f->agent_token_file,
                  "The agents' tokens, one per line (node i takes line i), a file only you may "
                  "read; the caller's own token is --token-file or $LOOM_TOKEN");
  cmd->add_option("--output", f->output,
                  "The job's output file, sbatch %j patterns allowed (default: "
                  "./loom-agents-%j.out)");
  cmd->add_option("--job-name", f->job_name, "Slurm job name");
  cmd->add_option("--agent-arg", f->agent_args,
                  "Extra `loom agent` flag, repeatable (e.g. --agent-arg=--cache-dir=/scratch/k)")
      ->allow_extra_args(false);
  cmd->add_option("--sbatch-arg", f->sbatch_args,
                  "Extra sbatch flag, repeatable (e.g. --sbatch-arg=--account=A)")
      ->allow_extra_args(false);
  cmd->add_option("--wait-timeout", f->wait_timeout,
                  "Seconds to wait for the agents to register (default 300)")
      ->check(CLI::Range(0.1, 7 * 86400.0));
  cmd->add_flag("--print-script", f->print_script, "Print the batch script and exit");
  AddJsonFlag(cmd, &f->json, "Print the job id and agents as one JSON object");
  cmd->callback([f] { RunFleetSlurm(*f); });
}

}  // namespace loom::cli
