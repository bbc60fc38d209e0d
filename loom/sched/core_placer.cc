#include "loom/sched/core_placer.h"

#include <unistd.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "loom/base/affinity.h"

namespace loom::sched {
namespace {

class SchedPinner final : public Pinner {
 public:
  void PinThread(pid_t tid, const std::vector<int>& cores) override {
    base::SetThreadAffinity(tid, cores);
  }
  void PinProcessGroup(pid_t group, const std::vector<int>& cores) override {
    base::PinProcessGroups({group}, cores);
  }
};

}  // namespace

std::unique_ptr<Pinner> MakeSchedPinner() { return std::make_unique<SchedPinner>(); }

absl::StatusOr<std::unique_ptr<CorePlacer>> CorePlacer::Create(CorePlacerOptions options,
                                                               std::unique_ptr<Pinner> pinner) {
  if (options.cpu_slots < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu slots must not be negative, got ", options.cpu_slots));
  }
  if (pinner == nullptr) return absl::InvalidArgumentError("the core placer needs a pinner");
  std::set<std::string> names;
  for (const auto& d : options.lending) {
    if (d.cores.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", d.name, " lends its cores but has none"));
    }
    if (!names.insert(d.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("device ", d.name, " is listed twice"));
    }
  }
  if (!options.lending.empty() && options.cpu_slots > 0 && options.cpu_cores.empty()) {
    return absl::InvalidArgumentError(
        "devices lending their cores need the CPU-stage cores (to move stages to when a device "
        "measures)");
  }
  std::unique_ptr<CorePlacer> p(new CorePlacer(std::move(options), std::move(pinner)));
  const CorePlacerOptions& o = p->options_;
  std::set<int> all;
  for (int i = 0; i < o.cpu_slots; ++i) {
    Unit u;
    if (!o.cpu_cores.empty()) u.core = o.cpu_cores[static_cast<size_t>(i) % o.cpu_cores.size()];
    p->units_.push_back(u);
  }
  all.insert(o.cpu_cores.begin(), o.cpu_cores.end());
  for (size_t d = 0; d < o.lending.size(); ++d) {
    for (int c : o.lending[d].cores) {
      p->units_.push_back(Unit{.core = c, .device = static_cast<int>(d)});
      all.insert(c);
    }
  }
  // Shared placements are confined only when every general slot is.
  if (!o.cpu_cores.empty() || o.cpu_slots == 0) p->all_cores_.assign(all.begin(), all.end());
  std::lock_guard<std::mutex> lock(p->mu_);
  p->measuring_.assign(o.lending.size(), 0);
  return p;
}

bool CorePlacer::LentUsable(const Unit& u) const {
  return u.device < 0 || measuring_[static_cast<size_t>(u.device)] == 0;
}

int CorePlacer::FreeUnits() const {
  int n = 0;
  for (const Unit& u : units_) n += u.holders == 0 && LentUsable(u) ? 1 : 0;
  return n;
}

bool CorePlacer::CanTake(int slots) const {
  std::lock_guard<std::mutex> lock(mu_);
  return FreeUnits() >= std::clamp(slots, 0, capacity());
}

std::vector<int> CorePlacer::FreeUnitsFor(int n) const {
  std::vector<int> units;
  for (int pass = 0; pass < 2 && static_cast<int>(units.size()) < n; ++pass) {
    for (size_t i = 0; i < units_.size() && static_cast<int>(units.size()) < n; ++i) {
      const Unit& u = units_[i];
      if (u.holders != 0 || (u.device >= 0) != (pass == 1) || !LentUsable(u)) continue;
      units.push_back(static_cast<int>(i));
    }
  }
  return units;
}

int CorePlacer::LeastLoadedGeneral() const {
  int best = -1;
  for (size_t g = 0; g < units_.size(); ++g) {
    if (units_[g].device >= 0) continue;
    if (best < 0 || units_[g].holders < units_[best].holders) best = static_cast<int>(g);
  }
  return best;
}

CorePlacer::PlacementId CorePlacer::Add(Placement p) {
  for (int u : p.units) ++units_[u].holders;
  SetCores(p);
  const PlacementId id = next_id_++;
  placements_[id] = std::move(p);
  return id;
}

std::optional<CorePlacer::PlacementId> CorePlacer::Take(int slots) {
  std::lock_guard<std::mutex> lock(mu_);
  const int n = std::clamp(slots, 0, capacity());
  if (FreeUnits() < n) return std::nullopt;
  Placement p;
  p.units = FreeUnitsFor(n);
  return Add(std::move(p));
}

CorePlacer::PlacementId CorePlacer::TakeOvercommitted(int slots) {
  std::lock_guard<std::mutex> lock(mu_);
  const int n = std::clamp(slots, 0, capacity());
  Placement p;
  p.units = FreeUnitsFor(n);
  for (int u : p.units) ++units_[u].holders;  // so the least loaded below sees them
  while (static_cast<int>(p.units.size()) < n) {
    const int g = LeastLoadedGeneral();
    if (g < 0) break;  // no general slot (a device-only host): fewer slots
    ++units_[g].holders;
    p.units.push_back(g);
  }
  for (int u : p.units) --units_[u].holders;  // Add counts them once
  return Add(std::move(p));
}

CorePlacer::PlacementId CorePlacer::TakeShared() {
  std::lock_guard<std::mutex> lock(mu_);
  Placement p;
  p.shared = true;
  p.cores = all_cores_;
  const PlacementId id = next_id_++;
  placements_[id] = std::move(p);
  return id;
}

void CorePlacer::Release(PlacementId id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placements_.find(id);
  if (it == placements_.end()) return;
  for (int u : it->second.units) --units_[u].holders;
  placements_.erase(it);
}

void CorePlacer::SetCores(Placement& p) {
  std::set<int> cores;
  for (int u : p.units) {
    if (units_[u].core < 0) {
      p.cores.clear();  // an unconfined slot: the placement is not pinned
      return;
    }
    cores.insert(units_[u].core);
  }
  p.cores.assign(cores.begin(), cores.end());
}

std::vector<int> CorePlacer::Cores(PlacementId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placements_.find(id);
  return it == placements_.end() ? std::vector<int>{} : it->second.cores;
}

void CorePlacer::EnterThread(PlacementId id) { RegisterThread(id, gettid()); }

void CorePlacer::RegisterThread(PlacementId id, pid_t tid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placements_.find(id);
  if (it == placements_.end()) return;
  Placement& p = it->second;
  if (std::find(p.tids.begin(), p.tids.end(), tid) == p.tids.end()) p.tids.push_back(tid);
  pinner_->PinThread(tid, p.cores);
}

void CorePlacer::LeaveThread(PlacementId id) {
  const pid_t tid = gettid();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placements_.find(id);
  if (it == placements_.end()) return;
  std::vector<pid_t>& tids = it->second.tids;
  tids.erase(std::remove(tids.begin(), tids.end(), tid), tids.end());
}

void CorePlacer::CompileStarted(PlacementId id, pid_t group) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placements_.find(id);
  if (it == placements_.end()) return;
  it->second.groups.push_back(group);
  pinner_->PinThread(group, it->second.cores);
}

int CorePlacer::BeginMeasure(const std::string& device) {
  std::lock_guard<std::mutex> lock(mu_);
  int d = -1;
  for (size_t i = 0; i < options_.lending.size(); ++i) {
    if (options_.lending[i].name == device) d = static_cast<int>(i);
  }
  if (d < 0 || measuring_[static_cast<size_t>(d)]++ > 0) return 0;
  int moved = 0;
  for (auto& [id, p] : placements_) {
    bool changed = false;
    for (int& u : p.units) {
      if (units_[u].device != d) continue;
      // The scheduler grants the device only while enough general slots are free for the stages
      // on its cores; should the counts ever disagree, the least loaded general slot takes two.
      const int best = LeastLoadedGeneral();
      if (best < 0) continue;  // no general slot at all (Create refuses that with lending)
      --units_[u].holders;
      ++units_[best].holders;
      u = best;
      changed = true;
    }
    if (!changed) continue;
    ++moved;
    SetCores(p);
    for (pid_t tid : p.tids) pinner_->PinThread(tid, p.cores);
    for (pid_t g : p.groups) pinner_->PinProcessGroup(g, p.cores);
  }
  return moved;
}

void CorePlacer::EndMeasure(const std::string& device) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < options_.lending.size(); ++i) {
    if (options_.lending[i].name == device && measuring_[i] > 0) --measuring_[i];
  }
}

}  // namespace loom::sched
