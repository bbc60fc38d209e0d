// The versions of ONNX's default-domain operators that Loom implements: one table of each
// operator's schema "since" versions (ONNX 1.23, opsets up to 28) with what each version changed.
// Shape inference checks every node against the version its model's opset selects, before the
// node's shape rule runs; the ONNX importer takes the opset range from here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "loom/graph/graph.h"

namespace loom::graph {

// Default-domain opsets Loom runs. Older models are upgraded to kMinOnnxOpset on import
// (onnx_importer.h); kMaxOnnxOpset is the newest opset of the onnx package the conformance cases
// come from (1.23.2).
inline constexpr int64_t kMinOnnxOpset = 11;
inline constexpr int64_t kMaxOnnxOpset = 28;

// What a schema version changed against the version before it.
enum class VersionChange : uint8_t {
  kBase,       // the version opset kMinOnnxOpset selects (or the operator's first)
  kTypesOnly,  // added element types only: it loads as the version before
  kSemantics,  // inputs, attributes or meaning changed: shape rules and kernels branch on opset
};

// The schema version `opset` selects for `op_type` (its largest since-version <= opset); 0 when
// the table does not list the operator or the operator is newer than the opset.
int64_t OpSchemaVersion(std::string_view op_type, int64_t opset);

// OK when `opset` selects a schema version of node.op_type; kUnimplemented "operator Foo does not
// exist in opset M (it was added in opset N), in node '...'" when the operator is newer than the
// opset. Every version from opset 11 on is implemented: a version that only added types loads
// as the one before, and where the meaning changed the shape rule and kernel branch on the
// opset. Operators the table does not list pass (shape inference refuses operators it has no
// rule for).
absl::Status CheckOpVersion(const Node& node, int64_t opset);

// Every operator the table lists, sorted (for tests: each operator with a shape rule has an
// entry).
std::vector<std::string> VersionedOps();

}  // namespace loom::graph
