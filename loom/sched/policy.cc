#include "loom/sched/policy.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom::sched {

const std::vector<std::string_view>& PolicyNames() {
  static const auto* names =
      new std::vector<std::string_view>{"sequential", "uncontrolled", "interleaved", "predictive"};
  return *names;
}

absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(std::string_view name) {
  if (name == "sequential") return MakeSequentialPolicy();
  if (name == "uncontrolled") return MakeUncontrolledPolicy();
  if (name == "interleaved") return MakeInterleavedPolicy();
  if (name == "predictive") return MakePredictivePolicy();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown policy '", std::string(name), "' (expected one of: ",
                   absl::StrJoin(PolicyNames(), ", ",
                                 [](std::string* out, std::string_view n) { out->append(n); }),
                   ")"));
}

}  // namespace loom::sched
