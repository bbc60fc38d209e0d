// Dense tensors and their types: the values that flow through a Graph, the initializers it owns,
// and the buffers the reference kernels and executor read and write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::graph {

// Element types. float16 and bfloat16 are storage types: kernels compute in float32 and round
// back (see HalfToFloat and friends). The numeric values are stable (artifacts store names).
enum class DType : uint8_t {
  kUndefined = 0,
  kFloat32,
  kInt64,
  kInt32,
  kBool,
  kUint8,
  kInt8,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt16,
  kUint16,
  kUint32,
  kUint64,
};

// Size in bytes of one element; 0 for kUndefined.
size_t DTypeSize(DType dtype);
// "float32", "int64", ... (matches NumPy's names; "bfloat16" for kBFloat16).
const char* DTypeName(DType dtype);
// The dtype whose DTypeName is `name`; kUndefined when none is.
DType DTypeFromName(std::string_view name);
// Every defined dtype, in enum order (for tests and tables).
std::vector<DType> AllDTypes();

// Classes of element types.
bool IsFloatingDType(DType dtype);  // float16, bfloat16, float32, float64
bool IsIntegerDType(DType dtype);   // int8..int64, uint8..uint64 (not bool)
bool IsSignedIntegerDType(DType dtype);
// float16 / bfloat16: stored in 2 bytes, computed in float32.
inline bool IsHalfDType(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16;
}

// IEEE 754 binary16 and bfloat16 conversions. Float to half rounds to nearest even, overflows to
// infinity and keeps NaN a (quiet) NaN.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);

using Shape = std::vector<int64_t>;

// Number of elements of `shape` (1 for a scalar). Dimensions must be non-negative.
int64_t NumElements(const Shape& shape);
// "[1,3,224,224]".
std::string ShapeToString(const Shape& shape);

// A static tensor type. A dimension of -1 means "not known until run time"; Loom resolves every
// shape at import time for the models it supports, so -1 only survives for graph inputs that
// the user has not pinned.
struct TensorType {
  DType dtype = DType::kUndefined;
  Shape shape;

  bool operator==(const TensorType&) const = default;
  std::string ToString() const;  // "float32[1,3,224,224]"
};

// A dense, row-major (C order) tensor that owns its storage. Copies share the buffer (cheap);
// use Clone() for a deep copy. Storage is 64-byte aligned for vector kernels.
class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor.
  Tensor(DType dtype, Shape shape);

  // Fails with kInvalidArgument for negative dimensions or a size above kMaxBytes.
  static absl::StatusOr<Tensor> Create(DType dtype, Shape shape);
  static Tensor FromFloats(Shape shape, std::span<const float> values);
  static Tensor FromInt64s(Shape shape, std::span<const int64_t> values);
  static Tensor ScalarFloat(float v) { return FromFloats({}, std::span<const float>(&v, 1)); }
  static Tensor ScalarInt64(int64_t v) { return FromInt64s({}, std::span<const int64_t>(&v, 1)); }

  // Largest tensor Loom will allocate (guards against absurd dimensions in untrusted models).
  static constexpr size_t kMaxBytes = size_t{16} << 30;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  TensorType type() const { return {dtype_, shape_}; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const { return shape_[static_cast<size_t>(i)]; }
  int64_t num_elements() const { return num_elements_; }
  size_t num_bytes() const { return static_cast<size_t>(num_elements_) * DTypeSize(dtype_); }
  bool empty() const { return buffer_ == nullptr && num_elements_ == 0; }
  bool defined() const { return dtype_ != DType::kUndefined; }

  void* raw_data() { return buffer_.get(); }
  const void* raw_data() const { return buffer_.get(); }
  template <typename T>
  T* data() {
    return static_cast<T*>(raw_data());
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(raw_data());
  }
  template <typename T>
  std::span<T> values() {
    return {data<T>(), static_cast<size_t>(num_elements_)};
  }
  template <typename T>
  std::span<const T> values() const {
    return {data<T>(), static_cast<size_t>(num_elements_)};
  }

  // Same data, new shape with the same element count (shares the buffer).
  absl::StatusOr<Tensor> Reshaped(Shape new_shape) const;
  Tensor Clone() const;

  // Element i converted to int64 / double, whatever the dtype (for shape-like tensors; a float
  // converts as static_cast does, NaN and out-of-range values to 0).
  int64_t Int64At(int64_t i) const;
  double DoubleAt(int64_t i) const;

 private:
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  int64_t num_elements_ = 0;
  std::shared_ptr<std::byte[]> buffer_;
};

}  // namespace loom::graph
