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
// kind does not use stay 0 (or empty).
struct Workload {
  TaskKind kind = TaskKind::kConv2d;
  DType dtype = DType::kFloat32;
  // Convolutions (NCHW input, KCRS weight): batch n, input channels c, input h x w, output
  // channels k, kernel r x s.
  // Dense (Y[m,n] = A[m,k] * B, B a constant weight): m, n, k; A is given as [k,m] when trans_a
  // (Gemm transA), B as [n,k] when trans_b (Gemm transB) and else as [k,n].
  // Batch matmul (Y[b,m,n] = A[b,m,k] * B[b,k,n], both operands activations or any mix): b, m, n,
  // k; each batch's A is given as [k,m] when trans_a and its B as [n,k] when trans_b (a
  // last-two-dims Transpose read in place). Every operand and the output are row-major.
  int64_t n = 0, c = 0, h = 0, w = 0, k = 0, r = 0, s = 0;
  int64_t stride_h = 0, stride_w = 0;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 0, dilation_w = 0;
  int64_t groups = 0;
  int64_t m = 0, b = 0;
  bool trans_a = false;
  bool trans_b = false;
  // Batch matmul whose operands broadcast over the batch (ONNX MatMul's numpy rule): the output's
  // batch dims as A and B hold them, outermost first, after dropping dims of extent 1 and merging
  // neighbours with the same pattern. Each dim is the output's extent in one operand and that
  // extent or 1 (broadcast) in the other; at least one dim broadcasts, and b is the product of
  // the output's dims. Empty (the common case) when both operands hold all b batches.
  std::vector<int64_t> batch_a, batch_b;

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
  // Transpose nodes those nodes read through in place (NodeWorkload::absorbed), in graph order.
  std::vector<std::string> absorbed;
};

// "conv2d", "depthwise_conv2d", "grouped_conv2d", "dense", "batch_matmul".
std::string TaskKindName(TaskKind kind);
// Canonical key, e.g. "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1" (pads in
// top x left x bottom x right order), "dense:f32:m1_n1000_k512_tb1",
// "batch_matmul:f32:b12_m128_n128_k64". Fields added after the first keys are written only when
// they differ from their default, after the original ones, so keys of workloads without them
// (and the records stored under those keys) stay as they were: dense "_ta1" (trans_a); batch
// matmul "_ta1", "_tb1" and "_ba<dims>_bb<dims>" (broadcast batch dims, e.g.
// "batch_matmul:f32:b12_m197_n64_k197_ba1_bb12" for one A shared by 12 batches of B).
std::string WorkloadKey(const Workload& w);
// Inverse of WorkloadKey; kInvalidArgument for anything that is not a canonical key, or whose
// operands would exceed kMaxMatrixOperandElements.
absl::StatusOr<Workload> ParseWorkloadKey(std::string_view key);
// The largest operand or output (elements) a dense or batch_matmul workload may have (2^31, 8 GiB
// of float32): a key is untrusted input, and the measurer allocates its operands.
inline constexpr int64_t kMaxMatrixOperandElements = int64_t{1} << 31;
// kInvalidArgument ("invalid <kind> workload: ...") unless `w`'s fields are consistent for its
// kind: extents >= 1, a convolution's groups and output, a matrix product's operand sizes, trans
// flags and broadcast batch dims (the canonical form WorkloadKey writes).
absl::Status ValidateWorkload(const Workload& w);
// FNV-1a, 64 bit: stable across runs, builds and machines.
uint64_t StableHash(std::string_view data);
// 2 * multiply-accumulates (conv: 2*N*K*OH*OW*C/groups*R*S).
double WorkloadFlops(const Workload& w);

// A tunable node as its kernel sees it: the workload, the graph values the kernel reads as its
// natural operands A and B, and the nodes it absorbs. A MatMul (or Gemm) operand that is the
// output of a Transpose swapping only the last two dims, used nowhere else, is read in place:
// the operand is the Transpose's input, the workload's trans_a / trans_b says so, and the
// Transpose is listed in `absorbed` (the compiled model skips it; `loom tasks` reports it).
// This is the one place that decides it, so the tasks and the runtime always agree.
struct NodeWorkload {
  Workload workload;
  std::string a;  // value read as A (conv: the data; dense/batch_matmul: the left operand)
  std::string b;  // value read as B (conv: the weight; dense: the constant weight)
  std::vector<std::string> absorbed;  // names of the absorbed Transpose nodes, A's first
};

// The workload of one node, with its operands. kNotFound when the node is not tunable (not a
// 2-D Conv, Gemm or MatMul, or a form the templates do not cover); kFailedPrecondition when a
// type it needs is missing (run InferShapes first); kInvalidArgument for operands whose shapes
// do not multiply.
//   Conv (2-D): conv2d, depthwise_conv2d or grouped_conv2d.
//   MatMul with a constant B of rank <= 2, and Gemm with a constant B: dense; A's leading dims
//   fold into m (a 2-D A may be a transposed operand read in place: trans_a).
//   Other MatMuls (B an activation, any ranks >= 1, broadcast batch dims) and Gemms: batch_matmul,
//   with leading dims of A that B does not have folded into m where the layout allows it.
absl::StatusOr<NodeWorkload> AnalyzeTunableNode(const Graph& graph, const Node& node);
// AnalyzeTunableNode(graph, node)'s workload.
absl::StatusOr<Workload> WorkloadFromNode(const Graph& graph, const Node& node);

// The unique workloads of a shape-inferred graph, ordered by first occurrence.
absl::StatusOr<std::vector<Task>> ExtractTasks(const Graph& graph);

}  // namespace loom::graph
