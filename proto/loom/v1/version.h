// The Loom release a daemon and its agents must share: an agent registers with it and the daemon
// refuses any other (config indices and stage semantics are those of one release). From the
// CMake project version. Hand-written; lives beside the generated headers.
#pragma once

namespace loom::v1 {

inline constexpr char kLoomVersion[] = LOOM_VERSION;

}  // namespace loom::v1
