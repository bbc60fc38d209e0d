#include "loom/experiment/service_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/service/client.h"
#include "loom/v1/jobs.grpc.pb.h"
#include "loom/v1/stage_names.h"

namespace loom::experiment {
namespace {

namespace fs = std::filesystem;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The last lines of a log, to say why a process failed.
std::string Tail(const std::string& path, int lines = 8) {
  std::string text = ReadText(path);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  size_t start = text.size();
  for (int i = 0; i < lines && start > 0; ++i) {
    const size_t nl = text.rfind('\n', start - 1);
    start = nl == std::string::npos ? 0 : nl;
  }
  if (start < text.size() && text[start] == '\n') ++start;
  return text.empty() ? "(empty log)" : text.substr(start);
}

// A child process in its own process group, its stdout and stderr appended to a log. It gets
// SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG), so a crashed experiment
// leaves no daemon behind; Stop() (and the destructor) end it and everything it started.
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const std::string& log) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = getpid();
    // Only async-signal-safe calls between fork and exec (the parent has gRPC's threads).
    const pid_t pid = fork();
    if (pid < 0) {
      return absl::ResourceExhaustedError(absl::StrCat("fork failed: ", std::strerror(errno)));
    }
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0 || null_fd < 0) _exit(126);
      dup2(null_fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      execv(args[0], args.data());
      constexpr char kMsg[] = "exec failed\n";
      [[maybe_unused]] ssize_t n = write(2, kMsg, sizeof(kMsg) - 1);
      _exit(127);
    }
    setpgid(pid, pid);  // also here: no race with a Stop() right after Start()
    auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
    child->pid_ = pid;
    child->log_ = log;
    return child;
  }

  ~ChildProcess() { Stop(absl::Seconds(2)); }

  // False once it exited (its status is then kept for Describe()).
  bool Alive() {
    if (exited_) return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = status;
    }
    return !exited_;
  }

  // SIGTERM, up to `grace` for it to exit, then SIGKILL; last, SIGKILL to what is left of its
  // process group (compilers and measurement workers of an agent).
  void Stop(absl::Duration grace) {
    if (pid_ <= 0) return;
    if (Alive()) {
      kill(pid_, SIGTERM);
      const absl::Time deadline = absl::Now() + grace;
      while (Alive() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
      if (Alive()) {
        kill(pid_, SIGKILL);
        int status = 0;
        if (waitpid(pid_, &status, 0) == pid_) {
          exited_ = true;
          status_ = status;
        }
      }
    }
    kill(-pid_, SIGKILL);  // ESRCH when the group is empty
    pid_ = -1;
  }

  // "exited with 1", "killed by signal 9".
  std::string Describe() const {
    if (!exited_) return "running";
    if (WIFEXITED(status_)) return absl::StrCat("exited with ", WEXITSTATUS(status_));
    if (WIFSIGNALED(status_)) return absl::StrCat("killed by signal ", WTERMSIG(status_));
    return "ended";
  }

  const std::string& log() const { return log_; }

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  std::string log_;
  bool exited_ = false;
  int status_ = 0;
};

absl::Status ProcessFailed(const std::string& what, ChildProcess& p) {
  return absl::UnavailableError(
      absl::StrCat(what, " ", p.Describe(), "; ", p.log(), " ends with: ", Tail(p.log())));
}

// The port `loom serve --listen 127.0.0.1:0` chose, from its "event=serving ... port=N" line.
absl::StatusOr<int> WaitForPort(ChildProcess& serve, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const std::string log = ReadText(serve.log());
    const size_t at = log.find("event=serving");
    if (at != std::string::npos) {
      const size_t p = log.find(" port=", at);
      const size_t end = log.find_first_not_of("0123456789", p + 6);
      int port = 0;
      if (p != std::string::npos && absl::SimpleAtoi(log.substr(p + 6, end - p - 6), &port) &&
          port > 0) {
        return port;
      }
    }
    if (!serve.Alive()) return ProcessFailed("loom serve", serve);
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "loom serve did not listen within ", absl::FormatDuration(timeout), "; ", serve.log()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

struct Daemon {
  service::ClientConfig config;
  std::unique_ptr<v1::JobService::Stub> stub;
};

absl::Status Call(const std::function<grpc::Status(grpc::ClientContext&)>& rpc,
                  absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return service::FromGrpc(rpc(ctx));
}

// Until the daemon lists an alive agent with a device (the agent registered).
absl::Status WaitForAgent(Daemon& d, ChildProcess& serve, ChildProcess& agent,
                          absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last_error;
  while (true) {
    v1::ListJobsRequest req;
    v1::ListJobsResponse resp;
    absl::Status st =
        Call([&](grpc::ClientContext& ctx) { return d.stub->ListJobs(&ctx, req, &resp); },
             absl::Seconds(5));
    if (st.ok()) {
      for (const v1::ResourceUse& r : resp.resources()) {
        if (r.alive() && r.devices() > 0) return absl::OkStatus();
      }
    } else {
      last_error = std::string(st.message());
    }
    if (!serve.Alive()) return ProcessFailed("loom serve", serve);
    if (!agent.Alive()) return ProcessFailed("loom agent", agent);
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("loom agent did not register within ", absl::FormatDuration(timeout),
                       last_error.empty() ? "" : "; last error: ", last_error, "; ", agent.log(),
                       " ends with: ", Tail(agent.log())));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::StatusOr<v1::SubmitJobRequest> MakeRequest(const ExperimentJobSpec& job,
                                                 const std::string& name,
                                                 const ServiceRunnerOptions& o) {
  v1::SubmitJobRequest req;
  req.set_name(name);
  if (absl::StartsWith(job.model, "zoo:")) {
    req.set_zoo_model(job.model.substr(4));
  } else {
    std::ifstream in(job.model, std::ios::binary);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read model '", job.model, "' (zoo:NAME or an .onnx file)"));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    req.set_onnx_model(ss.str());
  }
  req.set_target("cpu");
  req.set_trials(static_cast<int32_t>(job.trials));
  req.set_batch_size(job.batch_size);
  req.set_tuner(job.tuner);
  req.set_seed(static_cast<int64_t>(job.seed));
  for (int64_t t : job.tasks) req.add_task_indices(static_cast<int32_t>(t));
  v1::MeasureSpec* m = req.mutable_measure();
  m->set_min_repeat_ms(o.min_repeat_ms);
  m->set_repeat(o.repeat);
  m->set_run_timeout_s(o.run_timeout_s);
  return req;
}

bool Ended(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

// "succeeded", "failed", "cancelled"; "unfinished" for a job still queued or running.
std::string StateWord(v1::JobState s) { return Ended(s) ? v1::JobStateShortName(s) : "unfinished"; }

// One setup's jobs on a started daemon and agent. Fills `r.jobs` as they end; returns the
// setup-level failure (process lost, timeout), if any.
class SetupDriver {
 public:
  SetupDriver(const ExperimentSpec& spec, const std::vector<std::string>& names,
              const ServiceRunnerOptions& o, Daemon& daemon, ChildProcess& serve,
              ChildProcess& agent, ServiceSetupResult& r)
      : spec_(spec),
        names_(names),
        o_(o),
        daemon_(daemon),
        serve_(serve),
        agent_(agent),
        r_(r),
        deadline_(absl::Now() + o.setup_timeout) {
    r_.jobs.resize(spec.jobs.size());
    for (size_t i = 0; i < spec.jobs.size(); ++i) r_.jobs[i].name = names[i];
    last_.resize(spec.jobs.size());
  }

  absl::Status Run(bool one_at_a_time) {
    if (one_at_a_time) {
      for (size_t i = 0; i < spec_.jobs.size(); ++i) {
        LOOM_RETURN_IF_ERROR(Submit(i));
        LOOM_RETURN_IF_ERROR(WaitAll());
      }
    } else {
      for (size_t i = 0; i < spec_.jobs.size(); ++i) LOOM_RETURN_IF_ERROR(Submit(i));
      LOOM_RETURN_IF_ERROR(WaitAll());
    }
    return absl::OkStatus();
  }

  // The jobs' times and the makespan from the last states seen (also after a failure).
  void Summarize(bool one_at_a_time) {
    int64_t first_submit = 0, last_end = 0;
    for (const auto& j : last_) {
      if (!j || j->submitted_unix_micros() == 0) continue;
      if (first_submit == 0 || j->submitted_unix_micros() < first_submit) {
        first_submit = j->submitted_unix_micros();
      }
    }
    double sum = 0;
    for (size_t i = 0; i < last_.size(); ++i) {
      ServiceJobResult& row = r_.jobs[i];
      if (!last_[i]) continue;
      const v1::Job& j = *last_[i];
      row.job_id = j.id();
      row.state = StateWord(j.state());
      row.records = j.records();
      row.cpu_seconds = j.cpu_seconds();
      row.device_seconds = j.device_seconds();
      if (j.state() != v1::JOB_STATE_SUCCEEDED && row.error.empty()) {
        row.error = j.failure_reason().empty() ? row.state : j.failure_reason();
      }
      if (Ended(j.state()) && j.finished_unix_micros() > 0) {
        const int64_t from = one_at_a_time ? j.submitted_unix_micros() : first_submit;
        row.seconds = static_cast<double>(j.finished_unix_micros() - from) / 1e6;
        sum += row.seconds;
        last_end = std::max(last_end, j.finished_unix_micros());
      }
    }
    r_.makespan_s = one_at_a_time ? sum
                    : last_end > first_submit && first_submit > 0
                        ? static_cast<double>(last_end - first_submit) / 1e6
                        : 0;
  }

  // Cancels the jobs that have not ended (a timeout or a lost agent; the daemon is stopped next).
  void CancelOpen() {
    for (const auto& j : last_) {
      if (!j || Ended(j->state())) continue;
      v1::CancelJobRequest req;
      req.set_job_id(j->id());
      v1::Job out;
      (void)Call([&](grpc::ClientContext& ctx) { return daemon_.stub->CancelJob(&ctx, req, &out); },
                 absl::Seconds(2));
    }
  }

 private:
  absl::Status Submit(size_t i) {
    ServiceJobResult& row = r_.jobs[i];
    absl::StatusOr<v1::SubmitJobRequest> req = MakeRequest(spec_.jobs[i], names_[i], o_);
    if (!req.ok()) {
      row.state = "rejected";
      row.error = std::string(req.status().message());
      return absl::OkStatus();
    }
    v1::Job job;
    absl::Status st =
        Call([&](grpc::ClientContext& ctx) { return daemon_.stub->SubmitJob(&ctx, *req, &job); },
             absl::Minutes(2));
    if (!st.ok()) {
      if (!serve_.Alive()) return ProcessFailed("loom serve", serve_);
      row.state = "rejected";
      row.error = std::string(st.message());
      return absl::OkStatus();
    }
    if (o_.on_note) {
      o_.on_note(absl::StrFormat("[service %s] submitted %s as %s", r_.setup, names_[i], job.id()));
    }
    last_[i] = job;
    return absl::OkStatus();
  }

  absl::Status WaitAll() {
    while (true) {
      bool open = false;
      for (size_t i = 0; i < last_.size(); ++i) {
        if (!last_[i] || Ended(last_[i]->state())) continue;
        v1::GetJobRequest req;
        req.set_job_id(last_[i]->id());
        v1::Job job;
        absl::Status st =
            Call([&](grpc::ClientContext& ctx) { return daemon_.stub->GetJob(&ctx, req, &job); },
                 absl::Seconds(10));
        if (st.ok()) {
          last_[i] = job;
          if (Ended(job.state()) && o_.on_note) {
            o_.on_note(absl::StrFormat("[service %s] %s (%s) %s, %d records", r_.setup, names_[i],
                                       job.id(), StateWord(job.state()), job.records()));
          }
        }
        open = open || !Ended(last_[i]->state());
      }
      if (!open) return absl::OkStatus();
      if (!serve_.Alive()) return ProcessFailed("loom serve", serve_);
      if (!agent_.Alive()) return ProcessFailed("loom agent", agent_);
      if (absl::Now() > deadline_) {
        return absl::DeadlineExceededError(
            absl::StrCat("the jobs did not end within ", absl::FormatDuration(o_.setup_timeout)));
      }
      absl::SleepFor(o_.poll_interval);
    }
  }

  const ExperimentSpec& spec_;
  const std::vector<std::string>& names_;
  const ServiceRunnerOptions& o_;
  Daemon& daemon_;
  ChildProcess& serve_;
  ChildProcess& agent_;
  ServiceSetupResult& r_;
  const absl::Time deadline_;
  std::vector<std::optional<v1::Job>> last_;  // per job, its latest state from the daemon
};

std::string DeviceFlag(const std::vector<int>& cores) {
  if (cores.size() == 1) return absl::StrCat("cpu:", cores[0]);
  return absl::StrCat("cpu:", cores.front(), "-", cores.back());
}

}  // namespace

absl::Status CheckServiceRun(const ExperimentSpec& spec, const ServiceRunnerOptions& o) {
  if (spec.jobs.empty()) return absl::InvalidArgumentError("an experiment needs at least one job");
  for (size_t i = 0; i < spec.setups.size(); ++i) {
    absl::StatusOr<std::string> p = ServicePolicyOfSetup(spec.setups[i]);
    if (!p.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("setups[", i, "]: ", p.status().message()));
    }
  }
  for (size_t i = 0; i < spec.jobs.size(); ++i) {
    const std::string& model = spec.jobs[i].model;
    if (!absl::StartsWith(model, "zoo:") && access(model.c_str(), R_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("jobs[", i, "].model: cannot read '", model,
                                                     "' (zoo:NAME or an .onnx file)"));
    }
  }
  if (o.device_cores.empty()) {
    return absl::InvalidArgumentError("the service run needs the device's cores");
  }
  std::vector<int> sorted = o.device_cores;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] < 0 || (i > 0 && sorted[i] != sorted[i - 1] + 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("device_cores ", absl::StrJoin(o.device_cores, ","),
                       ": the agent's device takes one core or a consecutive range"));
    }
  }
  if (o.cpu_slots < 0 || o.build_slots < 1) {
    return absl::InvalidArgumentError("cpu_slots must be >= 0 and build_slots >= 1");
  }
  if (o.loom_binary.empty() || access(o.loom_binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("the loom binary '", o.loom_binary, "' does not exist or is not executable"));
  }
  if (o.work_dir.empty()) return absl::InvalidArgumentError("the service run needs a work_dir");
  return absl::OkStatus();
}

namespace {

// One setup: fresh daemon and agent, the jobs, then both processes stopped.
ServiceSetupResult RunSetup(const ExperimentSpec& spec, const std::vector<std::string>& names,
                            const std::string& setup, const ServiceRunnerOptions& o) {
  ServiceSetupResult r;
  r.setup = setup;
  r.policy = *ServicePolicyOfSetup(setup);
  const fs::path dir = fs::path(o.work_dir) / setup;
  r.log_dir = dir.string();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir / "cache", ec);
  if (ec) {
    r.error = absl::StrCat("cannot create ", dir.string(), ": ", ec.message());
    return r;
  }
  auto note = [&](const std::string& line) {
    if (o.on_note) o.on_note(absl::StrCat("[service ", setup, "] ", line));
  };
  std::unique_ptr<ChildProcess> serve, agent;
  // Stops both (agent first, so it does not report into a closed daemon) whatever happens.
  auto stop = [&] {
    if (agent) agent->Stop(o.stop_grace);
    if (serve) serve->Stop(o.stop_grace);
  };
  absl::Status st = [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(
        serve, ChildProcess::Start({o.loom_binary, "serve", "--listen", "127.0.0.1:0", "--state",
                                    (dir / "state.db").string(), "--policy", r.policy,
                                    "--build-slots", absl::StrCat(o.build_slots), "--quiet",
                                    // A private daemon on loopback, its agent started here.
                                    "--insecure"},
                                   (dir / "serve.log").string()));
    LOOM_ASSIGN_OR_RETURN(int port, WaitForPort(*serve, o.start_timeout));
    const std::string server = absl::StrCat("127.0.0.1:", port);
    std::vector<std::string> argv = {o.loom_binary, "agent",
                                     "--server",    server,
                                     "--name",      absl::StrCat("experiment-", setup),
                                     "--device",    DeviceFlag(o.device_cores),
                                     "--cpu-slots", absl::StrCat(o.cpu_slots),
                                     "--cache-dir", (dir / "cache").string()};
    argv.push_back(o.lend_device_cores ? "--lend-device-cores" : "--no-lend-device-cores");
    LOOM_ASSIGN_OR_RETURN(agent, ChildProcess::Start(argv, (dir / "agent.log").string()));
    Daemon d;
    d.config.server = server;
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, service::Dial(d.config));
    d.stub = v1::JobService::NewStub(channel);
    LOOM_RETURN_IF_ERROR(WaitForAgent(d, *serve, *agent, o.start_timeout));
    note(absl::StrCat("serve on ", server, " (policy ", r.policy, "), agent with device ",
                      DeviceFlag(o.device_cores), ", ", o.cpu_slots, " CPU slot(s)"));
    SetupDriver driver(spec, names, o, d, *serve, *agent, r);
    const bool one_at_a_time = setup == "dedicated";
    absl::Status run = driver.Run(one_at_a_time);
    if (!run.ok() && serve->Alive()) driver.CancelOpen();
    driver.Summarize(one_at_a_time);
    return run;
  }();
  stop();
  if (!st.ok()) {
    r.error = std::string(st.message());
    for (ServiceJobResult& j : r.jobs) {
      if (j.state.empty()) j.state = "unfinished";
      if (j.error.empty() && j.state == "unfinished") j.error = "the setup ended first";
    }
    note(absl::StrCat("failed: ", r.error));
  } else {
    note(absl::StrFormat("makespan %.1f s", r.makespan_s));
  }
  if (r.jobs.empty()) {
    for (const std::string& n : names) r.jobs.push_back({.name = n, .state = "unfinished"});
  }
  return r;
}

}  // namespace

absl::StatusOr<std::string> ServicePolicyOfSetup(const std::string& setup) {
  if (setup == "dedicated") return std::string("sequential");
  for (const char* p : {"uncontrolled", "interleaved", "predictive", "sequential"}) {
    if (setup == p) return setup;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", setup,
                   "' is not a setup the service runs (dedicated, uncontrolled, interleaved, "
                   "predictive, sequential)"));
}

std::vector<std::string> ExperimentJobNames(const ExperimentSpec& spec) {
  std::vector<std::string> names;
  for (size_t i = 0; i < spec.jobs.size(); ++i) {
    std::string name = spec.jobs[i].model;
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      name = absl::StrCat(name, "#", i + 1);
    }
    names.push_back(name);
  }
  return names;
}

absl::StatusOr<std::vector<ServiceSetupResult>> RunThroughService(
    const ExperimentSpec& spec, const ServiceRunnerOptions& options) {
  LOOM_RETURN_IF_ERROR(CheckServiceRun(spec, options));
  std::error_code ec;
  fs::create_directories(options.work_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", options.work_dir, ": ", ec.message()));
  }
  const std::vector<std::string> names = ExperimentJobNames(spec);
  std::vector<ServiceSetupResult> results;
  for (const std::string& setup : spec.setups) {
    results.push_back(RunSetup(spec, names, setup, options));
  }
  return results;
}

}  // namespace loom::experiment
