// A tuned model's final latency: the model compiled (runtime::CompiledModel, or runtime::CudaModel
// on the GPU for a cuda target) with the best records of one job only and run on the device's
// cores, median over many runs. The experiment runner
// compiles each job's model once per setup and times the setups' models of one job side by side
// (TimeInterleavedMs), so slow drifts of the machine hit every setup alike instead of whichever
// happened to be timed during them.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_backend.h"
#include "loom/runtime/cuda_model.h"
#include "loom/toolchain/builder.h"

namespace loom::experiment {

struct LatencyOptions {
  // Cores the model runs on (one thread each); empty: wherever this thread may run, one thread.
  std::vector<int> cores;
  int min_runs = 20;         // timed runs per model, after two warm-up runs
  double min_seconds = 1.0;  // and at least this long per model in total
  tune::BuildOptions build;  // how kernels are compiled (cache dir, parallel compiles)
  // cuda targets: the GPU the model runs on (runtime::CudaDeviceOptions::ordinal). A run is one
  // CudaModel::Run: the inputs' upload, the graph replay of its launches and the outputs'
  // download, as `loom bench --target cuda` times it.
  int cuda_ordinal = 0;
};

// One job's model, compiled from a private copy of its records, with fixed random inputs.
class LatencyModel {
 public:
  // Copies the records of `job_ids` for `tasks` on `target` from `store` into a private in-memory
  // store (so no other job's or setup's records are used) and compiles `graph` with it. Errors of
  // the store or of compiling.
  static absl::StatusOr<std::unique_ptr<LatencyModel>> Compile(
      const graph::Graph& graph, const std::vector<graph::Task>& tasks, const ops::Target& target,
      const std::vector<std::string>& job_ids, tune::RecordStore& store,
      const LatencyOptions& options);

  // One run; milliseconds. The caller pins the thread.
  absl::StatusOr<double> RunMs();

 private:
  LatencyModel() = default;
  std::unique_ptr<tune::RecordStore> records_;
  std::unique_ptr<runtime::CompiledModel> model_;
  // cuda targets instead of model_; the backend outlives the model (declared first).
  std::unique_ptr<runtime::CudaBackend> backend_;
  std::unique_ptr<runtime::CudaModel> cuda_model_;
  std::map<std::string, graph::Tensor> feeds_;
};

// Times `models` side by side on options.cores: two warm-up runs each, then rounds in which every
// model runs once, until each has options.min_runs runs and the rounds have lasted
// options.min_seconds per model. Returns each model's median in milliseconds, in order.
absl::StatusOr<std::vector<double>> TimeInterleavedMs(const std::vector<LatencyModel*>& models,
                                                      const LatencyOptions& options);

// Compile and time one model alone.
absl::StatusOr<double> MeasureFinalLatencyMs(const graph::Graph& graph,
                                             const std::vector<graph::Task>& tasks,
                                             const ops::Target& target,
                                             const std::vector<std::string>& job_ids,
                                             tune::RecordStore& store,
                                             const LatencyOptions& options);

}  // namespace loom::experiment
