// Differential tests of the CUDA lowerings (cuda_lowering.h) through their host emulation: each
// case is lowered for a cuda target, printed as the host emulation of its CUDA kernel, compiled
// and run, and compared with the reference kernel: bit for bit for data movement and gathers, to
// float rounding for softmax, the normalizations and reductions. Also the CUDA elementwise
// kernel over broadcast operands of several dtypes, and what the lowering refuses.
#include "loom/ops/cuda_lowering.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/testing/node_builder.h"
#include "loom/kernels/reference.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using graph::testing::MakeNode;
using ::testing::HasSubstr;
using testutil::Int64s;
using testutil::Iota;
using testutil::NodeCase;
using testutil::RandomFloats;

absl::StatusOr<LoweredKernel> Emulated(const graph::Graph& g, const graph::Node& node,
                                       const Target& target) {
  return LowerNodeCuda(g, node, target, /*host_emulation=*/true);
}

class CudaLoweringTest : public ::testing::Test {
 protected:
  Target target_ = CudaTarget("sm_90");
  testutil::TempDir dir_;

  absl::StatusOr<testutil::NodeRun> Run(const NodeCase& c) {
    return testutil::RunCase(c, target_, dir_.path(), /*with_reference=*/true, &Emulated);
  }

  // Every output bit-identical to the reference kernel's.
  void ExpectExact(const NodeCase& c, const std::string& what) {
    SCOPED_TRACE(what);
    auto run = Run(c);
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->by_threads[0].size(), run->reference.size());
    for (size_t o = 0; o < run->reference.size(); ++o) {
      EXPECT_TRUE(testutil::SameBits(run->by_threads[0][o], run->reference[o]))
          << "output " << o << ", " << run->reference[o].type().ToString();
    }
  }

  // Every float output within `tol` relative error of the reference kernel's, relative to
  // max(|want|, floor) (a normalized output near zero is the difference of O(1) terms).
  void ExpectClose(const NodeCase& c, const std::string& what, double tol = 2e-5,
                   double floor = 1e-3) {
    SCOPED_TRACE(what);
    auto run = Run(c);
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->by_threads[0].size(), run->reference.size());
    for (size_t o = 0; o < run->reference.size(); ++o) {
      const Tensor& got = run->by_threads[0][o];
      const Tensor& want = run->reference[o];
      ASSERT_EQ(got.type(), want.type()) << "output " << o;
      if (want.dtype() != DType::kFloat32) {
        EXPECT_TRUE(testutil::SameBits(got, want)) << "output " << o;
        continue;
      }
      EXPECT_LE(testutil::MaxRelError(got, want, floor), tol) << "output " << o;
    }
  }
};

NodeCase Case(graph::Node node, std::vector<Tensor> inputs, std::set<size_t> constants = {},
              int64_t opset = 17) {
  NodeCase c;
  c.node = std::move(node);
  c.inputs = std::move(inputs);
  c.constants = std::move(constants);
  c.opset = opset;
  return c;
}

TEST_F(CudaLoweringTest, StridedViewsMoveEveryDtypeExactly) {
  ExpectExact(
      Case(MakeNode("t", "Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{0, 2, 3, 1}}}),
           {Iota(DType::kFloat32, {2, 3, 5, 7}, 1)}),
      "transpose NCHW -> NHWC");
  ExpectExact(
      Case(MakeNode("t", "Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}}),
           {Iota(DType::kInt64, {1, 4, 6, 3}, 2)}),
      "transpose heads, int64");
  ExpectExact(Case(MakeNode("s", "Slice", {"x", "st", "en", "ax", "sp"}, {"y"}),
                   {Iota(DType::kFloat32, {3, 9, 8}, 3), Int64s({2}, {1, 7}),
                    Int64s({2}, {8, -100}), Int64s({2}, {1, 2}), Int64s({2}, {2, -2})},
                   {1, 2, 3, 4}),
              "slice with a negative step");
  ExpectExact(Case(MakeNode("e", "Expand", {"x", "s"}, {"y"}),
                   {Iota(DType::kBool, {3, 1}, 4), Int64s({3}, {2, 3, 5})}, {1}),
              "expand, bool");
  ExpectExact(Case(MakeNode("t", "Tile", {"x", "r"}, {"y"}),
                   {Iota(DType::kFloat16, {2, 3}, 5), Int64s({2}, {3, 2})}, {1}),
              "tile, float16");
  ExpectExact(Case(MakeNode("d", "DepthToSpace", {"x"}, {"y"},
                            {{"blocksize", int64_t{2}}, {"mode", std::string("CRD")}}),
                   {Iota(DType::kFloat32, {1, 8, 3, 2}, 6)}),
              "depth to space");
}

TEST_F(CudaLoweringTest, ConcatSplitAndPad) {
  ExpectExact(Case(MakeNode("c", "Concat", {"a", "b", "c"}, {"y"}, {{"axis", int64_t{1}}}),
                   {Iota(DType::kFloat32, {2, 3, 4}, 1), Iota(DType::kFloat32, {2, 1, 4}, 2),
                    Iota(DType::kFloat32, {2, 5, 4}, 3)}),
              "concat on axis 1");
  ExpectExact(Case(MakeNode("c", "Concat", {"a", "b"}, {"y"}, {{"axis", int64_t{0}}}),
                   {Iota(DType::kInt64, {1, 6}, 4), Iota(DType::kInt64, {3, 6}, 5)}),
              "concat on axis 0, int64");
  ExpectExact(Case(MakeNode("s", "Split", {"x", "sizes"}, {"p", "q", "r"}, {{"axis", int64_t{2}}}),
                   {Iota(DType::kFloat32, {2, 3, 10}, 6), Int64s({3}, {2, 5, 3})}, {1}, 13),
              "split on the last axis");
  for (const char* mode : {"constant", "edge", "reflect", "wrap"}) {
    ExpectExact(
        Case(MakeNode("p", "Pad", {"x", "pads"}, {"y"}, {{"mode", std::string(mode)}}),
             {Iota(DType::kFloat32, {2, 3, 4}, 7), Int64s({6}, {0, 2, 3, 1, 1, 2})}, {1}, 19),
        absl::StrCat("pad ", mode));
  }
  ExpectExact(Case(MakeNode("p", "Pad", {"x", "pads", "v"}, {"y"}),
                   {Iota(DType::kFloat32, {3, 3}, 8), Int64s({4}, {1, -1, 0, 2}),
                    Tensor::ScalarFloat(2.5f)},
                   {1, 2}),
              "pad with a value and a negative pad");
}

TEST_F(CudaLoweringTest, GathersReadIndicesOfEitherTypeAndZeroOutOfRange) {
  ExpectExact(Case(MakeNode("g", "Gather", {"x", "i"}, {"y"}, {{"axis", int64_t{0}}}),
                   {RandomFloats({10, 6}, 1), Int64s({2, 3}, {0, 9, -1, 3, 3, -10})}),
              "embedding lookup with negative indices");
  ExpectExact(Case(MakeNode("g", "Gather", {"x", "i"}, {"y"}, {{"axis", int64_t{1}}}),
                   {Iota(DType::kInt64, {2, 5, 3}, 2), Int64s({2}, {4, 1})}, {1}),
              "gather on axis 1, constant indices");
  ExpectExact(Case(MakeNode("g", "GatherElements", {"x", "i"}, {"y"}, {{"axis", int64_t{1}}}),
                   {RandomFloats({3, 4}, 3), Int64s({3, 2}, {0, 3, -1, 2, 1, 1})}),
              "gather elements");
  // A run-time index out of range reads nothing and gives zero (the reference refuses it).
  NodeCase bad = Case(MakeNode("g", "Gather", {"x", "i"}, {"y"}, {{"axis", int64_t{0}}}),
                      {RandomFloats({4, 2}, 4), Int64s({2}, {1, 7})});
  auto run = testutil::RunCase(bad, target_, dir_.path(), /*with_reference=*/false, &Emulated);
  ASSERT_TRUE(run.ok()) << run.status();
  const Tensor& y = run->by_threads[0][0];
  EXPECT_EQ(y.data<float>()[0], bad.inputs[0].data<float>()[2]);
  EXPECT_EQ(y.data<float>()[2], 0.0f);
  EXPECT_EQ(y.data<float>()[3], 0.0f);
}

TEST_F(CudaLoweringTest, SoftmaxOverRowsAndStridedAxes) {
  ExpectClose(Case(MakeNode("s", "Softmax", {"x"}, {"y"}, {{"axis", int64_t{-1}}}),
                   {RandomFloats({3, 4, 197}, 1, -8, 8)}),
              "attention rows of 197");
  ExpectClose(Case(MakeNode("s", "Softmax", {"x"}, {"y"}, {{"axis", int64_t{1}}}),
                   {RandomFloats({2, 5, 3, 4}, 2)}),
              "channel softmax");
  ExpectClose(Case(MakeNode("s", "LogSoftmax", {"x"}, {"y"}, {{"axis", int64_t{-1}}}),
                   {RandomFloats({6, 1000}, 3, -20, 20)}),
              "log-softmax, a row longer than a block");
  ExpectClose(Case(MakeNode("s", "Softmax", {"x"}, {"y"}, {{"axis", int64_t{1}}}),
                   {RandomFloats({2, 3, 4}, 4)}, {}, 11),
              "opset 11: the dims from the axis on are one row");
}

TEST_F(CudaLoweringTest, Normalizations) {
  ExpectClose(
      Case(MakeNode("n", "LayerNormalization", {"x", "s", "b"}, {"y", "mean", "rstd"},
                    {{"axis", int64_t{-1}}, {"epsilon", 1e-5f}}),
           {RandomFloats({2, 7, 192}, 1, 5, 9), RandomFloats({192}, 2), RandomFloats({192}, 3)}),
      "layernorm with statistics outputs, a large mean", 2e-5, 1.0);
  ExpectClose(Case(MakeNode("n", "LayerNormalization", {"x", "s"}, {"y"}, {{"axis", int64_t{1}}}),
                   {RandomFloats({3, 4, 5}, 4), RandomFloats({1, 5}, 5)}, {1}),
              "layernorm over two dims, scale broadcast from a constant", 2e-5, 1.0);
  ExpectClose(
      Case(MakeNode("n", "GroupNormalization", {"x", "s", "b"}, {"y"},
                    {{"num_groups", int64_t{2}}, {"epsilon", 1e-3f}}),
           {RandomFloats({2, 6, 3, 3}, 6), RandomFloats({6}, 7), RandomFloats({6}, 8)}, {}, 21),
      "groupnorm, opset 21: per-channel scale", 2e-5, 1.0);
  ExpectClose(Case(MakeNode("n", "InstanceNormalization", {"x", "s", "b"}, {"y"}),
                   {RandomFloats({2, 3, 17, 19}, 9), RandomFloats({3}, 10), RandomFloats({3}, 11)}),
              "instance norm, 323 elements per row", 2e-5, 1.0);
}

TEST_F(CudaLoweringTest, ReductionsAndArgReductions) {
  ExpectClose(Case(MakeNode("r", "ReduceMean", {"x", "a"}, {"y"}, {{"keepdims", int64_t{1}}}),
                   {RandomFloats({2, 16, 7, 7}, 1), Int64s({2}, {2, 3})}, {1}, 18),
              "mean over H and W");
  ExpectClose(Case(MakeNode("r", "ReduceSum", {"x", "a"}, {"y"}, {{"keepdims", int64_t{0}}}),
                   {RandomFloats({3, 4, 5}, 2), Int64s({2}, {0, 2})}, {1}, 13),
              "sum over separated axes");
  ExpectClose(Case(MakeNode("r", "ReduceMax", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{1}}}),
                   {RandomFloats({4, 300, 3}, 3)}, {}, 13),
              "max over a strided axis longer than a block");
  ExpectClose(
      Case(MakeNode("r", "ReduceLogSumExp", {"x"}, {"y"}, {{"axes", std::vector<int64_t>{-1}}}),
           {RandomFloats({5, 40}, 4, -30, 30)}, {}, 13),
      "log-sum-exp");
  ExpectClose(Case(MakeNode("r", "ReduceL2", {"x"}, {"y"}), {RandomFloats({3, 4}, 5)}, {}, 13),
              "L2 over everything");
  ExpectExact(Case(MakeNode("a", "ArgMax", {"x"}, {"y"}, {{"axis", int64_t{1}}}),
                   {RandomFloats({3, 50, 2}, 6)}),
              "argmax");
  ExpectExact(Case(MakeNode("a", "ArgMin", {"x"}, {"y"},
                            {{"axis", int64_t{0}}, {"select_last_index", int64_t{1}}}),
                   {Tensor::FromFloats({3, 2}, std::vector<float>{1, 0, 1, 5, -2, 0})}),
              "argmin, last index of a tie");
}

TEST_F(CudaLoweringTest, RefusesWhatItDoesNotGenerate) {
  graph::Graph g;
  g.inputs = {{"x", {DType::kFloat32, {2, 3}}}};
  g.nodes = {MakeNode("t", "TopK", {"x", "k"}, {"v", "i"})};
  auto topk = LowerNodeCuda(g, g.nodes[0], target_, true);
  EXPECT_EQ(topk.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(topk.status().message(), HasSubstr("no generated CUDA kernel for TopK"));
  EXPECT_EQ(LowerNodeCuda(g, g.nodes[0], HostCpuTarget(), true).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A malformed node gets shape inference's error.
  graph::Graph bad;
  bad.inputs = {{"x", {DType::kFloat32, {2, 3}}}};
  bad.nodes = {MakeNode("t", "Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{0, 0}}})};
  EXPECT_EQ(LowerNodeCuda(bad, bad.nodes[0], target_, true).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The elementwise kernel: a program over operands broadcast by strides, in several dtypes.
TEST_F(CudaLoweringTest, ElementwiseProgramsOverBroadcastOperands) {
  // y = where(mask == 0, -inf, x * 0.125 + bias), mask int64 [1, 1, 6] broadcast over [2, 3, 6];
  // and z = (float)gelu_erf(y > 0 ? y : 0) as a second output.
  ElementwiseProgram p;
  const int32_t x = p.AddInput(DType::kFloat32);
  const int32_t bias = p.AddInput(DType::kFloat32);
  const int32_t mask = p.AddInput(DType::kInt64);
  auto op = [&](EwOp o, DType t, int32_t a, int32_t b = -1, int32_t c = -1) {
    EwInstr i;
    i.op = o;
    i.dtype = t;
    i.a = a;
    i.b = b;
    i.c = c;
    return p.Add(i);
  };
  const int32_t scaled =
      op(EwOp::kAdd, DType::kFloat32,
         op(EwOp::kMul, DType::kFloat32, x, p.Const(DType::kFloat32, 0.125)), bias);
  const int32_t off = op(EwOp::kEqual, DType::kBool, mask, p.Const(DType::kInt64, 0));
  const int32_t y =
      op(EwOp::kWhere, DType::kFloat32, off, p.Const(DType::kFloat32, -INFINITY), scaled);
  const int32_t z = op(EwOp::kGeluErf, DType::kFloat32, op(EwOp::kRelu, DType::kFloat32, y));
  p.AddOutput(y, DType::kFloat32);
  p.AddOutput(z, DType::kFloat32);
  auto spec = BroadcastSpec(p, {{2, 3, 6}, {3, 1}, {1, 1, 6}}, {2, 3, 6});
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto src = EmitCudaElementwise(*spec, /*host_emulation=*/true);
  ASSERT_TRUE(src.ok()) << src.status();
  auto k = LocalKernel::Compile(*src, dir_.path());
  ASSERT_TRUE(k.ok()) << k.status();
  Tensor xs = RandomFloats({2, 3, 6}, 1), bs = RandomFloats({3, 1}, 2);
  Tensor ms = Int64s({1, 1, 6}, {1, 1, 0, 1, 0, 1});
  Tensor ys(DType::kFloat32, {2, 3, 6}), zs(DType::kFloat32, {2, 3, 6});
  std::vector<void*> args = {xs.raw_data(), bs.raw_data(), ms.raw_data(), ys.raw_data(),
                             zs.raw_data()};
  (*k)->fn()(args.data(), nullptr);
  for (int64_t i = 0; i < 36; ++i) {
    const int64_t row = (i / 6) % 3, col = i % 6;
    const float want = ms.data<int64_t>()[col] == 0
                           ? -INFINITY
                           : xs.data<float>()[i] * 0.125f + bs.data<float>()[row];
    EXPECT_FLOAT_EQ(ys.data<float>()[i], want) << i;
    const double r = std::max<double>(want, 0.0);
    EXPECT_NEAR(zs.data<float>()[i], 0.5 * r * (1 + std::erf(r / std::sqrt(2.0))), 1e-6) << i;
  }
  // A malformed spec is refused.
  ElementwiseSpec broken = *spec;
  broken.strides.pop_back();
  EXPECT_EQ(EmitCudaElementwise(broken, true).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::ops
