#include "loom/graph/tasks.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/onnx_importer.h"
#include "loom/graph/passes.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/testing/shared_models.h"

namespace loom::graph {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TensorType F32(Shape s) { return {DType::kFloat32, std::move(s)}; }

Node MakeNode(std::string name, std::string op, std::vector<std::string> in,
              std::vector<std::string> out, std::map<std::string, AttrValue> attrs = {}) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

std::map<std::string, AttrValue> Conv3x3(int64_t stride) {
  return {{"pads", std::vector<int64_t>{1, 1, 1, 1}},
          {"strides", std::vector<int64_t>{stride, stride}},
          {"kernel_shape", std::vector<int64_t>{3, 3}}};
}

// Two identical 3x3 convs (with a residual add), one strided 3x3 conv, pooling and a Gemm.
Graph TinyResNet() {
  Graph g;
  g.inputs.push_back({"x", F32({1, 64, 56, 56})});
  g.outputs.push_back({"logits", {}});
  g.initializers["w1"] = Tensor(DType::kFloat32, {64, 64, 3, 3});
  g.initializers["w2"] = Tensor(DType::kFloat32, {64, 64, 3, 3});
  g.initializers["b2"] = Tensor(DType::kFloat32, {64});
  g.initializers["w3"] = Tensor(DType::kFloat32, {128, 64, 3, 3});
  g.initializers["fc_w"] = Tensor(DType::kFloat32, {1000, 128});
  g.initializers["fc_b"] = Tensor(DType::kFloat32, {1000});
  g.nodes.push_back(MakeNode("conv1", "Conv", {"x", "w1"}, {"c1"}, Conv3x3(1)));
  g.nodes.push_back(MakeNode("relu1", "Relu", {"c1"}, {"r1"}));
  g.nodes.push_back(MakeNode("conv2", "Conv", {"r1", "w2", "b2"}, {"c2"}, Conv3x3(1)));
  g.nodes.push_back(MakeNode("add", "Add", {"c2", "x"}, {"s"}));
  g.nodes.push_back(MakeNode("conv3", "Conv", {"s", "w3"}, {"c3"}, Conv3x3(2)));
  g.nodes.push_back(MakeNode("gap", "GlobalAveragePool", {"c3"}, {"p"}));
  g.nodes.push_back(MakeNode("flat", "Flatten", {"p"}, {"f"}));
  g.nodes.push_back(
      MakeNode("fc", "Gemm", {"f", "fc_w", "fc_b"}, {"logits"}, {{"transB", int64_t{1}}}));
  return g;
}

TEST(ExtractTasksTest, TinyResNetHasThreeTasks) {
  Graph g = TinyResNet();
  ASSERT_TRUE(InferShapes(g).ok());
  auto tasks = ExtractTasks(g);
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_EQ(tasks->size(), 3u);
  const Task& t0 = (*tasks)[0];
  EXPECT_EQ(t0.key, "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1");
  EXPECT_EQ(t0.count, 2);
  EXPECT_THAT(t0.nodes, ElementsAre("conv1", "conv2"));
  EXPECT_EQ(t0.flops, 2.0 * 64 * 56 * 56 * 64 * 3 * 3);
  EXPECT_EQ(t0.flops, 231211008.0);
  EXPECT_EQ(t0.hash, StableHash(t0.key));
  EXPECT_EQ(t0.workload.kind, TaskKind::kConv2d);

  const Task& t1 = (*tasks)[1];
  EXPECT_EQ(t1.key, "conv2d:f32:n1_c64_h56_w56_k128_r3_s3_st2x2_p1x1x1x1_d1x1_g1");
  EXPECT_EQ(t1.count, 1);
  EXPECT_THAT(t1.nodes, ElementsAre("conv3"));
  EXPECT_EQ(t1.flops, 115605504.0);  // 2 * 128 * 28 * 28 * 64 * 9

  const Task& t2 = (*tasks)[2];
  EXPECT_EQ(t2.key, "dense:f32:m1_n1000_k128_tb1");
  EXPECT_EQ(t2.count, 1);
  EXPECT_EQ(t2.flops, 256000.0);
  EXPECT_EQ(t2.workload.kind, TaskKind::kDense);
  EXPECT_TRUE(t2.workload.trans_b);
}

TEST(ExtractTasksTest, NeedsShapes) {
  Graph g = TinyResNet();  // value_types not filled
  auto tasks = ExtractTasks(g);
  EXPECT_EQ(tasks.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(tasks.status().message(), HasSubstr("Conv 'conv2'"));
  EXPECT_THAT(tasks.status().message(), HasSubstr("run InferShapes first"));
}

TEST(WorkloadTest, DepthwiseAndGroupedDetection) {
  Graph g;
  g.inputs.push_back({"x", F32({1, 32, 112, 112})});
  g.initializers["dw"] = Tensor(DType::kFloat32, {32, 1, 3, 3});
  g.initializers["dw2"] = Tensor(DType::kFloat32, {64, 1, 3, 3});
  g.initializers["gw"] = Tensor(DType::kFloat32, {32, 16, 3, 3});
  auto attrs = Conv3x3(1);
  Node dw = MakeNode("dw", "Conv", {"x", "dw"}, {"a"}, attrs);
  dw.attrs["group"] = int64_t{32};
  Node dw2 = MakeNode("dw2", "Conv", {"x", "dw2"}, {"b"}, attrs);
  dw2.attrs["group"] = int64_t{32};
  Node grouped = MakeNode("g", "Conv", {"x", "gw"}, {"c"}, attrs);
  grouped.attrs["group"] = int64_t{2};

  auto w = WorkloadFromNode(g, dw);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->kind, TaskKind::kDepthwiseConv2d);
  EXPECT_EQ(WorkloadKey(*w),
            "depthwise_conv2d:f32:n1_c32_h112_w112_k32_r3_s3_st1x1_p1x1x1x1_d1x1_g32");
  EXPECT_EQ(WorkloadFlops(*w), 2.0 * 32 * 112 * 112 * 1 * 3 * 3);

  w = WorkloadFromNode(g, dw2);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->kind, TaskKind::kDepthwiseConv2d);  // channel multiplier 2
  EXPECT_EQ(w->k, 64);

  w = WorkloadFromNode(g, grouped);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->kind, TaskKind::kGroupedConv2d);
  EXPECT_EQ(TaskKindName(w->kind), "grouped_conv2d");
  EXPECT_EQ(WorkloadFlops(*w), 2.0 * 32 * 112 * 112 * 16 * 3 * 3);
}

TEST(WorkloadTest, SameUpperPadsAreResolved) {
  Graph g;
  g.inputs.push_back({"x", F32({1, 16, 56, 56})});
  g.initializers["w"] = Tensor(DType::kFloat32, {16, 16, 3, 3});
  Node n =
      MakeNode("c", "Conv", {"x", "w"}, {"y"},
               {{"auto_pad", std::string("SAME_UPPER")}, {"strides", std::vector<int64_t>{2, 2}}});
  auto w = WorkloadFromNode(g, n);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(WorkloadKey(*w), "conv2d:f32:n1_c16_h56_w56_k16_r3_s3_st2x2_p0x0x1x1_d1x1_g1");
  EXPECT_EQ(w->OutH(), 28);
  EXPECT_EQ(w->OutW(), 28);
}

TEST(WorkloadTest, MatMulForms) {
  Graph g;
  g.inputs.push_back({"seq", F32({1, 128, 768})});
  g.inputs.push_back({"q", F32({12, 128, 64})});
  g.inputs.push_back({"kt", F32({12, 64, 128})});
  g.inputs.push_back({"a", F32({8, 16})});
  g.inputs.push_back({"b", F32({16, 4})});
  g.inputs.push_back({"kb", F32({1, 64, 128})});
  g.initializers["w"] = Tensor(DType::kFloat32, {768, 3072});
  for (const auto& in : g.inputs) g.value_types[in.name] = in.type;

  auto w = WorkloadFromNode(g, MakeNode("proj", "MatMul", {"seq", "w"}, {"y"}));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(WorkloadKey(*w), "dense:f32:m128_n3072_k768_tb0");

  w = WorkloadFromNode(g, MakeNode("attn", "MatMul", {"q", "kt"}, {"y"}));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(WorkloadKey(*w), "batch_matmul:f32:b12_m128_n128_k64");
  EXPECT_EQ(WorkloadFlops(*w), 2.0 * 12 * 128 * 128 * 64);

  w = WorkloadFromNode(g, MakeNode("mm", "MatMul", {"a", "b"}, {"y"}));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(WorkloadKey(*w), "batch_matmul:f32:b1_m8_n4_k16");

  // B shared by all 12 batches of A: the batches are rows of one product.
  w = WorkloadFromNode(g, MakeNode("bcast", "MatMul", {"q", "kb"}, {"y"}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(WorkloadKey(*w), "batch_matmul:f32:b1_m1536_n128_k64");
}

// A graph whose inputs are the given float32 values (shape-inferred by hand).
Graph WithInputs(std::vector<std::pair<std::string, Shape>> inputs) {
  Graph g;
  for (auto& [name, shape] : inputs) {
    g.inputs.push_back({name, F32(shape)});
    g.value_types[name] = F32(shape);
  }
  return g;
}

std::string KeyOf(const Graph& g, const Node& n) {
  auto w = WorkloadFromNode(g, n);
  return w.ok() ? WorkloadKey(*w) : w.status().ToString();
}

TEST(WorkloadTest, MatMulBroadcastBatchDims) {
  Graph g = WithInputs({{"a2", {8, 16}},
                        {"b3", {3, 16, 4}},
                        {"v", {16}},
                        {"x", {2, 1, 5, 8}},
                        {"y", {1, 3, 8, 6}},
                        {"p", {4, 3, 5, 8}},
                        {"q", {4, 1, 8, 6}},
                        {"r", {3, 5, 8}},
                        {"s", {2, 3, 8, 6}},
                        {"u", {8}}});
  // A matrix shared by 3 batches of B.
  EXPECT_EQ(KeyOf(g, MakeNode("n1", "MatMul", {"a2", "b3"}, {"o"})),
            "batch_matmul:f32:b3_m8_n4_k16_ba1_bb3");
  // A vector is one row.
  EXPECT_EQ(KeyOf(g, MakeNode("n2", "MatMul", {"v", "b3"}, {"o"})),
            "batch_matmul:f32:b3_m1_n4_k16_ba1_bb3");
  // Each operand broadcasts a different dim: nothing merges or folds.
  EXPECT_EQ(KeyOf(g, MakeNode("n3", "MatMul", {"x", "y"}, {"o"})),
            "batch_matmul:f32:b6_m5_n6_k8_ba2x1_bb1x3");
  // The inner dim only A holds folds into M; what remains does not broadcast.
  EXPECT_EQ(KeyOf(g, MakeNode("n4", "MatMul", {"p", "q"}, {"o"})), "batch_matmul:f32:b4_m15_n6_k8");
  // Leading dims only B holds (A broadcast), and rank-3 against rank-4.
  EXPECT_EQ(KeyOf(g, MakeNode("n5", "MatMul", {"r", "s"}, {"o"})),
            "batch_matmul:f32:b6_m5_n6_k8_ba1x3_bb2x3");
  // A vector B is one column.
  EXPECT_EQ(KeyOf(g, MakeNode("n6", "MatMul", {"r", "u"}, {"o"})), "batch_matmul:f32:b1_m15_n1_k8");
  auto bad = WorkloadFromNode(g, MakeNode("n7", "MatMul", {"p", "s"}, {"o"}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("batch dims 4 and 2 do not broadcast"));
  bad = WorkloadFromNode(g, MakeNode("n8", "MatMul", {"a2", "y"}, {"o"}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("A has K=16 but B has K=8"));
}

TEST(WorkloadTest, LastTwoDimsTransposeIsReadInPlace) {
  Graph g = WithInputs({{"q", {2, 3, 5, 8}}, {"k", {2, 3, 16, 8}}, {"x", {16, 8}}});
  g.value_types["kt"] = F32({2, 3, 8, 16});
  g.value_types["xt"] = F32({8, 16});
  g.initializers["w"] = Tensor(DType::kFloat32, {16, 4});
  g.nodes.push_back(
      MakeNode("tr", "Transpose", {"k"}, {"kt"}, {{"perm", std::vector<int64_t>{0, 1, 3, 2}}}));
  g.nodes.push_back(MakeNode("qk", "MatMul", {"q", "kt"}, {"s"}));
  g.nodes.push_back(
      MakeNode("trx", "Transpose", {"x"}, {"xt"}, {{"perm", std::vector<int64_t>{1, 0}}}));
  g.nodes.push_back(MakeNode("xw", "MatMul", {"xt", "w"}, {"y"}));
  auto nw = AnalyzeTunableNode(g, g.nodes[1]);
  ASSERT_TRUE(nw.ok()) << nw.status();
  EXPECT_EQ(WorkloadKey(nw->workload), "batch_matmul:f32:b6_m5_n16_k8_tb1");
  EXPECT_EQ(nw->a, "q");
  EXPECT_EQ(nw->b, "k");
  EXPECT_THAT(nw->absorbed, ElementsAre("tr"));
  // A transposed 2-D activation times a constant: dense reading A as [K, M].
  nw = AnalyzeTunableNode(g, g.nodes[3]);
  ASSERT_TRUE(nw.ok()) << nw.status();
  EXPECT_EQ(WorkloadKey(nw->workload), "dense:f32:m8_n4_k16_tb0_ta1");
  EXPECT_EQ(nw->a, "x");
  EXPECT_THAT(nw->absorbed, ElementsAre("trx"));

  auto tasks = ExtractTasks(g);
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_EQ(tasks->size(), 2u);
  EXPECT_THAT((*tasks)[0].absorbed, ElementsAre("tr"));
  EXPECT_THAT((*tasks)[1].absorbed, ElementsAre("trx"));

  // Not absorbed: a Transpose with another use, one that moves other dims, one that is a graph
  // output.
  Graph g2 = g;
  g2.nodes.push_back(MakeNode("relu", "Relu", {"kt"}, {"r"}));
  nw = AnalyzeTunableNode(g2, g2.nodes[1]);
  ASSERT_TRUE(nw.ok());
  EXPECT_EQ(WorkloadKey(nw->workload), "batch_matmul:f32:b6_m5_n16_k8");
  EXPECT_EQ(nw->b, "kt");
  EXPECT_TRUE(nw->absorbed.empty());
  Graph g3 = g;
  g3.outputs.push_back({"kt", {}});
  EXPECT_EQ(KeyOf(g3, g3.nodes[1]), "batch_matmul:f32:b6_m5_n16_k8");
  Graph g4 = g;
  g4.nodes[0].attrs["perm"] = std::vector<int64_t>{1, 0, 3, 2};
  EXPECT_EQ(KeyOf(g4, g4.nodes[1]), "batch_matmul:f32:b6_m5_n16_k8");
}

TEST(WorkloadTest, GemmForms) {
  Graph g = WithInputs({{"a", {4, 8}}, {"at", {8, 4}}, {"bt", {6, 8}}});
  g.initializers["w"] = Tensor(DType::kFloat32, {8, 6});
  g.initializers["wt"] = Tensor(DType::kFloat32, {6, 8});
  EXPECT_EQ(KeyOf(g, MakeNode("g1", "Gemm", {"a", "w"}, {"y"})), "dense:f32:m4_n6_k8_tb0");
  EXPECT_EQ(KeyOf(g, MakeNode("g2", "Gemm", {"at", "wt"}, {"y"},
                              {{"transA", int64_t{1}}, {"transB", int64_t{1}}})),
            "dense:f32:m4_n6_k8_tb1_ta1");
  // An activation B: one product of the batch_matmul template, in either layout.
  EXPECT_EQ(KeyOf(g, MakeNode("g3", "Gemm", {"at", "bt"}, {"y"},
                              {{"transA", int64_t{1}}, {"transB", int64_t{1}}})),
            "batch_matmul:f32:b1_m4_n6_k8_ta1_tb1");
  auto bad = WorkloadFromNode(g, MakeNode("g4", "Gemm", {"a", "wt"}, {"y"}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("A has K=8 but B has K=6"));
}

TEST(WorkloadTest, NonTunableNodesAreNotFound) {
  Graph g;
  g.inputs.push_back({"a", F32({4, 8})});
  g.inputs.push_back({"x", F32({1, 3, 8})});
  g.initializers["b"] = Tensor(DType::kFloat32, {4, 5});
  g.initializers["w1d"] = Tensor(DType::kFloat32, {2, 3, 3});
  for (const auto& in : g.inputs) g.value_types[in.name] = in.type;
  auto w = WorkloadFromNode(g, MakeNode("relu", "Relu", {"a"}, {"y"}));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  g.inputs.push_back({"i", {DType::kInt64, {4, 8}}});
  g.value_types["i"] = {DType::kInt64, {4, 8}};
  w = WorkloadFromNode(g, MakeNode("gi", "MatMul", {"i", "b"}, {"y"}));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(), HasSubstr("only float32"));
  w = WorkloadFromNode(g, MakeNode("c1d", "Conv", {"x", "w1d"}, {"y"}));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(), HasSubstr("only 2-D convolutions"));
}

TEST(WorkloadKeyTest, RoundTripsEveryKind) {
  for (const char* key : {
           "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
           "conv2d:f32:n8_c3_h224_w224_k64_r7_s7_st2x2_p3x3x3x3_d1x1_g1",
           "depthwise_conv2d:f32:n1_c32_h112_w112_k32_r3_s3_st1x1_p1x1x1x1_d1x1_g32",
           "grouped_conv2d:f32:n1_c64_h28_w28_k128_r3_s3_st1x1_p2x2x2x2_d2x2_g4",
           "conv2d:f32:n1_c16_h56_w56_k16_r3_s3_st2x2_p0x0x1x1_d1x1_g1",
           "dense:f32:m1_n1000_k512_tb1",
           "dense:f32:m128_n3072_k768_tb0",
           "batch_matmul:f32:b12_m128_n128_k64",
           "dense:f32:m197_n192_k768_tb1_ta1",
           "batch_matmul:f32:b12_m197_n197_k64_tb1",
           "batch_matmul:f32:b4_m64_n128_k128_ta1",
           "batch_matmul:f32:b1_m4_n6_k8_ta1_tb1",
           "batch_matmul:f32:b3_m8_n4_k16_ba1_bb3",
           "batch_matmul:f32:b6_m5_n6_k8_ta1_ba2x1_bb1x3",
       }) {
    auto w = ParseWorkloadKey(key);
    ASSERT_TRUE(w.ok()) << key << ": " << w.status();
    EXPECT_EQ(WorkloadKey(*w), key);
  }
  auto w = ParseWorkloadKey("grouped_conv2d:f32:n1_c64_h28_w28_k128_r3_s3_st1x1_p2x2x2x2_d2x2_g4");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->kind, TaskKind::kGroupedConv2d);
  EXPECT_EQ(w->c, 64);
  EXPECT_EQ(w->k, 128);
  EXPECT_EQ(w->dilation_h, 2);
  EXPECT_EQ(w->pad_bottom, 2);
  EXPECT_EQ(w->groups, 4);
  EXPECT_EQ(w->OutH(), 28);
  w = ParseWorkloadKey("batch_matmul:f32:b6_m5_n6_k8_ta1_ba2x1_bb1x3");
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(w->trans_a);
  EXPECT_FALSE(w->trans_b);
  EXPECT_THAT(w->batch_a, ElementsAre(2, 1));
  EXPECT_THAT(w->batch_b, ElementsAre(1, 3));
  // Keys written before trans_a and broadcasts existed parse to the same workloads as before.
  w = ParseWorkloadKey("dense:f32:m1_n1000_k512_tb1");
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE(w->trans_a);
  EXPECT_TRUE(w->trans_b);
}

TEST(WorkloadKeyTest, ExtractedWorkloadsRoundTrip) {
  Graph g = TinyResNet();
  ASSERT_TRUE(InferShapes(g).ok());
  auto tasks = ExtractTasks(g);
  ASSERT_TRUE(tasks.ok());
  for (const Task& t : *tasks) {
    auto w = ParseWorkloadKey(t.key);
    ASSERT_TRUE(w.ok()) << t.key;
    EXPECT_EQ(*w, t.workload) << t.key;
  }
}

TEST(WorkloadKeyTest, RejectsMalformedKeys) {
  for (const char* key : {
           "",
           "conv2d",
           "conv3d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
           "conv2d:f8:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1",  // no such dtype
           "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1_d1x1_g1",
           "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1",
           "conv2d:f32:n01_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
           "conv2d:f32:n-1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
           "conv2d:f32:c64_n1_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
           "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g2",  // kind vs groups
           "depthwise_conv2d:f32:n1_c32_h112_w112_k32_r3_s3_st1x1_p1x1x1x1_d1x1_g1",
           "conv2d:f32:n1_c64_h2_w2_k64_r3_s3_st1x1_p0x0x0x0_d1x1_g1",  // empty output
           "conv2d:f32:n1_c64_h2_w2_k64_r3_s3_st2x2_p0x0x0x0_d1x1_g1",
           "dense:f32:m1_n1000_k512_tb2",
           "dense:f32:m1_n1000_k512",
           "batch_matmul:f32:b0_m128_n128_k64",
           "dense:f32:m1_n1000_k512_tb1_ta0",             // default written out
           "dense:f32:m1_n1000_k512_ta1_tb1",             // order
           "batch_matmul:f32:b12_m128_n128_k64_ta0",      // default written out
           "batch_matmul:f32:b12_m128_n128_k64_tb1_ta1",  // order
           "batch_matmul:f32:b12_m128_n128_k64_tb2",
           "batch_matmul:f32:b12_m128_n128_k64_ta1_x3",
           "batch_matmul:f32:b12_m128_n128_k64_ba12_bb12",    // no broadcast
           "batch_matmul:f32:b12_m128_n128_k64_ba1x1_bb3x4",  // not merged
           "batch_matmul:f32:b12_m128_n128_k64_ba1_bb12x1",   // ranks differ
           "batch_matmul:f32:b10_m128_n128_k64_ba1_bb12",     // b is not the product
           "batch_matmul:f32:b12_m128_n128_k64_ba2_bb3",      // does not broadcast
           "batch_matmul:f32:b12_m128_n128_k64_bb12",         // bb without ba
           "dense:f32:m1_n1000_k512_tb1_ba1_bb2",             // dense has no batch
           "batch_matmul:f32:b65536_m65536_n128_k64",         // operands over 2^31 elements
           "dense:f32:m9223372036854775807_n9223372036854775807_k2_tb0",
       }) {
    auto w = ParseWorkloadKey(key);
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << key;
  }
  EXPECT_THAT(ParseWorkloadKey("conv3d:f32:x").status().message(),
              HasSubstr("unknown kind 'conv3d'"));
}

TEST(StableHashTest, IsFnv1a64) {
  // Reference values computed independently (Python, FNV-1a 64 definition).
  EXPECT_EQ(StableHash(""), 14695981039346656037ull);
  EXPECT_EQ(StableHash("a"), 12638187200555641996ull);
  EXPECT_EQ(StableHash("conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1"),
            831783370307818156ull);
}

// ----- The reference models (torchvision exports) in LOOM_SHARED_DIR/models --------------------

// NAME.onnx of the shared reference model NAME, or "" when it is absent.
std::string ModelPath(const std::string& name) {
  const std::string dir = UnpackSharedModel(name);
  return dir.empty() ? "" : dir + "/" + name + ".onnx";
}

struct ModelExpectation {
  std::string name;
  size_t tasks;
  double total_flops;  // sum over tasks of count * flops
  std::string first_key;
};

void PrintTo(const ModelExpectation& e, std::ostream* os) { *os << e.name; }

class ReferenceModelTasksTest : public ::testing::TestWithParam<ModelExpectation> {};

TEST_P(ReferenceModelTasksTest, OptimizesAndExtractsTasks) {
  const ModelExpectation& e = GetParam();
  const std::string path = ModelPath(e.name);
  if (path.empty()) GTEST_SKIP() << e.name << ".tar.xz not available";
  auto g = ImportOnnxFile(path);
  ASSERT_TRUE(g.ok()) << g.status();
  // No evaluator: these exports fold with Shape/Constant alone.
  auto stats = OptimizeForInference(*g, nullptr);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(g->outputs.size(), 1u);
  EXPECT_EQ(g->outputs[0].type, F32({1, 1000}));
  auto tasks = ExtractTasks(*g);
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_EQ(tasks->size(), e.tasks);
  EXPECT_EQ((*tasks)[0].key, e.first_key);
  double total = 0;
  int64_t tunable_nodes = 0;
  for (const Task& t : *tasks) {
    total += t.flops * static_cast<double>(t.count);
    tunable_nodes += t.count;
  }
  EXPECT_EQ(total, e.total_flops);
  int64_t convs_and_gemms = 0;
  for (const Node& n : g->nodes) convs_and_gemms += n.op_type == "Conv" || n.op_type == "Gemm";
  EXPECT_EQ(tunable_nodes, convs_and_gemms);
}

INSTANTIATE_TEST_SUITE_P(
    Models, ReferenceModelTasksTest,
    ::testing::Values(
        // ResNet-18: the well-known 12 tasks and 1.81 GMACs.
        ModelExpectation{"resnet18", 12, 3628146688.0,
                         "conv2d:f32:n1_c3_h224_w224_k64_r7_s7_st2x2_p3x3x3x3_d1x1_g1"},
        ModelExpectation{"mobilenet_v2", 31, 601548544.0,
                         "conv2d:f32:n1_c3_h224_w224_k32_r3_s3_st2x2_p1x1x1x1_d1x1_g1"},
        // SqueezeNet 1.1 uses MaxPool ceil_mode: 111 -> 55 -> 27 -> 13.
        ModelExpectation{"squeezenet1_1", 18, 698303872.0,
                         "conv2d:f32:n1_c3_h224_w224_k64_r3_s3_st2x2_p0x0x0x0_d1x1_g1"}),
    [](const ::testing::TestParamInfo<ModelExpectation>& info) { return info.param.name; });

}  // namespace
}  // namespace loom::graph
