#include "loom/base/fork_join_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LOOM_CPU_RELAX() _mm_pause()
#else
#define LOOM_CPU_RELAX() std::this_thread::yield()
#endif

namespace loom::base {
namespace {

constexpr uint64_t kIndexMask = 0xffffffffull;
// A loop straggled when a participant, out of work, then idled longer than this and longer than
// it worked itself: another held a chunk far longer than the idle one's whole share took.
constexpr double kStraggleFloorSeconds = 1e-3;
// Solo periods double per straggle up to the maximum, and halve after this many times their
// length of shared loops without one, once those loops have saved the time the last straggle
// lost (on a busy machine a straggle costs a time slice, milliseconds, and a shared loop saves
// microseconds: sharing must pay for its stalls before the pool shares more often).
constexpr int64_t kMinSoloPeriod = 16;
constexpr int64_t kMaxSoloPeriod = 4096;
constexpr int64_t kCleanLoopsPerHalving = 4;

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int64_t Nanos(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Whether a participant that worked `worked` seconds and then idled `idled` until the loop ended
// was held up by a straggler.
bool Straggled(double worked, double idled) {
  return idled > kStraggleFloorSeconds && idled > worked;
}

}  // namespace

ForkJoinPool::ForkJoinPool(int num_threads, ForkJoinPoolOptions options)
    : num_threads_(std::max(1, num_threads)),
      options_(options),
      reports_(static_cast<size_t>(num_threads_ - 1)) {
  workers_.reserve(static_cast<size_t>(num_threads_ - 1));
  for (int i = 0; i + 1 < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ForkJoinPool::~ForkJoinPool() {
  stopping_.store(true, std::memory_order_seq_cst);
  wake_.fetch_add(1, std::memory_order_seq_cst);
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

ForkJoinPool::Stats ForkJoinPool::stats() const {
  Stats s;
  s.loops = stat_loops_.load(std::memory_order_relaxed);
  s.solo_loops = stat_solo_.load(std::memory_order_relaxed);
  s.straggled_loops = stat_straggled_.load(std::memory_order_relaxed);
  s.slow_caller_loops = stat_slow_caller_.load(std::memory_order_relaxed);
  s.worker_chunks = stat_worker_chunks_.load(std::memory_order_relaxed);
  s.caller_indices = stat_caller_indices_.load(std::memory_order_relaxed);
  s.worker_indices = stat_worker_indices_.load(std::memory_order_relaxed);
  return s;
}

int64_t ForkJoinPool::Participate(uint32_t tag, int64_t* indices) {
  int64_t ran = 0;
  const int64_t divisor = std::max<int64_t>(1, options_.chunk_divisor) * num_threads_;
  for (;;) {
    uint64_t w = work_.load(std::memory_order_acquire);
    if ((w >> 32) != tag) return ran;
    const int64_t next = static_cast<int64_t>(w & kIndexMask);
    const int64_t n = n_.load(std::memory_order_relaxed);
    const RangeFn fn = fn_.load(std::memory_order_relaxed);
    void* const ctx = ctx_.load(std::memory_order_relaxed);
    // If any of these loads saw the next loop's fields, they were written after the caller set
    // work_ to 0 (with a release fence in between): this fence then orders that store before
    // the compare-exchange below, which fails. So a successful claim ran on this loop's fields.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (next >= n) return ran;
    const int64_t size = std::max<int64_t>(1, (n - next) / divisor);
    if (!work_.compare_exchange_weak(w, w + static_cast<uint64_t>(size), std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      continue;
    }
    fn(next, next + size, ctx);
    ++ran;
    if (indices != nullptr) *indices += size;
    // The participant that finishes the last index wakes the caller if it sleeps. (Dekker with
    // AwaitDone: both sides store, then load the other's flag, sequentially consistent.)
    if (done_.fetch_add(size, std::memory_order_acq_rel) + size == n) {
      finished_.store(tag, std::memory_order_seq_cst);
      if (caller_sleeping_.load(std::memory_order_seq_cst)) finished_.notify_all();
    }
  }
}

void ForkJoinPool::AwaitDone(int64_t n, uint32_t tag) {
  for (int64_t i = 0; i < options_.spin_iterations; ++i) {
    if (done_.load(std::memory_order_acquire) == n) return;
    LOOM_CPU_RELAX();
  }
  // A participant holds a chunk and is slow, likely preempted: let it have this core.
  for (int64_t i = 0; i < options_.yield_iterations; ++i) {
    if (done_.load(std::memory_order_acquire) == n) return;
    std::this_thread::yield();
  }
  caller_sleeping_.store(true, std::memory_order_seq_cst);
  for (;;) {
    const uint32_t f = finished_.load(std::memory_order_seq_cst);
    if (f == tag) break;
    finished_.wait(f, std::memory_order_seq_cst);
  }
  caller_sleeping_.store(false, std::memory_order_relaxed);
  // finished_ is stored after done_ reached n: the acquire below pairs with that fetch_add.
  (void)done_.load(std::memory_order_acquire);
}

void ForkJoinPool::Run(int64_t n, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  if (num_threads_ == 1 || n == 1 || static_cast<uint64_t>(n) > kIndexMask) {
    fn(0, n, ctx);
    return;
  }
  stat_loops_.fetch_add(1, std::memory_order_relaxed);
  if (options_.adaptive && solo_left_ > 0) {
    --solo_left_;
    stat_solo_.fetch_add(1, std::memory_order_relaxed);
    fn(0, n, ctx);
    return;
  }
  // Retire the previous loop's tag before its fields change (see Participate).
  work_.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  n_.store(n, std::memory_order_relaxed);
  fn_.store(fn, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  if (++tag_ == 0) tag_ = 1;
  const uint32_t tag = tag_;
  work_.store(static_cast<uint64_t>(tag) << 32, std::memory_order_release);
  wake_.fetch_add(1, std::memory_order_seq_cst);
  if (sleeping_workers_.load(std::memory_order_seq_cst) > 0) wake_.notify_all();

  const auto t0 = std::chrono::steady_clock::now();
  int64_t mine = 0;
  Participate(tag, &mine);
  const auto t1 = std::chrono::steady_clock::now();
  AwaitDone(n, tag);
  const auto t2 = std::chrono::steady_clock::now();
  stat_caller_indices_.fetch_add(mine, std::memory_order_relaxed);
  stat_worker_indices_.fetch_add(n - mine, std::memory_order_relaxed);
  if (!options_.adaptive) return;
  const double worked = Seconds(t0, t1), waited = Seconds(t1, t2);
  // The workers' side: the longest that one of them idled, its share done, while the loop went
  // on (the caller, or another worker, still in a chunk).
  double idled = 0;
  bool worker_straggled = false;
  for (const WorkerReport& r : reports_) {
    if (r.tag.load(std::memory_order_acquire) != tag) continue;  // ran no chunk of this loop
    const int64_t start = r.start_ns.load(std::memory_order_relaxed);
    const int64_t out = r.out_ns.load(std::memory_order_relaxed);
    const double its_idle = static_cast<double>(Nanos(t2) - out) * 1e-9;
    idled = std::max(idled, its_idle);
    worker_straggled |= Straggled(static_cast<double>(out - start) * 1e-9, its_idle);
  }
  const bool caller_straggled = Straggled(worked, waited);
  if (caller_straggled || worker_straggled) {
    stat_straggled_.fetch_add(1, std::memory_order_relaxed);
    if (!caller_straggled) stat_slow_caller_.fetch_add(1, std::memory_order_relaxed);
    solo_left_ = solo_period_;
    solo_period_ = std::min(kMaxSoloPeriod, solo_period_ * 2);
    clean_loops_ = 0;
    straggle_debt_ = std::max(waited, idled);
    return;
  }
  // What sharing saved: the caller alone would have taken about worked * n / mine.
  if (mine > 0 && mine < n) {
    straggle_debt_ -= worked * static_cast<double>(n - mine) / static_cast<double>(mine) - waited;
  }
  if (++clean_loops_ >= kCleanLoopsPerHalving * solo_period_ && straggle_debt_ <= 0) {
    solo_period_ = std::max(kMinSoloPeriod, solo_period_ / 2);
    clean_loops_ = 0;
  }
}

void ForkJoinPool::WorkerLoop(int index) {
  WorkerReport& report = reports_[static_cast<size_t>(index)];
  uint32_t seen = 0;
  for (;;) {
    uint32_t now = wake_.load(std::memory_order_acquire);
    for (int64_t i = 0; now == seen && i < options_.spin_iterations; ++i) {
      LOOM_CPU_RELAX();
      now = wake_.load(std::memory_order_acquire);
    }
    for (int64_t i = 0; now == seen && i < options_.yield_iterations; ++i) {
      std::this_thread::yield();
      now = wake_.load(std::memory_order_acquire);
    }
    while (now == seen) {
      // Dekker with Run: announce the sleep, then re-read the counter.
      sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
      now = wake_.load(std::memory_order_seq_cst);
      if (now == seen) wake_.wait(seen, std::memory_order_seq_cst);
      sleeping_workers_.fetch_sub(1, std::memory_order_seq_cst);
      now = wake_.load(std::memory_order_acquire);
    }
    seen = now;
    if (stopping_.load(std::memory_order_acquire)) return;
    const uint64_t w = work_.load(std::memory_order_acquire);
    if (w != 0) {
      const auto start = std::chrono::steady_clock::now();
      const auto tag = static_cast<uint32_t>(w >> 32);
      const int64_t ran = Participate(tag, nullptr);
      if (ran > 0) {
        report.start_ns.store(Nanos(start), std::memory_order_relaxed);
        report.out_ns.store(Nanos(std::chrono::steady_clock::now()), std::memory_order_relaxed);
        report.tag.store(tag, std::memory_order_release);
        stat_worker_chunks_.fetch_add(ran, std::memory_order_relaxed);
      }
    }
  }
}

}  // namespace loom::base
