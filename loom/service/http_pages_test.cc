// The web view's pages as pure functions of a snapshot: what they show for given data.
#include "loom/service/http_pages.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace loom::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

int Count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// Each of `parts` is in `text`.
void ExpectAll(const std::string& text, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) EXPECT_THAT(text, HasSubstr(part));
}

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

DriverView TwoAgents() {
  DriverView v;
  v.now = kNow;
  v.running = true;
  v.agents = {{.id = "1.1",
               .hostname = "host-a",
               .alive = true,
               .cpu_slots = 2,
               .devices = {"cpu:1"},
               .last_seen = kNow - absl::Seconds(2)},
              {.id = "1.2",
               .hostname = "host-b",
               .alive = false,
               .cpu_slots = 4,
               .last_seen = kNow - absl::Seconds(30)}};
  // host-a's device measured 30 s of the last 60 (two stages), its slots built for 10 s.
  auto span = [](std::string job, v1::StageKind kind, std::string agent, std::string device,
                 int from, int to, bool running = false) {
    return StageSpan{.job_id = job,
                     .kind = kind,
                     .agent_id = agent,
                     .device = device,
                     .cpu_slots = 1,
                     .start = kNow - absl::Seconds(from),
                     .end = kNow - absl::Seconds(to),
                     .running = running};
  };
  v.stages = {span("j1", v1::STAGE_KIND_BUILD, "1.1", "", 50, 40),
              span("j1", v1::STAGE_KIND_MEASURE, "1.1", "cpu:1", 40, 20),
              span("j2", v1::STAGE_KIND_MEASURE, "1.1", "cpu:1", 10, 0, true)};
  return v;
}

TEST(HttpPagesTest, DevicesPageDrawsEveryStageWithItsKindAndTheDeviceUtilization) {
  DriverView v = TwoAgents();
  v1::DeviceStats* d = v.stats.add_devices();
  d->set_agent_id("1.1");
  d->set_name("cpu:1");
  d->set_utilization(0.4);
  const std::string html = DevicesFragment(v, {.window = absl::Minutes(1)});
  EXPECT_EQ(Count(html, "data-kind=\"measure\""), 2);
  EXPECT_EQ(Count(html, "data-kind=\"build\""), 1);
  EXPECT_THAT(html, HasSubstr("host-a cpu:1"));
  // 30 of 60 s busy; idle from -60 to -40 (20 s) and -20 to -10 (10 s).
  // Busy in the window, from the bars; since registered, the scheduler's figure.
  EXPECT_THAT(html, HasSubstr("<td>50%</td><td class=\"wide\">40%</td><td>20.0 s (2 gaps &ge; 1 s)"
                              "</td>"));
  EXPECT_THAT(html, HasSubstr("<td>lost</td>"));
}

// Stages narrower than two pixels of the window are drawn as one bar per run of them (the load's
// 20 ms stages over a 10 minute window), which counts its stages; wide ones keep their own bar, and
// the busy figures still come from every stage.
TEST(HttpPagesTest, DevicesPageMergesRunsOfStagesTooNarrowToSee) {
  DriverView v = TwoAgents();
  // 1,000 measure stages of 10 ms back to back on host-a's device, 5 to 15 s before the end of
  // a 10 minute window (a pixel is about 0.55 s), some in a shared chunk as the driver keeps them.
  std::vector<StageSpan> narrow;
  for (int i = 0; i < 1000; ++i) {
    narrow.push_back({.job_id = i % 2 ? "j3" : "j4",
                      .kind = v1::STAGE_KIND_MEASURE,
                      .agent_id = "1.1",
                      .device = "cpu:1",
                      .start = kNow - absl::Seconds(15) + absl::Milliseconds(10 * i),
                      .end = kNow - absl::Seconds(15) + absl::Milliseconds(10 * (i + 1))});
  }
  v.ended_chunks.push_back(
      std::make_shared<const std::vector<StageSpan>>(narrow.begin(), narrow.begin() + 600));
  v.stages.insert(v.stages.begin(), narrow.begin() + 600, narrow.end());
  const std::string html = DevicesFragment(v, {.window = absl::Minutes(10)});
  // TwoAgents' three wide stages, and one merged bar of the 1,000 narrow ones.
  EXPECT_EQ(Count(html, "class=\"item\""), 4) << html;
  EXPECT_EQ(Count(html, "data-stages=\"1000\""), 1);
  EXPECT_THAT(html, HasSubstr("1000 short stages of 2 jobs on host-a cpu:1 in 10.00 s"));
  EXPECT_EQ(Count(html, "data-kind=\"measure\""), 3);
  EXPECT_EQ(Count(html, "data-kind=\"build\""), 1);
}

TEST(HttpPagesTest, MetricsCountRunningStagesAndTakeDeviceFiguresFromTheScheduler) {
  DriverView v = TwoAgents();
  v.queued_by_kind["build"] = 3;
  v.jobs_by_state[v1::JOB_STATE_RUNNING] = 2;
  v1::QueueStats* q = v.stats.add_queues();
  q->set_cpu_slots(1);
  q->set_ready(3);
  q = v.stats.add_queues();
  q->set_device_kind("cpu:avx2");
  q->set_ready(2);
  v.stats.set_grants(17);
  v1::DeviceStats* d = v.stats.add_devices();
  d->set_agent_id("1.1");
  d->set_name("cpu:1");
  d->set_leases(1);
  d->set_busy_seconds(30);
  d->set_utilization(0.25);
  v.agents[0].build_cache_hits = 5;
  v.agents[0].build_cache_misses = 11;
  v.measurement_errors = 3;
  v.measurement_errors_by_kind = {{"compile", 2}, {"wrong_answer", 1}};
  ExpectAll(
      MetricsText(v),
      {"loom_jobs{state=\"running\"} 2\n", "loom_jobs{state=\"failed\"} 0\n",
       "loom_stages{kind=\"measure\",state=\"running\"} 1\n",
       "loom_stages{kind=\"build\",state=\"queued\"} 3\n",
       "loom_scheduler_queued_stages{cpu_slots=\"1\",device_kind=\"\",device=\"\"} 3\n",
       "loom_scheduler_queued_stages{cpu_slots=\"0\",device_kind=\"cpu:avx2\",device=\"\"} "
       "2\n",
       "loom_scheduler_grants_total 17\n", "loom_device_busy{agent=\"1.1\",device=\"cpu:1\"} 1\n",
       "loom_device_busy_seconds_total{agent=\"1.1\",device=\"cpu:1\"} 30\n",
       "loom_device_utilization{agent=\"1.1\",device=\"cpu:1\"} 0.25\n",
       "loom_agent_seconds_since_heartbeat{agent=\"1.2\",hostname=\"host-b\"} 30\n",
       // The agents' heartbeat counters, and failed trials by kind, every kind listed.
       "loom_build_cache_hits_total{agent=\"1.1\"} 5\n",
       "loom_build_cache_misses_total{agent=\"1.1\"} 11\n",
       "loom_build_cache_hits_total{agent=\"1.2\"} 0\n", "loom_measurement_errors_total 3\n",
       "loom_measurement_errors_by_kind_total{kind=\"compile\"} 2\n",
       "loom_measurement_errors_by_kind_total{kind=\"wrong_answer\"} 1\n",
       "loom_measurement_errors_by_kind_total{kind=\"run_timeout\"} 0\n"});
}

TEST(HttpPagesTest, JobsPageShowsTheProgressFiguresTheJobCarries) {
  DriverView v;
  v.now = kNow;
  v1::Job& a = v.jobs.emplace_back();
  a.set_id("j1");
  a.set_state(v1::JOB_STATE_RUNNING);
  a.set_trials_done(12);
  a.set_trials_total(32);
  a.set_eta_seconds(125);
  a.set_best_latency_ms(1.5);
  v.latency_goal_ms["j1"] = 2;
  v1::Job& b = v.jobs.emplace_back();
  b.set_id("j2");
  b.set_state(v1::JOB_STATE_QUEUED);
  b.set_trials_total(8);
  v.latency_goal_ms["j2"] = 1;
  v.jobs_not_shown = 3;
  ExpectAll(JobsFragment(v), {">3 older jobs not shown",
                              "data-job=\"j1\" data-trials-done=\"12\" data-trials=\"32\"",
                              "12/32</span></td><td>2m05s</td><td>1.500 ms / goal 2.000 ms "
                              "<span class=\"ok\">met</span>",
                              // Unknown figures are shown as unknown, never guessed.
                              "0/8</span></td><td>&ndash;</td><td>&ndash; / goal 1.000 ms "
                              "<span class=\"pending\">not yet</span>"});
}

TEST(HttpPagesTest, JobPageDrawsOnePointPerTrialAndACrossPerFailedTrial) {
  JobDetail d;
  d.job.set_id("j7");
  d.job.set_name("tiny");
  d.job.set_state(v1::JOB_STATE_RUNNING);
  d.job.set_started_unix_micros(absl::ToUnixMicros(kNow - absl::Seconds(100)));
  d.job.set_trials_done(10);
  d.job.set_trials_total(20);
  d.job.set_eta_seconds(100);
  for (int t = 0; t < 2; ++t) {
    v1::TaskProgress* p = d.job.add_tasks();
    p->set_task_key(absl::StrCat("task-", t));
    p->set_trials(10);
    p->set_trials_done(5);
  }
  for (int i = 0; i < 10; ++i) {
    tune::Record r;
    r.task_key = absl::StrCat("task-", i % 2);
    r.flops = 1e9;
    r.timestamp = kNow - absl::Seconds(50 - i);
    if (i == 3 || i == 4) {
      r.error = tune::ErrorKind::kRuntime;
    } else {
      r.costs = {0.01 * (i + 1)};
      r.median_cost = r.costs[0];
    }
    d.records.push_back(r);
  }
  const std::string html = JobFragment(d);
  // Two charts (by trials, by time), each with 8 successful points and 2 failed ones.
  EXPECT_EQ(Count(html, "class=\"point\""), 16);
  EXPECT_EQ(Count(html, "class=\"marker\""), 4);
  EXPECT_THAT(html, HasSubstr("data-records=\"10\" data-errors=\"2\""));
  EXPECT_THAT(html, HasSubstr("10/20 trials"));
  EXPECT_THAT(html, HasSubstr("ETA 1m40s"));
}

TEST(HttpPagesTest, SchedulerPageShowsPolicyQueuesRateAndLatencyByDecade) {
  DriverView v = TwoAgents();
  v.stats.set_policy("interleaved");
  v.stats.set_grants_per_second(2.5);
  v1::QueueStats* q = v.stats.add_queues();
  q->set_device_kind("cpu:avx2:<x>");
  q->set_ready(4);
  v.dispatch_seconds =
      MakeHistogram({0.0005, 0.002, 0.02, 90}, {0.001, 0.0025, 0.01, 0.025, 0.1, 1, 10, 60});
  const std::string html = SchedulerFragment(v);
  EXPECT_THAT(html, HasSubstr("<td id=\"policy\">interleaved</td>"));
  EXPECT_THAT(html,
              HasSubstr("<td>0</td><td>cpu:avx2:&lt;x&gt;</td><td>any</td><td class=\"depth\">4"));
  EXPECT_THAT(html, HasSubstr("<td>2.50</td>"));
  // Groups by decade: <=1 ms, <=10 ms, <=100 ms, <=1 s, <=10 s, <=1 min, more.
  EXPECT_THAT(html, HasSubstr("\u226410 ms"));
  EXPECT_THAT(html, Not(HasSubstr("\u22642.5 ms")));
}

// The page's script reads {"html": fragment}; the view streams it in pieces that never split a
// UTF-8 sequence, and the pieces together are the bytes nlohmann::json dumps for the whole.
TEST(HttpPagesTest, FragmentJsonPiecesMakeTheJsonOfTheWholeFragment) {
  const std::string fragment =
      "<p title=\"a \\ b\">caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x93\x88\n\t\x01</p>";
  const std::string whole = nlohmann::json{{"html", fragment}}.dump();
  for (size_t block : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{7}, kFragmentJsonBlock}) {
    SCOPED_TRACE(block);
    std::string json;
    size_t from = 0, pieces = 0;
    do {
      const size_t end = FragmentJsonPiece(fragment, from, &json, block);
      ASSERT_GT(end, from);
      // Never inside a sequence: the next byte starts one (or the fragment has ended).
      if (end < fragment.size()) EXPECT_NE(static_cast<unsigned char>(fragment[end]) & 0xC0, 0x80);
      from = end;
      ++pieces;
    } while (from < fragment.size());
    EXPECT_EQ(json, whole);
    EXPECT_EQ(pieces > 1, block < fragment.size());
  }
  EXPECT_EQ(FragmentJsonSize(fragment), whole.size());
  std::string empty;
  EXPECT_EQ(FragmentJsonPiece("", 0, &empty), 0u);
  EXPECT_EQ(empty, R"({"html":""})");
  EXPECT_EQ(FragmentJsonSize(""), empty.size());
}

}  // namespace
}  // namespace loom::service
