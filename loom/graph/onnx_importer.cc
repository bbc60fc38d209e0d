#include "loom/graph/onnx_importer.h"

#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/version_converter/convert.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/graph/onnx_types.h"
#include "loom/graph/op_versions.h"

namespace loom::graph {
namespace {

namespace fs = std::filesystem;

// Byte size of a tensor of `shape`, with the same limits as Tensor::Create, computed without
// allocating so that a lying header cannot make us allocate before the data is checked.
absl::StatusOr<size_t> CheckedByteSize(DType dtype, const Shape& shape, const std::string& what) {
  size_t elems = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has a negative dimension in shape ", ShapeToString(shape)));
    }
    if (d != 0 && elems > Tensor::kMaxBytes / static_cast<size_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeToString(shape),
                                                     ", which is too large (limit ",
                                                     Tensor::kMaxBytes >> 30, " GiB)"));
    }
    elems *= static_cast<size_t>(d);
  }
  if (elems > Tensor::kMaxBytes / DTypeSize(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeToString(shape),
                                                   ", which is too large (limit ",
                                                   Tensor::kMaxBytes >> 30, " GiB)"));
  }
  return elems * DTypeSize(dtype);
}

// Checks an external-data location and returns the file it names inside `base_dir`.
absl::StatusOr<fs::path> ResolveExternalPath(const std::string& location,
                                             const std::string& base_dir, const std::string& what) {
  if (location.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " uses external data but gives no 'location'"));
  }
  if (location.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has an external data location containing a NUL byte"));
  }
  fs::path rel(location);
  if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has an absolute external data location '", location,
                     "'; locations must be relative to the model's folder"));
  }
  for (const auto& part : rel) {
    if (part == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " has external data location '", location, "', which leaves the model's folder"));
    }
  }
  return fs::path(base_dir) / rel;
}

absl::Status ReadExternalData(const onnx::TensorProto& proto, size_t expected_bytes,
                              const std::string& base_dir, const std::string& what, void* dst) {
  std::string location;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
  for (const auto& entry : proto.external_data()) {
    if (entry.key() == "location") {
      location = entry.value();
    } else if (entry.key() == "offset") {
      if (!absl::SimpleAtoi(entry.value(), &offset)) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " has an invalid external data offset '", entry.value(), "'"));
      }
    } else if (entry.key() == "length") {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(entry.value(), &n)) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " has an invalid external data length '", entry.value(), "'"));
      }
      length = n;
    }
    // "checksum" and unknown keys are informational.
  }
  LOOM_ASSIGN_OR_RETURN(fs::path file, ResolveExternalPath(location, base_dir, what));
  if (length.has_value() && *length != expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " declares ", expected_bytes,
                     " bytes of data but its external data length is ", *length));
  }
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    return absl::NotFoundError(absl::StrCat(what, ": external data file '", file.string(),
                                            "' does not exist or is not a regular file"));
  }
  uint64_t file_size = fs::file_size(file, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat(what, ": cannot read external data file '",
                                            file.string(), "': ", ec.message()));
  }
  if (offset > file_size || file_size - offset < expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": short read from external data file '", file.string(), "' (",
                     file_size, " bytes; need ", expected_bytes, " bytes at offset ", offset, ")"));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(what, ": cannot open external data file '", file.string(), "'"));
  }
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(expected_bytes));
  if (static_cast<size_t>(in.gcount()) != expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": short read from external data file '", file.string(), "'"));
  }
  return absl::OkStatus();
}

template <typename Src>
absl::Status CheckFieldCount(const Src& field, size_t elems, const char* field_name,
                             const Shape& shape, const std::string& what) {
  if (static_cast<size_t>(field.size()) != elems) {
    return absl::InvalidArgumentError(absl::StrCat(what, " declares shape ", ShapeToString(shape),
                                                   " (", elems, " elements) but its ", field_name,
                                                   " holds ", field.size(), " values"));
  }
  return absl::OkStatus();
}

// Converts a TensorProto (initializer or tensor attribute). `what` names it in errors.
absl::StatusOr<Tensor> TensorFromProto(const onnx::TensorProto& proto, const std::string& base_dir,
                                       const std::string& what) {
  if (proto.has_segment()) {
    return absl::UnimplementedError(absl::StrCat(what, " is a segmented tensor (not supported)"));
  }
  LOOM_ASSIGN_OR_RETURN(DType dtype, SupportedDType(proto.data_type(), what));
  Shape shape(proto.dims().begin(), proto.dims().end());
  LOOM_ASSIGN_OR_RETURN(size_t bytes, CheckedByteSize(dtype, shape, what));
  const size_t elems = bytes / DTypeSize(dtype);

  const bool external =
      proto.has_data_location() && proto.data_location() == onnx::TensorProto::EXTERNAL;
  // Check the data's size before allocating: the dims are untrusted.
  // Typed fields, per ONNX: float_data (float), double_data (double), int64_data (int64),
  // uint64_data (uint32, uint64), int32_data (every other type; float16 and bfloat16 as bits).
  enum class Source {
    kRaw,
    kFloat,
    kDouble,
    kInt64,
    kUint64,
    kInt32,
    kExternal,
    kNone
  } source = Source::kNone;
  if (external) {
    source = Source::kExternal;
  } else if (proto.has_raw_data()) {
    if (proto.raw_data().size() != bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " declares shape ", ShapeToString(shape), " (", elems, " ",
                       DTypeName(dtype), " elements, ", bytes, " bytes) but its raw_data holds ",
                       proto.raw_data().size(), " bytes"));
    }
    source = Source::kRaw;
  } else {
    switch (dtype) {
      case DType::kFloat32:
        LOOM_RETURN_IF_ERROR(CheckFieldCount(proto.float_data(), elems, "float_data", shape, what));
        source = Source::kFloat;
        break;
      case DType::kInt64:
        LOOM_RETURN_IF_ERROR(CheckFieldCount(proto.int64_data(), elems, "int64_data", shape, what));
        source = Source::kInt64;
        break;
      case DType::kFloat64:
        LOOM_RETURN_IF_ERROR(
            CheckFieldCount(proto.double_data(), elems, "double_data", shape, what));
        source = Source::kDouble;
        break;
      case DType::kUint32:
      case DType::kUint64:
        LOOM_RETURN_IF_ERROR(
            CheckFieldCount(proto.uint64_data(), elems, "uint64_data", shape, what));
        source = Source::kUint64;
        break;
      default:
        LOOM_RETURN_IF_ERROR(CheckFieldCount(proto.int32_data(), elems, "int32_data", shape, what));
        source = Source::kInt32;
        break;
    }
  }

  auto created = Tensor::Create(dtype, shape);
  if (!created.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", created.status().message()));
  }
  Tensor t = *std::move(created);
  switch (source) {
    case Source::kExternal:
      LOOM_RETURN_IF_ERROR(ReadExternalData(proto, bytes, base_dir, what, t.raw_data()));
      break;
    case Source::kRaw:
      if (bytes > 0) std::memcpy(t.raw_data(), proto.raw_data().data(), bytes);
      break;
    case Source::kFloat:
      if (bytes > 0) std::memcpy(t.raw_data(), proto.float_data().data(), bytes);
      break;
    case Source::kInt64:
      if (bytes > 0) std::memcpy(t.raw_data(), proto.int64_data().data(), bytes);
      break;
    case Source::kDouble:
      if (bytes > 0) std::memcpy(t.raw_data(), proto.double_data().data(), bytes);
      break;
    case Source::kUint64:
      for (size_t i = 0; i < elems; ++i) {
        const uint64_t v = proto.uint64_data(static_cast<int>(i));
        if (dtype == DType::kUint64) {
          t.data<uint64_t>()[i] = v;
        } else {
          t.data<uint32_t>()[i] = static_cast<uint32_t>(v);
        }
      }
      break;
    case Source::kInt32: {
      const auto& src = proto.int32_data();
      for (size_t i = 0; i < elems; ++i) {
        const int32_t v = src.Get(static_cast<int>(i));
        switch (dtype) {
          case DType::kInt32:
            t.data<int32_t>()[i] = v;
            break;
          case DType::kBool:
            t.data<uint8_t>()[i] = v != 0;
            break;
          case DType::kUint8:
            t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
            break;
          case DType::kInt8:
            t.data<int8_t>()[i] = static_cast<int8_t>(v);
            break;
          case DType::kInt16:
            t.data<int16_t>()[i] = static_cast<int16_t>(v);
            break;
          case DType::kUint16:
          case DType::kFloat16:
          case DType::kBFloat16:
            t.data<uint16_t>()[i] = static_cast<uint16_t>(v);
            break;
          default:
            break;  // the other types have typed fields of their own
        }
      }
      break;
    }
    case Source::kNone:
      break;
  }
  return t;
}

// Type of a graph input or output. `pinned` (may be null) overrides dynamic dimensions;
// `require_shape` makes a missing shape an error (graph inputs must have a rank).
absl::StatusOr<TensorType> TypeFromValueInfo(const onnx::ValueInfoProto& info, const Shape* pinned,
                                             bool require_shape, const std::string& what) {
  if (!info.has_type()) {
    if (!require_shape) return TensorType{};  // outputs may leave their type to inference
    return absl::InvalidArgumentError(absl::StrCat(what, " has no type"));
  }
  if (!info.type().has_tensor_type()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " is not a tensor (sequence, map, sparse and optional values are not supported)"));
  }
  const auto& tt = info.type().tensor_type();
  TensorType type;
  LOOM_ASSIGN_OR_RETURN(type.dtype, SupportedDType(tt.elem_type(), what));
  if (!tt.has_shape()) {
    if (pinned != nullptr) {
      type.shape = *pinned;
    } else if (require_shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has no declared shape; pin it with ImportOptions::input_shapes"));
    }
    return type;
  }
  for (const auto& dim : tt.shape().dim()) {
    type.shape.push_back(dim.has_dim_value() && dim.dim_value() >= 0 ? dim.dim_value() : -1);
  }
  if (pinned != nullptr) {
    if (pinned->size() != type.shape.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ImportOptions pins ", what, " to ", ShapeToString(*pinned), " (rank ", pinned->size(),
          ") but the model declares rank ", type.shape.size(), " ", ShapeToString(type.shape)));
    }
    for (size_t i = 0; i < pinned->size(); ++i) {
      const int64_t p = (*pinned)[i];
      if (p < 0) {
        return absl::InvalidArgumentError(absl::StrCat("ImportOptions pins ", what, " to ",
                                                       ShapeToString(*pinned),
                                                       ", which has a negative dimension"));
      }
      if (type.shape[i] >= 0 && type.shape[i] != p) {
        return absl::InvalidArgumentError(
            absl::StrCat("ImportOptions pins ", what, " to ", ShapeToString(*pinned),
                         " but the model fixes dim ", i, " to ", type.shape[i]));
      }
      type.shape[i] = p;
    }
  }
  return type;
}

// Converts one attribute. Constant-node normalization happens in the caller.
absl::StatusOr<AttrValue> ReadAttribute(const onnx::AttributeProto& attr, const std::string& node,
                                        const std::string& base_dir) {
  const std::string what = absl::StrCat("attribute '", attr.name(), "' of ", node);
  if (attr.has_ref_attr_name()) {
    return absl::UnimplementedError(
        absl::StrCat(what, " refers to a function attribute (functions are not supported)"));
  }
  auto type = attr.type();
  if (type == onnx::AttributeProto::UNDEFINED) {
    // Models before IR version 2 left the type out; infer it from the populated field.
    if (attr.has_f()) {
      type = onnx::AttributeProto::FLOAT;
    } else if (attr.has_i()) {
      type = onnx::AttributeProto::INT;
    } else if (attr.has_s()) {
      type = onnx::AttributeProto::STRING;
    } else if (attr.has_t()) {
      type = onnx::AttributeProto::TENSOR;
    } else if (attr.has_g()) {
      type = onnx::AttributeProto::GRAPH;
    } else if (attr.floats_size() > 0) {
      type = onnx::AttributeProto::FLOATS;
    } else if (attr.ints_size() > 0) {
      type = onnx::AttributeProto::INTS;
    } else if (attr.strings_size() > 0) {
      type = onnx::AttributeProto::STRINGS;
    } else if (attr.graphs_size() > 0) {
      type = onnx::AttributeProto::GRAPHS;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(what, " has no type and no value"));
    }
  }
  switch (type) {
    case onnx::AttributeProto::INT:
      return AttrValue(static_cast<int64_t>(attr.i()));
    case onnx::AttributeProto::FLOAT:
      return AttrValue(attr.f());
    case onnx::AttributeProto::STRING:
      return AttrValue(attr.s());
    case onnx::AttributeProto::INTS:
      return AttrValue(std::vector<int64_t>(attr.ints().begin(), attr.ints().end()));
    case onnx::AttributeProto::FLOATS:
      return AttrValue(std::vector<float>(attr.floats().begin(), attr.floats().end()));
    case onnx::AttributeProto::STRINGS:
      return AttrValue(std::vector<std::string>(attr.strings().begin(), attr.strings().end()));
    case onnx::AttributeProto::TENSOR: {
      LOOM_ASSIGN_OR_RETURN(Tensor t, TensorFromProto(attr.t(), base_dir, what));
      return AttrValue(std::move(t));
    }
    case onnx::AttributeProto::GRAPH:
    case onnx::AttributeProto::GRAPHS:
      return absl::UnimplementedError(
          absl::StrCat(what, " is a subgraph; control flow (If, Loop, Scan) is not supported"));
    default:
      return absl::UnimplementedError(absl::StrCat(what, " has kind ",
                                                   onnx::AttributeProto_AttributeType_Name(type),
                                                   ", which Loom does not support"));
  }
}

// Constant nodes may give their value in several attributes; Loom always uses a Tensor "value".
absl::Status NormalizeConstant(Node& node) {
  if (node.attrs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        node.Describe(), " must have exactly one value attribute, has ", node.attrs.size()));
  }
  auto [key, value] = *node.attrs.begin();
  Tensor t;
  if (key == "value") {
    if (!std::holds_alternative<Tensor>(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(node.Describe(), ": attribute 'value' is not a tensor"));
    }
    return absl::OkStatus();
  } else if (key == "value_float" && std::holds_alternative<float>(value)) {
    t = Tensor::ScalarFloat(std::get<float>(value));
  } else if (key == "value_int" && std::holds_alternative<int64_t>(value)) {
    t = Tensor::ScalarInt64(std::get<int64_t>(value));
  } else if (key == "value_floats" && std::holds_alternative<std::vector<float>>(value)) {
    const auto& v = std::get<std::vector<float>>(value);
    t = Tensor::FromFloats({static_cast<int64_t>(v.size())}, v);
  } else if (key == "value_ints" && std::holds_alternative<std::vector<int64_t>>(value)) {
    const auto& v = std::get<std::vector<int64_t>>(value);
    t = Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v);
  } else if (key == "value_string" || key == "value_strings" || key == "sparse_value") {
    return absl::UnimplementedError(
        absl::StrCat(node.Describe(), ": constant attribute '", key, "' is not supported"));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(node.Describe(), " has invalid value attribute '", key, "'"));
  }
  node.attrs.clear();
  node.attrs.emplace("value", std::move(t));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ReadOpset(const onnx::ModelProto& model) {
  std::optional<int64_t> opset;
  for (const auto& entry : model.opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") {
      if (opset.has_value() && *opset != entry.version()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model imports the default ONNX domain twice, with opsets ", *opset,
                         " and ", entry.version()));
      }
      opset = entry.version();
    }
  }
  if (!opset.has_value()) {
    return absl::InvalidArgumentError("model declares no opset for the default ONNX domain");
  }
  if (*opset < 1 || *opset > kMaxOnnxOpset) {
    return absl::InvalidArgumentError(absl::StrCat("model uses ONNX opset ", *opset,
                                                   "; Loom supports opsets 1 to ", kMaxOnnxOpset,
                                                   " (below ", kMinOnnxOpset, " upgraded)"));
  }
  return *opset;
}

// Upgrades a model below kMinOnnxOpset with libonnx's version converter, which reports failures
// (an operator without an adapter, a malformed node) as exceptions.
absl::StatusOr<onnx::ModelProto> UpgradeOpset(const onnx::ModelProto& model, int64_t opset) {
  // The converter knows only registered operators (an unknown one fails with a bare
  // "unordered_map::at"): name the node instead.
  for (const onnx::NodeProto& node : model.graph().node()) {
    if (onnx::OpSchemaRegistry::Schema(node.op_type(), static_cast<int>(opset), "") == nullptr) {
      return absl::UnimplementedError(
          absl::StrCat("model uses ONNX opset ", opset, ", which Loom upgrades to opset ",
                       kMinOnnxOpset, ", but node '", node.name(), "' has operator '",
                       node.op_type(), "', which ONNX opset ", opset, " does not define"));
    }
  }
  try {
    return onnx::version_conversion::ConvertVersion(model, static_cast<int>(kMinOnnxOpset));
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return absl::InvalidArgumentError(absl::StrCat("model uses ONNX opset ", opset,
                                                   ", which could not be upgraded to opset ",
                                                   kMinOnnxOpset, ": ", what));
  }
}

absl::StatusOr<Graph> ImportModel(const onnx::ModelProto& model, const std::string& base_dir,
                                  const ImportOptions& options) {
  Graph graph;
  LOOM_ASSIGN_OR_RETURN(graph.opset, ReadOpset(model));
  const onnx::GraphProto& gp = model.graph();
  graph.name = gp.name();
  if (gp.node_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph '", gp.name(), "' has no nodes; there is nothing to compile"));
  }
  if (gp.sparse_initializer_size() > 0) {
    return absl::UnimplementedError(absl::StrCat("graph has sparse initializer '",
                                                 gp.sparse_initializer(0).values().name(),
                                                 "'; sparse tensors are not supported"));
  }

  for (const auto& init : gp.initializer()) {
    const std::string what = absl::StrCat("initializer '", init.name(), "'");
    if (init.name().empty()) return absl::InvalidArgumentError("an initializer has no name");
    if (graph.initializers.count(init.name())) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is defined twice"));
    }
    LOOM_ASSIGN_OR_RETURN(Tensor t, TensorFromProto(init, base_dir, what));
    graph.initializers.emplace(init.name(), std::move(t));
  }

  std::set<std::string> input_names;
  for (const auto& in : gp.input()) {
    if (graph.IsInitializer(in.name())) continue;  // IR < 4 lists weights as inputs too
    const std::string what = absl::StrCat("graph input '", in.name(), "'");
    if (in.name().empty()) return absl::InvalidArgumentError("a graph input has no name");
    if (!input_names.insert(in.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is declared twice"));
    }
    auto pin = options.input_shapes.find(in.name());
    const Shape* pinned = pin == options.input_shapes.end() ? nullptr : &pin->second;
    LOOM_ASSIGN_OR_RETURN(TensorType type,
                          TypeFromValueInfo(in, pinned, /*require_shape=*/true, what));
    graph.inputs.push_back({in.name(), std::move(type)});
  }
  for (const auto& [name, shape] : options.input_shapes) {
    if (!input_names.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ImportOptions pins input '", name,
          "', which is not a graph input (inputs: ", absl::StrJoin(input_names, ", "), ")"));
    }
  }

  for (const auto& out : gp.output()) {
    const std::string what = absl::StrCat("graph output '", out.name(), "'");
    if (out.name().empty()) return absl::InvalidArgumentError("a graph output has no name");
    LOOM_ASSIGN_OR_RETURN(TensorType type,
                          TypeFromValueInfo(out, nullptr, /*require_shape=*/false, what));
    graph.outputs.push_back({out.name(), std::move(type)});
  }

  // Explicit names win; nodes without one, or repeating an earlier one, get "<op>_<index>".
  std::set<std::string> used_names;
  for (const auto& np : gp.node()) {
    if (!np.name().empty()) used_names.insert(np.name());
  }
  std::set<std::string> taken;
  graph.nodes.reserve(static_cast<size_t>(gp.node_size()));
  for (int i = 0; i < gp.node_size(); ++i) {
    const onnx::NodeProto& np = gp.node(i);
    Node node;
    node.op_type = np.op_type();
    node.name = np.name();
    if (node.name.empty() || taken.count(node.name)) {
      std::string base = absl::StrCat(np.op_type().empty() ? "node" : np.op_type(), "_", i);
      node.name = base;
      for (int k = 1; used_names.count(node.name) || taken.count(node.name); ++k) {
        node.name = absl::StrCat(base, "_", k);
      }
    }
    taken.insert(node.name);
    if (np.op_type().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("node '", node.name, "' has no op_type"));
    }
    if (!np.domain().empty() && np.domain() != "ai.onnx") {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), " uses op '", np.op_type(), "' from domain '", np.domain(),
                       "'; Loom supports only the default ONNX domain"));
    }
    node.inputs.assign(np.input().begin(), np.input().end());
    node.outputs.assign(np.output().begin(), np.output().end());
    for (const auto& attr : np.attribute()) {
      if (attr.name().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), " has an attribute without a name"));
      }
      if (node.attrs.count(attr.name())) {
        return absl::InvalidArgumentError(
            absl::StrCat(node.Describe(), " has attribute '", attr.name(), "' twice"));
      }
      LOOM_ASSIGN_OR_RETURN(AttrValue value, ReadAttribute(attr, node.Describe(), base_dir));
      node.attrs.emplace(attr.name(), std::move(value));
    }
    if (node.op_type == "Constant") LOOM_RETURN_IF_ERROR(NormalizeConstant(node));
    graph.nodes.push_back(std::move(node));
  }

  // value_info is a hint; keep only fully known, supported types.
  for (const auto& vi : gp.value_info()) {
    if (!vi.has_type() || !vi.type().has_tensor_type()) continue;
    const auto& tt = vi.type().tensor_type();
    DType dtype = DTypeFromOnnx(tt.elem_type());
    if (dtype == DType::kUndefined || !tt.has_shape()) continue;
    TensorType type{dtype, {}};
    bool known = true;
    for (const auto& dim : tt.shape().dim()) {
      known = known && dim.has_dim_value() && dim.dim_value() >= 0;
      type.shape.push_back(dim.dim_value());
    }
    if (known && !vi.name().empty()) graph.value_types[vi.name()] = std::move(type);
  }

  LOOM_RETURN_IF_ERROR(graph.TopologicalSort());
  LOOM_RETURN_IF_ERROR(graph.Validate());
  return graph;
}

absl::StatusOr<Graph> ParseAndImport(std::string_view bytes, const std::string& base_dir,
                                     const ImportOptions& options, const std::string& source) {
  if (bytes.size() > kMaxOnnxModelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " is ", bytes.size(),
                     " bytes; ONNX models above 2 GiB must keep their weights "
                     "in external data files"));
  }
  onnx::ModelProto model;
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " is not a valid ONNX model (protobuf parse failed)"));
  }
  if (!model.has_graph()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " is not a valid ONNX model (it has no graph)"));
  }
  LOOM_ASSIGN_OR_RETURN(const int64_t opset, ReadOpset(model));
  if (opset >= kMinOnnxOpset) return ImportModel(model, base_dir, options);
  // An older model: import it once as it is, so that a malformed graph fails with Loom's own
  // message before libonnx sees it, then upgrade it and import the result.
  LOOM_RETURN_IF_ERROR(ImportModel(model, base_dir, options).status());
  LOOM_ASSIGN_OR_RETURN(onnx::ModelProto upgraded, UpgradeOpset(model, opset));
  return ImportModel(upgraded, base_dir, options);
}

}  // namespace

absl::StatusOr<Graph> ImportOnnxBytes(std::string_view bytes, const std::string& base_dir,
                                      const ImportOptions& options) {
  return ParseAndImport(bytes, base_dir, options,
                        absl::StrCat("the input (", bytes.size(), " bytes)"));
}

absl::StatusOr<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("ONNX model '", path, "' does not exist or is not a regular file"));
  }
  const uint64_t size = fs::file_size(path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("cannot read ONNX model '", path, "': ", ec.message()));
  }
  if (size > kMaxOnnxModelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("ONNX model '", path, "' is ", size,
                     " bytes; models above 2 GiB must keep their weights in external data files"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ONNX model '", path, "'"));
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size) {
    return absl::DataLossError(absl::StrCat("short read from ONNX model '", path, "'"));
  }
  std::string base_dir = fs::path(path).parent_path().string();
  if (base_dir.empty()) base_dir = ".";
  auto graph = ParseAndImport(bytes, base_dir, options, absl::StrCat("'", path, "'"));
  if (!graph.ok() && graph.status().message().find(path) == std::string_view::npos) {
    return absl::Status(graph.status().code(),
                        absl::StrCat("ONNX model '", path, "': ", graph.status().message()));
  }
  return graph;
}

}  // namespace loom::graph
