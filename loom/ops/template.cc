#include "loom/ops/template.h"

#include "absl/strings/str_cat.h"
#include "loom/ops/cuda_common.h"
#include "loom/ops/matmul_common.h"
#include "loom/ops/template_common.h"

namespace loom::ops {

absl::StatusOr<KernelSource> Template::EmitFused(const Config& config,
                                                 const Epilogue& epilogue) const {
  if (epilogue.empty()) return Emit(config);
  return absl::UnimplementedError(absl::StrCat(name(), " cannot fuse an epilogue"));
}

std::vector<BufferSpec> Template::FusedBuffers(const Config& config,
                                               const Epilogue& epilogue) const {
  (void)epilogue;
  return Buffers(config);
}

absl::StatusOr<std::unique_ptr<Template>> MakeTemplate(const graph::Workload& w,
                                                       const Target& target,
                                                       const TemplateOptions& options) {
  if (target.kind != "cpu" && target.kind != "cuda") {
    return absl::UnimplementedError(
        absl::StrCat("no templates for target kind '", target.kind, "' (only cpu and cuda)"));
  }
  const bool cuda = target.kind == "cuda";
  if (w.dtype != graph::DType::kFloat32) {
    return absl::UnimplementedError(
        absl::StrCat("no template for dtype ", graph::DTypeName(w.dtype), " (only float32)"));
  }
  const std::string key = graph::WorkloadKey(w);
  switch (w.kind) {
    case graph::TaskKind::kConv2d:
    case graph::TaskKind::kDepthwiseConv2d:
    case graph::TaskKind::kGroupedConv2d: {
      if (w.n < 1 || w.c < 1 || w.h < 1 || w.w < 1 || w.k < 1 || w.r < 1 || w.s < 1 ||
          w.stride_h < 1 || w.stride_w < 1 || w.dilation_h < 1 || w.dilation_w < 1 ||
          w.groups < 1 || w.pad_top < 0 || w.pad_left < 0 || w.pad_bottom < 0 || w.pad_right < 0 ||
          w.OutH() < 1 || w.OutW() < 1 || w.c % w.groups != 0 || w.k % w.groups != 0) {
        return absl::InvalidArgumentError(absl::StrCat("invalid convolution workload ", key));
      }
      if (cuda && (w.k >= 10000 || w.OutH() >= 10000 || w.OutW() >= 10000)) {
        return absl::UnimplementedError(
            absl::StrCat("no cuda template for ", key, " (output extents must be below 10000)"));
      }
      if (w.groups == 1) {
        return cuda ? internal::MakeCudaConv2d(w, target, options)
                    : internal::MakeConv2dNchwc(w, target, options);
      }
      if (w.groups == w.c && w.k == w.c) {
        return cuda ? internal::MakeCudaDepthwiseConv2d(w, target, options)
                    : internal::MakeDepthwiseConv2dNchwc(w, target, options);
      }
      if (cuda) {
        return absl::UnimplementedError(
            absl::StrCat("no cuda template for grouped convolution ", key,
                         " (only groups == 1, or depthwise with groups == C == K)"));
      }
      return internal::MakeConv2dNchwc(w, target, options);  // group_conv2d_nchwc
    }
    case graph::TaskKind::kDense:
      if (absl::Status st = graph::ValidateWorkload(w); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(st.message(), ": ", key));
      }
      if (cuda && (w.n >= 10000 || w.m >= 10000)) {
        return absl::UnimplementedError(
            absl::StrCat("no cuda template for ", key, " (m and n must be below 10000)"));
      }
      if (cuda && w.trans_a) {
        return absl::UnimplementedError(
            absl::StrCat("no cuda template for ", key, " (A must not be transposed)"));
      }
      return cuda ? internal::MakeCudaDense(w, target, options)
                  : internal::MakeDensePack(w, target, options);
    case graph::TaskKind::kBatchMatmul:
      if (absl::Status st = graph::ValidateWorkload(w); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(st.message(), ": ", key));
      }
      if (cuda && (w.n >= 10000 || w.m >= 10000)) {
        return absl::UnimplementedError(
            absl::StrCat("no cuda template for ", key, " (m and n must be below 10000)"));
      }
      if (cuda && (w.trans_a || !w.batch_a.empty() || !w.batch_b.empty())) {
        return absl::UnimplementedError(
            absl::StrCat("no cuda template for ", key, " (a transposed A or a batch broadcast)"));
      }
      if (cuda) return internal::MakeCudaBatchMatmul(w, target, options);
      return internal::MakeBatchMatmul(w, target, options);
  }
  return absl::UnimplementedError(absl::StrCat("no template for ", key));
}

}  // namespace loom::ops
