// `uncontrolled`: the baseline of independent runners sharing one server. Every ready stage starts
// at once; devices and CPU slots are shared past capacity (the simulator charges interference).
#include "loom/sched/policy.h"

namespace loom::sched {
namespace {

class UncontrolledPolicy final : public Policy {
 public:
  std::string_view Name() const override { return "uncontrolled"; }
  bool ExclusiveResources() const override { return false; }
  OrderKey Order(const ReadyStage&) override { return {}; }
};

}  // namespace

std::unique_ptr<Policy> MakeUncontrolledPolicy() { return std::make_unique<UncontrolledPolicy>(); }

}  // namespace loom::sched
