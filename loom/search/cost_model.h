// Cost models: learn, from measured configs, a score that ranks unmeasured configs (higher is
// faster). The model-based tuner (xgb_tuner.cc) fits one every plan and queries it from the
// simulated-annealing search (sa_optimizer.h). Implementations sit beside this header, reached
// through factories (XgbCostModel: xgb_cost_model.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom::search {

// Dense row-major float matrix: one row of features per config.
class FeatureMatrix {
 public:
  explicit FeatureMatrix(int64_t cols) : cols_(cols) {}

  // Appends a row. kInvalidArgument when its length differs from cols().
  absl::Status AddRow(std::span<const float> row);

  int64_t rows() const { return cols_ == 0 ? 0 : static_cast<int64_t>(data_.size()) / cols_; }
  int64_t cols() const { return cols_; }
  const std::vector<float>& data() const { return data_; }
  std::span<const float> Row(int64_t r) const {
    return std::span<const float>(data_).subspan(r * cols_, cols_);
  }
  void Reserve(int64_t rows) { data_.reserve(rows * cols_); }

 private:
  int64_t cols_;
  std::vector<float> data_;
};

// Fit / Predict contract: Fit trains from scratch (it replaces any earlier model); Predict needs a
// successful Fit first and rows with the feature layout of the training rows. Only the order of
// the predicted scores is meaningful (rank objectives). Not thread-safe.
class CostModel {
 public:
  virtual ~CostModel() = default;

  // `labels[i]` (higher is better, e.g. normalized throughput; 0 for failed configs) belongs to
  // row i. kInvalidArgument for no rows, a label count that differs from the row count, or
  // non-finite labels; kInternal for a failure inside the learning library (its message quoted,
  // e.g. an unknown objective).
  virtual absl::Status Fit(const FeatureMatrix& features, const std::vector<float>& labels) = 0;

  // One score per row. kFailedPrecondition before a successful Fit; kInvalidArgument when the
  // row length differs from the training rows'.
  virtual absl::StatusOr<std::vector<float>> Predict(const FeatureMatrix& features) const = 0;

  virtual bool fitted() const = 0;

  // The fitted model in the learning library's own serialized form (XGBoost:
  // XGBoosterSerializeToBuffer), for a tuner's saved state (Tuner::SaveState); empty when not
  // fitted. kInternal when the library fails.
  virtual absl::StatusOr<std::string> Serialize() const = 0;
  // Replaces the model by Serialize()'s `bytes` of a model trained on rows of `num_features`;
  // empty bytes leave it unfitted. The bytes may come from anywhere (a session state):
  // kInvalidArgument when the library does not load them.
  virtual absl::Status Deserialize(std::string_view bytes, int64_t num_features) = 0;
};

// XGBoost gradient-boosted trees (C API). Defaults follow AutoTVM's XGBoostCostModel.
struct XgbCostModelOptions {
  std::string objective = "rank:pairwise";  // or "reg:squarederror"
  int num_rounds = 100;                     // boosting rounds per Fit
  int max_depth = 3;
  double eta = 0.3;
  double gamma = 1e-4;
  double min_child_weight = 1;
  double lambda = 1;
  uint64_t seed = 0;
  // Training threads. 1 keeps Fit bit-for-bit reproducible across machines.
  int nthread = 1;
};

// kInvalidArgument for non-positive rounds/depth/threads or an empty objective.
absl::StatusOr<std::unique_ptr<CostModel>> MakeXgbCostModel(const XgbCostModelOptions& options);

// Kendall's tau-b rank correlation of `a` and `b` (same length >= 2), in [-1, 1]; ties in either
// count as neither concordant nor discordant. For tests and tuning diagnostics.
double KendallTau(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace loom::search
