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
    case DType::kFloat32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kInt32:
      return 4;
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
    case DType::kUndefined:
      return "undefined";
  }
  return "undefined";
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

int64_t Tensor::Int64At(int64_t i) const {
  switch (dtype_) {
    case DType::kInt64:
      return data<int64_t>()[i];
    case DType::kInt32:
      return data<int32_t>()[i];
    case DType::kFloat32:
      return static_cast<int64_t>(data<float>()[i]);
    case DType::kBool:
      return data<uint8_t>()[i] != 0;
    case DType::kUint8:
      return data<uint8_t>()[i];
    case DType::kInt8:
      return data<int8_t>()[i];
    case DType::kUndefined:
      break;
  }
  LOOM_CHECK(false);
  return 0;
}

double Tensor::DoubleAt(int64_t i) const {
  if (dtype_ == DType::kFloat32) return data<float>()[i];
  return static_cast<double>(Int64At(i));
}

}  // namespace loom::graph
