// A fork-join pool for intra-operator parallelism in compiled models: the caller and N-1 workers
// share one range per call. Inference issues ~100 short parallel loops per run (MobileNetV2's
// kernels take tens of microseconds), so waking sleeping threads through a mutex and condition
// variable for each loop costs as much as the loop itself: idle workers spin briefly on an atomic
// generation counter, then yield, then sleep on it (std::atomic::wait, a futex).
//
// The pool must also survive a busy machine, where any participant may be descheduled for a
// whole time slice (milliseconds). So the range is not cut into one fixed chunk per thread:
// participants claim shrinking chunks from a shared counter until none is left (guided
// scheduling), and the caller returns as soon as every index has run. A worker that does not
// wake up in time simply claims nothing; only a chunk that a participant was preempted in the
// middle of can hold the others up. Either side can be the slow one: a worker preempted in a
// chunk makes the caller wait, and a caller preempted in its chunk (its core shared with a busy
// process) leaves the workers idle, their share done, while the loop and the model wait on it.
// Each worker reports when it ran out of work, so the caller sees both: a loop straggled when a
// participant, out of work, then idled over a millisecond and longer than it worked itself.
// Then the pool runs the next loops on the caller alone, for periods that double while
// stragglers recur, and then tries the workers again. During a solo period the workers go to
// sleep, which frees their cores: a caller that was sharing a core with a busy process is
// moved by the kernel to an idle one. A period shrinks again only after the shared loops since
// the last straggle have saved the time it lost, so on a core shared with a busy process the
// pool settles on the caller alone (a one-thread run) instead of paying a time slice every few
// dozen loops.
//
// Used by runtime/compiled_model.cc behind loom_parallel_t; the general-purpose ThreadPool stays
// for coarse tasks.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace loom::base {

struct ForkJoinPoolOptions {
  // Pause instructions an idle thread polls for before it starts yielding (a few microseconds
  // per thousand): long enough to bridge the gap between a model's consecutive loops.
  int64_t spin_iterations = 1 << 12;
  // sched_yield calls after the spin before an idle worker sleeps on the futex (and before the
  // caller sleeps waiting for a preempted participant).
  int64_t yield_iterations = 32;
  // Chunks shrink to remaining / (chunk_divisor * threads), and are at least one index.
  int64_t chunk_divisor = 2;
  // Run loops on the caller alone for a while after loops where the caller waited on a
  // straggler (a preempted participant) much longer than it worked itself.
  bool adaptive = true;
};

class ForkJoinPool {
 public:
  using RangeFn = void (*)(int64_t begin, int64_t end, void* ctx);

  // `num_threads` participants in each loop, the caller included (at least 1).
  explicit ForkJoinPool(int num_threads, ForkJoinPoolOptions options = {});
  // Joins the workers. Precondition: no Run in progress.
  ~ForkJoinPool();
  ForkJoinPool(const ForkJoinPool&) = delete;
  ForkJoinPool& operator=(const ForkJoinPool&) = delete;

  int size() const { return num_threads_; }

  // Runs fn over [0, n) in chunks on the caller and the workers; every index runs exactly once,
  // in chunks of consecutive indices. Returns when all are done. Not reentrant: one Run at a time
  // per pool (calls from several threads are serialized by the caller, as the compiled model
  // does).
  void Run(int64_t n, RangeFn fn, void* ctx);

  // Counters for tests and benchmarks (read between Runs).
  struct Stats {
    int64_t loops = 0;              // Runs with more than one index
    int64_t solo_loops = 0;         // of those, run on the caller alone (backoff)
    int64_t straggled_loops = 0;    // shared loops that a straggler held up (either side)
    int64_t slow_caller_loops = 0;  // of those, held up by the caller while workers idled
    int64_t worker_chunks = 0;      // chunks the workers ran
    int64_t caller_indices = 0;     // indices of the shared loops that the caller ran
    int64_t worker_indices = 0;     // and that the workers ran
  };
  Stats stats() const;

 private:
  void WorkerLoop(int index);
  // Claims and runs chunks of loop `tag` until none is left; returns how many it ran, and adds
  // the indices they covered to *indices (when not null).
  int64_t Participate(uint32_t tag, int64_t* indices);
  // Blocks until done_ reaches n (the caller's side of a loop).
  void AwaitDone(int64_t n, uint32_t tag);

  const int num_threads_;
  const ForkJoinPoolOptions options_;
  std::vector<std::thread> workers_;

  // The loop being run. `work_` is (tag << 32 | next unclaimed index); tag 0 means no loop. The
  // caller writes n_/fn_/ctx_ only while work_ is 0 and no claim of the previous loop is pending,
  // and a claimant validates what it read with its compare-exchange on work_ (see Participate),
  // so fields are atomics read and written relaxed.
  std::atomic<uint64_t> work_{0};
  std::atomic<int64_t> n_{0};
  std::atomic<RangeFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> done_{0};  // indices finished in the current loop

  // Wake-ups: workers sleep on wake_ (bumped per loop, and at shutdown); the caller sleeps on
  // finished_ (set to the loop's tag by the participant that finishes its last index).
  std::atomic<uint32_t> wake_{0};
  std::atomic<uint32_t> finished_{0};
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stopping_{false};

  // Per worker, its part in the last loop it ran chunks of: when it started and when it found no
  // index left to claim (steady_clock nanoseconds). A worker writes the times, then the loop's
  // tag (release); the caller reads them after the loop for the tag it ran.
  struct alignas(64) WorkerReport {
    std::atomic<uint32_t> tag{0};
    std::atomic<int64_t> start_ns{0};
    std::atomic<int64_t> out_ns{0};
  };
  std::vector<WorkerReport> reports_;

  uint32_t tag_ = 0;  // the caller's count of loops (tags wrap, skipping 0)
  // Backoff (caller only): loops left to run alone, the length of the next solo period, and the
  // shared loops since the last straggle or halving of the period.
  int64_t solo_left_ = 0;
  int64_t solo_period_ = 16;
  int64_t clean_loops_ = 0;
  // Seconds the last straggle lost, less what shared loops saved since (their caller's estimated
  // solo time minus their wall time): the period halves only once this is repaid.
  double straggle_debt_ = 0;

  std::atomic<int64_t> stat_loops_{0}, stat_solo_{0}, stat_straggled_{0}, stat_slow_caller_{0},
      stat_worker_chunks_{0}, stat_caller_indices_{0}, stat_worker_indices_{0};
};

}  // namespace loom::base
