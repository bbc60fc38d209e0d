// Which cores a host's CPU stages run on: the one owner of device-core placement, used by the
// embedded engine (engine.cc) and the agent (agent.cc). General CPU slots sit on the CPU-stage
// cores, plus one slot per core of each device that lends its cores while it does not measure.
// When a lending device starts measuring, every CPU stage on its cores moves to general slots:
// the threads it registered and the compiler process groups it started are re-pinned before the
// measurement. The scheduler (scheduler.h) decides how many slots a stage gets and when; this
// decides which cores those slots are. Thread-safe: called from stage and compile threads.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace loom::sched {

// Applies CPU affinity. The real one (MakeSchedPinner) calls sched_setaffinity; tests record.
class Pinner {
 public:
  virtual ~Pinner() = default;
  // One thread (a tid; 0 is the calling thread). Errors are ignored: the thread may have ended.
  virtual void PinThread(pid_t tid, const std::vector<int>& cores) = 0;
  // Every thread of every process in the process group (a compiler driver and the cc1plus, as
  // and ld it started).
  virtual void PinProcessGroup(pid_t group, const std::vector<int>& cores) = 0;
};
std::unique_ptr<Pinner> MakeSchedPinner();

struct CorePlacerOptions {
  // General CPU slots, spread over `cpu_cores` round robin. Empty cores: general slots are not
  // confined (a stage holding one is not pinned).
  int cpu_slots = 1;
  std::vector<int> cpu_cores{};
  // Devices that lend their cores (one slot per core) while they do not measure.
  struct LendingDevice {
    std::string name;
    std::vector<int> cores;
  };
  std::vector<LendingDevice> lending{};
};

class CorePlacer {
 public:
  using PlacementId = int64_t;

  // kInvalidArgument: negative slots, a lending device without cores or listed twice, or lending
  // with general slots but no CPU-stage cores to move stages to.
  static absl::StatusOr<std::unique_ptr<CorePlacer>> Create(CorePlacerOptions options,
                                                            std::unique_ptr<Pinner> pinner);

  // General plus lent slots (what the agent registers with the daemon).
  int capacity() const { return static_cast<int>(units_.size()); }

  // Whether Take(slots) would succeed now.
  bool CanTake(int slots) const;
  // Takes `slots` slots (clamped to [0, capacity]): free general slots first, then free lent
  // slots of devices that are not measuring. nullopt when not enough are free: the caller waits
  // for a Release or EndMeasure and tries again.
  std::optional<PlacementId> Take(int slots);
  // Take for a caller whose own slot count may briefly disagree with the placer's (the engine: a
  // failed job's stage still holds its slots after the scheduler freed them): free slots as Take
  // takes them, then the least loaded general slots, shared. Never waits.
  PlacementId TakeOvercommitted(int slots);
  // A stage granted past capacity (`uncontrolled`): holds no slot and runs on every core the
  // placer manages (CPU-stage cores and lent cores), as the engine leaves such stages unpinned.
  PlacementId TakeShared();
  void Release(PlacementId id);

  // The cores the placement's work is confined to now; empty: not confined.
  std::vector<int> Cores(PlacementId id) const;
  // Pins the calling thread to the placement's cores and re-pins it on later moves.
  void EnterThread(PlacementId id);
  void RegisterThread(PlacementId id, pid_t tid);
  // The calling thread stops working for the placement (a pooled thread that may go on to another
  // stage): later moves no longer re-pin it.
  void LeaveThread(PlacementId id);
  // A compiler started for the placement (its pid is its process group): pinned now and moved
  // with the placement.
  void CompileStarted(PlacementId id, pid_t group);

  // `device` starts a measurement (calls nest: several measurements may share it when
  // oversubscribed). On the first, every placement on the device's lent cores moves to the
  // least loaded general slots and is re-pinned. Returns the number of placements moved.
  int BeginMeasure(const std::string& device);
  void EndMeasure(const std::string& device);

 private:
  struct Unit {
    int core = -1;    // -1: an unconfined general slot
    int device = -1;  // index into lending_ for a lent slot, -1 for a general one
    int holders = 0;
  };
  struct Placement {
    std::vector<int> units;
    bool shared = false;
    std::vector<int> cores;
    std::vector<pid_t> tids;
    std::vector<pid_t> groups;
  };

  CorePlacer(CorePlacerOptions options, std::unique_ptr<Pinner> pinner)
      : options_(std::move(options)), pinner_(std::move(pinner)) {}
  bool LentUsable(const Unit& u) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int FreeUnits() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Free units for `n` slots (general first, then lent ones of devices not measuring); fewer when
  // not enough are free.
  std::vector<int> FreeUnitsFor(int n) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The general unit with the fewest holders, -1 when there is none.
  int LeastLoadedGeneral() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  PlacementId Add(Placement p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetCores(Placement& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CorePlacerOptions options_;
  std::unique_ptr<Pinner> pinner_;
  std::vector<Unit> units_;     // fixed after Create
  std::vector<int> all_cores_;  // of shared placements
  mutable std::mutex mu_;
  std::vector<int> measuring_ ABSL_GUARDED_BY(mu_);  // per lending device: measurements running
  std::map<PlacementId, Placement> placements_ ABSL_GUARDED_BY(mu_);
  PlacementId next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace loom::sched
