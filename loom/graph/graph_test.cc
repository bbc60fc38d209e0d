#include "loom/graph/graph.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::graph {
namespace {

using ::testing::HasSubstr;

Node MakeNode(std::string name, std::string op, std::vector<std::string> in,
              std::vector<std::string> out) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

TEST(GraphTest, TopologicalSortOrdersOutOfOrderNodes) {
  Graph g;
  g.inputs.push_back({"x", {DType::kFloat32, {1}}});
  g.outputs.push_back({"z", {}});
  g.nodes.push_back(MakeNode("b", "Relu", {"y"}, {"z"}));
  g.nodes.push_back(MakeNode("a", "Relu", {"x"}, {"y"}));
  EXPECT_FALSE(g.Validate().ok());
  ASSERT_TRUE(g.TopologicalSort().ok());
  EXPECT_EQ(g.nodes[0].name, "a");
  EXPECT_EQ(g.nodes[1].name, "b");
  EXPECT_TRUE(g.Validate().ok());
}

TEST(GraphTest, CycleIsReportedWithNode) {
  Graph g;
  g.nodes.push_back(MakeNode("a", "Relu", {"y"}, {"x"}));
  g.nodes.push_back(MakeNode("b", "Relu", {"x"}, {"y"}));
  auto st = g.TopologicalSort();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("cycle"));
}

TEST(GraphTest, UndefinedInputNamesNodeAndValue) {
  Graph g;
  g.outputs.push_back({"y", {}});
  g.nodes.push_back(MakeNode("r", "Relu", {"missing"}, {"y"}));
  auto st = g.Validate();
  EXPECT_THAT(st.message(), HasSubstr("Relu 'r'"));
  EXPECT_THAT(st.message(), HasSubstr("'missing'"));
}

TEST(GraphTest, RemoveDeadNodesDropsUnusedBranchAndWeights) {
  Graph g;
  g.inputs.push_back({"x", {DType::kFloat32, {1}}});
  g.initializers["w"] = Tensor::ScalarFloat(2.0f);
  g.outputs.push_back({"y", {}});
  g.nodes.push_back(MakeNode("live", "Relu", {"x"}, {"y"}));
  g.nodes.push_back(MakeNode("dead", "Mul", {"x", "w"}, {"unused"}));
  g.RemoveDeadNodes();
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].name, "live");
  EXPECT_TRUE(g.initializers.empty());
}

TEST(TensorTest, CreateRejectsAbsurdShape) {
  auto t = Tensor::Create(DType::kFloat32, {1 << 20, 1 << 20, 1 << 20});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("too large"));
  EXPECT_FALSE(Tensor::Create(DType::kFloat32, {2, -1}).ok());
}

TEST(TensorTest, ReshapeSharesDataAndChecksCount) {
  Tensor t = Tensor::FromFloats({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  auto r = t.Reshaped({3, 2});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data<float>(), t.data<float>());
  EXPECT_FALSE(t.Reshaped({4, 2}).ok());
  Tensor c = t.Clone();
  EXPECT_NE(c.data<float>(), t.data<float>());
  EXPECT_EQ(c.values<float>()[5], 6.0f);
}

}  // namespace
}  // namespace loom::graph
