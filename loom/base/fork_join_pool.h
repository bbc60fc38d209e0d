// A fork-join pool for intra-operator parallelism in compiled models: the caller and N-1 workers
// split one range per call. Inference issues ~100 short parallel loops per run (MobileNetV2's
// kernels take tens of microseconds), so waking sleeping threads through a mutex and condition
// variable for each loop costs as much as the loop itself. Workers spin briefly on an atomic
// generation counter after each loop and only then sleep on it (std::atomic::wait, a futex).
// Used by runtime/compiled_model.cc; the general-purpose ThreadPool stays for coarse tasks.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace loom::base {

class ForkJoinPool {
 public:
  using RangeFn = void (*)(int64_t begin, int64_t end, void* ctx);

  // `num_threads` participants in each loop, the caller included (at least 1). `spin_iterations`
  // bounds how long an idle worker polls for the next loop before it sleeps.
  explicit ForkJoinPool(int num_threads, int64_t spin_iterations = 1 << 16);
  // Joins the workers. Precondition: no Run in progress.
  ~ForkJoinPool();
  ForkJoinPool(const ForkJoinPool&) = delete;
  ForkJoinPool& operator=(const ForkJoinPool&) = delete;

  int size() const { return num_threads_; }

  // Runs fn over [0, n) split into min(n, size()) even contiguous chunks; the caller runs the
  // first. Returns when every chunk is done. Not reentrant: one Run at a time per pool (calls
  // from several threads are serialized by the caller, as the compiled model does).
  void Run(int64_t n, RangeFn fn, void* ctx);

 private:
  void WorkerLoop(int index);
  void RunChunk(int index);

  const int num_threads_;
  const int64_t spin_iterations_;
  std::vector<std::thread> workers_;

  // The loop being run; written by Run before it bumps generation_ (release), read by workers
  // after they observe the new generation (acquire).
  int64_t n_ = 0;
  int chunks_ = 0;
  RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;

  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // chunks not yet finished in the current loop
  std::atomic<bool> stopping_{false};
};

}  // namespace loom::base
