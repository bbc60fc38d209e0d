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

// Element types: every Loom dtype, little-endian ('<f4', '<f2', '<f8', '<i1'..'<i8', '<u1'..'<u8',
// '|b1'; one-byte types with any byte-order mark). bfloat16 has no NumPy type: ml_dtypes writes
// it as a 2-byte void ('<V2'), which is read as bfloat16 only when the caller says so
// (`dtype_hint`); WriteNpy writes bfloat16 the same way. Fortran-order arrays are transposed into
// C order on read.
//
// Errors: kNotFound for a missing file; kInvalidArgument for a malformed or truncated header, a
// big-endian or unsupported descr, '<V2' without the bfloat16 hint, or a data section whose size
// does not match the shape. Sizes are checked before anything is allocated.
struct NpyReadOptions {
  // The dtype the caller expects, used only to name the element type of a raw 2-byte void
  // descr ('<V2'): kBFloat16 reads it as bfloat16; anything else refuses it.
  DType dtype_hint = DType::kUndefined;
};

absl::StatusOr<Tensor> ReadNpy(const std::string& path, const NpyReadOptions& options = {});
absl::Status WriteNpy(const Tensor& tensor, const std::string& path);

// The same on in-memory bytes. `what` names the source in error messages (e.g. a file path).
absl::StatusOr<Tensor> DecodeNpy(std::string_view bytes, std::string_view what = "npy data",
                                 const NpyReadOptions& options = {});
absl::StatusOr<std::string> EncodeNpy(const Tensor& tensor);

}  // namespace loom::graph
