#include "loom/tune/local_machine.h"

#include <algorithm>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/toolchain/nvrtc_builder.h"
#include "loom/tune/tune_job.h"

namespace loom::tune {

absl::StatusOr<std::vector<int64_t>> ParseIndexList(const std::string& text,
                                                    const std::string& what) {
  std::vector<int64_t> out;
  for (const std::string& part :
       std::vector<std::string>(absl::StrSplit(text, ',', absl::SkipEmpty()))) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad ", what, " '", text, "': expected comma-separated non-negative integers"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("empty ", what));
  return out;
}

namespace {

// An option's name in messages: "--device-cores" for the CLI, "TuneOptions.device_cores" else.
std::string OptionName(const LocalMachineOptions& options, std::string field) {
  if (options.option_prefix == "--") std::replace(field.begin(), field.end(), '_', '-');
  return absl::StrCat(options.option_prefix, field);
}

}  // namespace

absl::StatusOr<LocalMachine> LocalMachine::Create(const LocalMachineOptions& options) {
  LocalMachine m;
  m.options_ = options;
  m.num_cpus_ = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  absl::StatusOr<ops::Target> parsed = ops::ParseTarget(options.target);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(OptionName(options, "target"), ": ", parsed.status().message()));
  }
  if (parsed->kind == "cuda") {
    if (!options.isa.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(OptionName(options, "isa"), " applies to ",
                                                     OptionName(options, "target"), " cpu only"));
    }
    if (!options.device.empty()) {
      int n = -1;
      if (!absl::StartsWith(options.device, "cuda:") ||
          !absl::SimpleAtoi(options.device.substr(5), &n) || n < 0) {
        return absl::InvalidArgumentError(absl::StrCat("bad ", OptionName(options, "device"), " '",
                                                       options.device,
                                                       "': expected cuda:N, e.g. cuda:0"));
      }
      m.cuda_ordinal_ = n;
    }
    m.target_ = *parsed;
  } else {
    if (!options.device.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(OptionName(options, "device"), " applies to ",
                                                     OptionName(options, "target"), " cuda only"));
    }
    m.target_ = ops::HostCpuTarget();
    if (!options.isa.empty()) {
      absl::StatusOr<ops::Isa> isa = ops::ParseIsa(options.isa);
      if (!isa.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(OptionName(options, "isa"), ": ", isa.status().message()));
      }
      m.target_.isa = *isa;
    }
  }

  m.device_cores_ = options.device_cores;
  if (m.device_cores_.empty()) m.device_cores_ = {m.num_cpus_ - 1};
  std::set<int> seen;
  for (int c : m.device_cores_) {
    if (c < 0 || c >= m.num_cpus_) {
      return absl::InvalidArgumentError(absl::StrCat(OptionName(options, "device_cores"), ": core ",
                                                     c, " does not exist (this machine has ",
                                                     m.num_cpus_, ")"));
    }
    if (!seen.insert(c).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(OptionName(options, "device_cores"), ": core ", c, " is given twice"));
    }
  }
  for (int c = 0; c < m.num_cpus_; ++c) {
    if (!seen.contains(c)) m.cpu_cores_.push_back(c);
  }
  if (options.build_threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(OptionName(options, "build_threads"),
                                                   " must be 0 (automatic) or more, got ",
                                                   options.build_threads));
  }
  m.build_threads_ = options.build_threads > 0 ? options.build_threads
                                               : std::max(1, static_cast<int>(m.cpu_cores_.size()));
  return m;
}

std::string LocalMachine::DeviceResource() const {
  if (cuda()) return absl::StrCat("device:cuda:", cuda_ordinal_);
  std::string cores;
  for (int c : device_cores_) absl::StrAppend(&cores, cores.empty() ? "" : ",", c);
  return absl::StrCat("device:cpu:", cores);
}

absl::StatusOr<std::unique_ptr<Builder>> LocalMachine::MakeBuilder(BuildOptions options) const {
  options.confine = options_.confine.enabled;
  options.use_cache = options.use_cache && options_.use_kernel_cache;
  if (cuda()) return MakeNvrtcBuilder(options, target_.cuda_arch);
  return MakeLocalBuilder(options);
}

absl::StatusOr<std::unique_ptr<Builder>> LocalMachine::MakeBuilder() const {
  BuildOptions options;
  options.num_threads = build_threads_;
  return MakeBuilder(std::move(options));
}

absl::StatusOr<std::unique_ptr<Measurer>> LocalMachine::MakeMeasurer(
    const std::vector<int>& cores) const {
  if (cuda()) {
    CudaMeasureOptions mo;
    mo.device = cuda_ordinal_;
    mo.timeout = options_.run_timeout;
    if (options_.min_repeat_ms >= 0) mo.min_repeat_ms = options_.min_repeat_ms;
    if (options_.repeat > 0) mo.repeat = options_.repeat;
    mo.cores = cores;
    mo.confine = options_.confine;
    return MakeCudaMeasurer(mo);
  }
  MeasureOptions mo;
  mo.cores = cores;
  mo.timeout = options_.run_timeout;
  if (options_.min_repeat_ms >= 0) mo.min_repeat_ms = options_.min_repeat_ms;
  if (options_.repeat > 0) mo.repeat = options_.repeat;
  mo.confine = options_.confine;
  mo.worker_command = options_.measure_worker;
  return MakeLocalMeasurer(mo);
}

absl::StatusOr<std::unique_ptr<Measurer>> LocalMachine::MakeMeasurer() const {
  return MakeMeasurer(device_cores_);
}

absl::Status LocalMachine::Probe(Measurer* measurer) {
  std::unique_ptr<Measurer> own;
  if (measurer == nullptr) {
    LOOM_ASSIGN_OR_RETURN(own, MakeMeasurer());
    measurer = own.get();
  }
  absl::StatusOr<DeviceInfo> info = measurer->Probe();
  if (!cuda()) return info.status();
  if (!info.ok()) {
    return absl::UnavailableError(absl::StrCat(OptionName(options_, "target"), " ", options_.target,
                                               ": ", info.status().message()));
  }
  // An explicit cuda:sm_XY keeps its architecture (e.g. sm_90a); plain "cuda" takes the device's.
  const std::string arch = options_.target == "cuda" ? info->cuda_arch : target_.cuda_arch;
  target_ = ops::CudaTarget(arch, info->cuda_limits);
  target_.device_name = info->device_name;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const search::TuningPrior>> LocalMachine::ReadPrior(
    const std::string& path) const {
  if (path.empty()) return nullptr;
  absl::StatusOr<search::TuningPrior> prior = search::ReadPriorFile(path);
  if (!prior.ok()) {
    return absl::Status(prior.status().code(),
                        absl::StrCat(OptionName(options_, "prior"), " ", prior.status().message()));
  }
  if (prior->target_class != search::TargetClass(target_)) {
    return absl::InvalidArgumentError(absl::StrCat(OptionName(options_, "prior"), " ", path, ": a ",
                                                   prior->target_class, " prior does not apply to ",
                                                   search::TargetClass(target_)));
  }
  return std::make_shared<const search::TuningPrior>(*std::move(prior));
}

std::string LocalMachine::JobId(const std::vector<graph::Task>& tasks,
                                const search::TunerOptions& tuner,
                                const std::string& requested) const {
  return requested.empty() ? DefaultJobId(tasks, target_, tuner) : requested;
}

}  // namespace loom::tune
