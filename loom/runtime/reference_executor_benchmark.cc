// Times the reference executor on hand-built conv nets (the zoo and importer are separate
// units): a small residual net and a ResNet-18-shaped graph at batch 1, plus one direct
// Conv2dNchw call of a ResNet layer. Run:
// build/<dir>/loom/runtime/runtime_reference_executor_benchmark
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "loom/base/check.h"
#include "loom/base/rng.h"
#include "loom/kernels/conv.h"
#include "loom/runtime/reference_executor.h"

namespace loom::runtime {
namespace {

using graph::DType;
using graph::Graph;
using graph::Node;
using graph::Tensor;

class NetBuilder {
 public:
  explicit NetBuilder(Graph* g) : g_(g), rng_(1) {}

  std::string Conv(const std::string& x, int64_t in, int64_t out, int64_t k, int64_t stride) {
    std::string name = Fresh("conv");
    AddWeight(name + ".w", {out, in, k, k}, 1.0 / std::sqrt(double(in * k * k)));
    AddWeight(name + ".b", {out}, 0.1);
    const int64_t pad = k / 2;
    return Add("Conv", {x, name + ".w", name + ".b"},
               {{"strides", std::vector<int64_t>{stride, stride}},
                {"pads", std::vector<int64_t>{pad, pad, pad, pad}}},
               name);
  }
  std::string BatchNorm(const std::string& x, int64_t c) {
    std::string name = Fresh("bn");
    AddWeight(name + ".scale", {c}, 0.1, 1.0);
    AddWeight(name + ".bias", {c}, 0.1);
    AddWeight(name + ".mean", {c}, 0.1);
    AddWeight(name + ".var", {c}, 0.1, 1.0);
    return Add("BatchNormalization",
               {x, name + ".scale", name + ".bias", name + ".mean", name + ".var"}, {}, name);
  }
  std::string Op(const std::string& op, std::vector<std::string> in,
                 std::map<std::string, graph::AttrValue> attrs = {}) {
    return Add(op, std::move(in), std::move(attrs), Fresh(op));
  }
  std::string Gemm(const std::string& x, int64_t in, int64_t out) {
    std::string name = Fresh("fc");
    AddWeight(name + ".w", {out, in}, 1.0 / std::sqrt(double(in)));
    AddWeight(name + ".b", {out}, 0.1);
    return Add("Gemm", {x, name + ".w", name + ".b"}, {{"transB", int64_t{1}}}, name);
  }

 private:
  std::string Fresh(const std::string& prefix) { return prefix + std::to_string(counter_++); }
  void AddWeight(const std::string& name, graph::Shape shape, double scale, double offset = 0) {
    Tensor t(DType::kFloat32, std::move(shape));
    for (float& v : t.values<float>()) v = static_cast<float>(offset + scale * rng_.Uniform(-1, 1));
    g_->initializers[name] = t;
  }
  std::string Add(const std::string& op, std::vector<std::string> in,
                  std::map<std::string, graph::AttrValue> attrs, const std::string& name) {
    Node n;
    n.name = name;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {name + ".out"};
    n.attrs = std::move(attrs);
    g_->nodes.push_back(std::move(n));
    return name + ".out";
  }

  Graph* g_;
  base::Rng rng_;
  int counter_ = 0;
};

// conv-bn-relu, pool, a strided conv, a residual block, classifier.
Graph SmallConvNet() {
  Graph g;
  g.name = "small_conv_net";
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {1, 3, 32, 32}}});
  NetBuilder b(&g);
  std::string h = b.Op("Relu", {b.BatchNorm(b.Conv("x", 3, 16, 3, 1), 16)});
  h = b.Op("MaxPool", {h},
           {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}});
  h = b.Op("Relu", {b.Conv(h, 16, 32, 3, 2)});
  std::string r = b.Conv(b.Op("Relu", {b.Conv(h, 32, 32, 3, 1)}), 32, 32, 3, 1);
  h = b.Op("Relu", {b.Op("Add", {h, r})});
  h = b.Op("Flatten", {b.Op("GlobalAveragePool", {h})});
  g.outputs.push_back({b.Op("Softmax", {b.Gemm(h, 32, 10)}), {}});
  return g;
}

// ResNet-18 (v1, basic blocks) shapes with random weights, batch 1, 224x224.
Graph ResNet18() {
  Graph g;
  g.name = "resnet18_shaped";
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {1, 3, 224, 224}}});
  NetBuilder b(&g);
  std::string h = b.Op("Relu", {b.BatchNorm(b.Conv("x", 3, 64, 7, 2), 64)});
  h = b.Op("MaxPool", {h},
           {{"kernel_shape", std::vector<int64_t>{3, 3}},
            {"strides", std::vector<int64_t>{2, 2}},
            {"pads", std::vector<int64_t>{1, 1, 1, 1}}});
  int64_t in = 64;
  for (int64_t width : {64, 128, 256, 512}) {
    for (int block = 0; block < 2; ++block) {
      const int64_t stride = (block == 0 && width != 64) ? 2 : 1;
      std::string y = b.Op("Relu", {b.BatchNorm(b.Conv(h, in, width, 3, stride), width)});
      y = b.BatchNorm(b.Conv(y, width, width, 3, 1), width);
      std::string shortcut = h;
      if (stride != 1 || in != width)
        shortcut = b.BatchNorm(b.Conv(h, in, width, 1, stride), width);
      h = b.Op("Relu", {b.Op("Add", {y, shortcut})});
      in = width;
    }
  }
  h = b.Op("Flatten", {b.Op("GlobalAveragePool", {h})});
  g.outputs.push_back({b.Gemm(h, 512, 1000), {}});
  return g;
}

void RunNet(benchmark::State& state, Graph g, graph::Shape input_shape) {
  auto exec = ReferenceExecutor::Create(std::move(g));
  LOOM_CHECK(exec.ok());
  Tensor x(DType::kFloat32, std::move(input_shape));
  base::Rng rng(2);
  for (float& v : x.values<float>()) v = static_cast<float>(rng.Uniform(-1, 1));
  std::map<std::string, Tensor> inputs = {{"x", x}};
  for (auto _ : state) {
    auto out = exec->Run(inputs);
    LOOM_CHECK(out.ok());
    benchmark::DoNotOptimize(out->front().raw_data());
  }
}

void BM_SmallConvNet(benchmark::State& state) { RunNet(state, SmallConvNet(), {1, 3, 32, 32}); }
BENCHMARK(BM_SmallConvNet)->Unit(benchmark::kMillisecond);

void BM_ResNet18Batch1(benchmark::State& state) { RunNet(state, ResNet18(), {1, 3, 224, 224}); }
BENCHMARK(BM_ResNet18Batch1)->Unit(benchmark::kMillisecond)->Iterations(2);

// One ResNet-18 stage-1 conv (64->64, 3x3, 56x56) called directly, with its GFLOP/s.
void BM_Conv2dNchwResNetLayer(benchmark::State& state) {
  kernels::Conv2dParams p{.in_channels = 64,
                          .in_h = 56,
                          .in_w = 56,
                          .out_channels = 64,
                          .kernel_h = 3,
                          .kernel_w = 3,
                          .pad_top = 1,
                          .pad_left = 1,
                          .pad_bottom = 1,
                          .pad_right = 1};
  std::vector<float> x(p.x_size(), 0.5f), w(p.w_size(), 0.25f), y(p.y_size());
  for (auto _ : state) {
    kernels::Conv2dNchw(p, x.data(), w.data(), nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * p.y_size() * 64 * 9;
  state.counters["GFLOP/s"] = benchmark::Counter(
      flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Conv2dNchwResNetLayer)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace loom::runtime

BENCHMARK_MAIN();
