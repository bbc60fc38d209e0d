#include "loom/graph/onnx_exporter.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/onnx_importer.h"

namespace loom::graph {
namespace {

using ::testing::HasSubstr;

Tensor Int32Tensor(Shape shape, std::vector<int32_t> values) {
  Tensor t(DType::kInt32, std::move(shape));
  std::memcpy(t.raw_data(), values.data(), t.num_bytes());
  return t;
}

// A small graph that uses every attribute kind and several initializer dtypes.
Graph HandBuiltGraph() {
  Graph g;
  g.name = "hand_built";
  g.opset = 13;
  g.inputs.push_back({"x", {DType::kFloat32, {-1, 2, 4, 4}}});
  g.initializers["w"] = Tensor::FromFloats({3, 2, 1, 1}, std::vector<float>{1, -2, 3, -4, 5, -6});
  g.initializers["shape"] = Tensor::FromInt64s({2}, std::vector<int64_t>{0, -1});
  g.initializers["idx"] = Int32Tensor({3}, {7, -8, 9});
  Tensor mask(DType::kBool, {2});
  mask.data<uint8_t>()[1] = 1;
  g.initializers["mask"] = mask;

  Node conv;
  conv.name = "conv";
  conv.op_type = "Conv";
  conv.inputs = {"x", "w", ""};
  conv.outputs = {"c"};
  conv.attrs["kernel_shape"] = std::vector<int64_t>{1, 1};
  conv.attrs["group"] = int64_t{1};
  conv.attrs["auto_pad"] = std::string("NOTSET");
  g.nodes.push_back(conv);

  Node act;
  act.name = "act";
  act.op_type = "LeakyRelu";
  act.inputs = {"c"};
  act.outputs = {"a"};
  act.attrs["alpha"] = 0.125f;
  act.attrs["scales"] = std::vector<float>{0.5f, 2.0f};
  act.attrs["tags"] = std::vector<std::string>{"p", "q"};
  g.nodes.push_back(act);

  Node cst;
  cst.name = "cst";
  cst.op_type = "Constant";
  cst.outputs = {"k"};
  cst.attrs["value"] = Tensor::FromFloats({2}, std::vector<float>{0.25f, 4.0f});
  g.nodes.push_back(cst);

  Node add;
  add.name = "add";
  add.op_type = "Add";
  add.inputs = {"a", "k"};
  add.outputs = {"y"};
  g.nodes.push_back(add);

  g.outputs.push_back({"y", {DType::kFloat32, {-1, 3, 4, 4}}});
  g.value_types["c"] = {DType::kFloat32, {1, 3, 4, 4}};
  return g;
}

void ExpectSameTensor(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.type(), b.type()) << what;
  EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), a.num_bytes()), 0) << what;
}

void ExpectSameAttr(const AttrValue& a, const AttrValue& b, const std::string& what) {
  ASSERT_EQ(a.index(), b.index()) << what;
  if (const auto* t = std::get_if<Tensor>(&a)) {
    ExpectSameTensor(*t, std::get<Tensor>(b), what);
    return;
  }
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (!std::is_same_v<T, Tensor>) EXPECT_EQ(x, std::get<T>(b)) << what;
      },
      a);
}

TEST(OnnxExporterTest, RoundTripKeepsNodesAttrsAndInitializerBytes) {
  Graph g = HandBuiltGraph();
  auto bytes = ExportOnnxBytes(g);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto back = ImportOnnxBytes(*bytes, "/nonexistent");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->name, "hand_built");
  EXPECT_EQ(back->opset, 13);
  ASSERT_EQ(back->inputs.size(), 1u);
  EXPECT_EQ(back->inputs[0].name, "x");
  EXPECT_EQ(back->inputs[0].type, g.inputs[0].type);
  ASSERT_EQ(back->outputs.size(), 1u);
  EXPECT_EQ(back->outputs[0].type, g.outputs[0].type);
  EXPECT_EQ(back->value_types, g.value_types);

  ASSERT_EQ(back->nodes.size(), g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& a = g.nodes[i];
    const Node& b = back->nodes[i];
    EXPECT_EQ(b.name, a.name);
    EXPECT_EQ(b.op_type, a.op_type);
    EXPECT_EQ(b.inputs, a.inputs);
    EXPECT_EQ(b.outputs, a.outputs);
    ASSERT_EQ(b.attrs.size(), a.attrs.size()) << a.name;
    for (const auto& [key, value] : a.attrs) {
      ASSERT_TRUE(b.HasAttr(key)) << a.name << "." << key;
      ExpectSameAttr(value, b.attrs.at(key), a.name + "." + key);
    }
  }
  ASSERT_EQ(back->initializers.size(), g.initializers.size());
  for (const auto& [name, t] : g.initializers) {
    ASSERT_NE(back->FindInitializer(name), nullptr) << name;
    ExpectSameTensor(t, *back->FindInitializer(name), name);
  }
}

// Initializers, graph inputs and outputs of every dtype survive export and re-import.
TEST(OnnxExporterTest, RoundTripsEveryDtype) {
  Graph g = HandBuiltGraph();
  for (DType d : AllDTypes()) {
    Tensor t(d, {3});
    auto* bytes = static_cast<uint8_t*>(t.raw_data());
    for (size_t i = 0; i < t.num_bytes(); ++i) {
      bytes[i] = d == DType::kBool ? static_cast<uint8_t>(i % 2) : static_cast<uint8_t>(i * 13 + 5);
    }
    g.initializers[std::string("init_") + DTypeName(d)] = t;
    const std::string in = std::string("in_") + DTypeName(d);
    g.inputs.push_back({in, {d, {2}}});
    Node id;
    id.name = std::string("id_") + DTypeName(d);
    id.op_type = "Identity";
    id.inputs = {in};
    id.outputs = {std::string("out_") + DTypeName(d)};
    g.nodes.push_back(id);
    g.outputs.push_back({id.outputs[0], {d, {2}}});
  }
  auto bytes = ExportOnnxBytes(g);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto back = ImportOnnxBytes(*bytes, "/nonexistent");
  ASSERT_TRUE(back.ok()) << back.status();
  for (DType d : AllDTypes()) {
    const std::string name = std::string("init_") + DTypeName(d);
    ASSERT_NE(back->FindInitializer(name), nullptr) << name;
    ExpectSameTensor(g.initializers.at(name), *back->FindInitializer(name), name);
  }
  EXPECT_EQ(back->inputs.size(), g.inputs.size());
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    EXPECT_EQ(back->inputs[i].type, g.inputs[i].type) << g.inputs[i].name;
  }
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    EXPECT_EQ(back->outputs[i].type, g.outputs[i].type) << g.outputs[i].name;
  }
}

TEST(OnnxExporterTest, FileRoundTrip) {
  std::filesystem::path path = std::filesystem::path(::testing::TempDir()) /
                               ("loom_exporter_" + std::to_string(::getpid()) + ".onnx");
  ASSERT_TRUE(ExportOnnxFile(HandBuiltGraph(), path.string()).ok());
  auto back = ImportOnnxFile(path.string());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->nodes.size(), 4u);
  std::filesystem::remove(path);
}

TEST(OnnxExporterTest, ExportIsDeterministic) {
  auto a = ExportOnnxBytes(HandBuiltGraph());
  auto b = ExportOnnxBytes(HandBuiltGraph());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(OnnxExporterTest, RejectsInvalidGraph) {
  Graph g = HandBuiltGraph();
  g.nodes[3].inputs[1] = "nowhere";
  auto bytes = ExportOnnxBytes(g);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("'nowhere'"));
}

TEST(OnnxExporterTest, RejectsUndefinedTensorAttribute) {
  Graph g = HandBuiltGraph();
  g.nodes[2].attrs["value"] = Tensor();
  auto bytes = ExportOnnxBytes(g);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("attribute 'value' of Constant 'cst'"));
}

TEST(OnnxExporterTest, UnwritablePathFails) {
  auto st = ExportOnnxFile(HandBuiltGraph(), "/nonexistent/dir/model.onnx");
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(st.message(), HasSubstr("/nonexistent/dir/model.onnx"));
}

}  // namespace
}  // namespace loom::graph
