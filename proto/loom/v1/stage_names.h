// Short names of loom.v1 stage kinds for logs and tables ("propose", "build", ...), shared by the
// daemon (service/) and the agent (agent/). Hand-written; lives beside the generated headers.
#pragma once

#include "loom/v1/stage.pb.h"

namespace loom::v1 {

inline const char* StageKindShortName(StageKind kind) {
  switch (kind) {
    case STAGE_KIND_PROPOSE:
      return "propose";
    case STAGE_KIND_BUILD:
      return "build";
    case STAGE_KIND_MEASURE:
      return "measure";
    case STAGE_KIND_UPDATE:
      return "update";
    case STAGE_KIND_SIMULATED:
      return "simulated";
    default:
      return "unspecified";
  }
}

}  // namespace loom::v1
