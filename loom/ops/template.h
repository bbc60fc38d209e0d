// An operator template: for one workload and target, the knob space and a generator of kernel
// source for any config, plus the host-side glue that converts operands between the operator's
// natural layout (NCHW data, KCRS weights, row-major matrices) and the kernel's layout (e.g.
// NCHW[x]c blocks). Called by the builder (Emit), the measurer (Buffers/Pack/Unpack/Reference),
// the tuners (space, Features) and the compiled-model runtime.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/graph/tensor.h"
#include "loom/ops/config_space.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/kernel_source.h"
#include "loom/ops/target.h"

namespace loom::ops {

// One argument of a kernel, in calling order.
struct BufferSpec {
  std::string name;    // "data", "weight", "output", ...
  graph::Shape shape;  // float32 elements in the kernel's layout
  bool is_output = false;
};

struct TemplateOptions {
  // Adds a `fault` knob (0 none, 1 crash, 2 hang, 3 wrong answer) so tests can prove that a bad
  // candidate is an error record and never a dead tuner. Never enabled outside tests.
  bool test_faults = false;
  // cuda targets: Emit prints the host C++ emulation of the kernel (codegen/cuda_printer.h)
  // instead of CUDA, callable through the CPU kernel ABI, so tests check generated CUDA kernels
  // against Reference() without a GPU. Never enabled outside tests.
  bool cuda_host_emulation = false;
};

// An extra operand of a fused epilogue: how it is laid out relative to the kernel's output.
// Channels are the lanes of the output's vector registers (a convolution's output channels, a
// matrix product's columns), padded as the output is.
struct EpilogueOperand {
  enum class Kind {
    kChannel,       // one value per padded output channel (bias, BN scale and shift, PRelu slope)
    kElement,       // the output's own layout and shape (a residual)
    kBatchChannel,  // [batch, padded channels]: per image and channel (the squeeze-excite
                    // multiply); the batch is the convolution's N, the batched product's batch
  };
  Kind kind = Kind::kChannel;
};

// An elementwise tail fused into a kernel's output store, for compiled models (the tuning path
// emits none, so records stay valid). Two parts, applied in order to each output register:
//  - the shorthand every target takes: acc + bias[channel] + residual[element], then one
//    activation;
//  - `program` (CPU templates; CUDA ones answer kUnimplemented): a float32 elementwise program
//    whose input 0 is the value so far and input k >= 1 is operands[k - 1]; its one output is
//    stored.
// Buffers of a fused kernel: data, weight, then bias (one value per padded output channel), then
// residual (the output's layout and shape), then one per operand, then output.
struct Epilogue {
  enum class Activation { kNone, kRelu, kClip, kHardSwish, kSigmoid };
  bool bias = false;
  bool residual = false;
  Activation activation = Activation::kNone;
  float clip_min = 0;  // kClip bounds
  float clip_max = 0;
  ElementwiseProgram program;
  std::vector<EpilogueOperand> operands;

  bool has_program() const { return !program.instrs.empty(); }
  bool empty() const {
    return !bias && !residual && activation == Activation::kNone && !has_program();
  }
};

class Template {
 public:
  virtual ~Template() = default;

  // "conv2d_nchwc", "depthwise_conv2d_nchwc", "dense_pack", ...
  virtual std::string name() const = 0;
  virtual const graph::Workload& workload() const = 0;
  virtual const Target& target() const = 0;
  virtual const ConfigSpace& space() const = 0;

  // Source for `config`. kInvalidArgument when the config is outside the space or violates a
  // constraint the space cannot express (an instantiation error in AutoTVM's terms).
  virtual absl::StatusOr<KernelSource> Emit(const Config& config) const = 0;
  // Source for `config` with `epilogue` fused into the output store. An empty epilogue gives
  // exactly Emit(config). kUnimplemented when the template cannot fuse what is asked (the
  // default for templates without epilogue support; CUDA templates take no program).
  // kInvalidArgument for a malformed epilogue (a program that is not float32 with one output, or
  // operands that do not match its inputs).
  virtual absl::StatusOr<KernelSource> EmitFused(const Config& config,
                                                 const Epilogue& epilogue) const;
  // The arguments of EmitFused(config, epilogue)'s kernel, inputs first (see Epilogue).
  virtual std::vector<BufferSpec> FusedBuffers(const Config& config,
                                               const Epilogue& epilogue) const;

  // The kernel's arguments for `config`, inputs first.
  virtual std::vector<BufferSpec> Buffers(const Config& config) const = 0;
  // Natural-layout operands -> the kernel's input buffers (same order as Buffers' inputs).
  // Natural operands: conv: data [N,C,H,W], weight [K,C/groups,R,S];
  // dense: data [M,K], weight [N,K] (trans_b) or [K,N].
  virtual std::vector<graph::Tensor> PackInputs(
      const Config& config, const std::vector<graph::Tensor>& natural) const = 0;
  // The kernel's output buffer -> natural layout ([N,K,OH,OW] / [M,N]).
  virtual graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const = 0;
  // The expected natural output, from the reference kernels.
  virtual graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const = 0;
  // Natural operand shapes, for generating test inputs.
  virtual std::vector<graph::Shape> NaturalInputShapes() const = 0;

  // Numeric features of a config for the cost model: knob values plus derived loop-nest facts
  // (tile volumes, register-block size, inner-loop trip counts, estimated working sets).
  virtual std::vector<float> Features(const Config& config) const = 0;
  virtual std::vector<std::string> FeatureNames() const = 0;

  // A config known to be reasonable without tuning (used for untuned tasks and as a baseline).
  virtual Config DefaultConfig() const = 0;
  // Configs worth measuring before any model exists, best bet first: DefaultConfig() and, where a
  // template knows them, structurally different configs that are often near the best (e.g. for a
  // convolution, register blocks of other shapes). A search that starts from them is not betting
  // a whole first batch on one heuristic. Distinct and valid; the default returns DefaultConfig().
  virtual std::vector<Config> InitialConfigs() const { return {DefaultConfig()}; }
  // `config` to run on `threads` threads. Configs are measured on one core, where a knob that
  // only decides which loops form the parallel loop changes nothing, so a tuned config may carry
  // a value that leaves threads idle (e.g. a parallel loop over one output-channel block). A
  // template with such a knob re-picks it for `threads`; every other knob, and so the measured
  // work per element, stays. The default returns `config`.
  virtual Config ForThreads(const Config& config, int32_t threads) const { return config; }
};

// The template for `workload` on `target`. kUnimplemented when no template covers it.
absl::StatusOr<std::unique_ptr<Template>> MakeTemplate(const graph::Workload& workload,
                                                       const Target& target,
                                                       const TemplateOptions& options = {});

}  // namespace loom::ops
