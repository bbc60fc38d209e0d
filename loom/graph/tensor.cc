#include "loom/graph/tensor.h"

#include <cstring>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"

namespace loom::graph {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
    case DType::kInt64:
    case DType::kUint64:
      return 8;
    case DType::kFloat32:
    case DType::kInt32:
    case DType::kUint32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
    case DType::kUint16:
      return 2;
    case DType::kBool:
    case DType::kUint8:
    case DType::kInt8:
      return 1;
    case DType::kUndefined:
      return 0;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kInt64:
      return "int64";
    case DType::kInt32:
      return "int32";
    case DType::kBool:
      return "bool";
    case DType::kUint8:
      return "uint8";
    case DType::kInt8:
      return "int8";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat64:
      return "float64";
    case DType::kInt16:
      return "int16";
    case DType::kUint16:
      return "uint16";
    case DType::kUint32:
      return "uint32";
    case DType::kUint64:
      return "uint64";
    case DType::kUndefined:
      return "undefined";
  }
  return "undefined";
}

std::vector<DType> AllDTypes() {
  std::vector<DType> all;
  for (int d = static_cast<int>(DType::kFloat32); d <= static_cast<int>(DType::kUint64); ++d) {
    all.push_back(static_cast<DType>(d));
  }
  return all;
}

DType DTypeFromName(std::string_view name) {
  for (DType d : AllDTypes()) {
    if (name == DTypeName(d)) return d;
  }
  return DType::kUndefined;
}

bool IsFloatingDType(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || IsHalfDType(dtype);
}

bool IsSignedIntegerDType(DType dtype) {
  return dtype == DType::kInt8 || dtype == DType::kInt16 || dtype == DType::kInt32 ||
         dtype == DType::kInt64;
}

bool IsIntegerDType(DType dtype) {
  return IsSignedIntegerDType(dtype) || dtype == DType::kUint8 || dtype == DType::kUint16 ||
         dtype == DType::kUint32 || dtype == DType::kUint64;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal half: normalize into a float.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof(x));
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // Half subnormal or zero: value / 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    const uint32_t half_mant = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t r = half_mant + ((rem > halfway || (rem == halfway && (half_mant & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias and round the 13 dropped bits to nearest even (a carry may reach inf).
  uint32_t h = ((abs >> 23) - 112) << 10 | ((abs >> 13) & 0x3ffu);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float BFloat16ToFloat(uint16_t bits) {
  const uint32_t x = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

uint16_t FloatToBFloat16(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof(x));
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(x >> 16);
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string TensorType::ToString() const {
  return absl::StrCat(DTypeName(dtype), ShapeToString(shape));
}

namespace {
constexpr std::align_val_t kAlignment{64};

std::shared_ptr<std::byte[]> AllocateZeroed(size_t bytes) {
  // Aligned allocation so vectorized kernels may use aligned loads on tensor starts.
  size_t padded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  auto* p = static_cast<std::byte*>(::operator new[](padded, kAlignment));
  std::memset(p, 0, padded);
  return std::shared_ptr<std::byte[]>(p, [](std::byte* q) { ::operator delete[](q, kAlignment); });
}
}  // namespace

absl::StatusOr<Tensor> Tensor::Create(DType dtype, Shape shape) {
  if (dtype == DType::kUndefined) return absl::InvalidArgumentError("tensor dtype is undefined");
  size_t elems = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor shape ", ShapeToString(shape), " has a negative dimension"));
    }
    if (d != 0 && elems > kMaxBytes / static_cast<size_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor shape ", ShapeToString(shape),
                                                     " is too large (limit ", kMaxBytes >> 30,
                                                     " GiB)"));
    }
    elems *= static_cast<size_t>(d);
  }
  if (elems * DTypeSize(dtype) > kMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor shape ", ShapeToString(shape), " is too large (limit ", kMaxBytes >> 30, " GiB)"));
  }
  return Tensor(dtype, std::move(shape));
}

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  num_elements_ = NumElements(shape_);
  LOOM_CHECK(num_elements_ >= 0);
  buffer_ = AllocateZeroed(num_bytes());
}

Tensor Tensor::FromFloats(Shape shape, std::span<const float> values) {
  Tensor t(DType::kFloat32, std::move(shape));
  LOOM_CHECK(static_cast<int64_t>(values.size()) == t.num_elements());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), t.num_bytes());
  return t;
}

Tensor Tensor::FromInt64s(Shape shape, std::span<const int64_t> values) {
  Tensor t(DType::kInt64, std::move(shape));
  LOOM_CHECK(static_cast<int64_t>(values.size()) == t.num_elements());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), t.num_bytes());
  return t;
}

absl::StatusOr<Tensor> Tensor::Reshaped(Shape new_shape) const {
  for (int64_t d : new_shape) {
    if (d < 0) return absl::InvalidArgumentError("reshape target has a negative dimension");
  }
  if (NumElements(new_shape) != num_elements_) {
    return absl::InvalidArgumentError(absl::StrCat("cannot reshape ", ShapeToString(shape_), " (",
                                                   num_elements_, " elements) to ",
                                                   ShapeToString(new_shape)));
  }
  Tensor t = *this;
  t.shape_ = std::move(new_shape);
  return t;
}

Tensor Tensor::Clone() const {
  if (!defined()) return Tensor();
  Tensor t(dtype_, shape_);
  if (num_bytes() > 0) std::memcpy(t.raw_data(), raw_data(), num_bytes());
  return t;
}

namespace {
// static_cast<int64_t> of a floating value, with NaN and out-of-range values mapped to 0 (a cast
// of those is undefined behaviour).
int64_t FloatToInt64(double v) {
  if (!(v >= -9.2233720368547758e18 && v < 9.2233720368547758e18)) return 0;
  return static_cast<int64_t>(v);
}
}  // namespace

int64_t Tensor::Int64At(int64_t i) const {
  switch (dtype_) {
    case DType::kInt64:
      return data<int64_t>()[i];
    case DType::kInt32:
      return data<int32_t>()[i];
    case DType::kInt16:
      return data<int16_t>()[i];
    case DType::kInt8:
      return data<int8_t>()[i];
    case DType::kUint64:
      return static_cast<int64_t>(data<uint64_t>()[i]);
    case DType::kUint32:
      return data<uint32_t>()[i];
    case DType::kUint16:
      return data<uint16_t>()[i];
    case DType::kUint8:
      return data<uint8_t>()[i];
    case DType::kBool:
      return data<uint8_t>()[i] != 0;
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kFloat16:
    case DType::kBFloat16:
      return FloatToInt64(DoubleAt(i));
    case DType::kUndefined:
      break;
  }
  LOOM_CHECK(false);
  return 0;
}

double Tensor::DoubleAt(int64_t i) const {
  switch (dtype_) {
    case DType::kFloat32:
      return data<float>()[i];
    case DType::kFloat64:
      return data<double>()[i];
    case DType::kFloat16:
      return HalfToFloat(data<uint16_t>()[i]);
    case DType::kBFloat16:
      return BFloat16ToFloat(data<uint16_t>()[i]);
    case DType::kUint64:
      return static_cast<double>(data<uint64_t>()[i]);
    default:
      return static_cast<double>(Int64At(i));
  }
}

}  // namespace loom::graph
