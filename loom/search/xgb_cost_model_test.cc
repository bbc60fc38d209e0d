#include <cmath>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/search/cost_model.h"

namespace loom::search {
namespace {

using ::testing::HasSubstr;

// Rows of 3 features drawn from [0, 4) and a monotone target: higher x0 and x1, lower x2 is better.
struct Data {
  FeatureMatrix x{3};
  std::vector<float> y;
};
Data MakeData(int rows, uint64_t seed) {
  base::Rng rng(seed);
  Data d;
  for (int i = 0; i < rows; ++i) {
    float a = static_cast<float>(rng.Uniform(0, 4));
    float b = static_cast<float>(rng.Uniform(0, 4));
    float c = static_cast<float>(rng.Uniform(0, 4));
    EXPECT_TRUE(d.x.AddRow(std::vector<float>{a, b, c}).ok());
    d.y.push_back(2 * a + b - 0.5f * c + 0.1f * a * b);
  }
  return d;
}

std::unique_ptr<CostModel> Model(XgbCostModelOptions options = {}) {
  auto model = MakeXgbCostModel(options);
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

TEST(XgbCostModelTest, RanksAMonotoneFunctionOnHeldOutData) {
  Data train = MakeData(200, 1);
  Data test = MakeData(100, 2);
  for (const char* objective : {"rank:pairwise", "reg:squarederror"}) {
    auto model = Model({.objective = objective});
    ASSERT_TRUE(model->Fit(train.x, train.y).ok());
    EXPECT_TRUE(model->fitted());
    auto pred = model->Predict(test.x);
    ASSERT_TRUE(pred.ok()) << pred.status();
    ASSERT_EQ(pred->size(), 100u);
    EXPECT_GT(KendallTau(*pred, test.y), 0.8) << objective;
  }
}

TEST(XgbCostModelTest, SameSeedSamePredictionsAndRefitReplacesTheModel) {
  Data train = MakeData(150, 3);
  Data test = MakeData(50, 4);
  auto a = Model({.seed = 9});
  auto b = Model({.seed = 9});
  ASSERT_TRUE(a->Fit(train.x, train.y).ok());
  ASSERT_TRUE(b->Fit(train.x, train.y).ok());
  auto pa = a->Predict(test.x);
  auto pb = b->Predict(test.x);
  ASSERT_TRUE(pa.ok() && pb.ok());
  EXPECT_EQ(*pa, *pb);

  // Refit on the reversed target: the ranking flips.
  std::vector<float> reversed;
  for (float y : train.y) reversed.push_back(-y);
  ASSERT_TRUE(a->Fit(train.x, reversed).ok());
  auto flipped = a->Predict(test.x);
  ASSERT_TRUE(flipped.ok());
  EXPECT_LT(KendallTau(*flipped, test.y), -0.8);
}

// Seeds come from 64-bit mixes (job seed x round); XGBoost reads its seed as a signed integer.
TEST(XgbCostModelTest, SixtyFourBitSeedsFit) {
  Data train = MakeData(60, 5);
  for (uint64_t seed : {uint64_t{0xffffffffffffffffu}, uint64_t{0x8000000000000000u},
                        uint64_t{0x00000000ffffffffu}}) {
    auto m = Model({.seed = seed});
    EXPECT_TRUE(m->Fit(train.x, train.y).ok()) << seed;
  }
}

TEST(XgbCostModelTest, PredictBeforeFitFails) {
  auto model = Model();
  EXPECT_FALSE(model->fitted());
  auto pred = model->Predict(MakeData(3, 1).x);
  EXPECT_EQ(pred.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(pred.status().message(), HasSubstr("before a successful Fit"));
}

TEST(XgbCostModelTest, MismatchedFeatureLengthIsInvalidArgument) {
  auto model = Model();
  Data train = MakeData(50, 5);
  ASSERT_TRUE(model->Fit(train.x, train.y).ok());
  FeatureMatrix wide(4);
  ASSERT_TRUE(wide.AddRow(std::vector<float>{1, 2, 3, 4}).ok());
  auto pred = model->Predict(wide);
  EXPECT_EQ(pred.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pred.status().message(), HasSubstr("4 features"));
  EXPECT_THAT(pred.status().message(), HasSubstr("trained on 3"));

  FeatureMatrix m(3);
  absl::Status st = m.AddRow(std::vector<float>{1, 2});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("2 values, expected 3"));
}

TEST(XgbCostModelTest, BadTrainingInputIsInvalidArgument) {
  auto model = Model();
  Data d = MakeData(10, 6);
  std::vector<float> short_labels(d.y.begin(), d.y.begin() + 5);
  absl::Status st = model->Fit(d.x, short_labels);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("5 labels for 10 feature rows"));
  EXPECT_EQ(model->Fit(FeatureMatrix(3), {}).code(), absl::StatusCode::kInvalidArgument);
  d.y[0] = std::nanf("");
  EXPECT_EQ(model->Fit(d.x, d.y).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(model->fitted());
}

TEST(XgbCostModelTest, XgboostErrorsBecomeStatusWithItsMessage) {
  // The objective is only checked inside XGBoost, so this exercises the C API error path.
  auto model = Model({.objective = "rank:nonsense"});
  Data d = MakeData(10, 7);
  absl::Status st = model->Fit(d.x, d.y);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("XGBoost"));
  EXPECT_THAT(st.message(), HasSubstr("rank:nonsense"));
  EXPECT_FALSE(model->fitted());
}

TEST(XgbCostModelTest, FactoryRejectsBadOptions) {
  auto bad = MakeXgbCostModel({.num_rounds = 0});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("num_rounds"));
  EXPECT_EQ(MakeXgbCostModel({.objective = ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KendallTauTest, KnownValues) {
  EXPECT_DOUBLE_EQ(KendallTau({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(KendallTau({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  // Pairs: (1,2) c, (1,3) c, (2,3) d -> (2 - 1) / 3.
  EXPECT_NEAR(KendallTau({1, 2, 3}, {1, 3, 2}), 1.0 / 3.0, 1e-12);
}

}  // namespace
}  // namespace loom::search
