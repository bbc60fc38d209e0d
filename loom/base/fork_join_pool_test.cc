#include "loom/base/fork_join_pool.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::base {
namespace {

struct Coverage {
  std::vector<std::atomic<int>> hits;
  std::mutex mu;
  std::set<std::pair<int64_t, int64_t>> ranges;
  std::set<std::thread::id> threads;
  explicit Coverage(int64_t n) : hits(static_cast<size_t>(n)) {}
};

void Mark(int64_t begin, int64_t end, void* ctx) {
  auto* c = static_cast<Coverage*>(ctx);
  for (int64_t i = begin; i < end; ++i) c->hits[static_cast<size_t>(i)].fetch_add(1);
  std::lock_guard<std::mutex> lock(c->mu);
  c->ranges.emplace(begin, end);
  c->threads.insert(std::this_thread::get_id());
}

TEST(ForkJoinPoolTest, EveryIndexRunsExactlyOnceInEvenChunks) {
  ForkJoinPool pool(3);
  Coverage c(10);
  pool.Run(10, &Mark, &c);
  for (const auto& h : c.hits) EXPECT_EQ(h.load(), 1);
  // 10 split into 3 even chunks: [0,3) [3,6) [6,10).
  EXPECT_THAT(c.ranges, ::testing::ElementsAre(std::pair<int64_t, int64_t>{0, 3},
                                               std::pair<int64_t, int64_t>{3, 6},
                                               std::pair<int64_t, int64_t>{6, 10}));
  EXPECT_EQ(c.threads.size(), 3u);
}

TEST(ForkJoinPoolTest, FewerItemsThanThreadsGivesOneChunkPerItem) {
  ForkJoinPool pool(4);
  Coverage c(2);
  pool.Run(2, &Mark, &c);
  EXPECT_EQ(c.ranges.size(), 2u);
  for (const auto& h : c.hits) EXPECT_EQ(h.load(), 1);
}

TEST(ForkJoinPoolTest, ManyConsecutiveLoopsAfterWorkersFellAsleep) {
  // spin_iterations 0: workers sleep at once, so every loop goes through wait/notify.
  ForkJoinPool pool(2, /*spin_iterations=*/0);
  for (int round = 0; round < 2000; ++round) {
    Coverage c(7);
    pool.Run(7, &Mark, &c);
    for (const auto& h : c.hits) ASSERT_EQ(h.load(), 1) << "round " << round;
  }
}

TEST(ForkJoinPoolTest, SingleThreadRunsInline) {
  ForkJoinPool pool(1);
  Coverage c(5);
  pool.Run(5, &Mark, &c);
  EXPECT_EQ(c.ranges.size(), 1u);
  EXPECT_EQ(c.threads.count(std::this_thread::get_id()), 1u);
  pool.Run(0, &Mark, &c);  // empty range: nothing runs
  EXPECT_EQ(c.ranges.size(), 1u);
}

}  // namespace
}  // namespace loom::base
