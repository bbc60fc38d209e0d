// End-to-end tests of the `loom` binary: what a user sees for good and bad input, and the
// reference executor against ONNX Runtime's outputs on the real models in ../shared/models.
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/graph.h"
#include "loom/graph/npy.h"
#include "loom/graph/onnx_exporter.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/node_builder.h"
#include "loom/graph/testing/shared_models.h"
#include "loom/graph/zoo.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/records/record_store.h"
#include "loom/runtime/cuda_backend.h"
#include "loom/runtime/testing/fake_gpu_artifact.h"
#include "loom/search/prior.h"
#include "nlohmann/json.hpp"

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

// Runs a shell command line, its output captured.
Outcome RunShell(const std::string& command) {
  fs::path dir = ScratchDir();
  fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  std::string cmd = command + " >" + out.string() + " 2>" + err.string() + " </dev/null";
  int status = std::system(cmd.c_str());
  Outcome o;
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.out = ReadFile(out);
  o.err = ReadFile(err);
  return o;
}

// `prefix`: a command that runs the binary (e.g. setpriv with some capability dropped).
Outcome RunLoomUnder(const std::string& prefix, const std::string& args) {
  return RunShell(prefix + std::string(LOOM_BINARY) + " " + args);
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
  n.op_type = "LoomNoSuchOperator";
  n.inputs = {"x"};
  n.outputs = {"y"};
  g.nodes.push_back(n);
  fs::path p = ScratchDir() / "unsupported.onnx";
  ASSERT_TRUE(graph::ExportOnnxFile(g, p.string()).ok());
  Outcome o = RunLoom("inspect " + p.string());
  ExpectOneLineError(o, "LoomNoSuchOperator");
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

using graph::testing::MakeNode;

// A model with two inputs and two outputs whose names a hostile exporter chose.
fs::path TwoOutputModel(const std::string& out0, const std::string& out1) {
  graph::Graph g;
  g.name = "two";
  g.opset = 17;
  g.inputs.push_back({"x", {graph::DType::kFloat32, {2}}});
  g.inputs.push_back({"k", {graph::DType::kInt64, {3}}});
  g.outputs.push_back({out0, {}});
  g.outputs.push_back({out1, {}});
  graph::Node relu = MakeNode("relu", "Relu", {"x"}, {out0});
  graph::Node cast = MakeNode("cast", "Cast", {"k"}, {out1});
  cast.attrs["to"] = int64_t{1};
  g.nodes = {relu, cast};
  fs::path p = ScratchDir() / "two.onnx";
  EXPECT_TRUE(graph::ExportOnnxFile(g, p.string()).ok());
  return p;
}

TEST(CliTest, RunWritesEveryOutputByNameOrIntoAFolder) {
  const fs::path dir = ScratchDir();
  const fs::path model = TwoOutputModel("../escape/y", "z");
  ASSERT_TRUE(graph::WriteNpy(graph::Tensor::FromFloats({2}, std::vector<float>{-1, 2}),
                              (dir / "x.npy").string())
                  .ok());
  ASSERT_TRUE(graph::WriteNpy(graph::Tensor::FromInt64s({3}, std::vector<int64_t>{7, 8, 9}),
                              (dir / "k.npy").string())
                  .ok());
  const std::string inputs =
      " --input x=" + (dir / "x.npy").string() + " --input k=" + (dir / "k.npy").string();
  fs::remove_all(dir / "out");
  Outcome o = RunLoom("run " + model.string() + inputs + " --output-dir " + (dir / "out").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  // The output name cannot leave the folder: '/' becomes '_', a leading '.' gets a '_'.
  auto y = graph::ReadNpy((dir / "out" / "_.._escape_y.npy").string());
  auto z = graph::ReadNpy((dir / "out" / "z.npy").string());
  ASSERT_TRUE(y.ok()) << y.status() << "\n" << o.out;
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_THAT(y->values<float>(), ::testing::ElementsAre(0, 2));
  EXPECT_THAT(z->values<float>(), ::testing::ElementsAre(7, 8, 9));
  EXPECT_FALSE(fs::exists(dir / "escape"));

  Outcome named =
      RunLoom("run " + model.string() + inputs + " --output z=" + (dir / "only_z.npy").string());
  ASSERT_EQ(named.exit_code, 0) << named.err;
  EXPECT_TRUE(graph::ReadNpy((dir / "only_z.npy").string()).ok());
  ExpectOneLineError(
      RunLoom("run " + model.string() + inputs + " --output " + (dir / "bare.npy").string()),
      "the model has 2 outputs (../escape/y, z): give each as --output "
      "NAME=FILE.npy");
  ExpectOneLineError(
      RunLoom("run " + model.string() + inputs + " --output w=" + (dir / "w.npy").string()),
      "the model has no output 'w'");

  // --json: every output's name, dtype, shape and the file it went to (null: not written).
  fs::remove(dir / "only_z.npy");
  o = RunLoom("run " + model.string() + inputs + " --output z=" + (dir / "only_z.npy").string() +
              " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["model"], model.string());
  EXPECT_EQ(j["executor"], "reference");
  EXPECT_TRUE(j["latency_ms"].is_number());
  ASSERT_EQ(j["outputs"].size(), 2u);
  EXPECT_EQ(j["outputs"][0]["name"], "../escape/y");
  EXPECT_EQ(j["outputs"][0]["dtype"], "float32");
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json::array({2}));
  EXPECT_TRUE(j["outputs"][0]["file"].is_null());
  EXPECT_EQ(j["outputs"][1]["name"], "z");
  EXPECT_EQ(j["outputs"][1]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(j["outputs"][1]["file"], (dir / "only_z.npy").string());
  EXPECT_TRUE(fs::exists(dir / "only_z.npy"));
}

TEST(CliTest, OutputDirRefusesCollidingNames) {
  const fs::path model = TwoOutputModel("a/b", "a_b");
  Outcome o = RunLoom("run " + model.string() + " --output-dir " + (ScratchDir() / "out").string());
  ExpectOneLineError(o, "outputs 'a/b' and 'a_b' would both be written to a_b.npy");
}

TEST(CliTest, RunChecksEveryInput) {
  const fs::path dir = ScratchDir();
  const fs::path model = TwoOutputModel("y", "z");
  ASSERT_TRUE(graph::WriteNpy(graph::Tensor::FromFloats({2}, std::vector<float>{1, 2}),
                              (dir / "x.npy").string())
                  .ok());
  const std::string x = " --input x=" + (dir / "x.npy").string();
  ExpectOneLineError(RunLoom("run " + model.string() + x),
                     "missing --input for model input 'k' (int64[3])");
  ExpectOneLineError(
      RunLoom("run " + model.string() + x + " --input q=" + (dir / "x.npy").string()),
      "the model has no input 'q' (inputs: x, k)");
  ExpectOneLineError(
      RunLoom("run " + model.string() + x + " --input k=" + (dir / "x.npy").string()),
      "holds float32[2] but the model's input 'k' is int64[3]");
  ExpectOneLineError(RunLoom("run " + model.string() + " --input " + (dir / "x.npy").string()),
                     "the model has 2 inputs (x, k): give each as --input NAME=FILE.npy");
}

// A graph input that defines a shape (Reshape's target) is bound to the value `loom run` is
// given, and `loom compile --bind` specializes the artifact to it.
TEST(CliTest, ShapeInputsAreBoundToTheirValues) {
  const fs::path dir = ScratchDir();
  graph::Graph g;
  g.name = "reshape_by_input";
  g.opset = 17;
  g.inputs.push_back({"x", {graph::DType::kFloat32, {2, 3}}});
  g.inputs.push_back({"shape", {graph::DType::kInt64, {2}}});
  g.outputs.push_back({"y", {}});
  g.nodes = {MakeNode("reshape", "Reshape", {"x", "shape"}, {"y"})};
  const fs::path model = dir / "reshape.onnx";
  ASSERT_TRUE(graph::ExportOnnxFile(g, model.string()).ok());
  ASSERT_TRUE(
      graph::WriteNpy(graph::Tensor::FromFloats({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}),
                      (dir / "x.npy").string())
          .ok());
  ASSERT_TRUE(graph::WriteNpy(graph::Tensor::FromInt64s({2}, std::vector<int64_t>{3, 2}),
                              (dir / "shape.npy").string())
                  .ok());
  const std::string x = " --input x=" + (dir / "x.npy").string();
  const std::string shape = "shape=" + (dir / "shape.npy").string();
  Outcome run = RunLoom("run " + model.string() + x + " --input " + shape +
                        " --output y=" + (dir / "ref.npy").string());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("output      y: float32[3,2]"));

  Outcome inspect = RunLoom("inspect " + model.string() + " --bind " + shape);
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_THAT(inspect.out, HasSubstr("bound       shape (--bind"));
  EXPECT_THAT(inspect.out, HasSubstr("output      y: float32[3,2]"));

  const fs::path art = dir / "art";
  Outcome compile =
      RunLoom("compile " + model.string() + " --bind " + shape + " -o " + art.string());
  ASSERT_EQ(compile.exit_code, 0) << compile.err;
  Outcome compiled =
      RunLoom("run " + art.string() + x + " --output y=" + (dir / "got.npy").string());
  ASSERT_EQ(compiled.exit_code, 0) << compiled.err;
  auto want = graph::ReadNpy((dir / "ref.npy").string());
  auto got = graph::ReadNpy((dir / "got.npy").string());
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_EQ(got->shape(), (graph::Shape{3, 2}));
  EXPECT_THAT(got->values<float>(), ::testing::ElementsAre(1, 2, 3, 4, 5, 6));
  // The artifact has no 'shape' input any more.
  ExpectOneLineError(RunLoom("run " + art.string() + x + " --input " + shape),
                     "the model has no input 'shape' (inputs: x)");
  // Without the value the shape is not static.
  ExpectOneLineError(RunLoom("compile " + model.string() + " -o " + (dir / "art2").string()),
                     "input 'shape' (shape) is not constant");
}

// A tiny model whose constant folding would materialize 1 GiB fails at once, in one line.
TEST(CliTest, FoldBudgetStopsAPadBomb) {
  graph::Graph g;
  g.name = "bomb";
  g.opset = 18;
  g.initializers["data"] = graph::Tensor::FromFloats({2}, std::vector<float>{1, 2});
  g.initializers["pads"] = graph::Tensor::FromInt64s({2}, std::vector<int64_t>{0, 268435455});
  g.inputs.push_back({"x", {graph::DType::kFloat32, {1}}});
  g.outputs.push_back({"y", {}});
  g.outputs.push_back({"x_out", {}});
  g.nodes = {MakeNode("pad", "Pad", {"data", "pads"}, {"y"}),
             MakeNode("relu", "Relu", {"x"}, {"x_out"})};
  fs::path p = ScratchDir() / "bomb.onnx";
  ASSERT_TRUE(graph::ExportOnnxFile(g, p.string()).ok());
  EXPECT_LT(fs::file_size(p), 512u);
  ExpectOneLineError(RunLoom("run " + p.string()),
                     "constant folding Pad 'pad': output 'y' would be float32[268435457] "
                     "(1073741828 bytes), above the per-tensor limit of 1073741824 bytes");
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

// `loom tasks` on the shared transformers: every MatMul is a dense task (activation times a
// weight, leading dims flattened into M) or a batch_matmul one (attention's two activation
// products per layer), each key with its node count. In vit_tiny, K^T * s is rewritten by
// MoveScalesPastMatMul, so its Transpose is read in place (tb1).
TEST(CliTest, TasksOfTransformersAreDenseAndBatchMatmul) {
  const std::map<std::string, std::map<std::string, int64_t>> expected = {
      {"vit_tiny",
       {{"conv2d:f32:n1_c3_h224_w224_k192_r16_s16_st16x16_p0x0x0x0_d1x1_g1", 1},
        {"dense:f32:m197_n576_k192_tb0", 6},
        {"batch_matmul:f32:b3_m197_n197_k64_tb1", 6},  // K^T read in place
        {"batch_matmul:f32:b3_m197_n64_k197", 6},
        {"dense:f32:m197_n192_k192_tb1", 6},
        {"dense:f32:m197_n768_k192_tb0", 6},
        {"dense:f32:m197_n192_k768_tb0", 6},
        {"dense:f32:m1_n1000_k192_tb1", 1}}},
      {"bert_small",
       {{"dense:f32:m128_n256_k256_tb0", 16},
        {"batch_matmul:f32:b4_m128_n128_k64", 4},
        {"batch_matmul:f32:b4_m128_n64_k128", 4},
        {"dense:f32:m128_n1024_k256_tb0", 4},
        {"dense:f32:m128_n256_k1024_tb0", 4}}}};
  for (const auto& [name, want] : expected) {
    SCOPED_TRACE(name);
    const std::string dir = graph::UnpackSharedModel(name, graph::kSharedTransformerFolder);
    if (dir.empty()) GTEST_SKIP() << "no ../shared/transformers/" << name << ".tar.xz";
    Outcome o = RunLoom("tasks " + dir + "/" + name + ".onnx");
    ASSERT_EQ(o.exit_code, 0) << o.err;
    // Rows: index, kind, count, GFLOP, share, key (the header and the summary line are not).
    auto digits = [](const std::string& t) {
      return !t.empty() && t.find_first_not_of("0123456789") == std::string::npos;
    };
    std::map<std::string, int64_t> got;
    std::istringstream lines(o.out);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream row(line);
      std::string index, kind, count, gflop, share, key;
      if (row >> index >> kind >> count >> gflop >> share >> key && digits(index) &&
          digits(count)) {
        EXPECT_EQ(key.substr(0, kind.size() + 1), kind + ":") << line;
        got[key] = std::stoll(count);
      }
    }
    EXPECT_EQ(got, want) << o.out;
    EXPECT_THAT(o.out, HasSubstr(std::to_string(want.size()) + " tasks, "));
  }
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

// The acceptance test: `loom run` on every shared model (../shared/models and
// ../shared/transformers, every input set) matches ONNX Runtime within 1e-3 * max|ref|.
void ExpectRunMatchesOnnxRuntime(const std::string& folder) {
  std::vector<graph::SharedModel> models;
  for (graph::SharedModel& m : graph::AllSharedModels()) {
    if (m.folder == folder) models.push_back(std::move(m));
  }
  if (models.empty()) GTEST_SKIP() << "no ../shared/" << folder;
  for (const graph::SharedModel& model : models) {
    for (const graph::SharedModelCase& c : model.cases) {
      const std::string label = model.name + (c.label.empty() ? "" : "." + c.label);
      SCOPED_TRACE(label);
      fs::path out = ScratchDir() / (label + ".loom_output.npy");
      std::string args = "run " + model.onnx + " --output " + out.string();
      for (const auto& [name, path] : c.inputs) args += " --input " + name + "=" + path;
      Outcome o = RunLoom(args);
      ASSERT_EQ(o.exit_code, 0) << o.err;
      auto ref = graph::ReadNpy(c.ort_output);
      auto got = graph::ReadNpy(out.string());
      ASSERT_TRUE(ref.ok()) << ref.status();
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(ref->type(), got->type());
      double max_ref = 0, max_diff = 0;
      for (int64_t i = 0; i < ref->num_elements(); ++i) {
        max_ref = std::max(max_ref, std::abs(ref->DoubleAt(i)));
        max_diff = std::max(max_diff, std::abs(ref->DoubleAt(i) - got->DoubleAt(i)));
      }
      EXPECT_LE(max_diff, 1e-3 * max_ref)
          << label << ": max|a-b| = " << max_diff << ", max|ref| = " << max_ref;
    }
  }
}

TEST(SharedModelTest, RunMatchesOnnxRuntimeOnCnns) {
  ExpectRunMatchesOnnxRuntime(graph::kSharedCnnFolder);
}

TEST(SharedModelTest, RunMatchesOnnxRuntimeOnTransformers) {
  ExpectRunMatchesOnnxRuntime(graph::kSharedTransformerFolder);
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// Records of `task_key` (default: kSmallConv's) in `db` that are trials of a job, of one error kind
// or all (the default config's baseline measurement, stored under "<job>#default", is counted only
// when `defaults` is set).
int64_t CountRecords(const std::string& db, std::optional<tune::ErrorKind> kind = std::nullopt,
                     bool defaults = false, std::string task_key = "") {
  auto store = tune::OpenSqliteRecordStore(db);
  EXPECT_TRUE(store.ok()) << store.status();
  const std::string key = !task_key.empty() ? task_key : graph::WorkloadKey([] {
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

// A batch_matmul task (attention's Q K^T with K read transposed in place, a narrow last column
// panel) tunes end to end: every candidate builds, passes the measure worker's check against the
// reference kernel and is stored.
TEST(CliTuneTest, TunesABatchMatmulTaskGivenByItsKey) {
  fs::path db = ScratchDir() / "bmm.db";
  fs::remove(db);
  Outcome o = RunLoom(
      "tune-task --workload batch_matmul:f32:b2_m24_n40_k16_tb1 --trials 8 --batch-size 4 "
      "--seed 3 --json --db " +
      db.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("\"trials\": 8"));
  EXPECT_THAT(o.out, HasSubstr("\"template\": \"batch_matmul\""));
  const std::string key = "batch_matmul:f32:b2_m24_n40_k16_tb1";
  EXPECT_EQ(CountRecords(db.string(), std::nullopt, false, key), 8);
  EXPECT_EQ(CountRecords(db.string(), tune::ErrorKind::kNone, false, key), 8);
  ExpectOneLineError(RunLoom("tune-task --workload batch_matmul:f32:b0_m4_n4_k4 --trials 2"),
                     "is not a workload key");
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
  Outcome o = RunLoom("experiment " + spec.string() + " -o " + dir.string() + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  // --json: where the results are, each setup's makespan and jobs, the claims' verdicts.
  nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["output"], dir.string());
  EXPECT_EQ(j["report"], (dir / "report.html").string());
  EXPECT_EQ(j["jobs"], 2);
  ASSERT_EQ(j["setups"].size(), 2u);
  EXPECT_EQ(j["setups"][0]["setup"], "dedicated");
  EXPECT_EQ(j["setups"][1]["setup"], "interleaved");
  for (const auto& setup : j["setups"]) {
    EXPECT_GT(setup["makespan_s"].get<double>(), 0) << setup.dump();
    ASSERT_EQ(setup["jobs"].size(), 2u);
    EXPECT_EQ(setup["jobs"][0]["name"], "zoo:tiny_cnn");
    EXPECT_EQ(setup["jobs"][0]["error"], "");
    EXPECT_EQ(setup["jobs"][0]["records"], 2);  // its 2 trials
  }
  EXPECT_EQ(j["setups"][0]["vs_sequence"], 1.0);
  ASSERT_TRUE(j["verdicts"].is_array());
  ASSERT_FALSE(j["verdicts"].empty());
  EXPECT_THAT(j["verdicts"][0]["verdict"].get<std::string>(),
              ::testing::AnyOf("met", "not met", "not distinguishable from noise", "not measured"));
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
  // A CUDA spec checks its GPU before any job: without a driver (CI), or here without an eighth
  // GPU, the run ends in one line naming the spec and the device; nothing is written.
  fs::remove_all(dir);
  std::ofstream(spec) << "target: cuda\ndevice: cuda:7\njobs:\n  - {model: zoo:tiny_cnn}\n";
  Outcome cuda = RunLoom("experiment " + spec.string() + " -o " + dir.string());
  ExpectOneLineError(cuda, spec.string() + ": ");
  EXPECT_THAT(cuda.err, HasSubstr("CUDA device 7"));
  EXPECT_FALSE(fs::exists(dir));
}

// The GPU thesis experiment's estimate (examples/sim/thesis_gpu.yaml, the stage times of
// experiments/thesis-gpu.yaml) runs in the simulator: four jobs under the four policies, and
// interleaving them takes at most 0.7 of the jobs in sequence, the issue's target.
TEST(CliExperimentTest, GpuThesisEstimateSimulates) {
  Outcome o =
      RunLoom(std::string("simulate ") + LOOM_SOURCE_DIR + "/examples/sim/thesis_gpu.yaml --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  nlohmann::json j = nlohmann::json::parse(o.out);
  std::map<std::string, double> makespan;
  for (const auto& run : j.at("runs")) {
    EXPECT_EQ(run.at("jobs_count").get<int>(), 4);
    makespan[run.at("policy").get<std::string>()] = run.at("makespan_s").get<double>();
  }
  ASSERT_EQ(makespan.size(), 4u);
  EXPECT_GT(makespan["sequential"], 0);
  EXPECT_LE(makespan["interleaved"], 0.7 * makespan["sequential"]);
}

// The CUDA tuning prior's one command (`loom records prior --target <a cuda key>`, what
// scripts/gpu-check.sh runs on a card to make data/priors/cuda-sm_XY.json) on CUDA records made
// here through the host emulation: configs of tiny_cnn's tasks built by the emulated GPU backend
// and timed launch by launch. The prior is of the class cuda:sm_90, holds every measured config of
// every task, and a tuner on an sm_90 GPU takes it as transfer data (one on sm_80 does not).
// Emulated timings are no GPU figures: no such prior ships.
TEST(CliRecordsTest, CudaRecordsMakeAPriorOfTheirArchitecture) {
  auto backend = runtime::MakeEmulatedCudaBackend(
      ops::CudaTarget("sm_90"), {.cache_dir = (ScratchDir() / "kernels").string()});
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto g = graph::BuildZooModel("tiny_cnn");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(graph::InferShapes(*g).ok());
  auto tasks = graph::ExtractTasks(*g);
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  const std::string key = (*backend)->target().Key();
  ASSERT_EQ(search::TargetClassOfKey(key), "cuda:sm_90");
  constexpr size_t kConfigs = 3;
  std::vector<tune::Record> records;
  std::map<std::string, std::string> templates;  // task key -> template name
  for (const graph::Task& task : *tasks) {
    auto t = ops::MakeTemplate(task.workload, (*backend)->target(),
                               {.cuda_host_emulation = (*backend)->host_emulation()});
    ASSERT_TRUE(t.ok()) << t.status();
    templates[task.key] = (*t)->name();
    const ops::ConfigSpace& space = (*t)->space();
    std::vector<ops::Config> configs = {(*t)->DefaultConfig()};
    for (int64_t i = 1; configs.size() < kConfigs && i < 64 * 7919; i += 7919) {
      const ops::Config c{(space.size() / 3 + i) % space.size()};
      if (space.IsValid(c) && std::none_of(configs.begin(), configs.end(),
                                           [&](const ops::Config& o) { return o == c; })) {
        configs.push_back(c);
      }
    }
    ASSERT_EQ(configs.size(), kConfigs) << task.key;
    for (const ops::Config& c : configs) {
      auto source = (*t)->Emit(c);
      ASSERT_TRUE(source.ok()) << source.status();
      auto kernel = (*backend)->Load(*source);
      ASSERT_TRUE(kernel.ok()) << kernel.status();
      std::vector<runtime::CudaBackend::Buffer> args;
      for (const ops::BufferSpec& b : (*t)->Buffers(c)) {
        int64_t n = 1;
        for (int64_t d : b.shape) n *= d;
        std::vector<float> zeros(static_cast<size_t>(n), 0.0f);
        auto buf = (*backend)->Alloc(zeros.size() * sizeof(float));
        ASSERT_TRUE(buf.ok()) << buf.status();
        ASSERT_TRUE((*backend)->Upload(*buf, zeros.data(), zeros.size() * sizeof(float)).ok());
        args.push_back(*buf);
      }
      tune::Record r;
      r.task_key = task.key;
      r.template_name = (*t)->name();
      r.target_key = key;
      r.config_index = c.index;
      r.config_json = space.ToJson(c);
      r.flops = task.flops;
      r.job_id = "emulated";
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE((*backend)->Launch(*kernel, args).ok());
        ASSERT_TRUE((*backend)->Synchronize().ok());
        r.costs.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      records.push_back(std::move(r));
    }
  }
  const fs::path db = ScratchDir() / "cuda-records.db";
  fs::remove(db);
  {
    auto store = tune::OpenSqliteRecordStore(db.string());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Append(records).ok());
  }
  const fs::path out = ScratchDir() / "cuda-sm_90.json";
  Outcome o =
      RunLoom("records prior --db " + db.string() + " --target '" + key + "' -o " + out.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr(absl::StrCat("wrote a cuda:sm_90 prior of ", tasks->size(),
                                            " tasks, ", tasks->size() * kConfigs, " configs")));
  auto prior = search::ReadPriorFile(out.string());
  ASSERT_TRUE(prior.ok()) << prior.status();
  EXPECT_EQ(prior->target_class, "cuda:sm_90");
  EXPECT_EQ(prior->source, key);
  ASSERT_EQ(prior->tasks.size(), tasks->size());
  for (const search::PriorTask& pt : prior->tasks) {
    SCOPED_TRACE(pt.task_key);
    ASSERT_EQ(pt.configs.size(), kConfigs);
    for (const auto& e : pt.configs) EXPECT_GT(e.gflops, 0);
    auto on_sm90 =
        search::PriorTransfersFor(*prior, pt.template_name, ops::CudaTarget("sm_90"), {});
    const auto it =
        std::find_if(on_sm90.begin(), on_sm90.end(),
                     [&](const search::PriorTransfer& t) { return t.task_key == pt.task_key; });
    ASSERT_NE(it, on_sm90.end());
    EXPECT_EQ(it->configs.size(), kConfigs);
    EXPECT_EQ(it->results.size(), kConfigs);
    EXPECT_TRUE(
        search::PriorTransfersFor(*prior, pt.template_name, ops::CudaTarget("sm_80"), {}).empty());
  }
  // Another architecture's key finds none of these records: one line.
  ExpectOneLineError(RunLoom("records prior --db " + db.string() + " --target '" +
                             ops::CudaTarget("sm_80").Key() + "' -o " + out.string()),
                     "no records of target 'cuda:sm_80");
}

TEST(CliTuneTest, BadTuneArgumentsAreOneLineErrors) {
  ExpectOneLineError(RunLoom("tune-task --conv2d 1,2,3 --trials 4"), "9 numbers");
  ExpectOneLineError(RunLoom("tune-task --trials 4"),
                     "exactly one of --conv2d, --dense or --workload");
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
  Outcome tr =
      RunLoom("records trace --db " + db.string() + " -o " + (dir / "trace.json").string());
  ASSERT_EQ(tr.exit_code, 0) << tr.err;
  EXPECT_THAT(tr.out, HasSubstr("wrote 8 stages of 1 jobs"));
  std::ifstream trace(dir / "trace.json");
  std::string text((std::istreambuf_iterator<char>(trace)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("\"traceEvents\""));
  EXPECT_THAT(text, HasSubstr("\"name\":\"measure round 1\""));
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
  ExpectOneLineError(RunLoom("records trace --db " + (dir / "x.db").string() + " --job nope"),
                     "no stage timings for job 'nope'");
}

TEST(CliBenchTest, BenchPrintsUntunedAndTunedLatencyAndProfile) {
  const fs::path dir = ScratchDir();
  // A given --db must exist: an empty record database (no tuned config), made by importing none.
  const fs::path db = dir / "empty.db", none = dir / "none.jsonl";
  fs::remove(db);
  std::ofstream(none) << "";
  ASSERT_EQ(RunLoom("records import " + none.string() + " --db " + db.string()).exit_code, 0);
  const std::string common = " --min-time 0 --min-runs 3 --cache-dir " +
                             (dir / "kernels").string() + " --db " + db.string();
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
  ExpectOneLineError(RunLoom("bench zoo:tiny_cnn --db " + (dir / "nope.db").string()),
                     "nope.db' does not exist (make one with 'loom tune')");
}

// `loom compile` writes an artifact that `loom run DIR` and `loom bench DIR` load with no records
// and no compile, and that answers what the reference executor answers.
// The outputs in two .npy files agree to `tol` of the largest reference value.
void ExpectNpyClose(const fs::path& got_file, const fs::path& want_file, double tol) {
  auto want = graph::ReadNpy(want_file.string());
  auto got = graph::ReadNpy(got_file.string());
  ASSERT_TRUE(want.ok() && got.ok());
  ASSERT_EQ(want->shape(), got->shape());
  double err = 0, mag = 0;
  for (int64_t i = 0; i < want->num_elements(); ++i) {
    err = std::max(err, std::fabs(double{got->data<float>()[i]} - want->data<float>()[i]));
    mag = std::max(mag, std::fabs(double{want->data<float>()[i]}));
  }
  EXPECT_GT(mag, 0);
  EXPECT_LE(err, tol * mag);
}

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
  ExpectNpyClose(dir / "got.npy", dir / "ref.npy", 1e-3);
  // Without --threads the artifact runs on the threads it was compiled with.
  Outcome run2 = RunLoom("run " + art.string());
  ASSERT_EQ(run2.exit_code, 0) << run2.err;
  EXPECT_THAT(run2.out, HasSubstr("2 threads"));
  run2 = RunLoom("--json run " + art.string());
  ASSERT_EQ(run2.exit_code, 0) << run2.err;
  nlohmann::json j = nlohmann::json::parse(run2.out);
  EXPECT_EQ(j["executor"], "artifact");
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["warmup_runs"], 1);
  EXPECT_THAT(j["target"].get<std::string>(), ::testing::StartsWith("cpu:"));
  ASSERT_EQ(j["outputs"].size(), 1u);
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json::array({1, 10}));
  ASSERT_EQ(j["top"].size(), 5u);  // a [1, 10] float output: its five largest scores
  EXPECT_GE(j["top"][0]["value"].get<double>(), j["top"][4]["value"].get<double>());

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
                     "nope.db' does not exist");
  ExpectOneLineError(RunLoom("compile zoo:tiny_cnn"), "-o");
}

// `loom run DIR` of a GPU artifact loads it through runtime::LoadCudaArtifact, the loader of the
// C API and Python: written on the fake CUDA driver (loom_write_fake_gpu_artifact) and run with
// that driver as libcuda.so.1, it gives the reference's outputs on the same seeded input, replays
// one captured graph, and refuses another sm, a corrupt kernel image, another GPU and --threads in
// one line each.
TEST(CliCompileTest, RunsAGpuArtifactThroughTheOneCudaLoader) {
  const fs::path dir = ScratchDir();
  const fs::path art = dir / "gpu_artifact";
  fs::remove_all(art);
  Outcome w = RunShell(std::string(LOOM_WRITE_FAKE_GPU_ARTIFACT) + " zoo:tiny_cnn " + art.string() +
                       " " + (dir / "kernels").string());
  ASSERT_EQ(w.exit_code, 0) << w.err;
  const std::string with_fake =
      "LD_LIBRARY_PATH=" + fs::path(runtime::testing::FakeLibcudaPath()).parent_path().string() +
      " ";
  Outcome run = RunLoomUnder(
      with_fake, "run " + art.string() + " --json --output " + (dir / "gpu.npy").string());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j["executor"], "gpu_artifact");
  EXPECT_EQ(j["graph_replay"], true);
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json::array({1, 10}));
  Outcome ref = RunLoom("run zoo:tiny_cnn --output " + (dir / "ref.npy").string());
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  ExpectNpyClose(dir / "gpu.npy", dir / "ref.npy", 1e-3);

  ExpectOneLineError(RunLoomUnder("LOOM_FAKE_CUDA=sm_80 " + with_fake, "run " + art.string()),
                     "was compiled for sm_90 but the GPU is sm_80");
  ExpectOneLineError(RunLoomUnder(with_fake, "run " + art.string() + " --device cuda:1"),
                     "CUDA device 1 does not exist");
  ExpectOneLineError(RunLoomUnder(with_fake, "run " + art.string() + " --threads 2"),
                     "--threads is for CPU artifacts");
  ASSERT_TRUE(runtime::testing::FlipByte((art / "kernels" / "k0.so").string(), 100).ok());
  ExpectOneLineError(RunLoomUnder(with_fake, "run " + art.string()), "k0.so is corrupt");
}

// `loom cache info|prune` (issue 20, item 5): sizes, LRU pruning by size and age, one-line errors.
TEST(CliCacheTest, InfoAndPruneLeastRecentlyUsedFirst) {
  const fs::path dir = ScratchDir() / "kernels";
  fs::remove_all(dir);
  fs::create_directories(dir);
  // Three 1000-byte kernels last used 40, 20 and 0 days ago, and a file that is not the cache's.
  const int ages[] = {40, 20, 0};
  for (int i = 0; i < 3; ++i) {
    const fs::path so = dir / (std::string(32, static_cast<char>('a' + i)) + ".so");
    std::ofstream(so) << std::string(1000, 'x');
    fs::last_write_time(so, fs::file_time_type::clock::now() - std::chrono::hours(24 * ages[i]));
  }
  std::ofstream(dir / "README") << "mine";
  const std::string at = " --cache-dir " + dir.string();

  Outcome info = RunLoom("cache info" + at);
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("3 entries, 3 files, 2.9 KiB"));
  EXPECT_THAT(info.out, HasSubstr("1 other files"));
  Outcome json = RunLoom("cache info --json" + at);
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"entries\":3"));
  EXPECT_THAT(json.out, HasSubstr("\"bytes\":3000"));

  Outcome dry = RunLoom("cache prune --older-than 30d --dry-run" + at);
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_THAT(dry.out, HasSubstr("would remove 1 entries"));
  EXPECT_TRUE(fs::exists(dir / (std::string(32, 'a') + ".so")));
  Outcome age = RunLoom("cache prune --older-than 30d" + at);
  ASSERT_EQ(age.exit_code, 0) << age.err;
  EXPECT_THAT(age.out, HasSubstr("removed 1 entries"));
  EXPECT_FALSE(fs::exists(dir / (std::string(32, 'a') + ".so")));
  // Down to 1.5 KiB: the older of the two left goes, the one used today stays.
  Outcome size = RunLoom("cache prune --max-size 1.5K" + at);
  ASSERT_EQ(size.exit_code, 0) << size.err;
  EXPECT_THAT(size.out, HasSubstr("removed 1 entries (1000 B), kept 1"));
  EXPECT_FALSE(fs::exists(dir / (std::string(32, 'b') + ".so")));
  EXPECT_TRUE(fs::exists(dir / (std::string(32, 'c') + ".so")));
  EXPECT_TRUE(fs::exists(dir / "README"));

  ExpectOneLineError(RunLoom("cache prune --max-size 2Q" + at), "--max-size: bad size '2Q'");
  ExpectOneLineError(RunLoom("cache prune --older-than 30" + at), "--older-than: bad age '30'");
  ExpectOneLineError(RunLoom("cache info --cache-dir " + (dir / "README").string()),
                     "is not a folder");
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
  o = RunLoom("agent --server 127.0.0.1:1 --device cuda:1 --cuda-driver " +
              runtime::testing::FakeLibcudaPath());
  ExpectOneLineError(o, "device cuda:1: CUDA device 1: CUDA device 1 does not exist (1 device(s)");
}

// ----- One command line (issue 20 item 3) and records that travel (item 4).

TEST(CliFlagsTest, VersionPrintsVersionCommitAndBuildOptions) {
  Outcome o = RunLoom("--version");
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, ::testing::StartsWith("loom 0.1.0\ncommit "));
  EXPECT_THAT(o.out,
              ::testing::ContainsRegex("\nbuild [A-Za-z]*, [A-Za-z]+ [0-9.]+, cuda (on|off)"));
  EXPECT_EQ(RunLoom("version").out, o.out);
  nlohmann::json j = nlohmann::json::parse(RunLoom("version --json").out);
  EXPECT_EQ(j["version"], "0.1.0");
  EXPECT_TRUE(j["cuda"].is_boolean());
}

TEST(CliFlagsTest, GlobalFlagsWorkBeforeOrAfterTheSubcommand) {
  // -v after the subcommand is the root's flag, not an unknown one: the error is the real one.
  ExpectOneLineError(RunLoom("tune zoo:tiny_cnn --trials 1 --tasks 99 -v"),
                     "--tasks index 99 is out of range: the model has 3 tasks");
  for (const char* args : {"--json tasks zoo:tiny_cnn", "tasks zoo:tiny_cnn --json"}) {
    Outcome o = RunLoom(args);
    ASSERT_EQ(o.exit_code, 0) << args << ": " << o.err;
    nlohmann::json j = nlohmann::json::parse(o.out, nullptr, false);
    ASSERT_TRUE(j.is_array()) << args << ": " << o.out;
    EXPECT_EQ(j.size(), 3u);
    EXPECT_TRUE(j[0]["flops"].is_number());
  }
  // --server before the subcommand reaches the job commands (a closed port: the error names it).
  Outcome o = RunLoom("--server 127.0.0.1:1 status j1");
  ExpectOneLineError(o, "server 127.0.0.1:1");
  ExpectOneLineError(RunLoom("status j1 --server 127.0.0.1:1"), "server 127.0.0.1:1");
  ExpectOneLineError(RunLoom("status j1 --server 127.0.0.1:1 --token-file /nonexistent/token"),
                     "/nonexistent/token");
}

TEST(CliFlagsTest, AgentTakesItsServerFromLoomServer) {
  Outcome o = RunLoomUnder("env -u LOOM_SERVER ", "agent");
  ExpectOneLineError(o, "agent: no daemon address: give --server HOST:PORT or set LOOM_SERVER");
}

TEST(CliFlagsTest, HelpShowsTheDefaults) {
  Outcome o = RunLoom("tune --help");
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_THAT(o.out, ::testing::ContainsRegex("--trials [^\n]*=64"));
  EXPECT_THAT(o.out, ::testing::ContainsRegex("--db TEXT=loom.db"));
  EXPECT_THAT(o.out, ::testing::ContainsRegex("--tuner [^\n]*=xgb"));
  EXPECT_THAT(RunLoom("compile --help").out, ::testing::ContainsRegex("--db TEXT=loom.db"));
  // A flag whose "not given" value is a sentinel shows no default, in any command: its help says
  // what happens without it. The man page holds every command's flags, from the same parser.
  for (const char* command : {"tune", "submit"}) {
    const std::string help = RunLoom(std::string(command) + " --help").out;
    EXPECT_THAT(help, ::testing::ContainsRegex("--total-trials INT +One budget[^\n]*"
                                               "\\(default: none\\)\n"))
        << command;
  }
  EXPECT_THAT(RunLoom("tune --help").out, ::testing::ContainsRegex("--early-stopping INT +Stop"));
  EXPECT_THAT(RunLoom("agent --help").out, ::testing::ContainsRegex("--cpu-slots INT[^=\n]*CPU"));
  const std::string man = RunLoom("help-man").out;
  EXPECT_THAT(man, Not(HasSubstr("[default: \\-1]")));
  EXPECT_THAT(man, Not(HasSubstr("[default: -1]")));
}

TEST(CliFlagsTest, InputShapesHaveOneSyntaxEverywhere) {
  ExpectOneLineError(RunLoom("tasks zoo:tiny_cnn --input-shape input:1x3x32x32"),
                     "bad input shape 'input:1x3x32x32': expected NAME=D0,D1,... (e.g. "
                     "input=1,3,224,224)");
  ExpectOneLineError(
      RunLoom("submit model.onnx --input-shape input:1x3x32x32 --server 127.0.0.1:1"),
      "expected NAME=D0,D1,...");
  // A zoo model has fixed shapes: said before any connection, without suggesting --batch.
  Outcome o = RunLoom("submit zoo:tiny_cnn --input-shape input=1,3,32,32 --server 127.0.0.1:1");
  ExpectOneLineError(o, "zoo models have fixed input shapes");
  EXPECT_THAT(o.err, Not(HasSubstr("--batch")));
}

// The visible leaf commands, from the parser itself (the man page's sections): "records summary",
// not "records".
std::vector<std::string> LeafCommands() {
  std::vector<std::string> commands;
  std::istringstream man(RunLoom("help-man").out);
  for (std::string line; std::getline(man, line);) {
    if (line.rfind(".SS \"loom ", 0) != 0) continue;
    const std::string cmd = line.substr(10, line.size() - 11);  // .SS "loom CMD"
    // A group is followed by its subcommands, which replace it.
    if (!commands.empty() && cmd.rfind(commands.back() + " ", 0) == 0) commands.pop_back();
    commands.push_back(cmd);
  }
  return commands;
}

// The same flag names for the same things in every command: an output is -o/--output, a tuner's
// seed is --seed and a zoo model's weights --weights-seed, the measure flags are the same on every
// command that measures.
TEST(CliFlagsTest, SameFlagNamesForTheSameThings) {
  const std::vector<std::string> commands = LeafCommands();
  ASSERT_GE(commands.size(), 30u);
  const std::regex short_o(R"(\n\s+-o,(\S+))"), seed(R"(\n\s+--seed [^\n]*)");
  for (const std::string& cmd : commands) {
    const std::string help = RunLoom(cmd + " --help").out;
    EXPECT_THAT(help, Not(::testing::ContainsRegex("--out[ ,=]"))) << cmd;
    for (std::sregex_iterator m(help.begin(), help.end(), short_o), end; m != end; ++m) {
      EXPECT_EQ((*m)[1].str(), "--output") << cmd;
    }
    for (std::sregex_iterator m(help.begin(), help.end(), seed), end; m != end; ++m) {
      EXPECT_THAT(m->str(), HasSubstr("Tuner seed")) << cmd;
    }
    if (help.find("--batch ") != std::string::npos) {
      EXPECT_THAT(help, HasSubstr("--weights-seed")) << cmd << ": zoo models' weights";
    }
  }
  for (const char* cmd : {"tune", "tune-task", "submit"}) {
    const std::string help = RunLoom(std::string(cmd) + " --help").out;
    for (const char* flag : {"--trials", "--batch-size", "--tuner", "--seed", "--repeat",
                             "--min-repeat-ms", "--run-timeout", "--no-prior", "--tasks"}) {
      if (std::string(cmd) == "tune-task" && std::string(flag) == "--tasks") continue;
      EXPECT_THAT(help, HasSubstr(std::string("\n  ") + flag + " ")) << cmd << " " << flag;
    }
  }
  // A database has one default wherever it is optional.
  for (const char* cmd : {"tune", "compile", "bench", "records summary"}) {
    EXPECT_THAT(RunLoom(std::string(cmd) + " --help").out,
                ::testing::ContainsRegex("--db TEXT=loom.db"))
        << cmd;
  }
}

// `loom compile/bench --target CLASS` compile for a CPU class other than the host's exact model
// (here the generic one every x86-64 CPU runs), and say how many kernels were tuned for it.
TEST(CliFlagsTest, CompileAndBenchForAnotherCpuClass) {
  const fs::path dir = ScratchDir();
  const fs::path db = dir / "empty.db";
  fs::remove(db);
  std::ofstream(dir / "empty.jsonl") << "";
  ASSERT_EQ(RunLoom("records import " + (dir / "empty.jsonl").string() + " --db " + db.string())
                .exit_code,
            0);
  Outcome o = RunLoom("compile zoo:tiny_cnn --target cpu:generic --json --db " + db.string() +
                      " -o " + (dir / "art").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_THAT(j["target"].get<std::string>(), ::testing::StartsWith("cpu:generic:"));
  EXPECT_EQ(j["tuned_kernels"], 0);
  EXPECT_THAT(j["tuned"].get<std::string>(), ::testing::StartsWith("0 of 3 kernels tuned"));
  Outcome run = RunLoom("run " + (dir / "art").string() + " --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(nlohmann::json::parse(run.out)["target"].get<std::string>(),
              ::testing::StartsWith("cpu:generic:"));
  o = RunLoom("bench zoo:tiny_cnn --target cpu:generic --min-time 0 --min-runs 2 --json --db " +
              db.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  j = nlohmann::json::parse(o.out);
  ASSERT_EQ(j["results"].size(), 2u);  // untuned and "tuned" (from the empty database)
  for (const auto& v : j["results"]) {
    EXPECT_THAT(v["target"].get<std::string>(), ::testing::StartsWith("cpu:generic:"));
  }
  EXPECT_THAT(j["results"][1]["tuning"].get<std::string>(),
              ::testing::StartsWith("0 of 3 kernels tuned (no records for cpu:generic:"));
  ExpectOneLineError(RunLoom("compile zoo:tiny_cnn --target cpu:avx9 -o " + (dir / "x").string()),
                     "cpu:avx9");
  ExpectOneLineError(RunLoom("bench zoo:tiny_cnn --target cpu:avx9"), "cpu:avx9");
}

// Task indices are the model's (from 0) in --tasks, the progress lines and the final table.
TEST(CliFlagsTest, TaskIndicesAreTheSameInFlagsProgressAndTable) {
  const fs::path db = ScratchDir() / "r.db";
  fs::remove(db);
  Outcome o = RunLoom("tune zoo:tiny_cnn --tasks 2 --trials 2 --batch-size 2 --tuner random --db " +
                      db.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.err, HasSubstr("[task  2 (1/1)] dense"));
  EXPECT_THAT(o.out, ::testing::ContainsRegex("\n  2  dense "));
  o = RunLoom("tune zoo:tiny_cnn --tasks 2 --trials 2 --batch-size 2 --tuner random --json --db " +
              db.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["tasks"][0]["index"], 2);
}

// Records measured on another CPU model of the same class apply, and the compile says whose they
// are; --exact-target turns that off and says so.
TEST(CliFlagsTest, RecordsFromAnotherCpuOfTheSameClassApply) {
  const fs::path dir = ScratchDir();
  const fs::path a = dir / "a.db", b = dir / "b.db", lines = dir / "a.jsonl";
  for (const fs::path& p : {a, b}) fs::remove(p);
  Outcome o =
      RunLoom("tune zoo:tiny_cnn --trials 2 --batch-size 2 --tuner random --db " + a.string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  ASSERT_EQ(RunLoom("records export --db " + a.string() + " -o " + lines.string()).exit_code, 0);
  // The same records, as if measured on another CPU of this class.
  std::string text = ReadFile(lines), moved;
  std::istringstream in(text);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    const size_t k = line.find("\"target_key\":\"cpu:");
    ASSERT_NE(k, std::string::npos) << line;
    const size_t cls_end = line.find(':', k + 18);
    const size_t end = line.find('"', cls_end);
    moved += line.substr(0, cls_end + 1) + "Test CPU 9000" + line.substr(end) + "\n";
    ++n;
  }
  ASSERT_GT(n, 0u);
  std::ofstream(dir / "b.jsonl") << moved;
  ASSERT_EQ(
      RunLoom("records import " + (dir / "b.jsonl").string() + " --db " + b.string()).exit_code, 0);
  o = RunLoom("compile zoo:tiny_cnn --db " + b.string() + " -o " + (dir / "art").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("tuned       3 of 3 kernels tuned (records from Test CPU 9000, "
                               "same class)"));
  o = RunLoom("compile zoo:tiny_cnn --exact-target --db " + b.string() + " -o " +
              (dir / "art2").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("tuned       0 of 3 kernels tuned (no records for cpu:"));
  EXPECT_THAT(o.out, HasSubstr("--exact-target: those of other cpu:"));
  // The host's own records need no fallback and say nothing more.
  o = RunLoom("compile zoo:tiny_cnn --db " + a.string() + " -o " + (dir / "art3").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("tuned       3 of 3 kernels tuned\n"));
}

// `loom completion bash` completes subcommands, nested ones and each command's flags (global
// ones included) from the parser itself; run through a real bash.
TEST(CliFlagsTest, BashCompletionCompletesSubcommandsAndFlags) {
  const fs::path script = ScratchDir() / "loom.bash";
  Outcome o = RunLoom("completion bash");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  std::ofstream(script) << o.out;
  auto complete = [&](const std::string& words, int cword) {
    return RunShell("bash -c 'source " + script.string() + "; COMP_WORDS=(" + words +
                    "); COMP_CWORD=" + std::to_string(cword) + "; _loom; echo \"${COMPREPLY[*]}\"'")
        .out;
  };
  EXPECT_EQ(complete("loom rec", 1), "records\n");
  EXPECT_EQ(complete("loom -v records s", 3), "summary stages\n");
  EXPECT_EQ(complete("loom records summary --j", 3), "--json\n");
  EXPECT_EQ(complete("loom tune zoo:tiny_cnn --min-r", 3), "--min-repeat-ms\n");
  EXPECT_EQ(complete("loom cache prune --max", 3), "--max-size\n");
  // A hidden command is not offered; a file argument is left to the shell.
  EXPECT_EQ(complete("loom help", 1), "\n");
  EXPECT_EQ(complete("loom tune ", 2), "\n");
  // An argument of a fixed set of values offers them, once.
  EXPECT_EQ(complete("loom completion \"\"", 2), "bash zsh\n");
  EXPECT_EQ(complete("loom completion z", 2), "zsh\n");
  EXPECT_EQ(complete("loom -v completion b", 3), "bash\n");
  EXPECT_EQ(complete("loom completion bash \"\"", 3), "\n");
  const std::string zsh = RunLoom("completion zsh").out;
  EXPECT_THAT(zsh, ::testing::StartsWith("#compdef loom\n"));
  EXPECT_THAT(zsh, HasSubstr("(loom/records/summary)"));
  EXPECT_THAT(zsh, HasSubstr("'--json:One JSON object'"));
  ExpectOneLineError(RunLoom("completion fish"), "SHELL: fish not in {bash,zsh}");
}

// Drives a real interactive zsh in a pseudo-terminal (zpty): `zsh -f`, compinit, the script
// given as $1, then the line $2 and a TAB through zsh's completion widget. compadd is wrapped so
// that every match zsh would offer is printed as "MATCH:<word>"; "COMPLETION-END" follows.
constexpr char kZshCompleteDriver[] = R"zsh(zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "PS1='' PROMPT='' RPROMPT=''; autoload -U compinit; compinit -u -D"
zpty -w z "source ${(q)1}"
zpty -w z 'compadd() { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi; local -a hits; builtin compadd -A hits "$@"; local h; for h in $hits; do print -r -- "MATCH:$h"; done; builtin compadd "$@"; }'
zpty -w z 'loom_end() { print -r -- "COMPLETION-END" }; comppostfuncs=(loom_end); bindkey "^I" complete-word; print -r -- READY-$((6*7))'
line=''
while zpty -r z line; do [[ $line == *READY-42* ]] && break; done
zpty -w -n z "$2"$'\t'
while zpty -r z line; do
  print -r -- ${line//$'\r'/}
  [[ $line == *COMPLETION-END* ]] && break
done
zpty -d z
)zsh";

// `loom completion zsh` in a real zsh: its completion system offers the subcommands, nested ones
// and a command's flags (global ones included), never a hidden command.
TEST(CliFlagsTest, ZshCompletionCompletesInARealZsh) {
  if (std::system("command -v zsh >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "zsh is not installed (scripts/install-deps.sh installs it)";
  }
  const fs::path script = ScratchDir() / "_loom", driver = ScratchDir() / "complete.zsh";
  Outcome o = RunLoom("completion zsh");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  std::ofstream(script) << o.out;
  std::ofstream(driver) << kZshCompleteDriver;
  // The matches of completing `line` (its words as typed, TAB at the end), space separated.
  auto complete = [&](const std::string& line) {
    Outcome z = RunShell("timeout 60 zsh -f " + driver.string() + " " + script.string() + " '" +
                         line + "'");
    EXPECT_EQ(z.exit_code, 0) << line << ": " << z.err << z.out;
    EXPECT_THAT(z.out, HasSubstr("COMPLETION-END")) << line;
    std::vector<std::string> matches;
    for (size_t at = z.out.find("MATCH:"); at != std::string::npos;
         at = z.out.find("MATCH:", at + 1)) {
      const size_t end = z.out.find_first_of("\n \x1b", at);
      matches.push_back(z.out.substr(at + 6, end == std::string::npos ? end : end - at - 6));
    }
    std::string joined;
    for (const std::string& m : matches) joined += (joined.empty() ? "" : " ") + m;
    return joined;
  };
  EXPECT_EQ(complete("loom rec"), "records");
  EXPECT_EQ(complete("loom sub"), "submit");
  EXPECT_EQ(complete("loom -v records s"), "summary stages");
  EXPECT_EQ(complete("loom cache "), "info prune");
  EXPECT_EQ(complete("loom tune zoo:tiny_cnn --tri"), "--trials");
  EXPECT_EQ(complete("loom tune zoo:tiny_cnn --min-r"), "--min-repeat-ms");
  EXPECT_EQ(complete("loom records summary --j"), "--json");  // a global flag, after the name
  EXPECT_EQ(complete("loom help"), "");                       // help-man is hidden
  EXPECT_EQ(complete("loom completion "), "bash zsh");        // not file names
  EXPECT_EQ(complete("loom completion z"), "zsh");
}

// The build writes loom(1) from the parser (`loom help-man`); it names every command and its
// defaults, and groff reads it without a warning.
TEST(CliFlagsTest, ManPageIsGeneratedAtBuildTimeAndReadsClean) {
  const fs::path page =
      fs::path(LOOM_BINARY).parent_path().parent_path().parent_path() / "man" / "loom.1";
  ASSERT_TRUE(fs::exists(page)) << page;
  const std::string roff = ReadFile(page);
  EXPECT_EQ(RunLoom("help-man").out, roff);
  EXPECT_THAT(roff, HasSubstr(".TH LOOM 1 \"\" \"loom 0.1.0\""));
  EXPECT_THAT(roff, HasSubstr(".SS \"loom records summary\""));
  EXPECT_THAT(roff, HasSubstr(".B \\-\\-trials INT:INT in [1 \\- 1000000]\n"
                              "Measured candidates per task (with \\-\\-total\\-trials or "
                              "\\-\\-time\\-budget a cap per task, none unless given) "
                              "[default: 64]\n"));
  if (std::system("command -v groff >/dev/null 2>&1") != 0) GTEST_SKIP() << "no groff";
  Outcome o = RunShell("groff -man -Tascii -P-bou -ww " + page.string());
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.err, "");
  EXPECT_THAT(o.out, HasSubstr("loom cache prune"));
}

// Every command that prints results takes --json (before or after its name), with numbers as
// JSON numbers. The commands come from the parser itself (the man page's sections), so a new
// command that prints without --json fails here unless it is one of the few that print no
// results.
TEST(CliFlagsTest, EveryCommandThatPrintsTakesJson) {
  // Daemons that log (serve, agent), a refreshing screen (top: `stats --json` is its figures),
  // a shell script (completion).
  const std::set<std::string> no_results = {"serve", "agent", "top", "completion"};
  const std::vector<std::string> commands = LeafCommands();
  ASSERT_GE(commands.size(), 30u);
  int with_json = 0;
  for (const std::string& cmd : commands) {
    const bool has = RunLoom(cmd + " --help").out.find("--json") != std::string::npos;
    EXPECT_EQ(has, !no_results.count(cmd)) << "loom " << cmd;
    with_json += has;
  }
  EXPECT_GE(with_json, 28);  // the 26 of issue 20, run and experiment
  const fs::path dir = ScratchDir();
  const fs::path db = dir / "empty.db", lines = dir / "empty.jsonl";
  fs::remove(db);
  std::ofstream(lines) << "";
  Outcome o = RunLoom("records import " + lines.string() + " --db " + db.string() + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(nlohmann::json::parse(o.out)["imported"], 0);
  o = RunLoom("--json compile zoo:tiny_cnn --db " + db.string() + " -o " + (dir / "art").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["kernel_steps"], 3);
  EXPECT_EQ(j["tuned_kernels"], 0);
  EXPECT_THAT(j["target"].get<std::string>(), ::testing::StartsWith("cpu:"));
  EXPECT_GT(j["library_bytes"].get<int64_t>(), 0);
  o = RunLoom("records export --db " + db.string() + " -o " + (dir / "out.jsonl").string() +
              " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(nlohmann::json::parse(o.out)["exported"], 0);
  o = RunLoom("zoo export tiny_cnn --json -o " + (dir / "t.onnx").string());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_GT(nlohmann::json::parse(o.out)["parameters"].get<int64_t>(), 0);
  o = RunLoom("cache prune --cache-dir " + (dir / "no-cache").string() + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(nlohmann::json::parse(o.out)["exists"], false);
  fs::create_directories(dir / "cache");
  o = RunLoom("cache prune --dry-run --cache-dir " + (dir / "cache").string() + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["removed_entries"], 0);
  EXPECT_EQ(j["dry_run"], true);
}

// stats and top take the global flags like the job commands (before or after their name).
TEST(CliFlagsTest, StatsAndTopTakeTheGlobalFlags) {
  for (const char* args :
       {"--server 127.0.0.1:1 stats", "stats --server 127.0.0.1:1 --json",
        "--json stats --server 127.0.0.1:1", "top --once --server 127.0.0.1:1"}) {
    ExpectOneLineError(RunLoom(args), "127.0.0.1:1");
  }
  ExpectOneLineError(RunLoom("stats --server 127.0.0.1:1 --token-file /nonexistent/token"),
                     "/nonexistent/token");
}

}  // namespace
}  // namespace loom
