// XgbCostModel: the CostModel over XGBoost's C API (libxgboost). Every C API failure becomes an
// absl::Status carrying XGBGetLastError(); handles are owned by RAII wrappers.
#include <xgboost/c_api.h>

#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/search/cost_model.h"

namespace loom::search {
namespace {

// kInternal naming the call and quoting XGBoost. Inputs are checked before they reach XGBoost, so
// what fails inside it is a library or configuration problem (e.g. an unknown objective).
absl::Status XgbError(const char* call) {
  return absl::InternalError(absl::StrCat("XGBoost ", call, " failed: ", XGBGetLastError()));
}

#define LOOM_XGB_CALL(call_name, expr)           \
  do {                                           \
    if ((expr) != 0) return XgbError(call_name); \
  } while (false)

struct DMatrixDeleter {
  void operator()(void* h) const {
    if (h != nullptr) XGDMatrixFree(h);
  }
};
struct BoosterDeleter {
  void operator()(void* h) const {
    if (h != nullptr) XGBoosterFree(h);
  }
};
using DMatrix = std::unique_ptr<void, DMatrixDeleter>;
using Booster = std::unique_ptr<void, BoosterDeleter>;

absl::StatusOr<DMatrix> MakeDMatrix(const FeatureMatrix& features) {
  DMatrixHandle handle = nullptr;
  // NaN marks missing values; features are dense, so nothing is missing.
  if (XGDMatrixCreateFromMat(features.data().data(), static_cast<bst_ulong>(features.rows()),
                             static_cast<bst_ulong>(features.cols()), std::nanf(""),
                             &handle) != 0) {
    return XgbError("XGDMatrixCreateFromMat");
  }
  return DMatrix(handle);
}

class XgbCostModel final : public CostModel {
 public:
  explicit XgbCostModel(const XgbCostModelOptions& options) : options_(options) {}

  absl::Status Fit(const FeatureMatrix& features, const std::vector<float>& labels) override {
    if (features.rows() == 0) return absl::InvalidArgumentError("Fit needs at least one row");
    if (static_cast<int64_t>(labels.size()) != features.rows()) {
      return absl::InvalidArgumentError(absl::StrCat("Fit got ", labels.size(), " labels for ",
                                                     features.rows(), " feature rows"));
    }
    for (float y : labels) {
      if (!std::isfinite(y)) return absl::InvalidArgumentError("Fit got a non-finite label");
    }
    booster_.reset();
    LOOM_ASSIGN_OR_RETURN(DMatrix dtrain, MakeDMatrix(features));
    LOOM_XGB_CALL("XGDMatrixSetFloatInfo(label)",
                  XGDMatrixSetFloatInfo(dtrain.get(), "label", labels.data(), labels.size()));
    DMatrixHandle dmats[] = {dtrain.get()};
    BoosterHandle raw = nullptr;
    LOOM_XGB_CALL("XGBoosterCreate", XGBoosterCreate(dmats, 1, &raw));
    Booster booster(raw);
    const std::pair<std::string, std::string> params[] = {
        {"objective", options_.objective},
        {"max_depth", absl::StrCat(options_.max_depth)},
        {"eta", absl::StrCat(options_.eta)},
        {"gamma", absl::StrCat(options_.gamma)},
        {"min_child_weight", absl::StrCat(options_.min_child_weight)},
        {"lambda", absl::StrCat(options_.lambda)},
        {"alpha", "0"},
        {"subsample", "1"},
        {"tree_method", "exact"},
        // XGBoost parses its seed as a signed integer: fold the 64-bit seed into 31 bits.
        {"seed", absl::StrCat((options_.seed ^ (options_.seed >> 31) ^ (options_.seed >> 62)) &
                              0x7fffffffu)},
        {"nthread", absl::StrCat(options_.nthread)},
        {"verbosity", "0"},
    };
    for (const auto& [name, value] : params) {
      if (XGBoosterSetParam(booster.get(), name.c_str(), value.c_str()) != 0) {
        return XgbError(absl::StrCat("XGBoosterSetParam(", name, ")").c_str());
      }
    }
    for (int iter = 0; iter < options_.num_rounds; ++iter) {
      LOOM_XGB_CALL("XGBoosterUpdateOneIter",
                    XGBoosterUpdateOneIter(booster.get(), iter, dtrain.get()));
    }
    booster_ = std::move(booster);
    num_features_ = features.cols();
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<float>> Predict(const FeatureMatrix& features) const override {
    if (!booster_) return absl::FailedPreconditionError("Predict called before a successful Fit");
    if (features.cols() != num_features_) {
      return absl::InvalidArgumentError(absl::StrCat("Predict got rows of ", features.cols(),
                                                     " features; the model was trained on ",
                                                     num_features_));
    }
    if (features.rows() == 0) return std::vector<float>();
    LOOM_ASSIGN_OR_RETURN(DMatrix dmat, MakeDMatrix(features));
    bst_ulong out_len = 0;
    const float* out = nullptr;
    LOOM_XGB_CALL("XGBoosterPredict",
                  XGBoosterPredict(booster_.get(), dmat.get(), /*option_mask=*/0,
                                   /*ntree_limit=*/0, /*training=*/0, &out_len, &out));
    if (static_cast<int64_t>(out_len) != features.rows()) {
      return absl::InternalError(absl::StrCat("XGBoost returned ", out_len, " predictions for ",
                                              features.rows(), " rows"));
    }
    return std::vector<float>(out, out + out_len);
  }

  bool fitted() const override { return booster_ != nullptr; }

  absl::StatusOr<std::string> Serialize() const override {
    if (!booster_) return std::string();
    bst_ulong len = 0;
    const char* bytes = nullptr;
    LOOM_XGB_CALL("XGBoosterSerializeToBuffer",
                  XGBoosterSerializeToBuffer(booster_.get(), &len, &bytes));
    return std::string(bytes, len);
  }

  absl::Status Deserialize(std::string_view bytes, int64_t num_features) override {
    booster_.reset();
    num_features_ = 0;
    if (bytes.empty()) return absl::OkStatus();
    if (num_features <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cost model: ", num_features, " features for a saved model"));
    }
    BoosterHandle raw = nullptr;
    LOOM_XGB_CALL("XGBoosterCreate", XGBoosterCreate(nullptr, 0, &raw));
    Booster booster(raw);
    if (XGBoosterUnserializeFromBuffer(booster.get(), bytes.data(), bytes.size()) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cost model: the saved XGBoost model does not load: ", XGBGetLastError()));
    }
    booster_ = std::move(booster);
    num_features_ = num_features;
    return absl::OkStatus();
  }

 private:
  XgbCostModelOptions options_;
  Booster booster_;
  int64_t num_features_ = 0;
};

}  // namespace

absl::Status FeatureMatrix::AddRow(std::span<const float> row) {
  if (static_cast<int64_t>(row.size()) != cols_) {
    return absl::InvalidArgumentError(
        absl::StrCat("feature row has ", row.size(), " values, expected ", cols_));
  }
  data_.insert(data_.end(), row.begin(), row.end());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CostModel>> MakeXgbCostModel(const XgbCostModelOptions& options) {
  if (options.num_rounds <= 0 || options.max_depth <= 0 || options.nthread <= 0) {
    return absl::InvalidArgumentError(
        "XgbCostModelOptions: num_rounds, max_depth and nthread must be positive");
  }
  if (options.objective.empty()) {
    return absl::InvalidArgumentError("XgbCostModelOptions: objective is empty");
  }
  return std::unique_ptr<CostModel>(new XgbCostModel(options));
}

double KendallTau(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t n = static_cast<int64_t>(a.size());
  if (n < 2 || static_cast<int64_t>(b.size()) != n) return 0;
  double concordant = 0, discordant = 0, ties_a = 0, ties_b = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      double da = a[i] - a[j], db = b[i] - b[j];
      if (da == 0 && db == 0) continue;
      if (da == 0) {
        ties_a += 1;
      } else if (db == 0) {
        ties_b += 1;
      } else if ((da > 0) == (db > 0)) {
        concordant += 1;
      } else {
        discordant += 1;
      }
    }
  }
  double denom = std::sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b));
  return denom == 0 ? 0 : (concordant - discordant) / denom;
}

}  // namespace loom::search
