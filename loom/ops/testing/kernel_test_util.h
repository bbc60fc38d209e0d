// Test support for the ops/ tests of generated kernels (vector math, lowered operators): a
// scratch directory for compiled kernels, and a differential runner that lowers one node
// (lowering.h), compiles the kernel with LocalKernel, runs it on 1, 2 and 3 threads and returns
// its outputs beside the reference kernel's (kernels::EvaluateNode). Test-only; header-only so
// that it needs no library of its own.
#pragma once

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "loom/base/fork_join_pool.h"
#include "loom/base/rng.h"
#include "loom/base/status_macros.h"
#include "loom/graph/graph.h"
#include "loom/graph/shape_inference.h"
#include "loom/kernels/reference.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/lowering.h"

namespace loom::ops::testutil {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/loom_ops_test_XXXXXX";
    const char* made = mkdtemp(tmpl);
    path_ = made != nullptr ? made : "/tmp";
  }
  ~TempDir() {
    if (path_ != "/tmp") std::filesystem::remove_all(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One node to lower, with its inputs in node.inputs order; `constants` are made initializers
// (the shape-defining inputs), the rest graph inputs.
struct NodeCase {
  graph::Node node;
  std::vector<graph::Tensor> inputs;
  std::set<size_t> constants;
  int64_t opset = 17;
  // When set, the outputs' types, used instead of shape inference (for operators whose shape
  // rule has not landed yet).
  std::vector<graph::TensorType> output_types;
};

struct NodeRun {
  LoweredKernel kernel;
  // Outputs of the generated kernel per thread count (1, 2, 3), and of the reference kernel.
  std::vector<std::vector<graph::Tensor>> by_threads;
  std::vector<graph::Tensor> reference;
};

inline graph::Graph CaseGraph(const NodeCase& c) {
  graph::Graph g;
  g.opset = c.opset;
  for (size_t i = 0; i < c.node.inputs.size(); ++i) {
    if (c.node.inputs[i].empty()) continue;
    if (c.constants.count(i)) {
      g.initializers[c.node.inputs[i]] = c.inputs[i];
    } else {
      g.inputs.push_back({c.node.inputs[i], c.inputs[i].type()});
    }
  }
  g.nodes.push_back(c.node);
  for (const std::string& o : c.node.outputs) {
    if (!o.empty()) g.outputs.push_back({o, {}});
  }
  return g;
}

// CaseGraph with every value typed: by shape inference, or from c.output_types.
inline absl::StatusOr<graph::Graph> TypedCaseGraph(const NodeCase& c) {
  graph::Graph g = CaseGraph(c);
  if (c.output_types.empty()) {
    LOOM_RETURN_IF_ERROR(graph::InferShapes(g));
    return g;
  }
  for (size_t i = 0; i < c.node.inputs.size(); ++i) {
    if (!c.node.inputs[i].empty()) g.value_types[c.node.inputs[i]] = c.inputs[i].type();
  }
  for (size_t i = 0; i < c.node.outputs.size() && i < c.output_types.size(); ++i) {
    g.value_types[c.node.outputs[i]] = c.output_types[i];
  }
  return g;
}

// Lowers c.node for `target` (kUnimplemented / kInvalidArgument come back as they are).
inline absl::StatusOr<LoweredKernel> LowerCase(const NodeCase& c, const Target& target) {
  LOOM_ASSIGN_OR_RETURN(graph::Graph g, TypedCaseGraph(c));
  return LowerNode(g, g.nodes[0], target);
}

inline void PoolParallelFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  static_cast<base::ForkJoinPool*>(pool)->Run(n, fn, ctx);
}

// How a case's node becomes a kernel: LowerNode, or another lowering with its signature (the
// CUDA lowering's host emulation, cuda_lowering.h).
using LowerFn = std::function<absl::StatusOr<LoweredKernel>(
    const graph::Graph& g, const graph::Node& node, const Target& target)>;

// Lowers (with `lower`, LowerNode by default), compiles (in `dir`), runs on 1, 2 and 3 threads,
// and (with_reference) evaluates the reference kernel.
inline absl::StatusOr<NodeRun> RunCase(const NodeCase& c, const Target& target,
                                       const std::string& dir, bool with_reference = true,
                                       const LowerFn& lower = LowerNode) {
  LOOM_ASSIGN_OR_RETURN(graph::Graph g, TypedCaseGraph(c));
  NodeRun run;
  LOOM_ASSIGN_OR_RETURN(run.kernel, lower(g, g.nodes[0], target));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<LocalKernel> k,
                        LocalKernel::Compile(run.kernel.source, dir, "-O3 -fno-math-errno"));
  std::map<std::string, graph::Tensor> values;
  for (size_t i = 0; i < c.node.inputs.size(); ++i) {
    if (!c.node.inputs[i].empty()) values[c.node.inputs[i]] = c.inputs[i];
  }
  for (int threads = 1; threads <= 3; ++threads) {
    std::vector<graph::Tensor> outs;
    std::vector<void*> ptrs;
    std::vector<graph::Tensor> keep;
    for (const LoweredKernel::Arg& a : run.kernel.args) {
      if (a.kind == LoweredKernel::Arg::Kind::kConstant) {
        keep.push_back(a.constant);
        ptrs.push_back(const_cast<void*>(keep.back().raw_data()));
      } else if (a.is_output) {
        LOOM_ASSIGN_OR_RETURN(graph::TensorType t, g.TypeOf(a.value));
        // Poisoned, so that an element the kernel forgets to write shows.
        graph::Tensor out(t.dtype, t.shape);
        if (out.num_bytes() > 0) std::memset(out.raw_data(), 0x5a, out.num_bytes());
        outs.push_back(out);
        ptrs.push_back(out.raw_data());
      } else {
        keep.push_back(values.at(a.value));
        ptrs.push_back(const_cast<void*>(keep.back().raw_data()));
      }
    }
    base::ForkJoinPool pool(threads);
    loom_parallel_t par{&PoolParallelFor, &pool, threads};
    k->fn()(ptrs.data(), threads == 1 ? nullptr : &par);
    run.by_threads.push_back(std::move(outs));
  }
  if (with_reference) {
    LOOM_ASSIGN_OR_RETURN(run.reference, kernels::EvaluateNode(g.nodes[0], c.opset, c.inputs));
  }
  return run;
}

// Bitwise equality of two tensors (NaNs with the same bits are equal).
inline bool SameBits(const graph::Tensor& a, const graph::Tensor& b) {
  return a.type() == b.type() &&
         (a.num_bytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.num_bytes()) == 0);
}

// max over elements of |a - b| / (|b| + floor), float32 tensors of one shape; +inf when a NaN
// or infinity differs.
inline double MaxRelError(const graph::Tensor& a, const graph::Tensor& b, double floor) {
  double worst = 0;
  for (int64_t i = 0; i < b.num_elements(); ++i) {
    const double x = a.data<float>()[i], y = b.data<float>()[i];
    if (std::isnan(x) || std::isnan(y) || std::isinf(x) || std::isinf(y)) {
      if (!(std::isnan(x) && std::isnan(y)) && x != y) return INFINITY;
      continue;
    }
    worst = std::max(worst, std::fabs(x - y) / (std::fabs(y) + floor));
  }
  return worst;
}

// Seeded random tensors.
inline graph::Tensor RandomFloats(const graph::Shape& shape, uint64_t seed, float lo = -3,
                                  float hi = 3) {
  base::Rng rng(seed);
  graph::Tensor t(graph::DType::kFloat32, shape);
  for (float& v : t.values<float>()) v = static_cast<float>(rng.Uniform(lo, hi));
  return t;
}

// Distinct bytes per element for data-movement checks, any dtype (bool: 0/1).
inline graph::Tensor Iota(graph::DType dtype, const graph::Shape& shape, uint64_t seed) {
  graph::Tensor t(dtype, shape);
  base::Rng rng(seed);
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (size_t i = 0; i < t.num_bytes(); ++i) {
    p[i] = dtype == graph::DType::kBool ? static_cast<uint8_t>(rng.Uniform(0, 2))
                                        : static_cast<uint8_t>(rng.Uniform(0, 256));
  }
  if (graph::IsFloatingDType(dtype)) {
    // Keep floats finite and not NaN so that the reference's conversions cannot change bits.
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      switch (dtype) {
        case graph::DType::kFloat32:
          t.data<float>()[i] = static_cast<float>(rng.Uniform(-100, 100));
          break;
        case graph::DType::kFloat64:
          t.data<double>()[i] = rng.Uniform(-100, 100);
          break;
        default:
          t.data<uint16_t>()[i] &= 0x3fff;
      }
    }
  }
  return t;
}

inline graph::Tensor Int64s(const graph::Shape& shape, std::vector<int64_t> v) {
  return graph::Tensor::FromInt64s(shape, v);
}

}  // namespace loom::ops::testutil
