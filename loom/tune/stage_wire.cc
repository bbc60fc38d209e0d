#include "loom/tune/stage_wire.h"

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace loom::tune {

v1::StageKind WireKind(sched::StageKind kind) {
  switch (kind) {
    case sched::StageKind::kPropose:
      return v1::STAGE_KIND_PROPOSE;
    case sched::StageKind::kBuild:
      return v1::STAGE_KIND_BUILD;
    case sched::StageKind::kMeasure:
      return v1::STAGE_KIND_MEASURE;
    case sched::StageKind::kUpdate:
      return v1::STAGE_KIND_UPDATE;
    case sched::StageKind::kOther:
      break;
  }
  return v1::STAGE_KIND_UNSPECIFIED;
}

std::string WireKindName(v1::StageKind kind) {
  if (kind == v1::STAGE_KIND_SIMULATED) return "simulated";
  for (int i = 0; i < sched::kNumStageKinds; ++i) {
    const auto k = static_cast<sched::StageKind>(i);
    if (k != sched::StageKind::kOther && WireKind(k) == kind)
      return std::string(sched::StageKindName(k));
  }
  return "unspecified";
}

v1::ErrorKind ToWire(ErrorKind kind) {
  const int v = static_cast<int>(kind);
  return v1::ErrorKind_IsValid(v) ? static_cast<v1::ErrorKind>(v) : v1::ERROR_KIND_UNKNOWN;
}

ErrorKind FromWire(v1::ErrorKind kind) {
  const int v = static_cast<int>(kind);
  return v >= 0 && v <= static_cast<int>(ErrorKind::kUnknown) ? static_cast<ErrorKind>(v)
                                                              : ErrorKind::kUnknown;
}

v1::Artifact ToWire(const BuildResult& build) {
  v1::Artifact a;
  a.set_config_index(build.config.index);
  a.set_build_seconds(build.build_seconds);
  a.set_error(ToWire(build.error));
  a.set_error_msg(build.error_msg);
  return a;
}

BuildResult FromWire(const v1::Artifact& artifact) {
  return BuildResult{.config = ops::Config{artifact.config_index()},
                     .error = FromWire(artifact.error()),
                     .error_msg = artifact.error_msg(),
                     .build_seconds = artifact.build_seconds()};
}

v1::MeasureResult ToWire(const MeasureResult& result) {
  v1::MeasureResult r;
  r.set_config_index(result.config.index);
  r.mutable_costs()->Add(result.costs.begin(), result.costs.end());
  r.set_error(ToWire(result.error));
  r.set_error_msg(result.error_msg);
  r.set_measure_seconds(result.measure_seconds);
  r.set_timestamp_unix_micros(absl::ToUnixMicros(result.timestamp));
  r.set_checked(result.ok());
  return r;
}

MeasureResult FromWire(const v1::MeasureResult& result) {
  MeasureResult m;
  m.config = ops::Config{result.config_index()};
  m.costs.assign(result.costs().begin(), result.costs().end());
  m.error = FromWire(result.error());
  m.error_msg = result.error_msg();
  m.measure_seconds = result.measure_seconds();
  m.timestamp = absl::FromUnixMicros(result.timestamp_unix_micros());
  return m;
}

TaskTunerOptions SessionOptionsOf(const v1::TunerSpec& spec) {
  TaskTunerOptions o;
  o.trials = spec.trials();
  if (spec.batch_size() > 0) o.batch_size = spec.batch_size();
  if (!spec.kind().empty()) o.tuner.kind = spec.kind();
  o.tuner.seed = static_cast<uint64_t>(spec.seed());
  if (spec.plan_size() > 0) o.tuner.plan_size = spec.plan_size();
  o.tuner.early_stopping = spec.early_stopping() > 0 ? spec.early_stopping() : -1;
  o.use_prior = !spec.no_prior();
  return o;
}

}  // namespace loom::tune
