// Tests of the worker side's shared pieces (worker_process.h): the request loop's exits and
// errors, and the timing schedule, with handlers and clocks of the test's own (the measure
// workers' protocol tests, measure_worker_test.cc, run them with real kernels).
#include "loom/toolchain/worker_process.h"

#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/toolchain/measure_result.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A request loop over a socket pair, serving `handler` on a thread.
class ServeTest : public ::testing::Test {
 protected:
  void Start(WorkerHandler handler) {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
    exit_code_ = std::async(std::launch::async, [fd = fds_[1], handler] {
      return ServeWorkerRequests(fd, fd, handler);
    });
    reader_ = std::make_unique<LineReader>(fds_[0]);
  }
  void TearDown() override {
    if (fds_[0] >= 0) close(fds_[0]);
    if (exit_code_.valid()) exit_code_.wait();
    if (fds_[1] >= 0) close(fds_[1]);
  }
  json Call(const std::string& line) {
    EXPECT_TRUE(WriteAll(fds_[0], line + "\n"));
    std::string reply;
    EXPECT_TRUE(reader_->Next(&reply));
    return json::parse(reply, nullptr, false);
  }
  // Closes the parent's end and returns the loop's exit code.
  int Finish() {
    shutdown(fds_[0], SHUT_WR);
    return exit_code_.get();
  }

  int fds_[2] = {-1, -1};
  std::future<int> exit_code_;
  std::unique_ptr<LineReader> reader_;
};

TEST_F(ServeTest, PassesTheOpAndEndsCleanlyAtEndOfInput) {
  Start([](const std::string& op, const json& request, int) {
    return WorkerAnswer{json{{"op", op}, {"x", request.value("x", 0)}}};
  });
  EXPECT_EQ(Call(R"({"op":"ping","x":3})"), (json{{"op", "ping"}, {"x", 3}}));
  EXPECT_EQ(Call(R"({"x":4})"), (json{{"op", ""}, {"x", 4}}));
  const json bad = Call("[1,2]");
  EXPECT_EQ(bad, WorkerFailure(ErrorKind::kUnknown, "malformed request (not a JSON object)"));
  EXPECT_EQ(Finish(), 0);
}

TEST_F(ServeTest, AThrowingHandlerIsAnErrorAnswerAndTheLoopGoesOn) {
  Start([](const std::string& op, const json&, int) -> WorkerAnswer {
    if (op == "throw") throw std::runtime_error("boom");
    return {json{{"ok", true}}};
  });
  const json thrown = Call(R"({"op":"throw"})");
  EXPECT_EQ(thrown.value("ok", true), false);
  EXPECT_EQ(thrown.value("error_kind", 0), static_cast<int>(ErrorKind::kUnknown));
  EXPECT_THAT(thrown.value("error", ""), HasSubstr("worker exception: boom"));
  EXPECT_EQ(Call(R"({"op":"next"})"), (json{{"ok", true}}));
  EXPECT_EQ(Finish(), 0);
}

TEST_F(ServeTest, AFatalAnswerIsSentThenTheLoopExitsWithThree) {
  Start([](const std::string&, const json&, int) {
    return WorkerAnswer{json{{"ok", false}, {"fatal", true}}, /*fatal=*/true};
  });
  EXPECT_EQ(Call(R"({"op":"measure"})"), (json{{"ok", false}, {"fatal", true}}));
  EXPECT_EQ(exit_code_.get(), 3);
}

TEST(TimeRepeatsTest, GrowsNumberUntilARepeatLastsMinRepeatThenTimesTheRepeats) {
  std::vector<int64_t> asked;
  // One run takes 1 ms; a repeat must last 10 ms.
  absl::StatusOr<json> answer =
      TimeRepeats(json{{"number", 1}, {"repeat", 2}, {"min_repeat_ms", 10}}, int64_t{1} << 30,
                  [&](int64_t n) -> absl::StatusOr<double> {
                    asked.push_back(n);
                    return 1e-3 * static_cast<double>(n);
                  });
  ASSERT_TRUE(answer.ok()) << answer.status();
  // 1 run: 1 ms, scaled by 10 / 1 * 1.2 to 12 runs, then two repeats of 12.
  EXPECT_THAT(asked, ElementsAre(1, 12, 12));
  EXPECT_EQ((*answer)["number"], 12);
  EXPECT_EQ((*answer)["ok"], true);
  const std::vector<double> costs = (*answer)["costs"].get<std::vector<double>>();
  ASSERT_EQ(costs.size(), 2u);
  EXPECT_DOUBLE_EQ(costs[0], 1e-3);
}

TEST(TimeRepeatsTest, NumberStopsAtItsCapAndDefaultsApply) {
  std::vector<int64_t> asked;
  // Runs that take no measurable time: number grows 100x a step up to the cap of 1000.
  absl::StatusOr<json> answer =
      TimeRepeats(json{{"min_repeat_ms", 5}}, 1000, [&](int64_t n) -> absl::StatusOr<double> {
        asked.push_back(n);
        return 0.0;
      });
  ASSERT_TRUE(answer.ok());
  // number 1 -> 100 -> 1000 (capped), then the default 3 repeats at the cap.
  EXPECT_THAT(asked, ElementsAre(1, 100, 1000, 1000, 1000));
  EXPECT_EQ((*answer)["number"], 1000);
}

TEST(TimeRepeatsTest, TheFirstErrorOfATimedBatchEndsTheTiming) {
  int calls = 0;
  absl::StatusOr<json> answer =
      TimeRepeats(json{{"repeat", 5}}, 100, [&](int64_t) -> absl::StatusOr<double> {
        if (++calls == 2) return absl::InternalError("launch failed");
        return 1.0;
      });
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(answer.status().message(), HasSubstr("launch failed"));
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace loom::tune
