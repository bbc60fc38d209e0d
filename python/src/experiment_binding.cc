// `loom._loom.load_experiment_spec`: the experiment spec parser (experiment/spec.h) for
// loom.experiment (python/loom/experiment.py), which checks a spec in process, with the parser's
// own errors, before it runs `loom experiment` on it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "loom/experiment/spec.h"
#include "status.h"

namespace py = pybind11;

namespace loom::python {

void RegisterExperiment(py::module_& m) {
  m.def(
      "load_experiment_spec",
      [](const std::string& path) {
        experiment::ExperimentSpec spec = ValueOrThrow(experiment::LoadExperimentSpec(path));
        py::list jobs;
        for (const experiment::ExperimentJobSpec& j : spec.jobs) {
          py::dict d;
          d["model"] = j.model;
          d["tasks"] = j.tasks;
          d["trials"] = j.trials;
          d["batch_size"] = j.batch_size;
          d["tuner"] = j.tuner;
          d["seed"] = j.seed;
          jobs.append(d);
        }
        py::dict d;
        d["name"] = spec.name;
        d["jobs"] = jobs;
        d["setups"] = spec.setups;
        d["device_cores"] = spec.device_cores;
        d["min_repeat_ms"] = spec.min_repeat_ms;
        d["repeat"] = spec.repeat;
        d["distortion_samples"] = spec.distortion_samples;
        d["latency_runs"] = spec.latency_runs;
        d["simulate"] = spec.simulate;
        return d;
      },
      py::arg("path"),
      "Parses an experiment spec (YAML) strictly; raises naming the key path of an error.");
}

}  // namespace loom::python
