// Tests of the plan executor's choice of threads per step: steps below kMinParallelStepBytes run
// on the caller alone, larger ones on the model's pool, the same kernels either way.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/runtime/plan.h"

namespace loom::runtime {
namespace {

using graph::DType;
using graph::Tensor;
using ::testing::ElementsAre;

// A pack of a const [1, c, h, w] into an arena buffer blocked by `bn` (buffer `index`).
Step PackStep(int64_t c, int64_t h, int64_t w, int64_t bn, int64_t const_index,
              int64_t buffer_index) {
  RelayoutStep r;
  r.src = Ref{Ref::Kind::kConst, const_index};
  r.src_geo = BlockedGeo{.n = 1, .c = c, .h = h, .w = w, .bn = 1};
  r.dst = Ref{Ref::Kind::kArena, buffer_index};
  r.dst_geo = BlockedGeo{.n = 1, .c = c, .h = h, .w = w, .bn = bn};
  return Step{.name = "pack", .kind = "pack", .op = r};
}

TEST(StepWorkBytesTest, SumsOperandSpansAndKernelTable) {
  Plan plan;
  plan.kernels.push_back(KernelArgs{.bytes = {1000, 24, 4000}, .written = {false, false, true}});
  plan.steps.push_back(PackStep(8, 4, 4, 8, 0, 0));
  plan.steps.push_back(Step{.name = "k", .kind = "kernel", .op = KernelStep{.kernel = 0}});
  CopyStep copy;
  copy.rows = 3;
  copy.row_bytes = 100;
  copy.src_stride = 200;
  copy.dst_stride = 100;
  plan.steps.push_back(Step{.name = "c", .kind = "copy", .op = copy});
  // 8 channels x 16 pixels x 4 bytes, read and written.
  EXPECT_EQ(StepWorkBytes(plan, plan.steps[0]), 2 * 512);
  EXPECT_EQ(StepWorkBytes(plan, plan.steps[1]), 5024);
  // Source span (2 * 200 + 100) plus destination span (2 * 100 + 100).
  EXPECT_EQ(StepWorkBytes(plan, plan.steps[2]), 500 + 300);
}

TEST(StepWorkBytesTest, OverflowSaturatesAndCountsAsParallel) {
  Plan plan;
  plan.kernels.push_back(KernelArgs{.bytes = {INT64_MAX - 1, 10}, .written = {false, true}});
  plan.steps.push_back(Step{.name = "k", .kind = "kernel", .op = KernelStep{.kernel = 0}});
  EXPECT_EQ(StepWorkBytes(plan, plan.steps[0]), INT64_MAX);
  EXPECT_THAT(ParallelSteps(plan, kMinParallelStepBytes), ElementsAre(true));
}

TEST(ParallelStepsTest, SmallStepsRunInlineLargeOnesOnThePool) {
  Plan plan;
  plan.steps.push_back(PackStep(8, 4, 4, 8, 0, 0));      // 1 KiB
  plan.steps.push_back(PackStep(64, 32, 32, 16, 1, 1));  // 512 KiB
  plan.steps.push_back(PackStep(32, 16, 16, 8, 1, 1));   // 64 KiB: the threshold itself
  plan.steps.push_back(PackStep(31, 16, 16, 8, 1, 1));   // just below
  EXPECT_THAT(ParallelSteps(plan, kMinParallelStepBytes), ElementsAre(false, true, true, false));
  EXPECT_THAT(ParallelSteps(plan, 0), ElementsAre(true, true, true, true));
}

// A pool that records the loops it is given and runs them on the caller.
struct RecordingPool {
  std::vector<int64_t> loops;
};
void RecordingParallelFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  static_cast<RecordingPool*>(pool)->loops.push_back(n);
  fn(0, n, ctx);
}

TEST(ExecuteTest, OnlyStepsMarkedParallelReachThePoolAndResultsAreTheSame) {
  CompiledModel::Impl impl;
  Plan& plan = impl.plan;
  auto small = Tensor::Create(DType::kFloat32, {1, 8, 4, 4});
  auto large = Tensor::Create(DType::kFloat32, {1, 64, 32, 32});
  ASSERT_TRUE(small.ok() && large.ok());
  float* sp = small->data<float>();
  for (int64_t i = 0; i < small->num_elements(); ++i) sp[i] = static_cast<float>(i);
  float* lp = large->data<float>();
  for (int64_t i = 0; i < large->num_elements(); ++i) lp[i] = static_cast<float>(i % 977);
  plan.consts = {*small, *large};
  plan.buffers.push_back(BufferInfo{.bytes = 512, .offset = 0, .what = "small"});
  plan.buffers.push_back(BufferInfo{.bytes = 64 * 32 * 32 * 4, .offset = 512, .what = "large"});
  plan.arena_bytes = 512 + 64 * 32 * 32 * 4;
  plan.steps.push_back(PackStep(8, 4, 4, 8, 0, 0));
  plan.steps.push_back(PackStep(64, 32, 32, 16, 1, 1));
  ASSERT_TRUE(ValidatePlan(plan).ok());
  impl.arena.reset(static_cast<char*>(std::aligned_alloc(64, plan.arena_bytes)));
  RecordingPool pool;
  impl.par.num_threads = 2;
  impl.par.pool = &pool;
  impl.par.parallel_for = &RecordingParallelFor;
  impl.parallel_steps = ParallelSteps(plan, kMinParallelStepBytes);

  ASSERT_TRUE(impl.Execute({}, nullptr).ok());
  // Only the large pack went to the pool: one loop over its 4 channel blocks x 32 rows.
  EXPECT_THAT(pool.loops, ElementsAre(4 * 32));
  // Both packs ran: channel c of pixel p lands at block c / bn, lane c % bn.
  const float* a = reinterpret_cast<const float*>(impl.arena.get());
  EXPECT_EQ(a[0 * 8 + 3], 3 * 16);      // pixel 0, channel 3
  EXPECT_EQ(a[5 * 8 + 7], 7 * 16 + 5);  // pixel 5, channel 7
  const float* b = reinterpret_cast<const float*>(impl.arena.get() + 512);
  const int64_t c = 37, p = 100;  // block 2, lane 5
  EXPECT_EQ(b[(2 * 1024 + p) * 16 + 5], static_cast<float>((c * 1024 + p) % 977));

  // With every step marked parallel both loops reach the pool.
  pool.loops.clear();
  impl.parallel_steps = ParallelSteps(plan, 0);
  ASSERT_TRUE(impl.Execute({}, nullptr).ok());
  EXPECT_THAT(pool.loops, ElementsAre(1 * 4, 4 * 32));
}

}  // namespace
}  // namespace loom::runtime
