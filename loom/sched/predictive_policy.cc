// `predictive`: learns stage durations per (job, stage kind) online and orders ready work so the
// device waits as little as possible, in the spirit of Johnson's rule for a CPU -> device flow:
//  - a CPU stage is keyed by the CPU work its job still needs before its next device stage
//    (shortest first), so the jobs closest to the device reach it first;
//  - a device stage is keyed by the CPU work its job does between device visits (longest first),
//    so long CPU phases start early and overlap with other jobs' device work.
// Keys age: a stage's key drops by kAgingWeight per second waited, so no stage starves.
#include <array>
#include <cstdint>
#include <vector>

#include "loom/sched/index.h"
#include "loom/sched/policy.h"

namespace loom::sched {
namespace {

constexpr double kAgingWeight = 0.5;  // key seconds gained per second waited
constexpr double kSmoothing = 0.3;    // weight of the newest observation in the moving averages

// A job's moving averages, with their "seen at least once" flags in one bit mask. 64-byte
// aligned and ordered so that everything Order() reads sits in the first cache line.
struct alignas(64) JobModel {
  static constexpr int kCpuStageBit = 0;                  // + kind
  static constexpr int kDeviceStageBit = kNumStageKinds;  // + kind
  static constexpr int kCycleBit = 2 * kNumStageKinds;

  uint16_t known = 0;
  bool seen_device = false;
  double cpu_cycle = 0.0;  // CPU work between consecutive device stages
  double cpu_since_device = 0.0;
  std::array<double, kNumStageKinds> cpu_stage{};     // CPU stage durations by kind
  std::array<double, kNumStageKinds> device_stage{};  // device stage durations by kind

  bool Known(int bit) const { return (known >> bit) & 1; }
  void Add(double& value, int bit, double x) {
    value = Known(bit) ? (1.0 - kSmoothing) * value + kSmoothing * x : x;
    known |= static_cast<uint16_t>(1u << bit);
  }
};
static_assert(sizeof(JobModel) == 128);

class PredictivePolicy final : public Policy {
 public:
  std::string_view Name() const override { return "predictive"; }

  OrderKey Order(const ReadyStage& s) override {
    const JobModel& m = Model(s.job);
    const int k = static_cast<int>(s.kind);
    double key;
    if (s.uses_device) {
      key = m.Known(JobModel::kCycleBit) ? -m.cpu_cycle : 0.0;
    } else {
      double own = m.Known(JobModel::kCpuStageBit + k) ? m.cpu_stage[k]
                   : s.estimate                        ? absl::ToDoubleSeconds(*s.estimate)
                                                       : 0.0;
      double to_device = own;
      if (m.Known(JobModel::kCycleBit)) {
        to_device = std::max(own, m.cpu_cycle - m.cpu_since_device);
      }
      key = to_device;
    }
    key += kAgingWeight * absl::ToDoubleSeconds(s.ready - absl::UnixEpoch());
    return {key, 0};
  }

  void OnFinished(const FinishedStage& f) override {
    JobModel& m = Model(f.job);
    const int k = static_cast<int>(f.kind);
    double d = absl::ToDoubleSeconds(f.duration);
    if (f.uses_device) {
      m.Add(m.device_stage[k], JobModel::kDeviceStageBit + k, d);
      if (m.seen_device) m.Add(m.cpu_cycle, JobModel::kCycleBit, m.cpu_since_device);
      m.seen_device = true;
      m.cpu_since_device = 0.0;
    } else {
      m.Add(m.cpu_stage[k], JobModel::kCpuStageBit + k, d);
      m.cpu_since_device += d;
    }
  }

  void OnJobRemoved(JobId job) override {
    const int32_t slot = slots_.Find(job);
    if (slot < 0) return;
    slots_.Erase(job);
    free_.push_back(slot);
  }

 private:
  // The job's model, created empty on first use. Job ids are dense and increasing, so models are
  // found through a paged id table rather than a hash map.
  JobModel& Model(JobId job) {
    int32_t slot = slots_.Find(job);
    if (slot >= 0) return models_[slot];
    if (free_.empty()) {
      slot = static_cast<int32_t>(models_.size());
      models_.emplace_back();
    } else {
      slot = free_.back();
      free_.pop_back();
      models_[slot] = JobModel{};
    }
    slots_.Insert(job, slot);
    return models_[slot];
  }

  IdSlotTable slots_;
  std::vector<JobModel> models_;
  std::vector<int32_t> free_;
};

}  // namespace

std::unique_ptr<Policy> MakePredictivePolicy() { return std::make_unique<PredictivePolicy>(); }

}  // namespace loom::sched
