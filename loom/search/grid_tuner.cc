// GridTuner: every valid config in index order (AutoTVM's GridSearchTuner), skipping configs
// already visited (loaded history, or results fed back for configs it did not propose).
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/search/tuner.h"

namespace loom::search {
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

  absl::Status SaveKindState(v1::TunerState& state) const override {
    state.mutable_grid()->set_cursor(cursor_);
    return absl::OkStatus();
  }
  absl::Status RestoreKindState(const v1::TunerState& state) override {
    if (state.grid().cursor() < 0 || state.grid().cursor() > space_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tuner state: grid cursor ", state.grid().cursor(), " outside the space"));
    }
    cursor_ = state.grid().cursor();
    return absl::OkStatus();
  }

 private:
  int64_t cursor_ = 0;  // every index below it was proposed, already visited or invalid
};

}  // namespace

std::unique_ptr<Tuner> MakeGridTuner(const ops::Template& tmpl, const TunerOptions& options) {
  return std::make_unique<GridTuner>(tmpl, options);
}

}  // namespace loom::search
