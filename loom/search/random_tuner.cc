// RandomTuner: uniform sampling of the valid configs without replacement (AutoTVM's RandomTuner).
#include <memory>
#include <vector>

#include "loom/search/tuner.h"

namespace loom::search {
namespace {

class RandomTuner final : public Tuner {
 public:
  using Tuner::Tuner;

 protected:
  std::vector<ops::Config> NextBatch(int n) override {
    std::vector<ops::Config> batch;
    absl::flat_hash_set<int64_t> picked;
    for (int i = 0; i < n; ++i) {
      int64_t index = RandomUnvisited(picked);
      if (index < 0) break;  // no valid config left
      picked.insert(index);
      batch.push_back(ops::Config{index});
    }
    return batch;
  }
};

}  // namespace

std::unique_ptr<Tuner> MakeRandomTuner(const ops::Template& tmpl, const TunerOptions& options) {
  return std::make_unique<RandomTuner>(tmpl, options);
}

}  // namespace loom::search
