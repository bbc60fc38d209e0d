#include "loom/frontend/model_loader.h"

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/onnx_exporter.h"
#include "loom/graph/testing/node_builder.h"

namespace loom::frontend {
namespace {

namespace fs = std::filesystem;
using graph::DType;
using graph::Tensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Export(const graph::Graph& g, const std::string& tag) {
  const fs::path p = fs::path(::testing::TempDir()) /
                     ("loom_model_loader_" + tag + "_" + std::to_string(::getpid()) + ".onnx");
  EXPECT_TRUE(graph::ExportOnnxFile(g, p.string()).ok());
  return p.string();
}

using graph::testing::MakeNode;

// x: float[2, 6] and shape: int64[2] (a graph input) -> Reshape -> Relu -> y.
graph::Graph ReshapeByInput() {
  graph::Graph g;
  g.name = "reshape_by_input";
  g.opset = 17;
  g.inputs.push_back({"x", {DType::kFloat32, {2, 6}}});
  g.inputs.push_back({"shape", {DType::kInt64, {2}}});
  g.outputs.push_back({"y", {}});
  g.nodes.push_back(MakeNode("reshape", "Reshape", {"x", "shape"}, {"r"}));
  g.nodes.push_back(MakeNode("relu", "Relu", {"r"}, {"y"}));
  return g;
}

TEST(ModelLoaderTest, BindsAShapeInputOnlyWhereShapesNeedIt) {
  const std::string path = Export(ReshapeByInput(), "bind");
  auto unbound = LoadModel(path);
  EXPECT_EQ(unbound.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unbound.status().message(),
              HasSubstr("Reshape 'reshape': input 'shape' (shape) is not constant"));

  LoadOptions options;
  options.input_values["shape"] = Tensor::FromInt64s({2}, std::vector<int64_t>{3, 4});
  options.input_values["x"] = Tensor(DType::kFloat32, {2, 6});  // offered, not needed
  auto loaded = LoadModel(path, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->bound_inputs, ElementsAre("shape"));
  ASSERT_EQ(loaded->graph.inputs.size(), 1u);
  EXPECT_EQ(loaded->graph.inputs[0].name, "x");
  EXPECT_EQ(loaded->graph.outputs[0].type, (graph::TensorType{DType::kFloat32, {3, 4}}));

  options.input_values["shape"] = Tensor::FromInt64s({3}, std::vector<int64_t>{3, 2, 2});
  auto wrong = LoadModel(path, options);
  EXPECT_THAT(wrong.status().message(),
              HasSubstr("the value given for input 'shape' is int64[3] but the model declares "
                        "int64[2]"));
  LoadOptions stray;
  stray.input_values["nope"] = Tensor::ScalarInt64(1);
  EXPECT_THAT(LoadModel(path, stray).status().message(),
              HasSubstr("a value is given for 'nope', which is not an input of the model"));
}

// The needed value may be computed from the input: shape arithmetic on it folds once bound.
TEST(ModelLoaderTest, BindsTheInputsAShapeIsComputedFrom) {
  graph::Graph g = ReshapeByInput();
  g.initializers["two"] = Tensor::FromInt64s({2}, std::vector<int64_t>{2, 1});
  g.nodes[0].inputs[1] = "doubled";
  g.nodes.insert(g.nodes.begin(), MakeNode("mul", "Mul", {"shape", "two"}, {"doubled"}));
  LoadOptions options;
  options.input_values["shape"] = Tensor::FromInt64s({2}, std::vector<int64_t>{3, 2});
  auto loaded = LoadModel(Export(g, "computed"), options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->bound_inputs, ElementsAre("shape"));
  EXPECT_EQ(loaded->graph.outputs[0].type, (graph::TensorType{DType::kFloat32, {6, 2}}));
}

TEST(ModelLoaderTest, DeclaredInputsNeedNoShapeInference) {
  auto inputs = DeclaredInputs(Export(ReshapeByInput(), "declared"));
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(inputs->size(), 2u);
  EXPECT_EQ((*inputs)[1].name, "shape");
  EXPECT_EQ((*inputs)[1].type, (graph::TensorType{DType::kInt64, {2}}));
}

TEST(ModelLoaderTest, FoldBudgetComesFromLoadOptions) {
  graph::Graph g;
  g.name = "fold";
  g.opset = 17;
  g.inputs.push_back({"x", {DType::kFloat32, {4}}});
  g.initializers["shape"] = Tensor::FromInt64s({1}, std::vector<int64_t>{1024});
  g.outputs.push_back({"y", {}});
  graph::Node cos = MakeNode("fill", "ConstantOfShape", {"shape"}, {"c"});
  g.nodes.push_back(cos);
  g.nodes.push_back(MakeNode("gather", "Gather", {"c", "idx"}, {"y"}));
  g.initializers["idx"] = Tensor::FromInt64s({1}, std::vector<int64_t>{0});
  g.outputs[0].name = "y";
  g.nodes.push_back(MakeNode("relu", "Relu", {"x"}, {"z"}));
  g.outputs.push_back({"z", {}});
  const std::string path = Export(g, "budget");
  ASSERT_TRUE(LoadModel(path).ok());
  auto tight = LoadModel(path, {.max_fold_bytes = 1000});
  EXPECT_EQ(tight.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tight.status().message(),
              HasSubstr("constant folding ConstantOfShape 'fill': output 'c' would be "
                        "float32[1024] (4096 bytes), above the per-tensor limit of 1000 bytes"));
  auto total = LoadModel(path, {.max_fold_total_bytes = 4096});
  EXPECT_THAT(total.status().message(), HasSubstr("above the per-model limit of 4096 bytes"));
}

}  // namespace
}  // namespace loom::frontend
