// dense_cuda: y[M,N] = x[M,K] * W^T (W [N,K], trans_b) or x * W (W [K,N]) for CUDA, as the 1x1
// direct template on a 1x1 image: each block computes one row of y and a tile of N. Knobs:
// 4-way tile_x over N (block, virtual thread, thread, inner), 2-way tile_k over the reduction
// (both operands staged in shared memory per step), auto_unroll_max_step, unroll_explicit.
// Rows are not tiled (a small-batch template, like TVM's dense_small_batch.cuda).
#include "loom/kernels/gemm.h"
#include "loom/ops/cuda_common.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

class CudaDense : public CudaDirectTemplate {
 public:
  CudaDense(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : CudaDirectTemplate(w, t, o, ShapeOf(w)) {
    f_knob_ = "tile_x";
    x_knob_ = "unused_x";
    rc_knob_ = "tile_k";
    DefineSpace(true, false, false, true, false, false);
    default_ = PickDefault({128, 1, 1}, {2, 1, 1}, 32);
  }

  std::string name() const override { return "dense_cuda"; }
  Config DefaultConfig() const override { return default_; }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    const graph::Workload& w = workload_;
    graph::Tensor y(graph::DType::kFloat32, {w.m, w.n});
    if (w.trans_b) {
      kernels::Dense(w.m, w.n, w.k, natural[0].data<float>(), natural[1].data<float>(), nullptr,
                     y.data<float>());
    } else {
      kernels::MatMul(w.m, w.n, w.k, natural[0].data<float>(), natural[1].data<float>(),
                      y.data<float>());
    }
    return y;
  }
  std::vector<graph::Shape> NaturalInputShapes() const override {
    return {DataShape(), WeightShape()};
  }

 protected:
  graph::Shape DataShape() const override { return {workload_.m, workload_.k}; }
  graph::Shape WeightShape() const override {
    return workload_.trans_b ? graph::Shape{workload_.n, workload_.k}
                             : graph::Shape{workload_.k, workload_.n};
  }
  graph::Shape OutputShape() const override { return {workload_.m, workload_.n}; }

 private:
  static DirectConvShape ShapeOf(const graph::Workload& w) {
    return {.n = w.m,
            .c = w.k,
            .h = 1,
            .w = 1,
            .k = w.n,
            .r = 1,
            .s = 1,
            .oh = 1,
            .ow = 1,
            .weight_ck = !w.trans_b};
  }

  Config default_;
};

}  // namespace

std::unique_ptr<Template> MakeCudaDense(const graph::Workload& w, const Target& t,
                                        const TemplateOptions& o) {
  return std::make_unique<CudaDense>(w, t, o);
}

}  // namespace loom::ops::internal
