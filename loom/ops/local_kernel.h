// Compiles a template's KernelSource with the system compiler and runs it in this process. A
// small stand-in for tune/'s builder and measurer, used by the ops/ tests (differential checks
// against Reference()) and by bench/ (the conv-vs-oneDNN figure). No sandbox: a crashing kernel
// takes the caller down, so only trusted configs run through it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/graph/tensor.h"
#include "loom/ops/template.h"

namespace loom::ops {

// A loaded shared object holding `loom_kernel`; unloads on destruction.
class LocalKernel {
 public:
  ~LocalKernel();
  LocalKernel(const LocalKernel&) = delete;
  LocalKernel& operator=(const LocalKernel&) = delete;

  loom_kernel_fn fn() const { return fn_; }

  // Writes `source` under `work_dir` (which must exist), runs
  // `g++ -O2 -shared -fPIC <source.compile_flags> <extra_flags>`, and loads the result.
  // kInternal with the compiler's output on a compile error.
  static absl::StatusOr<std::unique_ptr<LocalKernel>> Compile(const KernelSource& source,
                                                              const std::string& work_dir,
                                                              const std::string& extra_flags = "");

 private:
  LocalKernel(void* handle, loom_kernel_fn fn) : handle_(handle), fn_(fn) {}
  void* handle_;
  loom_kernel_fn fn_;
};

// Natural-layout random inputs in [-1, 1) for `tmpl`, from `seed`.
std::vector<graph::Tensor> RandomNaturalInputs(const Template& tmpl, uint64_t seed);

// Packed buffers ready to call a kernel: inputs packed from natural operands, output zeroed.
struct KernelBuffers {
  std::vector<graph::Tensor> tensors;  // in Buffers() order
  std::vector<void*> pointers;
};
KernelBuffers PrepareBuffers(const Template& tmpl, const Config& config,
                             const std::vector<graph::Tensor>& natural);

// Runs `kernel` once on `natural` (single-threaded, par = null) and returns the unpacked output.
graph::Tensor RunOnce(const Template& tmpl, const Config& config, const LocalKernel& kernel,
                      const std::vector<graph::Tensor>& natural);

// max |a - b| over all elements, and max |b|. Precondition: same element count.
struct ErrorStats {
  double max_abs_err = 0;
  double max_abs_ref = 0;
  // The tolerance the ops tests use: max_abs_err <= 1e-4 * max|ref| + 1e-5.
  bool WithinTolerance() const { return max_abs_err <= 1e-4 * max_abs_ref + 1e-5; }
};
ErrorStats CompareTensors(const graph::Tensor& got, const graph::Tensor& want);

}  // namespace loom::ops
