// Task extraction: the unique tunable workloads (conv2d, depthwise/grouped conv2d, dense, batch
// matmul) of a shape-inferred graph, each with a canonical key that is stable across runs and
// machines. Called by the tuner to decide what to tune and by the runtime to look up the best
// configs per node.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"

namespace loom::graph {

enum class TaskKind { kConv2d, kDepthwiseConv2d, kGroupedConv2d, kDense, kBatchMatmul };

// Everything that defines the kernel to tune, nothing else (no bias, no epilogue). Fields that a
// kind does not use stay 0.
struct Workload {
  TaskKind kind = TaskKind::kConv2d;
  DType dtype = DType::kFloat32;
  // Convolutions (NCHW input, KCRS weight): batch n, input channels c, input h x w, output
  // channels k, kernel r x s.
  // Dense (Y[m,n] = A[m,k] * B, B is [k,n], or [n,k] when trans_b): m, n, k, trans_b.
  // Batch matmul (Y[b,m,n] = A[b,m,k] * B[b,k,n]): b, m, n, k.
  int64_t n = 0, c = 0, h = 0, w = 0, k = 0, r = 0, s = 0;
  int64_t stride_h = 0, stride_w = 0;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 0, dilation_w = 0;
  int64_t groups = 0;
  int64_t m = 0, b = 0;
  bool trans_b = false;

  bool operator==(const Workload&) const = default;
  // Output spatial extents of a convolution.
  int64_t OutH() const;
  int64_t OutW() const;
};

struct Task {
  Workload workload;
  std::string key;                 // WorkloadKey(workload)
  uint64_t hash = 0;               // StableHash(key)
  int64_t count = 0;               // how many nodes of the graph run this workload
  double flops = 0;                // WorkloadFlops(workload), for one run
  std::vector<std::string> nodes;  // names of those nodes, in graph order
};

// "conv2d", "depthwise_conv2d", "grouped_conv2d", "dense", "batch_matmul".
std::string TaskKindName(TaskKind kind);
// Canonical key, e.g. "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1" (pads in
// top x left x bottom x right order), "dense:f32:m1_n1000_k512_tb1",
// "batch_matmul:f32:b12_m128_n128_k64".
std::string WorkloadKey(const Workload& w);
// Inverse of WorkloadKey; kInvalidArgument for anything that is not a canonical key.
absl::StatusOr<Workload> ParseWorkloadKey(std::string_view key);
// FNV-1a, 64 bit: stable across runs, builds and machines.
uint64_t StableHash(std::string_view data);
// 2 * multiply-accumulates (conv: 2*N*K*OH*OW*C/groups*R*S).
double WorkloadFlops(const Workload& w);

// The workload of one node. kNotFound when the node is not tunable (not a 2-D Conv, Gemm or
// MatMul, or a form the templates do not cover, e.g. Gemm with transA=1); kFailedPrecondition
// when a type it needs is missing (run InferShapes first).
absl::StatusOr<Workload> WorkloadFromNode(const Graph& graph, const Node& node);

// The unique workloads of a shape-inferred graph, ordered by first occurrence.
absl::StatusOr<std::vector<Task>> ExtractTasks(const Graph& graph);

}  // namespace loom::graph
