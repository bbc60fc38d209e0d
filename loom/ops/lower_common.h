// Private to the lowered kernels (lowering.h): what every family file (lower_<family>.cc) shares.
// `LowerCtx` is the per-node view (types, constant inputs, attributes, errors naming the node);
// `KernelWriter` prints one kernel in the one style they all use: the prelude, the typed
// arguments, and the parallel split of an outer range of work units into tasks. `StridedCopy`
// emits the copy loops that Transpose, Slice, Expand, Tile, DepthToSpace and SpaceToDepth reduce
// to. lowering.cc owns the operator table and the public API.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/lowering.h"
#include "loom/ops/target.h"

namespace loom::ops::lower {

// The per-node view a family's lowering function gets.
class LowerCtx {
 public:
  LowerCtx(const graph::Graph& graph, const graph::Node& node, const Target& target)
      : graph_(graph), node_(node), target_(target) {}

  const graph::Graph& graph() const { return graph_; }
  const graph::Node& node() const { return node_; }
  const Target& target() const { return target_; }
  int64_t opset() const { return graph_.opset; }

  // Input i is present (not an omitted optional input).
  bool Has(size_t i) const { return i < node_.inputs.size() && !node_.inputs[i].empty(); }
  bool HasOutput(size_t i) const { return i < node_.outputs.size() && !node_.outputs[i].empty(); }
  // Static types of input / output i; kInvalidArgument naming the node when unknown.
  absl::StatusOr<graph::TensorType> In(size_t i) const;
  absl::StatusOr<graph::TensorType> Out(size_t i) const;
  // The value of input i when it is a constant (initializer or Constant node); nullopt otherwise.
  std::optional<graph::Tensor> Const(size_t i) const;
  // The integers of constant input i; kUnimplemented when it is not a constant (the lowering
  // bakes it into the kernel, so a run-time value falls back to the reference kernel).
  absl::StatusOr<std::vector<int64_t>> ConstInts(size_t i, absl::string_view what) const;
  // The same for an optional input: nullopt when it is omitted.
  absl::StatusOr<std::optional<std::vector<int64_t>>> OptionalConstInts(
      size_t i, absl::string_view what) const;
  absl::StatusOr<std::optional<std::vector<double>>> OptionalConstDoubles(
      size_t i, absl::string_view what) const;

  // "<node>: <msg>" errors.
  absl::Status Invalid(absl::string_view msg) const;
  absl::Status Unimplemented(absl::string_view msg) const;
  // kUnimplemented naming the dtype, unless `dtype` is one of `allowed`.
  absl::Status RequireDType(graph::DType dtype, std::initializer_list<graph::DType> allowed,
                            absl::string_view what) const;
  // [-rank, rank) -> [0, rank); kInvalidArgument otherwise.
  absl::StatusOr<int64_t> Axis(int64_t axis, int64_t rank, absl::string_view what = "axis") const;

 private:
  const graph::Graph& graph_;
  const graph::Node& node_;
  const Target& target_;
};

// The C type that stores one element of `dtype` for data movement: an unsigned integer of the
// element's size ("uint32_t" for float32 and int32), so one kernel serves every dtype of a size.
std::string StorageCType(graph::DType dtype);

// `shape` seen as [outer, n, inner] around `axis` (in [0, rank)): the products of the dims
// before it, it, and after it.
struct AxisSplit {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
};
AxisSplit SplitAtAxis(const graph::Shape& shape, int64_t axis);

// Row-major strides (in elements) of `shape`.
std::vector<int64_t> RowMajorStrides(const graph::Shape& shape);

// Prints a lowered kernel:
//
//   <prelude: ABI typedefs, vf>  <vector math, when asked>  #define LOOM_L <lanes>  <globals>
//   static void loom_tasks(int64_t loom_begin, int64_t loom_end, void* loom_ctx) {
//     <typed __restrict pointers for every argument, named as given>
//     const int64_t loom_u0 = ..., loom_u1 = ...;   // the work units of these tasks
//     <body>
//   }
//   extern "C" void loom_kernel(void* const* buffers, const loom_parallel_t* par) {
//     run loom_tasks over [0, tasks) through par->parallel_for, or inline
//   }
//
// The body handles the work units [loom_u0, loom_u1). Units are grouped into tasks of about
// kTaskBytes of traffic each, so that tiny units do not pay a dispatch each. Every unit must
// compute the same bytes whoever runs it: the result is then bit-identical for any thread count.
class KernelWriter {
 public:
  static constexpr int64_t kTaskBytes = 32 * 1024;

  KernelWriter(const Target& target, std::string kind) : target_(target), kind_(std::move(kind)) {}

  // Declares the next kernel argument as a C pointer variable `name` of element type `ctype`.
  void Input(const std::string& value, const std::string& ctype, const std::string& name);
  void Output(const std::string& value, const std::string& ctype, const std::string& name);
  void Constant(graph::Tensor tensor, const std::string& ctype, const std::string& name);
  // Places the vector math (codegen/vector_math.h) at file scope, with horizontal reductions of
  // a vf: loom_hsum, loom_hmax, loom_hmin (lanes in order, so the result is deterministic).
  void UseVectorMath() { vector_math_ = true; }
  // Places `text` at file scope.
  void Global(const std::string& text);

  // The kernel: `units` work units, each moving about `unit_bytes` bytes.
  LoweredKernel Finish(int64_t units, int64_t unit_bytes, const std::string& body) const;

  int32_t lanes() const { return target_.VectorLanes(); }

 private:
  const Target& target_;
  std::string kind_;
  std::vector<LoweredKernel::Arg> args_;
  std::vector<std::string> decls_;
  std::vector<std::string> globals_;
  bool vector_math_ = false;
};

// out[i] = in[offset + sum_k i_k * in_strides[k]] for every index i of the dense `out_shape`
// (strides and offset in elements, strides may be 0 or negative): the form of every pure data
// movement. Simplify() drops size-1 dims and merges dims that are contiguous in both.
struct StridedView {
  graph::Shape out_shape;
  std::vector<int64_t> in_strides;
  int64_t offset = 0;

  void Simplify();
};

// C statements declaring `int64_t src` and `dst` for the work unit `unit` (a C expression)
// decomposed, row-major, over dims of extents `sizes`: src = offset + sum i_k in_strides[k], dst =
// sum i_k out_strides[k].
std::string UnitOffsets(const std::vector<int64_t>& sizes, const std::vector<int64_t>& in_strides,
                        const std::vector<int64_t>& out_strides, int64_t offset,
                        const std::string& unit);

// The view of transpose(reshape(x, in_shape), perm): x a dense tensor viewed as `in_shape`.
StridedView TransposeView(const graph::Shape& in_shape, const std::vector<int64_t>& perm);

// A pure data-movement node (Transpose, Slice, Expand, Tile, DepthToSpace, SpaceToDepth) as the
// view of its input 0 that its output is, with the kind profiles show ("transpose", ...):
// validated as shape inference does. The CPU lowering copies it with LowerStridedCopy, the CUDA
// one (cuda_lowering.h) with one thread per element. kUnimplemented for any other op.
struct MovementViewSpec {
  std::string kind;
  StridedView view;
};
absl::StatusOr<MovementViewSpec> MovementView(const LowerCtx& ctx);

// Lowers a copy through `view` from input `in_value` to output `out_value` of `dtype`.
LoweredKernel LowerStridedCopy(const Target& target, const std::string& kind,
                               const std::string& in_value, const std::string& out_value,
                               graph::DType dtype, StridedView view);

// How one reduction combines: `map` turns an element $x into a term, `combine` folds a term $v
// into the accumulator $a (for floats and vf alike), `finish` turns the accumulator $a into the
// output (`$n`: the number of reduced elements). The text uses codegen/vector_math.h.
struct Reducer {
  std::string init;
  std::string map = "$x";
  std::string combine = "$a + $v";
  std::string finish = "$a";
};
// The reducer of a Reduce* op (not ReduceLogSumExp); kUnimplemented for other ops.
absl::StatusOr<Reducer> ReducerFor(const LowerCtx& ctx, const std::string& op);
// A Reduce* node (float32 input) resolved: which input dims are reduced (the axes attribute or
// input, noop_with_empty_axes), how many elements each output reduces, and its passes: one
// reducer, or for ReduceLogSumExp a max (accumulator m, finished as m_fin: 0 when m is not
// finite) then a sum of exp(x - m_fin), whose result is m_fin + log(sum).
struct ReduceSpec {
  std::vector<bool> reduced;
  int64_t count = 1;
  bool log_sum_exp = false;
  std::vector<Reducer> passes;
};
absl::StatusOr<ReduceSpec> ResolveReduceNode(const LowerCtx& ctx);

// LayerNormalization's scale or bias (input `input`) as n per-element values of the normalized
// shape `norm`: nullopt when the value has exactly that many elements (read as it is), else the
// constant broadcast to `norm`. kInvalidArgument when it does not broadcast; kUnimplemented when
// it would broadcast at run time (not a constant).
absl::StatusOr<std::optional<graph::Tensor>> RowParamConstant(const LowerCtx& ctx, size_t input,
                                                              const graph::Shape& norm,
                                                              const std::string& name);
// LayerNormalization of X (float32) over the dims from `axis` on: `rows` rows of the n elements
// of shape `norm`. Validated.
struct LayerNormSpec {
  graph::Shape norm;
  int64_t rows = 1, n = 1;
  float epsilon = 1e-5f;
};
absl::StatusOr<LayerNormSpec> ResolveLayerNorm(const LowerCtx& ctx);
// GroupNormalization / InstanceNormalization of X [N, C, spatial...] as rows: a row is one
// (image, group) block of cg = C / groups channels, n = cg * spatial elements; scale and bias
// (inputs 1, 2) hold one value per channel (per_channel) or per group. Validated.
struct ChannelNormSpec {
  int64_t groups = 1, cg = 1, spatial = 1, n = 1, rows = 0;
  bool per_channel = true;
  float epsilon = 1e-5f;
};
absl::StatusOr<ChannelNormSpec> ResolveChannelNorm(const LowerCtx& ctx, int64_t groups,
                                                   bool per_channel);

// A C literal for `v` that round-trips exactly ("(1.5f)", "__builtin_inff()", ...).
std::string FloatLiteral(float v);

// The operator table: each family file registers its operators.
using LowerFn = absl::StatusOr<LoweredKernel> (*)(const LowerCtx& ctx);
using LowerTable = std::map<std::string, LowerFn>;
void RegisterMovementLowerings(LowerTable* table);  // lower_movement.cc
void RegisterSoftmaxLowerings(LowerTable* table);   // lower_softmax.cc
void RegisterGatherLowerings(LowerTable* table);    // lower_gather.cc
void RegisterReduceLowerings(LowerTable* table);    // lower_reduce.cc
void RegisterNormLowerings(LowerTable* table);      // lower_norm.cc
void RegisterResizeLowerings(LowerTable* table);    // lower_resize.cc

}  // namespace loom::ops::lower
