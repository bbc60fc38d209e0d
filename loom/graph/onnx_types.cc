#include "loom/graph/onnx_types.h"

#include <iterator>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loom::graph {
namespace {

// TensorProto.DataType, ONNX 1.23 (onnx.proto): index = code.
constexpr const char* kOnnxTypeNames[] = {
    "UNDEFINED",      "FLOAT",      "UINT8",          "INT8",       "UINT16",    "INT16",
    "INT32",          "INT64",      "STRING",         "BOOL",       "FLOAT16",   "DOUBLE",
    "UINT32",         "UINT64",     "COMPLEX64",      "COMPLEX128", "BFLOAT16",  "FLOAT8E4M3FN",
    "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4",      "INT4",      "FLOAT4E2M1",
    "FLOAT8E8M0",     "UINT2",      "INT2",           "FLOAT6E2M3", "FLOAT6E3M2"};

// Loom's dtypes by ONNX code.
constexpr std::pair<int32_t, DType> kCodes[] = {
    {1, DType::kFloat32},  {2, DType::kUint8},    {3, DType::kInt8},    {4, DType::kUint16},
    {5, DType::kInt16},    {6, DType::kInt32},    {7, DType::kInt64},   {9, DType::kBool},
    {10, DType::kFloat16}, {11, DType::kFloat64}, {12, DType::kUint32}, {13, DType::kUint64},
    {16, DType::kBFloat16}};

constexpr char kSupportedTypes[] =
    "float16, bfloat16, float32, float64, bool, int8, int16, int32, int64, uint8, uint16, uint32, "
    "uint64";

}  // namespace

DType DTypeFromOnnx(int32_t elem_type) {
  for (const auto& [code, dtype] : kCodes) {
    if (code == elem_type) return dtype;
  }
  return DType::kUndefined;
}

int32_t OnnxTypeOf(DType dtype) {
  for (const auto& [code, d] : kCodes) {
    if (d == dtype) return code;
  }
  return 0;
}

std::string OnnxTypeName(int32_t elem_type) {
  if (elem_type >= 0 && elem_type < static_cast<int32_t>(std::size(kOnnxTypeNames))) {
    return kOnnxTypeNames[elem_type];
  }
  return absl::StrCat("unknown type #", elem_type);
}

absl::StatusOr<DType> SupportedDType(int32_t elem_type, std::string_view what) {
  const DType dtype = DTypeFromOnnx(elem_type);
  if (dtype == DType::kUndefined) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " has element type ", OnnxTypeName(elem_type),
                     ", which Loom does not support (supported: ", kSupportedTypes, ")"));
  }
  return dtype;
}

}  // namespace loom::graph
