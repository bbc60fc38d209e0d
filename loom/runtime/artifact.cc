#include "loom/runtime/artifact.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/base/thread_pool.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_plan.h"
#include "loom/runtime/plan.h"
#include "nlohmann/json.hpp"

namespace loom::runtime {

using json = nlohmann::ordered_json;

bool IsArtifactDir(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) &&
         std::filesystem::is_regular_file(std::filesystem::path(path) / kArtifactPlanFile, ec);
}

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

namespace {

constexpr char kFormatName[] = "loom-artifact";
constexpr char kWeightsMagic[] = "LOOMWGT1";  // 8 bytes
constexpr int64_t kWeightsAlign = 64;
constexpr char kManifestFormat[] = "loom-artifact/2";

int64_t RoundUpTo(int64_t a) { return (a + kWeightsAlign - 1) / kWeightsAlign * kWeightsAlign; }

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

int IsaRank(ops::Isa isa) {
  switch (isa) {
    case ops::Isa::kGeneric:
      return 0;
    case ops::Isa::kAvx2:
      return 1;
    case ops::Isa::kAvx512:
      return 2;
  }
  return 0;
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path.string(), ": ", what));
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  return ss.str();
}

// Writes `data` to `path` through a temporary file and a rename, so that a reader never sees a
// half-written file.
absl::Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp.string()));
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    f.close();
    if (!f) return absl::DataLossError(absl::StrCat("cannot write ", tmp.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot move ", tmp.string(), " to ", path.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> WritePrivateCopy(std::string_view bytes) {
  std::error_code ec;
  std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  std::string path = (tmp / "loom-verified-XXXXXX").string();
  const int fd = mkstemp(path.data());
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create a private copy in ", tmp.string()));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  fchmod(fd, 0700);
  close(fd);
  if (done != bytes.size()) {
    std::filesystem::remove(path, ec);
    return absl::DataLossError(absl::StrCat("cannot write the private copy ", path));
  }
  return path;
}

namespace {

// ---- JSON encoding of plan pieces.

json FloatJson(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}
float FloatFrom(const json& j) {
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "inf") return std::numeric_limits<float>::infinity();
    if (s == "-inf") return -std::numeric_limits<float>::infinity();
    if (s == "nan") return std::numeric_limits<float>::quiet_NaN();
    throw std::invalid_argument(absl::StrCat("bad float '", s, "'"));
  }
  return j.get<float>();
}

absl::StatusOr<graph::DType> ParseDType(const std::string& name) {
  const graph::DType d = graph::DTypeFromName(name);
  if (d != graph::DType::kUndefined) return d;
  return absl::DataLossError(absl::StrCat("unknown dtype '", name, "'"));
}

const char* RefKindName(Ref::Kind k) {
  switch (k) {
    case Ref::Kind::kArena:
      return "arena";
    case Ref::Kind::kConst:
      return "const";
    case Ref::Kind::kInput:
      return "input";
    case Ref::Kind::kOutput:
      return "output";
  }
  return "?";
}

json RefJson(const Ref& r) { return json::array({RefKindName(r.kind), r.index}); }
Ref RefFrom(const json& j) {
  if (!j.is_array() || j.size() != 2) throw std::invalid_argument("an operand is [kind, index]");
  const std::string kind = j.at(0).get<std::string>();
  Ref r;
  r.index = j.at(1).get<int64_t>();
  for (Ref::Kind k :
       {Ref::Kind::kArena, Ref::Kind::kConst, Ref::Kind::kInput, Ref::Kind::kOutput}) {
    if (kind == RefKindName(k)) {
      r.kind = k;
      return r;
    }
  }
  throw std::invalid_argument(absl::StrCat("bad operand kind '", kind, "'"));
}

json GeoJson(const BlockedGeo& g) {
  return json::array({g.n, g.c, g.h, g.w, g.bn, g.pt, g.pl, g.pb, g.pr});
}
BlockedGeo GeoFrom(const json& j) {
  if (!j.is_array() || j.size() != 9) throw std::invalid_argument("a geometry has 9 numbers");
  BlockedGeo g;
  int64_t* f[] = {&g.n, &g.c, &g.h, &g.w, &g.bn, &g.pt, &g.pl, &g.pb, &g.pr};
  for (size_t i = 0; i < 9; ++i) *f[i] = j.at(i).get<int64_t>();
  // Ranges (and products) are checked by ValidatePlan.
  return g;
}

json TypeJson(const graph::TensorType& t) {
  return {{"dtype", graph::DTypeName(t.dtype)}, {"shape", t.shape}};
}
graph::TensorType TypeFrom(const json& j) {
  graph::TensorType t;
  t.dtype = graph::DTypeFromName(j.at("dtype").get<std::string>());
  if (t.dtype == graph::DType::kUndefined) throw std::invalid_argument("unknown dtype");
  t.shape = j.at("shape").get<graph::Shape>();
  return t;
}

json TypedRefJson(const TypedRef& r) {
  if (!r.present) return nullptr;
  json j = TypeJson(r.type);
  j["ref"] = RefJson(r.ref);
  return j;
}
TypedRef TypedRefFrom(const json& j) {
  TypedRef r;
  if (j.is_null()) {
    r.present = false;
    return r;
  }
  r.type = TypeFrom(j);
  r.ref = RefFrom(j.at("ref"));
  return r;
}

constexpr const char* kPoolKinds[] = {"max", "average", "global_average", "global_max"};

// Tensor-valued attributes go to the constants table: `extra` collects them at export.
json NodeJson(const graph::Node& node, std::vector<graph::Tensor>* extra, int64_t base) {
  json attrs = json::object();
  for (const auto& [key, value] : node.attrs) {
    json a;
    switch (value.index()) {
      case 0:
        a["int"] = std::get<int64_t>(value);
        break;
      case 1:
        a["float"] = FloatJson(std::get<float>(value));
        break;
      case 2:
        a["string"] = std::get<std::string>(value);
        break;
      case 3:
        a["ints"] = std::get<std::vector<int64_t>>(value);
        break;
      case 4: {
        json fs = json::array();
        for (float f : std::get<std::vector<float>>(value)) fs.push_back(FloatJson(f));
        a["floats"] = fs;
        break;
      }
      case 5:
        a["strings"] = std::get<std::vector<std::string>>(value);
        break;
      case 6:
        a["tensor"] = base + static_cast<int64_t>(extra->size());
        extra->push_back(std::get<graph::Tensor>(value));
        break;
    }
    attrs[key] = a;
  }
  return {{"name", node.name},
          {"op_type", node.op_type},
          {"inputs", node.inputs},
          {"outputs", node.outputs},
          {"attrs", attrs}};
}
graph::Node NodeFrom(const json& j, const std::vector<graph::Tensor>& consts) {
  graph::Node node;
  node.name = j.at("name").get<std::string>();
  node.op_type = j.at("op_type").get<std::string>();
  node.inputs = j.at("inputs").get<std::vector<std::string>>();
  node.outputs = j.at("outputs").get<std::vector<std::string>>();
  for (const auto& [key, a] : j.at("attrs").items()) {
    if (a.contains("int")) {
      node.attrs[key] = a["int"].get<int64_t>();
    } else if (a.contains("float")) {
      node.attrs[key] = FloatFrom(a["float"]);
    } else if (a.contains("string")) {
      node.attrs[key] = a["string"].get<std::string>();
    } else if (a.contains("ints")) {
      node.attrs[key] = a["ints"].get<std::vector<int64_t>>();
    } else if (a.contains("floats")) {
      std::vector<float> fs;
      for (const json& f : a["floats"]) fs.push_back(FloatFrom(f));
      node.attrs[key] = std::move(fs);
    } else if (a.contains("strings")) {
      node.attrs[key] = a["strings"].get<std::vector<std::string>>();
    } else if (a.contains("tensor")) {
      const int64_t c = a["tensor"].get<int64_t>();
      if (c < 0 || c >= static_cast<int64_t>(consts.size())) {
        throw std::invalid_argument("attribute tensor out of range");
      }
      node.attrs[key] = consts[static_cast<size_t>(c)];
    } else {
      throw std::invalid_argument(absl::StrCat("attribute '", key, "' has no known kind"));
    }
  }
  return node;
}

json StepJson(const Step& s, std::vector<graph::Tensor>* extra, int64_t base) {
  json j = {{"name", s.name}, {"kind", s.kind}};
  std::visit(
      [&](const auto& op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, RelayoutStep>) {
          j["op"] = "relayout";
          j["src"] = RefJson(op.src);
          j["src_geo"] = GeoJson(op.src_geo);
          j["dst"] = RefJson(op.dst);
          j["dst_geo"] = GeoJson(op.dst_geo);
        } else if constexpr (std::is_same_v<T, KernelStep>) {
          j["op"] = "kernel";
          j["kernel"] = op.kernel;
          json args = json::array();
          for (const Ref& r : op.args) args.push_back(RefJson(r));
          j["args"] = args;
        } else if constexpr (std::is_same_v<T, PoolStep>) {
          j["op"] = "pool";
          j["pool"] = kPoolKinds[static_cast<int>(op.kind)];
          j["src"] = RefJson(op.src);
          j["dst"] = RefJson(op.dst);
          j["in"] = GeoJson(op.in);
          j["out"] = GeoJson(op.out);
          j["window"] = {op.kh, op.kw, op.sh, op.sw, op.pt, op.pl, op.pb, op.pr, op.dh, op.dw};
          j["count_include_pad"] = op.count_include_pad;
        } else if constexpr (std::is_same_v<T, ChannelMapStep>) {
          j["op"] = "channel_map";
          json srcs = json::array(), geos = json::array(), runs = json::array();
          for (const Ref& r : op.srcs) srcs.push_back(RefJson(r));
          for (const BlockedGeo& g : op.src_geos) geos.push_back(GeoJson(g));
          for (const ChannelRun& r : op.runs) runs.push_back({r.src, r.src_c, r.dst_c, r.len});
          j["srcs"] = srcs;
          j["src_geos"] = geos;
          j["dst"] = RefJson(op.dst);
          j["dst_geo"] = GeoJson(op.dst_geo);
          j["runs"] = runs;
        } else if constexpr (std::is_same_v<T, CopyStep>) {
          j["op"] = "copy";
          j["src"] = RefJson(op.src);
          j["dst"] = RefJson(op.dst);
          j["rows"] = op.rows;
          j["row_bytes"] = op.row_bytes;
          j["src_stride"] = op.src_stride;
          j["dst_stride"] = op.dst_stride;
        } else if constexpr (std::is_same_v<T, ReferenceStep>) {
          j["op"] = "reference";
          j["node"] = NodeJson(op.node, extra, base);
          j["opset"] = op.opset;
          json ins = json::array(), outs = json::array();
          for (const TypedRef& r : op.inputs) ins.push_back(TypedRefJson(r));
          for (const TypedRef& r : op.outputs) outs.push_back(TypedRefJson(r));
          j["inputs"] = ins;
          j["outputs"] = outs;
        }
      },
      s.op);
  return j;
}

Step StepFrom(const json& j, const std::vector<graph::Tensor>& consts) {
  Step s;
  s.name = j.at("name").get<std::string>();
  s.kind = j.at("kind").get<std::string>();
  const std::string op = j.at("op").get<std::string>();
  if (op == "relayout") {
    s.op = RelayoutStep{.src = RefFrom(j.at("src")),
                        .src_geo = GeoFrom(j.at("src_geo")),
                        .dst = RefFrom(j.at("dst")),
                        .dst_geo = GeoFrom(j.at("dst_geo"))};
  } else if (op == "kernel") {
    KernelStep k;
    k.kernel = j.at("kernel").get<int64_t>();
    for (const json& a : j.at("args")) k.args.push_back(RefFrom(a));
    s.op = std::move(k);
  } else if (op == "pool") {
    const std::vector<int64_t> w = j.at("window").get<std::vector<int64_t>>();
    if (w.size() != 10) throw std::invalid_argument("a pool window has 10 numbers");
    PoolStep p;
    const std::string kind = j.at("pool").get<std::string>();
    bool known = false;
    for (int k = 0; k < 4; ++k) {
      if (kind == kPoolKinds[k]) {
        p.kind = static_cast<PoolStep::Kind>(k);
        known = true;
      }
    }
    if (!known) throw std::invalid_argument(absl::StrCat("unknown pool '", kind, "'"));
    p.src = RefFrom(j.at("src"));
    p.dst = RefFrom(j.at("dst"));
    p.in = GeoFrom(j.at("in"));
    p.out = GeoFrom(j.at("out"));
    p.kh = w[0], p.kw = w[1], p.sh = w[2], p.sw = w[3], p.pt = w[4], p.pl = w[5], p.pb = w[6];
    p.pr = w[7], p.dh = w[8], p.dw = w[9];
    p.count_include_pad = j.at("count_include_pad").get<bool>();
    s.op = p;
  } else if (op == "channel_map") {
    ChannelMapStep c;
    for (const json& r : j.at("srcs")) c.srcs.push_back(RefFrom(r));
    for (const json& g : j.at("src_geos")) c.src_geos.push_back(GeoFrom(g));
    c.dst = RefFrom(j.at("dst"));
    c.dst_geo = GeoFrom(j.at("dst_geo"));
    for (const json& r : j.at("runs")) {
      const std::vector<int64_t> v = r.get<std::vector<int64_t>>();
      if (v.size() != 4) throw std::invalid_argument("a channel run has 4 numbers");
      c.runs.push_back({v[0], v[1], v[2], v[3]});
    }
    s.op = std::move(c);
  } else if (op == "copy") {
    s.op = CopyStep{.src = RefFrom(j.at("src")),
                    .dst = RefFrom(j.at("dst")),
                    .rows = j.at("rows").get<int64_t>(),
                    .row_bytes = j.at("row_bytes").get<int64_t>(),
                    .src_stride = j.at("src_stride").get<int64_t>(),
                    .dst_stride = j.at("dst_stride").get<int64_t>()};
  } else if (op == "reference") {
    ReferenceStep r;
    r.node = NodeFrom(j.at("node"), consts);
    r.opset = j.at("opset").get<int64_t>();
    for (const json& t : j.at("inputs")) r.inputs.push_back(TypedRefFrom(t));
    for (const json& t : j.at("outputs")) r.outputs.push_back(TypedRefFrom(t));
    s.op = std::move(r);
  } else {
    throw std::invalid_argument(absl::StrCat("unknown step op '", op, "'"));
  }
  return s;
}

json ValueJson(const graph::ValueInfo& v) {
  return {{"name", v.name}, {"dtype", graph::DTypeName(v.type.dtype)}, {"shape", v.type.shape}};
}
graph::ValueInfo ValueFrom(const json& j) {
  graph::ValueInfo v;
  v.name = j.at("name").get<std::string>();
  v.type = TypeFrom(j);
  return v;
}

json KernelsJson(const std::vector<KernelArgs>& kernels) {
  json ks = json::array();
  for (const KernelArgs& k : kernels) {
    json written = json::array();
    for (bool w : k.written) written.push_back(w);
    ks.push_back({{"bytes", k.bytes}, {"written", written}});
  }
  return ks;
}

json StatsJson(const CompileStats& s) {
  return {{"kernel_steps", s.kernel_steps},
          {"tuned_kernels", s.tuned_kernels},
          {"unique_kernels", s.unique_kernels},
          {"fused_ops", s.fused_ops},
          {"layout_steps", s.layout_steps},
          {"blocked_steps", s.blocked_steps},
          {"generated_steps", s.generated_steps},
          {"views", s.views},
          {"reference_steps", s.reference_steps},
          {"arena_bytes", s.arena_bytes},
          {"intermediate_bytes", s.intermediate_bytes}};
}
CompileStats StatsFrom(const json& j) {
  CompileStats s;
  if (!j.is_object()) return s;
  s.kernel_steps = j.value("kernel_steps", int64_t{0});
  s.tuned_kernels = j.value("tuned_kernels", int64_t{0});
  s.unique_kernels = j.value("unique_kernels", int64_t{0});
  s.fused_ops = j.value("fused_ops", int64_t{0});
  s.layout_steps = j.value("layout_steps", int64_t{0});
  s.blocked_steps = j.value("blocked_steps", int64_t{0});
  s.generated_steps = j.value("generated_steps", int64_t{0});
  s.views = j.value("views", int64_t{0});
  s.reference_steps = j.value("reference_steps", int64_t{0});
  s.arena_bytes = j.value("arena_bytes", int64_t{0});
  s.intermediate_bytes = j.value("intermediate_bytes", int64_t{0});
  return s;
}

// The kernels' argument table as model.so carries it: per kernel its argument count, then per
// argument bytes * 2 + written.
std::string KernelTableSource(const std::vector<KernelArgs>& kernels) {
  std::string s = "extern \"C\" const long long loom_artifact_kernel_args[] = {";
  for (const KernelArgs& k : kernels) {
    absl::StrAppend(&s, k.bytes.size(), "LL,");
    for (size_t a = 0; a < k.bytes.size(); ++a) {
      absl::StrAppend(&s, k.bytes[a] * 2 + (k.written[a] ? 1 : 0), "LL,");
    }
  }
  absl::StrAppend(&s, "0LL};\n");
  return s;
}

// Compiles every kernel to an object (renamed loom_kernel_<i>) and links them with the manifest
// into one shared library; returns its path in the builder's cache.
absl::StatusOr<std::string> BuildLibrary(const std::vector<ops::KernelSource>& sources,
                                         const std::vector<KernelArgs>& kernels,
                                         const tune::BuildOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<tune::Builder> builder, tune::MakeLocalBuilder(options));
  std::vector<tune::BuildResult> objects(sources.size());
  {
    base::ThreadPool pool(static_cast<size_t>(std::max<int32_t>(1, options.num_threads)));
    pool.ParallelFor(sources.size(), [&](size_t k) {
      ops::KernelSource src = sources[k];
      // The builder's fixed flags include -shared, which -c overrides: the result is an object.
      absl::StrAppend(&src.compile_flags, " -c -Dloom_kernel=loom_kernel_", k);
      objects[k] = builder->BuildSource(src, ops::Config{});
    });
  }
  std::vector<std::string> paths;
  for (size_t k = 0; k < objects.size(); ++k) {
    if (objects[k].error != tune::ErrorKind::kNone) {
      return absl::InternalError(
          absl::StrCat("kernel ", k, " failed to compile: ", objects[k].error_msg));
    }
    if (objects[k].artifact_path.find_first_of(" \t\n") != std::string::npos) {
      return absl::FailedPreconditionError(
          absl::StrCat("the kernel cache path '", objects[k].artifact_path,
                       "' contains whitespace; choose another cache dir"));
    }
    paths.push_back(objects[k].artifact_path);
  }
  ops::KernelSource manifest;
  manifest.code = absl::StrCat(
      "// Generated by Loom: the manifest of a compiled-model artifact.\n"
      "extern \"C\" const char loom_artifact_format[] = \"",
      kManifestFormat,
      "\";\n"
      "extern \"C\" const int loom_artifact_num_kernels = ",
      sources.size(), ";\n", KernelTableSource(kernels));
  manifest.compile_flags = absl::StrJoin(paths, " ");
  tune::BuildResult lib = builder->BuildSource(manifest, ops::Config{});
  if (lib.error != tune::ErrorKind::kNone) {
    return absl::InternalError(absl::StrCat("linking model.so failed: ", lib.error_msg));
  }
  return lib.artifact_path;
}

// A size or offset read from plan.json: an integer in [0, limit].
int64_t Bounded(const json& j, int64_t limit, const char* what) {
  const int64_t v = j.get<int64_t>();
  if (v < 0 || v > limit) throw std::invalid_argument(absl::StrCat(what, " out of range"));
  return v;
}

// The constants table of plan.json, read from `weights`: each inside weights.bin, together no
// larger than it (so that overlapping entries cannot multiply what is allocated).
absl::Status DecodeConstants(const json& table, std::string_view weights,
                             std::vector<graph::Tensor>* out) {
  const auto wsize = static_cast<int64_t>(weights.size());
  int64_t total = 0;
  for (const json& c : table) {
    LOOM_ASSIGN_OR_RETURN(graph::DType dtype, ParseDType(c.at("dtype").get<std::string>()));
    const graph::Shape shape = c.at("shape").get<graph::Shape>();
    const int64_t offset = Bounded(c.at("offset"), wsize, "a constant's offset");
    int64_t bytes = static_cast<int64_t>(graph::DTypeSize(dtype));
    for (int64_t d : shape) {
      if (d < 0 || __builtin_mul_overflow(bytes, d, &bytes) || bytes > wsize) {
        return absl::DataLossError("a constant lies outside weights.bin");
      }
    }
    if (offset < 8 || bytes > wsize - offset || (total += bytes) > wsize) {
      return absl::DataLossError("a constant lies outside weights.bin");
    }
    LOOM_ASSIGN_OR_RETURN(graph::Tensor t, graph::Tensor::Create(dtype, shape));
    if (t.num_bytes() > 0) std::memcpy(t.raw_data(), weights.data() + offset, t.num_bytes());
    out->push_back(std::move(t));
  }
  return absl::OkStatus();
}

// Appends `t` to a weights.bin image at the next aligned offset, and its entry to `table`.
void AppendConstant(const graph::Tensor& t, std::string* weights, json* table) {
  weights->resize(static_cast<size_t>(RoundUpTo(static_cast<int64_t>(weights->size()))), '\0');
  table->push_back({{"dtype", graph::DTypeName(t.dtype())},
                    {"shape", t.shape()},
                    {"offset", static_cast<int64_t>(weights->size())}});
  weights->append(static_cast<const char*>(t.raw_data()), t.num_bytes());
}

// What the CPU and the CUDA artifact writers share (CompiledModel::Export, WriteCudaArtifact).

// Creates `path` (the artifact folder `dir` or a folder in it) with its parents; kPermissionDenied
// naming `dir` when it cannot.
absl::Status CreateArtifactDir(const std::filesystem::path& path, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create the artifact directory ", dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// A plan's steps as plan.json lists them, its constants table and the weights.bin image.
struct EncodedSteps {
  json steps = json::array();
  json constants = json::array();
  std::string weights = std::string(kWeightsMagic, 8);
};

// Encodes `steps` with `step_json(step, &extra, base)` and the constants: the plan's own
// `consts`, then the tensors of reference-kernel attributes the steps add (steps first, so that
// they are known).
template <typename StepT, typename StepJsonFn>
EncodedSteps EncodeSteps(const std::vector<StepT>& steps, const std::vector<graph::Tensor>& consts,
                         const StepJsonFn& step_json) {
  EncodedSteps out;
  std::vector<graph::Tensor> extra;
  const int64_t base = static_cast<int64_t>(consts.size());
  for (const StepT& s : steps) out.steps.push_back(step_json(s, &extra, base));
  for (const graph::Tensor& t : consts) AppendConstant(t, &out.weights, &out.constants);
  for (const graph::Tensor& t : extra) AppendConstant(t, &out.weights, &out.constants);
  return out;
}

// plan.json's entry for the weights image.
json WeightsEntry(const std::string& weights) {
  return {{"file", kArtifactWeightsFile},
          {"bytes", static_cast<int64_t>(weights.size())},
          {"fnv1a64", Hex(Fnv1a64(weights))}};
}

// The last steps of writing an artifact, its kernels written: weights.bin, then plan.json, which
// makes the folder a complete artifact. An older signature, which does not cover the new files,
// is removed first.
absl::Status FinishArtifact(const std::filesystem::path& root, const std::string& weights,
                            const json& plan) {
  LOOM_RETURN_IF_ERROR(WriteFileAtomic(root / kArtifactWeightsFile, weights));
  std::error_code ec;
  std::filesystem::remove(root / kArtifactManifestFile, ec);
  std::filesystem::remove(root / kArtifactSignatureFile, ec);
  return WriteFileAtomic(root / kArtifactPlanFile, plan.dump(1));
}

// Decodes plan.json's fields into `plan` (constants from `weights`) and returns the thread count
// it names. Throws std::exception subclasses (nlohmann's, invalid_argument) for malformed input;
// returns a status for what a well-formed plan may still get wrong.
absl::StatusOr<int32_t> DecodePlan(const json& j, std::string_view weights, Plan* plan) {
  LOOM_RETURN_IF_ERROR(DecodeConstants(j.at("constants"), weights, &plan->consts));
  plan->arena_bytes =
      Bounded(j.at("arena_bytes"), static_cast<int64_t>(graph::Tensor::kMaxBytes), "arena_bytes");
  for (const json& b : j.at("buffers")) {
    BufferInfo info;
    info.offset = b.at("offset").get<int64_t>();
    info.bytes = b.at("bytes").get<int64_t>();
    info.what = b.value("what", std::string());
    plan->buffers.push_back(std::move(info));
  }
  for (const json& v : j.at("inputs")) plan->inputs.push_back(ValueFrom(v));
  for (const json& v : j.at("outputs")) plan->outputs.push_back(ValueFrom(v));
  for (const json& k : j.at("kernels")) {
    KernelArgs a;
    a.bytes = k.at("bytes").get<std::vector<int64_t>>();
    for (const json& w : k.at("written")) a.written.push_back(w.get<bool>());
    plan->kernels.push_back(std::move(a));
  }
  for (const json& s : j.at("steps")) plan->steps.push_back(StepFrom(s, plan->consts));
  const int64_t threads = j.value("num_threads", int64_t{1});
  if (threads < 1 || threads > std::numeric_limits<int32_t>::max()) {
    return absl::DataLossError(absl::StrCat("num_threads ", threads, " is out of range"));
  }
  LOOM_RETURN_IF_ERROR(ValidatePlan(*plan));
  return static_cast<int32_t>(threads);
}

// model.so's own table of kernel arguments must be plan.json's.
absl::Status CheckKernelTable(void* handle, const Plan& plan, const std::string& lib) {
  const auto* table = static_cast<const long long*>(dlsym(handle, "loom_artifact_kernel_args"));
  if (table == nullptr) {
    return absl::DataLossError(absl::StrCat(lib, " has no kernel argument table"));
  }
  size_t at = 0;
  for (size_t k = 0; k < plan.kernels.size(); ++k) {
    const KernelArgs& a = plan.kernels[k];
    bool same = table[at++] == static_cast<long long>(a.bytes.size());
    for (size_t i = 0; same && i < a.bytes.size(); ++i) {
      same = table[at++] == a.bytes[i] * 2 + (a.written[i] ? 1 : 0);
    }
    if (!same) {
      return absl::DataLossError(absl::StrCat("plan.json's arguments of kernel ", k,
                                              " differ from what ", lib, " says they are"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckPlanJson(std::string_view plan_json, std::string_view weights) {
  try {
    const json j = json::parse(plan_json);
    if (!j.is_object()) return absl::DataLossError("plan.json is not an object");
    Plan plan;
    return DecodePlan(j, weights, &plan).status();
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("plan.json is malformed: ", e.what()));
  }
}

absl::Status CompiledModel::Export(const std::string& dir, const ExportOptions& options) const {
  const Impl& m = *impl_;
  const Plan& plan = m.plan;
  if (m.kernel_sources.size() != plan.kernels.size()) {
    return absl::FailedPreconditionError(
        "this model was loaded from an artifact and has no kernel sources; export the model "
        "from CompiledModel::Compile instead (or copy the artifact directory)");
  }
  const std::filesystem::path root(dir);
  LOOM_RETURN_IF_ERROR(CreateArtifactDir(root, dir));
  LOOM_ASSIGN_OR_RETURN(std::string lib_path,
                        BuildLibrary(m.kernel_sources, plan.kernels, options.build));
  LOOM_ASSIGN_OR_RETURN(std::string lib_bytes, ReadFile(lib_path, "the linked library"));
  const EncodedSteps encoded = EncodeSteps(plan.steps, plan.consts, StepJson);

  json buffers = json::array();
  for (const BufferInfo& b : plan.buffers) {
    buffers.push_back({{"offset", b.offset}, {"bytes", b.bytes}, {"what", b.what}});
  }
  json inputs = json::array(), outputs = json::array();
  for (const graph::ValueInfo& v : plan.inputs) inputs.push_back(ValueJson(v));
  for (const graph::ValueInfo& v : plan.outputs) outputs.push_back(ValueJson(v));
  json j = {
      {"format", kFormatName},
      {"format_version", kArtifactFormatVersion},
      {"target", {{"isa", ops::IsaName(plan.isa)}, {"key", plan.target_key}}},
      {"library",
       {{"file", kArtifactLibraryFile},
        {"bytes", static_cast<int64_t>(lib_bytes.size())},
        {"fnv1a64", Hex(Fnv1a64(lib_bytes))},
        {"num_kernels", static_cast<int64_t>(plan.kernels.size())}}},
      {"weights", WeightsEntry(encoded.weights)},
      {"constants", encoded.constants},
      {"arena_bytes", plan.arena_bytes},
      {"buffers", buffers},
      {"inputs", inputs},
      {"outputs", outputs},
      {"kernels", KernelsJson(plan.kernels)},
      {"num_threads", m.num_threads},
      {"stats", StatsJson(m.stats)},
      {"steps", encoded.steps},
  };
  LOOM_RETURN_IF_ERROR(WriteFileAtomic(root / kArtifactLibraryFile, lib_bytes));
  return FinishArtifact(root, encoded.weights, j);
}

absl::StatusOr<std::unique_ptr<CompiledModel>> CompiledModel::Load(
    const std::string& dir, const LoadArtifactOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::filesystem::path root(dir);
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("artifact directory ", dir, " does not exist"));
  }
  absl::StatusOr<std::string> text = ReadFile(
      root / kArtifactPlanFile, "not a Loom artifact (make one with 'loom compile MODEL -o DIR')");
  if (!text.ok()) return text.status();
  auto impl = std::make_unique<Impl>();
  Plan& plan = impl->plan;
  int32_t threads = 1;
  const std::string plan_path = (root / kArtifactPlanFile).string();
  const std::filesystem::path lib_path = std::filesystem::absolute(root / kArtifactLibraryFile, ec);
  std::string lib_bytes;
  try {
    const json j = json::parse(*text);
    if (!j.is_object() || j.value("format", std::string()) != kFormatName) {
      return absl::DataLossError(absl::StrCat(plan_path, " is not a Loom artifact plan"));
    }
    const int version = j.at("format_version").get<int>();
    if (version != kArtifactFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " has artifact format version ", version, "; this Loom reads version ",
                       kArtifactFormatVersion, ": re-export it with this Loom's 'loom compile'"));
    }
    LOOM_ASSIGN_OR_RETURN(plan.isa, ops::ParseIsa(j.at("target").at("isa").get<std::string>()));
    plan.target_key = j.at("target").value("key", std::string());
    const ops::Isa host = options.host_isa.value_or(ops::HostCpuTarget().isa);
    if (IsaRank(plan.isa) > IsaRank(host)) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " was compiled for ", ops::IsaName(plan.isa), " but this CPU supports only ",
          ops::IsaName(host), ": compile the model again on (or for) this machine"));
    }

    // Every file is read once; a signature, when asked for, covers exactly these bytes.
    const json& wj = j.at("weights");
    LOOM_ASSIGN_OR_RETURN(std::string weights,
                          ReadFile(root / kArtifactWeightsFile, "the artifact's weights"));
    LOOM_ASSIGN_OR_RETURN(lib_bytes, ReadFile(lib_path, "the artifact's kernel library"));
    if (!options.verify_key.empty()) {
      LOOM_RETURN_IF_ERROR(VerifyArtifactFiles(dir, options.verify_key,
                                               {{kArtifactPlanFile, *text},
                                                {kArtifactWeightsFile, weights},
                                                {kArtifactLibraryFile, lib_bytes}}));
    }
    if (static_cast<int64_t>(weights.size()) != wj.at("bytes").get<int64_t>() ||
        Hex(Fnv1a64(weights)) != wj.at("fnv1a64").get<std::string>() ||
        weights.compare(0, 8, kWeightsMagic) != 0) {
      return absl::DataLossError(absl::StrCat(
          (root / kArtifactWeightsFile).string(),
          " is corrupt (size or checksum differs from plan.json): export the artifact again"));
    }
    const json& lj = j.at("library");
    if (static_cast<int64_t>(lib_bytes.size()) != lj.at("bytes").get<int64_t>() ||
        Hex(Fnv1a64(lib_bytes)) != lj.at("fnv1a64").get<std::string>()) {
      return absl::DataLossError(absl::StrCat(
          lib_path.string(),
          " is corrupt (size or checksum differs from plan.json): export the artifact again"));
    }
    absl::StatusOr<int32_t> t = DecodePlan(j, weights, &plan);
    if (!t.ok()) {
      return absl::Status(t.status().code(), absl::StrCat(plan_path, ": ", t.status().message()));
    }
    threads = options.num_threads > 0 ? options.num_threads : *t;
    if (lj.at("num_kernels").get<int64_t>() != static_cast<int64_t>(plan.kernels.size())) {
      return absl::DataLossError(absl::StrCat(plan_path, ": the library's kernel count differs"));
    }
    impl->stats = StatsFrom(j.value("stats", json::object()));
  } catch (const std::exception& e) {  // nlohmann::json errors and the decoders' invalid_argument
    return absl::DataLossError(absl::StrCat(plan_path, " is malformed: ", e.what()));
  }

  // The library. A verified one is loaded from a private copy of the verified bytes, so that the
  // file cannot be swapped between the check and dlopen.
  std::string load_path = lib_path.string();
  std::string private_copy;
  if (!options.verify_key.empty()) {
    LOOM_ASSIGN_OR_RETURN(private_copy, WritePrivateCopy(lib_bytes));
    load_path = private_copy;
  }
  void* handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!private_copy.empty()) std::filesystem::remove(private_copy, ec);
  if (handle == nullptr) {
    return absl::InternalError(absl::StrCat("cannot load ", lib_path.string(), ": ", dlerror()));
  }
  impl->libraries.push_back(std::make_unique<SharedLibrary>(handle));
  const auto* count = static_cast<const int*>(dlsym(handle, "loom_artifact_num_kernels"));
  if (count == nullptr || *count != static_cast<int64_t>(plan.kernels.size())) {
    return absl::DataLossError(absl::StrCat(lib_path.string(), " does not hold the ",
                                            plan.kernels.size(), " kernels plan.json expects"));
  }
  LOOM_RETURN_IF_ERROR(CheckKernelTable(handle, plan, lib_path.string()));
  for (size_t k = 0; k < plan.kernels.size(); ++k) {
    const std::string sym = absl::StrCat("loom_kernel_", k);
    void* fn = dlsym(handle, sym.c_str());
    if (fn == nullptr) {
      return absl::DataLossError(absl::StrCat(lib_path.string(), " has no ", sym));
    }
    impl->kernels.push_back(reinterpret_cast<loom_kernel_fn>(fn));
  }
  impl->stats.cache_hits = 0;
  impl->stats.compile_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Instantiate(std::move(impl), threads);
}

// ---- GPU artifacts (cuda_model.h): see artifact.h.

namespace {

constexpr char kCudaKernelsDir[] = "kernels";

json CudaOperandJson(const CudaOperand& op) {
  return op.kind == CudaOperand::Kind::kArena ? json::array({"arena", op.offset})
                                              : json::array({"const", op.index});
}
CudaOperand CudaOperandFrom(const json& j) {
  if (!j.is_array() || j.size() != 2) throw std::invalid_argument("an operand is [kind, index]");
  const std::string kind = j.at(0).get<std::string>();
  CudaOperand op;
  if (kind == "arena") {
    op.kind = CudaOperand::Kind::kArena;
    op.offset = j.at(1).get<int64_t>();
  } else if (kind == "const") {
    op.kind = CudaOperand::Kind::kConstant;
    op.index = j.at(1).get<int64_t>();
  } else {
    throw std::invalid_argument(absl::StrCat("bad operand kind '", kind, "'"));
  }
  return op;
}

json CudaValueJson(const CudaValueRef& r) {
  json j = TypeJson(r.type);
  j["at"] = CudaOperandJson(r.at);
  return j;
}
CudaValueRef CudaValueFrom(const json& j) { return {CudaOperandFrom(j.at("at")), TypeFrom(j)}; }

json CudaStepJson(const CudaStep& step, std::vector<graph::Tensor>* extra, int64_t base) {
  if (const auto* l = std::get_if<CudaLaunchStep>(&step)) {
    json args = json::array();
    for (const CudaOperand& op : l->args) args.push_back(CudaOperandJson(op));
    return {{"launch", l->kernel}, {"name", l->name}, {"args", args}};
  }
  const CudaHostStep& h = std::get<CudaHostStep>(step);
  json ins = json::array(), outs = json::array();
  for (const auto& in : h.inputs) ins.push_back(in.has_value() ? CudaValueJson(*in) : json());
  for (const auto& out : h.outputs) outs.push_back(out.has_value() ? CudaValueJson(*out) : json());
  return {{"host", NodeJson(h.node, extra, base)}, {"inputs", ins}, {"outputs", outs}};
}
CudaStep CudaStepFrom(const json& j, const std::vector<graph::Tensor>& consts) {
  if (j.contains("launch")) {
    CudaLaunchStep l;
    l.kernel = j.at("launch").get<int32_t>();
    l.name = j.value("name", std::string());
    for (const json& a : j.at("args")) l.args.push_back(CudaOperandFrom(a));
    return l;
  }
  CudaHostStep h;
  h.node = NodeFrom(j.at("host"), consts);
  for (const json& in : j.at("inputs")) {
    h.inputs.push_back(in.is_null() ? std::nullopt : std::optional(CudaValueFrom(in)));
  }
  for (const json& out : j.at("outputs")) {
    h.outputs.push_back(out.is_null() ? std::nullopt : std::optional(CudaValueFrom(out)));
  }
  return h;
}

std::string CudaKernelFile(size_t k, const std::string& image_kind) {
  return absl::StrCat(kCudaKernelsDir, "/k", k, image_kind == "cubin" ? ".cubin" : ".so");
}

// Size and checksum of a file's bytes against its plan.json entry.
absl::Status CheckFileEntry(const std::string& bytes, const json& entry, const std::string& path) {
  if (static_cast<int64_t>(bytes.size()) != entry.at("bytes").get<int64_t>() ||
      Hex(Fnv1a64(bytes)) != entry.at("fnv1a64").get<std::string>()) {
    return absl::DataLossError(absl::StrCat(
        path, " is corrupt (size or checksum differs from plan.json): export the artifact again"));
  }
  return absl::OkStatus();
}

// The fields of a GPU plan.json (constants from `weights`), validated.
absl::Status DecodeCudaPlan(const json& j, std::string_view weights, CudaArtifact* a) {
  CudaPlan& plan = a->plan;
  const json& target = j.at("target");
  if (target.at("kind").get<std::string>() != "cuda") {
    throw std::invalid_argument("the target is not cuda");
  }
  plan.arch = target.at("arch").get<std::string>();
  a->key = target.value("key", std::string());
  a->image_kind = target.at("image").get<std::string>();
  if (a->image_kind != "cubin" && a->image_kind != "host-emulation") {
    throw std::invalid_argument(absl::StrCat("unknown kernel image kind '", a->image_kind, "'"));
  }
  plan.opset = j.at("opset").get<int64_t>();
  LOOM_RETURN_IF_ERROR(DecodeConstants(j.at("constants"), weights, &plan.constants));
  plan.arena_bytes =
      Bounded(j.at("arena_bytes"), static_cast<int64_t>(graph::Tensor::kMaxBytes), "arena_bytes");
  for (const json& k : j.at("kernels")) {
    CudaKernelInfo info;
    info.launch.entry = k.at("entry").get<std::string>();
    const auto grid = k.at("grid").get<std::vector<uint32_t>>();
    const auto block = k.at("block").get<std::vector<uint32_t>>();
    if (grid.size() != 3 || block.size() != 3) {
      throw std::invalid_argument("grid and block have three dimensions");
    }
    std::copy(grid.begin(), grid.end(), info.launch.grid.begin());
    std::copy(block.begin(), block.end(), info.launch.block.begin());
    info.launch.dynamic_shared_bytes = k.at("dynamic_shared").get<uint32_t>();
    info.arg_bytes = k.at("args").get<std::vector<int64_t>>();
    info.kind = k.value("kind", std::string());
    plan.kernels.push_back(std::move(info));
  }
  for (const char* list : {"inputs", "outputs"}) {
    for (const json& v : j.at(list)) {
      (std::string(list) == "inputs" ? plan.inputs : plan.outputs)
          .emplace_back(v.at("name").get<std::string>(), CudaValueFrom(v));
    }
  }
  for (const json& s : j.at("steps")) plan.steps.push_back(CudaStepFrom(s, plan.constants));
  return ValidateCudaPlan(plan);
}

}  // namespace

bool IsCudaArtifactDir(const std::string& path) {
  if (!IsArtifactDir(path)) return false;
  absl::StatusOr<std::string> text =
      ReadFile(std::filesystem::path(path) / kArtifactPlanFile, "plan");
  if (!text.ok()) return false;
  const json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.value("format", std::string()) == kCudaArtifactFormat;
}

absl::StatusOr<std::string> CudaArtifactImageKind(const std::string& dir) {
  LOOM_ASSIGN_OR_RETURN(std::string text,
                        ReadFile(std::filesystem::path(dir) / kArtifactPlanFile, "plan"));
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("target") || !j["target"].is_object() ||
      !j["target"].contains("image") || !j["target"]["image"].is_string()) {
    return absl::DataLossError(
        absl::StrCat(dir, "/", kArtifactPlanFile, " is corrupt: no target.image"));
  }
  return j["target"]["image"].get<std::string>();
}

absl::Status WriteCudaArtifact(const std::string& dir, const CudaArtifact& a) {
  const CudaPlan& plan = a.plan;
  if (a.images.size() != plan.kernels.size()) {
    return absl::InternalError("one kernel image per kernel is needed");
  }
  const std::filesystem::path root(dir);
  LOOM_RETURN_IF_ERROR(CreateArtifactDir(root / kCudaKernelsDir, dir));
  const EncodedSteps encoded = EncodeSteps(plan.steps, plan.constants, CudaStepJson);
  json kernels = json::array();
  for (size_t k = 0; k < plan.kernels.size(); ++k) {
    const CudaKernelInfo& info = plan.kernels[k];
    const std::string& image = a.images[k];
    const std::string file = CudaKernelFile(k, a.image_kind);
    LOOM_RETURN_IF_ERROR(WriteFileAtomic(root / file, image));
    kernels.push_back({{"file", file},
                       {"bytes", static_cast<int64_t>(image.size())},
                       {"fnv1a64", Hex(Fnv1a64(image))},
                       {"entry", info.launch.entry},
                       {"grid", info.launch.grid},
                       {"block", info.launch.block},
                       {"dynamic_shared", info.launch.dynamic_shared_bytes},
                       {"args", info.arg_bytes},
                       {"kind", info.kind}});
  }
  json inputs = json::array(), outputs = json::array();
  for (const auto& [name, ref] : plan.inputs) {
    json v = CudaValueJson(ref);
    v["name"] = name;
    inputs.push_back(v);
  }
  for (const auto& [name, ref] : plan.outputs) {
    json v = CudaValueJson(ref);
    v["name"] = name;
    outputs.push_back(v);
  }
  json j = {
      {"format", kCudaArtifactFormat},
      {"format_version", kCudaArtifactFormatVersion},
      {"target", {{"kind", "cuda"}, {"arch", plan.arch}, {"key", a.key}, {"image", a.image_kind}}},
      {"opset", plan.opset},
      {"weights", WeightsEntry(encoded.weights)},
      {"constants", encoded.constants},
      {"arena_bytes", plan.arena_bytes},
      {"kernels", kernels},
      {"inputs", inputs},
      {"outputs", outputs},
      {"steps", encoded.steps},
  };
  return FinishArtifact(root, encoded.weights, j);
}

absl::StatusOr<CudaArtifact> ReadCudaArtifact(const std::string& dir,
                                              const std::string& verify_key) {
  const std::filesystem::path root(dir);
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("artifact directory ", dir, " does not exist"));
  }
  LOOM_ASSIGN_OR_RETURN(
      std::string text,
      ReadFile(root / kArtifactPlanFile,
               "not a Loom artifact (make one with 'loom compile MODEL --target cuda -o DIR')"));
  const std::string plan_path = (root / kArtifactPlanFile).string();
  CudaArtifact a;
  try {
    const json j = json::parse(text);
    if (!j.is_object() || j.value("format", std::string()) != kCudaArtifactFormat) {
      return absl::DataLossError(absl::StrCat(plan_path, " is not a Loom GPU artifact plan"));
    }
    const int version = j.at("format_version").get<int>();
    if (version != kCudaArtifactFormatVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " has GPU artifact format version ", version, "; this Loom reads version ",
          kCudaArtifactFormatVersion, ": re-export it with this Loom's 'loom compile'"));
    }
    // Every file is read once; a signature, when asked for, covers exactly these bytes.
    std::map<std::string, std::string> files = {{kArtifactPlanFile, text}};
    LOOM_ASSIGN_OR_RETURN(files[kArtifactWeightsFile],
                          ReadFile(root / kArtifactWeightsFile, "the artifact's weights"));
    const json& kernels = j.at("kernels");
    const std::string image_kind = j.at("target").at("image").get<std::string>();
    for (size_t k = 0; k < kernels.size(); ++k) {
      // Kernel files are named by their index: a plan cannot point outside the directory.
      const std::string file = CudaKernelFile(k, image_kind);
      if (kernels[k].at("file").get<std::string>() != file) {
        return absl::DataLossError(absl::StrCat(plan_path, ": kernel ", k, " is not ", file));
      }
      LOOM_ASSIGN_OR_RETURN(files[file], ReadFile(root / file, "a kernel image of the artifact"));
    }
    if (!verify_key.empty()) {
      LOOM_RETURN_IF_ERROR(VerifyArtifactFiles(dir, verify_key, files));
    }
    const std::string& weights = files[kArtifactWeightsFile];
    LOOM_RETURN_IF_ERROR(
        CheckFileEntry(weights, j.at("weights"), (root / kArtifactWeightsFile).string()));
    if (weights.compare(0, 8, kWeightsMagic) != 0) {
      return absl::DataLossError(
          absl::StrCat((root / kArtifactWeightsFile).string(), " is not a weights file"));
    }
    for (size_t k = 0; k < kernels.size(); ++k) {
      const std::string file = CudaKernelFile(k, image_kind);
      LOOM_RETURN_IF_ERROR(CheckFileEntry(files[file], kernels[k], (root / file).string()));
      a.images.push_back(std::move(files[file]));
    }
    absl::Status st = DecodeCudaPlan(j, weights, &a);
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat(plan_path, ": ", st.message()));
  } catch (const std::exception& e) {  // nlohmann::json errors and the decoders' invalid_argument
    return absl::DataLossError(absl::StrCat(plan_path, " is malformed: ", e.what()));
  }
  return a;
}

absl::Status CheckCudaPlanJson(std::string_view plan_json, std::string_view weights) {
  try {
    const json j = json::parse(plan_json);
    if (!j.is_object()) return absl::DataLossError("plan.json is not an object");
    CudaArtifact a;
    return DecodeCudaPlan(j, weights, &a);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("plan.json is malformed: ", e.what()));
  }
}

std::vector<std::string> ArtifactSignedFiles(const std::string& dir) {
  std::vector<std::string> files = {kArtifactPlanFile, kArtifactWeightsFile};
  if (!IsCudaArtifactDir(dir)) {
    files.push_back(kArtifactLibraryFile);
    return files;
  }
  absl::StatusOr<std::string> image_kind = CudaArtifactImageKind(dir);
  absl::StatusOr<std::string> text = ReadFile(std::filesystem::path(dir) / kArtifactPlanFile, "");
  const json j = json::parse(text.ok() ? *text : "", nullptr, /*allow_exceptions=*/false);
  if (!image_kind.ok() || !j.is_object() || !j.contains("kernels") || !j["kernels"].is_array()) {
    return files;
  }
  for (size_t k = 0; k < j["kernels"].size(); ++k) files.push_back(CudaKernelFile(k, *image_kind));
  return files;
}

}  // namespace loom::runtime
