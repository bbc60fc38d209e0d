// Sets of element types, the way ONNX's type constraints name them ("T: float16, float, double").
// The shape rules (graph/shape_rules_*.cc) and the reference kernels (kernels/) both check an
// operand against the set its operator allows, and both print the set in their error messages.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "loom/graph/tensor.h"

namespace loom::graph {

class DTypeSet {
 public:
  constexpr DTypeSet() = default;
  constexpr DTypeSet(std::initializer_list<DType> dtypes) {
    for (DType d : dtypes) bits_ |= Bit(d);
  }

  constexpr bool Contains(DType d) const { return d != DType::kUndefined && (bits_ & Bit(d)); }
  constexpr DTypeSet operator|(DTypeSet other) const { return FromBits(bits_ | other.bits_); }
  constexpr DTypeSet operator-(DTypeSet other) const { return FromBits(bits_ & ~other.bits_); }

  // "float16, bfloat16, float32, float64" (enum order).
  std::string ToString() const;

 private:
  static constexpr uint32_t Bit(DType d) { return uint32_t{1} << static_cast<uint32_t>(d); }
  static constexpr DTypeSet FromBits(uint32_t bits) {
    DTypeSet s;
    s.bits_ = bits;
    return s;
  }
  uint32_t bits_ = 0;
};

inline constexpr DTypeSet kFloatDTypes = {DType::kFloat16, DType::kBFloat16, DType::kFloat32,
                                          DType::kFloat64};
inline constexpr DTypeSet kSignedIntDTypes = {DType::kInt8, DType::kInt16, DType::kInt32,
                                              DType::kInt64};
inline constexpr DTypeSet kUnsignedIntDTypes = {DType::kUint8, DType::kUint16, DType::kUint32,
                                                DType::kUint64};
inline constexpr DTypeSet kIntDTypes = kSignedIntDTypes | kUnsignedIntDTypes;
inline constexpr DTypeSet kNumericDTypes = kFloatDTypes | kIntDTypes;
inline constexpr DTypeSet kBoolDTypes = {DType::kBool};
inline constexpr DTypeSet kAllDTypes = kNumericDTypes | kBoolDTypes;

}  // namespace loom::graph
