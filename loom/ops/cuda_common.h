// Pieces shared by the CUDA templates (cuda_conv2d.cc, cuda_depthwise_conv2d.cc, cuda_matmul.cc):
// the split-knob encoding, one direct-reduction kernel generator in the shape of TVM's
// conv2d_nchw.cuda schedule (4-way output splits bound to blocks / virtual threads / threads /
// inner loops, 2-way reduction splits, shared-memory staging of both operands), its validity check
// against a Target's CudaDeviceLimits, and its cost-model features. Internal to ops/.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/codegen/loop_nest.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {

// A split knob's value encodes its factors, outermost first, in decimal digit groups (4 digits each
// for 4-way splits, 8 for 2-way): [2, 4, 1, 8] -> 2000400010008 (block 2, vthread 4, thread 1,
// inner 8); [16, 4] -> 1600000004. Readable in records.
int64_t SplitRadix(int ways);
// Every ordered factorization of `extent` into `ways` factors, encoded, ascending.
// Precondition: 1 <= extent < SplitRadix(ways), ways is 2 or 4.
std::vector<int64_t> SplitKnobValues(int64_t extent, int ways);
std::vector<int64_t> DecodeSplit(int64_t value, int ways);

// The computation out[n, f, y, x] = sum over (rc, ry, rx) of
//   data[n, ch, y*sh - ph + ry*dh, x*sw - pw + rx*dw] * weight[n?, f, rc, ry, rx]
// (zero outside the image), with ch = rc, or ch = f when depthwise. A matrix product is the 1x1
// case on an M x 1 image: y = the M rows, rc = K, f = N, n = the batch (weight_ck: the weight is
// stored [K, N]; weight_batch_stride: each image has its own weight, a batched product's B).
// Operands are addressed through element strides, so transposed and batched matrices are read in
// place.
struct DirectConvShape {
  int64_t n = 1, c = 1, h = 1, w = 1, k = 1, r = 1, s = 1, oh = 1, ow = 1;
  int64_t stride_h = 1, stride_w = 1, pad_top = 0, pad_left = 0, dil_h = 1, dil_w = 1;
  bool depthwise = false;
  bool weight_ck = false;
  // Element strides of data [n, c, h, w] and of the output [n, k, oh, ow]; empty: dense NCHW.
  std::vector<int64_t> data_strides, out_strides;
  int64_t weight_batch_stride = 0;  // 0: one weight for every image
  // Matrix products: output channels (the row of the output, contiguous) on threadIdx.x, so that
  // a warp stores and fetches along rows; convolutions keep the columns of the image there.
  bool channels_on_x = false;
  int64_t ReduceChannels() const { return depthwise ? 1 : c; }
  std::vector<int64_t> DataStrides() const;
  std::vector<int64_t> OutStrides() const;
};

struct DirectConvTiles {
  std::array<int64_t, 4> f{1, 1, 1, 1};  // output channels: block, vthread, thread, inner
  std::array<int64_t, 4> y{1, 1, 1, 1};  // output rows
  std::array<int64_t, 4> x{1, 1, 1, 1};  // output columns
  std::array<int64_t, 2> rc{1, 1};       // reduction channels: outer, inner
  std::array<int64_t, 2> ry{1, 1};
  std::array<int64_t, 2> rx{1, 1};
  int64_t auto_unroll_max_step = 0;
  bool unroll_explicit = false;
};

// Derived facts of a tiling, for validity checks and features.
struct DirectConvFacts {
  int64_t threads = 1;        // per block
  int64_t vthreads = 1;       // product of the vthread factors
  int64_t accumulators = 1;   // per thread (registers)
  int64_t est_registers = 1;  // per thread: accumulators + a fixed overhead
  int64_t blocks = 1;         // in the grid
  int64_t grid[3] = {1, 1, 1};
  int64_t data_tile = 1;    // floats of the staged input tile
  int64_t weight_tile = 1;  // floats of the staged weight tile
  int64_t shared_bytes = 4;
  int64_t reduction_steps = 1;  // outer reduction iterations (two barriers each)
};
DirectConvFacts ComputeFacts(const DirectConvShape& shape, const DirectConvTiles& t);

// kInvalidArgument naming the limit a tiling exceeds: threads per block, block dimensions,
// grid dimensions, shared memory, registers per thread or per block, virtual threads (at most 8).
absl::Status CheckDirectConvLimits(const DirectConvShape& shape, const DirectConvTiles& t,
                                   const CudaDeviceLimits& limits);

// The loop nest: parameters data, weight, output; with a non-empty `fused` epilogue data, weight,
// then bias (one value per output channel) and residual (the output's shape) as `fused` asks,
// then output. `prologue` and `epilogue` are statements before and after the computation (the
// test-only fault knob's).
codegen::Kernel BuildDirectConvKernel(const DirectConvShape& shape, const DirectConvTiles& t,
                                      std::string comment, std::vector<codegen::Stmt> prologue,
                                      std::vector<codegen::Stmt> epilogue,
                                      const Epilogue& fused = {});

// Feature names/values of a tiling (log2 of every factor, then derived facts).
std::vector<std::string> DirectConvFeatureNames();
std::vector<float> DirectConvFeatures(const DirectConvShape& shape, const DirectConvTiles& t);

// Base of the CUDA templates: natural layouts (identity packing), a DirectConvShape, knobs that
// map to DirectConvTiles, Emit through PrintCuda (CUDA, or the host emulation when
// TemplateOptions::cuda_host_emulation).
class CudaDirectTemplate : public TemplateBase {
 public:
  CudaDirectTemplate(graph::Workload w, Target t, TemplateOptions o, DirectConvShape shape)
      : TemplateBase(w, std::move(t), o), shape_(shape) {}

  // Fuses any epilogue (cuda_epilogue.h): bias and kChannel operands per output channel (dense:
  // per output column), residual and kElement operands of the output's shape, kBatchChannel
  // operands per (image, channel), the activation and the program.
  absl::StatusOr<KernelSource> EmitFused(const Config& config,
                                         const Epilogue& epilogue) const override;
  std::vector<BufferSpec> FusedBuffers(const Config& config,
                                       const Epilogue& epilogue) const override;
  std::vector<BufferSpec> Buffers(const Config& config) const override;
  std::vector<graph::Tensor> PackInputs(const Config& config,
                                        const std::vector<graph::Tensor>& natural) const override;
  graph::Tensor UnpackOutput(const Config& config, const graph::Tensor& output) const override;
  std::vector<float> Features(const Config& config) const override;
  std::vector<std::string> FeatureNames() const override;

  // The tiling of `config` (knobs absent from the space keep DirectConvTiles' defaults).
  DirectConvTiles Tiles(const Config& config) const;
  // The same from knob values in knob order (what space constraints see).
  DirectConvTiles TilesFromValues(std::span<const int64_t> values) const;
  // OK when `config` is in the space and fits the target's limits; kInvalidArgument otherwise.
  absl::Status CheckValid(const Config& config) const;

 protected:
  // Natural shapes of data / weight / output.
  virtual graph::Shape DataShape() const = 0;
  virtual graph::Shape WeightShape() const = 0;
  virtual graph::Shape OutputShape() const = 0;
  // Adds the split knobs (names below) for extents > 1 and the unroll knobs; then the fault knob.
  void DefineSpace(bool split_f, bool split_y, bool split_x, bool split_rc, bool split_ry,
                   bool split_rx);
  // A valid default: per output axis (f, y, x) the largest thread and inner factors up to the
  // wishes, no virtual threads; `rc_inner` reduction channels per shared-memory stage.
  Config PickDefault(const std::array<int64_t, 3>& threads, const std::array<int64_t, 3>& inner,
                     int64_t rc_inner) const;

  DirectConvShape shape_;
  // Knob names: tile_f/tile_y/tile_x, tile_rc/tile_ry/tile_rx (dense: tile_x over N, tile_k).
  std::string f_knob_ = "tile_f", y_knob_ = "tile_y", x_knob_ = "tile_x", rc_knob_ = "tile_rc",
              ry_knob_ = "tile_ry", rx_knob_ = "tile_rx";
};

std::unique_ptr<Template> MakeCudaConv2d(const graph::Workload& w, const Target& t,
                                         const TemplateOptions& o);
std::unique_ptr<Template> MakeCudaDepthwiseConv2d(const graph::Workload& w, const Target& t,
                                                  const TemplateOptions& o);
std::unique_ptr<Template> MakeCudaDense(const graph::Workload& w, const Target& t,
                                        const TemplateOptions& o);
std::unique_ptr<Template> MakeCudaBatchMatmul(const graph::Workload& w, const Target& t,
                                              const TemplateOptions& o);

}  // namespace loom::ops::internal
