// The embedded engine: runs several tuning jobs at once on this machine under the scheduler core
// (sched/), each job one task's round at a time or, spread, several tasks' rounds at once. Each
// round of each task is four stage requests (propose -> build -> measure -> update);
// CPU stages run on a worker pool, confined to the CPU cores their grant stands for, and measure
// stages run in the device's sandboxed measurer only while the scheduler leases that device.
// Callers: `loom tune MODEL...` (cli/tune_command.cc) and the experiment runner.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/sched/scheduler.h"
#include "loom/sched/types.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measurer.h"
#include "loom/tune/spread.h"
#include "loom/tune/task_session.h"
#include "loom/tune/tune_job.h"

namespace loom::engine {

// Where stages may run: one host with one measurement device made of pinned CPU cores.
struct MachineLayout {
  // The device: the measurer's worker is pinned to these cores ("cpu:1").
  std::vector<int> device_cores = {1};
  // Cores for CPU stages (builds, proposals, model updates) besides the device's.
  std::vector<int> cpu_cores = {0};
  // General CPU slots; slot i runs on cpu_cores[i % cpu_cores.size()].
  int cpu_slots = 1;
  // The device lends its cores (one slot each) to CPU stages while no measurement holds it, and
  // takes them back before a measurement starts.
  bool device_shares_cores = true;
  // Empty: the device is `device_cores` ("cpu:1"). "cuda:0": the device is that GPU, whose
  // measurer (EngineOptions::make_measurer) launches kernels from `device_cores`; those cores
  // then lend no slots, so CPU stages never delay a launch.
  std::string gpu;
};

// For a machine with `num_cpus` cores: the last core is the device, the others run CPU stages
// (with one core, that core is both, and CPU stages use it only between measurements).
MachineLayout DefaultLayout(int num_cpus);
// kInvalidArgument when cores are negative, repeated, shared by the device and the CPU list, or
// when no slot is left for CPU stages.
absl::Status ValidateLayout(const MachineLayout& layout);

struct EngineJob {
  std::string name;  // shown in progress and results, e.g. the model
  std::vector<graph::Task> tasks;
  // Trials, batch size, tuner and job id (which must differ between the jobs of one run).
  tune::TaskTunerOptions options;
  ops::Target target;
  int priority = 0;  // higher first
  // After tuning a task, build and measure its template's default config (the untuned baseline),
  // as two more stages.
  bool measure_default = true;
  // One budget for the whole job (tune_job.h): its rounds then go to the task the task scheduler
  // picks, options.trials caps each task (tune::kNoTrialCap: no cap) and the job ends when the
  // budget is spent (within the time budget plus one round).
  tune::JobBudget budget;
  tune::TaskSchedulerOptions scheduler;
  // Tasks whose rounds may be under way at once (tune/spread.h, the service's rule: without a
  // budget the next tasks in order, with one the task scheduler's picks), 1 to tune::kMaxSpread;
  // the device still measures one stage at a time, so one task's builds and proposals overlap
  // another's measurements. More than 1 needs a policy that keeps the device exclusive.
  int spread = 1;
};

using BuilderFactory =
    std::function<absl::StatusOr<std::unique_ptr<tune::Builder>>(const tune::BuildOptions&)>;
using MeasurerFactory =
    std::function<absl::StatusOr<std::unique_ptr<tune::Measurer>>(const std::vector<int>& cores)>;

struct EngineOptions {
  std::string policy = "interleaved";  // sched::MakePolicy names
  MachineLayout layout;
  // CPU slots (= parallel compiles) each build stage asks for. At least 1. Under `uncontrolled`
  // (no exclusive resources) each job's builds compile on every core of the layout instead, as an
  // independent tuner that owns the machine would.
  int build_slots = 1;
  // Leases never expire in practice: a stage runs on this machine and reports when it ends.
  sched::SchedulerOptions scheduler{.default_lease = absl::Hours(24 * 365)};
  // Confine CPU stages, compiles and measurement threads to their cores (sched_setaffinity).
  bool pin = true;
  absl::Duration progress_interval = absl::Seconds(1);
  // One builder per job (called with num_threads = build_slots and the placement hooks set).
  // Empty: tune::MakeLocalBuilder.
  BuilderFactory make_builder;
  // One measurer per device, or per job under `uncontrolled` (so that jobs' measurements really
  // run at the same time on the device). Empty: tune::MakeLocalMeasurer pinned to `cores`.
  MeasurerFactory make_measurer;
};

// The cores a stage's threads and compiles were confined to, from `from` to `to`. A CPU stage
// moved off a device core when a measurement took it has two spans.
struct CoreSpan {
  std::vector<int> cores;
  absl::Time from;
  absl::Time to;
};

// One stage as it actually ran.
struct StageTrace {
  int job = 0;  // index into the jobs given to Run
  std::string task_key;
  int64_t round = 0;  // -1: the default-config baseline
  sched::StageKind kind = sched::StageKind::kOther;
  std::string resource;  // "cpu:0", "cpu:0,1", "device:cpu:1"
  int cpu_slots = 0;
  absl::Time granted;
  absl::Time start;  // when its worker began
  absl::Time end;
  std::vector<CoreSpan> spans;  // empty when not pinned (uncontrolled, or pin = false)
};

struct JobResult {
  std::string name;
  std::string job_id;
  absl::Status status;  // a job that failed (store error) stops; the others go on
  std::vector<tune::TaskOutcome> outcomes;
  absl::Time start;     // its first stage's start
  absl::Time end;       // its last stage's end
  int64_t records = 0;  // measured this run
};

struct EngineResult {
  std::string policy;
  absl::Time start;
  absl::Time end;
  std::vector<JobResult> jobs;
  std::vector<StageTrace> traces;  // in order of completion
  double device_busy_seconds = 0;  // time with at least one measurement running
  double cpu_slot_seconds = 0;     // CPU stages' slot-seconds
  int cpu_capacity = 0;            // CPU slots (general + lent)
  absl::Duration makespan() const { return end - start; }
};

struct EngineProgress {
  struct Job {
    std::string name;
    int64_t task_index = 0;  // 0-based, == num_tasks when done (a budgeted job: the current task)
    int64_t num_tasks = 0;
    int64_t trials_done = 0;  // current task
    int64_t trials = 0;       // per task
    double best_gflops = 0;   // current task
    std::string state;        // "build (running)", "measure (waiting)", "done", "failed: ..."
  };
  struct Resource {
    std::string name;          // "cpu slots (cores 0 +1 lent)", "device cpu:1"
    double busy_fraction = 0;  // since the start
    std::string current;       // what runs there now
  };
  absl::Duration elapsed;
  std::vector<Job> jobs;
  std::vector<Resource> resources;
  bool final = false;  // the last report, after every job ended
};

class Engine {
 public:
  // kInvalidArgument for a bad layout, policy or build_slots; errors of the factories.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options);
  ~Engine();

  // Runs the jobs to completion, all submitted at once. `store` may be null (records then live
  // in memory only). Returns each job's outcome (a failed job carries its status) and every
  // stage's trace; kInvalidArgument when two jobs share a job id or there are no jobs.
  // `on_progress` is called from the calling thread every progress_interval and once at the end.
  absl::StatusOr<EngineResult> Run(
      const std::vector<EngineJob>& jobs, tune::RecordStore* store,
      const std::function<void(const EngineProgress&)>& on_progress = nullptr);

  const EngineOptions& options() const { return options_; }

 private:
  explicit Engine(EngineOptions options) : options_(std::move(options)) {}
  EngineOptions options_;
};

}  // namespace loom::engine
