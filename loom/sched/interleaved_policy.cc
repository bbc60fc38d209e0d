// `interleaved`: the thesis' load-aware scheduler. Devices are leased to one stage at a time, CPU
// slots up to capacity, and stages of other jobs fill idle resources; FIFO within a priority
// (the core breaks equal keys by the order stages became ready).
#include "loom/sched/policy.h"

namespace loom::sched {
namespace {

class InterleavedPolicy final : public Policy {
 public:
  std::string_view Name() const override { return "interleaved"; }
  OrderKey Order(const ReadyStage&) override { return {}; }
};

}  // namespace

std::unique_ptr<Policy> MakeInterleavedPolicy() { return std::make_unique<InterleavedPolicy>(); }

}  // namespace loom::sched
