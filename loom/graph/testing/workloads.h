// Test support: tunable workloads in one line, and the tasks of a zoo model, for the tests of
// templates and builders (ops/templates_test.cc, ops/cuda_templates_test.cc,
// ops/matmul_templates_test.cc, toolchain/nvrtc_builder_test.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/zoo.h"

namespace loom::graph::testing {

// A square-kernel (r x r) convolution of an n x c x h x w input to k channels with symmetric
// padding: conv2d for groups 1, depthwise for groups == c, grouped otherwise.
inline Workload ConvWorkload(int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t stride,
                             int64_t pad, int64_t groups = 1, int64_t dilation = 1, int64_t n = 1) {
  Workload wl;
  wl.kind = groups == 1   ? TaskKind::kConv2d
            : groups == c ? TaskKind::kDepthwiseConv2d
                          : TaskKind::kGroupedConv2d;
  wl.n = n;
  wl.c = c;
  wl.h = h;
  wl.w = w;
  wl.k = k;
  wl.r = r;
  wl.s = r;
  wl.stride_h = wl.stride_w = stride;
  wl.pad_top = wl.pad_left = wl.pad_bottom = wl.pad_right = pad;
  wl.dilation_h = wl.dilation_w = dilation;
  wl.groups = groups;
  return wl;
}

// b products of m x k by k x n.
inline Workload BatchMatmulWorkload(int64_t b, int64_t m, int64_t n, int64_t k) {
  Workload wl;
  wl.kind = TaskKind::kBatchMatmul;
  wl.b = b;
  wl.m = m;
  wl.n = n;
  wl.k = k;
  return wl;
}

// An m x k activation times a k x n weight (given n x k with trans_b).
inline Workload DenseWorkload(int64_t m, int64_t n, int64_t k, bool trans_b = false) {
  Workload wl;
  wl.kind = TaskKind::kDense;
  wl.m = m;
  wl.n = n;
  wl.k = k;
  wl.trans_b = trans_b;
  return wl;
}

// The workloads of the tunable tasks of zoo model `name` ("resnet18"), in ExtractTasks' order; a
// model that does not build is a test failure (and an empty list).
inline std::vector<Workload> ZooModelWorkloads(const std::string& name) {
  absl::StatusOr<Graph> g = BuildZooModel(name);
  EXPECT_TRUE(g.ok()) << g.status();
  if (!g.ok()) return {};
  EXPECT_TRUE(InferShapes(*g).ok());
  absl::StatusOr<std::vector<Task>> tasks = ExtractTasks(*g);
  EXPECT_TRUE(tasks.ok()) << tasks.status();
  std::vector<Workload> out;
  if (!tasks.ok()) return out;
  for (const Task& t : *tasks) out.push_back(t.workload);
  return out;
}

}  // namespace loom::graph::testing
