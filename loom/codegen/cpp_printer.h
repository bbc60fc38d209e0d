// Prints a codegen::Kernel (loop_nest.h) as one self-contained C++ translation unit: a prelude
// that re-declares the kernel ABI types (kernel_abi.h) and the vector type, then
// `extern "C" void loom_kernel(...)`. Called by every ops/ template's Emit.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "loom/codegen/loop_nest.h"

namespace loom::codegen {

// The prelude every generated kernel starts with: ABI typedefs identical to kernel_abi.h, the
// vector type `vf` of `lanes` floats (GCC vector extensions, unaligned access allowed) and
// `loom_bcast` / `loom_load` helpers. `lanes` is 1, 4, 8 or 16.
std::string CppPrelude(int lanes);

// The full source of `kernel`. kInvalidArgument when the nest is malformed: an unbound `${var}`,
// an unrolled loop without a constant extent, a parallel loop that is not at the top level of
// the body (or is nested in another), an unsupported vector width.
absl::StatusOr<std::string> PrintCpp(const Kernel& kernel);

// Replaces every `${name}` in `text` by env's value for it; kInvalidArgument for an unbound name
// or an unterminated `${`. Exposed for tests.
absl::StatusOr<std::string> SubstituteVars(
    const std::string& text, const std::vector<std::pair<std::string, std::string>>& env);

}  // namespace loom::codegen
