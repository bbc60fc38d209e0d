// Tests of the stage executor with a real template, real compiles and a real sandboxed measurer;
// for cuda tasks, real NVRTC compiles and the CUDA measurer over the fake driver
// (tune/testing/fake_libcuda.cc, which runs "kernels" on the CPU). This binary is its own measure
// worker: started with `__measure-worker` it runs RunMeasureWorker, with `__cuda-measure-worker`
// RunCudaMeasureWorker.
#include "loom/agent/stage_executor.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/search/prior.h"
#include "loom/toolchain/cuda_measure_worker.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/nvrtc_builder.h"
#include "loom/tune/task_session.h"

namespace loom::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

std::string SelfExe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

int LastAllowedCpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof(set), &set);
  int last = 0;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) last = i;
  }
  return last;
}

graph::Workload TinyConv() {
  graph::Workload w;
  w.kind = graph::TaskKind::kConv2d;
  w.n = 1, w.c = 8, w.h = 6, w.w = 6, w.k = 8, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = 1;
  return w;
}

std::string DeviceName() { return absl::StrCat("cpu:", LastAllowedCpu()); }

ExecutorOptions Options(bool faults = false) {
  ExecutorOptions o;
  o.cache_dir = absl::StrCat(::testing::TempDir(), "/loom_stage_executor_test_", getpid());
  o.measure.number = 1;
  o.measure.repeat = 2;
  o.measure.min_repeat_ms = 1;
  o.measure.timeout = absl::Seconds(3);
  o.measure.setup_timeout = absl::Seconds(30);
  o.measure.worker_command = {SelfExe(), tune::kMeasureWorkerArg};
  o.measure.seed = 3;
  o.devices = {*ParseDevice(DeviceName())};
  o.host = "test";
  o.template_options.test_faults = faults;
  return o;
}

v1::StageRequest Request(v1::StageKind kind, int64_t round = 0) {
  v1::StageRequest r;
  r.set_lease_id(absl::StrCat("lease-", static_cast<int>(kind), "-", round));
  r.set_job_id("job");
  r.set_round(round);
  r.set_kind(kind);
  v1::TaskSpec* t = r.mutable_task();
  t->set_workload_key(graph::WorkloadKey(TinyConv()));
  t->set_target_kind("cpu");
  t->set_target_key(ops::HostCpuTarget().Key());
  v1::TunerSpec* s = r.mutable_tuner();
  s->set_kind("xgb");
  s->set_seed(5);
  s->set_batch_size(4);
  s->set_trials(12);
  s->set_plan_size(4);
  return r;
}

std::vector<int64_t> Indices(const v1::StageResult& r) {
  return {r.propose().config_indices().begin(), r.propose().config_indices().end()};
}

// The daemon's session of `r`'s task before its first proposal, of the options `r`'s TunerSpec
// carries, for `target`: a tune::TaskSession with the tuner elsewhere, as service::JobDriver
// keeps it. Its Save() is what propose and update stages carry.
std::unique_ptr<tune::TaskSession> DaemonSession(const v1::StageRequest& r,
                                                 const ops::Target& target) {
  absl::StatusOr<graph::Workload> w = graph::ParseWorkloadKey(r.task().workload_key());
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  graph::Task task;
  task.workload = *w;
  task.key = r.task().workload_key();
  task.hash = graph::StableHash(task.key);
  task.flops = r.task().flops();
  tune::TaskTunerOptions o;
  o.trials = r.tuner().trials();
  o.batch_size = r.tuner().batch_size();
  o.tuner.kind = r.tuner().kind();
  o.tuner.seed = static_cast<uint64_t>(r.tuner().seed());
  if (r.tuner().plan_size() > 0) o.tuner.plan_size = r.tuner().plan_size();
  o.job_id = r.job_id();
  o.measure_default = false;
  o.use_prior = !r.tuner().no_prior();
  o.tuner_elsewhere = true;
  auto s = tune::TaskSession::Create(task, target, o, nullptr);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

// `r` as the propose stage `session` asks for next.
v1::StageRequest ProposeIn(v1::StageRequest r, const tune::TaskSession& session) {
  r.set_kind(v1::STAGE_KIND_PROPOSE);
  r.set_round(session.round());
  r.mutable_propose()->set_session(session.Save().SerializeAsString());
  return r;
}

// A stage's result as the daemon completes its session with it (service::JobDriver).
tune::StageOutcome OutcomeOf(sched::StageKind kind, const v1::StageResult& r) {
  tune::StageOutcome out{.kind = kind};
  auto tuner = [&](const std::string& bytes) {
    if (!bytes.empty()) {
      EXPECT_TRUE(out.tuner_state.emplace().ParseFromString(bytes));
    }
  };
  switch (kind) {
    case sched::StageKind::kPropose:
      for (int64_t c : r.propose().config_indices()) out.configs.push_back(ops::Config{c});
      out.tuner_has_next = r.propose().tuner_has_next();
      tuner(r.propose().session_tuner());
      break;
    case sched::StageKind::kBuild:
      for (const v1::Artifact& a : r.build().artifacts()) {
        out.builds.push_back(tune::BuildResult{.config = ops::Config{a.config_index()},
                                               .error = static_cast<tune::ErrorKind>(a.error()),
                                               .build_seconds = a.build_seconds()});
      }
      break;
    case sched::StageKind::kMeasure:
      for (const v1::MeasureResult& m : r.measure().results()) {
        tune::MeasureResult t;
        t.config = ops::Config{m.config_index()};
        t.costs.assign(m.costs().begin(), m.costs().end());
        t.error = static_cast<tune::ErrorKind>(m.error());
        out.results.push_back(std::move(t));
      }
      break;
    default:
      out.tuner_has_next = r.update().tuner_has_next();
      tuner(r.update().session_tuner());
      break;
  }
  return out;
}

class StageExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = StageExecutor::Create(Options());
    ASSERT_TRUE(e.ok()) << e.status();
    executor_ = *std::move(e);
  }
  std::unique_ptr<StageExecutor> executor_;
};

// propose -> build -> measure -> update -> propose on a real conv task, with propose and update
// in the daemon's session (tune::RunRestoredStage): only the built objects' hashes travel, the
// measurements are checked, and the next proposal never repeats a measured config and is the same
// for the same state.
TEST_F(StageExecutorTest, FullRoundInTheDaemonsSession) {
  v1::StageRequest spec = Request(v1::STAGE_KIND_PROPOSE, 0);
  spec.mutable_tuner()->set_no_prior(true);  // keeps the test short
  std::unique_ptr<tune::TaskSession> daemon = DaemonSession(spec, ops::HostCpuTarget());
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(daemon->Next().kind, sched::StageKind::kPropose);
  v1::StageRequest propose = ProposeIn(spec, *daemon);
  v1::StageResult p0 = executor_->Execute(propose);
  ASSERT_THAT(p0.error(), IsEmpty());
  EXPECT_EQ(p0.lease_id(), propose.lease_id());
  std::vector<int64_t> first = Indices(p0);
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 4u);
  EXPECT_THAT(p0.propose().session_tuner(), Not(IsEmpty()));
  EXPECT_EQ(p0.timing().resource(), "test/cpu");
  EXPECT_LE(p0.timing().start_unix_micros(), p0.timing().end_unix_micros());
  ASSERT_TRUE(daemon->Complete(OutcomeOf(sched::StageKind::kPropose, p0)).ok());

  v1::StageRequest build = Request(v1::STAGE_KIND_BUILD, 0);
  build.set_cpu_slots(2);
  for (int64_t i : first) build.mutable_build()->add_config_indices(i);
  v1::StageResult b = executor_->Execute(build);
  ASSERT_THAT(b.error(), IsEmpty());
  ASSERT_EQ(b.build().artifacts_size(), 4);
  int built = 0;
  for (int i = 0; i < 4; ++i) {
    const v1::Artifact& a = b.build().artifacts(i);
    EXPECT_EQ(a.config_index(), first[i]);
    if (a.error() != v1::ERROR_KIND_NONE) continue;
    ++built;
    // Only the object's hash leaves the agent.
    EXPECT_TRUE(a.binary().empty());
    EXPECT_EQ(a.content_hash().size(), 64u);
  }
  ASSERT_GE(built, 1);
  ASSERT_TRUE(daemon->Complete(OutcomeOf(sched::StageKind::kBuild, b)).ok());
  // The update stage's session state: the round's proposal pending, before its build.
  const std::string at_build = daemon->Save().SerializeAsString();

  v1::StageRequest measure = Request(v1::STAGE_KIND_MEASURE, 0);
  measure.set_device(DeviceName());
  *measure.mutable_measure()->mutable_artifacts() = b.build().artifacts();
  v1::StageResult m = executor_->Execute(measure);
  ASSERT_THAT(m.error(), IsEmpty());
  EXPECT_EQ(m.timing().resource(), absl::StrCat("test/", DeviceName()));
  ASSERT_EQ(m.measure().results_size(), 4);
  int measured = 0;
  for (int i = 0; i < 4; ++i) {
    const v1::MeasureResult& r = m.measure().results(i);
    EXPECT_EQ(r.config_index(), first[i]);
    if (b.build().artifacts(i).error() == v1::ERROR_KIND_NONE) {
      EXPECT_EQ(r.error(), v1::ERROR_KIND_NONE) << r.error_msg();
      EXPECT_EQ(r.costs_size(), 2);
      EXPECT_TRUE(r.checked());
      for (double c : r.costs()) EXPECT_GT(c, 0);
      EXPECT_GT(r.timestamp_unix_micros(), 0);
      measured += r.error() == v1::ERROR_KIND_NONE;
    }
  }
  ASSERT_GE(measured, 1);
  ASSERT_TRUE(daemon->Complete(OutcomeOf(sched::StageKind::kMeasure, m)).ok());

  v1::StageRequest update = Request(v1::STAGE_KIND_UPDATE, 0);
  update.mutable_tuner()->set_no_prior(true);
  update.mutable_update()->set_session(at_build);
  *update.mutable_update()->mutable_artifacts() = b.build().artifacts();
  *update.mutable_update()->mutable_results() = m.measure().results();
  ::testing::internal::CaptureStderr();
  v1::StageResult u = executor_->Execute(update);
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), Not(HasSubstr("cost model failed")));
  ASSERT_THAT(u.error(), IsEmpty());
  EXPECT_TRUE(u.update().tuner_has_next());
  ASSERT_THAT(u.update().session_tuner(), Not(IsEmpty()));
  tune::StageOutcome updated = OutcomeOf(sched::StageKind::kUpdate, u);
  updated.records.resize(first.size());  // stored by the daemon at the measurement
  ASSERT_TRUE(daemon->Complete(updated).ok());

  ASSERT_EQ(daemon->Next().kind, sched::StageKind::kPropose);
  v1::StageRequest propose1 = ProposeIn(spec, *daemon);
  v1::StageResult p1 = executor_->Execute(propose1);
  ASSERT_THAT(p1.error(), IsEmpty());
  std::vector<int64_t> second = Indices(p1);
  ASSERT_EQ(second.size(), 4u);
  for (int64_t i : second) {
    EXPECT_EQ(std::count(first.begin(), first.end(), i), 0) << "re-proposed measured config " << i;
  }
  // Stateless and reproducible: the same request gives the same proposal.
  EXPECT_EQ(Indices(executor_->Execute(propose1)), second);
}

// Before the first model, an xgb proposal on an AVX-512 task is ranked by the built-in tuning
// prior (as `loom tune` does) unless the spec turns it off. Either way it is reproducible.
TEST_F(StageExecutorTest, TheBuiltInPriorRanksTheFirstProposal) {
  const char kStem[] = "conv2d:f32:n1_c3_h224_w224_k64_r7_s7_st2x2_p3x3x3x3_d1x1_g1";
  absl::StatusOr<graph::Workload> stem = graph::ParseWorkloadKey(kStem);
  ASSERT_TRUE(stem.ok()) << stem.status();
  v1::StageRequest r = Request(v1::STAGE_KIND_PROPOSE, 0);
  r.mutable_task()->set_workload_key(kStem);
  r.mutable_task()->set_isa("avx512");
  r.mutable_tuner()->set_batch_size(8);
  r.mutable_tuner()->set_plan_size(16);
  r.mutable_tuner()->set_trials(48);
  v1::StageRequest cold = r;
  cold.mutable_tuner()->set_no_prior(true);

  ops::Target avx512 = ops::HostCpuTarget();
  avx512.isa = ops::Isa::kAvx512;
  ASSERT_NE(search::BuiltinPrior(avx512), nullptr);
  std::unique_ptr<tune::TaskSession> warm_session = DaemonSession(r, avx512);
  std::unique_ptr<tune::TaskSession> cold_session = DaemonSession(cold, avx512);
  ASSERT_NE(warm_session, nullptr);
  ASSERT_NE(cold_session, nullptr);
  r = ProposeIn(r, *warm_session);
  cold = ProposeIn(cold, *cold_session);
  v1::StageResult warm_result = executor_->Execute(r);
  ASSERT_THAT(warm_result.error(), IsEmpty());
  const std::vector<int64_t> seeded = Indices(warm_result);
  const std::vector<int64_t> plain = Indices(executor_->Execute(cold));
  ASSERT_EQ(seeded.size(), 8u);
  ASSERT_EQ(plain.size(), 8u);
  EXPECT_NE(seeded, plain);
  EXPECT_EQ(Indices(executor_->Execute(r)), seeded);
}

struct MalformedCase {
  std::string name;
  std::function<void(v1::StageRequest&)> edit;
  std::string message;
};

// Build and measure outcomes made up for `configs` (a cost that depends on the config), the same
// for both sessions compared below.
tune::StageOutcome MadeUp(sched::StageKind kind, const std::vector<ops::Config>& configs) {
  tune::StageOutcome out{.kind = kind};
  for (const ops::Config& c : configs) {
    if (kind == sched::StageKind::kBuild) {
      out.builds.push_back(tune::BuildResult{.config = c, .build_seconds = 0.5});
    } else {
      tune::MeasureResult m;
      m.config = c;
      m.costs = {1e-3 * (1.0 + static_cast<double>((c.index * 7919) % 101))};
      out.results.push_back(m);
    }
  }
  return out;
}

// The agent's propose and update stages run in the daemon's session restored from its state:
// the same configs in the same order as a session whose tuner runs in-process (`loom tune`).
TEST_F(StageExecutorTest, SessionStagesProposeWhatALocalSessionDoes) {
  graph::Task task;
  task.workload = TinyConv();
  task.key = graph::WorkloadKey(TinyConv());
  task.hash = graph::StableHash(task.key);
  task.flops = graph::WorkloadFlops(TinyConv());
  tune::TaskTunerOptions options;
  options.trials = 12;
  options.batch_size = 4;
  options.tuner.kind = "xgb";
  options.tuner.seed = 5;
  options.tuner.plan_size = 4;
  options.job_id = "job";
  options.measure_default = false;
  options.use_prior = false;  // keeps the test short
  auto local = tune::TaskSession::Create(task, ops::HostCpuTarget(), options, nullptr);
  ASSERT_TRUE(local.ok()) << local.status();
  std::vector<int64_t> want;
  for (tune::SessionRequest r = (*local)->Next(); !r.done; r = (*local)->Next()) {
    tune::StageOutcome out;
    if (r.kind == sched::StageKind::kPropose || r.kind == sched::StageKind::kUpdate) {
      auto ran = tune::RunStage(**local, r, tune::StageEnv{});
      ASSERT_TRUE(ran.ok()) << ran.status();
      out = *std::move(ran);
      for (const ops::Config& c : out.configs) want.push_back(c.index);
    } else {
      std::vector<ops::Config> configs = r.configs;
      for (const tune::BuildResult& b : r.builds) configs.push_back(b.config);
      out = MadeUp(r.kind, configs);
    }
    ASSERT_TRUE((*local)->Complete(out).ok());
  }
  ASSERT_EQ(want.size(), 12u);

  tune::TaskTunerOptions elsewhere = options;
  elsewhere.tuner_elsewhere = true;
  auto daemon = tune::TaskSession::Create(task, ops::HostCpuTarget(), elsewhere, nullptr);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  std::vector<int64_t> got;
  std::vector<ops::Config> round;
  tune::StageOutcome built, measured;
  for (tune::SessionRequest r = (*daemon)->Next(); !r.done; r = (*daemon)->Next()) {
    tune::StageOutcome out{.kind = r.kind};
    const std::string state = (*daemon)->Save().SerializeAsString();
    if (r.kind == sched::StageKind::kPropose) {
      v1::StageRequest propose = Request(v1::STAGE_KIND_PROPOSE, r.round);
      propose.mutable_tuner()->set_trials(12);
      propose.mutable_tuner()->set_no_prior(true);
      propose.mutable_propose()->set_session(state);
      v1::StageResult res = executor_->Execute(propose);
      ASSERT_THAT(res.error(), IsEmpty());
      for (int64_t c : res.propose().config_indices()) out.configs.push_back(ops::Config{c});
      out.tuner_has_next = res.propose().tuner_has_next();
      ASSERT_TRUE(out.tuner_state.emplace().ParseFromString(res.propose().session_tuner()));
      for (const ops::Config& c : out.configs) got.push_back(c.index);
      round = out.configs;
    } else if (r.kind == sched::StageKind::kUpdate) {
      v1::StageRequest update = Request(v1::STAGE_KIND_UPDATE, r.round);
      update.mutable_tuner()->set_trials(12);
      update.mutable_tuner()->set_no_prior(true);
      update.mutable_update()->set_session(state);
      for (size_t i = 0; i < round.size(); ++i) {
        v1::Artifact* a = update.mutable_update()->add_artifacts();
        a->set_config_index(round[i].index);
        a->set_build_seconds(0.5);
        v1::MeasureResult* m = update.mutable_update()->add_results();
        m->set_config_index(round[i].index);
        for (double c : measured.results[i].costs) m->add_costs(c);
      }
      v1::StageResult res = executor_->Execute(update);
      ASSERT_THAT(res.error(), IsEmpty());
      out.tuner_has_next = res.update().tuner_has_next();
      ASSERT_THAT(res.update().session_tuner(), Not(IsEmpty()));
      ASSERT_TRUE(out.tuner_state.emplace().ParseFromString(res.update().session_tuner()));
      out.records.resize(round.size());  // stored by the daemon
    } else {
      out = MadeUp(r.kind, r.kind == sched::StageKind::kBuild ? r.configs : round);
      if (r.kind == sched::StageKind::kMeasure) measured = out;
    }
    absl::Status st = (*daemon)->Complete(out);
    ASSERT_TRUE(st.ok()) << st;
  }
  EXPECT_EQ(got, want);
  EXPECT_DOUBLE_EQ((*daemon)->best_cost(), (*local)->best_cost());
  // The daemon's state carries the last stage's tuner state: the next agent restores it, no replay.
  EXPECT_TRUE((*daemon)->Save().has_tuner());

  // A state that is not at the stage asked for, or not a state, is the stage's error.
  v1::StageRequest update = Request(v1::STAGE_KIND_UPDATE, 0);
  update.mutable_tuner()->set_no_prior(true);
  update.mutable_update()->set_session((*daemon)->Save().SerializeAsString());
  update.mutable_update()->add_artifacts()->set_config_index(1);
  update.mutable_update()->add_results()->set_config_index(1);
  EXPECT_THAT(executor_->Execute(update).error(), HasSubstr("not at a build stage"));
  v1::StageRequest garbage = Request(v1::STAGE_KIND_PROPOSE, 0);
  garbage.mutable_propose()->set_session("\xff\xff not a state");
  EXPECT_THAT(executor_->Execute(garbage).error(), HasSubstr("does not parse"));
}

TEST_F(StageExecutorTest, MalformedRequestsAreStageErrors) {
  auto with_build = [](v1::StageRequest& r) {
    r.set_kind(v1::STAGE_KIND_BUILD);
    r.mutable_build()->add_config_indices(0);
  };
  std::vector<MalformedCase> cases = {
      {"unknown workload",
       [&](v1::StageRequest& r) {
         with_build(r);
         r.mutable_task()->set_workload_key("conv2d:f32:bogus");
       },
       "unknown workload key 'conv2d:f32:bogus'"},
      {"no workload",
       [&](v1::StageRequest& r) {
         with_build(r);
         r.mutable_task()->clear_workload_key();
       },
       "no workload_key"},
      {"wrong template",
       [&](v1::StageRequest& r) {
         with_build(r);
         r.mutable_task()->set_template_name("dense_pack");
       },
       "template 'dense_pack' does not cover"},
      {"tpu target",
       [&](v1::StageRequest& r) {
         with_build(r);
         r.mutable_task()->set_target_kind("tpu");
       },
       "target kind 'tpu' is not supported by this agent (cpu or cuda)"},
      {"empty build",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_BUILD);
         r.mutable_build();
       },
       "build stage has no config indices"},
      {"index outside the space",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_BUILD);
         r.mutable_build()->add_config_indices(-1);
       },
       "config index -1 is outside the space"},
      {"missing input", [](v1::StageRequest& r) { r.set_kind(v1::STAGE_KIND_PROPOSE); },
       "propose stage without a propose input"},
      {"input of another kind",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_UPDATE);
         r.mutable_build();
       },
       "update stage without an update input"},
      {"unknown kind", [](v1::StageRequest& r) { r.set_kind(v1::STAGE_KIND_UNSPECIFIED); },
       "unknown stage kind 0"},
      {"empty measure",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_MEASURE);
         r.set_device(DeviceName());
         r.mutable_measure();
       },
       "measure stage has no artifacts"},
      {"unknown device",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_MEASURE);
         r.set_device("cpu:99");
         r.mutable_measure()->add_artifacts()->set_config_index(0);
       },
       "device 'cpu:99' is not one of this agent's devices"},
      {"other target",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_MEASURE);
         r.set_device(DeviceName());
         r.mutable_task()->set_target_key("cpu:avx512:Some Other CPU");
         r.mutable_measure()->add_artifacts()->set_config_index(0);
       },
       "is for target 'cpu:avx512:Some Other CPU'"},
      // The history-based stages of daemons before TaskSession are refused in one line.
      {"propose from an older daemon",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_PROPOSE);
         r.mutable_propose();
       },
       "FAILED_PRECONDITION: propose stage without session state: this agent runs only session "
       "stages and the daemon is older; run the same Loom release on the daemon and agents"},
      {"update from an older daemon",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_UPDATE);
         r.mutable_update();
       },
       "FAILED_PRECONDITION: update stage without session state"},
      {"negative budget",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_PROPOSE);
         v1::TaskSessionState state;
         state.set_job_id("job");
         r.mutable_propose()->set_session(state.SerializeAsString());
         r.mutable_tuner()->set_trials(-1);
       },
       "tuner.trials, batch_size and plan_size must not be negative"},
      {"negative sleep",
       [](v1::StageRequest& r) {
         r.set_kind(v1::STAGE_KIND_SIMULATED);
         r.mutable_simulated()->set_seconds(-1);
       },
       "simulated.seconds must be in [0, 86400]"},
  };
  for (const MalformedCase& c : cases) {
    v1::StageRequest r = Request(v1::STAGE_KIND_UNSPECIFIED);
    c.edit(r);
    v1::StageResult result = executor_->Execute(r);
    EXPECT_THAT(result.error(), HasSubstr(c.message)) << c.name;
    EXPECT_EQ(result.output_case(), v1::StageResult::OUTPUT_NOT_SET) << c.name;
    EXPECT_EQ(result.lease_id(), r.lease_id()) << c.name;
    EXPECT_GT(result.timing().end_unix_micros(), 0) << c.name;
  }
}

TEST_F(StageExecutorTest, SimulatedStageSleepsAndStopsWhenCancelled) {
  v1::StageRequest r = Request(v1::STAGE_KIND_SIMULATED);
  r.mutable_simulated()->set_seconds(0.05);
  v1::StageResult done = executor_->Execute(r);
  EXPECT_THAT(done.error(), IsEmpty());
  EXPECT_GE(done.timing().end_unix_micros() - done.timing().start_unix_micros(), 50000);

  r.mutable_simulated()->set_seconds(30);
  CancelFlag cancel{true};
  v1::StageResult cancelled = executor_->Execute(r, &cancel);
  EXPECT_THAT(cancelled.error(), HasSubstr("cancelled"));
  EXPECT_LT(cancelled.timing().end_unix_micros() - cancelled.timing().start_unix_micros(), 1000000);
}

// A shared object whose constructor creates `marker` when it is loaded: what a forged agent
// would send to run code on the measuring host. Empty when no compiler is at hand.
std::string PlantedObject(const std::string& marker) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/loom_planted_", getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/plant.cc") << "#include <cstdio>\n"
                                      "__attribute__((constructor)) static void Plant() {\n"
                                      "  std::FILE* f = std::fopen(\""
                                   << marker
                                   << "\", \"w\"); if (f) std::fclose(f);\n}\n"
                                      "extern \"C\" void loom_kernel(void**, const void*) {}\n";
  const std::string cmd =
      absl::StrCat("g++ -shared -fPIC -o ", dir, "/plant.so ", dir, "/plant.cc 2>/dev/null");
  if (std::system(cmd.c_str()) != 0) return "";
  std::ifstream in(dir + "/plant.so", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The measuring agent runs only objects it built itself: its own build by hash, or a rebuild of
// the config for anything else. A planted object (its bytes and hash sent as the build's) is
// never written or loaded, and a failed build passes through.
TEST_F(StageExecutorTest, MeasureRunsOnlyObjectsThisAgentBuilt) {
  auto tmpl = ops::MakeTemplate(TinyConv(), ops::HostCpuTarget());
  ASSERT_TRUE(tmpl.ok());
  int64_t good = (*tmpl)->DefaultConfig().index;
  v1::StageRequest build = Request(v1::STAGE_KIND_BUILD);
  build.mutable_build()->add_config_indices(good);
  v1::StageResult b = executor_->Execute(build);
  ASSERT_THAT(b.error(), IsEmpty());
  ASSERT_EQ(b.build().artifacts(0).error(), v1::ERROR_KIND_NONE)
      << b.build().artifacts(0).error_msg();

  const std::string marker = absl::StrCat(::testing::TempDir(), "/loom_planted_ran_", getpid());
  std::filesystem::remove(marker);
  const std::string plant = PlantedObject(marker);
  ASSERT_FALSE(plant.empty()) << "g++ could not build the planted object";
  v1::Artifact planted;
  planted.set_config_index(good);
  planted.set_binary(plant);
  planted.set_content_hash(Sha256Hex(plant));

  v1::StageRequest measure = Request(v1::STAGE_KIND_MEASURE);
  measure.set_device(DeviceName());
  v1::MeasureInput* in = measure.mutable_measure();
  *in->add_artifacts() = b.build().artifacts(0);
  *in->add_artifacts() = planted;
  v1::Artifact failed;
  failed.set_config_index(good);
  failed.set_error(v1::ERROR_KIND_COMPILE);
  failed.set_error_msg("g++ said no");
  *in->add_artifacts() = failed;
  v1::StageResult m = executor_->Execute(measure);
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 3);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_NONE)
      << m.measure().results(0).error_msg();
  // The planted candidate was rebuilt here from its config and measured as that.
  EXPECT_EQ(m.measure().results(1).error(), v1::ERROR_KIND_NONE)
      << m.measure().results(1).error_msg();
  EXPECT_TRUE(m.measure().results(1).checked());
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the planted object was loaded";
  EXPECT_EQ(m.measure().results(2).error(), v1::ERROR_KIND_COMPILE);
  EXPECT_EQ(m.measure().results(2).error_msg(), "g++ said no");
  for (const auto& f :
       std::filesystem::recursive_directory_iterator(executor_->options().cache_dir)) {
    EXPECT_THAT(f.path().string(), Not(HasSubstr(planted.content_hash())));
  }

  // Another agent (another executor, nothing built) rebuilds the first agent's candidate.
  ExecutorOptions other = Options();
  other.cache_dir += "-other";
  auto e2 = StageExecutor::Create(other);
  ASSERT_TRUE(e2.ok()) << e2.status();
  v1::StageRequest elsewhere = Request(v1::STAGE_KIND_MEASURE);
  elsewhere.set_device(DeviceName());
  *elsewhere.mutable_measure()->add_artifacts() = b.build().artifacts(0);
  v1::StageResult m2 = (*e2)->Execute(elsewhere);
  ASSERT_THAT(m2.error(), IsEmpty());
  EXPECT_EQ(m2.measure().results(0).error(), v1::ERROR_KIND_NONE)
      << m2.measure().results(0).error_msg();
}

// A built default config of TinyConv, for measure tests.
v1::Artifact BuildDefault(StageExecutor& e) {
  auto tmpl = ops::MakeTemplate(TinyConv(), ops::HostCpuTarget());
  EXPECT_TRUE(tmpl.ok());
  v1::StageRequest build = Request(v1::STAGE_KIND_BUILD);
  build.mutable_build()->add_config_indices((*tmpl)->DefaultConfig().index);
  v1::StageResult b = e.Execute(build);
  EXPECT_THAT(b.error(), IsEmpty());
  EXPECT_EQ(b.build().artifacts_size(), 1);
  return b.build().artifacts(0);
}

v1::StageRequest MeasureOf(const v1::Artifact& a, const std::string& job) {
  v1::StageRequest m = Request(v1::STAGE_KIND_MEASURE);
  m.set_lease_id(absl::StrCat("measure-", job));
  m.set_job_id(job);
  m.set_device(DeviceName());
  *m.mutable_measure()->add_artifacts() = a;
  return m;
}

// The job's measure spec is layered over the agent's options: zero fields keep the agent's.
TEST_F(StageExecutorTest, MeasureSpecOverridesTheAgentsDefaults) {
  const v1::Artifact a = BuildDefault(*executor_);
  ASSERT_EQ(a.error(), v1::ERROR_KIND_NONE) << a.error_msg();
  v1::StageRequest plain = MeasureOf(a, "j1");
  v1::StageResult m = executor_->Execute(plain);
  ASSERT_THAT(m.error(), IsEmpty());
  EXPECT_EQ(m.measure().results(0).costs_size(), 2);  // Options(): repeat 2

  v1::StageRequest three = MeasureOf(a, "j1");
  three.mutable_measure_spec()->set_repeat(3);
  three.mutable_measure_spec()->set_min_repeat_ms(2);
  m = executor_->Execute(three);
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_NONE)
      << m.measure().results(0).error_msg();
  EXPECT_EQ(m.measure().results(0).costs_size(), 3);

  v1::StageRequest bad = MeasureOf(a, "j1");
  bad.mutable_measure_spec()->set_repeat(-1);
  EXPECT_THAT(executor_->Execute(bad).error(), HasSubstr("measure_spec fields must be"));
}

TEST(LayerMeasureSpecTest, NonZeroFieldsOverride) {
  tune::MeasureOptions base;
  base.repeat = 3;
  base.min_repeat_ms = 50;
  base.number = 1;
  base.timeout = absl::Seconds(10);
  v1::MeasureSpec spec;
  auto same = LayerMeasureSpec(base, spec);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->repeat, 3);
  EXPECT_EQ(same->min_repeat_ms, 50);
  EXPECT_EQ(same->timeout, absl::Seconds(10));
  EXPECT_FALSE(same->flush_cache);
  spec.set_min_repeat_ms(7);
  spec.set_number(4);
  spec.set_run_timeout_s(2.5);
  spec.set_flush_cache(true);
  auto layered = LayerMeasureSpec(base, spec);
  ASSERT_TRUE(layered.ok());
  EXPECT_EQ(layered->repeat, 3);
  EXPECT_EQ(layered->min_repeat_ms, 7);
  EXPECT_EQ(layered->number, 4);
  EXPECT_EQ(layered->timeout, absl::Milliseconds(2500));
  EXPECT_TRUE(layered->flush_cache);
  spec.set_run_timeout_s(-1);
  EXPECT_EQ(LayerMeasureSpec(base, spec).status().code(), absl::StatusCode::kInvalidArgument);
}

// Two measurements on one device: serialized unless oversubscribed (then each job has its own
// measurer worker and both run at once, as the embedded engine under `uncontrolled`). Each runs
// on a thread that ends after it: the pooled worker must outlive the thread that first used it.
TEST_F(StageExecutorTest, OversubscribedMeasurementsRunAtOnceOthersOneAtATime) {
  const v1::Artifact a = BuildDefault(*executor_);
  ASSERT_EQ(a.error(), v1::ERROR_KIND_NONE) << a.error_msg();
  for (bool oversubscribed : {false, true}) {
    SCOPED_TRACE(oversubscribed ? "oversubscribed" : "exclusive");
    std::vector<v1::StageRequest> reqs;
    for (const char* job : {"j1", "j2"}) {
      v1::StageRequest m = MeasureOf(a, job);
      m.mutable_measure_spec()->set_min_repeat_ms(100);
      m.set_oversubscribed(oversubscribed);
      reqs.push_back(m);
    }
    v1::StageResult out[2];
    std::thread t0([&] { out[0] = executor_->Execute(reqs[0]); });
    std::thread t1([&] { out[1] = executor_->Execute(reqs[1]); });
    t0.join();
    t1.join();
    // When each measured: [timestamp - measure_seconds, timestamp].
    absl::Time from[2], to[2];
    for (int i = 0; i < 2; ++i) {
      ASSERT_THAT(out[i].error(), IsEmpty());
      const v1::MeasureResult& r = out[i].measure().results(0);
      ASSERT_EQ(r.error(), v1::ERROR_KIND_NONE) << r.error_msg();
      to[i] = absl::FromUnixMicros(r.timestamp_unix_micros());
      from[i] = to[i] - absl::Seconds(r.measure_seconds());
    }
    const bool overlap = from[0] < to[1] && from[1] < to[0];
    EXPECT_EQ(overlap, oversubscribed);
  }
}

// A candidate that crashes the measure worker is an error record; the next one still measures.
TEST(StageExecutorFaultTest, CrashingCandidateIsAnErrorRecord) {
  auto e = StageExecutor::Create(Options(/*faults=*/true));
  ASSERT_TRUE(e.ok()) << e.status();
  auto tmpl = ops::MakeTemplate(TinyConv(), ops::HostCpuTarget(), {.test_faults = true});
  ASSERT_TRUE(tmpl.ok());
  const ops::ConfigSpace& space = (*tmpl)->space();
  size_t fault_knob = space.knobs().size();
  for (size_t i = 0; i < space.knobs().size(); ++i) {
    if (space.knobs()[i].name == "fault") fault_knob = i;
  }
  ASSERT_LT(fault_knob, space.knobs().size());
  std::vector<int64_t> choices = space.Choices((*tmpl)->DefaultConfig());
  choices[fault_knob] = 1;  // crash
  int64_t crash = space.FromChoices(choices).index;
  choices[fault_knob] = 0;
  int64_t fine = space.FromChoices(choices).index;

  v1::StageRequest build = Request(v1::STAGE_KIND_BUILD);
  build.set_cpu_slots(2);
  build.mutable_build()->add_config_indices(crash);
  build.mutable_build()->add_config_indices(fine);
  v1::StageResult b = (*e)->Execute(build);
  ASSERT_THAT(b.error(), IsEmpty());
  v1::StageRequest measure = Request(v1::STAGE_KIND_MEASURE);
  measure.set_device(DeviceName());
  *measure.mutable_measure()->mutable_artifacts() = b.build().artifacts();
  v1::StageResult m = (*e)->Execute(measure);
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 2);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_RUNTIME);
  EXPECT_THAT(m.measure().results(0).error_msg(), HasSubstr("SIG"));
  EXPECT_EQ(m.measure().results(1).error(), v1::ERROR_KIND_NONE)
      << m.measure().results(1).error_msg();
}

// CPU stages run confined to the executor's cpu_cores (here the first allowed core).
TEST(StageExecutorPinningTest, CpuStagesRunOnTheirCores) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  sched_getaffinity(0, sizeof(allowed), &allowed);
  int first = 0;
  while (!CPU_ISSET(first, &allowed)) ++first;
  ExecutorOptions o = Options();
  o.cpu_cores = {first};
  auto e = StageExecutor::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  int count = -1;
  bool has_first = false;
  v1::StageRequest r = Request(v1::STAGE_KIND_PROPOSE);
  r.mutable_tuner()->set_no_prior(true);
  std::unique_ptr<tune::TaskSession> daemon = DaemonSession(r, ops::HostCpuTarget());
  ASSERT_NE(daemon, nullptr);
  r = ProposeIn(r, *daemon);
  std::thread t([&] {
    EXPECT_THAT((*e)->Execute(r).error(), IsEmpty());
    cpu_set_t now;
    CPU_ZERO(&now);
    sched_getaffinity(0, sizeof(now), &now);
    count = CPU_COUNT(&now);
    has_first = CPU_ISSET(first, &now);
  });
  t.join();
  EXPECT_EQ(count, 1);
  EXPECT_TRUE(has_first);
}

TEST(ParseDeviceTest, FormsAndErrors) {
  auto one = ParseDevice("cpu:1");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->kind, "cpu");
  EXPECT_EQ(one->cores, std::vector<int>({1}));
  auto range = ParseDevice("cpu:2-4");
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->cores, std::vector<int>({2, 3, 4}));
  auto gpu = ParseDevice("cuda:0");
  ASSERT_TRUE(gpu.ok());
  EXPECT_EQ(gpu->kind, "cuda");
  for (const char* bad : {"cpu", "cpu:", "cpu:x", "cpu:3-1", "tpu:0", "cuda:-1", "1"}) {
    auto d = ParseDevice(bad);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(d.status().message(), HasSubstr("expected cpu:CORE")) << bad;
  }
  v1::DeviceInfo info = DescribeDevice(*one);
  EXPECT_EQ(info.name(), "cpu:1");
  EXPECT_EQ(info.target_key(), ops::HostCpuTarget().Key());
  EXPECT_FALSE(info.isa().empty());
}

#ifdef LOOM_FAKE_LIBCUDA

// An executor with one GPU, cuda:0, behind the fake driver.
ExecutorOptions CudaOptions() {
  ExecutorOptions o = Options();
  o.devices = {*ParseDevice("cuda:0")};
  o.cuda_measure = {.number = 1,
                    .repeat = 2,
                    .min_repeat_ms = 2,
                    .timeout = absl::Seconds(3),
                    .setup_timeout = absl::Seconds(30),
                    .driver_library = LOOM_FAKE_LIBCUDA,
                    .worker_command = {SelfExe(), tune::kCudaMeasureWorkerArg}};
  return o;
}

constexpr char kFakeKey[] = "cuda:sm_90:Fake GPU";

v1::StageRequest CudaRequest(v1::StageKind kind) {
  v1::StageRequest r = Request(kind);
  r.mutable_task()->set_target_kind("cuda");
  r.mutable_task()->set_cuda_arch("sm_90");
  r.mutable_task()->set_target_key(kFakeKey);
  return r;
}

// The fake GPU as the executor's probe sees it (4 SMs), for the template the stages use.
std::unique_ptr<ops::Template> CudaConvTemplate(const StageExecutor& e) {
  auto t = ops::MakeTemplate(TinyConv(), e.options().devices[0].cuda_target);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// A candidate as a build stage reports it: its config and its object's hash.
v1::Artifact HashOnly(int64_t config) {
  v1::Artifact a;
  a.set_config_index(config);
  a.set_content_hash(Sha256Hex("an object"));
  return a;
}

// Builds the fake driver's "kernels": config -> "loom-fake-kernel PROGRAM" (tune/testing/
// fake_libcuda.cc), so the executor's own builds of those configs run on the fake GPU.
class FakeKernelBuilder final : public tune::Builder {
 public:
  FakeKernelBuilder(std::string dir, std::map<int64_t, std::string> programs)
      : dir_(std::move(dir)), programs_(std::move(programs)) {}
  std::vector<tune::BuildResult> Build(const ops::Template&,
                                       const std::vector<ops::Config>& configs) override {
    std::vector<tune::BuildResult> out;
    for (const ops::Config& c : configs) out.push_back(BuildSource({}, c));
    return out;
  }
  tune::BuildResult BuildSource(const ops::KernelSource&, const ops::Config& c) override {
    const std::string path = absl::StrCat(dir_, "/fake-", c.index, ".cubin");
    std::ofstream(path, std::ios::binary) << "loom-fake-kernel " << programs_[c.index];
    return tune::BuildResult{.config = c, .artifact_path = path};
  }
  const std::string& cache_dir() const override { return dir_; }

 private:
  std::string dir_;
  std::map<int64_t, std::string> programs_;
};

TEST(CudaStageExecutorTest, CreateProbesTheGpuAndDescribesIt) {
  auto e = StageExecutor::Create(CudaOptions());
  ASSERT_TRUE(e.ok()) << e.status();
  const Device& d = (*e)->options().devices[0];
  EXPECT_TRUE(d.probed);
  EXPECT_EQ(d.cuda_target.kind, "cuda");
  EXPECT_EQ(d.cuda_target.cuda_arch, "sm_90");  // the fake's compute capability 9.0
  EXPECT_EQ(d.cuda_target.device_name, "Fake GPU");
  EXPECT_EQ(d.cuda_target.cuda_limits.num_sms, 4);
  v1::DeviceInfo info = DescribeDevice(d);
  EXPECT_EQ(info.name(), "cuda:0");
  EXPECT_EQ(info.kind(), "cuda");
  EXPECT_EQ(info.target_key(), kFakeKey);
  EXPECT_EQ(info.cuda_arch(), "sm_90");
  EXPECT_EQ(info.lends_cpu_slots(), 0);
}

TEST(CudaStageExecutorTest, MissingDriverOrGpuFailsCreateNamingTheDevice) {
  ExecutorOptions o = CudaOptions();
  o.cuda_measure.driver_library = "/nonexistent/libcuda.so.1";
  absl::Status st = StageExecutor::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("device cuda:0: "));
  EXPECT_THAT(st.message(), HasSubstr("not found: no NVIDIA driver on this host"));

  o = CudaOptions();
  o.devices = {*ParseDevice("cuda:3")};
  st = StageExecutor::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("device cuda:3: "));
  EXPECT_THAT(st.message(), HasSubstr("CUDA device 3 does not exist"));

  EXPECT_EQ(ProbeCudaDevice(*ParseDevice("cpu:0"), o.cuda_measure).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Propose picks configs of the CUDA template that fit the GPU; build compiles one with NVRTC to a
// cubin whose SHA-256 travels, and rejects a config over the GPU's limits.
TEST(CudaStageExecutorTest, ProposeAndNvrtcBuildOfACudaConv) {
  auto e = StageExecutor::Create(CudaOptions());
  ASSERT_TRUE(e.ok()) << e.status();
  std::unique_ptr<ops::Template> tmpl = CudaConvTemplate(**e);
  ASSERT_NE(tmpl, nullptr);
  EXPECT_THAT(tmpl->name(), HasSubstr("cuda"));

  std::unique_ptr<tune::TaskSession> daemon =
      DaemonSession(CudaRequest(v1::STAGE_KIND_PROPOSE), (*e)->options().devices[0].cuda_target);
  ASSERT_NE(daemon, nullptr);
  v1::StageRequest propose = ProposeIn(CudaRequest(v1::STAGE_KIND_PROPOSE), *daemon);
  v1::StageResult p = (*e)->Execute(propose);
  ASSERT_THAT(p.error(), IsEmpty());
  ASSERT_EQ(p.propose().config_indices_size(), 4);
  for (int64_t index : p.propose().config_indices()) {
    EXPECT_TRUE(tmpl->Emit(ops::Config{index}).ok()) << index;
  }

  if (absl::IsUnimplemented(tune::MakeNvrtcBuilder({}).status())) {
    GTEST_SKIP() << "built without the CUDA toolkit";
  }
  int64_t invalid = -1;
  for (int64_t i = 0; i < tmpl->space().size() && invalid < 0; ++i) {
    if (!tmpl->Emit(ops::Config{i}).ok()) invalid = i;
  }
  ASSERT_GE(invalid, 0);
  v1::StageRequest build = CudaRequest(v1::STAGE_KIND_BUILD);
  build.mutable_build()->add_config_indices(tmpl->DefaultConfig().index);
  build.mutable_build()->add_config_indices(invalid);
  v1::StageResult b = (*e)->Execute(build);
  ASSERT_THAT(b.error(), IsEmpty());
  ASSERT_EQ(b.build().artifacts_size(), 2);
  const v1::Artifact& cubin = b.build().artifacts(0);
  ASSERT_EQ(cubin.error(), v1::ERROR_KIND_NONE) << cubin.error_msg();
  EXPECT_EQ(cubin.config_index(), tmpl->DefaultConfig().index);
  EXPECT_TRUE(cubin.binary().empty());  // only the hash travels
  EXPECT_EQ(cubin.content_hash().size(), 64u);
  EXPECT_GT(cubin.build_seconds(), 0);
  EXPECT_EQ(b.build().artifacts(1).error(), v1::ERROR_KIND_INSTANTIATION);
  EXPECT_TRUE(b.build().artifacts(1).binary().empty());

  // The fake driver cannot load a real cubin: a runtime error of that candidate, not the stage.
  v1::StageRequest measure = CudaRequest(v1::STAGE_KIND_MEASURE);
  measure.set_device("cuda:0");
  *measure.mutable_measure()->add_artifacts() = cubin;
  v1::StageResult m = (*e)->Execute(measure);
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 1);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_RUNTIME);
  EXPECT_THAT(m.measure().results(0).error_msg(),
              HasSubstr("cuModuleLoadData failed: CUDA_ERROR_INVALID_IMAGE"));
}

// The executor's own builds reach the CUDA measurer; the fake driver runs its conv on the CPU,
// checked against the real template's reference; measure_spec's repeat applies.
TEST(CudaStageExecutorTest, MeasureThroughTheFakeDriver) {
  ExecutorOptions o = CudaOptions();
  int64_t config = 0, zero = 0;
  {
    auto probe = StageExecutor::Create(o);
    ASSERT_TRUE(probe.ok()) << probe.status();
    std::unique_ptr<ops::Template> tmpl = CudaConvTemplate(**probe);
    ASSERT_NE(tmpl, nullptr);
    config = tmpl->DefaultConfig().index;
    zero = -1;  // another config the GPU runs
    for (int64_t i = 0; i < tmpl->space().size() && zero < 0; ++i) {
      if (i != config && tmpl->Emit(ops::Config{i}).ok()) zero = i;
    }
    ASSERT_GE(zero, 0);
  }
  std::filesystem::create_directories(o.cache_dir);
  o.make_builder =
      [&](const ops::Target&,
          const tune::BuildOptions& b) -> absl::StatusOr<std::unique_ptr<tune::Builder>> {
    return std::make_unique<FakeKernelBuilder>(
        b.cache_dir,
        std::map<int64_t, std::string>{{config, "conv2d 1 8 6 6 8 3 3 1 1"}, {zero, "zero"}});
  };
  auto e = StageExecutor::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();
  v1::StageRequest build = CudaRequest(v1::STAGE_KIND_BUILD);
  build.mutable_build()->add_config_indices(config);
  build.mutable_build()->add_config_indices(zero);
  v1::StageResult b = (*e)->Execute(build);
  ASSERT_THAT(b.error(), IsEmpty());
  v1::StageRequest measure = CudaRequest(v1::STAGE_KIND_MEASURE);
  measure.set_device("cuda:0");
  measure.mutable_measure_spec()->set_repeat(3);
  *measure.mutable_measure()->mutable_artifacts() = b.build().artifacts();
  v1::StageResult m = (*e)->Execute(measure);
  ASSERT_THAT(m.error(), IsEmpty());
  EXPECT_EQ(m.timing().resource(), "test/cuda:0");
  ASSERT_EQ(m.measure().results_size(), 2);
  const v1::MeasureResult& ok = m.measure().results(0);
  ASSERT_EQ(ok.error(), v1::ERROR_KIND_NONE) << ok.error_msg();
  EXPECT_EQ(ok.config_index(), config);
  EXPECT_TRUE(ok.checked());
  ASSERT_EQ(ok.costs_size(), 3);
  for (double c : ok.costs()) {
    EXPECT_GT(c, 0);
    EXPECT_LT(c, 0.1);
  }
  EXPECT_EQ(m.measure().results(1).error(), v1::ERROR_KIND_WRONG_ANSWER);
  EXPECT_FALSE(m.measure().results(1).checked());
}

TEST(CudaStageExecutorTest, TasksOfOneKindNeverMeasureOnADeviceOfTheOther) {
  ExecutorOptions o = CudaOptions();
  o.devices.push_back(*ParseDevice(DeviceName()));
  auto e = StageExecutor::Create(o);
  ASSERT_TRUE(e.ok()) << e.status();

  v1::StageRequest cpu_on_gpu = Request(v1::STAGE_KIND_MEASURE);
  cpu_on_gpu.set_device("cuda:0");
  *cpu_on_gpu.mutable_measure()->add_artifacts() = HashOnly(0);
  v1::StageResult r = (*e)->Execute(cpu_on_gpu);
  EXPECT_THAT(r.error(), HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(r.error(), HasSubstr("the task is a cpu task but device cuda:0 is a cuda device"));

  v1::StageRequest gpu_on_cpu = CudaRequest(v1::STAGE_KIND_MEASURE);
  gpu_on_cpu.set_device(DeviceName());
  *gpu_on_cpu.mutable_measure()->add_artifacts() = HashOnly(0);
  r = (*e)->Execute(gpu_on_cpu);
  EXPECT_THAT(r.error(), HasSubstr(absl::StrCat("the task is a cuda task but device ", DeviceName(),
                                                " is a cpu device")));

  // Another GPU's task (target key) is refused by this one.
  v1::StageRequest other = CudaRequest(v1::STAGE_KIND_MEASURE);
  other.set_device("cuda:0");
  other.mutable_task()->set_target_key("cuda:sm_80:Other GPU");
  *other.mutable_measure()->add_artifacts() = HashOnly(0);
  r = (*e)->Execute(other);
  EXPECT_THAT(r.error(),
              HasSubstr("the task is for target 'cuda:sm_80:Other GPU' but device cuda:0 is "
                        "'cuda:sm_90:Fake GPU'"));

  v1::StageRequest bad_arch = CudaRequest(v1::STAGE_KIND_BUILD);
  bad_arch.mutable_task()->set_cuda_arch("compute_x");
  bad_arch.mutable_build()->add_config_indices(0);
  r = (*e)->Execute(bad_arch);
  EXPECT_THAT(r.error(), HasSubstr("bad CUDA architecture 'compute_x'"));
}

#endif  // LOOM_FAKE_LIBCUDA

TEST(Sha256Test, KnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace loom::agent

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kMeasureWorkerArg) {
    return loom::tune::RunMeasureWorker(0, 1);
  }
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kCudaMeasureWorkerArg) {
    return loom::tune::RunCudaMeasureWorker(0, 1);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
