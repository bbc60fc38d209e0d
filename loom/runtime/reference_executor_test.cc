#include "loom/runtime/reference_executor.h"

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::runtime {
namespace {

using graph::DType;
using graph::Graph;
using graph::Node;
using graph::Tensor;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

Node MakeNode(std::string name, std::string op, std::vector<std::string> in,
              std::vector<std::string> out, std::map<std::string, graph::AttrValue> attrs = {}) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

std::vector<float> Floats(const Tensor& t) {
  auto v = t.values<float>();
  return {v.begin(), v.end()};
}

// x [1,1,3,3] -> Conv (channels x and -x) -> Relu -> GlobalAveragePool -> Flatten -> Gemm.
Graph SmallNet() {
  Graph g;
  g.name = "small";
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {1, 1, 3, 3}}});
  g.outputs.push_back({"y", {}});
  g.initializers["conv.w"] = Tensor::FromFloats({2, 1, 1, 1}, std::vector<float>{1, -1});
  g.initializers["conv.b"] = Tensor::FromFloats({2}, std::vector<float>{0, 0});
  g.initializers["fc.w"] = Tensor::FromFloats({3, 2}, std::vector<float>{1, 0, 0, 1, 2, 1});
  g.initializers["fc.b"] = Tensor::FromFloats({3}, std::vector<float>{1, 2, 3});
  g.nodes.push_back(MakeNode("conv", "Conv", {"x", "conv.w", "conv.b"}, {"c"}));
  g.nodes.push_back(MakeNode("relu", "Relu", {"c"}, {"r"}));
  g.nodes.push_back(MakeNode("gap", "GlobalAveragePool", {"r"}, {"p"}));
  g.nodes.push_back(MakeNode("flat", "Flatten", {"p"}, {"f"}));
  g.nodes.push_back(MakeNode("fc", "Gemm", {"f", "fc.w", "fc.b"}, {"y"}, {{"transB", int64_t{1}}}));
  return g;
}

Tensor OneToNine() {
  return Tensor::FromFloats({1, 1, 3, 3}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9});
}

TEST(ReferenceExecutorTest, SmallNetHasKnownResult) {
  auto exec = ReferenceExecutor::Create(SmallNet());
  ASSERT_TRUE(exec.ok()) << exec.status();
  auto out = exec->Run({{"x", OneToNine()}});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  // Relu keeps channel x (mean 5) and zeroes -x; fc: [5,0] . rows [1,0], [0,1], [2,1] + bias.
  EXPECT_EQ((*out)[0].shape(), (graph::Shape{1, 3}));
  EXPECT_THAT(Floats((*out)[0]), ElementsAre(6, 2, 13));
}

TEST(ReferenceExecutorTest, InputErrorsNameTheInputAndTypes) {
  auto exec = ReferenceExecutor::Create(SmallNet());
  ASSERT_TRUE(exec.ok()) << exec.status();

  auto shape = exec->Run({{"x", Tensor(DType::kFloat32, {1, 1, 4, 4})}});
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shape.status().message(),
              HasSubstr("input 'x' expects float32[1,1,3,3], got float32[1,1,4,4]"));

  auto dtype = exec->Run({{"x", Tensor(DType::kInt64, {1, 1, 3, 3})}});
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dtype.status().message(),
              HasSubstr("input 'x' expects float32[1,1,3,3], got int64[1,1,3,3]"));

  auto missing = exec->Run({});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("input 'x' (float32[1,1,3,3]) is missing"));

  auto extra = exec->Run({{"x", OneToNine()}, {"z", OneToNine()}});
  EXPECT_EQ(extra.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(extra.status().message(), HasSubstr("'z' is not an input of the graph (inputs: x)"));
}

TEST(ReferenceExecutorTest, DynamicDimsMatchAnySizeAndValueTypesTakePrecedence) {
  Graph g = SmallNet();
  g.inputs[0].type.shape = {-1, 1, -1, -1};
  auto exec = ReferenceExecutor::Create(g);
  ASSERT_TRUE(exec.ok()) << exec.status();
  auto out = exec->Run({{"x", Tensor(DType::kFloat32, {2, 1, 5, 5})}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].shape(), (graph::Shape{2, 3}));

  g.value_types["x"] = {DType::kFloat32, {1, 1, 5, 5}};
  auto pinned = ReferenceExecutor::Create(g);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  auto bad = pinned->Run({{"x", Tensor(DType::kFloat32, {2, 1, 5, 5})}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("expects float32[1,1,5,5]"));
}

TEST(ReferenceExecutorTest, CreateRejectsInvalidGraphsAndUnknownOps) {
  Graph unknown = SmallNet();
  unknown.nodes[1].op_type = "LSTM";
  auto st = ReferenceExecutor::Create(unknown).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(st.message(), HasSubstr("LSTM 'relu': no reference kernel"));

  Graph invalid = SmallNet();
  invalid.nodes[2].inputs = {"nowhere"};
  st = ReferenceExecutor::Create(invalid).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("'nowhere'"));
}

TEST(ReferenceExecutorTest, KernelErrorsNameTheNode) {
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"idx", {DType::kInt64, {1}}});
  g.outputs.push_back({"y", {}});
  g.initializers["table"] = Tensor::FromFloats({2}, std::vector<float>{1, 2});
  g.nodes.push_back(MakeNode("lookup", "Gather", {"table", "idx"}, {"y"}));
  auto exec = ReferenceExecutor::Create(g);
  ASSERT_TRUE(exec.ok()) << exec.status();
  auto ok = exec->Run({{"idx", Tensor::FromInt64s({1}, std::vector<int64_t>{-1})}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(Floats((*ok)[0]), ElementsAre(2));
  auto bad = exec->Run({{"idx", Tensor::FromInt64s({1}, std::vector<int64_t>{5})}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              AllOf(HasSubstr("Gather 'lookup': index 5 "), HasSubstr("out of range"),
                    Not(HasSubstr("lookup': Gather"))));
}

TEST(ReferenceExecutorTest, OptionalInputsAndMultipleOutputs) {
  // Clip with only a max (empty min name), then MaxPool with its Indices output, also exposing
  // an intermediate that a later node reads as a graph output.
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {1, 1, 2, 2}}});
  g.initializers["six"] = Tensor::ScalarFloat(6);
  g.nodes.push_back(MakeNode("clip", "Clip", {"x", "", "six"}, {"c"}));
  g.nodes.push_back(MakeNode("pool", "MaxPool", {"c"}, {"p", "i"},
                             {{"kernel_shape", std::vector<int64_t>{2, 2}}}));
  g.outputs = {{"p", {}}, {"i", {}}, {"c", {}}};
  auto exec = ReferenceExecutor::Create(g);
  ASSERT_TRUE(exec.ok()) << exec.status();
  auto out = exec->Run({{"x", Tensor::FromFloats({1, 1, 2, 2}, std::vector<float>{9, -1, 2, 3})}});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 3u);
  EXPECT_THAT(Floats((*out)[0]), ElementsAre(6));
  EXPECT_EQ((*out)[1].data<int64_t>()[0], 0);
  EXPECT_THAT(Floats((*out)[2]), ElementsAre(6, -1, 2, 3));
}

constexpr int64_t kBytes = 1024 * 4;  // one float32[1024]

TEST(ReferenceExecutorTest, IntermediatesAreFreedAfterLastUse) {
  // x -> a -> b, then c = a + b: a lives until the Add, x dies after the first node.
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {1024}}});
  g.outputs.push_back({"c", {}});
  g.nodes.push_back(MakeNode("n0", "Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("n1", "Relu", {"a"}, {"b"}));
  g.nodes.push_back(MakeNode("n2", "Add", {"a", "b"}, {"c"}));
  auto exec = ReferenceExecutor::Create(g);
  ASSERT_TRUE(exec.ok()) << exec.status();
  std::vector<ReferenceExecutor::NodeTiming> timings;
  auto out = exec->RunProfiled({{"x", Tensor(DType::kFloat32, {1024})}}, &timings);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(timings.size(), 3u);
  EXPECT_EQ(timings[0].node, "n0");
  EXPECT_EQ(timings[2].op_type, "Add");
  for (const auto& t : timings) EXPECT_GE(t.seconds, 0.0);
  EXPECT_EQ(timings[0].live_bytes, kBytes);      // a
  EXPECT_EQ(timings[1].live_bytes, 2 * kBytes);  // a, b
  EXPECT_EQ(timings[2].live_bytes, kBytes);      // c
}

TEST(ReferenceExecutorTest, LongChainKeepsOneValueLiveAndViewsCountOnce) {
  Graph g;
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {1024}}});
  g.initializers["shape"] = Tensor::FromInt64s({2}, std::vector<int64_t>{1, 1024});
  std::string prev = "x";
  for (int i = 0; i < 20; ++i) {
    std::string next = "v" + std::to_string(i);
    g.nodes.push_back(MakeNode("relu" + std::to_string(i), "Relu", {prev}, {next}));
    prev = next;
  }
  // A view of the last value, read together with it: one shared buffer.
  g.nodes.push_back(MakeNode("view", "Reshape", {prev, "shape"}, {"r"}));
  g.nodes.push_back(MakeNode("sum", "Add", {prev, "r"}, {"y"}));
  // An output nobody reads (Dropout's mask) is dropped at once.
  g.nodes.push_back(MakeNode("drop", "Dropout", {"y"}, {"z", "mask"}));
  g.outputs.push_back({"z", {}});
  auto exec = ReferenceExecutor::Create(g);
  ASSERT_TRUE(exec.ok()) << exec.status();
  std::vector<ReferenceExecutor::NodeTiming> timings;
  auto out = exec->RunProfiled({{"x", Tensor(DType::kFloat32, {1024})}}, &timings);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(timings.size(), 23u);
  int64_t peak = 0;
  for (const auto& t : timings) peak = std::max(peak, t.live_bytes);
  EXPECT_EQ(peak, kBytes);                    // never more than one chain value at once
  EXPECT_EQ(timings[20].live_bytes, kBytes);  // v19 and its view r share a buffer
  EXPECT_EQ(timings[22].live_bytes, kBytes);  // z (a view of y); mask already freed
}

TEST(ReferenceExecutorTest, RepeatedRunsAgreeAndKeepTheGraph) {
  auto exec = ReferenceExecutor::Create(SmallNet());
  ASSERT_TRUE(exec.ok()) << exec.status();
  auto a = exec->Run({{"x", OneToNine()}});
  auto b = exec->Run({{"x", OneToNine()}});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(Floats((*a)[0]), Floats((*b)[0]));
  EXPECT_EQ(exec->graph().nodes.size(), 5u);
}

}  // namespace
}  // namespace loom::runtime
