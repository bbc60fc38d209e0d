#include "loom/graph/onnx_importer.h"

#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/graph/npy.h"
#include "loom/graph/onnx_exporter.h"
#include "loom/graph/testing/shared_models.h"

namespace loom::graph {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh, empty folder for one test.
fs::path MakeTempDir(const std::string& tag) {
  fs::path dir = fs::path(::testing::TempDir()) /
                 ("loom_onnx_importer_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void SetTensorType(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem,
                   const std::vector<std::string>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (const auto& d : dims) {
    auto* dim = shape->add_dim();
    if (!d.empty() && d[0] >= '0' && d[0] <= '9') {
      dim->set_dim_value(std::stoll(d));
    } else if (d != "?") {
      dim->set_dim_param(d);
    }
  }
}

// x: float[N,3] -> MatMul(x, w[3,2]) -> Relu -> z: float[N,2]
onnx::ModelProto TinyModel() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("tiny");
  SetTensorType(g->add_input(), "x", onnx::TensorProto::FLOAT, {"N", "3"});
  SetTensorType(g->add_output(), "z", onnx::TensorProto::FLOAT, {"N", "2"});
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(3);
  w->add_dims(2);
  std::vector<float> wv = {1, 2, 3, 4, 5, 6};
  w->set_raw_data(reinterpret_cast<const char*>(wv.data()), wv.size() * sizeof(float));
  auto* mm = g->add_node();
  mm->set_name("mm");
  mm->set_op_type("MatMul");
  mm->add_input("x");
  mm->add_input("w");
  mm->add_output("y");
  auto* relu = g->add_node();
  relu->set_op_type("Relu");
  relu->add_input("y");
  relu->add_output("z");
  return m;
}

std::string Bytes(const onnx::ModelProto& m) {
  std::string s;
  EXPECT_TRUE(m.SerializeToString(&s));
  return s;
}

absl::StatusOr<Graph> Import(const onnx::ModelProto& m, const ImportOptions& options = {}) {
  return ImportOnnxBytes(Bytes(m), "/nonexistent/loom-test", options);
}

TEST(OnnxImporterTest, ImportsTinyModel) {
  auto g = Import(TinyModel());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->name, "tiny");
  EXPECT_EQ(g->opset, 17);
  ASSERT_EQ(g->inputs.size(), 1u);
  EXPECT_EQ(g->inputs[0].name, "x");
  EXPECT_EQ(g->inputs[0].type, (TensorType{DType::kFloat32, {-1, 3}}));
  ASSERT_EQ(g->outputs.size(), 1u);
  EXPECT_EQ(g->outputs[0].type, (TensorType{DType::kFloat32, {-1, 2}}));
  ASSERT_EQ(g->nodes.size(), 2u);
  EXPECT_EQ(g->nodes[0].name, "mm");
  EXPECT_THAT(g->nodes[0].inputs, ElementsAre("x", "w"));
  EXPECT_EQ(g->nodes[1].name, "Relu_1");
  EXPECT_EQ(g->nodes[1].op_type, "Relu");
  const Tensor* w = g->FindInitializer("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->type(), (TensorType{DType::kFloat32, {3, 2}}));
  EXPECT_THAT(w->values<float>(), ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST(OnnxImporterTest, PinsDynamicInputDims) {
  auto g = Import(TinyModel(), {.input_shapes = {{"x", {4, 3}}}});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->inputs[0].type.shape, (Shape{4, 3}));
}

TEST(OnnxImporterTest, PinErrorsNameTheInput) {
  auto missing = Import(TinyModel(), {.input_shapes = {{"nope", {1, 3}}}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("'nope', which is not a graph input"));
  auto rank = Import(TinyModel(), {.input_shapes = {{"x", {1, 3, 1}}}});
  EXPECT_EQ(rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rank.status().message(), HasSubstr("model declares rank 2"));
  auto conflict = Import(TinyModel(), {.input_shapes = {{"x", {1, 5}}}});
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(conflict.status().message(), HasSubstr("fixes dim 1 to 3"));
}

TEST(OnnxImporterTest, InitializerListedAsInputIsNotARuntimeInput) {
  auto m = TinyModel();
  SetTensorType(m.mutable_graph()->add_input(), "w", onnx::TensorProto::FLOAT, {"3", "2"});
  auto g = Import(m);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->inputs.size(), 1u);
  EXPECT_EQ(g->inputs[0].name, "x");
}

TEST(OnnxImporterTest, ReadsTypedDataFields) {
  auto m = TinyModel();
  auto* g = m.mutable_graph();
  auto* w = g->mutable_initializer(0);
  w->clear_raw_data();
  for (float v : {1.f, 2.f, 3.f, 4.f, 5.f, 6.f}) w->add_float_data(v);
  auto add = [&](const std::string& name, int32_t type, std::vector<int64_t> vals) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    t->add_dims(static_cast<int64_t>(vals.size()));
    for (int64_t v : vals) {
      if (type == onnx::TensorProto::INT64) {
        t->add_int64_data(v);
      } else {
        t->add_int32_data(static_cast<int32_t>(v));
      }
    }
  };
  add("i64", onnx::TensorProto::INT64, {-5, 1LL << 40});
  add("i32", onnx::TensorProto::INT32, {-7, 9});
  add("b", onnx::TensorProto::BOOL, {0, 1, 1});
  add("u8", onnx::TensorProto::UINT8, {0, 255});
  add("i8", onnx::TensorProto::INT8, {-128, 127});
  auto graph = Import(m);
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_THAT(graph->FindInitializer("w")->values<float>(), ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_THAT(graph->FindInitializer("i64")->values<int64_t>(), ElementsAre(-5, 1LL << 40));
  EXPECT_THAT(graph->FindInitializer("i32")->values<int32_t>(), ElementsAre(-7, 9));
  EXPECT_EQ(graph->FindInitializer("b")->dtype(), DType::kBool);
  EXPECT_THAT(graph->FindInitializer("b")->values<uint8_t>(), ElementsAre(0, 1, 1));
  EXPECT_THAT(graph->FindInitializer("u8")->values<uint8_t>(), ElementsAre(0, 255));
  EXPECT_THAT(graph->FindInitializer("i8")->values<int8_t>(), ElementsAre(-128, 127));
}

TEST(OnnxImporterTest, ReadsAllAttributeKinds) {
  auto m = TinyModel();
  auto* node = m.mutable_graph()->mutable_node(1);
  auto* a = node->add_attribute();
  a->set_name("i");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(-3);
  a = node->add_attribute();
  a->set_name("f");
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(0.5f);
  a = node->add_attribute();
  a->set_name("s");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("SAME_UPPER");
  a = node->add_attribute();
  a->set_name("is");
  a->set_type(onnx::AttributeProto::INTS);
  a->add_ints(1);
  a->add_ints(2);
  a = node->add_attribute();
  a->set_name("fs");
  a->set_type(onnx::AttributeProto::FLOATS);
  a->add_floats(1.5f);
  a = node->add_attribute();
  a->set_name("ss");
  a->set_type(onnx::AttributeProto::STRINGS);
  a->add_strings("a");
  a->add_strings("b");
  a = node->add_attribute();
  a->set_name("t");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(onnx::TensorProto::INT64);
  a->mutable_t()->add_int64_data(42);
  // Old models leave the type out.
  a = node->add_attribute();
  a->set_name("untyped");
  a->add_ints(7);
  auto g = Import(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& n = g->nodes[1];
  EXPECT_EQ(n.GetInt("i", 0), -3);
  EXPECT_EQ(n.GetFloat("f", 0), 0.5f);
  EXPECT_EQ(n.GetString("s", ""), "SAME_UPPER");
  EXPECT_THAT(n.GetInts("is"), ElementsAre(1, 2));
  EXPECT_THAT(n.GetFloats("fs"), ElementsAre(1.5f));
  EXPECT_THAT(std::get<std::vector<std::string>>(n.attrs.at("ss")), ElementsAre("a", "b"));
  ASSERT_NE(n.GetTensor("t"), nullptr);
  EXPECT_EQ(n.GetTensor("t")->rank(), 0);
  EXPECT_EQ(n.GetTensor("t")->Int64At(0), 42);
  EXPECT_THAT(n.GetInts("untyped"), ElementsAre(7));
}

TEST(OnnxImporterTest, GraphAttributeIsUnimplementedNamingNode) {
  auto m = TinyModel();
  auto* node = m.mutable_graph()->mutable_node(0);
  auto* a = node->add_attribute();
  a->set_name("then_branch");
  a->set_type(onnx::AttributeProto::GRAPH);
  a->mutable_g()->set_name("sub");
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("MatMul 'mm'"));
  EXPECT_THAT(g.status().message(), HasSubstr("then_branch"));
}

TEST(OnnxImporterTest, ConstantValueFormsBecomeTensors) {
  auto m = TinyModel();
  auto* g = m.mutable_graph();
  auto add_const = [&](const std::string& out, const std::string& key) {
    auto* n = g->add_node();
    n->set_op_type("Constant");
    n->add_output(out);
    auto* a = n->add_attribute();
    a->set_name(key);
    return a;
  };
  auto* a = add_const("c_ints", "value_ints");
  a->set_type(onnx::AttributeProto::INTS);
  a->add_ints(2);
  a->add_ints(-1);
  a = add_const("c_float", "value_float");
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(6.0f);
  a = add_const("c_tensor", "value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  a->mutable_t()->add_dims(2);
  a->mutable_t()->add_float_data(1);
  a->mutable_t()->add_float_data(2);
  auto graph = Import(m);
  ASSERT_TRUE(graph.ok()) << graph.status();
  std::map<std::string, const Node*> by_out;
  for (const auto& n : graph->nodes) by_out[n.outputs[0]] = &n;
  const Tensor* ints = by_out["c_ints"]->GetTensor("value");
  ASSERT_NE(ints, nullptr);
  EXPECT_EQ(ints->type(), (TensorType{DType::kInt64, {2}}));
  EXPECT_THAT(ints->values<int64_t>(), ElementsAre(2, -1));
  EXPECT_EQ(by_out["c_ints"]->attrs.size(), 1u);
  const Tensor* f = by_out["c_float"]->GetTensor("value");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->type(), (TensorType{DType::kFloat32, {}}));
  EXPECT_EQ(f->values<float>()[0], 6.0f);
  EXPECT_THAT(by_out["c_tensor"]->GetTensor("value")->values<float>(), ElementsAre(1, 2));
}

TEST(OnnxImporterTest, InventsUniqueNamesAndKeepsOmittedInputs) {
  auto m = TinyModel();
  auto* g = m.mutable_graph();
  g->mutable_node(1)->set_name("mm");  // duplicate of the MatMul's name
  auto* clip = g->add_node();
  clip->set_name("Relu_1");  // collides with what would be invented for node 1
  clip->set_op_type("Clip");
  clip->add_input("z");
  clip->add_input("");
  clip->add_input("");
  clip->add_output("zc");
  auto graph = Import(m);
  ASSERT_TRUE(graph.ok()) << graph.status();
  ASSERT_EQ(graph->nodes.size(), 3u);
  EXPECT_EQ(graph->nodes[0].name, "mm");
  EXPECT_EQ(graph->nodes[1].name, "Relu_1_1");
  EXPECT_EQ(graph->nodes[2].name, "Relu_1");
  EXPECT_THAT(graph->nodes[2].inputs, ElementsAre("z", "", ""));
}

TEST(OnnxImporterTest, SortsNodesTopologically) {
  auto m = TinyModel();
  m.mutable_graph()->mutable_node()->SwapElements(0, 1);
  auto g = Import(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].op_type, "MatMul");
  EXPECT_EQ(g->nodes[1].op_type, "Relu");
}

TEST(OnnxImporterTest, KeepsFullyKnownValueInfo) {
  auto m = TinyModel();
  SetTensorType(m.mutable_graph()->add_value_info(), "y", onnx::TensorProto::FLOAT, {"1", "2"});
  auto g = Import(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->value_types.at("y"), (TensorType{DType::kFloat32, {1, 2}}));
  auto m2 = TinyModel();
  SetTensorType(m2.mutable_graph()->add_value_info(), "y", onnx::TensorProto::FLOAT, {"N", "2"});
  auto g2 = Import(m2);
  ASSERT_TRUE(g2.ok()) << g2.status();
  EXPECT_EQ(g2->value_types.count("y"), 0u);
}

// ---- Bad input: one clear error each, never a crash. ----

TEST(OnnxImporterTest, RejectsNonOnnxBytes) {
  auto g = ImportOnnxBytes(std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 10), "/tmp");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("is not a valid ONNX model (protobuf parse failed)"));
  auto text = ImportOnnxBytes("just some text, not a model", "/tmp");
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("is not a valid ONNX model"));
}

TEST(OnnxImporterTest, RejectsTruncatedModelFile) {
  fs::path dir = MakeTempDir("truncated");
  std::string bytes = Bytes(TinyModel());
  WriteFile(dir / "half.onnx", bytes.substr(0, bytes.size() / 2));
  auto g = ImportOnnxFile((dir / "half.onnx").string());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("half.onnx' is not a valid ONNX model (protobuf "
                                              "parse failed)"));
  fs::remove_all(dir);
}

TEST(OnnxImporterTest, MissingFileIsNotFound) {
  auto g = ImportOnnxFile("/nonexistent/dir/model.onnx");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(g.status().message(), HasSubstr("/nonexistent/dir/model.onnx"));
}

TEST(OnnxImporterTest, RejectsUnsupportedOpsets) {
  for (int64_t opset : {7, 19}) {
    auto m = TinyModel();
    m.mutable_opset_import(0)->set_version(opset);
    auto g = Import(m);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(g.status().message(), HasSubstr("opset " + std::to_string(opset)));
    EXPECT_THAT(g.status().message(), HasSubstr("supports opsets 11 to 18"));
  }
  auto m = TinyModel();
  m.mutable_opset_import(0)->set_domain("com.example");
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("no opset for the default ONNX domain"));
  auto ai = TinyModel();
  ai.mutable_opset_import(0)->set_domain("ai.onnx");
  ai.mutable_opset_import(0)->set_version(13);
  auto gai = Import(ai);
  ASSERT_TRUE(gai.ok()) << gai.status();
  EXPECT_EQ(gai->opset, 13);
}

TEST(OnnxImporterTest, NonDefaultDomainNodeIsUnimplemented) {
  auto m = TinyModel();
  auto* n = m.mutable_graph()->mutable_node(1);
  n->set_domain("com.microsoft");
  n->set_op_type("FusedGelu");
  n->set_name("gelu0");
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("FusedGelu 'gelu0'"));
  EXPECT_THAT(g.status().message(), HasSubstr("domain 'com.microsoft'"));
}

TEST(OnnxImporterTest, EmptyGraphAndMissingGraph) {
  auto m = TinyModel();
  m.mutable_graph()->clear_node();
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("graph 'tiny' has no nodes"));
  m.clear_graph();
  auto none = Import(m);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("is not a valid ONNX model (it has no graph)"));
}

TEST(OnnxImporterTest, MissingInitializerNamesNodeAndValue) {
  auto m = TinyModel();
  m.mutable_graph()->clear_initializer();
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("MatMul 'mm'"));
  EXPECT_THAT(g.status().message(), HasSubstr("'w'"));
}

TEST(OnnxImporterTest, InitializerWithWrongDataLength) {
  auto m = TinyModel();
  m.mutable_graph()->mutable_initializer(0)->mutable_raw_data()->resize(20);
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("initializer 'w'"));
  EXPECT_THAT(g.status().message(), HasSubstr("24 bytes) but its raw_data holds 20 bytes"));

  auto typed = TinyModel();
  auto* w = typed.mutable_graph()->mutable_initializer(0);
  w->clear_raw_data();
  w->add_float_data(1.0f);
  auto g2 = Import(typed);
  EXPECT_EQ(g2.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g2.status().message(), HasSubstr("initializer 'w'"));
  EXPECT_THAT(g2.status().message(), HasSubstr("float_data holds 1 values"));
}

TEST(OnnxImporterTest, RejectsAbsurdDims) {
  auto m = TinyModel();
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_dims();
  w->add_dims(1000000000000LL);
  w->add_dims(1000000000000LL);
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("initializer 'w'"));
  EXPECT_THAT(g.status().message(), HasSubstr("too large"));
  w->clear_dims();
  w->add_dims(-6);
  auto neg = Import(m);
  EXPECT_EQ(neg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(neg.status().message(), HasSubstr("negative dimension"));
}

TEST(OnnxImporterTest, UnsupportedElementTypeNamesTheValue) {
  auto m = TinyModel();
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto::FLOAT16);
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("graph input 'x' has element type FLOAT16"));
}

TEST(OnnxImporterTest, InputTypeProblemsNameTheInput) {
  auto m = TinyModel();
  m.mutable_graph()->mutable_input(0)->clear_type();
  auto untyped = Import(m);
  EXPECT_EQ(untyped.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(untyped.status().message(), HasSubstr("graph input 'x' has no type"));

  m = TinyModel();
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_sequence_type();
  auto seq = Import(m);
  EXPECT_EQ(seq.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(seq.status().message(), HasSubstr("graph input 'x' is not a tensor"));

  m = TinyModel();
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  auto no_shape = Import(m);
  EXPECT_EQ(no_shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_shape.status().message(), HasSubstr("has no declared shape; pin it"));
  auto pinned = Import(m, {.input_shapes = {{"x", {2, 3}}}});
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ(pinned->inputs[0].type.shape, (Shape{2, 3}));
}

onnx::ModelProto ExternalModel(const std::string& location, int64_t offset) {
  auto m = TinyModel();
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_raw_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* e = w->add_external_data();
  e->set_key("location");
  e->set_value(location);
  e = w->add_external_data();
  e->set_key("offset");
  e->set_value(std::to_string(offset));
  e = w->add_external_data();
  e->set_key("length");
  e->set_value("24");
  return m;
}

TEST(OnnxImporterTest, ReadsExternalDataRelativeToModel) {
  fs::path dir = MakeTempDir("external");
  fs::create_directories(dir / "weights");
  std::vector<float> wv = {6, 5, 4, 3, 2, 1};
  std::string data(8, 'x');  // 8 bytes of padding before the tensor
  data.append(reinterpret_cast<const char*>(wv.data()), 24);
  WriteFile(dir / "weights" / "w.bin", data);
  WriteFile(dir / "model.onnx", Bytes(ExternalModel("weights/w.bin", 8)));
  auto g = ImportOnnxFile((dir / "model.onnx").string());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->FindInitializer("w")->values<float>(), ElementsAre(6, 5, 4, 3, 2, 1));

  // Reading past the end of the file.
  WriteFile(dir / "model.onnx", Bytes(ExternalModel("weights/w.bin", 16)));
  auto short_read = ImportOnnxFile((dir / "model.onnx").string());
  EXPECT_EQ(short_read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_read.status().message(), HasSubstr("initializer 'w'"));
  EXPECT_THAT(short_read.status().message(), HasSubstr("short read"));
  EXPECT_THAT(short_read.status().message(), HasSubstr("w.bin"));
  fs::remove_all(dir);
}

TEST(OnnxImporterTest, MissingExternalDataFile) {
  fs::path dir = MakeTempDir("external_missing");
  WriteFile(dir / "model.onnx", Bytes(ExternalModel("gone.bin", 0)));
  auto g = ImportOnnxFile((dir / "model.onnx").string());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(g.status().message(), HasSubstr("initializer 'w'"));
  EXPECT_THAT(g.status().message(), HasSubstr("gone.bin"));
  fs::remove_all(dir);
}

TEST(OnnxImporterTest, ExternalDataMayNotLeaveModelFolder) {
  auto abs = Import(ExternalModel("/etc/passwd", 0));
  EXPECT_EQ(abs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(abs.status().message(), HasSubstr("absolute external data location '/etc/passwd'"));
  auto up = Import(ExternalModel("sub/../../secret.bin", 0));
  EXPECT_EQ(up.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(up.status().message(), HasSubstr("leaves the model's folder"));
}

// ---- Round trip through the exporter. ----

TEST(OnnxImporterTest, ExportedModelReimportsIdentically) {
  auto m = TinyModel();
  m.mutable_graph()->mutable_node(1)->add_attribute()->set_name("alpha");
  m.mutable_graph()->mutable_node(1)->mutable_attribute(0)->set_type(onnx::AttributeProto::FLOAT);
  m.mutable_graph()->mutable_node(1)->mutable_attribute(0)->set_f(0.25f);
  auto g = Import(m);
  ASSERT_TRUE(g.ok()) << g.status();
  auto bytes = ExportOnnxBytes(*g);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto again = ImportOnnxBytes(*bytes, "/nonexistent");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->inputs[0].type, g->inputs[0].type);
  ASSERT_EQ(again->nodes.size(), g->nodes.size());
  EXPECT_EQ(again->nodes[1].name, "Relu_1");
  EXPECT_EQ(again->nodes[1].GetFloat("alpha", 0), 0.25f);
}

// ---- The reference models in /work/shared/models. ----

std::map<std::string, int64_t> CountOps(const Graph& g) {
  std::map<std::string, int64_t> counts;
  for (const auto& n : g.nodes) ++counts[n.op_type];
  return counts;
}

class ReferenceModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceModelTest, ImportsWithManifestOpCounts) {
  const std::string name = GetParam();
  std::string dir = UnpackSharedModel(name);
  if (dir.empty()) GTEST_SKIP() << "LOOM_SHARED_DIR/models/" << name << ".tar.xz not available";
  auto g = ImportOnnxFile(dir + "/" + name + ".onnx");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->opset, 17);
  ASSERT_EQ(g->inputs.size(), 1u);
  EXPECT_EQ(g->inputs[0].type, (TensorType{DType::kFloat32, {1, 3, 224, 224}}));
  ASSERT_EQ(g->outputs.size(), 1u);

  std::ifstream manifest_file(std::string(std::getenv("LOOM_SHARED_DIR")) +
                              "/models/MANIFEST.json");
  ASSERT_TRUE(manifest_file.good());
  nlohmann::json manifest = nlohmann::json::parse(manifest_file);
  std::map<std::string, int64_t> expected =
      manifest.at(name).at("ops").get<std::map<std::string, int64_t>>();
  EXPECT_EQ(CountOps(*g), expected);
  EXPECT_EQ(manifest.at(name).at("opset").get<int64_t>(), g->opset);

  auto input = ReadNpy(dir + "/" + name + ".input.npy");
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->type(), (TensorType{DType::kFloat32, {1, 3, 224, 224}}));
  auto output = ReadNpy(dir + "/" + name + ".ort_output.npy");
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->type(), (TensorType{DType::kFloat32, {1, 1000}}));
}

INSTANTIATE_TEST_SUITE_P(SharedModels, ReferenceModelTest,
                         ::testing::Values("resnet18", "mobilenet_v2", "squeezenet1_1"));

TEST(OnnxImporterTest, Resnet18OpCountsAndExportRoundTrip) {
  std::string dir = UnpackSharedModel("resnet18");
  if (dir.empty()) GTEST_SKIP() << "LOOM_SHARED_DIR/models/resnet18.tar.xz not available";
  auto g = ImportOnnxFile(dir + "/resnet18.onnx");
  ASSERT_TRUE(g.ok()) << g.status();
  // Hard-coded from MANIFEST.json, so a manifest edit cannot hide an importer regression.
  std::map<std::string, int64_t> expected = {
      {"Conv", 20},   {"Relu", 17}, {"MaxPool", 1}, {"Add", 8}, {"GlobalAveragePool", 1},
      {"Flatten", 1}, {"Gemm", 1}};
  EXPECT_EQ(CountOps(*g), expected);
  EXPECT_GT(g->NumParameters(), 11'000'000);

  auto bytes = ExportOnnxBytes(*g);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto again = ImportOnnxBytes(*bytes, dir);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->nodes.size(), g->nodes.size());
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    EXPECT_EQ(again->nodes[i].name, g->nodes[i].name);
    EXPECT_EQ(again->nodes[i].inputs, g->nodes[i].inputs);
    EXPECT_EQ(again->nodes[i].GetInts("pads"), g->nodes[i].GetInts("pads"));
  }
  ASSERT_EQ(again->initializers.size(), g->initializers.size());
  for (const auto& [name, t] : g->initializers) {
    const Tensor* u = again->FindInitializer(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(u->type(), t.type()) << name;
    EXPECT_EQ(std::memcmp(u->raw_data(), t.raw_data(), t.num_bytes()), 0) << name;
  }
}

}  // namespace
}  // namespace loom::graph
