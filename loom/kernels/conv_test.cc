#include "loom/kernels/conv.h"

#include <cstring>

#include "loom/kernels/testing/kernels_test_util.h"

namespace loom::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::loom::kernels::testing;  // NOLINT: test helpers

TEST(ConvTest, TwoByTwoKernelWithBias) {
  Tensor x = F({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = F({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor b = F({1}, {1});
  auto y = Eval("Conv", {x, w, b});
  ASSERT_TRUE(y.ok()) << y.status();
  // 1*1+2*2+4*3+5*4 = 37 (+1), and so on.
  ExpectFloats(*y, {1, 1, 2, 2}, {38, 48, 68, 78});
}

TEST(ConvTest, PaddedBoxFilterSumsNeighbourhoods) {
  Tensor x = F({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = F({1, 1, 3, 3}, std::vector<float>(9, 1.0f));
  auto y = Eval("Conv", {x, w, Tensor()}, {{"pads", std::vector<int64_t>{1, 1, 1, 1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 3, 3}, {12, 21, 16, 27, 45, 33, 24, 39, 28});
}

TEST(ConvTest, SameUpperAndSameLowerWithStride2) {
  Tensor x = Iota({1, 1, 4, 4});
  Tensor w = F({1, 1, 3, 3}, std::vector<float>(9, 1.0f));
  // out = ceil(4/2) = 2, total pad 1: SAME_UPPER pads the end, SAME_LOWER the beginning.
  auto upper =
      Eval("Conv", {x, w},
           {{"auto_pad", std::string("SAME_UPPER")}, {"strides", std::vector<int64_t>{2, 2}}});
  ASSERT_TRUE(upper.ok()) << upper.status();
  ExpectFloats(*upper, {1, 1, 2, 2}, {45, 39, 66, 50});
  auto lower =
      Eval("Conv", {x, w},
           {{"auto_pad", std::string("SAME_LOWER")}, {"strides", std::vector<int64_t>{2, 2}}});
  ASSERT_TRUE(lower.ok()) << lower.status();
  ExpectFloats(*lower, {1, 1, 2, 2}, {10, 24, 51, 90});
}

TEST(ConvTest, ValidAutoPadIgnoresPads) {
  Tensor x = Iota({1, 1, 4, 4});
  Tensor w = F({1, 1, 3, 3}, std::vector<float>(9, 1.0f));
  auto y = Eval("Conv", {x, w}, {{"auto_pad", std::string("VALID")}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 2, 2}, {45, 54, 81, 90});
}

TEST(ConvTest, Dilation) {
  Tensor x = Iota({1, 1, 4, 4});
  Tensor w = F({1, 1, 2, 2}, {1, 1, 1, 1});
  auto y = Eval("Conv", {x, w}, {{"dilations", std::vector<int64_t>{2, 2}}});
  ASSERT_TRUE(y.ok()) << y.status();
  // out[0,0] = x[0,0] + x[0,2] + x[2,0] + x[2,2] = 0 + 2 + 8 + 10.
  ExpectFloats(*y, {1, 1, 2, 2}, {20, 24, 36, 40});
}

TEST(ConvTest, DepthwiseScalesEachChannel) {
  Tensor x = F({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  Tensor w = F({2, 1, 1, 1}, {2, -1});
  auto y = Eval("Conv", {x, w}, {{"group", int64_t{2}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 2, 2, 2}, {2, 4, 6, 8, -5, -6, -7, -8});
}

TEST(ConvTest, OneDimensionalConv) {
  Tensor x = F({1, 1, 5}, {1, 2, 3, 4, 5});
  Tensor w = F({1, 1, 3}, {1, 0, -1});
  auto y = Eval("Conv", {x, w}, {{"pads", std::vector<int64_t>{1, 1}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 5}, {-2, -2, -2, -2, 4});
}

TEST(ConvTest, IdentityKernelReturnsInput) {
  base::Rng rng(7);
  Tensor x = Random({2, 3, 4, 5}, rng);
  Tensor w(DType::kFloat32, {3, 3, 1, 1});
  for (int64_t c = 0; c < 3; ++c) w.data<float>()[c * 3 + c] = 1.0f;
  auto y = Eval("Conv", {x, w});
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->shape(), x.shape());
  EXPECT_EQ(Floats(*y), Floats(x));
}

TEST(ConvTest, GroupedConvEqualsPerGroupConvsConcatenated) {
  base::Rng rng(11);
  Tensor x = Random({1, 4, 5, 5}, rng);
  Tensor w = Random({6, 2, 3, 3}, rng);
  Tensor b = Random({6}, rng);
  auto y =
      Eval("Conv", {x, w, b}, {{"group", int64_t{2}}, {"pads", std::vector<int64_t>{1, 0, 1, 2}}});
  ASSERT_TRUE(y.ok()) << y.status();
  Conv2dParams p{.in_channels = 2,
                 .in_h = 5,
                 .in_w = 5,
                 .out_channels = 3,
                 .kernel_h = 3,
                 .kernel_w = 3,
                 .pad_top = 1,
                 .pad_left = 0,
                 .pad_bottom = 1,
                 .pad_right = 2};
  ASSERT_EQ(y->shape(), (Shape{1, 6, p.out_h(), p.out_w()}));
  std::vector<float> expected(static_cast<size_t>(2 * p.y_size()));
  for (int64_t g = 0; g < 2; ++g) {
    // With batch 1, group g's input channels and filters are contiguous blocks.
    Conv2dNchw(p, x.data<float>() + g * p.x_size(), w.data<float>() + g * p.w_size(),
               b.data<float>() + g * 3, expected.data() + g * p.y_size());
  }
  EXPECT_EQ(Floats(*y), expected);
}

// An independent, deliberately naive convolution (double accumulation, bounds check per tap).
std::vector<float> NaiveConv(const Conv2dParams& p, const float* x, const float* w,
                             const float* b) {
  std::vector<float> y(static_cast<size_t>(p.y_size()));
  const int64_t icg = p.in_channels / p.groups, ocg = p.out_channels / p.groups;
  size_t i = 0;
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t oc = 0; oc < p.out_channels; ++oc)
      for (int64_t oh = 0; oh < p.out_h(); ++oh)
        for (int64_t ow = 0; ow < p.out_w(); ++ow, ++i) {
          double acc = b != nullptr ? b[oc] : 0.0;
          for (int64_t ic = 0; ic < icg; ++ic)
            for (int64_t kh = 0; kh < p.kernel_h; ++kh)
              for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
                int64_t ih = oh * p.stride_h + kh * p.dilation_h - p.pad_top;
                int64_t iw = ow * p.stride_w + kw * p.dilation_w - p.pad_left;
                if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
                int64_t c = (oc / ocg) * icg + ic;
                acc += double(x[((n * p.in_channels + c) * p.in_h + ih) * p.in_w + iw]) *
                       w[((oc * icg + ic) * p.kernel_h + kh) * p.kernel_w + kw];
              }
          y[i] = static_cast<float>(acc);
        }
  return y;
}

TEST(ConvTest, MatchesNaiveConvOnRandomShapes) {
  base::Rng rng(2024);
  for (int trial = 0; trial < 40; ++trial) {
    Conv2dParams p;
    p.batch = rng.UniformInt(1, 2);
    p.groups = rng.UniformInt(1, 3);
    p.in_channels = p.groups * rng.UniformInt(1, 3);
    p.out_channels = p.groups * rng.UniformInt(1, 3);
    p.in_h = rng.UniformInt(1, 9);
    p.in_w = rng.UniformInt(1, 9);
    p.kernel_h = rng.UniformInt(1, 3);
    p.kernel_w = rng.UniformInt(1, 3);
    p.stride_h = rng.UniformInt(1, 3);
    p.stride_w = rng.UniformInt(1, 3);
    p.dilation_h = rng.UniformInt(1, 2);
    p.dilation_w = rng.UniformInt(1, 2);
    p.pad_top = rng.UniformInt(0, 2);
    p.pad_left = rng.UniformInt(0, 2);
    p.pad_bottom = rng.UniformInt(0, 2);
    p.pad_right = rng.UniformInt(0, 2);
    if (!ValidateConv2dParams(p).ok()) continue;
    Tensor x = Random({p.x_size()}, rng), w = Random({p.w_size()}, rng);
    Tensor b = Random({p.out_channels}, rng);
    const bool with_bias = rng.Bernoulli(0.5);
    std::vector<float> y(static_cast<size_t>(p.y_size()));
    Conv2dNchw(p, x.data<float>(), w.data<float>(), with_bias ? b.data<float>() : nullptr,
               y.data());
    std::vector<float> expected =
        NaiveConv(p, x.data<float>(), w.data<float>(), with_bias ? b.data<float>() : nullptr);
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_NEAR(y[i], expected[i], 1e-5f) << "trial " << trial << " index " << i;
    }
  }
}

TEST(ConvTest, WrongChannelCountIsInvalidArgument) {
  Tensor x(DType::kFloat32, {1, 4, 3, 3});
  Tensor w(DType::kFloat32, {2, 3, 1, 1});
  auto y = Eval("Conv", {x, w});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), HasSubstr("Conv 'test_node'"));
  EXPECT_THAT(y.status().message(), HasSubstr("has 4 channels"));
  EXPECT_THAT(y.status().message(), HasSubstr("expects 3"));
}

TEST(ConvTest, BadBiasKernelShapeAndTooSmallInputAreRejected) {
  Tensor x(DType::kFloat32, {1, 1, 2, 2});
  Tensor w(DType::kFloat32, {1, 1, 3, 3});
  auto small = Eval("Conv", {x, w});
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.status().message(),
              HasSubstr("kernel extent 3 exceeds padded input 2 in spatial dim 0"));

  auto bias = Eval("Conv", {Tensor(DType::kFloat32, {1, 1, 3, 3}), w, F({2}, {1, 2})});
  EXPECT_EQ(bias.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bias.status().message(), HasSubstr("B float32[2] must be [1]"));

  auto kernel = Eval("Conv", {Tensor(DType::kFloat32, {1, 1, 3, 3}), w},
                     {{"kernel_shape", std::vector<int64_t>{2, 2}}});
  EXPECT_EQ(kernel.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(kernel.status().message(), HasSubstr("kernel_shape [2,2] does not match W"));
}

TEST(ConvTest, ThreeDimensionalWithPadsAndGroups) {
  // Two groups over a 2x2x2 volume: a 2x2x2 box filter of ones on channel 0, and a 1x1x1
  // kernel of 3 on channel 1, which with pads 1 at the end grows the output to 3x3x3.
  Tensor x = Iota({1, 2, 2, 2, 2});
  Tensor w(DType::kFloat32, {2, 1, 2, 2, 2});
  for (int i = 0; i < 8; ++i) w.data<float>()[i] = 1;
  w.data<float>()[8] = 3;  // channel 1: only the first tap
  auto y = Eval("Conv", {x, w}, {{"group", int64_t{2}}});
  ASSERT_TRUE(y.ok()) << y.status();
  // Channel 0: 0 + 1 + ... + 7 = 28; channel 1: 3 * x[1, 0, 0, 0] = 3 * 8.
  ExpectFloats(*y, {1, 2, 1, 1, 1}, {28, 24});
  auto padded = Eval("Conv", {Iota({1, 1, 2, 2, 2}), F({1, 1, 1, 1, 1}, {2})},
                     {{"pads", std::vector<int64_t>{0, 0, 0, 1, 1, 1}}});
  ASSERT_TRUE(padded.ok()) << padded.status();
  ASSERT_EQ(padded->shape(), (Shape{1, 1, 3, 3, 3}));
  EXPECT_EQ(padded->data<float>()[0], 0);
  EXPECT_EQ(padded->data<float>()[1 * 9 + 1 * 3 + 1], 14);  // 2 * x[1, 1, 1] = 2 * 7
  EXPECT_EQ(padded->data<float>()[2 * 9 + 2 * 3 + 2], 0);   // padding
}

TEST(ConvTest, Float64) {
  Tensor x(DType::kFloat64, {1, 1, 3});
  Tensor w(DType::kFloat64, {1, 1, 2});
  for (int i = 0; i < 3; ++i) x.data<double>()[i] = i + 1;  // 1 2 3
  w.data<double>()[0] = 0.5;
  w.data<double>()[1] = 0.25;
  auto y = Eval("Conv", {x, w});
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->type().ToString(), "float64[1,1,2]");
  EXPECT_DOUBLE_EQ(y->data<double>()[0], 1.0);   // 0.5 + 0.5
  EXPECT_DOUBLE_EQ(y->data<double>()[1], 1.75);  // 1 + 0.75
}

TEST(ConvTransposeTest, StridesPadsAndOutputPadding) {
  // 1-D: x = [1, 2], w = [1, 1, 1], stride 2 -> positions 0..2 and 2..4 overlap at 2.
  Tensor x = F({1, 1, 2}, {1, 2});
  Tensor w = F({1, 1, 3}, {1, 1, 1});
  auto y = Eval("ConvTranspose", {x, w}, {{"strides", std::vector<int64_t>{2}}});
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectFloats(*y, {1, 1, 5}, {1, 1, 3, 2, 2});
  auto padded = Eval("ConvTranspose", {x, w, F({1}, {10})},
                     {{"strides", std::vector<int64_t>{2}},
                      {"pads", std::vector<int64_t>{1, 0}},
                      {"output_padding", std::vector<int64_t>{1}}});
  ASSERT_TRUE(padded.ok()) << padded.status();
  ExpectFloats(*padded, {1, 1, 5}, {11, 13, 12, 12, 10});
}

TEST(ConvTransposeTest, OutputShapeAndSameUpperAndGroups) {
  Tensor x = F({1, 1, 2}, {1, 2});
  Tensor w = F({1, 1, 3}, {1, 1, 1});
  // SAME_UPPER: output 2 * 2 = 4, natural 5, total padding 1, put at the end.
  auto same = Eval("ConvTranspose", {x, w},
                   {{"strides", std::vector<int64_t>{2}}, {"auto_pad", std::string("SAME_UPPER")}});
  ASSERT_TRUE(same.ok()) << same.status();
  ExpectFloats(*same, {1, 1, 4}, {1, 1, 3, 2});
  // output_shape 6 (one more than natural): the pad at the end is -1.
  auto shape =
      Eval("ConvTranspose", {x, w},
           {{"strides", std::vector<int64_t>{2}}, {"output_shape", std::vector<int64_t>{6}}});
  ASSERT_TRUE(shape.ok()) << shape.status();
  ExpectFloats(*shape, {1, 1, 6}, {1, 1, 3, 2, 2, 0});
  // Two groups, each channel to two outputs: W [2, 2, 1].
  auto groups = Eval("ConvTranspose", {F({1, 2, 1}, {1, 10}), F({2, 2, 1}, {1, 2, 3, 4})},
                     {{"group", int64_t{2}}});
  ASSERT_TRUE(groups.ok()) << groups.status();
  ExpectFloats(*groups, {1, 4, 1}, {1, 2, 30, 40});
  auto bad = Eval("ConvTranspose", {F({1, 2, 1}, {1, 10}), F({3, 2, 1}, {1, 2, 3, 4, 5, 6})});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("must have 2 input channels"));
}

}  // namespace
}  // namespace loom::kernels
