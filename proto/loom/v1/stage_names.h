// Short names of job states ("queued", "succeeded", ...) for logs and tables, shared by the daemon
// (service/), the job CLI, the Python client and the experiment's service runner. Hand-written;
// lives beside the generated headers. A stage kind's name is the scheduler's
// (tune::WireKindName, tune/stage_wire.h).
#pragma once

#include "loom/v1/jobs.pb.h"

namespace loom::v1 {

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
