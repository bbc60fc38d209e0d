// Cast and CastLike between every pair of Loom's dtypes, with the results ONNX Runtime gives on
// x86-64 (and NumPy's astype): floats convert to integers by truncation toward zero; NaN and
// values outside the target's range give what the x86 conversion instructions give (INT_MIN
// pattern for int32/int64, truncated to narrower types); integers convert to integers modulo
// 2^bits; anything to bool is `!= 0` (NaN is true); float to float16/bfloat16 rounds to nearest
// even. float8 and the other types outside the set are refused by the shape rule and here.
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/kernels/data_movement_internal.h"

namespace loom::kernels::internal {
namespace {

// One element of any dtype, widened: integers exactly (int64 or uint64), floats as double.
struct Value {
  enum Kind { kSigned, kUnsigned, kFloat } kind = kSigned;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
};

Value Load(DType dtype, const std::byte* p) {
  Value v;
  auto get = [p](auto zero) {
    decltype(zero) x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (dtype) {
    case DType::kFloat32:
      v.kind = Value::kFloat;
      v.f = get(float{});
      break;
    case DType::kFloat64:
      v.kind = Value::kFloat;
      v.f = get(double{});
      break;
    case DType::kFloat16:
      v.kind = Value::kFloat;
      v.f = graph::HalfToFloat(get(uint16_t{}));
      break;
    case DType::kBFloat16:
      v.kind = Value::kFloat;
      v.f = graph::BFloat16ToFloat(get(uint16_t{}));
      break;
    case DType::kInt8:
      v.i = get(int8_t{});
      break;
    case DType::kInt16:
      v.i = get(int16_t{});
      break;
    case DType::kInt32:
      v.i = get(int32_t{});
      break;
    case DType::kInt64:
      v.i = get(int64_t{});
      break;
    case DType::kBool:
      v.i = get(uint8_t{}) != 0;
      break;
    case DType::kUint8:
    case DType::kUint16:
    case DType::kUint32:
    case DType::kUint64:
      v.kind = Value::kUnsigned;
      v.u = dtype == DType::kUint8    ? get(uint8_t{})
            : dtype == DType::kUint16 ? get(uint16_t{})
            : dtype == DType::kUint32 ? get(uint32_t{})
                                      : get(uint64_t{});
      break;
    case DType::kUndefined:
      break;
  }
  return v;
}

// cvttsd2si: truncation, with NaN and out-of-range values giving the "integer indefinite"
// INT64_MIN (the 32-bit form gives INT32_MIN).
int64_t TruncateToInt64(double f) {
  if (!(f >= -9223372036854775808.0 && f < 9223372036854775808.0)) {
    return std::numeric_limits<int64_t>::min();
  }
  return static_cast<int64_t>(f);
}
int32_t TruncateToInt32(double f) {
  if (!(f > -2147483649.0 && f < 2147483648.0)) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(f);
}
// What compilers emit for double -> uint64 on x86-64: values >= 2^63 go through a subtraction.
uint64_t TruncateToUint64(double f) {
  if (f >= 9223372036854775808.0) {
    return static_cast<uint64_t>(TruncateToInt64(f - 9223372036854775808.0)) ^ (uint64_t{1} << 63);
  }
  return static_cast<uint64_t>(TruncateToInt64(f));
}

// The value as an integer bit pattern for an integer target of `bits` bits (two's complement,
// to be truncated by the caller).
uint64_t IntegerBits(const Value& v, DType to) {
  if (v.kind == Value::kSigned) return static_cast<uint64_t>(v.i);
  if (v.kind == Value::kUnsigned) return v.u;
  switch (to) {
    case DType::kInt64:
      return static_cast<uint64_t>(TruncateToInt64(v.f));
    case DType::kUint64:
      return TruncateToUint64(v.f);
    case DType::kUint32:  // via a 64-bit conversion
      return static_cast<uint64_t>(TruncateToInt64(v.f));
    default:  // int32 and narrower: via a 32-bit conversion
      return static_cast<uint64_t>(static_cast<int64_t>(TruncateToInt32(v.f)));
  }
}

double AsDouble(const Value& v) {
  switch (v.kind) {
    case Value::kSigned:
      return static_cast<double>(v.i);
    case Value::kUnsigned:
      return static_cast<double>(v.u);
    case Value::kFloat:
      break;
  }
  return v.f;
}

// float32 of the value, rounding integers and doubles once (as static_cast does).
float AsFloat(const Value& v) {
  switch (v.kind) {
    case Value::kSigned:
      return static_cast<float>(v.i);
    case Value::kUnsigned:
      return static_cast<float>(v.u);
    case Value::kFloat:
      break;
  }
  return static_cast<float>(v.f);
}

void Store(DType to, const Value& v, std::byte* p) {
  auto put = [p](auto x) { std::memcpy(p, &x, sizeof(x)); };
  switch (to) {
    case DType::kFloat32:
      put(AsFloat(v));
      return;
    case DType::kFloat64:
      put(AsDouble(v));
      return;
    case DType::kFloat16:
      put(graph::FloatToHalf(AsFloat(v)));
      return;
    case DType::kBFloat16:
      put(graph::FloatToBFloat16(AsFloat(v)));
      return;
    case DType::kBool: {
      const bool nonzero = v.kind == Value::kFloat    ? v.f != 0 || std::isnan(v.f)
                           : v.kind == Value::kSigned ? v.i != 0
                                                      : v.u != 0;
      put(static_cast<uint8_t>(nonzero));
      return;
    }
    case DType::kInt8:
    case DType::kUint8:
      put(static_cast<uint8_t>(IntegerBits(v, to)));
      return;
    case DType::kInt16:
    case DType::kUint16:
      put(static_cast<uint16_t>(IntegerBits(v, to)));
      return;
    case DType::kInt32:
    case DType::kUint32:
      put(static_cast<uint32_t>(IntegerBits(v, to)));
      return;
    case DType::kInt64:
    case DType::kUint64:
      put(IntegerBits(v, to));
      return;
    case DType::kUndefined:
      return;
  }
}

absl::StatusOr<Tensor> CastTo(const Tensor& x, DType to) {
  if (x.dtype() == to) return x;
  if (x.dtype() == DType::kUndefined) return absl::InvalidArgumentError("input is undefined");
  LOOM_ASSIGN_OR_RETURN(Tensor y, NewTensor(to, x.shape()));
  const size_t in_size = graph::DTypeSize(x.dtype());
  const size_t out_size = graph::DTypeSize(to);
  for (int64_t i = 0; i < x.num_elements(); ++i) {
    Store(to, Load(x.dtype(), Bytes(x) + i * in_size), Bytes(y) + i * out_size);
  }
  return y;
}

OpResult CastOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 1, 1, 1));
  LOOM_ASSIGN_OR_RETURN(DType to, graph::ResolveCastTarget(ctx.node));
  LOOM_ASSIGN_OR_RETURN(Tensor y, CastTo(ctx.inputs[0], to));
  return std::vector<Tensor>{std::move(y)};
}

OpResult CastLikeOp(const OpContext& ctx) {
  LOOM_RETURN_IF_ERROR(CheckInputs(ctx, 2, 2, 2));
  LOOM_ASSIGN_OR_RETURN(Tensor y, CastTo(ctx.inputs[0], ctx.inputs[1].dtype()));
  return std::vector<Tensor>{std::move(y)};
}

}  // namespace

void RegisterCastKernels(KernelTable* table) {
  (*table)["Cast"] = &CastOp;
  (*table)["CastLike"] = &CastLikeOp;
}

}  // namespace loom::kernels::internal
