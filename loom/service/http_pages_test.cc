// The web view's pages as pure functions of a snapshot: what they show for given data.
#include "loom/service/http_pages.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace loom::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

int Count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
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
  const std::string text = MetricsText(v);
  EXPECT_THAT(text, HasSubstr("loom_jobs{state=\"running\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("loom_jobs{state=\"failed\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("loom_stages{kind=\"measure\",state=\"running\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("loom_stages{kind=\"build\",state=\"queued\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("loom_scheduler_queued_stages{cpu_slots=\"1\",device_kind=\"\","
                              "device=\"\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("loom_scheduler_queued_stages{cpu_slots=\"0\",device_kind=\"cpu:"
                              "avx2\",device=\"\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("loom_scheduler_grants_total 17\n"));
  EXPECT_THAT(text, HasSubstr("loom_device_busy{agent=\"1.1\",device=\"cpu:1\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("loom_device_busy_seconds_total{agent=\"1.1\",device=\"cpu:1\"} 30\n"));
  EXPECT_THAT(text, HasSubstr("loom_device_utilization{agent=\"1.1\",device=\"cpu:1\"} 0.25\n"));
  EXPECT_THAT(
      text,
      HasSubstr("loom_agent_seconds_since_heartbeat{agent=\"1.2\",hostname=\"host-b\"} 30\n"));
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
  const std::string html = JobsFragment(v);
  EXPECT_THAT(html, HasSubstr(">3 older jobs not shown"));
  EXPECT_THAT(html, HasSubstr("data-job=\"j1\" data-trials-done=\"12\" data-trials=\"32\""));
  EXPECT_THAT(html, HasSubstr("12/32</span></td><td>2m 05s</td><td>1.500 ms / goal 2.000 ms "
                              "<span class=\"ok\">met</span>"));
  // Unknown figures are shown as unknown, never guessed.
  EXPECT_THAT(html, HasSubstr("0/8</span></td><td>&ndash;</td><td>&ndash; / goal 1.000 ms "
                              "<span class=\"pending\">not yet</span>"));
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
  EXPECT_THAT(html, HasSubstr("ETA 1m 40s"));
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

}  // namespace
}  // namespace loom::service
