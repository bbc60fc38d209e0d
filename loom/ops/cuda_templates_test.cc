// Tests of the CUDA templates without a GPU: knob spaces (sizes for ResNet-18's layers), validity
// filtering against the Target's device limits, the launch geometry, and differential checks of
// the generated kernels run through the host emulation (TemplateOptions::cuda_host_emulation:
// the same loop nest, printed as C++ whose threads are fibers that meet at __syncthreads) against
// Reference(). NVRTC compiles of the same kernels are tested in toolchain/nvrtc_builder_test.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/graph/shape_inference.h"
#include "loom/graph/tasks.h"
#include "loom/graph/testing/workloads.h"
#include "loom/graph/zoo.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"

namespace loom::ops {
namespace {

using ::testing::HasSubstr;

using graph::testing::BatchMatmulWorkload;
using graph::testing::ConvWorkload;
using graph::testing::DenseWorkload;

// Up to `count` valid configs drawn uniformly from the space (rejection sampling on Emit).
std::vector<Config> SampleValid(const Template& t, int count, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<Config> out;
  for (int tries = 0; tries < 200 * count && static_cast<int>(out.size()) < count; ++tries) {
    const Config c{rng.UniformInt(0, t.space().size() - 1)};
    if (t.Emit(c).ok()) out.push_back(c);
  }
  return out;
}

TEST(CudaTemplatesTest, SpacesFollowTvmKnobs) {
  auto t = MakeTemplate(ConvWorkload(64, 56, 56, 64, 3, 1, 1), CudaTarget());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->name(), "conv2d_nchw_cuda");
  std::vector<std::string> names;
  for (const Knob& k : (*t)->space().knobs()) names.push_back(k.name);
  EXPECT_THAT(names, ::testing::ElementsAre("tile_f", "tile_y", "tile_x", "tile_rc", "tile_ry",
                                            "tile_rx", "auto_unroll_max_step", "unroll_explicit"));
  // 4-way ordered factorizations: 64 = 2^6 -> C(9,3) = 84; 56 = 2^3*7 -> C(6,3)*4 = 80.
  // 2-way: divisors. 84 * 80 * 80 * 7 * 2 * 2 * 3 * 2.
  EXPECT_EQ((*t)->space().size(), int64_t{84} * 80 * 80 * 7 * 2 * 2 * 3 * 2);
  EXPECT_EQ((*t)->space().knobs()[0].values.front(), 1000100010064);  // [1, 1, 1, 64]
  // The features name every value.
  const Config d = (*t)->DefaultConfig();
  EXPECT_EQ((*t)->Features(d).size(), (*t)->FeatureNames().size());

  auto dw = MakeTemplate(ConvWorkload(32, 28, 28, 32, 3, 1, 1, 32), CudaTarget());
  ASSERT_TRUE(dw.ok()) << dw.status();
  EXPECT_EQ((*dw)->name(), "depthwise_conv2d_nchw_cuda");
  // 32 = 2^5 -> C(8,3) = 56; 28 = 2^2*7 -> C(5,3)*4 = 40.
  EXPECT_EQ((*dw)->space().size(), int64_t{56} * 40 * 40 * 2 * 2 * 3 * 2);

  auto dense = MakeTemplate(DenseWorkload(1, 1000, 512, true), CudaTarget());
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ((*dense)->name(), "dense_cuda");
  // 1000 = 2^3 * 5^3 -> C(6,3)^2 = 400; 512 has 10 divisors.
  EXPECT_EQ((*dense)->space().size(), int64_t{400} * 10 * 3 * 2);
}

// Prints each ResNet-18 layer's space size and its valid fraction on an H100's limits (the
// figures in the report), and checks every default config is valid and in range.
TEST(CudaTemplatesTest, ResNet18SpacesAndDefaults) {
  const Target target = CudaTarget();
  for (const graph::Workload& w : graph::testing::ZooModelWorkloads("resnet18")) {
    auto t = MakeTemplate(w, target);
    ASSERT_TRUE(t.ok()) << graph::WorkloadKey(w) << ": " << t.status();
    const Config d = (*t)->DefaultConfig();
    auto src = (*t)->Emit(d);
    ASSERT_TRUE(src.ok()) << graph::WorkloadKey(w) << ": " << src.status();
    const CudaLaunch& l = src->cuda_launch;
    EXPECT_LE(int64_t{l.block[0]} * l.block[1] * l.block[2], 1024);
    EXPECT_GE(int64_t{l.block[0]} * l.block[1] * l.block[2], 32) << graph::WorkloadKey(w);
    base::Rng rng(11);
    int valid = 0;
    const int draws = 400;
    for (int i = 0; i < draws; ++i) {
      if ((*t)->Emit(Config{rng.UniformInt(0, (*t)->space().size() - 1)}).ok()) ++valid;
    }
    std::printf("%-60s %-28s space %14lld  valid ~%5.1f%%  default %s\n",
                graph::WorkloadKey(w).c_str(), (*t)->name().c_str(),
                static_cast<long long>((*t)->space().size()), 100.0 * valid / draws,
                (*t)->space().ToJson(d).c_str());
  }
}

TEST(CudaTemplatesTest, InvalidConfigsAreRejectedBeforeBuilding) {
  auto t = MakeTemplate(ConvWorkload(64, 56, 56, 64, 3, 1, 1), CudaTarget());
  ASSERT_TRUE(t.ok());
  const ConfigSpace& space = (*t)->space();
  // All of tile_f, tile_y and tile_x's extents on threads: 64 * 56 * 56 threads.
  std::vector<int64_t> choices = space.Choices((*t)->DefaultConfig());
  auto find = [&](int knob, int64_t value) {
    const auto& v = space.knobs()[static_cast<size_t>(knob)].values;
    return std::find(v.begin(), v.end(), value) - v.begin();
  };
  choices[0] = find(0, 1000100640001);  // [1, 1, 64, 1]
  choices[1] = find(1, 1000100560001);
  choices[2] = find(2, 1000100560001);
  auto too_many = (*t)->Emit(space.FromChoices(choices));
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr("threads per block exceed the limit 1024"));

  // Shared memory and registers, from the Target's limits.
  CudaDeviceLimits small;
  small.max_shared_bytes_per_block = 1024;
  auto tiny = MakeTemplate(ConvWorkload(64, 56, 56, 64, 3, 1, 1), CudaTarget("sm_90", small));
  ASSERT_TRUE(tiny.ok());
  const Config d = (*t)->DefaultConfig();  // valid with 48 KiB
  ASSERT_TRUE((*t)->Emit(d).ok());
  auto shared = (*tiny)->Emit(d);
  EXPECT_EQ(shared.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shared.status().message(), HasSubstr("bytes of shared memory exceed the limit 1024"));
  // The default of the small device respects its limits.
  EXPECT_TRUE((*tiny)->Emit((*tiny)->DefaultConfig()).ok());

  choices = space.Choices(d);
  choices[0] = find(0, 1000800010008);  // 8 vthreads * 8 inner on f alone
  choices[1] = find(1, 7000200010004);
  choices[2] = find(2, 7000200010004);
  auto regs = (*t)->Emit(space.FromChoices(choices));
  EXPECT_EQ(regs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(regs.status().message(), HasSubstr("virtual threads exceed 8"));

  EXPECT_EQ((*t)->Emit(Config{space.size()}).status().code(), absl::StatusCode::kInvalidArgument);
}

// The space's constraint (what tuners consult before proposing) agrees with Emit on every layer:
// tuners never spend a trial on a config the device cannot launch, and never skip a valid one.
TEST(CudaTemplatesTest, SpaceValidityAgreesWithEmit) {
  base::Rng rng(7);
  for (const graph::Workload& w : graph::testing::ZooModelWorkloads("resnet18")) {
    auto t = MakeTemplate(w, CudaTarget());
    ASSERT_TRUE(t.ok()) << t.status();
    int valid = 0;
    for (int i = 0; i < 150; ++i) {
      const Config c{rng.UniformInt(0, (*t)->space().size() - 1)};
      const bool emits = (*t)->Emit(c).ok();
      EXPECT_EQ((*t)->space().IsValid(c), emits) << graph::WorkloadKey(w) << " config " << c.index;
      valid += emits ? 1 : 0;
    }
    EXPECT_GT(valid, 0) << graph::WorkloadKey(w);
  }
}

TEST(CudaTemplatesTest, LaunchGeometryCoversTheOutput) {
  auto t = MakeTemplate(ConvWorkload(16, 14, 14, 32, 3, 2, 1, 1, 1, /*n=*/2), CudaTarget());
  ASSERT_TRUE(t.ok());
  for (const Config& c : SampleValid(**t, 20, 5)) {
    auto src = (*t)->Emit(c);
    ASSERT_TRUE(src.ok());
    const std::vector<float> f = (*t)->Features(c);  // log2 of [block, vthread, thread, inner]
    auto factor = [&](int i) { return static_cast<uint32_t>(std::lround(std::exp2(f[i]))); };
    const CudaLaunch& l = src->cuda_launch;
    EXPECT_EQ(l.grid[2], 2 * factor(0));  // n * f blocks
    EXPECT_EQ(l.block[2], factor(2));
    EXPECT_EQ(l.grid[1] * l.block[1] * factor(5) * factor(7), 7u);   // rows
    EXPECT_EQ(l.grid[0] * l.block[0] * factor(9) * factor(11), 7u);  // columns
    EXPECT_EQ(l.entry, "loom_kernel");
    EXPECT_THAT(src->code, HasSubstr("extern \"C\" __global__ void __launch_bounds__("));
  }
}

class CudaEmulationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/loom_cuda_emu_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Emits `config` as host emulation, compiles it with g++, runs it and compares with Reference.
  void ExpectMatchesReference(const Template& t, const Config& config, uint64_t seed) {
    auto src = t.Emit(config);
    ASSERT_TRUE(src.ok()) << src.status();
    auto k = LocalKernel::Compile(*src, dir_);
    ASSERT_TRUE(k.ok()) << k.status();
    const std::vector<graph::Tensor> natural = RandomNaturalInputs(t, seed);
    const graph::Tensor got = RunOnce(t, config, **k, natural);
    const ErrorStats e = CompareTensors(got, t.Reference(natural));
    EXPECT_TRUE(e.WithinTolerance()) << t.name() << " " << graph::WorkloadKey(t.workload()) << " "
                                     << t.space().ToJson(config) << ": max err " << e.max_abs_err;
  }

  std::string dir_;
};

TEST_F(CudaEmulationTest, DefaultAndSampledConfigsMatchReference) {
  const std::vector<graph::Workload> workloads = {
      ConvWorkload(8, 10, 10, 16, 3, 1, 1),                    // padding on every side
      ConvWorkload(6, 11, 9, 12, 3, 2, 1, 1, 1, /*n=*/2),      // stride 2, batch 2, odd extents
      ConvWorkload(4, 12, 12, 8, 3, 1, 2, 1, /*dilation=*/2),  // dilation
      ConvWorkload(16, 7, 7, 24, 1, 1, 0),                     // 1x1
      ConvWorkload(3, 16, 16, 8, 5, 2, 2),                     // 5x5, 3 channels
      ConvWorkload(12, 10, 10, 12, 3, 1, 1, /*groups=*/12),    // depthwise
      ConvWorkload(8, 9, 9, 8, 3, 2, 1, /*groups=*/8),         // depthwise, stride 2
      DenseWorkload(1, 40, 24, true),                          // trans_b (the ONNX Gemm form)
      DenseWorkload(3, 20, 16, false),                         // weight [K, N], 3 rows
      DenseWorkload(20, 24, 12, true),                         // rows tiled too (tile_y)
      BatchMatmulWorkload(3, 10, 12, 8),                       // one B per batch
  };
  TemplateOptions emu;
  emu.cuda_host_emulation = true;
  uint64_t seed = 1;
  for (const graph::Workload& w : workloads) {
    auto t = MakeTemplate(w, CudaTarget(), emu);
    ASSERT_TRUE(t.ok()) << t.status();
    ExpectMatchesReference(**t, (*t)->DefaultConfig(), seed++);
    for (const Config& c : SampleValid(**t, 3, seed)) ExpectMatchesReference(**t, c, seed++);
  }
}

// Unrolling knobs change the printed loops, never the result: the same tiling with each unroll
// setting (explicit copies, #pragma unroll, serial) agrees with the reference.
TEST_F(CudaEmulationTest, UnrollSettingsAgree) {
  TemplateOptions emu;
  emu.cuda_host_emulation = true;
  auto t = MakeTemplate(ConvWorkload(8, 8, 8, 8, 3, 1, 1), CudaTarget(), emu);
  ASSERT_TRUE(t.ok());
  const ConfigSpace& space = (*t)->space();
  std::vector<int64_t> choices = space.Choices((*t)->DefaultConfig());
  for (int64_t step = 0; step < 3; ++step) {
    for (int64_t expl = 0; expl < 2; ++expl) {
      choices[6] = step;
      choices[7] = expl;
      ExpectMatchesReference(**t, space.FromChoices(choices), 40 + step);
    }
  }
  // The emitted CUDA differs between explicit and hinted unrolling.
  auto cuda_t = MakeTemplate(ConvWorkload(8, 8, 8, 8, 3, 1, 1), CudaTarget());
  choices[6] = 2;
  choices[7] = 0;
  auto hinted = (*cuda_t)->Emit(space.FromChoices(choices));
  choices[7] = 1;
  auto copied = (*cuda_t)->Emit(space.FromChoices(choices));
  ASSERT_TRUE(hinted.ok() && copied.ok());
  EXPECT_THAT(hinted->code, HasSubstr("#pragma unroll"));
  EXPECT_GT(copied->code.size(), hinted->code.size());
}

// EmitFused: bias per output channel (dense: per column), a residual and each activation in the
// output store give act(reference + bias + residual); an empty epilogue is exactly Emit.
TEST_F(CudaEmulationTest, FusedEpilogueMatchesTheReferenceWithTheEpilogue) {
  using A = Epilogue::Activation;
  TemplateOptions emu;
  emu.cuda_host_emulation = true;
  struct Case {
    graph::Workload w;
    A act;
    bool residual;
  };
  const std::vector<Case> cases = {
      {ConvWorkload(6, 9, 9, 10, 3, 1, 1), A::kRelu, true},
      {ConvWorkload(6, 9, 9, 10, 3, 2, 1, 1, 1, /*n=*/2), A::kHardSwish, false},
      {ConvWorkload(8, 9, 9, 8, 3, 1, 1, /*groups=*/8), A::kClip, false},
      {DenseWorkload(3, 20, 16, true), A::kSigmoid, true},
  };
  uint64_t seed = 70;
  for (const Case& c : cases) {
    SCOPED_TRACE(graph::WorkloadKey(c.w));
    auto t = MakeTemplate(c.w, CudaTarget(), emu);
    ASSERT_TRUE(t.ok()) << t.status();
    const Config config = (*t)->DefaultConfig();
    auto plain = (*t)->Emit(config);
    auto empty = (*t)->EmitFused(config, Epilogue{});
    ASSERT_TRUE(plain.ok() && empty.ok());
    EXPECT_EQ(plain->code, empty->code);

    Epilogue ep;
    ep.bias = true;
    ep.residual = c.residual;
    ep.activation = c.act;
    ep.clip_min = 0.0f;
    ep.clip_max = 0.5f;  // low enough to bite on these values
    auto src = (*t)->EmitFused(config, ep);
    ASSERT_TRUE(src.ok()) << src.status();
    const std::vector<BufferSpec> specs = (*t)->FusedBuffers(config, ep);
    ASSERT_EQ(specs.size(), c.residual ? 5u : 4u);
    EXPECT_EQ(specs[2].name, "bias");
    auto k = LocalKernel::Compile(*src, dir_);
    ASSERT_TRUE(k.ok()) << k.status();

    std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, seed++);
    const graph::Tensor ref = (*t)->Reference(natural);
    const graph::Shape& out_shape = specs.back().shape;
    const int64_t channels = specs[2].shape[0];
    const int64_t inner = ref.num_elements() / (out_shape[0] * channels);  // per channel
    base::Rng rng(seed++);
    graph::Tensor bias(graph::DType::kFloat32, {channels});
    for (int64_t i = 0; i < channels; ++i)
      bias.data<float>()[i] = static_cast<float>(rng.Uniform(-1, 1));
    graph::Tensor residual(graph::DType::kFloat32, out_shape);
    for (int64_t i = 0; i < residual.num_elements(); ++i) {
      residual.data<float>()[i] = static_cast<float>(rng.Uniform(-1, 1));
    }
    graph::Tensor out(graph::DType::kFloat32, out_shape);
    std::vector<void*> args = {natural[0].raw_data(), natural[1].raw_data(), bias.raw_data()};
    if (c.residual) args.push_back(residual.raw_data());
    args.push_back(out.raw_data());
    (*k)->fn()(args.data(), nullptr);

    graph::Tensor want(graph::DType::kFloat32, out_shape);
    for (int64_t i = 0; i < want.num_elements(); ++i) {
      float v = ref.data<float>()[i] + bias.data<float>()[(i / inner) % channels];
      if (c.residual) v += residual.data<float>()[i];
      switch (c.act) {
        case A::kRelu:
          v = std::max(v, 0.0f);
          break;
        case A::kClip:
          v = std::min(std::max(v, 0.0f), 0.5f);
          break;
        case A::kHardSwish:
          v = v * std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f;
          break;
        case A::kSigmoid:
          v = 1.0f / (1.0f + std::exp(-v));
          break;
        case A::kNone:
          break;
      }
      want.data<float>()[i] = v;
    }
    const ErrorStats e = CompareTensors(out, want);
    EXPECT_TRUE(e.WithinTolerance()) << "max err " << e.max_abs_err;
  }
}

TEST_F(CudaEmulationTest, WrongAnswerFaultIsDetected) {
  TemplateOptions o;
  o.cuda_host_emulation = true;
  o.test_faults = true;
  auto t = MakeTemplate(ConvWorkload(4, 6, 6, 4, 3, 1, 1), CudaTarget(), o);
  ASSERT_TRUE(t.ok());
  std::vector<int64_t> choices = (*t)->space().Choices((*t)->DefaultConfig());
  choices.back() = 3;  // fault 3: wrong answer
  const Config bad = (*t)->space().FromChoices(choices);
  auto src = (*t)->Emit(bad);
  ASSERT_TRUE(src.ok());
  auto k = LocalKernel::Compile(*src, dir_);
  ASSERT_TRUE(k.ok()) << k.status();
  const std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, 9);
  EXPECT_FALSE(
      CompareTensors(RunOnce(**t, bad, **k, natural), (*t)->Reference(natural)).WithinTolerance());
}

TEST(CudaTemplatesTest, UnsupportedWorkloads) {
  graph::Workload grouped = ConvWorkload(8, 8, 8, 8, 3, 1, 1, 2);
  grouped.kind = graph::TaskKind::kGroupedConv2d;
  EXPECT_EQ(MakeTemplate(grouped, CudaTarget()).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(MakeTemplate(DenseWorkload(1, 20000, 8, true), CudaTarget()).status().code(),
            absl::StatusCode::kUnimplemented);
  // batch_matmul_cuda reads A as [b, m, k] and one B a batch: no transposed A, no broadcast.
  graph::Workload bmm;
  bmm.kind = graph::TaskKind::kBatchMatmul;
  bmm.b = 6, bmm.m = 8, bmm.n = 8, bmm.k = 8;
  bmm.trans_b = true;
  EXPECT_TRUE(MakeTemplate(bmm, CudaTarget()).ok());
  bmm.trans_a = true;
  EXPECT_THAT(MakeTemplate(bmm, CudaTarget()).status().message(),
              HasSubstr("(a transposed A or a batch broadcast)"));
  bmm.trans_a = false;
  bmm.batch_a = {2, 3};
  bmm.batch_b = {1, 3};
  EXPECT_EQ(MakeTemplate(bmm, CudaTarget()).status().code(), absl::StatusCode::kUnimplemented);
  Target other = CudaTarget();
  other.kind = "opencl";
  EXPECT_THAT(MakeTemplate(DenseWorkload(1, 8, 8, true), other).status().message(),
              HasSubstr("only cpu and cuda"));
}

TEST(CudaTargetTest, ParseAndKey) {
  auto t = ParseTarget("cuda:sm_80");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->kind, "cuda");
  EXPECT_EQ(t->cuda_arch, "sm_80");
  EXPECT_EQ(t->Key(), "cuda:sm_80:unknown");
  EXPECT_EQ(t->cuda_limits.max_threads_per_block, 1024);
  EXPECT_EQ(ParseTarget("cuda")->cuda_arch, "sm_90");
  EXPECT_EQ(ParseTarget("cpu")->kind, "cpu");
  EXPECT_THAT(ParseTarget("cuda:90").status().message(), HasSubstr("bad CUDA architecture"));
  EXPECT_EQ(ParseTarget("tpu").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::ops
