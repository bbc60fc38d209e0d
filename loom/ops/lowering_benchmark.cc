// Times the lowered kernels (lowering.h) of the shapes transformers (and CNN layouts) use, each
// beside a plain scalar loop doing the same work, on one thread, and a large memcpy for the
// machine's memory bandwidth: bytes_per_second of each is its input plus output traffic. Run:
//   build/<dir>/loom/ops/ops_lowering_benchmark
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "loom/base/status_macros.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/lowering.h"
#include "loom/ops/testing/kernel_test_util.h"

namespace loom::ops {
namespace {

using graph::DType;
using graph::Tensor;
using testutil::NodeCase;

// Lowers and compiles `c` (as the runtime's builder compiles: -O3), allocates its buffers.
struct Compiled {
  std::unique_ptr<LocalKernel> kernel;
  std::vector<Tensor> tensors;
  std::vector<void*> ptrs;
  int64_t bytes = 0;
};

absl::StatusOr<Compiled> Compile(const NodeCase& c) {
  static testutil::TempDir* dir = new testutil::TempDir();
  LOOM_ASSIGN_OR_RETURN(graph::Graph g0, testutil::TypedCaseGraph(c));
  const graph::Graph* g = &g0;
  LOOM_ASSIGN_OR_RETURN(LoweredKernel lowered, LowerNode(g0, g0.nodes[0], HostCpuTarget()));
  const LoweredKernel* k = &lowered;
  Compiled out;
  LOOM_ASSIGN_OR_RETURN(out.kernel,
                        LocalKernel::Compile(k->source, dir->path(), "-O3 -fno-math-errno"));
  for (const LoweredKernel::Arg& a : k->args) {
    Tensor t;
    if (a.kind == LoweredKernel::Arg::Kind::kConstant) {
      t = a.constant;
    } else if (a.is_output) {
      t = Tensor(g->value_types.at(a.value).dtype, g->value_types.at(a.value).shape);
    } else {
      for (size_t i = 0; i < c.node.inputs.size(); ++i) {
        if (c.node.inputs[i] == a.value) t = c.inputs[i];
      }
    }
    out.bytes += static_cast<int64_t>(t.num_bytes());
    out.tensors.push_back(t);
    out.ptrs.push_back(out.tensors.back().raw_data());
  }
  return out;
}

// `traffic`: bytes moved per run when not every argument is read whole (a gather's table).
void RunCompiled(benchmark::State& state, const NodeCase& c, int64_t traffic = 0) {
  absl::StatusOr<Compiled> compiled = Compile(c);
  if (!compiled.ok()) {
    state.SkipWithError(std::string(compiled.status().message()).c_str());
    return;
  }
  Compiled& k = *compiled;
  for (auto _ : state) {
    k.kernel->fn()(k.ptrs.data(), nullptr);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (traffic > 0 ? traffic : k.bytes));
}

NodeCase Softmax() {
  NodeCase c;
  c.node = {"sm", "Softmax", {"x"}, {"y"}, {{"axis", int64_t{-1}}}};
  c.opset = 13;
  c.inputs = {testutil::RandomFloats({12, 128, 128}, 1)};
  return c;
}
NodeCase LayerNorm() {
  NodeCase c;
  c.node = {"ln", "LayerNormalization", {"x", "s", "b"}, {"y"}, {}};
  c.inputs = {testutil::RandomFloats({128, 768}, 1), testutil::RandomFloats({768}, 2),
              testutil::RandomFloats({768}, 3)};
  c.output_types = {c.inputs[0].type()};
  return c;
}
NodeCase Transpose() {
  NodeCase c;
  c.node = {"t", "Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}}};
  c.inputs = {testutil::RandomFloats({1, 12, 128, 64}, 1)};
  return c;
}
// The tiled path: the input's contiguous dim moves (NCHW -> NHWC).
NodeCase TransposeNhwc() {
  NodeCase c;
  c.node = {"t", "Transpose", {"x"}, {"y"}, {{"perm", std::vector<int64_t>{0, 2, 3, 1}}}};
  c.inputs = {testutil::RandomFloats({1, 64, 56, 56}, 1)};
  return c;
}
NodeCase Gather() {
  NodeCase c;
  c.node = {"g", "Gather", {"x", "i"}, {"y"}, {{"axis", int64_t{0}}}};
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 128; ++i) idx.push_back((i * 389) % 1024);
  c.inputs = {testutil::RandomFloats({1024, 256}, 1), Tensor::FromInt64s({128}, idx)};
  return c;
}

void BM_SoftmaxGenerated(benchmark::State& state) { RunCompiled(state, Softmax()); }
void BM_LayerNormGenerated(benchmark::State& state) { RunCompiled(state, LayerNorm()); }
void BM_TransposeGenerated(benchmark::State& state) { RunCompiled(state, Transpose()); }
void BM_TransposeNhwcGenerated(benchmark::State& state) { RunCompiled(state, TransposeNhwc()); }
void BM_GatherGenerated(benchmark::State& state) {
  RunCompiled(state, Gather(), 2 * 128 * 256 * 4 + 128 * 8);
}

// The plain scalar loops.
void BM_SoftmaxScalar(benchmark::State& state) {
  const NodeCase c = Softmax();
  const float* x = c.inputs[0].data<float>();
  std::vector<float> y(static_cast<size_t>(c.inputs[0].num_elements()));
  for (auto _ : state) {
    for (int64_t r = 0; r < 12 * 128; ++r) {
      const float* xr = x + r * 128;
      float* yr = y.data() + r * 128;
      float m = xr[0];
      for (int j = 1; j < 128; ++j) m = std::max(m, xr[j]);
      float s = 0;
      for (int j = 0; j < 128; ++j) s += (yr[j] = std::exp(xr[j] - m));
      for (int j = 0; j < 128; ++j) yr[j] /= s;
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * c.inputs[0].num_bytes());
}

void BM_LayerNormScalar(benchmark::State& state) {
  const NodeCase c = LayerNorm();
  const float* x = c.inputs[0].data<float>();
  const float* sc = c.inputs[1].data<float>();
  const float* bi = c.inputs[2].data<float>();
  std::vector<float> y(static_cast<size_t>(c.inputs[0].num_elements()));
  for (auto _ : state) {
    for (int64_t r = 0; r < 128; ++r) {
      const float* xr = x + r * 768;
      float mean = 0, var = 0;
      for (int j = 0; j < 768; ++j) mean += xr[j];
      mean /= 768;
      for (int j = 0; j < 768; ++j) var += (xr[j] - mean) * (xr[j] - mean);
      const float rstd = 1 / std::sqrt(var / 768 + 1e-5f);
      for (int j = 0; j < 768; ++j) y[r * 768 + j] = (xr[j] - mean) * rstd * sc[j] + bi[j];
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * c.inputs[0].num_bytes());
}

void BM_TransposeScalar(benchmark::State& state) {
  const NodeCase c = Transpose();
  const float* x = c.inputs[0].data<float>();
  std::vector<float> y(static_cast<size_t>(c.inputs[0].num_elements()));
  for (auto _ : state) {
    for (int s = 0; s < 128; ++s) {
      for (int h = 0; h < 12; ++h) {
        for (int d = 0; d < 64; ++d) y[(s * 12 + h) * 64 + d] = x[(h * 128 + s) * 64 + d];
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * c.inputs[0].num_bytes());
}

void BM_TransposeNhwcScalar(benchmark::State& state) {
  const NodeCase c = TransposeNhwc();
  const float* x = c.inputs[0].data<float>();
  std::vector<float> y(static_cast<size_t>(c.inputs[0].num_elements()));
  for (auto _ : state) {
    for (int h = 0; h < 56; ++h) {
      for (int w = 0; w < 56; ++w) {
        for (int ch = 0; ch < 64; ++ch) y[(h * 56 + w) * 64 + ch] = x[(ch * 56 + h) * 56 + w];
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * c.inputs[0].num_bytes());
}

void BM_GatherScalar(benchmark::State& state) {
  const NodeCase c = Gather();
  const float* x = c.inputs[0].data<float>();
  const int64_t* idx = c.inputs[1].data<int64_t>();
  std::vector<float> y(128 * 256);
  for (auto _ : state) {
    for (int i = 0; i < 128; ++i) {
      for (int j = 0; j < 256; ++j) y[i * 256 + j] = x[idx[i] * 256 + j];
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * (2 * 128 * 256 * 4 + 128 * 8));
}

// The machine's memory bandwidth as one large memcpy sees it (read + write).
void BM_MemcpyBandwidth(benchmark::State& state) {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
  }
  state.SetBytesProcessed(state.iterations() * 2 * static_cast<int64_t>(bytes));
}

BENCHMARK(BM_SoftmaxGenerated);
BENCHMARK(BM_SoftmaxScalar);
BENCHMARK(BM_LayerNormGenerated);
BENCHMARK(BM_LayerNormScalar);
BENCHMARK(BM_TransposeGenerated);
BENCHMARK(BM_TransposeScalar);
BENCHMARK(BM_TransposeNhwcGenerated);
BENCHMARK(BM_TransposeNhwcScalar);
BENCHMARK(BM_GatherGenerated);
BENCHMARK(BM_GatherScalar);
BENCHMARK(BM_MemcpyBandwidth)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace loom::ops

BENCHMARK_MAIN();
