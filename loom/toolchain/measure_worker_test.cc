// Protocol tests of the measure worker, run in-process over a socket pair (the measurer's tests
// cover it as a real child process).
#include "loom/toolchain/measure_worker.h"

#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/tasks.h"
#include "loom/toolchain/measure_result.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class WorkerProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
    exit_code_ =
        std::async(std::launch::async, [fd = fds_[1]] { return RunMeasureWorker(fd, fd); });
  }
  void TearDown() override {
    if (fds_[0] >= 0) close(fds_[0]);
    // End of input ends the worker.
    ASSERT_EQ(exit_code_.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_EQ(exit_code_.get(), 0);
    close(fds_[1]);
  }

  json Call(const std::string& line) {
    const std::string data = line + "\n";
    EXPECT_EQ(write(fds_[0], data.data(), data.size()), static_cast<ssize_t>(data.size()));
    std::string answer;
    char c;
    while (read(fds_[0], &c, 1) == 1 && c != '\n') answer.push_back(c);
    return json::parse(answer);
  }

  int fds_[2] = {-1, -1};
  std::future<int> exit_code_;
};

TEST_F(WorkerProtocolTest, MalformedAndUnknownRequestsGetErrorsAndTheWorkerGoesOn) {
  json a = Call("this is not json");
  EXPECT_FALSE(a["ok"].get<bool>());
  EXPECT_EQ(a["error_kind"].get<int>(), static_cast<int>(ErrorKind::kUnknown));
  EXPECT_THAT(a["error"].get<std::string>(), HasSubstr("malformed"));
  json b = Call(R"({"op":"dance"})");
  EXPECT_THAT(b["error"].get<std::string>(), HasSubstr("unknown op 'dance'"));
  json c = Call(R"({"op":"measure","artifact":"/x.so","config":0})");
  EXPECT_THAT(c["error"].get<std::string>(), HasSubstr("measure before any task"));
}

TEST_F(WorkerProtocolTest, TaskErrorsAreInstantiationErrors) {
  json a = Call(R"({"op":"task","workload":"nonsense","isa":"generic"})");
  EXPECT_FALSE(a["ok"].get<bool>());
  EXPECT_EQ(a["error_kind"].get<int>(), static_cast<int>(ErrorKind::kInstantiation));
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = 2;
  w.n = 8;
  w.k = 8;
  w.trans_b = true;
  json bad_isa = {{"op", "task"}, {"workload", graph::WorkloadKey(w)}, {"isa", "avx9000"}};
  json b = Call(bad_isa.dump());
  EXPECT_FALSE(b["ok"].get<bool>());
  EXPECT_THAT(b["error"].get<std::string>(), HasSubstr("avx9000"));
}

TEST_F(WorkerProtocolTest, TaskThenMeasureOfAMissingArtifactIsARuntimeError) {
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = 2;
  w.n = 8;
  w.k = 8;
  w.trans_b = true;
  json task = {{"op", "task"}, {"workload", graph::WorkloadKey(w)}, {"isa", "generic"}};
  json a = Call(task.dump());
  ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
  json b = Call(R"({"op":"measure","artifact":"/nonexistent/k.so","config":0})");
  EXPECT_FALSE(b["ok"].get<bool>());
  EXPECT_EQ(b["error_kind"].get<int>(), static_cast<int>(ErrorKind::kRuntime));
  EXPECT_THAT(b["error"].get<std::string>(), HasSubstr("cannot load artifact"));
  json c = Call(R"({"op":"measure","artifact":"/nonexistent/k.so","config":-3})");
  EXPECT_EQ(c["error_kind"].get<int>(), static_cast<int>(ErrorKind::kInstantiation));
  EXPECT_THAT(c["error"].get<std::string>(), HasSubstr("outside the space"));
}

}  // namespace
}  // namespace loom::tune
