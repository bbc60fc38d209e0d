// A CUDA model's compiled form as plain data: its kernels (launch geometry, argument sizes), its
// steps (kernel launches, and host steps that run a reference kernel between a download and an
// upload), its constants, the size of its value arena and where the graph's inputs and outputs
// live. CudaModel::Compile (cuda_model.cc) builds it, CudaModel runs it, and the GPU artifact
// (artifact.h, "GPU artifacts") writes and reads it; ValidateCudaPlan is the one check of a plan
// that may come from a file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/ops/cuda_launch.h"

namespace loom::runtime {

// Where a kernel argument or a value lives: a byte offset in the value arena, or a constant.
struct CudaOperand {
  enum class Kind { kArena, kConstant };
  Kind kind = Kind::kArena;
  int64_t offset = 0;  // kArena: bytes from the arena's base (256-byte aligned)
  int64_t index = 0;   // kConstant: the index in CudaPlan::constants
  bool operator==(const CudaOperand&) const = default;
};

// A typed value: a graph input or output, or an operand of a host step.
struct CudaValueRef {
  CudaOperand at;
  graph::TensorType type;  // static shape
  int64_t bytes() const;
};

struct CudaKernelInfo {
  ops::CudaLaunch launch;
  std::vector<int64_t> arg_bytes;  // what each argument spans, in order
  std::string kind;  // "conv2d_nchw_cuda", "elementwise", "softmax", ... (for profiles)
};

struct CudaLaunchStep {
  int32_t kernel = 0;  // index in CudaPlan::kernels
  std::vector<CudaOperand> args;
  std::string name;  // the node (first of a fused chain)
};

// A node without a device kernel: its reference kernel on the host (omitted optional inputs
// and outputs are nullopt).
struct CudaHostStep {
  graph::Node node;
  std::vector<std::optional<CudaValueRef>> inputs;
  std::vector<std::optional<CudaValueRef>> outputs;
};

using CudaStep = std::variant<CudaLaunchStep, CudaHostStep>;

struct CudaPlan {
  std::string arch;  // "sm_90": what the kernels were built for
  int64_t opset = 0;
  std::vector<CudaKernelInfo> kernels;
  std::vector<graph::Tensor> constants;  // uploaded once
  std::vector<CudaStep> steps;
  int64_t arena_bytes = 0;
  std::vector<std::pair<std::string, CudaValueRef>> inputs;   // graph inputs, in order
  std::vector<std::pair<std::string, CudaValueRef>> outputs;  // graph outputs, in order

  bool has_host_steps() const;
};

// OK when every kernel index, constant index and arena range of `plan` is in bounds (overflow-safe
// arithmetic), every launch passes as many arguments as its kernel takes, each at least as large
// as the kernel reads or writes, arena operands are aligned, and every typed value spans as many
// bytes as its type says. kDataLoss naming the first problem otherwise.
absl::Status ValidateCudaPlan(const CudaPlan& plan);

}  // namespace loom::runtime
