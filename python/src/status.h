// absl::Status -> Python exceptions for the extension module `loom._loom`: every binding turns a
// failed status into a StatusError, which the translator registered by RegisterStatusTranslator
// raises as the loom.errors class of its code (loom.errors.InvalidArgumentError, ...), carrying
// the code and the message.
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom::python {

// Carries a failed status from C++ to the translator (thrown with the GIL held or not).
class StatusError : public std::exception {
 public:
  explicit StatusError(absl::Status status) : status_(std::move(status)) {}
  const char* what() const noexcept override { return "loom status error"; }
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

inline void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw StatusError(status);
}

template <typename T>
T ValueOrThrow(absl::StatusOr<T> value) {
  if (!value.ok()) throw StatusError(value.status());
  return *std::move(value);
}

// Registers the translator of StatusError; call once from the module's init.
void RegisterStatusTranslator(pybind11::module_& m);

}  // namespace loom::python
