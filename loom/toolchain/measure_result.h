// The data passed between the tuning stages: what a build produced and what a measurement found,
// one result per candidate with its own error, as AutoTVM's MeasureResult.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "loom/ops/config_space.h"

namespace loom::tune {

// AutoTVM's error kinds. A failing candidate is data, never an exception.
enum class ErrorKind : int32_t {
  kNone = 0,
  kInstantiation = 1,  // the template rejected the config
  kCompile = 2,        // the compiler failed
  kRuntime = 3,        // the kernel crashed (signal) or failed to load
  kWrongAnswer = 4,    // output differs from the reference kernel
  kBuildTimeout = 5,
  kRunTimeout = 6,  // the kernel hung
  kUnknown = 7,
};
const char* ErrorKindName(ErrorKind kind);  // "none", "instantiation", "compile", ...

// Output of the Build stage for one candidate.
struct BuildResult {
  ops::Config config;
  std::string artifact_path;  // shared object; empty on error
  ErrorKind error = ErrorKind::kNone;
  std::string error_msg;
  double build_seconds = 0;
  bool cache_hit = false;
};

// Output of the Measure stage for one candidate.
struct MeasureResult {
  ops::Config config;
  std::vector<double> costs;  // seconds per kernel run, one per repeat (empty on error)
  ErrorKind error = ErrorKind::kNone;
  std::string error_msg;
  double measure_seconds = 0;  // wall time the measurement took
  absl::Time timestamp;

  bool ok() const { return error == ErrorKind::kNone; }
  // Median of costs; +inf on error.
  double MedianCost() const;
};

// Median of `costs` when `error` is kNone and `costs` is non-empty, else +inf (what records store
// as a measurement's cost).
double MedianCost(const std::vector<double>& costs, ErrorKind error);

}  // namespace loom::tune
