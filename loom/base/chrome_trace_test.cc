#include "loom/base/chrome_trace.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::base {
namespace {

using ::testing::HasSubstr;

// "CODE: message" of a status, so one matcher checks both.
std::string Described(const absl::Status& s) {
  return std::string(absl::StatusCodeToString(s.code())) + ": " + std::string(s.message());
}

TEST(ChromeTraceTest, WritesMetadataAndCompleteEvents) {
  ChromeTrace t;
  t.NameProcess(1, "interleaved", 1);
  t.NameThread(1, 2, "device cpu:1", 0);
  t.Add({.name = "resnet18 measure",
         .category = "measure",
         .start_us = 1500,
         .duration_us = 250,
         .pid = 1,
         .tid = 2,
         .args = {{"round", 3}}});
  const nlohmann::json j = t.ToJson();
  EXPECT_EQ(ValidateChromeTrace(j), absl::OkStatus());
  ASSERT_EQ(j["traceEvents"].size(), 5u);
  const nlohmann::json& e = j["traceEvents"][4];
  EXPECT_EQ(e["ph"], "X");
  EXPECT_EQ(e["ts"], 1500.0);
  EXPECT_EQ(e["dur"], 250.0);
  EXPECT_EQ(e["args"]["round"], 3);
  EXPECT_EQ(j["traceEvents"][0]["args"]["name"], "interleaved");
  EXPECT_EQ(j["displayTimeUnit"], "ms");
}

TEST(ChromeTraceTest, LaneEventsGetOneThreadPerRow) {
  ChromeTrace t;
  t.NameProcess(3, "uncontrolled", 0);
  // Two overlapping measurements on the device and one build on a core.
  AddLaneEvents(t, 3, {"device cpu:1", "unused", "core 0"},
                {{.lane = 0, .event = {.name = "m0", .start_us = 0, .duration_us = 10}},
                 {.lane = 2, .event = {.name = "b0", .start_us = 0, .duration_us = 4}},
                 {.lane = 0, .event = {.name = "m1", .start_us = 5, .duration_us = 10}}});
  const nlohmann::json j = t.ToJson();
  EXPECT_EQ(ValidateChromeTrace(j), absl::OkStatus());
  std::map<std::string, int> tid_of;
  std::map<int, std::string> thread_names;
  for (const nlohmann::json& e : j["traceEvents"]) {
    if (e["ph"] == "X") {
      EXPECT_EQ(e["pid"], 3);
      tid_of[e["name"]] = e["tid"];
    } else if (e["name"] == "thread_name") {
      thread_names[e["tid"]] = e["args"]["name"];
    }
  }
  EXPECT_EQ(tid_of["m0"], 1);
  EXPECT_EQ(tid_of["m1"], 2);
  EXPECT_EQ(tid_of["b0"], 3);
  EXPECT_EQ(thread_names, (std::map<int, std::string>{
                              {1, "device cpu:1"}, {2, "device cpu:1 #2"}, {3, "core 0"}}));
}

TEST(ChromeTraceTest, ValidationNamesTheRuleBroken) {
  using nlohmann::json;
  auto check = [](const std::string& text) {
    return Described(ValidateChromeTrace(json::parse(text)));
  };
  EXPECT_EQ(check("{}"), "INVALID_ARGUMENT: a trace object needs a \"traceEvents\" array");
  EXPECT_EQ(check(R"([{"ph":"Q","name":"a"}])"),
            "INVALID_ARGUMENT: traceEvents[0]: unknown phase \"Q\"");
  EXPECT_EQ(check(R"([{"ph":"X","name":"a","ts":0,"pid":1,"tid":1}])"),
            "INVALID_ARGUMENT: traceEvents[0]: a complete event needs \"dur\" >= 0");
  EXPECT_EQ(check(R"([{"ph":"X","name":"a","ts":0,"dur":1,"pid":"1","tid":1}])"),
            "INVALID_ARGUMENT: traceEvents[0]: \"pid\" must be an integer");
  EXPECT_EQ(check(R"([{"ph":"M","name":"thread_name","pid":1}])"),
            "INVALID_ARGUMENT: traceEvents[0]: thread_name needs a string args.name");
  // Nested and disjoint events on one thread are fine; a partial overlap is not.
  EXPECT_EQ(check(R"([{"ph":"X","name":"a","ts":0,"dur":10,"pid":1,"tid":1},
                      {"ph":"X","name":"b","ts":2,"dur":3,"pid":1,"tid":1},
                      {"ph":"X","name":"c","ts":10,"dur":3,"pid":1,"tid":1},
                      {"ph":"X","name":"d","ts":5,"dur":30,"pid":1,"tid":2}])"),
            "OK: ");
  EXPECT_THAT(
      check(R"({"traceEvents":[{"ph":"X","name":"a","ts":0,"dur":10,"pid":1,"tid":1},
                                       {"ph":"X","name":"b","ts":5,"dur":10,"pid":1,"tid":1}]})"),
      HasSubstr("INVALID_ARGUMENT: traceEvents[1]: overlaps traceEvents[0] on pid 1 tid 1"));
}

}  // namespace
}  // namespace loom::base
