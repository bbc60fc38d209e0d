#include "loom/base/thread_pool.h"

#include <atomic>

namespace loom::base {

ThreadPool::ThreadPool(size_t num_threads) {
  if (num_threads == 0) num_threads = 1;
  workers_.reserve(num_threads);
  for (size_t i = 0; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::Enqueue(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  // Work is claimed from a shared counter so uneven items balance across threads.
  auto next = std::make_shared<std::atomic<size_t>>(0);
  auto run = [next, n, &fn] {
    for (size_t i = (*next)++; i < n; i = (*next)++) fn(i);
  };
  size_t helpers = std::min(workers_.size(), n - 1);
  std::vector<std::future<void>> done;
  done.reserve(helpers);
  for (size_t i = 0; i < helpers; ++i) done.push_back(Submit(run));
  run();
  for (auto& f : done) f.get();
}

}  // namespace loom::base
