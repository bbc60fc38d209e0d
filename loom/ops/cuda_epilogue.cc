#include "loom/ops/cuda_epilogue.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::ops {

std::vector<codegen::Stmt> CudaEpilogueStmts(const Epilogue& e, const std::string& bias,
                                             const std::string& residual) {
  using A = Epilogue::Activation;
  using codegen::Raw;
  // %.9e reads back exactly in both nvrtc and g++.
  auto literal = [](float v) { return absl::StrFormat("%.9ef", v); };
  std::vector<codegen::Stmt> s;
  if (e.bias) s.push_back(Raw(absl::StrCat("v += ", bias, ";")));
  if (e.residual) s.push_back(Raw(absl::StrCat("v += ", residual, ";")));
  switch (e.activation) {
    case A::kNone:
      break;
    case A::kRelu:
      s.push_back(Raw("v = v > 0.0f ? v : 0.0f;"));
      break;
    case A::kClip:
      if (std::isfinite(e.clip_min)) {
        const std::string lo = literal(e.clip_min);
        s.push_back(Raw(absl::StrCat("v = v < ", lo, " ? ", lo, " : v;")));
      }
      if (std::isfinite(e.clip_max)) {
        const std::string hi = literal(e.clip_max);
        s.push_back(Raw(absl::StrCat("v = v > ", hi, " ? ", hi, " : v;")));
      }
      break;
    case A::kSigmoid:
      s.push_back(Raw("v = 1.0f / (1.0f + expf(-v));"));
      break;
    case A::kHardSwish:  // x * clamp(x / 6 + 1/2, 0, 1)
      s.push_back(Raw("float r = v + 3.0f;"));
      s.push_back(Raw("r = r < 0.0f ? 0.0f : (r > 6.0f ? 6.0f : r);"));
      s.push_back(Raw("v = v * r * (1.0f / 6.0f);"));
      break;
  }
  return s;
}

}  // namespace loom::ops
