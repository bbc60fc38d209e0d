#include "loom/graph/onnx_exporter.h"

#include <onnx/onnx_pb.h>

#include <fstream>
#include <set>
#include <variant>

#include "absl/strings/str_cat.h"
#include "loom/base/status_macros.h"
#include "loom/graph/onnx_importer.h"
#include "loom/graph/onnx_types.h"

namespace loom::graph {
namespace {

constexpr int64_t kIrVersion = 8;

absl::Status TensorToProto(const Tensor& t, const std::string& name, const std::string& what,
                           onnx::TensorProto* proto) {
  if (!t.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is an undefined tensor"));
  }
  proto->set_name(name);
  proto->set_data_type(OnnxTypeOf(t.dtype()));
  for (int64_t d : t.shape()) proto->add_dims(d);
  proto->set_raw_data(static_cast<const char*>(t.raw_data()), t.num_bytes());
  return absl::OkStatus();
}

// Writes `type` into `info`; -1 dimensions become symbolic ("<value>_dim<i>").
void SetValueInfo(const std::string& name, const TensorType& type, onnx::ValueInfoProto* info) {
  info->set_name(name);
  if (type.dtype == DType::kUndefined) return;
  auto* tt = info->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(OnnxTypeOf(type.dtype));
  auto* shape = tt->mutable_shape();
  for (size_t i = 0; i < type.shape.size(); ++i) {
    auto* dim = shape->add_dim();
    if (type.shape[i] >= 0) {
      dim->set_dim_value(type.shape[i]);
    } else {
      dim->set_dim_param(absl::StrCat(name, "_dim", i));
    }
  }
}

absl::Status AttrToProto(const std::string& key, const AttrValue& value, const Node& node,
                         onnx::AttributeProto* attr) {
  attr->set_name(key);
  if (const auto* i = std::get_if<int64_t>(&value)) {
    attr->set_type(onnx::AttributeProto::INT);
    attr->set_i(*i);
  } else if (const auto* f = std::get_if<float>(&value)) {
    attr->set_type(onnx::AttributeProto::FLOAT);
    attr->set_f(*f);
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    attr->set_type(onnx::AttributeProto::STRING);
    attr->set_s(*s);
  } else if (const auto* is = std::get_if<std::vector<int64_t>>(&value)) {
    attr->set_type(onnx::AttributeProto::INTS);
    for (int64_t v : *is) attr->add_ints(v);
  } else if (const auto* fs = std::get_if<std::vector<float>>(&value)) {
    attr->set_type(onnx::AttributeProto::FLOATS);
    for (float v : *fs) attr->add_floats(v);
  } else if (const auto* ss = std::get_if<std::vector<std::string>>(&value)) {
    attr->set_type(onnx::AttributeProto::STRINGS);
    for (const auto& v : *ss) attr->add_strings(v);
  } else {
    attr->set_type(onnx::AttributeProto::TENSOR);
    LOOM_RETURN_IF_ERROR(TensorToProto(std::get<Tensor>(value), "",
                                       absl::StrCat("attribute '", key, "' of ", node.Describe()),
                                       attr->mutable_t()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ExportOnnxBytes(const Graph& graph) {
  LOOM_RETURN_IF_ERROR(graph.Validate());
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name("loom");
  model.set_producer_version("0.1");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(graph.opset);

  onnx::GraphProto* gp = model.mutable_graph();
  gp->set_name(graph.name);
  std::set<std::string> declared;
  for (const auto& in : graph.inputs) {
    SetValueInfo(in.name, in.type, gp->add_input());
    declared.insert(in.name);
  }
  for (const auto& out : graph.outputs) {
    // Prefer the inferred type: a declared output type may be partial.
    auto it = graph.value_types.find(out.name);
    SetValueInfo(out.name, it != graph.value_types.end() ? it->second : out.type, gp->add_output());
    declared.insert(out.name);
  }
  for (const auto& [name, tensor] : graph.initializers) {
    LOOM_RETURN_IF_ERROR(TensorToProto(tensor, name, absl::StrCat("initializer '", name, "'"),
                                       gp->add_initializer()));
    declared.insert(name);
  }
  for (const auto& node : graph.nodes) {
    onnx::NodeProto* np = gp->add_node();
    np->set_name(node.name);
    np->set_op_type(node.op_type);
    for (const auto& in : node.inputs) np->add_input(in);
    for (const auto& out : node.outputs) np->add_output(out);
    for (const auto& [key, value] : node.attrs) {
      LOOM_RETURN_IF_ERROR(AttrToProto(key, value, node, np->add_attribute()));
    }
  }
  for (const auto& [name, type] : graph.value_types) {
    if (!declared.count(name)) SetValueInfo(name, type, gp->add_value_info());
  }

  const size_t size = model.ByteSizeLong();
  if (size > kMaxOnnxModelBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "graph '", graph.name, "' serializes to ", size,
        " bytes, above ONNX's 2 GiB single-file limit (external data export is not supported)"));
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("serializing graph '", graph.name, "' failed"));
  }
  return bytes;
}

absl::Status ExportOnnxFile(const Graph& graph, const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string bytes, ExportOnnxBytes(graph));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing '", path, "' failed"));
  return absl::OkStatus();
}

}  // namespace loom::graph
