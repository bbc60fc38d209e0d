// Tests of the blocked-layout pooling kernels (EmitBlockedPool, lower_pool.cc) against the
// reference pooling kernels: MaxPool and AveragePool with odd sizes, pads, ceil_mode, strides 1
// to 3, dilations, count_include_pad, channel counts that are not a multiple of the block, block
// sizes 1 to 16, and the global pools; 1, 2 and 3 threads bit-identical; the refusals.
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/fork_join_pool.h"
#include "loom/graph/shape_inference.h"
#include "loom/kernels/reference.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/lowering.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using Kind = BlockedPoolSpec::Kind;
using ::testing::HasSubstr;

// NCHW -> [N, ceil(C / bn), H, W, bn], channels past C zero.
std::vector<float> ToBlocked(const Tensor& x, int64_t bn) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3), cb = (c + bn - 1) / bn;
  std::vector<float> out(static_cast<size_t>(n * cb * hw * bn), 0.0f);
  const float* v = x.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < hw; ++p)
        out[static_cast<size_t>(((i * cb + ch / bn) * hw + p) * bn + ch % bn)] =
            v[(i * c + ch) * hw + p];
  return out;
}

Tensor FromBlocked(const std::vector<float>& b, const Shape& shape, int64_t bn) {
  Tensor t(DType::kFloat32, shape);
  const int64_t n = shape[0], c = shape[1], hw = shape[2] * shape[3], cb = (c + bn - 1) / bn;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < hw; ++p)
        t.data<float>()[(i * c + ch) * hw + p] =
            b[static_cast<size_t>(((i * cb + ch / bn) * hw + p) * bn + ch % bn)];
  return t;
}

graph::Node PoolNode(const std::string& op, std::map<std::string, graph::AttrValue> attrs) {
  graph::Node node;
  node.name = "pool";
  node.op_type = op;
  node.inputs = {"x"};
  node.outputs = {"y"};
  node.attrs = std::move(attrs);
  return node;
}

// Runs `node` on a random input of `in` through the blocked kernel (block `bn`, 1 to 3 threads,
// bit-identical) and expects the reference kernel's result: exactly for max, within 1e-6
// relative for averages.
void CheckPool(const graph::Node& node, const Shape& in, int64_t bn, uint64_t seed) {
  SCOPED_TRACE(absl::StrCat(node.op_type, " in ", graph::ShapeToString(in), " bn ", bn));
  const Tensor x = testutil::RandomFloats(in, seed);
  auto want = kernels::EvaluateNode(node, 18, {x});
  ASSERT_TRUE(want.ok()) << want.status();
  const Shape out = (*want)[0].shape();
  Kind kind = Kind::kMax;
  if (node.op_type == "AveragePool") kind = Kind::kAverage;
  if (node.op_type == "GlobalAveragePool") kind = Kind::kGlobalAverage;
  if (node.op_type == "GlobalMaxPool") kind = Kind::kGlobalMax;
  auto resolved = ResolveBlockedPool(node, kind, in, out, bn);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  const BlockedPoolSpec spec = *resolved;
  auto src = EmitBlockedPool(spec, HostCpuTarget());
  ASSERT_TRUE(src.ok()) << src.status();
  testutil::TempDir dir;
  auto k = LocalKernel::Compile(*src, dir.path(), "-O3 -fno-math-errno");
  ASSERT_TRUE(k.ok()) << k.status();
  std::vector<float> xb = ToBlocked(x, bn);
  const size_t out_elems =
      static_cast<size_t>(out[0] * ((out[1] + bn - 1) / bn) * out[2] * out[3] * bn);
  std::vector<Tensor> by_threads;
  for (int threads = 1; threads <= 3; ++threads) {
    std::vector<float> yb(out_elems);
    std::memset(yb.data(), 0x5a, yb.size() * sizeof(float));  // poisoned: a missed write shows
    void* ptrs[] = {xb.data(), yb.data()};
    base::ForkJoinPool pool(threads);
    loom_parallel_t par{&testutil::PoolParallelFor, &pool, threads};
    (*k)->fn()(ptrs, threads == 1 ? nullptr : &par);
    by_threads.push_back(FromBlocked(yb, out, bn));
  }
  EXPECT_TRUE(testutil::SameBits(by_threads[1], by_threads[0]));
  EXPECT_TRUE(testutil::SameBits(by_threads[2], by_threads[0]));
  if (spec.kind == Kind::kMax || spec.kind == Kind::kGlobalMax) {
    EXPECT_TRUE(testutil::SameBits(by_threads[0], (*want)[0]));
  } else {
    EXPECT_LE(testutil::MaxRelError(by_threads[0], (*want)[0], 1.0), 1e-6);
  }
}

using Ints = std::vector<int64_t>;

TEST(LowerPoolTest, MaxPoolWindows) {
  int64_t seed = 1;
  // ResNet's stem (3x3 s2 p1), SqueezeNet's and GoogLeNet's ceil_mode pools, odd sizes.
  for (int64_t bn : {16, 8}) {
    CheckPool(PoolNode("MaxPool", {{"kernel_shape", Ints{3, 3}},
                                   {"strides", Ints{2, 2}},
                                   {"pads", Ints{1, 1, 1, 1}}}),
              {1, 20, 17, 15}, bn, ++seed);
    CheckPool(PoolNode("MaxPool", {{"kernel_shape", Ints{3, 3}},
                                   {"strides", Ints{2, 2}},
                                   {"ceil_mode", int64_t{1}}}),
              {2, 13, 18, 13}, bn, ++seed);
    CheckPool(PoolNode("MaxPool", {{"kernel_shape", Ints{3, 3}},
                                   {"strides", Ints{1, 1}},
                                   {"pads", Ints{1, 1, 1, 1}},
                                   {"ceil_mode", int64_t{1}}}),
              {1, 33, 9, 11}, bn, ++seed);
  }
  // Asymmetric windows, pads and strides; dilations; a block of one and of odd width.
  CheckPool(
      PoolNode("MaxPool",
               {{"kernel_shape", Ints{2, 4}}, {"strides", Ints{3, 1}}, {"pads", Ints{0, 2, 1, 1}}}),
      {1, 5, 10, 7}, 4, ++seed);
  CheckPool(PoolNode("MaxPool", {{"kernel_shape", Ints{3, 2}},
                                 {"dilations", Ints{2, 3}},
                                 {"pads", Ints{2, 1, 2, 1}},
                                 {"ceil_mode", int64_t{1}},
                                 {"strides", Ints{2, 2}}}),
            {1, 3, 12, 11}, 1, ++seed);
  CheckPool(PoolNode("MaxPool", {{"kernel_shape", Ints{5, 5}},
                                 {"auto_pad", std::string("SAME_UPPER")},
                                 {"strides", Ints{2, 2}}}),
            {1, 7, 6, 9}, 3, ++seed);
  // A window as large as the input: no interior column at all.
  CheckPool(PoolNode("MaxPool", {{"kernel_shape", Ints{4, 4}}, {"pads", Ints{1, 1, 1, 1}}}),
            {1, 16, 3, 3}, 16, ++seed);
}

TEST(LowerPoolTest, AveragePoolWindows) {
  int64_t seed = 100;
  for (int64_t include_pad : {0, 1}) {
    // Inception's 3x3 s1 p1, and ceil_mode windows that run past the padded input.
    CheckPool(PoolNode("AveragePool", {{"kernel_shape", Ints{3, 3}},
                                       {"strides", Ints{1, 1}},
                                       {"pads", Ints{1, 1, 1, 1}},
                                       {"count_include_pad", include_pad}}),
              {1, 19, 9, 10}, 16, ++seed);
    CheckPool(PoolNode("AveragePool", {{"kernel_shape", Ints{3, 3}},
                                       {"strides", Ints{2, 2}},
                                       {"pads", Ints{1, 0, 1, 0}},
                                       {"ceil_mode", int64_t{1}},
                                       {"count_include_pad", include_pad}}),
              {2, 9, 12, 10}, 8, ++seed);
    CheckPool(PoolNode("AveragePool", {{"kernel_shape", Ints{2, 3}},
                                       {"strides", Ints{2, 3}},
                                       {"dilations", Ints{2, 1}},
                                       {"pads", Ints{1, 2, 0, 1}},
                                       {"count_include_pad", include_pad}}),
              {1, 6, 11, 13}, 4, ++seed);
  }
  // DenseNet's transitions: 2x2 stride 2, no pads.
  CheckPool(PoolNode("AveragePool", {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}),
            {1, 24, 14, 14}, 16, ++seed);
}

TEST(LowerPoolTest, GlobalPools) {
  int64_t seed = 200;
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    CheckPool(PoolNode(op, {}), {2, 21, 7, 7}, 16, ++seed);   // 49 pixels: a 4-way tail of 1
    CheckPool(PoolNode(op, {}), {1, 40, 13, 11}, 8, ++seed);  // channels not in whole blocks
    CheckPool(PoolNode(op, {}), {1, 5, 1, 3}, 4, ++seed);     // fewer pixels than accumulators
  }
}

TEST(LowerPoolTest, RefusesGeometriesOutOfRange) {
  BlockedPoolSpec s;
  s.bn = 0;
  absl::Status st = EmitBlockedPool(s, HostCpuTarget()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("block size 0 out of [1, 64]"));
  s.bn = 16;
  s.kind = Kind::kMax;
  s.kw = 0;
  st = EmitBlockedPool(s, HostCpuTarget()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("kernel, stride or dilation 0 out of range"));
  s.kw = 1;
  s.pr = -1;
  st = EmitBlockedPool(s, HostCpuTarget()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("pad -1 out of range"));
  s.pr = 0;
  s.kind = Kind::kGlobalAverage;
  s.oh = 2;
  st = EmitBlockedPool(s, HostCpuTarget()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("a global pool has a 1x1 output"));
  // A window that does not give the output it is asked for.
  const graph::Node node = PoolNode("MaxPool", {{"kernel_shape", Ints{3, 3}}});
  auto resolved = ResolveBlockedPool(node, Kind::kMax, {1, 4, 8, 8}, {1, 4, 5, 6}, 16);
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(resolved.status().message(),
              HasSubstr("the window does not give the output [1,4,5,6]"));
}

}  // namespace
}  // namespace loom::ops
