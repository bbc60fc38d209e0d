#include "loom/graph/op_versions.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace loom::graph {
namespace {

struct Version {
  int64_t since;
  VersionChange change;
};

using Table = std::map<std::string, std::vector<Version>, std::less<>>;

// Since-versions from ONNX's schemas (onnx 1.23.2, `onnx.defs.get_all_schemas_with_history()`),
// from the version opset 11 selects on. What each changed, per ONNX's Changelog.md:
//   T (kTypesOnly): element types added (bfloat16, int8/16 arithmetic, float8, int4, string...).
//     Types outside Loom's set are refused where a value has them (importer, Cast's `to`).
//   S (kSemantics), with what the rule and kernel branch on:
//     Clip 11: min/max inputs. Softmax, LogSoftmax 13: one axis instead of 2-D coercion.
//     ArgMax/ArgMin 12: select_last_index. ReduceSum 13 and the other reductions 18: axes input.
//     TopK 11: largest/sorted, negative axis. BatchNormalization 14: training_mode (refused when
//     set). AveragePool 19, LpPool 18: dilations (LpPool also ceil_mode). Gemm 11: C optional.
//     Dropout 12: ratio/training_mode inputs. GroupNormalization 21: scale/bias per channel.
//     Constant 12: value_float(s)/value_int(s). DepthToSpace 11: CRD mode. Gather 11 and OneHot
//     11: negative indices. GatherND 12: batch_dims. Pad 11: pads input; 18: axes input; 19: wrap.
//     Range 27: stash_type for half types. Reshape 14: allowzero. Resize 11: roi, sizes and the
//     mode attributes; 13: roi/scales optional; 18: axes, keep_aspect_ratio_policy, antialias;
//     19: half_pixel_symmetric. ScatterElements/ScatterND 16: reduction add/mul; 18: max/min.
//     Shape 15: start/end. SpaceToDepth 28: CRD mode. Split 13: split input; 18: num_outputs.
//     Squeeze/Unsqueeze 13: axes input. Hardmax 13: one axis instead of 2-D coercion.
//   Cast/CastLike 19 (saturate) and 24 (round_mode) only concern float8 targets, which Loom
//   refuses, so they load as types-only. Mod 28 allows fmod=0 on floats (floor modulo), which
//   was invalid before: an extension, not a change.
const Table& VersionTable() {
  constexpr VersionChange B = VersionChange::kBase;
  constexpr VersionChange T = VersionChange::kTypesOnly;
  constexpr VersionChange S = VersionChange::kSemantics;
  static const Table* table = new Table{
      {"Abs", {{6, B}, {13, T}}},
      {"Acos", {{7, B}, {22, T}}},
      {"Acosh", {{9, B}, {22, T}}},
      {"Add", {{7, B}, {13, T}, {14, T}}},
      {"And", {{7, B}}},
      {"ArgMax", {{11, B}, {12, S}, {13, T}}},
      {"ArgMin", {{11, B}, {12, S}, {13, T}}},
      {"Asin", {{7, B}, {22, T}}},
      {"Asinh", {{9, B}, {22, T}}},
      {"Atan", {{7, B}, {22, T}}},
      {"Atanh", {{9, B}, {22, T}}},
      {"AveragePool", {{11, B}, {19, S}, {22, T}}},
      {"BatchNormalization", {{9, B}, {14, S}, {15, T}}},
      {"Cast", {{9, B}, {13, T}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}, {28, T}}},
      {"CastLike", {{15, B}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Ceil", {{6, B}, {13, T}}},
      {"Celu", {{12, B}}},
      {"Clip", {{11, B}, {12, T}, {13, T}}},
      {"Concat", {{11, B}, {13, T}}},
      {"Constant", {{11, B}, {12, S}, {13, T}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"ConstantOfShape", {{9, B}, {20, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Conv", {{11, B}, {22, T}}},
      {"ConvTranspose", {{11, B}, {22, T}}},
      {"Cos", {{7, B}, {22, T}}},
      {"Cosh", {{9, B}, {22, T}}},
      {"CumSum", {{11, B}, {14, T}}},
      {"DepthToSpace", {{11, B}, {13, T}, {28, T}}},
      {"Div", {{7, B}, {13, T}, {14, T}}},
      {"Dropout", {{10, B}, {12, S}, {13, T}, {22, T}}},
      {"Einsum", {{12, B}, {28, T}}},
      {"Elu", {{6, B}, {22, T}}},
      {"Equal", {{11, B}, {13, T}, {19, T}}},
      {"Erf", {{9, B}, {13, T}}},
      {"Exp", {{6, B}, {13, T}}},
      {"Expand", {{8, B}, {13, T}}},
      {"Flatten", {{11, B}, {13, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Floor", {{6, B}, {13, T}}},
      {"Gather", {{11, B}, {13, T}}},
      {"GatherElements", {{11, B}, {13, T}}},
      {"GatherND", {{11, B}, {12, S}, {13, T}}},
      {"Gelu", {{20, B}}},
      {"Gemm", {{11, B}, {13, T}}},
      {"GlobalAveragePool", {{1, B}, {22, T}}},
      {"GlobalMaxPool", {{1, B}, {22, T}}},
      {"Greater", {{9, B}, {13, T}}},
      {"GreaterOrEqual", {{12, B}, {16, T}}},
      {"GroupNormalization", {{18, B}, {21, S}}},
      {"HardSigmoid", {{6, B}, {22, T}}},
      {"HardSwish", {{14, B}, {22, T}}},
      {"Hardmax", {{11, B}, {13, S}}},
      {"Identity",
       {{1, B}, {13, T}, {14, T}, {16, T}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"InstanceNormalization", {{6, B}, {22, T}}},
      {"IsInf", {{10, B}, {20, T}}},
      {"IsNaN", {{9, B}, {13, T}, {20, T}}},
      {"LayerNormalization", {{17, B}}},
      {"LeakyRelu", {{6, B}, {16, T}}},
      {"Less", {{9, B}, {13, T}}},
      {"LessOrEqual", {{12, B}, {16, T}}},
      {"Log", {{6, B}, {13, T}}},
      {"LogSoftmax", {{11, B}, {13, S}}},
      {"LpPool", {{11, B}, {18, S}, {22, T}}},
      {"MatMul", {{9, B}, {13, T}}},
      {"Max", {{8, B}, {12, T}, {13, T}}},
      {"MaxPool", {{11, B}, {12, T}, {22, T}}},
      {"Mean", {{8, B}, {13, T}}},
      {"Min", {{8, B}, {12, T}, {13, T}}},
      {"Mish", {{18, B}, {22, T}}},
      {"Mod", {{10, B}, {13, T}, {28, T}}},
      {"Mul", {{7, B}, {13, T}, {14, T}}},
      {"Neg", {{6, B}, {13, T}}},
      {"NonZero", {{9, B}, {13, T}}},
      {"Not", {{1, B}}},
      {"OneHot", {{11, B}, {28, T}}},
      {"Or", {{7, B}}},
      {"PRelu", {{9, B}, {16, T}}},
      {"Pad", {{11, B}, {13, T}, {18, S}, {19, S}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Pow", {{7, B}, {12, T}, {13, T}, {15, T}}},
      {"Range", {{11, B}, {27, S}}},
      {"Reciprocal", {{6, B}, {13, T}}},
      {"ReduceL1", {{11, B}, {13, T}, {18, S}}},
      {"ReduceL2", {{11, B}, {13, T}, {18, S}}},
      {"ReduceLogSumExp", {{11, B}, {13, T}, {18, S}, {28, T}}},
      {"ReduceMax", {{11, B}, {12, T}, {13, T}, {18, S}, {20, T}}},
      {"ReduceMean", {{11, B}, {13, T}, {18, S}}},
      {"ReduceMin", {{11, B}, {12, T}, {13, T}, {18, S}, {20, T}}},
      {"ReduceProd", {{11, B}, {13, T}, {18, S}}},
      {"ReduceSum", {{11, B}, {13, S}}},
      {"ReduceSumSquare", {{11, B}, {13, T}, {18, S}}},
      {"Relu", {{6, B}, {13, T}, {14, T}}},
      {"Reshape", {{5, B}, {13, T}, {14, S}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Resize", {{11, B}, {13, S}, {18, S}, {19, S}}},
      {"Round", {{11, B}, {22, T}}},
      {"ScatterElements", {{11, B}, {13, T}, {16, S}, {18, S}}},
      {"ScatterND", {{11, B}, {13, T}, {16, S}, {18, S}}},
      {"Selu", {{6, B}, {22, T}}},
      {"Shape", {{1, B}, {13, T}, {15, S}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Sigmoid", {{6, B}, {13, T}}},
      {"Sign", {{9, B}, {13, T}}},
      {"Sin", {{7, B}, {22, T}}},
      {"Sinh", {{9, B}, {22, T}}},
      {"Size", {{1, B}, {13, T}, {19, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Slice", {{11, B}, {13, T}}},
      {"Softmax", {{11, B}, {13, S}}},
      {"Softplus", {{1, B}, {22, T}}},
      {"Softsign", {{1, B}, {22, T}}},
      {"SpaceToDepth", {{1, B}, {13, T}, {28, S}}},
      {"Split", {{11, B}, {13, S}, {18, S}}},
      {"Sqrt", {{6, B}, {13, T}}},
      {"Squeeze", {{11, B}, {13, S}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Sub", {{7, B}, {13, T}, {14, T}}},
      {"Sum", {{8, B}, {13, T}}},
      {"Tan", {{7, B}, {22, T}}},
      {"Tanh", {{6, B}, {13, T}}},
      {"ThresholdedRelu", {{10, B}, {22, T}}},
      {"Tile", {{6, B}, {13, T}}},
      {"TopK", {{11, B}, {24, T}}},
      {"Transpose", {{1, B}, {13, T}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Trilu", {{14, B}}},
      {"Unsqueeze", {{11, B}, {13, S}, {21, T}, {23, T}, {24, T}, {25, T}}},
      {"Where", {{9, B}, {16, T}}},
      {"Xor", {{7, B}}},
  };
  return *table;
}

}  // namespace

int64_t OpSchemaVersion(std::string_view op_type, int64_t opset) {
  auto it = VersionTable().find(op_type);
  if (it == VersionTable().end()) return 0;
  int64_t selected = 0;
  for (const Version& v : it->second) {
    if (v.since <= opset) selected = v.since;
  }
  return selected;
}

absl::Status CheckOpVersion(const Node& node, int64_t opset) {
  auto it = VersionTable().find(node.op_type);
  if (it == VersionTable().end()) return absl::OkStatus();
  const std::vector<Version>& versions = it->second;
  const Version* selected = nullptr;
  for (const Version& v : versions) {
    if (v.since <= opset) selected = &v;
  }
  if (selected == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "operator ", node.op_type, " does not exist in opset ", opset, " (it was added in opset ",
        versions.front().since, "), in node '", node.name, "'"));
  }
  return absl::OkStatus();
}

std::vector<std::string> VersionedOps() {
  std::vector<std::string> ops;
  for (const auto& [name, _] : VersionTable()) ops.push_back(name);
  return ops;
}

}  // namespace loom::graph
