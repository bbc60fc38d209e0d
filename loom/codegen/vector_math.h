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
// plus the selects and bit casts they need (loom_select, loom_as_int, ...). Names are prefixed
// `loom_` so that generated code cannot collide with them.
std::string VectorMathSource();

// The names VectorMathSource defines, for the printers' checks and the tests.
std::vector<std::string> VectorMathFunctions();

}  // namespace loom::codegen
