// dense_cuda and batch_matmul_cuda: Y[b, m, n] = A[b, m, k] * B for CUDA, through the direct
// generator (cuda_common.h) as a 1x1 convolution over an M x 1 image: the rows of Y are the
// image's rows, its columns the output channels, K the reduction channels, b the images. dense:
// B a constant weight shared by every row, [N, K] (trans_b, the ONNX Gemm form) or [K, N], with
// A's leading dims folded into M; batch_matmul: A and B activations, one B per batch. Knobs, as
// TVM's batch_matmul.cuda: 4-way tile_y over M and tile_x over N (block, virtual thread, thread,
// inner), 2-way tile_k over K (both operands staged in shared memory per step),
// auto_unroll_max_step, unroll_explicit; a split of an extent of 1 is no knob, so the M = 1
// classifier keeps the space of a small-batch dense (TVM's dense_small_batch.cuda). Output
// columns are on threadIdx.x: a warp stores a contiguous run of a row.
#include <memory>
#include <vector>

#include "loom/kernels/gemm.h"
#include "loom/ops/cuda_common.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

class CudaMatmul : public CudaDirectTemplate {
 public:
  CudaMatmul(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : CudaDirectTemplate(w, t, o, ShapeOf(w)) {
    f_knob_ = "tile_x";
    y_knob_ = "tile_y";
    x_knob_ = "unused_x";
    rc_knob_ = "tile_k";
    DefineSpace(true, w.m > 1, false, true, false, false);
    default_ =
        w.m > 1 ? PickDefault({32, 8, 1}, {2, 4, 1}, 16) : PickDefault({128, 1, 1}, {2, 1, 1}, 32);
  }

  std::string name() const override { return batched() ? "batch_matmul_cuda" : "dense_cuda"; }
  Config DefaultConfig() const override { return default_; }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    const graph::Workload& w = workload_;
    const int64_t b = batched() ? w.b : 1;
    graph::Tensor y(graph::DType::kFloat32, OutputShape());
    for (int64_t i = 0; i < b; ++i) {
      const float* a = natural[0].data<float>() + i * w.m * w.k;
      const float* wt = natural[1].data<float>() + (batched() ? i * w.k * w.n : 0);
      float* out = y.data<float>() + i * w.m * w.n;
      if (w.trans_b) {
        kernels::Dense(w.m, w.n, w.k, a, wt, nullptr, out);
      } else {
        kernels::MatMul(w.m, w.n, w.k, a, wt, out);
      }
    }
    return y;
  }
  std::vector<graph::Shape> NaturalInputShapes() const override {
    return {DataShape(), WeightShape()};
  }

 protected:
  graph::Shape DataShape() const override {
    const graph::Workload& w = workload_;
    return batched() ? graph::Shape{w.b, w.m, w.k} : graph::Shape{w.m, w.k};
  }
  graph::Shape WeightShape() const override {
    const graph::Workload& w = workload_;
    graph::Shape s = w.trans_b ? graph::Shape{w.n, w.k} : graph::Shape{w.k, w.n};
    if (batched()) s.insert(s.begin(), w.b);
    return s;
  }
  graph::Shape OutputShape() const override {
    const graph::Workload& w = workload_;
    return batched() ? graph::Shape{w.b, w.m, w.n} : graph::Shape{w.m, w.n};
  }

 private:
  bool batched() const { return workload_.kind == graph::TaskKind::kBatchMatmul; }

  static DirectConvShape ShapeOf(const graph::Workload& w) {
    const bool batched = w.kind == graph::TaskKind::kBatchMatmul;
    const int64_t b = batched ? w.b : 1;
    DirectConvShape s{.n = b,
                      .c = w.k,
                      .h = w.m,
                      .w = 1,
                      .k = w.n,
                      .r = 1,
                      .s = 1,
                      .oh = w.m,
                      .ow = 1,
                      .weight_ck = !w.trans_b};
    s.data_strides = {w.m * w.k, 1, w.k, 0};  // A [b, m, k]: channels (k) contiguous
    s.out_strides = {w.m * w.n, 1, w.n, 0};   // Y [b, m, n]: output channels (n) contiguous
    s.weight_batch_stride = batched ? w.k * w.n : 0;
    s.channels_on_x = true;
    return s;
  }

  Config default_;
};

}  // namespace

std::unique_ptr<Template> MakeCudaDense(const graph::Workload& w, const Target& t,
                                        const TemplateOptions& o) {
  return std::make_unique<CudaMatmul>(w, t, o);
}

std::unique_ptr<Template> MakeCudaBatchMatmul(const graph::Workload& w, const Target& t,
                                              const TemplateOptions& o) {
  return std::make_unique<CudaMatmul>(w, t, o);
}

}  // namespace loom::ops::internal
