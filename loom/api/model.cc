// loom::Model (include/loom/loom.h): the chainable library API over runtime/ (LoadModel,
// CompiledModel, CPU artifacts, GPU artifacts through LoadCudaArtifact) and tune/ (the single-job
// tuning loop).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/api/class_records.h"
#include "loom/base/rng.h"
#include "loom/base/status_macros.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/tasks.h"
#include "loom/loom.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_model.h"
#include "loom/search/prior.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/tune/local_machine.h"
#include "loom/tune/tune_job.h"

namespace loom {

struct Model::State {
  absl::Status status;
  std::string name;
  bool loaded = false;  // Load (or FromGraph) succeeded
  bool has_graph = false;
  graph::Graph graph;
  std::string artifact_dir;  // set when loaded from an artifact
  std::string verify_key;    // the artifact's signing key, checked at every load
  std::string db;            // records of the last Tune
  int64_t tuned_tasks = 0;
  std::string tuning_summary;      // of the last Compile
  CompileOptions compile_options;  // of the last Compile: Export compiles objects the same way
  std::unique_ptr<runtime::CompiledModel> compiled;
  runtime::LoadedCudaArtifact gpu;  // a GPU artifact's model on its GPU (then `compiled` is null)
};

void Init(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == tune::kMeasureWorkerArg) {
    std::exit(tune::RunMeasureWorker(0, 1));
  }
}

Model::Model(std::unique_ptr<State> state) : state_(std::move(state)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::Load(std::string_view spec, const LoadOptions& options) {
  auto state = std::make_unique<State>();
  state->name = std::string(spec);
  if (runtime::IsCudaArtifactDir(state->name)) {
    state->artifact_dir = state->name;
    absl::StatusOr<runtime::LoadedCudaArtifact> gpu =
        runtime::LoadCudaArtifact(state->artifact_dir, options.cuda_device, options.verify_key);
    if (gpu.ok()) {
      state->gpu = *std::move(gpu);
      state->loaded = true;
    } else {
      state->status = gpu.status();
    }
    return Model(std::move(state));
  }
  if (runtime::IsArtifactDir(state->name)) {
    state->artifact_dir = state->name;
    state->verify_key = options.verify_key;
    absl::StatusOr<std::unique_ptr<runtime::CompiledModel>> cm =
        runtime::CompiledModel::Load(state->artifact_dir, {.verify_key = options.verify_key});
    if (cm.ok()) {
      state->compiled = *std::move(cm);
      state->loaded = true;
    } else {
      state->status = cm.status();
    }
    return Model(std::move(state));
  }
  frontend::LoadOptions lo;
  lo.input_shapes = options.input_shapes;
  lo.zoo_batch = options.zoo_batch;
  lo.zoo_seed = options.zoo_seed;
  absl::StatusOr<frontend::LoadedModel> loaded = frontend::LoadModel(spec, lo);
  if (loaded.ok()) {
    state->graph = std::move(loaded->graph);
    state->has_graph = true;
    state->loaded = true;
  } else {
    state->status = loaded.status();
  }
  return Model(std::move(state));
}

Model Model::FromGraph(graph::Graph graph, std::string name) {
  auto state = std::make_unique<State>();
  state->name = std::move(name);
  state->graph = std::move(graph);
  state->has_graph = true;
  state->loaded = true;
  return Model(std::move(state));
}

Model&& Model::Tune(const TuneOptions& options) && { return std::move(Tune(options)); }
Model&& Model::Compile(const CompileOptions& options) && { return std::move(Compile(options)); }

Model& Model::Tune(const TuneOptions& options) & {
  State& s = *state_;
  if (!s.status.ok()) return *this;
  s.status = [&]() -> absl::Status {
    if (!s.has_graph) {
      return absl::FailedPreconditionError(
          absl::StrCat(s.name, " is a compiled artifact: tune the model it was made from instead"));
    }
    tune::JobBudget budget{.total_trials = options.total_trials};
    // Written so that NaN fails it.
    if (!(options.time_budget_seconds >= 0 &&
          options.time_budget_seconds <= absl::ToDoubleSeconds(tune::kMaxTimeBudget))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TuneOptions.time_budget_seconds must be 0 (none) to ",
          absl::ToInt64Seconds(tune::kMaxTimeBudget), ", got ", options.time_budget_seconds));
    }
    budget.time = absl::Seconds(options.time_budget_seconds);
    if (absl::Status st = tune::ValidateJobBudget(budget); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("TuneOptions.total_trials: ", st.message()));
    }
    if (options.trials < (budget.Active() ? 0 : 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("TuneOptions.trials must be at least 1 (0: no cap, with a budget), got ",
                       options.trials));
    }
    LOOM_ASSIGN_OR_RETURN(std::vector<graph::Task> all, graph::ExtractTasks(s.graph));
    std::vector<graph::Task> tasks;
    for (int index : options.tasks) {
      if (index < 0 || index >= static_cast<int>(all.size())) {
        return absl::InvalidArgumentError(absl::StrCat("TuneOptions.tasks: index ", index,
                                                       " is out of range: ", s.name, " has ",
                                                       all.size(), " tasks"));
      }
      tasks.push_back(all[static_cast<size_t>(index)]);
    }
    if (options.tasks.empty()) tasks = std::move(all);
    tune::LocalMachineOptions lmo;
    lmo.device_cores = options.device_cores;
    lmo.build_threads = options.build_threads;
    lmo.measure_worker = options.measure_worker;
    lmo.option_prefix = "TuneOptions.";
    LOOM_ASSIGN_OR_RETURN(tune::LocalMachine machine, tune::LocalMachine::Create(lmo));
    // The prior file is read before the measurer starts, so a bad path fails at once.
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const search::TuningPrior> prior_file,
                          machine.ReadPrior(options.prior));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::RecordStore> store,
                          tune::OpenRecordStore(options.db));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Builder> builder, machine.MakeBuilder());
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Measurer> measurer, machine.MakeMeasurer());
    LOOM_RETURN_IF_ERROR(machine.Probe(measurer.get()));

    tune::JobOptions job;
    job.target = machine.target();
    job.task.trials = options.trials > 0 ? options.trials : tune::kNoTrialCap;
    job.budget = budget;
    job.scheduler.seed = options.seed;
    job.task.batch_size = options.batch_size;
    job.task.tuner.kind = options.tuner;
    job.task.tuner.seed = options.seed;
    job.task.transfer = options.transfer;
    job.task.use_prior = options.use_prior;
    if (prior_file != nullptr) job.task.prior = std::move(prior_file);
    job.task.job_id = machine.JobId(tasks, job.task.tuner);
    job.resources.device = machine.DeviceResource();
    // RunTuneJob reports after every round on this thread; an interruption unwinds it from
    // there (between rounds, with this round's records stored) and becomes kCancelled.
    struct Interrupted {};
    std::function<void(const tune::ProgressEvent&)> progress;
    if (options.on_progress || options.interrupted) {
      progress = [&](const tune::ProgressEvent& ev) {
        const tune::TaskTuner& t = *ev.tuner;
        if (options.on_progress) {
          options.on_progress(
              absl::StrFormat(
                  "task %d (%d/%d) %s: trials %d/%d, best %.2f GFLOPS",
                  options.tasks.empty() ? ev.task_index
                                        : options.tasks[static_cast<size_t>(ev.task_index)],
                  ev.task_index + 1, ev.num_tasks, graph::TaskKindName(t.task().workload.kind),
                  t.trials_done(), t.options().trials, t.best_gflops()) +
              (budget.Active() ? absl::StrFormat(", job trials %d", ev.job_trials) : ""));
        }
        if (options.interrupted && options.interrupted()) throw Interrupted{};
      };
    }
    absl::StatusOr<std::vector<tune::TaskOutcome>> run;
    try {
      run = tune::RunTuneJob(tasks, job, store.get(), *builder, *measurer, progress);
    } catch (const Interrupted&) {
      return absl::CancelledError(absl::StrCat("tuning ", s.name,
                                               " was interrupted; the records so far are in ",
                                               options.db, " and a rerun resumes from them"));
    }
    LOOM_ASSIGN_OR_RETURN(std::vector<tune::TaskOutcome> outcomes, std::move(run));
    s.tuned_tasks = 0;
    for (const tune::TaskOutcome& o : outcomes) s.tuned_tasks += o.skipped_reason.empty() ? 1 : 0;
    s.db = options.db;
    s.compiled.reset();  // a later Compile picks up the new records
    return absl::OkStatus();
  }();
  return *this;
}

Model& Model::Compile(const CompileOptions& options) & {
  State& s = *state_;
  if (!s.status.ok()) return *this;
  s.status = [&]() -> absl::Status {
    if (s.gpu.model != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          s.name, " is a GPU artifact: it runs on its GPU as compiled (no threads to choose)"));
    }
    if (!s.has_graph) {  // an artifact: only the thread count can change
      LOOM_ASSIGN_OR_RETURN(
          s.compiled, runtime::CompiledModel::Load(s.artifact_dir, {.num_threads = options.threads,
                                                                    .verify_key = s.verify_key}));
      return absl::OkStatus();
    }
    s.compile_options = options;
    std::unique_ptr<tune::RecordStore> store;
    const std::string db = options.db.empty() ? s.db : options.db;
    if (!db.empty()) {
      LOOM_ASSIGN_OR_RETURN(store, tune::OpenRecordStore(db));
    }
    std::unique_ptr<api::ClassRecords> records;
    if (store != nullptr) {
      records = std::make_unique<api::ClassRecords>(store.get(), options.exact_target);
    }
    runtime::CompileOptions co;
    LOOM_ASSIGN_OR_RETURN(co.target, api::CpuCompileTarget(options.target));
    co.num_threads = options.threads;
    co.records = records.get();
    co.fuse = options.fuse;
    co.build.num_threads = std::max(1, options.build_threads);
    co.build.cache_dir = options.cache_dir;
    LOOM_ASSIGN_OR_RETURN(s.compiled, runtime::CompiledModel::Compile(s.graph, co));
    s.tuning_summary =
        api::TuningSummary(s.compiled->stats().tuned_kernels, s.compiled->stats().kernel_steps,
                           records.get(), db, co.target, options.exact_target);
    return absl::OkStatus();
  }();
  if (!s.status.ok()) s.compiled.reset();
  return *this;
}

absl::StatusOr<std::vector<graph::Task>> Model::Tasks() const {
  const State& s = *state_;
  LOOM_RETURN_IF_ERROR(s.status);
  if (!s.has_graph) {
    return absl::FailedPreconditionError(absl::StrCat(
        s.name, " is a compiled artifact: list the tasks of the model it was made from"));
  }
  return graph::ExtractTasks(s.graph);
}

absl::Status Model::EnsureCompiled() {
  if (state_->status.ok() && state_->compiled == nullptr && state_->gpu.model == nullptr) {
    Compile();
  }
  return state_->status;
}

absl::StatusOr<std::vector<Tensor>> Model::Run(const std::map<std::string, Tensor>& inputs) {
  LOOM_RETURN_IF_ERROR(EnsureCompiled());
  if (state_->gpu.model != nullptr) return state_->gpu.model->Run(inputs);
  return state_->compiled->Run(inputs);
}

absl::StatusOr<std::vector<Tensor>> Model::Run(const Tensor& input) {
  LOOM_RETURN_IF_ERROR(EnsureCompiled());
  const std::vector<TensorInfo> in = inputs();
  if (in.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model has ", in.size(), " inputs: pass them by name to Run(map of tensors)"));
  }
  return Run({{in[0].name, input}});
}

absl::StatusOr<BenchmarkResult> Model::Benchmark(const BenchmarkOptions& options) {
  LOOM_RETURN_IF_ERROR(EnsureCompiled());
  if (options.min_runs < 1) {
    return absl::InvalidArgumentError("BenchmarkOptions.min_runs must be at least 1");
  }
  std::map<std::string, Tensor> feeds;
  base::Rng rng(1);
  for (const TensorInfo& in : inputs()) {
    Tensor t(in.type.dtype, in.type.shape);
    if (in.type.dtype == graph::DType::kFloat32) {
      for (float& v : t.values<float>()) v = static_cast<float>(rng.Normal(0.0, 1.0));
    }
    feeds[in.name] = std::move(t);
  }
  LOOM_RETURN_IF_ERROR(Run(feeds).status());  // warm-up (a GPU model captures its graph)
  std::vector<double> ms;
  const auto begin = std::chrono::steady_clock::now();
  while (true) {
    const auto t0 = std::chrono::steady_clock::now();
    LOOM_RETURN_IF_ERROR(Run(feeds).status());
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (static_cast<int32_t>(ms.size()) >= options.min_runs &&
        std::chrono::duration<double>(t1 - begin).count() >= options.min_seconds) {
      break;
    }
  }
  std::sort(ms.begin(), ms.end());
  BenchmarkResult r;
  r.runs = static_cast<int64_t>(ms.size());
  r.min_ms = ms.front();
  r.median_ms = ms[ms.size() / 2];
  r.p90_ms = ms[std::min(ms.size() - 1, (ms.size() * 9) / 10)];
  double sum = 0;
  for (double v : ms) sum += v;
  r.mean_ms = sum / static_cast<double>(ms.size());
  return r;
}

absl::Status Model::Export(const std::string& dir) {
  LOOM_RETURN_IF_ERROR(EnsureCompiled());
  if (state_->gpu.model != nullptr) return state_->gpu.model->Export(dir);
  runtime::ExportOptions eo;
  eo.build.num_threads = std::max(1, state_->compile_options.build_threads);
  eo.build.cache_dir = state_->compile_options.cache_dir;
  return state_->compiled->Export(dir, eo);
}

const absl::Status& Model::status() const { return state_->status; }
void Model::ClearError() {
  if (state_->loaded) state_->status = absl::OkStatus();
}
const std::string& Model::name() const { return state_->name; }
int64_t Model::tuned_tasks() const { return state_->tuned_tasks; }
const std::string& Model::tuning_summary() const { return state_->tuning_summary; }
runtime::CompiledModel* Model::compiled() { return state_->compiled.get(); }
runtime::CudaModel* Model::cuda_model() { return state_->gpu.model.get(); }
const ops::Target* Model::cuda_target() const {
  return state_->gpu.backend != nullptr ? &state_->gpu.backend->target() : nullptr;
}

std::vector<TensorInfo> Model::inputs() const {
  if (!state_->status.ok()) return {};
  if (state_->compiled != nullptr) return state_->compiled->inputs();
  if (state_->gpu.model != nullptr) return state_->gpu.model->inputs();
  return state_->graph.inputs;
}

std::vector<TensorInfo> Model::outputs() const {
  if (!state_->status.ok()) return {};
  if (state_->compiled != nullptr) return state_->compiled->outputs();
  if (state_->gpu.model != nullptr) return state_->gpu.model->outputs();
  std::vector<TensorInfo> out = state_->graph.outputs;
  for (TensorInfo& v : out) {
    auto t = state_->graph.value_types.find(v.name);
    if (t != state_->graph.value_types.end()) v.type = t->second;
  }
  return out;
}

}  // namespace loom
