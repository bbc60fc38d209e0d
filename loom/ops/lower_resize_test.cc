// Tests of the lowered Resize (lower_resize.cc): known answers for nearest and linear, and random
// inputs against a plain N-linear / nearest evaluation of ONNX's formulas in double precision,
// across coordinate transformations, nearest modes, scales and sizes, up- and down-sampling;
// 1, 2 and 3 threads bit-identical; the refusals.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/kernels/reference.h"
#include "loom/ops/lowering.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testutil::NodeCase;

NodeCase ResizeCase(const Tensor& x, const Shape& out, std::vector<float> scales,
                    const std::string& mode, const std::string& coord,
                    const std::string& nearest = "round_prefer_floor") {
  NodeCase c;
  c.node.name = "rs";
  c.node.op_type = "Resize";
  c.node.outputs = {"y"};
  c.node.attrs["mode"] = mode;
  c.node.attrs["coordinate_transformation_mode"] = coord;
  c.node.attrs["nearest_mode"] = nearest;
  c.opset = 13;
  c.inputs = {x, Tensor()};
  c.node.inputs = {"x", ""};
  if (!scales.empty()) {
    c.node.inputs.push_back("scales");
    c.inputs.push_back(Tensor::FromFloats({static_cast<int64_t>(scales.size())}, scales));
  } else {
    std::vector<int64_t> sizes(out.begin(), out.end());
    c.node.inputs.insert(c.node.inputs.end(), {"", "sizes"});
    c.inputs.push_back(Tensor());
    c.inputs.push_back(testutil::Int64s({static_cast<int64_t>(sizes.size())}, sizes));
  }
  for (size_t i = 2; i < c.inputs.size(); ++i) {
    if (c.inputs[i].defined()) c.constants.insert(i);
  }
  c.output_types = {{x.dtype(), out}};
  return c;
}

// Runs the case (1, 2, 3 threads, bit-identical) and, where Resize has a reference kernel,
// expects it within 1e-6 of the reference (exact for nearest).
std::vector<float> RunResize(const NodeCase& c, const std::string& dir) {
  const bool with_reference = kernels::HasReferenceKernel("Resize");
  auto run = testutil::RunCase(c, HostCpuTarget(), dir, with_reference);
  EXPECT_TRUE(run.ok()) << run.status();
  if (!run.ok()) return {};
  for (size_t t = 1; t < 3; ++t) {
    EXPECT_TRUE(testutil::SameBits(run->by_threads[t][0], run->by_threads[0][0]));
  }
  if (with_reference) {
    if (c.node.GetString("mode", "nearest") == "nearest") {
      EXPECT_TRUE(testutil::SameBits(run->by_threads[0][0], run->reference[0]));
    } else {
      EXPECT_LE(testutil::MaxRelError(run->by_threads[0][0], run->reference[0], 3.0), 1e-6);
    }
  }
  const auto v = run->by_threads[0][0].values<float>();
  return {v.begin(), v.end()};
}

TEST(LowerResizeTest, KnownAnswers) {
  testutil::TempDir dir;
  const Tensor x = Tensor::FromFloats({1, 1, 2, 2}, std::vector<float>{1, 2, 3, 4});
  // Nearest, asymmetric, x2: every pixel repeated.
  EXPECT_THAT(
      RunResize(ResizeCase(x, {1, 1, 4, 4}, {1, 1, 2, 2}, "nearest", "asymmetric"), dir.path()),
      ElementsAre(1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4));
  // Linear, align_corners, 2 -> 3: the midpoints.
  EXPECT_THAT(RunResize(ResizeCase(x, {1, 1, 3, 3}, {}, "linear", "align_corners"), dir.path()),
              ElementsAre(1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4));
  // Linear, half_pixel, x2 (ONNX's resize_upsample_scales_linear case).
  EXPECT_THAT(
      RunResize(ResizeCase(x, {1, 1, 4, 4}, {1, 1, 2, 2}, "linear", "half_pixel"), dir.path()),
      ElementsAre(1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4));
}

double Coordinate(const std::string& mode, double o, double scale, int64_t in, int64_t out) {
  if (mode == "align_corners") return out == 1 ? 0 : o * (in - 1) / static_cast<double>(out - 1);
  if (mode == "asymmetric") return o / scale;
  if (mode == "pytorch_half_pixel") return out > 1 ? (o + 0.5) / scale - 0.5 : 0;
  return (o + 0.5) / scale - 0.5;
}

// ONNX's Resize for one output element, recursively over the dims.
double Oracle(const Tensor& x, const Shape& out, const std::vector<double>& scale,
              const std::vector<int64_t>& o, const std::string& mode, const std::string& coord,
              const std::string& nearest, size_t d, int64_t offset) {
  if (d == out.size()) return x.data<float>()[offset];
  int64_t stride = 1;
  for (size_t k = d + 1; k < out.size(); ++k) stride *= x.dim(static_cast<int64_t>(k));
  const int64_t in = x.dim(static_cast<int64_t>(d));
  const double c = Coordinate(coord, static_cast<double>(o[d]), scale[d], in, out[d]);
  if (mode == "nearest") {
    double r;
    if (nearest == "floor") {
      r = std::floor(c);
    } else if (nearest == "ceil") {
      r = std::ceil(c);
    } else if (c - std::floor(c) == 0.5) {
      r = nearest == "round_prefer_ceil" ? std::ceil(c) : std::floor(c);
    } else {
      r = std::round(c);
    }
    const int64_t i = std::clamp<int64_t>(static_cast<int64_t>(r), 0, in - 1);
    return Oracle(x, out, scale, o, mode, coord, nearest, d + 1, offset + i * stride);
  }
  const double cc = std::clamp(c, 0.0, static_cast<double>(in - 1));
  const int64_t lo = static_cast<int64_t>(std::floor(cc));
  const int64_t hi = std::min<int64_t>(lo + 1, in - 1);
  const double w = cc - lo;
  return (1 - w) * Oracle(x, out, scale, o, mode, coord, nearest, d + 1, offset + lo * stride) +
         w * Oracle(x, out, scale, o, mode, coord, nearest, d + 1, offset + hi * stride);
}

TEST(LowerResizeTest, MatchesONNXFormulasAcrossModes) {
  testutil::TempDir dir;
  struct C {
    Shape in, out;
    bool use_scales;
    std::string mode, coord, nearest;
  };
  const std::vector<C> cases = {
      {{1, 3, 5, 7}, {1, 3, 10, 14}, true, "nearest", "asymmetric", "floor"},
      {{1, 3, 5, 7}, {1, 3, 10, 14}, true, "nearest", "half_pixel", "round_prefer_ceil"},
      {{2, 2, 8, 9}, {2, 2, 3, 4}, false, "nearest", "align_corners", "round_prefer_floor"},
      {{1, 2, 6, 6}, {1, 2, 9, 15}, false, "nearest", "pytorch_half_pixel", "ceil"},
      {{1, 3, 5, 7}, {1, 3, 10, 14}, true, "linear", "half_pixel", ""},
      {{1, 3, 5, 7}, {1, 3, 11, 3}, false, "linear", "align_corners", ""},
      {{2, 4, 9}, {2, 4, 4}, false, "linear", "pytorch_half_pixel", ""},
      {{1, 1, 6, 5}, {1, 1, 1, 5}, false, "linear", "asymmetric", ""},
      {{3, 4, 5, 6}, {6, 8, 10, 6}, false, "linear", "half_pixel", ""},  // three outer dims
  };
  uint64_t seed = 1;
  for (const C& cfg : cases) {
    SCOPED_TRACE(absl::StrCat(cfg.mode, " ", cfg.coord, " ", cfg.nearest, " ",
                              graph::ShapeToString(cfg.in), " -> ", graph::ShapeToString(cfg.out)));
    const Tensor x = testutil::RandomFloats(cfg.in, seed++);
    std::vector<float> scales;
    std::vector<double> scale;
    for (size_t d = 0; d < cfg.in.size(); ++d) {
      scale.push_back(static_cast<double>(cfg.out[d]) / static_cast<double>(cfg.in[d]));
      scales.push_back(static_cast<float>(scale.back()));
    }
    NodeCase c = ResizeCase(x, cfg.out, cfg.use_scales ? scales : std::vector<float>{}, cfg.mode,
                            cfg.coord, cfg.nearest.empty() ? "round_prefer_floor" : cfg.nearest);
    const std::vector<float> got = RunResize(c, dir.path());
    ASSERT_EQ(static_cast<int64_t>(got.size()), graph::NumElements(cfg.out));
    std::vector<int64_t> o(cfg.out.size(), 0);
    for (size_t e = 0; e < got.size(); ++e) {
      int64_t r = static_cast<int64_t>(e);
      for (size_t k = cfg.out.size(); k-- > 0;) {
        o[k] = r % cfg.out[k];
        r /= cfg.out[k];
      }
      const double want = Oracle(x, cfg.out, scale, o, cfg.mode, cfg.coord,
                                 cfg.nearest.empty() ? "round_prefer_floor" : cfg.nearest, 0, 0);
      ASSERT_NEAR(got[e], want, 1e-6 * (std::fabs(want) + 3)) << "element " << e;
    }
  }
}

TEST(LowerResizeTest, NearestMovesAnyDtype) {
  testutil::TempDir dir;
  const Tensor x = testutil::Iota(DType::kInt64, {1, 2, 3}, 4);
  NodeCase c = ResizeCase(x, {1, 4, 6}, {1, 2, 2}, "nearest", "asymmetric");
  auto run = testutil::RunCase(c, HostCpuTarget(), dir.path(), /*with_reference=*/false);
  ASSERT_TRUE(run.ok()) << run.status();
  const Tensor& y = run->by_threads[0][0];
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 6; ++j) {
      EXPECT_EQ(y.data<int64_t>()[i * 6 + j], x.data<int64_t>()[(i / 2) * 3 + j / 2]);
    }
  }
}

TEST(LowerResizeTest, RefusesWhatItDoesNotGenerateNamingIt) {
  const Tensor x(DType::kFloat32, {1, 1, 2, 2});
  NodeCase c = ResizeCase(x, {1, 1, 4, 4}, {1, 1, 2, 2}, "cubic", "half_pixel");
  auto k = testutil::LowerCase(c, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("mode 'cubic'"));
  c = ResizeCase(x, {1, 1, 4, 4}, {1, 1, 2, 2}, "linear", "tf_crop_and_resize");
  c.node.inputs[1] = "roi";
  c.inputs[1] = Tensor::FromFloats({8}, std::vector<float>{0, 0, 0, 0, 1, 1, 1, 1});
  c.constants.insert(1);
  k = testutil::LowerCase(c, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(k.status().message(),
              HasSubstr("coordinate_transformation_mode 'tf_crop_and_resize'"));
  c = ResizeCase(x, {1, 1, 1, 1}, {1, 1, 0.5f, 0.5f}, "linear", "half_pixel");
  c.node.attrs["antialias"] = int64_t{1};
  k = testutil::LowerCase(c, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("antialias"));
}

}  // namespace
}  // namespace loom::ops
