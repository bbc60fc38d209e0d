#include "loom/base/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"
#include "loom/base/clock.h"
#include "loom/base/rng.h"

namespace loom::base {
namespace {

TEST(ThreadPoolTest, ParallelForVisitsEveryIndexOnce) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  pool.ParallelFor(hits.size(), [&](size_t i) { hits[i]++; });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPoolTest, SubmitReturnsValue) {
  ThreadPool pool(2);
  auto f = pool.Submit([] { return 41 + 1; });
  EXPECT_EQ(f.get(), 42);
}

TEST(ThreadPoolTest, SubmitPropagatesException) {
  ThreadPool pool(1);
  auto f = pool.Submit([]() -> int { throw std::runtime_error("boom"); });
  EXPECT_THROW(f.get(), std::runtime_error);
}

TEST(VirtualClockTest, NeverGoesBackwards) {
  VirtualClock clock;
  clock.Advance(absl::Seconds(5));
  clock.AdvanceTo(absl::UnixEpoch() + absl::Seconds(2));
  EXPECT_EQ(clock.Now(), absl::UnixEpoch() + absl::Seconds(5));
}

TEST(RngTest, SameSeedSameSequence) {
  Rng a(7), b(7), c(8);
  std::vector<int64_t> sa, sb, sc;
  for (int i = 0; i < 16; ++i) {
    sa.push_back(a.UniformInt(0, 1 << 30));
    sb.push_back(b.UniformInt(0, 1 << 30));
    sc.push_back(c.UniformInt(0, 1 << 30));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

}  // namespace
}  // namespace loom::base
