// Shape rules: shape arithmetic and data movement. Each rule reads its node's input types and
// constant inputs and asks data_movement.h what they mean, as the reference kernels do.
#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/data_movement.h"
#include "loom/graph/shape_inference_internal.h"

namespace loom::graph::internal {
namespace {

// An optional constant integer-list input: nullopt when omitted, an error when present but not
// constant.
absl::StatusOr<OptionalInts> OptionalConstInts(const Ctx& c, size_t i, absl::string_view what) {
  if (!c.Has(i)) return OptionalInts();
  LOOM_ASSIGN_OR_RETURN(IntList v, c.ConstInts(i, what));
  return OptionalInts(std::move(v));
}

// An optional constant floating-point list input (Resize's roi and scales).
absl::StatusOr<std::optional<std::vector<double>>> OptionalConstDoubles(const Ctx& c, size_t i,
                                                                        absl::string_view what) {
  if (!c.Has(i)) return std::optional<std::vector<double>>();
  LOOM_ASSIGN_OR_RETURN(Tensor t, c.ConstIn(i, what));
  if (!IsFloatingDType(t.dtype())) {
    return c.Error(
        absl::StrCat(what, " must be a floating-point tensor, got ", t.type().ToString()));
  }
  std::vector<double> v(static_cast<size_t>(t.num_elements()));
  for (int64_t k = 0; k < t.num_elements(); ++k) v[static_cast<size_t>(k)] = t.DoubleAt(k);
  return std::optional<std::vector<double>>(std::move(v));
}

// Range-checks constant indices at shape inference time (the kernel checks them always).
absl::Status CheckConstIndices(const Ctx& c, size_t i, int64_t extent, const std::string& what) {
  if (std::optional<Tensor> t = c.MaybeConst(i); t.has_value()) {
    return CheckIndexRange(c.node(), *t, extent, what);
  }
  return absl::OkStatus();
}

absl::StatusOr<Types> InferCast(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"to", AttrKind::kInt}, {"saturate", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(DType to, ResolveCastTarget(c.node()));
  return Types{{to, x.shape}};
}

absl::StatusOr<Types> InferCastLike(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType like, c.In(1));
  return Types{{like.dtype, x.shape}};
}

absl::StatusOr<Types> InferConcat(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  std::vector<TensorType> inputs;
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(TensorType t, c.In(i));
    inputs.push_back(std::move(t));
  }
  LOOM_ASSIGN_OR_RETURN(ConcatSpec spec, ResolveConcat(c.node(), inputs));
  return Types{{inputs[0].dtype, spec.out}};
}

absl::StatusOr<Types> InferConstant(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(Tensor value, ConstantNodeValue(c.node()));
  return Types{value.type()};
}

absl::StatusOr<Types> InferConstantOfShape(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"value", AttrKind::kTensor}}));
  LOOM_ASSIGN_OR_RETURN(IntList shape, c.ConstInts(0, "shape"));
  LOOM_ASSIGN_OR_RETURN(TensorType t, ResolveConstantOfShape(c.node(), shape));
  return Types{t};
}

absl::StatusOr<Types> InferDepthToSpace(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"blocksize", AttrKind::kInt}, {"mode", AttrKind::kString}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(DepthSpaceSpec spec, ResolveDepthToSpace(c.node(), x.shape));
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferSpaceToDepth(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"blocksize", AttrKind::kInt}, {"mode", AttrKind::kString}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(DepthSpaceSpec spec, ResolveSpaceToDepth(c.node(), c.opset(), x.shape));
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferExpand(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(IntList shape, c.ConstInts(1, "shape"));
  LOOM_ASSIGN_OR_RETURN(Shape out, ResolveExpand(c.node(), x.shape, shape));
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferFlatten(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(Shape out, ResolveFlatten(c.node(), x.shape));
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferGather(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(1));
  LOOM_ASSIGN_OR_RETURN(GatherSpec spec, ResolveGather(c.node(), x.shape, idx));
  LOOM_RETURN_IF_ERROR(CheckConstIndices(c, 1, x.shape[static_cast<size_t>(spec.axis)],
                                         absl::StrCat("axis ", spec.axis)));
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferGatherElements(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(1));
  LOOM_ASSIGN_OR_RETURN(int64_t axis, ResolveGatherElements(c.node(), x.shape, idx));
  LOOM_RETURN_IF_ERROR(
      CheckConstIndices(c, 1, x.shape[static_cast<size_t>(axis)], absl::StrCat("axis ", axis)));
  return Types{{x.dtype, idx.shape}};
}

absl::StatusOr<Types> InferGatherND(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"batch_dims", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(1));
  LOOM_ASSIGN_OR_RETURN(GatherNDSpec spec, ResolveGatherND(c.node(), x.shape, idx));
  if (std::optional<Tensor> t = c.MaybeConst(1); t.has_value()) {
    LOOM_RETURN_IF_ERROR(CheckNDIndexRange(c.node(), *t, x.shape, spec.batch_dims));
  }
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferIdentity(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  return Types{x};
}

absl::StatusOr<Types> InferNonZero(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  std::optional<Tensor> t = c.MaybeConst(0);
  if (!t.has_value()) {
    return c.NotConstant(0, absl::StrCat("input '", c.node().inputs[0],
                                         "' is not constant; NonZero's output shape depends on "
                                         "its values and Loom needs static shapes"));
  }
  int64_t count = 0;
  for (int64_t i = 0; i < t->num_elements(); ++i) count += t->DoubleAt(i) != 0;
  return Types{{DType::kInt64, {static_cast<int64_t>(x.shape.size()), count}}};
}

absl::StatusOr<Types> InferOneHot(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(0));
  LOOM_ASSIGN_OR_RETURN(Tensor depth, c.ConstIn(1, "depth"));
  LOOM_ASSIGN_OR_RETURN(TensorType values, c.In(2));
  if (NumElements(values.shape) != 2 || values.shape.size() != 1) {
    return c.Error(absl::StrCat("values must be [off, on], got ", values.ToString()));
  }
  LOOM_ASSIGN_OR_RETURN(OneHotSpec spec, ResolveOneHot(c.node(), idx.shape, depth));
  return Types{{values.dtype, spec.out}};
}

absl::StatusOr<Types> InferPad(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"mode", AttrKind::kString}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(IntList pads, c.ConstInts(1, "pads"));
  if (c.Has(2)) {
    LOOM_ASSIGN_OR_RETURN(TensorType v, c.In(2));
    if (v.dtype != x.dtype || NumElements(v.shape) != 1) {
      return c.Error(absl::StrCat("constant_value must be a ", DTypeName(x.dtype), " scalar, got ",
                                  v.ToString()));
    }
  }
  LOOM_ASSIGN_OR_RETURN(OptionalInts axes, OptionalConstInts(c, 3, "axes"));
  LOOM_ASSIGN_OR_RETURN(PadSpec spec, ResolvePad(c.node(), c.opset(), x.shape, pads, axes));
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferRange(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(Tensor start, c.ConstIn(0, "start"));
  LOOM_ASSIGN_OR_RETURN(Tensor limit, c.ConstIn(1, "limit"));
  LOOM_ASSIGN_OR_RETURN(Tensor delta, c.ConstIn(2, "delta"));
  LOOM_ASSIGN_OR_RETURN(int64_t n, ResolveRangeCount(c.node(), start, limit, delta));
  return Types{{start.dtype(), {n}}};
}

absl::StatusOr<Types> InferReshape(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"allowzero", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(IntList spec, c.ConstInts(1, "shape"));
  LOOM_ASSIGN_OR_RETURN(Shape out, ResolveReshape(c.node(), x.shape, spec));
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferResize(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"mode", AttrKind::kString},
                                     {"nearest_mode", AttrKind::kString},
                                     {"coordinate_transformation_mode", AttrKind::kString},
                                     {"cubic_coeff_a", AttrKind::kFloat},
                                     {"exclude_outside", AttrKind::kInt},
                                     {"extrapolation_value", AttrKind::kFloat},
                                     {"antialias", AttrKind::kInt},
                                     {"axes", AttrKind::kInts},
                                     {"keep_aspect_ratio_policy", AttrKind::kString}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(auto roi, OptionalConstDoubles(c, 1, "roi"));
  LOOM_ASSIGN_OR_RETURN(auto scales, OptionalConstDoubles(c, 2, "scales"));
  LOOM_ASSIGN_OR_RETURN(OptionalInts sizes, OptionalConstInts(c, 3, "sizes"));
  LOOM_ASSIGN_OR_RETURN(ResizeSpec spec,
                        ResolveResize(c.node(), c.opset(), x.shape, roi, scales, sizes));
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferScatterElements(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axis", AttrKind::kInt}, {"reduction", AttrKind::kString}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(1));
  LOOM_ASSIGN_OR_RETURN(TensorType upd, c.In(2));
  LOOM_RETURN_IF_ERROR(ResolveScatterReduction(c.node(), c.opset()).status());
  LOOM_ASSIGN_OR_RETURN(int64_t axis, ResolveScatterElements(c.node(), x, idx, upd));
  LOOM_RETURN_IF_ERROR(
      CheckConstIndices(c, 1, x.shape[static_cast<size_t>(axis)], absl::StrCat("axis ", axis)));
  return Types{x};
}

absl::StatusOr<Types> InferScatterND(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"reduction", AttrKind::kString}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(TensorType idx, c.In(1));
  LOOM_ASSIGN_OR_RETURN(TensorType upd, c.In(2));
  LOOM_RETURN_IF_ERROR(ResolveScatterReduction(c.node(), c.opset()).status());
  LOOM_RETURN_IF_ERROR(CheckScatterND(c.node(), x, idx, upd));
  if (std::optional<Tensor> t = c.MaybeConst(1); t.has_value()) {
    LOOM_RETURN_IF_ERROR(CheckNDIndexRange(c.node(), *t, x.shape, 0));
  }
  return Types{x};
}

absl::StatusOr<Types> InferShape(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"start", AttrKind::kInt}, {"end", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  const DimRange r = ResolveShapeRange(c.node(), c.opset(), static_cast<int64_t>(x.shape.size()));
  return Types{{DType::kInt64, {r.end - r.start}}};
}

absl::StatusOr<Types> InferSize(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.In(0).status());
  return Types{{DType::kInt64, {}}};
}

absl::StatusOr<Types> InferSlice(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(IntList starts, c.ConstInts(1, "starts"));
  LOOM_ASSIGN_OR_RETURN(IntList ends, c.ConstInts(2, "ends"));
  LOOM_ASSIGN_OR_RETURN(OptionalInts axes, OptionalConstInts(c, 3, "axes"));
  LOOM_ASSIGN_OR_RETURN(OptionalInts steps, OptionalConstInts(c, 4, "steps"));
  LOOM_ASSIGN_OR_RETURN(SliceSpec spec, ResolveSlice(c.node(), x.shape, starts, ends, axes, steps));
  return Types{{x.dtype, spec.out}};
}

absl::StatusOr<Types> InferSplit(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs(
      {{"axis", AttrKind::kInt}, {"split", AttrKind::kInts}, {"num_outputs", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(OptionalInts split, OptionalConstInts(c, 1, "split"));
  LOOM_ASSIGN_OR_RETURN(SplitSpec spec,
                        ResolveSplit(c.node(), c.opset(), x.shape, split, c.node().outputs.size()));
  Types out;
  for (int64_t s : spec.sizes) {
    Shape shape = x.shape;
    shape[static_cast<size_t>(spec.axis)] = s;
    out.push_back({x.dtype, shape});
  }
  return out;
}

absl::StatusOr<Types> InferSqueeze(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axes", AttrKind::kInts}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(OptionalInts axes, OptionalConstInts(c, 1, "axes"));
  LOOM_ASSIGN_OR_RETURN(Shape out, ResolveSqueeze(c.node(), c.opset(), x.shape, axes));
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferTile(const Ctx& c) {
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(IntList repeats, c.ConstInts(1, "repeats"));
  LOOM_ASSIGN_OR_RETURN(Shape out, ResolveTile(c.node(), x.shape, repeats));
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferTranspose(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"perm", AttrKind::kInts}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(IntList perm, ResolvePerm(c.node(), static_cast<int64_t>(x.shape.size())));
  Shape out;
  for (int64_t p : perm) out.push_back(x.shape[static_cast<size_t>(p)]);
  return Types{{x.dtype, out}};
}

absl::StatusOr<Types> InferTrilu(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"upper", AttrKind::kInt}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_RETURN_IF_ERROR(ResolveTriluUpper(c.node(), x.shape).status());
  if (c.Has(1)) {
    LOOM_ASSIGN_OR_RETURN(TensorType k, c.In(1));
    if (k.dtype != DType::kInt64 || NumElements(k.shape) != 1) {
      return c.Error(absl::StrCat("k must be an int64 scalar, got ", k.ToString()));
    }
  }
  return Types{x};
}

absl::StatusOr<Types> InferUnsqueeze(const Ctx& c) {
  LOOM_RETURN_IF_ERROR(c.CheckAttrs({{"axes", AttrKind::kInts}}));
  LOOM_ASSIGN_OR_RETURN(TensorType x, c.In(0));
  LOOM_ASSIGN_OR_RETURN(OptionalInts axes, OptionalConstInts(c, 1, "axes"));
  LOOM_ASSIGN_OR_RETURN(Shape out, ResolveUnsqueeze(c.node(), c.opset(), x.shape, axes));
  return Types{{x.dtype, out}};
}

}  // namespace

void RegisterTensorShapeRules(RuleTable* table) {
  table->insert({
      {"Cast", InferCast},
      {"CastLike", InferCastLike},
      {"Concat", InferConcat},
      {"Constant", InferConstant},
      {"ConstantOfShape", InferConstantOfShape},
      {"DepthToSpace", InferDepthToSpace},
      {"Expand", InferExpand},
      {"Flatten", InferFlatten},
      {"Gather", InferGather},
      {"GatherElements", InferGatherElements},
      {"GatherND", InferGatherND},
      {"Identity", InferIdentity},
      {"NonZero", InferNonZero},
      {"OneHot", InferOneHot},
      {"Pad", InferPad},
      {"Range", InferRange},
      {"Reshape", InferReshape},
      {"Resize", InferResize},
      {"ScatterElements", InferScatterElements},
      {"ScatterND", InferScatterND},
      {"Shape", InferShape},
      {"Size", InferSize},
      {"Slice", InferSlice},
      {"SpaceToDepth", InferSpaceToDepth},
      {"Split", InferSplit},
      {"Squeeze", InferSqueeze},
      {"Tile", InferTile},
      {"Transpose", InferTranspose},
      {"Trilu", InferTrilu},
      {"Unsqueeze", InferUnsqueeze},
  });
}

}  // namespace loom::graph::internal
