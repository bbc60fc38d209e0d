// A model compiled for this CPU: every tunable operator runs a generated kernel (the best config
// from the records, else the template's default) with bias / residual Add / activation fused into
// its output store; activations stay in the blocked NCHW[x]c layout through chains of
// convolutions and channel-wise ops and are transformed only at the boundaries; weights are packed
// once; intermediates live in one arena planned by liveness; kernels run on an N-thread pool.
// Called by `loom bench`, the tests, and (later) export and the library API.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/target.h"
#include "loom/tune/builder.h"
#include "loom/tune/record_store.h"

namespace loom::runtime {

struct CompileOptions {
  // Threads running the model (the calling thread is one of them). At least 1.
  int32_t num_threads = 1;
  // Best configs per task on `target`; null compiles every task with its default config.
  tune::RecordStore* records = nullptr;
  ops::Target target = ops::HostCpuTarget();
  // How kernels are compiled (cache dir, parallel compiles, compiler).
  tune::BuildOptions build{};
  // Fuse bias / residual / activation into kernels (off: every op runs on its own).
  bool fuse = true;
};

struct CompileStats {
  int64_t kernel_steps = 0;        // nodes run by generated kernels
  int64_t tuned_kernels = 0;       // of them, with a config from the records
  int64_t unique_kernels = 0;      // distinct generated sources (shared objects)
  int64_t fused_ops = 0;           // graph nodes folded into a kernel's epilogue
  int64_t layout_steps = 0;        // pack / repack / unpack steps
  int64_t blocked_steps = 0;       // pooling / elementwise / concat run on the blocked layout
  int64_t reference_steps = 0;     // nodes run by the reference kernels
  int64_t arena_bytes = 0;         // the planned arena
  int64_t intermediate_bytes = 0;  // sum of every arena buffer (what no reuse would need)
  int64_t cache_hits = 0;          // kernels found in the builder's cache
  double compile_seconds = 0;
};

// Per-step time of one profiled run.
struct StepTiming {
  std::string name;  // node name (or "pack:<value>" for layout steps)
  std::string kind;  // "conv2d_nchwc+bias+relu", "repack", "MaxPool(nchwc)", "ref:Flatten", ...
  double seconds = 0;
};

class CompiledModel {
 public:
  ~CompiledModel();
  CompiledModel(const CompiledModel&) = delete;
  CompiledModel& operator=(const CompiledModel&) = delete;

  // `graph` must be shape-inferred (LoadModel does it). kUnimplemented for an op with neither a
  // template nor a reference kernel; kInternal when a kernel fails to compile.
  static absl::StatusOr<std::unique_ptr<CompiledModel>> Compile(const graph::Graph& graph,
                                                                const CompileOptions& options);

  // Runs the model; outputs in graph.outputs order. Not thread-safe (one arena): one Run at a
  // time. kInvalidArgument for a missing input or one whose shape differs from the graph's.
  absl::StatusOr<std::vector<graph::Tensor>> Run(
      const std::map<std::string, graph::Tensor>& inputs);
  // Same, appending one StepTiming per step, in execution order.
  absl::StatusOr<std::vector<graph::Tensor>> RunProfiled(
      const std::map<std::string, graph::Tensor>& inputs, std::vector<StepTiming>* timings);

  const CompileStats& stats() const;
  // One line per step: kind, name, buffers. For `loom bench --verbose` and debugging.
  std::string DescribePlan() const;
  int32_t num_threads() const;

  struct Impl;

 private:
  explicit CompiledModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::runtime
