// A tuning prior: the measured throughput of configs of many tasks on one class of target (every
// AVX-512 CPU, say), shipped with Loom (BuiltinPrior) or written from a team's record database
// (`loom records prior`). The task tuner gives it to a model-based tuner as transfer data before
// the task's first trial, so that on a machine with no history the first proposals are ranked by
// measurements of similar kernels, as AutoTVM's TopHub and TenSet's pretrained models do. A prior
// never becomes a record: best configs and compiled models use only this machine's measurements.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ops/config_space.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/measure_result.h"

namespace loom::search {

// The measured configs of one task (one template) in a prior.
struct PriorTask {
  std::string task_key;  // graph::WorkloadKey
  std::string template_name;
  std::vector<std::string> knobs;  // knob names, in the order of each entry's values
  struct Entry {
    std::vector<int64_t> values;  // one per knob
    double gflops = 0;            // 0: the config failed
  };
  std::vector<Entry> configs;
};

struct TuningPrior {
  std::string target_class;  // the targets it applies to: TargetClass(), "cpu:avx512"
  std::string source;        // where the measurements come from (the CPU model), for people
  std::vector<PriorTask> tasks;
};

// The part of Target::Key() a prior applies to: kind and ISA ("cpu:avx512") or architecture
// ("cuda:sm_90"), without the CPU or device model. Machines of one class share a config space
// (vector width, register count), so a config's relative speed carries over between them.
std::string TargetClass(const ops::Target& target);
// The same from a Target::Key() string: its first two ':'-separated fields.
std::string TargetClassOfKey(std::string_view target_key);

// The JSON form:
//   {"format": "loom-tuning-prior", "version": 1, "target_class": "cpu:avx512", "source": "...",
//    "tasks": [{"task": KEY, "template": NAME, "knobs": [NAME, ...],
//               "configs": [[VALUE, ..., GFLOPS], ...]}, ...]}
// ParsePrior: kInvalidArgument naming what is wrong (the task's position and key where it is in
// one task). ReadPriorFile: kNotFound when the file cannot be read, else as ParsePrior with the
// path in front.
absl::StatusOr<TuningPrior> ParsePrior(std::string_view json);
absl::StatusOr<TuningPrior> ReadPriorFile(const std::string& path);
std::string PriorToJson(const TuningPrior& prior);

// One prior task as transfer data for a tuner (Tuner::LoadTransfer): its template on the tuning
// target, and its configs and results in that template's space.
struct PriorTransfer {
  std::string task_key;
  std::unique_ptr<ops::Template> tmpl;
  std::vector<ops::Config> configs;
  std::vector<tune::MeasureResult> results;
};

// The prior's tasks of template `template_name` as transfer data on `target`, in the prior's
// order. Empty when the prior's class is not TargetClass(target). A task whose workload has no
// such template on the target, or whose knobs differ from the template's, is left out; so is a
// config outside the space or not valid in it. `exclude_task_key` leaves one task out (the
// benchmarks' leave-one-out figures).
std::vector<PriorTransfer> PriorTransfersFor(const TuningPrior& prior,
                                             std::string_view template_name,
                                             const ops::Target& target,
                                             const ops::TemplateOptions& template_options,
                                             std::string_view exclude_task_key = {});

// The prior built into Loom for the target's class; nullptr when none covers it.
const TuningPrior* BuiltinPrior(const ops::Target& target);

}  // namespace loom::search
