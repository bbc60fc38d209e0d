#include "loom/tune/task_tuner.h"

#include <limits>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/tune/testing/fake_builder.h"
#include "loom/tune/testing/fake_measurer.h"
#include "loom/tune/tune_job.h"

namespace loom::tune {
namespace {

using ::testing::HasSubstr;

graph::Task ConvTask(int64_t c = 32, int64_t k = 32, int64_t hw = 14, int64_t groups = 1) {
  graph::Workload w;
  w.kind = groups == 1 ? graph::TaskKind::kConv2d : graph::TaskKind::kGroupedConv2d;
  w.n = 1, w.c = c, w.h = hw, w.w = hw, w.k = k, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = groups;
  graph::Task t;
  t.workload = w;
  t.key = graph::WorkloadKey(w);
  t.hash = graph::StableHash(t.key);
  t.count = 1;
  t.flops = graph::WorkloadFlops(w);
  return t;
}

TaskTunerOptions Options(const std::string& job, int64_t trials,
                         const std::string& kind = "random") {
  TaskTunerOptions o;
  o.trials = trials;
  o.batch_size = 4;
  o.tuner.kind = kind;
  o.tuner.seed = 5;
  o.job_id = job;
  return o;
}

std::unique_ptr<RecordStore> MemoryStore() {
  auto store = OpenSqliteRecordStore(":memory:");
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

TEST(TaskTunerTest, RunsRoundsUntilBudgetAndStoresRecordsAndTimings) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  auto t = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 10), store.get());
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<int> batch_sizes;
  while (!(*t)->Done()) {
    batch_sizes.push_back((*t)->NextBatchSize());
    auto round = (*t)->RunRound(builder, measurer, {.cpu = "cpu:0", .device = "device:cpu:1"});
    ASSERT_TRUE(round.ok()) << round.status();
    ASSERT_EQ(round->timings.size(), 4u);
    EXPECT_EQ(round->timings[0].stage, "propose");
    EXPECT_EQ(round->timings[1].stage, "build");
    EXPECT_EQ(round->timings[2].stage, "measure");
    EXPECT_EQ(round->timings[2].resource, "device:cpu:1");
    EXPECT_EQ(round->timings[3].stage, "update");
    for (const auto& st : round->timings) EXPECT_LE(st.start, st.end);
  }
  EXPECT_EQ(batch_sizes, (std::vector<int>{4, 4, 2}));
  EXPECT_EQ((*t)->trials_done(), 10);
  EXPECT_EQ(*store->Count({.job_id = "j1"}), 10);
  auto timings = store->StageTimings("j1");
  ASSERT_TRUE(timings.ok());
  EXPECT_EQ(timings->size(), 12u);  // 3 rounds x 4 stages
  EXPECT_EQ(timings->back().round, 2);
  // The best cost is the minimum over the successful records.
  auto best = store->BestK(ConvTask().key, ops::HostCpuTarget().Key(), 1);
  ASSERT_TRUE(best.ok());
  ASSERT_EQ(best->size(), 1u);
  EXPECT_DOUBLE_EQ((*t)->best_cost(), (*best)[0].median_cost);
}

TEST(TaskTunerTest, ResumesFromTheSameJobWithoutRepeatingConfigs) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  {
    auto t = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 8), store.get());
    ASSERT_TRUE(t.ok());
    while (!(*t)->Done()) ASSERT_TRUE((*t)->RunRound(builder, measurer, {}).ok());
  }
  auto again = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 8), store.get());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->resumed_trials(), 8);
  EXPECT_TRUE((*again)->Done());

  auto more = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 20), store.get());
  ASSERT_TRUE(more.ok());
  EXPECT_EQ((*more)->NextBatchSize(), 4);
  while (!(*more)->Done()) ASSERT_TRUE((*more)->RunRound(builder, measurer, {}).ok());
  auto records = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "j1");
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 20u);
  std::set<int64_t> configs;
  for (const auto& r : *records) configs.insert(r.config_index);
  EXPECT_EQ(configs.size(), 20u) << "a resumed job re-measured a config";
}

TEST(TaskTunerTest, SimilarTasksSeedTheModelWithoutBecomingHistory) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  {
    auto t = TaskTuner::Create(ConvTask(32, 32, 14), ops::HostCpuTarget(), Options("a", 12),
                               store.get());
    ASSERT_TRUE(t.ok());
    while (!(*t)->Done()) ASSERT_TRUE((*t)->RunRound(builder, measurer, {}).ok());
  }
  // Another conv (more output channels): same template, a similar workload.
  auto similar = TaskTuner::Create(ConvTask(32, 64, 14), ops::HostCpuTarget(),
                                   Options("b", 8, "xgb"), store.get());
  ASSERT_TRUE(similar.ok()) << similar.status();
  EXPECT_GT((*similar)->similar_records(), 0);
  EXPECT_LE((*similar)->similar_records(), 12);
  EXPECT_EQ((*similar)->transferred_records(), 0);
  EXPECT_EQ((*similar)->trials_done(), 0);
  EXPECT_EQ((*similar)->tuner().num_visited(), 0);
  EXPECT_FALSE((*similar)->tuner().has_best());

  TaskTunerOptions off = Options("c", 8, "xgb");
  off.transfer = false;
  auto alone = TaskTuner::Create(ConvTask(32, 64, 14), ops::HostCpuTarget(), off, store.get());
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ((*alone)->similar_records(), 0);
}

TEST(TaskTunerTest, OtherJobsRecordsSeedTheTuner) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  double first_best = 0;
  {
    auto t = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("a", 12), store.get());
    ASSERT_TRUE(t.ok());
    while (!(*t)->Done()) ASSERT_TRUE((*t)->RunRound(builder, measurer, {}).ok());
    first_best = (*t)->best_cost();
  }
  auto b = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("b", 4), store.get());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->transferred_records(), 12);
  EXPECT_EQ((*b)->resumed_trials(), 0);
  EXPECT_DOUBLE_EQ((*b)->best_cost(), first_best);

  TaskTunerOptions no_transfer = Options("c", 4);
  no_transfer.transfer = false;
  auto c = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), no_transfer, store.get());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->transferred_records(), 0);
  EXPECT_FALSE((*c)->tuner().has_best());
}

TEST(TaskTunerTest, ATuningPriorSeedsTheModelWithoutAStoreOrTrials) {
  // A prior of a similar conv on an AVX-512 machine: its valid configs, faster with more
  // output-channel vectors.
  ops::Target target;
  target.isa = ops::Isa::kAvx512;
  target.cpu_model = "Test CPU";
  const graph::Task other = ConvTask(32, 64, 28);
  auto other_tmpl = ops::MakeTemplate(other.workload, target);
  ASSERT_TRUE(other_tmpl.ok());
  const ops::ConfigSpace& space = (*other_tmpl)->space();
  auto prior = std::make_shared<TuningPrior>();
  prior->target_class = "cpu:avx512";
  PriorTask task{other.key, (*other_tmpl)->name(), {}, {}};
  for (const auto& k : space.knobs()) task.knobs.push_back(k.name);
  for (int64_t i = 0; i < space.size() && task.configs.size() < 40; i += 7) {
    if (space.IsValid({i})) {
      task.configs.push_back({space.Values({i}), 10.0 * space.Value({i}, "tile_oc")});
    }
  }
  prior->tasks.push_back(task);

  TaskTunerOptions with = Options("p", 8, "xgb");
  with.prior = prior;
  auto t = TaskTuner::Create(ConvTask(32, 64, 14), target, with, /*store=*/nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->prior_records(), 40);
  EXPECT_EQ((*t)->trials_done(), 0);
  EXPECT_EQ((*t)->tuner().num_visited(), 0);
  EXPECT_FALSE((*t)->tuner().has_best());

  TaskTunerOptions off = with;
  off.use_prior = false;
  auto without = TaskTuner::Create(ConvTask(32, 64, 14), target, off, nullptr);
  ASSERT_TRUE(without.ok());
  EXPECT_EQ((*without)->prior_records(), 0);
  TaskTunerOptions no_transfer = with;
  no_transfer.transfer = false;
  auto alone = TaskTuner::Create(ConvTask(32, 64, 14), target, no_transfer, nullptr);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ((*alone)->prior_records(), 0);
  TaskTunerOptions random = with;
  random.tuner.kind = "random";  // no model to seed
  auto r = TaskTuner::Create(ConvTask(32, 64, 14), target, random, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->prior_records(), 0);
  // Another ISA's tuner gets nothing from an AVX-512 prior.
  ops::Target avx2 = target;
  avx2.isa = ops::Isa::kAvx2;
  auto a = TaskTuner::Create(ConvTask(32, 64, 14), avx2, with, nullptr);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->prior_records(), 0);
}

TEST(TaskTunerTest, StaleRecordsWhoseConfigNoLongerMatchAreIgnored) {
  auto store = MemoryStore();
  auto t = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 4), store.get());
  ASSERT_TRUE(t.ok());
  Record stale =
      MakeRecord((*t)->record_context(), MeasureResult{.config = ops::Config{3}, .costs = {1e-4}},
                 R"({"some_old_knob":1})", 0.1);
  ASSERT_TRUE(store->Append({stale}).ok());
  auto fresh = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 4), store.get());
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->resumed_trials(), 0);
  EXPECT_FALSE((*fresh)->tuner().has_best());
}

TEST(TaskTunerTest, MeasurementErrorsAreRecordsAndTuningGoesOn) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer(FakeMeasurer::Options{.error = [](const ops::Config& c) {
    return c.index % 2 == 0 ? ErrorKind::kRuntime : ErrorKind::kNone;
  }});
  auto t = TaskTuner::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 16), store.get());
  ASSERT_TRUE(t.ok());
  while (!(*t)->Done()) ASSERT_TRUE((*t)->RunRound(builder, measurer, {}).ok());
  auto records = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "j");
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 16u);
  int64_t errors = 0;
  for (const auto& r : *records) errors += !r.ok();
  EXPECT_EQ((*t)->errors(), errors);
  EXPECT_GT(errors, 0);
  EXPECT_TRUE((*t)->tuner().has_best());
}

TEST(TuneJobTest, UncoveredTasksAreSkippedWithTheirReason) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  JobOptions job;
  job.target = ops::HostCpuTarget();
  job.task = Options("job", 4);
  job.measure_default = true;
  std::vector<ProgressEvent> events;
  // An int8 convolution: no template covers it.
  graph::Task int8 = ConvTask(32, 32, 14);
  int8.workload.dtype = graph::DType::kInt8;
  int8.key = graph::WorkloadKey(int8.workload);
  auto outcomes = RunTuneJob({ConvTask(), int8}, job, store.get(), builder, measurer,
                             [&](const ProgressEvent& e) { events.push_back(e); });
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  ASSERT_EQ(outcomes->size(), 2u);
  EXPECT_EQ((*outcomes)[0].trials, 4);
  EXPECT_TRUE((*outcomes)[0].skipped_reason.empty());
  EXPECT_GT((*outcomes)[0].best_gflops, 0);
  EXPECT_TRUE(std::isfinite((*outcomes)[0].default_cost));
  EXPECT_THAT((*outcomes)[1].skipped_reason, HasSubstr("no template for dtype"));
  // The default config's measurement is stored beside the job's trials, not among them.
  EXPECT_EQ(*store->Count({.job_id = "job"}), 4);
  auto defaults = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "job#default");
  ASSERT_TRUE(defaults.ok());
  ASSERT_EQ(defaults->size(), 1u);
  auto tmpl = ops::MakeTemplate(ConvTask().workload, ops::HostCpuTarget());
  ASSERT_TRUE(tmpl.ok());
  EXPECT_EQ((*defaults)[0].config_index, (*tmpl)->DefaultConfig().index);
  EXPECT_DOUBLE_EQ((*defaults)[0].median_cost, (*outcomes)[0].default_cost);
  EXPECT_EQ(events.size(), 2u);  // before the first round and after it
}

TEST(TuneJobTest, AFasterDefaultConfigIsReportedAsTheBest) {
  auto tmpl = ops::MakeTemplate(ConvTask().workload, ops::HostCpuTarget());
  ASSERT_TRUE(tmpl.ok());
  TaskOutcome o;
  o.task = ConvTask();
  o.best_cost = 2e-3;
  o.best_config_json = "{}";
  o.default_cost = 1e-3;
  PreferDefaultIfFaster(o, **tmpl);
  EXPECT_DOUBLE_EQ(o.best_cost, 1e-3);
  EXPECT_DOUBLE_EQ(o.best_gflops, ConvTask().flops / 1e-3 / 1e9);
  EXPECT_EQ(o.best_config_json, (*tmpl)->space().ToJson((*tmpl)->DefaultConfig()));
  o.default_cost = 5e-3;  // slower: the tuned best stays
  PreferDefaultIfFaster(o, **tmpl);
  EXPECT_DOUBLE_EQ(o.best_cost, 1e-3);
  o.default_cost = std::numeric_limits<double>::infinity();
  PreferDefaultIfFaster(o, **tmpl);
  EXPECT_DOUBLE_EQ(o.best_cost, 1e-3);
}

TEST(TuneJobTest, DefaultJobIdDependsOnTheWork) {
  TunerOptions xgb{.kind = "xgb", .seed = 1};
  TunerOptions rnd{.kind = "random", .seed = 1};
  ops::Target target = ops::HostCpuTarget();
  std::string a = DefaultJobId({ConvTask()}, target, xgb);
  EXPECT_EQ(a, DefaultJobId({ConvTask()}, target, xgb));
  EXPECT_NE(a, DefaultJobId({ConvTask()}, target, rnd));
  EXPECT_NE(a, DefaultJobId({ConvTask(64, 64)}, target, xgb));
  EXPECT_THAT(a, ::testing::StartsWith("job-"));
}

}  // namespace
}  // namespace loom::tune
