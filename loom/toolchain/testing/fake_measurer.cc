#include "loom/toolchain/testing/fake_measurer.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "loom/base/rng.h"

namespace loom::tune {
namespace {

// SplitMix64 finalizer: a fixed bijective mix, the same on every platform.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

double DefaultFakeCost(const ops::Config& config) {
  const uint64_t h = Mix(static_cast<uint64_t>(config.index));
  return 1e-4 * (1.0 + static_cast<double>(h >> 11) / static_cast<double>(uint64_t{1} << 53));
}

FakeMeasurer::FakeMeasurer(Options options) : options_(std::move(options)) {}

std::vector<MeasureResult> FakeMeasurer::Measure(const MeasureTask& task,
                                                 const std::vector<BuildResult>& built) {
  std::lock_guard<std::mutex> lock(mu_);
  task_keys_.push_back(task.workload_key);
  std::vector<MeasureResult> results;
  results.reserve(built.size());
  for (const BuildResult& b : built) {
    MeasureResult r;
    r.config = b.config;
    if (b.error != ErrorKind::kNone) {
      r.error = b.error;
      r.error_msg = b.error_msg;
      r.timestamp = options_.clock != nullptr ? options_.clock->Now() : absl::Now();
      results.push_back(std::move(r));
      continue;
    }
    ++num_measured_;
    if (options_.clock != nullptr) options_.clock->Advance(options_.measure_time);
    r.timestamp = options_.clock != nullptr ? options_.clock->Now() : absl::Now();
    r.measure_seconds = absl::ToDoubleSeconds(options_.measure_time);
    const ErrorKind error = options_.error ? options_.error(b.config) : ErrorKind::kNone;
    if (error != ErrorKind::kNone) {
      r.error = error;
      r.error_msg = "injected by FakeMeasurer";
      results.push_back(std::move(r));
      continue;
    }
    const double cost = options_.cost ? options_.cost(b.config) : DefaultFakeCost(b.config);
    for (int32_t i = 0; i < std::max(1, options_.repeat); ++i) {
      double c = cost;
      if (options_.noise != 0) {
        base::Rng rng(Mix(options_.seed ^ Mix(static_cast<uint64_t>(b.config.index) * 1315423911u +
                                              static_cast<uint64_t>(i))));
        c *= 1.0 + options_.noise * rng.Uniform(-1.0, 1.0);
      }
      r.costs.push_back(c);
    }
    results.push_back(std::move(r));
  }
  return results;
}

absl::StatusOr<DeviceInfo> FakeMeasurer::Probe() { return DeviceInfo{}; }

int64_t FakeMeasurer::num_measured() const {
  std::lock_guard<std::mutex> lock(mu_);
  return num_measured_;
}

std::vector<std::string> FakeMeasurer::task_keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return task_keys_;
}

}  // namespace loom::tune
