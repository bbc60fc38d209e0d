#include "loom/runtime/cuda_aux_kernels.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cuda_printer.h"
#include "loom/codegen/loop_nest.h"
#include "loom/ops/cuda_kernel.h"

namespace loom::runtime {
namespace {

using codegen::If;
using codegen::Loop;
using codegen::LoopKind;
using codegen::Raw;
using codegen::Stmt;

constexpr int64_t kThreads = 256;

// A float literal that both nvrtc and g++ read back exactly.
std::string FloatLiteral(float v) { return absl::StrFormat("%.9ef", v); }

// One thread per element of [0, total): `body` sees `i`.
std::vector<Stmt> PerElement(int64_t total, std::vector<Stmt> body) {
  const int64_t blocks = std::max<int64_t>(1, (total + kThreads - 1) / kThreads);
  std::vector<Stmt> inner = {
      Raw(absl::StrCat("const long long i = (long long)${b} * ", kThreads, " + ${t};")),
      If(absl::StrCat("i < ", total, "LL"), std::move(body))};
  return {Loop("b", blocks, LoopKind::kBlockX, {Loop("t", kThreads, LoopKind::kThreadX, inner)})};
}

absl::StatusOr<ops::KernelSource> Print(codegen::Kernel kernel, bool host_emulation) {
  return ops::PrintCudaKernel(std::move(kernel), host_emulation);
}

}  // namespace

absl::StatusOr<ops::KernelSource> EmitCudaPool(const CudaPool& op, bool host_emulation) {
  if (op.planes < 1 || op.h < 1 || op.w < 1 || op.oh < 1 || op.ow < 1 || op.kh < 1 || op.kw < 1 ||
      op.stride_h < 1 || op.stride_w < 1) {
    return absl::InvalidArgumentError("pool kernel: sizes must be positive");
  }
  codegen::Kernel k;
  k.comment = absl::StrCat("loom ", op.max ? "max" : "avg", "pool ", op.kh, "x", op.kw);
  k.params = {{"x"}, {"out", /*is_output=*/true}};
  const std::string combine = op.max ? "acc = v > acc ? v : acc;" : "acc += v;";
  std::vector<Stmt> body = {
      Raw(absl::StrCat("const long long ox = i % ", op.ow, ";")),
      Raw(absl::StrCat("const long long oy = (i / ", op.ow, ") % ", op.oh, ";")),
      Raw(absl::StrCat("const float* plane = x + (i / ", op.ow * op.oh, ") * ", op.h * op.w, ";")),
      Raw(op.max ? "float acc = -3.402823466e+38f;" : "float acc = 0.0f;"),
      Raw(absl::StrCat("for (int ky = 0; ky < ", op.kh, "; ++ky) {")),
      Raw(absl::StrCat("  const long long iy = oy * ", op.stride_h, " - ", op.pad_top, " + ky;")),
      Raw(absl::StrCat("  if (iy < 0 || iy >= ", op.h, ") continue;")),
      Raw(absl::StrCat("  for (int kx = 0; kx < ", op.kw, "; ++kx) {")),
      Raw(absl::StrCat("    const long long ix = ox * ", op.stride_w, " - ", op.pad_left,
                       " + kx;")),
      Raw(absl::StrCat("    if (ix < 0 || ix >= ", op.w, ") continue;")),
      Raw(absl::StrCat("    const float v = plane[iy * ", op.w, " + ix];")),
      Raw(absl::StrCat("    ", combine)),
      Raw("  }"),
      Raw("}"),
      Raw(op.max ? "out[i] = acc;"
                 : absl::StrCat("out[i] = acc * ",
                                FloatLiteral(1.0f / static_cast<float>(op.kh * op.kw)), ";")),
  };
  k.body = PerElement(op.planes * op.oh * op.ow, {codegen::Block(std::move(body))});
  return Print(std::move(k), host_emulation);
}

}  // namespace loom::runtime
