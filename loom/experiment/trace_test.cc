#include "loom/experiment/trace.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/experiment/runner.h"

namespace loom::experiment {
namespace {

absl::Time T(double s) { return absl::UnixEpoch() + absl::Seconds(s); }

engine::StageTrace Stage(int job, sched::StageKind kind, double from, double to,
                         std::string resource, int64_t round = 0) {
  engine::StageTrace t;
  t.job = job;
  t.task_key = "conv2d:f32:n1_c8";
  t.round = round;
  t.kind = kind;
  t.resource = std::move(resource);
  t.start = T(100 + from);
  t.end = T(100 + to);
  return t;
}

SetupResult MakeSetup(const std::string& name, int rep, bool overlap) {
  SetupResult r;
  r.setup = name;
  r.repetition = rep;
  r.run.start = T(100);
  r.run.end = T(110);
  for (const char* job : {"zoo:resnet18", "a \"quoted\" job"}) {
    r.run.jobs.push_back({.name = job});
    r.jobs.push_back({.name = job});
  }
  using sched::StageKind;
  r.run.traces = {Stage(0, StageKind::kBuild, 0, 2, "cpu:0"),
                  Stage(1, StageKind::kBuild, 0, 3, overlap ? "cpu" : "cpu:1"),
                  Stage(0, StageKind::kMeasure, 2, 5, "device:cpu:1"),
                  Stage(1, StageKind::kMeasure, overlap ? 3 : 5, overlap ? 6 : 7, "device:cpu:1"),
                  Stage(0, StageKind::kUpdate, 5, 6, "cpu:0,1"),
                  Stage(1, StageKind::kMeasure, 8, 9, "device:cpu:1", -1)};
  r.makespan_s = 10;
  return r;
}

// A stage as results.json and trace.json both describe it.
using Key = std::tuple<std::string, int, int, std::string, std::string, int64_t, std::string,
                       int64_t, int64_t>;

TEST(ExperimentTraceTest, TraceJsonIsAChromeTraceWithOneEventPerStageOfResultsJson) {
  ExperimentResult result;
  result.repetitions = 2;
  for (int rep = 0; rep < 2; ++rep) {
    result.setups.push_back(MakeSetup("dedicated", rep, false));
    result.setups.push_back(MakeSetup("uncontrolled", rep, true));
  }
  const std::string dir = absl::StrCat(::testing::TempDir(), "/loom_trace_test_", getpid());
  ASSERT_TRUE(WriteResults(result, dir, {.name = "t"}).ok());
  std::ifstream tf(dir + "/trace.json"), rf(dir + "/results.json");
  const nlohmann::json trace = nlohmann::json::parse(tf);
  const nlohmann::json results = nlohmann::json::parse(rf);
  ASSERT_EQ(base::ValidateChromeTrace(trace), absl::OkStatus());

  // Processes are the setups of each repetition; every stage of results.json is one event.
  std::map<int, std::string> process;
  std::multiset<Key> events;
  for (const nlohmann::json& e : trace["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "process_name") process[e["pid"]] = e["args"]["name"];
    if (e["ph"] != "X") continue;
    const nlohmann::json& a = e["args"];
    EXPECT_EQ(e["cat"], a["kind"]);
    events.insert({a["setup"], a["repetition"], a["job"], a["kind"], a["task_key"], a["round"],
                   a["resource"], std::llround(e["ts"].get<double>()),
                   std::llround(e["ts"].get<double>() + e["dur"].get<double>())});
  }
  EXPECT_EQ(process.at(1), "dedicated (repetition 1)");
  EXPECT_EQ(process.at(4), "uncontrolled (repetition 2)");
  std::multiset<Key> stages;
  for (const nlohmann::json& s : results["setups"]) {
    for (const nlohmann::json& st : s["stages"]) {
      stages.insert({s["setup"], s["repetition"], st["job"], st["kind"], st["task_key"],
                     st["round"], st["resource"], std::llround(st["start"].get<double>() * 1e6),
                     std::llround(st["end"].get<double>() * 1e6)});
    }
  }
  EXPECT_EQ(stages.size(), 24u);
  EXPECT_EQ(events, stages);
  std::filesystem::remove_all(dir);
}

TEST(ExperimentTraceTest, OverlappingMeasurementsGetThreadsOfTheirOwn) {
  ExperimentResult result;
  result.setups.push_back(MakeSetup("uncontrolled", 0, true));
  const nlohmann::json j = ExperimentTrace(result).ToJson();
  ASSERT_EQ(base::ValidateChromeTrace(j), absl::OkStatus());
  std::map<int, std::string> threads;
  for (const nlohmann::json& e : j["traceEvents"]) {
    if (e["name"] == "thread_name") threads[e["tid"]] = e["args"]["name"];
  }
  // The device first (two rows: two measurements overlap), then CPU resources by name.
  EXPECT_EQ(
      threads,
      (std::map<int, std::string>{
          {1, "device cpu:1"}, {2, "device cpu:1 #2"}, {3, "cpu"}, {4, "cpu:0"}, {5, "cpu:0,1"}}));
}

TEST(ExperimentTraceTest, StageTimingsOfARecordDatabase) {
  auto timing = [](const std::string& job, int64_t round, const std::string& stage, double from,
                   double to, const std::string& resource) {
    return tune::StageTimingRecord{
        .job_id = job,
        .task_key = "k",
        .round = round,
        .timing = {.stage = stage, .start = T(from), .end = T(to), .resource = resource}};
  };
  const std::vector<tune::StageTimingRecord> timings = {
      timing("b", 0, "build", 5, 6, "cpu:0"), timing("a", 0, "propose", 1, 2, "cpu:0"),
      timing("a", 0, "measure", 2, 4, "device:cpu:1"),
      timing("b", 0, "measure", 3, 5, "device:cpu:1")};
  const nlohmann::json j = StageTimingsTrace(timings).ToJson();
  ASSERT_EQ(base::ValidateChromeTrace(j), absl::OkStatus());
  std::map<int, std::string> processes;
  std::vector<std::tuple<int, std::string, double, double>> events;
  for (const nlohmann::json& e : j["traceEvents"]) {
    if (e["name"] == "process_name") processes[e["pid"]] = e["args"]["name"];
    if (e["ph"] == "X") events.emplace_back(e["pid"], e["name"], e["ts"], e["dur"]);
  }
  // Jobs in order of appearance; times from the earliest stage (a's propose at 1 s).
  EXPECT_EQ(processes, (std::map<int, std::string>{{1, "b"}, {2, "a"}}));
  std::sort(events.begin(), events.end());
  EXPECT_EQ(events, (std::vector<std::tuple<int, std::string, double, double>>{
                        {1, "build round 0", 4e6, 1e6},
                        {1, "measure round 0", 2e6, 2e6},
                        {2, "measure round 0", 1e6, 2e6},
                        {2, "propose round 0", 0, 1e6}}));
  EXPECT_EQ(StageTimingsTrace({}).ToJson()["traceEvents"].size(), 0u);
}

}  // namespace
}  // namespace loom::experiment
