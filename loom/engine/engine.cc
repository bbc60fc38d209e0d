#include "loom/engine/engine.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loom/base/affinity.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"
#include "loom/base/thread_pool.h"
#include "loom/sched/core_placer.h"
#include "loom/sched/policy.h"
#include "loom/tune/spread.h"
#include "loom/tune/stages.h"

namespace loom::engine {

MachineLayout DefaultLayout(int num_cpus) {
  MachineLayout layout;
  if (num_cpus <= 1) {
    layout.device_cores = {0};
    layout.cpu_cores = {};
    layout.cpu_slots = 0;
    return layout;
  }
  layout.device_cores = {num_cpus - 1};
  layout.cpu_cores.clear();
  for (int c = 0; c < num_cpus - 1; ++c) layout.cpu_cores.push_back(c);
  layout.cpu_slots = num_cpus - 1;
  return layout;
}

absl::Status ValidateLayout(const MachineLayout& layout) {
  if (layout.device_cores.empty()) {
    return absl::InvalidArgumentError("the device needs at least one core");
  }
  std::set<int> seen;
  for (int c : layout.device_cores) {
    if (c < 0 || !seen.insert(c).second) {
      return absl::InvalidArgumentError(absl::StrCat("device cores [",
                                                     absl::StrJoin(layout.device_cores, ","),
                                                     "]: negative or repeated core ", c));
    }
  }
  std::set<int> cpu;
  for (int c : layout.cpu_cores) {
    if (c < 0 || !cpu.insert(c).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CPU cores [", absl::StrJoin(layout.cpu_cores, ","), "]: negative or repeated core ", c));
    }
    if (seen.count(c) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("core ", c,
                       " is both a device core and a CPU-stage core; a measurement core must "
                       "never run other work (let the device lend it instead)"));
    }
  }
  if (layout.cpu_slots < 0) return absl::InvalidArgumentError("cpu_slots must be >= 0");
  if (layout.cpu_slots > 0 && layout.cpu_cores.empty()) {
    return absl::InvalidArgumentError("cpu_slots > 0 needs at least one CPU-stage core");
  }
  if (!layout.gpu.empty()) {
    if (!absl::StartsWith(layout.gpu, "cuda:")) {
      return absl::InvalidArgumentError(
          absl::StrCat("GPU device '", layout.gpu, "': expected cuda:N, e.g. cuda:0"));
    }
    if (layout.device_shares_cores) {
      return absl::InvalidArgumentError(
          "a GPU's launching cores lend no slots: set device_shares_cores = false");
    }
  }
  if (layout.cpu_slots == 0 && !layout.device_shares_cores) {
    return absl::InvalidArgumentError(
        "no CPU slot for builds and model updates: give cpu_slots > 0 or let the device lend "
        "its cores");
  }
  return absl::OkStatus();
}

namespace {

using sched::StageKind;

std::string CoreList(const std::vector<int>& cores) { return absl::StrJoin(cores, ","); }

// Where one running stage's work may go. A CPU stage under an exclusive policy holds a placement
// of the core placer (sched/core_placer.h, the one owner of which cores a stage's slots are),
// which moves it off the device's lent cores when the device starts measuring and re-pins its
// threads and compilers; a measurement runs on the device's cores. `cores` and `spans` (the cores
// over time, for the trace) are written by the engine thread under the runner's pin_mu_.
struct Placement {
  bool pinned = false;
  std::optional<sched::CorePlacer::PlacementId> id;
  std::vector<int> cores;  // current cores
  std::vector<CoreSpan> spans;
};

// The core placer's pinner when the engine does not pin (pin = false): placements are counted
// and named by their cores, nothing is confined.
class NoPinner final : public sched::Pinner {
 public:
  void PinThread(pid_t /*tid*/, const std::vector<int>& /*cores*/) override {}
  void PinProcessGroup(pid_t /*group*/, const std::vector<int>& /*cores*/) override {}
};

struct StageInfo {
  int job = 0;
  int task = 0;  // index into the job's tasks
  StageKind kind = StageKind::kOther;
  bool is_default = false;  // the default-config baseline
  int64_t round = 0;
};

struct Completion {
  sched::LeaseId lease = 0;
  absl::Time start;
  absl::Time end;
  absl::Status status;
  tune::StageOutcome outcome;  // for the job's TaskSession
};

struct Running {
  StageInfo info;
  sched::Grant grant;
  std::shared_ptr<Placement> placement;
  std::string resource;
  std::string task_key;
};

// One builder of a job, used by one turn at a time (a job that spreads has one per turn, so that
// its hooks know whose build they place).
struct BuilderSlot {
  std::unique_ptr<tune::Builder> builder;
  // The running build's core placement, read by the builder's hooks (guarded by the runner's
  // pin_mu); unset when the build is not placed (`uncontrolled`).
  std::optional<sched::CorePlacer::PlacementId> placement;
  bool busy = false;  // a turn holds it (engine thread)
};

// A task whose rounds are under way: without a budget all its rounds, with one the round the task
// scheduler gave it (and its baseline before or after it, as tune::RunRound runs them). The
// engine thread calls its session's Next() and Complete(); in between, the one worker running
// the task's current stage runs it (the scheduler's dependency order keeps a task's stages one at
// a time, and the completion queue hands the session back).
struct Turn {
  tune::TaskSession* session = nullptr;  // owned by `owned` or by the job's BudgetedJob
  std::unique_ptr<tune::TaskSession> owned;
  int64_t round = -1;  // a budgeted turn: the session's round count when it was handed out
  int builder = 0;     // index into JobState::builders
};

struct JobState {
  const EngineJob* spec = nullptr;
  int index = 0;
  sched::JobId sid = 0;
  std::vector<BuilderSlot> builders;  // EngineJob::spread of them, made at Setup
  std::unique_ptr<tune::Measurer> own_measurer;
  tune::Measurer* measurer = nullptr;
  size_t task_index = 0;  // the task whose turn began last, for progress
  // The tasks whose rounds are under way (tune::TasksToRun picks them), by task index.
  std::map<int, Turn> turns;
  // Without a budget: per task, its outcome once it ended (done or skipped).
  std::vector<std::optional<tune::TaskOutcome>> ended;
  // A job with a budget: every task's session and the task scheduler.
  std::unique_ptr<tune::BudgetedJob> budgeted;
  // Engine-thread view for progress.
  int64_t trials_done = 0;
  double best_gflops = 0;
  std::string state = "waiting";
  bool done = false;
  JobResult result;
};

class Runner {
 public:
  Runner(const EngineOptions& options, tune::RecordStore* store,
         const std::function<void(const EngineProgress&)>& on_progress)
      : options_(options), store_(store), on_progress_(on_progress) {}

  absl::StatusOr<EngineResult> Run(const std::vector<EngineJob>& jobs);

 private:
  absl::Status Setup(const std::vector<EngineJob>& jobs);
  // Runs the jobs until all have ended and every worker has returned.
  absl::Status Loop();
  EngineResult Collect();
  // Starts turns until the job's spread is full (tune::TasksToRun: without a budget the next
  // tasks in order, with one the task scheduler's picks while the budget lasts); finishes the job
  // when no task is left.
  void Advance(JobState& job);
  // Starts task `task`'s turn; false when it ended at once (done, or skipped: no template).
  bool StartTurn(JobState& job, int task);
  // Submits the next chain of the task's turn; false when the turn ended (the task's rounds, or
  // under a budget its round, are done): its builder is free and the task is not in flight.
  bool ContinueTurn(JobState& job, int task);
  void SubmitRound(JobState& job, int task);
  void SubmitDefault(JobState& job, int task);
  void FailJob(JobState& job, absl::Status status);
  void FinishJob(JobState& job);
  void Dispatch(const sched::Grant& grant);
  // Runs `request` (the task session's current stage) on a worker thread.
  void Execute(JobState& job, tune::TaskSession& session, int builder,
               const tune::SessionRequest& request, const std::shared_ptr<Placement>& placement,
               const std::string& resource, sched::LeaseId lease);
  void HandleCompletion(const Completion& c);
  void VacateDevice();
  // The placement's cores are `cores` from `now` on.
  void MoveTo(Placement& p, std::vector<int> cores, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pin_mu_);
  void Report(bool final);
  absl::Time Now() const { return absl::Now(); }

  const EngineOptions& options_;
  tune::RecordStore* store_;
  const std::function<void(const EngineProgress&)>& on_progress_;
  std::unique_ptr<sched::Scheduler> sched_;
  bool exclusive_ = true;
  bool pin_ = false;
  sched::DeviceId device_ = 0;
  std::string device_resource_;
  std::string device_name_;
  std::unique_ptr<sched::CorePlacer> placer_;
  int capacity_ = 0;
  int unmanaged_build_threads_ = 1;  // compiles per build under `uncontrolled`: every core
  std::unique_ptr<tune::Measurer> device_measurer_;
  std::vector<std::unique_ptr<JobState>> jobs_;
  absl::flat_hash_map<sched::StageId, StageInfo> stages_;
  absl::flat_hash_map<sched::LeaseId, Running> running_;
  int live_jobs_ = 0;
  absl::Time start_;
  absl::Time next_progress_;
  std::vector<StageTrace> traces_;
  // Progress accounting (engine thread, grant and completion times).
  int device_active_ = 0;
  absl::Time device_since_;
  double device_busy_ = 0;
  double cpu_slot_seconds_ = 0;

  std::mutex pin_mu_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::vector<Completion> completions_ ABSL_GUARDED_BY(done_mu_);
  std::unique_ptr<base::ThreadPool> pool_;
};

absl::Status Runner::Setup(const std::vector<EngineJob>& jobs) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<sched::Policy> policy, sched::MakePolicy(options_.policy));
  exclusive_ = policy->ExclusiveResources();
  pin_ = options_.pin && exclusive_;
  sched_ = std::make_unique<sched::Scheduler>(std::move(policy), options_.scheduler);
  const MachineLayout& layout = options_.layout;
  LOOM_ASSIGN_OR_RETURN(sched::HostId host,
                        sched_->AddHost({.name = "local", .cpu_slots = layout.cpu_slots}));
  const bool gpu = !layout.gpu.empty();
  const int lent = layout.device_shares_cores ? static_cast<int>(layout.device_cores.size()) : 0;
  const std::string device_name =
      gpu ? layout.gpu : absl::StrCat("cpu:", CoreList(layout.device_cores));
  LOOM_ASSIGN_OR_RETURN(device_, sched_->AddDevice({.name = device_name,
                                                    .kind = gpu ? "cuda" : "cpu",
                                                    .host = host,
                                                    .shares_cpu_slots = lent}));
  device_name_ = device_name;
  device_resource_ = absl::StrCat("device:", device_name);
  sched::CorePlacerOptions placement{.cpu_slots = layout.cpu_slots, .cpu_cores = layout.cpu_cores};
  if (lent > 0) placement.lending.push_back({.name = device_name, .cores = layout.device_cores});
  std::unique_ptr<sched::Pinner> pinner =
      pin_ ? sched::MakeSchedPinner() : std::make_unique<NoPinner>();
  LOOM_ASSIGN_OR_RETURN(placer_,
                        sched::CorePlacer::Create(std::move(placement), std::move(pinner)));
  capacity_ = placer_->capacity();
  // Under `uncontrolled` each job stands for an independent tuner that believes it owns the
  // machine: its builds compile on every core (CPU and device cores), as AutoTVM's LocalBuilder
  // runs cpu_count() compiles. Its build stages ask for that many slots (at most the host's), so
  // the CPU accounting counts them.
  unmanaged_build_threads_ =
      static_cast<int>(layout.cpu_cores.size() + (gpu ? 0 : layout.device_cores.size()));
  unmanaged_build_threads_ = std::max(1, unmanaged_build_threads_);

  auto make_measurer =
      [&](const std::vector<int>& cores) -> absl::StatusOr<std::unique_ptr<tune::Measurer>> {
    if (options_.make_measurer) return options_.make_measurer(cores);
    tune::MeasureOptions mo;
    mo.cores = cores;
    return tune::MakeLocalMeasurer(mo);
  };
  if (exclusive_) {
    LOOM_ASSIGN_OR_RETURN(device_measurer_, make_measurer(layout.device_cores));
    LOOM_RETURN_IF_ERROR(device_measurer_->Probe().status());
  }
  absl::flat_hash_set<std::string> ids;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].spread < 1 || jobs[i].spread > tune::kMaxSpread) {
      return absl::InvalidArgumentError(absl::StrCat("job '", jobs[i].name,
                                                     "': spread must be 1 to ", tune::kMaxSpread,
                                                     ", got ", jobs[i].spread));
    }
    if (jobs[i].spread > 1 && !exclusive_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job '", jobs[i].name, "': spread ", jobs[i].spread, " needs a policy that ",
          "keeps the device exclusive (", options_.policy, " runs each job one stage at a time)"));
    }
    auto job = std::make_unique<JobState>();
    job->spec = &jobs[i];
    job->index = static_cast<int>(i);
    job->result.name = jobs[i].name;
    job->result.job_id = jobs[i].options.job_id;
    if (!ids.insert(jobs[i].options.job_id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("jobs '", jobs[i].name, "' and another share the job id '",
                       jobs[i].options.job_id, "'; give each job its own id"));
    }
    JobState* raw = job.get();
    job->builders.resize(static_cast<size_t>(jobs[i].spread));
    for (size_t b = 0; b < job->builders.size(); ++b) {
      tune::BuildOptions bo;
      bo.num_threads = exclusive_ ? options_.build_slots : unmanaged_build_threads_;
      // Compile threads and compilers follow the build's placement (also when it moves).
      auto build_placement = [this, raw, b] {
        std::lock_guard<std::mutex> lock(pin_mu_);
        return raw->builders[b].placement;
      };
      bo.before_compile = [this, build_placement] {
        if (auto id = build_placement()) placer_->EnterThread(*id);
      };
      bo.compile_started = [this, build_placement](int pid) {
        if (auto id = build_placement()) placer_->CompileStarted(*id, pid);
      };
      if (options_.make_builder) {
        LOOM_ASSIGN_OR_RETURN(job->builders[b].builder, options_.make_builder(bo));
      } else {
        LOOM_ASSIGN_OR_RETURN(job->builders[b].builder, tune::MakeLocalBuilder(bo));
      }
    }
    job->ended.resize(jobs[i].tasks.size());
    if (exclusive_) {
      job->measurer = device_measurer_.get();
    } else {
      LOOM_ASSIGN_OR_RETURN(job->own_measurer, make_measurer(layout.device_cores));
      LOOM_RETURN_IF_ERROR(job->own_measurer->Probe().status());
      job->measurer = job->own_measurer.get();
    }
    jobs_.push_back(std::move(job));
  }
  // Under exclusive policies at most `capacity` CPU stages and one measurement run at once; under
  // `uncontrolled` each job runs one stage at a time.
  const size_t threads = std::max<size_t>(static_cast<size_t>(capacity_) + 1, jobs.size());
  pool_ = std::make_unique<base::ThreadPool>(threads);
  return absl::OkStatus();
}

void Runner::MoveTo(Placement& p, std::vector<int> cores, absl::Time now) {
  p.cores = std::move(cores);
  if (!p.pinned) return;
  if (!p.spans.empty()) p.spans.back().to = now;
  p.spans.push_back({.cores = p.cores, .from = now, .to = now});
}

// A measurement was granted: the core placer moves every CPU stage off the device's lent cores,
// onto free general slots (the scheduler granted the device only because enough of them are
// free), and re-pins their threads and compilers; the traces record the move.
void Runner::VacateDevice() {
  if (placer_->BeginMeasure(device_name_) == 0) return;
  const absl::Time now = Now();
  std::lock_guard<std::mutex> lock(pin_mu_);
  for (auto& [lease, r] : running_) {
    Placement& p = *r.placement;
    if (!p.id.has_value()) continue;
    std::vector<int> cores = placer_->Cores(*p.id);
    if (cores != p.cores) MoveTo(p, std::move(cores), now);
  }
}

void Runner::SubmitRound(JobState& job, int task) {
  const absl::Time now = Now();
  const int64_t round = job.turns.at(task).session->round();
  std::vector<sched::StageId> ids;
  const StageKind kinds[] = {StageKind::kPropose, StageKind::kBuild, StageKind::kMeasure,
                             StageKind::kUpdate};
  for (StageKind kind : kinds) {
    sched::StageRequest req{.job = job.sid, .kind = kind};
    if (kind == StageKind::kMeasure) {
      req.need.device = device_;
    } else {
      req.need.cpu_slots = kind != StageKind::kBuild ? 1
                           : exclusive_              ? options_.build_slots
                                        : std::min(unmanaged_build_threads_, capacity_);
    }
    if (!ids.empty()) req.after = {ids.back()};
    auto id = sched_->Submit(req, now);
    if (!id.ok()) return FailJob(job, id.status());
    ids.push_back(*id);
    stages_[*id] = {.job = job.index, .task = task, .kind = kind, .round = round};
  }
  job.state = "propose (waiting)";
}

void Runner::SubmitDefault(JobState& job, int task) {
  const absl::Time now = Now();
  auto build =
      sched_->Submit({.job = job.sid, .kind = StageKind::kBuild, .need = {.cpu_slots = 1}}, now);
  if (!build.ok()) return FailJob(job, build.status());
  stages_[*build] = {
      .job = job.index, .task = task, .kind = StageKind::kBuild, .is_default = true, .round = -1};
  auto measure = sched_->Submit(
      {.job = job.sid, .kind = StageKind::kMeasure, .need = {.device = device_}, .after = {*build}},
      now);
  if (!measure.ok()) return FailJob(job, measure.status());
  stages_[*measure] = {
      .job = job.index, .task = task, .kind = StageKind::kMeasure, .is_default = true, .round = -1};
  job.state = "build default (waiting)";
}

bool Runner::StartTurn(JobState& job, int task) {
  Turn turn;
  if (job.budgeted != nullptr) {
    turn.session = job.budgeted->session(task);
    turn.round = turn.session->round();
  } else {
    const graph::Task& t = job.spec->tasks[static_cast<size_t>(task)];
    tune::TaskTunerOptions options = job.spec->options;
    options.measure_default = job.spec->measure_default;
    auto session = tune::TaskSession::Create(t, job.spec->target, options, store_);
    if (absl::IsUnimplemented(session.status())) {
      tune::TaskOutcome skipped;
      skipped.task = t;
      skipped.best_cost = std::numeric_limits<double>::infinity();
      skipped.default_cost = std::numeric_limits<double>::infinity();
      skipped.skipped_reason = std::string(session.status().message());
      job.ended[static_cast<size_t>(task)] = std::move(skipped);
      return false;
    }
    if (!session.ok()) {
      FailJob(job, session.status());
      return false;
    }
    turn.owned = *std::move(session);
    turn.session = turn.owned.get();
  }
  // At most `spread` turns at once (TasksToRun), one builder each.
  for (size_t b = 0; b < job.builders.size(); ++b) {
    if (!job.builders[b].busy) {
      turn.builder = static_cast<int>(b);
      break;
    }
  }
  LOOM_CHECK(!job.builders[static_cast<size_t>(turn.builder)].busy);
  job.builders[static_cast<size_t>(turn.builder)].busy = true;
  job.task_index = static_cast<size_t>(task);
  job.trials_done = turn.session->trials_done();
  job.best_gflops = turn.session->best_gflops();
  job.turns[task] = std::move(turn);
  return ContinueTurn(job, task);
}

bool Runner::ContinueTurn(JobState& job, int task) {
  Turn& turn = job.turns.at(task);
  tune::TaskSession& session = *turn.session;
  // Between rounds the session asks for a round's proposal, the baseline's build, or nothing; the
  // engine submits the whole chain of stages that request starts.
  const tune::SessionRequest next = session.Next();
  if (job.budgeted != nullptr) {
    // A budgeted turn is one round, with its baseline before it (the budget's sessions measure
    // it first) or after it (its last round), as tune::RunRound runs them.
    if (!next.done && next.baseline) {
      SubmitDefault(job, task);
      return true;
    }
    if (!next.done && session.round() == turn.round) {
      SubmitRound(job, task);
      return true;
    }
    job.budgeted->RoundDone(task);
  } else if (!next.done) {
    LOOM_CHECK(next.kind == StageKind::kPropose ||
               (next.baseline && next.kind == StageKind::kBuild));
    if (next.baseline) {
      SubmitDefault(job, task);
    } else {
      SubmitRound(job, task);
    }
    return true;
  } else {
    job.ended[static_cast<size_t>(task)] = session.Outcome();
  }
  job.builders[static_cast<size_t>(turn.builder)].busy = false;
  job.turns.erase(task);
  return false;
}

void Runner::Advance(JobState& job) {
  const bool budgeted = job.spec->budget.Active();
  if (budgeted && job.budgeted == nullptr) {
    tune::TaskTunerOptions options = job.spec->options;
    options.measure_default = job.spec->measure_default;
    auto created = tune::BudgetedJob::Create(job.spec->tasks, job.spec->target, options, store_,
                                             job.spec->budget, job.spec->scheduler);
    if (!created.ok()) return FailJob(job, created.status());
    job.budgeted = *std::move(created);
  }
  const int n = static_cast<int>(job.spec->tasks.size());
  for (bool again = true; again && !job.done;) {
    again = false;
    std::vector<tune::SpreadTask> tasks(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      tune::SpreadTask& t = tasks[static_cast<size_t>(i)];
      t.live = budgeted ? job.budgeted->session(i) != nullptr && !job.budgeted->session(i)->Done()
                        : !job.ended[static_cast<size_t>(i)].has_value();
      t.in_flight = job.turns.contains(i);
    }
    tune::NextRound pick;
    if (budgeted) pick = [&](const std::vector<int>&) { return job.budgeted->NextTask(); };
    const std::vector<int> run = tune::TasksToRun(tasks, job.spec->spread, pick);
    if (run.empty()) {
      job.task_index = job.spec->tasks.size();
      if (budgeted) {
        job.result.outcomes = job.budgeted->Outcomes();
      } else {
        for (std::optional<tune::TaskOutcome>& o : job.ended) job.result.outcomes.push_back(*o);
      }
      return FinishJob(job);
    }
    for (int task : run) {
      if (job.turns.contains(task)) continue;
      // A turn that ended at once (a skipped or finished task) changes what runs: ask again.
      if (!StartTurn(job, task)) {
        again = true;
        break;
      }
    }
  }
}

void Runner::FailJob(JobState& job, absl::Status status) {
  if (job.done) return;
  job.result.status = std::move(status);
  job.state = absl::StrCat("failed: ", job.result.status.message());
  job.done = true;
  --live_jobs_;
  (void)sched_->CancelJob(job.sid, Now());
}

void Runner::FinishJob(JobState& job) {
  job.done = true;
  job.state = "done";
  --live_jobs_;
  (void)sched_->CloseJob(job.sid);
}

void Runner::Dispatch(const sched::Grant& g) {
  auto it = stages_.find(g.stage);
  if (it == stages_.end()) {
    (void)sched_->Fail(g.lease, Now(), "unknown stage");
    return;
  }
  const StageInfo info = it->second;
  stages_.erase(it);
  JobState& job = *jobs_[info.job];
  auto placement = std::make_shared<Placement>();
  std::string resource;
  const absl::Time now = Now();
  if (info.kind == StageKind::kMeasure) {
    if (exclusive_) VacateDevice();
    placement->pinned = pin_;
    placement->cores = options_.layout.device_cores;
    resource = device_resource_;
    if (device_active_++ == 0) device_since_ = now;
  } else if (exclusive_) {
    // The scheduler's grant says how many slots; the placer says which cores they are.
    placement->id = placer_->TakeOvercommitted(g.cpu_slots);
    placement->pinned = pin_;
    std::lock_guard<std::mutex> lock(pin_mu_);
    MoveTo(*placement, placer_->Cores(*placement->id), now);
    resource = absl::StrCat("cpu:", CoreList(placement->cores));
  } else {
    resource = "cpu";
  }
  const Turn& turn = job.turns.at(info.task);
  Running r{.info = info,
            .grant = g,
            .placement = placement,
            .resource = resource,
            .task_key = turn.session->task().key};
  running_[g.lease] = r;
  job.state = absl::StrCat(info.is_default ? "default " : "",
                           std::string(sched::StageKindName(info.kind)), " (running)");
  const sched::LeaseId lease = g.lease;
  tune::SessionRequest request = turn.session->Next();
  LOOM_CHECK(request.kind == info.kind && request.baseline == info.is_default);
  tune::TaskSession* session = turn.session;
  const int builder = turn.builder;
  pool_->Submit([this, &job, session, builder, request = std::move(request), placement, resource,
                 lease] { Execute(job, *session, builder, request, placement, resource, lease); });
}

void Runner::Execute(JobState& job, tune::TaskSession& session, int builder,
                     const tune::SessionRequest& request,
                     const std::shared_ptr<Placement>& placement, const std::string& resource,
                     sched::LeaseId lease) {
  BuilderSlot& slot = job.builders[static_cast<size_t>(builder)];
  const bool build = request.kind == StageKind::kBuild;
  if (placement->id.has_value()) {
    placer_->EnterThread(*placement->id);
  } else if (placement->pinned) {
    base::SetThreadAffinity(0, placement->cores);  // a measurement: the device's cores
  }
  if (build) {
    std::lock_guard<std::mutex> lock(pin_mu_);
    slot.placement = placement->id;
  }
  Completion c{.lease = lease, .start = absl::Now()};
  const tune::StageEnv env{.builder = slot.builder.get(),
                           .measurer = job.measurer,
                           .resources = {.cpu = resource, .device = resource}};
  absl::StatusOr<tune::StageOutcome> out = tune::RunStage(session, request, env);
  if (out.ok()) {
    c.outcome = *std::move(out);
  } else {
    c.status = out.status();
  }
  c.end = absl::Now();
  // This pool thread may go on to another job's stage: later moves leave it alone.
  if (placement->id.has_value()) placer_->LeaveThread(*placement->id);
  {
    std::lock_guard<std::mutex> lock(pin_mu_);
    if (build) slot.placement.reset();
    if (!placement->spans.empty()) placement->spans.back().to = c.end;
  }
  {
    std::lock_guard<std::mutex> lock(done_mu_);
    completions_.push_back(std::move(c));
  }
  done_cv_.notify_one();
}

void Runner::HandleCompletion(const Completion& c) {
  auto it = running_.find(c.lease);
  if (it == running_.end()) return;
  Running r = std::move(it->second);
  running_.erase(it);
  const absl::Time now = Now();
  JobState& job = *jobs_[r.info.job];
  if (r.info.kind == StageKind::kMeasure) {
    if (--device_active_ == 0) device_busy_ += absl::ToDoubleSeconds(now - device_since_);
    if (exclusive_) placer_->EndMeasure(device_name_);
  } else {
    cpu_slot_seconds_ += absl::ToDoubleSeconds(c.end - c.start) * r.grant.cpu_slots;
    if (r.placement->id.has_value()) placer_->Release(*r.placement->id);
  }
  StageTrace trace{.job = r.info.job,
                   .task_key = r.task_key,
                   .round = r.info.round,
                   .kind = r.info.kind,
                   .resource = r.resource,
                   .cpu_slots = r.grant.cpu_slots,
                   .granted = r.grant.start,
                   .start = c.start,
                   .end = c.end};
  {
    std::lock_guard<std::mutex> lock(pin_mu_);
    trace.spans = r.placement->spans;
  }
  if (job.result.start == absl::Time() || c.start < job.result.start) job.result.start = c.start;
  job.result.end = std::max(job.result.end, c.end);
  traces_.push_back(std::move(trace));

  if (job.done) return;  // a failed job's stage that was still running
  if (!c.status.ok()) {
    (void)sched_->Fail(c.lease, now, std::string(c.status.message()));
    return FailJob(job, c.status);
  }
  absl::Status st = sched_->Complete(c.lease, now, c.end - c.start);
  if (!st.ok()) return FailJob(job, st);
  const int64_t records = static_cast<int64_t>(c.outcome.records.size());
  tune::TaskSession& session = *job.turns.at(r.info.task).session;
  st = session.Complete(c.outcome);
  if (!st.ok()) return FailJob(job, st);
  const bool ends_chain =
      r.info.is_default ? r.info.kind == StageKind::kMeasure : r.info.kind == StageKind::kUpdate;
  if (!ends_chain) {
    job.state = absl::StrCat(r.info.is_default ? "default " : "",
                             std::string(sched::StageKindName(session.Next().kind)), " (waiting)");
    return;
  }
  job.result.records += records;
  job.task_index = static_cast<size_t>(r.info.task);
  job.trials_done = session.trials_done();
  job.best_gflops = session.best_gflops();
  if (!ContinueTurn(job, r.info.task)) Advance(job);
}

void Runner::Report(bool final) {
  if (!on_progress_) return;
  const absl::Time now = Now();
  EngineProgress p;
  p.final = final;
  p.elapsed = now - start_;
  const double elapsed = std::max(1e-9, absl::ToDoubleSeconds(p.elapsed));
  for (const auto& job : jobs_) {
    EngineProgress::Job j;
    j.name = job->spec->name;
    j.task_index = static_cast<int64_t>(job->task_index);
    j.num_tasks = static_cast<int64_t>(job->spec->tasks.size());
    j.trials_done = job->trials_done;
    j.trials = job->spec->options.trials;
    j.best_gflops = job->best_gflops;
    j.state = job->state;
    p.jobs.push_back(std::move(j));
  }
  double cpu_busy = cpu_slot_seconds_;
  double device_busy = device_busy_;
  std::vector<std::string> cpu_now, device_now;
  for (const auto& [lease, r] : running_) {
    const std::string what = absl::StrCat(jobs_[r.info.job]->spec->name, " ",
                                          std::string(sched::StageKindName(r.info.kind)));
    if (r.info.kind == StageKind::kMeasure) {
      device_now.push_back(what);
    } else {
      cpu_busy += absl::ToDoubleSeconds(now - r.grant.start) * r.grant.cpu_slots;
      cpu_now.push_back(absl::StrCat(what, " on ", r.resource));
    }
  }
  if (device_active_ > 0) device_busy += absl::ToDoubleSeconds(now - device_since_);
  std::sort(cpu_now.begin(), cpu_now.end());
  std::sort(device_now.begin(), device_now.end());
  const MachineLayout& l = options_.layout;
  std::string cpu_name = absl::StrCat("cpu: ", capacity_, " slots (cores ", CoreList(l.cpu_cores));
  if (l.device_shares_cores) absl::StrAppend(&cpu_name, " + ", CoreList(l.device_cores), " lent");
  absl::StrAppend(&cpu_name, ")");
  p.resources.push_back({.name = cpu_name,
                         .busy_fraction = cpu_busy / (elapsed * std::max(1, capacity_)),
                         .current = cpu_now.empty() ? "idle" : absl::StrJoin(cpu_now, ", ")});
  p.resources.push_back({.name = device_resource_,
                         .busy_fraction = device_busy / elapsed,
                         .current = device_now.empty() ? "idle" : absl::StrJoin(device_now, ", ")});
  on_progress_(p);
}

absl::StatusOr<EngineResult> Runner::Run(const std::vector<EngineJob>& jobs) {
  LOOM_RETURN_IF_ERROR(Setup(jobs));
  // The engine thread itself does CPU work (loading a task's history may train a cost model,
  // storing rounds): keep it on the general cores, off the device.
  cpu_set_t saved;
  CPU_ZERO(&saved);
  const bool pin_self = pin_ && !options_.layout.cpu_cores.empty() &&
                        sched_getaffinity(0, sizeof(saved), &saved) == 0;
  if (pin_self) base::SetThreadAffinity(0, options_.layout.cpu_cores);
  absl::Status st = Loop();
  if (pin_self) sched_setaffinity(0, sizeof(saved), &saved);
  LOOM_RETURN_IF_ERROR(st);
  return Collect();
}

absl::Status Runner::Loop() {
  start_ = Now();
  next_progress_ = start_ + options_.progress_interval;
  for (auto& job : jobs_) {
    auto sid = sched_->AddJob(
        {.name = job->spec->name, .priority = job->spec->priority, .submit_time = start_});
    if (!sid.ok()) return sid.status();
    job->sid = *sid;
    ++live_jobs_;
  }
  for (auto& job : jobs_) Advance(*job);
  Report(false);
  while (live_jobs_ > 0 || !running_.empty()) {
    for (const sched::Grant& g : sched_->Advance(Now())) Dispatch(g);
    for (const sched::StageEvent& ev : sched_->TakeEvents()) {
      if (ev.type == sched::StageEvent::Type::kCancelled) continue;
      for (auto& job : jobs_) {
        if (job->sid == ev.job && !job->done) {
          FailJob(*job, absl::InternalError(absl::StrCat(
                            "the scheduler ", std::string(sched::StageEventTypeName(ev.type)),
                            " stage ", ev.stage, ": ", ev.reason)));
        }
      }
    }
    if (live_jobs_ == 0 && running_.empty()) break;
    std::vector<Completion> done;
    {
      std::unique_lock<std::mutex> lock(done_mu_);
      done_cv_.wait_until(lock, absl::ToChronoTime(next_progress_),
                          [&] { return !completions_.empty(); });
      done.swap(completions_);
    }
    for (const Completion& c : done) HandleCompletion(c);
    if (Now() >= next_progress_) {
      Report(false);
      next_progress_ = Now() + options_.progress_interval;
    }
  }
  pool_.reset();  // every worker has finished (running_ is empty)
  return absl::OkStatus();
}

EngineResult Runner::Collect() {
  EngineResult result;
  result.policy = options_.policy;
  result.start = start_;
  result.end = start_;
  for (auto& job : jobs_) {
    if (job->result.status.ok() && job->result.start == absl::Time()) {
      job->result.start = job->result.end = start_;
    }
    result.end = std::max(result.end, job->result.end);
    result.jobs.push_back(std::move(job->result));
  }
  // Device busy time: the union of measurement intervals.
  std::vector<std::pair<absl::Time, absl::Time>> measures;
  for (const StageTrace& t : traces_) {
    if (t.kind == StageKind::kMeasure) {
      measures.push_back({t.start, t.end});
    } else {
      result.cpu_slot_seconds += absl::ToDoubleSeconds(t.end - t.start) * t.cpu_slots;
    }
  }
  std::sort(measures.begin(), measures.end());
  absl::Time covered = absl::InfinitePast();
  for (const auto& [s, e] : measures) {
    const absl::Time from = std::max(s, covered);
    if (e > from) result.device_busy_seconds += absl::ToDoubleSeconds(e - from);
    covered = std::max(covered, e);
  }
  result.cpu_capacity = capacity_;
  result.traces = std::move(traces_);
  Report(true);
  return result;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options) {
  LOOM_RETURN_IF_ERROR(ValidateLayout(options.layout));
  LOOM_RETURN_IF_ERROR(sched::MakePolicy(options.policy).status());
  const int lent =
      options.layout.device_shares_cores ? static_cast<int>(options.layout.device_cores.size()) : 0;
  if (options.build_slots < 1 || options.build_slots > options.layout.cpu_slots + lent) {
    return absl::InvalidArgumentError(
        absl::StrCat("build_slots must be between 1 and the CPU slots (",
                     options.layout.cpu_slots + lent, "), got ", options.build_slots));
  }
  if (options.progress_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("progress_interval must be positive");
  }
  return std::unique_ptr<Engine>(new Engine(std::move(options)));
}

Engine::~Engine() = default;

absl::StatusOr<EngineResult> Engine::Run(
    const std::vector<EngineJob>& jobs, tune::RecordStore* store,
    const std::function<void(const EngineProgress&)>& on_progress) {
  if (jobs.empty()) return absl::InvalidArgumentError("no jobs to run");
  Runner runner(options_, store, on_progress);
  return runner.Run(jobs);
}

}  // namespace loom::engine
