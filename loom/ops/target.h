// What a kernel is generated and tuned for. For CPUs: the ISA level (vector width), the CPU model
// and the thread count. Records are keyed by Target::Key(), so results from one machine are not
// mistaken for another's.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace loom::ops {

enum class Isa { kGeneric, kAvx2, kAvx512 };

struct Target {
  std::string kind = "cpu";  // "cpu" (and "cuda" later)
  Isa isa = Isa::kGeneric;
  std::string cpu_model;  // /proc/cpuinfo "model name"
  int32_t num_threads = 1;

  // fp32 lanes of one vector register: 16 (AVX-512), 8 (AVX2), 4 (generic/SSE).
  int32_t VectorLanes() const;
  // Compiler flags selecting the ISA ("-mavx512f -mavx512dq -mfma ...", "-mavx2 -mfma").
  std::string CompilerFlags() const;
  // "cpu:avx512:<model>" — stable identity for records.
  std::string Key() const;
};

std::string IsaName(Isa isa);  // "generic", "avx2", "avx512"
// Parses "avx512" / "avx2" / "generic"; kInvalidArgument otherwise.
absl::StatusOr<Isa> ParseIsa(std::string_view name);

// The host CPU: the best ISA it supports (cpuid) and its model name; `num_threads` 1.
Target HostCpuTarget();

}  // namespace loom::ops
