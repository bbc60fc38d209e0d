// Pieces shared by the CPU templates (conv2d_nchwc.cc, depthwise_conv2d_nchwc.cc, dense_pack.cc):
// a base class holding workload/target/space, knob lookup, the test-fault statements, and the
// factories MakeTemplate (template.cc) dispatches to. Internal to ops/.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/codegen/loop_nest.h"
#include "loom/ops/template.h"

namespace loom::ops::internal {

class TemplateBase : public Template {
 public:
  TemplateBase(graph::Workload workload, Target target, TemplateOptions options)
      : workload_(workload), target_(std::move(target)), options_(options) {}

  const graph::Workload& workload() const override { return workload_; }
  const Target& target() const override { return target_; }
  const ConfigSpace& space() const override { return space_; }
  // The plain kernel is EmitFused's without an epilogue: templates on this base implement
  // EmitFused (and FusedBuffers), not Emit.
  absl::StatusOr<KernelSource> Emit(const Config& config) const override {
    return EmitFused(config, Epilogue{});
  }

 protected:
  int64_t Knob(const Config& c, std::string_view name) const { return space_.Value(c, name); }
  // kInvalidArgument unless `c` is in the space and satisfies its constraints.
  absl::Status CheckInSpace(const Config& c) const;
  // Constrains the space to configs whose register block fits the ISA's vector registers:
  // `regs(values of knobs, in the order named)` registers are needed; `formula` says how, for
  // messages. At most 8 knobs.
  void AddRegisterConstraint(const std::string& formula, const std::vector<std::string>& knobs,
                             std::function<int64_t(std::span<const int64_t>)> regs);
  // Adds the `fault` knob when options ask for it (call last when building the space).
  void MaybeAddFaultKnob();
  int64_t Fault(const Config& c) const;
  // Statements that make the kernel crash / hang at its start (fault 1 / 2), and the statement
  // that perturbs `output` at its end (fault 3). Empty for fault 0.
  std::vector<codegen::Stmt> FaultPrologue(const Config& c) const;
  std::vector<codegen::Stmt> FaultEpilogue(const Config& c, const std::string& output) const;
  // Picks, for each knob, the value in `wanted` (by name) or the closest one not above it
  // (else the smallest). Knobs missing from `wanted` take their first value.
  Config ClosestConfig(const std::vector<std::pair<std::string, int64_t>>& wanted) const;
  // Vector registers of the target ISA (32 for AVX-512, 16 otherwise).
  int64_t NumVectorRegisters() const;
  // Vector widths the ISA offers (AVX-512: 16 and 8), widest first.
  std::vector<int64_t> VectorWidthChoices() const;
  // A CPU kernel for `config` with vectors of `vec` lanes and `ep`'s parameters and globals; its
  // body holds the fault prologue, for the template to append to.
  codegen::Kernel StartKernel(const Config& config, const Epilogue& ep, int64_t vec) const;
  // Appends the fault epilogue to `kernel` and prints it with the target's compile flags.
  absl::StatusOr<KernelSource> FinishKernel(const Config& config, codegen::Kernel kernel) const;

  // An outer loop of a blocked kernel: its variable and trip count.
  struct OuterLoop {
    std::string var;
    int64_t extent;
  };
  // The whole kernel of a blocked template (the NCHWc convolutions): `block` inside the `outer`
  // loops, outermost first, whose first `parallel` loops are fused into one parallel loop (each
  // index recovered from its position) and the rest run serially inside it.
  absl::StatusOr<KernelSource> EmitBlockedKernel(const Config& config, const Epilogue& ep,
                                                 int64_t vec, const std::vector<OuterLoop>& outer,
                                                 size_t parallel,
                                                 std::vector<codegen::Stmt> block) const;

  graph::Workload workload_;
  Target target_;
  TemplateOptions options_;
  ConfigSpace space_;
};

// Fused epilogues (Template::EmitFused), shared by the templates: the one way a template fuses.
// Kernel parameters data, weight, [bias], [residual], one per program operand (`ep0`, ...),
// output.
std::vector<codegen::KernelParam> FusedParams(const Epilogue& e);
// kInvalidArgument unless `e` can be emitted: a float32 program with one output whose inputs
// are the accumulator and one per operand.
absl::Status CheckEpilogue(const Epilogue& e);
// The whole epilogue as one float32 program: input 0 the accumulator, then bias, residual and
// the operands as present; the shorthand's additions and activation first, then e.program. The
// CPU printers (EpilogueStmts) and the CUDA ones (cuda_epilogue.h) both print it.
ElementwiseProgram EpilogueProgram(const Epilogue& e);
// File-scope helpers the epilogue statements call (empty for an empty epilogue, so that the
// plain kernel is the tuning kernel).
std::vector<std::string> EpilogueGlobals(const Epilogue& e, int64_t lanes);
// Where an output register sits, for the operands' addresses: element offsets as C expressions
// (loop variables as ${var}).
struct EpilogueSite {
  std::string channel;   // the register's first lane among the padded channels
  std::string element;   // the register's offset in the output buffer
  std::string batch;     // the register's batch index (kBatchChannel operands)
  int64_t channels = 0;  // padded channels: the row length of a kBatchChannel operand
};
// Statements applying `e` to the vector register `acc` just before it is stored (one block that
// assigns the result to `acc`). `e` must pass CheckEpilogue.
std::vector<codegen::Stmt> EpilogueStmts(const Epilogue& e, const std::string& acc,
                                         const EpilogueSite& site);
// The same for an epilogue without program operands, with the bias and residual addresses
// given as float address expressions (unused parts may be empty).
std::vector<codegen::Stmt> EpilogueStmts(const Epilogue& e, const std::string& acc,
                                         const std::string& bias_addr,
                                         const std::string& residual_addr);
// `plain` (data, weight, output) with the epilogue's buffers inserted before the output: bias
// and kChannel operands [channels], residual and kElement operands the output's shape,
// kBatchChannel operands [batch, channels].
std::vector<BufferSpec> FusedBufferList(std::vector<BufferSpec> plain, const Epilogue& e,
                                        int64_t channels, int64_t batch = 1);

int64_t CeilDiv(int64_t a, int64_t b);

// NCHW[bn]c output [n, ceil(channels/bn), oh, ow, bn] -> natural NCHW [n, channels, oh, ow]
// (padding channels dropped). Shared by the convolution templates' UnpackOutput.
graph::Tensor UnblockNchwc(const graph::Tensor& blocked, int64_t n, int64_t channels, int64_t oh,
                           int64_t ow, int64_t bn);
// The reference output of a convolution workload (natural operands: data NCHW, weight KCRS).
graph::Tensor ConvReference(const graph::Workload& w, const std::vector<graph::Tensor>& natural);
// Largest divisor of n that is <= limit (at least 1).
int64_t LargestDivisorAtMost(int64_t n, int64_t limit);
// The register-block widths a convolution template offers for output rows of `width` columns:
// the divisors of `width` up to `max_divisor`, and, when no divisor of 8 to 14 columns (or the
// whole row, when shorter) exists, as for a prime or odd width such as 17, 71 or 149, also the
// widths 4..16 that do not divide it. A width that does not divide the row covers it with full
// blocks and one narrower last block (ragged rows). Ascending.
std::vector<int64_t> RowBlockWidths(int64_t width, int64_t max_divisor);
// The default register-block width for rows of `width` columns with at most `limit` columns a
// block, among `offered` (RowBlockWidths): the largest divisor within `limit`, unless a ragged
// width covers the row in fewer blocks; that one is then as even as possible (17 columns in
// blocks of 9 and 8, 71 in five of 12 and one of 11).
int64_t DefaultRowBlockWidth(int64_t width, int64_t limit, const std::vector<int64_t>& offered);
// The convolution templates' parallel loop is n fused with the first (parallel_axis 0) or the
// first two (parallel_axis 1) of their outer loops, split into one even chunk per thread. Returns
// `config` with the parallel_axis that keeps `threads` threads busiest (the parallel loop's share
// of ceil(extent / threads) * threads slots that do work), keeping the config's own on a tie.
Config WithParallelAxisFor(const ConfigSpace& space, const Config& config, int64_t n, int64_t first,
                           int64_t second, int32_t threads);

std::unique_ptr<Template> MakeConv2dNchwc(const graph::Workload& w, const Target& t,
                                          const TemplateOptions& o);
std::unique_ptr<Template> MakeDepthwiseConv2dNchwc(const graph::Workload& w, const Target& t,
                                                   const TemplateOptions& o);
std::unique_ptr<Template> MakeDensePack(const graph::Workload& w, const Target& t,
                                        const TemplateOptions& o);

}  // namespace loom::ops::internal
