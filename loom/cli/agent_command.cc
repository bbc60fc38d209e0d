// `loom agent --server HOST:PORT [--device cpu:1|cpu:2-3|cuda:0 ...] [--cpu-slots N]
// [--token-file FILE] [--name NAME] [--tls-ca FILE] [--cache-dir DIR] [--no-lend-device-cores]
// [--no-confine] [--measure-user U]`: runs this host's agent (agent/agent.h) until SIGTERM or
// SIGINT: registers its CPU slots and devices with `loom serve`, runs the stages it is leased and
// reports them. Without --device, the last core is the measurement device and the other cores are
// CPU slots (as engine::DefaultLayout); CPU stages are pinned to the cores no device uses, and (by
// default, as the embedded engine) to a cpu device's cores while it does not measure. A cuda:N
// device launches its kernels from the last core no other device uses (which then runs no CPU
// stage; with one core left, unpinned); it is probed at start, and a host without the driver or
// that GPU exits with one line naming the device. Every device's measure worker is confined at
// start (toolchain/confine.h); a kernel that refuses it stops the agent with one line, and
// --no-confine then runs candidates unconfined, with a warning. The agent's token (its own, bound
// to its identity by the daemon) comes from --token-file or LOOM_TOKEN, never from argv (which `ps`
// shows to every user). Logs one structured line per event to stderr.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "loom/agent/agent.h"
#include "loom/base/status_macros.h"
#include "loom/cli/commands.h"
#include "loom/service/client.h"

namespace loom::cli {
namespace {

struct AgentFlags {
  std::string server;
  std::vector<std::string> devices;
  int cpu_slots = -1;  // -1: derived from the cores the devices leave
  std::string token_file;
  std::string name;
  std::string tls_ca;
  std::string cache_dir;
  std::string cuda_driver;
  int heartbeat_ms = 2000;
  int max_pending = 256;
  bool lend_device_cores = true;
  ConfineFlags confine;
};

absl::StatusOr<agent::AgentOptions> BuildOptions(const AgentFlags& flags) {
  agent::AgentOptions o;
  o.server = flags.server;
  if (o.server.empty()) {
    const char* env = std::getenv("LOOM_SERVER");  // documented, as for the job commands
    if (env != nullptr) o.server = env;
  }
  if (o.server.empty()) {
    return absl::InvalidArgumentError(
        "agent: no daemon address: give --server HOST:PORT or set LOOM_SERVER");
  }
  // A list of daemons (one active, standbys redirecting to it): the first is called first, and
  // service::ServerList decides where to go when a call fails.
  LOOM_ASSIGN_OR_RETURN(service::ServerList list, service::ServerList::Parse(o.server));
  o.server = list.current();
  auto shared = std::make_shared<std::pair<absl::Mutex, service::ServerList>>();
  shared->second = std::move(list);
  o.next_server = [shared](const std::string& tried, const grpc::ClientContext& ctx,
                           const grpc::Status& status) {
    absl::MutexLock lock(&shared->first);
    shared->second.Failover(tried, ctx, status);
    return shared->second.current();
  };
  if (!flags.token_file.empty()) {
    LOOM_ASSIGN_OR_RETURN(o.token, service::ReadTokenFile(flags.token_file));
  } else {
    const char* env = std::getenv("LOOM_TOKEN");  // documented: the token without a file
    if (env != nullptr) o.token = env;
  }
  o.name = flags.name;
  o.tls_ca_file = flags.tls_ca;
  o.executor.cache_dir = flags.cache_dir;
  o.executor.cuda_measure.driver_library = flags.cuda_driver;
  o.executor.measure.confine = ConfineOptionsFrom(flags.confine);
  o.executor.cuda_measure.confine = ConfineOptionsFrom(flags.confine);
  o.executor.build.confine = !flags.confine.no_confine;
  o.heartbeat_interval = absl::Milliseconds(flags.heartbeat_ms);
  o.max_pending_reports = flags.max_pending;
  o.lend_device_cores = flags.lend_device_cores;
  if (flags.heartbeat_ms < 1) return absl::InvalidArgumentError("--heartbeat-ms must be >= 1");

  // The cores this process may use (a container's cpuset, taskset), ascending.
  std::vector<int> allowed;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) allowed.push_back(c);
    }
  }
  if (allowed.empty()) allowed.push_back(0);

  std::set<int> device_cores;
  if (flags.devices.empty()) {
    // As engine::DefaultLayout: the last core measures, the others run CPU stages.
    LOOM_ASSIGN_OR_RETURN(agent::Device d,
                          agent::ParseDevice(absl::StrCat("cpu:", allowed.back())));
    o.executor.devices.push_back(d);
    device_cores.insert(allowed.back());
  } else {
    for (const std::string& name : flags.devices) {
      LOOM_ASSIGN_OR_RETURN(agent::Device d, agent::ParseDevice(name));
      for (int c : d.cores) {
        if (std::find(allowed.begin(), allowed.end(), c) == allowed.end()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "device ", name, ": core ", c,
              " is not one this process may use (allowed: ", absl::StrJoin(allowed, ","), ")"));
        }
        if (!device_cores.insert(c).second) {
          return absl::InvalidArgumentError(
              absl::StrCat("core ", c, " belongs to two devices (", name, ")"));
        }
      }
      o.executor.devices.push_back(d);
    }
  }
  // As `loom tune --target cuda` (engine MachineLayout::gpu): a GPU's launching thread gets a core
  // of its own, the last one free, while at least one core is left for CPU stages.
  for (agent::Device& d : o.executor.devices) {
    if (d.kind != "cuda") continue;
    std::vector<int> free;
    for (int c : allowed) {
      if (!device_cores.contains(c)) free.push_back(c);
    }
    if (free.size() >= 2) {
      d.cores = {free.back()};
      device_cores.insert(free.back());
    }
  }
  for (int c : allowed) {
    if (!device_cores.contains(c)) o.executor.cpu_cores.push_back(c);
  }
  o.cpu_slots =
      flags.cpu_slots >= 0 ? flags.cpu_slots : static_cast<int>(o.executor.cpu_cores.size());
  return o;
}

void RunAgent(const AgentFlags& flags) {
  service::QuietGrpcLogs();
  absl::StatusOr<agent::AgentOptions> options = BuildOptions(flags);
  FailIfError(options.status());
  WarnIfUnconfined(flags.confine, "loom agent");

  // SIGTERM/SIGINT go to one watcher thread (every other thread blocks them), which asks the
  // agent to stop; a second signal ends the process at once.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<agent::Agent>> a = agent::Agent::Create(*std::move(options));
  FailIfError(a.status());
  agent::Agent* agent_ptr = a->get();
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    int received = 0;
    while (!done.load()) {
      timespec timeout{0, 200L * 1000 * 1000};
      int sig = sigtimedwait(&signals, nullptr, &timeout);
      if (sig <= 0) continue;
      if (++received > 1) {
        std::fprintf(stderr, "loom agent: second signal, exiting now\n");
        std::_Exit(130);
      }
      std::fprintf(stderr, "loom agent: %s received, shutting down\n",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
      agent_ptr->Shutdown();
    }
  });
  absl::Status status = agent_ptr->Run();
  done.store(true);
  watcher.join();
  FailIfError(status);
  // Stages still running past the shutdown grace hold the agent; their leases expire on the
  // daemon, so leave without waiting for them.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(0);
}

}  // namespace

void RegisterAgentCommand(CLI::App& app) {
  auto flags = std::make_shared<AgentFlags>();
  CLI::App* cmd = app.add_subcommand(
      "agent", "Run this host's agent: offer CPU slots and devices to a `loom serve` daemon");
  AddServerOption(cmd, &flags->server,
                  "Daemon address HOST:PORT, or a list of them A:PORT,B:PORT (an active daemon and "
                  "its standbys; default: $LOOM_SERVER)");
  cmd->add_option("--device", flags->devices,
                  "Measurement device, repeatable: cpu:CORE, cpu:FIRST-LAST or cuda:ORDINAL "
                  "(default: the last core)");
  NoDefaultShown(cmd->add_option("--cpu-slots", flags->cpu_slots,
                                 "CPU slots offered for propose/build/update (default: the cores "
                                 "no device uses)"))
      ->check(CLI::NonNegativeNumber);
  AddTokenFileOption(cmd, &flags->token_file,
                     "File holding this agent's token (default: $LOOM_TOKEN); never pass a token "
                     "in argv");
  cmd->add_option("--name", flags->name, "Name registered with the daemon (default: hostname)");
  cmd->add_option("--tls-ca", flags->tls_ca, "PEM CA certificate: connect with TLS");
  cmd->add_option("--cache-dir", flags->cache_dir,
                  "Artifact cache (default: $XDG_CACHE_HOME/loom/kernels)");
  cmd->add_option("--cuda-driver", flags->cuda_driver,
                  "CUDA driver library the cuda devices' measure workers load (default: "
                  "libcuda.so.1 from the library path)");
  cmd->add_option("--heartbeat-ms", flags->heartbeat_ms,
                  "Heartbeat interval until the daemon sets one");
  cmd->add_flag("--lend-device-cores,!--no-lend-device-cores", flags->lend_device_cores,
                "Let CPU stages use a device's cores while it does not measure; a measurement "
                "moves them off first (default: on, as the embedded engine)");
  AddConfineFlags(cmd, &flags->confine);
  cmd->add_option("--max-pending", flags->max_pending,
                  "Finished results kept while the daemon is unreachable")
      ->check(CLI::PositiveNumber);
  cmd->callback([flags] { RunAgent(*flags); });
}

}  // namespace loom::cli
