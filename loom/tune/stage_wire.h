// The stages' messages (proto/loom/v1/stage.proto) <-> the stage functions' and the session's own
// types: the one place where a stage's kind, a build, a measurement and a job's tuner settings
// cross between the daemon (service::JobDriver) and the agents (agent::StageExecutor). Each border
// converts once, here, in both directions; neither side keeps a copy of these rules.
#pragma once

#include <string>

#include "loom/sched/types.h"
#include "loom/toolchain/measure_result.h"
#include "loom/tune/task_session.h"
#include "loom/v1/stage.pb.h"

namespace loom::tune {

// sched::StageKind, the one stage-kind enum of the tuning loop, on the wire; kOther (no stage of
// the round) is STAGE_KIND_UNSPECIFIED.
v1::StageKind WireKind(sched::StageKind kind);
// A wire kind's name for logs and tables: sched::StageKindName of its kind ("propose", "build",
// "measure", "update"), "simulated" for a load-test stage, "unspecified" for any other value.
std::string WireKindName(v1::StageKind kind);

// Error kinds: the same values on both sides (stage.proto mirrors toolchain's ErrorKind). A value
// this release does not know (a newer or a hostile peer) is kUnknown / ERROR_KIND_UNKNOWN.
v1::ErrorKind ToWire(ErrorKind kind);
ErrorKind FromWire(v1::ErrorKind kind);

// A built candidate. Objects never travel: the artifact carries no path (the building agent sets
// its content hash), and a build from the wire has none (the measuring agent finds its own).
v1::Artifact ToWire(const BuildResult& build);
BuildResult FromWire(const v1::Artifact& artifact);

// A measurement, as the measuring agent reports it and the update stage receives it back. The
// wire's `checked` is set for a success (both measurers compare a candidate's output with the
// reference before timing it). A timestamp of 0 is the Unix epoch: the daemon, which stores the
// records, dates such a result itself.
v1::MeasureResult ToWire(const MeasureResult& result);
MeasureResult FromWire(const v1::MeasureResult& result);

// A job's tuning settings as the stages carry them (TunerSpec), where 0 and "" mean "the default",
// as a session's options: the one place that applies those defaults (the batch size of
// TaskTunerOptions, the tuner kind of search::TunerOptions). The daemon builds its sessions with
// it and sends the settings it resolved; an agent restores its session with it. Fields the spec
// does not carry (job id, template options, transfer, ...) keep TaskTunerOptions' defaults.
TaskTunerOptions SessionOptionsOf(const v1::TunerSpec& spec);

}  // namespace loom::tune
