#include "loom/base/fork_join_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
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

// Every index once, in disjoint chunks of consecutive indices that tile [0, n).
void ExpectTiled(Coverage& c, int64_t n) {
  for (const auto& h : c.hits) EXPECT_EQ(h.load(), 1);
  int64_t next = 0;
  for (const auto& [begin, end] : c.ranges) {
    EXPECT_EQ(begin, next);
    EXPECT_LT(begin, end);
    next = end;
  }
  EXPECT_EQ(next, n);
}

// Runs `body` on another thread and fails (then exits: a hung pool cannot be joined) unless it
// finishes within `deadline`.
void WithDeadline(std::chrono::seconds deadline, std::function<void()> body) {
  auto done = std::async(std::launch::async, std::move(body));
  if (done.wait_for(deadline) != std::future_status::ready) {
    std::fprintf(stderr, "deadline of %llds exceeded: the pool hangs\n",
                 static_cast<long long>(deadline.count()));
    std::_Exit(1);
  }
  done.get();
}

TEST(ForkJoinPoolTest, EveryIndexRunsExactlyOnceInShrinkingChunks) {
  ForkJoinPool pool(3);
  Coverage c(100);
  pool.Run(100, &Mark, &c);
  ExpectTiled(c, 100);
  // Guided chunks: the first is 100 / (2 * 3) = 16 long, the last one index.
  EXPECT_EQ(c.ranges.begin()->second - c.ranges.begin()->first, 16);
  EXPECT_EQ(c.ranges.rbegin()->second - c.ranges.rbegin()->first, 1);
}

TEST(ForkJoinPoolTest, FewerItemsThanThreadsGivesOneChunkPerItem) {
  ForkJoinPool pool(4);
  Coverage c(2);
  pool.Run(2, &Mark, &c);
  EXPECT_EQ(c.ranges.size(), 2u);
  ExpectTiled(c, 2);
}

TEST(ForkJoinPoolTest, ManyConsecutiveLoopsAfterWorkersFellAsleep) {
  // No spin, no yield: workers sleep at once, so every loop goes through wait/notify.
  ForkJoinPool pool(2, {.spin_iterations = 0, .yield_iterations = 0});
  WithDeadline(std::chrono::seconds(60), [&] {
    for (int round = 0; round < 2000; ++round) {
      Coverage c(7);
      pool.Run(7, &Mark, &c);
      for (const auto& h : c.hits) ASSERT_EQ(h.load(), 1) << "round " << round;
    }
  });
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

// A busy thread per core that yields nothing: the machine is oversubscribed.
class BusyThreads {
 public:
  explicit BusyThreads(unsigned count) {
    for (unsigned i = 0; i < count; ++i) {
      threads_.emplace_back([this] {
        volatile uint64_t x = 0;
        while (!stop_.load(std::memory_order_relaxed)) x = x + 1;
      });
    }
  }
  ~BusyThreads() {
    stop_.store(true);
    for (std::thread& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

struct Sum {
  std::vector<std::atomic<int>> hits;
  explicit Sum(int64_t n) : hits(static_cast<size_t>(n)) {}
};

void Work(int64_t begin, int64_t end, void* ctx) {
  auto* s = static_cast<Sum*>(ctx);
  for (int64_t i = begin; i < end; ++i) {
    volatile double x = 0;
    for (int j = 0; j < 2000; ++j) x = x + 1.0;  // ~microseconds of work per index
    s->hits[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
  }
}

// More participants than cores, and a busy thread on every core: descheduled workers must not
// stall loops forever or lose or repeat indices.
TEST(ForkJoinPoolTest, StaysCorrectWhenOversubscribed) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  BusyThreads busy(cores);
  for (int threads : {2, static_cast<int>(4 * cores)}) {
    ForkJoinPool pool(threads);
    WithDeadline(std::chrono::seconds(120), [&] {
      for (int round = 0; round < 300; ++round) {
        const int64_t n = 1 + round % 97;
        Sum s(n);
        pool.Run(n, &Work, &s);
        for (const auto& h : s.hits)
          ASSERT_EQ(h.load(), 1) << threads << " threads, round " << round;
      }
    });
    EXPECT_EQ(pool.stats().loops, 300 - 4);  // n == 1 (4 rounds) runs inline, uncounted
  }
}

// Loops whose first chunk on a worker (not on `caller`) stalls for `stall` (as if its thread
// were preempted), with tens of microseconds of work per index so that workers claim chunks.
struct StallCtx {
  std::thread::id caller;  // the thread calling Run
  std::chrono::milliseconds stall{50};
  std::atomic<bool> stalled{false};
  std::atomic<int> hits{0};
};
void StallOnWorker(int64_t begin, int64_t end, void* p) {
  auto* c = static_cast<StallCtx*>(p);
  if (std::this_thread::get_id() != c->caller && !c->stalled.exchange(true)) {
    std::this_thread::sleep_for(c->stall);
  }
  for (int64_t i = begin; i < end; ++i) {
    volatile double x = 0;
    for (int j = 0; j < 20000; ++j) x = x + 1.0;
  }
  c->hits.fetch_add(static_cast<int>(end - begin));
}

// Runs 64-index loops until a worker has claimed a chunk and stalled in it (it may be slow to
// wake); returns the loops run.
int RunUntilStalled(ForkJoinPool& pool, StallCtx& ctx) {
  ctx.stalled.store(false);
  int rounds = 0;
  for (; !ctx.stalled.load() && rounds < 2000; ++rounds) pool.Run(64, &StallOnWorker, &ctx);
  return rounds;
}

// A participant stuck inside a chunk (as if preempted) holds that loop up, but then the pool
// runs loops on the caller alone for a while instead of waiting on it again, and afterwards uses
// the workers again.
TEST(ForkJoinPoolTest, StragglerTriggersSoloBackoff) {
  ForkJoinPool pool(2);
  StallCtx ctx;
  WithDeadline(std::chrono::seconds(60), [&] {
    ctx.caller = std::this_thread::get_id();
    const int rounds = RunUntilStalled(pool, ctx);
    ASSERT_TRUE(ctx.stalled.load());
    EXPECT_EQ(ctx.hits.load(), 64 * rounds);
    EXPECT_GE(pool.stats().straggled_loops, 1);
    EXPECT_EQ(pool.stats().slow_caller_loops, 0);  // the caller waited: a worker was slow
    const int64_t solo_before = pool.stats().solo_loops;
    for (int i = 0; i < 16; ++i) pool.Run(64, &StallOnWorker, &ctx);
    EXPECT_EQ(pool.stats().solo_loops - solo_before, 16);
    // After the solo period, loops are shared again.
    const int64_t chunks_before = pool.stats().worker_chunks;
    for (int i = 0; i < 200 && pool.stats().worker_chunks == chunks_before; ++i) {
      Sum s(200);
      pool.Run(200, &Work, &s);
    }
    EXPECT_GT(pool.stats().worker_chunks, chunks_before);
  });
}

// Loops whose caller is the slow one, as if its core were shared with a busy process: in its
// first chunk of the first loop it waits (on a condition, with a deadline) until the worker has
// run every other index, then stalls, while the worker, its share done, idles.
struct SlowCallerCtx {
  std::thread::id caller;
  int64_t n = 0;
  bool stall_next = true;                  // stall in the caller's next first chunk
  std::atomic<int64_t> worker_done{0};     // indices the worker ran in the current loop
  std::atomic<int64_t> worker_span_ns{0};  // from the worker's first chunk to its last's end
  std::chrono::steady_clock::time_point worker_first;
  std::vector<std::atomic<int>> hits;
  explicit SlowCallerCtx(int64_t size) : n(size), hits(static_cast<size_t>(size)) {}
};
void SlowCaller(int64_t begin, int64_t end, void* p) {
  auto* c = static_cast<SlowCallerCtx*>(p);
  for (int64_t i = begin; i < end; ++i) c->hits[static_cast<size_t>(i)].fetch_add(1);
  if (std::this_thread::get_id() != c->caller) {
    const auto now = std::chrono::steady_clock::now();
    if (c->worker_done.load() == 0) c->worker_first = now;
    c->worker_span_ns.store(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - c->worker_first).count());
    c->worker_done.fetch_add(end - begin);
    return;
  }
  if (!c->stall_next) return;
  c->stall_next = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (c->worker_done.load() < c->n - (end - begin)) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the worker never ran its share";
    std::this_thread::yield();
  }
  // Preempted for a while: far longer than the floor and than the worker's whole share took.
  std::this_thread::sleep_for(std::max(
      std::chrono::milliseconds(20), std::chrono::duration_cast<std::chrono::milliseconds>(
                                         4 * std::chrono::nanoseconds(c->worker_span_ns.load()))));
}

// A caller held up in its own chunk (its core busy) while the worker, its share done, idles:
// the pool notices from the worker's side and runs the next loops on the caller alone (so the
// worker sleeps and frees its core), as it does when a worker is the slow one.
TEST(ForkJoinPoolTest, SlowCallerTriggersSoloBackoff) {
  ForkJoinPool pool(2);
  SlowCallerCtx ctx(64);
  WithDeadline(std::chrono::seconds(60), [&] {
    ctx.caller = std::this_thread::get_id();
    pool.Run(64, &SlowCaller, &ctx);
    for (const auto& h : ctx.hits) EXPECT_EQ(h.load(), 1);
    const ForkJoinPool::Stats s = pool.stats();
    EXPECT_EQ(s.loops, 1);
    EXPECT_EQ(s.straggled_loops, 1);
    EXPECT_EQ(s.slow_caller_loops, 1);
    // The worker ran everything but the caller's one chunk (the first: 64 / (2 * 2) indices).
    EXPECT_EQ(s.worker_indices, ctx.worker_done.load());
    EXPECT_EQ(s.caller_indices, 64 - ctx.worker_done.load());
    EXPECT_GE(s.worker_indices, 48);
    // The solo period: 16 loops on the caller alone, every index once, the worker idle.
    for (int i = 0; i < 16; ++i) {
      SlowCallerCtx solo(64);
      solo.caller = ctx.caller;
      solo.stall_next = false;
      pool.Run(64, &SlowCaller, &solo);
      for (const auto& h : solo.hits) ASSERT_EQ(h.load(), 1);
      ASSERT_EQ(solo.worker_done.load(), 0) << "loop " << i << " of the solo period";
    }
    EXPECT_EQ(pool.stats().solo_loops, 16);
    EXPECT_EQ(pool.stats().caller_indices, s.caller_indices);  // solo loops are not shared ones
  });
}

// The solo period shrinks back only once shared loops have saved what the last straggle lost:
// many clean loops that save microseconds each do not outweigh a stall of 400 ms, so the next
// straggle doubles the period (32) instead of starting again from 16, as a busy core that stalls
// a worker every few dozen loops would otherwise make the pool pay a stall each time.
TEST(ForkJoinPoolTest, SoloPeriodShrinksOnlyOnceSharingRepaidTheStraggle) {
  ForkJoinPool pool(2);
  StallCtx ctx;
  ctx.stall = std::chrono::milliseconds(400);
  WithDeadline(std::chrono::seconds(60), [&] {
    ctx.caller = std::this_thread::get_id();
    RunUntilStalled(pool, ctx);
    ASSERT_TRUE(ctx.stalled.load());
    ASSERT_EQ(pool.stats().straggled_loops, 1);
    for (int i = 0; i < 16; ++i) pool.Run(64, &StallOnWorker, &ctx);  // the solo period
    // 4x the doubled period (32) of clean shared loops: enough to halve it, had they repaid it.
    // (A straggle of their own on a busy machine only doubles the period further.)
    for (int i = 0; i < 4 * 32; ++i) {
      Sum s(200);
      pool.Run(200, &Work, &s);
    }
    RunUntilStalled(pool, ctx);
    ASSERT_TRUE(ctx.stalled.load());
    ASSERT_GE(pool.stats().straggled_loops, 2);
    const int64_t solo_after = pool.stats().solo_loops;
    for (int i = 0; i < 40; ++i) pool.Run(64, &StallOnWorker, &ctx);
    EXPECT_GE(pool.stats().solo_loops - solo_after, 32)
        << pool.stats().straggled_loops << " straggles, " << pool.stats().solo_loops << " solo";
  });
}

TEST(ForkJoinPoolTest, NonAdaptivePoolNeverRunsSolo) {
  ForkJoinPool pool(2, {.adaptive = false});
  Coverage c(10);
  pool.Run(10, &Mark, &c);
  ExpectTiled(c, 10);
  EXPECT_EQ(pool.stats().solo_loops, 0);
}

}  // namespace
}  // namespace loom::base
