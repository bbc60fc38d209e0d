// depthwise_conv2d_nchw_cuda: depthwise convolution (groups == C == K) on NCHW data and [C,1,R,S]
// weights for CUDA. Knobs as TVM's depthwise_conv2d_nchw.cuda plus the reduction splits of the
// direct template: 4-way tile_f (channels) / tile_y / tile_x, 2-way tile_ry / tile_rx,
// auto_unroll_max_step, unroll_explicit. Each block stages the input planes of its own channels.
#include "loom/ops/cuda_common.h"
#include "loom/ops/template_common.h"

namespace loom::ops::internal {
namespace {

class CudaDepthwiseConv2d : public CudaDirectTemplate {
 public:
  CudaDepthwiseConv2d(const graph::Workload& w, const Target& t, const TemplateOptions& o)
      : CudaDirectTemplate(w, t, o, ShapeOf(w)) {
    DefineSpace(true, true, true, false, true, true);
    default_ = PickDefault({2, 4, 16}, {1, 2, 2}, 1);
  }

  std::string name() const override { return "depthwise_conv2d_nchw_cuda"; }
  Config DefaultConfig() const override { return default_; }

  graph::Tensor Reference(const std::vector<graph::Tensor>& natural) const override {
    return ConvReference(workload_, natural);
  }
  std::vector<graph::Shape> NaturalInputShapes() const override {
    return {DataShape(), WeightShape()};
  }

 protected:
  graph::Shape DataShape() const override {
    return {workload_.n, workload_.c, workload_.h, workload_.w};
  }
  graph::Shape WeightShape() const override { return {workload_.k, 1, workload_.r, workload_.s}; }
  graph::Shape OutputShape() const override {
    return {workload_.n, workload_.k, workload_.OutH(), workload_.OutW()};
  }

 private:
  static DirectConvShape ShapeOf(const graph::Workload& w) {
    return {.n = w.n,
            .c = w.c,
            .h = w.h,
            .w = w.w,
            .k = w.k,
            .r = w.r,
            .s = w.s,
            .oh = w.OutH(),
            .ow = w.OutW(),
            .stride_h = w.stride_h,
            .stride_w = w.stride_w,
            .pad_top = w.pad_top,
            .pad_left = w.pad_left,
            .dil_h = w.dilation_h,
            .dil_w = w.dilation_w,
            .depthwise = true};
  }

  Config default_;
};

}  // namespace

std::unique_ptr<Template> MakeCudaDepthwiseConv2d(const graph::Workload& w, const Target& t,
                                                  const TemplateOptions& o) {
  return std::make_unique<CudaDepthwiseConv2d>(w, t, o);
}

}  // namespace loom::ops::internal
