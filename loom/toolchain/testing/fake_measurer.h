// A Measurer without a device, for tests of the layers above (tuners, stages, the tune loop, the
// scheduler's engine): each candidate's costs are a deterministic function of its config, with
// optional seeded noise, injected errors and a virtual clock, so those tests are fast and exact.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "loom/base/clock.h"
#include "loom/toolchain/measurer.h"

namespace loom::tune {

// The default fake cost: seconds in [1e-4, 2e-4), a fixed pseudo-random function of the config
// index (same value in every run and on every machine).
double DefaultFakeCost(const ops::Config& config);

class FakeMeasurer final : public Measurer {
 public:
  struct Options {
    // Seconds per run of a config. Empty: DefaultFakeCost.
    std::function<double(const ops::Config&)> cost;
    // An error to report instead of costs (kNone: measure normally). Empty: never.
    std::function<ErrorKind(const ops::Config&)> error;
    // Costs per measured candidate, like MeasureOptions::repeat. At least 1.
    int32_t repeat = 3;
    // Relative noise: repeat i costs cost * (1 + noise * u), u in [-1, 1) drawn from
    // (seed, config, i), so the same config always gets the same costs.
    double noise = 0;
    uint64_t seed = 0;
    // When set, timestamps come from it and each measured (not passed-through) candidate
    // advances it by `measure_time`; otherwise timestamps are absl::Now().
    base::VirtualClock* clock = nullptr;
    // Reported as MeasureResult::measure_seconds of each measured candidate.
    absl::Duration measure_time = absl::ZeroDuration();
  };

  FakeMeasurer() : FakeMeasurer(Options{}) {}
  explicit FakeMeasurer(Options options);

  // Build errors pass through as in every Measurer; other candidates get `error(config)` or
  // `repeat` costs. The task is recorded (see tasks()).
  std::vector<MeasureResult> Measure(const MeasureTask& task,
                                     const std::vector<BuildResult>& built) override;
  // Always succeeds: worker_pid 0, no cpus.
  absl::StatusOr<DeviceInfo> Probe() override;

  // Candidates measured so far (pass-throughs excluded).
  int64_t num_measured() const;
  // Workload keys of every Measure call so far, in call order.
  std::vector<std::string> task_keys() const;

 private:
  const Options options_;
  mutable std::mutex mu_;
  int64_t num_measured_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> task_keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::tune
