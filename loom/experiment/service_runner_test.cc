// The experiment through real `loom serve` and `loom agent` processes (LOOM_BINARY): a tiny
// experiment on zoo:tiny_cnn under two setups, and the errors before and during a setup.
#include "loom/experiment/service_runner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/experiment/report.h"
#include "loom/experiment/runner.h"

namespace loom::experiment {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ServiceRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("loom_service_runner_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  ExperimentSpec TinySpec() {
    ExperimentSpec spec;
    spec.name = "tiny";
    spec.setups = {"dedicated", "uncontrolled", "interleaved", "predictive"};
    spec.jobs = {{.model = "zoo:tiny_cnn",
                  .tasks = {0},
                  .trials = 4,
                  .batch_size = 2,
                  .tuner = "random",
                  .seed = 1},
                 {.model = "zoo:tiny_cnn",
                  .tasks = {1},
                  .trials = 4,
                  .batch_size = 2,
                  .tuner = "random",
                  .seed = 2}};
    return spec;
  }

  ServiceRunnerOptions Options() {
    ServiceRunnerOptions o;
    o.loom_binary = LOOM_BINARY;
    o.work_dir = (dir_ / "work").string();
    const int ncpu = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    o.device_cores = {ncpu - 1};
    o.cpu_slots = 1;
    o.build_slots = 1;
    o.min_repeat_ms = 1;
    o.repeat = 2;
    o.run_timeout_s = 10;
    o.start_timeout = absl::Seconds(30);
    o.setup_timeout = absl::Seconds(120);
    o.on_note = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    return o;
  }

  fs::path dir_;
};

std::string Logs(const ServiceSetupResult& r) {
  std::stringstream ss;
  for (const char* f : {"serve.log", "agent.log"}) {
    std::ifstream in(fs::path(r.log_dir) / f);
    ss << "--- " << f << "\n" << in.rdbuf();
  }
  return ss.str();
}

TEST_F(ServiceRunnerTest, TinyExperimentRunsEverySetupThroughServeAndAgent) {
  const ExperimentSpec spec = TinySpec();
  auto results = RunThroughService(spec, Options());
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 4u);
  // Every process it started was stopped and reaped.
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  for (const ServiceSetupResult& r : *results) {
    SCOPED_TRACE(r.setup);
    ASSERT_EQ(r.error, "") << Logs(r);
    ASSERT_EQ(r.jobs.size(), 2u);
    double sum = 0, longest = 0;
    for (size_t j = 0; j < r.jobs.size(); ++j) {
      const ServiceJobResult& job = r.jobs[j];
      EXPECT_EQ(job.state, "succeeded") << job.error << Logs(r);
      EXPECT_EQ(job.error, "");
      EXPECT_THAT(job.job_id, ::testing::StartsWith("j"));
      // One task of 4 trials each (task_indices), every trial a record.
      EXPECT_EQ(job.records, 4) << job.name;
      EXPECT_GT(job.seconds, 0);
      EXPECT_GT(job.cpu_seconds, 0);
      EXPECT_GT(job.device_seconds, 0);
      sum += job.seconds;
      longest = std::max(longest, job.seconds);
    }
    EXPECT_EQ(r.jobs[0].name, "zoo:tiny_cnn");
    EXPECT_EQ(r.jobs[1].name, "zoo:tiny_cnn#2");
    EXPECT_GT(r.makespan_s, 0);
    if (r.setup == "dedicated") {
      EXPECT_EQ(r.policy, "sequential");
      EXPECT_NEAR(r.makespan_s, sum, 1e-6);
    } else {
      EXPECT_EQ(r.policy, r.setup);
      EXPECT_NEAR(r.makespan_s, longest, 1e-6);
    }
    EXPECT_TRUE(fs::exists(fs::path(r.log_dir) / "state.db"));
  }
}

// A job the daemon refuses (a task index outside the model) is that job's row, not a crash; the
// other job still runs.
TEST_F(ServiceRunnerTest, RefusedJobIsRejectedInItsRowAndTheOtherJobRuns) {
  ExperimentSpec spec = TinySpec();
  spec.setups = {"interleaved"};
  spec.jobs[0].tasks = {99};
  auto results = RunThroughService(spec, Options());
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  const ServiceSetupResult& r = (*results)[0];
  EXPECT_EQ(r.error, "") << Logs(r);
  ASSERT_EQ(r.jobs.size(), 2u);
  EXPECT_EQ(r.jobs[0].state, "rejected");
  EXPECT_EQ(r.jobs[0].job_id, "");
  EXPECT_THAT(r.jobs[0].error, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(r.jobs[0].error, HasSubstr("99"));
  EXPECT_EQ(r.jobs[1].state, "succeeded") << r.jobs[1].error;
  EXPECT_EQ(r.jobs[1].records, 4);
  EXPECT_NEAR(r.makespan_s, r.jobs[1].seconds, 1e-6);
}

TEST_F(ServiceRunnerTest, MissingBinaryIsNotFoundBeforeAnythingStarts) {
  ServiceRunnerOptions o = Options();
  o.loom_binary = (dir_ / "no-such-loom").string();
  auto results = RunThroughService(TinySpec(), o);
  ASSERT_FALSE(results.ok());
  EXPECT_EQ(results.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(results.status().message(), HasSubstr("no-such-loom"));
  EXPECT_THAT(results.status().message(), HasSubstr("does not exist or is not executable"));
  EXPECT_FALSE(fs::exists(o.work_dir));
}

TEST_F(ServiceRunnerTest, BadSetupIsInvalidArgumentNamingIt) {
  ExperimentSpec spec = TinySpec();
  spec.setups = {"dedicated", "fastest"};
  auto results = RunThroughService(spec, Options());
  ASSERT_FALSE(results.ok());
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results.status().message(), HasSubstr("setups[1]: 'fastest' is not a setup"));
  EXPECT_EQ(ServicePolicyOfSetup("dedicated").value(), "sequential");
  EXPECT_EQ(ServicePolicyOfSetup("predictive").value(), "predictive");
}

TEST_F(ServiceRunnerTest, LayoutAndModelErrorsAreInvalidArgument) {
  ServiceRunnerOptions o = Options();
  o.device_cores = {0, 2};
  auto results = RunThroughService(TinySpec(), o);
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results.status().message(), HasSubstr("consecutive range"));

  ExperimentSpec spec = TinySpec();
  spec.jobs[1].model = (dir_ / "missing.onnx").string();
  results = RunThroughService(spec, Options());
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results.status().message(), HasSubstr("jobs[1].model: cannot read"));
}

// A daemon that does not start is the setup's error (with its log), and the next setup still
// runs: /bin/false stands in for a broken binary.
TEST_F(ServiceRunnerTest, DaemonThatExitsIsTheSetupsErrorAndTheNextSetupStillRuns) {
  ServiceRunnerOptions o = Options();
  o.loom_binary = "/bin/false";
  auto results = RunThroughService(TinySpec(), o);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 4u);
  for (const ServiceSetupResult& r : *results) {
    EXPECT_THAT(r.error, HasSubstr("loom serve exited with 1"));
    EXPECT_THAT(r.error, HasSubstr("serve.log"));
    EXPECT_EQ(r.makespan_s, 0);
    ASSERT_EQ(r.jobs.size(), 2u);
    for (const ServiceJobResult& j : r.jobs) EXPECT_EQ(j.state, "unfinished");
  }
}

// service.csv, results.json and report.html put each service setup beside the embedded one of
// the same name; the ratio is empty where there is none or the setup failed.
TEST_F(ServiceRunnerTest, WriteResultsComparesServiceMakespansWithEmbeddedOnes) {
  ExperimentResult result;
  for (const auto& [setup, makespan] :
       std::vector<std::pair<std::string, double>>{{"dedicated", 10}, {"interleaved", 8}}) {
    SetupResult r;
    r.setup = setup;
    r.makespan_s = makespan;
    r.jobs = {{.name = "a", .seconds = makespan / 2}, {.name = "b", .seconds = makespan}};
    result.setups.push_back(r);
  }
  auto ok_job = [](const std::string& name, double s) {
    return ServiceJobResult{
        .name = name, .job_id = "j1", .state = "succeeded", .seconds = s, .records = 4};
  };
  result.service = {
      {.setup = "dedicated",
       .policy = "sequential",
       .makespan_s = 10.5,
       .jobs = {ok_job("a", 5), ok_job("b", 5.5)}},
      {.setup = "interleaved",
       .policy = "interleaved",
       .makespan_s = 10,
       .jobs = {ok_job("a", 6), ok_job("b", 10)}},
      {.setup = "predictive",
       .policy = "predictive",
       .makespan_s = 0,
       .jobs = {{.name = "a", .state = "unfinished", .error = "the setup ended first"}},
       .error = "loom agent exited with 1"}};
  EXPECT_NEAR(ServiceRatio(result.service[0], &result.setups[0]), 1.05, 1e-9);
  EXPECT_TRUE(std::isnan(ServiceRatio(result.service[2], nullptr)));
  const std::string out = (dir_ / "out").string();
  ASSERT_TRUE(WriteResults(result, out).ok());
  std::ifstream csv(out + "/service.csv");
  std::stringstream text;
  text << csv.rdbuf();
  EXPECT_THAT(
      text.str(),
      HasSubstr("dedicated,sequential,10.000,10.500,1.0500,\"a\",5.000,5.000,4,succeeded,"));
  EXPECT_THAT(text.str(), HasSubstr("interleaved,interleaved,8.000,10.000,1.2500,\"b\",8.000,"));
  EXPECT_THAT(text.str(), HasSubstr("predictive,predictive,,0.000,,\"a\",,0.000,0,unfinished,"
                                    "\"the setup ended first\""));
  std::ifstream html(out + "/report.html");
  std::stringstream page;
  page << html.rdbuf();
  EXPECT_THAT(page.str(), HasSubstr("<h2>Through the service</h2>"));
  EXPECT_THAT(page.str(), HasSubstr("dedicated 1.050; interleaved 1.250; predictive &ndash;"));
  EXPECT_THAT(page.str(), HasSubstr("loom agent exited with 1"));
  std::ifstream json(out + "/results.json");
  std::stringstream js;
  js << json.rdbuf();
  EXPECT_THAT(js.str(), HasSubstr("\"service_makespan_s\": 10.5"));
}

}  // namespace
}  // namespace loom::experiment
