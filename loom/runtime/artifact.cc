#include "loom/runtime/artifact.h"

#include <dlfcn.h>

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
constexpr size_t kMaxKernelArgs = 16;
constexpr char kManifestFormat[] = "loom-artifact/1";

int64_t RoundUpTo(int64_t a) { return (a + kWeightsAlign - 1) / kWeightsAlign * kWeightsAlign; }

bool Natural(const BlockedGeo& g) {
  return g.bn == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
}

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

json RefJson(const Ref& r) {
  const char* kind = r.kind == Ref::Kind::kArena   ? "arena"
                     : r.kind == Ref::Kind::kConst ? "const"
                                                   : "tensor";
  return json::array({kind, r.index});
}
Ref RefFrom(const json& j) {
  const std::string kind = j.at(0).get<std::string>();
  Ref r;
  r.index = j.at(1).get<int64_t>();
  if (kind == "arena") {
    r.kind = Ref::Kind::kArena;
  } else if (kind == "const") {
    r.kind = Ref::Kind::kConst;
  } else if (kind == "tensor") {
    r.kind = Ref::Kind::kTensor;
  } else {
    throw std::invalid_argument(absl::StrCat("bad operand kind '", kind, "'"));
  }
  return r;
}

json GeoJson(const BlockedGeo& g) {
  return json::array({g.n, g.c, g.h, g.w, g.bn, g.pt, g.pl, g.pb, g.pr});
}
BlockedGeo GeoFrom(const json& j) {
  if (!j.is_array() || j.size() != 9) throw std::invalid_argument("a geometry has 9 numbers");
  BlockedGeo g;
  int64_t* f[] = {&g.n, &g.c, &g.h, &g.w, &g.bn, &g.pt, &g.pl, &g.pb, &g.pr};
  for (size_t i = 0; i < 9; ++i) *f[i] = j.at(i).get<int64_t>();
  if (g.bn < 1 || g.n < 0 || g.c < 0 || g.h < 0 || g.w < 0 || g.pt < 0 || g.pl < 0 || g.pb < 0 ||
      g.pr < 0) {
    throw std::invalid_argument("bad geometry");
  }
  return g;
}

json EpilogueJson(const ops::Epilogue& e) {
  return {{"activation", static_cast<int>(e.activation)},
          {"clip_min", FloatJson(e.clip_min)},
          {"clip_max", FloatJson(e.clip_max)}};
}
ops::Epilogue EpilogueFrom(const json& j) {
  ops::Epilogue e;
  const int a = j.at("activation").get<int>();
  if (a < 0 || a > static_cast<int>(ops::Epilogue::Activation::kSigmoid)) {
    throw std::invalid_argument("bad activation");
  }
  e.activation = static_cast<ops::Epilogue::Activation>(a);
  e.clip_min = FloatFrom(j.at("clip_min"));
  e.clip_max = FloatFrom(j.at("clip_max"));
  return e;
}

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
  json j = {{"name", s.name},
            {"kind", s.kind},
            {"buffers", s.buffers},
            {"tensors", s.tensors},
            {"release", s.release}};
  std::visit(
      [&](const auto& op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, ConstStep>) {
          j["op"] = "const";
          j["slot"] = op.slot;
          j["constant"] = op.constant;
        } else if constexpr (std::is_same_v<T, RelayoutStep>) {
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
          j["dense"] = op.dense;
          j["out_slot"] = op.out_slot;
          j["out_shape"] = op.out_shape;
          j["n_real"] = op.n_real;
          j["m_rows"] = op.m_rows;
        } else if constexpr (std::is_same_v<T, PoolStep>) {
          j["op"] = "pool";
          j["src"] = op.src;
          j["dst"] = op.dst;
          j["in"] = GeoJson(op.in);
          j["out"] = GeoJson(op.out);
          j["global"] = op.global;
          j["window"] = {op.kh, op.kw, op.sh, op.sw, op.pt, op.pl};
        } else if constexpr (std::is_same_v<T, EltwiseStep>) {
          j["op"] = "eltwise";
          j["src"] = op.src;
          j["other"] = op.other;
          j["dst"] = op.dst;
          j["total"] = op.total;
          j["act"] = EpilogueJson(op.act);
        } else if constexpr (std::is_same_v<T, ConcatStep>) {
          j["op"] = "concat";
          j["srcs"] = op.srcs;
          j["blocks"] = op.blocks;
          j["dst"] = op.dst;
          j["n"] = op.n;
          j["out_blocks"] = op.out_blocks;
          j["plane"] = op.plane;
        } else if constexpr (std::is_same_v<T, ReferenceStep>) {
          j["op"] = "reference";
          j["node"] = NodeJson(op.node, extra, base);
          j["opset"] = op.opset;
          j["in_slots"] = op.in_slots;
          j["out_slots"] = op.out_slots;
        }
      },
      s.op);
  return j;
}

Step StepFrom(const json& j, const std::vector<graph::Tensor>& consts) {
  Step s;
  s.name = j.at("name").get<std::string>();
  s.kind = j.at("kind").get<std::string>();
  s.buffers = j.at("buffers").get<std::vector<int64_t>>();
  s.tensors = j.at("tensors").get<std::vector<int64_t>>();
  s.release = j.at("release").get<std::vector<int64_t>>();
  const std::string op = j.at("op").get<std::string>();
  if (op == "const") {
    s.op =
        ConstStep{.slot = j.at("slot").get<int64_t>(), .constant = j.at("constant").get<int64_t>()};
  } else if (op == "relayout") {
    s.op = RelayoutStep{.src = RefFrom(j.at("src")),
                        .src_geo = GeoFrom(j.at("src_geo")),
                        .dst = RefFrom(j.at("dst")),
                        .dst_geo = GeoFrom(j.at("dst_geo"))};
  } else if (op == "kernel") {
    KernelStep k;
    k.kernel = j.at("kernel").get<int64_t>();
    for (const json& a : j.at("args")) k.args.push_back(RefFrom(a));
    k.dense = j.at("dense").get<bool>();
    k.out_slot = j.at("out_slot").get<int64_t>();
    k.out_shape = j.at("out_shape").get<graph::Shape>();
    k.n_real = j.at("n_real").get<int64_t>();
    k.m_rows = j.at("m_rows").get<int64_t>();
    s.op = std::move(k);
  } else if (op == "pool") {
    const std::vector<int64_t> w = j.at("window").get<std::vector<int64_t>>();
    if (w.size() != 6) throw std::invalid_argument("a pool window has 6 numbers");
    s.op = PoolStep{.src = j.at("src").get<int64_t>(),
                    .dst = j.at("dst").get<int64_t>(),
                    .in = GeoFrom(j.at("in")),
                    .out = GeoFrom(j.at("out")),
                    .global = j.at("global").get<bool>(),
                    .kh = w[0],
                    .kw = w[1],
                    .sh = w[2],
                    .sw = w[3],
                    .pt = w[4],
                    .pl = w[5]};
  } else if (op == "eltwise") {
    s.op = EltwiseStep{.src = j.at("src").get<int64_t>(),
                       .other = j.at("other").get<int64_t>(),
                       .dst = j.at("dst").get<int64_t>(),
                       .total = j.at("total").get<int64_t>(),
                       .act = EpilogueFrom(j.at("act"))};
  } else if (op == "concat") {
    s.op = ConcatStep{.srcs = j.at("srcs").get<std::vector<int64_t>>(),
                      .blocks = j.at("blocks").get<std::vector<int64_t>>(),
                      .dst = j.at("dst").get<int64_t>(),
                      .n = j.at("n").get<int64_t>(),
                      .out_blocks = j.at("out_blocks").get<int64_t>(),
                      .plane = j.at("plane").get<int64_t>()};
  } else if (op == "reference") {
    s.op = ReferenceStep{.node = NodeFrom(j.at("node"), consts),
                         .opset = j.at("opset").get<int64_t>(),
                         .in_slots = j.at("in_slots").get<std::vector<int64_t>>(),
                         .out_slots = j.at("out_slots").get<std::vector<int64_t>>()};
  } else {
    throw std::invalid_argument(absl::StrCat("unknown step op '", op, "'"));
  }
  return s;
}

json ValueJson(const graph::ValueInfo& v, int64_t slot) {
  return {{"name", v.name},
          {"dtype", graph::DTypeName(v.type.dtype)},
          {"shape", v.type.shape},
          {"slot", slot}};
}

json StatsJson(const CompileStats& s) {
  return {{"kernel_steps", s.kernel_steps},
          {"tuned_kernels", s.tuned_kernels},
          {"unique_kernels", s.unique_kernels},
          {"fused_ops", s.fused_ops},
          {"layout_steps", s.layout_steps},
          {"blocked_steps", s.blocked_steps},
          {"reference_steps", s.reference_steps},
          {"arena_bytes", s.arena_bytes},
          {"intermediate_bytes", s.intermediate_bytes}};
}
CompileStats StatsFrom(const json& j) {
  CompileStats s;
  s.kernel_steps = j.value("kernel_steps", int64_t{0});
  s.tuned_kernels = j.value("tuned_kernels", int64_t{0});
  s.unique_kernels = j.value("unique_kernels", int64_t{0});
  s.fused_ops = j.value("fused_ops", int64_t{0});
  s.layout_steps = j.value("layout_steps", int64_t{0});
  s.blocked_steps = j.value("blocked_steps", int64_t{0});
  s.reference_steps = j.value("reference_steps", int64_t{0});
  s.arena_bytes = j.value("arena_bytes", int64_t{0});
  s.intermediate_bytes = j.value("intermediate_bytes", int64_t{0});
  return s;
}

// Every index of the plan is in range and every arena operand fits its buffer, so a tampered
// plan.json is an error, not a wild write.
absl::Status ValidatePlan(const Plan& p) {
  auto bad = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("plan.json is inconsistent: ", what));
  };
  const int64_t nb = static_cast<int64_t>(p.buffers.size());
  const int64_t nc = static_cast<int64_t>(p.consts.size());
  const int64_t ns = p.num_tensor_slots;
  for (const BufferInfo& b : p.buffers) {
    if (b.offset < 0 || b.bytes < 0 || b.offset % 64 != 0 || b.offset + b.bytes > p.arena_bytes) {
      return bad(absl::StrCat("buffer '", b.what, "' lies outside the arena"));
    }
  }
  auto buf_ok = [&](int64_t b, int64_t floats) {
    return b >= 0 && b < nb && floats * 4 <= p.buffers[static_cast<size_t>(b)].bytes;
  };
  auto slot_ok = [&](int64_t s) { return s >= 0 && s < ns; };
  auto ref_ok = [&](const Ref& r, int64_t floats) {
    switch (r.kind) {
      case Ref::Kind::kArena:
        return buf_ok(r.index, floats);
      case Ref::Kind::kConst:
        return r.index >= 0 && r.index < nc;
      case Ref::Kind::kTensor:
        return slot_ok(r.index);
    }
    return false;
  };
  for (const auto& [info, slot] : p.inputs) {
    if (!slot_ok(slot)) return bad(absl::StrCat("input '", info.name, "' slot"));
  }
  for (int64_t slot : p.outputs) {
    if (!slot_ok(slot)) return bad("output slot");
  }
  for (const Step& s : p.steps) {
    for (int64_t b : s.buffers) {
      if (b < 0 || b >= nb) return bad(absl::StrCat("step '", s.name, "' buffer"));
    }
    for (int64_t t : s.tensors) {
      if (!slot_ok(t)) return bad(absl::StrCat("step '", s.name, "' tensor slot"));
    }
    for (int64_t t : s.release) {
      if (!slot_ok(t)) return bad(absl::StrCat("step '", s.name, "' released slot"));
    }
    const bool ok = std::visit(
        [&](const auto& op) -> bool {
          using T = std::decay_t<decltype(op)>;
          if constexpr (std::is_same_v<T, ConstStep>) {
            return slot_ok(op.slot) && op.constant >= 0 && op.constant < nc;
          } else if constexpr (std::is_same_v<T, RelayoutStep>) {
            return op.src.kind != Ref::Kind::kConst && op.dst.kind != Ref::Kind::kConst &&
                   ref_ok(op.src, op.src_geo.elems()) && ref_ok(op.dst, op.dst_geo.elems()) &&
                   op.src_geo.n == op.dst_geo.n && op.src_geo.c == op.dst_geo.c &&
                   op.src_geo.h == op.dst_geo.h && op.src_geo.w == op.dst_geo.w &&
                   (op.src.kind != Ref::Kind::kTensor || Natural(op.src_geo)) &&
                   (op.dst.kind != Ref::Kind::kTensor || Natural(op.dst_geo));
          } else if constexpr (std::is_same_v<T, KernelStep>) {
            if (op.kernel < 0 || op.kernel >= p.num_kernels || op.args.size() > kMaxKernelArgs) {
              return false;
            }
            for (const Ref& r : op.args) {
              if (!ref_ok(r, 0)) return false;
            }
            return !op.dense || (slot_ok(op.out_slot) && op.out_shape.size() == 2 &&
                                 op.n_real <= op.out_shape[1] && op.m_rows == op.out_shape[0]);
          } else if constexpr (std::is_same_v<T, PoolStep>) {
            return buf_ok(op.src, op.in.elems()) && buf_ok(op.dst, op.out.elems()) &&
                   op.in.bn == op.out.bn;
          } else if constexpr (std::is_same_v<T, EltwiseStep>) {
            return buf_ok(op.src, op.total) && buf_ok(op.dst, op.total) &&
                   (op.other < 0 || buf_ok(op.other, op.total));
          } else if constexpr (std::is_same_v<T, ConcatStep>) {
            if (op.srcs.size() != op.blocks.size()) return false;
            int64_t sum = 0;
            for (size_t k = 0; k < op.srcs.size(); ++k) {
              if (op.blocks[k] < 0 || !buf_ok(op.srcs[k], op.n * op.blocks[k] * op.plane)) {
                return false;
              }
              sum += op.blocks[k];
            }
            return sum == op.out_blocks && buf_ok(op.dst, op.n * op.out_blocks * op.plane);
          } else if constexpr (std::is_same_v<T, ReferenceStep>) {
            for (int64_t t : op.in_slots) {
              if (t != -1 && !slot_ok(t)) return false;
            }
            for (int64_t t : op.out_slots) {
              if (t != -1 && !slot_ok(t)) return false;
            }
            return true;
          }
          return false;
        },
        s.op);
    if (!ok) {
      return bad(absl::StrCat("step '", s.name, "' (", s.kind, ") has operands out of range"));
    }
  }
  return absl::OkStatus();
}

// Compiles every kernel to an object (renamed loom_kernel_<i>) and links them with the manifest
// into one shared library; returns its path in the builder's cache.
absl::StatusOr<std::string> BuildLibrary(const std::vector<ops::KernelSource>& sources,
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
      sources.size(), ";\n");
  manifest.compile_flags = absl::StrJoin(paths, " ");
  tune::BuildResult lib = builder->BuildSource(manifest, ops::Config{});
  if (lib.error != tune::ErrorKind::kNone) {
    return absl::InternalError(absl::StrCat("linking model.so failed: ", lib.error_msg));
  }
  return lib.artifact_path;
}

}  // namespace

absl::Status CompiledModel::Export(const std::string& dir, const ExportOptions& options) const {
  const Impl& m = *impl_;
  const Plan& plan = m.plan;
  if (static_cast<int64_t>(m.kernel_sources.size()) != plan.num_kernels) {
    return absl::FailedPreconditionError(
        "this model was loaded from an artifact and has no kernel sources; export the model "
        "from CompiledModel::Compile instead (or copy the artifact directory)");
  }
  const std::filesystem::path root(dir);
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create the artifact directory ", dir, ": ", ec.message()));
  }
  LOOM_ASSIGN_OR_RETURN(std::string lib_path, BuildLibrary(m.kernel_sources, options.build));
  LOOM_ASSIGN_OR_RETURN(std::string lib_bytes, ReadFile(lib_path, "the linked library"));

  // Steps first: they add the tensors of reference-kernel attributes to the constants.
  std::vector<graph::Tensor> extra;
  const int64_t base = static_cast<int64_t>(plan.consts.size());
  json steps = json::array();
  for (const Step& s : plan.steps) steps.push_back(StepJson(s, &extra, base));

  std::string weights(kWeightsMagic, 8);
  json constants = json::array();
  auto add_const = [&](const graph::Tensor& t) {
    weights.resize(static_cast<size_t>(RoundUpTo(static_cast<int64_t>(weights.size()))), '\0');
    constants.push_back({{"dtype", graph::DTypeName(t.dtype())},
                         {"shape", t.shape()},
                         {"offset", static_cast<int64_t>(weights.size())}});
    weights.append(static_cast<const char*>(t.raw_data()), t.num_bytes());
  };
  for (const graph::Tensor& t : plan.consts) add_const(t);
  for (const graph::Tensor& t : extra) add_const(t);

  json buffers = json::array();
  for (const BufferInfo& b : plan.buffers) {
    buffers.push_back({{"offset", b.offset}, {"bytes", b.bytes}, {"what", b.what}});
  }
  json inputs = json::array(), outputs = json::array();
  for (const auto& [info, slot] : plan.inputs) inputs.push_back(ValueJson(info, slot));
  for (size_t k = 0; k < plan.outputs.size(); ++k) {
    outputs.push_back(ValueJson(plan.output_infos[k], plan.outputs[k]));
  }
  json j = {
      {"format", kFormatName},
      {"format_version", kArtifactFormatVersion},
      {"target", {{"isa", ops::IsaName(plan.isa)}, {"key", plan.target_key}}},
      {"library",
       {{"file", kArtifactLibraryFile},
        {"bytes", static_cast<int64_t>(lib_bytes.size())},
        {"fnv1a64", Hex(Fnv1a64(lib_bytes))},
        {"num_kernels", plan.num_kernels}}},
      {"weights",
       {{"file", kArtifactWeightsFile},
        {"bytes", static_cast<int64_t>(weights.size())},
        {"fnv1a64", Hex(Fnv1a64(weights))}}},
      {"constants", constants},
      {"arena_bytes", plan.arena_bytes},
      {"buffers", buffers},
      {"num_tensor_slots", plan.num_tensor_slots},
      {"inputs", inputs},
      {"outputs", outputs},
      {"num_threads", m.num_threads},
      {"stats", StatsJson(m.stats)},
      {"steps", steps},
  };
  LOOM_RETURN_IF_ERROR(WriteFileAtomic(root / kArtifactLibraryFile, lib_bytes));
  LOOM_RETURN_IF_ERROR(WriteFileAtomic(root / kArtifactWeightsFile, weights));
  // plan.json last: a directory with plan.json is a complete artifact.
  return WriteFileAtomic(root / kArtifactPlanFile, j.dump(1));
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

    // Weights: size and checksum, then the constants.
    const json& wj = j.at("weights");
    LOOM_ASSIGN_OR_RETURN(std::string weights,
                          ReadFile(root / kArtifactWeightsFile, "the artifact's weights"));
    if (static_cast<int64_t>(weights.size()) != wj.at("bytes").get<int64_t>() ||
        Hex(Fnv1a64(weights)) != wj.at("fnv1a64").get<std::string>() ||
        weights.compare(0, 8, kWeightsMagic) != 0) {
      return absl::DataLossError(absl::StrCat(
          (root / kArtifactWeightsFile).string(),
          " is corrupt (size or checksum differs from plan.json): export the artifact again"));
    }
    for (const json& c : j.at("constants")) {
      LOOM_ASSIGN_OR_RETURN(graph::DType dtype, ParseDType(c.at("dtype").get<std::string>()));
      const graph::Shape shape = c.at("shape").get<graph::Shape>();
      const int64_t offset = c.at("offset").get<int64_t>();
      LOOM_ASSIGN_OR_RETURN(graph::Tensor t, graph::Tensor::Create(dtype, shape));
      if (offset < 8 ||
          offset + static_cast<int64_t>(t.num_bytes()) > static_cast<int64_t>(weights.size())) {
        return absl::DataLossError(
            absl::StrCat(plan_path, ": a constant lies outside weights.bin"));
      }
      if (t.num_bytes() > 0) std::memcpy(t.raw_data(), weights.data() + offset, t.num_bytes());
      plan.consts.push_back(std::move(t));
    }

    // The plan.
    plan.arena_bytes = j.at("arena_bytes").get<int64_t>();
    for (const json& b : j.at("buffers")) {
      BufferInfo info;
      info.offset = b.at("offset").get<int64_t>();
      info.bytes = b.at("bytes").get<int64_t>();
      info.what = b.value("what", std::string());
      plan.buffers.push_back(std::move(info));
    }
    plan.num_tensor_slots = j.at("num_tensor_slots").get<int64_t>();
    for (const json& v : j.at("inputs")) {
      graph::ValueInfo info;
      info.name = v.at("name").get<std::string>();
      LOOM_ASSIGN_OR_RETURN(info.type.dtype, ParseDType(v.at("dtype").get<std::string>()));
      info.type.shape = v.at("shape").get<graph::Shape>();
      plan.inputs.push_back({std::move(info), v.at("slot").get<int64_t>()});
    }
    for (const json& v : j.at("outputs")) {
      graph::ValueInfo info;
      info.name = v.at("name").get<std::string>();
      LOOM_ASSIGN_OR_RETURN(info.type.dtype, ParseDType(v.at("dtype").get<std::string>()));
      info.type.shape = v.at("shape").get<graph::Shape>();
      plan.output_infos.push_back(std::move(info));
      plan.outputs.push_back(v.at("slot").get<int64_t>());
    }
    for (const json& s : j.at("steps")) plan.steps.push_back(StepFrom(s, plan.consts));
    impl->stats = StatsFrom(j.value("stats", json::object()));
    threads = options.num_threads > 0 ? options.num_threads : j.value("num_threads", 1);

    // The library: checksum, then load and resolve every kernel.
    const json& lj = j.at("library");
    plan.num_kernels = lj.at("num_kernels").get<int64_t>();
    const std::filesystem::path lib_path =
        std::filesystem::absolute(root / kArtifactLibraryFile, ec);
    LOOM_ASSIGN_OR_RETURN(std::string lib_bytes,
                          ReadFile(lib_path, "the artifact's kernel library"));
    if (static_cast<int64_t>(lib_bytes.size()) != lj.at("bytes").get<int64_t>() ||
        Hex(Fnv1a64(lib_bytes)) != lj.at("fnv1a64").get<std::string>()) {
      return absl::DataLossError(absl::StrCat(
          lib_path.string(),
          " is corrupt (size or checksum differs from plan.json): export the artifact again"));
    }
    LOOM_RETURN_IF_ERROR(ValidatePlan(plan));
    void* handle = dlopen(lib_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      return absl::InternalError(absl::StrCat("cannot load ", lib_path.string(), ": ", dlerror()));
    }
    impl->libraries.push_back(std::make_unique<SharedLibrary>(handle));
    const auto* count = static_cast<const int*>(dlsym(handle, "loom_artifact_num_kernels"));
    if (count == nullptr || *count != plan.num_kernels) {
      return absl::DataLossError(absl::StrCat(lib_path.string(), " does not hold the ",
                                              plan.num_kernels, " kernels plan.json expects"));
    }
    for (int64_t k = 0; k < plan.num_kernels; ++k) {
      const std::string sym = absl::StrCat("loom_kernel_", k);
      void* fn = dlsym(handle, sym.c_str());
      if (fn == nullptr) {
        return absl::DataLossError(absl::StrCat(lib_path.string(), " has no ", sym));
      }
      impl->kernels.push_back(reinterpret_cast<loom_kernel_fn>(fn));
    }
  } catch (const std::exception& e) {  // nlohmann::json errors and the decoders' invalid_argument
    return absl::DataLossError(absl::StrCat(plan_path, " is malformed: ", e.what()));
  }
  impl->stats.cache_hits = 0;
  impl->stats.compile_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Instantiate(std::move(impl), threads);
}

}  // namespace loom::runtime
