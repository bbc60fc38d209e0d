#include "loom/codegen/cuda_printer.h"

#include <cctype>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/codegen/cpp_printer.h"

namespace loom::codegen {
namespace {

using Env = std::vector<std::pair<std::string, std::string>>;

// Makes the CUDA body valid host C++: CUDA keywords become macros, blockIdx/threadIdx are globals
// the fiber scheduler sets before it resumes a thread, __shared__ arrays are function statics
// (one copy, used by one block at a time), and __syncthreads() yields to the scheduler.
constexpr const char* kEmulationPrelude = R"(#include <math.h>
#include <setjmp.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__ static
struct loom_emu_dim3 { unsigned x, y, z; };
static loom_emu_dim3 loom_emu_block_idx;
static loom_emu_dim3 loom_emu_thread_idx;
#define blockIdx loom_emu_block_idx
#define threadIdx loom_emu_thread_idx
static void loom_emu_sync();
#define __syncthreads() loom_emu_sync()
)";

// The fiber scheduler of the emulation: one fiber per thread of a block; each round resumes every
// live thread until it reaches a barrier or returns. A round in which some threads return while
// others wait at a barrier is a divergent barrier (a hang or undefined on a GPU): abort. A fiber
// starts on its own stack through makecontext/swapcontext; after that, threads and the scheduler
// switch with _setjmp/_longjmp, which save no signal mask (swapcontext makes two system calls per
// switch, and a block switches at every barrier of every thread).
constexpr const char* kEmulationRuntime = R"(
struct loom_emu_fiber {
  ucontext_t ctx;
  jmp_buf env;
  int started;
  int done;
  loom_emu_dim3 tid;
};
static ucontext_t loom_emu_main;
static jmp_buf loom_emu_main_env;
static loom_emu_fiber* loom_emu_fibers;
static int loom_emu_current;

static __attribute__((noinline)) void loom_emu_sync() {
  if (!_setjmp(loom_emu_fibers[loom_emu_current].env)) _longjmp(loom_emu_main_env, 1);
}

static void loom_emu_entry() {
  loom_emu_call();
  loom_emu_fibers[loom_emu_current].done = 1;
  _longjmp(loom_emu_main_env, 1);
}

// Resumes fiber t until its next barrier or its end.
static __attribute__((noinline)) void loom_emu_resume(int t) {
  loom_emu_fiber* f = &loom_emu_fibers[t];
  loom_emu_current = t;
  loom_emu_thread_idx = f->tid;
  if (_setjmp(loom_emu_main_env)) return;
  if (!f->started) {
    f->started = 1;
    swapcontext(&loom_emu_main, &f->ctx);
  } else {
    _longjmp(f->env, 1);
  }
}

extern "C" void loom_kernel(void* const* buffers, const loom_parallel_t* par) {
  (void)par;
  const unsigned grid[3] = {LOOM_EMU_GRID};
  const unsigned block[3] = {LOOM_EMU_BLOCK};
  const int nthreads = (int)(block[0] * block[1] * block[2]);
  const size_t stack_bytes = 256 * 1024;
  loom_emu_buffers = buffers;
  loom_emu_fibers = (loom_emu_fiber*)calloc((size_t)nthreads, sizeof(loom_emu_fiber));
  char* stacks = (char*)malloc(stack_bytes * (size_t)nthreads);
  ucontext_t proto;
  getcontext(&proto);
  for (unsigned bz = 0; bz < grid[2]; ++bz)
    for (unsigned by = 0; by < grid[1]; ++by)
      for (unsigned bx = 0; bx < grid[0]; ++bx) {
        loom_emu_block_idx.x = bx;
        loom_emu_block_idx.y = by;
        loom_emu_block_idx.z = bz;
        for (int t = 0; t < nthreads; ++t) {
          loom_emu_fiber* f = &loom_emu_fibers[t];
          f->started = 0;
          f->done = 0;
          f->tid.x = (unsigned)t % block[0];
          f->tid.y = ((unsigned)t / block[0]) % block[1];
          f->tid.z = (unsigned)t / (block[0] * block[1]);
          f->ctx = proto;
          f->ctx.uc_stack.ss_sp = stacks + (size_t)t * stack_bytes;
          f->ctx.uc_stack.ss_size = stack_bytes;
          f->ctx.uc_link = &loom_emu_main;
          makecontext(&f->ctx, loom_emu_entry, 0);
        }
        for (;;) {
          int finished = 0, waiting = 0;
          for (int t = 0; t < nthreads; ++t) {
            if (loom_emu_fibers[t].done) continue;
            loom_emu_resume(t);
            if (loom_emu_fibers[t].done) ++finished; else ++waiting;
          }
          if (waiting == 0) break;
          if (finished != 0) {
            fprintf(stderr, "loom emulation: divergent __syncthreads() in block (%u,%u,%u)\n",
                    bx, by, bz);
            abort();
          }
        }
      }
  free(stacks);
  free(loom_emu_fibers);
}
)";

// NVRTC has no standard headers: the fixed-width integer types, and the GCC builtins that the
// generic helper text (codegen/vector_math.h, the elementwise helpers) calls, mapped to CUDA's
// device math. That text declares plain (unannotated) functions, which NVRTC compiles as device
// functions with -default-device (CudaKernelSource::compile_flags).
constexpr const char* kCudaPrelude = R"(typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#define __builtin_memcpy memcpy
#define __builtin_inff() __int_as_float(0x7f800000)
#define __builtin_inf() __longlong_as_double(0x7ff0000000000000LL)
#define __builtin_nanf(s) __int_as_float(0x7fc00000)
#define __builtin_nan(s) __longlong_as_double(0x7ff8000000000000LL)
#define __builtin_sqrtf sqrtf
#define __builtin_sqrt sqrt
#define __builtin_fabs fabs
#define __builtin_ceilf ceilf
#define __builtin_ceil ceil
#define __builtin_floorf floorf
#define __builtin_floor floor
#define __builtin_rintf rintf
#define __builtin_rint rint
#define __builtin_sinf sinf
#define __builtin_sin sin
#define __builtin_cosf cosf
#define __builtin_cos cos
#define __builtin_powf powf
#define __builtin_pow pow
#define __builtin_fmodf fmodf
#define __builtin_fmod fmod
#define __builtin_exp exp
#define __builtin_log log
#define __builtin_log1p log1p
#define __builtin_tanh tanh
#define __builtin_erf erf
)";

// The element types a kernel parameter may have (KernelParam::type).
bool IsParamType(const std::string& t) {
  for (const char* known : {"float", "double", "bool", "int8_t", "uint8_t", "int16_t", "uint16_t",
                            "int32_t", "uint32_t", "int64_t", "uint64_t"}) {
    if (t == known) return true;
  }
  return false;
}

// True when a statement of `body` (at any depth) is a barrier.
bool HasBarrier(const std::vector<Stmt>& body) {
  for (const Stmt& s : body) {
    if (s.kind == Stmt::Kind::kBarrier) return true;
    if (s.kind == Stmt::Kind::kRaw && s.text.find("__syncthreads") != std::string::npos) {
      return true;
    }
    if (HasBarrier(s.body)) return true;
  }
  return false;
}

// A kernel without barriers needs no fibers: each block's threads run one after another as plain
// calls (most generated kernels: elementwise, data movement, one thread per output).
constexpr const char* kEmulationRuntimeNoBarrier = R"(
static void loom_emu_sync() { abort(); }

extern "C" void loom_kernel(void* const* buffers, const loom_parallel_t* par) {
  (void)par;
  const unsigned grid[3] = {LOOM_EMU_GRID};
  const unsigned block[3] = {LOOM_EMU_BLOCK};
  loom_emu_buffers = buffers;
  for (unsigned bz = 0; bz < grid[2]; ++bz)
    for (unsigned by = 0; by < grid[1]; ++by)
      for (unsigned bx = 0; bx < grid[0]; ++bx) {
        loom_emu_block_idx.x = bx;
        loom_emu_block_idx.y = by;
        loom_emu_block_idx.z = bz;
        for (unsigned tz = 0; tz < block[2]; ++tz)
          for (unsigned ty = 0; ty < block[1]; ++ty)
            for (unsigned tx = 0; tx < block[0]; ++tx) {
              loom_emu_thread_idx.x = tx;
              loom_emu_thread_idx.y = ty;
              loom_emu_thread_idx.z = tz;
              loom_emu_call();
            }
      }
}
)";

class CudaPrinter {
 public:
  CudaPrinter(const Kernel& kernel, const CudaPrintOptions& options)
      : kernel_(kernel), options_(options) {}

  absl::StatusOr<CudaKernelSource> Run() {
    CudaKernelSource result;
    const bool emu = options_.host_emulation;
    std::string header =
        absl::StrCat("// Generated by Loom (", emu ? "CUDA, host emulation" : "CUDA", "). ",
                     kernel_.comment, "\n");
    if (emu) {
      // Fibers switch stacks with _longjmp, which fortified builds refuse (__longjmp_chk).
      absl::StrAppend(&header, "#undef _FORTIFY_SOURCE\n", CppPrelude(1), kEmulationPrelude);
    } else {
      absl::StrAppend(&header, kCudaPrelude);
    }
    for (const std::string& g : kernel_.globals) absl::StrAppend(&header, g, "\n");
    // Plain helper functions in `globals` are device functions only with -default-device;
    // -diag-suppress: the helpers' GCC vector attribute (1097), unused helpers (177).
    if (emu) {
      result.compile_flags = "-Wno-unknown-pragmas";
    } else if (!kernel_.globals.empty()) {
      result.compile_flags = "-default-device -diag-suppress=1097,177";
    }

    // The body first: its bound loops give the geometry the signature's __launch_bounds__ needs.
    depth_ = 1;
    for (const KernelParam& p : kernel_.params) {
      if (!IsParamType(p.type)) {
        return absl::InvalidArgumentError(absl::StrCat("kernel parameter '", p.name,
                                                       "' has element type '", p.type,
                                                       "', not a C arithmetic type"));
      }
    }
    for (const SharedBuffer& b : kernel_.shared) {
      if (b.elems < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("shared buffer '", b.name, "' has ", b.elems, " elements"));
      }
      Line(absl::StrCat("__shared__ float ", b.name, "[", b.elems, "];"));
      result.shared_bytes += b.elems * 4;
    }
    Env env;
    for (const Stmt& s : kernel_.body) LOOM_RETURN_IF_ERROR(EmitStmt(s, env));
    for (int d = 0; d < 3; ++d) {
      result.grid[d] = grid_[d] > 0 ? static_cast<uint32_t>(grid_[d]) : 1;
      result.block[d] = block_[d] > 0 ? static_cast<uint32_t>(block_[d]) : 1;
    }

    std::string params;
    for (size_t i = 0; i < kernel_.params.size(); ++i) {
      const KernelParam& p = kernel_.params[i];
      absl::StrAppend(&params, i ? ", " : "", p.is_output ? "" : "const ", p.type,
                      "* __restrict__ ", p.name);
    }
    const std::string signature =
        emu ? absl::StrCat("static void loom_cuda_kernel(", params, ")")
            : absl::StrCat("extern \"C\" __global__ void __launch_bounds__(",
                           result.ThreadsPerBlock(), ") ", result.entry, "(", params, ")");
    result.code = absl::StrCat(header, signature, " {\n", out_, "}\n");
    if (emu) {
      std::string call = "static void* const* loom_emu_buffers;\nstatic void loom_emu_call() {\n";
      absl::StrAppend(&call, "  loom_cuda_kernel(");
      for (size_t i = 0; i < kernel_.params.size(); ++i) {
        const KernelParam& p = kernel_.params[i];
        absl::StrAppend(&call, i ? ", " : "", "(", p.is_output ? "" : "const ", p.type,
                        "*)loom_emu_buffers[", i, "]");
      }
      absl::StrAppend(&call, ");\n}\n");
      // How many buffers loom_kernel takes: the fake CUDA driver, which runs emulated kernels as
      // module images, reads it to unpack cuLaunchKernel's parameters.
      absl::StrAppend(
          &call, "extern \"C\" const int loom_kernel_num_params = ", kernel_.params.size(), ";\n");
      absl::StrAppend(&result.code, call, "#define LOOM_EMU_GRID ", result.grid[0], ", ",
                      result.grid[1], ", ", result.grid[2], "\n#define LOOM_EMU_BLOCK ",
                      result.block[0], ", ", result.block[1], ", ", result.block[2], "\n",
                      HasBarrier(kernel_.body) ? kEmulationRuntime : kEmulationRuntimeNoBarrier);
    }
    return result;
  }

 private:
  void Line(const std::string& text) {
    out_.append(static_cast<size_t>(depth_) * 2, ' ');
    absl::StrAppend(&out_, text, "\n");
  }

  absl::Status EmitBody(const std::vector<Stmt>& body, const Env& env) {
    for (const Stmt& s : body) LOOM_RETURN_IF_ERROR(EmitStmt(s, env));
    return absl::OkStatus();
  }

  absl::Status EmitScoped(const std::string& first_line, const std::vector<Stmt>& body,
                          const Env& env) {
    Line("{");
    ++depth_;
    if (!first_line.empty()) Line(first_line);
    LOOM_RETURN_IF_ERROR(EmitBody(body, env));
    --depth_;
    Line("}");
    return absl::OkStatus();
  }

  absl::Status EmitStmt(const Stmt& s, const Env& env) {
    switch (s.kind) {
      case Stmt::Kind::kBlock:
        return EmitScoped("", s.body, env);
      case Stmt::Kind::kIf: {
        LOOM_ASSIGN_OR_RETURN(std::string cond, SubstituteVars(s.text, env));
        Line(absl::StrCat("if (", cond, ") {"));
        ++depth_;
        LOOM_RETURN_IF_ERROR(EmitBody(s.body, env));
        --depth_;
        Line("}");
        return absl::OkStatus();
      }
      case Stmt::Kind::kLoop:
        return EmitLoop(s, env);
      case Stmt::Kind::kRaw: {
        LOOM_ASSIGN_OR_RETURN(std::string text, SubstituteVars(s.text, env));
        Line(text);
        return absl::OkStatus();
      }
      case Stmt::Kind::kBarrier:
        Line("__syncthreads();");
        return absl::OkStatus();
      default:
        return EmitScalarOp(s, env);
    }
  }

  // Vector statements with one lane: plain float arithmetic.
  absl::Status EmitScalarOp(const Stmt& s, const Env& env) {
    if (kernel_.vector_lanes != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("the CUDA printer has no vector type; vector_lanes must be 1, got ",
                       kernel_.vector_lanes));
    }
    LOOM_ASSIGN_OR_RETURN(std::string name, SubstituteVars(s.text, env));
    LOOM_ASSIGN_OR_RETURN(std::string a0, SubstituteVars(s.arg0, env));
    LOOM_ASSIGN_OR_RETURN(std::string a1, SubstituteVars(s.arg1, env));
    switch (s.kind) {
      case Stmt::Kind::kVecZero:
        Line(absl::StrCat("float ", name, " = 0.0f;"));
        break;
      case Stmt::Kind::kVecLoad:
        Line(absl::StrCat("float ", name, " = *(", a0, ");"));
        break;
      case Stmt::Kind::kVecStore:
        Line(absl::StrCat("*(", a0, ") = ", name, ";"));
        break;
      case Stmt::Kind::kVecBroadcast:
        Line(absl::StrCat("float ", name, " = ", a0, ";"));
        break;
      case Stmt::Kind::kVecFma:
        Line(absl::StrCat(name, " += ", a0, " * ", a1, ";"));
        break;
      case Stmt::Kind::kVecAdd:
        Line(absl::StrCat(name, " += ", a0, ";"));
        break;
      default:
        return absl::InternalError("unknown statement kind");
    }
    return absl::OkStatus();
  }

  absl::Status BindDim(const Stmt& s, bool is_block, int dim) {
    static constexpr const char* kAxis[] = {"x", "y", "z"};
    if (s.const_extent < 1) {
      return absl::InvalidArgumentError(absl::StrCat("loop '", s.text, "' bound to ",
                                                     is_block ? "blockIdx." : "threadIdx.",
                                                     kAxis[dim], " needs a constant extent >= 1"));
    }
    if (s.const_extent > 0x7fffffff) {
      return absl::InvalidArgumentError(
          absl::StrCat("loop '", s.text, "' extent ", s.const_extent, " is too large to bind"));
    }
    int64_t& slot = is_block ? grid_[dim] : block_[dim];
    if (is_block && slot > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("blockIdx.", kAxis[dim], " is bound twice (again by loop '", s.text, "')"));
    }
    if (!is_block && slot > 0 && slot != s.const_extent) {
      return absl::InvalidArgumentError(
          absl::StrCat("threadIdx.", kAxis[dim], " is bound with extent ", slot,
                       " and again with extent ", s.const_extent, " by loop '", s.text, "'"));
    }
    slot = s.const_extent;
    return absl::OkStatus();
  }

  absl::Status EmitLoop(const Stmt& s, const Env& env) {
    const std::string& var = s.text;
    if (var.empty()) return absl::InvalidArgumentError("loop without a variable name");
    LOOM_ASSIGN_OR_RETURN(std::string extent, SubstituteVars(s.extent, env));
    switch (s.loop_kind) {
      case LoopKind::kBlockX:
      case LoopKind::kBlockY:
      case LoopKind::kBlockZ:
      case LoopKind::kThreadX:
      case LoopKind::kThreadY:
      case LoopKind::kThreadZ: {
        const bool is_block = s.loop_kind == LoopKind::kBlockX ||
                              s.loop_kind == LoopKind::kBlockY || s.loop_kind == LoopKind::kBlockZ;
        const int dim = is_block
                            ? static_cast<int>(s.loop_kind) - static_cast<int>(LoopKind::kBlockX)
                            : static_cast<int>(s.loop_kind) - static_cast<int>(LoopKind::kThreadX);
        LOOM_RETURN_IF_ERROR(BindDim(s, is_block, dim));
        static constexpr const char* kAxis[] = {"x", "y", "z"};
        Env inner = env;
        inner.emplace_back(var, var);
        return EmitScoped(absl::StrCat("const int ", var, " = (int)",
                                       is_block ? "blockIdx." : "threadIdx.", kAxis[dim], ";"),
                          s.body, inner);
      }
      case LoopKind::kUnrolled:
      case LoopKind::kVThread: {
        if (s.const_extent < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(s.loop_kind == LoopKind::kVThread ? "virtual-thread" : "unrolled",
                           " loop '", var, "' needs a constant extent"));
        }
        for (int64_t i = 0; i < s.const_extent; ++i) {
          Env inner = env;
          inner.emplace_back(var, std::to_string(i));
          LOOM_RETURN_IF_ERROR(EmitBody(s.body, inner));
        }
        return absl::OkStatus();
      }
      case LoopKind::kSerial:
      case LoopKind::kVectorized:
      case LoopKind::kUnrollHint: {
        Env inner = env;
        inner.emplace_back(var, var);
        if (s.loop_kind == LoopKind::kUnrollHint) Line("#pragma unroll");
        Line(absl::StrCat("for (int ", var, " = 0; ", var, " < ", extent, "; ++", var, ") {"));
        ++depth_;
        LOOM_RETURN_IF_ERROR(EmitBody(s.body, inner));
        --depth_;
        Line("}");
        return absl::OkStatus();
      }
      case LoopKind::kParallel:
        return absl::InvalidArgumentError(absl::StrCat(
            "parallel loop '", var, "' has no CUDA meaning; bind it to blockIdx/threadIdx"));
    }
    return absl::InternalError("unknown loop kind");
  }

 private:
  const Kernel& kernel_;
  const CudaPrintOptions options_;
  std::string out_;
  int depth_ = 0;
  int64_t grid_[3] = {0, 0, 0};
  int64_t block_[3] = {0, 0, 0};
};

}  // namespace

absl::StatusOr<CudaKernelSource> PrintCuda(const Kernel& kernel, const CudaPrintOptions& options) {
  return CudaPrinter(kernel, options).Run();
}

}  // namespace loom::codegen
