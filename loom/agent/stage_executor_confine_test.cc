// The measure worker's confinement through a real agent measure stage: the attack of issue 18
// item 1 (a planted shared object reaching an agent's measure stage) with the product's worker,
// the `loom` binary's `__measure-worker`. The planted candidate runs, but cannot open a socket or
// find the agent's token, and the candidate after it measures normally. Also: an executor whose
// worker the kernel cannot confine does not start. Where the kernel refuses a layer to this
// process, the tests that need it skip naming the layer.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/agent/stage_executor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/tune/builder.h"
#include "loom/tune/testing/confine_support.h"
#include "loom/tune/testing/escape_kernels.h"
#include "loom/tune/worker_process.h"

namespace loom::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using tune::testing::Escape;

// The device: the last core this process may use (as loom agent's default).
int LastAllowedCpu() { return tune::AllowedCpus().back(); }

graph::Workload SmallDense() {
  graph::Workload w;
  w.kind = graph::TaskKind::kDense;
  w.m = 4;
  w.n = 16;
  w.k = 32;
  w.trans_b = true;
  return w;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class StageExecutorConfineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string refused = tune::testing::RefusedConfinementLayer(); !refused.empty()) {
      GTEST_SKIP() << "the kernel refuses " << refused
                   << " to this process: the measure worker cannot be confined here";
    }
    dir_ = absl::StrCat(::testing::TempDir(), "/loom_stage_confine_test_", getpid());
    setenv("LOOM_TOKEN", "agent-token-of-this-test", 1);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  ExecutorOptions Options() const {
    ExecutorOptions o;
    o.cache_dir = dir_ + "/cache";
    o.measure.repeat = 2;
    o.measure.min_repeat_ms = 1;
    o.measure.timeout = absl::Seconds(5);
    o.measure.worker_command = {LOOM_BINARY, "__measure-worker"};  // the product's worker
    o.devices = {*ParseDevice(absl::StrCat("cpu:", LastAllowedCpu()))};
    o.host = "test";
    return o;
  }

  // A measure stage as the daemon would send it, for `escape` and then the plain kernel, both
  // of the template's default config; the shared objects built here, as a rogue agent would.
  v1::StageRequest MeasureRequest(Escape escape) {
    const ops::Target target = ops::HostCpuTarget();
    auto tmpl = ops::MakeTemplate(SmallDense(), target, {});
    EXPECT_TRUE(tmpl.ok());
    const ops::Config config = (*tmpl)->DefaultConfig();
    auto source = (*tmpl)->Emit(config);
    EXPECT_TRUE(source.ok());
    auto builder = tune::MakeLocalBuilder({.cache_dir = dir_ + "/rogue"});
    EXPECT_TRUE(builder.ok()) << builder.status();
    v1::StageRequest r;
    r.set_lease_id("lease-measure");
    r.set_job_id("job");
    r.set_kind(v1::STAGE_KIND_MEASURE);
    r.set_device(absl::StrCat("cpu:", LastAllowedCpu()));
    r.mutable_task()->set_workload_key(graph::WorkloadKey(SmallDense()));
    r.mutable_task()->set_target_kind("cpu");
    r.mutable_task()->set_target_key(target.Key());
    for (Escape e : {escape, Escape::kNone}) {
      ops::KernelSource s = *source;
      s.code = tune::testing::EscapeSource(source->code, e);
      tune::BuildResult b = (*builder)->BuildSource(s, config);
      EXPECT_EQ(b.error, tune::ErrorKind::kNone) << b.error_msg;
      v1::Artifact* a = r.mutable_measure()->add_artifacts();
      a->set_config_index(config.index);
      a->set_binary(ReadAll(b.artifact_path));
      a->set_content_hash(Sha256Hex(a->binary()));
    }
    return r;
  }

  std::string dir_;
};

TEST_F(StageExecutorConfineTest, PlantedObjectCannotOpenASocketAndTheNextCandidateMeasures) {
  auto executor = StageExecutor::Create(Options());
  ASSERT_TRUE(executor.ok()) << executor.status();
  v1::StageResult m = (*executor)->Execute(MeasureRequest(Escape::kSocket));
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 2);
  const v1::MeasureResult& planted = m.measure().results(0);
  EXPECT_EQ(planted.error(), v1::ERROR_KIND_RUNTIME);
  EXPECT_THAT(planted.error_msg(), HasSubstr("system call 'socket' (41) is forbidden"));
  EXPECT_EQ(planted.costs_size(), 0);
  const v1::MeasureResult& next = m.measure().results(1);
  EXPECT_EQ(next.error(), v1::ERROR_KIND_NONE) << next.error_msg();
  EXPECT_EQ(next.costs_size(), 2);
}

TEST_F(StageExecutorConfineTest, PlantedObjectDoesNotFindTheAgentsToken) {
  auto executor = StageExecutor::Create(Options());
  ASSERT_TRUE(executor.ok()) << executor.status();
  v1::StageResult m = (*executor)->Execute(MeasureRequest(Escape::kEnvToken));
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 2);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_RUNTIME);
  EXPECT_THAT(m.measure().results(0).error_msg(),
              HasSubstr(absl::StrCat("exited with status ", tune::testing::kRefused)));
  EXPECT_EQ(m.measure().results(1).error(), v1::ERROR_KIND_NONE);

  // The control: unconfined (--no-confine), the same object finds it.
  ExecutorOptions open = Options();
  open.measure.confine.enabled = false;
  auto unconfined = StageExecutor::Create(open);
  ASSERT_TRUE(unconfined.ok()) << unconfined.status();
  m = (*unconfined)->Execute(MeasureRequest(Escape::kEnvToken));
  ASSERT_EQ(m.measure().results_size(), 2);
  EXPECT_THAT(m.measure().results(0).error_msg(),
              HasSubstr(absl::StrCat("exited with status ", tune::testing::kEscaped)));
}

// Root without CAP_SYS_ADMIN (an unprivileged container): the executor, hence the agent, does not
// start, and says why and what to do.
TEST_F(StageExecutorConfineTest, WorkerTheKernelCannotConfineStopsTheStart) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root, to start a worker without CAP_SYS_ADMIN";
  if (!fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs setpriv (util-linux)";
  ExecutorOptions o = Options();
  o.measure.worker_command = {"/usr/bin/setpriv", "--bounding-set=-sys_admin", LOOM_BINARY,
                              "__measure-worker"};
  auto executor = StageExecutor::Create(o);
  EXPECT_EQ(executor.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(executor.status().message(),
              HasSubstr(absl::StrCat("device cpu:", LastAllowedCpu(),
                                     ": cannot confine the measure worker: network namespace")));
  EXPECT_THAT(executor.status().message(), HasSubstr("--no-confine"));
  o.measure.confine.enabled = false;
  EXPECT_TRUE(StageExecutor::Create(o).ok());
}

}  // namespace
}  // namespace loom::agent
