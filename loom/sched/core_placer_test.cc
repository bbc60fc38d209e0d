#include "loom/sched/core_placer.h"

#include <sched.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::sched {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// Records every affinity change instead of making it.
struct PinLog {
  std::vector<std::pair<pid_t, std::vector<int>>> threads;
  std::vector<std::pair<pid_t, std::vector<int>>> groups;
};
class RecordingPinner final : public Pinner {
 public:
  explicit RecordingPinner(PinLog* log) : log_(log) {}
  void PinThread(pid_t tid, const std::vector<int>& cores) override {
    log_->threads.push_back({tid, cores});
  }
  void PinProcessGroup(pid_t group, const std::vector<int>& cores) override {
    log_->groups.push_back({group, cores});
  }

 private:
  PinLog* log_;
};

// Cores 0-1 run CPU stages (2 slots); device cpu:3 lends core 3.
std::unique_ptr<CorePlacer> Placer(PinLog* log, int slots = 2) {
  CorePlacerOptions o{.cpu_slots = slots, .cpu_cores = {0, 1}, .lending = {{"cpu:3", {3}}}};
  auto p = CorePlacer::Create(std::move(o), std::make_unique<RecordingPinner>(log));
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

TEST(CorePlacerTest, GeneralSlotsFirstThenTheIdleDevicesCores) {
  PinLog log;
  auto p = Placer(&log);
  EXPECT_EQ(p->capacity(), 3);
  auto a = p->Take(1);
  auto b = p->Take(1);
  ASSERT_TRUE(a && b);
  EXPECT_THAT(p->Cores(*a), ElementsAre(0));
  EXPECT_THAT(p->Cores(*b), ElementsAre(1));
  EXPECT_TRUE(p->CanTake(1));
  auto c = p->Take(1);
  ASSERT_TRUE(c);
  EXPECT_THAT(p->Cores(*c), ElementsAre(3));  // lent
  EXPECT_FALSE(p->CanTake(1));
  EXPECT_FALSE(p->Take(1).has_value());
  p->Release(*a);
  auto d = p->Take(1);
  ASSERT_TRUE(d);
  EXPECT_THAT(p->Cores(*d), ElementsAre(0));
}

TEST(CorePlacerTest, MeasuringDeviceLendsNothing) {
  PinLog log;
  auto p = Placer(&log);
  EXPECT_EQ(p->BeginMeasure("cpu:3"), 0);
  auto a = p->Take(2);
  ASSERT_TRUE(a);
  EXPECT_THAT(p->Cores(*a), ElementsAre(0, 1));
  EXPECT_FALSE(p->CanTake(1));  // core 3 measures
  p->EndMeasure("cpu:3");
  auto b = p->Take(1);
  ASSERT_TRUE(b);
  EXPECT_THAT(p->Cores(*b), ElementsAre(3));
}

// A build on 1 general + 1 lent slot (an agent registering 2 slots of which 1 lent) runs on both
// cores, and on the general core only while the device measures.
TEST(CorePlacerTest, MeasurementMovesStagesOffTheDeviceAndRepinsTheirThreadsAndCompilers) {
  PinLog log;
  auto p = Placer(&log, /*slots=*/1);
  EXPECT_EQ(p->capacity(), 2);
  auto build = p->Take(2);
  ASSERT_TRUE(build);
  EXPECT_THAT(p->Cores(*build), ElementsAre(0, 3));
  p->RegisterThread(*build, 101);
  p->RegisterThread(*build, 102);
  p->RegisterThread(*build, 101);  // registered once
  p->CompileStarted(*build, 555);
  EXPECT_THAT(log.threads, ElementsAre(Pair(101, ElementsAre(0, 3)), Pair(102, ElementsAre(0, 3)),
                                       Pair(101, ElementsAre(0, 3)), Pair(555, ElementsAre(0, 3))));
  log.threads.clear();

  EXPECT_EQ(p->BeginMeasure("cpu:3"), 1);
  EXPECT_THAT(p->Cores(*build), ElementsAre(0));
  EXPECT_THAT(log.threads,
              UnorderedElementsAre(Pair(101, ElementsAre(0)), Pair(102, ElementsAre(0))));
  EXPECT_THAT(log.groups, ElementsAre(Pair(555, ElementsAre(0))));
  // A second measurement of the same device (oversubscribed) moves nothing more.
  log.threads.clear();
  EXPECT_EQ(p->BeginMeasure("cpu:3"), 0);
  EXPECT_THAT(log.threads, IsEmpty());
  p->EndMeasure("cpu:3");
  EXPECT_FALSE(p->CanTake(1));  // still measuring once; the general core holds the build
  p->EndMeasure("cpu:3");
  EXPECT_TRUE(p->CanTake(1));
  // The moved build holds core 0 only: its release frees it, and the device's core is free.
  p->Release(*build);
  EXPECT_TRUE(p->CanTake(2));
}

// The engine's take: when its own count runs ahead of the placer's (a failed job's stage still
// holds its slots), the stage shares the least loaded general slots instead of waiting; never the
// cores of a measuring device.
TEST(CorePlacerTest, OvercommittedTakesShareTheLeastLoadedGeneralSlots) {
  PinLog log;
  auto p = Placer(&log);
  EXPECT_EQ(p->BeginMeasure("cpu:3"), 0);
  auto a = p->TakeOvercommitted(1);
  auto b = p->TakeOvercommitted(1);
  EXPECT_THAT(p->Cores(a), ElementsAre(0));
  EXPECT_THAT(p->Cores(b), ElementsAre(1));
  EXPECT_FALSE(p->Take(1).has_value());
  auto c = p->TakeOvercommitted(2);  // both general cores, shared with a and b
  EXPECT_THAT(p->Cores(c), ElementsAre(0, 1));
  p->Release(a);
  p->Release(b);
  EXPECT_FALSE(p->CanTake(1));  // c still holds both
  p->Release(c);
  EXPECT_TRUE(p->CanTake(2));
  p->EndMeasure("cpu:3");
  EXPECT_TRUE(p->CanTake(3));
}

// A pooled thread that left a placement is not re-pinned when the placement moves.
TEST(CorePlacerTest, AThreadThatLeftIsNotMovedWithThePlacement) {
  PinLog log;
  auto p = Placer(&log, /*slots=*/1);
  auto build = p->Take(2);
  ASSERT_TRUE(build);
  p->EnterThread(*build);
  p->RegisterThread(*build, 101);
  p->LeaveThread(*build);
  log.threads.clear();
  EXPECT_EQ(p->BeginMeasure("cpu:3"), 1);
  EXPECT_THAT(log.threads, ElementsAre(Pair(101, ElementsAre(0))));
}

TEST(CorePlacerTest, MovesSpreadOverTheLeastLoadedGeneralSlots) {
  PinLog log;
  CorePlacerOptions o{.cpu_slots = 2, .cpu_cores = {0, 1}, .lending = {{"cpu:2-3", {2, 3}}}};
  auto p = CorePlacer::Create(std::move(o), std::make_unique<RecordingPinner>(&log));
  ASSERT_TRUE(p.ok()) << p.status();
  auto a = (*p)->Take(1);
  ASSERT_TRUE(a);
  auto lent = (*p)->Take(3);  // core 1, then the device's 2 and 3
  ASSERT_TRUE(lent);
  EXPECT_THAT((*p)->Cores(*lent), ElementsAre(1, 2, 3));
  EXPECT_EQ((*p)->BeginMeasure("cpu:2-3"), 1);
  // Slot 0 and 1 each hold one more stage now: the cores are 0 and 1.
  EXPECT_THAT((*p)->Cores(*lent), ElementsAre(0, 1));
  EXPECT_THAT((*p)->Cores(*a), ElementsAre(0));
  EXPECT_EQ((*p)->BeginMeasure("cpu:9"), 0);  // not a lending device
}

TEST(CorePlacerTest, SharedPlacementsRunOnEveryManagedCoreAndHoldNoSlot) {
  PinLog log;
  auto p = Placer(&log);
  auto s = p->TakeShared();
  EXPECT_THAT(p->Cores(s), ElementsAre(0, 1, 3));
  EXPECT_TRUE(p->CanTake(3));
  EXPECT_EQ(p->BeginMeasure("cpu:3"), 0);
  EXPECT_THAT(p->Cores(s), ElementsAre(0, 1, 3));
}

TEST(CorePlacerTest, UnconfinedSlotsAreNotPinned) {
  PinLog log;
  auto p = CorePlacer::Create({.cpu_slots = 2}, std::make_unique<RecordingPinner>(&log));
  ASSERT_TRUE(p.ok());
  auto a = (*p)->Take(1);
  ASSERT_TRUE(a);
  EXPECT_THAT((*p)->Cores(*a), IsEmpty());
  (*p)->RegisterThread(*a, 7);
  EXPECT_THAT(log.threads, ElementsAre(Pair(7, IsEmpty())));  // the real pinner skips empty sets
  EXPECT_THAT((*p)->Cores((*p)->TakeShared()), IsEmpty());
}

TEST(CorePlacerTest, BadOptionsAreRejected) {
  PinLog log;
  auto pinner = [&] { return std::make_unique<RecordingPinner>(&log); };
  EXPECT_THAT(CorePlacer::Create({.cpu_slots = -1}, pinner()).status().message(),
              HasSubstr("must not be negative"));
  EXPECT_THAT(CorePlacer::Create({.cpu_slots = 1, .lending = {{"cpu:3", {3}}}}, pinner())
                  .status()
                  .message(),
              HasSubstr("need the CPU-stage cores"));
  EXPECT_THAT(
      CorePlacer::Create({.cpu_slots = 1, .cpu_cores = {0}, .lending = {{"cpu:3", {}}}}, pinner())
          .status()
          .message(),
      HasSubstr("has none"));
  // A device-only agent may lend its only core: CPU stages run there between measurements.
  auto only = CorePlacer::Create({.cpu_slots = 0, .lending = {{"cpu:0", {0}}}}, pinner());
  ASSERT_TRUE(only.ok()) << only.status();
  EXPECT_EQ((*only)->capacity(), 1);
}

// The real pinner: a thread entering a placement runs on its cores.
TEST(CorePlacerTest, SchedPinnerConfinesTheEnteringThread) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  int first = 0;
  while (!CPU_ISSET(first, &allowed)) ++first;
  auto p = CorePlacer::Create({.cpu_slots = 1, .cpu_cores = {first}}, MakeSchedPinner());
  ASSERT_TRUE(p.ok());
  auto id = (*p)->Take(1);
  ASSERT_TRUE(id);
  int count = -1;
  bool on_first = false;
  std::thread t([&] {
    (*p)->EnterThread(*id);
    cpu_set_t now;
    CPU_ZERO(&now);
    sched_getaffinity(0, sizeof(now), &now);
    count = CPU_COUNT(&now);
    on_first = CPU_ISSET(first, &now);
  });
  t.join();
  EXPECT_EQ(count, 1);
  EXPECT_TRUE(on_first);
}

}  // namespace
}  // namespace loom::sched
