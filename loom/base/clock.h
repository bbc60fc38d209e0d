// Time source injected into everything whose decisions depend on time: the scheduler core, the
// engine, the service and the simulator share code and differ only in the Clock they pass.
#pragma once

#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace loom::base {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The wall clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

// A clock that moves only when told to: the simulator's and the tests'. Thread-safe.
class VirtualClock final : public Clock {
 public:
  explicit VirtualClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  // Moves the clock to `t`; time never goes backwards, so an earlier `t` is ignored.
  void AdvanceTo(absl::Time t) {
    std::lock_guard<std::mutex> lock(mu_);
    if (t > now_) now_ = t;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    if (d > absl::ZeroDuration()) now_ += d;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::base
