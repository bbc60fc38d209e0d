// `predictive`: learns stage durations per (job, stage kind) online and orders ready work so the
// device waits as little as possible, in the spirit of Johnson's rule for a CPU -> device flow:
//  - a CPU stage is keyed by the CPU work its job still needs before its next device stage
//    (shortest first), so the jobs closest to the device reach it first;
//  - a device stage is keyed by the CPU work its job does between device visits (longest first),
//    so long CPU phases start early and overlap with other jobs' device work.
// Keys age: a stage's key drops by kAgingWeight per second waited, so no stage starves.
#include <array>

#include "absl/container/flat_hash_map.h"
#include "loom/sched/policy.h"

namespace loom::sched {
namespace {

constexpr double kAgingWeight = 0.5;  // key seconds gained per second waited
constexpr double kSmoothing = 0.3;    // weight of the newest observation in the moving averages

struct Ewma {
  double value = 0.0;
  bool known = false;
  void Add(double x) {
    value = known ? (1.0 - kSmoothing) * value + kSmoothing * x : x;
    known = true;
  }
};

struct JobModel {
  std::array<Ewma, kNumStageKinds> cpu_stage;     // CPU stage durations by kind
  std::array<Ewma, kNumStageKinds> device_stage;  // device stage durations by kind
  Ewma cpu_cycle;                                 // CPU work between consecutive device stages
  double cpu_since_device = 0.0;
  bool seen_device = false;
};

class PredictivePolicy final : public Policy {
 public:
  std::string_view Name() const override { return "predictive"; }

  OrderKey Order(const ReadyStage& s) override {
    const JobModel& m = jobs_[s.job];
    const int k = static_cast<int>(s.kind);
    double key;
    if (s.uses_device) {
      key = m.cpu_cycle.known ? -m.cpu_cycle.value : 0.0;
    } else {
      double own = m.cpu_stage[k].known ? m.cpu_stage[k].value
                   : s.estimate         ? absl::ToDoubleSeconds(*s.estimate)
                                        : 0.0;
      double to_device = own;
      if (m.cpu_cycle.known) to_device = std::max(own, m.cpu_cycle.value - m.cpu_since_device);
      key = to_device;
    }
    key += kAgingWeight * absl::ToDoubleSeconds(s.ready - absl::UnixEpoch());
    return {key, 0};
  }

  void OnFinished(const FinishedStage& f) override {
    JobModel& m = jobs_[f.job];
    const int k = static_cast<int>(f.kind);
    double d = absl::ToDoubleSeconds(f.duration);
    if (f.uses_device) {
      m.device_stage[k].Add(d);
      if (m.seen_device) m.cpu_cycle.Add(m.cpu_since_device);
      m.seen_device = true;
      m.cpu_since_device = 0.0;
    } else {
      m.cpu_stage[k].Add(d);
      m.cpu_since_device += d;
    }
  }

  void OnJobRemoved(JobId job) override { jobs_.erase(job); }

 private:
  absl::flat_hash_map<JobId, JobModel> jobs_;
};

}  // namespace

std::unique_ptr<Policy> MakePredictivePolicy() { return std::make_unique<PredictivePolicy>(); }

}  // namespace loom::sched
