// The executable plan of a compiled model as plain data: steps (each a small struct saying which
// buffers it reads and writes), arena buffers with their planned offsets, tensor slots and
// constants. compiled_model.cc builds it from a graph and interprets it; artifact.cc writes it to
// plan.json + weights.bin and reads it back, so an exported model runs the very same plan.
// Internal to runtime/: users see CompiledModel.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "loom/base/fork_join_pool.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/runtime/compiled_model.h"

namespace loom::runtime {

// A kernel or host-step operand.
struct Ref {
  enum class Kind { kArena, kConst, kTensor } kind = Kind::kArena;
  int64_t index = 0;  // arena buffer, constant, or tensor slot
};

// An activation (N, C, H, W) in blocked layout: N, ceil(C/bn), H+pads, W+pads, bn. bn == 1 with
// no pads is plain NCHW.
struct BlockedGeo {
  int64_t n = 0, c = 0, h = 0, w = 0, bn = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;
  int64_t cb() const { return (c + bn - 1) / bn; }
  int64_t hp() const { return h + pt + pb; }
  int64_t wp() const { return w + pl + pr; }
  int64_t elems() const { return n * cb() * hp() * wp() * bn; }
};

// Copies a constant into its tensor slot (start of every run).
struct ConstStep {
  int64_t slot = 0;
  int64_t constant = 0;
};
// pack / repack / pad / unpack. `src` is an arena buffer or a tensor slot (NCHW); `dst` an arena
// buffer, or a tensor slot that gets a fresh NCHW float tensor every run.
struct RelayoutStep {
  Ref src;
  BlockedGeo src_geo;
  Ref dst;
  BlockedGeo dst_geo;
};
// A generated kernel. Dense kernels write a fresh tensor in `out_slot` of `out_shape` (the
// kernel's padded N); when n_real differs, the first n_real columns of each of m_rows rows are
// kept.
struct KernelStep {
  int64_t kernel = 0;  // index into the model's kernels
  std::vector<Ref> args;
  bool dense = false;
  int64_t out_slot = -1;
  graph::Shape out_shape;
  int64_t n_real = 0, m_rows = 0;
};
// MaxPool / GlobalAveragePool on the blocked layout (bn = in.bn = out.bn).
struct PoolStep {
  int64_t src = 0, dst = 0;  // arena buffers
  BlockedGeo in, out;
  bool global = false;
  int64_t kh = 0, kw = 0, sh = 1, sw = 1, pt = 0, pl = 0;
};
// y = x + x2 (other >= 0) or y = act(x), over `total` floats of blocked buffers.
struct EltwiseStep {
  int64_t src = 0, other = -1, dst = 0;
  int64_t total = 0;
  ops::Epilogue act;  // only activation / clip bounds are used
};
// Channel concat of blocked buffers whose channels are multiples of the block size.
struct ConcatStep {
  std::vector<int64_t> srcs;    // arena buffers
  std::vector<int64_t> blocks;  // channel blocks of each source
  int64_t dst = 0;
  int64_t n = 0, out_blocks = 0, plane = 0;  // plane = H * W * bn floats
};
// A node run by the reference kernels on NCHW tensors (slot -1: omitted optional operand).
struct ReferenceStep {
  graph::Node node;
  int64_t opset = 17;
  std::vector<int64_t> in_slots, out_slots;
};

using StepOp = std::variant<ConstStep, RelayoutStep, KernelStep, PoolStep, EltwiseStep, ConcatStep,
                            ReferenceStep>;

struct Step {
  std::string name;  // node name, or the value a layout step transforms
  std::string kind;  // what profiles show: "conv2d_nchwc+bias+relu", "repack", "ref:Flatten"
  StepOp op;
  std::vector<int64_t> buffers;  // arena buffers read or written
  std::vector<int64_t> tensors;  // tensor slots read or written
  std::vector<int64_t> release;  // tensor slots dead after this step (filled by the planner)
};

struct BufferInfo {
  int64_t bytes = 0;
  int64_t offset = 0;
  int64_t first = -1, last = -1;  // step interval of its lifetime
  std::string what;
};

struct Plan {
  std::vector<Step> steps;
  std::vector<BufferInfo> buffers;
  std::vector<graph::Tensor> consts;
  int64_t num_tensor_slots = 0;
  std::vector<std::pair<graph::ValueInfo, int64_t>> inputs;  // graph input -> tensor slot
  std::vector<graph::ValueInfo> output_infos;                // graph outputs, in order
  std::vector<int64_t> outputs;                              // their tensor slots
  int64_t arena_bytes = 0;
  int64_t num_kernels = 0;
  ops::Isa isa = ops::Isa::kGeneric;  // what the kernels were generated for
  std::string target_key;
};

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
  std::vector<loom_kernel_fn> kernels;  // plan.num_kernels entries
  // Sources of the kernels (Compile only; empty for a loaded artifact): what Export builds.
  std::vector<ops::KernelSource> kernel_sources;
  std::vector<std::unique_ptr<SharedLibrary>> libraries;
  std::unique_ptr<base::ForkJoinPool> pool;  // intra-op threads (null for one thread)
  loom_parallel_t par{};
  std::unique_ptr<char, void (*)(void*)> arena{nullptr, &std::free};

  absl::StatusOr<std::vector<graph::Tensor>> Execute(const std::map<std::string, graph::Tensor>& in,
                                                     std::vector<StepTiming>* timings);
};

}  // namespace loom::runtime
