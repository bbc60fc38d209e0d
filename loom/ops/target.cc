#include "loom/ops/target.h"

#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace loom::ops {

int32_t Target::VectorLanes() const {
  switch (isa) {
    case Isa::kAvx512:
      return 16;
    case Isa::kAvx2:
      return 8;
    case Isa::kGeneric:
      return 4;
  }
  return 4;
}

std::string Target::CompilerFlags() const {
  switch (isa) {
    case Isa::kAvx512:
      return "-mavx512f -mavx512dq -mavx512vl -mavx512bw -mavx2 -mfma -mf16c";
    case Isa::kAvx2:
      return "-mavx2 -mfma -mf16c";
    case Isa::kGeneric:
      return "";
  }
  return "";
}

std::string Target::Key() const {
  if (kind == "cuda") {
    return absl::StrCat(kind, ":", cuda_arch, ":", device_name.empty() ? "unknown" : device_name);
  }
  return absl::StrCat(kind, ":", IsaName(isa), ":", cpu_model.empty() ? "unknown" : cpu_model);
}

std::string IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kGeneric:
      return "generic";
  }
  return "generic";
}

absl::StatusOr<Isa> ParseIsa(std::string_view name) {
  if (name == "avx512") return Isa::kAvx512;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "generic") return Isa::kGeneric;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ISA '", std::string(name), "' (expected avx512, avx2 or generic)"));
}

Target HostCpuTarget() {
  Target t;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")) {
    t.isa = Isa::kAvx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    t.isa = Isa::kAvx2;
  }
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (absl::StartsWith(line, "model name")) {
      auto colon = line.find(':');
      if (colon != std::string::npos) {
        t.cpu_model = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
      break;
    }
  }
  return t;
}

Target CudaTarget(std::string arch, CudaDeviceLimits limits) {
  Target t;
  t.kind = "cuda";
  t.cuda_arch = std::move(arch);
  t.device_name = "unknown";
  t.cuda_limits = limits;
  return t;
}

absl::StatusOr<Target> ParseTarget(std::string_view spec) {
  if (spec == "cpu") return HostCpuTarget();
  if (spec == "cuda") return CudaTarget();
  if (spec.substr(0, 5) == "cuda:") {
    std::string_view arch = spec.substr(5);
    bool ok = arch.size() > 3 && arch.substr(0, 3) == "sm_";
    for (size_t i = 3; ok && i < arch.size(); ++i) {
      ok = (arch[i] >= '0' && arch[i] <= '9') || (i + 1 == arch.size() && arch[i] == 'a');
    }
    if (ok) return CudaTarget(std::string(arch));
    return absl::InvalidArgumentError(absl::StrCat("bad CUDA architecture '", std::string(arch),
                                                   "' in target '", std::string(spec),
                                                   "' (expected e.g. cuda:sm_90)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown target '", std::string(spec), "' (expected cpu, cuda or cuda:sm_XY)"));
}

}  // namespace loom::ops
