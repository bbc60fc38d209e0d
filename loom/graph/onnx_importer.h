// ONNX model import: parses an ONNX ModelProto (file or bytes) into a loom::graph::Graph. Called by
// the CLI (`loom import`, `loom tune`), the model zoo and the tests; the result still needs shape
// inference (another pass) before tasks can be extracted.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

struct ImportOptions {
  // Pins dynamic input dimensions (e.g. batch "N" or -1) by input name. The rank must match the
  // model's declaration and a pinned size may not contradict a size the model fixes.
  std::map<std::string, Shape> input_shapes;
};

// Largest model the importer will read (protobuf cannot parse a message above 2 GiB; bigger
// weights must live in external data files).
inline constexpr size_t kMaxOnnxModelBytes = (size_t{2} << 30) - 1;

// Imports the model at `path`; external data files are looked up next to it.
//
// What it accepts: default-domain opsets kMinOnnxOpset..kMaxOnnxOpset (op_versions.h; an older
// model is upgraded to kMinOnnxOpset with libonnx's version converter, and a failed upgrade is
// one kInvalidArgument line); every element type of DType (tensor.h), while float8, int4, int2,
// float4, string and complex values are refused naming the type; initializers as raw_data, the
// typed fields ONNX assigns each type (float16/bfloat16 as bits in int32_data) or external data.
// Symbolic or missing input dimensions become -1 unless `options` pins them. Nodes without a
// (unique) name get
// "<op_type>_<index>". Constant nodes always carry their value as a Tensor attribute "value"
// (value_float, value_floats, value_int and value_ints are converted). The graph comes back
// topologically sorted and validated.
//
// Errors (one message, never a crash): kNotFound for a missing model or external data file,
// kUnimplemented for features Loom does not support (non-default op domains, GRAPH attributes,
// sparse tensors), kInvalidArgument for everything malformed.
absl::StatusOr<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options = {});

// Same as ImportOnnxFile on an in-memory model. `base_dir`: where external data files are looked
// up (the model file's folder); locations must be relative and stay inside it.
absl::StatusOr<Graph> ImportOnnxBytes(std::string_view bytes, const std::string& base_dir,
                                      const ImportOptions& options = {});

}  // namespace loom::graph
