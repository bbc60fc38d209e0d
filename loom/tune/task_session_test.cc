#include "loom/tune/task_session.h"

#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/toolchain/testing/fake_builder.h"
#include "loom/toolchain/testing/fake_measurer.h"
#include "loom/tune/tune_job.h"

namespace loom::tune {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

MATCHER_P2(StatusIs, code, matcher, "") {
  return arg.code() == code &&
         ::testing::ExplainMatchResult(matcher, arg.message(), result_listener);
}

graph::Task ConvTask(int64_t c = 32, int64_t k = 32, int64_t hw = 14, int64_t groups = 1) {
  graph::Workload w;
  w.kind = groups == 1 ? graph::TaskKind::kConv2d : graph::TaskKind::kGroupedConv2d;
  w.n = 1, w.c = c, w.h = hw, w.w = hw, w.k = k, w.r = 3, w.s = 3;
  w.stride_h = w.stride_w = 1;
  w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
  w.dilation_h = w.dilation_w = 1;
  w.groups = groups;
  graph::Task t;
  t.workload = w;
  t.key = graph::WorkloadKey(w);
  t.hash = graph::StableHash(t.key);
  t.count = 1;
  t.flops = graph::WorkloadFlops(w);
  return t;
}

TaskTunerOptions Options(const std::string& job, int64_t trials,
                         const std::string& kind = "random") {
  TaskTunerOptions o;
  o.trials = trials;
  o.batch_size = 4;
  o.tuner.kind = kind;
  o.tuner.seed = 5;
  o.job_id = job;
  o.measure_default = false;
  return o;
}

// Runs every stage the session asks for, on this thread; returns the propose requests' batch
// sizes.
std::vector<int> RunAll(TaskSession& session, Builder& builder, Measurer& measurer,
                        const RoundResources& resources = {}) {
  std::vector<int> batches;
  const StageEnv env{.builder = &builder, .measurer = &measurer, .resources = resources};
  for (SessionRequest r = session.Next(); !r.done; r = session.Next()) {
    if (r.kind == sched::StageKind::kPropose) batches.push_back(r.batch_size);
    absl::StatusOr<StageOutcome> out = RunStage(session, r, env);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) break;
    absl::Status done = session.Complete(*out);
    EXPECT_TRUE(done.ok()) << done;
    if (!done.ok()) break;
  }
  return batches;
}

std::unique_ptr<RecordStore> MemoryStore() {
  auto store = OpenSqliteRecordStore(":memory:");
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

// Tunes `task` for job `job` to its budget of `trials` with the fakes, storing into `store`;
// returns the session's best cost.
double TuneInto(RecordStore* store, const graph::Task& task, const std::string& job,
                int64_t trials) {
  FakeBuilder builder;
  FakeMeasurer measurer;
  auto t = TaskSession::Create(task, ops::HostCpuTarget(), Options(job, trials), store);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return 0;
  RunAll(**t, builder, measurer);
  return (*t)->best_cost();
}

TEST(TaskSessionTest, RunsRoundsUntilBudgetAndStoresRecordsAndTimings) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  auto t = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 10), store.get());
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<int> batch_sizes =
      RunAll(**t, builder, measurer, {.cpu = "cpu:0", .device = "device:cpu:1"});
  EXPECT_EQ(batch_sizes, (std::vector<int>{4, 4, 2}));
  EXPECT_EQ((*t)->trials_done(), 10);
  EXPECT_EQ(*store->Count({.job_id = "j1"}), 10);
  auto timings = store->StageTimings("j1");
  ASSERT_TRUE(timings.ok());
  EXPECT_EQ(timings->size(), 12u);  // 3 rounds x 4 stages
  EXPECT_EQ(timings->back().round, 2);
  EXPECT_EQ((*timings)[0].timing.stage, "propose");
  EXPECT_EQ((*timings)[0].timing.resource, "cpu:0");
  EXPECT_EQ((*timings)[2].timing.stage, "measure");
  EXPECT_EQ((*timings)[2].timing.resource, "device:cpu:1");
  EXPECT_EQ((*timings)[3].timing.stage, "update");
  // The best cost is the minimum over the successful records.
  auto best = store->BestK(ConvTask().key, ops::HostCpuTarget().Key(), 1);
  ASSERT_TRUE(best.ok());
  ASSERT_EQ(best->size(), 1u);
  EXPECT_DOUBLE_EQ((*t)->best_cost(), (*best)[0].median_cost);
}

TEST(TaskSessionTest, ResumesFromTheSameJobWithoutRepeatingConfigs) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  TuneInto(store.get(), ConvTask(), "j1", 8);
  auto again = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 8), store.get());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->resumed_trials(), 8);
  EXPECT_TRUE((*again)->Done());

  auto more = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j1", 20), store.get());
  ASSERT_TRUE(more.ok());
  EXPECT_EQ((*more)->Next().batch_size, 4);
  RunAll(**more, builder, measurer);
  auto records = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "j1");
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 20u);
  std::set<int64_t> configs;
  for (const auto& r : *records) configs.insert(r.config_index);
  EXPECT_EQ(configs.size(), 20u) << "a resumed job re-measured a config";
}

TEST(TaskSessionTest, SimilarTasksSeedTheModelWithoutBecomingHistory) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  TuneInto(store.get(), ConvTask(32, 32, 14), "a", 12);
  // Another conv (more output channels): same template, a similar workload.
  auto similar = TaskSession::Create(ConvTask(32, 64, 14), ops::HostCpuTarget(),
                                     Options("b", 8, "xgb"), store.get());
  ASSERT_TRUE(similar.ok()) << similar.status();
  EXPECT_GT((*similar)->similar_records(), 0);
  EXPECT_LE((*similar)->similar_records(), 12);
  EXPECT_EQ((*similar)->transferred_records(), 0);
  EXPECT_EQ((*similar)->trials_done(), 0);
  EXPECT_EQ((*similar)->tuner().num_visited(), 0);
  EXPECT_FALSE((*similar)->tuner().has_best());

  TaskTunerOptions off = Options("c", 8, "xgb");
  off.transfer = false;
  auto alone = TaskSession::Create(ConvTask(32, 64, 14), ops::HostCpuTarget(), off, store.get());
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ((*alone)->similar_records(), 0);
}

TEST(TaskSessionTest, OtherJobsRecordsSeedTheTuner) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  const double first_best = TuneInto(store.get(), ConvTask(), "a", 12);
  auto b = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("b", 4), store.get());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->transferred_records(), 12);
  EXPECT_EQ((*b)->resumed_trials(), 0);
  EXPECT_DOUBLE_EQ((*b)->best_cost(), first_best);

  TaskTunerOptions no_transfer = Options("c", 4);
  no_transfer.transfer = false;
  auto c = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), no_transfer, store.get());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->transferred_records(), 0);
  EXPECT_FALSE((*c)->tuner().has_best());
}

TEST(TaskSessionTest, ATuningPriorSeedsTheModelWithoutAStoreOrTrials) {
  // A prior of a similar conv on an AVX-512 machine: its valid configs, faster with more
  // output-channel vectors.
  ops::Target target;
  target.isa = ops::Isa::kAvx512;
  target.cpu_model = "Test CPU";
  const graph::Task other = ConvTask(32, 64, 28);
  auto other_tmpl = ops::MakeTemplate(other.workload, target);
  ASSERT_TRUE(other_tmpl.ok());
  const ops::ConfigSpace& space = (*other_tmpl)->space();
  auto prior = std::make_shared<search::TuningPrior>();
  prior->target_class = "cpu:avx512";
  search::PriorTask task{other.key, (*other_tmpl)->name(), {}, {}};
  for (const auto& k : space.knobs()) task.knobs.push_back(k.name);
  for (int64_t i = 0; i < space.size() && task.configs.size() < 40; i += 7) {
    if (space.IsValid({i})) {
      task.configs.push_back({space.Values({i}), 10.0 * space.Value({i}, "tile_oc")});
    }
  }
  prior->tasks.push_back(task);

  TaskTunerOptions with = Options("p", 8, "xgb");
  with.prior = prior;
  auto t = TaskSession::Create(ConvTask(32, 64, 14), target, with, /*store=*/nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->prior_records(), 40);
  EXPECT_EQ((*t)->trials_done(), 0);
  EXPECT_EQ((*t)->tuner().num_visited(), 0);
  EXPECT_FALSE((*t)->tuner().has_best());

  TaskTunerOptions off = with;
  off.use_prior = false;
  auto without = TaskSession::Create(ConvTask(32, 64, 14), target, off, nullptr);
  ASSERT_TRUE(without.ok());
  EXPECT_EQ((*without)->prior_records(), 0);
  TaskTunerOptions no_transfer = with;
  no_transfer.transfer = false;
  auto alone = TaskSession::Create(ConvTask(32, 64, 14), target, no_transfer, nullptr);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ((*alone)->prior_records(), 0);
  TaskTunerOptions random = with;
  random.tuner.kind = "random";  // no model to seed
  auto r = TaskSession::Create(ConvTask(32, 64, 14), target, random, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->prior_records(), 0);
  // Another ISA's tuner gets nothing from an AVX-512 prior.
  ops::Target avx2 = target;
  avx2.isa = ops::Isa::kAvx2;
  auto a = TaskSession::Create(ConvTask(32, 64, 14), avx2, with, nullptr);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->prior_records(), 0);
}

TEST(TaskSessionTest, StaleRecordsWhoseConfigNoLongerMatchAreIgnored) {
  auto store = MemoryStore();
  auto t = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 4), store.get());
  ASSERT_TRUE(t.ok());
  Record stale =
      MakeRecord((*t)->record_context(), MeasureResult{.config = ops::Config{3}, .costs = {1e-4}},
                 R"({"some_old_knob":1})", 0.1);
  ASSERT_TRUE(store->Append({stale}).ok());
  auto fresh = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 4), store.get());
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->resumed_trials(), 0);
  EXPECT_FALSE((*fresh)->tuner().has_best());
}

TEST(TaskSessionTest, MeasurementErrorsAreRecordsAndTuningGoesOn) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer(FakeMeasurer::Options{.error = [](const ops::Config& c) {
    return c.index % 2 == 0 ? ErrorKind::kRuntime : ErrorKind::kNone;
  }});
  auto t = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 16), store.get());
  ASSERT_TRUE(t.ok());
  RunAll(**t, builder, measurer);
  auto records = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "j");
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 16u);
  int64_t errors = 0;
  for (const auto& r : *records) errors += !r.ok();
  EXPECT_EQ((*t)->errors(), errors);
  EXPECT_GT(errors, 0);
  EXPECT_TRUE((*t)->tuner().has_best());
}

// The configs a session proposes, round by round, stopping (with its state saved, serialized and
// parsed back) after `stop_after` stages when stop_after >= 0.
struct Driven {
  std::vector<int64_t> proposed;
  std::optional<v1::TaskSessionState> saved;
};
Driven Drive(TaskSession& session, Builder& builder, Measurer& measurer, int stop_after = -1) {
  Driven d;
  const StageEnv env{.builder = &builder, .measurer = &measurer};
  int stages = 0;
  for (SessionRequest r = session.Next(); !r.done; r = session.Next()) {
    if (stages++ == stop_after) {
      std::string bytes;
      EXPECT_TRUE(session.Save().SerializeToString(&bytes));
      v1::TaskSessionState parsed;
      EXPECT_TRUE(parsed.ParseFromString(bytes));
      d.saved = parsed;
      return d;
    }
    absl::StatusOr<StageOutcome> out = RunStage(session, r, env);
    EXPECT_TRUE(out.ok()) << out.status();
    for (const ops::Config& c : out->configs) d.proposed.push_back(c.index);
    EXPECT_TRUE(session.Complete(*out).ok());
  }
  return d;
}

TaskTunerOptions XgbOptions(const std::string& job) {
  TaskTunerOptions o = Options(job, 24, "xgb");
  o.tuner.plan_size = 8;  // several refits within the budget
  o.tuner.sa_iters = 50;
  o.tuner.sa_parallel = 16;
  o.tuner.xgb_rounds = 10;
  o.measure_default = true;
  return o;
}

TEST(TaskSessionTest, ARestoredSessionProposesWhatAnUninterruptedOneWould) {
  FakeBuilder builder;
  FakeMeasurer measurer;
  for (const std::string kind : {"xgb", "ga", "random"}) {
    // Another job's records of the task (transfer) are in the store before either session starts.
    auto store = MemoryStore();
    TuneInto(store.get(), ConvTask(), "a", 12);
    TaskTunerOptions options = XgbOptions("b");
    options.tuner.kind = kind;
    auto whole = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), options, store.get());
    ASSERT_TRUE(whole.ok()) << whole.status();
    ASSERT_EQ((*whole)->transferred_records(), 12);
    auto first = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), options, store.get());
    ASSERT_TRUE(first.ok());
    const Driven uninterrupted = Drive(**whole, builder, measurer);
    ASSERT_EQ(uninterrupted.proposed.size(), 24u);

    // Stop in the middle of round 3's build (stage 4 * 3 + 1 is its build), and at a round's end;
    // restore from the saved tuner state, and (a state written before tuners saved theirs) by
    // replaying the rounds.
    for (int stop : {13, 16}) {
      for (bool replay : {false, true}) {
        SCOPED_TRACE(absl::StrCat(kind, " stop ", stop, replay ? " replay" : " tuner state"));
        // The same history as the first sessions had: take it from their state.
        v1::TaskSessionState initial = (*first)->Save();
        auto seeded =
            TaskSession::Restore(initial, ConvTask(), ops::HostCpuTarget(), options, nullptr);
        ASSERT_TRUE(seeded.ok()) << seeded.status();
        EXPECT_EQ((*seeded)->transferred_records(), 12);
        Driven before = Drive(**seeded, builder, measurer, stop);
        ASSERT_TRUE(before.saved.has_value());
        EXPECT_EQ(before.saved->has_pending(), stop == 13);
        ASSERT_TRUE(before.saved->has_tuner());
        if (replay) before.saved->clear_tuner();
        auto resumed =
            TaskSession::Restore(*before.saved, ConvTask(), ops::HostCpuTarget(), options, nullptr);
        ASSERT_TRUE(resumed.ok()) << resumed.status();
        EXPECT_EQ((*resumed)->round(), 3 + (stop == 16));
        // Three finished rounds (and the one in flight) replayed, or none.
        EXPECT_EQ((*resumed)->replayed_rounds(), replay ? 4 : 0);
        EXPECT_EQ((*resumed)->Next().kind,
                  stop == 13 ? sched::StageKind::kBuild : sched::StageKind::kPropose);
        Driven after = Drive(**resumed, builder, measurer);
        std::vector<int64_t> all = before.proposed;
        all.insert(all.end(), after.proposed.begin(), after.proposed.end());
        EXPECT_EQ(all, uninterrupted.proposed);
        EXPECT_EQ((*resumed)->trials_done(), 24);
        EXPECT_DOUBLE_EQ((*resumed)->best_cost(), (*whole)->best_cost());
        EXPECT_DOUBLE_EQ((*resumed)->Outcome().default_cost, (*whole)->Outcome().default_cost);
      }
    }
  }
}

// Drives a session whose tuner is elsewhere as the service does: propose and update run in a
// session restored from its saved state (RunRestoredStage, as an agent), build and measure here.
// Returns the proposed config indices in order.
std::vector<int64_t> DriveElsewhere(TaskSession& session, const graph::Task& task,
                                    const TaskTunerOptions& options, Builder& builder,
                                    Measurer& measurer) {
  std::vector<int64_t> proposed;
  const StageEnv env{.builder = &builder, .measurer = &measurer};
  for (SessionRequest r = session.Next(); !r.done; r = session.Next()) {
    absl::StatusOr<StageOutcome> out =
        r.kind == sched::StageKind::kPropose || r.kind == sched::StageKind::kUpdate
            ? RunRestoredStage(session.Save(), task, ops::HostCpuTarget(), options, r)
            : RunStage(session, r, env);
    EXPECT_TRUE(out.ok()) << out.status() << " at " << sched::StageKindName(r.kind);
    if (!out.ok()) break;
    // Each restored stage continues from the tuner state the one before it left: no replay.
    EXPECT_EQ(out->replayed_rounds, 0) << "round " << r.round;
    // The records of an update are the caller's to store; the session only counts them.
    if (r.kind == sched::StageKind::kPropose) {
      for (const ops::Config& c : out->configs) proposed.push_back(c.index);
    }
    absl::Status done = session.Complete(*out);
    EXPECT_TRUE(done.ok()) << done;
    if (!done.ok()) break;
  }
  return proposed;
}

TEST(TaskSessionTest, ASessionWhoseTunerRunsElsewhereProposesWhatALocalOneDoes) {
  for (const std::string kind : {"xgb", "ga", "random"}) {
    SCOPED_TRACE(kind);
    auto store = MemoryStore();
    FakeBuilder builder;
    FakeMeasurer measurer;
    TuneInto(store.get(), ConvTask(), "a", 12);  // transfer from another job
    TaskTunerOptions options = XgbOptions("b");
    options.tuner.kind = kind;
    options.tuner.early_stopping = kind == "random" ? 6 : -1;
    auto local = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), options, store.get());
    ASSERT_TRUE(local.ok()) << local.status();
    TaskTunerOptions elsewhere = options;
    elsewhere.tuner_elsewhere = true;
    // Both before either runs: the local one's baseline record would be transfer data.
    auto remote = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), elsewhere, store.get());
    ASSERT_TRUE(remote.ok()) << remote.status();
    const Driven uninterrupted = Drive(**local, builder, measurer);
    EXPECT_EQ((*remote)->transferred_records(), 12);
    EXPECT_EQ(DriveElsewhere(**remote, ConvTask(), options, builder, measurer),
              uninterrupted.proposed);
    EXPECT_EQ((*remote)->trials_done(), (*local)->trials_done());
    EXPECT_DOUBLE_EQ((*remote)->best_cost(), (*local)->best_cost());
    EXPECT_EQ((*remote)->Outcome().best_config_json, (*local)->Outcome().best_config_json);
    if (kind == "random") {
      EXPECT_LT((*remote)->trials_done(), 24);  // early stopping, decided by the agent's tuner
    }
    // The daemon keeps the agent's tuner state (checked), so stages do not replay.
    EXPECT_TRUE((*remote)->Save().has_tuner());
    // A restart of the daemon: the state restores without a tuner, at the same place.
    auto again = TaskSession::Restore((*remote)->Save(), ConvTask(), ops::HostCpuTarget(),
                                      elsewhere, nullptr);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_TRUE((*again)->Done());
    EXPECT_EQ((*again)->trials_done(), (*local)->trials_done());
  }
}

// The cost of a restored stage does not grow with the rounds before it: with the tuner's saved
// state nothing is replayed; a state without one (older records) replays every finished round.
TEST(TaskSessionTest, ARestoredStageReplaysNothingWithATunerStateAndEveryRoundWithout) {
  FakeBuilder builder;
  FakeMeasurer measurer;
  TaskTunerOptions options = XgbOptions("j");
  options.trials = 40;
  options.use_prior = false;
  auto s = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), options, nullptr);
  ASSERT_TRUE(s.ok()) << s.status();
  const StageEnv env{.builder = &builder, .measurer = &measurer};
  std::vector<int64_t> with_state, without_state;
  for (SessionRequest r = (*s)->Next(); !r.done; r = (*s)->Next()) {
    if (r.kind == sched::StageKind::kPropose) {
      v1::TaskSessionState state = (*s)->Save();
      auto fast = RunRestoredStage(state, ConvTask(), ops::HostCpuTarget(), options, r);
      ASSERT_TRUE(fast.ok()) << fast.status();
      with_state.push_back(fast->replayed_rounds);
      state.clear_tuner();
      auto slow = RunRestoredStage(state, ConvTask(), ops::HostCpuTarget(), options, r);
      ASSERT_TRUE(slow.ok()) << slow.status();
      without_state.push_back(slow->replayed_rounds);
      EXPECT_EQ(fast->configs, slow->configs) << "round " << r.round;
    }
    auto out = RunStage(**s, r, env);
    ASSERT_TRUE(out.ok());
    ASSERT_TRUE((*s)->Complete(*out).ok());
  }
  EXPECT_THAT(with_state, ElementsAre(0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
  EXPECT_THAT(without_state, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
}

// A tuner state from elsewhere is checked before the session keeps it.
TEST(TaskSessionTest, AProposalWhoseTunerStateDoesNotAgreeIsRefused) {
  TaskTunerOptions options = Options("j", 8);
  auto local = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), options, nullptr);
  ASSERT_TRUE(local.ok());
  auto proposed = RunStage(**local, (*local)->Next(), StageEnv{});
  ASSERT_TRUE(proposed.ok());
  TaskTunerOptions elsewhere = options;
  elsewhere.tuner_elsewhere = true;
  auto daemon = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), elsewhere, nullptr);
  ASSERT_TRUE(daemon.ok());
  StageOutcome forged = *proposed;
  absl::StatusOr<v1::TunerState> state = (*local)->tuner().SaveState();
  ASSERT_TRUE(state.ok());
  forged.tuner_state = *state;
  forged.configs[0] = ops::Config{forged.configs[0].index + 1};
  while ((*local)->tuner().WasVisited(forged.configs[0])) ++forged.configs[0].index;
  EXPECT_THAT((*daemon)->Complete(forged),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has not visited config")));
  forged = *proposed;
  forged.tuner_state = *state;
  forged.tuner_state->set_rng("garbage");
  EXPECT_THAT((*daemon)->Complete(forged),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an RNG state")));
  EXPECT_EQ((*daemon)->Next().kind, sched::StageKind::kPropose);  // unchanged by the refusals
  forged = *proposed;
  forged.tuner_state = *state;
  ASSERT_TRUE((*daemon)->Complete(forged).ok());
  EXPECT_TRUE((*daemon)->Save().has_tuner());
}

TEST(TaskSessionTest, ARestoredStageRefusesAStateOfAnotherStageOrKind) {
  TaskTunerOptions options = Options("j", 8);
  auto s = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), options, nullptr);
  ASSERT_TRUE(s.ok());
  SessionRequest update{.kind = sched::StageKind::kUpdate};
  EXPECT_THAT(
      RunRestoredStage((*s)->Save(), ConvTask(), ops::HostCpuTarget(), options, update).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not at a build stage")));
  SessionRequest build{.kind = sched::StageKind::kBuild};
  EXPECT_THAT(
      RunRestoredStage((*s)->Save(), ConvTask(), ops::HostCpuTarget(), options, build).status(),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not build")));
  SessionRequest propose{.kind = sched::StageKind::kPropose, .batch_size = 3};
  EXPECT_THAT(
      RunRestoredStage((*s)->Save(), ConvTask(), ops::HostCpuTarget(), options, propose).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("asks for 4 configs")));
  // A proposal from elsewhere must lie in the space, once each.
  TaskTunerOptions elsewhere = options;
  elsewhere.tuner_elsewhere = true;
  auto r = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), elsewhere, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT((*r)->Complete(StageOutcome{.kind = sched::StageKind::kPropose,
                                          .configs = {ops::Config{1}, ops::Config{1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("or repeated")));
  EXPECT_THAT((*r)->Complete(
                  StageOutcome{.kind = sched::StageKind::kPropose, .configs = {ops::Config{-3}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the space")));
}

TEST(TaskSessionTest, TheBaselineIsMeasuredOnceUnlessATrialMeasuredIt) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  TaskTunerOptions random = Options("r", 4);  // random proposals: the default is rarely among them
  random.measure_default = true;
  auto s = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), random, store.get());
  ASSERT_TRUE(s.ok());
  const ops::Config def = (*s)->tmpl().DefaultConfig();
  const StageEnv env{.builder = &builder, .measurer = &measurer};
  std::vector<std::string> asked;
  bool default_in_trials = false;
  for (SessionRequest r = (*s)->Next(); !r.done; r = (*s)->Next()) {
    asked.push_back(absl::StrCat(r.baseline ? "baseline " : "",
                                 std::string(sched::StageKindName(r.kind)), " ", r.round));
    if (r.baseline && r.kind == sched::StageKind::kBuild) {
      EXPECT_THAT(r.configs, ElementsAre(def));
    }
    auto out = RunStage(**s, r, env);
    ASSERT_TRUE(out.ok());
    for (const ops::Config& c : out->configs) default_in_trials |= c == def;
    ASSERT_TRUE((*s)->Complete(*out).ok());
  }
  ASSERT_FALSE(default_in_trials)
      << "pick another seed: this test wants the default measured apart";
  EXPECT_THAT(asked, ElementsAre("propose 0", "build 0", "measure 0", "update 0",
                                 "baseline build -1", "baseline measure -1"));
  const TaskOutcome o = (*s)->Outcome();
  auto defaults = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "r#default");
  ASSERT_TRUE(defaults.ok());
  ASSERT_EQ(defaults->size(), 1u);
  EXPECT_EQ((*defaults)[0].config_index, def.index);
  EXPECT_DOUBLE_EQ(o.default_cost, (*defaults)[0].median_cost);
  EXPECT_EQ(o.trials, 4);
  // A finished session restores as finished, with its baseline.
  auto again =
      TaskSession::Restore((*s)->Save(), ConvTask(), ops::HostCpuTarget(), random, store.get());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->Done());
  EXPECT_DOUBLE_EQ((*again)->Outcome().default_cost, o.default_cost);

  // xgb starts from the default config: its trial is the baseline, no extra stages.
  TaskTunerOptions xgb = XgbOptions("x");
  xgb.trials = 4;
  xgb.use_prior = false;  // a prior would rank the initial configs, the default among them
  auto x = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), xgb, nullptr);
  ASSERT_TRUE(x.ok());
  Drive(**x, builder, measurer);
  ASSERT_TRUE((*x)->MeasuredCost(def.index).has_value());
  EXPECT_DOUBLE_EQ((*x)->Outcome().default_cost, *(*x)->MeasuredCost(def.index));
}

// baseline_first (a budgeted job's sessions): the baseline's two stages come before the first
// round, so a budget that ends the task after any round leaves it with its baseline; a state saved
// after the baseline restores into the rounds (with or without the option), and one saved
// mid-trials without a baseline keeps the baseline for the end.
TEST(TaskSessionTest, WithBaselineFirstTheBaselineComesBeforeTheFirstRound) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  TaskTunerOptions first = Options("bf", 8);
  first.measure_default = true;
  first.baseline_first = true;
  auto s = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), first, store.get());
  ASSERT_TRUE(s.ok()) << s.status();
  const StageEnv env{.builder = &builder, .measurer = &measurer};
  std::vector<std::string> asked;
  auto step = [&](TaskSession& session) {
    const SessionRequest r = session.Next();
    asked.push_back(absl::StrCat(r.baseline ? "baseline " : "",
                                 std::string(sched::StageKindName(r.kind)), " ", r.round));
    auto out = RunStage(session, r, env);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_TRUE(session.Complete(*out).ok());
  };
  for (int i = 0; i < 2; ++i) step(**s);
  // Cut short here, as a budget would: the baseline is there already.
  EXPECT_TRUE(std::isfinite((*s)->Outcome().default_cost));
  EXPECT_EQ((*s)->trials_done(), 0);
  const v1::TaskSessionState after_baseline = (*s)->Save();
  for (int i = 0; i < 4; ++i) step(**s);
  EXPECT_THAT(asked, ElementsAre("baseline build -1", "baseline measure -1", "propose 0", "build 0",
                                 "measure 0", "update 0"));
  auto defaults = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "bf#default");
  ASSERT_TRUE(defaults.ok());
  ASSERT_EQ(defaults->size(), 1u);
  EXPECT_DOUBLE_EQ((*s)->Outcome().default_cost, (*defaults)[0].median_cost);

  // Restored without the option (as an agent restores the service's session from a stage's
  // state alone): the same session, after its baseline and its first round.
  TaskTunerOptions unaware = first;
  unaware.baseline_first = false;
  for (const v1::TaskSessionState& saved : {after_baseline, (*s)->Save()}) {
    auto elsewhere =
        TaskSession::Restore(saved, ConvTask(), ops::HostCpuTarget(), unaware, store.get());
    ASSERT_TRUE(elsewhere.ok()) << elsewhere.status();
    EXPECT_EQ((*elsewhere)->Next().kind, sched::StageKind::kPropose);
    EXPECT_FALSE((*elsewhere)->Next().baseline);
    EXPECT_EQ((*elsewhere)->round(), saved.rounds_size());
    EXPECT_DOUBLE_EQ((*elsewhere)->Outcome().default_cost, (*s)->Outcome().default_cost);
  }

  auto restored =
      TaskSession::Restore(after_baseline, ConvTask(), ops::HostCpuTarget(), first, store.get());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->Next().kind, sched::StageKind::kPropose);
  EXPECT_FALSE((*restored)->Next().baseline);
  RunAll(**restored, builder, measurer);
  EXPECT_EQ((*restored)->trials_done(), 8);
  auto again = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "bf#default");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->size(), 1u);  // measured once

  // A session that began without baseline_first, saved after a round: its baseline stays last.
  TaskTunerOptions last = first;
  last.job_id = "bl";
  last.baseline_first = false;
  auto l = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), last, store.get());
  ASSERT_TRUE(l.ok());
  asked.clear();
  for (int i = 0; i < 4; ++i) step(**l);
  last.baseline_first = true;
  auto mixed =
      TaskSession::Restore((*l)->Save(), ConvTask(), ops::HostCpuTarget(), last, store.get());
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ((*mixed)->Next().kind, sched::StageKind::kPropose);
  asked.clear();
  while (!(*mixed)->Done()) step(**mixed);
  EXPECT_THAT(asked, ElementsAre("propose 1", "build 1", "measure 1", "update 1",
                                 "baseline build -1", "baseline measure -1"));
}

TEST(TaskSessionTest, ABadOrForeignStateIsRefusedWithItsReason) {
  FakeBuilder builder;
  FakeMeasurer measurer;
  TaskTunerOptions o = Options("j", 8);
  auto s = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), o, nullptr);
  ASSERT_TRUE(s.ok());
  Drive(**s, builder, measurer);  // two rounds
  Driven d{.saved = (*s)->Save()};
  auto restore = [&](const v1::TaskSessionState& st, const TaskTunerOptions& opts) {
    return TaskSession::Restore(st, ConvTask(), ops::HostCpuTarget(), opts, nullptr).status();
  };
  ASSERT_TRUE(restore(*d.saved, o).ok());
  TaskTunerOptions other_job = o;
  other_job.job_id = "k";
  EXPECT_THAT(restore(*d.saved, other_job),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another job: 'j', not 'k'")));
  TaskTunerOptions other_seed = o;
  other_seed.tuner.seed = 6;
  EXPECT_THAT(restore(*d.saved, other_seed),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another tuner")));
  v1::TaskSessionState swapped = *d.saved;
  swapped.mutable_rounds(1)->set_config_indices(0, swapped.rounds(0).config_indices(0));
  EXPECT_THAT(restore(swapped, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("appears twice")));
  swapped.clear_tuner();  // replayed: the tuner proposes otherwise
  EXPECT_THAT(restore(swapped, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("does not replay: round 1 proposes")));
  v1::TaskSessionState unvisited = *d.saved;
  unvisited.mutable_tuner()->clear_visited();
  EXPECT_THAT(restore(unvisited, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("tuner state has not visited config")));
  v1::TaskSessionState bad_tuner = *d.saved;
  bad_tuner.mutable_tuner()->set_kind("xgb");
  EXPECT_THAT(restore(bad_tuner, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("session state: tuner state is of a 'xgb'")));
  v1::TaskSessionState outside = *d.saved;
  outside.mutable_rounds(0)->mutable_results(2)->set_config_index(int64_t{1} << 60);
  EXPECT_THAT(restore(outside, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the space")));
  v1::TaskSessionState nan_cost = *d.saved;
  nan_cost.mutable_rounds(0)->mutable_results(0)->add_costs(std::nan(""));
  EXPECT_THAT(restore(nan_cost, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad cost")));
  v1::TaskSessionState too_many = *d.saved;
  *too_many.add_rounds() = too_many.rounds(0);
  EXPECT_THAT(restore(too_many, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("round 2 comes after the session ended")));
  v1::TaskSessionState future = *d.saved;
  future.set_version(99);
  EXPECT_THAT(restore(future, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version 99")));
}

TEST(TaskSessionTest, AResultOfAnotherStageIsRefused) {
  auto s = TaskSession::Create(ConvTask(), ops::HostCpuTarget(), Options("j", 4), nullptr);
  ASSERT_TRUE(s.ok());
  EXPECT_THAT((*s)->Complete(StageOutcome{.kind = sched::StageKind::kMeasure}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("got a measure result while waiting for propose")));
  EXPECT_THAT(
      (*s)->Complete(
          StageOutcome{.kind = sched::StageKind::kPropose, .configs = std::vector<ops::Config>(5)}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 configs for a batch of 4")));
  ASSERT_TRUE((*s)->Complete(StageOutcome{.kind = sched::StageKind::kPropose,
                                          .configs = {ops::Config{1}, ops::Config{2}}})
                  .ok());
  EXPECT_THAT((*s)->Complete(StageOutcome{.kind = sched::StageKind::kBuild,
                                          .builds = {BuildResult{.config = ops::Config{2}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("build results do not match the 2 configs")));
}

TEST(TuneJobTest, UncoveredTasksAreSkippedWithTheirReason) {
  auto store = MemoryStore();
  FakeBuilder builder;
  FakeMeasurer measurer;
  JobOptions job;
  job.target = ops::HostCpuTarget();
  job.task = Options("job", 4);
  job.measure_default = true;
  std::vector<ProgressEvent> events;
  // An int8 convolution: no template covers it.
  graph::Task int8 = ConvTask(32, 32, 14);
  int8.workload.dtype = graph::DType::kInt8;
  int8.key = graph::WorkloadKey(int8.workload);
  auto outcomes = RunTuneJob({ConvTask(), int8}, job, store.get(), builder, measurer,
                             [&](const ProgressEvent& e) { events.push_back(e); });
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  ASSERT_EQ(outcomes->size(), 2u);
  EXPECT_EQ((*outcomes)[0].trials, 4);
  EXPECT_TRUE((*outcomes)[0].skipped_reason.empty());
  EXPECT_GT((*outcomes)[0].best_gflops, 0);
  EXPECT_TRUE(std::isfinite((*outcomes)[0].default_cost));
  EXPECT_THAT((*outcomes)[1].skipped_reason, HasSubstr("no template for dtype"));
  // The default config's measurement is stored beside the job's trials, not among them.
  EXPECT_EQ(*store->Count({.job_id = "job"}), 4);
  auto defaults = store->ForTask(ConvTask().key, ops::HostCpuTarget().Key(), "job#default");
  ASSERT_TRUE(defaults.ok());
  ASSERT_EQ(defaults->size(), 1u);
  auto tmpl = ops::MakeTemplate(ConvTask().workload, ops::HostCpuTarget());
  ASSERT_TRUE(tmpl.ok());
  EXPECT_EQ((*defaults)[0].config_index, (*tmpl)->DefaultConfig().index);
  EXPECT_DOUBLE_EQ((*defaults)[0].median_cost, (*outcomes)[0].default_cost);
  EXPECT_EQ(events.size(), 2u);  // before the first round and after it
}

TEST(TuneJobTest, AFasterDefaultConfigIsReportedAsTheBest) {
  auto tmpl = ops::MakeTemplate(ConvTask().workload, ops::HostCpuTarget());
  ASSERT_TRUE(tmpl.ok());
  TaskOutcome o;
  o.task = ConvTask();
  o.best_cost = 2e-3;
  o.best_config_json = "{}";
  o.default_cost = 1e-3;
  PreferDefaultIfFaster(o, **tmpl);
  EXPECT_DOUBLE_EQ(o.best_cost, 1e-3);
  EXPECT_DOUBLE_EQ(o.best_gflops, ConvTask().flops / 1e-3 / 1e9);
  EXPECT_EQ(o.best_config_json, (*tmpl)->space().ToJson((*tmpl)->DefaultConfig()));
  o.default_cost = 5e-3;  // slower: the tuned best stays
  PreferDefaultIfFaster(o, **tmpl);
  EXPECT_DOUBLE_EQ(o.best_cost, 1e-3);
  o.default_cost = std::numeric_limits<double>::infinity();
  PreferDefaultIfFaster(o, **tmpl);
  EXPECT_DOUBLE_EQ(o.best_cost, 1e-3);
}

TEST(TuneJobTest, DefaultJobIdDependsOnTheWork) {
  search::TunerOptions xgb{.kind = "xgb", .seed = 1};
  search::TunerOptions rnd{.kind = "random", .seed = 1};
  ops::Target target = ops::HostCpuTarget();
  std::string a = DefaultJobId({ConvTask()}, target, xgb);
  EXPECT_EQ(a, DefaultJobId({ConvTask()}, target, xgb));
  EXPECT_NE(a, DefaultJobId({ConvTask()}, target, rnd));
  EXPECT_NE(a, DefaultJobId({ConvTask(64, 64)}, target, xgb));
  EXPECT_THAT(a, ::testing::StartsWith("job-"));
}

}  // namespace
}  // namespace loom::tune
