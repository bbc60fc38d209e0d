#include "loom/search/prior.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "loom/base/logging.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "nlohmann/json.hpp"

namespace loom::search {
namespace internal {
// builtin_priors.cc, generated from data/priors/*.json by loom/search/CMakeLists.txt.
extern const std::string_view kBuiltinPriors[];
extern const size_t kNumBuiltinPriors;
}  // namespace internal

namespace {

constexpr char kFormat[] = "loom-tuning-prior";
constexpr int kVersion = 1;

absl::Status TaskError(size_t i, const std::string& key, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "prior task ", i, key.empty() ? "" : absl::StrCat(" (", key, ")"), ": ", std::string(what)));
}

absl::StatusOr<PriorTask> ParseTask(const nlohmann::json& t, size_t i) {
  PriorTask task;
  if (!t.is_object()) return TaskError(i, "", "is not an object");
  auto text = [&](const char* field, std::string* out) -> absl::Status {
    auto it = t.find(field);
    if (it == t.end() || !it->is_string() || it->get<std::string>().empty()) {
      return TaskError(i, task.task_key, absl::StrCat("needs a non-empty string '", field, "'"));
    }
    *out = it->get<std::string>();
    return absl::OkStatus();
  };
  LOOM_RETURN_IF_ERROR(text("task", &task.task_key));
  LOOM_RETURN_IF_ERROR(text("template", &task.template_name));
  auto knobs = t.find("knobs");
  if (knobs == t.end() || !knobs->is_array() || knobs->empty()) {
    return TaskError(i, task.task_key, "needs a non-empty array 'knobs'");
  }
  for (const auto& k : *knobs) {
    if (!k.is_string()) return TaskError(i, task.task_key, "a knob name is not a string");
    task.knobs.push_back(k.get<std::string>());
  }
  auto configs = t.find("configs");
  if (configs == t.end() || !configs->is_array()) {
    return TaskError(i, task.task_key, "needs an array 'configs'");
  }
  const size_t width = task.knobs.size() + 1;
  for (size_t c = 0; c < configs->size(); ++c) {
    const auto& row = (*configs)[c];
    if (!row.is_array() || row.size() != width) {
      return TaskError(i, task.task_key,
                       absl::StrCat("config ", c, " is not an array of ", width,
                                    " numbers (the knobs' values, then GFLOPS)"));
    }
    PriorTask::Entry e;
    for (size_t k = 0; k + 1 < width; ++k) {
      if (!row[k].is_number_integer()) {
        return TaskError(
            i, task.task_key,
            absl::StrCat("config ", c, ": knob '", task.knobs[k], "' is not an integer"));
      }
      e.values.push_back(row[k].get<int64_t>());
    }
    if (!row[width - 1].is_number() || !(row[width - 1].get<double>() >= 0) ||
        !std::isfinite(row[width - 1].get<double>())) {
      return TaskError(i, task.task_key,
                       absl::StrCat("config ", c, ": GFLOPS is not a finite number >= 0"));
    }
    e.gflops = row[width - 1].get<double>();
    task.configs.push_back(std::move(e));
  }
  return task;
}

}  // namespace

std::string TargetClass(const ops::Target& target) { return TargetClassOfKey(target.Key()); }

std::string TargetClassOfKey(std::string_view target_key) {
  const size_t first = target_key.find(':');
  const size_t second = first == std::string_view::npos ? first : target_key.find(':', first + 1);
  return std::string(target_key.substr(0, second));
}

absl::StatusOr<TuningPrior> ParsePrior(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("prior is not valid JSON");
  if (!j.is_object() || j.value("format", "") != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a tuning prior (expected \"format\": \"", kFormat, "\")"));
  }
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer() || version->get<int>() != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat("prior version ",
                                                   version == j.end() ? "missing" : version->dump(),
                                                   "; this Loom reads version ", kVersion));
  }
  TuningPrior prior;
  auto target_class = j.find("target_class");
  if (target_class == j.end() || !target_class->is_string() ||
      target_class->get<std::string>().empty()) {
    return absl::InvalidArgumentError("prior needs a non-empty string 'target_class'");
  }
  prior.target_class = target_class->get<std::string>();
  if (auto source = j.find("source"); source != j.end() && source->is_string()) {
    prior.source = source->get<std::string>();
  }
  auto tasks = j.find("tasks");
  if (tasks == j.end() || !tasks->is_array()) {
    return absl::InvalidArgumentError("prior needs an array 'tasks'");
  }
  for (size_t i = 0; i < tasks->size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(PriorTask task, ParseTask((*tasks)[i], i));
    prior.tasks.push_back(std::move(task));
  }
  return prior;
}

absl::StatusOr<TuningPrior> ReadPriorFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read prior file '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<TuningPrior> prior = ParsePrior(text.str());
  if (!prior.ok()) {
    return absl::Status(prior.status().code(), absl::StrCat(path, ": ", prior.status().message()));
  }
  return prior;
}

std::string PriorToJson(const TuningPrior& prior) {
  // One task per line and one config row per entry keeps the file diffable and compact.
  std::string out =
      absl::StrCat("{\"format\": \"", kFormat, "\", \"version\": ", kVersion,
                   ", \"target_class\": ", nlohmann::json(prior.target_class).dump(),
                   ", \"source\": ", nlohmann::json(prior.source).dump(), ",\n\"tasks\": [");
  for (size_t i = 0; i < prior.tasks.size(); ++i) {
    const PriorTask& t = prior.tasks[i];
    nlohmann::json rows = nlohmann::json::array();
    for (const PriorTask::Entry& e : t.configs) {
      nlohmann::json row(e.values);
      // To 1 MFLOPS: a measurement's noise is larger.
      row.push_back(std::round(e.gflops * 1e3) / 1e3);
      rows.push_back(std::move(row));
    }
    nlohmann::ordered_json head = {
        {"task", t.task_key}, {"template", t.template_name}, {"knobs", t.knobs}};
    std::string head_text = head.dump();
    head_text.pop_back();  // the closing brace: the configs follow
    absl::StrAppend(&out, i == 0 ? "\n" : ",\n", head_text, ", \"configs\": ", rows.dump(), "}");
  }
  absl::StrAppend(&out, "\n]}\n");
  return out;
}

std::vector<PriorTransfer> PriorTransfersFor(const TuningPrior& prior,
                                             std::string_view template_name,
                                             const ops::Target& target,
                                             const ops::TemplateOptions& template_options,
                                             std::string_view exclude_task_key) {
  std::vector<PriorTransfer> out;
  if (prior.target_class != TargetClass(target)) return out;
  for (const PriorTask& task : prior.tasks) {
    if (task.template_name != template_name || task.task_key == exclude_task_key) continue;
    absl::StatusOr<graph::Workload> w = graph::ParseWorkloadKey(task.task_key);
    if (!w.ok()) continue;
    absl::StatusOr<std::unique_ptr<ops::Template>> tmpl =
        ops::MakeTemplate(*w, target, template_options);
    if (!tmpl.ok() || (*tmpl)->name() != template_name) continue;
    const ops::ConfigSpace& space = (*tmpl)->space();
    // The prior's knob order may differ from the space's; both must name the same knobs.
    if (space.knobs().size() != task.knobs.size()) continue;
    std::vector<int> position(space.knobs().size(), -1);
    for (size_t k = 0; k < task.knobs.size(); ++k) {
      const int p = space.KnobIndex(task.knobs[k]);
      if (p < 0) break;
      position[static_cast<size_t>(p)] = static_cast<int>(k);
    }
    if (std::find(position.begin(), position.end(), -1) != position.end()) continue;
    const double flops = graph::WorkloadFlops(*w);
    PriorTransfer transfer;
    transfer.task_key = task.task_key;
    std::vector<int64_t> choices(space.knobs().size());
    for (const PriorTask::Entry& e : task.configs) {
      bool in_space = true;
      for (size_t p = 0; p < choices.size() && in_space; ++p) {
        const std::vector<int64_t>& values = space.knobs()[p].values;
        auto it =
            std::find(values.begin(), values.end(), e.values[static_cast<size_t>(position[p])]);
        in_space = it != values.end();
        choices[p] = it - values.begin();
      }
      if (!in_space) continue;
      const ops::Config config = space.FromChoices(choices);
      if (!space.IsValid(config)) continue;
      tune::MeasureResult result;
      result.config = config;
      if (e.gflops > 0 && flops > 0) {
        result.costs = {flops / (e.gflops * 1e9)};
      } else {
        result.error = tune::ErrorKind::kRuntime;
        result.error_msg = "failed in the prior";
      }
      transfer.configs.push_back(config);
      transfer.results.push_back(std::move(result));
    }
    if (transfer.configs.empty()) continue;
    transfer.tmpl = *std::move(tmpl);
    out.push_back(std::move(transfer));
  }
  return out;
}

const TuningPrior* BuiltinPrior(const ops::Target& target) {
  // Parsed once, at first use; kept for the life of the process.
  static const std::vector<TuningPrior>* const priors = [] {
    auto* out = new std::vector<TuningPrior>();
    for (size_t i = 0; i < internal::kNumBuiltinPriors; ++i) {
      absl::StatusOr<TuningPrior> prior = ParsePrior(internal::kBuiltinPriors[i]);
      if (!prior.ok()) {
        base::LogWarning("built-in tuning prior ", i, " is unusable: ", prior.status().message());
        continue;
      }
      out->push_back(*std::move(prior));
    }
    return out;
  }();
  const std::string target_class = TargetClass(target);
  for (const TuningPrior& prior : *priors) {
    if (prior.target_class == target_class) return &prior;
  }
  return nullptr;
}

}  // namespace loom::search
