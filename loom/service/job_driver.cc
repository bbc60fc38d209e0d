#include "loom/service/job_driver.h"

#include <fcntl.h>
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/message_differencer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/shape_spec.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record.h"
#include "loom/sched/policy.h"
#include "loom/tune/spread.h"
#include "loom/tune/stage_wire.h"
#include "loom/tune/task_scheduler.h"
#include "loom/tune/task_session.h"
#include "loom/v1/stage_names.h"
#include "loom/v1/version.h"

namespace loom::service {
namespace {

constexpr int kMaxRecentMessages = 200;

std::string JobIdOf(int64_t num) { return absl::StrCat("j", num); }

// "j17" -> 17; 0 when it is not a job id.
int64_t JobNum(absl::string_view id) {
  int64_t n = 0;
  if (id.size() < 2 || id[0] != 'j' || !absl::SimpleAtoi(id.substr(1), &n) || n <= 0) return 0;
  return n;
}

bool Ended(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

// The tuner settings of task `index` of a job as its stages carry them (MakeStage), with the job
// spec's defaults applied (tune::SessionOptionsOf owns them), so that agents apply none of their
// own: the same settings restore the same session on both sides.
v1::TunerSpec TunerSpecOf(const v1::SubmitJobRequest& spec, int index) {
  v1::TunerSpec s;
  s.set_kind(spec.tuner());
  s.set_seed(spec.seed() + index);
  s.set_batch_size(spec.batch_size());
  s.set_trials(spec.trials());
  s.set_no_prior(spec.no_prior());
  const tune::TaskTunerOptions resolved = tune::SessionOptionsOf(s);
  s.set_kind(resolved.tuner.kind);
  s.set_batch_size(resolved.batch_size);
  return s;
}

// The session options of task `index` of a job: those its stages' TunerSpec carries, from which
// the agents restore the session; the tuner runs in their stages.
tune::TaskTunerOptions SessionOptions(const JobRow& row, int index) {
  tune::TaskTunerOptions o = tune::SessionOptionsOf(TunerSpecOf(row.spec, index));
  o.job_id = row.RecordKey();
  o.tuner_elsewhere = true;
  // A budget may end a task before its trials: its baseline comes first, as in tune::BudgetedJob.
  // The agents need no word on it: a restored session takes the baseline's place from its state.
  o.baseline_first = row.spec.total_trials() > 0 || row.spec.time_budget_seconds() > 0;
  return o;
}

// The architecture a cuda job names ("cuda:sm_90a" -> "sm_90a"); empty for plain "cuda", which
// takes its device's.
std::string NamedCudaArch(const v1::SubmitJobRequest& spec) {
  return absl::StartsWith(spec.target(), "cuda:") ? spec.target().substr(5) : std::string();
}

// The architecture a prepared cuda job compiles for: the one it names, else its device's (the
// arch field of its target key "cuda:sm_90:<device name>").
std::string CudaArchOf(const JobRow& row) {
  std::string named = NamedCudaArch(row.spec);
  if (!named.empty()) return named;
  std::vector<std::string> key = absl::StrSplit(row.target_key, absl::MaxSplits(':', 2));
  if (key.size() == 3 && key[0] == "cuda" && !key[1].empty()) return key[1];
  return ops::CudaTarget().cuda_arch;
}

// Whether a job compiling for `arch` may measure on a GPU of `device_arch`: the same arch, or its
// arch-specific variant ("sm_90a" runs on an sm_90 device). Plain "cuda" (empty) runs anywhere.
bool CudaArchRunsOn(const std::string& arch, const std::string& device_arch) {
  return arch.empty() || arch == device_arch || arch == device_arch + "a";
}

// A job's model latency from the best known records of its tuned tasks (any job's, on its
// target): the sum of (best median cost x the task's node count), kernels only. nullopt while a
// tuned task has no successful record.
std::optional<double> EstimatedLatencyMs(tune::RecordStore& records, const JobRow& row,
                                         const std::vector<TaskRow>& tasks) {
  double ms = 0;
  for (const TaskRow& t : tasks) {
    if (t.end == TaskEnd::kSkipped) continue;
    auto best = records.BestK(t.task_key, row.target_key, 1);
    if (!best.ok() || best->empty()) return std::nullopt;
    ms += (*best)[0].median_cost * static_cast<double>(t.count) * 1e3;
  }
  return ms;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  i = std::min(i, v.size() - 1);
  // The element a sort would put at i, in linear time (GetStats is asked every second).
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

int64_t Micros(absl::Time t) { return t == absl::UnixEpoch() ? 0 : absl::ToUnixMicros(t); }

double SimSeconds(const v1::SimulatedWorkload& w, sched::StageKind kind) {
  switch (kind) {
    case sched::StageKind::kPropose:
      return w.propose_seconds();
    case sched::StageKind::kBuild:
      return w.build_seconds();
    case sched::StageKind::kMeasure:
      return w.measure_seconds();
    default:
      return w.update_seconds();
  }
}

// The positions `r.task_indices` picks from `count` tasks, in the order given; every task when it
// is empty. kInvalidArgument naming the first index outside the model.
absl::StatusOr<std::vector<int>> PickTasks(const v1::SubmitJobRequest& r, int count) {
  std::vector<int> picked;
  if (r.task_indices().empty()) {
    for (int i = 0; i < count; ++i) picked.push_back(i);
    return picked;
  }
  for (int i : r.task_indices()) {
    if (i >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("task index ", i, " is out of range: the model has ", count,
                       " tasks (indices 0 to ", count - 1, ", as `loom tasks` lists them)"));
    }
    picked.push_back(i);
  }
  return picked;
}

// A fresh folder only this process can enter (mkdtemp: mode 0700) holding the uploaded model and
// nothing else; removed with its file on destruction. The model is imported from it, so nothing
// else on the server is ever next to it.
class UploadFolder {
 public:
  static absl::StatusOr<std::unique_ptr<UploadFolder>> Create(const std::string& base,
                                                              absl::string_view bytes) {
    std::string root = base;
    if (root.empty()) {
      const char* env = std::getenv("TMPDIR");
      root = env != nullptr && env[0] == '/' ? env : "/tmp";
    }
    std::string templ = absl::StrCat(root, "/loom-upload-XXXXXX");
    if (mkdtemp(templ.data()) == nullptr) {
      return absl::InternalError("cannot create a private folder for the uploaded model");
    }
    auto folder = std::unique_ptr<UploadFolder>(new UploadFolder(templ));
    // O_EXCL | O_NOFOLLOW: the file is new, ours, and not a link planted meanwhile.
    int fd =
        open(folder->model().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return absl::InternalError("cannot write the uploaded model");
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    const bool closed = close(fd) == 0;
    if (off != bytes.size() || !closed) {
      return absl::ResourceExhaustedError("cannot write the uploaded model (is the disk full?)");
    }
    return folder;
  }
  ~UploadFolder() {
    unlink(model().c_str());
    rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }
  std::string model() const { return absl::StrCat(dir_, "/model.onnx"); }

 private:
  explicit UploadFolder(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// The model's tasks (zoo or ONNX bytes), as TaskRows of job `job_id`.
absl::StatusOr<std::vector<TaskRow>> ExtractTaskRows(const v1::SubmitJobRequest& r,
                                                     const std::string& job_id,
                                                     const DriverOptions& options) {
  std::vector<TaskRow> rows;
  if (r.has_simulated()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int> picked, PickTasks(r, r.simulated().tasks()));
    for (size_t i = 0; i < picked.size(); ++i) {
      TaskRow t;
      t.job_id = job_id;
      t.index = static_cast<int>(i);
      t.task_key = absl::StrCat("simulated:", job_id, ":t", picked[i]);
      t.template_name = "simulated";
      rows.push_back(std::move(t));
    }
    return rows;
  }
  frontend::LoadOptions load;
  for (const std::string& s : r.input_shapes()) {
    LOOM_ASSIGN_OR_RETURN(auto named, graph::ParseInputShape(s));
    load.input_shapes[named.first] = std::move(named.second);
  }
  // Constant folding of what users send is bounded before it allocates (a 127-byte Pad can ask
  // for gigabytes).
  load.max_fold_bytes = options.max_fold_bytes;
  load.max_fold_total_bytes = options.max_fold_total_bytes;
  std::unique_ptr<UploadFolder> upload;
  std::string spec;
  if (r.model_case() == v1::SubmitJobRequest::kZooModel) {
    spec = std::string(frontend::kZooPrefix) + r.zoo_model();
  } else {
    LOOM_RETURN_IF_ERROR(CheckUploadedModel(r.onnx_model()));
    LOOM_ASSIGN_OR_RETURN(upload, UploadFolder::Create(options.upload_dir, r.onnx_model()));
    spec = upload->model();
  }
  auto loaded = frontend::LoadModel(spec, load);
  if (!loaded.ok()) {
    // Named for the user: no server path, no tensor values, and no NOT_FOUND that would tell
    // whether a file exists on the server.
    absl::StatusCode code = loaded.status().code();
    if (code == absl::StatusCode::kNotFound && upload != nullptr) {
      code = absl::StatusCode::kInvalidArgument;
    }
    return absl::Status(code,
                        absl::StrCat("model: ", PublicModelError(loaded.status().message(),
                                                                 upload ? upload->dir() : "")));
  }
  upload.reset();
  absl::StatusOr<std::vector<graph::Task>> extracted = graph::ExtractTasks(loaded->graph);
  if (!extracted.ok()) {
    return absl::Status(
        extracted.status().code(),
        absl::StrCat("model: ", PublicModelError(extracted.status().message(), "")));
  }
  std::vector<graph::Task>& all = *extracted;
  LOOM_ASSIGN_OR_RETURN(std::vector<int> picked, PickTasks(r, static_cast<int>(all.size())));
  std::vector<graph::Task> tasks;
  tasks.reserve(picked.size());
  for (int i : picked) tasks.push_back(std::move(all[static_cast<size_t>(i)]));
  if (r.max_tasks() > 0 && static_cast<int>(tasks.size()) > r.max_tasks()) {
    tasks.resize(r.max_tasks());
  }
  if (tasks.empty()) return absl::InvalidArgumentError("the model has no tunable tasks");
  for (size_t i = 0; i < tasks.size(); ++i) {
    TaskRow t;
    t.job_id = job_id;
    t.index = static_cast<int>(i);
    t.task_key = tasks[i].key;
    t.flops = tasks[i].flops;
    t.count = tasks[i].count;
    rows.push_back(std::move(t));
  }
  return rows;
}

// The scheduler's kind of a registered device, and the need of a job's measure stages: the
// device's target key (its kind when it has none).
// The agents of `agents` (id -> agent) in order of their scheduler host: the order of tables.
template <typename AgentMap>
auto ByHost(const AgentMap& agents) {
  std::vector<const typename AgentMap::mapped_type::element_type*> sorted;
  for (const auto& [id, a] : agents) sorted.push_back(a.get());
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->host < b->host; });
  return sorted;
}

std::string SchedDeviceKind(const v1::DeviceInfo& d) {
  return d.target_key().empty() ? d.kind() : d.target_key();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and the ticker

JobDriver::JobDriver(DriverOptions options, std::unique_ptr<StateStore> state,
                     std::unique_ptr<tune::RecordStore> records, const base::Clock* clock)
    : options_(std::move(options)),
      clock_(clock ? clock : &real_clock_),
      state_(std::move(state)),
      records_(std::move(records)) {}

absl::StatusOr<std::unique_ptr<JobDriver>> JobDriver::Create(
    DriverOptions options, std::unique_ptr<StateStore> state,
    std::unique_ptr<tune::RecordStore> records, const base::Clock* clock) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<sched::Policy> policy, sched::MakePolicy(options.policy));
  if (options.heartbeat_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the heartbeat timeout must be positive");
  }
  std::unique_ptr<JobDriver> d(
      new JobDriver(std::move(options), std::move(state), std::move(records), clock));
  sched::SchedulerOptions so;
  so.max_attempts = d->options_.max_attempts;
  so.lease_factor = 3.0;
  so.min_lease = d->options_.heartbeat_timeout;  // estimated stages still get a grace period
  so.default_lease = absl::Hours(6);             // unestimated ones: the heartbeat decides
  {
    absl::MutexLock lock(&d->mu_);
    d->scheduler_ = std::make_unique<sched::Scheduler>(std::move(policy), so);
  }
  LOOM_RETURN_IF_ERROR(d->Load());
  return d;
}

absl::Status JobDriver::Load() {
  absl::MutexLock lock(&mu_);
  LOOM_ASSIGN_OR_RETURN(epoch_, state_->Counter("epoch", 0));
  ++epoch_;
  LOOM_ASSIGN_OR_RETURN(next_job_, state_->Counter("next_job", 1));
  Mutation m;
  m.counters.push_back({"epoch", epoch_});
  LOOM_ASSIGN_OR_RETURN(std::vector<JobRow> rows, state_->LoadJobs());
  int resumed = 0;
  for (JobRow& row : rows) {
    auto job = std::make_unique<Job>();
    job->num = JobNum(row.id);
    if (jobs_.contains(job->num)) {
      return absl::DataLossError(absl::StrCat("state store: job ", row.id, " appears twice"));
    }
    // Job ids are never given out twice, even if the counter fell behind.
    next_job_ = std::max(next_job_, job->num + 1);
    job->row = std::move(row);
    if (!job->row.spec.request_id().empty()) {
      job_of_request_[{job->row.owner, job->row.spec.request_id()}] = job->num;
    }
    if (!Ended(job->row.state)) {
      LOOM_ASSIGN_OR_RETURN(job->tasks, state_->LoadTasks(job->row.id));
      active_.insert(job->num);
      pending_.insert(job->num);
      ++resumed;
    }
    CountJobState(v1::JOB_STATE_UNSPECIFIED, job->row.state);
    records_written_ += job->row.records;
    for (const TaskRow& t : job->tasks) measurement_errors_ += t.errors;
    jobs_[job->num] = std::move(job);
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<FlaggedAgent> flagged, state_->LoadFlaggedAgents());
  for (const FlaggedAgent& f : flagged) flagged_[f.identity] = f.reason;
  LOOM_ASSIGN_OR_RETURN(std::vector<LeaseRow> leases, state_->LoadLeases());
  for (const LeaseRow& l : leases) {
    m.leases_deleted.push_back(l.lease_id);
    auto it = jobs_.find(JobNum(l.job_id));
    if (it != jobs_.end() && !Ended(it->second->row.state)) {
      Note(*it->second,
           absl::StrCat("daemon restarted: ", tune::WireKindName(l.kind), " stage of task ", l.task,
                        " (lease ", l.lease_id, " on agent ", l.agent_id, ") requeued"),
           m);
    }
  }
  LOOM_RETURN_IF_ERROR(state_->Apply(m));
  // Logged by Start(), once the daemon serves (a daemon that cannot bind its port says only why).
  loaded_ = {{"epoch", absl::StrCat(epoch_)},
             {"jobs", absl::StrCat(jobs_.size())},
             {"resumed", absl::StrCat(resumed)},
             {"leases_requeued", absl::StrCat(leases.size())},
             {"agents_flagged", absl::StrCat(flagged_.size())},
             {"policy", options_.policy}};
  return absl::OkStatus();
}

JobDriver::~JobDriver() { Stop(); }

void JobDriver::Start() {
  LogKv("daemon_loaded", loaded_);
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
  }
  ticker_ = std::thread([this] { TickLoop(); });
}

void JobDriver::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
}

void JobDriver::TickLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    ExpireAgents();
    EnforceDeviceLimits();
    Pump();
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tick);
  }
}

// ---------------------------------------------------------------------------------------------
// Logging and commits

void JobDriver::LogKv(absl::string_view event,
                      const std::vector<std::pair<std::string, std::string>>& kv) {
  if (!options_.log_to_stderr) return;
  std::string line = absl::StrCat(
      "ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      " event=", event);
  for (const auto& [k, v] : kv) {
    bool quote = v.empty() || v.find_first_of(" \"=") != std::string::npos;
    absl::StrAppend(&line, " ", k, "=");
    if (quote) {
      std::string esc;
      for (char c : v) {
        if (c == '"' || c == '\\') esc.push_back('\\');
        esc.push_back(c == '\n' ? ' ' : c);
      }
      absl::StrAppend(&line, "\"", esc, "\"");
    } else {
      absl::StrAppend(&line, v);
    }
  }
  line.push_back('\n');
  absl::MutexLock lock(&log_mu_);
  std::fputs(line.c_str(), stderr);
}

void JobDriver::Note(Job& job, const std::string& text, Mutation& m) {
  ++job.version;
  job.recent.push_back({job.version, text});
  while (job.recent.size() > kMaxRecentMessages) job.recent.pop_front();
  m.logs.push_back(LogLine{job.row.id, Now(), text});
  LogKv("job_log", {{"job", job.row.id}, {"msg", text}});
}

void JobDriver::Commit(Mutation& m) {
  absl::Status st = state_->Apply(m);
  if (!st.ok()) {
    // The daemon cannot keep its promise of durability: stop taking work rather than lie.
    LogKv("state_commit_failed", {{"error", std::string(st.message())}});
    std::fprintf(stderr, "loom serve: fatal: %s\n", std::string(st.message()).c_str());
    std::_Exit(3);
  }
  if (!m.empty()) view_stamp_.fetch_add(1, std::memory_order_relaxed);
  m = Mutation{};
}

// ---------------------------------------------------------------------------------------------
// Scheduling

namespace {

// The best cost after each finished round of a saved session (+inf while none succeeded): a
// budgeted job's task scheduler input.
std::vector<double> RoundBests(const v1::TaskSessionState& state) {
  std::vector<double> bests;
  double best = std::numeric_limits<double>::infinity();
  for (const v1::SessionRound& round : state.rounds()) {
    for (const v1::SessionTrial& t : round.results()) {
      if (t.error() != 0 || t.costs_size() == 0) continue;
      std::vector<double> costs(t.costs().begin(), t.costs().end());
      std::nth_element(costs.begin(), costs.begin() + costs.size() / 2, costs.end());
      best = std::min(best, costs[costs.size() / 2]);
    }
    bests.push_back(best);
  }
  return bests;
}

}  // namespace

std::vector<int> JobDriver::TasksToRun(const Job& job) const {
  const v1::SubmitJobRequest& spec = job.row.spec;
  const bool budgeted = spec.total_trials() > 0 || spec.time_budget_seconds() > 0;
  // Rounds in flight: tasks in the middle of a round, or with a stage live (a queued or running
  // propose stage leaves the task's phase at propose).
  std::vector<tune::SpreadTask> tasks;
  for (const TaskRow& t : job.tasks) {
    const bool live = t.end == TaskEnd::kNone;
    tasks.push_back({.live = live,
                     .in_flight = live && (t.stage != sched::StageKind::kPropose ||
                                           job.live.contains(t.index))});
  }
  if (!budgeted) return tune::TasksToRun(tasks, Spread(job));
  // A job with a budget (tune/task_scheduler.h): the task scheduler picks the task of each new
  // round, replayed from the rows, so the choice is the same however often it is asked.
  std::vector<tune::TaskRounds> rounds;
  int64_t trials = 0;
  int64_t total_rounds = 0;
  const int64_t batch = TunerSpecOf(spec, 0).batch_size();
  for (const TaskRow& t : job.tasks) {
    // A round in flight is not picked again, and counts as a whole batch spent until its trials
    // are measured (a real task counts them from its update stage on).
    const bool flying = tasks[static_cast<size_t>(t.index)].in_flight;
    if (flying && (IsSimulated(job) || t.stage != sched::StageKind::kUpdate)) trials += batch;
    tune::TaskRounds r{.weight = static_cast<double>(std::max<int64_t>(1, t.count)),
                       .live = tasks[static_cast<size_t>(t.index)].live && !flying};
    total_rounds += t.round;
    if (IsSimulated(job)) {  // no costs: every round counts as a batch without a success
      r.best_after_round.assign(static_cast<size_t>(t.round),
                                std::numeric_limits<double>::infinity());
      trials += t.round * batch;
      rounds.push_back(std::move(r));
      continue;
    }
    // The best after each of the session's rounds: kept when the session syncs the row, or read
    // once from the row's saved state (a task whose session is not loaded since a restart).
    if (job.round_bests.size() < job.tasks.size()) job.round_bests.resize(job.tasks.size());
    std::optional<std::vector<double>>& bests = job.round_bests[static_cast<size_t>(t.index)];
    if (!bests.has_value()) {
      v1::TaskSessionState state;
      bests = !t.session.empty() && state.ParseFromString(t.session) ? RoundBests(state)
                                                                     : std::vector<double>{};
    }
    r.best_after_round = *bests;
    trials += t.trials_done;
    rounds.push_back(std::move(r));
  }
  // The budget is checked before each new round; rounds in flight always finish.
  return tune::TasksToRun(
      tasks, Spread(job), [&](const std::vector<int>& run) -> std::optional<int> {
        if (spec.total_trials() > 0 && trials >= spec.total_trials()) return std::nullopt;
        if (spec.time_budget_seconds() > 0 && job.row.started != absl::UnixEpoch() &&
            Now() - job.row.started >= absl::Seconds(spec.time_budget_seconds())) {
          return std::nullopt;
        }
        absl::StatusOr<std::optional<int>> pick = tune::PickTask(
            rounds, {.seed = static_cast<uint64_t>(spec.seed()) * 1000003 +
                             static_cast<uint64_t>(total_rounds) + (uint64_t{run.size()} << 32)});
        if (!pick.ok() || !pick->has_value()) return std::nullopt;  // weights >= 1: "none live"
        rounds[static_cast<size_t>(**pick)].live = false;
        trials += batch;
        return **pick;
      });
}

void JobDriver::Pump() {
  Mutation m;
  Pump(m);
}

void JobDriver::Pump(Mutation& m) {
  // Activate jobs without a live stage (submitted, resumed, between stages, waiting for agents).
  std::vector<int64_t> pending(pending_.begin(), pending_.end());
  for (int64_t num : pending) {
    auto it = jobs_.find(num);
    if (it == jobs_.end()) {
      pending_.erase(num);
      continue;
    }
    Activate(*it->second, m);
  }
  const absl::Time now = Now();
  std::vector<sched::Grant> grants = scheduler_->Advance(now);
  for (const sched::Grant& g : grants) {
    auto sj = stage_job_.find(g.stage);
    auto dj = sj == stage_job_.end() ? jobs_.end() : jobs_.find(sj->second);
    // The host of a grant is an agent's host; find the agent.
    Agent* agent = nullptr;
    for (auto& [id, a] : agents_) {
      if (a->host == g.host) {
        agent = a.get();
        break;
      }
    }
    if (dj == jobs_.end() || agent == nullptr) {
      scheduler_->Fail(g.lease, now, "internal: grant for an unknown job or host").IgnoreError();
      continue;
    }
    Job& job = *dj->second;
    auto live = std::find_if(job.live.begin(), job.live.end(),
                             [&](const auto& l) { return l.second.stage == g.stage; });
    if (live == job.live.end()) {
      scheduler_->Fail(g.lease, now, "internal: grant for a stage the job does not run")
          .IgnoreError();
      continue;
    }
    Lease lease;
    lease.id = absl::StrCat(epoch_, ".", g.lease);
    lease.sched_lease = g.lease;
    lease.job = job.num;
    lease.task = live->first;
    lease.sched_kind = g.kind;
    lease.agent_id = agent->id;
    lease.cpu_slots = g.cpu_slots;
    lease.uses_device = g.device != sched::kNoDevice;
    lease.granted = now;
    if (lease.uses_device) {
      for (size_t i = 0; i < agent->device_ids.size(); ++i) {
        if (agent->device_ids[i] == g.device) {
          lease.device_target_key = agent->devices[i].target_key();
          lease.device_name = agent->devices[i].name();
          lease.device_peak_flops = PeakFlopsBound(agent->devices[i]);
        }
      }
    }
    auto req = MakeStage(job, lease, *agent, g);
    if (!req.ok()) {
      scheduler_->Fail(g.lease, now, std::string(req.status().message())).IgnoreError();
      continue;
    }
    lease.kind = req->kind();
    queue_wait_ms_.push_back(absl::ToDoubleMilliseconds(now - g.ready));
    agent->outbox.push_back(*std::move(req));
    agent->leases.insert(lease.id);
    live->second.lease = lease.id;
    m.leases_put.push_back(LeaseRow{lease.id, job.row.id, lease.task, lease.kind, agent->id, now});
    if (job.row.state == v1::JOB_STATE_QUEUED) {
      CountJobState(job.row.state, v1::JOB_STATE_RUNNING);
      job.row.state = v1::JOB_STATE_RUNNING;
      job.row.started = now;
      m.jobs.push_back(job.row);
      Note(job, "started", m);
    } else {
      ++job.version;
    }
    lease_by_sched_[g.lease] = lease.id;
    leases_[lease.id] = std::move(lease);
  }
  HandleEvents(m);
  Commit(m);
}

void JobDriver::Activate(Job& job, Mutation& m) {
  if (Ended(job.row.state)) {
    pending_.erase(job.num);
    return;
  }
  if (!job.row.prepared) {
    absl::Status st = Prepare(job, m);
    if (!st.ok()) {
      Finish(job, v1::JOB_STATE_FAILED, std::string(st.message()), m);
      return;
    }
    if (!job.row.prepared || Ended(job.row.state)) return;  // waiting for an agent, or done
  }
  if (job.sjob == 0) {
    sched::JobSpec spec{.name = job.row.id,
                        .owner = job.row.owner,
                        .priority = job.row.priority,
                        .submit_time = job.row.submitted};
    auto sjob = scheduler_->AddJob(spec);
    if (!sjob.ok()) {
      Finish(job, v1::JOB_STATE_FAILED, std::string(sjob.status().message()), m);
      return;
    }
    job.sjob = *sjob;
  }
  SubmitNext(job, m);
}

absl::Status JobDriver::Prepare(Job& job, Mutation& m) {
  const std::string kind = TargetKind(job.row.spec);
  // A cuda job naming its architecture is prepared only for a GPU that runs it.
  const std::string arch = kind == "cuda" ? NamedCudaArch(job.row.spec) : std::string();
  const v1::DeviceInfo* device = nullptr;
  for (const auto& [id, a] : agents_) {
    if (!a->alive) continue;
    for (const v1::DeviceInfo& d : a->devices) {
      if (d.kind() != kind || !CudaArchRunsOn(arch, d.cuda_arch())) continue;
      if (device == nullptr || d.target_key() < device->target_key()) device = &d;
    }
  }
  if (device == nullptr) {
    job.waiting = absl::StrCat("waiting for an agent with a ", kind, " device",
                               arch.empty() ? "" : absl::StrCat(" (", arch, ")"));
    return absl::OkStatus();
  }
  job.waiting.clear();
  job.row.prepared = true;
  job.row.isa = device->isa();
  job.row.target_key = SchedDeviceKind(*device);
  if (!IsSimulated(job)) {
    int tunable = 0;
    for (TaskRow& t : job.tasks) {
      auto tmpl = TemplateFor(job, t.index);
      if (absl::IsUnimplemented(tmpl.status())) {
        t.end = TaskEnd::kSkipped;
        t.skip_reason = std::string(tmpl.status().message());
        Note(job, absl::StrCat("task ", t.index, " skipped: ", t.skip_reason), m);
      } else if (!tmpl.ok()) {
        return tmpl.status();
      } else {
        t.template_name = (*tmpl)->name();
        ++tunable;
        // The session loads the job's earlier records (resume) and other jobs' (transfer).
        absl::StatusOr<tune::TaskSession*> session = SessionFor(job, t.index);
        if (!session.ok()) return session.status();
        if ((*session)->transferred_records() > 0) {
          Note(job,
               absl::StrCat("task ", t.index, ": ", (*session)->transferred_records(),
                            " records of earlier jobs seed the tuner"),
               m);
        }
      }
      m.tasks.push_back(t);
    }
    if (tunable == 0) {
      m.jobs.push_back(job.row);
      return absl::FailedPreconditionError("no task of the model has a template on this target");
    }
    // A latency goal met by records already known ends the job at once.
    if (job.row.spec.latency_goal_ms() > 0) {
      if (std::optional<double> estimate = EstimatedLatencyMs(*records_, job.row, job.tasks)) {
        const double ms = *estimate;
        job.row.estimated_latency_ms = ms;
        if (ms <= job.row.spec.latency_goal_ms()) {
          m.jobs.push_back(job.row);
          Note(job,
               absl::StrFormat("latency goal %.3f ms met by existing records (estimate %.3f ms): "
                               "no tuning needed",
                               job.row.spec.latency_goal_ms(), ms),
               m);
          Finish(job, v1::JOB_STATE_SUCCEEDED, "", m);
          return absl::OkStatus();
        }
      }
    }
  }
  m.jobs.push_back(job.row);
  Note(job, absl::StrCat("prepared for target ", job.row.target_key), m);
  return absl::OkStatus();
}

namespace {

// The target a prepared job's configs are named for. The CUDA templates of the job's arch take
// default limits: the daemon only names configs; the agents check them against their GPU's.
// A cpu target carries the CPU model of the job's target key ("cpu:<isa>:<model>"), so that its
// Key() is the records' and the session's.
absl::StatusOr<ops::Target> JobTarget(const JobRow& row) {
  ops::Target target;
  target.kind = TargetKind(row.spec);
  std::vector<std::string> key = absl::StrSplit(row.target_key, absl::MaxSplits(':', 2));
  if (target.kind == "cuda") {
    target = ops::CudaTarget(CudaArchOf(row));
    if (key.size() == 3 && key[0] == "cuda") target.device_name = key[2];
    return target;
  }
  if (!row.isa.empty()) {
    LOOM_ASSIGN_OR_RETURN(target.isa, ops::ParseIsa(row.isa));
  }
  if (key.size() == 3 && key[0] == "cpu") target.cpu_model = key[2];
  return target;
}

}  // namespace

absl::StatusOr<const ops::Template*> JobDriver::TemplateFor(Job& job, int task) {
  if (job.templates.size() < job.tasks.size()) job.templates.resize(job.tasks.size());
  if (job.templates[task] == nullptr) {
    LOOM_ASSIGN_OR_RETURN(graph::Workload w, graph::ParseWorkloadKey(job.tasks[task].task_key));
    LOOM_ASSIGN_OR_RETURN(ops::Target target, JobTarget(job.row));
    LOOM_ASSIGN_OR_RETURN(job.templates[task], ops::MakeTemplate(w, target));
  }
  return job.templates[task].get();
}

absl::StatusOr<tune::TaskSession*> JobDriver::SessionFor(Job& job, int index) {
  if (job.sessions.size() < job.tasks.size()) {
    job.sessions.resize(job.tasks.size());
    job.measured.resize(job.tasks.size());
    job.proposers.resize(job.tasks.size());
  }
  if (job.sessions[index] != nullptr) return job.sessions[index].get();
  TaskRow& row = job.tasks[index];
  LOOM_ASSIGN_OR_RETURN(graph::Workload w, graph::ParseWorkloadKey(row.task_key));
  LOOM_ASSIGN_OR_RETURN(ops::Target target, JobTarget(job.row));
  graph::Task task;
  task.workload = w;
  task.key = row.task_key;
  task.hash = graph::StableHash(task.key);
  task.count = row.count;
  task.flops = row.flops;
  const tune::TaskTunerOptions options = SessionOptions(job.row, index);
  if (!row.session.empty()) {
    v1::TaskSessionState state;
    if (!state.ParseFromString(row.session)) {
      return absl::DataLossError(
          absl::StrCat("state store: the session state of task ", index, " does not parse"));
    }
    LOOM_ASSIGN_OR_RETURN(job.sessions[index],
                          tune::TaskSession::Restore(state, task, target, options, records_.get()));
  } else {
    // A new task, or a row of a daemon before sessions: the session resumes from the job's
    // records of the task.
    LOOM_ASSIGN_OR_RETURN(job.sessions[index],
                          tune::TaskSession::Create(task, target, options, records_.get()));
  }
  SyncTask(job, row, *job.sessions[index]);
  return job.sessions[index].get();
}

void JobDriver::SyncTask(Job& job, TaskRow& task, const tune::TaskSession& session) {
  const tune::SessionRequest next = session.Next();
  task.end = next.done ? TaskEnd::kDone : TaskEnd::kNone;
  if (!next.done) task.stage = next.kind;
  task.round = session.round();
  task.trials_done = static_cast<int>(session.trials_done());
  task.errors = static_cast<int>(session.errors());
  task.best_cost =
      session.best_cost() < std::numeric_limits<double>::infinity() ? session.best_cost() : 0;
  task.configs.Clear();
  for (const ops::Config& c : next.configs) task.configs.add_config_indices(c.index);
  // Built artifacts are the measure and update stages' inputs.
  if (next.done ||
      (next.kind != sched::StageKind::kMeasure && next.kind != sched::StageKind::kUpdate)) {
    task.artifacts.Clear();
  }
  const v1::TaskSessionState state = session.Save();
  if (job.round_bests.size() < job.tasks.size()) job.round_bests.resize(job.tasks.size());
  job.round_bests[static_cast<size_t>(task.index)] = RoundBests(state);
  task.session = state.SerializeAsString();
}

void JobDriver::SubmitNext(Job& job, Mutation& m) {
  std::vector<int> run;
  for (bool again = true; again;) {
    again = false;
    run = TasksToRun(job);
    for (int ti : run) {
      if (job.live.contains(ti)) continue;
      if (!IsSimulated(job)) {
        // A restarted daemon resumes the task where its saved session says.
        absl::StatusOr<tune::TaskSession*> session = SessionFor(job, ti);
        if (!session.ok()) {
          Finish(job, v1::JOB_STATE_FAILED,
                 absl::StrCat("task ", ti, ": ", session.status().message()), m);
          return;
        }
        if (job.tasks[ti].end == TaskEnd::kDone) {
          m.tasks.push_back(job.tasks[ti]);
          again = true;  // the restored session had ended: ask again
          break;
        }
      }
      TaskRow& task = job.tasks[ti];
      sched::StageRequest req;
      req.job = job.sjob;
      req.kind = task.stage;
      if (task.stage == sched::StageKind::kMeasure) {
        req.need.device_kind = job.row.target_key;  // as SchedDeviceKind names the devices
      } else if (task.stage == sched::StageKind::kBuild && !IsSimulated(job)) {
        // Capped at the largest agent, counting the slots its devices lend (1 general + 1 lent slot
        // take a 2-slot build, as the embedded engine's layout does).
        int largest = 0;
        for (const auto& [id, a] : agents_) {
          if (a->alive) largest = std::max(largest, a->cpu_slots + a->lent_slots);
        }
        req.need.cpu_slots = std::clamp(options_.build_slots, 1, std::max(1, largest));
        if (scheduler_->CheckFeasible(req.need).infeasible()) req.need.cpu_slots = 1;
      } else {
        req.need.cpu_slots = 1;
      }
      if (IsSimulated(job)) {
        req.estimate = absl::Seconds(SimSeconds(job.row.spec.simulated(), task.stage));
      }
      if (scheduler_->CheckFeasible(req.need).infeasible()) {
        job.waiting = absl::StrCat("waiting for an agent that can run its ",
                                   std::string(sched::StageKindName(task.stage)), " stage");
        pending_.insert(job.num);
        return;
      }
      auto id = scheduler_->Submit(req, Now());
      if (!id.ok()) {
        job.waiting = std::string(id.status().message());
        pending_.insert(job.num);
        return;
      }
      job.live[ti] = Job::LiveStage{.stage = *id};
      stage_job_[*id] = job.num;
      ++job.version;
    }
  }
  job.waiting.clear();
  pending_.erase(job.num);
  if (run.empty() && job.live.empty()) Finish(job, v1::JOB_STATE_SUCCEEDED, "", m);
}

void JobDriver::HandleEvents(Mutation& m) {
  for (const sched::StageEvent& ev : scheduler_->TakeEvents()) {
    auto sj = stage_job_.find(ev.stage);
    if (sj == stage_job_.end()) continue;
    auto jt = jobs_.find(sj->second);
    if (ev.lease != 0) {
      auto l = lease_by_sched_.find(ev.lease);
      if (l != lease_by_sched_.end()) EndLease(l->second, m, /*revoke=*/true);
    }
    if (jt == jobs_.end()) continue;
    Job& job = *jt->second;
    auto live = std::find_if(job.live.begin(), job.live.end(),
                             [&](const auto& l) { return l.second.stage == ev.stage; });
    const int ti = live == job.live.end() ? -1 : live->first;
    const std::string what =
        ti < 0 ? "stage"
               : absl::StrCat(std::string(sched::StageKindName(job.tasks[ti].stage)),
                              " stage of task ", ti, " (round ", job.tasks[ti].round, ")");
    switch (ev.type) {
      case sched::StageEvent::Type::kRequeued:
        ++requeued_;
        if (live != job.live.end()) live->second.lease.clear();
        Note(job, absl::StrCat(what, " requeued: ", ev.reason), m);
        break;
      case sched::StageEvent::Type::kFailed:
        stage_job_.erase(sj);
        if (live != job.live.end()) job.live.erase(live);
        Finish(job, v1::JOB_STATE_FAILED, absl::StrCat(what, " failed: ", ev.reason), m);
        break;
      case sched::StageEvent::Type::kCancelled:
        stage_job_.erase(sj);
        if (live != job.live.end()) job.live.erase(live);
        break;
    }
  }
}

void JobDriver::EndLease(const std::string& lease_ref, Mutation& m, bool revoke) {
  // A copy: callers may pass a string owned by lease_by_sched_, which is erased below.
  const std::string lease_id = lease_ref;
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  auto a = agents_.find(it->second.agent_id);
  if (a != agents_.end()) {
    // A running stage is stopped at the agent's next poll (which this wakes), not its next
    // heartbeat: cancelling a job frees its device within a second.
    if (revoke && it->second.delivered && a->second->alive) a->second->revoked.push_back(lease_id);
    a->second->leases.erase(lease_id);
    auto& out = a->second->outbox;
    out.erase(std::remove_if(out.begin(), out.end(),
                             [&](const v1::StageRequest& r) { return r.lease_id() == lease_id; }),
              out.end());
  }
  RememberEnded(it->second, revoke);
  lease_by_sched_.erase(it->second.sched_lease);
  leases_.erase(it);
  m.leases_deleted.push_back(lease_id);
}

void JobDriver::Finish(Job& job, v1::JobState state, const std::string& reason, Mutation& m) {
  if (Ended(job.row.state)) return;
  CountJobState(job.row.state, state);
  job.row.state = state;
  job.row.finished = Now();
  job.row.failure_reason = reason;
  if (job.sjob != 0) {
    if (!job.live.empty()) {
      std::vector<std::string> leases;
      for (const auto& [task, l] : job.live) {
        if (!l.lease.empty()) leases.push_back(l.lease);
      }
      scheduler_->CancelJob(job.sjob, Now()).IgnoreError();
      for (const std::string& lease : leases) EndLease(lease, m, /*revoke=*/true);
    } else {
      scheduler_->CloseJob(job.sjob).IgnoreError();
    }
    // The scheduler's cancel events name stages we no longer track.
    for (const sched::StageEvent& ev : scheduler_->TakeEvents()) {
      if (ev.lease != 0) {
        auto l = lease_by_sched_.find(ev.lease);
        if (l != lease_by_sched_.end()) EndLease(l->second, m, /*revoke=*/true);
      }
      stage_job_.erase(ev.stage);
    }
  }
  for (const auto& [task, l] : job.live) stage_job_.erase(l.stage);
  job.live.clear();
  // The estimate from the best known records, for the result.
  if (!IsSimulated(job) && state == v1::JOB_STATE_SUCCEEDED && job.row.prepared) {
    if (std::optional<double> ms = EstimatedLatencyMs(*records_, job.row, job.tasks)) {
      job.row.estimated_latency_ms = *ms;
    }
  }
  m.jobs.push_back(job.row);
  for (const TaskRow& t : job.tasks) m.tasks.push_back(t);
  Note(job, absl::StrCat(v1::JobStateShortName(state), reason.empty() ? "" : ": ", reason), m);
  active_.erase(job.num);
  pending_.erase(job.num);
  job.templates.clear();
  job.sessions.clear();
  job.measured.clear();
  job.proposers.clear();
}

absl::StatusOr<v1::StageRequest> JobDriver::MakeStage(Job& job, const Lease& lease,
                                                      const Agent& agent,
                                                      const sched::Grant& grant) {
  if (lease.task < 0) return absl::InternalError("grant for a job with no task left");
  TaskRow& task = job.tasks[lease.task];
  v1::StageRequest r;
  r.set_lease_id(lease.id);
  r.set_job_id(job.row.id);
  r.set_task_key(task.task_key);
  r.set_round(task.round);
  r.set_cpu_slots(grant.cpu_slots);
  // Under `uncontrolled` the scheduler grants past capacity; the agent must not queue the stage
  // behind the others (the embedded engine starts it at once too).
  r.set_oversubscribed(!scheduler_->policy().ExclusiveResources());
  for (size_t i = 0; i < agent.device_ids.size(); ++i) {
    if (agent.device_ids[i] == grant.device) r.set_device(agent.devices[i].name());
  }
  v1::TaskSpec* ts = r.mutable_task();
  ts->set_workload_key(task.task_key);
  ts->set_template_name(task.template_name);
  ts->set_target_kind(TargetKind(job.row.spec));
  ts->set_isa(job.row.isa);
  if (ts->target_kind() == "cuda") ts->set_cuda_arch(CudaArchOf(job.row));
  ts->set_target_key(lease.device_target_key.empty() ? job.row.target_key
                                                     : lease.device_target_key);
  ts->set_flops(task.flops);
  const v1::SubmitJobRequest& spec = job.row.spec;
  *r.mutable_tuner() = TunerSpecOf(spec, task.index);
  if (IsSimulated(job)) {
    r.set_kind(v1::STAGE_KIND_SIMULATED);
    r.mutable_simulated()->set_seconds(SimSeconds(spec.simulated(), task.stage));
    return r;
  }
  // The session's request, mapped to the wire: its state travels with the stages that run its
  // tuner (the agent restores the session from it), inputs with the others.
  LOOM_ASSIGN_OR_RETURN(tune::TaskSession * session, SessionFor(job, lease.task));
  const tune::SessionRequest next = session->Next();
  if (next.done) return absl::InternalError("stage for a finished task");
  r.set_kind(tune::WireKind(next.kind));
  r.set_round(next.round);
  switch (next.kind) {
    case sched::StageKind::kPropose:
      r.mutable_propose()->set_session(task.session);
      break;
    case sched::StageKind::kBuild:
      for (const ops::Config& c : next.configs) r.mutable_build()->add_config_indices(c.index);
      break;
    case sched::StageKind::kMeasure:
      *r.mutable_measure()->mutable_artifacts() = task.artifacts.artifacts();
      if (spec.has_measure()) *r.mutable_measure_spec() = spec.measure();
      break;
    case sched::StageKind::kUpdate: {
      v1::UpdateInput* in = r.mutable_update();
      in->set_session(task.session);
      *in->mutable_artifacts() = task.artifacts.artifacts();
      *in->mutable_results() = job.measured[lease.task].results();
      break;
    }
    case sched::StageKind::kOther:
      return absl::InternalError("stage of no kind");
  }
  return r;
}

absl::Status JobDriver::ApplySessionResult(Job& job, const Lease& lease,
                                           const v1::StageResult& result, std::string& note) {
  TaskRow& task = job.tasks[lease.task];
  LOOM_ASSIGN_OR_RETURN(tune::TaskSession * session, SessionFor(job, lease.task));
  const tune::SessionRequest asked = session->Next();
  if (asked.done || tune::WireKind(asked.kind) != lease.kind) {
    return absl::InternalError("result for a stage the task's session does not wait for");
  }
  // A propose or update stage's tuner state, which only honest agents' session stages send.
  auto tuner_state = [](const std::string& bytes, tune::StageOutcome& outcome) -> absl::Status {
    if (bytes.empty()) return absl::OkStatus();  // the next stage replays the rounds
    if (!outcome.tuner_state.emplace().ParseFromString(bytes)) {
      return absl::PermissionDeniedError("the reported tuner state does not parse");
    }
    return absl::OkStatus();
  };
  tune::StageOutcome outcome{.kind = asked.kind};
  switch (asked.kind) {
    case sched::StageKind::kPropose: {
      if (!result.has_propose()) {
        return absl::InvalidArgumentError("a propose stage must report a propose output");
      }
      for (int64_t c : result.propose().config_indices()) outcome.configs.push_back({c});
      outcome.tuner_has_next = result.propose().tuner_has_next();
      LOOM_RETURN_IF_ERROR(tuner_state(result.propose().session_tuner(), outcome));
      break;
    }
    case sched::StageKind::kBuild: {
      if (!result.has_build()) {
        return absl::InvalidArgumentError("a build stage must report a build output");
      }
      LOOM_RETURN_IF_ERROR(CheckBuildOutput(result.build(), task.configs));
      task.artifacts = result.build();
      // Objects never travel: the measuring agent runs only what it compiled itself.
      for (v1::Artifact& a : *task.artifacts.mutable_artifacts()) a.clear_binary();
      for (const v1::Artifact& a : task.artifacts.artifacts()) {
        outcome.builds.push_back(tune::FromWire(a));
      }
      break;
    }
    case sched::StageKind::kMeasure: {
      if (!result.has_measure()) {
        return absl::InvalidArgumentError("a measure stage must report a measure output");
      }
      LOOM_RETURN_IF_ERROR(
          CheckMeasureOutput(result.measure(), task.artifacts,
                             MeasureBounds{.flops = task.flops,
                                           .peak_flops = lease.device_peak_flops,
                                           .max_costs = options_.measure_caps.max_repeat}));
      auto by = agents_.find(lease.agent_id);
      const std::string measured_by = by != agents_.end() ? by->second->RecordName() : "";
      const std::string target_key =
          lease.device_target_key.empty() ? job.row.target_key : lease.device_target_key;
      tune::RecordContext context = session->record_context();
      context.target_key = target_key;
      std::vector<tune::Record> recs;
      for (int i = 0; i < result.measure().results_size(); ++i) {
        const v1::MeasureResult& r = result.measure().results(i);
        tune::MeasureResult mr = tune::FromWire(r);
        if (r.timestamp_unix_micros() <= 0) mr.timestamp = Now();
        // A "successful" result without usable costs is an error, not a bad record.
        if (mr.ok() && (mr.costs.empty() ||
                        std::any_of(mr.costs.begin(), mr.costs.end(),
                                    [](double c) { return !(c > 0) || !std::isfinite(c); }))) {
          mr.error = tune::ErrorKind::kUnknown;
          mr.error_msg = "the agent reported no usable costs";
          mr.costs.clear();
        }
        tune::Record rec = tune::MakeRecord(context, mr, session->tmpl().space().ToJson(mr.config),
                                            task.artifacts.artifacts(i).build_seconds());
        rec.agent_id = measured_by;
        recs.push_back(std::move(rec));
        outcome.results.push_back(std::move(mr));
      }
      if (!asked.baseline) {
        // Records are committed before the session moves on. A crash between the two
        // re-measures the round after the restart: the records the first measurement stored
        // stay, and are not stored twice (never lost, never duplicated). The baseline's record
        // ("<job>#default") is the session's to store.
        absl::flat_hash_set<int64_t> stored;
        LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> known,
                              records_->ForTask(task.task_key, target_key, job.row.RecordKey()));
        for (const tune::Record& r : known) stored.insert(r.config_index);
        std::vector<tune::Record> fresh;
        for (const tune::Record& r : recs) {
          if (stored.insert(r.config_index).second) fresh.push_back(r);
        }
        LOOM_RETURN_IF_ERROR(records_->Append(fresh));
        CountStoredRecords(fresh);
        LOOM_ASSIGN_OR_RETURN(job.row.records,
                              records_->Count(tune::RecordFilter{.job_id = job.row.RecordKey()}));
        job.measured[lease.task] = result.measure();
      }
      note = absl::StrFormat(
          "task %d/%d: %s measured, %d records", task.index + 1, job.tasks.size(),
          asked.baseline ? std::string("default config") : absl::StrCat("round ", asked.round),
          asked.baseline ? 0 : recs.size());
      break;
    }
    case sched::StageKind::kUpdate: {
      if (!result.has_update()) {
        return absl::InvalidArgumentError("an update stage must report an update output");
      }
      if (!result.update().GetReflection()->GetUnknownFields(result.update()).empty()) {
        // stage.proto's reserved UpdateOutput.tuner_state: the history-based update, removed.
        return absl::FailedPreconditionError(
            "the update output is in the form of agents before sessions (a tuner_state): the agent "
            "is older than this daemon; run the same Loom release on the daemon and agents");
      }
      outcome.tuner_has_next = result.update().tuner_has_next();
      LOOM_RETURN_IF_ERROR(tuner_state(result.update().session_tuner(), outcome));
      outcome.records.resize(asked.results.size());  // stored at the measurement
      break;
    }
    case sched::StageKind::kOther:
      return absl::InternalError("stage of no kind");
  }
  absl::Status completed = session->Complete(outcome);
  if (absl::IsInvalidArgument(completed) &&
      (asked.kind == sched::StageKind::kPropose || asked.kind == sched::StageKind::kUpdate)) {
    // Honest agents run the session's own tuner: a proposal outside the space or repeated, or a
    // tuner state that does not agree with the round, is a forgery.
    return absl::PermissionDeniedError(completed.message());
  }
  LOOM_RETURN_IF_ERROR(completed);
  if (asked.kind == sched::StageKind::kPropose) job.proposers[lease.task] = lease.agent_id;
  if (asked.kind == sched::StageKind::kUpdate) {
    job.measured[lease.task].Clear();
    job.proposers[lease.task].clear();
  }
  SyncTask(job, task, *session);
  if (asked.kind == sched::StageKind::kMeasure && task.best_cost > 0) {
    absl::StrAppendFormat(&note, ", best %.2f GFLOPS", task.flops / task.best_cost / 1e9);
  }
  if (asked.kind == sched::StageKind::kPropose && outcome.configs.empty()) {
    note = absl::StrCat("task ", task.index, ": tuner has no more configs after ", task.trials_done,
                        " trials");
  }
  if (task.end == TaskEnd::kDone) {
    const tune::TaskOutcome o = session->Outcome();
    note = absl::StrFormat("task %d/%d done: %d trials, best %.2f GFLOPS, default config %.2f",
                           task.index + 1, job.tasks.size(), o.trials, o.best_gflops,
                           o.default_cost > 0 && std::isfinite(o.default_cost)
                               ? task.flops / o.default_cost / 1e9
                               : 0.0);
  }
  return absl::OkStatus();
}

bool JobDriver::DropRefusedRound(Job& job, const Lease& lease, const std::string& why,
                                 Mutation& m) {
  if (IsSimulated(job) || lease.task < 0 || lease.kind != v1::STAGE_KIND_UPDATE) return false;
  absl::StatusOr<tune::TaskSession*> session = SessionFor(job, lease.task);
  if (!session.ok() || !(*session)->DropPending().ok()) return false;
  TaskRow& task = job.tasks[lease.task];
  const std::string proposer = job.proposers[lease.task];
  job.proposers[lease.task].clear();
  job.measured[lease.task].Clear();
  SyncTask(job, task, **session);
  m.tasks.push_back(task);
  m.jobs.push_back(job.row);
  Note(job,
       absl::StrCat("task ", task.index, ": round ", task.round,
                    " dropped, its proposal is not the session's tuner's (", why.substr(0, 500),
                    "); proposed by agent ", proposer.empty() ? "(unknown)" : proposer),
       m);
  auto a = agents_.find(proposer);
  if (a != agents_.end()) {
    FlagAgent(*a->second,
              absl::StrCat("proposed round ", task.round, " of task ", task.index, " of job ",
                           job.row.id, ", which is not the session tuner's"),
              m);
  }
  return true;
}

absl::Status JobDriver::ApplyResult(Job& job, const Lease& lease, const v1::StageResult& result,
                                    Mutation& m) {
  TaskRow& task = job.tasks[lease.task];
  std::string note;
  if (!IsSimulated(job)) {
    LOOM_RETURN_IF_ERROR(ApplySessionResult(job, lease, result, note));
  } else if (task.end != TaskEnd::kNone) {
    return absl::InternalError("result for a finished task");
  } else {
    // A simulated job: its stages only take time; each measurement is one record (its cost: the
    // simulated seconds), so the load and restart tests can count records.
    switch (task.stage) {
      case sched::StageKind::kPropose:
        task.stage = sched::StageKind::kBuild;
        break;
      case sched::StageKind::kBuild:
        task.stage = sched::StageKind::kMeasure;
        break;
      case sched::StageKind::kMeasure: {
        tune::Record rec;
        rec.task_key = task.task_key;
        rec.template_name = "simulated";
        rec.target_key =
            lease.device_target_key.empty() ? job.row.target_key : lease.device_target_key;
        rec.config_index = task.round;
        rec.config_json = "{}";
        const double secs = std::max(1e-6, job.row.spec.simulated().measure_seconds());
        rec.costs = {secs};
        rec.median_cost = secs;
        rec.timestamp = Now();
        rec.job_id = job.row.RecordKey();
        auto by = agents_.find(lease.agent_id);
        rec.agent_id = by != agents_.end() ? by->second->RecordName() : "";
        // A crash after the append re-measures the round: stored once.
        LOOM_ASSIGN_OR_RETURN(
            std::vector<tune::Record> known,
            records_->ForTask(task.task_key, rec.target_key, job.row.RecordKey()));
        const bool stored = std::any_of(known.begin(), known.end(), [&](const tune::Record& r) {
          return r.config_index == rec.config_index;
        });
        if (!stored) {
          LOOM_RETURN_IF_ERROR(records_->Append({rec}));
          CountStoredRecords({rec});
        }
        LOOM_ASSIGN_OR_RETURN(job.row.records,
                              records_->Count(tune::RecordFilter{.job_id = job.row.RecordKey()}));
        if (task.best_cost == 0 || secs < task.best_cost) task.best_cost = secs;
        task.stage = sched::StageKind::kUpdate;
        note = absl::StrFormat("task %d/%d: round %d measured, 1 records", task.index + 1,
                               job.tasks.size(), task.round);
        break;
      }
      case sched::StageKind::kUpdate: {
        ++task.round;
        const bool done = task.round >= job.row.spec.simulated().rounds();
        if (done) {
          task.end = TaskEnd::kDone;
        } else {
          task.stage = sched::StageKind::kPropose;
        }
        if (done) note = absl::StrCat("task ", task.index + 1, "/", job.tasks.size(), " done");
        break;
      }
      case sched::StageKind::kOther:
        return absl::InternalError("result for a stage of no kind");
    }
  }
  // Resource accounting from the reported timing (else the lease's length).
  const absl::Time now = Now();
  double secs = absl::ToDoubleSeconds(now - lease.granted);
  if (result.timing().end_unix_micros() > result.timing().start_unix_micros() &&
      result.timing().start_unix_micros() > 0) {
    secs = (result.timing().end_unix_micros() - result.timing().start_unix_micros()) / 1e6;
  }
  if (lease.uses_device) {
    job.row.device_seconds += secs;
  } else {
    job.row.cpu_seconds += secs * std::max(1, lease.cpu_slots);
  }
  m.tasks.push_back(task);
  m.jobs.push_back(job.row);
  if (!note.empty()) {
    Note(job, note, m);
  } else {
    ++job.version;
  }
  return absl::OkStatus();
}

void JobDriver::DropAgent(Agent& a, const std::string& why, Mutation& m) {
  const absl::Time now = Now();
  a.alive = false;
  scheduler_->SetHostOnline(a.host, false).IgnoreError();
  std::vector<std::string> held(a.leases.begin(), a.leases.end());
  for (const std::string& lid : held) {
    auto l = leases_.find(lid);
    if (l == leases_.end()) continue;
    scheduler_->Fail(l->second.sched_lease, now, why).IgnoreError();
    // The requeue/failure event ends our lease (HandleEvents); make sure it is gone.
    HandleEvents(m);
    EndLease(lid, m);
  }
  a.outbox.clear();
  a.revoked.clear();
}

void JobDriver::ExpireAgents() {
  const absl::Time now = Now();
  Mutation m;
  for (auto& [id, a] : agents_) {
    if (!a->alive || now - a->last_seen <= options_.heartbeat_timeout) continue;
    LogKv("agent_lost",
          {{"agent", id},
           {"host", a->hostname},
           {"silent_s", absl::StrFormat("%.1f", absl::ToDoubleSeconds(now - a->last_seen))},
           {"leases", absl::StrCat(a->leases.size())}});
    DropAgent(*a,
              absl::StrFormat("agent %s (%s) lost: no heartbeat for %.1f s", id, a->hostname,
                              absl::ToDoubleSeconds(now - a->last_seen)),
              m);
  }
  Commit(m);
}

void JobDriver::FlagAgent(Agent& a, const std::string& reason, Mutation& m) {
  ++reports_refused_;
  if (a.flagged) return;
  a.flagged = true;
  LogKv("agent_flagged", {{"agent", a.id},
                          {"identity", a.identity.empty() ? "(none)" : a.identity},
                          {"host", a.hostname},
                          {"reason", reason}});
  if (!a.identity.empty()) {
    flagged_[a.identity] = reason;
    m.flagged.push_back(FlaggedAgent{a.identity, reason, Now()});
  }
  DropAgent(a, absl::StrCat("agent ", a.id, " (", a.hostname, ") flagged: ", reason), m);
}

void JobDriver::EnforceDeviceLimits() {
  Mutation m;
  EnforceDeviceLimits(m);
  Commit(m);
}

void JobDriver::EnforceDeviceLimits(Mutation& m) {
  const absl::Time now = Now();
  std::vector<int64_t> active(active_.begin(), active_.end());
  for (int64_t num : active) {
    Job& job = *jobs_.at(num);
    if (job.row.device_seconds_limit <= 0) continue;
    double used = job.row.device_seconds;
    for (const auto& [task, live] : job.live) {
      auto l = live.lease.empty() ? leases_.end() : leases_.find(live.lease);
      if (l != leases_.end() && l->second.uses_device && l->second.delivered) {
        used += absl::ToDoubleSeconds(now - l->second.granted);
      }
    }
    if (used < job.row.device_seconds_limit) continue;
    Finish(job, v1::JOB_STATE_FAILED,
           absl::StrFormat("used its device time limit of %g s (max_device_seconds in the tokens "
                           "file)",
                           job.row.device_seconds_limit),
           m);
  }
}

// ---------------------------------------------------------------------------------------------
// Views

v1::Job JobDriver::ToProto(const Job& job, int queue_position) {
  v1::Job p;
  const JobRow& r = job.row;
  p.set_id(r.id);
  p.set_owner(r.owner);
  p.set_name(r.name);
  p.set_state(r.state);
  p.set_priority(r.priority);
  p.set_target(r.spec.target().empty() ? "cpu" : r.spec.target());
  p.set_trials(r.spec.trials());
  p.set_submitted_unix_micros(Micros(r.submitted));
  p.set_started_unix_micros(Micros(r.started));
  p.set_finished_unix_micros(Micros(r.finished));
  p.set_failure_reason(r.failure_reason);
  p.set_cpu_seconds(r.cpu_seconds);
  p.set_device_seconds(r.device_seconds);
  p.set_records(r.records);
  p.set_estimated_latency_ms(r.estimated_latency_ms);
  // What runs (or waits) now, per task in flight or about to start.
  std::map<int, std::string> stage_text;
  if (!Ended(r.state)) {
    for (int ti : TasksToRun(job)) {
      const std::string kind(sched::StageKindName(job.tasks[ti].stage));
      auto live = job.live.find(ti);
      auto l = live == job.live.end() || live->second.lease.empty()
                   ? leases_.end()
                   : leases_.find(live->second.lease);
      if (l != leases_.end()) {
        auto a = agents_.find(l->second.agent_id);
        stage_text[ti] = absl::StrCat(kind, " (", l->second.delivered ? "running" : "dispatching",
                                      " on ", a != agents_.end() ? a->second->hostname : "?", ")");
      } else if (live == job.live.end() && !job.waiting.empty()) {
        stage_text[ti] = job.waiting;
      } else {
        stage_text[ti] = absl::StrCat(kind, " (queued)");
      }
    }
  }
  for (const TaskRow& t : job.tasks) {
    v1::TaskProgress* tp = p.add_tasks();
    tp->set_task_key(t.task_key);
    tp->set_trials_done(IsSimulated(job) ? static_cast<int>(t.round) : t.trials_done);
    tp->set_trials(IsSimulated(job) ? r.spec.simulated().rounds() : r.spec.trials());
    tp->set_best_gflops(t.best_cost > 0 && t.flops > 0 ? t.flops / t.best_cost / 1e9 : 0);
    tp->set_errors(t.errors);
    if (t.end == TaskEnd::kSkipped) {
      tp->set_stage(absl::StrCat("skipped: ", t.skip_reason));
    } else if (t.end == TaskEnd::kDone) {
      tp->set_stage("done");
    } else if (auto text = stage_text.find(t.index); text != stage_text.end()) {
      tp->set_stage(text->second);
    } else {
      tp->set_stage("pending");
    }
  }
  // Queue position among queued jobs: (priority desc, submission order), the scheduler's order.
  if (r.state == v1::JOB_STATE_QUEUED) {
    int pos = queue_position;
    if (pos == 0) {
      pos = 1;
      for (int64_t num : active_) {
        const Job& o = *jobs_.at(num);
        if (o.num != job.num && o.row.state == v1::JOB_STATE_QUEUED && QueuedAhead(o, job)) ++pos;
      }
    }
    p.set_queue_position(pos);
    // Predictable only when jobs run one at a time and every job ahead has known durations.
    if (options_.policy == "sequential") {
      double ahead = 0;
      bool known = true;
      for (int64_t num : active_) {
        const Job& o = *jobs_.at(num);
        if (o.num == job.num) continue;
        const bool before = o.row.state == v1::JOB_STATE_RUNNING || o.row.priority > r.priority ||
                            (o.row.priority == r.priority && o.num < job.num);
        if (!before) continue;
        if (!IsSimulated(o)) {
          known = false;
          break;
        }
        const v1::SimulatedWorkload& w = o.row.spec.simulated();
        const double per_round =
            w.propose_seconds() + w.build_seconds() + w.measure_seconds() + w.update_seconds();
        int64_t rounds_left = 0;
        for (const TaskRow& t : o.tasks) {
          if (t.end != TaskEnd::kDone) rounds_left += w.rounds() - t.round;
        }
        ahead += per_round * static_cast<double>(rounds_left);
      }
      if (known) {
        p.set_expected_start_unix_micros(absl::ToUnixMicros(Now() + absl::Seconds(ahead)));
      }
    }
  }
  return p;
}

std::vector<v1::ResourceUse> JobDriver::Resources() {
  std::vector<v1::ResourceUse> out;
  const std::vector<const Agent*> sorted = ByHost(agents_);
  for (const Agent* a : sorted) {
    v1::ResourceUse u;
    u.set_agent_id(a->id);
    u.set_hostname(a->hostname);
    u.set_alive(a->alive);
    // Slots the devices lend count while they are free (the scheduler's host capacity).
    const int capacity = a->cpu_slots + a->lent_slots;
    u.set_cpu_slots(capacity);
    u.set_cpu_slots_used(capacity - scheduler_->FreeCpuSlots(a->host));
    u.set_devices(static_cast<int>(a->device_ids.size()));
    int busy = 0;
    for (sched::DeviceId d : a->device_ids) busy += scheduler_->DeviceLeases(d) > 0 ? 1 : 0;
    u.set_devices_busy(busy);
    u.set_leases(static_cast<int>(a->leases.size()));
    u.set_flagged(a->flagged);
    out.push_back(std::move(u));
  }
  return out;
}

absl::StatusOr<JobDriver::Job*> JobDriver::FindVisible(const Principal& who,
                                                       const std::string& job_id) {
  if (who.role == Role::kAgent) {
    return absl::PermissionDeniedError("agent tokens cannot use the job API");
  }
  const int64_t num = JobNum(job_id);
  auto it = num == 0 ? jobs_.end() : jobs_.find(num);
  if (it == jobs_.end() || (!who.admin() && it->second->row.owner != who.user)) {
    return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  }
  return it->second.get();
}

// ---------------------------------------------------------------------------------------------
// User API

absl::StatusOr<v1::Job> JobDriver::Submit(const Principal& who,
                                          const v1::SubmitJobRequest& request) {
  if (who.role == Role::kAgent) {
    return absl::PermissionDeniedError("agent tokens cannot submit jobs");
  }
  LOOM_RETURN_IF_ERROR(ValidateSubmit(request, options_.measure_caps));
  if (who.limits.max_priority.has_value() && request.priority() > *who.limits.max_priority) {
    return absl::PermissionDeniedError(
        absl::StrCat("priority ", request.priority(), " is above your limit of ",
                     *who.limits.max_priority, " (max_priority in the tokens file)"));
  }
  if (request.onnx_model().size() > static_cast<size_t>(options_.max_model_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat("the model has ", request.onnx_model().size(),
                                                     " bytes; this daemon takes at "
                                                     "most ",
                                                     options_.max_model_bytes,
                                                     " (--max-model-bytes)"));
  }
  // Checked again at the commit: loading the model takes time, and others may submit meanwhile.
  auto over_quota = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    if (!who.limits.max_jobs.has_value()) return absl::OkStatus();
    int mine = 0;
    for (int64_t n : active_) mine += jobs_.at(n)->row.owner == who.user ? 1 : 0;
    if (mine < *who.limits.max_jobs) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrCat("you have ", mine,
                     " queued or running jobs, your limit (max_jobs in the "
                     "tokens file); wait for one to end or cancel one"));
  };
  int64_t num;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the daemon is shutting down");
    // A retried submit (same user, same request id) is answered with the job it made.
    if (const Job* earlier = JobOfRequest(who, request); earlier != nullptr) {
      LOOM_RETURN_IF_ERROR(SameSubmission(*earlier, request));
      return ToProto(*earlier);
    }
    LOOM_RETURN_IF_ERROR(over_quota());
    num = next_job_++;
  }
  const std::string id = JobIdOf(num);
  // Model loading and task extraction run outside the lock (they may take seconds).
  LOOM_ASSIGN_OR_RETURN(std::vector<TaskRow> tasks, ExtractTaskRows(request, id, options_));

  auto job = std::make_unique<Job>();
  job->num = num;
  JobRow& row = job->row;
  row.id = id;
  row.owner = who.user;
  row.spec = request;
  row.spec.clear_onnx_model();
  if (request.has_onnx_model()) row.spec.set_onnx_model("");  // keeps the oneof case
  row.name = !request.name().empty()    ? request.name()
             : request.has_zoo_model()  ? request.zoo_model()
             : request.has_onnx_model() ? "onnx-model"
                                        : "simulated";
  row.priority = request.priority();
  row.state = v1::JOB_STATE_QUEUED;
  row.device_seconds_limit = who.limits.max_device_seconds.value_or(0);
  {
    absl::BitGen gen;
    row.uid = absl::StrFormat("%s.%016x", id, absl::Uniform<uint64_t>(gen));
  }
  job->tasks = std::move(tasks);

  absl::MutexLock lock(&mu_);
  // The same request may have been submitted meanwhile (a retry while this one loaded its model).
  if (const Job* earlier = JobOfRequest(who, request); earlier != nullptr) {
    LOOM_RETURN_IF_ERROR(SameSubmission(*earlier, request));
    return ToProto(*earlier);
  }
  LOOM_RETURN_IF_ERROR(over_quota());
  row.submitted = Now();
  Mutation m;
  m.jobs.push_back(row);
  m.tasks = job->tasks;
  if (request.has_onnx_model()) m.models.push_back({id, request.onnx_model()});
  m.counters.push_back({"next_job", next_job_});
  Note(*job,
       absl::StrCat("submitted by ", who.user, ": ", job->tasks.size(), " tasks, target ",
                    TargetKind(request)),
       m);
  Commit(m);  // acknowledged only after this commit
  Job& ref = *job;
  CountJobState(v1::JOB_STATE_UNSPECIFIED, ref.row.state);
  jobs_[num] = std::move(job);
  if (!request.request_id().empty()) job_of_request_[{who.user, request.request_id()}] = num;
  active_.insert(num);
  pending_.insert(num);
  LogKv("job_submitted", {{"job", id},
                          {"owner", who.user},
                          {"name", ref.row.name},
                          {"tasks", absl::StrCat(ref.tasks.size())}});
  Pump();
  return ToProto(ref);
}

const JobDriver::Job* JobDriver::JobOfRequest(const Principal& who,
                                              const v1::SubmitJobRequest& request) {
  if (request.request_id().empty()) return nullptr;
  auto it = job_of_request_.find({who.user, request.request_id()});
  if (it == job_of_request_.end()) return nullptr;
  auto job = jobs_.find(it->second);
  return job == jobs_.end() ? nullptr : job->second.get();
}

absl::Status JobDriver::SameSubmission(const Job& earlier, const v1::SubmitJobRequest& request) {
  // The stored spec is the request without its model bytes (Submit); an uploaded model is compared
  // by its bytes in the state.
  v1::SubmitJobRequest spec = request;
  spec.clear_onnx_model();
  if (request.has_onnx_model()) spec.set_onnx_model("");
  bool same = google::protobuf::util::MessageDifferencer::Equals(spec, earlier.row.spec);
  if (same && request.has_onnx_model()) {
    absl::StatusOr<std::string> stored = state_->LoadModel(earlier.row.id);
    same = stored.ok() && *stored == request.onnx_model();
  }
  if (same) return absl::OkStatus();
  return absl::AlreadyExistsError(absl::StrCat("request_id '", request.request_id(),
                                               "' already submitted job ", earlier.row.id,
                                               " with a different request; use a new request id"));
}

absl::StatusOr<v1::ListJobsResponse> JobDriver::List(const Principal& who,
                                                     const v1::ListJobsRequest& request) {
  if (who.role == Role::kAgent) {
    return absl::PermissionDeniedError("agent tokens cannot use the job API");
  }
  if (request.all_users() && !who.admin()) {
    return absl::PermissionDeniedError("listing every user's jobs needs an admin token");
  }
  absl::MutexLock lock(&mu_);
  v1::ListJobsResponse out;
  for (const auto& [num, job] : jobs_) {
    if (!request.include_ended() && Ended(job->row.state)) continue;
    if (job->row.owner != who.user && !request.all_users()) continue;
    *out.add_jobs() = ToProto(*job);
  }
  for (v1::ResourceUse& u : Resources()) *out.add_resources() = std::move(u);
  return out;
}

absl::StatusOr<v1::Job> JobDriver::Get(const Principal& who, const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  LOOM_ASSIGN_OR_RETURN(Job * job, FindVisible(who, job_id));
  return ToProto(*job);
}

absl::StatusOr<v1::Job> JobDriver::Cancel(const Principal& who, const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  LOOM_ASSIGN_OR_RETURN(Job * job, FindVisible(who, job_id));
  if (Ended(job->row.state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ", v1::JobStateShortName(job->row.state)));
  }
  Mutation m;
  Finish(*job, v1::JOB_STATE_CANCELLED, absl::StrCat("cancelled by ", who.user), m);
  Commit(m);
  Pump();
  return ToProto(*job);
}

absl::StatusOr<v1::JobResult> JobDriver::Result(const Principal& who, const std::string& job_id) {
  v1::JobResult out;
  std::vector<TaskRow> tasks;
  std::string target_key;
  std::string record_key;  // the job's unique id in the records
  bool simulated = false;
  {
    absl::MutexLock lock(&mu_);
    LOOM_ASSIGN_OR_RETURN(Job * job, FindVisible(who, job_id));
    *out.mutable_job() = ToProto(*job);
    tasks = job->tasks;
    if (tasks.empty()) {
      auto loaded = state_->LoadTasks(job->row.id);
      if (loaded.ok()) tasks = *std::move(loaded);
    }
    target_key = job->row.target_key;
    record_key = job->row.RecordKey();
    simulated = IsSimulated(*job);
    if (job->row.spec.has_zoo_model()) out.set_zoo_model(job->row.spec.zoo_model());
    if (job->row.spec.has_onnx_model()) {
      auto model = state_->LoadModel(job->row.id);
      if (model.ok()) out.set_model_onnx(*std::move(model));
    }
  }
  if (!target_key.empty()) {
    for (const TaskRow& t : tasks) {
      if (t.end == TaskEnd::kSkipped) continue;
      LOOM_ASSIGN_OR_RETURN(std::vector<tune::Record> best,
                            records_->BestK(t.task_key, target_key, 1));
      if (best.empty()) continue;
      v1::BestConfig* b = out.add_best();
      b->set_task_key(t.task_key);
      b->set_template_name(best[0].template_name);
      b->set_target_key(best[0].target_key);
      b->set_config_index(best[0].config_index);
      b->set_config_json(best[0].config_json);
      b->set_median_cost(best[0].median_cost);
      b->set_gflops(simulated ? 0 : best[0].Gflops());
    }
  }
  std::ostringstream jsonl;
  LOOM_RETURN_IF_ERROR(records_->ExportJsonLines(jsonl, tune::RecordFilter{.job_id = record_key}));
  out.set_records_jsonl(jsonl.str());
  return out;
}

absl::StatusOr<std::vector<std::string>> JobDriver::Logs(const Principal& who,
                                                         const std::string& job_id, int tail) {
  {
    absl::MutexLock lock(&mu_);
    LOOM_RETURN_IF_ERROR(FindVisible(who, job_id).status());
  }
  if (tail < 0) return absl::InvalidArgumentError("tail must be >= 0");
  LOOM_ASSIGN_OR_RETURN(std::vector<LogLine> lines, state_->Logs(job_id, tail));
  std::vector<std::string> out;
  out.reserve(lines.size());
  for (const LogLine& l : lines) {
    out.push_back(absl::StrCat(
        absl::FormatTime("%Y-%m-%d %H:%M:%E3S", l.time, absl::LocalTimeZone()), "  ", l.text));
  }
  return out;
}

absl::StatusOr<JobChange> JobDriver::WaitForChange(const Principal& who, const std::string& job_id,
                                                   int64_t after_version, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  LOOM_ASSIGN_OR_RETURN(Job * job, FindVisible(who, job_id));
  auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || job->version > after_version;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  if (stopping_) return absl::UnavailableError("the daemon is shutting down");
  JobChange c;
  c.job = ToProto(*job);
  c.version = job->version;
  c.ended = Ended(job->row.state);
  for (const auto& [v, msg] : job->recent) {
    if (v > after_version && after_version > 0) c.messages.push_back(msg);
  }
  return c;
}

absl::StatusOr<v1::ServerStats> JobDriver::Stats(const Principal& who) {
  if (!who.admin()) return absl::PermissionDeniedError("server stats need an admin token");
  absl::ReleasableMutexLock lock(&mu_);
  v1::ServerStats s;
  for (const auto& [id, a] : agents_) {
    if (a->alive) {
      s.set_agents_alive(s.agents_alive() + 1);
    } else {
      s.set_agents_lost(s.agents_lost() + 1);
    }
  }
  s.set_jobs_total(static_cast<int64_t>(jobs_.size()));
  s.set_jobs_active(static_cast<int64_t>(active_.size()));
  s.set_stages_dispatched(static_cast<int64_t>(dispatch_ms_.size()));
  s.set_stages_requeued(requeued_);
  int flagged = 0;
  for (const auto& [id, a] : agents_) flagged += a->flagged ? 1 : 0;
  s.set_agents_flagged(flagged);
  s.set_reports_refused(reports_refused_);
  s.set_ready_stages(static_cast<int64_t>(scheduler_->num_ready()));
  s.set_running_stages(static_cast<int64_t>(scheduler_->num_running()));
  for (v1::ResourceUse& u : Resources()) *s.add_resources() = std::move(u);
  s.set_policy(options_.policy);
  s.set_jobs_queued(jobs_by_state_[v1::JOB_STATE_QUEUED]);
  s.set_jobs_running(jobs_by_state_[v1::JOB_STATE_RUNNING]);
  for (const sched::Scheduler::ReadyQueue& q : scheduler_->ReadyQueues()) {
    v1::QueueStats* out = s.add_queues();
    out->set_cpu_slots(q.cpu_slots);
    out->set_device_kind(q.device_kind);
    out->set_device(q.device);
    out->set_ready(q.ready);
  }
  const absl::Time now = Now();
  const std::vector<const Agent*> sorted = ByHost(agents_);
  for (const Agent* a : sorted) {
    for (size_t i = 0; i < a->device_ids.size(); ++i) {
      const sched::DeviceId d = a->device_ids[i];
      const sched::Scheduler::DeviceUsage u = scheduler_->Usage(d, now);
      v1::DeviceStats* out = s.add_devices();
      out->set_agent_id(a->id);
      out->set_hostname(a->hostname);
      out->set_name(a->devices[i].name());
      out->set_target_key(SchedDeviceKind(a->devices[i]));
      out->set_alive(a->alive);
      out->set_leases(scheduler_->DeviceLeases(d));
      const double busy = absl::ToDoubleSeconds(u.busy);
      const double age = absl::ToDoubleSeconds(now - u.since);
      out->set_busy_seconds(busy);
      out->set_utilization(age > 0 ? std::clamp(busy / age, 0.0, 1.0) : 0.0);
    }
  }
  s.set_grants(scheduler_->stats().grants);
  s.set_grants_per_second(scheduler_->GrantRate(now, absl::Minutes(1)));
  if (scheduler_->started() != absl::InfinitePast()) {
    s.set_uptime_seconds(absl::ToDoubleSeconds(now - scheduler_->started()));
  }
  // The percentiles are selected from copies after the lock is released: the latencies of every
  // stage dispatched, and the scheduler waits for no reader of them.
  std::vector<double> dispatch = dispatch_ms_, queue_wait = queue_wait_ms_;
  lock.Release();
  s.set_dispatch_p50_ms(Percentile(dispatch, 0.5));
  s.set_dispatch_p99_ms(Percentile(std::move(dispatch), 0.99));
  s.set_queue_wait_p50_ms(Percentile(queue_wait, 0.5));
  s.set_queue_wait_p99_ms(Percentile(std::move(queue_wait), 0.99));
  return s;
}

JobDriver::ProgressSource JobDriver::ProgressSourceLocked(const Job& job) {
  ProgressSource src;
  ProgressInput& in = src.input;
  const JobRow& r = job.row;
  const bool sim = IsSimulated(job);
  in.started = r.started == absl::UnixEpoch() ? absl::InfinitePast() : r.started;
  in.ended = Ended(r.state);
  in.now = Now();
  for (const TaskRow& t : job.tasks) {
    ProgressTask& p = in.tasks.emplace_back();
    p.flops = t.flops;
    p.count = t.count;
    // As ToProto shows them: a simulated job's trials are its rounds.
    p.trials_done = sim ? static_cast<int>(t.round) : t.trials_done;
    p.trials = sim ? r.spec.simulated().rounds() : r.spec.trials();
    p.skipped = t.end == TaskEnd::kSkipped;
    p.ended = t.end != TaskEnd::kNone;
    // A job not prepared yet has no target key and no records.
    src.task_keys.push_back(r.records > 0 && !p.skipped && !r.target_key.empty() ? t.task_key : "");
  }
  src.target_key = r.target_key;
  src.record_key = r.RecordKey();
  src.records = r.records;
  return src;
}

// ---------------------------------------------------------------------------------------------
// Agent API

namespace {

// Agent calls need an agent token, or a daemon without tokens (nobody is authenticated then).
absl::Status CheckAgentRole(const Principal& who, absl::string_view call) {
  if (who.role == Role::kAgent || who.anonymous) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat(call, " needs an agent token (role agent in the tokens file)"));
}

}  // namespace

absl::StatusOr<JobDriver::Agent*> JobDriver::FindAgent(const Principal& who,
                                                       const std::string& agent_id,
                                                       const std::string* session) {
  if (who.anonymous) {
    auto it = agents_.find(agent_id);
    if (it == agents_.end() || !it->second->alive) {
      return absl::NotFoundError(
          absl::StrCat("unknown or lost agent '", agent_id.substr(0, 64), "': register again"));
    }
    if (session != nullptr && !SameSecret(*session, it->second->session)) {
      ++reports_refused_;
      LogKv("agent_session_refused", {{"claimed", agent_id.substr(0, 64)}});
      return absl::PermissionDeniedError(
          absl::StrCat("agent id '", agent_id.substr(0, 64),
                       "' is not this caller's registration (its session secret does not match)"));
    }
    return it->second.get();
  }
  // The credential names the agent; an id in the request can only confirm it.
  if (!agent_id.empty()) {
    auto other = agents_.find(agent_id);
    if (other != agents_.end() && other->second->identity != who.user) {
      ++reports_refused_;
      LogKv("agent_id_refused", {{"identity", who.user}, {"claimed", agent_id}});
      return absl::PermissionDeniedError(absl::StrCat("agent id '", agent_id.substr(0, 64),
                                                      "' belongs to another agent's credential"));
    }
  }
  auto bound = agent_of_identity_.find(who.user);
  auto it = bound == agent_of_identity_.end() ? agents_.end() : agents_.find(bound->second);
  if (it == agents_.end() || !it->second->alive || (!agent_id.empty() && agent_id != it->first)) {
    return absl::NotFoundError(
        absl::StrCat("agent '", who.user, "' is not registered (or was lost): register again"));
  }
  return it->second.get();
}

absl::StatusOr<v1::RegisterResponse> JobDriver::Register(const Principal& who,
                                                         const v1::RegisterRequest& request) {
  LOOM_RETURN_IF_ERROR(CheckAgentRole(who, "registering an agent"));
  if (request.version() != v1::kLoomVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "agent version '", request.version().substr(0, 32), "' is not this daemon's ('",
        v1::kLoomVersion, "'): run the same Loom release on the daemon and every agent"));
  }
  if (request.cpu_slots() < 0 || request.cpu_slots() > 4096) {
    return absl::InvalidArgumentError("cpu_slots must be in [0, 4096]");
  }
  if (request.cpu_slots() == 0 && request.devices().empty()) {
    return absl::InvalidArgumentError("an agent must offer CPU slots or a device");
  }
  if (request.devices_size() > 256) return absl::InvalidArgumentError("too many devices");
  if (request.hostname().size() > 256) return absl::InvalidArgumentError("hostname too long");
  for (const v1::DeviceInfo& d : request.devices()) {
    if (d.name().empty() || d.name().size() > 64 || (d.kind() != "cpu" && d.kind() != "cuda")) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", d.name().substr(0, 64), "': needs a name and kind cpu or cuda"));
    }
    if (d.lends_cpu_slots() < 0 || d.lends_cpu_slots() > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", d.name(), "': lends_cpu_slots must be in [0, 4096], got ",
                       d.lends_cpu_slots()));
    }
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the daemon is shutting down");
  const std::string identity = who.anonymous ? std::string() : who.user;
  if (!identity.empty()) {
    auto flagged = flagged_.find(identity);
    if (flagged != flagged_.end()) {
      return absl::PermissionDeniedError(
          absl::StrCat("agent '", identity, "' is flagged (", flagged->second,
                       "); an admin must investigate the host and issue it a new credential"));
    }
    auto bound = agent_of_identity_.find(identity);
    if (bound != agent_of_identity_.end()) {
      auto held = agents_.find(bound->second);
      if (held != agents_.end() && held->second->alive) {
        return absl::AlreadyExistsError(absl::StrCat(
            "agent '", identity, "' is already registered as ", held->first, " from host '",
            held->second->hostname,
            "' and alive: one agent per credential (this one is refused until that one stops "
            "heartbeating)"));
      }
    }
  }
  auto agent = std::make_unique<Agent>();
  agent->id = absl::StrCat("a", epoch_, ".", next_agent_++);
  agent->identity = identity;
  agent->hostname = request.hostname().empty() ? agent->id : request.hostname();
  agent->cpu_slots = request.cpu_slots();
  LOOM_ASSIGN_OR_RETURN(agent->host,
                        scheduler_->AddHost({.name = absl::StrCat(agent->hostname, "/", agent->id),
                                             .cpu_slots = request.cpu_slots()}));
  std::vector<std::string> described;
  for (const v1::DeviceInfo& d : request.devices()) {
    // The scheduler's device kind is the target key, so a job's measurements only go to devices
    // that measure what its records are keyed by (one GPU model, one CPU ISA and model), never to
    // another GPU of a mixed fleet that would refuse them.
    LOOM_ASSIGN_OR_RETURN(sched::DeviceId id,
                          scheduler_->AddDevice({.name = absl::StrCat(agent->id, "/", d.name()),
                                                 .kind = SchedDeviceKind(d),
                                                 .host = agent->host,
                                                 .shares_cpu_slots = d.lends_cpu_slots()},
                                                Now()));
    agent->lent_slots += d.lends_cpu_slots();
    agent->devices.push_back(d);
    agent->device_ids.push_back(id);
    device_agent_[id] = agent->id;
    described.push_back(absl::StrCat(d.name(), "=", SchedDeviceKind(d)));
  }
  agent->last_seen = Now();
  agent->session = NewSessionSecret();
  v1::RegisterResponse r;
  r.set_agent_id(agent->id);
  r.set_session(agent->session);
  const int64_t timeout_ms = absl::ToInt64Milliseconds(options_.heartbeat_timeout);
  r.set_lease_timeout_ms(static_cast<int32_t>(timeout_ms));
  r.set_heartbeat_interval_ms(static_cast<int32_t>(std::max<int64_t>(50, timeout_ms / 4)));
  LogKv("agent_registered", {{"agent", agent->id},
                             {"identity", identity.empty() ? "(unauthenticated)" : identity},
                             {"host", agent->hostname},
                             {"cpu_slots", absl::StrCat(agent->cpu_slots)},
                             {"devices", absl::StrJoin(described, ",")},
                             {"version", request.version()}});
  if (!identity.empty()) agent_of_identity_[identity] = agent->id;
  agents_[agent->id] = std::move(agent);
  // New resources: jobs waiting for an agent may start.
  for (int64_t num : active_) {
    const Job& j = *jobs_.at(num);
    if (j.live.empty() || !j.waiting.empty()) pending_.insert(num);
  }
  Pump();
  return r;
}

absl::StatusOr<v1::HeartbeatResponse> JobDriver::Heartbeat(const Principal& who,
                                                           const v1::HeartbeatRequest& request) {
  LOOM_RETURN_IF_ERROR(CheckAgentRole(who, "heartbeats"));
  absl::MutexLock lock(&mu_);
  v1::HeartbeatResponse r;
  absl::StatusOr<Agent*> found = FindAgent(who, request.agent_id(), &request.session());
  if (absl::IsPermissionDenied(found.status())) return found.status();
  if (!found.ok()) {
    r.set_reregister(true);
    for (const std::string& l : request.running_lease_ids()) r.add_cancelled_lease_ids(l);
    return r;
  }
  Agent& a = **found;
  LOOM_RETURN_IF_ERROR(CheckBuildCacheCounters(request, a.build_cache_hits, a.build_cache_misses));
  a.build_cache_hits = request.build_cache_hits();
  a.build_cache_misses = request.build_cache_misses();
  a.last_seen = Now();
  view_stamp_.fetch_add(1, std::memory_order_relaxed);
  for (const std::string& l : request.running_lease_ids()) {
    if (!a.leases.contains(l)) r.add_cancelled_lease_ids(l);
  }
  return r;
}

absl::StatusOr<v1::DeregisterResponse> JobDriver::Deregister(const Principal& who,
                                                             const v1::DeregisterRequest& request) {
  LOOM_RETURN_IF_ERROR(CheckAgentRole(who, "deregistering an agent"));
  constexpr size_t kMaxReason = 256;
  if (request.reason().size() > kMaxReason) {
    return absl::InvalidArgumentError(absl::StrCat("deregister reason of ", request.reason().size(),
                                                   " bytes (at most ", kMaxReason, ")"));
  }
  for (char c : request.reason()) {
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("deregister reason holds a control character");
    }
  }
  absl::MutexLock lock(&mu_);
  // FindAgent refuses another credential's agent id, or without tokens a caller that does not
  // show the registration's secret (kPermissionDenied), so only the agent itself can take it out.
  LOOM_ASSIGN_OR_RETURN(Agent * a, FindAgent(who, request.agent_id(), &request.session()));
  const int held = static_cast<int>(a->leases.size());
  LogKv("agent_deregistered", {{"agent", a->id},
                               {"host", a->hostname},
                               {"reason", request.reason()},
                               {"leases", absl::StrCat(held)}});
  Mutation m;
  DropAgent(*a,
            absl::StrCat("agent ", a->id, " (", a->hostname, ") stopped",
                         request.reason().empty() ? "" : absl::StrCat(": ", request.reason())),
            m);
  Commit(m);
  Pump();
  v1::DeregisterResponse r;
  r.set_stages_requeued(held);
  return r;
}

absl::StatusOr<v1::AcquireStagesResponse> JobDriver::Acquire(
    const Principal& who, const v1::AcquireStagesRequest& request) {
  LOOM_RETURN_IF_ERROR(CheckAgentRole(who, "acquiring stages"));
  if (request.wait_ms() < 0) return absl::InvalidArgumentError("wait_ms must be >= 0");
  const absl::Duration wait =
      std::min(absl::Milliseconds(request.wait_ms()), options_.max_acquire_wait);
  absl::MutexLock lock(&mu_);
  // Without tokens only the registration's secret takes the agent's stages.
  LOOM_ASSIGN_OR_RETURN(Agent * a, FindAgent(who, request.agent_id(), &request.session()));
  if (a->polls >= options_.max_polls_per_agent) {
    return absl::ResourceExhaustedError(
        absl::StrCat("agent ", a->id, " already has ", a->polls, " AcquireStages calls waiting"));
  }
  a->last_seen = Now();
  // `a` stays valid: agents are never erased, only marked lost.
  ++a->polls;
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !a->alive || !a->outbox.empty() || !a->revoked.empty();
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
  --a->polls;
  v1::AcquireStagesResponse r;
  const absl::Time now = Now();
  // No last_seen refresh here: a poll that returns proves nothing about its caller (a killed
  // agent's poll still returns, with the stages granted to it meanwhile). Liveness comes from the
  // agent's own calls: its heartbeats, reports and the start of each poll.
  for (std::string& id : a->revoked) r.add_cancelled_lease_ids(std::move(id));
  a->revoked.clear();
  while (!a->outbox.empty()) {
    v1::StageRequest s = std::move(a->outbox.front());
    a->outbox.pop_front();
    auto l = leases_.find(s.lease_id());
    if (l != leases_.end()) {
      l->second.delivered = true;
      dispatch_ms_.push_back(absl::ToDoubleMilliseconds(now - l->second.granted));
    }
    *r.add_stages() = std::move(s);
  }
  return r;
}

absl::StatusOr<v1::ReportStageResponse> JobDriver::Report(const Principal& who,
                                                          const v1::ReportStageRequest& request) {
  LOOM_RETURN_IF_ERROR(CheckAgentRole(who, "reporting stages"));
  absl::MutexLock lock(&mu_);
  // Without tokens a report must show the registration's secret: refused (and the agent not
  // flagged, since the caller may be anyone) when it does not.
  absl::StatusOr<Agent*> found = FindAgent(who, request.agent_id(), &request.session());
  if (!found.ok()) {
    // A flagged agent is no longer alive: its reports are refused, and say why.
    if (!who.anonymous && flagged_.contains(who.user)) {
      ++reports_refused_;
      return absl::PermissionDeniedError(
          absl::StrCat("agent '", who.user, "' is flagged: its reports are refused"));
    }
    // A lost agent's late result is dropped (its stage was requeued); its heartbeat tells it to
    // register again.
    if (absl::IsNotFound(found.status())) {
      v1::ReportStageResponse dropped;
      dropped.set_accepted(false);
      return dropped;
    }
    return found.status();
  }
  Agent& agent = **found;
  agent.last_seen = Now();
  v1::ReportStageResponse r;
  const v1::StageResult& result = request.result();
  auto lit = leases_.find(result.lease_id());
  if (lit == leases_.end()) {
    r.set_accepted(false);  // expired or revoked (the stage runs elsewhere now)
    return r;
  }
  Mutation m;
  if (lit->second.agent_id != agent.id) {
    auto holder = agents_.find(lit->second.agent_id);
    if (!agent.identity.empty() && holder != agents_.end() &&
        holder->second->identity == agent.identity) {
      r.set_accepted(false);  // an earlier registration of the same credential: a stale report
      return r;
    }
    // A result for a stage another agent holds: a forgery, whatever it contains.
    const std::string reason =
        absl::StrCat("reported lease ", result.lease_id().substr(0, 64), " of another agent");
    FlagAgent(agent, reason, m);
    Commit(m);
    Pump();
    return absl::PermissionDeniedError(absl::StrCat("refused: ", reason));
  }
  const Lease lease = lit->second;
  auto jit = jobs_.find(lease.job);
  if (jit == jobs_.end()) {
    r.set_accepted(false);
    return r;
  }
  Job& job = *jit->second;
  const absl::Time now = Now();
  bool dropped = false;
  if (!result.error().empty() && result.session_refused()) {
    // The session state did not restore on this agent: the round in flight was not proposed by
    // the session's tuner. Dropped (the session proposes again) rather than retried.
    dropped = DropRefusedRound(job, lease, result.error(), m);
  }
  if (!result.error().empty() && !dropped) {
    Note(job,
         absl::StrCat(tune::WireKindName(lease.kind), " stage of task ", lease.task,
                      " failed on agent ", lease.agent_id, ": ", result.error().substr(0, 2000)),
         m);
    scheduler_->Fail(lease.sched_lease, now, result.error().substr(0, 2000)).IgnoreError();
    EndLease(lease.id, m);
    HandleEvents(m);
    Commit(m);
    Pump();
    r.set_accepted(true);
    return r;
  }
  absl::Status applied = dropped ? absl::OkStatus() : ApplyResult(job, lease, result, m);
  if (!applied.ok()) {
    // A malformed result counts as a failed try of the stage; a forged one also flags the agent
    // (which requeues the stage elsewhere). Nothing of it is kept.
    m.tasks.clear();
    m.jobs.clear();
    const bool forged = absl::IsPermissionDenied(applied);
    Note(job,
         absl::StrCat(forged ? "refused forged result from agent " : "bad result from agent ",
                      lease.agent_id, " (", agent.hostname, "): ", applied.message()),
         m);
    if (forged) {
      FlagAgent(agent, std::string(applied.message()), m);
    } else {
      scheduler_->Fail(lease.sched_lease, now, std::string(applied.message())).IgnoreError();
      EndLease(lease.id, m);
      HandleEvents(m);
    }
    Commit(m);
    Pump();
    return absl::Status(applied.code(), absl::StrCat(forged ? "refused: " : "", applied.message()));
  }
  EndLease(lease.id, m);
  std::optional<absl::Duration> actual;
  if (result.timing().end_unix_micros() > result.timing().start_unix_micros() &&
      result.timing().start_unix_micros() > 0) {
    actual =
        absl::Microseconds(result.timing().end_unix_micros() - result.timing().start_unix_micros());
  }
  scheduler_->Complete(lease.sched_lease, now, actual).IgnoreError();
  if (auto live = job.live.find(lease.task); live != job.live.end()) {
    stage_job_.erase(live->second.stage);
    job.live.erase(live);
  }
  pending_.insert(job.num);
  EnforceDeviceLimits(m);
  // One transaction for the result and what it lets start (group commit: half the commits per
  // stage of committing each apart), durable before the agent hears "accepted".
  Pump(m);
  r.set_accepted(true);
  return r;
}

}  // namespace loom::service
