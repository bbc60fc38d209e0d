// Differential tests of the scheduler's index structures against std::map / std::set under long
// random operation sequences.
#include "loom/sched/index.h"

#include <map>
#include <set>
#include <tuple>

#include "gtest/gtest.h"
#include "loom/base/rng.h"

namespace loom::sched {
namespace {

TEST(IdSlotTableTest, MatchesAMapUnderRandomInsertsAndErases) {
  base::Rng rng(3);
  IdSlotTable table;
  std::map<int64_t, int32_t> ref;
  int64_t next_id = 0;
  for (int step = 0; step < 200000; ++step) {
    if (ref.empty() || rng.Bernoulli(0.52)) {
      next_id += rng.UniformInt(1, 3);  // increasing ids with gaps
      int32_t slot = static_cast<int32_t>(rng.UniformInt(0, 1 << 20));
      table.Insert(next_id, slot);
      ref[next_id] = slot;
    } else {
      // Mostly erase old ids (FIFO-like), sometimes a random live one.
      auto it = rng.Bernoulli(0.7) ? ref.begin() : ref.lower_bound(rng.UniformInt(0, next_id));
      if (it == ref.end()) it = ref.begin();
      table.Erase(it->first);
      ref.erase(it);
    }
    if (step % 997 == 0) {
      for (int k = 0; k < 50; ++k) {
        int64_t id = rng.UniformInt(-2, next_id + 600);
        auto it = ref.find(id);
        ASSERT_EQ(table.Find(id), it == ref.end() ? -1 : it->second) << id;
      }
    }
    ASSERT_EQ(table.size(), ref.size());
  }
  for (const auto& [id, slot] : ref) ASSERT_EQ(table.Find(id), slot);
}

TEST(IdSlotTableTest, FreesPagesOnceEmptyAndReusesThem) {
  IdSlotTable table;
  for (int64_t id = 0; id < 3 * IdSlotTable::kPageSize; ++id) table.Insert(id, 7);
  for (int64_t id = 0; id < 3 * IdSlotTable::kPageSize; ++id) table.Erase(id);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.Find(5), -1);
  table.Insert(5, 9);  // the freed page comes back
  EXPECT_EQ(table.Find(5), 9);
  EXPECT_EQ(table.Find(6), -1);
}

TEST(OrderedBitSetTest, FindNextMatchesASet) {
  base::Rng rng(11);
  for (int capacity : {1, 63, 64, 65, 4095, 4096, 4097, 20000}) {
    SCOPED_TRACE(capacity);
    OrderedBitSet bits;
    bits.Resize(capacity);
    std::set<int> ref;
    for (int step = 0; step < 20000; ++step) {
      int i = rng.UniformInt(0, capacity - 1);
      if (ref.contains(i)) {
        bits.Erase(i);
        ref.erase(i);
      } else {
        bits.Insert(i);
        ref.insert(i);
      }
      ASSERT_EQ(bits.size(), static_cast<int>(ref.size()));
      ASSERT_EQ(bits.empty(), ref.empty());
      int from = rng.UniformInt(0, capacity + 2);
      auto it = ref.lower_bound(from);
      ASSERT_EQ(bits.FindNext(from), it == ref.end() ? -1 : *it) << from;
      ASSERT_EQ(bits.FindNext(0), ref.empty() ? -1 : *ref.begin());
    }
    // Full iteration visits members in order.
    std::vector<int> seen;
    for (int i = bits.FindNext(0); i >= 0; i = bits.FindNext(i + 1)) seen.push_back(i);
    EXPECT_EQ(seen, std::vector<int>(ref.begin(), ref.end()));
  }
}

TEST(OrderedBitSetTest, GrowsKeepingMembers) {
  OrderedBitSet bits;
  bits.Resize(3);
  bits.Insert(2);
  bits.Resize(5000);
  bits.Insert(4999);
  EXPECT_EQ(bits.FindNext(0), 2);
  EXPECT_EQ(bits.FindNext(3), 4999);
  EXPECT_EQ(bits.FindNext(5000), -1);
  EXPECT_TRUE(bits.contains(2));
  EXPECT_FALSE(bits.contains(3));
}

// (key, unique sequence number): a total order, as in the scheduler's queue entries.
using Item = std::tuple<int, uint64_t>;

void CheckQueueAgainstSet(uint64_t seed, bool mostly_in_order) {
  base::Rng rng(seed);
  RunHeapQueue<Item> q;
  std::set<Item> ref;
  uint64_t seq = 0;
  int base = 0;
  for (int step = 0; step < 100000; ++step) {
    double r = rng.Uniform();
    if (r < 0.5) {
      // In-order keys (FIFO) with occasional out-of-order ones.
      int key = mostly_in_order && rng.Bernoulli(0.9) ? base : rng.UniformInt(-50, 50) + base;
      if (rng.Bernoulli(0.1)) ++base;
      Item x{key, seq++};
      q.Push(x);
      ref.insert(x);
    } else if (r < 0.97) {
      if (ref.empty()) continue;
      ASSERT_EQ(q.Front(), *ref.begin());
      q.Pop();
      ref.erase(ref.begin());
    } else {
      // Remove every item with an odd sequence number and key multiple of 3.
      auto pred = [](const Item& x) { return std::get<1>(x) % 2 == 1 && std::get<0>(x) % 3 == 0; };
      q.EraseIf(pred);
      std::erase_if(ref, pred);
    }
    ASSERT_EQ(q.size(), ref.size());
    ASSERT_EQ(q.empty(), ref.empty());
    if (!ref.empty()) ASSERT_EQ(q.Front(), *ref.begin());
  }
  while (!ref.empty()) {
    ASSERT_EQ(q.Front(), *ref.begin());
    q.Pop();
    ref.erase(ref.begin());
  }
  EXPECT_TRUE(q.empty());
}

TEST(RunHeapQueueTest, PopsInTheSameOrderAsAnOrderedSet) {
  CheckQueueAgainstSet(1, /*mostly_in_order=*/true);
  CheckQueueAgainstSet(2, /*mostly_in_order=*/false);
}

TEST(RunHeapQueueTest, InOrderPushesStayInTheRun) {
  RunHeapQueue<Item> q;
  for (uint64_t i = 0; i < 1000; ++i) q.Push({0, i});
  q.Push({-1, 1000});  // smaller than the run's last: goes to the heap, yet comes out first
  EXPECT_EQ(q.Front(), Item(-1, 1000));
  q.Pop();
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_EQ(q.Front(), Item(0, i));
    q.Pop();
  }
  EXPECT_TRUE(q.empty());
}

}  // namespace
}  // namespace loom::sched
