// NumPy .npy files: reads and writes dense tensors (format versions 1.0, 2.0 and 3.0 on read,
// 1.0 or 2.0 on write). Used for model inputs and reference outputs (`loom run --input x.npy`),
// and by tests that compare against NumPy / onnxruntime results.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

// Supported element types: little-endian '<f4', '<i8', '<i4', and '|u1', '|b1', '|i1'; C order
// only. kNotFound for a missing file; kInvalidArgument for a malformed header, a Fortran-order
// array, an unsupported dtype, or a data section whose size does not match the shape.
absl::StatusOr<Tensor> ReadNpy(const std::string& path);
absl::Status WriteNpy(const Tensor& tensor, const std::string& path);

// The same on in-memory bytes. `what` names the source in error messages (e.g. a file path).
absl::StatusOr<Tensor> DecodeNpy(std::string_view bytes, std::string_view what = "npy data");
absl::StatusOr<std::string> EncodeNpy(const Tensor& tensor);

}  // namespace loom::graph
