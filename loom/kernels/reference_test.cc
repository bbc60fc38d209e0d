#include "loom/kernels/reference.h"

#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

TEST(ReferenceTest, KnowsTheSupportedOps) {
  for (const char* op : {"Conv",        "Gemm",
                         "MatMul",      "Add",
                         "Sub",         "Mul",
                         "Div",         "Relu",
                         "LeakyRelu",   "Clip",
                         "Sigmoid",     "HardSigmoid",
                         "HardSwish",   "Tanh",
                         "Softmax",     "MaxPool",
                         "AveragePool", "GlobalAveragePool",
                         "ReduceMean",  "BatchNormalization",
                         "Concat",      "Flatten",
                         "Reshape",     "Transpose",
                         "Slice",       "Gather",
                         "Shape",       "Unsqueeze",
                         "Squeeze",     "Constant",
                         "Identity",    "Pad",
                         "Dropout",     "Cast"}) {
    EXPECT_TRUE(HasReferenceKernel(op)) << op;
  }
  EXPECT_FALSE(HasReferenceKernel("LSTM"));
  EXPECT_FALSE(HasReferenceKernel("conv"));
}

TEST(ReferenceTest, UnsupportedOpIsUnimplementedAndNamesTheNode) {
  auto y = Eval("LSTM", {Iota({1})});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(y.status().message(),
              HasSubstr("LSTM 'test_node': no reference kernel for op type 'LSTM'"));
}

TEST(ReferenceTest, InputCountMustMatchTheNode) {
  graph::Node node = MakeNode("Relu", {Iota({1})});
  auto y = EvaluateNode(node, 17, {});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), HasSubstr("has 1 inputs but 0 tensors were passed"));
  auto arity = Eval("Relu", {Iota({1}), Iota({1})});
  EXPECT_EQ(arity.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(arity.status().message(), HasSubstr("Relu 'test_node': expects 1 inputs, got 2"));
  auto missing = Eval("Conv", {Iota({1, 1, 1, 1}), Tensor()});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("required input 1 is missing"));
}

TEST(ReferenceTest, UnproducedOutputIsAnError) {
  auto y = EvalAll("Relu", {Iota({1})}, {}, 17, /*num_outputs=*/2);
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), HasSubstr("has 2 outputs but Relu produces at most 1"));
}

}  // namespace
}  // namespace loom::kernels
