#include "loom/graph/zoo.h"

#include <cmath>
#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/check.h"
#include "loom/base/rng.h"

namespace loom::graph {
namespace {

// Seed of the stream for initializer `name`: FNV-1a of the name, mixed with the model seed by a
// SplitMix64 finalizer, so nearby seeds and similar names give unrelated streams.
uint64_t TensorSeed(uint64_t seed, std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  uint64_t z = h ^ (seed + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Portable conversions of raw 64-bit draws (std distributions differ between standard
// libraries; the engine's raw output does not).
class WeightStream {
 public:
  WeightStream(uint64_t seed, std::string_view name) : rng_(TensorSeed(seed, name)) {}

  // Uniform in [lo, hi).
  float Uniform(double lo, double hi) {
    double u = static_cast<double>(rng_.engine()() >> 11) * 0x1.0p-53;
    return static_cast<float>(lo + (hi - lo) * u);
  }
  // Mean 0, standard deviation `std`: the sum of four 16-bit uniforms (Irwin-Hall, variance
  // 4/12), one engine draw per value, which keeps a 25M-parameter model fast to build.
  float Normal(double std) {
    uint64_t bits = rng_.engine()();
    double sum = 0.0;
    for (int i = 0; i < 4; ++i) {
      sum += (static_cast<double>(bits & 0xffff) + 0.5) * (1.0 / 65536.0);
      bits >>= 16;
    }
    constexpr double kSqrt3 = 1.7320508075688772;
    return static_cast<float>((sum - 2.0) * kSqrt3 * std);
  }

 private:
  base::Rng rng_;
};

struct ConvSpec {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t pad = 0;
  int64_t group = 1;
  bool bias = false;
};

// Appends nodes and seeded initializers to a graph, in topological order by construction.
class ModelBuilder {
 public:
  ModelBuilder(std::string name, uint64_t seed) : seed_(seed) {
    graph_.name = std::move(name);
    graph_.opset = 17;
  }

  std::string AddInput(std::string name, Shape shape) {
    TensorType type{DType::kFloat32, std::move(shape)};
    graph_.inputs.push_back({name, type});
    graph_.value_types[name] = type;
    return name;
  }

  // Conv named `name` reading `x`; returns its output value.
  std::string Conv(const std::string& name, const std::string& x, const ConvSpec& spec) {
    const int64_t in_per_group = spec.in_channels / spec.group;
    LOOM_CHECK(in_per_group * spec.group == spec.in_channels);
    const int64_t fan_in = in_per_group * spec.kernel * spec.kernel;
    std::string weight = name + ".weight";
    AddNormal(weight, {spec.out_channels, in_per_group, spec.kernel, spec.kernel},
              std::sqrt(2.0 / static_cast<double>(fan_in)));
    std::vector<std::string> inputs = {x, weight};
    if (spec.bias) {
      std::string bias = name + ".bias";
      AddUniform(bias, {spec.out_channels}, -0.01, 0.01);
      inputs.push_back(bias);
    }
    Node& node = AddNode(name, "Conv", std::move(inputs));
    node.attrs["dilations"] = std::vector<int64_t>{1, 1};
    node.attrs["group"] = spec.group;
    node.attrs["kernel_shape"] = std::vector<int64_t>{spec.kernel, spec.kernel};
    node.attrs["pads"] = std::vector<int64_t>{spec.pad, spec.pad, spec.pad, spec.pad};
    node.attrs["strides"] = std::vector<int64_t>{spec.stride, spec.stride};
    return name;
  }

  // `gamma_scale` < 1 damps the last BN of a residual branch (see zoo.h).
  std::string BatchNorm(const std::string& name, const std::string& x, int64_t channels,
                        double gamma_scale = 1.0) {
    AddUniform(name + ".weight", {channels}, 0.75 * gamma_scale, 1.25 * gamma_scale);
    AddUniform(name + ".bias", {channels}, -0.1, 0.1);
    AddUniform(name + ".running_mean", {channels}, -0.1, 0.1);
    AddUniform(name + ".running_var", {channels}, 0.5, 1.5);
    Node& node = AddNode(
        name, "BatchNormalization",
        {x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"});
    node.attrs["epsilon"] = 1e-5f;
    node.attrs["momentum"] = 0.9f;
    return name;
  }

  std::string Relu(const std::string& name, const std::string& x) {
    AddNode(name, "Relu", {x});
    return name;
  }

  // ReLU6 as torchvision exports it at opset >= 11: Clip with min and max as inputs. All Clip
  // nodes share one pair of scalar initializers.
  std::string Relu6(const std::string& name, const std::string& x) {
    static const std::string kMin = "relu6.min";
    static const std::string kMax = "relu6.max";
    if (!graph_.IsInitializer(kMin)) {
      graph_.initializers[kMin] = Tensor::ScalarFloat(0.0f);
      graph_.initializers[kMax] = Tensor::ScalarFloat(6.0f);
    }
    AddNode(name, "Clip", {x, kMin, kMax});
    return name;
  }

  std::string MaxPool(const std::string& name, const std::string& x, int64_t kernel, int64_t stride,
                      int64_t pad) {
    Node& node = AddNode(name, "MaxPool", {x});
    node.attrs["ceil_mode"] = int64_t{0};
    node.attrs["dilations"] = std::vector<int64_t>{1, 1};
    node.attrs["kernel_shape"] = std::vector<int64_t>{kernel, kernel};
    node.attrs["pads"] = std::vector<int64_t>{pad, pad, pad, pad};
    node.attrs["strides"] = std::vector<int64_t>{stride, stride};
    return name;
  }

  std::string Add(const std::string& name, const std::string& a, const std::string& b) {
    AddNode(name, "Add", {a, b});
    return name;
  }

  std::string Dropout(const std::string& name, const std::string& x) {
    AddNode(name, "Dropout", {x});
    return name;
  }

  // GlobalAveragePool -> Flatten(axis 1) -> Gemm(transB 1) writing the graph output "output".
  void Classifier(const std::string& pool_name, const std::string& flatten_name,
                  const std::string& fc_name, const std::string& x, int64_t features,
                  int64_t classes, int64_t batch,
                  const std::function<std::string(std::string)>& before_fc = nullptr) {
    std::string pooled = AddNode(pool_name, "GlobalAveragePool", {x}).outputs[0];
    Node& flatten = AddNode(flatten_name, "Flatten", {pooled});
    flatten.attrs["axis"] = int64_t{1};
    std::string flat = flatten.outputs[0];
    if (before_fc) flat = before_fc(flat);
    AddNormal(fc_name + ".weight", {classes, features}, 0.01);
    AddUniform(fc_name + ".bias", {classes}, -0.01, 0.01);
    Node& gemm = AddNode(fc_name, "Gemm", {flat, fc_name + ".weight", fc_name + ".bias"},
                         /*output=*/"output");
    gemm.attrs["alpha"] = 1.0f;
    gemm.attrs["beta"] = 1.0f;
    gemm.attrs["transB"] = int64_t{1};
    graph_.outputs.push_back({"output", {DType::kFloat32, {batch, classes}}});
  }

  Graph Finish() && { return std::move(graph_); }

 private:
  Node& AddNode(const std::string& name, std::string op_type, std::vector<std::string> inputs,
                const std::string& output = "") {
    Node node;
    node.name = name;
    node.op_type = std::move(op_type);
    node.inputs = std::move(inputs);
    node.outputs = {output.empty() ? name : output};
    graph_.nodes.push_back(std::move(node));
    return graph_.nodes.back();
  }

  void AddNormal(const std::string& name, Shape shape, double std) {
    Tensor t(DType::kFloat32, std::move(shape));
    WeightStream stream(seed_, name);
    for (float& v : t.values<float>()) v = stream.Normal(std);
    Insert(name, std::move(t));
  }

  void AddUniform(const std::string& name, Shape shape, double lo, double hi) {
    Tensor t(DType::kFloat32, std::move(shape));
    WeightStream stream(seed_, name);
    for (float& v : t.values<float>()) v = stream.Uniform(lo, hi);
    Insert(name, std::move(t));
  }

  void Insert(const std::string& name, Tensor t) {
    bool inserted = graph_.initializers.emplace(name, std::move(t)).second;
    LOOM_CHECK(inserted);
  }

  uint64_t seed_;
  Graph graph_;
};

// A Conv -> BatchNormalization pair named like torchvision's modules; returns the BN output.
std::string ConvBn(ModelBuilder& b, const std::string& conv, const std::string& bn,
                   const std::string& x, const ConvSpec& spec, double gamma_scale = 1.0) {
  return b.BatchNorm(bn, b.Conv(conv, x, spec), spec.out_channels, gamma_scale);
}

constexpr double kResidualGamma = 0.2;
constexpr int64_t kImageNetClasses = 1000;

// The ResNet stem (conv1, bn1, relu, maxpool); returns the maxpool output.
std::string ResNetStem(ModelBuilder& b, const std::string& x) {
  std::string y =
      ConvBn(b, "conv1", "bn1", x,
             {.in_channels = 3, .out_channels = 64, .kernel = 7, .stride = 2, .pad = 3});
  y = b.Relu("relu", y);
  return b.MaxPool("maxpool", y, 3, 2, 1);
}

std::string Downsample(ModelBuilder& b, const std::string& prefix, const std::string& x,
                       int64_t in_channels, int64_t out_channels, int64_t stride) {
  return ConvBn(b, prefix + ".downsample.0", prefix + ".downsample.1", x,
                {.in_channels = in_channels, .out_channels = out_channels, .stride = stride});
}

Graph BuildResNet18(const ZooOptions& options) {
  ModelBuilder b("resnet18", options.seed);
  std::string x = ResNetStem(b, b.AddInput("input", {options.batch, 3, 224, 224}));
  int64_t in_channels = 64;
  const int64_t widths[] = {64, 128, 256, 512};
  for (int layer = 0; layer < 4; ++layer) {
    const int64_t planes = widths[layer];
    for (int block = 0; block < 2; ++block) {
      const std::string p = absl::StrCat("layer", layer + 1, ".", block);
      const int64_t stride = (layer > 0 && block == 0) ? 2 : 1;
      std::string y = ConvBn(b, absl::StrCat(p, ".conv1"), absl::StrCat(p, ".bn1"), x,
                             {.in_channels = in_channels,
                              .out_channels = planes,
                              .kernel = 3,
                              .stride = stride,
                              .pad = 1});
      y = b.Relu(absl::StrCat(p, ".relu"), y);
      y = ConvBn(b, absl::StrCat(p, ".conv2"), absl::StrCat(p, ".bn2"), y,
                 {.in_channels = planes, .out_channels = planes, .kernel = 3, .pad = 1},
                 kResidualGamma);
      std::string identity = x;
      if (stride != 1 || in_channels != planes) {
        identity = Downsample(b, p, x, in_channels, planes, stride);
      }
      y = b.Add(absl::StrCat(p, ".add"), y, identity);
      x = b.Relu(absl::StrCat(p, ".relu_1"), y);
      in_channels = planes;
    }
  }
  b.Classifier("avgpool", "flatten", "fc", x, 512, kImageNetClasses, options.batch);
  return std::move(b).Finish();
}

Graph BuildResNet50(const ZooOptions& options) {
  ModelBuilder b("resnet50", options.seed);
  std::string x = ResNetStem(b, b.AddInput("input", {options.batch, 3, 224, 224}));
  constexpr int64_t kExpansion = 4;
  int64_t in_channels = 64;
  const int64_t widths[] = {64, 128, 256, 512};
  const int blocks[] = {3, 4, 6, 3};
  for (int layer = 0; layer < 4; ++layer) {
    const int64_t planes = widths[layer];
    const int64_t out_channels = planes * kExpansion;
    for (int block = 0; block < blocks[layer]; ++block) {
      const std::string p = absl::StrCat("layer", layer + 1, ".", block);
      // v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
      const int64_t stride = (layer > 0 && block == 0) ? 2 : 1;
      std::string y = ConvBn(b, absl::StrCat(p, ".conv1"), absl::StrCat(p, ".bn1"), x,
                             {.in_channels = in_channels, .out_channels = planes});
      y = b.Relu(absl::StrCat(p, ".relu"), y);
      y = ConvBn(
          b, absl::StrCat(p, ".conv2"), absl::StrCat(p, ".bn2"), y,
          {.in_channels = planes, .out_channels = planes, .kernel = 3, .stride = stride, .pad = 1});
      y = b.Relu(absl::StrCat(p, ".relu_1"), y);
      y = ConvBn(b, absl::StrCat(p, ".conv3"), absl::StrCat(p, ".bn3"), y,
                 {.in_channels = planes, .out_channels = out_channels}, kResidualGamma);
      std::string identity = x;
      if (stride != 1 || in_channels != out_channels) {
        identity = Downsample(b, p, x, in_channels, out_channels, stride);
      }
      y = b.Add(absl::StrCat(p, ".add"), y, identity);
      x = b.Relu(absl::StrCat(p, ".relu_2"), y);
      in_channels = out_channels;
    }
  }
  b.Classifier("avgpool", "flatten", "fc", x, 512 * kExpansion, kImageNetClasses, options.batch);
  return std::move(b).Finish();
}

Graph BuildMobileNetV2(const ZooOptions& options) {
  ModelBuilder b("mobilenet_v2", options.seed);
  std::string x = b.AddInput("input", {options.batch, 3, 224, 224});
  x = ConvBn(b, "features.0.0", "features.0.1", x,
             {.in_channels = 3, .out_channels = 32, .kernel = 3, .stride = 2, .pad = 1});
  x = b.Relu6("features.0.2", x);
  struct Stage {
    int64_t expand;    // t
    int64_t channels;  // c
    int repeats;       // n
    int64_t stride;    // s
  };
  constexpr Stage kStages[] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                               {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t in_channels = 32;
  int feature = 1;
  for (const Stage& stage : kStages) {
    for (int i = 0; i < stage.repeats; ++i, ++feature) {
      const std::string p = absl::StrCat("features.", feature, ".conv.");
      const int64_t stride = i == 0 ? stage.stride : 1;
      const int64_t hidden = in_channels * stage.expand;
      const bool residual = stride == 1 && in_channels == stage.channels;
      std::string y = x;
      int m = 0;  // index of the next module in the block's nn.Sequential
      if (stage.expand != 1) {
        const std::string e = absl::StrCat(p, m++, ".");
        y = ConvBn(b, absl::StrCat(e, "0"), absl::StrCat(e, "1"), y,
                   {.in_channels = in_channels, .out_channels = hidden});
        y = b.Relu6(absl::StrCat(e, "2"), y);
      }
      const std::string d = absl::StrCat(p, m++, ".");
      y = ConvBn(b, absl::StrCat(d, "0"), absl::StrCat(d, "1"), y,
                 {.in_channels = hidden,
                  .out_channels = hidden,
                  .kernel = 3,
                  .stride = stride,
                  .pad = 1,
                  .group = hidden});
      y = b.Relu6(absl::StrCat(d, "2"), y);
      const std::string project = absl::StrCat(p, m++);
      const std::string project_bn = absl::StrCat(p, m++);
      y = ConvBn(b, project, project_bn, y, {.in_channels = hidden, .out_channels = stage.channels},
                 residual ? kResidualGamma : 1.0);
      if (residual) y = b.Add(absl::StrCat("features.", feature, ".add"), x, y);
      x = y;
      in_channels = stage.channels;
    }
  }
  const std::string last = absl::StrCat("features.", feature, ".");
  x = ConvBn(b, last + "0", last + "1", x, {.in_channels = in_channels, .out_channels = 1280});
  x = b.Relu6(last + "2", x);
  b.Classifier("avgpool", "flatten", "classifier.1", x, 1280, kImageNetClasses, options.batch,
               [&b](const std::string& flat) { return b.Dropout("classifier.0", flat); });
  return std::move(b).Finish();
}

Graph BuildVgg11(const ZooOptions& options) {
  ModelBuilder b("vgg11", options.seed);
  std::string x = b.AddInput("input", {options.batch, 3, 224, 224});
  constexpr int64_t kPool = -1;
  constexpr int64_t kConfig[] = {64,  kPool, 128,   kPool, 256, 256,  kPool,
                                 512, 512,   kPool, 512,   512, kPool};
  int64_t in_channels = 3;
  int module = 0;  // index in torchvision's `features` nn.Sequential
  for (int64_t v : kConfig) {
    if (v == kPool) {
      x = b.MaxPool(absl::StrCat("features.", module++), x, 2, 2, 0);
      continue;
    }
    const std::string conv = absl::StrCat("features.", module++);
    const std::string bn = absl::StrCat("features.", module++);
    x = ConvBn(
        b, conv, bn, x,
        {.in_channels = in_channels, .out_channels = v, .kernel = 3, .pad = 1, .bias = true});
    x = b.Relu(absl::StrCat("features.", module++), x);
    in_channels = v;
  }
  b.Classifier("avgpool", "flatten", "classifier", x, 512, kImageNetClasses, options.batch);
  return std::move(b).Finish();
}

Graph BuildTinyCnn(const ZooOptions& options) {
  ModelBuilder b("tiny_cnn", options.seed);
  std::string x = b.AddInput("input", {options.batch, 3, 32, 32});
  x = ConvBn(b, "conv1", "bn1", x, {.in_channels = 3, .out_channels = 8, .kernel = 3, .pad = 1});
  x = b.Relu("relu1", x);
  x = b.MaxPool("pool", x, 2, 2, 0);
  std::string y =
      ConvBn(b, "conv2", "bn2", x, {.in_channels = 8, .out_channels = 8, .kernel = 3, .pad = 1},
             kResidualGamma);
  y = b.Add("add", y, x);
  y = b.Relu("relu2", y);
  b.Classifier("avgpool", "flatten", "fc", y, 8, 10, options.batch);
  return std::move(b).Finish();
}

struct ZooEntry {
  const char* name;
  const char* description;
  Shape input_shape;  // batch 1
  Graph (*build)(const ZooOptions&);
};

const std::vector<ZooEntry>& Entries() {
  static const auto* entries = new std::vector<ZooEntry>{
      {"resnet18",
       "ResNet-18 (torchvision layout), 1000 classes, 11.7M params",
       {1, 3, 224, 224},
       &BuildResNet18},
      {"resnet50",
       "ResNet-50 v1.5 (bottleneck, stride on the 3x3), 1000 classes, 25.6M params",
       {1, 3, 224, 224},
       &BuildResNet50},
      {"mobilenet_v2",
       "MobileNetV2 width 1.0 (depthwise convs, ReLU6 as Clip), 1000 classes",
       {1, 3, 224, 224},
       &BuildMobileNetV2},
      {"vgg11",
       "VGG-style net: vgg11_bn features, GlobalAveragePool + Gemm 512->1000 classifier",
       {1, 3, 224, 224},
       &BuildVgg11},
      {"tiny_cnn",
       "Tiny CNN for fast tests: 2 convs, a residual Add, pool, Gemm to 10 classes",
       {1, 3, 32, 32},
       &BuildTinyCnn},
  };
  return *entries;
}

}  // namespace

std::vector<ZooModelInfo> ListZooModels() {
  std::vector<ZooModelInfo> infos;
  for (const ZooEntry& e : Entries()) infos.push_back({e.name, e.description, e.input_shape});
  return infos;
}

absl::StatusOr<Graph> BuildZooModel(std::string_view name, const ZooOptions& options) {
  const ZooEntry* entry = nullptr;
  std::vector<std::string> names;
  for (const ZooEntry& e : Entries()) {
    names.push_back(e.name);
    if (name == e.name) entry = &e;
  }
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown zoo model '", std::string(name),
                                            "'; available: ", absl::StrJoin(names, ", ")));
  }
  if (options.batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("zoo model batch must be at least 1, got ", options.batch));
  }
  return entry->build(options);
}

}  // namespace loom::graph
