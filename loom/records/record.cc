#include "loom/records/record.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

constexpr ErrorKind kAllErrorKinds[] = {
    ErrorKind::kNone,        ErrorKind::kInstantiation, ErrorKind::kCompile,    ErrorKind::kRuntime,
    ErrorKind::kWrongAnswer, ErrorKind::kBuildTimeout,  ErrorKind::kRunTimeout, ErrorKind::kUnknown,
};

constexpr char kTimeFormat[] = "%Y-%m-%dT%H:%M:%E6SZ";

absl::Status FieldError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("field '", std::string(field), "' ", std::string(what)));
}

// The value of `field` in `j`; kInvalidArgument when missing.
absl::StatusOr<const nlohmann::ordered_json*> Field(const nlohmann::ordered_json& j,
                                                    std::string_view field) {
  auto it = j.find(field);
  if (it == j.end()) return FieldError(field, "is missing");
  return &*it;
}

absl::StatusOr<std::string> StringField(const nlohmann::ordered_json& j, std::string_view field) {
  auto v = Field(j, field);
  if (!v.ok()) return v.status();
  if (!(*v)->is_string()) return FieldError(field, "must be a string");
  return (*v)->get<std::string>();
}

absl::StatusOr<double> NumberField(const nlohmann::ordered_json& j, std::string_view field) {
  auto v = Field(j, field);
  if (!v.ok()) return v.status();
  if (!(*v)->is_number()) return FieldError(field, "must be a number");
  return (*v)->get<double>();
}

double Log2Ratio(int64_t a, int64_t b) {
  if (a == b) return 0;
  if (a <= 0 || b <= 0) return std::numeric_limits<double>::infinity();
  return std::fabs(std::log2(static_cast<double>(a) / static_cast<double>(b)));
}

bool IsConv(graph::TaskKind kind) {
  return kind == graph::TaskKind::kConv2d || kind == graph::TaskKind::kDepthwiseConv2d ||
         kind == graph::TaskKind::kGroupedConv2d;
}

}  // namespace

double Record::Gflops() const {
  if (!ok() || !(median_cost > 0) || std::isinf(median_cost)) return 0;
  return flops / median_cost / 1e9;
}

Record MakeRecord(const RecordContext& context, const MeasureResult& result,
                  std::string config_json, double build_seconds) {
  Record r;
  r.task_key = context.task_key;
  r.template_name = context.template_name;
  r.target_key = context.target_key;
  r.job_id = context.job_id;
  r.flops = context.flops;
  r.config_index = result.config.index;
  r.config_json = std::move(config_json);
  r.costs = result.costs;
  r.error = result.error;
  r.error_msg = result.error_msg;
  r.median_cost = MedianCost(r.costs, r.error);
  r.timestamp = result.timestamp;
  r.build_seconds = build_seconds;
  r.measure_seconds = result.measure_seconds;
  return r;
}

absl::StatusOr<ErrorKind> ParseErrorKind(std::string_view name) {
  for (ErrorKind kind : kAllErrorKinds) {
    if (name == ErrorKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown error kind '", std::string(name), "'"));
}

std::string RecordToJson(const Record& record) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["task_key"] = record.task_key;
  j["template"] = record.template_name;
  j["target_key"] = record.target_key;
  j["config_index"] = record.config_index;
  nlohmann::ordered_json config =
      nlohmann::ordered_json::parse(record.config_json, nullptr, /*allow_exceptions=*/false);
  // Embedded as an object for people; kept verbatim when it would not survive a parse + dump.
  if (config.is_discarded() || config.dump() != record.config_json) {
    j["config"] = record.config_json;
  } else {
    j["config"] = std::move(config);
  }
  j["costs"] = record.costs;
  if (std::isfinite(record.median_cost)) {
    j["median_cost"] = record.median_cost;
  } else {
    j["median_cost"] = nullptr;
  }
  j["flops"] = record.flops;
  j["error"] = ErrorKindName(record.error);
  j["error_msg"] = record.error_msg;
  j["timestamp"] = absl::FormatTime(kTimeFormat, record.timestamp, absl::UTCTimeZone());
  j["job_id"] = record.job_id;
  j["build_seconds"] = record.build_seconds;
  j["measure_seconds"] = record.measure_seconds;
  if (!record.agent_id.empty()) j["agent_id"] = record.agent_id;
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::ordered_json::error_handler_t::replace);
}

absl::StatusOr<Record> RecordFromJson(std::string_view line) {
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  Record r;
  auto set_string = [&](std::string_view field, std::string& out) -> absl::Status {
    auto v = StringField(j, field);
    if (!v.ok()) return v.status();
    out = *std::move(v);
    return absl::OkStatus();
  };
  auto set_number = [&](std::string_view field, double& out) -> absl::Status {
    auto v = NumberField(j, field);
    if (!v.ok()) return v.status();
    out = *v;
    return absl::OkStatus();
  };
  for (auto [field, out] : {std::pair<std::string_view, std::string*>{"task_key", &r.task_key},
                            {"template", &r.template_name},
                            {"target_key", &r.target_key},
                            {"error_msg", &r.error_msg},
                            {"job_id", &r.job_id}}) {
    if (absl::Status st = set_string(field, *out); !st.ok()) return st;
  }
  for (auto [field, out] : {std::pair<std::string_view, double*>{"flops", &r.flops},
                            {"build_seconds", &r.build_seconds},
                            {"measure_seconds", &r.measure_seconds}}) {
    if (absl::Status st = set_number(field, *out); !st.ok()) return st;
  }

  auto index = Field(j, "config_index");
  if (!index.ok()) return index.status();
  if (!(*index)->is_number_integer()) return FieldError("config_index", "must be an integer");
  r.config_index = (*index)->get<int64_t>();

  auto config = Field(j, "config");
  if (!config.ok()) return config.status();
  if ((*config)->is_string()) {
    r.config_json = (*config)->get<std::string>();
  } else if ((*config)->is_object()) {
    r.config_json = (*config)->dump();
  } else {
    return FieldError("config", "must be an object or a string");
  }

  auto costs = Field(j, "costs");
  if (!costs.ok()) return costs.status();
  if (!(*costs)->is_array()) return FieldError("costs", "must be an array of numbers");
  for (const auto& c : **costs) {
    if (!c.is_number()) return FieldError("costs", "must be an array of numbers");
    r.costs.push_back(c.get<double>());
  }

  auto error = StringField(j, "error");
  if (!error.ok()) return error.status();
  auto kind = ParseErrorKind(*error);
  if (!kind.ok()) return FieldError("error", std::string(kind.status().message()));
  r.error = *kind;

  auto timestamp = StringField(j, "timestamp");
  if (!timestamp.ok()) return timestamp.status();
  std::string parse_error;
  if (!absl::ParseTime(absl::RFC3339_full, *timestamp, &r.timestamp, &parse_error)) {
    return FieldError("timestamp", absl::StrCat("is not an RFC 3339 time: ", parse_error));
  }
  if (j.contains("agent_id")) {
    if (absl::Status st = set_string("agent_id", r.agent_id); !st.ok()) return st;
  }
  r.median_cost = MedianCost(r.costs, r.error);
  return r;
}

double WorkloadDistance(const graph::Workload& a, const graph::Workload& b) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (a.kind != b.kind || a.dtype != b.dtype) return kInf;
  double d = 0;
  if (IsConv(a.kind)) {
    if (a.r != b.r || a.s != b.s || a.stride_h != b.stride_h || a.stride_w != b.stride_w ||
        a.dilation_h != b.dilation_h || a.dilation_w != b.dilation_w) {
      return kInf;
    }
    for (auto [x, y] : {std::pair{a.n, b.n},
                        {a.c, b.c},
                        {a.h, b.h},
                        {a.w, b.w},
                        {a.k, b.k},
                        {a.groups, b.groups}}) {
      d += Log2Ratio(x, y);
    }
    for (auto [x, y] : {std::pair{a.pad_top, b.pad_top},
                        {a.pad_left, b.pad_left},
                        {a.pad_bottom, b.pad_bottom},
                        {a.pad_right, b.pad_right}}) {
      if (x != y) d += 0.25;
    }
  } else if (a.kind == graph::TaskKind::kDense) {
    if (a.trans_a != b.trans_a || a.trans_b != b.trans_b) return kInf;
    for (auto [x, y] : {std::pair{a.m, b.m}, {a.n, b.n}, {a.k, b.k}}) d += Log2Ratio(x, y);
  } else {
    // Operand layouts and broadcast patterns change the kernel's memory traffic: only workloads
    // that read their operands alike are comparable.
    if (a.trans_a != b.trans_a || a.trans_b != b.trans_b || a.batch_a.size() != b.batch_a.size()) {
      return kInf;
    }
    for (size_t i = 0; i < a.batch_a.size(); ++i) {
      if ((a.batch_a[i] == 1) != (b.batch_a[i] == 1) ||
          (a.batch_b[i] == 1) != (b.batch_b[i] == 1)) {
        return kInf;
      }
    }
    for (auto [x, y] : {std::pair{a.b, b.b}, {a.m, b.m}, {a.n, b.n}, {a.k, b.k}}) {
      d += Log2Ratio(x, y);
    }
  }
  return d;
}

}  // namespace loom::tune
