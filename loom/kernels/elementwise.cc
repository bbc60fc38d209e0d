// Elementwise reference kernels: unary math and activations, broadcasting arithmetic,
// comparisons and logic, the variadic Max/Min/Mean/Sum, Where, Clip, PRelu, Pow and Mod (Cast is in
// cast.cc). Each operator accepts the element types its ONNX schema allows within Loom's set;
// float16 and bfloat16 never reach these kernels (EvaluateNode computes them in float32). Integer
// arithmetic wraps (two's complement) instead of overflowing; integer division and modulo by zero,
// and INT_MIN / -1, are errors.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {
namespace {

using graph::kAllDTypes;
using graph::kBoolDTypes;
using graph::kFloatDTypes;
using graph::kIntDTypes;
using graph::kNumericDTypes;
using graph::kSignedIntDTypes;

// Wrapping integer arithmetic: computed on uint64_t, where it is defined modulo 2^64, and
// truncated back to T (C++20 defines that conversion as modular).
template <typename T>
T WrapAdd(T a, T b) {
  return static_cast<T>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
template <typename T>
T WrapSub(T a, T b) {
  return static_cast<T>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
template <typename T>
T WrapMul(T a, T b) {
  return static_cast<T>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}

template <typename T>
constexpr bool kIsFloat = std::is_floating_point_v<T>;

// ---------------------------------------------------------------------------------------------
// Unary operators.

// y = f(x) for float32 and float64 inputs; f is called with float or double.
template <typename F>
OpResult FloatUnary(const OpContext& ctx, F f) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "input", kFloatDTypes));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0; i < x.num_elements(); ++i) py[i] = static_cast<T>(f(px[i]));
  };
  if (x.dtype() == DType::kFloat64) {
    run(double{});
  } else {
    run(float{});
  }
  return std::vector<Tensor>{std::move(y)};
}

// y = f(x) for every dtype in `allowed`; f is a generic callable over the C++ element type.
template <typename F>
OpResult TypedUnary(const OpContext& ctx, DTypeSet allowed, F f) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "input", allowed));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0; i < x.num_elements(); ++i) py[i] = static_cast<T>(f(px[i]));
  });
  return std::vector<Tensor>{std::move(y)};
}

template <typename T>
T Sigmoid(T v) {
  // Written so that exp never overflows.
  if (v >= 0) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

template <typename T>
T Softplus(T v) {
  // log(1 + exp(v)) without overflow for large v.
  return v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
}

OpResult AbsOp(const OpContext& ctx) {
  return TypedUnary(ctx, kNumericDTypes, [](auto v) {
    using T = decltype(v);
    if constexpr (kIsFloat<T>) {
      return std::fabs(v);
    } else if constexpr (std::is_signed_v<T>) {
      return v < 0 ? WrapSub(T(0), v) : v;  // |INT_MIN| wraps to INT_MIN
    } else {
      return v;
    }
  });
}

OpResult NegOp(const OpContext& ctx) {
  return TypedUnary(ctx, kFloatDTypes | kSignedIntDTypes, [](auto v) {
    using T = decltype(v);
    if constexpr (kIsFloat<T>) {
      return -v;
    } else {
      return WrapSub(T(0), v);
    }
  });
}

OpResult SignOp(const OpContext& ctx) {
  return TypedUnary(ctx, kNumericDTypes, [](auto v) {
    using T = decltype(v);
    if (v > T(0)) return T(1);
    if (v < T(0)) return static_cast<T>(-1);
    return v;  // 0 (and NaN) stay
  });
}

OpResult ReluOp(const OpContext& ctx) {
  return TypedUnary(ctx, kFloatDTypes | kSignedIntDTypes, [](auto v) {
    using T = decltype(v);
    return v > T(0) ? v : T(0);
  });
}

OpResult LeakyReluOp(const OpContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 0.01f);
  return FloatUnary(ctx, [alpha](auto v) {
    using T = decltype(v);
    return v >= 0 ? v : static_cast<T>(alpha) * v;
  });
}

OpResult EluOp(const OpContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 1.0f);
  return FloatUnary(ctx, [alpha](auto v) {
    using T = decltype(v);
    return v >= 0 ? v : static_cast<T>(alpha) * std::expm1(v);
  });
}

OpResult CeluOp(const OpContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 1.0f);
  return FloatUnary(ctx, [alpha](auto v) {
    using T = decltype(v);
    const T a = static_cast<T>(alpha);
    return std::max(T(0), v) + std::min(T(0), a * std::expm1(v / a));
  });
}

OpResult SeluOp(const OpContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 1.67326319217681884765625f);
  const double gamma = ctx.node.GetFloat("gamma", 1.05070102214813232421875f);
  return FloatUnary(ctx, [alpha, gamma](auto v) {
    using T = decltype(v);
    return static_cast<T>(gamma) * (v > 0 ? v : static_cast<T>(alpha) * std::expm1(v));
  });
}

OpResult ThresholdedReluOp(const OpContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 1.0f);
  return FloatUnary(ctx, [alpha](auto v) {
    using T = decltype(v);
    return v > static_cast<T>(alpha) ? v : T(0);
  });
}

OpResult HardSigmoidOp(const OpContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 0.2f);
  const double beta = ctx.node.GetFloat("beta", 0.5f);
  return FloatUnary(ctx, [alpha, beta](auto v) {
    using T = decltype(v);
    return std::max(T(0), std::min(T(1), static_cast<T>(alpha) * v + static_cast<T>(beta)));
  });
}

OpResult HardSwishOp(const OpContext& ctx) {
  // x * HardSigmoid(x) with alpha = 1/6, beta = 0.5.
  return FloatUnary(ctx, [](auto v) {
    using T = decltype(v);
    return v * std::max(T(0), std::min(T(1), v / T(6) + T(0.5)));
  });
}

OpResult GeluOp(const OpContext& ctx) {
  const std::string approximate = ctx.node.GetString("approximate", "none");
  if (approximate == "tanh") {
    return FloatUnary(ctx, [](auto v) {
      using T = decltype(v);
      const T k = static_cast<T>(0.7978845608028654);  // sqrt(2 / pi)
      return T(0.5) * v * (T(1) + std::tanh(k * (v + static_cast<T>(0.044715) * v * v * v)));
    });
  }
  if (approximate != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("attribute 'approximate' is '", approximate, "'; it must be none or tanh"));
  }
  return FloatUnary(ctx, [](auto v) {
    using T = decltype(v);
    return T(0.5) * v * (T(1) + std::erf(v * static_cast<T>(0.7071067811865476)));
  });
}

OpResult MishOp(const OpContext& ctx) {
  return FloatUnary(ctx, [](auto v) { return v * std::tanh(Softplus(v)); });
}

OpResult IsNaNOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "input", kFloatDTypes));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kBool, x.shape()));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      y.data<uint8_t>()[i] = std::isnan(static_cast<double>(x.data<T>()[i])) ? 1 : 0;
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

OpResult IsInfOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "input", kFloatDTypes));
  const bool negative = ctx.node.GetInt("detect_negative", 1) != 0;
  const bool positive = ctx.node.GetInt("detect_positive", 1) != 0;
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kBool, x.shape()));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      const double v = static_cast<double>(x.data<T>()[i]);
      y.data<uint8_t>()[i] = std::isinf(v) && (v > 0 ? positive : negative) ? 1 : 0;
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

OpResult NotOp(const OpContext& ctx) {
  return TypedUnary(ctx, kBoolDTypes, [](auto v) { return v != 0 ? 0 : 1; });
}

// ---------------------------------------------------------------------------------------------
// Broadcasting binary operators.

// Checks two same-typed operands from `allowed` and returns their broadcast shape.
absl::StatusOr<Shape> BinaryOperands(const OpContext& ctx, DTypeSet allowed) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& a = ctx.inputs[0];
  const Tensor& b = ctx.inputs[1];
  if (a.dtype() != b.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("operand types differ: A ", a.type().ToString(), ", B ", b.type().ToString()));
  }
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, a, "A", allowed));
  return BroadcastShapes(a.shape(), b.shape());
}

// y[o] = f(a[ia], b[ib]) over the broadcast of a and b; R is y's element type.
template <typename T, typename R, typename F>
void Broadcast2(const Tensor& a, const Tensor& b, Tensor* y, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  R* py = y->data<R>();
  if (a.shape() == b.shape()) {
    for (int64_t i = 0; i < y->num_elements(); ++i) py[i] = static_cast<R>(f(pa[i], pb[i]));
    return;
  }
  ForEachBroadcast<2>(y->shape(), {&a.shape(), &b.shape()},
                      [&](int64_t o, const std::array<int64_t, 2>& off) {
                        py[o] = static_cast<R>(f(pa[off[0]], pb[off[1]]));
                      });
}

// An arithmetic operator: y has the operands' type. f(a, b, &error) may set `error` (a message)
// for a pair it cannot compute; the first one is returned.
template <typename F>
OpResult Arithmetic(const OpContext& ctx, DTypeSet allowed, F f) {
  LOOM_ASSIGN_OR_RETURN(Shape shape, BinaryOperands(ctx, allowed));
  const Tensor& a = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(a.dtype(), shape));
  std::string error;
  VisitDType(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    Broadcast2<T, T>(a, ctx.inputs[1], &y, [&](T u, T v) { return f(u, v, &error); });
  });
  if (!error.empty()) return absl::InvalidArgumentError(error);
  return std::vector<Tensor>{std::move(y)};
}

// A comparison or logical operator: y is bool.
template <typename F>
OpResult Predicate(const OpContext& ctx, DTypeSet allowed, F f) {
  LOOM_ASSIGN_OR_RETURN(Shape shape, BinaryOperands(ctx, allowed));
  const Tensor& a = ctx.inputs[0];
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(DType::kBool, shape));
  VisitDType(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    Broadcast2<T, uint8_t>(a, ctx.inputs[1], &y, [&](T u, T v) { return f(u, v) ? 1 : 0; });
  });
  return std::vector<Tensor>{std::move(y)};
}

OpResult AddOp(const OpContext& ctx) {
  return Arithmetic(ctx, kNumericDTypes, [](auto a, auto b, std::string*) {
    if constexpr (kIsFloat<decltype(a)>) {
      return a + b;
    } else {
      return WrapAdd(a, b);
    }
  });
}

OpResult SubOp(const OpContext& ctx) {
  return Arithmetic(ctx, kNumericDTypes, [](auto a, auto b, std::string*) {
    if constexpr (kIsFloat<decltype(a)>) {
      return a - b;
    } else {
      return WrapSub(a, b);
    }
  });
}

OpResult MulOp(const OpContext& ctx) {
  return Arithmetic(ctx, kNumericDTypes, [](auto a, auto b, std::string*) {
    if constexpr (kIsFloat<decltype(a)>) {
      return a * b;
    } else {
      return WrapMul(a, b);
    }
  });
}

// Integer division truncates toward zero (C++ and ONNX Runtime semantics).
OpResult DivOp(const OpContext& ctx) {
  return Arithmetic(ctx, kNumericDTypes, [](auto a, auto b, std::string* error) {
    using T = decltype(a);
    if constexpr (!kIsFloat<T>) {
      if (b == 0) {
        if (error->empty()) *error = "integer division by zero";
        return T(0);
      }
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1) && a == std::numeric_limits<T>::min()) {
          if (error->empty()) {
            *error = absl::StrCat("integer division overflows: ", int64_t{a}, " / -1");
          }
          return T(0);
        }
      }
    }
    return static_cast<T>(a / b);
  });
}

// Mod: fmod=1 is C's fmod (the sign of the dividend); fmod=0 is Python's (numpy's) %, whose
// result has the sign of the divisor (for floats too, as ONNX's tests expect: -3 % inf = inf).
OpResult ModOp(const OpContext& ctx) {
  const int64_t fmod = ctx.node.GetInt("fmod", 0);
  if (fmod != 0 && fmod != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attribute 'fmod' is ", fmod, "; it must be 0 or 1"));
  }
  return Arithmetic(ctx, kNumericDTypes, [fmod](auto a, auto b, std::string* error) {
    using T = decltype(a);
    if constexpr (kIsFloat<T>) {
      T r = std::fmod(a, b);
      if (fmod == 0 && b != 0) {
        if (r == 0) {
          r = std::copysign(T(0), b);
        } else if ((r < 0) != (b < 0)) {
          r += b;
        }
      }
      return r;
    } else {
      if (b == 0) {
        if (error->empty()) *error = "integer modulo by zero";
        return T(0);
      }
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1)) return T(0);  // INT_MIN % -1 would trap
      }
      T r = static_cast<T>(a % b);
      if constexpr (std::is_signed_v<T>) {
        if (fmod == 0 && r != 0 && ((r < 0) != (b < 0))) r = WrapAdd(r, b);
      }
      return r;
    }
  });
}

// Pow: base T (float, int32, int64), exponent of any numeric type; y has the base's type.
// Integer bases with integer exponents are exact (wrapping); otherwise pow runs in double and an
// integer result truncates toward zero.
OpResult PowOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  const Tensor& x = ctx.inputs[0];
  const Tensor& e = ctx.inputs[1];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kNumericDTypes));
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, e, "Y", kNumericDTypes));
  LOOM_ASSIGN_OR_RETURN(Shape shape, BroadcastShapes(x.shape(), e.shape()));
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  std::string error;
  VisitDType(x.dtype(), [&](auto xzero) {
    using T = decltype(xzero);
    VisitDType(e.dtype(), [&](auto ezero) {
      using E = decltype(ezero);
      const T* px = x.data<T>();
      const E* pe = e.data<E>();
      T* py = y.data<T>();
      ForEachBroadcast<2>(
          shape, {&x.shape(), &e.shape()}, [&](int64_t o, const std::array<int64_t, 2>& off) {
            const T base = px[off[0]];
            const E exp = pe[off[1]];
            if constexpr (kIsFloat<T>) {
              py[o] = static_cast<T>(std::pow(static_cast<double>(base), static_cast<double>(exp)));
            } else if constexpr (!kIsFloat<E>) {
              if (exp >= 0) {
                T result = 1, b = base;
                for (uint64_t n = static_cast<uint64_t>(exp); n != 0; n >>= 1) {
                  if (n & 1) result = WrapMul(result, b);
                  b = WrapMul(b, b);
                }
                py[o] = result;
              } else if (base == 0) {
                if (error.empty()) error = "integer 0 raised to a negative power";
                py[o] = 0;
              } else {
                // 1 / base^n truncates to 0 unless |base| == 1.
                const bool odd = (static_cast<uint64_t>(exp) & 1) != 0;
                py[o] = base == 1                          ? T(1)
                        : static_cast<int64_t>(base) == -1 ? static_cast<T>(odd ? -1 : 1)
                                                           : T(0);
              }
            } else {
              const double r = std::trunc(std::pow(static_cast<double>(base), double{exp}));
              if (!(r >= static_cast<double>(std::numeric_limits<T>::lowest()) &&
                    r <= static_cast<double>(std::numeric_limits<T>::max()))) {
                if (error.empty()) {
                  error = absl::StrCat("pow(", base, ", ", exp, ") does not fit ",
                                       graph::DTypeName(x.dtype()));
                }
                py[o] = 0;
              } else {
                py[o] = static_cast<T>(r);
              }
            }
          });
    });
  });
  if (!error.empty()) return absl::InvalidArgumentError(error);
  return std::vector<Tensor>{std::move(y)};
}

// PRelu: slope broadcasts to X's shape (unidirectionally).
OpResult PReluOp(const OpContext& ctx) {
  LOOM_ASSIGN_OR_RETURN(Shape shape, BinaryOperands(ctx, kFloatDTypes | kIntDTypes));
  const Tensor& x = ctx.inputs[0];
  const Tensor& slope = ctx.inputs[1];
  if (shape != x.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slope ", slope.type().ToString(), " does not broadcast to X ", x.type().ToString()));
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), shape));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    Broadcast2<T, T>(x, slope, &y, [](T v, T s) {
      if constexpr (kIsFloat<T>) {
        return v < 0 ? s * v : v;
      } else {
        return v < T(0) ? WrapMul(s, v) : v;
      }
    });
  });
  return std::vector<Tensor>{std::move(y)};
}

// ---------------------------------------------------------------------------------------------
// Variadic operators (Max, Min, Sum, Mean): every input broadcasts to the common shape.

enum class Fold { kMax, kMin, kSum, kMean };

template <Fold kFold>
OpResult VariadicOp(const OpContext& ctx) {
  if (ctx.inputs.empty()) return absl::InvalidArgumentError("expects at least 1 input, got 0");
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, ctx.inputs.size(), ctx.inputs.size()));
  const DTypeSet allowed =
      kFold == Fold::kMax || kFold == Fold::kMin ? kNumericDTypes : kFloatDTypes;
  const Tensor& first = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, first, "input 0", allowed));
  Shape shape = first.shape();
  for (size_t i = 1; i < ctx.inputs.size(); ++i) {
    const Tensor& t = ctx.inputs[i];
    if (t.dtype() != first.dtype()) {
      return absl::InvalidArgumentError(absl::StrCat("input ", i, " ", t.type().ToString(),
                                                     " does not have the type of input 0 ",
                                                     first.type().ToString()));
    }
    LOOM_ASSIGN_OR_RETURN(shape, BroadcastShapes(shape, t.shape()));
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(first.dtype(), shape));
  VisitDType(first.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* py = y.data<T>();
    for (size_t i = 0; i < ctx.inputs.size(); ++i) {
      const Tensor& t = ctx.inputs[i];
      const T* pt = t.data<T>();
      ForEachBroadcast<1>(shape, {&t.shape()}, [&](int64_t o, const std::array<int64_t, 1>& off) {
        const T v = pt[off[0]];
        T& acc = py[o];
        if (i == 0) {
          acc = v;
        } else if constexpr (kFold == Fold::kSum || kFold == Fold::kMean) {
          acc += v;
        } else if constexpr (kIsFloat<T>) {
          // NaN propagates (numpy's maximum/minimum).
          if (std::isnan(v) || std::isnan(acc)) {
            acc = std::numeric_limits<T>::quiet_NaN();
          } else {
            acc = kFold == Fold::kMax ? std::max(acc, v) : std::min(acc, v);
          }
        } else {
          acc = kFold == Fold::kMax ? std::max(acc, v) : std::min(acc, v);
        }
      });
    }
    if constexpr (kFold == Fold::kMean) {
      for (int64_t o = 0; o < y.num_elements(); ++o) py[o] /= static_cast<T>(ctx.inputs.size());
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

// Where(condition, X, Y): X where condition, else Y; all three broadcast.
OpResult WhereOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 3, 3, 3));
  const Tensor& cond = ctx.inputs[0];
  const Tensor& x = ctx.inputs[1];
  const Tensor& yv = ctx.inputs[2];
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, cond, "condition", kBoolDTypes));
  if (x.dtype() != yv.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat("X ", x.type().ToString(), " and Y ",
                                                   yv.type().ToString(), " differ in type"));
  }
  LOOM_RETURN_IF_ERROR(CheckDTypeIn(ctx, x, "X", kAllDTypes));
  LOOM_ASSIGN_OR_RETURN(Shape shape, BroadcastShapes(cond.shape(), x.shape()));
  LOOM_ASSIGN_OR_RETURN(shape, BroadcastShapes(shape, yv.shape()));
  LOOM_ASSIGN_OR_RETURN(Tensor out, NewTensor(x.dtype(), shape));
  VisitStorage(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const uint8_t* pc = cond.data<uint8_t>();
    const T* px = x.data<T>();
    const T* py = yv.data<T>();
    T* po = out.data<T>();
    ForEachBroadcast<3>(shape, {&cond.shape(), &x.shape(), &yv.shape()},
                        [&](int64_t o, const std::array<int64_t, 3>& off) {
                          po[o] = pc[off[0]] != 0 ? px[off[1]] : py[off[2]];
                        });
  });
  return std::vector<Tensor>{std::move(out)};
}

// Clip: bounds are optional scalar inputs from opset 11 (an empty name omits one), float
// attributes before. ONNX: min(max(x, lo), hi), so with lo > hi every element becomes hi.
OpResult ClipOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, ctx.opset < 11 ? 1 : 3, 1));
  const Tensor& x = ctx.inputs[0];
  LOOM_RETURN_IF_ERROR(
      CheckDTypeIn(ctx, x, "input", ctx.opset < 11 ? kFloatDTypes : kNumericDTypes));
  for (size_t i = 1; i < ctx.inputs.size(); ++i) {
    if (!ctx.HasInput(i)) continue;
    const Tensor& bound = ctx.inputs[i];
    if (bound.dtype() != x.dtype() || bound.num_elements() != 1 || bound.rank() > 1) {
      return absl::InvalidArgumentError(absl::StrCat(i == 1 ? "min " : "max ",
                                                     bound.type().ToString(), " must be a ",
                                                     graph::DTypeName(x.dtype()), " scalar"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(x.dtype(), x.shape()));
  VisitDType(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
    if (ctx.opset < 11) {
      if (ctx.node.HasAttr("min")) lo = static_cast<T>(ctx.node.GetFloat("min", 0));
      if (ctx.node.HasAttr("max")) hi = static_cast<T>(ctx.node.GetFloat("max", 0));
    } else {
      if (ctx.HasInput(1)) lo = ctx.inputs[1].data<T>()[0];
      if (ctx.HasInput(2)) hi = ctx.inputs[2].data<T>()[0];
    }
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      y.data<T>()[i] = std::min(hi, std::max(lo, x.data<T>()[i]));
    }
  });
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterElementwiseKernels(KernelTable* table) {
  KernelTable& t = *table;
  // Unary math on float types.
  t["Acos"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::acos(v); }); };
  t["Acosh"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return std::acosh(v); });
  };
  t["Asin"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::asin(v); }); };
  t["Asinh"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return std::asinh(v); });
  };
  t["Atan"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::atan(v); }); };
  t["Atanh"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return std::atanh(v); });
  };
  t["Ceil"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::ceil(v); }); };
  t["Cos"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::cos(v); }); };
  t["Cosh"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::cosh(v); }); };
  t["Erf"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::erf(v); }); };
  t["Exp"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::exp(v); }); };
  t["Floor"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return std::floor(v); });
  };
  t["Log"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::log(v); }); };
  t["Reciprocal"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return decltype(v)(1) / v; });
  };
  // Round half to even: nearbyint under the default rounding mode (Loom never changes it).
  t["Round"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return std::nearbyint(v); });
  };
  t["Sigmoid"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return Sigmoid(v); });
  };
  t["Sin"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::sin(v); }); };
  t["Sinh"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::sinh(v); }); };
  t["Softplus"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return Softplus(v); });
  };
  t["Softsign"] = [](const OpContext& c) {
    return FloatUnary(c, [](auto v) { return v / (decltype(v)(1) + std::fabs(v)); });
  };
  t["Sqrt"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::sqrt(v); }); };
  t["Tan"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::tan(v); }); };
  t["Tanh"] = [](const OpContext& c) { return FloatUnary(c, [](auto v) { return std::tanh(v); }); };
  // Activations with attributes, and unary ops over more types.
  t["Abs"] = &AbsOp;
  t["Celu"] = &CeluOp;
  t["Elu"] = &EluOp;
  t["Gelu"] = &GeluOp;
  t["HardSigmoid"] = &HardSigmoidOp;
  t["HardSwish"] = &HardSwishOp;
  t["IsInf"] = &IsInfOp;
  t["IsNaN"] = &IsNaNOp;
  t["LeakyRelu"] = &LeakyReluOp;
  t["Mish"] = &MishOp;
  t["Neg"] = &NegOp;
  t["Not"] = &NotOp;
  t["Relu"] = &ReluOp;
  t["Selu"] = &SeluOp;
  t["Sign"] = &SignOp;
  t["ThresholdedRelu"] = &ThresholdedReluOp;
  // Binary and variadic.
  t["Add"] = &AddOp;
  t["Sub"] = &SubOp;
  t["Mul"] = &MulOp;
  t["Div"] = &DivOp;
  t["Mod"] = &ModOp;
  t["Pow"] = &PowOp;
  t["PRelu"] = &PReluOp;
  t["Max"] = &VariadicOp<Fold::kMax>;
  t["Min"] = &VariadicOp<Fold::kMin>;
  t["Sum"] = &VariadicOp<Fold::kSum>;
  t["Mean"] = &VariadicOp<Fold::kMean>;
  t["Where"] = &WhereOp;
  t["Clip"] = &ClipOp;
  // Comparisons and logic.
  t["Equal"] = [](const OpContext& c) {
    return Predicate(c, kAllDTypes, [](auto a, auto b) { return a == b; });
  };
  t["Greater"] = [](const OpContext& c) {
    return Predicate(c, kNumericDTypes, [](auto a, auto b) { return a > b; });
  };
  t["GreaterOrEqual"] = [](const OpContext& c) {
    return Predicate(c, kNumericDTypes, [](auto a, auto b) { return a >= b; });
  };
  t["Less"] = [](const OpContext& c) {
    return Predicate(c, kNumericDTypes, [](auto a, auto b) { return a < b; });
  };
  t["LessOrEqual"] = [](const OpContext& c) {
    return Predicate(c, kNumericDTypes, [](auto a, auto b) { return a <= b; });
  };
  t["And"] = [](const OpContext& c) {
    return Predicate(c, kBoolDTypes, [](auto a, auto b) { return a != 0 && b != 0; });
  };
  t["Or"] = [](const OpContext& c) {
    return Predicate(c, kBoolDTypes, [](auto a, auto b) { return a != 0 || b != 0; });
  };
  t["Xor"] = [](const OpContext& c) {
    return Predicate(c, kBoolDTypes, [](auto a, auto b) { return (a != 0) != (b != 0); });
  };
}

}  // namespace loom::kernels::internal
