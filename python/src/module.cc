// The extension module `loom._loom`: the C++ library under the Python package `loom`
// (python/loom/). Its names are the package's private layer; the public API, its docstrings and
// its types are in the pure-Python modules, and _loom.pyi types this layer.
#include <pybind11/pybind11.h>

#include <string>

#include "loom/search/tuner_defaults.h"
#include "status.h"

namespace py = pybind11;

namespace loom::python {
void RegisterModel(py::module_& m);
void RegisterRecords(py::module_& m);
void RegisterClient(py::module_& m);
void RegisterExperiment(py::module_& m);
}  // namespace loom::python

PYBIND11_MODULE(_loom, m) {
  m.doc() = "Loom's C++ library for the Python package `loom` (private: use `loom`).";
  m.attr("__version__") = LOOM_VERSION;
  // The tuning defaults the package's signatures show (one owner: search/tuner_defaults.h).
  m.attr("DEFAULT_TUNER") = std::string(loom::search::kDefaultTunerKind);
  m.attr("DEFAULT_BATCH_SIZE") = loom::search::kDefaultBatchSize;
  loom::python::RegisterStatusTranslator(m);
  loom::python::RegisterModel(m);
  loom::python::RegisterRecords(m);
  loom::python::RegisterClient(m);
  loom::python::RegisterExperiment(m);
}
