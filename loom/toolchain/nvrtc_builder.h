// The CUDA Builder: compiles each candidate's CUDA source (ops/ CUDA templates) with NVRTC to a
// cubin for the template's Target::cuda_arch, on the builder's own threads (CPU slots), with a
// content-hash cache, a per-compile timeout and one BuildResult per candidate. Called by the tune
// loop's Build stage for `cuda` targets; the CUDA measurer loads BuildResult::artifact_path.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "loom/toolchain/builder.h"

namespace loom::tune {

// A builder using NVRTC in-process (linked when CMake found the CUDA toolkit: LOOM_WITH_CUDA).
// Options used: num_threads (compiles at once), timeout, cache_dir, use_cache, extra_flags (NVRTC
// options appended after `--gpu-architecture=<arch> --std=c++17`, e.g. "-lineinfo"),
// before_compile (called on the thread that starts each compile); `compiler` and
// `compile_started` do not apply. Timeout: NVRTC cannot be interrupted, so each compile runs on
// its own thread and a compile past the timeout is reported as kBuildTimeout at once and left to
// finish in the background (its result is dropped; the cache never sees it).
// `default_arch` is used by BuildSource (Build uses the template's target). Errors per candidate:
// kInstantiation (Emit refused the config, or the template's target is not cuda), kCompile (the
// NVRTC log's last ~2 KB), kBuildTimeout. Whole-builder errors: kInvalidArgument for bad
// options, kFailedPrecondition when the cache dir cannot be created, kUnimplemented when Loom was
// built without the CUDA toolkit.
absl::StatusOr<std::unique_ptr<Builder>> MakeNvrtcBuilder(const BuildOptions& options,
                                                          std::string default_arch = "sm_90");

}  // namespace loom::tune
