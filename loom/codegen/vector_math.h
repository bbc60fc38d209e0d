// Vectorizable math for generated CPU kernels: exp, log, erf, tanh, sigmoid and the activations
// built on them, as C++ source text that a kernel places at file scope (codegen::Kernel::globals).
// Every function is a template over the value type, so one definition serves a scalar `float`
// and the GCC vector type `vf` of the kernel prelude (cpp_printer.h); the bodies are branch-free
// (polynomials, bit manipulation, selects) so that GCC vectorizes loops that call them. Accuracy:
// at most 1e-6 relative error (plus 1e-7 absolute near zero) against libm over the whole float
// range, NaN and infinities as libm gives them. Called by the elementwise printer
// (ops/elementwise.h), the generated normalization and softmax kernels (ops/lowering.h) and the
// templates' fused epilogues.
#pragma once

#include <string>
#include <vector>

namespace loom::codegen {

// The C++ source of the math functions, self-contained (it needs only the prelude's `vf`):
//   template <class V> V loom_exp(V x);      template <class V> V loom_log(V x);
//   template <class V> V loom_erf(V x);      template <class V> V loom_tanh(V x);
//   template <class V> V loom_sigmoid(V x);  template <class V> V loom_softplus(V x);
//   template <class V> V loom_gelu_erf(V x); template <class V> V loom_gelu_tanh(V x);
// plus loom_log1p and loom_erfc, and the helpers they need: loom_select(mask, a, b) (per lane;
// mask a comparison result), loom_splat<V>(c), loom_abs, loom_copysign, loom_min/max (NaN in `a`
// gives `b`), loom_as_int/loom_as_float (bit casts), loom_int_t<V>. Names are prefixed `loom_` so
// that generated code cannot collide with them; the text has an include guard, so two kernels'
// globals in one translation unit may both carry it.
//
// Special values follow libm (exp(-inf) = 0, log(0) = -inf, log(x < 0) = NaN, tanh(-0) = -0,
// ...); the GELUs give their limits at the infinities (+inf, and -0 at -inf, where the formula
// 0.5 x (1 + erf(x / sqrt 2)) would give NaN). erfc is relative to 1e-6 down to about 4e-5 and
// absolute to 1e-10 below. Tested by ops/vector_math_kernel_test.cc (a dense sweep through compiled
// kernels for AVX-512, SSE and scalar float, and a check that -O3 loops over them vectorize for
// AVX-512 and AVX2: the scalar select is a bit blend for that).
std::string VectorMathSource();

// The names VectorMathSource defines, for the printers' checks and the tests.
std::vector<std::string> VectorMathFunctions();

}  // namespace loom::codegen
