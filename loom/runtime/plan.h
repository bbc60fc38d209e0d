// The executable plan of a compiled model as plain data: steps (each a small struct saying which
// operands it reads and writes), arena buffers with their planned offsets, and constants. Every
// value lives in one place: an arena buffer (intermediates of any dtype, natural row-major or
// blocked NCHW[x]c), a constant, a graph input (read in place) or a graph output (written by the
// step that computes it). plan_builder.cc builds the plan from a graph, plan_executor.cc runs it,
// artifact.cc writes it to plan.json + weights.bin and reads it back, so an exported model runs
// the very same plan. Internal to runtime/: users see CompiledModel.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "loom/base/fork_join_pool.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/runtime/compiled_model.h"

namespace loom::runtime {

// Where an operand lives.
struct Ref {
  enum class Kind : uint8_t {
    kArena,   // plan.buffers[index]
    kConst,   // plan.consts[index]
    kInput,   // the caller's tensor for plan.inputs[index] (read only)
    kOutput,  // the tensor returned for plan.outputs[index]
  };
  Kind kind = Kind::kArena;
  int64_t index = 0;
  bool operator==(const Ref&) const = default;
};

// An activation (N, C, H, W) in blocked layout: N, ceil(C/bn), H+pads, W+pads, bn (float32).
// bn == 1 with no pads is plain NCHW.
struct BlockedGeo {
  int64_t n = 0, c = 0, h = 0, w = 0, bn = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;
  int64_t cb() const { return (c + bn - 1) / bn; }
  int64_t hp() const { return h + pt + pb; }
  int64_t wp() const { return w + pl + pr; }
  int64_t elems() const { return n * cb() * hp() * wp() * bn; }
};

// pack / repack / pad / unpack between NCHW and blocked layouts (float32). Channels past C in a
// blocked destination are zeroed unless the block sizes match.
struct RelayoutStep {
  Ref src;
  BlockedGeo src_geo;
  Ref dst;
  BlockedGeo dst_geo;
};
// A generated kernel: plan.kernels[kernel] called with `args` (in its argument order).
struct KernelStep {
  int64_t kernel = 0;
  std::vector<Ref> args;
};
// Pooling on the blocked layout (bn = in.bn = out.bn), run by the executor's own loop. The
// planner now emits pools as generated kernels (ops::EmitBlockedPool, a KernelStep); this step
// stays so that artifacts of format version 2 written before that still run. TODO(issue 17):
// drop it with the next artifact format version.
struct PoolStep {
  enum class Kind : uint8_t { kMax, kAverage, kGlobalAverage, kGlobalMax };
  Kind kind = Kind::kMax;
  Ref src, dst;
  BlockedGeo in, out;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, pt = 0, pl = 0, pb = 0, pr = 0, dh = 1, dw = 1;
  bool count_include_pad = false;  // kAverage: divide by the whole window, pads included
};
// Channels of blocked sources copied into a blocked destination (same N, H, W): channel concat,
// channel slices and splits, channel shuffles. Runs of channels, in any order.
struct ChannelRun {
  int64_t src = 0;    // index into ChannelMapStep::srcs
  int64_t src_c = 0;  // first source channel
  int64_t dst_c = 0;  // first destination channel
  int64_t len = 0;    // channels
};
struct ChannelMapStep {
  std::vector<Ref> srcs;
  std::vector<BlockedGeo> src_geos;
  Ref dst;
  BlockedGeo dst_geo;
  std::vector<ChannelRun> runs;  // cover every destination channel exactly once
};
// `rows` rows of `row_bytes` from src to dst, with their own strides (a cropped dense output, a
// graph output that is also an input or a constant, ...).
struct CopyStep {
  Ref src, dst;
  int64_t rows = 1, row_bytes = 0, src_stride = 0, dst_stride = 0;
};
// A node run by its reference kernel: operands copied into tensors and the results copied back
// (the fallback for what no generated kernel covers). An omitted optional operand has no ref.
struct TypedRef {
  Ref ref;
  graph::TensorType type;
  bool present = true;
};
struct ReferenceStep {
  graph::Node node;
  int64_t opset = 17;
  std::vector<TypedRef> inputs, outputs;
};

using StepOp =
    std::variant<RelayoutStep, KernelStep, PoolStep, ChannelMapStep, CopyStep, ReferenceStep>;

struct Step {
  std::string name;  // node name, or the value a layout step transforms
  std::string kind;  // what profiles show: "conv2d_nchwc+Add+Relu", "repack", "ref:TopK"
  StepOp op;
};

struct BufferInfo {
  int64_t bytes = 0;
  int64_t offset = 0;
  int64_t first = -1, last = -1;  // step interval of its lifetime (the planner's)
  std::string what;
};

// What a kernel does with its arguments: the bytes each spans (what the kernel reads or writes
// through it) and whether it writes it.
struct KernelArgs {
  std::vector<int64_t> bytes;
  std::vector<bool> written;
};

struct Plan {
  std::vector<Step> steps;
  std::vector<BufferInfo> buffers;
  std::vector<graph::Tensor> consts;
  std::vector<graph::ValueInfo> inputs;   // graph inputs, in order
  std::vector<graph::ValueInfo> outputs;  // graph outputs, in order
  std::vector<KernelArgs> kernels;        // per kernel
  int64_t arena_bytes = 0;
  ops::Isa isa = ops::Isa::kGeneric;  // what the kernels were generated for
  std::string target_key;
};

// Calls f(ref, bytes_needed, written) for every operand of `op` (bytes_needed: how much of the
// operand the step touches, from the step's own fields; -1 where only the kernel table knows,
// INT64_MAX where the fields overflow).
void ForEachRef(const StepOp& op, const std::function<void(const Ref&, int64_t, bool)>& f);

// The bytes a step reads and writes (each operand's span; a kernel's from plan.kernels),
// saturating at INT64_MAX: the plan's measure of a step's work. Precondition: ValidatePlan(plan).
int64_t StepWorkBytes(const Plan& plan, const Step& step);

// Steps that touch fewer bytes than this run on the calling thread alone, even in a multi-thread
// model: below it (a few microseconds of memory-bound work) a parallel loop gains less than its
// fork-join costs, and on a busy machine a worker preempted in the middle of its chunk holds the
// whole step up for a time slice (milliseconds). Convolutions and matmuls of any real layer are
// far above it.
inline constexpr int64_t kMinParallelStepBytes = 64 * 1024;

// Per step, whether it runs on the model's thread pool: StepWorkBytes >= min_bytes.
std::vector<bool> ParallelSteps(const Plan& plan, int64_t min_bytes);

// Every index of the plan is in range and every operand fits what it points at (arena buffers
// inside the arena, kernel arguments at least as large as the kernel reads or writes, geometry
// sizes without overflow), so a tampered plan is an error, not a wild access. kDataLoss naming
// the first offending step.
absl::Status ValidatePlan(const Plan& plan);

// Keeps a dlopen'ed library alive; dlclose on destruction.
class SharedLibrary {
 public:
  explicit SharedLibrary(void* handle) : handle_(handle) {}
  ~SharedLibrary();
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;
  void* handle() const { return handle_; }

 private:
  void* handle_;
};

struct CompiledModel::Impl {
  Plan plan;
  CompileStats stats;
  int32_t num_threads = 1;
  std::vector<loom_kernel_fn> kernels;  // plan.kernels.size() entries
  // Sources of the kernels (Compile only; empty for a loaded artifact): what Export builds.
  std::vector<ops::KernelSource> kernel_sources;
  std::vector<std::unique_ptr<SharedLibrary>> libraries;
  // Per step, whether it gets `par` or runs on the caller alone (ParallelSteps, set by
  // Instantiate; empty runs every step on `par`).
  std::vector<bool> parallel_steps;
  std::unique_ptr<base::ForkJoinPool> pool;  // intra-op threads (null for one thread)
  loom_parallel_t par{};
  std::unique_ptr<char, void (*)(void*)> arena{nullptr, &std::free};

  absl::StatusOr<std::vector<graph::Tensor>> Execute(const std::map<std::string, graph::Tensor>& in,
                                                     std::vector<StepTiming>* timings);
};

// Builds the plan of `graph` into `impl` (plan, kernels and their sources, stats).
absl::Status BuildPlan(const graph::Graph& graph, const CompileOptions& options,
                       CompiledModel::Impl* impl);

}  // namespace loom::runtime
