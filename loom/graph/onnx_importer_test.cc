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

// Every element type through the typed field ONNX assigns it, and through raw_data.
TEST(OnnxImporterTest, ReadsEveryElementTypeFromTypedFieldsAndRawData) {
  auto m = TinyModel();
  auto* g = m.mutable_graph();
  auto add = [&](const std::string& name, int32_t type) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    t->add_dims(2);
    return t;
  };
  auto* f64 = add("f64", onnx::TensorProto::DOUBLE);
  f64->add_double_data(-0.125);
  f64->add_double_data(1e300);
  auto* u64 = add("u64", onnx::TensorProto::UINT64);
  u64->add_uint64_data(uint64_t{1} << 63);
  u64->add_uint64_data(7);
  auto* u32 = add("u32", onnx::TensorProto::UINT32);
  u32->add_uint64_data(4000000000u);
  u32->add_uint64_data(1);
  auto* i16 = add("i16", onnx::TensorProto::INT16);
  i16->add_int32_data(-32768);
  i16->add_int32_data(32767);
  auto* u16 = add("u16", onnx::TensorProto::UINT16);
  u16->add_int32_data(65535);
  u16->add_int32_data(0);
  // float16 and bfloat16 travel in int32_data as their bit patterns.
  auto* f16 = add("f16", onnx::TensorProto::FLOAT16);
  f16->add_int32_data(FloatToHalf(1.5f));
  f16->add_int32_data(FloatToHalf(-65504.0f));
  auto* bf16 = add("bf16", onnx::TensorProto::BFLOAT16);
  bf16->add_int32_data(FloatToBFloat16(3.0f));
  bf16->add_int32_data(FloatToBFloat16(-0.5f));
  // raw_data: little-endian bytes of each type.
  std::vector<uint16_t> half_bits = {FloatToHalf(0.25f), FloatToHalf(-2.0f)};
  add("f16_raw", onnx::TensorProto::FLOAT16)
      ->set_raw_data(reinterpret_cast<const char*>(half_bits.data()), 4);
  std::vector<uint64_t> u64v = {3, ~uint64_t{0}};
  add("u64_raw", onnx::TensorProto::UINT64)
      ->set_raw_data(reinterpret_cast<const char*>(u64v.data()), 16);
  std::vector<double> f64v = {2.5, -1e-300};
  add("f64_raw", onnx::TensorProto::DOUBLE)
      ->set_raw_data(reinterpret_cast<const char*>(f64v.data()), 16);

  auto graph = Import(m);
  ASSERT_TRUE(graph.ok()) << graph.status();
  auto find = [&](const std::string& name) { return *graph->FindInitializer(name); };
  EXPECT_EQ(find("f64").dtype(), DType::kFloat64);
  EXPECT_THAT(find("f64").values<double>(), ElementsAre(-0.125, 1e300));
  EXPECT_THAT(find("u64").values<uint64_t>(), ElementsAre(uint64_t{1} << 63, 7u));
  EXPECT_THAT(find("u32").values<uint32_t>(), ElementsAre(4000000000u, 1u));
  EXPECT_THAT(find("i16").values<int16_t>(), ElementsAre(-32768, 32767));
  EXPECT_THAT(find("u16").values<uint16_t>(), ElementsAre(65535, 0));
  EXPECT_EQ(find("f16").dtype(), DType::kFloat16);
  EXPECT_EQ(find("f16").DoubleAt(0), 1.5);
  EXPECT_EQ(find("f16").DoubleAt(1), -65504.0);
  EXPECT_EQ(find("bf16").dtype(), DType::kBFloat16);
  EXPECT_EQ(find("bf16").DoubleAt(0), 3.0);
  EXPECT_EQ(find("bf16").DoubleAt(1), -0.5);
  EXPECT_EQ(find("f16_raw").DoubleAt(0), 0.25);
  EXPECT_EQ(find("f16_raw").DoubleAt(1), -2.0);
  EXPECT_THAT(find("u64_raw").values<uint64_t>(), ElementsAre(3u, ~uint64_t{0}));
  EXPECT_THAT(find("f64_raw").values<double>(), ElementsAre(2.5, -1e-300));
}

TEST(OnnxImporterTest, TypedFieldCountMustMatchShape) {
  auto m = TinyModel();
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name("u64");
  t->set_data_type(onnx::TensorProto::UINT64);
  t->add_dims(3);
  t->add_uint64_data(1);
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(),
              HasSubstr("initializer 'u64' declares shape [3] (3 elements) but its uint64_data "
                        "holds 1 values"));
}

// Element types outside Loom's set are refused with one line naming the type and the value.
TEST(OnnxImporterTest, RefusesElementTypesOutsideTheSet) {
  const std::vector<std::pair<int32_t, std::string>> types = {
      {onnx::TensorProto::STRING, "STRING"},
      {onnx::TensorProto::COMPLEX64, "COMPLEX64"},
      {onnx::TensorProto::COMPLEX128, "COMPLEX128"},
      {17, "FLOAT8E4M3FN"},
      {18, "FLOAT8E4M3FNUZ"},
      {19, "FLOAT8E5M2"},
      {20, "FLOAT8E5M2FNUZ"},
      {21, "UINT4"},
      {22, "INT4"},
      {23, "FLOAT4E2M1"},
      {24, "FLOAT8E8M0"},
      {25, "UINT2"},
      {26, "INT2"},
      {99, "unknown type #99"}};
  for (const auto& [type, name] : types) {
    auto m = TinyModel();
    auto* t = m.mutable_graph()->add_initializer();
    t->set_name("odd");
    t->set_data_type(type);
    t->add_dims(1);
    t->set_raw_data(std::string(1, '\0'));
    auto g = Import(m);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(g.status().message(), HasSubstr("initializer 'odd' has element type " + name +
                                                ", which Loom does not "
                                                "support"));

    auto in = TinyModel();
    in.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
        type);
    auto gi = Import(in);
    EXPECT_THAT(gi.status().message(), HasSubstr("graph output 'z' has element type " + name));
  }
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
  for (int64_t opset : {0, 29}) {
    auto m = TinyModel();
    m.mutable_opset_import(0)->set_version(opset);
    auto g = Import(m);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(g.status().message(), HasSubstr("opset " + std::to_string(opset)));
    EXPECT_THAT(g.status().message(), HasSubstr("supports opsets 1 to 28"));
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
  for (int64_t opset : {19, 28}) {
    auto newer = TinyModel();
    newer.mutable_opset_import(0)->set_version(opset);
    auto gn = Import(newer);
    ASSERT_TRUE(gn.ok()) << gn.status();
    EXPECT_EQ(gn->opset, opset);
  }
}

// Opsets below 11 are upgraded with libonnx's version converter.
TEST(OnnxImporterTest, UpgradesOldOpsets) {
  auto m = TinyModel();
  m.mutable_opset_import(0)->set_version(7);
  auto g = Import(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->opset, 11);
  ASSERT_EQ(g->nodes.size(), 2u);
  EXPECT_EQ(g->nodes[0].op_type, "MatMul");
  EXPECT_EQ(g->nodes[1].op_type, "Relu");
  EXPECT_THAT(g->FindInitializer("w")->values<float>(), ElementsAre(1, 2, 3, 4, 5, 6));

  // Upsample (deprecated in opset 10) becomes Resize.
  auto up = TinyModel();
  up.mutable_opset_import(0)->set_version(9);
  auto* relu = up.mutable_graph()->mutable_node(1);
  relu->set_op_type("Upsample");
  relu->add_input("scales");
  auto* scales = up.mutable_graph()->add_initializer();
  scales->set_name("scales");
  scales->set_data_type(onnx::TensorProto::FLOAT);
  scales->add_dims(2);
  scales->add_float_data(1);
  scales->add_float_data(2);
  auto gu = Import(up);
  ASSERT_TRUE(gu.ok()) << gu.status();
  EXPECT_EQ(gu->opset, 11);
  EXPECT_EQ(gu->nodes.back().op_type, "Resize");
}

TEST(OnnxImporterTest, FailedUpgradeIsOneLineNamingTheNode) {
  auto m = TinyModel();
  m.mutable_opset_import(0)->set_version(8);
  m.mutable_graph()->mutable_node(0)->set_op_type("FooBar");
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(),
              HasSubstr("model uses ONNX opset 8, which Loom upgrades to opset 11, but node 'mm' "
                        "has operator 'FooBar', which ONNX opset 8 does not define"));
  // A malformed old model fails with the importer's own message before the converter runs.
  auto bad = TinyModel();
  bad.mutable_opset_import(0)->set_version(8);
  bad.mutable_graph()->mutable_node(0)->set_input(1, "nowhere");
  auto gb = Import(bad);
  EXPECT_EQ(gb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(gb.status().message(), HasSubstr("nowhere"));
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
      onnx::TensorProto::COMPLEX64);
  auto g = Import(m);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("graph input 'x' has element type COMPLEX64"));
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

TEST(OnnxImporterTest, ReadsExternalDataOfEveryWidth) {
  fs::path dir = MakeTempDir("external_types");
  auto m = TinyModel();
  std::string data;
  auto add = [&](const std::string& name, int32_t type, const std::string& bytes) {
    auto* t = m.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    t->add_dims(2);
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* e = t->add_external_data();
    e->set_key("location");
    e->set_value("data.bin");
    e = t->add_external_data();
    e->set_key("offset");
    e->set_value(std::to_string(data.size()));
    data += bytes;
  };
  std::vector<uint16_t> half = {FloatToHalf(-3.0f), FloatToHalf(0.5f)};
  add("f16", onnx::TensorProto::FLOAT16,
      std::string(reinterpret_cast<const char*>(half.data()), 4));
  std::vector<uint64_t> u64 = {1, uint64_t{1} << 60};
  add("u64", onnx::TensorProto::UINT64, std::string(reinterpret_cast<const char*>(u64.data()), 16));
  add("b", onnx::TensorProto::BOOL, std::string("\x01\x00", 2));
  WriteFile(dir / "data.bin", data);
  WriteFile(dir / "model.onnx", Bytes(m));
  auto g = ImportOnnxFile((dir / "model.onnx").string());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->FindInitializer("f16")->DoubleAt(0), -3.0);
  EXPECT_EQ(g->FindInitializer("f16")->DoubleAt(1), 0.5);
  EXPECT_THAT(g->FindInitializer("u64")->values<uint64_t>(), ElementsAre(1u, uint64_t{1} << 60));
  EXPECT_THAT(g->FindInitializer("b")->values<uint8_t>(), ElementsAre(1, 0));
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
