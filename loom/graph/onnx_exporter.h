// ONNX model export: writes a loom::graph::Graph as an ONNX ModelProto (IR version 8, default
// domain opset = Graph::opset, producer "loom"). Called by the CLI (`loom export`) and by tests
// that round-trip graphs through the importer.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/graph.h"

namespace loom::graph {

// Serializes `graph` (which must pass Graph::Validate()). Initializers and tensor attributes are
// written as raw_data; inputs and outputs with their types (-1 dimensions become symbolic), and
// value_types of intermediate values as value_info. Fails with kInvalidArgument for an invalid
// graph, an undefined tensor, or a model above 2 GiB (ONNX's single-file limit).
absl::StatusOr<std::string> ExportOnnxBytes(const Graph& graph);

// ExportOnnxBytes written to `path` (overwritten).
absl::Status ExportOnnxFile(const Graph& graph, const std::string& path);

}  // namespace loom::graph
