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
  const std::string html = DevicesFragment(TwoAgents(), {.window = absl::Minutes(1)});
  EXPECT_EQ(Count(html, "data-kind=\"measure\""), 2);
  EXPECT_EQ(Count(html, "data-kind=\"build\""), 1);
  EXPECT_THAT(html, HasSubstr("host-a cpu:1"));
  // 30 of 60 s busy; idle from -60 to -40 (20 s) and -20 to -10 (10 s).
  EXPECT_THAT(html, HasSubstr("<td>50%</td><td>20.0 s (2 gaps &ge; 1 s)</td>"));
  EXPECT_THAT(html, HasSubstr("<td>lost</td>"));
}

TEST(HttpPagesTest, MetricsCountRunningStagesAndDeviceUtilization) {
  DriverView v = TwoAgents();
  v.queued_by_kind["build"] = 3;
  v.jobs_by_state[v1::JOB_STATE_RUNNING] = 2;
  v.queued_by_class["cpu"] = 3;
  const std::string text = MetricsText(v);
  EXPECT_THAT(text, HasSubstr("loom_jobs{state=\"running\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("loom_jobs{state=\"failed\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("loom_stages{kind=\"measure\",state=\"running\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("loom_stages{kind=\"build\",state=\"queued\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("loom_scheduler_queued_stages{class=\"cpu\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("loom_device_busy{agent=\"1.1\",device=\"cpu:1\"} 1\n"));
  // Busy 30 s of the 50 s the history covers (from the earliest stage start).
  EXPECT_THAT(text, HasSubstr("loom_device_utilization{agent=\"1.1\",device=\"cpu:1\"} 0.6\n"));
  EXPECT_THAT(
      text,
      HasSubstr("loom_agent_seconds_since_heartbeat{agent=\"1.2\",hostname=\"host-b\"} 30\n"));
}

TEST(HttpPagesTest, JobPageDrawsOnePointPerTrialAndACrossPerFailedTrial) {
  JobDetail d;
  d.job.set_id("j7");
  d.job.set_name("tiny");
  d.job.set_state(v1::JOB_STATE_RUNNING);
  d.job.set_started_unix_micros(absl::ToUnixMicros(kNow - absl::Seconds(100)));
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
  const std::string html = JobFragment(d, kNow);
  // Two charts (by trials, by time), each with 8 successful points and 2 failed ones.
  EXPECT_EQ(Count(html, "class=\"point\""), 16);
  EXPECT_EQ(Count(html, "class=\"marker\""), 4);
  EXPECT_THAT(html, HasSubstr("data-records=\"10\" data-errors=\"2\""));
  EXPECT_THAT(html, HasSubstr("10/20 trials"));
  // ETA: 10 trials took 100 s, 10 remain.
  EXPECT_THAT(html, HasSubstr("ETA 1m 40s"));
}

TEST(HttpPagesTest, SchedulerPageShowsPolicyQueuesRateAndLatencyByDecade) {
  DriverView v = TwoAgents();
  v.stats.set_policy("interleaved");
  v.queued_by_class["device:cpu:avx2:<x>"] = 4;
  v.dispatch_seconds =
      MakeHistogram({0.0005, 0.002, 0.02, 90}, {0.001, 0.0025, 0.01, 0.025, 0.1, 1, 10, 60});
  const std::string html = SchedulerFragment(v, 2.5);
  EXPECT_THAT(html, HasSubstr("<td id=\"policy\">interleaved</td>"));
  EXPECT_THAT(html, HasSubstr("<td>device:cpu:avx2:&lt;x&gt;</td><td class=\"depth\">4</td>"));
  EXPECT_THAT(html, HasSubstr("<td>2.50</td>"));
  // Groups by decade: <=1 ms, <=10 ms, <=100 ms, <=1 s, <=10 s, <=1 min, more.
  EXPECT_THAT(html, HasSubstr("\u226410 ms"));
  EXPECT_THAT(html, Not(HasSubstr("\u22642.5 ms")));
  EXPECT_EQ(SchedulerFragment(v, -1).find("<td>2.50</td>"), std::string::npos);
}

}  // namespace
}  // namespace loom::service
