// Einsum equations: parsing and shape resolution, shared by Einsum's shape rule
// (shape_rules_nn.cc) and its reference kernel (kernels/einsum.cc), so both agree on which
// equations Loom accepts. Loom runs the equations that are products of matrices: every label
// appears at most once per operand (no diagonals); labels may be summed, contracted, kept or
// broadcast through "...".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

struct EinsumSpec {
  // One label per dim of each operand and of the output. Letters are their char codes; the
  // broadcast dims of "..." are labels kEllipsisLabel + k (k = 0 for the leftmost of them).
  std::vector<std::vector<int>> inputs;
  std::vector<int> output;
  // The extent of every label (index: label), after broadcasting; 0 for unused labels.
  std::vector<int64_t> sizes;
  Shape output_shape;

  static constexpr int kEllipsisLabel = 256;
};

// Parses `equation` ("ij,jk->ik", "...ij,...jk", "bhqd,bhkd->bhqk", ...) for operands of the
// given shapes. kInvalidArgument naming the equation for a syntax error, a label repeated
// within one operand or in the output (diagonals are not supported), an output label absent
// from the inputs, a rank mismatch, or sizes that disagree.
absl::StatusOr<EinsumSpec> ParseEinsum(absl::string_view equation,
                                       const std::vector<Shape>& shapes);

}  // namespace loom::graph
