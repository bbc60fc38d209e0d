#include "loom/experiment/report.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::experiment {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

SetupResult Setup(const std::string& name, double makespan, double distortion,
                  std::vector<double> latencies) {
  SetupResult r;
  r.setup = name;
  r.makespan_s = makespan;
  r.lower_bound_s = 50;
  r.device_utilization = 0.5;
  r.distortion_median = distortion;
  r.device_hours = makespan / 3600;
  r.run.start = T(0);
  r.run.end = T(makespan);
  for (size_t j = 0; j < latencies.size(); ++j) {
    SetupJobResult job;
    job.name = j == 0 ? "zoo:resnet18" : "zoo:mobilenet_v2";
    job.seconds = makespan;
    job.final_latency_ms = latencies[j];
    job.distortion_median = distortion;
    job.distortion.push_back({.task_key = "k", .distortion = distortion});
    r.jobs.push_back(job);
    engine::JobResult jr;
    jr.name = job.name;
    r.run.jobs.push_back(jr);
    engine::StageTrace t;
    t.job = static_cast<int>(j);
    t.kind = sched::StageKind::kMeasure;
    t.resource = "device:cpu:1";
    t.start = T(j * 10.0);
    t.end = T(j * 10.0 + 5);
    r.run.traces.push_back(t);
  }
  return r;
}

ExperimentResult Example(double interleaved_makespan, double interleaved_latency0) {
  ExperimentResult r;
  r.setups = {Setup("dedicated", 100, 0.004, {10, 20}), Setup("uncontrolled", 110, 0.21, {12, 21}),
              Setup("interleaved", interleaved_makespan, 0.012, {interleaved_latency0, 20.5}),
              Setup("predictive", 65, 0.011, {10.1, 20.1})};
  r.simulation_source = "dedicated";
  for (const SetupResult& s : r.setups) {
    r.simulation.push_back({.setup = s.setup,
                            .policy = PolicyOfSetup(s.setup),
                            .measured_s = s.makespan_s,
                            .simulated_s = s.makespan_s * 1.1,
                            .ratio = 1.1});
  }
  return r;
}

TEST(ReportTest, TablesGoalsAndChartsFromTheResults) {
  ReportContext context{.name = "thesis <2 jobs>",
                        .spec_text = "name: thesis\njobs: [a & b]\n",
                        .command = "loom experiment thesis.yaml -o out",
                        .machine = "2 cores",
                        .device_cores = {1}};
  const std::string html = ReportHtml(Example(70, 10.2), context);
  EXPECT_THAT(html, HasSubstr("<title>thesis &lt;2 jobs&gt;: Loom experiment</title>"));
  EXPECT_THAT(html, HasSubstr("loom experiment thesis.yaml -o out"));
  // Goals: 70 / 100 <= 0.75; predictive 65 <= 70; 1.2% <= 3% with uncontrolled's 21% beside it;
  // latencies +2% and +2.5%; simulation within 15%.
  EXPECT_THAT(html, HasSubstr("70.0 s / 100.0 s = 0.700"));
  EXPECT_THAT(html, HasSubstr("interleaved 1.20%, uncontrolled 21.00%"));
  EXPECT_THAT(html, HasSubstr("zoo:resnet18 10.200 ms vs 10.000 ms (+2.0%)"));
  EXPECT_EQ(Count(html, "<td class=\"ok\">met</td>"), 5);
  EXPECT_EQ(Count(html, "<td class=\"bad\">not met</td>"), 0);
  // One repetition: every claim's verdict says the difference cannot be told from noise, except
  // the tuned-kernel rows, which need re-measured chosen configs.
  EXPECT_EQ(Count(html, "<td class=\"noise\">not distinguishable from noise</td>"), 11);
  EXPECT_THAT(html, HasSubstr("makespan below running the jobs in sequence (dedicated)</td><td "
                              "class=\"l\">-30.0%, 1 rep</td>"));
  // What each setup does.
  EXPECT_THAT(html, HasSubstr("<li><b>uncontrolled</b>: all jobs at once with no scheduler"));
  // One row per setup in the runs table, the ratio to sequential and to the lower bound.
  EXPECT_THAT(html, HasSubstr("<td class=\"l\">predictive</td><td>1</td><td>65.0</td><td>0.650</td>"
                              "<td>50.0</td><td>1.300</td>"));
  // The final-latency table as a chart: three setups against dedicated, two jobs.
  EXPECT_THAT(html, HasSubstr("Final latency vs dedicated</text>"));
  EXPECT_THAT(html, HasSubstr("<title>zoo:resnet18, uncontrolled: +20.0</title>"));
  // Per-job rows with the latency against dedicated.
  EXPECT_THAT(html, HasSubstr("+2.5%"));
  // Simulator table, charts inlined and linked, the spec escaped.
  EXPECT_THAT(html, HasSubstr("<td class=\"l\">sequential</td><td>100.0</td><td>110.0</td>"));
  EXPECT_EQ(Count(html, "<svg "), 5);  // four Gantt charts and the latency chart
  EXPECT_EQ(Count(html, "data-kind=\"measure\""), 8);
  // The Gantt charts share one time axis: the longest run's 110 s.
  EXPECT_EQ(Count(html, "class=\"tick\" text-anchor=\"middle\">100</text>"), 4);
  EXPECT_THAT(html, HasSubstr("href=\"gantt-interleaved.svg\""));
  EXPECT_THAT(html, HasSubstr("jobs: [a &amp; b]"));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
}

TEST(ReportTest, GoalsNotMetAreSaid) {
  const std::string html = ReportHtml(Example(80, 11), {});
  EXPECT_THAT(html, HasSubstr("80.0 s / 100.0 s = 0.800"));
  // 0.8 > 0.75, predictive 65 <= 80 still met, latency +10% > 5%.
  EXPECT_EQ(Count(html, "<td class=\"bad\">not met</td>"), 2);
  EXPECT_EQ(Count(html, "<td class=\"ok\">met</td>"), 3);
  EXPECT_THAT(html, HasSubstr("<td class=\"l\">interleaved</td><td>1</td><td>80.0</td><td>0.800"));
}

TEST(ReportTest, MissingSetupsAreNotMeasured) {
  ExperimentResult r = Example(70, 10);
  r.setups.erase(r.setups.begin());  // no dedicated run
  r.simulation.clear();
  r.simulation_error = "the run has no stage traces";
  const std::string html = ReportHtml(r, {});
  EXPECT_EQ(SequentialReference(r), nullptr);
  EXPECT_GE(Count(html, "not measured"), 2);
  // Without a reference only the comparisons with uncontrolled remain.
  EXPECT_THAT(html, Not(HasSubstr("below running the jobs in sequence")));
  EXPECT_THAT(html, HasSubstr("makespan below uncontrolled sharing"));
  EXPECT_THAT(html, HasSubstr("Not simulated: the run has no stage traces"));
}

TEST(ReportTest, ScaleReportPutsTheClaimsOfEachCountSideBySide) {
  std::vector<ScaleRun> runs;
  runs.push_back({.jobs = 1, .dir = "jobs-1", .result = Example(70, 10)});
  runs.push_back({.jobs = 2, .dir = "jobs-2", .result = Example(80, 11)});
  const std::string html = ScaleReportHtml(runs, {.name = "scale <x>"});
  EXPECT_THAT(html, HasSubstr("<title>scale &lt;x&gt;: Loom scale experiment</title>"));
  EXPECT_THAT(html, HasSubstr("<a href=\"jobs-1/report.html\">1 job</a>"));
  EXPECT_THAT(html, HasSubstr("<a href=\"jobs-2/report.html\">2 jobs</a>"));
  EXPECT_THAT(html, HasSubstr("<th class=\"l\">2 jobs</th><th>verdict</th>"));
  // The same statement in one row, with each count's figure: -30% at 1, -20% at 2.
  EXPECT_THAT(html, HasSubstr("makespan below running the jobs in sequence (dedicated)</td><td "
                              "class=\"l\">-30.0%, 1 rep</td><td class=\"noise\">not "
                              "distinguishable from noise</td><td class=\"l\">-20.0%, 1 rep</td>"));
  EXPECT_EQ(Count(html, "<svg "), 3);  // three charts against the job count
  EXPECT_THAT(html, Not(HasSubstr("<script")));

  const std::string dir = absl::StrCat(::testing::TempDir(), "/loom_scale_", getpid());
  ASSERT_TRUE(WriteScaleSummary(runs, dir, {.name = "s"}).ok());
  std::ifstream js(dir + "/results.json");
  std::stringstream text;
  text << js.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("\"job_counts\": [\n    1,\n    2\n  ]"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/report.html"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loom::experiment
