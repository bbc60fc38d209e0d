#include "loom/tune/stage_wire.h"

#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::tune {
namespace {

using ::testing::ElementsAre;

TEST(StageWireTest, EveryStageKindHasOneWireKindAndTheSchedulersName) {
  EXPECT_EQ(WireKind(sched::StageKind::kPropose), v1::STAGE_KIND_PROPOSE);
  EXPECT_EQ(WireKind(sched::StageKind::kBuild), v1::STAGE_KIND_BUILD);
  EXPECT_EQ(WireKind(sched::StageKind::kMeasure), v1::STAGE_KIND_MEASURE);
  EXPECT_EQ(WireKind(sched::StageKind::kUpdate), v1::STAGE_KIND_UPDATE);
  EXPECT_EQ(WireKind(sched::StageKind::kOther), v1::STAGE_KIND_UNSPECIFIED);
  for (int i = 0; i < sched::kNumStageKinds; ++i) {
    const auto k = static_cast<sched::StageKind>(i);
    if (k == sched::StageKind::kOther) continue;
    EXPECT_EQ(WireKindName(WireKind(k)), sched::StageKindName(k));
  }
  EXPECT_EQ(WireKindName(v1::STAGE_KIND_SIMULATED), "simulated");
  EXPECT_EQ(WireKindName(v1::STAGE_KIND_UNSPECIFIED), "unspecified");
  EXPECT_EQ(WireKindName(static_cast<v1::StageKind>(99)), "unspecified");
}

TEST(StageWireTest, ErrorKindsKeepTheirValueAndAnUnknownOneIsUnknown) {
  for (int v = 0; v <= static_cast<int>(ErrorKind::kUnknown); ++v) {
    const auto kind = static_cast<ErrorKind>(v);
    EXPECT_EQ(static_cast<int>(ToWire(kind)), v);
    EXPECT_EQ(FromWire(ToWire(kind)), kind);
  }
  // A hostile or newer peer's value is never taken for a success.
  EXPECT_EQ(FromWire(static_cast<v1::ErrorKind>(-1)), ErrorKind::kUnknown);
  EXPECT_EQ(FromWire(static_cast<v1::ErrorKind>(42)), ErrorKind::kUnknown);
}

TEST(StageWireTest, AMeasurementCrossesTheWireAndBackUnchanged) {
  MeasureResult m;
  m.config = ops::Config{17};
  m.costs = {2e-3, 1e-3, 3e-3};
  m.measure_seconds = 0.25;
  m.timestamp = absl::FromUnixMicros(1700000000123456);
  const v1::MeasureResult wire = ToWire(m);
  EXPECT_TRUE(wire.checked());
  EXPECT_EQ(wire.config_index(), 17);
  const MeasureResult back = FromWire(wire);
  EXPECT_EQ(back.config.index, 17);
  EXPECT_THAT(back.costs, ElementsAre(2e-3, 1e-3, 3e-3));
  EXPECT_EQ(back.error, ErrorKind::kNone);
  EXPECT_EQ(back.measure_seconds, 0.25);
  EXPECT_EQ(back.timestamp, m.timestamp);
  EXPECT_EQ(back.MedianCost(), 2e-3);

  MeasureResult failed;
  failed.config = ops::Config{3};
  failed.error = ErrorKind::kRunTimeout;
  failed.error_msg = "hung";
  const v1::MeasureResult failed_wire = ToWire(failed);
  EXPECT_FALSE(failed_wire.checked());
  const MeasureResult failed_back = FromWire(failed_wire);
  EXPECT_EQ(failed_back.error, ErrorKind::kRunTimeout);
  EXPECT_EQ(failed_back.error_msg, "hung");
  EXPECT_TRUE(failed_back.costs.empty());
  EXPECT_EQ(failed_back.MedianCost(), std::numeric_limits<double>::infinity());
}

TEST(StageWireTest, ABuildCrossesWithoutItsObject) {
  BuildResult b{.config = ops::Config{5},
                .artifact_path = "/tmp/k.so",
                .error = ErrorKind::kCompile,
                .error_msg = "no",
                .build_seconds = 1.5};
  const v1::Artifact a = ToWire(b);
  EXPECT_EQ(a.config_index(), 5);
  EXPECT_EQ(a.error(), v1::ERROR_KIND_COMPILE);
  EXPECT_TRUE(a.content_hash().empty());
  EXPECT_TRUE(a.binary().empty());
  const BuildResult back = FromWire(a);
  EXPECT_EQ(back.config.index, 5);
  EXPECT_EQ(back.error, ErrorKind::kCompile);
  EXPECT_EQ(back.error_msg, "no");
  EXPECT_EQ(back.build_seconds, 1.5);
  EXPECT_TRUE(back.artifact_path.empty());
}

TEST(StageWireTest, ZeroAndEmptyTunerSettingsAreTheSessionsDefaults) {
  const TaskTunerOptions defaults;
  v1::TunerSpec spec;
  spec.set_trials(40);
  spec.set_seed(7);
  TaskTunerOptions o = SessionOptionsOf(spec);
  EXPECT_EQ(o.trials, 40);
  EXPECT_EQ(o.batch_size, defaults.batch_size);
  EXPECT_EQ(o.tuner.kind, defaults.tuner.kind);
  EXPECT_EQ(o.tuner.kind, search::TunerOptions{}.kind);
  EXPECT_EQ(o.tuner.plan_size, defaults.tuner.plan_size);
  EXPECT_EQ(o.tuner.early_stopping, -1);
  EXPECT_EQ(o.tuner.seed, 7u);
  EXPECT_TRUE(o.use_prior);

  spec.set_kind("ga");
  spec.set_batch_size(3);
  spec.set_plan_size(32);
  spec.set_early_stopping(10);
  spec.set_no_prior(true);
  o = SessionOptionsOf(spec);
  EXPECT_EQ(o.tuner.kind, "ga");
  EXPECT_EQ(o.batch_size, 3);
  EXPECT_EQ(o.tuner.plan_size, 32);
  EXPECT_EQ(o.tuner.early_stopping, 10);
  EXPECT_FALSE(o.use_prior);
}

}  // namespace
}  // namespace loom::tune
