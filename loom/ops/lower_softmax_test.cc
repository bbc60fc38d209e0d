// Differential tests of the lowered Softmax and LogSoftmax (lower_softmax.cc): rows and strided
// columns, both opset semantics, odd, size-1 and empty shapes, results bit-identical on 1, 2 and 3
// threads and within 1e-6 relative of the reference kernel (LogSoftmax, which has no reference
// kernel yet, against a double-precision loop).
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/ops/lower_common.h"
#include "loom/ops/lowering.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using ::testing::HasSubstr;
using testutil::NodeCase;

NodeCase SoftmaxCase(const std::string& op, const Shape& shape, int64_t opset,
                     std::optional<int64_t> axis, uint64_t seed, float range = 8) {
  NodeCase c;
  c.node.name = "sm";
  c.node.op_type = op;
  c.node.inputs = {"x"};
  c.node.outputs = {"y"};
  if (axis.has_value()) c.node.attrs["axis"] = *axis;
  c.opset = opset;
  c.inputs = {testutil::RandomFloats(shape, seed, -range, range)};
  return c;
}

struct Geometry {
  Shape shape;
  int64_t opset;
  std::optional<int64_t> axis;
};

const std::vector<Geometry> kGeometries = {
    {{12, 128, 128}, 13, std::nullopt},  // attention scores: rows
    {{4, 1000}, 13, -1},
    {{3, 7}, 13, 1},
    {{2, 3, 5}, 13, 1},     // columns (inner 5)
    {{2, 10, 100}, 13, 1},  // columns over two blocks
    {{2, 3, 4, 5}, 11, 1},  // opset 11: coerced to [2, 60]
    {{2, 3, 4, 5}, 11, std::nullopt},
    {{6, 5}, 11, 0},  // one row of 30
    {{1}, 13, 0},
    {{5, 1}, 13, -1},  // rows of one
    {{0, 5}, 13, -1},  // empty
};

// (Log-)softmax in double precision over the coerced [outer, n, inner] geometry of `node`.
Tensor InDouble(const graph::Node& node, int64_t opset, const Tensor& x, bool log) {
  const int64_t rank = x.rank();
  auto spec = graph::ResolveSoftmax(node, opset, rank);
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto [outer, n, inner] = lower::SplitAtAxis(x.shape(), spec->axis);
  if (spec->coerce_2d) {
    n *= inner;
    inner = 1;
  }
  Tensor y(DType::kFloat32, x.shape());
  const float* px = x.data<float>();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + i; };
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(px[at(j)]));
      for (int64_t j = 0; j < n; ++j) s += std::exp(px[at(j)] - m);
      for (int64_t j = 0; j < n; ++j) {
        // x - max rounded to float as every float32 softmax rounds it (the exponent's error
        // |x - max| * 2^-24 is the input's, not the kernel's).
        const float d = px[at(j)] - static_cast<float>(m);
        y.data<float>()[at(j)] = static_cast<float>(log ? px[at(j)] - m - std::log(s)
                                                        : std::exp(static_cast<double>(d)) / s);
      }
    }
  }
  return y;
}

TEST(LowerSoftmaxTest, MatchesReferenceWithinOneMillionth) {
  testutil::TempDir dir;
  uint64_t seed = 1;
  for (const Geometry& g : kGeometries) {
    for (float range : {8.0f, 80.0f}) {
      const NodeCase c = SoftmaxCase("Softmax", g.shape, g.opset, g.axis, seed++, range);
      SCOPED_TRACE(absl::StrCat(graph::ShapeToString(g.shape), " opset ", g.opset, " axis ",
                                g.axis.value_or(99), " range ", range));
      auto run = testutil::RunCase(c, HostCpuTarget(), dir.path());
      ASSERT_TRUE(run.ok()) << run.status();
      for (size_t t = 1; t < 3; ++t) {
        EXPECT_TRUE(testutil::SameBits(run->by_threads[t][0], run->by_threads[0][0])) << t + 1;
      }
      // Within 1e-6 of the exact result, and of the reference kernel up to the reference's own
      // rounding (its float sum over a row of n drifts by up to ~n ulps).
      const Tensor exact = InDouble(c.node, c.opset, c.inputs[0], false);
      const Tensor& got = run->by_threads[0][0];
      EXPECT_LE(testutil::MaxRelError(got, exact, 1e-30), 1e-6);
      EXPECT_LE(testutil::MaxRelError(got, run->reference[0], 1e-30),
                1e-6 + testutil::MaxRelError(run->reference[0], exact, 1e-30));
    }
  }
}

TEST(LowerSoftmaxTest, LogSoftmaxMatchesDoublePrecision) {
  testutil::TempDir dir;
  uint64_t seed = 100;
  for (const Geometry& g : kGeometries) {
    NodeCase c = SoftmaxCase("LogSoftmax", g.shape, g.opset, g.axis, seed++, 30);
    SCOPED_TRACE(absl::StrCat(graph::ShapeToString(g.shape), " opset ", g.opset));
    // The output type is the input's (set here: LogSoftmax may have no shape rule yet).
    graph::Graph graph = testutil::CaseGraph(c);
    graph.value_types["x"] = graph.value_types["y"] = c.inputs[0].type();
    auto k = LowerNode(graph, graph.nodes[0], HostCpuTarget());
    ASSERT_TRUE(k.ok()) << k.status();
    auto lib = LocalKernel::Compile(k->source, dir.path(), "-O3");
    ASSERT_TRUE(lib.ok()) << lib.status();
    Tensor y(DType::kFloat32, g.shape);
    void* ptrs[] = {c.inputs[0].raw_data(), y.raw_data()};
    (*lib)->fn()(ptrs, nullptr);
    EXPECT_LE(testutil::MaxRelError(y, InDouble(c.node, c.opset, c.inputs[0], true), 1.0), 1e-6);
  }
}

// float16 softmax has no generated kernel yet: refused, naming the dtype (by shape inference
// while it takes only float32, else by the lowering as kUnimplemented, the reference fallback).
TEST(LowerSoftmaxTest, RefusesFloat16NamingIt) {
  NodeCase c = SoftmaxCase("Softmax", {2, 3}, 13, -1, 1);
  graph::Graph g = testutil::CaseGraph(c);
  g.value_types["x"] = g.value_types["y"] = {DType::kFloat16, {2, 3}};
  g.inputs[0].type = g.value_types["x"];
  auto k = LowerNode(g, g.nodes[0], HostCpuTarget());
  ASSERT_FALSE(k.ok());
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("float16"));
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("Softmax 'sm'"));
  if (k.status().code() != absl::StatusCode::kInvalidArgument) {
    EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(k.status().message()),
                HasSubstr("no generated kernel: input of dtype float16"));
  }
}

}  // namespace
}  // namespace loom::ops
