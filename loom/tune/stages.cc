#include "loom/tune/stages.h"

#include "absl/time/clock.h"
#include "loom/base/check.h"

namespace loom::tune {
namespace {
StageTiming Timing(const char* stage, absl::Time start, const std::string& resource) {
  return StageTiming{.stage = stage, .start = start, .end = absl::Now(), .resource = resource};
}
}  // namespace

ProposeOutput ProposeStage(search::Tuner& tuner, int batch_size, const std::string& resource) {
  absl::Time start = absl::Now();
  ProposeOutput out;
  if (tuner.HasNext()) out.configs = tuner.Propose(batch_size);
  out.timing = Timing("propose", start, resource);
  return out;
}

BuildOutput BuildStage(const ops::Template& tmpl, Builder& builder,
                       const std::vector<ops::Config>& configs, const std::string& resource) {
  absl::Time start = absl::Now();
  BuildOutput out;
  out.builds = builder.Build(tmpl, configs);
  out.timing = Timing("build", start, resource);
  return out;
}

MeasureOutput MeasureStage(Measurer& measurer, const MeasureTask& task,
                           const std::vector<BuildResult>& builds, const std::string& resource) {
  absl::Time start = absl::Now();
  MeasureOutput out;
  out.results = measurer.Measure(task, builds);
  out.timing = Timing("measure", start, resource);
  return out;
}

absl::StatusOr<UpdateOutput> UpdateStage(search::Tuner& tuner, RecordStore* store,
                                         const RecordContext& context,
                                         const std::vector<BuildResult>& builds,
                                         const std::vector<MeasureResult>& results,
                                         const std::string& resource) {
  LOOM_CHECK(builds.size() == results.size());
  absl::Time start = absl::Now();
  UpdateOutput out;
  std::vector<ops::Config> configs;
  configs.reserve(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    configs.push_back(results[i].config);
    out.records.push_back(MakeRecord(context, results[i],
                                     tuner.tmpl().space().ToJson(results[i].config),
                                     builds[i].build_seconds));
  }
  tuner.Update(configs, results);
  if (store != nullptr && !out.records.empty()) {
    absl::Status st = store->Append(out.records);
    if (!st.ok()) return st;
  }
  out.timing = Timing("update", start, resource);
  return out;
}

}  // namespace loom::tune
