#include "loom/sim/report.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/sim/simulator.h"
#include "loom/sim/spec.h"

namespace loom::sim {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// The thesis scaling scenario at a given job count (examples/sim/thesis_scaling.yaml, fewer
// rounds): one GPU and 16 CPU slots per server.
SimSpec Scaling(int jobs) {
  auto spec = ParseSimSpec(R"(
seed: 42
hosts: [{name: server, cpu_slots: 16, devices: [{name: gpu0, kind: gpu}]}]
jobs:
  - name: resnet18
    tasks: 2
    rounds: 3
    stages:
      - {kind: propose, cpu_slots: 1, duration: {dist: lognormal, mean: 4, stddev: 1}}
      - {kind: build, cpu_slots: 8, duration: {dist: lognormal, mean: 12, stddev: 3}}
      - {kind: measure, device: gpu, duration: {dist: normal, mean: 20, stddev: 2}}
      - {kind: update, cpu_slots: 1, duration: {dist: lognormal, mean: 6, stddev: 1.5}}
)");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

TEST(SimReportTest, GanttHasALegendOfJobsAndKindsAndNoNearlyEmptyRows) {
  auto r = Simulate(Scaling(16), "interleaved", 16);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string svg = GanttSvg(*r);
  for (const char* kind : {">P propose<", ">B build<", ">M measure<", ">U update<"}) {
    EXPECT_THAT(svg, HasSubstr(kind));
  }
  EXPECT_THAT(svg, HasSubstr(">resnet18-0<"));
  EXPECT_THAT(svg, HasSubstr(">resnet18-15<"));
  EXPECT_EQ(Count(svg, "<g class=\"item\""), static_cast<int>(r->records.size()));
  // 16 jobs propose at once at time 0; those rows hold almost nothing and share one overflow row.
  EXPECT_THAT(svg, HasSubstr("short rows"));
  EXPECT_LE(Count(svg, "class=\"row\""), 6);
  EXPECT_THAT(svg, Not(HasSubstr("cpu 15")));
}

TEST(SimReportTest, ChartsOfOneJobCountShareTheAxisTheyAreGiven) {
  auto r = Simulate(Scaling(2), "interleaved", 2);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_LT(r->metrics.makespan_s, 300);
  EXPECT_THAT(GanttSvg(*r, 300), HasSubstr(">300</text>"));
  EXPECT_THAT(GanttSvg(*r), Not(HasSubstr(">300</text>")));
}

TEST(SimReportTest, TraceHasOneValidEventPerStage) {
  auto a = Simulate(Scaling(4), "uncontrolled", 4);
  auto b = Simulate(Scaling(4), "interleaved", 4);
  ASSERT_TRUE(a.ok() && b.ok());
  const nlohmann::json j = SimTrace({*a, *b}).ToJson();
  ASSERT_EQ(base::ValidateChromeTrace(j), absl::OkStatus());
  std::map<int, int> per_pid;
  std::map<int, std::string> processes;
  for (const nlohmann::json& e : j["traceEvents"]) {
    if (e["ph"] == "X") {
      ++per_pid[e["pid"].get<int>()];
      EXPECT_EQ(e["cat"], e["args"]["kind"]);
    } else if (e["name"] == "process_name") {
      processes[e["pid"].get<int>()] = e["args"]["name"];
    }
  }
  EXPECT_EQ(per_pid[1], static_cast<int>(a->records.size()));
  EXPECT_EQ(per_pid[2], static_cast<int>(b->records.size()));
  EXPECT_EQ(processes[1], "uncontrolled, 4 jobs");
  EXPECT_EQ(processes[2], "interleaved, 4 jobs");
}

}  // namespace
}  // namespace loom::sim
