// Tests of the lowered normalizations (lower_norm.cc) against a double-precision oracle (the
// reference kernels of these operators have not landed in kernels/ yet): LayerNormalization over
// several axes with full and broadcast Scale/B and the Mean/InvStdDev outputs, GroupNormalization
// under both opset semantics, InstanceNormalization; rows with a mean far larger than their spread;
// 1, 2 and 3 threads bit-identical.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/ops/lowering.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using ::testing::HasSubstr;
using testutil::NodeCase;

// Normalizes x viewed as [rows, n] in double; param(r, j) gives (scale, bias) of element j of row
// r. Also returns each row's mean and 1/sqrt(var + eps).
struct Normalized {
  Tensor y, mean, rstd;
};
template <typename Param>
Normalized NormalizeRows(const Tensor& x, int64_t rows, int64_t n, double eps, Param param) {
  Normalized out{Tensor(DType::kFloat32, x.shape()), Tensor(DType::kFloat32, {rows}),
                 Tensor(DType::kFloat32, {rows})};
  for (int64_t r = 0; r < rows; ++r) {
    const float* px = x.data<float>() + r * n;
    double mean = 0, var = 0;
    for (int64_t j = 0; j < n; ++j) mean += px[j];
    mean /= static_cast<double>(n);
    for (int64_t j = 0; j < n; ++j) var += (px[j] - mean) * (px[j] - mean);
    const double rstd = 1 / std::sqrt(var / static_cast<double>(n) + eps);
    for (int64_t j = 0; j < n; ++j) {
      const auto [s, b] = param(r, j);
      out.y.data<float>()[r * n + j] = static_cast<float>((px[j] - mean) * rstd * s + b);
    }
    out.mean.data<float>()[r] = static_cast<float>(mean);
    out.rstd.data<float>()[r] = static_cast<float>(rstd);
  }
  return out;
}

// |got - want| <= 1e-6 * (|want| + scale) + extra: outputs are O(scale); an output near zero is
// the difference of O(scale) terms. `extra`: what float32 inputs cost whatever the kernel does
// (x - mean for x ~ 1000 is only known to ulp(1000)).
void ExpectClose(const Tensor& got, const Tensor& want, double scale, double extra = 0) {
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    const double g = got.data<float>()[i], w = want.data<float>()[i];
    ASSERT_LE(std::fabs(g - w), 1e-6 * (std::fabs(w) + scale) + extra) << "element " << i;
  }
}

class LowerNormTest : public ::testing::Test {
 protected:
  absl::StatusOr<testutil::NodeRun> Run(const NodeCase& c) {
    auto run = testutil::RunCase(c, HostCpuTarget(), dir_.path(), /*with_reference=*/false);
    if (run.ok()) {
      for (size_t t = 1; t < 3; ++t) {
        for (size_t o = 0; o < run->by_threads[0].size(); ++o) {
          EXPECT_TRUE(testutil::SameBits(run->by_threads[t][o], run->by_threads[0][o]))
              << "output " << o << ", " << t + 1 << " threads";
        }
      }
    }
    return run;
  }
  testutil::TempDir dir_;
};

TEST_F(LowerNormTest, LayerNormalizationMatchesDoublePrecision) {
  struct C {
    Shape shape;
    int64_t axis;
    Shape param;  // Scale and B
    bool constant_params;
    float offset;  // added to x: a mean far from zero
  };
  uint64_t seed = 1;
  for (const C& cfg : std::vector<C>{{{128, 768}, -1, {768}, false, 0},
                                     {{2, 197, 192}, -1, {192}, true, 0},
                                     {{3, 4, 5}, 1, {4, 5}, false, 0},
                                     {{3, 4, 5}, 1, {1, 5}, true, 0},  // broadcast
                                     {{3, 4, 5}, 0, {5}, true, 0},
                                     {{5, 37}, -1, {37}, false, 1000},
                                     {{7, 1}, -1, {1}, false, 0},
                                     {{0, 8}, -1, {8}, false, 0}}) {
    SCOPED_TRACE(absl::StrCat(graph::ShapeToString(cfg.shape), " axis ", cfg.axis, " params ",
                              graph::ShapeToString(cfg.param)));
    const int64_t rank = static_cast<int64_t>(cfg.shape.size());
    const int64_t axis = cfg.axis < 0 ? cfg.axis + rank : cfg.axis;
    int64_t rows = 1, n = 1;
    Shape stat_shape;
    for (int64_t d = 0; d < rank; ++d) {
      (d < axis ? rows : n) *= cfg.shape[static_cast<size_t>(d)];
      stat_shape.push_back(d < axis ? cfg.shape[static_cast<size_t>(d)] : 1);
    }
    NodeCase c;
    c.node.name = "ln";
    c.node.op_type = "LayerNormalization";
    c.node.inputs = {"x", "scale", "bias"};
    c.node.outputs = {"y", "mean", "rstd"};
    c.node.attrs["axis"] = cfg.axis;
    c.node.attrs["epsilon"] = 1e-5f;
    Tensor x = testutil::RandomFloats(cfg.shape, seed++);
    for (float& v : x.values<float>()) v += cfg.offset;
    c.inputs = {x, testutil::RandomFloats(cfg.param, seed++, 0.5f, 1.5f),
                testutil::RandomFloats(cfg.param, seed++)};
    if (cfg.constant_params) c.constants = {1, 2};
    c.output_types = {x.type(), {DType::kFloat32, stat_shape}, {DType::kFloat32, stat_shape}};
    auto run = Run(c);
    ASSERT_TRUE(run.ok()) << run.status();
    const Tensor& scale = c.inputs[1];
    const Tensor& bias = c.inputs[2];
    const int64_t pn = scale.num_elements();
    // The parameters broadcast over the normalized dims; with a leading 1 as in [1, 5] they
    // repeat every pn elements.
    Normalized want = NormalizeRows(x, rows, n, 1e-5, [&](int64_t, int64_t j) {
      return std::pair<double, double>(scale.data<float>()[j % pn], bias.data<float>()[j % pn]);
    });
    ExpectClose(run->by_threads[0][0], want.y, 3, std::fabs(cfg.offset) * 0x1p-23);
    Tensor mean = *want.mean.Reshaped(stat_shape);
    Tensor rstd = *want.rstd.Reshaped(stat_shape);
    ExpectClose(run->by_threads[0][1], mean, std::fabs(cfg.offset) + 3);
    ExpectClose(run->by_threads[0][2], rstd, 0);
  }
}

TEST_F(LowerNormTest, LayerNormalizationWithoutBiasOrStatistics) {
  NodeCase c;
  c.node.name = "ln";
  c.node.op_type = "LayerNormalization";
  c.node.inputs = {"x", "scale"};
  c.node.outputs = {"y"};
  Tensor x = testutil::RandomFloats({4, 33}, 3);
  c.inputs = {x, testutil::RandomFloats({33}, 4)};
  c.output_types = {x.type()};
  auto run = Run(c);
  ASSERT_TRUE(run.ok()) << run.status();
  Normalized want = NormalizeRows(x, 4, 33, 1e-5, [&](int64_t, int64_t j) {
    return std::pair<double, double>(c.inputs[1].data<float>()[j], 0.0);
  });
  ExpectClose(run->by_threads[0][0], want.y, 3);
}

TEST_F(LowerNormTest, GroupAndInstanceNormalizationMatchDoublePrecision) {
  uint64_t seed = 50;
  struct C {
    std::string op;
    int64_t opset;
    Shape shape;
    int64_t groups;  // GroupNormalization only
  };
  for (const C& cfg : std::vector<C>{{"GroupNormalization", 18, {2, 6, 5, 7}, 3},
                                     {"GroupNormalization", 21, {2, 6, 5, 7}, 3},
                                     {"GroupNormalization", 21, {1, 32, 9}, 32},
                                     {"GroupNormalization", 18, {1, 4, 3}, 1},
                                     {"InstanceNormalization", 17, {2, 5, 6, 6}, 5},
                                     {"InstanceNormalization", 17, {1, 3, 1}, 3}}) {
    SCOPED_TRACE(absl::StrCat(cfg.op, " opset ", cfg.opset, " ", graph::ShapeToString(cfg.shape)));
    const int64_t ch = cfg.shape[1];
    const bool per_channel = cfg.op == "InstanceNormalization" || cfg.opset >= 21;
    const int64_t params = per_channel ? ch : cfg.groups;
    NodeCase c;
    c.node.name = "gn";
    c.node.op_type = cfg.op;
    c.node.inputs = {"x", "scale", "bias"};
    c.node.outputs = {"y"};
    c.node.attrs["epsilon"] = 1e-4f;
    if (cfg.op == "GroupNormalization") c.node.attrs["num_groups"] = cfg.groups;
    c.opset = cfg.opset;
    Tensor x = testutil::RandomFloats(cfg.shape, seed++);
    c.inputs = {x, testutil::RandomFloats({params}, seed++, 0.5f, 1.5f),
                testutil::RandomFloats({params}, seed++)};
    c.output_types = {x.type()};
    auto run = Run(c);
    ASSERT_TRUE(run.ok()) << run.status();
    const int64_t spatial = x.num_elements() / (cfg.shape[0] * ch);
    const int64_t cg = ch / cfg.groups;
    Normalized want =
        NormalizeRows(x, cfg.shape[0] * cfg.groups, cg * spatial, 1e-4, [&](int64_t r, int64_t j) {
          const int64_t g = r % cfg.groups;
          const int64_t p = per_channel ? g * cg + j / spatial : g;
          return std::pair<double, double>(c.inputs[1].data<float>()[p],
                                           c.inputs[2].data<float>()[p]);
        });
    ExpectClose(run->by_threads[0][0], want.y, 3);
  }
}

TEST_F(LowerNormTest, RefusesBadGroupsAndRuntimeBroadcastParameters) {
  NodeCase c;
  c.node.name = "gn";
  c.node.op_type = "GroupNormalization";
  c.node.inputs = {"x", "scale", "bias"};
  c.node.outputs = {"y"};
  c.node.attrs["num_groups"] = int64_t{4};
  c.opset = 18;
  c.inputs = {Tensor(DType::kFloat32, {1, 6, 2}), Tensor(DType::kFloat32, {4}),
              Tensor(DType::kFloat32, {4})};
  c.output_types = {c.inputs[0].type()};
  auto k = testutil::LowerCase(c, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(k.status().message()),
      HasSubstr("attribute 'num_groups' is 4; it must be positive and divide the 6 channels"));

  NodeCase ln;
  ln.node.name = "ln";
  ln.node.op_type = "LayerNormalization";
  ln.node.inputs = {"x", "scale"};
  ln.node.outputs = {"y"};
  ln.inputs = {Tensor(DType::kFloat32, {2, 3, 4}), Tensor(DType::kFloat32, {1, 4})};
  ln.node.attrs["axis"] = int64_t{1};
  ln.output_types = {ln.inputs[0].type()};
  k = testutil::LowerCase(ln, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("broadcast at run time"));
}

}  // namespace
}  // namespace loom::ops
