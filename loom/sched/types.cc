#include "loom/sched/types.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loom::sched {

std::string_view StageKindName(StageKind kind) {
  switch (kind) {
    case StageKind::kPropose:
      return "propose";
    case StageKind::kBuild:
      return "build";
    case StageKind::kMeasure:
      return "measure";
    case StageKind::kUpdate:
      return "update";
    case StageKind::kOther:
      return "other";
  }
  return "other";
}

absl::StatusOr<StageKind> ParseStageKind(std::string_view name) {
  for (int i = 0; i < kNumStageKinds; ++i) {
    StageKind k = static_cast<StageKind>(i);
    if (StageKindName(k) == name) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown stage kind '", std::string(name),
                   "' (expected propose, build, measure, update or other)"));
}

std::string_view StageEventTypeName(StageEvent::Type type) {
  switch (type) {
    case StageEvent::Type::kRequeued:
      return "requeued";
    case StageEvent::Type::kFailed:
      return "failed";
    case StageEvent::Type::kCancelled:
      return "cancelled";
  }
  return "failed";
}

}  // namespace loom::sched
