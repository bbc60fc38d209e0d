// Tests of the lowered reductions (lower_reduce.cc): every Reduce* operator over axis sets that
// make rows, columns and mixed groups (size-1, odd and empty dims, keepdims both ways), against a
// double-precision oracle within 1e-6 of the terms' magnitude (exact for max and min), and
// ReduceMean also against the reference kernel; ArgMax/ArgMin and CumSum against plain loops.
// Every case runs on 1, 2 and 3 threads, bit-identical.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
using graph::TensorType;
using ::testing::HasSubstr;
using testutil::NodeCase;

// The oracle: per output element, the terms of the reduction in double.
struct Oracle {
  Tensor value;      // float32, the output
  Tensor magnitude;  // float32, sum of |terms| (the scale of a sum's rounding)
};

Oracle Reduce(const std::string& op, const Tensor& x, const std::vector<bool>& reduced,
              const Shape& out_shape) {
  const int64_t rank = x.rank();
  Shape kept;
  for (int64_t d = 0; d < rank; ++d) kept.push_back(reduced[d] ? 1 : x.dim(d));
  const int64_t outputs = graph::NumElements(kept);
  std::vector<std::vector<double>> terms(static_cast<size_t>(outputs));
  std::vector<int64_t> idx(static_cast<size_t>(rank), 0);
  for (int64_t i = 0; i < x.num_elements(); ++i) {
    int64_t o = 0;
    for (int64_t d = 0; d < rank; ++d) o = o * kept[d] + (reduced[d] ? 0 : idx[d]);
    terms[static_cast<size_t>(o)].push_back(x.data<float>()[i]);
    for (int64_t d = rank; d-- > 0;) {
      if (++idx[d] < x.dim(d)) break;
      idx[d] = 0;
    }
  }
  Oracle r{Tensor(DType::kFloat32, out_shape), Tensor(DType::kFloat32, out_shape)};
  for (int64_t o = 0; o < outputs; ++o) {
    const std::vector<double>& t = terms[static_cast<size_t>(o)];
    double v = 0, mag = 0;
    if (op == "ReduceMax" || op == "ReduceMin") {
      v = op == "ReduceMax" ? -INFINITY : INFINITY;
      for (double e : t) v = op == "ReduceMax" ? std::max(v, e) : std::min(v, e);
    } else if (op == "ReduceProd") {
      v = 1;
      for (double e : t) v *= e;
      mag = std::fabs(v);
    } else if (op == "ReduceLogSumExp") {
      double m = -INFINITY, s = 0;
      for (double e : t) m = std::max(m, e);
      for (double e : t) s += std::exp(e - m);
      v = t.empty() ? -INFINITY : m + std::log(s);
      mag = std::fabs(m) + 1;
    } else {
      for (double e : t) {
        const double term = op == "ReduceL1"                                ? std::fabs(e)
                            : (op == "ReduceL2" || op == "ReduceSumSquare") ? e * e
                                                                            : e;
        v += term;
        mag += std::fabs(term);
      }
      if (op == "ReduceMean") {
        v /= static_cast<double>(t.size());
        mag /= static_cast<double>(t.size());
      }
      if (op == "ReduceL2") {
        v = std::sqrt(v);
        mag = std::sqrt(mag);
      }
    }
    r.value.data<float>()[o] = static_cast<float>(v);
    r.magnitude.data<float>()[o] = static_cast<float>(mag);
  }
  return r;
}

struct Config {
  Shape shape;
  std::vector<int64_t> axes;  // empty: all
  bool keepdims;
};

const std::vector<Config> kConfigs = {
    {{2, 3, 4, 5}, {1}, true},
    {{2, 3, 4, 5}, {3}, false},
    {{2, 3, 4, 5}, {0, 2}, true},
    {{2, 3, 4, 5}, {1, 3}, false},
    {{2, 3, 4, 5}, {}, false},
    {{2, 3, 4, 5}, {-1, -2}, true},
    {{7}, {}, true},
    {{4, 1000}, {1}, false},
    {{300, 3}, {0}, false},
    {{3, 1, 5}, {1}, true},
    {{2, 0, 3}, {1}, false},
    {{1, 197, 192}, {-1}, true},
};

const char* const kOps[] = {"ReduceSum", "ReduceMean",      "ReduceMax",
                            "ReduceMin", "ReduceProd",      "ReduceL1",
                            "ReduceL2",  "ReduceSumSquare", "ReduceLogSumExp"};

TEST(LowerReduceTest, EveryReductionMatchesTheOracleOnAnyAxes) {
  testutil::TempDir dir;
  uint64_t seed = 1;
  for (const char* op : kOps) {
    // Every geometry for two reductions (the loops are shared); for the others, a row, a column
    // and a mixed case.
    const bool all = std::string(op) == "ReduceSum" || std::string(op) == "ReduceMax";
    for (size_t ci = 0; ci < kConfigs.size(); ++ci) {
      if (!all && ci != 3 && ci != 8 && ci != 11) continue;
      const Config& cfg = kConfigs[ci];
      const int64_t rank = static_cast<int64_t>(cfg.shape.size());
      std::vector<bool> reduced(static_cast<size_t>(rank), cfg.axes.empty());
      for (int64_t a : cfg.axes) reduced[static_cast<size_t>(a < 0 ? a + rank : a)] = true;
      Shape out;
      for (int64_t d = 0; d < rank; ++d) {
        if (!reduced[d]) out.push_back(cfg.shape[d]);
        if (reduced[d] && cfg.keepdims) out.push_back(1);
      }
      NodeCase c;
      c.node.name = "r";
      c.node.op_type = op;
      c.node.outputs = {"y"};
      c.node.attrs["keepdims"] = int64_t{cfg.keepdims};
      c.opset = 18;  // axes as an input
      c.node.inputs = {"x"};
      c.inputs = {testutil::RandomFloats(cfg.shape, seed++,
                                         std::string(op) == "ReduceProd" ? 0.5f : -2.0f,
                                         std::string(op) == "ReduceProd" ? 1.5f : 2.0f)};
      if (!cfg.axes.empty()) {
        c.node.inputs.push_back("axes");
        c.inputs.push_back(testutil::Int64s({static_cast<int64_t>(cfg.axes.size())}, cfg.axes));
        c.constants = {1};
      }
      c.output_types = {{DType::kFloat32, out}};
      SCOPED_TRACE(absl::StrCat(op, " ", graph::ShapeToString(cfg.shape), " axes [",
                                absl::StrJoin(cfg.axes, ","), "] keepdims ", cfg.keepdims));
      const bool with_reference = std::string(op) == "ReduceMean" && !cfg.axes.empty();
      auto run = testutil::RunCase(c, HostCpuTarget(), dir.path(), with_reference);
      ASSERT_TRUE(run.ok()) << run.status();
      const Tensor& got = run->by_threads[0][0];
      ASSERT_EQ(got.shape(), out);
      for (size_t t = 1; t < 3; ++t) {
        EXPECT_TRUE(testutil::SameBits(run->by_threads[t][0], got)) << t + 1 << " threads";
      }
      const Oracle want = Reduce(op, c.inputs[0], reduced, out);
      for (int64_t i = 0; i < got.num_elements(); ++i) {
        const double g = got.data<float>()[i], v = want.value.data<float>()[i];
        const double tol = 1e-6 * (std::fabs(v) + want.magnitude.data<float>()[i]);
        if (std::isnan(v) || std::isinf(v)) {
          EXPECT_TRUE((std::isnan(g) && std::isnan(v)) || g == v) << i << ": " << g << " vs " << v;
        } else {
          ASSERT_LE(std::fabs(g - v), tol) << "element " << i << ": " << g << " vs " << v;
        }
      }
      if (with_reference) {
        const Tensor& ref = run->reference[0];
        for (int64_t i = 0; i < got.num_elements(); ++i) {
          const double g = got.data<float>()[i], v = ref.data<float>()[i];
          if (std::isnan(v)) {
            EXPECT_TRUE(std::isnan(g)) << "reference, element " << i;
            continue;
          }
          EXPECT_LE(std::fabs(g - v), 2e-6 * (std::fabs(v) + want.magnitude.data<float>()[i]))
              << "reference, element " << i;
        }
      }
    }
  }
}

TEST(LowerReduceTest, LogSumExpAndMaxHandleInfinitiesAndNaN) {
  testutil::TempDir dir;
  const float inf = std::numeric_limits<float>::infinity();
  NodeCase c;
  c.node.name = "r";
  c.node.op_type = "ReduceLogSumExp";
  c.node.inputs = {"x", "axes"};
  c.node.outputs = {"y"};
  c.node.attrs["keepdims"] = int64_t{0};
  c.opset = 18;
  c.inputs = {Tensor::FromFloats({4, 3}, std::vector<float>{-inf, -inf, -inf, 1, inf, 2, 1, NAN, 2,
                                                            1000, 1000, -5}),
              testutil::Int64s({1}, {1})};
  c.constants = {1};
  c.output_types = {{DType::kFloat32, {4}}};
  auto run = testutil::RunCase(c, HostCpuTarget(), dir.path(), false);
  ASSERT_TRUE(run.ok()) << run.status();
  const float* y = run->by_threads[0][0].data<float>();
  EXPECT_EQ(y[0], -inf);
  EXPECT_EQ(y[1], inf);
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_NEAR(y[3], 1000 + std::log(2.0), 1e-3);

  c.node.op_type = "ReduceMax";
  run = testutil::RunCase(c, HostCpuTarget(), dir.path(), false);
  ASSERT_TRUE(run.ok()) << run.status();
  y = run->by_threads[0][0].data<float>();
  EXPECT_EQ(y[0], -inf);
  EXPECT_EQ(y[1], inf);
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_EQ(y[3], 1000.0f);
}

TEST(LowerReduceTest, ReduceSumTakesItsAxesAsAnInputFromOpset13AndNoopWithEmptyAxes) {
  testutil::TempDir dir;
  NodeCase c;
  c.node.name = "r";
  c.node.op_type = "ReduceSum";
  c.node.inputs = {"x", "axes"};
  c.node.outputs = {"y"};
  c.node.attrs["keepdims"] = int64_t{0};
  c.opset = 13;
  c.inputs = {Tensor::FromFloats({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}),
              testutil::Int64s({1}, {0})};
  c.constants = {1};
  c.output_types = {{DType::kFloat32, {3}}};
  auto run = testutil::RunCase(c, HostCpuTarget(), dir.path(), false);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_THAT(run->by_threads[0][0].values<float>(), ::testing::ElementsAre(5, 7, 9));

  c.node.inputs = {"x"};
  c.inputs.resize(1);
  c.constants.clear();
  c.node.attrs["noop_with_empty_axes"] = int64_t{1};
  c.output_types = {{DType::kFloat32, {2, 3}}};
  run = testutil::RunCase(c, HostCpuTarget(), dir.path(), false);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_THAT(run->by_threads[0][0].values<float>(), ::testing::ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST(LowerReduceTest, ArgMaxAndArgMinPickTheFirstOrLastExtreme) {
  testutil::TempDir dir;
  // Ties on purpose: values from a small set.
  base::Rng rng(5);
  Tensor x(DType::kFloat32, {3, 7, 9});
  for (float& v : x.values<float>()) v = static_cast<float>(static_cast<int>(rng.Uniform(0, 4)));
  for (const char* op : {"ArgMax", "ArgMin"}) {
    for (int64_t axis : {0, -1}) {
      for (int64_t last : {0, 1}) {
        NodeCase c;
        c.node.name = "a";
        c.node.op_type = op;
        c.node.inputs = {"x"};
        c.node.outputs = {"y"};
        c.node.attrs["axis"] = axis;
        c.node.attrs["keepdims"] = int64_t{1};
        c.node.attrs["select_last_index"] = last;
        c.inputs = {x};
        const int64_t a = axis < 0 ? axis + 3 : axis;
        Shape out = x.shape();
        out[static_cast<size_t>(a)] = 1;
        c.output_types = {{DType::kInt64, out}};
        SCOPED_TRACE(absl::StrCat(op, " axis ", axis, " last ", last));
        auto run = testutil::RunCase(c, HostCpuTarget(), dir.path(), false);
        ASSERT_TRUE(run.ok()) << run.status();
        const Tensor& got = run->by_threads[0][0];
        for (size_t t = 1; t < 3; ++t) {
          EXPECT_TRUE(testutil::SameBits(run->by_threads[t][0], got));
        }
        const auto [outer, n, inner] = lower::SplitAtAxis(x.shape(), a);
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            int64_t best = 0;
            for (int64_t j = 1; j < n; ++j) {
              const float v = x.data<float>()[(o * n + j) * inner + i];
              const float b = x.data<float>()[(o * n + best) * inner + i];
              const bool better =
                  std::string(op) == "ArgMax" ? (last ? v >= b : v > b) : (last ? v <= b : v < b);
              if (better) best = j;
            }
            ASSERT_EQ(got.data<int64_t>()[o * inner + i], best) << o << "," << i;
          }
        }
      }
    }
  }
}

TEST(LowerReduceTest, CumSumMatchesARunningSum) {
  testutil::TempDir dir;
  for (DType dtype : {DType::kFloat32, DType::kInt64, DType::kInt32}) {
    for (int64_t axis : {0, 1, -1}) {
      for (int64_t exclusive : {0, 1}) {
        for (int64_t reverse : {0, 1}) {
          // Every flag combination for float32, one per axis for the integer types.
          if (dtype != DType::kFloat32 && exclusive != reverse) continue;
          Tensor x(dtype, {4, 5, 3});
          for (int64_t i = 0; i < x.num_elements(); ++i) {
            const int64_t v = (i * 37) % 11 - 5;
            if (dtype == DType::kFloat32) x.data<float>()[i] = static_cast<float>(v) * 0.25f;
            if (dtype == DType::kInt64) x.data<int64_t>()[i] = v;
            if (dtype == DType::kInt32) x.data<int32_t>()[i] = static_cast<int32_t>(v);
          }
          NodeCase c;
          c.node.name = "c";
          c.node.op_type = "CumSum";
          c.node.inputs = {"x", "axis"};
          c.node.outputs = {"y"};
          c.node.attrs["exclusive"] = exclusive;
          c.node.attrs["reverse"] = reverse;
          c.inputs = {x, testutil::Int64s({}, {axis})};
          c.constants = {1};
          c.output_types = {x.type()};
          SCOPED_TRACE(absl::StrCat(graph::DTypeName(dtype), " axis ", axis, " exclusive ",
                                    exclusive, " reverse ", reverse));
          auto run = testutil::RunCase(c, HostCpuTarget(), dir.path(), false);
          ASSERT_TRUE(run.ok()) << run.status();
          const Tensor& got = run->by_threads[0][0];
          const int64_t a = axis < 0 ? axis + 3 : axis;
          const auto [outer, n, inner] = lower::SplitAtAxis(x.shape(), a);
          for (int64_t o = 0; o < outer; ++o) {
            for (int64_t i = 0; i < inner; ++i) {
              double acc = 0;
              for (int64_t k = 0; k < n; ++k) {
                const int64_t j = reverse ? n - 1 - k : k;
                const int64_t at = (o * n + j) * inner + i;
                const double v = x.DoubleAt(at);
                if (!exclusive) acc += v;
                ASSERT_EQ(got.DoubleAt(at), acc) << at;
                if (exclusive) acc += v;
              }
            }
          }
        }
      }
    }
  }
}

TEST(LowerReduceTest, RefusesOtherDtypesAndNonConstantAxes) {
  NodeCase c;
  c.node.name = "r";
  c.node.op_type = "ReduceSum";
  c.node.inputs = {"x", "axes"};
  c.node.outputs = {"y"};
  c.opset = 18;
  c.inputs = {Tensor(DType::kInt64, {2, 3}), testutil::Int64s({1}, {0})};
  c.constants = {1};
  c.output_types = {{DType::kInt64, {1, 3}}};
  auto k = testutil::LowerCase(c, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("input of dtype int64"));

  c.inputs[0] = Tensor(DType::kFloat32, {2, 3});
  c.constants.clear();
  c.output_types = {{DType::kFloat32, {1, 3}}};
  k = testutil::LowerCase(c, HostCpuTarget());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(k.status().message()),
              HasSubstr("ReduceSum 'r': input 'axes' (axes) is not constant"));
}

}  // namespace
}  // namespace loom::ops
