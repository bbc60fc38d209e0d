#include "loom/engine/engine.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/records/record_store.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/testing/fake_builder.h"
#include "loom/toolchain/testing/fake_measurer.h"
#include "loom/tune/tune_job.h"

namespace loom::engine {
namespace {

using sched::StageKind;
using ::testing::HasSubstr;

constexpr int kDeviceCore = 1;

graph::Task ConvTask(int64_t channels, int64_t size) {
  graph::Workload w;
  w.kind = graph::TaskKind::kConv2d;
  w.n = 1, w.c = channels, w.h = size, w.w = size, w.k = channels, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  graph::Task task;
  task.workload = w;
  task.key = graph::WorkloadKey(w);
  task.hash = graph::StableHash(task.key);
  task.count = 1;
  task.flops = graph::WorkloadFlops(w);
  return task;
}

std::vector<int> CurrentCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof(set), &set);
  std::vector<int> cpus;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) cpus.push_back(i);
  }
  return cpus;
}

struct Interval {
  absl::Time start;
  absl::Time end;
};

// What the fakes saw: every measurement's interval, and samples of the CPU set the build threads
// were allowed to run on.
struct Log {
  std::mutex mu;
  std::vector<Interval> measures;
  struct Sample {
    absl::Time time;
    std::vector<int> cpus;
  };
  std::vector<Sample> build_samples;
  int measurers_made = 0;
};

// FakeBuilder that takes `duration`, sampling its thread's CPU set every few ms.
class SleepBuilder final : public tune::Builder {
 public:
  SleepBuilder(absl::Duration duration, Log* log) : duration_(duration), log_(log) {}
  std::vector<tune::BuildResult> Build(const ops::Template& tmpl,
                                       const std::vector<ops::Config>& configs) override {
    const absl::Time end = absl::Now() + duration_;
    while (true) {
      // Time first: a sample taken after a measurement started sees the affinity set by then.
      const absl::Time now = absl::Now();
      std::vector<int> cpus = CurrentCpus();
      {
        std::lock_guard<std::mutex> lock(log_->mu);
        log_->build_samples.push_back({now, std::move(cpus)});
      }
      if (now >= end) break;
      absl::SleepFor(std::min(absl::Milliseconds(3), end - now));
    }
    return fake_.Build(tmpl, configs);
  }
  tune::BuildResult BuildSource(const ops::KernelSource& s, const ops::Config& c) override {
    return fake_.BuildSource(s, c);
  }
  const std::string& cache_dir() const override { return fake_.cache_dir(); }

 private:
  absl::Duration duration_;
  Log* log_;
  tune::FakeBuilder fake_;
};

// FakeMeasurer that takes `duration` per call and logs its interval. Unlike the real measurer it
// does not serialize calls, so overlapping measurements show up in the log.
class SleepMeasurer final : public tune::Measurer {
 public:
  SleepMeasurer(absl::Duration duration, Log* log) : duration_(duration), log_(log) {}
  std::vector<tune::MeasureResult> Measure(const tune::MeasureTask& task,
                                           const std::vector<tune::BuildResult>& built) override {
    const absl::Time start = absl::Now();
    absl::SleepFor(duration_);
    auto results = fake_.Measure(task, built);
    std::lock_guard<std::mutex> lock(log_->mu);
    log_->measures.push_back({start, absl::Now()});
    return results;
  }
  absl::StatusOr<tune::DeviceInfo> Probe() override { return fake_.Probe(); }

 private:
  absl::Duration duration_;
  Log* log_;
  tune::FakeMeasurer fake_;
};

EngineOptions FakeOptions(const std::string& policy, Log* log,
                          absl::Duration build = absl::Milliseconds(25),
                          absl::Duration measure = absl::Milliseconds(25)) {
  EngineOptions o;
  o.policy = policy;
  o.layout = {.device_cores = {kDeviceCore}, .cpu_cores = {0}, .cpu_slots = 1};
  o.make_builder =
      [build, log](const tune::BuildOptions&) -> absl::StatusOr<std::unique_ptr<tune::Builder>> {
    return std::make_unique<SleepBuilder>(build, log);
  };
  o.make_measurer =
      [measure,
       log](const std::vector<int>& cores) -> absl::StatusOr<std::unique_ptr<tune::Measurer>> {
    std::lock_guard<std::mutex> lock(log->mu);
    ++log->measurers_made;
    return std::make_unique<SleepMeasurer>(measure, log);
  };
  return o;
}

std::vector<EngineJob> TwoJobs(int64_t trials = 8, int batch = 4, bool measure_default = false) {
  std::vector<EngineJob> jobs;
  for (int j = 0; j < 2; ++j) {
    EngineJob job;
    job.name = absl::StrCat("model", j);
    job.tasks = {ConvTask(8, 8), ConvTask(16, 6)};
    job.options.trials = trials;
    job.options.batch_size = batch;
    job.options.tuner.kind = "random";
    job.options.tuner.seed = static_cast<uint64_t>(j + 1);
    job.options.job_id = absl::StrCat("job", j);
    job.options.transfer = false;
    job.target = ops::HostCpuTarget();
    job.measure_default = measure_default;
    jobs.push_back(std::move(job));
  }
  return jobs;
}

bool Overlap(absl::Time a0, absl::Time a1, absl::Time b0, absl::Time b1) {
  return a0 < b1 && b0 < a1;
}

// The device never holds two measurements, and no CPU stage is on the device core during one.
void ExpectCleanMeasurements(const EngineResult& r, const Log& log) {
  std::vector<Interval> measures = log.measures;
  std::sort(measures.begin(), measures.end(),
            [](const Interval& a, const Interval& b) { return a.start < b.start; });
  for (size_t i = 1; i < measures.size(); ++i) {
    EXPECT_GE(measures[i].start, measures[i - 1].end) << "two measurements at once";
  }
  for (const StageTrace& m : r.traces) {
    if (m.kind != StageKind::kMeasure) continue;
    EXPECT_EQ(m.resource, "device:cpu:1");
    for (const StageTrace& c : r.traces) {
      if (c.kind == StageKind::kMeasure) continue;
      ASSERT_FALSE(c.spans.empty()) << "CPU stages are pinned under exclusive policies";
      for (const CoreSpan& s : c.spans) {
        if (std::count(s.cores.begin(), s.cores.end(), kDeviceCore) == 0) continue;
        EXPECT_FALSE(Overlap(s.from, s.to, m.start, m.end))
            << "a CPU stage held the device core during a measurement";
      }
    }
  }
  // What the build threads were really allowed to run on while a measurement ran.
  for (const Log::Sample& s : log.build_samples) {
    for (const Interval& m : measures) {
      if (s.time <= m.start || s.time >= m.end) continue;
      EXPECT_EQ(std::count(s.cpus.begin(), s.cpus.end(), kDeviceCore), 0)
          << "a build thread could run on the device core during a measurement";
    }
  }
}

bool TwoCoresAvailable() {
  std::vector<int> cpus = CurrentCpus();
  return std::count(cpus.begin(), cpus.end(), 0) && std::count(cpus.begin(), cpus.end(), 1);
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!TwoCoresAvailable()) GTEST_SKIP() << "needs cores 0 and 1";
    auto store = tune::OpenSqliteRecordStore(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  int64_t Records(const std::string& job_id) {
    auto n = store_->Count({.job_id = job_id});
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : -1;
  }
  // The budget and spread tests' run: `jobs` on an interleaved engine over the sleeping fakes
  // (each build `build` long, each measurement `measure`), which log to log_, into store_.
  absl::StatusOr<EngineResult> RunInterleaved(const std::vector<EngineJob>& jobs,
                                              absl::Duration build, absl::Duration measure) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                          Engine::Create(FakeOptions("interleaved", &log_, build, measure)));
    return engine->Run(jobs, store_.get());
  }
  // One job of TwoJobs without a per-task trial cap, for a budget to end.
  static std::vector<EngineJob> OneUncappedJob() { return {TwoJobs(tune::kNoTrialCap, 4)[0]}; }

  std::unique_ptr<tune::RecordStore> store_;
  Log log_;
};

TEST_F(EngineTest, BudgetedJobsShareTheirTotalAmongTheirTasks) {
  std::vector<EngineJob> jobs = TwoJobs(tune::kNoTrialCap, 4);
  // Job 0: a warm-up round per task, then three more rounds where the scheduler picks.
  jobs[0].budget.total_trials = 20;
  // Job 1: the per-task cap ends it before its total, each task's baseline included.
  jobs[1].options.trials = 8;
  jobs[1].budget.total_trials = 1000;
  jobs[1].measure_default = true;
  auto r = RunInterleaved(jobs, absl::Milliseconds(2), absl::Milliseconds(2));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->jobs.size(), 2u);
  for (const JobResult& j : r->jobs) {
    EXPECT_TRUE(j.status.ok()) << j.status;
    ASSERT_EQ(j.outcomes.size(), 2u);
  }
  const JobResult& j0 = r->jobs[0];
  EXPECT_EQ(j0.outcomes[0].trials + j0.outcomes[1].trials, 20);
  EXPECT_GE(j0.outcomes[0].trials, 4);
  EXPECT_GE(j0.outcomes[1].trials, 4);
  EXPECT_EQ(j0.records, 20);
  EXPECT_EQ(Records(j0.job_id), 20);
  for (const tune::TaskOutcome& o : r->jobs[1].outcomes) {
    EXPECT_EQ(o.trials, 8);
    EXPECT_TRUE(std::isfinite(o.default_cost));
  }
  ExpectCleanMeasurements(*r, log_);
}

TEST_F(EngineTest, ABudgetedJobEndsAfterItsTimeBudget) {
  std::vector<EngineJob> jobs = OneUncappedJob();
  jobs[0].budget.time = absl::Milliseconds(300);  // no trial cap: only the budget ends it
  auto r = RunInterleaved(jobs, absl::Milliseconds(5), absl::Milliseconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  const JobResult& j = r->jobs[0];
  EXPECT_TRUE(j.status.ok()) << j.status;
  EXPECT_GE(j.records, 4);  // the first round starts at once
  // A round here takes ~20 ms; the bound leaves room for a loaded machine.
  EXPECT_LT(j.end - r->start, absl::Milliseconds(300) + absl::Seconds(5));
}

TEST_F(EngineTest, InterleavedNeverOverlapsMeasurementsAndFinishesEveryRound) {
  Log log;
  auto engine = Engine::Create(FakeOptions("interleaved", &log));
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<EngineProgress> reports;
  auto r = (*engine)->Run(TwoJobs(), store_.get(),
                          [&](const EngineProgress& p) { reports.push_back(p); });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->jobs.size(), 2u);
  for (const JobResult& j : r->jobs) {
    EXPECT_TRUE(j.status.ok()) << j.status;
    ASSERT_EQ(j.outcomes.size(), 2u);
    for (const auto& o : j.outcomes) {
      EXPECT_EQ(o.trials, 8);
      EXPECT_GT(o.best_gflops, 0);
    }
    EXPECT_EQ(j.records, 16);
    EXPECT_EQ(Records(j.job_id), 16);
  }
  // 2 jobs x 2 tasks x 2 rounds x 4 stages.
  EXPECT_EQ(r->traces.size(), 32u);
  EXPECT_EQ(log.measures.size(), 8u);
  EXPECT_EQ(log.measurers_made, 1);
  ExpectCleanMeasurements(*r, log);
  // Stage timings reached the store: 4 rounds x 4 stages per job.
  auto timings = store_->StageTimings("job0");
  ASSERT_TRUE(timings.ok()) << timings.status();
  EXPECT_EQ(timings->size(), 16u);
  // Interleaving: some CPU stage of one job ran while the other job measured.
  bool interleaved = false;
  for (const StageTrace& m : r->traces) {
    for (const StageTrace& c : r->traces) {
      interleaved |= m.kind == StageKind::kMeasure && c.kind == StageKind::kBuild &&
                     m.job != c.job && Overlap(m.start, m.end, c.start, c.end);
    }
  }
  EXPECT_TRUE(interleaved);
  ASSERT_FALSE(reports.empty());
  EXPECT_TRUE(reports.back().final);
  ASSERT_EQ(reports.back().jobs.size(), 2u);
  EXPECT_EQ(reports.back().jobs[0].state, "done");
  EXPECT_EQ(reports.back().jobs[0].task_index, 2);
  ASSERT_EQ(reports.back().resources.size(), 2u);
  EXPECT_EQ(reports.back().resources[1].name, "device:cpu:1");
  EXPECT_GT(reports.back().resources[1].busy_fraction, 0.2);
  EXPECT_GT(r->device_busy_seconds, 8 * 0.025 * 0.9);
}

// A store that refuses one job's records: that job fails with the store's error, the other
// finishes.
class RefusingStore final : public tune::RecordStore {
 public:
  RefusingStore(tune::RecordStore* inner, std::string refused_job)
      : inner_(inner), refused_(std::move(refused_job)) {}
  absl::Status Append(const std::vector<tune::Record>& records) override {
    for (const auto& r : records) {
      if (r.job_id == refused_) return absl::UnavailableError("disk full (test)");
    }
    return inner_->Append(records);
  }
  absl::StatusOr<std::vector<tune::Record>> BestK(const std::string& task,
                                                  const std::string& target, int k) override {
    return inner_->BestK(task, target, k);
  }
  absl::StatusOr<std::vector<tune::Record>> ForTask(
      const std::string& task, const std::string& target,
      const std::optional<std::string>& job) override {
    return inner_->ForTask(task, target, job);
  }
  absl::StatusOr<std::vector<tune::Record>> Similar(const graph::Workload& w,
                                                    const std::string& target, int limit) override {
    return inner_->Similar(w, target, limit);
  }
  absl::Status AppendStageTimings(const std::string& job, const std::string& task, int64_t round,
                                  const std::vector<tune::StageTiming>& timings) override {
    return inner_->AppendStageTimings(job, task, round, timings);
  }
  absl::StatusOr<std::vector<tune::StageTimingRecord>> StageTimings(
      const std::string& job) override {
    return inner_->StageTimings(job);
  }
  absl::Status ExportJsonLines(std::ostream& out, const tune::RecordFilter& f) override {
    return inner_->ExportJsonLines(out, f);
  }
  absl::StatusOr<int64_t> ImportJsonLines(std::istream& in) override {
    return inner_->ImportJsonLines(in);
  }
  absl::StatusOr<int64_t> Count(const tune::RecordFilter& f) override { return inner_->Count(f); }
  absl::StatusOr<std::vector<tune::TaskSummary>> Summary(const std::string& target) override {
    return inner_->Summary(target);
  }

 private:
  tune::RecordStore* inner_;
  std::string refused_;
};

TEST_F(EngineTest, AJobWhoseRecordsCannotBeStoredFailsAloneAndTheCallerKeepsItsCpus) {
  Log log;
  const std::vector<int> cpus_before = CurrentCpus();
  auto engine = Engine::Create(FakeOptions("interleaved", &log));
  ASSERT_TRUE(engine.ok()) << engine.status();
  RefusingStore store(store_.get(), "job1");
  auto r = (*engine)->Run(TwoJobs(), &store);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->jobs[0].status.ok()) << r->jobs[0].status;
  EXPECT_EQ(Records("job0"), 16);
  EXPECT_EQ(r->jobs[1].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r->jobs[1].status.message(), HasSubstr("disk full"));
  EXPECT_EQ(Records("job1"), 0);
  EXPECT_EQ(CurrentCpus(), cpus_before);
}

// A GPU layout: the device is "cuda:0", its launching core lends no CPU slot.
TEST_F(EngineTest, GpuDeviceIsOneDeviceBesideTheCpuSlots) {
  Log log;
  EngineOptions o = FakeOptions("interleaved", &log);
  o.layout.gpu = "cuda:0";
  o.layout.device_shares_cores = false;
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  int measures = 0;
  for (const StageTrace& t : r->traces) {
    if (t.kind == StageKind::kMeasure) {
      ++measures;
      EXPECT_EQ(t.resource, "device:cuda:0");
    } else {
      EXPECT_EQ(t.resource, "cpu:0");  // never the launching core
    }
  }
  EXPECT_EQ(measures, 8);
  EXPECT_EQ(Records("job0"), 16);

  o.layout.gpu = "gpu0";
  EXPECT_THAT(Engine::Create(o).status().message(), HasSubstr("expected cuda:N"));
  o.layout.gpu = "cuda:0";
  o.layout.device_shares_cores = true;
  EXPECT_THAT(Engine::Create(o).status().message(), HasSubstr("lend no slots"));
}

TEST_F(EngineTest, PredictiveKeepsTheDeviceExclusive) {
  Log log;
  auto engine = Engine::Create(FakeOptions("predictive", &log));
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const JobResult& j : r->jobs) {
    EXPECT_TRUE(j.status.ok()) << j.status;
    EXPECT_EQ(Records(j.job_id), 16);
  }
  ExpectCleanMeasurements(*r, log);
}

// With no general slot, every CPU stage borrows the device core, and only between measurements.
TEST_F(EngineTest, LentDeviceCoreRunsCpuStagesOnlyBetweenMeasurements) {
  Log log;
  EngineOptions o = FakeOptions("interleaved", &log);
  o.layout.cpu_cores = {};
  o.layout.cpu_slots = 0;
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const StageTrace& t : r->traces) {
    if (t.kind == StageKind::kMeasure) continue;
    ASSERT_EQ(t.spans.size(), 1u);
    EXPECT_EQ(t.spans[0].cores, std::vector<int>{kDeviceCore});
    EXPECT_EQ(t.resource, "cpu:1");
  }
  ExpectCleanMeasurements(*r, log);
  // One slot in all: no two stages of any kind ever overlap.
  for (const StageTrace& a : r->traces) {
    for (const StageTrace& b : r->traces) {
      if (&a != &b) {
        EXPECT_FALSE(Overlap(a.start, a.end, b.start, b.end));
      }
    }
  }
}

// A device that does not lend its core: CPU stages stay on core 0.
TEST_F(EngineTest, DeviceThatDoesNotLendKeepsCpuStagesOffItsCore) {
  Log log;
  EngineOptions o = FakeOptions("interleaved", &log);
  o.layout.device_shares_cores = false;
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(4, 4), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const StageTrace& t : r->traces) {
    if (t.kind == StageKind::kMeasure) continue;
    for (const CoreSpan& s : t.spans) EXPECT_EQ(s.cores, std::vector<int>{0});
  }
  for (const Log::Sample& s : log.build_samples) EXPECT_EQ(s.cpus, std::vector<int>{0});
}

TEST_F(EngineTest, SequentialRunsJobsOneAfterAnother) {
  Log log;
  auto engine = Engine::Create(FakeOptions("sequential", &log));
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(4, 4), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  absl::Time first_end = absl::InfinitePast(), second_start = absl::InfiniteFuture();
  for (const StageTrace& t : r->traces) {
    if (t.job == 0) first_end = std::max(first_end, t.end);
    if (t.job == 1) second_start = std::min(second_start, t.start);
  }
  EXPECT_LE(first_end, second_start);
  EXPECT_EQ(r->jobs[0].end, first_end);
  EXPECT_EQ(Records("job0"), 8);
  EXPECT_EQ(Records("job1"), 8);
}

TEST_F(EngineTest, UncontrolledBuildsCompileOnEveryCoreLikeIndependentTuners) {
  // Each uncontrolled job is a tuner that owns the machine: its builder runs one compile per core
  // (core 0 and the device's core 1), and its build stages count as two slots. Under interleaved
  // the builder gets the configured build slots.
  for (const char* policy : {"uncontrolled", "interleaved"}) {
    Log log;
    EngineOptions o = FakeOptions(policy, &log, absl::Milliseconds(2), absl::Milliseconds(2));
    std::vector<int> threads;
    std::mutex mu;
    o.make_builder =
        [&](const tune::BuildOptions& bo) -> absl::StatusOr<std::unique_ptr<tune::Builder>> {
      std::lock_guard<std::mutex> lock(mu);
      threads.push_back(bo.num_threads);
      return std::make_unique<SleepBuilder>(absl::Milliseconds(2), &log);
    };
    auto engine = Engine::Create(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    auto r = (*engine)->Run(TwoJobs(4, 4), store_.get());
    ASSERT_TRUE(r.ok()) << r.status();
    const int expected = std::string(policy) == "uncontrolled" ? 2 : 1;
    EXPECT_EQ(threads, std::vector<int>(2, expected)) << policy;
    int builds = 0;
    for (const StageTrace& t : r->traces) {
      if (t.kind != StageKind::kBuild) continue;
      ++builds;
      EXPECT_EQ(t.cpu_slots, expected) << policy;
    }
    EXPECT_EQ(builds, 4) << policy;                     // two tasks of one round per job
    store_ = *tune::OpenSqliteRecordStore(":memory:");  // the next policy reuses the job ids
  }
}

TEST_F(EngineTest, UncontrolledOverlapsMeasurementsWithOneMeasurerPerJob) {
  Log log;
  auto engine = Engine::Create(
      FakeOptions("uncontrolled", &log, absl::Milliseconds(5), absl::Milliseconds(60)));
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(log.measurers_made, 2);
  bool overlapped = false;
  for (size_t i = 0; i < log.measures.size(); ++i) {
    for (size_t k = i + 1; k < log.measures.size(); ++k) {
      overlapped |= Overlap(log.measures[i].start, log.measures[i].end, log.measures[k].start,
                            log.measures[k].end);
    }
  }
  EXPECT_TRUE(overlapped);
  for (const StageTrace& t : r->traces) {
    EXPECT_TRUE(t.spans.empty()) << "uncontrolled stages are not pinned";
    if (t.kind != StageKind::kMeasure) {
      EXPECT_EQ(t.resource, "cpu");
    }
  }
  EXPECT_EQ(Records("job0"), 16);
  EXPECT_EQ(Records("job1"), 16);
  // The device's busy time counts overlapping measurements once.
  double sum = 0;
  for (const Interval& m : log.measures) sum += absl::ToDoubleSeconds(m.end - m.start);
  EXPECT_LT(r->device_busy_seconds, sum);
}

TEST_F(EngineTest, DefaultConfigIsMeasuredAfterEachTask) {
  Log log;
  auto engine = Engine::Create(FakeOptions("interleaved", &log));
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = (*engine)->Run(TwoJobs(4, 4, /*measure_default=*/true), store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const JobResult& j : r->jobs) {
    ASSERT_EQ(j.outcomes.size(), 2u);
    for (const auto& o : j.outcomes) EXPECT_GT(o.default_cost, 0);
    EXPECT_EQ(Records(j.job_id), 8);  // the baseline is not a trial
  }
  int64_t baseline = 0;
  for (const StageTrace& t : r->traces) baseline += t.round == -1;
  EXPECT_EQ(baseline, 2 * 2 * 2);  // build + measure per task per job
  ExpectCleanMeasurements(*r, log);
}

// Records of `tasks` in `job`, per task in the store's order: "task #config cost".
std::vector<std::string> RecordsOf(tune::RecordStore& store, const std::vector<graph::Task>& tasks,
                                   const std::string& job) {
  std::vector<std::string> out;
  for (const graph::Task& t : tasks) {
    auto rs = store.ForTask(t.key, ops::HostCpuTarget().Key(), job);
    EXPECT_TRUE(rs.ok()) << rs.status();
    if (!rs.ok()) continue;
    for (const tune::Record& r : *rs) {
      out.push_back(absl::StrCat(t.key, " #", r.config_index, " ", r.median_cost));
    }
  }
  return out;
}

EngineOptions InstantOptions() {
  EngineOptions o = FakeOptions("interleaved", nullptr);
  o.make_builder = [](const tune::BuildOptions&) -> absl::StatusOr<std::unique_ptr<tune::Builder>> {
    return std::make_unique<tune::FakeBuilder>();
  };
  o.make_measurer = [](const std::vector<int>&) -> absl::StatusOr<std::unique_ptr<tune::Measurer>> {
    return std::make_unique<tune::FakeMeasurer>();
  };
  return o;
}

// The same job, run by `loom tune`'s single-job loop and by the engine under the scheduler, gives
// the same records in the same order: both only run what the tasks' sessions ask for.
TEST_F(EngineTest, TheEngineAndTheSingleJobLoopStoreTheSameRecords) {
  const std::vector<graph::Task> tasks = {ConvTask(8, 8), ConvTask(16, 6)};
  tune::TaskTunerOptions options;
  options.trials = 12;
  options.batch_size = 4;
  options.tuner = {
      .kind = "xgb", .seed = 7, .plan_size = 4, .sa_iters = 20, .sa_parallel = 8, .xgb_rounds = 5};
  options.job_id = "same";

  auto single_store = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(single_store.ok());
  tune::FakeBuilder builder;
  tune::FakeMeasurer measurer;
  tune::JobOptions job{.task = options, .target = ops::HostCpuTarget(), .measure_default = true};
  auto single = tune::RunTuneJob(tasks, job, single_store->get(), builder, measurer);
  ASSERT_TRUE(single.ok()) << single.status();

  auto engine = Engine::Create(InstantOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  EngineJob ej{.name = "m", .tasks = tasks, .options = options, .target = ops::HostCpuTarget()};
  auto r = (*engine)->Run({ej}, store_.get());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->jobs[0].status.ok()) << r->jobs[0].status;

  const std::vector<std::string> want = RecordsOf(**single_store, tasks, "same");
  ASSERT_EQ(want.size(), 24u);
  EXPECT_EQ(RecordsOf(*store_, tasks, "same"), want);
  EXPECT_EQ(RecordsOf(*store_, tasks, "same#default"),
            RecordsOf(**single_store, tasks, "same#default"));
  ASSERT_EQ(r->jobs[0].outcomes.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(r->jobs[0].outcomes[i].best_config_json, (*single)[i].best_config_json);
    EXPECT_DOUBLE_EQ(r->jobs[0].outcomes[i].default_cost, (*single)[i].default_cost);
  }
}

// A job that spreads (tune/spread.h, the service's rule) runs several tasks' rounds at once, yet
// each task's rounds are its session's alone: without transfer between its tasks, every task
// stores the same records in the same order as when the tasks run one after another, and a rerun
// of the same job resumes each task where it stopped.
TEST_F(EngineTest, AJobThatSpreadsStoresEachTasksRecordsAsTasksInTurnDo) {
  const std::vector<graph::Task> tasks = {ConvTask(8, 8), ConvTask(16, 6), ConvTask(8, 6)};
  auto job = [&](int spread, int64_t trials) {
    EngineJob j{.name = "m", .tasks = tasks, .target = ops::HostCpuTarget(), .spread = spread};
    j.options.trials = trials;
    j.options.batch_size = 4;
    j.options.tuner = {.kind = "xgb",
                       .seed = 7,
                       .plan_size = 4,
                       .sa_iters = 20,
                       .sa_parallel = 8,
                       .xgb_rounds = 5};
    j.options.job_id = "spread";
    j.options.transfer = false;
    return j;
  };
  auto run = [&](tune::RecordStore& store, const EngineJob& j) -> std::optional<EngineResult> {
    auto engine = Engine::Create(InstantOptions());
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return std::nullopt;
    auto r = (*engine)->Run({j}, &store);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return std::nullopt;
    EXPECT_TRUE(r->jobs[0].status.ok()) << r->jobs[0].status;
    return *std::move(r);
  };
  auto in_turn = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(in_turn.ok());
  ASSERT_TRUE(run(**in_turn, job(1, 12)).has_value());
  const std::vector<std::string> want = RecordsOf(**in_turn, tasks, "spread");
  ASSERT_EQ(want.size(), 36u);

  std::optional<EngineResult> spread = run(*store_, job(3, 12));
  ASSERT_TRUE(spread.has_value());
  EXPECT_EQ(RecordsOf(*store_, tasks, "spread"), want);
  ASSERT_EQ(spread->jobs[0].outcomes.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(spread->jobs[0].outcomes[i].task.key, tasks[i].key);  // in task order
    EXPECT_EQ(spread->jobs[0].outcomes[i].trials, 12);
  }
  // The rounds did run at once: every task's first stage ended before the first task's last.
  std::map<std::string, size_t> first, last;
  for (size_t i = 0; i < spread->traces.size(); ++i) {
    first.try_emplace(spread->traces[i].task_key, i);
    last[spread->traces[i].task_key] = i;
  }
  for (const graph::Task& t : tasks) EXPECT_LT(first[t.key], last[tasks[0].key]) << t.key;

  // Stopped after a round of each task, then run again: each task resumes where it stopped.
  auto resumed = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE(run(**resumed, job(3, 4)).has_value());
  std::optional<EngineResult> again = run(**resumed, job(3, 12));
  ASSERT_TRUE(again.has_value());
  for (const tune::TaskOutcome& o : again->jobs[0].outcomes) {
    EXPECT_EQ(o.resumed_trials, 4);
    EXPECT_EQ(o.trials, 12);
  }
  EXPECT_EQ(again->jobs[0].records, 3 * 8);
  std::vector<std::string> got = RecordsOf(**resumed, tasks, "spread");
  ASSERT_EQ(got.size(), 36u);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(std::adjacent_find(got.begin(), got.end()), got.end()) << "a config measured twice";
}

// With a budget, each new round of a job that spreads goes to the task scheduler's pick, the
// budget counts the rounds in flight, and the device still measures one stage at a time.
TEST_F(EngineTest, AJobThatSpreadsKeepsItsBudgetAndOneMeasurementAtATime) {
  std::vector<EngineJob> jobs = OneUncappedJob();
  jobs[0].tasks.push_back(ConvTask(8, 6));
  jobs[0].budget.total_trials = 20;
  jobs[0].measure_default = true;
  jobs[0].spread = 2;
  auto r = RunInterleaved(jobs, absl::Milliseconds(2), absl::Milliseconds(2));
  ASSERT_TRUE(r.ok()) << r.status();
  const JobResult& j = r->jobs[0];
  EXPECT_TRUE(j.status.ok()) << j.status;
  ASSERT_EQ(j.outcomes.size(), 3u);
  int64_t trials = 0;
  for (const tune::TaskOutcome& o : j.outcomes) {
    trials += o.trials;
    EXPECT_GE(o.trials, 4);                      // every task's warm-up round
    EXPECT_TRUE(std::isfinite(o.default_cost));  // its baseline first
  }
  EXPECT_EQ(trials, 20);
  EXPECT_EQ(Records(j.job_id), 20);
  // Two tasks at once from the start: the second task's baseline build is granted with the
  // first's.
  ASSERT_GE(r->traces.size(), 2u);
  std::map<std::string, absl::Time> first_grant;
  for (const StageTrace& t : r->traces) {
    auto [it, inserted] = first_grant.try_emplace(t.task_key, t.granted);
    if (!inserted) it->second = std::min(it->second, t.granted);
  }
  EXPECT_EQ(first_grant[jobs[0].tasks[0].key], first_grant[jobs[0].tasks[1].key]);
  ExpectCleanMeasurements(*r, log_);
}

TEST(EngineOptionsTest, BadOptionsAreRejected) {
  Log log;
  EngineOptions o = FakeOptions("interleaved", &log);
  o.layout.cpu_cores = {1};
  auto st = Engine::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("both a device core and a CPU-stage core"));

  o = FakeOptions("fastest", &log);
  st = Engine::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("interleaved"));

  o = FakeOptions("interleaved", &log);
  o.build_slots = 3;
  st = Engine::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("build_slots"));

  o = FakeOptions("interleaved", &log);
  o.layout.cpu_slots = 0;
  o.layout.device_shares_cores = false;
  st = Engine::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("no CPU slot"));

  auto engine = Engine::Create(FakeOptions("interleaved", &log));
  ASSERT_TRUE(engine.ok());
  std::vector<EngineJob> jobs = TwoJobs();
  jobs[1].options.job_id = jobs[0].options.job_id;
  st = (*engine)->Run(jobs, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("share the job id"));
  EXPECT_EQ((*engine)->Run({}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  jobs = TwoJobs();
  for (int spread : {0, tune::kMaxSpread + 1}) {
    jobs[0].spread = spread;
    st = (*engine)->Run(jobs, nullptr).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(),
                HasSubstr(absl::StrCat("job 'model0': spread must be 1 to 64, got ", spread)));
  }
  auto uncontrolled = Engine::Create(FakeOptions("uncontrolled", &log));
  ASSERT_TRUE(uncontrolled.ok());
  jobs[0].spread = 2;
  st = (*uncontrolled)->Run(jobs, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("spread 2 needs a policy that keeps the device exclusive"));
}

TEST(EngineLayoutTest, DefaultLayoutUsesTheLastCoreAsTheDevice) {
  MachineLayout two = DefaultLayout(2);
  EXPECT_EQ(two.device_cores, std::vector<int>{1});
  EXPECT_EQ(two.cpu_cores, std::vector<int>{0});
  EXPECT_EQ(two.cpu_slots, 1);
  EXPECT_TRUE(ValidateLayout(two).ok());
  MachineLayout one = DefaultLayout(1);
  EXPECT_EQ(one.device_cores, std::vector<int>{0});
  EXPECT_EQ(one.cpu_slots, 0);
  EXPECT_TRUE(ValidateLayout(one).ok());
}

// The real builder and sandboxed measurer: 2 jobs x 2 tiny conv tasks, a few trials each.
TEST(EngineEndToEndTest, TwoJobsWithTheRealBuilderAndMeasurer) {
  if (!TwoCoresAvailable()) GTEST_SKIP() << "needs cores 0 and 1";
  const char* build_dir = std::getenv("LOOM_BUILD_DIR");
  const std::string cache = absl::StrCat(build_dir ? build_dir : ::testing::TempDir().c_str(),
                                         "/loom_engine_test_kernels");
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  EngineOptions o;
  o.policy = "interleaved";
  o.layout = DefaultLayout(2);
  // Every compile really runs (no cache), and a sampler thread polls each live compiler's CPU set
  // every millisecond or so.
  Log log;
  std::vector<int> pids;
  std::atomic<bool> stop{false};
  std::thread sampler([&] {
    while (!stop.load()) {
      std::vector<int> live;
      {
        std::lock_guard<std::mutex> lock(log.mu);
        live = pids;
      }
      for (int pid : live) {
        const absl::Time now = absl::Now();
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(pid, sizeof(set), &set) != 0) continue;
        std::vector<int> cpus;
        for (int i = 0; i < CPU_SETSIZE; ++i) {
          if (CPU_ISSET(i, &set)) cpus.push_back(i);
        }
        std::lock_guard<std::mutex> lock(log.mu);
        log.build_samples.push_back({now, std::move(cpus)});
      }
      absl::SleepFor(absl::Microseconds(500));
    }
  });
  o.make_builder = [cache, &log, &pids](const tune::BuildOptions& hooks) {
    tune::BuildOptions bo = hooks;
    bo.cache_dir = cache;
    bo.use_cache = false;
    bo.compile_started = [&log, &pids, placed = hooks.compile_started](int pid) {
      placed(pid);
      std::lock_guard<std::mutex> lock(log.mu);
      pids.push_back(pid);
    };
    return tune::MakeLocalBuilder(bo);
  };
  o.make_measurer = [self](const std::vector<int>& cores) {
    tune::MeasureOptions mo;
    mo.cores = cores;
    mo.min_repeat_ms = 20;  // measurements long enough to overlap compiles
    mo.repeat = 2;
    mo.worker_command = {self, tune::kMeasureWorkerArg};
    return tune::MakeLocalMeasurer(mo);
  };
  auto store = tune::OpenSqliteRecordStore(":memory:");
  ASSERT_TRUE(store.ok());
  std::vector<EngineJob> jobs = TwoJobs(2, 2, /*measure_default=*/true);
  for (EngineJob& j : jobs) j.tasks = {ConvTask(8, 6), ConvTask(8, 4)};
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const absl::Time start = absl::Now();
  auto r = (*engine)->Run(jobs, store->get());
  stop = true;
  sampler.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));
  for (const JobResult& j : r->jobs) {
    EXPECT_TRUE(j.status.ok()) << j.status;
    ASSERT_EQ(j.outcomes.size(), 2u);
    for (const auto& out : j.outcomes) {
      EXPECT_EQ(out.trials, 2);
      EXPECT_GT(out.best_gflops, 0) << "no candidate of " << out.task.key << " succeeded";
      EXPECT_GT(out.default_cost, 0);
    }
    auto n = (*store)->Count({.job_id = j.job_id});
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 4);
  }
  // 2 jobs x 2 tasks x (2 candidates + the default config) compiles, each placed on the cores of
  // its build's grant: never on the device core while a measurement runs.
  EXPECT_EQ(pids.size(), 12u);
  EXPECT_GT(log.build_samples.size(), 12u);
  for (const Log::Sample& s : log.build_samples) {
    for (const StageTrace& m : r->traces) {
      if (m.kind != StageKind::kMeasure || s.time <= m.start || s.time >= m.end) continue;
      EXPECT_EQ(std::count(s.cpus.begin(), s.cpus.end(), kDeviceCore), 0)
          << "a compiler could run on the device core during a measurement";
    }
  }
  for (const StageTrace& m : r->traces) {
    if (m.kind != StageKind::kMeasure) continue;
    for (const StageTrace& c : r->traces) {
      if (c.kind == StageKind::kMeasure) {
        if (&c != &m) {
          EXPECT_FALSE(Overlap(c.start, c.end, m.start, m.end));
        }
        continue;
      }
      for (const CoreSpan& s : c.spans) {
        if (std::count(s.cores.begin(), s.cores.end(), kDeviceCore)) {
          EXPECT_FALSE(Overlap(s.from, s.to, m.start, m.end));
        }
      }
    }
  }
}

}  // namespace
}  // namespace loom::engine

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kMeasureWorkerArg) {
    return loom::tune::RunMeasureWorker(0, 1);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
