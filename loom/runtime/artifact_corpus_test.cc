// Runs the plan.json checks (CheckPlanJson, what CompiledModel::Load does before it loads model.so)
// over the fuzzing seed corpus in tests/data/plan_corpus/, so every input the fuzzer starts from
// (and every crash it once found) stays a regression test. File name prefixes state the expected
// outcome: "valid_" must pass, "invalid_" must be kDataLoss, anything else (e.g. "crash_") must
// merely return.
//
// The seeds are written by the DISABLED_WriteSeedCorpus test below (plans of small compiled
// models, and tampered copies of them, one per check the loader makes):
//   loom_runtime_artifact_corpus_test --gtest_also_run_disabled_tests \
//       --gtest_filter='*WriteSeedCorpus'
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/shape_inference.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/testing/artifact_fuzz_weights.h"
#include "nlohmann/json.hpp"

namespace loom::runtime {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

fs::path CorpusDir() { return fs::path(LOOM_SOURCE_DIR) / "tests" / "data" / "plan_corpus"; }

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ArtifactCorpusTest, EverySeedHasItsOutcome) {
  const std::string weights = FuzzWeightsImage();
  int valid = 0, invalid = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(CorpusDir())) {
    const std::string name = e.path().filename().string();
    SCOPED_TRACE(name);
    const absl::Status st = CheckPlanJson(ReadAll(e.path()), weights);
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_TRUE(st.ok()) << st;
      ++valid;
    } else if (name.rfind("invalid_", 0) == 0) {
      EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
      ++invalid;
    }
  }
  EXPECT_GE(valid, 2);
  EXPECT_GE(invalid, 10);
}

// ---- Seed generation (disabled: run by hand when the plan format changes).

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : fs::temp_directory_path().string();
}

// The plan.json of `g` compiled and exported.
json ExportedPlan(const graph::Graph& g, const std::string& name) {
  CompileOptions o;
  o.build.cache_dir = BuildDir() + "/artifact_corpus_kernels";
  auto cm = CompiledModel::Compile(g, o);
  EXPECT_TRUE(cm.ok()) << cm.status();
  const std::string dir = absl::StrCat(BuildDir(), "/artifact_corpus/", name);
  fs::remove_all(dir);
  ExportOptions e;
  e.build.cache_dir = o.build.cache_dir;
  EXPECT_TRUE((*cm)->Export(dir, e).ok());
  return json::parse(ReadAll(fs::path(dir) / kArtifactPlanFile));
}

// A graph with a pool, a channel concat of odd channel counts, an elementwise chain and a
// reference step (int64 division), so that the seeds hold every step kind.
graph::Graph MixedGraph() {
  graph::Graph g;
  g.inputs = {{"x", {graph::DType::kFloat32, {1, 3, 8, 8}}},
              {"a", {graph::DType::kInt64, {4}}},
              {"b", {graph::DType::kInt64, {4}}}};
  auto w = [](graph::Shape s) {
    graph::Tensor t(graph::DType::kFloat32, s);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = 0.01f * (i % 7);
    return t;
  };
  g.initializers["w1"] = w({5, 3, 3, 3});
  g.initializers["w2"] = w({3, 5, 1, 1});
  auto node = [&](std::string op, std::vector<std::string> in, std::string out,
                  std::map<std::string, graph::AttrValue> attrs = {}) {
    graph::Node n;
    n.name = out;
    n.op_type = std::move(op);
    n.inputs = std::move(in);
    n.outputs = {out};
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
  };
  node("Conv", {"x", "w1"}, "c1", {{"pads", std::vector<int64_t>{1, 1, 1, 1}}});
  node("Sigmoid", {"c1"}, "s1");
  node("Mul", {"c1", "s1"}, "silu");
  node("Conv", {"silu", "w2"}, "c2");
  node("Concat", {"silu", "c2"}, "cat", {{"axis", int64_t{1}}});
  node("MaxPool", {"cat"}, "pool",
       {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}});
  node("Div", {"a", "b"}, "q");
  g.outputs = {{"pool", {}}, {"q", {}}, {"a", {}}};  // "a": an input as output, a copy step
  EXPECT_TRUE(graph::InferShapes(g).ok());
  for (graph::ValueInfo& o : g.outputs) o.type = g.value_types[o.name];
  return g;
}

void Write(const std::string& name, const json& j) {
  std::ofstream(CorpusDir() / name) << j.dump(1);
}

// The first step with op `op`.
json& FirstStep(json& plan, const std::string& op) {
  for (json& s : plan["steps"]) {
    if (s["op"] == op) return s;
  }
  ADD_FAILURE() << "no " << op << " step";
  return plan["steps"][0];
}

TEST(ArtifactCorpusTest, DISABLED_WriteSeedCorpus) {
  fs::create_directories(CorpusDir());
  auto tiny = frontend::LoadModel("zoo:tiny_cnn");
  ASSERT_TRUE(tiny.ok());
  const json small = ExportedPlan(tiny->graph, "tiny_cnn");
  const json mixed = ExportedPlan(MixedGraph(), "mixed");
  Write("valid_tiny_cnn.json", small);
  Write("valid_mixed_steps.json", mixed);
  // One tampered copy per check.
  const std::vector<std::pair<std::string, std::function<void(json&)>>> edits = {
      {"invalid_constant_offset_near_2_63",
       [](json& j) { j["constants"][0]["offset"] = int64_t{9223372036854775000}; }},
      {"invalid_constant_huge_shape",
       [](json& j) {
         j["constants"][0]["shape"] = {int64_t{1} << 40, int64_t{1} << 40};
       }},
      {"invalid_constant_negative_dim", [](json& j) { j["constants"][0]["shape"] = {-4}; }},
      {"invalid_buffer_outside_arena",
       [](json& j) { j["buffers"][0]["offset"] = int64_t{9223372036854775744}; }},
      {"invalid_arena_too_large", [](json& j) { j["arena_bytes"] = int64_t{1} << 62; }},
      {"invalid_kernel_out_of_range", [](json& j) { FirstStep(j, "kernel")["kernel"] = 999; }},
      {"invalid_kernel_argument_too_small",
       [](json& j) {
         FirstStep(j, "kernel")["args"][0] = {"arena", j["buffers"].size() - 1};
       }},
      {"invalid_kernel_writes_a_constant",
       [](json& j) {
         json& k = FirstStep(j, "kernel");
         k["args"][k["args"].size() - 1] = {"const", 0};
       }},
      {"invalid_kernel_table_sizes", [](json& j) { j["kernels"][0]["bytes"][0] = -1; }},
      {"invalid_operand_kind",
       [](json& j) {
         FirstStep(j, "relayout")["src"] = {"heap", 0};
       }},
      {"invalid_geometry_overflow",
       [](json& j) {
         const json huge = {int64_t{1} << 40, 3, int64_t{1} << 40, 8, 1, 0, 0, 0, 0};
         FirstStep(j, "relayout")["src_geo"] = huge;
         FirstStep(j, "relayout")["dst_geo"] = huge;
       }},
      {"invalid_pool_window", [](json& j) { FirstStep(j, "pool")["window"][2] = 0; }},
      {"invalid_channel_runs_overlap",
       [](json& j) {
         json& c = FirstStep(j, "channel_map");
         c["runs"][1][2] = 0;
       }},
      {"invalid_copy_rows_overflow",
       [](json& j) {
         json& c = FirstStep(j, "copy");
         c["rows"] = int64_t{1} << 40;
         c["src_stride"] = int64_t{1} << 40;
       }},
      {"invalid_reference_operand_type",
       [](json& j) { FirstStep(j, "reference")["inputs"][0]["shape"] = {int64_t{1} << 62}; }},
      {"invalid_input_negative_dim",
       [](json& j) {
         j["inputs"][0]["shape"] = {-1, 3};
       }},
      {"invalid_threads_negative", [](json& j) { j["num_threads"] = -3; }},
      {"invalid_not_json_array_ref", [](json& j) { FirstStep(j, "kernel")["args"][0] = 7; }},
      {"invalid_unknown_step_op", [](json& j) { j["steps"][0]["op"] = "syscall"; }},
  };
  for (const auto& [name, edit] : edits) {
    json j = mixed;
    // The mixed plan has every step kind; copies of it get each edit.
    edit(j);
    Write(name + ".json", j);
  }
  // Many threads are capped at load, not refused.
  json many = small;
  many["num_threads"] = 100000;
  Write("valid_threads_100000.json", many);
  std::ofstream(CorpusDir() / "invalid_truncated.json") << small.dump().substr(0, 200);
}

}  // namespace
}  // namespace loom::runtime
