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

absl::StatusOr<std::unique_ptr<LatencyModel>> LatencyModel::Compile(
    const graph::Graph& graph, const std::vector<graph::Task>& tasks, const ops::Target& target,
    const std::vector<std::string>& job_ids, tune::RecordStore& store,
    const LatencyOptions& options) {
  std::unique_ptr<LatencyModel> m(new LatencyModel());
  LOOM_ASSIGN_OR_RETURN(m->records_, tune::OpenSqliteRecordStore(":memory:"));
  for (const graph::Task& task : tasks) {
    for (const std::string& id : job_ids) {
      LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> records,
                            store.ForTask(task.key, target.Key(), id));
      if (!records.empty()) LOOM_RETURN_IF_ERROR(m->records_->Append(records));
    }
  }
  base::Rng rng(1);
  for (const auto& in : graph.inputs) {
    graph::Tensor t(in.type.dtype, in.type.shape);
    if (in.type.dtype == graph::DType::kFloat32) {
      for (float& v : t.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    m->feeds_[in.name] = std::move(t);
  }
  if (target.kind == "cuda") {
    LOOM_ASSIGN_OR_RETURN(
        m->backend_,
        runtime::MakeCudaDeviceBackend({.ordinal = options.cuda_ordinal, .build = options.build}));
    LOOM_ASSIGN_OR_RETURN(
        m->cuda_model_,
        runtime::CudaModel::Compile(graph, m->backend_.get(), {.records = m->records_.get()}));
    return m;
  }
  runtime::CompileOptions co;
  co.num_threads = std::max<int>(1, static_cast<int>(options.cores.size()));
  co.records = m->records_.get();
  co.target = target;
  co.build = options.build;
  // With several device cores the model's pool threads, created by Compile, must inherit the
  // device's CPU set; with one core there is no pool and the compile may use every core.
  if (co.num_threads > 1) {
    ScopedAffinity pin(options.cores);
    LOOM_ASSIGN_OR_RETURN(m->model_, runtime::CompiledModel::Compile(graph, co));
  } else {
    LOOM_ASSIGN_OR_RETURN(m->model_, runtime::CompiledModel::Compile(graph, co));
  }
  return m;
}

absl::StatusOr<double> LatencyModel::RunMs() {
  const auto t0 = std::chrono::steady_clock::now();
  LOOM_RETURN_IF_ERROR(cuda_model_ != nullptr ? cuda_model_->Run(feeds_).status()
                                              : model_->Run(feeds_).status());
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

absl::StatusOr<std::vector<double>> TimeInterleavedMs(const std::vector<LatencyModel*>& models,
                                                      const LatencyOptions& options) {
  ScopedAffinity pin(options.cores);
  for (LatencyModel* m : models) {
    for (int i = 0; i < 2; ++i) LOOM_RETURN_IF_ERROR(m->RunMs().status());
  }
  std::vector<std::vector<double>> ms(models.size());
  const auto begin = std::chrono::steady_clock::now();
  const double want_seconds = options.min_seconds * static_cast<double>(models.size());
  for (int round = 0;; ++round) {
    for (size_t i = 0; i < models.size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(double t, models[i]->RunMs());
      ms[i].push_back(t);
    }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    if (round + 1 >= options.min_runs && elapsed >= want_seconds) break;
  }
  std::vector<double> medians;
  medians.reserve(ms.size());
  for (const std::vector<double>& m : ms) medians.push_back(Median(m));
  return medians;
}

absl::StatusOr<double> MeasureFinalLatencyMs(const graph::Graph& graph,
                                             const std::vector<graph::Task>& tasks,
                                             const ops::Target& target,
                                             const std::vector<std::string>& job_ids,
                                             tune::RecordStore& store,
                                             const LatencyOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<LatencyModel> model,
                        LatencyModel::Compile(graph, tasks, target, job_ids, store, options));
  LOOM_ASSIGN_OR_RETURN(std::vector<double> ms, TimeInterleavedMs({model.get()}, options));
  return ms[0];
}

}  // namespace loom::experiment
