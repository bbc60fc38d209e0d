#include "loom/base/fork_join_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LOOM_CPU_RELAX() _mm_pause()
#else
#define LOOM_CPU_RELAX() std::this_thread::yield()
#endif

namespace loom::base {

ForkJoinPool::ForkJoinPool(int num_threads, int64_t spin_iterations)
    : num_threads_(std::max(1, num_threads)),
      spin_iterations_(std::max<int64_t>(0, spin_iterations)) {
  workers_.reserve(static_cast<size_t>(num_threads_ - 1));
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ForkJoinPool::~ForkJoinPool() {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ForkJoinPool::RunChunk(int index) {
  if (index < chunks_) {
    const int64_t begin = n_ * index / chunks_;
    const int64_t end = n_ * (index + 1) / chunks_;
    fn_(begin, end, ctx_);
  }
}

void ForkJoinPool::Run(int64_t n, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  const int chunks = static_cast<int>(std::min<int64_t>(n, num_threads_));
  if (chunks == 1) {
    fn(0, n, ctx);
    return;
  }
  n_ = n;
  chunks_ = chunks;
  fn_ = fn;
  ctx_ = ctx;
  // Every worker reports, even those without a chunk, so that none still reads n_/fn_ when the
  // next Run overwrites them.
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  RunChunk(0);
  int64_t spins = 0;
  while (pending_.load(std::memory_order_acquire) != 0) {
    // The workers run chunks as long as ours; yield when they are descheduled (oversubscribed
    // machine) rather than burn the core they need.
    if (++spins < spin_iterations_) {
      LOOM_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

void ForkJoinPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t now = generation_.load(std::memory_order_acquire);
    for (int64_t spins = 0; now == seen && spins < spin_iterations_; ++spins) {
      LOOM_CPU_RELAX();
      now = generation_.load(std::memory_order_acquire);
    }
    while (now == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      now = generation_.load(std::memory_order_acquire);
    }
    seen = now;
    if (stopping_.load(std::memory_order_acquire)) return;
    RunChunk(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace loom::base
