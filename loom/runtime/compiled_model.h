// A model compiled for this CPU: every tunable operator runs a generated kernel (the best config
// from the records, else the template's default) with the elementwise chain after it fused into
// its output store; other elementwise chains, normalizations, reductions and data movement run
// generated kernels too (the reference kernel is the fallback for what none covers); activations
// stay in the blocked NCHW[x]c layout through convolutions, pooling, elementwise ops and channel
// concats, slices and shuffles, and are transformed only where an operator needs another layout;
// weights are packed once; every intermediate, of any dtype, lives in one arena planned by
// liveness (reshapes are views); kernels run on an N-thread pool.
// The plan can be exported as a self-contained artifact (Export) and loaded back with no compiler
// and no records (Load; format in artifact.h). Called by `loom bench`, `loom compile`, `loom run
// DIR`, the library APIs (include/loom/) and the tests.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/toolchain/builder.h"

namespace loom::runtime {

struct CompileOptions {
  // Threads running the model (the calling thread is one of them). At least 1; capped at this
  // host's cores.
  int32_t num_threads = 1;
  // Best configs per task on `target`; null compiles every task with its default config.
  tune::RecordStore* records = nullptr;
  ops::Target target = ops::HostCpuTarget();
  // How kernels are compiled (cache dir, parallel compiles, compiler).
  tune::BuildOptions build{};
  // Fuse elementwise chains into the kernel before them and into one kernel each (off: every
  // node runs on its own).
  bool fuse = true;
};

struct CompileStats {
  int64_t kernel_steps = 0;        // nodes run by generated kernels
  int64_t tuned_kernels = 0;       // of them, with a config from the records
  int64_t unique_kernels = 0;      // distinct generated sources (shared objects)
  int64_t fused_ops = 0;           // graph nodes folded into a kernel's epilogue
  int64_t layout_steps = 0;        // pack / repack / unpack steps
  int64_t blocked_steps = 0;       // pooling / elementwise / channel maps on the blocked layout
  int64_t generated_steps = 0;     // elementwise and lowered kernels on natural tensors
  int64_t views = 0;               // reshapes and the like that share their input's bytes
  int64_t reference_steps = 0;     // nodes run by the reference kernels
  int64_t dropped_steps = 0;       // planned steps removed as nothing read their results
  int64_t arena_bytes = 0;         // the planned arena
  int64_t intermediate_bytes = 0;  // sum of every arena buffer (what no reuse would need)
  int64_t cache_hits = 0;          // kernels found in the builder's cache
  double compile_seconds = 0;
};

struct ExportOptions {
  // How the kernels are compiled into the artifact's one shared library (compiler, cache dir,
  // parallel compiles). Objects are cached like the builder's kernels.
  tune::BuildOptions build{};
};

struct LoadArtifactOptions {
  // Threads running the model (the calling thread is one of them); 0: as many as the model had
  // when it was exported. Capped at this host's cores.
  int32_t num_threads = 0;
  // The ISA of the CPU that will run the model; unset: this CPU's (tests set it to check the
  // refusal of an artifact built for a wider ISA).
  std::optional<ops::Isa> host_isa{};
  // A PEM file with the Ed25519 public key the artifact must be signed with (artifact.h); empty:
  // no signature is checked.
  std::string verify_key;
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

  // Loads an artifact written by Export (artifact.h). Needs no compiler and no records.
  // kNotFound: no plan.json / weights.bin / model.so in `dir`; kFailedPrecondition: another
  // format version, or kernels for an ISA this CPU lacks; kDataLoss: a checksum mismatch or a
  // malformed plan; kInternal: the library does not load.
  static absl::StatusOr<std::unique_ptr<CompiledModel>> Load(const std::string& dir,
                                                             const LoadArtifactOptions& options);

  // Writes the artifact (plan.json, weights.bin, model.so) into `dir`, created if missing;
  // compiles every kernel again as an object and links them into one library with the system
  // compiler. kFailedPrecondition for a model that was itself loaded from an artifact (it has no
  // kernel sources) or when no compiler runs; kInternal when a compile fails.
  absl::Status Export(const std::string& dir, const ExportOptions& options = {}) const;

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
  // Graph inputs and outputs (names, dtypes, static shapes), in the graph's order.
  std::vector<graph::ValueInfo> inputs() const;
  std::vector<graph::ValueInfo> outputs() const;
  // The target the kernels were generated for (Target::Key()).
  const std::string& target_key() const;

  struct Impl;

 private:
  explicit CompiledModel(std::unique_ptr<Impl> impl);
  // Allocates the arena and the thread pool of a finished plan.
  static absl::StatusOr<std::unique_ptr<CompiledModel>> Instantiate(std::unique_ptr<Impl> impl,
                                                                    int32_t num_threads);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::runtime
