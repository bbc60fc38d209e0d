#include "loom/agent/stage_executor.h"

#include <openssl/evp.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "loom/toolchain/nvrtc_builder.h"
#include "loom/tune/stage_wire.h"
#include "loom/tune/stages.h"
#include "loom/tune/task_session.h"

namespace loom::agent {
namespace {

// Idle measurers (worker processes) kept per device: enough for the jobs of an `uncontrolled`
// experiment to keep theirs warm.
constexpr size_t kMaxIdleMeasurers = 8;

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

// A propose or update stage without the session's state: the history-based stages of daemons
// before TaskSession, which this agent no longer runs (the session's tuner proposes and learns).
absl::Status FromAnOlderDaemon(absl::string_view kind) {
  return absl::FailedPreconditionError(
      absl::StrCat(kind, " stage without session state: this agent runs only session stages ",
                   "and the daemon is older; run the same Loom release on the daemon and agents"));
}

// The target of a cuda task: TaskSpec.cuda_arch (else the arch of target_key "cuda:sm_XY:NAME",
// else sm_90) with the limits and name of this agent's device of that target key. An agent
// without that device (a build-only agent) uses the default limits and the key's device name.
absl::StatusOr<ops::Target> CudaTargetOf(const v1::TaskSpec& task,
                                         const std::vector<Device>& devices) {
  std::vector<std::string> key = absl::StrSplit(task.target_key(), absl::MaxSplits(':', 2));
  const bool cuda_key = key.size() == 3 && key[0] == "cuda";
  std::string arch = task.cuda_arch();
  if (arch.empty()) arch = cuda_key ? key[1] : "sm_90";
  absl::StatusOr<ops::Target> parsed = ops::ParseTarget(absl::StrCat("cuda:", arch));
  if (!parsed.ok()) return Malformed(absl::StrCat("task cuda_arch: ", parsed.status().message()));
  ops::Target target = *parsed;
  if (cuda_key) target.device_name = key[2];
  for (const Device& d : devices) {
    if (d.kind == "cuda" && d.probed && d.cuda_target.Key() == task.target_key()) {
      target.cuda_limits = d.cuda_target.cuda_limits;
      target.device_name = d.cuda_target.device_name;
      break;
    }
  }
  return target;
}

// The target a task is built and measured for: this host's CPU with the task's ISA, or a GPU.
absl::StatusOr<ops::Target> TargetOf(const v1::TaskSpec& task, const std::vector<Device>& devices) {
  if (task.target_kind() == "cuda") return CudaTargetOf(task, devices);
  if (!task.target_kind().empty() && task.target_kind() != "cpu") {
    return absl::UnimplementedError(absl::StrCat("target kind '", task.target_kind(),
                                                 "' is not supported by this agent (cpu or cuda)"));
  }
  ops::Target target = ops::HostCpuTarget();
  if (!task.isa().empty()) {
    absl::StatusOr<ops::Isa> isa = ops::ParseIsa(task.isa());
    if (!isa.ok()) return Malformed(absl::StrCat("task isa: ", isa.status().message()));
    target.isa = *isa;
  }
  return target;
}

struct LoadedTask {
  graph::Workload workload;
  ops::Target target;
  std::unique_ptr<ops::Template> tmpl;
};

absl::StatusOr<LoadedTask> LoadTask(const v1::TaskSpec& task,
                                    const ops::TemplateOptions& template_options,
                                    const std::vector<Device>& devices) {
  if (task.workload_key().empty()) return Malformed("the task has no workload_key");
  absl::StatusOr<graph::Workload> workload = graph::ParseWorkloadKey(task.workload_key());
  if (!workload.ok()) {
    return Malformed(absl::StrCat("unknown workload key '", task.workload_key(),
                                  "': ", workload.status().message()));
  }
  LoadedTask loaded;
  LOOM_ASSIGN_OR_RETURN(loaded.target, TargetOf(task, devices));
  absl::StatusOr<std::unique_ptr<ops::Template>> tmpl =
      ops::MakeTemplate(*workload, loaded.target, template_options);
  if (!tmpl.ok()) {
    return Malformed(
        absl::StrCat("no template for '", task.workload_key(), "': ", tmpl.status().message()));
  }
  if (!task.template_name().empty() && task.template_name() != (*tmpl)->name()) {
    return Malformed(absl::StrCat("template '", task.template_name(), "' does not cover '",
                                  task.workload_key(), "' (this agent has '", (*tmpl)->name(),
                                  "')"));
  }
  loaded.tmpl = *std::move(tmpl);
  loaded.workload = *workload;
  return loaded;
}

// The largest session state an agent restores (bytes).
constexpr size_t kMaxSessionBytes = 64 << 20;

// Runs a propose or update stage in the task's session restored from `session` (the daemon's
// tune::TaskSession state): the session's tuner, seeded, budgeted and early-stopped by its own
// rules, so the agent keeps no tuning rule of its own. `stage` carries the stage's inputs.
absl::StatusOr<tune::StageOutcome> RunInSession(const v1::StageRequest& request,
                                                const LoadedTask& task, const std::string& session,
                                                const ExecutorOptions& executor,
                                                tune::SessionRequest stage) {
  if (session.size() > kMaxSessionBytes) {
    return Malformed(absl::StrCat("session state of ", session.size(), " bytes (at most ",
                                  kMaxSessionBytes, ")"));
  }
  v1::TaskSessionState state;
  if (!state.ParseFromString(session)) return Malformed("session state does not parse");
  const v1::TunerSpec& spec = request.tuner();
  if (spec.trials() < 0 || spec.batch_size() < 0 || spec.plan_size() < 0) {
    return Malformed("tuner.trials, batch_size and plan_size must not be negative");
  }
  tune::TaskTunerOptions options = tune::SessionOptionsOf(spec);
  options.job_id = state.job_id();  // the state names its job; Restore checks the rest
  options.template_options = executor.template_options;
  // The session tunes for the target its task names (a propose or update stage may run on a host
  // of another CPU model than the device that measures).
  ops::Target target = task.target;
  std::vector<std::string> key =
      absl::StrSplit(request.task().target_key(), absl::MaxSplits(':', 2));
  if (target.kind == "cpu" && key.size() == 3 && key[0] == "cpu") target.cpu_model = key[2];
  graph::Task t;
  t.workload = task.workload;
  t.key = request.task().workload_key();
  t.hash = graph::StableHash(t.key);
  t.flops = request.task().flops();
  stage.round = request.round();
  absl::StatusOr<tune::StageOutcome> out = tune::RunRestoredStage(state, t, target, options, stage);
  // kDataLoss: the state does not restore (StageResult.session_refused); kInvalidArgument: a
  // request that does not fit it.
  if (!out.ok() && !absl::IsInvalidArgument(out.status()) && !absl::IsDataLoss(out.status())) {
    return Malformed(out.status().message());
  }
  return out;
}

absl::Status CheckIndex(const ops::Template& tmpl, int64_t index, absl::string_view where) {
  if (index < 0 || index >= tmpl.space().size()) {
    return Malformed(absl::StrCat(where, ": config index ", index, " is outside the space of ",
                                  tmpl.name(), " (size ", tmpl.space().size(), ")"));
  }
  return absl::OkStatus();
}

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  *ok = static_cast<bool>(f) || f.eof();
  return ss.str();
}

// Whether `pid` is a live (or not yet reaped) child of this process: only those may be killed by
// pid (a reaped child's pid can belong to any process by now).
bool IsOurChild(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  std::getline(in, stat);
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields follow the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
  int ppid = 0;
  return f.size() >= 2 && absl::SimpleAtoi(f[1], &ppid) && ppid == getpid();
}

// Confines the calling thread (and the processes it starts) to `cores`; empty: no change.
void PinThisThread(const std::vector<int>& cores) {
  if (cores.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cores) CPU_SET(c, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    base::LogWarning("agent: cannot confine a CPU stage to its cores: ", std::strerror(errno));
  }
}

}  // namespace

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * static_cast<size_t>(len));
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

absl::StatusOr<Device> ParseDevice(absl::string_view name) {
  auto usage = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("bad device '", name, "': expected cpu:CORE, cpu:FIRST-LAST or cuda:ORDINAL"));
  };
  std::vector<absl::string_view> parts = absl::StrSplit(name, absl::MaxSplits(':', 1));
  if (parts.size() != 2 || parts[1].empty()) return usage();
  Device d;
  d.name = std::string(name);
  d.kind = std::string(parts[0]);
  if (d.kind == "cpu") {
    std::vector<absl::string_view> range = absl::StrSplit(parts[1], absl::MaxSplits('-', 1));
    int first = 0, last = 0;
    if (!absl::SimpleAtoi(range[0], &first)) return usage();
    last = first;
    if (range.size() == 2 && !absl::SimpleAtoi(range[1], &last)) return usage();
    if (first < 0 || last < first || last - first >= 1024) return usage();
    for (int c = first; c <= last; ++c) d.cores.push_back(c);
    return d;
  }
  if (d.kind == "cuda") {
    if (!absl::SimpleAtoi(parts[1], &d.ordinal) || d.ordinal < 0) return usage();
    return d;
  }
  return usage();
}

absl::StatusOr<Device> ProbeCudaDevice(Device device, const CudaMeasureOptions& options) {
  if (device.kind != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device.name, " is not a cuda device: nothing to probe"));
  }
  CudaMeasureOptions o = options;
  o.device = device.ordinal;
  o.cores = device.cores;
  absl::StatusOr<std::unique_ptr<tune::Measurer>> measurer = tune::MakeCudaMeasurer(o);
  if (!measurer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device.name, ": ", measurer.status().message()));
  }
  // The worker loads the driver and creates the GPU's context, as every measurement will; it
  // ends with the measurer.
  absl::StatusOr<tune::DeviceInfo> info = (*measurer)->Probe();
  if (!info.ok()) {
    return absl::UnavailableError(
        absl::StrCat("device ", device.name, ": ", info.status().message()));
  }
  device.cuda_target = ops::CudaTarget(info->cuda_arch, info->cuda_limits);
  device.cuda_target.device_name = info->device_name;
  device.probed = true;
  return device;
}

v1::DeviceInfo DescribeDevice(const Device& device) {
  v1::DeviceInfo info;
  info.set_name(device.name);
  info.set_kind(device.kind);
  if (device.kind == "cuda") {
    // Unprobed: the default target ("cuda:sm_90:unknown"), which no daemon job is prepared for
    // unless its agents are unprobed too.
    const ops::Target t = device.probed ? device.cuda_target : ops::CudaTarget();
    info.set_target_key(t.Key());
    info.set_cuda_arch(t.cuda_arch);
  }
  if (device.kind == "cpu") {
    ops::Target t = ops::HostCpuTarget();
    info.set_target_key(t.Key());
    switch (t.isa) {
      case ops::Isa::kAvx512:
        info.set_isa("avx512");
        break;
      case ops::Isa::kAvx2:
        info.set_isa("avx2");
        break;
      default:
        info.set_isa("generic");
    }
  }
  return info;
}

absl::StatusOr<std::unique_ptr<StageExecutor>> StageExecutor::Create(
    const ExecutorOptions& options) {
  if (options.max_artifact_bytes < 1 || options.max_own_objects < 1) {
    return absl::InvalidArgumentError(
        "ExecutorOptions.max_artifact_bytes and max_own_objects must be positive");
  }
  auto executor = std::unique_ptr<StageExecutor>(new StageExecutor(options));
  if (executor->options_.cache_dir.empty()) {
    executor->options_.cache_dir = tune::DefaultKernelCacheDir();
  }
  std::error_code ec;
  std::filesystem::create_directories(executor->options_.cache_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create the artifact cache ", executor->options_.cache_dir, ": ", ec.message()));
  }
  for (Device& d : executor->options_.devices) {
    if (executor->devices_.contains(d.name)) {
      return absl::InvalidArgumentError(absl::StrCat("device '", d.name, "' is listed twice"));
    }
    if (d.kind == "cuda" && !d.probed) {
      LOOM_ASSIGN_OR_RETURN(d, ProbeCudaDevice(d, executor->options_.cuda_measure));
    }
    if (d.kind == "cpu" && executor->options_.measure.confine.enabled) {
      // A kernel that refuses the worker's sandbox fails here, before registering: an agent
      // never takes candidates it cannot confine (--no-confine turns the sandbox off).
      tune::MeasureOptions mo = executor->options_.measure;
      mo.cores = d.cores;
      LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Measurer> probe, tune::MakeLocalMeasurer(mo));
      if (absl::Status s = probe->Probe().status(); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("device ", d.name, ": ", s.message()));
      }
    }
    auto slot = std::make_unique<DeviceSlot>();
    slot->device = d;
    executor->devices_.emplace(d.name, std::move(slot));
  }
  return executor;
}

namespace {

absl::Status CheckMeasureSpec(const v1::MeasureSpec& spec) {
  if (spec.min_repeat_ms() < 0 || spec.repeat() < 0 || spec.number() < 0 ||
      !(spec.run_timeout_s() >= 0) || !std::isfinite(spec.run_timeout_s())) {
    return Malformed(absl::StrCat("measure_spec fields must be finite and >= 0 (min_repeat_ms ",
                                  spec.min_repeat_ms(), ", repeat ", spec.repeat(), ", number ",
                                  spec.number(), ", run_timeout_s ", spec.run_timeout_s(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CudaMeasureOptions> LayerCudaMeasureSpec(const CudaMeasureOptions& base,
                                                        const v1::MeasureSpec& spec) {
  LOOM_RETURN_IF_ERROR(CheckMeasureSpec(spec));
  CudaMeasureOptions o = base;
  if (spec.min_repeat_ms() > 0) o.min_repeat_ms = spec.min_repeat_ms();
  if (spec.repeat() > 0) o.repeat = spec.repeat();
  if (spec.number() > 0) o.number = spec.number();
  if (spec.run_timeout_s() > 0) o.timeout = absl::Seconds(spec.run_timeout_s());
  return o;
}

absl::StatusOr<tune::MeasureOptions> LayerMeasureSpec(const tune::MeasureOptions& base,
                                                      const v1::MeasureSpec& spec) {
  LOOM_RETURN_IF_ERROR(CheckMeasureSpec(spec));
  tune::MeasureOptions o = base;
  if (spec.min_repeat_ms() > 0) o.min_repeat_ms = spec.min_repeat_ms();
  if (spec.repeat() > 0) o.repeat = spec.repeat();
  if (spec.number() > 0) o.number = spec.number();
  if (spec.run_timeout_s() > 0) o.timeout = absl::Seconds(spec.run_timeout_s());
  o.flush_cache = o.flush_cache || spec.flush_cache();
  return o;
}

v1::StageResult StageExecutor::Execute(const v1::StageRequest& request, const CancelFlag* cancel,
                                       const StageHooks* hooks) {
  v1::StageResult result;
  result.set_lease_id(request.lease_id());
  v1::StageTiming* timing = result.mutable_timing();
  timing->set_start_unix_micros(NowMicros());
  bool on_device = request.kind() == v1::STAGE_KIND_MEASURE;
  if (!on_device) {
    if (hooks != nullptr && hooks->enter_thread) {
      hooks->enter_thread();
    } else if (hooks == nullptr) {
      PinThisThread(options_.cpu_cores);
    }
  }
  timing->set_resource(
      absl::StrCat(options_.host, "/", on_device ? request.device() : std::string("cpu")));
  const std::string& lease = request.lease_id();
  {
    std::lock_guard<std::mutex> lock(procs_mu_);
    procs_.try_emplace(lease);  // may already hold a Cancel that came first
  }

  absl::Status status;
  if (cancel != nullptr && cancel->load()) {
    status = absl::CancelledError("the lease was cancelled");
  } else {
    switch (request.kind()) {
      case v1::STAGE_KIND_PROPOSE: {
        if (request.input_case() != v1::StageRequest::kPropose) {
          status = Malformed("propose stage without a propose input");
          break;
        }
        absl::StatusOr<v1::ProposeOutput> out = Propose(request);
        status = out.status();
        if (out.ok()) *result.mutable_propose() = *std::move(out);
        break;
      }
      case v1::STAGE_KIND_BUILD: {
        if (request.input_case() != v1::StageRequest::kBuild) {
          status = Malformed("build stage without a build input");
          break;
        }
        absl::StatusOr<v1::BuildOutput> out = Build(request, hooks);
        status = out.status();
        if (out.ok()) *result.mutable_build() = *std::move(out);
        break;
      }
      case v1::STAGE_KIND_MEASURE: {
        if (request.input_case() != v1::StageRequest::kMeasure) {
          status = Malformed("measure stage without a measure input");
          break;
        }
        absl::StatusOr<v1::MeasureOutput> out = Measure(request, cancel);
        status = out.status();
        if (out.ok()) *result.mutable_measure() = *std::move(out);
        break;
      }
      case v1::STAGE_KIND_UPDATE: {
        if (request.input_case() != v1::StageRequest::kUpdate) {
          status = Malformed("update stage without an update input");
          break;
        }
        absl::StatusOr<v1::UpdateOutput> out = Update(request);
        status = out.status();
        if (out.ok()) *result.mutable_update() = *std::move(out);
        break;
      }
      case v1::STAGE_KIND_SIMULATED:
        if (request.input_case() != v1::StageRequest::kSimulated) {
          status = Malformed("simulated stage without a simulated input");
          break;
        }
        status = Simulate(request, cancel);
        break;
      default:
        status = Malformed(absl::StrCat("unknown stage kind ", static_cast<int>(request.kind())));
    }
  }
  {
    std::lock_guard<std::mutex> lock(procs_mu_);
    procs_.erase(lease);
  }
  if (!status.ok()) {
    result.clear_output();
    // Only a session stage's restore (RunInSession) fails with kDataLoss.
    result.set_session_refused(absl::IsDataLoss(status));
    result.set_error(absl::StrCat(tune::WireKindName(request.kind()), " stage ", request.lease_id(),
                                  ": ", absl::StatusCodeToString(status.code()), ": ",
                                  status.message()));
  }
  timing->set_end_unix_micros(NowMicros());
  return result;
}

absl::StatusOr<v1::ProposeOutput> StageExecutor::Propose(const v1::StageRequest& request) {
  const v1::ProposeInput& in = request.propose();
  if (in.session().empty()) return FromAnOlderDaemon("propose");
  LOOM_ASSIGN_OR_RETURN(LoadedTask task,
                        LoadTask(request.task(), options_.template_options, options_.devices));
  // The batch is the session's (the budget left may make it smaller than the spec's).
  LOOM_ASSIGN_OR_RETURN(
      tune::StageOutcome proposed,
      RunInSession(request, task, in.session(), options_,
                   tune::SessionRequest{.kind = sched::StageKind::kPropose, .batch_size = 0}));
  v1::ProposeOutput out;
  for (const ops::Config& c : proposed.configs) out.add_config_indices(c.index);
  out.set_tuner_has_next(proposed.tuner_has_next);
  if (proposed.tuner_state) proposed.tuner_state->SerializeToString(out.mutable_session_tuner());
  return out;
}

bool StageExecutor::Track(const std::string& lease, int compile_group, int worker) {
  std::lock_guard<std::mutex> lock(procs_mu_);
  LeaseProcesses& p = procs_[lease];
  if (p.cancelled) {
    if (compile_group > 0) kill(-compile_group, SIGKILL);
    if (worker > 0) kill(worker, SIGKILL);
    return false;
  }
  if (compile_group > 0) p.compile_groups.push_back(compile_group);
  p.worker = worker;
  return true;
}

void StageExecutor::Cancel(const std::string& lease_id) {
  std::lock_guard<std::mutex> lock(procs_mu_);
  LeaseProcesses& p = procs_[lease_id];
  p.cancelled = true;
  // Only processes of ours: a compiler's group that ended and was reaped is no longer our child
  // (its pid could belong to anyone by now).
  for (int group : p.compile_groups) {
    if (IsOurChild(group)) kill(-group, SIGKILL);
  }
  p.compile_groups.clear();
  if (p.worker > 0 && IsOurChild(p.worker)) kill(p.worker, SIGKILL);
  // A lease cancelled before its stage started stays marked until it starts (Execute then sees
  // its CancelFlag); bound what such leftovers can accumulate.
  if (procs_.size() > 4096) procs_.erase(procs_.begin());
}

std::optional<std::string> StageExecutor::OwnObject(const std::string& hash) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(objects_mu_);
    auto it = objects_.find(hash);
    if (it == objects_.end()) return std::nullopt;
    path = it->second;
  }
  // Still the bytes built here (the cache folder could have been changed since).
  bool ok = false;
  std::string bytes = ReadFile(path, &ok);
  if (!ok || Sha256Hex(bytes) != hash) return std::nullopt;
  return path;
}

void StageExecutor::RememberObject(const std::string& hash, const std::string& path) {
  std::lock_guard<std::mutex> lock(objects_mu_);
  if (objects_.insert_or_assign(hash, path).second) object_order_.push_back(hash);
  while (static_cast<int>(object_order_.size()) > options_.max_own_objects) {
    objects_.erase(object_order_.front());
    object_order_.pop_front();
  }
}

absl::StatusOr<tune::BuildOutput> StageExecutor::BuildHere(const v1::StageRequest& request,
                                                           const std::vector<ops::Config>& configs,
                                                           int num_threads,
                                                           const StageHooks* hooks) {
  LOOM_ASSIGN_OR_RETURN(LoadedTask task,
                        LoadTask(request.task(), options_.template_options, options_.devices));
  tune::BuildOptions build = options_.build;
  build.num_threads = std::max(1, num_threads);
  build.cache_dir = options_.cache_dir;
  if (hooks != nullptr) {
    // The agent's placement: compile threads and compilers follow the stage's cores, also when
    // the stage moves off a device that starts measuring.
    build.before_compile = [enter = hooks->enter_thread, next = options_.build.before_compile] {
      if (enter) enter();
      if (next) next();
    };
  } else if (!options_.cpu_cores.empty() && request.kind() != v1::STAGE_KIND_MEASURE) {
    // Compiles run on the builder's pool threads: confine each before it starts a compiler.
    build.before_compile = [cores = options_.cpu_cores, next = options_.build.before_compile] {
      PinThisThread(cores);
      if (next) next();
    };
  }
  // Every compiler is registered with its lease, so cancelling the lease kills it.
  build.compile_started = [this, lease = request.lease_id(),
                           started = hooks != nullptr ? hooks->compile_started
                                                      : std::function<void(int)>(),
                           next = options_.build.compile_started](int pid) {
    if (!Track(lease, pid, 0)) return;
    if (started) started(pid);
    if (next) next(pid);
  };
  // cuda tasks compile with NVRTC for the task's architecture (cubins); cpu tasks with the local
  // compiler (shared objects). NVRTC runs in-process: compile_started never fires for it.
  absl::StatusOr<std::unique_ptr<tune::Builder>> builder =
      options_.make_builder        ? options_.make_builder(task.target, build)
      : task.target.kind == "cuda" ? tune::MakeNvrtcBuilder(build, task.target.cuda_arch)
                                   : tune::MakeLocalBuilder(build);
  if (!builder.ok()) return builder.status();
  tune::BuildOutput built = tune::BuildStage(*task.tmpl, **builder, configs, "");
  for (const tune::BuildResult& b : built.builds) {
    if (b.cache_hit) {
      ++cache_hits_;
    } else if (b.error != tune::ErrorKind::kInstantiation) {
      ++cache_misses_;
    }
  }
  for (tune::BuildResult& b : built.builds) {
    if (b.error != tune::ErrorKind::kNone) continue;
    bool ok = false;
    std::string binary = ReadFile(b.artifact_path, &ok);
    if (!ok || binary.empty()) {
      b.error = tune::ErrorKind::kCompile;
      b.error_msg = absl::StrCat("cannot read the built artifact ", b.artifact_path);
      continue;
    }
    if (static_cast<int64_t>(binary.size()) > options_.max_artifact_bytes) {
      b.error = tune::ErrorKind::kCompile;
      b.error_msg = absl::StrCat("artifact of ", binary.size(), " bytes exceeds the limit of ",
                                 options_.max_artifact_bytes);
      continue;
    }
    RememberObject(Sha256Hex(binary), b.artifact_path);
  }
  return built;
}

absl::StatusOr<v1::BuildOutput> StageExecutor::Build(const v1::StageRequest& request,
                                                     const StageHooks* hooks) {
  LOOM_ASSIGN_OR_RETURN(LoadedTask task,
                        LoadTask(request.task(), options_.template_options, options_.devices));
  const v1::BuildInput& in = request.build();
  if (in.config_indices().empty()) return Malformed("build stage has no config indices");
  std::vector<ops::Config> configs;
  for (int64_t index : in.config_indices()) {
    LOOM_RETURN_IF_ERROR(CheckIndex(*task.tmpl, index, "build"));
    configs.push_back(ops::Config{index});
  }
  LOOM_ASSIGN_OR_RETURN(tune::BuildOutput built,
                        BuildHere(request, configs, request.cpu_slots(), hooks));
  v1::BuildOutput out;
  for (const tune::BuildResult& b : built.builds) {
    v1::Artifact* a = out.add_artifacts();
    *a = tune::ToWire(b);
    if (b.error != tune::ErrorKind::kNone) continue;
    bool ok = false;
    a->set_content_hash(Sha256Hex(ReadFile(b.artifact_path, &ok)));
  }
  return out;
}

absl::StatusOr<v1::MeasureOutput> StageExecutor::Measure(const v1::StageRequest& request,
                                                         const CancelFlag* cancel) {
  auto it = devices_.find(request.device());
  if (it == devices_.end()) {
    std::vector<std::string> names;
    for (const auto& [name, slot] : devices_) names.push_back(name);
    return Malformed(absl::StrCat("device '", request.device(),
                                  "' is not one of this agent's devices (",
                                  names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }
  DeviceSlot& slot = *it->second;
  LOOM_ASSIGN_OR_RETURN(LoadedTask task,
                        LoadTask(request.task(), options_.template_options, options_.devices));
  const bool cuda = slot.device.kind == "cuda";
  if (task.target.kind != slot.device.kind) {
    return absl::FailedPreconditionError(absl::StrCat("the task is a ", task.target.kind,
                                                      " task but device ", slot.device.name,
                                                      " is a ", slot.device.kind, " device"));
  }
  const std::string device_key = DescribeDevice(slot.device).target_key();
  if (!request.task().target_key().empty() && request.task().target_key() != device_key) {
    return absl::FailedPreconditionError(absl::StrCat("the task is for target '",
                                                      request.task().target_key(), "' but device ",
                                                      slot.device.name, " is '", device_key, "'"));
  }
  const v1::MeasureInput& in = request.measure();
  if (in.artifacts().empty()) return Malformed("measure stage has no artifacts");

  // The objects to run: this host's own build of each candidate, by the hash its builder
  // reported, else a build made here now. Failed builds pass through.
  std::vector<tune::BuildResult> builds;
  std::vector<size_t> rebuild;
  for (const v1::Artifact& a : in.artifacts()) {
    LOOM_RETURN_IF_ERROR(CheckIndex(*task.tmpl, a.config_index(), "measure"));
    tune::BuildResult b = tune::FromWire(a);
    if (b.error == tune::ErrorKind::kNone) {
      std::optional<std::string> own = OwnObject(a.content_hash());
      if (own.has_value()) {
        b.artifact_path = *own;
      } else {
        rebuild.push_back(builds.size());
      }
    }
    builds.push_back(std::move(b));
  }
  if (!rebuild.empty()) {
    std::vector<ops::Config> configs;
    configs.reserve(rebuild.size());
    for (size_t i : rebuild) configs.push_back(builds[i].config);
    // The device is leased to this stage: its cores compile (a GPU's launching core at least).
    const int threads = std::max<int>(1, static_cast<int>(slot.device.cores.size()));
    LOOM_ASSIGN_OR_RETURN(tune::BuildOutput rebuilt,
                          BuildHere(request, configs, threads, /*hooks=*/nullptr));
    int differ = 0;
    for (size_t k = 0; k < rebuild.size(); ++k) {
      tune::BuildResult& b = builds[rebuild[k]];
      const tune::BuildResult& r = rebuilt.builds[k];
      b.artifact_path = r.artifact_path;
      b.error = r.error;
      b.error_msg = r.error_msg;
      if (r.error == tune::ErrorKind::kNone) {
        bool ok = false;
        const std::string& sent = in.artifacts(static_cast<int>(rebuild[k])).content_hash();
        differ += Sha256Hex(ReadFile(r.artifact_path, &ok)) != sent ? 1 : 0;
      }
    }
    if (differ > 0) {
      base::LogWarning("agent: lease ", request.lease_id(), ": ", differ, " of ", rebuild.size(),
                       " candidates rebuilt here differ from the builder's object (another "
                       "compiler, or a forged hash); measured this host's builds");
    }
  }
  if (cancel != nullptr && cancel->load()) return absl::CancelledError("the lease was cancelled");

  tune::MeasureTask measure_task{.workload_key = request.task().workload_key(),
                                 .target = task.target,
                                 .template_options = options_.template_options};
  // The pool key: a measurer of other options is never reused for this stage.
  std::string key;
  std::function<absl::StatusOr<std::unique_ptr<tune::Measurer>>()> make;
  if (cuda) {
    LOOM_ASSIGN_OR_RETURN(CudaMeasureOptions mo,
                          LayerCudaMeasureSpec(options_.cuda_measure, request.measure_spec()));
    mo.device = slot.device.ordinal;
    mo.cores = slot.device.cores;
    key = absl::StrCat("cuda/", mo.number, "/", mo.repeat, "/", mo.min_repeat_ms, "/",
                       absl::ToInt64Microseconds(mo.timeout));
    make = [mo] { return tune::MakeCudaMeasurer(mo); };
  } else {
    LOOM_ASSIGN_OR_RETURN(tune::MeasureOptions mo,
                          LayerMeasureSpec(options_.measure, request.measure_spec()));
    mo.cores = slot.device.cores;
    key = absl::StrCat(mo.number, "/", mo.repeat, "/", mo.min_repeat_ms, "/",
                       absl::ToInt64Microseconds(mo.timeout), "/", mo.flush_cache ? 1 : 0);
    make = [mo] { return tune::MakeLocalMeasurer(mo); };
  }
  // An oversubscribed measurement runs at once beside the others on the device (each on its own
  // measurer, as the embedded engine gives each job its own under `uncontrolled`).
  std::unique_lock<std::mutex> exclusive(slot.mu, std::defer_lock);
  if (!request.oversubscribed()) exclusive.lock();
  PooledMeasurer m{.key = key, .job = request.job_id()};
  {
    std::lock_guard<std::mutex> lock(slot.pool_mu);
    auto& idle = slot.idle;
    auto pick = idle.end();
    for (auto it = idle.begin(); it != idle.end(); ++it) {
      if (it->key != key) continue;
      if (pick == idle.end() || it->job == request.job_id()) pick = it;
    }
    if (pick != idle.end()) {
      m = std::move(*pick);
      idle.erase(pick);
    }
  }
  if (m.measurer == nullptr) {
    m.thread = std::make_unique<base::ThreadPool>(1);
    LOOM_ASSIGN_OR_RETURN(m.measurer, make());
  }
  m.job = request.job_id();
  // One candidate at a time, its worker registered with the lease, so that a cancel kills the
  // worker at once and no further candidate starts.
  bool cancelled = false;
  std::vector<tune::MeasureResult> measured;
  for (const tune::BuildResult& b : builds) {
    if (cancel != nullptr && cancel->load()) {
      cancelled = true;
      break;
    }
    tune::MeasureOutput one = m.thread
                                  ->Submit([&] {
                                    if (b.error == tune::ErrorKind::kNone) {
                                      absl::StatusOr<tune::DeviceInfo> info = m.measurer->Probe();
                                      if (info.ok() && !Track(request.lease_id(), 0,
                                                              static_cast<int>(info->worker_pid))) {
                                        return tune::MeasureOutput{};  // cancelled meanwhile
                                      }
                                    }
                                    return tune::MeasureStage(*m.measurer, measure_task, {b}, "");
                                  })
                                  .get();
    if (!Track(request.lease_id(), 0, 0) || one.results.size() != 1) {
      cancelled = true;
      break;
    }
    measured.push_back(std::move(one.results[0]));
  }
  std::unique_ptr<tune::Measurer> evicted;  // its worker is stopped outside the lock
  {
    std::lock_guard<std::mutex> lock(slot.pool_mu);
    slot.idle.push_back(std::move(m));
    if (slot.idle.size() > kMaxIdleMeasurers) {
      evicted = std::move(slot.idle.front().measurer);
      slot.idle.erase(slot.idle.begin());
    }
  }
  if (cancelled || (cancel != nullptr && cancel->load())) {
    return absl::CancelledError("the lease was cancelled");
  }
  v1::MeasureOutput out;
  for (const tune::MeasureResult& r : measured) *out.add_results() = tune::ToWire(r);
  return out;
}

absl::StatusOr<v1::UpdateOutput> StageExecutor::Update(const v1::StageRequest& request) {
  const v1::UpdateInput& in = request.update();
  if (in.session().empty()) return FromAnOlderDaemon("update");
  LOOM_ASSIGN_OR_RETURN(LoadedTask task,
                        LoadTask(request.task(), options_.template_options, options_.devices));
  if (in.artifacts_size() != in.results_size() || in.results().empty()) {
    return Malformed(absl::StrCat("update stage has ", in.artifacts_size(), " artifacts and ",
                                  in.results_size(), " results (one each per config)"));
  }
  tune::SessionRequest stage{.kind = sched::StageKind::kUpdate};
  for (int i = 0; i < in.results_size(); ++i) {
    const v1::Artifact& a = in.artifacts(i);
    const v1::MeasureResult& r = in.results(i);
    LOOM_RETURN_IF_ERROR(CheckIndex(*task.tmpl, a.config_index(), "update artifacts"));
    LOOM_RETURN_IF_ERROR(CheckIndex(*task.tmpl, r.config_index(), "update results"));
    stage.builds.push_back(tune::FromWire(a));
    stage.results.push_back(tune::FromWire(r));
  }
  LOOM_ASSIGN_OR_RETURN(tune::StageOutcome updated,
                        RunInSession(request, task, in.session(), options_, std::move(stage)));
  v1::UpdateOutput out;
  out.set_tuner_has_next(updated.tuner_has_next);
  if (updated.tuner_state) updated.tuner_state->SerializeToString(out.mutable_session_tuner());
  return out;
}

absl::Status StageExecutor::Simulate(const v1::StageRequest& request, const CancelFlag* cancel) {
  double seconds = request.simulated().seconds();
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 86400) {
    return Malformed(absl::StrCat("simulated.seconds must be in [0, 86400], got ", seconds));
  }
  absl::Time end = absl::Now() + absl::Seconds(seconds);
  while (absl::Now() < end) {
    if (cancel != nullptr && cancel->load()) return absl::CancelledError("the lease was cancelled");
    absl::SleepFor(std::min(absl::Milliseconds(10), end - absl::Now()));
  }
  return absl::OkStatus();
}

}  // namespace loom::agent
