// What a kernel is generated and tuned for. For CPUs: the ISA level (vector width), the CPU model
// and the thread count. Records are keyed by Target::Key(), so results from one machine are not
// mistaken for another's.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loom::ops {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// What a CUDA template must respect when it picks a config (defaults: H100, sm_90). Configs that
// exceed them are rejected before building.
struct CudaDeviceLimits {
  int32_t max_threads_per_block = 1024;
  int32_t max_shared_bytes_per_block = 49152;  // static shared memory, without opt-in
  int32_t max_regs_per_block = 65536;
  int32_t num_sms = 132;
  int32_t warp_size = 32;
};

struct Target {
  std::string kind = "cpu";  // "cpu" or "cuda"
  Isa isa = Isa::kGeneric;
  std::string cpu_model;  // /proc/cpuinfo "model name"
  int32_t num_threads = 1;
  // cuda only: the NVRTC architecture ("sm_90"), the device name for Key() and its limits.
  std::string cuda_arch = "sm_90";
  std::string device_name;
  CudaDeviceLimits cuda_limits;

  // fp32 lanes of one vector register: 16 (AVX-512), 8 (AVX2), 4 (generic/SSE).
  int32_t VectorLanes() const;
  // Compiler flags selecting the ISA ("-mavx512f -mavx512dq -mfma ...", "-mavx2 -mfma").
  std::string CompilerFlags() const;
  // "cpu:avx512:<model>" or "cuda:sm_90:<device name>" — stable identity for records.
  std::string Key() const;
};

std::string IsaName(Isa isa);  // "generic", "avx2", "avx512"
// Parses "avx512" / "avx2" / "generic"; kInvalidArgument otherwise.
absl::StatusOr<Isa> ParseIsa(std::string_view name);

// The host CPU: the best ISA it supports (cpuid) and its model name; `num_threads` 1.
Target HostCpuTarget();

// A CUDA target for `arch` ("sm_90") with `limits`; device_name "unknown" until a measurer fills
// it from the driver.
Target CudaTarget(std::string arch = "sm_90", CudaDeviceLimits limits = {});

// "cpu" -> HostCpuTarget(); "cuda" or "cuda:sm_XY" -> CudaTarget; kInvalidArgument otherwise.
absl::StatusOr<Target> ParseTarget(std::string_view spec);

}  // namespace loom::ops
