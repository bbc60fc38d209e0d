// The tuning round as four separate stages with explicit inputs and outputs, so that a scheduler
// (the embedded engine, or an agent on another host) can run each one when and where it decides:
//   Propose(tuner)                  -> configs        (CPU)
//   Build(template, builder, configs) -> artifacts    (CPU slots, parallel compiles)
//   Measure(measurer, task, artifacts) -> results     (the device, exclusively)
//   Update(tuner, store, results)   -> records        (CPU)
// Every stage returns its StageTiming (start, end, resource): the traces the scheduler and the
// simulator learn stage durations from. TaskSession (task_session.h) decides which runs next.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ops/template.h"
#include "loom/records/record.h"
#include "loom/records/record_store.h"
#include "loom/search/tuner.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measure_result.h"
#include "loom/toolchain/measurer.h"

namespace loom::tune {

struct ProposeOutput {
  std::vector<ops::Config> configs;
  StageTiming timing;
};
// Up to `batch_size` new configs from `tuner` (empty when it has none left).
ProposeOutput ProposeStage(search::Tuner& tuner, int batch_size, const std::string& resource);

struct BuildOutput {
  std::vector<BuildResult> builds;  // one per config, in order
  StageTiming timing;
};
BuildOutput BuildStage(const ops::Template& tmpl, Builder& builder,
                       const std::vector<ops::Config>& configs, const std::string& resource);

struct MeasureOutput {
  std::vector<MeasureResult> results;  // one per build, in order
  StageTiming timing;
};
// Precondition: the caller holds the device `measurer` stands for, exclusively.
MeasureOutput MeasureStage(Measurer& measurer, const MeasureTask& task,
                           const std::vector<BuildResult>& builds, const std::string& resource);

struct UpdateOutput {
  std::vector<Record> records;  // as stored, one per result
  StageTiming timing;
};
// Feeds `results` to `tuner` and appends one record per result to `store` (in one transaction; a
// null store keeps records in memory only). `builds[i]` and `results[i]` belong to the same config.
absl::StatusOr<UpdateOutput> UpdateStage(search::Tuner& tuner, RecordStore* store,
                                         const RecordContext& context,
                                         const std::vector<BuildResult>& builds,
                                         const std::vector<MeasureResult>& results,
                                         const std::string& resource);

}  // namespace loom::tune
