#include "loom/service/request_checks.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>
#include <set>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/graph/shape_spec.h"
#include "loom/ops/target.h"
#include "loom/search/tuner.h"
#include "loom/tune/tune_job.h"

namespace loom::service {
namespace {

absl::Status Capped(absl::string_view field, double value, double cap, absl::string_view flag) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " ", value, " is above this daemon's limit of ", cap, " (", flag, ")"));
}

absl::Status ValidateMeasureSpec(const v1::MeasureSpec& m, const MeasureCaps& caps) {
  if (m.min_repeat_ms() < 0 || m.repeat() < 0 || m.number() < 0 || !(m.run_timeout_s() >= 0) ||
      !std::isfinite(m.run_timeout_s())) {
    return absl::InvalidArgumentError("measure fields must be finite and >= 0");
  }
  if (m.min_repeat_ms() > caps.max_min_repeat_ms) {
    return Capped("measure.min_repeat_ms", m.min_repeat_ms(), caps.max_min_repeat_ms,
                  "--max-measure-min-repeat-ms");
  }
  if (m.repeat() > caps.max_repeat) {
    return Capped("measure.repeat", m.repeat(), caps.max_repeat, "--max-measure-repeat");
  }
  if (m.number() > caps.max_number) {
    return Capped("measure.number", m.number(), caps.max_number, "--max-measure-number");
  }
  if (m.run_timeout_s() > caps.max_run_timeout_s) {
    return Capped("measure.run_timeout_s", m.run_timeout_s(), caps.max_run_timeout_s,
                  "--max-measure-run-timeout");
  }
  return absl::OkStatus();
}

// task_indices: each at most once, not negative, and not combined with max_tasks (which would
// leave it unclear whether the limit applies before or after the pick). The upper bound is
// checked once the model's tasks are known.
absl::Status ValidateTaskIndices(const v1::SubmitJobRequest& r) {
  if (r.task_indices().empty()) return absl::OkStatus();
  if (r.max_tasks() > 0) {
    return absl::InvalidArgumentError(
        "set task_indices or max_tasks, not both (task_indices already picks the tasks)");
  }
  if (r.task_indices_size() > 100000) return absl::InvalidArgumentError("too many task indices");
  std::set<int> seen;
  for (int i : r.task_indices()) {
    if (i < 0) return absl::InvalidArgumentError(absl::StrCat("task index ", i, " is negative"));
    if (!seen.insert(i).second) {
      return absl::InvalidArgumentError(absl::StrCat("task index ", i, " is listed twice"));
    }
  }
  return absl::OkStatus();
}

// Where a TensorProto's data is, for the external-data scan.
bool IsExternal(const onnx::TensorProto& t) {
  return (t.has_data_location() && t.data_location() == onnx::TensorProto::EXTERNAL) ||
         t.external_data_size() > 0;
}

absl::Status External(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      what,
      " uses external data: a model sent to the daemon must carry all its data in the file "
      "(save it without external data)"));
}

absl::Status ScanGraph(const onnx::GraphProto& g, int depth);

absl::Status ScanTensor(const onnx::TensorProto& t, absl::string_view what) {
  return IsExternal(t) ? External(what) : absl::OkStatus();
}

absl::Status ScanSparse(const onnx::SparseTensorProto& s, absl::string_view what) {
  if (IsExternal(s.values()) || IsExternal(s.indices())) return External(what);
  return absl::OkStatus();
}

absl::Status ScanNode(const onnx::NodeProto& n, int depth) {
  for (const onnx::AttributeProto& a : n.attribute()) {
    const std::string what =
        absl::StrCat("attribute '", a.name(), "' of node '", n.name(), "' (", n.op_type(), ")");
    if (a.has_t()) LOOM_RETURN_IF_ERROR(ScanTensor(a.t(), what));
    for (const onnx::TensorProto& t : a.tensors()) LOOM_RETURN_IF_ERROR(ScanTensor(t, what));
    if (a.has_sparse_tensor()) LOOM_RETURN_IF_ERROR(ScanSparse(a.sparse_tensor(), what));
    for (const onnx::SparseTensorProto& s : a.sparse_tensors()) {
      LOOM_RETURN_IF_ERROR(ScanSparse(s, what));
    }
    if (a.has_g()) LOOM_RETURN_IF_ERROR(ScanGraph(a.g(), depth + 1));
    for (const onnx::GraphProto& g : a.graphs()) LOOM_RETURN_IF_ERROR(ScanGraph(g, depth + 1));
  }
  return absl::OkStatus();
}

absl::Status ScanGraph(const onnx::GraphProto& g, int depth) {
  // Protobuf itself stops parsing at 100 levels of nesting; this only bounds our recursion.
  if (depth > 64) return absl::InvalidArgumentError("the model's subgraphs nest too deeply");
  for (const onnx::TensorProto& t : g.initializer()) {
    LOOM_RETURN_IF_ERROR(ScanTensor(t, absl::StrCat("initializer '", t.name(), "'")));
  }
  for (const onnx::SparseTensorProto& s : g.sparse_initializer()) {
    LOOM_RETURN_IF_ERROR(
        ScanSparse(s, absl::StrCat("sparse initializer '", s.values().name(), "'")));
  }
  for (const onnx::NodeProto& n : g.node()) LOOM_RETURN_IF_ERROR(ScanNode(n, depth));
  return absl::OkStatus();
}

bool IsPathStart(const std::string& s, size_t i) {
  if (s[i] != '/') return false;
  if (i == 0) return true;
  const char prev = s[i - 1];
  return prev == ' ' || prev == '\'' || prev == '"' || prev == '(' || prev == '=' || prev == ':';
}

bool IsPathChar(char c) { return c != ' ' && c != '\'' && c != '"' && c != ')' && c != ','; }

bool IsListChar(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) || c == ',' || c == ' ' || c == '-' ||
         c == '+' || c == '.' || c == 'e' || c == 'E';
}

}  // namespace

std::string TargetKind(const v1::SubmitJobRequest& spec) {
  std::string t = spec.target().empty() ? "cpu" : spec.target();
  return std::string(t.substr(0, t.find(':')));
}

std::string NewRequestId() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

std::string NewSessionSecret() {
  std::random_device entropy;
  std::string secret;
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&secret, "%08x", entropy());
  return secret;
}

bool SameSecret(std::string_view shown, std::string_view secret) {
  if (secret.empty() || shown.size() != secret.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < secret.size(); ++i) {
    diff |= static_cast<unsigned char>(shown[i] ^ secret[i]);
  }
  return diff == 0;
}

absl::Status ValidateRequestId(std::string_view id) {
  constexpr size_t kMaxRequestId = 64;
  if (id.size() > kMaxRequestId) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id of ", id.size(), " bytes (at most ", kMaxRequestId, ")"));
  }
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      return absl::InvalidArgumentError(
          "request_id may hold only letters, digits and . _ : - (a client-generated id)");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSubmit(const v1::SubmitJobRequest& r, const MeasureCaps& caps) {
  const std::string kind = TargetKind(r);
  if (kind != "cpu" && kind != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown target '", r.target().substr(0, 64), "' (cpu or cuda)"));
  }
  if (kind == "cuda") LOOM_RETURN_IF_ERROR(ops::ParseTarget(r.target()).status());
  if (r.name().size() > 256) return absl::InvalidArgumentError("job name longer than 256 bytes");
  LOOM_RETURN_IF_ERROR(ValidateRequestId(r.request_id()));
  if (r.priority() < -1000 || r.priority() > 1000) {
    return absl::InvalidArgumentError("priority must be in [-1000, 1000]");
  }
  if (!(r.latency_goal_ms() >= 0) || !std::isfinite(r.latency_goal_ms())) {
    return absl::InvalidArgumentError("latency_goal_ms must be finite and >= 0");
  }
  if (r.input_shapes_size() > 1024) return absl::InvalidArgumentError("too many input shapes");
  for (const std::string& s : r.input_shapes()) {
    LOOM_RETURN_IF_ERROR(graph::ParseInputShape(s).status());
  }
  LOOM_RETURN_IF_ERROR(ValidateTaskIndices(r));
  LOOM_RETURN_IF_ERROR(ValidateMeasureSpec(r.measure(), caps));
  {
    // Written so that NaN fails it.
    const double max_budget_s = absl::ToDoubleSeconds(tune::kMaxTimeBudget);
    if (!(r.time_budget_seconds() >= 0 && r.time_budget_seconds() <= max_budget_s)) {
      return absl::InvalidArgumentError(absl::StrCat("time_budget_seconds must be in [0, ",
                                                     absl::ToInt64Seconds(tune::kMaxTimeBudget),
                                                     "], got ", r.time_budget_seconds()));
    }
    LOOM_RETURN_IF_ERROR(tune::ValidateJobBudget({.total_trials = r.total_trials()}));
  }
  if (r.spread() < 0 || r.spread() > tune::kMaxSpread) {
    return absl::InvalidArgumentError(
        absl::StrCat("spread must be in [0, ", tune::kMaxSpread, "], got ", r.spread()));
  }
  if (r.has_simulated()) {
    const v1::SimulatedWorkload& w = r.simulated();
    if (w.tasks() < 1 || w.tasks() > 10000 || w.rounds() < 1 || w.rounds() > 100000) {
      return absl::InvalidArgumentError(
          "simulated workload: tasks must be in [1, 10000] and rounds in [1, 100000]");
    }
    for (double s :
         {w.propose_seconds(), w.build_seconds(), w.measure_seconds(), w.update_seconds()}) {
      if (!(s >= 0) || s > 3600 || !std::isfinite(s)) {
        return absl::InvalidArgumentError("simulated workload: stage seconds must be in [0, 3600]");
      }
    }
    return absl::OkStatus();
  }
  if (r.model_case() == v1::SubmitJobRequest::MODEL_NOT_SET) {
    return absl::InvalidArgumentError("no model: set zoo_model, onnx_model or simulated");
  }
  if (r.trials() < 1 || r.trials() > 1000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("trials must be in [1, 1000000], got ", r.trials()));
  }
  if (r.batch_size() < 0) return absl::InvalidArgumentError("batch_size must be >= 0");
  if (r.batch_size() > caps.max_batch) {
    return Capped("batch_size", r.batch_size(), caps.max_batch, "--max-measure-batch");
  }
  if (r.max_tasks() < 0) return absl::InvalidArgumentError("max_tasks must be >= 0");
  const std::vector<std::string> kinds = search::TunerKinds();  // "": the default
  if (!r.tuner().empty() && std::find(kinds.begin(), kinds.end(), r.tuner()) == kinds.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown tuner '", r.tuner().substr(0, 64),
                                                   "' (", absl::StrJoin(kinds, ", "), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckUploadedModel(std::string_view bytes) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        "model: the upload is not a valid ONNX model (protobuf parse failed)");
  }
  absl::Status st = ScanGraph(model.graph(), 0);
  for (int i = 0; st.ok() && i < model.functions_size(); ++i) {
    for (const onnx::NodeProto& n : model.functions(i).node()) {
      st = ScanNode(n, 1);
      if (!st.ok()) break;
    }
  }
  for (int i = 0; st.ok() && i < model.training_info_size(); ++i) {
    st = ScanGraph(model.training_info(i).initialization(), 1);
    if (st.ok()) st = ScanGraph(model.training_info(i).algorithm(), 1);
  }
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("model: ", st.message()));
  return absl::OkStatus();
}

std::string PublicModelError(absl::string_view message, absl::string_view hide) {
  std::string s(message);
  if (!hide.empty()) {
    s = absl::StrReplaceAll(s, {{absl::StrCat(hide, "/model.onnx"), "the uploaded model"},
                                {std::string(hide), "the uploaded model"}});
  }
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (c == '\n' || c == '\r' || c == '\t') {
      out.push_back(' ');
      ++i;
      continue;
    }
    if (IsPathStart(s, i)) {
      while (i < s.size() && IsPathChar(s[i])) ++i;
      out += "<path>";
      continue;
    }
    if (c == '[' && (i == 0 || !std::isalnum(static_cast<unsigned char>(s[i - 1])))) {
      size_t j = i + 1;
      bool digit = false;
      while (j < s.size() && IsListChar(s[j])) {
        digit = digit || std::isdigit(static_cast<unsigned char>(s[j]));
        ++j;
      }
      if (j < s.size() && s[j] == ']' && digit) {
        out += "[...]";
        i = j + 1;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  constexpr size_t kMax = 300;
  if (out.size() > kMax) {
    out.resize(kMax - 3);
    out += "...";
  }
  return out;
}

double PeakFlopsBound(const v1::DeviceInfo& device) {
  if (device.kind() == "cuda") return 5e15;
  // "cpu:3" or "cpu:2-5": the cores the device pins its measurements to.
  int cores = 1;
  std::vector<std::string> parts = absl::StrSplit(device.name(), absl::MaxSplits(':', 1));
  if (parts.size() == 2) {
    std::vector<std::string> range = absl::StrSplit(parts[1], absl::MaxSplits('-', 1));
    int first = 0, last = 0;
    if (range.size() == 2 && absl::SimpleAtoi(range[0], &first) &&
        absl::SimpleAtoi(range[1], &last) && last >= first) {
      cores = std::min(last - first + 1, 1024);
    }
  }
  // fp32 FLOP per cycle and core: two FMA pipes x lanes x 2 (AVX-512: 16 lanes; otherwise 8).
  const double per_cycle = device.isa() == "avx512" ? 64 : 32;
  return cores * per_cycle * 6.5e9 * 1.5;
}

absl::Status CheckBuildCacheCounters(const v1::HeartbeatRequest& request, int64_t hits_before,
                                     int64_t misses_before) {
  auto check = [](absl::string_view name, int64_t value, int64_t before) {
    if (value < 0 || value > kMaxBuildCacheCount) {
      return absl::InvalidArgumentError(
          absl::StrCat("heartbeat ", name, " ", value, " is outside 0..", kMaxBuildCacheCount));
    }
    if (value < before) {
      return absl::InvalidArgumentError(absl::StrCat(
          "heartbeat ", name, " ", value, " is below the ", before,
          " this agent reported before (a counter since the agent started never goes down)"));
    }
    return absl::OkStatus();
  };
  LOOM_RETURN_IF_ERROR(check("build_cache_hits", request.build_cache_hits(), hits_before));
  return check("build_cache_misses", request.build_cache_misses(), misses_before);
}

absl::Status CheckBuildOutput(const v1::BuildOutput& output, const v1::BuildInput& input) {
  if (output.artifacts_size() != input.config_indices_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a build stage must report one artifact per "
                     "config (",
                     input.config_indices_size(), ")"));
  }
  for (int i = 0; i < output.artifacts_size(); ++i) {
    const v1::Artifact& a = output.artifacts(i);
    if (a.config_index() != input.config_indices(i)) {
      return absl::PermissionDeniedError(absl::StrCat("artifact ", i, " names config ",
                                                      a.config_index(), " but config ",
                                                      input.config_indices(i), " was asked"));
    }
    if (!v1::ErrorKind_IsValid(a.error())) {
      return absl::InvalidArgumentError(absl::StrCat("artifact ", i, " has an unknown error kind"));
    }
    if (a.error() == v1::ERROR_KIND_NONE) {
      const std::string& h = a.content_hash();
      if (h.size() != 64 || h.find_first_not_of("0123456789abcdef") != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("artifact ", i, " has no SHA-256 content hash"));
      }
    }
    if (!(a.build_seconds() >= 0) || !std::isfinite(a.build_seconds())) {
      return absl::InvalidArgumentError(absl::StrCat("artifact ", i, " has a bad build time"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMeasureOutput(const v1::MeasureOutput& output, const v1::BuildOutput& artifacts,
                                const MeasureBounds& bounds) {
  if (output.results_size() != artifacts.artifacts_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a measure stage must report one result per "
                     "artifact (",
                     artifacts.artifacts_size(), ")"));
  }
  for (int i = 0; i < output.results_size(); ++i) {
    const v1::MeasureResult& r = output.results(i);
    const v1::Artifact& a = artifacts.artifacts(i);
    if (r.config_index() != a.config_index()) {
      return absl::PermissionDeniedError(absl::StrCat("result ", i, " names config ",
                                                      r.config_index(), " but config ",
                                                      a.config_index(), " was sent"));
    }
    if (!v1::ErrorKind_IsValid(r.error())) {
      return absl::InvalidArgumentError(absl::StrCat("result ", i, " has an unknown error kind"));
    }
    if (r.error() != v1::ERROR_KIND_NONE) continue;
    if (a.error() != v1::ERROR_KIND_NONE) {
      return absl::PermissionDeniedError(
          absl::StrCat("config ", r.config_index(), " succeeded although its build failed"));
    }
    if (!r.checked()) {
      return absl::PermissionDeniedError(
          absl::StrCat("config ", r.config_index(), " succeeded without the wrong-answer check"));
    }
    if (r.costs_size() > bounds.max_costs) {
      return absl::PermissionDeniedError(absl::StrCat("config ", r.config_index(), " has ",
                                                      r.costs_size(), " costs for at most ",
                                                      bounds.max_costs, " repeats"));
    }
    if (bounds.peak_flops > 0 && bounds.flops > 0) {
      for (double c : r.costs()) {
        if (c > 0 && std::isfinite(c) && bounds.flops / c > bounds.peak_flops) {
          return absl::PermissionDeniedError(absl::StrFormat(
              "config %d: a cost of %g s is %.4g GFLOPS, above the device's physical bound of "
              "%.4g GFLOPS",
              r.config_index(), c, bounds.flops / c / 1e9, bounds.peak_flops / 1e9));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::service
