// `loom._loom.Model`: loom::Model (include/loom/loom.h) for the Python package's loom.Model and
// loom.CompiledModel (python/loom/model.py). Every step raises on error instead of carrying it
// down the chain (the model stays as it was before the failed step). The GIL is released while
// Loom works; one mutex per model serializes its steps and runs, so any Python thread may call
// any method at any time.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/graph/tasks.h"
#include "loom/loom.h"
#include "loom/ops/target.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_model.h"
#include "status.h"
#include "tensors.h"

namespace py = pybind11;

namespace loom::python {
namespace {

class PyModel {
 public:
  explicit PyModel(Model model) : model_(std::move(model)) {}

  // Runs fn(model) with the GIL released and the model's mutex held; then raises the model's
  // error, if the step failed, after clearing it from the chain.
  template <typename Fn>
  auto Locked(Fn&& fn) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    return fn(model_);
  }
  // Raises the error of the last step (Tune, Compile: recorded in the chain), clearing it.
  void RaiseStepError() {
    absl::Status status = Locked([](Model& m) {
      absl::Status s = m.status();
      m.ClearError();
      return s;
    });
    ThrowIfError(status);
  }
  // The value of a terminal call (Run, Benchmark, Export), whose implicit compile may have
  // recorded an error in the chain: cleared, then raised.
  template <typename T>
  T Value(absl::StatusOr<T> value) {
    if (!value.ok()) {
      Locked([](Model& m) { m.ClearError(); });
      throw StatusError(value.status());
    }
    return *std::move(value);
  }

  Model model_;
  std::mutex mu_;
};

py::list ValueInfos(const std::vector<TensorInfo>& values) {
  py::list out;
  for (const TensorInfo& v : values) {
    out.append(
        py::make_tuple(v.name, graph::DTypeName(v.type.dtype), py::tuple(py::cast(v.type.shape))));
  }
  return out;
}

std::unique_ptr<PyModel> Load(const std::string& spec,
                              const std::map<std::string, std::vector<int64_t>>& input_shapes,
                              int64_t batch, uint64_t seed, const std::string& verify_key,
                              int cuda_device) {
  LoadOptions lo;
  for (const auto& [name, dims] : input_shapes) lo.input_shapes[name] = dims;
  lo.zoo_batch = batch;
  lo.zoo_seed = seed;
  lo.verify_key = verify_key;
  lo.cuda_device = cuda_device;
  Model model = [&] {
    py::gil_scoped_release release;
    return Model::Load(spec, lo);
  }();
  ThrowIfError(model.status());
  return std::make_unique<PyModel>(std::move(model));
}

py::list Tasks(PyModel& self) {
  std::vector<graph::Task> tasks = ValueOrThrow(self.Locked([](Model& m) { return m.Tasks(); }));
  py::list out;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const graph::Task& t = tasks[i];
    py::dict d;
    d["index"] = i;
    d["kind"] = graph::TaskKindName(t.workload.kind);
    d["key"] = t.key;
    d["hash"] = t.hash;
    d["count"] = t.count;
    d["flops"] = t.flops;
    d["nodes"] = t.nodes;
    out.append(d);
  }
  return out;
}

void Tune(PyModel& self, int64_t trials, const std::string& db, const std::string& tuner,
          uint64_t seed, int32_t batch_size, const std::string& prior, bool use_prior,
          const std::vector<int>& tasks, const std::vector<int>& device_cores,
          int32_t build_threads, bool transfer, const std::vector<std::string>& measure_worker,
          const std::optional<py::function>& progress) {
  TuneOptions o;
  o.trials = trials;
  o.db = db;
  o.tuner = tuner;
  o.seed = seed;
  o.batch_size = batch_size;
  o.prior = prior;
  o.use_prior = use_prior;
  o.tasks = tasks;
  o.device_cores = device_cores;
  o.build_threads = build_threads;
  o.transfer = transfer;
  o.measure_worker = measure_worker;
  // A Python error raised by the progress callback, or KeyboardInterrupt (a signal seen between
  // rounds), stops tuning; it is raised once Tune has returned.
  std::optional<py::error_already_set> py_error;
  if (progress.has_value()) {
    o.on_progress = [&](const std::string& line) {
      py::gil_scoped_acquire gil;
      if (py_error.has_value()) return;
      try {
        (*progress)(line);
      } catch (py::error_already_set& e) {
        py_error = std::move(e);
      }
    };
  }
  o.interrupted = [&] {
    py::gil_scoped_acquire gil;
    if (!py_error.has_value() && PyErr_CheckSignals() != 0) py_error = py::error_already_set();
    return py_error.has_value();
  };
  self.Locked([&](Model& m) { m.Tune(o); });
  if (py_error.has_value()) {
    self.Locked([](Model& m) { m.ClearError(); });
    throw std::move(*py_error);
  }
  self.RaiseStepError();
}

void Compile(PyModel& self, int32_t threads, const std::string& target, const std::string& db,
             bool fuse, int32_t build_threads, const std::string& cache_dir) {
  self.Locked([&](Model& m) {
    m.Compile({.threads = threads,
               .target = target,
               .db = db,
               .fuse = fuse,
               .build_threads = build_threads,
               .cache_dir = cache_dir});
  });
  self.RaiseStepError();
}

py::dict Benchmark(PyModel& self, double min_seconds, int32_t min_runs) {
  BenchmarkResult r = self.Value(self.Locked(
      [&](Model& m) { return m.Benchmark({.min_seconds = min_seconds, .min_runs = min_runs}); }));
  py::dict d;
  d["median_ms"] = r.median_ms;
  d["p90_ms"] = r.p90_ms;
  d["min_ms"] = r.min_ms;
  d["mean_ms"] = r.mean_ms;
  d["runs"] = r.runs;
  return d;
}

void Export(PyModel& self, const std::string& dir) {
  absl::Status st = self.Locked([&](Model& m) { return m.Export(dir); });
  if (!st.ok()) self.Value(absl::StatusOr<bool>(st));
}

// inputs: name -> array. Returns the outputs in the model's order.
py::list Run(PyModel& self, const py::dict& inputs) {
  const std::vector<TensorInfo> declared = self.Locked([](Model& m) { return m.inputs(); });
  std::map<std::string, Tensor> feeds;
  for (const auto& [key, value] : inputs) {
    const std::string name = py::str(key);
    auto it = std::find_if(declared.begin(), declared.end(),
                           [&](const TensorInfo& v) { return v.name == name; });
    if (it == declared.end()) {
      std::string names;
      for (const TensorInfo& v : declared) names += (names.empty() ? "'" : ", '") + v.name + "'";
      throw StatusError(absl::InvalidArgumentError(
          absl::StrCat("the model has no input '", name, "' (its inputs: ", names, ")")));
    }
    feeds[name] = ToTensor(value, it->type.dtype, absl::StrCat("input '", name, "'"));
  }
  std::vector<Tensor> outputs = self.Value(self.Locked([&](Model& m) { return m.Run(feeds); }));
  py::list out;
  for (Tensor& t : outputs) out.append(ToArray(std::move(t)));
  return out;
}

py::dict CompileStats(PyModel& self) {
  return self.Locked([](Model& m) -> py::dict {
    py::gil_scoped_acquire gil;
    py::dict d;
    if (const runtime::CudaModel* gpu = m.cuda_model(); gpu != nullptr) {
      d["threads"] = 0;  // its kernels run on the GPU
      d["target"] = m.cuda_target()->Key();
      d["device"] = m.cuda_target()->device_name;
      d["launches"] = gpu->stats().launches;
      d["host_steps"] = gpu->stats().host_steps;
      d["arena_bytes"] = gpu->stats().arena_bytes;
      d["graph_replay"] = gpu->run_stats().graph_captured;
      return d;
    }
    runtime::CompiledModel* cm = m.compiled();
    if (cm == nullptr) return d;
    const runtime::CompileStats& s = cm->stats();
    d["threads"] = cm->num_threads();
    d["target"] = cm->target_key();
    d["kernel_steps"] = s.kernel_steps;
    d["tuned_kernels"] = s.tuned_kernels;
    d["tuned"] = m.tuning_summary();
    d["unique_kernels"] = s.unique_kernels;
    d["fused_ops"] = s.fused_ops;
    d["reference_steps"] = s.reference_steps;
    d["arena_bytes"] = s.arena_bytes;
    d["cache_hits"] = s.cache_hits;
    d["compile_seconds"] = s.compile_seconds;
    return d;
  });
}

}  // namespace

void RegisterModel(py::module_& m) {
  py::class_<PyModel>(m, "Model", "loom::Model: see loom.Model (python/loom/model.py).")
      .def_static("load", &Load, py::arg("spec"), py::arg("input_shapes"), py::arg("batch"),
                  py::arg("seed"), py::arg("verify_key"), py::arg("cuda_device"))
      .def("tasks", &Tasks)
      .def("tune", &Tune, py::arg("trials"), py::arg("db"), py::arg("tuner"), py::arg("seed"),
           py::arg("batch_size"), py::arg("prior"), py::arg("use_prior"), py::arg("tasks"),
           py::arg("device_cores"), py::arg("build_threads"), py::arg("transfer"),
           py::arg("measure_worker"), py::arg("progress"))
      .def("compile", &Compile, py::arg("threads"), py::arg("target"), py::arg("db"),
           py::arg("fuse"), py::arg("build_threads"), py::arg("cache_dir"))
      .def("benchmark", &Benchmark, py::arg("min_seconds"), py::arg("min_runs"))
      .def("export", &Export, py::arg("dir"))
      .def("run", &Run, py::arg("inputs"))
      .def("compile_stats", &CompileStats)
      .def_property_readonly("name",
                             [](PyModel& s) { return s.Locked([](Model& m) { return m.name(); }); })
      .def_property_readonly(
          "inputs",
          [](PyModel& s) { return ValueInfos(s.Locked([](Model& m) { return m.inputs(); })); })
      .def_property_readonly(
          "outputs",
          [](PyModel& s) { return ValueInfos(s.Locked([](Model& m) { return m.outputs(); })); })
      .def_property_readonly("tuned_tasks", [](PyModel& s) {
        return s.Locked([](Model& m) { return m.tuned_tasks(); });
      });
}

}  // namespace loom::python
