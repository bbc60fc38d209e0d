// The translator of StatusError (status.h): looks the exception class up in loom.errors by the
// status code, so the hierarchy is defined once, in Python.
#include "status.h"

#include <string>

namespace py = pybind11;

namespace loom::python {

void RegisterStatusTranslator(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      py::object error = py::module_::import("loom.errors")
                             .attr("error_from_status")(static_cast<int>(e.status().code()),
                                                        std::string(e.status().message()));
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
    }
  });
}

}  // namespace loom::python
