// Accuracy and vectorization of codegen/vector_math.h as generated kernels use it: every function
// is compiled into a kernel by ops::LocalKernel (AVX-512 lanes, the generic target's SSE lanes and
// plain `float`) and swept over a dense grid of [-100, 100], every binade of the float range and
// the special values, against libm in double precision. A sample compiled with -O3 for AVX-512
// and for AVX2 must vectorize: zmm (ymm) instructions and no calls.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/codegen/cpp_printer.h"
#include "loom/codegen/vector_math.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/target.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double Softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double GeluErf(double x) {
  if (std::isinf(x)) return x > 0 ? x : -0.0;
  return x < 0 ? 0.5 * x * std::erfc(-x / std::sqrt(2.0))
               : 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}
// 0.5 x (1 + tanh(y)) written as x sigmoid(2y), which does not cancel for x < 0.
double GeluTanh(double x) {
  if (std::isinf(x)) return x > 0 ? x : -0.0;
  const double y = std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1 + std::exp(-2 * y));
}

struct MathFn {
  const char* name;  // the vector_math function
  double (*ref)(double);
  double rel_tol;
  double abs_tol;
};

constexpr float kTrueMin = std::numeric_limits<float>::denorm_min();

// The contract: 1e-6 relative; the GELUs may add 1e-7 absolute near zero. Subnormal results may
// be off by their last bit. erfc (not in the contract's list) is relative to 1e-6 down to ~4e-5,
// then its absolute error stays below 1e-10.
const MathFn kFns[] = {
    {"loom_exp", [](double x) { return std::exp(x); }, 1e-6, kTrueMin},
    {"loom_log", [](double x) { return std::log(x); }, 1e-6, kTrueMin},
    {"loom_log1p", [](double x) { return std::log1p(x); }, 1e-6, kTrueMin},
    {"loom_tanh", [](double x) { return std::tanh(x); }, 1e-6, kTrueMin},
    {"loom_erf", [](double x) { return std::erf(x); }, 1e-6, kTrueMin},
    {"loom_erfc", [](double x) { return std::erfc(x); }, 1e-6, 1e-10},
    {"loom_sigmoid", Sigmoid, 1e-6, kTrueMin},
    {"loom_softplus", Softplus, 1e-6, kTrueMin},
    {"loom_gelu_erf", GeluErf, 1e-6, 1e-7},
    {"loom_gelu_tanh", GeluTanh, 1e-6, 1e-7},
};
constexpr int kNumFns = sizeof(kFns) / sizeof(kFns[0]);

// A kernel: buffers[0] = n inputs, buffers[1] = kNumFns * n outputs, function f's at f * n.
KernelSource MathKernel(int lanes, int64_t n, const std::string& flags) {
  std::string code = codegen::CppPrelude(lanes) + codegen::VectorMathSource();
  absl::StrAppend(
      &code, "extern \"C\" void loom_kernel(void* const* buffers, const loom_parallel_t* par) {\n",
      "  const float* __restrict in = (const float*)buffers[0];\n",
      "  float* __restrict out = (float*)buffers[1];\n", "  for (int64_t i = 0; i < ", n,
      "; i += ", lanes, ") {\n", "    const vf x = loom_load(in + i);\n");
  for (int f = 0; f < kNumFns; ++f) {
    absl::StrAppend(&code, "    loom_store(out + ", f * n, " + i, ", kFns[f].name, "(x));\n");
  }
  absl::StrAppend(&code, "  }\n}\n");
  return KernelSource{.code = code, .compile_flags = flags};
}

std::vector<float> SweepInputs() {
  std::vector<float> xs;
  for (int64_t i = -100 * 4096; i <= 100 * 4096; ++i) xs.push_back(static_cast<float>(i) / 4096);
  // Every binade, both signs, 64 mantissas each (subnormals included).
  for (int e = -149; e < 128; ++e) {
    for (int m = 0; m < 64; ++m) {
      const float v = std::ldexp(1.0f + m / 64.0f, e);
      if (std::isfinite(v)) {
        xs.push_back(v);
        xs.push_back(-v);
      }
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  const float edges[] = {0.0f,      -0.0f,       inf,     -inf,       std::nanf(""), -std::nanf(""),
                         FLT_MAX,   -FLT_MAX,    FLT_MIN, -FLT_MIN,   kTrueMin,      -kTrueMin,
                         88.7228f,  88.7229f,    89.0f,   -87.3365f,  -87.34f,       -103.97f,
                         -103.98f,  -104.0f,     -200.0f, 200.0f,     9.0f,          9.1f,
                         3.92f,     3.93f,       -1.0f,   -0.999999f, 1e-30f,        -1e-30f,
                         0.921875f, 0.62499994f, 0.625f,  1e20f,      -1e20f,        -13.0f};
  xs.insert(xs.end(), std::begin(edges), std::end(edges));
  while (xs.size() % 16 != 0) xs.push_back(0.5f);
  return xs;
}

// Compiles the math kernel for `lanes` with `flags`, runs it on SweepInputs and checks every
// function against libm. Returns a summary line per function for the failure message.
void CheckAccuracy(int lanes, const std::string& flags) {
  testutil::TempDir dir;
  const std::vector<float> xs = SweepInputs();
  const int64_t n = static_cast<int64_t>(xs.size());
  auto kernel =
      LocalKernel::Compile(MathKernel(lanes, n, flags), dir.path(), "-O3 -fno-math-errno");
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  std::vector<float> out(static_cast<size_t>(n) * kNumFns, 0.0f);
  void* buffers[] = {const_cast<float*>(xs.data()), out.data()};
  (*kernel)->fn()(buffers, nullptr);

  for (int f = 0; f < kNumFns; ++f) {
    const MathFn& fn = kFns[f];
    int64_t failures = 0;
    std::string first;
    double worst_rel = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float x = xs[i];
      const float got = out[f * n + i];
      const double want = fn.ref(x);
      const float want_f = static_cast<float>(want);
      bool ok;
      if (std::isnan(want)) {
        ok = std::isnan(got);
      } else if (std::isinf(want_f)) {
        ok = got == want_f;
      } else if (want == 0) {
        // Exact zeros keep their sign (tanh(-0) = -0, the GELUs' -0 at -inf).
        ok = got == 0 && std::signbit(got) == std::signbit(want);
      } else {
        const double err = std::fabs(static_cast<double>(got) - want);
        ok = err <= fn.rel_tol * std::fabs(want) + fn.abs_tol;
        if (std::fabs(want) >= FLT_MIN) worst_rel = std::max(worst_rel, err / std::fabs(want));
      }
      if (!ok && failures++ == 0) {
        char buf[200];
        std::snprintf(buf, sizeof(buf), "%s(%.9g) = %.9g, want %.9g", fn.name, x, got, want);
        first = buf;
      }
    }
    EXPECT_EQ(failures, 0) << "lanes " << lanes << ": " << failures << " failures, first " << first;
    // The sweep really measured something: the worst relative error is small but not zero.
    EXPECT_GT(worst_rel, 0) << fn.name;
    EXPECT_LT(worst_rel, fn.abs_tol > kTrueMin ? 1.0 : 1e-6) << fn.name;
  }
}

TEST(VectorMathKernelTest, Avx512IsAccurateOverTheFloatRange) {
  if (HostCpuTarget().isa != Isa::kAvx512) GTEST_SKIP() << "no AVX-512 on this host";
  Target t;
  t.isa = Isa::kAvx512;
  CheckAccuracy(16, t.CompilerFlags());
}

TEST(VectorMathKernelTest, GenericTargetIsAccurateOverTheFloatRange) {
  Target t;
  t.isa = Isa::kGeneric;
  CheckAccuracy(t.VectorLanes(), t.CompilerFlags());
}

TEST(VectorMathKernelTest, ScalarFloatIsAccurateOverTheFloatRange) { CheckAccuracy(1, ""); }

TEST(VectorMathKernelTest, SourceDefinesEveryListedNameAndMayBeIncludedTwice) {
  const std::string src = codegen::VectorMathSource();
  for (const std::string& name : codegen::VectorMathFunctions()) {
    EXPECT_NE(src.find(name), std::string::npos) << name;
  }
  // Two kernels' globals in one translation unit must not redefine the functions.
  testutil::TempDir dir;
  KernelSource twice = MathKernel(4, 16, "");
  twice.code.insert(codegen::CppPrelude(4).size(), codegen::VectorMathSource());
  auto kernel = LocalKernel::Compile(twice, dir.path());
  EXPECT_TRUE(kernel.ok()) << kernel.status();
}

// Compiles `code` as the builder compiles kernels (-O3) for `isa` and returns its disassembly.
std::string Disassembly(const testutil::TempDir& dir, const std::string& name,
                        const std::string& code, Isa isa = Isa::kAvx512) {
  Target t;
  t.isa = isa;
  const std::string src = absl::StrCat(dir.path(), "/", name, ".cc");
  const std::string obj = absl::StrCat(dir.path(), "/", name, ".o");
  {
    std::ofstream out(src);
    out << code;
  }
  const std::string cmd =
      absl::StrCat("g++ -O3 -std=c++17 -fno-math-errno ", t.CompilerFlags(), " -c ", src, " -o ",
                   obj, " && objdump -d --no-show-raw-insn ", obj);
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  if (pipe == nullptr) return "";
  std::string disasm;
  char buf[4096];
  while (size_t got = fread(buf, 1, sizeof(buf), pipe)) disasm.append(buf, got);
  EXPECT_EQ(pclose(pipe), 0) << cmd;
  return disasm;
}

// A plain scalar loop over each function, compiled as the builder compiles kernels (-O3) for
// AVX-512 and for AVX2, becomes vector code: zmm (ymm) registers and no call (to libm or anything
// else). Standalone elementwise kernels are such loops. On AVX2, GCC if-converts a per-lane
// select only when it is straight-line code, so the scalar select is a bit blend: with `m ? a : b`
// the erf, GELU and softplus loops kept their branches and ran scalar (Segformer-b0's GELUs took
// 38% of its time on a Zen 3).
TEST(VectorMathKernelTest, ScalarLoopsVectorizeWithoutLibmCalls) {
  testutil::TempDir dir;
  for (const auto& [isa, reg] : {std::pair{Isa::kAvx512, "%zmm"}, std::pair{Isa::kAvx2, "%ymm"}}) {
    for (const char* fn : {"loom_exp", "loom_log", "loom_tanh", "loom_erf", "loom_erfc",
                           "loom_sigmoid", "loom_softplus", "loom_gelu_erf", "loom_gelu_tanh"}) {
      const std::string disasm = Disassembly(
          dir, absl::StrCat(fn, reg + 1),
          absl::StrCat("#include <stdint.h>\n", codegen::VectorMathSource(),
                       "extern \"C\" void k(const float* __restrict in, float* __restrict out, "
                       "int64_t n) {\n",
                       "  for (int64_t i = 0; i < n; ++i) out[i] = ", fn, "(in[i]);\n}\n"),
          isa);
      EXPECT_THAT(disasm, ::testing::HasSubstr(reg)) << fn << " " << reg;
      EXPECT_THAT(disasm, ::testing::Not(::testing::ContainsRegex("\\bcall"))) << fn << " " << reg;
    }
  }
}

// On the kernels' own vector type (epilogues, generated elementwise and softmax kernels), AVX-512
// scales exp's result by 2^n in one instruction and the sigmoid replaces its division by the
// reciprocal estimate and a Newton step: a SiLU epilogue after a 1x1 convolution with few input
// channels costs as much as the convolution, and these were a third of its instructions.
TEST(VectorMathKernelTest, Avx512VectorsUseScalefAndReciprocalEstimate) {
  testutil::TempDir dir;
  for (int lanes : {16, 8}) {
    const std::string disasm = Disassembly(
        dir, absl::StrCat("sigmoid", lanes),
        absl::StrCat(codegen::CppPrelude(lanes), codegen::VectorMathSource(),
                     "extern \"C\" void k(const float* __restrict in, float* __restrict out) {\n",
                     "  for (int i = 0; i < 64; i += ", lanes,
                     ") loom_store(out + i, loom_sigmoid(loom_load(in + i)));\n}\n"));
    EXPECT_THAT(disasm, ::testing::HasSubstr("vscalefps")) << lanes;
    EXPECT_THAT(disasm, ::testing::HasSubstr("vrcp14ps")) << lanes;
    EXPECT_THAT(disasm, ::testing::Not(::testing::HasSubstr("vdivps"))) << lanes;
  }
}

}  // namespace
}  // namespace loom::ops
