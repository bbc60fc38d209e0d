// ONNX element type codes (TensorProto.DataType) and Loom's DType: the one mapping the importer,
// the exporter and Cast's `to` attribute use, with names for the codes Loom refuses (float8,
// int4, string, ...), including those newer than the ONNX headers Loom builds against.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

// DType of an ONNX element type code; kUndefined for codes outside Loom's set.
DType DTypeFromOnnx(int32_t elem_type);
// The ONNX code of `dtype` (0, UNDEFINED, for kUndefined).
int32_t OnnxTypeOf(DType dtype);
// "FLOAT", "FLOAT8E4M3FN", "INT4", ... ("unknown type #N" for codes ONNX does not define).
std::string OnnxTypeName(int32_t elem_type);

// The DType of `elem_type`, or kInvalidArgument "<what> has element type FLOAT8E4M3FN, which Loom
// does not support (supported: ...)".
absl::StatusOr<DType> SupportedDType(int32_t elem_type, std::string_view what);

}  // namespace loom::graph
