// The calling convention between Loom and every generated CPU kernel. The generated source
// carries an identical C definition (codegen's prelude), so a kernel compiles with no Loom headers;
// the measurer, the compiled-model runtime and the tests call kernels through these types.
#pragma once

#include <cstdint>

extern "C" {

// Runs fn(begin, end, ctx) over [0, n) split into chunks, possibly on several threads; returns
// when all chunks are done. Provided by the caller (the runtime's thread pool).
typedef void (*loom_range_fn)(int64_t begin, int64_t end, void* ctx);
typedef struct loom_parallel {
  void (*parallel_for)(int64_t n, loom_range_fn fn, void* ctx, void* pool);
  void* pool;
  int32_t num_threads;
} loom_parallel_t;

// A generated kernel: `buffers` in the template's argument order (inputs, then outputs), each
// 64-byte aligned. `par` may be null: then the kernel runs on the calling thread.
typedef void (*loom_kernel_fn)(void* const* buffers, const loom_parallel_t* par);

}  // extern "C"

namespace loom::codegen {
// The exported symbol every generated kernel defines.
inline constexpr const char* kKernelEntry = "loom_kernel";
}  // namespace loom::codegen
