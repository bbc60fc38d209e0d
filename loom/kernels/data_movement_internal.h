// Private to loom/kernels/: what the data-movement kernel files (shape_ops.cc, gather_scatter.cc,
// cast.cc, resize.cc) share. RegisterShapeKernels (shape_ops.cc) registers all of them, so the
// dispatch table in reference.cc needs one entry for the family.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/data_movement.h"
#include "loom/kernels/kernels_internal.h"

namespace loom::kernels::internal {

void RegisterGatherScatterKernels(KernelTable* table);  // gather_scatter.cc
void RegisterCastKernels(KernelTable* table);           // cast.cc
void RegisterResizeKernels(KernelTable* table);         // resize.cc

inline const std::byte* Bytes(const Tensor& t) {
  return static_cast<const std::byte*>(t.raw_data());
}
inline std::byte* Bytes(Tensor& t) { return static_cast<std::byte*>(t.raw_data()); }

// Advances a row-major multi-index over `shape`.
inline void NextIndex(std::vector<int64_t>& index, const Shape& shape) {
  for (size_t d = index.size(); d-- > 0;) {
    if (++index[d] < shape[d]) return;
    index[d] = 0;
  }
}

// An optional integer-list input (int64 or int32): nullopt when omitted.
absl::StatusOr<graph::OptionalInts> ReadOptionalInts(const OpContext& ctx, size_t i,
                                                     absl::string_view what);

}  // namespace loom::kernels::internal
