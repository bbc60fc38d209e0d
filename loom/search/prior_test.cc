#include "loom/search/prior.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"

namespace loom::search {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

ops::Target Avx512() {
  ops::Target t;
  t.kind = "cpu";
  t.isa = ops::Isa::kAvx512;
  t.cpu_model = "Test CPU";
  return t;
}

// A 3x3 conv, stride 1, padding 1.
graph::Workload Conv(int64_t c, int64_t k, int64_t hw) {
  absl::StatusOr<graph::Workload> w = graph::ParseWorkloadKey(absl::StrCat(
      "conv2d:f32:n1_c", c, "_h", hw, "_w", hw, "_k", k, "_r3_s3_st1x1_p1x1x1x1_d1x1_g1"));
  EXPECT_TRUE(w.ok()) << w.status();
  return *w;
}

TEST(PriorTest, TargetClassIsKindAndIsaOrArchitecture) {
  EXPECT_EQ(TargetClass(Avx512()), "cpu:avx512");
  ops::Target avx2 = Avx512();
  avx2.isa = ops::Isa::kAvx2;
  EXPECT_EQ(TargetClass(avx2), "cpu:avx2");
  EXPECT_EQ(TargetClass(ops::CudaTarget("sm_80")), "cuda:sm_80");
  EXPECT_EQ(TargetClassOfKey("cpu:avx512:AMD EPYC 9654: 96-Core"), "cpu:avx512");
  EXPECT_EQ(TargetClassOfKey(Avx512().Key()), TargetClass(Avx512()));
  EXPECT_EQ(TargetClassOfKey("cuda"), "cuda");
}

TEST(PriorTest, JsonRoundTrips) {
  TuningPrior prior;
  prior.target_class = "cpu:avx512";
  prior.source = "cpu:avx512:Test \"quoted\" CPU";
  prior.tasks.push_back({"t1", "conv2d_nchwc", {"a", "b"}, {{{1, 2}, 10.5}, {{3, 4}, 0}}});
  prior.tasks.push_back({"t2", "dense_pack", {"x"}, {}});
  absl::StatusOr<TuningPrior> back = ParsePrior(PriorToJson(prior));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->target_class, prior.target_class);
  EXPECT_EQ(back->source, prior.source);
  ASSERT_EQ(back->tasks.size(), 2u);
  EXPECT_EQ(back->tasks[0].task_key, "t1");
  EXPECT_EQ(back->tasks[0].template_name, "conv2d_nchwc");
  EXPECT_EQ(back->tasks[0].knobs, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(back->tasks[0].configs.size(), 2u);
  EXPECT_EQ(back->tasks[0].configs[0].values, (std::vector<int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(back->tasks[0].configs[0].gflops, 10.5);
  EXPECT_EQ(back->tasks[0].configs[1].gflops, 0);
  EXPECT_THAT(back->tasks[1].configs, IsEmpty());
}

TEST(PriorTest, BadPriorsAreRejectedWithTheReason) {
  const std::string head =
      R"({"format": "loom-tuning-prior", "version": 1, "target_class": "cpu:avx512", )";
  struct Case {
    std::string json;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{", "not valid JSON"},
      {R"({"format": "other", "version": 1})", "not a tuning prior"},
      {R"({"format": "loom-tuning-prior", "version": 7, "tasks": []})", "prior version 7"},
      {R"({"format": "loom-tuning-prior", "version": 1, "tasks": []})", "'target_class'"},
      {head + R"("tasks": 3})", "array 'tasks'"},
      {head + R"("tasks": [{"template": "c", "knobs": ["a"], "configs": []}]})",
       "prior task 0: needs a non-empty string 'task'"},
      {head + R"("tasks": [{"task": "t", "template": "c", "knobs": [], "configs": []}]})",
       "prior task 0 (t): needs a non-empty array 'knobs'"},
      {head + R"("tasks": [{"task": "t", "template": "c", "knobs": ["a"], "configs": [[1]]}]})",
       "config 0 is not an array of 2 numbers"},
      {head +
           R"("tasks": [{"task": "t", "template": "c", "knobs": ["a"], "configs": [[1.5, 2]]}]})",
       "knob 'a' is not an integer"},
      {head + R"("tasks": [{"task": "t", "template": "c", "knobs": ["a"], "configs": [[1, -2]]}]})",
       "GFLOPS is not a finite number >= 0"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<TuningPrior> p = ParsePrior(c.json);
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(p.status().message(), HasSubstr(c.message)) << c.json;
  }
}

TEST(PriorTest, ReadPriorFileNamesTheFile) {
  absl::StatusOr<TuningPrior> missing = ReadPriorFile("/nonexistent/prior.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/prior.json"));
  const std::string path = ::testing::TempDir() + "/bad_prior.json";
  std::ofstream(path) << "[1, 2]";
  absl::StatusOr<TuningPrior> bad = ReadPriorFile(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(path + ": not a tuning prior"));
  std::remove(path.c_str());
}

TEST(PriorTest, TransfersMapKnobValuesIntoTheTemplatesSpace) {
  const ops::Target target = Avx512();
  const graph::Workload w = Conv(32, 64, 14);
  const std::string key = graph::WorkloadKey(w);
  auto tmpl = ops::MakeTemplate(w, target);
  ASSERT_TRUE(tmpl.ok());
  const ops::ConfigSpace& space = (*tmpl)->space();
  // The prior lists the knobs in reverse order; the mapping goes by name.
  PriorTask task{key, (*tmpl)->name(), {}, {}};
  for (auto k = space.knobs().rbegin(); k != space.knobs().rend(); ++k) {
    task.knobs.push_back(k->name);
  }
  auto entry = [&](const ops::Config& c, double gflops) {
    std::vector<int64_t> v = space.Values(c);
    std::reverse(v.begin(), v.end());
    return PriorTask::Entry{v, gflops};
  };
  const ops::Config def = (*tmpl)->DefaultConfig();
  ops::Config invalid{-1};
  for (int64_t i = 0; i < space.size() && invalid.index < 0; ++i) {
    if (!space.IsValid({i})) invalid = {i};
  }
  ASSERT_GE(invalid.index, 0) << "the space has configs that overflow the register file";
  task.configs.push_back(entry(def, 80));
  task.configs.push_back(entry(invalid, 50));  // not valid: left out
  PriorTask::Entry unknown = entry(def, 60);
  unknown.values.back() = 3;  // a vector width the space does not have: left out
  task.configs.push_back(unknown);
  task.configs.push_back(entry(def, 0));  // a failure
  TuningPrior prior{"cpu:avx512", "test", {task}};

  std::vector<PriorTransfer> t = PriorTransfersFor(prior, (*tmpl)->name(), target, {});
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].task_key, key);
  EXPECT_EQ(t[0].tmpl->name(), "conv2d_nchwc");
  ASSERT_EQ(t[0].configs.size(), 2u);
  EXPECT_EQ(t[0].configs[0], def);
  ASSERT_TRUE(t[0].results[0].ok());
  EXPECT_NEAR(t[0].results[0].MedianCost(), graph::WorkloadFlops(w) / 80e9, 1e-12);
  EXPECT_FALSE(t[0].results[1].ok());

  EXPECT_THAT(PriorTransfersFor(prior, (*tmpl)->name(), target, {}, key), IsEmpty());
  EXPECT_THAT(PriorTransfersFor(prior, "dense_pack", target, {}), IsEmpty());
  ops::Target avx2 = target;
  avx2.isa = ops::Isa::kAvx2;
  EXPECT_THAT(PriorTransfersFor(prior, (*tmpl)->name(), avx2, {}), IsEmpty());
  // A prior with other knob names (another Loom's space) gives nothing rather than wrong points.
  prior.tasks[0].knobs[0] = "renamed";
  EXPECT_THAT(PriorTransfersFor(prior, (*tmpl)->name(), target, {}), IsEmpty());
}

// The shipped prior must stay usable: every task in it parses into the conv template of today's
// Loom, with nearly all of its configs inside the space. A change to the template's knobs that
// breaks this needs a new prior (docs/BENCHMARKS.md, "Sample efficiency", says how to make one).
TEST(PriorTest, TheBuiltInAvx512PriorFitsTodaysTemplates) {
  const TuningPrior* prior = BuiltinPrior(Avx512());
  ASSERT_NE(prior, nullptr);
  EXPECT_EQ(prior->target_class, "cpu:avx512");
  ASSERT_GE(prior->tasks.size(), 16u);
  size_t given = 0;
  for (const PriorTask& t : prior->tasks) given += t.configs.size();
  std::vector<PriorTransfer> transfers = PriorTransfersFor(*prior, "conv2d_nchwc", Avx512(), {});
  EXPECT_EQ(transfers.size(), prior->tasks.size());
  size_t mapped = 0;
  for (const PriorTransfer& t : transfers) mapped += t.configs.size();
  EXPECT_GE(mapped, given * 99 / 100);

  ops::Target avx2 = Avx512();
  avx2.isa = ops::Isa::kAvx2;
  EXPECT_EQ(BuiltinPrior(avx2), nullptr);
  EXPECT_EQ(BuiltinPrior(ops::CudaTarget()), nullptr);
}

}  // namespace
}  // namespace loom::search
