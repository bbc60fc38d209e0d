// Loom's library API: the whole workflow in one chainable object, as the source thesis wrapped
// TVM behind a simple interface:
//
//   auto model = loom::Model::Load("zoo:resnet18")
//                    .Tune({.trials = 16, .db = "r18.db"})
//                    .Compile({.threads = 2});
//   absl::StatusOr<loom::BenchmarkResult> r = model.Benchmark();
//   absl::Status s = model.Export("r18_artifact");      // then loom::Model::Load("r18_artifact")
//
// Errors: the chain carries an absl::Status. A failing step records its error and every later
// chained step does nothing; the terminal calls (Run, Benchmark, Export) return that first error,
// and ok()/status() tell at any point. No exceptions are thrown for expected failures (a missing
// file, an unsupported operator, a compiler error).
//
// Link with the CMake target loom_api. The `loom` CLI's compile / run DIR commands are built on
// this API. For C, see loom_c.h (shared library libloom.so, artifacts only). A GPU artifact
// (`loom compile --target cuda -o DIR`) loads through runtime::LoadCudaArtifact, as in the C API
// and `loom run DIR`, and runs on its GPU.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tasks.h"
#include "loom/graph/tensor.h"

namespace loom {

namespace runtime {
class CompiledModel;
class CudaModel;
}  // namespace runtime
namespace ops {
struct Target;
}  // namespace ops

using Tensor = graph::Tensor;
using TensorInfo = graph::ValueInfo;  // name + dtype + static shape

struct LoadOptions {
  // Pins dynamic input dimensions by input name (ONNX files only).
  std::map<std::string, graph::Shape> input_shapes{};
  // Batch size and weight seed for zoo models.
  int64_t zoo_batch = 1;
  uint64_t zoo_seed = 0;
  // Artifacts only: a PEM file with the Ed25519 public key the artifact must be signed with
  // (`loom compile --sign`); empty: no signature is checked. See docs/SECURITY.md.
  std::string verify_key{};
  // GPU artifacts only: the GPU (CUDA device ordinal) that runs it.
  int cuda_device = 0;
};

struct TuneOptions {
  // Measured candidates per task; with a budget below, a cap per task, where 0 means no cap.
  int64_t trials = 64;
  // One budget for the whole model, shared among its tasks by expected gain (each task's
  // occurrences times its recent improvement, as Ansor's gradient task scheduler): measured
  // candidates of all tasks together, and seconds of tuning (the run ends within it plus one
  // round). 0: no such limit; neither: every task gets `trials`.
  int64_t total_trials = 0;
  double time_budget_seconds = 0;
  // SQLite record database, created if missing; Compile then reads the best configs from it.
  std::string db = "loom.db";
  // "xgb", "ga", "random" or "grid", and its seed.
  std::string tuner = "xgb";
  uint64_t seed = 0;
  // Candidates per round (one build batch).
  int32_t batch_size = 8;
  // CPU cores the measurer is pinned to; empty: the last core.
  std::vector<int> device_cores{};
  // Parallel compiles; 0: the cores outside the device (at least 1).
  int32_t build_threads = 0;
  // Seed each task's tuner with other jobs' records of the same task.
  bool transfer = true;
  // Tuning prior of the xgb cost model: a file written by `loom records prior`; empty: the one
  // built into Loom for this CPU's class. use_prior = false: none.
  std::string prior{};
  bool use_prior = true;
  // Indices (as Tasks() lists them) of the tasks to tune; empty: every task.
  std::vector<int> tasks{};
  // Candidates run in a child process that re-executes this program with the measure-worker
  // argument, so main() must call loom::Init(argc, argv) first. Or name another host of the
  // worker here, e.g. {"/usr/local/bin/loom", "__measure-worker"}.
  std::vector<std::string> measure_worker{};
  // Called after every round with a one-line progress report; empty: silent.
  std::function<void(const std::string&)> on_progress{};
  // Asked after every round (on the calling thread); true stops tuning with kCancelled. The
  // records measured so far are kept, and a rerun resumes from them.
  std::function<bool()> interrupted{};
};

struct CompileOptions {
  // Threads running the model (the calling thread is one of them).
  int32_t threads = 1;
  // "cpu": this CPU; "cpu:avx2", "cpu:generic", ...: this CPU's model restricted to that ISA
  // (kFailedPrecondition for an ISA this CPU lacks). Records apply by the target's key.
  std::string target = "cpu";
  // Record database with the best configs; empty: the one the last Tune used (if any), else every
  // operator gets its template's default config.
  std::string db{};
  // Fuse bias / residual Add / activation into the kernels.
  bool fuse = true;
  // Parallel kernel compiles, and the kernel cache (empty: ~/.cache/loom/kernels).
  int32_t build_threads = 2;
  std::string cache_dir{};
  // Records apply by the target's exact key (its CPU model included). false: a task without one
  // takes the best record of another CPU of the same class ("cpu:avx2"), and tuning_summary()
  // names whose.
  bool exact_target = false;
};

struct BenchmarkOptions {
  double min_seconds = 1.0;  // time runs for at least this long
  int32_t min_runs = 10;     // and at least this many
};

struct BenchmarkResult {
  double median_ms = 0, p90_ms = 0, min_ms = 0, mean_ms = 0;
  int64_t runs = 0;
};

// Makes this program able to host the measure worker that Tune starts (see
// TuneOptions::measure_worker): when argv[1] asks for it, serves it and exits. Call it first in
// main(); it returns at once otherwise.
void Init(int argc, char** argv);

class Model {
 public:
  // "zoo:NAME" (built-in model), an ONNX file, or an artifact directory written by Export (then
  // the model is already compiled; Tune is refused and Compile only changes the thread count).
  // A GPU artifact opens GPU options.cuda_device and is refused, in one line, without a driver or
  // device, for another architecture (sm), or with a missing or corrupt kernel image, weights or
  // plan; Compile is refused for it (it runs as compiled).
  static Model Load(std::string_view spec, const LoadOptions& options = {});
  // A graph the caller built or loaded (it must be shape-inferred, as LoadModel leaves it).
  static Model FromGraph(graph::Graph graph, std::string name = "graph");

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Tunes every tunable operator; records go to options.db (a rerun resumes the same job).
  Model& Tune(const TuneOptions& options = {}) &;
  Model&& Tune(const TuneOptions& options = {}) &&;
  // Compiles for this CPU with the best recorded configs. Run, Benchmark and Export compile with
  // the defaults when Compile was not called.
  Model& Compile(const CompileOptions& options = {}) &;
  Model&& Compile(const CompileOptions& options = {}) &&;

  // Runs the model: outputs in the model's output order. The single-tensor form is for models
  // with one input.
  absl::StatusOr<std::vector<Tensor>> Run(const std::map<std::string, Tensor>& inputs);
  absl::StatusOr<std::vector<Tensor>> Run(const Tensor& input);
  // Latency on seeded random inputs (one warm-up run first).
  absl::StatusOr<BenchmarkResult> Benchmark(const BenchmarkOptions& options = {});
  // Writes a self-contained artifact (runtime/artifact.h) that Load, `loom run DIR` and the C API
  // load with no compiler and no database.
  absl::Status Export(const std::string& dir);

  // The first error of the chain, OkStatus when every step succeeded.
  const absl::Status& status() const;
  // Forgets the error of a failed Tune or Compile, leaving the model as it was before that step,
  // for callers that handled the error and go on (the Python binding raises it instead). A failed
  // Load stays failed: there is no model.
  void ClearError();
  bool ok() const { return status().ok(); }
  // Where the model came from ("zoo:resnet18", a path).
  const std::string& name() const;
  // Inputs and outputs (empty while status() is not ok).
  std::vector<TensorInfo> inputs() const;
  std::vector<TensorInfo> outputs() const;
  // Tasks the last Tune tuned (skipped ones, without a template, not counted); 0 before.
  int64_t tuned_tasks() const;
  // After Compile: "12 of 12 kernels tuned", with where the records came from ("(records from
  // AMD EPYC 9R14, same class)") or why none applied ("(no records for cpu:avx2:... in loom.db)").
  const std::string& tuning_summary() const;
  // The unique tunable workloads of the model, in the order `loom tasks` lists them (what Tune
  // searches). kFailedPrecondition for an artifact; the chain's error when there is one.
  absl::StatusOr<std::vector<graph::Task>> Tasks() const;
  // The compiled model, null before Compile (or on error). For profiles and plans.
  runtime::CompiledModel* compiled();
  // A GPU artifact's model and the target of its GPU (device name, architecture); null for any
  // other model.
  runtime::CudaModel* cuda_model();
  const ops::Target* cuda_target() const;

  struct State;

 private:
  explicit Model(std::unique_ptr<State> state);
  absl::Status EnsureCompiled();
  std::unique_ptr<State> state_;
};

}  // namespace loom
