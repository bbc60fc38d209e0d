// Differential tests of the CPU templates: for each template, the default config and a seeded
// sample of configs are emitted, compiled with g++, run, and compared with Reference(). Also the
// space sizes, instantiation errors, the test-fault knob and the parallel path.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/base/thread_pool.h"
#include "loom/graph/testing/workloads.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using ::testing::HasSubstr;

using graph::testing::BatchMatmulWorkload;
using graph::testing::ConvWorkload;
using graph::testing::DenseWorkload;
using testutil::TempDir;

// Emits, compiles and runs `config`; returns "" when it matches the reference, else why not.
std::string CheckConfig(const Template& t, const Config& config, const std::string& dir) {
  absl::StatusOr<KernelSource> src = t.Emit(config);
  if (!src.ok()) return absl::StrCat("emit: ", src.status().ToString());
  absl::StatusOr<std::unique_ptr<LocalKernel>> kernel = LocalKernel::Compile(*src, dir);
  if (!kernel.ok()) return kernel.status().ToString();
  std::vector<graph::Tensor> natural = RandomNaturalInputs(t, 7);
  graph::Tensor got = RunOnce(t, config, **kernel, natural);
  graph::Tensor want = t.Reference(natural);
  ErrorStats e = CompareTensors(got, want);
  if (!e.WithinTolerance()) {
    return absl::StrCat("max abs err ", e.max_abs_err, " (max |ref| ", e.max_abs_ref, ")");
  }
  return "";
}

struct Case {
  std::string label;
  graph::Workload workload;
};

std::vector<Case> Cases() {
  graph::Workload asym = ConvWorkload(5, 7, 9, 10, 3, 1, 1);
  asym.pad_bottom = 2;
  asym.pad_left = 0;
  graph::Workload trans_b = BatchMatmulWorkload(2, 9, 50, 300);
  trans_b.trans_b = true;
  graph::Workload trans_a = BatchMatmulWorkload(3, 13, 20, 17);
  trans_a.trans_a = true;
  graph::Workload broadcast = BatchMatmulWorkload(6, 5, 19, 8);
  broadcast.batch_a = {2, 1};
  broadcast.batch_b = {1, 3};
  graph::Workload dense_trans_a = DenseWorkload(11, 37, 40, true);
  dense_trans_a.trans_a = true;
  // Inception-v3's factorized 1x7 and 7x1 convolutions on a 17x17 map: a prime output width.
  graph::Workload one_by_seven = ConvWorkload(16, 17, 17, 24, 1, 1, 0);
  one_by_seven.s = 7;
  one_by_seven.pad_left = one_by_seven.pad_right = 3;
  graph::Workload seven_by_one = ConvWorkload(16, 17, 17, 24, 1, 1, 0);
  seven_by_one.r = 7;
  seven_by_one.pad_top = seven_by_one.pad_bottom = 3;
  return {
      {"conv3x3_pad1", ConvWorkload(8, 10, 10, 32, 3, 1, 1)},
      {"conv3x3_stride2", ConvWorkload(16, 11, 11, 16, 3, 2, 1)},
      {"conv1x1_stride2", ConvWorkload(32, 8, 8, 64, 1, 2, 0)},
      {"conv7x7_c3_stride2", ConvWorkload(3, 20, 20, 16, 7, 2, 3)},
      {"conv_odd_k_asym_pad", asym},
      {"conv_dilation2", ConvWorkload(4, 9, 9, 16, 3, 1, 2, 1, 2)},
      // Output widths without a good divisor (ragged rows): 17, 19 (dilated) and 11 (stride 2).
      {"conv3x3_ragged_17", ConvWorkload(8, 17, 17, 32, 3, 1, 1)},
      {"conv1x7_ragged_17", one_by_seven},
      {"conv7x1_ragged_17", seven_by_one},
      {"conv_dilation2_ragged_19", ConvWorkload(8, 19, 19, 16, 3, 1, 2, 1, 2)},
      {"conv3x3_stride2_ragged_11", ConvWorkload(8, 23, 23, 16, 3, 2, 0)},
      // Atrous convolutions whose outer kernel rows read only padding on most output rows.
      {"depthwise3x3_ragged_17", ConvWorkload(32, 17, 17, 32, 3, 1, 1, 32)},
      {"depthwise5x5_stride2_ragged_19", ConvWorkload(24, 37, 37, 24, 5, 2, 2, 24)},
      {"conv_atrous_wide_pad", ConvWorkload(8, 14, 14, 32, 3, 1, 12, 1, 12)},
      {"conv_atrous_stride2", ConvWorkload(8, 15, 15, 16, 3, 2, 6, 1, 6)},
      {"depthwise3x3", ConvWorkload(32, 12, 12, 32, 3, 1, 1, 32)},
      {"depthwise3x3_stride2_odd_c", ConvWorkload(20, 9, 9, 20, 3, 2, 1, 20)},
      {"dense_trans_b_odd", DenseWorkload(7, 37, 45, true)},
      {"dense_matmul", DenseWorkload(2, 100, 64, false)},
      // Grouped: 8 channels per group (vec 8), 2 per group (ResNeXt-like, vec 1), odd sizes with
      // stride 2 (4 outputs per group: vec 4), and a channel multiplier (groups == C, K == 2C).
      {"grouped_g2", ConvWorkload(16, 10, 10, 16, 3, 1, 1, 2)},
      {"grouped_g32_resnext", ConvWorkload(64, 8, 8, 64, 3, 1, 1, 32)},
      {"grouped_odd_stride2", ConvWorkload(6, 7, 9, 12, 3, 2, 1, 3)},
      {"grouped_multiplier", ConvWorkload(4, 6, 6, 8, 3, 1, 1, 4)},
      {"batch_matmul_odd", BatchMatmulWorkload(3, 5, 37, 19)},
      {"batch_matmul", BatchMatmulWorkload(2, 16, 64, 64)},
      {"batch_matmul_trans_b_long_k", trans_b},
      {"batch_matmul_trans_a", trans_a},
      {"batch_matmul_broadcast", broadcast},
      {"dense_trans_a", dense_trans_a},
  };
}

// The config with the given knob values (others: first choice). Precondition: values exist.
Config ClosestIndex(const ConfigSpace& space,
                    const std::vector<std::pair<std::string, int64_t>>& wanted) {
  std::vector<int64_t> choices(space.knobs().size(), 0);
  for (const auto& [name, value] : wanted) {
    const int k = space.KnobIndex(name);
    const auto& values = space.knobs()[static_cast<size_t>(k)].values;
    choices[static_cast<size_t>(k)] =
        std::find(values.begin(), values.end(), value) - values.begin();
  }
  return space.FromChoices(choices);
}

// The initial configs (the default first) plus `samples` seeded random configs that instantiate.
std::vector<Config> SampleConfigs(const Template& t, int samples, uint64_t seed) {
  std::vector<Config> configs = t.InitialConfigs();
  const int wanted = static_cast<int>(configs.size()) + samples;
  base::Rng rng(seed);
  for (int tries = 0; static_cast<int>(configs.size()) < wanted && tries < 1000; ++tries) {
    Config c{rng.UniformInt(0, t.space().size() - 1)};
    if (t.Emit(c).ok()) configs.push_back(c);
  }
  return configs;
}

TEST(TemplatesTest, DefaultAndSampledConfigsMatchReference) {
  TempDir dir;
  const Target target = HostCpuTarget();
  struct Job {
    std::string label;
    std::shared_ptr<Template> tmpl;
    Config config;
  };
  std::vector<Job> jobs;
  for (const Case& c : Cases()) {
    absl::StatusOr<std::unique_ptr<Template>> t = MakeTemplate(c.workload, target);
    ASSERT_TRUE(t.ok()) << c.label << ": " << t.status();
    std::shared_ptr<Template> tmpl = std::move(*t);
    for (const Config& config : SampleConfigs(*tmpl, 8, 1234)) {
      jobs.push_back({c.label, tmpl, config});
    }
  }
  base::ThreadPool pool(3);
  std::vector<std::future<std::string>> results;
  for (const Job& j : jobs) {
    results.push_back(
        pool.Submit([&j, &dir] { return CheckConfig(*j.tmpl, j.config, dir.path()); }));
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(results[i].get(), "") << jobs[i].label << " " << jobs[i].tmpl->name() << " "
                                    << jobs[i].tmpl->space().ToJson(jobs[i].config);
  }
  std::printf("checked %zu configs over %zu workloads\n", jobs.size(), Cases().size());
}

TEST(TemplatesTest, SpaceSizesForResNetLayers) {
  const Target target = HostCpuTarget();
  const std::vector<std::pair<std::string, graph::Workload>> layers = {
      {"conv2d 64->64 3x3 56x56", ConvWorkload(64, 56, 56, 64, 3, 1, 1)},
      {"conv2d 256->512 3x3 s2 14x14", ConvWorkload(256, 14, 14, 512, 3, 2, 1)},
      {"depthwise 64 3x3 56x56", ConvWorkload(64, 56, 56, 64, 3, 1, 1, 64)},
      {"dense 1x512->1000", DenseWorkload(1, 1000, 512, true)},
  };
  for (const auto& [label, w] : layers) {
    absl::StatusOr<std::unique_ptr<Template>> t = MakeTemplate(w, target);
    ASSERT_TRUE(t.ok()) << t.status();
    const ConfigSpace& space = (*t)->space();
    // The space's constraints and Emit agree on an even sample of at most ~1000 configs.
    const int64_t size = space.size(), step = std::max<int64_t>(1, size / 1000);
    int64_t valid = 0, tried = 0;
    for (int64_t i = 0; i < size; i += step, ++tried) {
      const bool emits = (*t)->Emit(Config{i}).ok();
      EXPECT_EQ(emits, space.IsValid(Config{i})) << label << " " << space.ToJson(Config{i});
      valid += emits;
    }
    const int64_t valid_total = space.CountValid();
    std::printf("%-32s %-24s space %lld, %lld valid (%.0f%%)\n", label.c_str(),
                (*t)->name().c_str(), static_cast<long long>(size),
                static_cast<long long>(valid_total), 100.0 * valid_total / size);
    EXPECT_GT(space.size(), 100) << label;
    EXPECT_GT(valid, 20) << label;
    EXPECT_TRUE(space.IsValid((*t)->DefaultConfig())) << label;
    EXPECT_EQ((*t)->Features((*t)->DefaultConfig()).size(), (*t)->FeatureNames().size());
  }
}

TEST(TemplatesTest, FeaturesMatchNamesAndDifferAcrossConfigs) {
  auto t = MakeTemplate(ConvWorkload(64, 56, 56, 64, 3, 1, 1), HostCpuTarget());
  ASSERT_TRUE(t.ok());
  std::vector<std::string> names = (*t)->FeatureNames();
  EXPECT_THAT(names, ::testing::Contains("accumulators"));
  EXPECT_THAT(names, ::testing::Contains("tile_ow"));
  std::vector<float> a = (*t)->Features(Config{0});
  std::vector<float> b = (*t)->Features(Config{(*t)->space().size() - 1});
  ASSERT_EQ(a.size(), names.size());
  EXPECT_NE(a, b);
}

TEST(TemplatesTest, EmitRejectsConfigsOutsideTheSpaceOrRegisterFile) {
  auto t = MakeTemplate(ConvWorkload(64, 56, 56, 64, 3, 1, 1), HostCpuTarget());
  ASSERT_TRUE(t.ok());
  absl::StatusOr<KernelSource> out = (*t)->Emit(Config{(*t)->space().size()});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("outside the space"));
  // The largest tiles (last choice of every knob) need far more registers than exist.
  const ConfigSpace& space = (*t)->space();
  std::vector<int64_t> last;
  for (const Knob& k : space.knobs()) last.push_back(static_cast<int64_t>(k.values.size()) - 1);
  absl::StatusOr<KernelSource> big = (*t)->Emit(space.FromChoices(last));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("vector registers"));
  EXPECT_FALSE(space.IsValid(space.FromChoices(last)));
  // Exactly the configs whose register block fits are valid (AVX-512: 32 registers).
  const int64_t regs = HostCpuTarget().isa == Isa::kAvx512 ? 32 : 16;
  for (int64_t i = 0; i < space.size(); i += 97) {
    const Config c{i};
    const int64_t need =
        space.Value(c, "tile_oh") * space.Value(c, "tile_ow") * space.Value(c, "tile_oc") +
        space.Value(c, "tile_oc") + 1;
    EXPECT_EQ(space.IsValid(c), need <= regs) << space.ToJson(c);
  }
}

TEST(TemplatesTest, MakeTemplateCoversKindsAndRejectsTheRest) {
  const Target target = HostCpuTarget();
  EXPECT_EQ((*MakeTemplate(ConvWorkload(8, 8, 8, 8, 3, 1, 1), target))->name(), "conv2d_nchwc");
  EXPECT_EQ((*MakeTemplate(ConvWorkload(8, 8, 8, 8, 3, 1, 1, 8), target))->name(),
            "depthwise_conv2d_nchwc");
  EXPECT_EQ((*MakeTemplate(DenseWorkload(1, 8, 8, true), target))->name(), "dense_pack");

  EXPECT_EQ((*MakeTemplate(ConvWorkload(8, 8, 8, 8, 3, 1, 1, 2), target))->name(),
            "group_conv2d_nchwc");
  EXPECT_EQ((*MakeTemplate(BatchMatmulWorkload(2, 8, 8, 8), target))->name(), "batch_matmul");
  auto bad_bmm = MakeTemplate(BatchMatmulWorkload(0, 8, 8, 8), target);
  EXPECT_EQ(bad_bmm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_bmm.status().message(), HasSubstr("invalid batch_matmul"));

  Target other = target;
  other.kind = "opencl";
  EXPECT_EQ(MakeTemplate(DenseWorkload(1, 8, 8, true), other).status().code(),
            absl::StatusCode::kUnimplemented);

  graph::Workload bad = ConvWorkload(8, 2, 2, 8, 5, 1, 0);  // kernel larger than the input
  EXPECT_EQ(MakeTemplate(bad, target).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TemplatesTest, InitialConfigsAreDistinctValidAndStartWithTheDefault) {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    Target target = HostCpuTarget();
    target.isa = isa;
    for (const Case& c : Cases()) {
      auto t = MakeTemplate(c.workload, target);
      ASSERT_TRUE(t.ok()) << c.label << ": " << t.status();
      const std::vector<Config> initial = (*t)->InitialConfigs();
      ASSERT_FALSE(initial.empty()) << c.label;
      EXPECT_EQ(initial[0], (*t)->DefaultConfig()) << c.label;
      std::set<int64_t> seen;
      for (const Config& config : initial) {
        EXPECT_TRUE((*t)->space().IsValid(config)) << c.label << " " << IsaName(isa);
        EXPECT_TRUE(seen.insert(config.index).second) << c.label << ": a config twice";
      }
    }
  }
}

// Configs are measured on one core, so a tuned config's parallel_axis says nothing about threads.
// ForThreads re-picks it for the model's threads and leaves every other knob as measured.
TEST(TemplatesTest, ForThreadsSpreadsTheParallelLoopAndKeepsTheOtherKnobs) {
  Target target = HostCpuTarget();
  target.isa = Isa::kAvx512;
  struct Layer {
    graph::Workload workload;
    const char* blocks_knob;  // one block of these channels makes the first outer loop 1 long
    int64_t channels;
  };
  for (const Layer& l :
       {Layer{ConvWorkload(64, 56, 56, 64, 3, 1, 1), "tile_oc", 64},
        Layer{ConvWorkload(32, 56, 56, 32, 3, 1, 1, /*groups=*/32), "tile_c", 32}}) {
    auto t = MakeTemplate(l.workload, target);
    ASSERT_TRUE(t.ok()) << t.status();
    const ConfigSpace& space = (*t)->space();
    const int par = space.KnobIndex("parallel_axis");
    ASSERT_GE(par, 0);
    int64_t one_block = 0, switched = 0;
    for (int64_t i = 0; i < space.size(); ++i) {
      const Config c{i};
      if (!space.IsValid(c)) continue;
      const Config two = (*t)->ForThreads(c, 2);
      EXPECT_EQ((*t)->ForThreads(c, 1), c);
      ASSERT_TRUE(space.IsValid(two)) << space.ToJson(c);
      std::vector<int64_t> a = space.Values(c), b = space.Values(two);
      a[static_cast<size_t>(par)] = b[static_cast<size_t>(par)] = 0;
      EXPECT_EQ(a, b) << space.ToJson(c) << " -> " << space.ToJson(two);
      switched += two == c ? 0 : 1;
      // One channel block in channel-major order: the n x block loop is one long, so only
      // fusing the rows in too gives the second thread work.
      if (space.Value(c, "vec") * space.Value(c, l.blocks_knob) == l.channels &&
          space.Value(c, "outer_order") == 0) {
        ++one_block;
        EXPECT_EQ(space.Value(two, "parallel_axis"), 1) << space.ToJson(c);
        EXPECT_EQ((*t)->ForThreads(two, 2), two);
      }
    }
    EXPECT_GT(one_block, 0) << (*t)->name();
    EXPECT_GT(switched, 0) << (*t)->name();
    // The default's parallel loop (channel blocks x rows or rows) already splits evenly in two.
    EXPECT_EQ((*t)->ForThreads((*t)->DefaultConfig(), 2), (*t)->DefaultConfig()) << (*t)->name();
  }
}

TEST(TemplatesTest, ConvInitialConfigsTryRegisterBlocksSmallerThanTheDefault) {
  // ResNet-18's stem on AVX-512 (32 registers): the default fills 28 accumulators (2 x 14); the
  // others keep 8-16: 2x8, 4x4, 1x8 and 2x4 (output-channel vectors x output columns). 3x4 would
  // pad the 64 output channels to 96.
  Target target = HostCpuTarget();
  target.isa = Isa::kAvx512;
  auto t = MakeTemplate(ConvWorkload(3, 224, 224, 64, 7, 2, 3), target);
  ASSERT_TRUE(t.ok());
  const ConfigSpace& space = (*t)->space();
  std::vector<std::string> blocks;
  for (const Config& c : (*t)->InitialConfigs()) {
    blocks.push_back(absl::StrCat(space.Value(c, "tile_oc"), "x", space.Value(c, "tile_ow"), "x",
                                  space.Value(c, "tile_oh"), " vec", space.Value(c, "vec")));
  }
  EXPECT_THAT(blocks, ::testing::ElementsAre("2x14x1 vec16", "2x8x1 vec16", "4x4x1 vec16",
                                             "1x8x1 vec16", "2x4x1 vec16"));
  // MobileNetV2's 16->96 1x1: blocks of 4 vectors (64 channels) would pad 96 channels to 128.
  auto padded = MakeTemplate(ConvWorkload(16, 112, 112, 96, 1, 1, 0), target);
  ASSERT_TRUE(padded.ok());
  blocks.clear();
  for (const Config& c : (*padded)->InitialConfigs()) {
    blocks.push_back(absl::StrCat((*padded)->space().Value(c, "tile_oc"), "x",
                                  (*padded)->space().Value(c, "tile_ow")));
  }
  EXPECT_THAT(blocks, ::testing::ElementsAre("2x14", "2x8", "1x8", "2x4", "3x4"));
  // A 7x7 output (ResNet-18's last stage): widths 1 or 7 and no rows to stack, so the blocks
  // that would shrink to under half their accumulators (4x1, 2x1, 3x1) are left out.
  auto narrow = MakeTemplate(ConvWorkload(256, 14, 14, 512, 3, 2, 1), target);
  ASSERT_TRUE(narrow.ok());
  blocks.clear();
  for (const Config& c : (*narrow)->InitialConfigs()) {
    blocks.push_back(absl::StrCat((*narrow)->space().Value(c, "tile_oc"), "x",
                                  (*narrow)->space().Value(c, "tile_ow"), "x",
                                  (*narrow)->space().Value(c, "tile_oh")));
  }
  EXPECT_THAT(blocks, ::testing::ElementsAre("2x7x1", "1x7x1"));
}

// Rows whose width has no divisor of 8-14 columns (prime and odd widths: Inception-v3's 149, 71,
// 35 and 17, any odd-sized input) get register blocks that do not divide the row; the default
// spreads the row over as few, as even blocks as it can. Widths with good divisors keep exactly
// the divisor knob they had (so their records and priors keep their meaning).
TEST(TemplatesTest, ConvRowsWithoutGoodDivisorsGetRaggedBlocks) {
  Target target = HostCpuTarget();
  target.isa = Isa::kAvx512;
  struct Row {
    int64_t in, stride, pad;  // a 3x3 conv with 64 output channels (2 vectors of 16)
    int64_t width;            // its output width
    int64_t tile_ow;          // the default's block width
  };
  for (const Row& r : {Row{17, 1, 1, 17, 9}, Row{35, 2, 0, 17, 9}, Row{73, 1, 0, 71, 12},
                       Row{299, 2, 0, 149, 14}, Row{35, 1, 1, 35, 12}, Row{149, 1, 0, 147, 14},
                       Row{56, 1, 1, 56, 14}, Row{14, 2, 1, 7, 7}, Row{28, 1, 1, 28, 14}}) {
    auto t = MakeTemplate(ConvWorkload(32, r.in, r.in, 64, 3, r.stride, r.pad), target);
    ASSERT_TRUE(t.ok()) << t.status();
    const ConfigSpace& space = (*t)->space();
    const Config d = (*t)->DefaultConfig();
    EXPECT_EQ(space.Value(d, "tile_ow"), r.tile_ow) << "width " << r.width;
    EXPECT_EQ(space.Value(d, "tile_oc"), 2) << "width " << r.width;
    EXPECT_TRUE(space.IsValid(d)) << "width " << r.width;
    const std::vector<int64_t>& widths = space.knobs()[space.KnobIndex("tile_ow")].values;
    const bool ragged =
        std::any_of(widths.begin(), widths.end(), [&](int64_t w) { return r.width % w != 0; });
    EXPECT_EQ(ragged, r.width % r.tile_ow != 0) << "width " << r.width;
  }
  // Depthwise blocks are at most 8 columns: a 17-wide row is 6 + 6 + 5.
  auto dw = MakeTemplate(ConvWorkload(32, 17, 17, 32, 3, 1, 1, 32), target);
  ASSERT_TRUE(dw.ok()) << dw.status();
  EXPECT_EQ((*dw)->space().Value((*dw)->DefaultConfig(), "tile_ow"), 6);
  auto t56 = MakeTemplate(ConvWorkload(32, 56, 56, 64, 3, 1, 1), target);
  ASSERT_TRUE(t56.ok());
  EXPECT_EQ((*t56)->space().knobs()[(*t56)->space().KnobIndex("tile_ow")].values,
            (std::vector<int64_t>{1, 2, 4, 7, 8, 14, 28}));
  // A 17-wide row in one block of 16 and one of a single column, and in blocks of 4: both match
  // the reference.
  TempDir dir;
  auto t17 = MakeTemplate(ConvWorkload(8, 17, 17, 32, 3, 1, 1), target);
  ASSERT_TRUE(t17.ok());
  for (int64_t width : {16, 4}) {
    const Config c =
        ClosestIndex((*t17)->space(), {{"vec", 16}, {"tile_ic", 8}, {"tile_ow", width}});
    ASSERT_EQ((*t17)->space().Value(c, "tile_ow"), width);
    if (HostCpuTarget().isa == Isa::kAvx512) {
      EXPECT_EQ(CheckConfig(**t17, c, dir.path()), "") << (*t17)->space().ToJson(c);
    }
  }
}

// The default block is 2 output-channel vectors by up to 14 columns unless the register-block
// cost model finds one at least 10% cheaper; mostly that is one that does not pad the output
// channels by a quarter or more (40, 48 and 80 channels in single vectors, not in blocks of 32).
TEST(TemplatesTest, ConvDefaultBlockAvoidsPaddingOutputChannels) {
  Target target = HostCpuTarget();
  target.isa = Isa::kAvx512;
  struct Layer {
    int64_t k, width;
    std::string block;  // tile_oc x tile_ow
  };
  for (const Layer& l : {Layer{64, 56, "2x14"}, Layer{128, 28, "2x14"}, Layer{512, 7, "2x7"},
                         Layer{96, 112, "2x14"}, Layer{16, 112, "1x14"}, Layer{48, 28, "1x14"},
                         Layer{208, 14, "2x14"}, Layer{80, 14, "1x14"}, Layer{144, 56, "2x14"},
                         Layer{24, 56, "1x14"}, Layer{40, 56, "1x14"}, Layer{192, 17, "2x9"}}) {
    auto t = MakeTemplate(ConvWorkload(32, l.width, l.width, l.k, 3, 1, 1), target);
    ASSERT_TRUE(t.ok()) << t.status();
    const Config d = (*t)->DefaultConfig();
    EXPECT_EQ(
        absl::StrCat((*t)->space().Value(d, "tile_oc"), "x", (*t)->space().Value(d, "tile_ow")),
        l.block)
        << l.k << " channels, width " << l.width;
  }
}

// The default puts row blocks outermost (outer_order 1) where reading the whole input once per
// output-channel block would move more bytes than reading the weights once per row block (issue 17:
// Segformer-b0's decode-head 1x1 conv ran 3-4x slower with channels outermost).
TEST(TemplatesTest, ConvDefaultPutsRowsOutermostWhereTheInputWouldBeReadManyTimes) {
  struct Layer {
    std::string label;
    graph::Workload w;
    int64_t outer_order;
  };
  const Layer layers[] = {
      // 16 MiB of input read 8 (AVX-512) or 16 (AVX2) times against 1 MiB of weights 64 times.
      {"Segformer-b0 linear_fuse", ConvWorkload(1024, 64, 64, 256, 1, 1, 0), 1},
      // ResNet-50's 1x1 reduce at 28x28: a 1.5 MiB input against 256 KiB of weights.
      {"ResNet-50 1x1 512->128 at 28x28", ConvWorkload(512, 28, 28, 128, 1, 1, 0), 1},
      // 590 KiB of weights would be read for each of the 28 rows.
      {"ResNet-18 3x3 128->128 at 28x28", ConvWorkload(128, 28, 28, 128, 3, 1, 1), 0},
      // The input fits the cache: its re-reads are not counted.
      {"3x3 64->64 at 14x14", ConvWorkload(64, 14, 14, 64, 3, 1, 1), 0},
      // Its 373 KiB input fits the cache: it stays channels-outermost (the old default).
      {"SqueezeNet squeeze 128->32 at 27x27", ConvWorkload(128, 27, 27, 32, 1, 1, 0), 0},
      // Grouped: each block reads its own group's input.
      {"grouped 1024->256 at 64x64", ConvWorkload(1024, 64, 64, 256, 1, 1, 0, 4), 0},
  };
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    Target target = HostCpuTarget();
    target.isa = isa;
    for (const Layer& l : layers) {
      auto t = MakeTemplate(l.w, target);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ((*t)->space().Value((*t)->DefaultConfig(), "outer_order"), l.outer_order)
          << l.label << ", " << IsaName(isa);
    }
  }
}

// A dilated convolution with wide pads skips, per block of output rows, the kernel rows that read
// only padding; an ordinary padded 3x3 conv keeps its branch-free loops (2 such pairs of 168 on
// a 56x56 map, 2 of 21 on a 7x7 map).
TEST(TemplatesTest, ConvSkipsKernelRowsThatReadOnlyPadding) {
  const Target target = HostCpuTarget();
  auto atrous = MakeTemplate(ConvWorkload(64, 14, 14, 64, 3, 1, 12, 1, 12), target);
  auto plain = MakeTemplate(ConvWorkload(64, 56, 56, 64, 3, 1, 1), target);
  auto small = MakeTemplate(ConvWorkload(64, 7, 7, 64, 3, 1, 1), target);
  ASSERT_TRUE(atrous.ok() && plain.ok() && small.ok());
  absl::StatusOr<KernelSource> a = (*atrous)->Emit((*atrous)->DefaultConfig());
  absl::StatusOr<KernelSource> p = (*plain)->Emit((*plain)->DefaultConfig());
  absl::StatusOr<KernelSource> q = (*small)->Emit((*small)->DefaultConfig());
  ASSERT_TRUE(a.ok() && p.ok() && q.ok());
  EXPECT_THAT(a->code, HasSubstr("if (kh < kh_lo || kh > kh_hi) continue;"));
  EXPECT_THAT(p->code, ::testing::Not(HasSubstr("kh_lo")));
  EXPECT_THAT(q->code, ::testing::Not(HasSubstr("kh_lo")));
}

TEST(TemplatesTest, GroupedSpaceKeepsBlocksInsideAGroup) {
  // 32 groups of 4 channels (ResNeXt-50's first stage): widths 4 and 1 only, and every valid
  // config's oc_bn divides the 4 output channels of a group.
  auto t = MakeTemplate(ConvWorkload(128, 14, 14, 128, 3, 1, 1, 32), HostCpuTarget());
  ASSERT_TRUE(t.ok()) << t.status();
  const ConfigSpace& space = (*t)->space();
  EXPECT_EQ(space.knobs()[0].values, (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(space.knobs()[1].values, (std::vector<int64_t>{1, 2, 4}));  // tile_ic: divisors of 4
  int64_t valid = 0;
  for (int64_t i = 0; i < space.size(); ++i) {
    const Config c{i};
    const int64_t oc_bn = space.Value(c, "vec") * space.Value(c, "tile_oc");
    if (!space.IsValid(c)) continue;
    ++valid;
    EXPECT_EQ(4 % oc_bn, 0) << space.ToJson(c);
  }
  EXPECT_GT(valid, 0);
  EXPECT_TRUE(space.IsValid((*t)->DefaultConfig()));
  absl::Status st = space.Validate(
      ClosestIndex(space, {{"vec", 4}, {"tile_oc", 2}, {"tile_ow", 1}, {"tile_oh", 1}}));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("output channels per group"));
}

TEST(TemplatesTest, AvxTwoAndGenericTargetsEmitCode) {
  for (Isa isa : {Isa::kAvx2, Isa::kGeneric}) {
    Target t = HostCpuTarget();
    t.isa = isa;
    auto tmpl = MakeTemplate(ConvWorkload(8, 10, 10, 16, 3, 1, 1), t);
    ASSERT_TRUE(tmpl.ok());
    EXPECT_EQ((*tmpl)->space().knobs()[0].values, std::vector<int64_t>{t.VectorLanes()});
    TempDir dir;
    EXPECT_EQ(CheckConfig(**tmpl, (*tmpl)->DefaultConfig(), dir.path()), "") << IsaName(isa);
  }
}

// Runs chunks on real threads, as the runtime's pool would.
void ThreadedParallelFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  const int64_t half = n / 2;
  std::thread other([&] { fn(half, n, ctx); });
  fn(0, half, ctx);
  other.join();
}

TEST(TemplatesTest, ParallelLoopRunsThroughParallelFor) {
  TempDir dir;
  auto t = MakeTemplate(ConvWorkload(16, 12, 12, 32, 3, 1, 1), HostCpuTarget());
  ASSERT_TRUE(t.ok());
  Config config = (*t)->DefaultConfig();
  auto src = (*t)->Emit(config);
  ASSERT_TRUE(src.ok());
  EXPECT_THAT(src->code, HasSubstr("par->parallel_for("));
  auto kernel = LocalKernel::Compile(*src, dir.path());
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, 3);
  KernelBuffers b = PrepareBuffers(**t, config, natural);
  loom_parallel_t par{&ThreadedParallelFor, nullptr, 2};
  (*kernel)->fn()(b.pointers.data(), &par);
  ErrorStats e =
      CompareTensors((*t)->UnpackOutput(config, b.tensors.back()), (*t)->Reference(natural));
  EXPECT_TRUE(e.WithinTolerance()) << e.max_abs_err;
}

Config WithFault(const Template& t, Config base, int64_t fault) {
  std::vector<int64_t> choices = t.space().Choices(base);
  const auto& knobs = t.space().knobs();
  for (size_t i = 0; i < knobs.size(); ++i) {
    if (knobs[i].name == "fault") choices[i] = fault;  // values are {0,1,2,3}
  }
  return t.space().FromChoices(choices);
}

TEST(TemplatesTest, FaultKnobCrashesHangsOrCorrupts) {
  TempDir dir;
  const graph::Workload w = ConvWorkload(8, 8, 8, 16, 3, 1, 1);
  auto plain = MakeTemplate(w, HostCpuTarget());
  ASSERT_TRUE(plain.ok());
  for (const Knob& k : (*plain)->space().knobs()) EXPECT_NE(k.name, "fault");

  auto t = MakeTemplate(w, HostCpuTarget(), {.test_faults = true});
  ASSERT_TRUE(t.ok());
  const Config base = (*t)->DefaultConfig();
  EXPECT_EQ((*t)->space().Value(base, "fault"), 0);
  EXPECT_EQ(CheckConfig(**t, base, dir.path()), "");

  // 3: wrong answer.
  EXPECT_THAT(CheckConfig(**t, WithFault(**t, base, 3), dir.path()), HasSubstr("max abs err"));

  // 2: hang (not run here; the measurer's tests run it under a timeout).
  auto hang = (*t)->Emit(WithFault(**t, base, 2));
  ASSERT_TRUE(hang.ok());
  EXPECT_THAT(hang->code, HasSubstr("while (loom_spin)"));

  // 1: crash, in a forked child.
  Config crash = WithFault(**t, base, 1);
  auto src = (*t)->Emit(crash);
  ASSERT_TRUE(src.ok());
  auto kernel = LocalKernel::Compile(*src, dir.path());
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  std::vector<graph::Tensor> natural = RandomNaturalInputs(**t, 1);
  KernelBuffers b = PrepareBuffers(**t, crash, natural);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    (*kernel)->fn()(b.pointers.data(), nullptr);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGSEGV);
}

}  // namespace
}  // namespace loom::ops
