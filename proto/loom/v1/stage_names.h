// Short names of loom.v1 enums for logs and tables: stage kinds ("propose", "build", ...) and job
// states ("queued", "succeeded", ...), shared by the daemon (service/), the agent (agent/), the
// job CLI and the experiment's service runner. Hand-written; lives beside the generated headers.
#pragma once

#include "loom/v1/jobs.pb.h"
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

inline const char* JobStateShortName(JobState state) {
  switch (state) {
    case JOB_STATE_QUEUED:
      return "queued";
    case JOB_STATE_RUNNING:
      return "running";
    case JOB_STATE_SUCCEEDED:
      return "succeeded";
    case JOB_STATE_FAILED:
      return "failed";
    case JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

}  // namespace loom::v1
