// `sequential`: the baseline of running tuning jobs one after another. Only the first unfinished
// job (by priority, submission time, id) may hold resources; its stages run FIFO.
#include "loom/sched/policy.h"

namespace loom::sched {
namespace {

class SequentialPolicy final : public Policy {
 public:
  std::string_view Name() const override { return "sequential"; }
  bool OneJobAtATime() const override { return true; }
  // Group the ready queue by job so the current job's stages head every resource queue.
  OrderKey Order(const ReadyStage& s) override {
    return {absl::ToDoubleSeconds(s.job_submit - absl::UnixEpoch()), s.job};
  }
};

}  // namespace

std::unique_ptr<Policy> MakeSequentialPolicy() { return std::make_unique<SequentialPolicy>(); }

}  // namespace loom::sched
