#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

using Ints64 = std::vector<int64_t>;

TEST(SliceTest, NegativeStepsAndClamping) {
  Tensor x = Iota({5});
  auto reverse = Eval("Slice", {x, I({1}, {4}), I({1}, {-100}), Tensor(), I({1}, {-1})});
  ASSERT_TRUE(reverse.ok()) << reverse.status();
  ExpectFloats(*reverse, {5}, {4, 3, 2, 1, 0});
  auto every_other = Eval("Slice", {x, I({1}, {-1}), I({1}, {0}), I({1}, {0}), I({1}, {-2})});
  ASSERT_TRUE(every_other.ok()) << every_other.status();
  ExpectFloats(*every_other, {2}, {4, 2});
  auto clamped = Eval("Slice", {x, I({1}, {-100}), I({1}, {100})});
  ASSERT_TRUE(clamped.ok()) << clamped.status();
  ExpectFloats(*clamped, {5}, {0, 1, 2, 3, 4});
  auto empty = Eval("Slice", {x, I({1}, {3}), I({1}, {1})});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->shape(), (Shape{0}));
}

TEST(SliceTest, AxesAndSteps2d) {
  Tensor x = Iota({3, 4});
  auto y = Eval("Slice", {x, I({2}, {0, 1}), I({2}, {2, 1000}), I({2}, {0, 1}), I({2}, {1, 2})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 2}, {1, 3, 5, 7});
  auto neg_axis = Eval("Slice", {x, I({1}, {-2}), I({1}, {1000}), I({1}, {-1})});
  ASSERT_TRUE(neg_axis.ok()) << neg_axis.status();
  ExpectFloats(*neg_axis, {3, 2}, {2, 3, 6, 7, 10, 11});
  auto zero_step = Eval("Slice", {x, I({1}, {0}), I({1}, {1}), I({1}, {0}), I({1}, {0})});
  EXPECT_EQ(zero_step.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero_step.status().message(), HasSubstr("Slice 'test_node': steps [0] contain a 0"));
}

TEST(GatherTest, NegativeIndexAxis0) {
  Tensor data = F({3, 2}, {1, 2, 3, 4, 5, 6});
  auto y = Eval("Gather", {data, I({2}, {-1, 0})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 2}, {5, 6, 1, 2});
  auto scalar = Eval("Gather", {data, I({}, {1})});
  ASSERT_TRUE(scalar.ok()) << scalar.status();
  ExpectFloats(*scalar, {2}, {3, 4});
}

TEST(GatherTest, Axis1WithInt32IndicesAndInt64Data) {
  Tensor idx(DType::kInt32, {2, 1});
  idx.data<int32_t>()[0] = 1;
  idx.data<int32_t>()[1] = -2;
  auto y = Eval("Gather", {I({2, 2}, {10, 11, 20, 21}), idx}, {{"axis", int64_t{1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), (Shape{2, 2, 1}));
  EXPECT_THAT(Ints(*y), ElementsAre(11, 10, 21, 20));
}

TEST(GatherTest, OutOfRangeIndexIsInvalidArgument) {
  auto y = Eval("Gather", {Iota({3}), I({2}, {0, 3})});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), HasSubstr("Gather 'test_node': index 3 (element 1 of the "
                                              "indices) is out of range for axis 0 of size 3"));
  auto low = Eval("Gather", {Iota({3}), I({1}, {-4})});
  EXPECT_EQ(low.status().code(), absl::StatusCode::kInvalidArgument);
  auto float_idx = Eval("Gather", {Iota({3}), F({1}, {0})});
  EXPECT_EQ(float_idx.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(float_idx.status().message(), HasSubstr("indices must be int64 or int32"));
}

TEST(ReshapeTest, ZeroCopiesAndMinusOneInfers) {
  Tensor x = Iota({2, 3, 4});
  auto y = Eval("Reshape", {x, I({2}, {0, -1})});
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), (Shape{2, 12}));
  EXPECT_EQ(y->raw_data(), x.raw_data());  // a view
  auto z = Eval("Reshape", {x, I({3}, {-1, 0, 2})});
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->shape(), (Shape{4, 3, 2}));
}

TEST(ReshapeTest, AllowZeroAndErrors) {
  auto zero = Eval("Reshape", {Tensor(DType::kFloat32, {0, 4}), I({2}, {4, 0})},
                   {{"allowzero", int64_t{1}}});
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(zero->shape(), (Shape{4, 0}));
  auto two = Eval("Reshape", {Iota({6}), I({2}, {-1, -1})});
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two.status().message(), HasSubstr("has two -1"));
  auto count = Eval("Reshape", {Iota({6}), I({2}, {4, -1})});
  EXPECT_EQ(count.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(count.status().message(), HasSubstr("cannot reshape"));
}

TEST(PadTest, ReflectEdgeConstantAndCrop) {
  Tensor x = F({1, 3}, {1, 2, 3});
  auto reflect = Eval("Pad", {x, I({4}, {0, 2, 0, 2})}, {{"mode", std::string("reflect")}});
  ASSERT_TRUE(reflect.ok()) << reflect.status();
  ExpectFloats(*reflect, {1, 7}, {3, 2, 1, 2, 3, 2, 1});
  auto edge = Eval("Pad", {x, I({4}, {0, 2, 0, 2})}, {{"mode", std::string("edge")}});
  ASSERT_TRUE(edge.ok()) << edge.status();
  ExpectFloats(*edge, {1, 7}, {1, 1, 1, 2, 3, 3, 3});
  auto constant = Eval("Pad", {x, I({4}, {0, 2, 0, 2}), F({}, {9})});
  ASSERT_TRUE(constant.ok()) << constant.status();
  ExpectFloats(*constant, {1, 7}, {9, 9, 1, 2, 3, 9, 9});
  auto crop = Eval("Pad", {x, I({4}, {0, -1, 1, 0})});
  ASSERT_TRUE(crop.ok()) << crop.status();
  ExpectFloats(*crop, {2, 2}, {2, 3, 0, 0});
}

TEST(PadTest, Reflect2dAndOpset18Axes) {
  auto rows = Eval("Pad", {F({2, 2}, {1, 2, 3, 4}), I({4}, {1, 0, 1, 0})},
                   {{"mode", std::string("reflect")}});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ExpectFloats(*rows, {4, 2}, {3, 4, 1, 2, 3, 4, 1, 2});
  auto axes = Eval("Pad", {F({1, 3}, {1, 2, 3}), I({2}, {1, 0}), Tensor(), I({1}, {-1})}, {}, 18);
  ASSERT_TRUE(axes.ok()) << axes.status();
  ExpectFloats(*axes, {1, 4}, {0, 1, 2, 3});
  auto bad = Eval("Pad", {F({1, 3}, {1, 2, 3}), I({2}, {1, 0})});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("expected 4"));
}

TEST(SqueezeTest, Opset11AttributeVersusOpset13Input) {
  Tensor x = Iota({1, 3, 1});
  auto old = Eval("Squeeze", {x}, {{"axes", Ints64{0}}}, 11);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->shape(), (Shape{3, 1}));
  auto input = Eval("Squeeze", {x, I({1}, {-1})}, {}, 13);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->shape(), (Shape{1, 3}));
  auto all = Eval("Squeeze", {x}, {}, 13);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->shape(), (Shape{3}));
  auto bad = Eval("Squeeze", {x, I({1}, {1})}, {}, 13);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("cannot squeeze axis 1"));
}

TEST(UnsqueezeTest, Opset11AttributeVersusOpset13Input) {
  Tensor x = Iota({2, 3});
  auto old = Eval("Unsqueeze", {x}, {{"axes", Ints64{0, 3}}}, 11);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->shape(), (Shape{1, 2, 3, 1}));
  auto input = Eval("Unsqueeze", {x, I({1}, {-1})}, {}, 13);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->shape(), (Shape{2, 3, 1}));
  auto missing = Eval("Unsqueeze", {x}, {}, 13);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TransposeTest, DefaultReversesAndExplicitPerm) {
  auto y = Eval("Transpose", {Iota({2, 3})});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {3, 2}, {0, 3, 1, 4, 2, 5});
  auto z = Eval("Transpose", {Iota({2, 1, 3})}, {{"perm", Ints64{2, 0, 1}}});
  ASSERT_TRUE(z.ok()) << z.status();
  ExpectFloats(*z, {3, 2, 1}, {0, 3, 1, 4, 2, 5});
  auto bad = Eval("Transpose", {Iota({2, 3})}, {{"perm", Ints64{0, 0}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("is not a permutation"));
}

TEST(ConcatTest, AlongAxis1AndInt64) {
  auto y = Eval("Concat", {F({2, 1}, {1, 2}), F({2, 2}, {3, 4, 5, 6})}, {{"axis", int64_t{1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {2, 3}, {1, 3, 4, 2, 5, 6});
  auto ints = Eval("Concat", {I({2}, {1, 2}), I({1}, {3}), I({0}, {})}, {{"axis", int64_t{-1}}});
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(Ints(*ints), ElementsAre(1, 2, 3));
  auto bad = Eval("Concat", {F({2, 1}, {1, 2}), F({3, 1}, {1, 2, 3})}, {{"axis", int64_t{1}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("does not match"));
}

TEST(FlattenTest, Axes) {
  Tensor x = Iota({2, 3, 4});
  auto def = Eval("Flatten", {x});
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(def->shape(), (Shape{2, 12}));
  auto zero = Eval("Flatten", {x}, {{"axis", int64_t{0}}});
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->shape(), (Shape{1, 24}));
  auto neg = Eval("Flatten", {x}, {{"axis", int64_t{-1}}});
  ASSERT_TRUE(neg.ok());
  EXPECT_EQ(neg->shape(), (Shape{6, 4}));
}

TEST(ShapeTest, StartEndFromOpset15) {
  Tensor x(DType::kFloat32, {2, 3, 4, 5});
  auto sliced = Eval("Shape", {x}, {{"start", int64_t{1}}, {"end", int64_t{-1}}}, 15);
  ASSERT_TRUE(sliced.ok()) << sliced.status();
  EXPECT_EQ(sliced->dtype(), DType::kInt64);
  EXPECT_THAT(Ints(*sliced), ElementsAre(3, 4));
  auto full = Eval("Shape", {x}, {}, 13);
  ASSERT_TRUE(full.ok());
  EXPECT_THAT(Ints(*full), ElementsAre(2, 3, 4, 5));
}

TEST(ConstantTest, ValueKinds) {
  auto tensor = Eval("Constant", {}, {{"value", F({2}, {1, 2})}});
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  ExpectFloats(*tensor, {2}, {1, 2});
  auto f = Eval("Constant", {}, {{"value_float", 2.5f}});
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectFloats(*f, {}, {2.5f});
  auto ints = Eval("Constant", {}, {{"value_ints", Ints64{4, 5}}});
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->shape(), (Shape{2}));
  EXPECT_THAT(Ints(*ints), ElementsAre(4, 5));
  auto i = Eval("Constant", {}, {{"value_int", int64_t{-3}}});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_THAT(Ints(*i), ElementsAre(-3));
  auto s = Eval("Constant", {}, {{"value_string", std::string("x")}});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(MiscTest, IdentityDropoutExpandConstantOfShape) {
  Tensor x = Iota({2, 2});
  auto id = Eval("Identity", {x});
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->raw_data(), x.raw_data());
  auto drop = EvalAll("Dropout", {x, F({}, {0.5f})}, {}, 13, /*num_outputs=*/2);
  ASSERT_TRUE(drop.ok()) << drop.status();
  EXPECT_EQ(Floats((*drop)[0]), Floats(x));
  EXPECT_EQ((*drop)[1].dtype(), DType::kBool);
  EXPECT_EQ((*drop)[1].shape(), x.shape());
  EXPECT_EQ((*drop)[1].data<uint8_t>()[3], 1);
  Tensor training(DType::kBool, {});
  training.data<uint8_t>()[0] = 1;
  auto train = Eval("Dropout", {x, Tensor(), training});
  EXPECT_EQ(train.status().code(), absl::StatusCode::kUnimplemented);

  auto expand = Eval("Expand", {F({3, 1}, {1, 2, 3}), I({3}, {2, 1, 2})});
  ASSERT_TRUE(expand.ok()) << expand.status();
  ExpectFloats(*expand, {2, 3, 2}, {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
  auto filled = Eval("ConstantOfShape", {I({2}, {2, 2})}, {{"value", I({1}, {7})}});
  ASSERT_TRUE(filled.ok()) << filled.status();
  EXPECT_EQ(filled->shape(), (Shape{2, 2}));
  EXPECT_THAT(Ints(*filled), ElementsAre(7, 7, 7, 7));
}

}  // namespace
}  // namespace loom::kernels
