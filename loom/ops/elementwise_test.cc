// Differential tests of generated elementwise kernels (elementwise.h): every operator of the IR,
// over the dtypes it is generated for and several broadcast patterns, against the reference
// kernels (kernels::EvaluateNode), on 1, 2 and 3 threads (results bit-identical). Many operators
// share one kernel (one output each) so that the whole file compiles a few dozen kernels.
#include "loom/ops/elementwise.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/fork_join_pool.h"
#include "loom/base/rng.h"
#include "loom/kernels/reference.h"
#include "loom/ops/local_kernel.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Shape;
using graph::Tensor;
using ::testing::HasSubstr;

std::string WorkDir() {
  static const std::string* dir = [] {
    const char* b = std::getenv("LOOM_BUILD_DIR");
    auto* d = new std::string(absl::StrCat(
        b != nullptr ? b : std::filesystem::temp_directory_path().string(), "/elementwise_test"));
    std::filesystem::create_directories(*d);
    return d;
  }();
  return *dir;
}

void PoolFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  static_cast<base::ForkJoinPool*>(pool)->Run(n, fn, ctx);
}

// Random values of `dtype` in [lo, hi] (integers rounded; bool 0/1).
Tensor Random(DType dtype, const Shape& shape, double lo, double hi, uint64_t seed) {
  base::Rng rng(seed);
  Tensor t(dtype, shape);
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    const double v = rng.Uniform(lo, hi);
    switch (dtype) {
      case DType::kFloat32:
        t.data<float>()[i] = static_cast<float>(v);
        break;
      case DType::kFloat64:
        t.data<double>()[i] = v;
        break;
      case DType::kFloat16:
        t.data<uint16_t>()[i] = graph::FloatToHalf(static_cast<float>(v));
        break;
      case DType::kInt64:
        t.data<int64_t>()[i] = static_cast<int64_t>(std::round(v));
        break;
      case DType::kInt32:
        t.data<int32_t>()[i] = static_cast<int32_t>(std::round(v));
        break;
      case DType::kInt8:
        t.data<int8_t>()[i] = static_cast<int8_t>(std::round(v));
        break;
      case DType::kUint8:
        t.data<uint8_t>()[i] = static_cast<uint8_t>(std::round(std::fabs(v)));
        break;
      case DType::kBool:
        t.data<bool>()[i] = v > (lo + hi) / 2;
        break;
      default:
        ADD_FAILURE() << "no random values for " << graph::DTypeName(dtype);
    }
  }
  return t;
}

graph::Node MakeNode(const std::string& op, size_t inputs,
                     std::map<std::string, graph::AttrValue> attrs = {}) {
  graph::Node n;
  n.name = absl::StrCat("test_", op);
  n.op_type = op;
  for (size_t k = 0; k < inputs; ++k) n.inputs.push_back(absl::StrCat("in", k));
  n.outputs = {"out"};
  n.attrs = std::move(attrs);
  return n;
}

// Compiles `spec` and runs it on `inputs` with `threads` threads; outputs of `out_shape`.
std::vector<Tensor> RunSpec(const ElementwiseSpec& spec, const std::vector<Tensor>& inputs,
                            const Shape& out_shape, int threads) {
  static auto* cache = new std::map<std::string, std::unique_ptr<LocalKernel>>();
  absl::StatusOr<KernelSource> src = EmitElementwise(spec, HostCpuTarget());
  EXPECT_TRUE(src.ok()) << src.status();
  if (!src.ok()) return {};
  std::unique_ptr<LocalKernel>& k = (*cache)[src->code];
  if (k == nullptr) {
    auto compiled = LocalKernel::Compile(*src, WorkDir());
    EXPECT_TRUE(compiled.ok()) << compiled.status() << "\n" << src->code;
    if (!compiled.ok()) return {};
    k = *std::move(compiled);
  }
  std::vector<Tensor> outs;
  std::vector<void*> ptrs;
  for (const Tensor& t : inputs) ptrs.push_back(const_cast<void*>(t.raw_data()));
  for (DType t : spec.program.output_types) outs.emplace_back(t, out_shape);
  for (Tensor& t : outs) ptrs.push_back(t.raw_data());
  if (threads <= 1) {
    k->fn()(ptrs.data(), nullptr);
  } else {
    base::ForkJoinPool pool(threads);
    loom_parallel_t par{&PoolFor, &pool, threads};
    k->fn()(ptrs.data(), &par);
  }
  return outs;
}

double At(const Tensor& t, int64_t i) {
  if (t.dtype() == DType::kFloat16) return graph::HalfToFloat(t.data<uint16_t>()[i]);
  return t.DoubleAt(i);
}

// Exact for integers and bools; floats within 1e-5 relative (+1e-6; two float16 ulps for
// float16 storage). NaN must match NaN.
void ExpectMatches(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const bool exact = !graph::IsFloatingDType(want.dtype());
  const double rel = want.dtype() == DType::kFloat16 ? 2e-3 : 1e-5;
  int bad = 0;
  for (int64_t i = 0; i < want.num_elements() && bad < 3; ++i) {
    const double a = At(got, i), b = At(want, i);
    if (std::isnan(b) && std::isnan(a)) continue;
    if (std::isinf(b) && a == b) continue;
    const bool ok = exact ? a == b : std::fabs(a - b) <= rel * std::fabs(b) + 1e-6;
    if (!ok) {
      ++bad;
      ADD_FAILURE() << what << " element " << i << ": got " << a << ", reference " << b;
    }
  }
}

// One operator applied to the same operands, for the combined kernels below.
struct OpCase {
  std::string op;
  std::map<std::string, graph::AttrValue> attrs;
  std::vector<int> operands;  // indices into the test's inputs
  double literal = NAN;       // when set: the last operand is this scalar constant instead
};

// Builds one kernel computing every case of `cases` that AppendNode and the reference both
// accept, runs it on 1-3 threads and compares each output with the reference. Returns how many
// operators were checked.
int CheckCases(const std::vector<OpCase>& cases, const std::vector<Tensor>& inputs,
               const Shape& out_shape, const std::string& what) {
  ElementwiseProgram p;
  std::vector<int32_t> in_ids;
  for (const Tensor& t : inputs) in_ids.push_back(p.AddInput(t.dtype()));
  std::vector<Tensor> expected;
  std::vector<std::string> names;
  for (const OpCase& c : cases) {
    const bool lit = !std::isnan(c.literal);
    graph::Node node = MakeNode(c.op, c.operands.size() + (lit ? 1 : 0), c.attrs);
    std::vector<Tensor> ref_in;
    std::vector<int32_t> args;
    for (int k : c.operands) {
      ref_in.push_back(inputs[static_cast<size_t>(k)]);
      args.push_back(in_ids[static_cast<size_t>(k)]);
    }
    DType lit_type = ref_in.empty() ? DType::kFloat32 : ref_in[0].dtype();
    if (lit) {
      Tensor l(lit_type, {});
      if (lit_type == DType::kFloat32) l.data<float>()[0] = static_cast<float>(c.literal);
      if (lit_type == DType::kFloat64) l.data<double>()[0] = c.literal;
      if (lit_type == DType::kInt64) l.data<int64_t>()[0] = static_cast<int64_t>(c.literal);
      if (lit_type == DType::kInt32) l.data<int32_t>()[0] = static_cast<int32_t>(c.literal);
      ref_in.push_back(l);
    }
    absl::StatusOr<std::vector<Tensor>> ref = kernels::EvaluateNode(node, 17, ref_in);
    if (!ref.ok()) continue;  // the reference path does not take this operator/dtype (yet)
    ElementwiseProgram trial = p;
    if (lit) args.push_back(trial.Const(lit_type, c.literal));
    absl::StatusOr<int32_t> v = AppendNode(node, 17, args, (*ref)[0].dtype(), &trial);
    if (!v.ok()) {
      EXPECT_TRUE(absl::IsUnimplemented(v.status())) << v.status();
      continue;
    }
    p = trial;
    p.AddOutput(*v, (*ref)[0].dtype());
    expected.push_back((*ref)[0]);
    names.push_back(c.op);
  }
  if (expected.empty()) return 0;
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  absl::StatusOr<ElementwiseSpec> spec = BroadcastSpec(p, shapes, out_shape);
  EXPECT_TRUE(spec.ok()) << spec.status();
  if (!spec.ok()) return 0;
  const std::vector<Tensor> one = RunSpec(*spec, inputs, out_shape, 1);
  if (one.size() != expected.size()) return 0;
  for (size_t k = 0; k < one.size(); ++k) {
    ExpectMatches(one[k], expected[k], absl::StrCat(what, " ", names[k]));
  }
  for (int threads : {2, 3}) {
    const std::vector<Tensor> many = RunSpec(*spec, inputs, out_shape, threads);
    for (size_t k = 0; k < many.size(); ++k) {
      EXPECT_EQ(std::memcmp(many[k].raw_data(), one[k].raw_data(), one[k].num_bytes()), 0)
          << what << " " << names[k] << " differs on " << threads << " threads";
    }
  }
  return static_cast<int>(expected.size());
}

TEST(ElementwiseTest, UnaryOperatorsMatchTheReference) {
  // Inputs: any value, and a positive one (Log, Sqrt).
  const Shape shape = {3, 7, 1025};  // > 16K elements: several parallel tasks
  const std::vector<OpCase> any = {
      {"Neg", {}, {0}},
      {"Abs", {}, {0}},
      {"Sign", {}, {0}},
      {"Relu", {}, {0}},
      {"Ceil", {}, {0}},
      {"Floor", {}, {0}},
      {"Round", {}, {0}},
      {"Reciprocal", {}, {0}},
      {"Exp", {}, {0}},
      {"Sin", {}, {0}},
      {"Cos", {}, {0}},
      {"Tanh", {}, {0}},
      {"Erf", {}, {0}},
      {"Sigmoid", {}, {0}},
      {"Softplus", {}, {0}},
      {"Softsign", {}, {0}},
      {"HardSwish", {}, {0}},
      {"HardSigmoid", {{"alpha", 0.3f}, {"beta", 0.4f}}, {0}},
      {"LeakyRelu", {{"alpha", 0.2f}}, {0}},
      {"Elu", {{"alpha", 0.7f}}, {0}},
      {"Selu", {}, {0}},
      {"Gelu", {}, {0}},
      {"Gelu", {{"approximate", std::string("tanh")}}, {0}},
      {"IsNaN", {}, {0}},
      {"IsInf", {}, {0}},
      {"Log", {}, {1}},
      {"Sqrt", {}, {1}},
      {"Clip", {{"min", -0.5f}, {"max", 0.25f}}, {0}},
  };
  int checked = 0;
  for (DType t : {DType::kFloat32, DType::kFloat64, DType::kFloat16}) {
    const std::vector<Tensor> in = {Random(t, shape, -6, 6, 1), Random(t, shape, 0.01, 50, 2)};
    checked += CheckCases(any, in, shape, graph::DTypeName(t));
  }
  // Integer unary ops.
  for (DType t : {DType::kInt64, DType::kInt32, DType::kInt8}) {
    const std::vector<Tensor> in = {Random(t, shape, -100, 100, 3)};
    checked +=
        CheckCases({{"Neg", {}, {0}}, {"Abs", {}, {0}}, {"Sign", {}, {0}}, {"Relu", {}, {0}}}, in,
                   shape, graph::DTypeName(t));
  }
  // The reference covers at least today's activations (Relu, Sigmoid, Tanh, HardSwish, ...).
  EXPECT_GE(checked, 6);
}

TEST(ElementwiseTest, BinaryOperatorsBroadcastLikeTheReference) {
  struct Pattern {
    Shape a, b, out;
  };
  const std::vector<Pattern> patterns = {
      {{4, 5, 67}, {4, 5, 67}, {4, 5, 67}},        // same shape
      {{4, 5, 67}, {67}, {4, 5, 67}},              // a row broadcast
      {{4, 1, 67}, {1, 5, 1}, {4, 5, 67}},         // both broadcast
      {{4, 5, 67}, {}, {4, 5, 67}},                // a scalar tensor
      {{2, 3, 1, 1}, {2, 3, 9, 9}, {2, 3, 9, 9}},  // per (n, c): squeeze-excite
  };
  const std::vector<OpCase> float_ops = {
      {"Add", {}, {0, 1}},
      {"Sub", {}, {0, 1}},
      {"Mul", {}, {0, 1}},
      {"Div", {}, {0, 1}},
      {"Max", {}, {0, 1}},
      {"Min", {}, {0, 1}},
      {"Sum", {}, {0, 1}},
      {"Mean", {}, {0, 1}},
      {"PRelu", {}, {0, 1}},
      {"Pow", {}, {2, 1}},
      {"Mod", {{"fmod", int64_t{1}}}, {0, 1}},
      {"Equal", {}, {0, 1}},
      {"Less", {}, {0, 1}},
      {"LessOrEqual", {}, {0, 1}},
      {"Greater", {}, {0, 1}},
      {"GreaterOrEqual", {}, {0, 1}},
      {"Pow", {}, {3}, 2.0},
      {"Pow", {}, {3}, 3.0},
      {"Pow", {}, {4}, 0.5},
  };
  const std::vector<OpCase> int_ops = {
      {"Add", {}, {0, 1}},     {"Sub", {}, {0, 1}},
      {"Mul", {}, {0, 1}},     {"Max", {}, {0, 1}},
      {"Min", {}, {0, 1}},     {"Sum", {}, {0, 1}},
      {"Equal", {}, {0, 1}},   {"Less", {}, {0, 1}},
      {"Greater", {}, {0, 1}}, {"Div", {}, {2}, 3.0},
      {"Div", {}, {2}, -7.0},  {"Mod", {}, {2}, 3.0},
      {"Mod", {}, {2}, -4.0},  {"Mod", {{"fmod", int64_t{1}}}, {2}, -4.0},
  };
  int checked = 0;
  for (const Pattern& pt : patterns) {
    const std::string where =
        absl::StrCat(graph::ShapeToString(pt.a), " x ", graph::ShapeToString(pt.b));
    for (DType t : {DType::kFloat32, DType::kFloat64}) {
      // Operands 0 and 2 share a shape; 3 and 4 have the output's (the literal cases' operand;
      // 4 is positive, a Pow base).
      std::vector<Tensor> in = {Random(t, pt.a, -4, 4, 5), Random(t, pt.b, 0.25, 3, 6),
                                Random(t, pt.a, 0.1, 3, 7), Random(t, pt.out, -4, 4, 8),
                                Random(t, pt.out, 0.1, 3, 9)};
      checked += CheckCases(float_ops, in, pt.out, absl::StrCat(graph::DTypeName(t), " ", where));
    }
    for (DType t : {DType::kInt64, DType::kInt32}) {
      std::vector<Tensor> in = {Random(t, pt.a, -50, 50, 8), Random(t, pt.b, -50, 50, 9),
                                Random(t, pt.out, -50, 50, 10)};
      checked += CheckCases(int_ops, in, pt.out, absl::StrCat(graph::DTypeName(t), " ", where));
    }
  }
  EXPECT_GE(checked, 4 * static_cast<int>(patterns.size()));
}

TEST(ElementwiseTest, LogicWhereAndCastsMatchTheReference) {
  const Shape shape = {6, 33};
  {
    std::vector<Tensor> in = {
        Random(DType::kBool, shape, 0, 1, 11), Random(DType::kBool, {33}, 0, 1, 12),
        Random(DType::kFloat32, shape, -2, 2, 13), Random(DType::kFloat32, {6, 1}, -2, 2, 14)};
    CheckCases({{"And", {}, {0, 1}},
                {"Or", {}, {0, 1}},
                {"Xor", {}, {0, 1}},
                {"Not", {}, {0}},
                {"Equal", {}, {0, 1}},
                {"Where", {}, {0, 2, 3}}},
               in, shape, "logic");
  }
  // Casts from each source type to each target type.
  const std::vector<DType> types = {DType::kFloat32, DType::kFloat64, DType::kInt64,
                                    DType::kInt32,   DType::kInt8,    DType::kUint8,
                                    DType::kBool,    DType::kFloat16};
  int checked = 0;
  for (DType from : types) {
    if (from == DType::kFloat16) continue;  // checked against graph's conversions below
    std::vector<OpCase> casts;
    for (DType to : types) {
      casts.push_back({"Cast",
                       {{"to", static_cast<int64_t>([&] {
                           switch (to) {
                             case DType::kFloat32:
                               return 1;
                             case DType::kUint8:
                               return 2;
                             case DType::kInt8:
                               return 3;
                             case DType::kInt32:
                               return 6;
                             case DType::kInt64:
                               return 7;
                             case DType::kBool:
                               return 9;
                             case DType::kFloat16:
                               return 10;
                             case DType::kFloat64:
                               return 11;
                             default:
                               return 0;
                           }
                         }())}},
                       {0}});
    }
    const std::vector<Tensor> in = {Random(from, shape, -100, 100, 15)};
    checked += CheckCases(casts, in, shape, absl::StrCat("cast from ", graph::DTypeName(from)));
  }
  EXPECT_GE(checked, 8);
}

TEST(ElementwiseTest, HalfStorageRoundsLikeGraphConversions) {
  // float32 -> float16 -> float32 through a kernel, against graph::FloatToHalf / HalfToFloat,
  // over normal, subnormal, overflowing and special values.
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -2.5f,
                               65504.0f,
                               65520.0f,
                               1e6f,
                               -1e6f,
                               6.1e-5f,
                               6.0e-8f,
                               3.0e-8f,
                               1e-9f,
                               0.33333334f,
                               1.0009765625f,
                               1.00048828125f,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN()};
  base::Rng rng(31);
  for (int i = 0; i < 4000; ++i) {
    values.push_back(
        static_cast<float>(std::ldexp(rng.Uniform(-1, 1), static_cast<int>(rng.Uniform(-30, 20)))));
  }
  const Shape shape = {static_cast<int64_t>(values.size())};
  const Tensor x = Tensor::FromFloats(shape, values);
  ElementwiseProgram p;
  const int32_t v = p.AddInput(DType::kFloat32);
  p.AddOutput(v, DType::kFloat16);  // rounded when stored
  p.AddOutput(v, DType::kBFloat16);
  auto spec = BroadcastSpec(p, {shape}, shape);
  ASSERT_TRUE(spec.ok());
  const std::vector<Tensor> got = RunSpec(*spec, {x}, shape, 1);
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(got[0].data<uint16_t>()[i], graph::FloatToHalf(values[i])) << values[i];
    EXPECT_EQ(got[1].data<uint16_t>()[i], graph::FloatToBFloat16(values[i])) << values[i];
  }
  // And back: float16 storage is read as its float value.
  ElementwiseProgram q;
  const int32_t h = q.AddInput(DType::kFloat16);
  q.AddOutput(h, DType::kFloat32);
  auto back = BroadcastSpec(q, {shape}, shape);
  ASSERT_TRUE(back.ok());
  const std::vector<Tensor> wide = RunSpec(*back, {got[0]}, shape, 1);
  ASSERT_EQ(wide.size(), 1u);
  for (size_t i = 0; i < values.size(); ++i) {
    const float want = graph::HalfToFloat(got[0].data<uint16_t>()[i]);
    const float have = wide[0].data<float>()[i];
    EXPECT_TRUE(have == want || (std::isnan(have) && std::isnan(want))) << values[i];
  }
}

TEST(ElementwiseTest, ChainsFuseIntoOneKernel) {
  // SiLU then a per-channel scale and shift and a clip, over [N, C, H, W] with [C, 1, 1] operands:
  // one kernel, checked against the nodes run one by one.
  const Shape x_shape = {2, 5, 6, 7}, c_shape = {5, 1, 1};
  const Tensor x = Random(DType::kFloat32, x_shape, -3, 3, 21);
  const Tensor scale = Random(DType::kFloat32, c_shape, 0.5, 2, 22);
  const Tensor shift = Random(DType::kFloat32, c_shape, -1, 1, 23);
  ElementwiseProgram p;
  const int32_t vx = p.AddInput(DType::kFloat32), vs = p.AddInput(DType::kFloat32),
                vt = p.AddInput(DType::kFloat32);
  auto append = [&](const std::string& op, std::vector<int32_t> args,
                    std::map<std::string, graph::AttrValue> attrs = {}) {
    absl::StatusOr<int32_t> v =
        AppendNode(MakeNode(op, args.size(), std::move(attrs)), 17, args, DType::kFloat32, &p);
    EXPECT_TRUE(v.ok()) << v.status();
    return *v;
  };
  const int32_t sig = append("Sigmoid", {vx});
  const int32_t silu = append("Mul", {vx, sig});
  const int32_t scaled = append("Mul", {silu, vs});
  const int32_t shifted = append("Add", {scaled, vt});
  const int32_t lo = p.Const(DType::kFloat32, -0.5), hi = p.Const(DType::kFloat32, 2.0);
  const int32_t clipped = append("Clip", {shifted, lo, hi});
  p.AddOutput(clipped, DType::kFloat32);
  p.AddOutput(silu, DType::kFloat32);  // an intermediate used elsewhere: an extra output
  // Clip with constant bounds is one instruction, not max and min.
  EXPECT_EQ(p.instrs.back().op, EwOp::kClip);
  auto spec = BroadcastSpec(p, {x_shape, c_shape, c_shape}, x_shape);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dims, (Shape{2, 5, 42}));  // H and W merged; N and C kept (C is broadcast)
  const std::vector<Tensor> got = RunSpec(*spec, {x, scale, shift}, x_shape, 2);
  ASSERT_EQ(got.size(), 2u);
  // The reference, node by node.
  auto ref = [](const std::string& op, std::vector<Tensor> in) {
    auto r = kernels::EvaluateNode(MakeNode(op, in.size()), 17, in);
    EXPECT_TRUE(r.ok()) << r.status();
    return (*r)[0];
  };
  const Tensor r_silu = ref("Mul", {x, ref("Sigmoid", {x})});
  const Tensor r_out = ref("Clip", {ref("Add", {ref("Mul", {r_silu, scale}), shift}),
                                    Tensor::ScalarFloat(-0.5f), Tensor::ScalarFloat(2.0f)});
  ExpectMatches(got[0], r_out, "chain");
  ExpectMatches(got[1], r_silu, "chain's intermediate");
}

TEST(ElementwiseTest, VectorPrintAndIsVectorizable) {
  ElementwiseProgram p;
  const int32_t x = p.AddInput(DType::kFloat32);
  const int32_t m = p.Add(
      {.op = EwOp::kGreater, .dtype = DType::kBool, .a = x, .b = p.Const(DType::kFloat32, 0)});
  const int32_t w = p.Add({.op = EwOp::kWhere,
                           .dtype = DType::kFloat32,
                           .a = m,
                           .b = x,
                           .c = p.Const(DType::kFloat32, 1.5)});
  p.AddOutput(w, DType::kFloat32);
  EXPECT_TRUE(IsVectorizable(p));
  auto printed = PrintElementwise(p, {"acc"}, EwMode::kVector, "e");
  ASSERT_TRUE(printed.ok()) << printed.status();
  EXPECT_THAT(printed->lines.back(), HasSubstr("?"));
  EXPECT_THAT(printed->lines[1], HasSubstr("loom_bcast("));
  // A bool output or an int64 value is not vectorizable.
  ElementwiseProgram q = p;
  q.outputs = {m};
  q.output_types = {DType::kBool};
  EXPECT_FALSE(IsVectorizable(q));
  auto bad = PrintElementwise(q, {"acc"}, EwMode::kVector, "e");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  ElementwiseProgram r;
  r.AddOutput(r.AddInput(DType::kInt64), DType::kInt64);
  EXPECT_FALSE(IsVectorizable(r));
}

TEST(ElementwiseTest, Errors) {
  ElementwiseProgram p;
  const int32_t a = p.AddInput(DType::kInt64), b = p.AddInput(DType::kInt64);
  // An integer division by a value known only at run time: the reference kernel reports zeros.
  auto div = AppendNode(MakeNode("Div", 2), 17, {a, b}, DType::kInt64, &p);
  EXPECT_EQ(div.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(div.status().message(), HasSubstr("integer division"));
  auto by_zero =
      AppendNode(MakeNode("Div", 2), 17, {a, p.Const(DType::kInt64, 0)}, DType::kInt64, &p);
  EXPECT_EQ(by_zero.status().code(), absl::StatusCode::kUnimplemented);
  // Transcendentals of integers are not generated.
  auto exp = AppendNode(MakeNode("Exp", 1), 17, {a}, DType::kInt64, &p);
  EXPECT_EQ(exp.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(exp.status().message(), HasSubstr("Exp of int64"));
  ElementwiseProgram f;
  const int32_t x = f.AddInput(DType::kFloat32);
  auto gelu = AppendNode(MakeNode("Gelu", 1, {{"approximate", std::string("cubic")}}), 20, {x},
                         DType::kFloat32, &f);
  EXPECT_EQ(gelu.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(gelu.status().message(), HasSubstr("approximate='cubic'"));
  auto arity = AppendNode(MakeNode("Add", 1), 17, {x}, DType::kFloat32, &f);
  EXPECT_EQ(arity.status().code(), absl::StatusCode::kInvalidArgument);
  auto not_ew = AppendNode(MakeNode("Conv", 1), 17, {x}, DType::kFloat32, &f);
  EXPECT_EQ(not_ew.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(IsElementwiseOp("Conv"));
  EXPECT_TRUE(IsElementwiseOp("Where"));
  // Shapes that do not broadcast.
  f.AddOutput(x, DType::kFloat32);
  auto spec = BroadcastSpec(f, {{3, 4}}, {3, 5});
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("does not broadcast"));
  // Empty tensors give a kernel that does nothing.
  auto empty = BroadcastSpec(f, {{0, 4}}, {0, 4});
  ASSERT_TRUE(empty.ok());
  auto src = EmitElementwise(*empty, HostCpuTarget());
  EXPECT_TRUE(src.ok()) << src.status();
  Target cuda;
  cuda.kind = "cuda";
  EXPECT_EQ(EmitElementwise(*empty, cuda).status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace loom::ops
