#include "loom/experiment/latency.h"

#include <sched.h>

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "loom/base/rng.h"
#include "loom/base/status_macros.h"
#include "loom/experiment/distortion.h"
#include "loom/runtime/compiled_model.h"

namespace loom::experiment {
namespace {

// Pins the calling thread to `cores` for its lifetime, then restores its former CPU set.
class ScopedAffinity {
 public:
  explicit ScopedAffinity(const std::vector<int>& cores) {
    if (cores.empty() || sched_getaffinity(0, sizeof(saved_), &saved_) != 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cores) CPU_SET(c, &set);
    active_ = sched_setaffinity(0, sizeof(set), &set) == 0;
  }
  ~ScopedAffinity() {
    if (active_) sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  ScopedAffinity(const ScopedAffinity&) = delete;
  ScopedAffinity& operator=(const ScopedAffinity&) = delete;

 private:
  cpu_set_t saved_;
  bool active_ = false;
};

}  // namespace

absl::StatusOr<double> MeasureFinalLatencyMs(const graph::Graph& graph,
                                             const std::vector<graph::Task>& tasks,
                                             const ops::Target& target,
                                             const std::vector<std::string>& job_ids,
                                             tune::RecordStore& store,
                                             const LatencyOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::RecordStore> own,
                        tune::OpenSqliteRecordStore(":memory:"));
  for (const graph::Task& task : tasks) {
    for (const std::string& id : job_ids) {
      LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> records,
                            store.ForTask(task.key, target.Key(), id));
      if (!records.empty()) LOOM_RETURN_IF_ERROR(own->Append(records));
    }
  }
  std::map<std::string, graph::Tensor> feeds;
  base::Rng rng(1);
  for (const auto& in : graph.inputs) {
    graph::Tensor t(in.type.dtype, in.type.shape);
    if (in.type.dtype == graph::DType::kFloat32) {
      for (float& v : t.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    feeds[in.name] = std::move(t);
  }
  runtime::CompileOptions co;
  co.num_threads = std::max<int>(1, static_cast<int>(options.cores.size()));
  co.records = own.get();
  co.target = target;
  co.build = options.build;
  // With several device cores the model's pool threads, created by Compile, must inherit the
  // device's CPU set; with one core there is no pool and the compile may use every core.
  std::unique_ptr<runtime::CompiledModel> model;
  if (co.num_threads > 1) {
    ScopedAffinity pin(options.cores);
    LOOM_ASSIGN_OR_RETURN(model, runtime::CompiledModel::Compile(graph, co));
  } else {
    LOOM_ASSIGN_OR_RETURN(model, runtime::CompiledModel::Compile(graph, co));
  }
  ScopedAffinity pin(options.cores);
  for (int i = 0; i < 2; ++i) LOOM_RETURN_IF_ERROR(model->Run(feeds).status());
  std::vector<double> ms;
  const auto begin = std::chrono::steady_clock::now();
  while (true) {
    const auto t0 = std::chrono::steady_clock::now();
    LOOM_RETURN_IF_ERROR(model->Run(feeds).status());
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    const double elapsed = std::chrono::duration<double>(t1 - begin).count();
    if (static_cast<int>(ms.size()) >= options.min_runs && elapsed >= options.min_seconds) break;
  }
  return Median(ms);
}

}  // namespace loom::experiment
