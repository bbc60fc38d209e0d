#include "loom/experiment/latency.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"

namespace loom::experiment {
namespace {

LatencyOptions Options() {
  LatencyOptions o;
  o.min_runs = 6;
  o.min_seconds = 0.05;
  o.build.num_threads = 2;
  const char* b = std::getenv("LOOM_BUILD_DIR");
  o.build.cache_dir = std::string(b != nullptr ? b : "/tmp") + "/latency_test_kernels";
  return o;
}

struct Fixture {
  frontend::LoadedModel model;
  std::vector<graph::Task> tasks;
  std::unique_ptr<tune::RecordStore> store;
};

Fixture TinyCnn() {
  Fixture f;
  auto m = frontend::LoadModel("zoo:tiny_cnn");
  EXPECT_TRUE(m.ok()) << m.status();
  f.model = *std::move(m);
  auto tasks = graph::ExtractTasks(f.model.graph);
  EXPECT_TRUE(tasks.ok()) << tasks.status();
  f.tasks = *std::move(tasks);
  auto store = tune::OpenSqliteRecordStore(":memory:");
  EXPECT_TRUE(store.ok()) << store.status();
  f.store = *std::move(store);
  return f;
}

TEST(LatencyTest, TimesModelsSideBySideAndReturnsOneMedianEach) {
  Fixture f = TinyCnn();
  const ops::Target target = ops::HostCpuTarget();
  std::vector<std::unique_ptr<LatencyModel>> models;
  for (const char* job : {"a", "b", "c"}) {
    auto m = LatencyModel::Compile(f.model.graph, f.tasks, target, {job}, *f.store, Options());
    ASSERT_TRUE(m.ok()) << m.status();
    models.push_back(*std::move(m));
  }
  std::vector<LatencyModel*> ptrs;
  for (auto& m : models) ptrs.push_back(m.get());
  auto ms = TimeInterleavedMs(ptrs, Options());
  ASSERT_TRUE(ms.ok()) << ms.status();
  ASSERT_EQ(ms->size(), 3u);
  for (double v : *ms) EXPECT_GT(v, 0);
  // The same model three times, timed in alternation: the medians agree closely.
  const auto [lo, hi] = std::minmax_element(ms->begin(), ms->end());
  EXPECT_LT(*hi / *lo, 1.5) << (*ms)[0] << " " << (*ms)[1] << " " << (*ms)[2];
}

TEST(LatencyTest, EveryModelRunsAtLeastMinRunsAndMinSecondsEach) {
  Fixture f = TinyCnn();
  auto m = LatencyModel::Compile(f.model.graph, f.tasks, ops::HostCpuTarget(), {"a"}, *f.store,
                                 Options());
  ASSERT_TRUE(m.ok()) << m.status();
  auto one = (*m)->RunMs();
  ASSERT_TRUE(one.ok()) << one.status();
  LatencyOptions o = Options();
  o.min_runs = 3;
  o.min_seconds = 0.2;
  const auto t0 = std::chrono::steady_clock::now();
  auto ms = TimeInterleavedMs({m->get(), m->get()}, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GE(s, 2 * o.min_seconds);  // min_seconds per model
}

TEST(LatencyTest, MeasureFinalLatencyOfOneModel) {
  Fixture f = TinyCnn();
  auto ms = MeasureFinalLatencyMs(f.model.graph, f.tasks, ops::HostCpuTarget(), {"a"}, *f.store,
                                  Options());
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GT(*ms, 0);
}

}  // namespace
}  // namespace loom::experiment
