#include "loom/codegen/vector_math.h"

namespace loom::codegen {
namespace {

// The functions, as one raw string. Written for GCC/Clang vector extensions: for a float vector
// V, `V op float` broadcasts the scalar, comparisons give an int32 vector mask, `m ? a : b`
// selects per lane, and a same-size memcpy is a bit cast. The same text instantiated for `float`
// is ordinary scalar code (the mask is a bool). No libm call, no branch on data: a loop calling
// these vectorizes.
//
// Sources of the approximations (kept here so they can be re-derived):
//  - exp: Cody-Waite reduction by ln 2 and the Cephes expf polynomial; 2^n is applied as two
//    factors so that subnormal results and the overflow to infinity need no branch.
//  - log: Cephes logf (mantissa in [sqrt(1/2), sqrt(2)), degree-9 polynomial).
//  - tanh: Cephes tanhf's odd polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1) above.
//  - erf, erfc: fitted for Loom by scripts/fit_vector_math.py (near-minimax, Lawson's
//    algorithm): erf(z) = z P(z^2) for |z| < 0.921875 (relative error 4e-10 in exact
//    arithmetic); erfc(z) = t exp(-z^2 + Q(t)), t = 1 / (1 + z/2) above (4.6e-9 absolute in the
//    exponent, so as much relative in erfc).
//  - sigmoid, softplus and the GELUs are written in the forms that do not cancel: sigmoid(x) =
//    e / (1 + e) for x < 0 with e = exp(x); softplus(x) = max(x, 0) + log1p(exp(-|x|)); GELU(x) =
//    x Phi(x) with Phi from erfc for x < 0; the tanh GELU as x sigmoid(2y).
constexpr char kSource[] = R"LOOM(
#ifndef LOOM_VECTOR_MATH_DEFINED
#define LOOM_VECTOR_MATH_DEFINED 1
#define LOOM_VM_INLINE static inline __attribute__((always_inline))
// The instruction sets this kernel is compiled for (x86 builtins are used only where enabled).
#if defined(__AVX512F__) && defined(__AVX512VL__)
#define LOOM_VM_AVX512 1
#else
#define LOOM_VM_AVX512 0
#endif
#if defined(__AVX__)
#define LOOM_VM_AVX 1
#else
#define LOOM_VM_AVX 0
#endif
#if defined(__SSE__)
#define LOOM_VM_SSE 1
#else
#define LOOM_VM_SSE 0
#endif
// The int32 companion of a value type: int32_t for float, the int32 vector of as many lanes for
// a float vector.
template <class V> struct loom_int_of {
  typedef int32_t type __attribute__((vector_size(sizeof(V))));
};
template <> struct loom_int_of<float> { typedef int32_t type; };
template <class V> using loom_int_t = typename loom_int_of<V>::type;

// c in every lane (c - 0 keeps the sign of a zero c).
template <class V> LOOM_VM_INLINE V loom_splat(float c) { V z = {}; return c - z; }
template <class V> LOOM_VM_INLINE loom_int_t<V> loom_splat_int(int32_t c) {
  loom_int_t<V> z = {}; return z + c;
}
template <class V> LOOM_VM_INLINE loom_int_t<V> loom_as_int(V x) {
  loom_int_t<V> r; __builtin_memcpy(&r, &x, sizeof r); return r;
}
template <class V> LOOM_VM_INLINE V loom_as_float(loom_int_t<V> i) {
  V r; __builtin_memcpy(&r, &i, sizeof r); return r;
}
// m ? a : b, per lane for vectors (m is a comparison result).
template <class M, class T> LOOM_VM_INLINE T loom_select(M m, T a, T b) { return m ? a : b; }
// The same for a scalar float, as a bit blend: straight-line code, which GCC if-converts and
// vectorizes in a scalar loop for AVX2 and SSE too (`m ? a : b` stayed a branch there, and the
// loop scalar; AVX-512's masks hid this).
LOOM_VM_INLINE float loom_select(bool m, float a, float b) {
  const int32_t k = -(int32_t)m;
  int32_t ia, ib;
  __builtin_memcpy(&ia, &a, sizeof ia);
  __builtin_memcpy(&ib, &b, sizeof ib);
  const int32_t r = (ia & k) | (ib & ~k);
  float f;
  __builtin_memcpy(&f, &r, sizeof f);
  return f;
}
template <class V> LOOM_VM_INLINE V loom_abs(V x) {
  return loom_as_float<V>(loom_as_int(x) & 0x7fffffff);
}
// |x| with the sign of s.
template <class V> LOOM_VM_INLINE V loom_copysign(V x, V s) {
  return loom_as_float<V>((loom_as_int(x) & 0x7fffffff) | (loom_as_int(s) & (int32_t)0x80000000));
}
template <class V> LOOM_VM_INLINE V loom_max(V a, V b) { return loom_select(a > b, a, b); }
template <class V> LOOM_VM_INLINE V loom_min(V a, V b) { return loom_select(a < b, a, b); }

// p 2^n for an integral n in [-150, 128], given as a float (n) and as an int (ni), rounded once.
// AVX-512 has it as one instruction (vscalefps); elsewhere it is two exponent factors, each a
// normal float, so that subnormal results and the overflow to infinity need no branch.
template <class V> LOOM_VM_INLINE V loom_scale2(V p, V n, loom_int_t<V> ni) {
  if constexpr (LOOM_VM_AVX512 && sizeof(V) == 64) {
    return __builtin_ia32_scalefps512_mask(p, n, p, (unsigned short)0xffff, 4);
  }
  if constexpr (LOOM_VM_AVX512 && sizeof(V) == 32) {
    return __builtin_ia32_scalefps256_mask(p, n, p, (unsigned char)0xff);
  }
  if constexpr (LOOM_VM_AVX512 && sizeof(V) == 16) {
    return __builtin_ia32_scalefps128_mask(p, n, p, (unsigned char)0xff);
  }
  (void)n;
  const loom_int_t<V> n1 = ni >> 1;
  const loom_int_t<V> n2 = ni - n1;
  return p * loom_as_float<V>((n1 + 127) << 23) * loom_as_float<V>((n2 + 127) << 23);
}

// 1 / d for d in [1, 2] (the sigmoid's denominator), to 1 ulp: AVX-512's 14-bit estimate
// (vrcp14ps) and one Newton step, which cost a third of a division's throughput; elsewhere the
// division.
template <class V> LOOM_VM_INLINE V loom_recip_1_2(V d) {
  V r = d;
  if constexpr (LOOM_VM_AVX512 && sizeof(V) == 64) {
    r = __builtin_ia32_rcp14ps512_mask(d, d, (unsigned short)0xffff);
  } else if constexpr (LOOM_VM_AVX512 && sizeof(V) == 32) {
    r = __builtin_ia32_rcp14ps256_mask(d, d, (unsigned char)0xff);
  } else {
    return 1.0f / d;
  }
  return r + r * (1.0f - d * r);
}

// loom_clamp_above(x, c) = select(x > c, c, x) and loom_clamp_below(x, c) = select(x < c, c, x):
// x clamped to c, NaN kept. One vminps/vmaxps (c first: a NaN operand gives the second) where
// the lanes allow; GCC emits a compare and a blend for the select. Clang's 512-bit builtin has no
// mask operands.
#if defined(__clang__)
#define LOOM_VM_MINMAX512(OP, c, x) __builtin_ia32_##OP##ps512(c, x, 4)
#else
#define LOOM_VM_MINMAX512(OP, c, x) \
  __builtin_ia32_##OP##ps512_mask(c, x, x, (unsigned short)0xffff, 4)
#endif
#define LOOM_VM_CLAMP(NAME, OP, CMP)                                                       \
  template <class V> LOOM_VM_INLINE V NAME(V x, float c) {                                 \
    const V cv = loom_splat<V>(c);                                                         \
    if constexpr (LOOM_VM_AVX512 && sizeof(V) == 64) return LOOM_VM_MINMAX512(OP, cv, x);  \
    if constexpr (LOOM_VM_AVX && sizeof(V) == 32) return __builtin_ia32_##OP##ps256(cv, x); \
    if constexpr (LOOM_VM_SSE && sizeof(V) == 16) return __builtin_ia32_##OP##ps(cv, x);    \
    return loom_select(x CMP c, cv, x);                                                    \
  }
LOOM_VM_CLAMP(loom_clamp_above, min, >)
LOOM_VM_CLAMP(loom_clamp_below, max, <)
#undef LOOM_VM_CLAMP
#undef LOOM_VM_MINMAX512

template <class V> LOOM_VM_INLINE V loom_exp_in_range(V x);

template <class V> LOOM_VM_INLINE V loom_exp(V x) {
  // Beyond these bounds the result is 0 or +inf; NaN stays NaN.
  return loom_exp_in_range(loom_clamp_below(loom_clamp_above(x, 89.0f), -104.0f));
}

// exp(x) for x in [-104, 89] or NaN.
template <class V> LOOM_VM_INLINE V loom_exp_in_range(V x) {
  typedef loom_int_t<V> I;
  // n = round(x / ln 2): adding 1.5 * 2^23 leaves n in the low mantissa bits.
  const V t = x * 1.44269504088896341f + 12582912.0f;
  const V n = t - 12582912.0f;
  const I ni = loom_as_int(t) - 0x4B400000;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const V r2 = r * r;
  const V p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r2 + r + 1.0f;
  return loom_scale2(p, n, ni);
}

template <class V> LOOM_VM_INLINE V loom_log(V x) {
  typedef loom_int_t<V> I;
  // Subnormal inputs are scaled by 2^23 into the normal range.
  const auto tiny = x < 1.17549435e-38f;
  const I bits = loom_as_int(loom_select(tiny, x * 8388608.0f, x));
  I e = ((bits >> 23) & 0xff) - loom_select(tiny, loom_splat_int<V>(149), loom_splat_int<V>(126));
  const V m = loom_as_float<V>((bits & 0x007fffff) | 0x3f000000);  // x = m 2^e, m in [1/2, 1)
  const auto low = m < 0.707106781186547524f;
  e = loom_select(low, e - 1, e);
  const V f = loom_select(low, m + m, m) - 1.0f;  // in [sqrt(1/2) - 1, sqrt(2) - 1)
  const V ef = loom_as_float<V>(e + 0x4B400000) - 12582912.0f;
  const V z = f * f;
  V y = ((((((((7.0376836292e-2f * f - 1.1514610310e-1f) * f + 1.1676998740e-1f) * f -
              1.2420140846e-1f) * f + 1.4249322787e-1f) * f - 1.6668057665e-1f) * f +
           2.0000714765e-1f) * f - 2.4999993993e-1f) * f + 3.3333331174e-1f) * f * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  V r = f + y + ef * 0.693359375f;
  r = loom_select(x > 0.0f, r,
                  loom_select(x == 0.0f, loom_splat<V>(-__builtin_inff()),
                              loom_splat<V>(__builtin_nanf(""))));
  return loom_select(x == __builtin_inff(), x, r);
}

// log(1 + x) for x > -1, accurate for small x: log(u) * x / (u - 1) with u = 1 + x (u - 1 is
// exact, and the quotient corrects the rounding of u).
template <class V> LOOM_VM_INLINE V loom_log1p(V x) {
  const V u = x + 1.0f;
  const V d = u - 1.0f;
  const V r = loom_log(u) * (x / loom_select(d == 0.0f, loom_splat<V>(1.0f), d));
  return loom_select(d == 0.0f, x, loom_select(u == __builtin_inff(), u, r));
}

template <class V> LOOM_VM_INLINE V loom_tanh(V x) {
  const V ax = loom_abs(x);
  const V z = x * x;
  const V small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                    1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  const V e = loom_exp(ax + ax);
  const V large = loom_copysign(1.0f - 2.0f / (e + 1.0f), x);
  // copysign keeps tanh(-0) = -0 (the polynomial's sum gives +0).
  return loom_select(ax < 0.625f, loom_copysign(small, x), large);
}

template <class V> LOOM_VM_INLINE V loom_sigmoid(V x) {
  // exp(-|x|): -|x| is x with the sign bit set, and needs no clamp from above.
  const V e = loom_exp_in_range(
      loom_clamp_below(loom_as_float<V>(loom_as_int(x) | (int32_t)0x80000000), -104.0f));
  const V r = loom_recip_1_2(e + 1.0f);  // sigmoid(|x|)
  return loom_select(x < 0.0f, e * r, r);
}

template <class V> LOOM_VM_INLINE V loom_softplus(V x) {
  return loom_select(x > 0.0f, x, loom_splat<V>(0.0f)) + loom_log1p(loom_exp(-loom_abs(x)));
}

// erf(z) / z for |z| < 0.921875, as a polynomial in z^2.
template <class V> LOOM_VM_INLINE V loom_erf_small(V z2) {
  return (((((8.370182484e-05f * z2 - 8.142727218e-04f) * z2 + 5.201034755e-03f) * z2 -
            2.685939953e-02f) * z2 + 1.128369553e-01f) * z2 - 3.761263374e-01f) * z2 +
         1.128379167e+00f;
}
// erfc(a) for a >= 0.921875 (any a >= 0 gives a finite value; +inf gives 0).
template <class V> LOOM_VM_INLINE V loom_erfc_large(V a, V a2) {
  const V t = 1.0f / (a * 0.5f + 1.0f);
  const V q = (((((((-2.212061481e-01f * t + 5.820763406e-01f) * t - 3.639396607e-01f) * t -
                    1.321165471e-01f) * t - 4.197874831e-02f) * t + 6.272586189e-02f) * t +
                3.793839083e-01f) * t + 9.995335367e-01f) * t - 1.265492079e+00f;
  return t * loom_exp(q - a2);
}

template <class V> LOOM_VM_INLINE V loom_erf(V x) {
  const V a = loom_abs(x);
  const V a2 = a * a;
  const V large = loom_copysign(1.0f - loom_erfc_large(a, a2), x);
  return loom_select(a < 0.921875f, x * loom_erf_small(a2), large);
}

template <class V> LOOM_VM_INLINE V loom_erfc(V x) {
  const V a = loom_abs(x);
  const V a2 = a * a;
  const V e = loom_erfc_large(a, a2);
  const V large = loom_select(x < 0.0f, 2.0f - e, e);
  return loom_select(a < 0.921875f, 1.0f - x * loom_erf_small(a2), large);
}

// x Phi(x), Phi the standard normal CDF; the limit -0 at -inf.
template <class V> LOOM_VM_INLINE V loom_gelu_erf(V x) {
  const V z = x * 0.707106781186547524f;
  const V a = loom_abs(z);
  const V a2 = a * a;
  const V e = loom_erfc_large(a, a2) * 0.5f;
  const V large = loom_select(x < 0.0f, e, 1.0f - e);
  const V phi = loom_select(a < 0.921875f, z * loom_erf_small(a2) * 0.5f + 0.5f, large);
  return loom_select(phi == 0.0f, loom_splat<V>(-0.0f), x * phi);
}

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3));
// the limit -0 at -inf.
template <class V> LOOM_VM_INLINE V loom_gelu_tanh(V x) {
  const V s = loom_sigmoid(x * (x * x * 0.0713548162726f + 1.5957691216057308f));
  return loom_select(s == 0.0f, loom_splat<V>(-0.0f), x * s);
}
#undef LOOM_VM_INLINE
#undef LOOM_VM_AVX512
#undef LOOM_VM_AVX
#undef LOOM_VM_SSE
#endif  // LOOM_VECTOR_MATH_DEFINED
)LOOM";

}  // namespace

std::string VectorMathSource() { return kSource; }

std::vector<std::string> VectorMathFunctions() {
  return {"loom_int_of",      "loom_int_t",    "loom_splat",     "loom_splat_int",
          "loom_as_int",      "loom_as_float", "loom_select",    "loom_abs",
          "loom_copysign",    "loom_max",      "loom_min",       "loom_clamp_above",
          "loom_clamp_below", "loom_scale2",   "loom_recip_1_2", "loom_exp_in_range",
          "loom_exp",         "loom_log",      "loom_log1p",     "loom_tanh",
          "loom_sigmoid",     "loom_softplus", "loom_erf_small", "loom_erfc_large",
          "loom_erf",         "loom_erfc",     "loom_gelu_erf",  "loom_gelu_tanh"};
}

}  // namespace loom::codegen
