// The measure worker's confinement through a real agent measure stage, with the product's worker
// (the `loom` binary's `__measure-worker`): a candidate this agent compiled itself misbehaves (a
// stand-in for a codegen or compiler bug, or a poisoned template: the agent's compiler is a
// wrapper that turns one config's kernel into an escape attempt; a planted object never runs,
// docs/SECURITY.md). The candidate runs, but cannot open a socket or find the agent's token, and
// the next stage's candidate measures normally. Also: an executor whose worker the kernel cannot
// confine does not start. Where the kernel refuses a layer to this process, the tests that need it
// skip naming the layer.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/agent/stage_executor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/testing/confine_support.h"
#include "loom/toolchain/testing/escape_kernels.h"
#include "loom/toolchain/worker_process.h"

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

  // Options whose compiler builds `escape` instead of the template's default config (the other
  // configs compile as they are): a wrapper around g++ that swaps that one source for the escape.
  ExecutorOptions MiscompilingOptions(Escape escape) {
    auto tmpl = ops::MakeTemplate(SmallDense(), ops::HostCpuTarget(), {});
    EXPECT_TRUE(tmpl.ok()) << tmpl.status();
    auto source = (*tmpl)->Emit((*tmpl)->DefaultConfig());
    EXPECT_TRUE(source.ok()) << source.status();
    fs::create_directories(dir_);
    WriteAll(dir_ + "/plain.cc", source->code);
    WriteAll(dir_ + "/escape.cc", tune::testing::EscapeSource(source->code, escape));
    const std::string wrapper = dir_ + "/miscompiling-cc.sh";
    WriteAll(wrapper, absl::StrCat("for a in \"$@\"; do case \"$a\" in *.cc) cmp -s \"$a\" '", dir_,
                                   "/plain.cc' && cp '", dir_,
                                   "/escape.cc' \"$a\";; esac; done\nexec g++ \"$@\"\n"));
    ExecutorOptions o = Options();
    o.build.compiler = absl::StrCat("/bin/sh ", wrapper);
    return o;
  }

  // A measure stage as the daemon would send it: `config` of the template, by a hash this agent
  // has not built (so it builds the config itself).
  v1::StageRequest MeasureRequest(int64_t config) const {
    v1::StageRequest r;
    r.set_lease_id(absl::StrCat("lease-measure-", config));
    r.set_job_id("job");
    r.set_kind(v1::STAGE_KIND_MEASURE);
    r.set_device(absl::StrCat("cpu:", LastAllowedCpu()));
    r.mutable_task()->set_workload_key(graph::WorkloadKey(SmallDense()));
    r.mutable_task()->set_target_kind("cpu");
    r.mutable_task()->set_target_key(ops::HostCpuTarget().Key());
    v1::Artifact* a = r.mutable_measure()->add_artifacts();
    a->set_config_index(config);
    a->set_content_hash(std::string(64, '0'));
    return r;
  }

  // The default config (which the miscompiling compiler turns into the escape) and another config
  // that compiles as it is.
  static std::pair<int64_t, int64_t> EscapeAndPlainConfigs() {
    auto tmpl = ops::MakeTemplate(SmallDense(), ops::HostCpuTarget(), {});
    EXPECT_TRUE(tmpl.ok()) << tmpl.status();
    const ops::Config escape = (*tmpl)->DefaultConfig();
    const std::string escape_code = (*tmpl)->Emit(escape)->code;
    for (int64_t i = 0; i < 256; ++i) {
      auto s = (*tmpl)->Emit(ops::Config{i});
      if (i != escape.index && s.ok() && s->code != escape_code) return {escape.index, i};
    }
    ADD_FAILURE() << "the template has no second config";
    return {escape.index, escape.index};
  }

  static void WriteAll(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }

  std::string dir_;
};

TEST_F(StageExecutorConfineTest, CandidateCannotOpenASocketAndTheNextCandidateMeasures) {
  auto executor = StageExecutor::Create(MiscompilingOptions(Escape::kSocket));
  ASSERT_TRUE(executor.ok()) << executor.status();
  const auto [escape, plain] = EscapeAndPlainConfigs();
  v1::StageResult m = (*executor)->Execute(MeasureRequest(escape));
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 1);
  const v1::MeasureResult& bad = m.measure().results(0);
  EXPECT_EQ(bad.error(), v1::ERROR_KIND_RUNTIME);
  EXPECT_THAT(bad.error_msg(), HasSubstr("system call 'socket' (41) is forbidden"));
  EXPECT_EQ(bad.costs_size(), 0);
  m = (*executor)->Execute(MeasureRequest(plain));
  ASSERT_THAT(m.error(), IsEmpty());
  ASSERT_EQ(m.measure().results_size(), 1);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_NONE)
      << m.measure().results(0).error_msg();
  EXPECT_EQ(m.measure().results(0).costs_size(), 2);
}

TEST_F(StageExecutorConfineTest, CandidateDoesNotFindTheAgentsToken) {
  const auto [escape, plain] = EscapeAndPlainConfigs();
  auto executor = StageExecutor::Create(MiscompilingOptions(Escape::kEnvToken));
  ASSERT_TRUE(executor.ok()) << executor.status();
  v1::StageResult m = (*executor)->Execute(MeasureRequest(escape));
  ASSERT_EQ(m.measure().results_size(), 1);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_RUNTIME);
  EXPECT_THAT(m.measure().results(0).error_msg(),
              HasSubstr(absl::StrCat("exited with status ", tune::testing::kRefused)));
  m = (*executor)->Execute(MeasureRequest(plain));
  ASSERT_EQ(m.measure().results_size(), 1);
  EXPECT_EQ(m.measure().results(0).error(), v1::ERROR_KIND_NONE);

  // The control: unconfined (--no-confine), the same candidate finds it.
  ExecutorOptions open = MiscompilingOptions(Escape::kEnvToken);
  open.measure.confine.enabled = false;
  open.cache_dir = dir_ + "/cache-unconfined";
  auto unconfined = StageExecutor::Create(open);
  ASSERT_TRUE(unconfined.ok()) << unconfined.status();
  m = (*unconfined)->Execute(MeasureRequest(escape));
  ASSERT_EQ(m.measure().results_size(), 1);
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
