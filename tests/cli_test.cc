// End-to-end tests of the `loom` binary: what a user sees for good and bad input, and the
// reference executor against ONNX Runtime's outputs on the real models in ../shared/models.
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/graph.h"
#include "loom/graph/npy.h"
#include "loom/graph/onnx_exporter.h"
#include "loom/graph/tasks.h"
#include "loom/graph/zoo.h"
#include "loom/ops/target.h"
#include "loom/tune/record_store.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct Outcome {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

fs::path ScratchDir() {
  const char* build = std::getenv("LOOM_BUILD_DIR");
  fs::path dir = fs::path(build ? build : fs::temp_directory_path().string()) / "cli_test" /
                 ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::create_directories(dir);
  return dir;
}

// `prefix`: a command that runs the binary (e.g. setpriv with some capability dropped).
Outcome RunLoomUnder(const std::string& prefix, const std::string& args) {
  fs::path dir = ScratchDir();
  fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  std::string cmd = prefix + std::string(LOOM_BINARY) + " " + args + " >" + out.string() + " 2>" +
                    err.string() + " </dev/null";
  int status = std::system(cmd.c_str());
  Outcome o;
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.out = ReadFile(out);
  o.err = ReadFile(err);
  return o;
}

Outcome RunLoom(const std::string& args) { return RunLoomUnder("", args); }

// One line on stderr, starting with "loom: error:", and a non-zero exit.
void ExpectOneLineError(const Outcome& o, const std::string& fragment) {
  EXPECT_NE(o.exit_code, 0);
  EXPECT_LT(o.exit_code, 128) << "crashed: " << o.err;
  EXPECT_THAT(o.err, HasSubstr("loom: error:"));
  EXPECT_THAT(o.err, HasSubstr(fragment));
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
}

TEST(CliTest, UnknownSubcommand) {
  ExpectOneLineError(RunLoom("frobnicate"), "unknown subcommand 'frobnicate'");
}

TEST(CliTest, UnknownFlag) { ExpectOneLineError(RunLoom("tasks zoo:resnet18 --bogus"), "--bogus"); }

TEST(CliTest, MissingFile) {
  ExpectOneLineError(RunLoom("inspect /nonexistent/model.onnx"), "does not exist");
}

TEST(CliTest, UnknownZooModel) {
  ExpectOneLineError(RunLoom("inspect zoo:alexnet9000"), "alexnet9000");
}

TEST(CliTest, NotAnOnnxFile) {
  fs::path p = ScratchDir() / "garbage.onnx";
  std::ofstream(p) << "this is not a protobuf at all \x01\x02\x03";
  ExpectOneLineError(RunLoom("inspect " + p.string()), "not a valid ONNX model");
}

TEST(CliTest, TruncatedOnnxFile) {
  fs::path full = ScratchDir() / "tiny.onnx", cut = ScratchDir() / "tiny_cut.onnx";
  auto g = graph::BuildZooModel("tiny_cnn");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(graph::ExportOnnxFile(*g, full.string()).ok());
  std::string bytes = ReadFile(full);
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  Outcome o = RunLoom("run " + cut.string());
  EXPECT_NE(o.exit_code, 0);
  EXPECT_LT(o.exit_code, 128) << o.err;
  EXPECT_THAT(o.err, HasSubstr("loom: error:"));
}

TEST(CliTest, UnsupportedOperatorNamesOpAndNode) {
  graph::Graph g;
  g.name = "bad";
  g.opset = 17;
  g.inputs.push_back({"x", {graph::DType::kFloat32, {1, 4}}});
  g.outputs.push_back({"y", {graph::DType::kFloat32, {1, 4}}});
  graph::Node n;
  n.name = "my_node";
  n.op_type = "Hardmax";
  n.inputs = {"x"};
  n.outputs = {"y"};
  g.nodes.push_back(n);
  fs::path p = ScratchDir() / "unsupported.onnx";
  ASSERT_TRUE(graph::ExportOnnxFile(g, p.string()).ok());
  Outcome o = RunLoom("inspect " + p.string());
  ExpectOneLineError(o, "Hardmax");
  EXPECT_THAT(o.err, HasSubstr("my_node"));
}

TEST(CliTest, WrongInputShapeAndDtype) {
  fs::path shape = ScratchDir() / "shape.npy", dtype = ScratchDir() / "dtype.npy";
  ASSERT_TRUE(
      graph::WriteNpy(graph::Tensor(graph::DType::kFloat32, {1, 3, 16, 16}), shape.string()).ok());
  ASSERT_TRUE(
      graph::WriteNpy(graph::Tensor(graph::DType::kInt64, {1, 3, 32, 32}), dtype.string()).ok());
  ExpectOneLineError(RunLoom("run zoo:tiny_cnn --input " + shape.string()), "[1,3,16,16]");
  ExpectOneLineError(RunLoom("run zoo:tiny_cnn --input " + dtype.string()), "int64");
}

TEST(CliTest, AbsurdBatchIsRejected) {
  Outcome o = RunLoom("inspect zoo:resnet18 --batch 100000000");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_THAT(o.err, HasSubstr("--batch"));
}

TEST(CliTest, ZooListNamesTheModels) {
  Outcome o = RunLoom("zoo list");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  for (const char* name : {"resnet18", "resnet50", "mobilenet_v2", "vgg11"}) {
    EXPECT_THAT(o.out, HasSubstr(name));
  }
}

TEST(CliTest, TasksOfResNet18AreElevenConvsAndOneDense) {
  Outcome o = RunLoom("tasks zoo:resnet18 --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t pos = o.out.find(needle); pos != std::string::npos;
         pos = o.out.find(needle, pos + 1)) {
      ++n;
    }
    return n;
  };
  EXPECT_EQ(count("\"kind\": \"conv2d\""), 11u);
  EXPECT_EQ(count("\"kind\": \"dense\""), 1u);
  EXPECT_EQ(count("\"kind\":"), 12u);
}

TEST(CliTest, InspectReportsParametersAndFlops) {
  Outcome o = RunLoom("inspect zoo:resnet18");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("input       input: float32[1,3,224,224]"));
  EXPECT_THAT(o.out, HasSubstr("output      output: float32[1,1000]"));
  EXPECT_THAT(o.out, HasSubstr("FLOPs       3.6"));  // ResNet-18: 1.82 GMACs
}

TEST(CliTest, ZooExportRunsTheSameAsTheBuiltInModel) {
  fs::path dir = ScratchDir();
  Outcome e = RunLoom("zoo export tiny_cnn -o " + (dir / "tiny.onnx").string());
  ASSERT_EQ(e.exit_code, 0) << e.err;
  Outcome a = RunLoom("run zoo:tiny_cnn --output " + (dir / "a.npy").string());
  Outcome b =
      RunLoom("run " + (dir / "tiny.onnx").string() + " --output " + (dir / "b.npy").string());
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto ta = graph::ReadNpy((dir / "a.npy").string());
  auto tb = graph::ReadNpy((dir / "b.npy").string());
  ASSERT_TRUE(ta.ok() && tb.ok());
  ASSERT_EQ(ta->shape(), tb->shape());
  for (int64_t i = 0; i < ta->num_elements(); ++i) {
    EXPECT_EQ(ta->data<float>()[i], tb->data<float>()[i]) << i;
  }
}

// The foundation's acceptance test: `loom run` on each real model matches ONNX Runtime.
class SharedModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SharedModelTest, RunMatchesOnnxRuntimeReference) {
  const char* shared = std::getenv("LOOM_SHARED_DIR");
  const std::string name = GetParam();
  fs::path archive = fs::path(shared ? shared : "") / "models" / (name + ".tar.xz");
  if (!shared || !fs::exists(archive)) GTEST_SKIP() << "no ../shared/models/" << name;
  fs::path dir = ScratchDir();
  if (!fs::exists(dir / (name + ".onnx"))) {
    std::string cmd = "tar -xJf " + archive.string() + " -C " + dir.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  fs::path model = dir / (name + ".onnx"), input = dir / (name + ".input.npy");
  fs::path out = dir / "loom_output.npy";
  Outcome o =
      RunLoom("run " + model.string() + " --input " + input.string() + " --output " + out.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  auto ref = graph::ReadNpy((dir / (name + ".ort_output.npy")).string());
  auto got = graph::ReadNpy(out.string());
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(ref->shape(), got->shape());
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < ref->num_elements(); ++i) {
    max_ref = std::max(max_ref, std::abs(double{ref->data<float>()[i]}));
    max_diff = std::max(max_diff, std::abs(double{ref->data<float>()[i]} - got->data<float>()[i]));
  }
  EXPECT_LE(max_diff, 1e-3 * max_ref) << "max|a-b| = " << max_diff << ", max|ref| = " << max_ref;
}

INSTANTIATE_TEST_SUITE_P(Models, SharedModelTest,
                         ::testing::Values("resnet18", "mobilenet_v2", "squeezenet1_1"));

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// Records of kSmallConv that are trials of a job (the default config's baseline measurement,
// stored under "<job>#default", is counted only when `defaults` is set).
int64_t CountRecords(const std::string& db, std::optional<tune::ErrorKind> kind = std::nullopt,
                     bool defaults = false) {
  auto store = tune::OpenSqliteRecordStore(db);
  EXPECT_TRUE(store.ok()) << store.status();
  auto key = graph::WorkloadKey([] {
    graph::Workload w;
    w.kind = graph::TaskKind::kConv2d;
    w.n = 1, w.c = 16, w.h = 8, w.w = 8, w.k = 16, w.r = 3, w.s = 3;
    w.stride_h = w.stride_w = 1;
    w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 1;
    w.dilation_h = w.dilation_w = 1;
    w.groups = 1;
    return w;
  }());
  auto records = (*store)->ForTask(key, ops::HostCpuTarget().Key(), std::nullopt);
  EXPECT_TRUE(records.ok()) << records.status();
  int64_t n = 0;
  for (const auto& r : *records) {
    bool is_default = r.job_id.ends_with("#default");
    n += (is_default == defaults) && (!kind.has_value() || r.error == *kind);
  }
  return n;
}

constexpr char kSmallConv[] = "--conv2d 1,16,8,8,16,3,3,1,1";

// Crashing, hanging and wrong candidates are error records; the tuner neither dies nor stops.
TEST(CliTuneTest, FaultyCandidatesAreErrorRecords) {
  fs::path db = ScratchDir() / "faults.db";
  fs::remove(db);
  Outcome o = RunLoom(std::string("tune-task ") + kSmallConv +
                      " --trials 16 --batch-size 8 --tuner random --seed 11 --test-faults"
                      " --run-timeout 0.5 --db " +
                      db.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(CountRecords(db.string()), 16);
  EXPECT_EQ(CountRecords(db.string(), std::nullopt, /*defaults=*/true), 1);
  EXPECT_GE(CountRecords(db.string(), tune::ErrorKind::kRuntime), 1);
  EXPECT_GE(CountRecords(db.string(), tune::ErrorKind::kRunTimeout), 1);
  EXPECT_GE(CountRecords(db.string(), tune::ErrorKind::kWrongAnswer), 1);
  EXPECT_GE(CountRecords(db.string(), tune::ErrorKind::kNone), 1);
}

// kill -9 mid-job loses at most the round in flight; the same command resumes and finishes.
TEST(CliTuneTest, KilledJobResumesFromTheDatabase) {
  fs::path db = ScratchDir() / "resume.db";
  fs::remove(db);
  std::string cmd = std::string("tune-task ") + kSmallConv +
                    " --trials 24 --batch-size 4 --tuner random --seed 2 --db " + db.string();
  std::string killed =
      "timeout -s KILL 2 " + std::string(LOOM_BINARY) + " " + cmd + " >/dev/null 2>&1";
  std::system(killed.c_str());
  int64_t after_kill = CountRecords(db.string());
  EXPECT_EQ(after_kill % 4, 0) << "a round was half stored";
  Outcome o = RunLoom(cmd + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("\"trials\": 24"));
  EXPECT_THAT(o.out, HasSubstr("\"resumed_trials\": " + std::to_string(after_kill)));
  EXPECT_EQ(CountRecords(db.string()), 24);
}

// Where the kernel refuses the candidates' sandbox (root without CAP_SYS_ADMIN, as in an
// unprivileged container; setpriv drops it), `loom tune` and `loom agent` stop at start with one
// line naming --no-confine; with --no-confine they run, and warn at start.
constexpr char kWithoutSysAdmin[] = "env LOOM_TOKEN=t /usr/bin/setpriv --bounding-set=-sys_admin ";

bool CanDropSysAdmin() { return geteuid() == 0 && fs::exists("/usr/bin/setpriv"); }

TEST(CliConfineTest, TuneRunsUnconfinedOnlyWithNoConfine) {
  if (!CanDropSysAdmin()) GTEST_SKIP() << "needs root and setpriv, to run loom without SYS_ADMIN";
  fs::path db = ScratchDir() / "unconfined.db";
  fs::remove(db);
  const std::string args = std::string("tune-task ") + kSmallConv +
                           " --trials 2 --batch-size 2 --tuner random --min-repeat-ms 1 --db " +
                           db.string();
  Outcome refused = RunLoomUnder(kWithoutSysAdmin, args);
  ExpectOneLineError(refused, "cannot confine");
  EXPECT_THAT(refused.err, HasSubstr("start with --no-confine"));
  Outcome o = RunLoomUnder(kWithoutSysAdmin, args + " --no-confine");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.err, HasSubstr("loom tune-task: warning: --no-confine: candidates run unconfined"));
  EXPECT_GE(CountRecords(db.string(), tune::ErrorKind::kNone), 2);
}

TEST(CliConfineTest, AgentStartsUnconfinedOnlyWithNoConfine) {
  if (!CanDropSysAdmin()) GTEST_SKIP() << "needs root and setpriv, to run loom without SYS_ADMIN";
  const std::string args = "agent --server 127.0.0.1:1";
  Outcome refused = RunLoomUnder(kWithoutSysAdmin, args);
  ExpectOneLineError(refused, "cannot confine the measure worker: network namespace");
  EXPECT_THAT(refused.err, HasSubstr("start with --no-confine"));
  // Unconfined it starts and waits for its (absent) daemon until stopped; the warning is first.
  Outcome o =
      RunLoomUnder(std::string("timeout -s TERM 3 ") + kWithoutSysAdmin, args + " --no-confine");
  EXPECT_THAT(o.err, HasSubstr("loom agent: warning: --no-confine: candidates run unconfined"));
  EXPECT_THAT(o.err, Not(HasSubstr("loom: error")));
}

// Two models as two concurrent jobs in the engine: a table per job, the policy summary, and
// every trial of both jobs in the database.
TEST(CliTuneTest, TwoModelsRunAsConcurrentJobsUnderAPolicy) {
  fs::path db = ScratchDir() / "engine.db";
  fs::remove(db);
  Outcome o = RunLoom(
      "tune zoo:tiny_cnn zoo:tiny_cnn --tasks 0,1 --trials 4 --batch-size 4"
      " --tuner random --policy interleaved --db " +
      db.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("policy interleaved: makespan"));
  EXPECT_THAT(o.err, HasSubstr("device:cpu:"));
  auto store = tune::OpenSqliteRecordStore(db.string());
  ASSERT_TRUE(store.ok()) << store.status();
  auto n = (*store)->Count({});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2 * 2 * (4 + 1));  // 2 jobs x 2 tasks x (4 trials + the default config)
  ExpectOneLineError(RunLoom("tune zoo:tiny_cnn --policy fastest"), "fastest");
}

// The experiment runner end to end: two setups of two small jobs, results written.
TEST(CliExperimentTest, RunsEachSetupAndWritesResults) {
  fs::path dir = ScratchDir() / "experiment";
  fs::remove_all(dir);
  fs::path spec = ScratchDir() / "experiment.yaml";
  std::ofstream(spec) << "setups: [dedicated, interleaved]\n"
                         "jobs:\n"
                         "  - {model: zoo:tiny_cnn, tasks: [0], trials: 2, batch_size: 2, "
                         "tuner: random}\n"
                         "  - {model: zoo:tiny_cnn, tasks: [1], trials: 2, batch_size: 2, "
                         "tuner: random}\n";
  Outcome o = RunLoom("experiment " + spec.string() + " -o " + dir.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("interleaved"));
  std::ifstream csv(dir / "results.csv");
  std::string line;
  int rows = 0;
  while (std::getline(csv, line))
    rows += line.rfind("dedicated,", 0) == 0 || line.rfind("interleaved,", 0) == 0;
  EXPECT_EQ(rows, 4);  // 2 setups x 2 jobs
  EXPECT_TRUE(fs::exists(dir / "results.json"));
  std::ofstream(spec) << "jobs:\n  - {model: zoo:tiny_cnn, trails: 2}\n";
  ExpectOneLineError(RunLoom("experiment " + spec.string() + " -o " + dir.string()),
                     "unknown key 'trails' at jobs[0].trails");
}

TEST(CliTuneTest, BadTuneArgumentsAreOneLineErrors) {
  ExpectOneLineError(RunLoom("tune-task --conv2d 1,2,3 --trials 4"), "9 numbers");
  ExpectOneLineError(RunLoom("tune-task --trials 4"), "exactly one of --conv2d or --dense");
  ExpectOneLineError(RunLoom("tune zoo:resnet18 --tasks 99 --trials 1"), "out of range");
  ExpectOneLineError(RunLoom(std::string("tune-task ") + kSmallConv + " --device-cores 4096"),
                     "does not exist");
  fs::path garbage = ScratchDir() / "garbage.db";
  std::ofstream(garbage) << "definitely not sqlite, just text that is long enough to be a header";
  ExpectOneLineError(RunLoom(std::string("tune-task ") + kSmallConv + " --db " + garbage.string()),
                     "not an SQLite database");
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

TEST(CliRecordsTest, ExportImportRoundTripAndStageReport) {
  fs::path dir = ScratchDir();
  fs::path db = dir / "a.db", copy = dir / "b.db", lines = dir / "a.jsonl";
  fs::remove(db);
  fs::remove(copy);
  Outcome t = RunLoom(std::string("tune-task ") + kSmallConv +
                      " --trials 8 --batch-size 4 --tuner random --job-id rt --db " + db.string());
  ASSERT_EQ(t.exit_code, 0) << t.err;
  Outcome e = RunLoom("records export --db " + db.string() + " -o " + lines.string());
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_THAT(e.out, HasSubstr("exported 9 records"));  // 8 trials + the default config
  Outcome i = RunLoom("records import --db " + copy.string() + " " + lines.string());
  ASSERT_EQ(i.exit_code, 0) << i.err;
  EXPECT_THAT(i.out, HasSubstr("imported 9 records"));
  Outcome again = RunLoom("records import --db " + copy.string() + " " + lines.string());
  EXPECT_THAT(again.out, HasSubstr("imported 0 records"));  // duplicates are skipped
  Outcome s = RunLoom("records summary --db " + copy.string());
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_THAT(s.out, HasSubstr("conv2d:f32:n1_c16_h8_w8_k16_r3_s3"));
  Outcome st = RunLoom("records stages --db " + db.string() + " --job rt");
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_THAT(st.out, HasSubstr("2 rounds, 8 stage runs"));
  EXPECT_THAT(st.out, HasSubstr("device busy"));
}

// A prior written from one job's records seeds the cost model of another job: its configs reach
// the model (prior_records), not the job's history.
TEST(CliRecordsTest, APriorFromTheDatabaseSeedsTheNextJobsModel) {
  fs::path dir = ScratchDir();
  fs::path db = dir / "p.db", prior = dir / "prior.json", fresh = dir / "fresh.db";
  fs::remove(db);
  fs::remove(fresh);
  Outcome t = RunLoom(std::string("tune-task ") + kSmallConv +
                      " --trials 8 --batch-size 4 --tuner random --db " + db.string());
  ASSERT_EQ(t.exit_code, 0) << t.err;
  Outcome p = RunLoom("records prior --db " + db.string() + " -o " + prior.string());
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_THAT(p.out, HasSubstr("prior of 1 tasks, 9 configs (from 9 records)"));
  Outcome seeded = RunLoom(std::string("tune-task ") + kSmallConv +
                           " --trials 4 --batch-size 4 --json --prior " + prior.string() +
                           " --db " + fresh.string());
  ASSERT_EQ(seeded.exit_code, 0) << seeded.err;
  EXPECT_THAT(seeded.out, HasSubstr("\"prior_records\": 9"));
  EXPECT_THAT(seeded.out, HasSubstr("\"resumed_trials\": 0"));
  Outcome off =
      RunLoom(std::string("tune-task ") + kSmallConv +
              " --trials 4 --batch-size 4 --json --no-prior --job-id off --db " + fresh.string());
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_THAT(off.out, HasSubstr("\"prior_records\": 0"));

  ExpectOneLineError(RunLoom(std::string("tune-task ") + kSmallConv + " --prior " +
                             (dir / "missing.json").string()),
                     "cannot read prior file");
  ExpectOneLineError(RunLoom(std::string("tune-task ") + kSmallConv + " --prior " + db.string()),
                     "not valid JSON");
  ExpectOneLineError(RunLoom("records prior --db " + db.string() + " --target cpu:avx2:none -o " +
                             (dir / "none.json").string()),
                     "no records of target 'cpu:avx2:none'");
}

TEST(CliRecordsTest, BadRecordFilesAreOneLineErrors) {
  fs::path dir = ScratchDir();
  fs::path bad = dir / "bad.jsonl";
  std::ofstream(bad) << "{\"x\": 1}\n";
  ExpectOneLineError(RunLoom("records import --db " + (dir / "x.db").string() + " " + bad.string()),
                     "line 1");
  ExpectOneLineError(RunLoom("records summary --db " + (dir / "missing.db").string()),
                     "does not exist");
  ExpectOneLineError(RunLoom("records stages --db " + (dir / "x.db").string() + " --job nope"),
                     "no stage timings");
}

TEST(CliBenchTest, BenchPrintsUntunedAndTunedLatencyAndProfile) {
  const fs::path dir = ScratchDir();
  const std::string common = " --min-time 0 --min-runs 3 --cache-dir " +
                             (dir / "kernels").string() + " --db " + (dir / "empty.db").string();
  Outcome o = RunLoom("bench zoo:tiny_cnn --json --check" + common);
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("\"variant\": \"untuned\""));
  EXPECT_THAT(o.out, HasSubstr("\"variant\": \"tuned\""));
  EXPECT_THAT(o.out, HasSubstr("\"median_ms\""));
  EXPECT_THAT(o.out, HasSubstr("\"p90_ms\""));
  EXPECT_THAT(o.out, HasSubstr("\"max_rel_err\""));
  Outcome p = RunLoom("bench zoo:tiny_cnn --profile --threads 2" + common);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_THAT(p.out, HasSubstr("2 threads"));
  EXPECT_THAT(p.out, HasSubstr("profile untuned"));
  EXPECT_THAT(p.out, HasSubstr("conv2d_nchwc"));
  EXPECT_THAT(p.out, HasSubstr("top nodes"));
  ExpectOneLineError(RunLoom("bench zoo:tiny_cnn --threads 0"), "--threads");
}

// `loom compile` writes an artifact that `loom run DIR` and `loom bench DIR` load with no records
// and no compile, and that answers what the reference executor answers.
TEST(CliCompileTest, CompileThenRunTheArtifact) {
  const fs::path dir = ScratchDir();
  const fs::path art = dir / "tiny_cnn_artifact";
  fs::remove_all(art);
  Outcome c = RunLoom("compile zoo:tiny_cnn --threads 2 -o " + art.string() + " --cache-dir " +
                      (dir / "kernels").string());
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_THAT(c.out, HasSubstr("wrote"));
  for (const char* f : {"plan.json", "weights.bin", "model.so"}) EXPECT_TRUE(fs::exists(art / f));

  auto g = graph::BuildZooModel("tiny_cnn");
  ASSERT_TRUE(g.ok()) << g.status();
  graph::Tensor x(graph::DType::kFloat32, g->inputs[0].type.shape);
  for (int64_t i = 0; i < x.num_elements(); ++i) x.data<float>()[i] = 0.01f * (i % 97) - 0.4f;
  ASSERT_TRUE(graph::WriteNpy(x, (dir / "x.npy").string()).ok());
  Outcome ref = RunLoom("run zoo:tiny_cnn --input " + (dir / "x.npy").string() + " --output " +
                        (dir / "ref.npy").string());
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  Outcome run = RunLoom("run " + art.string() + " --threads 1 --input " + (dir / "x.npy").string() +
                        " --output " + (dir / "got.npy").string());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("compiled artifact, 1 thread"));
  auto want = graph::ReadNpy((dir / "ref.npy").string());
  auto got = graph::ReadNpy((dir / "got.npy").string());
  ASSERT_TRUE(want.ok() && got.ok());
  ASSERT_EQ(want->shape(), got->shape());
  double err = 0, mag = 0;
  for (int64_t i = 0; i < want->num_elements(); ++i) {
    err = std::max(err, std::fabs(double{got->data<float>()[i]} - want->data<float>()[i]));
    mag = std::max(mag, std::fabs(double{want->data<float>()[i]}));
  }
  EXPECT_GT(mag, 0);
  EXPECT_LE(err, 1e-3 * mag);
  // Without --threads the artifact runs on the threads it was compiled with.
  Outcome run2 = RunLoom("run " + art.string());
  ASSERT_EQ(run2.exit_code, 0) << run2.err;
  EXPECT_THAT(run2.out, HasSubstr("2 threads"));

  Outcome bench = RunLoom("bench " + art.string() + " --min-time 0 --min-runs 3");
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_THAT(bench.out, HasSubstr("artifact"));
  ExpectOneLineError(RunLoom("bench " + art.string() + " --check"), "compiled artifact");

  // A damaged artifact, a missing database, a missing -o: one line each.
  const fs::path bad = dir / "damaged";
  fs::remove_all(bad);
  fs::copy(art, bad, fs::copy_options::recursive);
  { std::ofstream(bad / "weights.bin", std::ios::binary | std::ios::app) << "x"; }
  ExpectOneLineError(RunLoom("run " + bad.string()), "weights.bin is corrupt");
  ExpectOneLineError(RunLoom("compile zoo:tiny_cnn --db " + (dir / "nope.db").string() + " -o " +
                             (dir / "x").string()),
                     "nope.db does not exist");
  ExpectOneLineError(RunLoom("compile zoo:tiny_cnn"), "-o");
}

// --target cuda on a host without an NVIDIA driver: one line naming the cause, before any work.
TEST(CliTest, CudaTargetWithoutAGpuIsOneLine) {
  if (void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(h);
    GTEST_SKIP() << "this host has an NVIDIA driver";
  }
  const fs::path db = ScratchDir() / "cuda.db";
  Outcome o =
      RunLoom("tune-task --target cuda --conv2d 1,4,8,8,8,3,3,1,1 --trials 2 --db " + db.string());
  ExpectOneLineError(o, "--target cuda: CUDA device 0: libcuda.so.1 not found: no NVIDIA driver");
  EXPECT_EQ(o.exit_code, 1);
  ExpectOneLineError(RunLoom("tune-task --target cuda --device gpu0 --conv2d 1,4,8,8,8,3,3,1,1"),
                     "expected cuda:N");
  ExpectOneLineError(RunLoom("tune-task --target tpu --conv2d 1,4,8,8,8,3,3,1,1"),
                     "unknown target 'tpu'");
  ExpectOneLineError(RunLoom("tune-task --device cuda:0 --conv2d 1,4,8,8,8,3,3,1,1"),
                     "--device applies to --target cuda only");
  // The compiled model for the GPU: the same one line, before any compile.
  ExpectOneLineError(RunLoom("bench zoo:tiny_cnn --target cuda"),
                     "libcuda.so.1 not found: no NVIDIA driver");
  ExpectOneLineError(RunLoom("bench zoo:tiny_cnn --target cuda --device gpu0"), "expected cuda:N");
  ExpectOneLineError(RunLoom("bench zoo:tiny_cnn --device cuda:0"),
                     "--device applies to --target cuda only");
}

// `loom agent --device cuda:N` probes the GPU before it contacts the daemon: without a driver, or
// with the fake driver (one GPU) and a missing ordinal, it exits with one line naming the device.
TEST(CliTest, AgentWithACudaDeviceItCannotUseIsOneLine) {
  if (void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(h);
    GTEST_SKIP() << "this host has an NVIDIA driver";
  }
  Outcome o = RunLoom("agent --server 127.0.0.1:1 --device cuda:0");
  ExpectOneLineError(o, "device cuda:0: CUDA device 0: libcuda.so.1 not found: no NVIDIA driver");
  EXPECT_EQ(o.exit_code, 1);
  ExpectOneLineError(RunLoom("agent --server 127.0.0.1:1 --device gpu:0"), "expected cpu:CORE");
  const char* build = std::getenv("LOOM_BUILD_DIR");
  const fs::path fake = fs::path(build ? build : "") / "loom/tune/fake_cuda";
  if (build == nullptr || !fs::exists(fake / "libcuda.so.1")) return;
  o = RunLoom("agent --server 127.0.0.1:1 --device cuda:1 --cuda-driver " +
              (fake / "libcuda.so.1").string());
  ExpectOneLineError(o, "device cuda:1: CUDA device 1: CUDA device 1 does not exist (1 device(s)");
}

}  // namespace
}  // namespace loom
