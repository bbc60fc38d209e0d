// GridTuner: every valid config in index order (AutoTVM's GridSearchTuner), skipping configs
// already visited (loaded history, or results fed back for configs it did not propose).
#include <memory>
#include <vector>

#include "loom/tune/tuner.h"

namespace loom::tune {
namespace {

class GridTuner final : public Tuner {
 public:
  using Tuner::Tuner;

 protected:
  std::vector<ops::Config> NextBatch(int n) override {
    std::vector<ops::Config> batch;
    while (static_cast<int>(batch.size()) < n && cursor_ < space_size()) {
      if (IsFree(cursor_)) batch.push_back(ops::Config{cursor_});
      ++cursor_;
    }
    return batch;
  }

 private:
  int64_t cursor_ = 0;  // every index below it was proposed, already visited or invalid
};

}  // namespace

std::unique_ptr<Tuner> MakeGridTuner(const ops::Template& tmpl, const TunerOptions& options) {
  return std::make_unique<GridTuner>(tmpl, options);
}

}  // namespace loom::tune
