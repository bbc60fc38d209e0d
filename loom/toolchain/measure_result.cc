#include "loom/toolchain/measure_result.h"

#include <algorithm>
#include <limits>

namespace loom::tune {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone:
      return "none";
    case ErrorKind::kInstantiation:
      return "instantiation";
    case ErrorKind::kCompile:
      return "compile";
    case ErrorKind::kRuntime:
      return "runtime";
    case ErrorKind::kWrongAnswer:
      return "wrong_answer";
    case ErrorKind::kBuildTimeout:
      return "build_timeout";
    case ErrorKind::kRunTimeout:
      return "run_timeout";
    case ErrorKind::kUnknown:
      return "unknown";
  }
  return "unknown";
}

double MeasureResult::MedianCost() const { return tune::MedianCost(costs, error); }

double MedianCost(const std::vector<double>& costs, ErrorKind error) {
  if (error != ErrorKind::kNone || costs.empty()) return std::numeric_limits<double>::infinity();
  std::vector<double> sorted = costs;
  std::sort(sorted.begin(), sorted.end());
  const size_t mid = sorted.size() / 2;
  if (sorted.size() % 2 == 1) return sorted[mid];
  return 0.5 * (sorted[mid - 1] + sorted[mid]);
}

}  // namespace loom::tune
