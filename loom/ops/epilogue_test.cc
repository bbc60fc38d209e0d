// Differential tests of fused epilogues (Template::EmitFused with an ops::Epilogue program): for
// conv2d_nchwc, depthwise_conv2d_nchwc and dense_pack, a program with operands of every kind (per
// channel, per element, per (batch, channel)), literals and the vector math (SiLU, GELU, clip)
// is fused into the default config and into other configs of the space, run, and compared with
// the template's reference output put through the same operations in double precision.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/base/rng.h"
#include "loom/ops/elementwise.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Tensor;

std::string WorkDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  const std::string d = absl::StrCat(
      b != nullptr ? b : std::filesystem::temp_directory_path().string(), "/epilogue_test");
  std::filesystem::create_directories(d);
  return d;
}

// The epilogue under test: y = clip(gelu_tanh(silu(x) * scale[c] + shift[c] + r) * g[b, c],
// -1.5, 2.5), the operands in that order.
Epilogue TestEpilogue(bool with_batch_channel) {
  Epilogue e;
  ElementwiseProgram& p = e.program;
  const int32_t x = p.AddInput(DType::kFloat32);
  const int32_t scale = p.AddInput(DType::kFloat32), shift = p.AddInput(DType::kFloat32);
  const int32_t r = p.AddInput(DType::kFloat32);
  const int32_t g = with_batch_channel ? p.AddInput(DType::kFloat32) : -1;
  e.operands = {{EpilogueOperand::Kind::kChannel},
                {EpilogueOperand::Kind::kChannel},
                {EpilogueOperand::Kind::kElement}};
  if (with_batch_channel) e.operands.push_back({EpilogueOperand::Kind::kBatchChannel});
  auto op = [&](EwOp o, int32_t a, int32_t b = -1, double p0 = 0, double p1 = 0) {
    EwInstr i;
    i.op = o;
    i.a = a;
    i.b = b;
    i.p0 = p0;
    i.p1 = p1;
    return p.Add(i);
  };
  int32_t v = op(EwOp::kMul, x, op(EwOp::kSigmoid, x));
  v = op(EwOp::kAdd, op(EwOp::kMul, v, scale), shift);
  v = op(EwOp::kGeluTanh, op(EwOp::kAdd, v, r));
  if (g >= 0) v = op(EwOp::kMul, v, g);
  v = op(EwOp::kClip, v, -1, -1.5, 2.5);
  p.AddOutput(v, DType::kFloat32);
  return e;
}

double Reference(double x, double scale, double shift, double r, double g) {
  double v = x / (1 + std::exp(-x));
  v = v * scale + shift + r;
  v = 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
  v *= g;
  return std::min(std::max(v, -1.5), 2.5);
}

Tensor Random(const graph::Shape& shape, double lo, double hi, uint64_t seed) {
  base::Rng rng(seed);
  Tensor t(DType::kFloat32, shape);
  for (float& v : t.values<float>()) v = static_cast<float>(rng.Uniform(lo, hi));
  return t;
}

// Layout of the output for the operands: channels (padded), batch, and the natural index ->
// output-buffer offset map.
struct OutputLayout {
  int64_t batch = 1, channels = 0, padded = 0;
  // natural element (b, c, rest) -> offset in the output buffer
  std::function<int64_t(int64_t b, int64_t c, int64_t rest)> offset;
  int64_t rest = 1;  // elements per (b, c) in the natural output
};

void CheckTemplate(const graph::Workload& w, const std::string& what) {
  auto made = MakeTemplate(w, HostCpuTarget());
  ASSERT_TRUE(made.ok()) << made.status();
  const Template& t = **made;
  const bool dense = w.kind == graph::TaskKind::kDense;
  const Epilogue ep = TestEpilogue(!dense);
  std::vector<Config> configs = {t.DefaultConfig()};
  base::Rng rng(5);
  for (int tries = 0; tries < 200 && configs.size() < 3; ++tries) {
    Config c{static_cast<int64_t>(rng.Uniform(0, static_cast<double>(t.space().size())))};
    if (t.EmitFused(c, ep).ok()) configs.push_back(c);
  }
  const std::vector<Tensor> natural = RandomNaturalInputs(t, 17);
  const Tensor want_plain = t.Reference(natural);
  for (const Config& config : configs) {
    SCOPED_TRACE(absl::StrCat(what, " ", t.space().ToJson(config)));
    auto src = t.EmitFused(config, ep);
    ASSERT_TRUE(src.ok()) << src.status();
    auto kernel = LocalKernel::Compile(*src, WorkDir());
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    const std::vector<BufferSpec> specs = t.FusedBuffers(config, ep);
    ASSERT_EQ(specs.size(), 2 + ep.operands.size() + 1);
    const graph::Shape& out_shape = specs.back().shape;
    OutputLayout L;
    if (dense) {
      L.batch = 1;
      L.channels = w.n;
      L.padded = out_shape[1];
      L.rest = 1;
      // natural [m, n]: "b" is unused, "rest" is the row.
      L.offset = [&](int64_t, int64_t c, int64_t row) { return row * L.padded + c; };
    } else {
      const int64_t bn = out_shape[4], oh = out_shape[2], ow = out_shape[3];
      L.batch = w.n;
      L.channels = w.k;
      L.padded = out_shape[1] * bn;
      L.rest = oh * ow;
      L.offset = [=](int64_t b, int64_t c, int64_t p) {
        return ((b * out_shape[1] + c / bn) * oh * ow + p) * bn + c % bn;
      };
    }
    // Operands in the kernel's layout, and their natural values for the reference.
    const Tensor scale = Random({L.channels}, 0.5, 1.5, 1), shift = Random({L.channels}, -1, 1, 2);
    const Tensor g = Random({L.batch, L.channels}, 0.2, 1.8, 3);
    const Tensor r = Random({want_plain.num_elements()}, -1, 1, 4);
    auto padded = [&](const Tensor& v) {
      Tensor p(DType::kFloat32, {L.padded});
      for (int64_t c = 0; c < L.channels; ++c) p.data<float>()[c] = v.data<float>()[c];
      return p;
    };
    std::vector<Tensor> bufs = t.PackInputs(config, natural);
    ASSERT_EQ(bufs.size(), 2u);
    bufs.push_back(padded(scale));
    bufs.push_back(padded(shift));
    Tensor r_out(DType::kFloat32, out_shape);
    Tensor g_buf(DType::kFloat32, {L.batch, L.padded});
    // Natural order: dense [m, n] rows; conv [b, c, p].
    const int64_t rows = dense ? w.m : 1;
    auto natural_index = [&](int64_t b, int64_t c, int64_t rest) {
      return dense ? rest * L.channels + c : (b * L.channels + c) * L.rest + rest;
    };
    for (int64_t b = 0; b < L.batch; ++b) {
      for (int64_t c = 0; c < L.channels; ++c) {
        g_buf.data<float>()[b * L.padded + c] = g.data<float>()[b * L.channels + c];
        for (int64_t q = 0; q < (dense ? rows : L.rest); ++q) {
          r_out.data<float>()[L.offset(b, c, q)] = r.data<float>()[natural_index(b, c, q)];
        }
      }
    }
    bufs.push_back(r_out);
    if (!dense) bufs.push_back(g_buf);
    bufs.emplace_back(DType::kFloat32, out_shape);
    std::vector<void*> ptrs;
    for (Tensor& b : bufs) ptrs.push_back(b.raw_data());
    (*kernel)->fn()(ptrs.data(), nullptr);
    const Tensor got = t.UnpackOutput(config, bufs.back());
    ASSERT_EQ(got.num_elements(), want_plain.num_elements());
    int bad = 0;
    for (int64_t b = 0; b < L.batch && bad < 3; ++b) {
      for (int64_t c = 0; c < L.channels && bad < 3; ++c) {
        for (int64_t q = 0; q < (dense ? rows : L.rest) && bad < 3; ++q) {
          const int64_t i = natural_index(b, c, q);
          const double want =
              Reference(want_plain.data<float>()[i], scale.data<float>()[c], shift.data<float>()[c],
                        r.data<float>()[i], dense ? 1.0 : g.data<float>()[b * L.channels + c]);
          const double have = got.data<float>()[i];
          if (std::fabs(have - want) > 1e-4 * std::fabs(want) + 2e-5) {
            ++bad;
            ADD_FAILURE() << "element (" << b << ", " << c << ", " << q << "): got " << have
                          << ", want " << want;
          }
        }
      }
    }
  }
}

TEST(EpilogueTest, ProgramsFuseIntoEveryCpuTemplate) {
  graph::Workload conv;
  conv.kind = graph::TaskKind::kConv2d;
  conv.n = 2, conv.c = 16, conv.h = 9, conv.w = 9, conv.k = 40, conv.r = 3, conv.s = 3;
  conv.stride_h = conv.stride_w = 1;
  conv.pad_top = conv.pad_left = conv.pad_bottom = conv.pad_right = 1;
  conv.dilation_h = conv.dilation_w = 1;
  conv.groups = 1;
  CheckTemplate(conv, "conv2d");
  graph::Workload dw = conv;
  dw.kind = graph::TaskKind::kDepthwiseConv2d;
  dw.c = dw.k = dw.groups = 24;
  CheckTemplate(dw, "depthwise");
  graph::Workload dense;
  dense.kind = graph::TaskKind::kDense;
  dense.m = 7, dense.n = 48, dense.k = 40;
  dense.trans_b = true;
  CheckTemplate(dense, "dense");
}

}  // namespace
}  // namespace loom::ops
