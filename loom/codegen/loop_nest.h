// A small loop-nest IR shared by every operator template: loops with an extent and an annotation
// (serial, unrolled, vectorized, parallel; for GPUs: bound to blockIdx/threadIdx, virtual thread,
// unroll hint), vector statements (load, store, broadcast, FMA), barriers, shared-memory staging
// buffers and raw C statements for index arithmetic. Templates in ops/ build a Kernel; PrintCpp
// (cpp_printer.h) or PrintCuda (cuda_printer.h) turns it into self-contained source that the
// builder compiles. A new operator needs no new printer.
//
// Loop variables are referenced in statement text as `$name`. The printer substitutes them: a
// serial/vectorized/parallel loop's `$i` becomes the C variable `i`, an unrolled loop's `$i` the
// constant of the copy being printed, so register names such as `acc_$r_$j` become `acc_2_1`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom::codegen {

enum class LoopKind {
  kSerial,      // a plain for loop
  kUnrolled,    // fully unrolled by the printer (constant extent), one copy per iteration
  kVectorized,  // a plain loop the compiler is told to vectorize (no loop-carried dependences)
  kParallel,    // outermost only: chunks of [0, extent) run through par->parallel_for
  // CUDA only (PrintCuda; PrintCpp rejects them). A bound loop is no loop: its variable is the
  // block or thread index of that dimension, and its constant extent is the grid/block size. A
  // block dimension is bound once; a thread dimension may be bound again (cooperative fetches)
  // with the same extent.
  kBlockX,
  kBlockY,
  kBlockZ,
  kThreadX,
  kThreadY,
  kThreadZ,
  kVThread,     // a virtual thread: unrolled like kUnrolled (TVM's vthread injection)
  kUnrollHint,  // a for loop with `#pragma unroll` (the compiler unrolls it, not the printer)
};

struct Stmt {
  enum class Kind {
    kBlock,         // body in a { } scope
    kLoop,          // for (var = 0; var < extent; ++var) body
    kIf,            // if (text) body
    kRaw,           // one C statement or declaration, verbatim after substitution
    kVecZero,       // vf name = 0
    kVecLoad,       // vf name = *(address)          (unaligned is fine)
    kVecStore,      // *(address) = name
    kVecBroadcast,  // vf name = broadcast(scalar expression)
    kVecFma,        // acc += a * b   (contracted to one FMA)
    kVecAdd,        // acc += a
    kBarrier,       // CUDA: __syncthreads() (every thread of the block must reach it)
  };
  Kind kind = Kind::kRaw;
  // kRaw: the statement; kIf: the condition; kLoop: the variable name; vector ops: the
  // destination/accumulator name (kVecStore: the source register).
  std::string text;
  // kVecLoad/kVecStore: the float address expression; kVecBroadcast: the scalar expression;
  // kVecFma/kVecAdd: operand a.
  std::string arg0;
  std::string arg1;  // kVecFma: operand b
  // kLoop: extent as an expression; `const_extent` >= 0 when it is a known constant.
  std::string extent;
  int64_t const_extent = -1;
  LoopKind loop_kind = LoopKind::kSerial;
  std::vector<Stmt> body;
};

// Builders (the only way templates make statements).
Stmt Block(std::vector<Stmt> body);
Stmt Loop(std::string var, int64_t extent, LoopKind kind, std::vector<Stmt> body);
// A loop whose extent is only known as an expression (serial or vectorized only).
Stmt LoopExpr(std::string var, std::string extent, LoopKind kind, std::vector<Stmt> body);
Stmt If(std::string condition, std::vector<Stmt> body);
Stmt Raw(std::string statement);
Stmt Comment(const std::string& text);
Stmt VecZero(std::string name);
Stmt VecLoad(std::string name, std::string address);
Stmt VecStore(std::string address, std::string name);
Stmt VecBroadcast(std::string name, std::string scalar);
Stmt VecFma(std::string acc, std::string a, std::string b);
Stmt VecAdd(std::string acc, std::string a);
Stmt Barrier();

// One kernel argument: `T* name = (T*)buffers[index]` (const for inputs), T = `type`.
struct KernelParam {
  std::string name;
  bool is_output = false;
  // The element's C type ("float", "int64_t", "uint8_t" for bool, ...). The CUDA printer takes
  // float only.
  std::string type = "float";
};

// A block-shared staging buffer of `elems` floats (CUDA `__shared__ float name[elems]`).
struct SharedBuffer {
  std::string name;
  int64_t elems = 0;
};

// A whole generated kernel: `extern "C" void loom_kernel(void* const* buffers,
// const loom_parallel_t* par)`. Statements may use the parameters by name, `vf` (the vector type
// of `vector_lanes` floats) and `loom_bcast`.
struct Kernel {
  int32_t vector_lanes = 16;
  std::vector<KernelParam> params;
  std::vector<Stmt> body;
  // Lines placed at file scope after the prelude (constants, static helpers).
  std::vector<std::string> globals;
  // A short description printed as a comment at the top (template name, config).
  std::string comment;
  // CUDA only: block-shared buffers, declared at the top of the kernel body.
  std::vector<SharedBuffer> shared;
};

}  // namespace loom::codegen
