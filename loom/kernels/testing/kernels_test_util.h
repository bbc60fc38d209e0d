// Helpers for the reference-kernel tests only: build a one-node call to EvaluateNode and compare
// float tensors. Included by loom/kernels/*_test.cc.
#pragma once

#include <cmath>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/graph/graph.h"
#include "loom/graph/tensor.h"
#include "loom/kernels/reference.h"

namespace loom::kernels::testing {

using graph::AttrValue;
using graph::DType;
using graph::Shape;
using graph::Tensor;

inline Tensor F(Shape shape, std::vector<float> values) {
  return Tensor::FromFloats(std::move(shape), values);
}
inline Tensor I(Shape shape, std::vector<int64_t> values) {
  return Tensor::FromInt64s(std::move(shape), values);
}
// A float tensor 0, 1, 2, ... of the given shape.
inline Tensor Iota(Shape shape) {
  Tensor t(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

// A float tensor with elements uniform in [-1, 1).
inline Tensor Random(Shape shape, base::Rng& rng) {
  Tensor t(DType::kFloat32, std::move(shape));
  for (float& v : t.values<float>()) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
  return t;
}

// A node "test_node" of `op` with one input name per tensor (empty for an undefined tensor).
inline graph::Node MakeNode(const std::string& op, const std::vector<Tensor>& inputs,
                            std::map<std::string, AttrValue> attrs = {}, int num_outputs = 1) {
  graph::Node node;
  node.name = "test_node";
  node.op_type = op;
  for (size_t i = 0; i < inputs.size(); ++i) {
    node.inputs.push_back(inputs[i].defined() ? "in" + std::to_string(i) : "");
  }
  for (int i = 0; i < num_outputs; ++i) node.outputs.push_back("out" + std::to_string(i));
  node.attrs = std::move(attrs);
  return node;
}

// Evaluates a one-node call and returns all outputs.
inline absl::StatusOr<std::vector<Tensor>> EvalAll(const std::string& op,
                                                   const std::vector<Tensor>& inputs,
                                                   std::map<std::string, AttrValue> attrs = {},
                                                   int64_t opset = 17, int num_outputs = 1) {
  graph::Node node = MakeNode(op, inputs, std::move(attrs), num_outputs);
  return EvaluateNode(node, opset, inputs);
}

// Evaluates a one-node call and returns its first output.
inline absl::StatusOr<Tensor> Eval(const std::string& op, const std::vector<Tensor>& inputs,
                                   std::map<std::string, AttrValue> attrs = {},
                                   int64_t opset = 17) {
  absl::StatusOr<std::vector<Tensor>> outs = EvalAll(op, inputs, std::move(attrs), opset, 1);
  if (!outs.ok()) return outs.status();
  return (*outs)[0];
}

inline std::vector<float> Floats(const Tensor& t) {
  auto v = t.values<float>();
  return {v.begin(), v.end()};
}
inline std::vector<int64_t> Ints(const Tensor& t) {
  auto v = t.values<int64_t>();
  return {v.begin(), v.end()};
}

// Expects `t` to be float32 of `shape` with elements within `tol` of `expected`.
inline void ExpectFloats(const Tensor& t, const Shape& shape, const std::vector<float>& expected,
                         float tol = 1e-5f) {
  ASSERT_EQ(t.dtype(), DType::kFloat32) << t.type().ToString();
  ASSERT_EQ(t.shape(), shape) << t.type().ToString();
  ASSERT_EQ(static_cast<size_t>(t.num_elements()), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(t.data<float>()[i], expected[i], tol) << "at flat index " << i;
  }
}

// Expects two float tensors to agree elementwise within an absolute+relative tolerance.
inline void ExpectClose(const Tensor& actual, const Tensor& expected, float tol = 1e-4f) {
  ASSERT_EQ(actual.type(), expected.type());
  for (int64_t i = 0; i < actual.num_elements(); ++i) {
    const float a = actual.data<float>()[i], e = expected.data<float>()[i];
    EXPECT_NEAR(a, e, tol * (1.0f + std::fabs(e))) << "at flat index " << i;
  }
}

}  // namespace loom::kernels::testing
