// Private to the CUDA lowerings (cuda_lowering.h): the writer every CUDA lowering prints its
// kernel with (typed arguments, the thread layouts: one thread per element, one block per row),
// and the family registrations. cuda_lowering.cc owns the operator table and the public API.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/codegen/loop_nest.h"
#include "loom/ops/lower_common.h"
#include "loom/ops/lowering.h"

namespace loom::ops::cuda_lower {

// Threads per block of a per-element kernel.
inline constexpr int64_t kElementThreads = 256;

class CudaKernelWriter {
 public:
  CudaKernelWriter(std::string kind, bool host_emulation)
      : kind_(std::move(kind)), host_emulation_(host_emulation) {}

  // The next kernel argument, a pointer `name` to elements of C type `ctype`.
  void Input(const std::string& value, const std::string& ctype, const std::string& name);
  void Output(const std::string& value, const std::string& ctype, const std::string& name);
  void Constant(graph::Tensor tensor, const std::string& ctype, const std::string& name);
  // Places the vector math (codegen/vector_math.h) and the elementwise helpers at file scope.
  void UseMath() { math_ = true; }

  // One thread per element of [0, total): `body` sees `i` (long long).
  absl::StatusOr<LoweredKernel> PerElement(int64_t total, std::vector<codegen::Stmt> body) const;
  // One block of `threads` (a power of two, <= 1024) per row of [0, rows): `body` sees `row`
  // (long long) and `tid` (int), and may reduce through BlockReduce.
  absl::StatusOr<LoweredKernel> PerRow(int64_t rows, int64_t threads,
                                       std::vector<codegen::Stmt> body) const;

 private:
  absl::StatusOr<LoweredKernel> Print(codegen::Kernel k, int64_t shared_floats) const;

  std::string kind_;
  bool host_emulation_;
  bool math_ = false;
  std::vector<LoweredKernel::Arg> args_;
  std::vector<codegen::KernelParam> params_;
};

// Statements of a per-row kernel (CudaKernelWriter::PerRow with `threads` threads) that combine
// the float `var` of every thread of the block into `var` of every thread, through the shared
// buffer `loom_red` (`threads` floats): `combine` is an expression of `a` and `b`. Every thread
// must reach them (they hold barriers).
std::vector<codegen::Stmt> BlockReduce(const std::string& var, const std::string& combine,
                                       int64_t threads);

// The power of two in [32, 256] closest above `n`: threads per row of a row kernel.
int64_t RowThreads(int64_t n);

// C statements declaring `long long <prefix><d>` for every dim of `dims` from the element
// index `index` (row-major: the last dim fastest).
std::vector<codegen::Stmt> DecomposeIndex(const std::vector<int64_t>& dims,
                                          const std::string& index, const std::string& prefix);

using CudaLowerFn = absl::StatusOr<LoweredKernel> (*)(const lower::LowerCtx& ctx,
                                                      bool host_emulation);
using CudaLowerTable = std::map<std::string, CudaLowerFn>;
void RegisterCudaMovementLowerings(CudaLowerTable* table);  // cuda_lowering.cc
void RegisterCudaRowLowerings(CudaLowerTable* table);       // cuda_lower_rows.cc

}  // namespace loom::ops::cuda_lower
