// Small index structures behind the scheduler core's hot paths (scheduler.cc): a table from
// dense, increasing 64-bit ids to record slots, a set of small integers with ordered "next
// member" search, and a priority queue that is a FIFO for keys arriving in order. They avoid
// hashing and per-element allocation.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <memory>
#include <vector>

#include "loom/base/check.h"

namespace loom::sched {

// Maps ids (>= 0, handed out in increasing order, so live ones cluster) to int32 slots. Ids live
// in pages of kPageSize; a page is freed when its last id is erased. Memory: one pointer per
// kPageSize ids ever used, plus one page per page-sized id range holding a live id.
class IdSlotTable {
 public:
  static constexpr int kPageBits = 8;
  static constexpr int64_t kPageSize = int64_t{1} << kPageBits;

  // The slot of `id`, or -1 when absent.
  int32_t Find(int64_t id) const {
    const uint64_t p = static_cast<uint64_t>(id) >> kPageBits;
    if (id < 0 || p >= pages_.size() || pages_[p] == nullptr) return -1;
    return pages_[p]->slots[id & (kPageSize - 1)];
  }

  // `id` must be absent and slot >= 0.
  void Insert(int64_t id, int32_t slot) {
    LOOM_CHECK(id >= 0 && slot >= 0);
    const uint64_t p = static_cast<uint64_t>(id) >> kPageBits;
    if (p >= pages_.size()) pages_.resize(p + 1);
    if (pages_[p] == nullptr) {
      pages_[p] = std::make_unique<Page>();
      pages_[p]->slots.fill(-1);
    }
    int32_t& s = pages_[p]->slots[id & (kPageSize - 1)];
    LOOM_CHECK(s < 0);
    s = slot;
    ++pages_[p]->live;
    ++size_;
  }

  // `id` must be present.
  void Erase(int64_t id) {
    const uint64_t p = static_cast<uint64_t>(id) >> kPageBits;
    LOOM_CHECK(p < pages_.size() && pages_[p] != nullptr);
    int32_t& s = pages_[p]->slots[id & (kPageSize - 1)];
    LOOM_CHECK(s >= 0);
    s = -1;
    --size_;
    if (--pages_[p]->live == 0) pages_[p].reset();
  }

  size_t size() const { return size_; }

 private:
  struct Page {
    int32_t live = 0;
    std::array<int32_t, kPageSize> slots;
  };
  std::vector<std::unique_ptr<Page>> pages_;
  size_t size_ = 0;
};

// A set of integers in [0, capacity) with a summary level, so FindNext skips empty stretches 64
// words at a time.
class OrderedBitSet {
 public:
  void Resize(int capacity) {
    words_.resize((capacity + 63) / 64, 0);
    summary_.resize((words_.size() + 63) / 64, 0);
  }
  void Insert(int i) {
    words_[i >> 6] |= uint64_t{1} << (i & 63);
    summary_[i >> 12] |= uint64_t{1} << ((i >> 6) & 63);
    ++size_;
  }
  void Erase(int i) {
    uint64_t& w = words_[i >> 6];
    w &= ~(uint64_t{1} << (i & 63));
    if (w == 0) summary_[i >> 12] &= ~(uint64_t{1} << ((i >> 6) & 63));
    --size_;
  }
  bool contains(int i) const { return (words_[i >> 6] >> (i & 63)) & 1; }
  bool empty() const { return size_ == 0; }
  int size() const { return size_; }

  // The smallest member >= i, or -1.
  int FindNext(int i) const {
    if (i < 0) i = 0;
    size_t w = static_cast<size_t>(i) >> 6;
    if (w >= words_.size()) return -1;
    uint64_t bits = words_[w] & (~uint64_t{0} << (i & 63));
    if (bits != 0) return static_cast<int>(w * 64 + std::countr_zero(bits));
    // Next non-empty word after w, via the summary.
    size_t word = w + 1;
    size_t s = word >> 6;
    if (s >= summary_.size()) return -1;
    uint64_t sbits = (word & 63) == 0 ? summary_[s] : summary_[s] & (~uint64_t{0} << (word & 63));
    while (sbits == 0) {
      if (++s >= summary_.size()) return -1;
      sbits = summary_[s];
    }
    size_t found = s * 64 + std::countr_zero(sbits);
    return static_cast<int>(found * 64 + std::countr_zero(words_[found]));
  }

 private:
  std::vector<uint64_t> words_;
  std::vector<uint64_t> summary_;  // bit k of summary_[s]: words_[s * 64 + k] != 0
  int size_ = 0;
};

// A min-priority queue of T (ordered by operator<, which must be a total order) made of a sorted
// run and a 4-ary heap (shallower than a binary one; siblings share cache lines): an element not
// smaller than the run's last one is appended to the run (O(1)), any other goes to the heap. The
// front is the smaller of the two fronts, so the order is exactly that of a single heap, while
// queues whose keys mostly arrive in order (FIFO ties broken by a sequence number) stay cheap and
// touch memory sequentially.
template <typename T>
class RunHeapQueue {
 public:
  bool empty() const { return run_head_ == run_.size() && heap_.empty(); }
  size_t size() const { return run_.size() - run_head_ + heap_.size(); }

  void Push(const T& x) {
    if (run_head_ == run_.size() || !(x < run_.back())) {
      if (run_head_ == run_.size()) {
        run_.clear();
        run_head_ = 0;
      }
      run_.push_back(x);
    } else {
      HeapPush(x);
    }
  }

  // Precondition: !empty().
  const T& Front() const { return FromRun() ? run_[run_head_] : heap_.front(); }

  // Removes Front(). Precondition: !empty().
  void Pop() {
    if (FromRun()) {
      if (++run_head_ == run_.size()) {
        run_.clear();
        run_head_ = 0;
      } else if (run_head_ >= 64 && run_head_ * 2 >= run_.size()) {
        run_.erase(run_.begin(), run_.begin() + run_head_);
        run_head_ = 0;
      }
    } else {
      HeapPop();
    }
  }

  // Removes every element for which pred is true.
  template <typename Pred>
  void EraseIf(Pred pred) {
    run_.erase(run_.begin(), run_.begin() + run_head_);
    run_head_ = 0;
    std::erase_if(run_, pred);  // keeps the run sorted
    std::erase_if(heap_, pred);
    for (size_t i = heap_.size(); i-- > 0;) SiftDown(i);
  }

 private:
  static constexpr size_t kArity = 4;

  void HeapPush(const T& x) {
    size_t i = heap_.size();
    heap_.push_back(x);
    while (i > 0) {
      const size_t parent = (i - 1) / kArity;
      if (!(x < heap_[parent])) break;
      heap_[i] = heap_[parent];
      i = parent;
    }
    heap_[i] = x;
  }

  void HeapPop() {
    T last = heap_.back();
    heap_.pop_back();
    if (heap_.empty()) return;
    heap_[0] = last;
    SiftDown(0);
  }

  // Moves heap_[i] down to its place among its descendants.
  void SiftDown(size_t i) {
    const size_t n = heap_.size();
    T x = heap_[i];
    while (true) {
      const size_t first = i * kArity + 1;
      if (first >= n) break;
      const size_t end = std::min(first + kArity, n);
      size_t best = first;
      for (size_t c = first + 1; c < end; ++c) {
        if (heap_[c] < heap_[best]) best = c;
      }
      if (!(heap_[best] < x)) break;
      heap_[i] = heap_[best];
      i = best;
    }
    heap_[i] = x;
  }
  bool FromRun() const {
    if (run_head_ == run_.size()) return false;
    return heap_.empty() || run_[run_head_] < heap_.front();
  }

  std::vector<T> run_;  // sorted ascending from run_head_
  size_t run_head_ = 0;
  std::vector<T> heap_;
};

}  // namespace loom::sched
