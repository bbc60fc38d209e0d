#include "loom/ops/lowering.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/graph/shape_inference.h"
#include "loom/ops/lower_common.h"

namespace loom::ops {
namespace {

const lower::LowerTable& Table() {
  static const lower::LowerTable* table = [] {
    auto* t = new lower::LowerTable();
    lower::RegisterMovementLowerings(t);
    lower::RegisterSoftmaxLowerings(t);
    lower::RegisterGatherLowerings(t);
    lower::RegisterReduceLowerings(t);
    lower::RegisterNormLowerings(t);
    lower::RegisterResizeLowerings(t);
    return t;
  }();
  return *table;
}

}  // namespace

absl::StatusOr<LoweredKernel> LowerNode(const graph::Graph& graph, const graph::Node& node,
                                        const Target& target) {
  if (target.kind != "cpu") {
    return absl::UnimplementedError(absl::StrCat(node.Describe(),
                                                 ": no generated kernel for target kind '",
                                                 target.kind, "' (lowered kernels are CPU only)"));
  }
  auto it = Table().find(node.op_type);
  if (it == Table().end()) {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": no generated kernel for op type '", node.op_type, "'"));
  }
  // Malformed nodes get shape inference's errors; an operator it does not know yet is the
  // lowering's to judge.
  absl::StatusOr<std::vector<graph::TensorType>> types = graph::InferNodeOutputTypes(graph, node);
  if (!types.ok() && types.status().code() != absl::StatusCode::kUnimplemented) {
    return types.status();
  }
  return it->second(lower::LowerCtx(graph, node, target));
}

LoweredKernel LowerStridedCopyKernel(const Target& target, const std::string& kind,
                                     const std::string& in_value, const std::string& out_value,
                                     graph::DType dtype, graph::Shape out_shape,
                                     std::vector<int64_t> in_strides) {
  return lower::LowerStridedCopy(
      target, kind, in_value, out_value, dtype,
      lower::StridedView{.out_shape = std::move(out_shape), .in_strides = std::move(in_strides)});
}

std::vector<std::string> LoweredOps() {
  std::vector<std::string> ops;
  for (const auto& [name, fn] : Table()) ops.push_back(name);
  return ops;
}

}  // namespace loom::ops
