// Measurement distortion: how far a candidate's cost measured during a setup (with other jobs
// running) is from its cost measured again alone on the idle device. The experiment runner
// re-measures a seeded sample of each job's candidates after each setup; the report shows the
// per-job and median figures side by side for every setup.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/ops/target.h"
#include "loom/records/record.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measurer.h"

namespace loom::experiment {

struct DistortionSample {
  std::string task_key;
  int64_t config_index = 0;
  double in_run_s = 0;  // the record's median cost, measured during the setup
  double alone_s = 0;   // measured again alone; NaN when the re-measurement failed
  double distortion = 0;
  std::string error;  // why the re-measurement failed; empty on success
  // The task's best candidate in the run: the config the setup chose (ranking.h's regret).
  bool chosen = false;
};

// |in_run / alone - 1|; NaN unless both are positive and finite.
double Distortion(double in_run_s, double alone_s);

// The median of the finite values (mean of the two middle ones for an even count); NaN if none.
double Median(std::vector<double> values);

// Up to `k` of the successful records, chosen without replacement by a generator seeded with
// `seed`, in their original order. Deterministic for the same input and seed.
std::vector<tune::Record> SampleRecords(const std::vector<tune::Record>& records, int k,
                                        uint64_t seed);

// The re-measurement set of one task's records (SampleTaskRecords): its `top` best successful
// configs by in-run median cost (a config measured twice counts once, with its best cost), then a
// seeded sample of its other successful configs, up to `k` in all (k >= top, or top is cut to k).
// The best comes first; the others keep their original order. Deterministic for the same input
// and seed.
std::vector<tune::Record> SampleTaskRecords(const std::vector<tune::Record>& records, int k,
                                            int top, uint64_t seed);

// Rebuilds each record's config (its task's template on `target`) and measures it again with
// `measurer`, one sample per record (in order). The caller makes sure nothing else runs on the
// device meanwhile. kInvalidArgument when a record's task key does not parse or has no template;
// a candidate that fails to build or run is a sample with its error.
absl::StatusOr<std::vector<DistortionSample>> Remeasure(const std::vector<tune::Record>& records,
                                                        const ops::Target& target,
                                                        tune::Builder& builder,
                                                        tune::Measurer& measurer);

}  // namespace loom::experiment
