#include "loom/experiment/spec.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace loom::experiment {
namespace {

absl::Status Error(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path.empty() ? "spec" : path, ": ", what));
}

std::string Child(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}

absl::Status CheckKeys(const YAML::Node& node, const std::string& path,
                       const std::set<std::string>& allowed) {
  if (!node.IsMap()) return Error(path, "expected a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (!allowed.contains(key)) {
      return Error(path, absl::StrCat("unknown key '", key, "' at ", Child(path, key),
                                      " (allowed: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Optional(const YAML::Node& node, const std::string& path, const char* key, T* out) {
  YAML::Node v = node[key];
  if (!v) return absl::OkStatus();
  if (!v.IsScalar()) return Error(Child(path, key), "expected a scalar value");
  try {
    *out = v.as<T>();
  } catch (const YAML::Exception&) {
    return Error(Child(path, key), absl::StrCat("cannot read '", v.Scalar(), "'"));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status OptionalList(const YAML::Node& node, const std::string& path, const char* key,
                          std::vector<T>* out) {
  YAML::Node v = node[key];
  if (!v) return absl::OkStatus();
  if (!v.IsSequence()) return Error(Child(path, key), "expected a list");
  out->clear();
  for (size_t i = 0; i < v.size(); ++i) {
    try {
      out->push_back(v[i].as<T>());
    } catch (const YAML::Exception&) {
      return Error(absl::StrCat(Child(path, key), "[", i, "]"), "bad value");
    }
  }
  return absl::OkStatus();
}

// "digits" non-empty and all decimal digits.
bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The form of `target` and `device` (tune::LocalMachine checks them against the machine).
absl::Status CheckTarget(const std::string& target, const std::string& device) {
  const bool cuda = target == "cuda" || (target.rfind("cuda:sm_", 0) == 0 &&
                                         AllDigits(std::string_view(target).substr(8)));
  if (target != "cpu" && !cuda) {
    return Error("target",
                 absl::StrCat("unknown target '", target,
                              "' (expected: cpu, cuda or cuda:sm_XY such as cuda:sm_90)"));
  }
  if (device.empty()) return absl::OkStatus();
  if (!cuda) return Error("device", "names a GPU (cuda:N) and needs target cuda");
  if (device.rfind("cuda:", 0) != 0 || !AllDigits(std::string_view(device).substr(5))) {
    return Error("device", absl::StrCat("expected cuda:N (such as cuda:0), got '", device, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExperimentSpec> ParseRoot(const YAML::Node& root) {
  LOOM_RETURN_IF_ERROR(
      CheckKeys(root, "",
                {"name", "jobs", "setups", "target", "device", "device_cores", "cpu_slots",
                 "build_slots", "min_repeat_ms", "repeat", "run_timeout_s", "distortion_samples",
                 "distortion_seed", "ranking_top", "repetitions", "latency_runs",
                 "latency_min_seconds", "simulate", "job_counts"}));
  ExperimentSpec spec;
  LOOM_RETURN_IF_ERROR(Optional(root, "", "name", &spec.name));
  LOOM_RETURN_IF_ERROR(OptionalList(root, "", "setups", &spec.setups));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "target", &spec.target));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "device", &spec.device));
  LOOM_RETURN_IF_ERROR(CheckTarget(spec.target, spec.device));
  LOOM_RETURN_IF_ERROR(OptionalList(root, "", "device_cores", &spec.device_cores));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "cpu_slots", &spec.cpu_slots));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "build_slots", &spec.build_slots));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "min_repeat_ms", &spec.min_repeat_ms));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "repeat", &spec.repeat));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "run_timeout_s", &spec.run_timeout_s));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "distortion_samples", &spec.distortion_samples));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "distortion_seed", &spec.distortion_seed));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "ranking_top", &spec.ranking_top));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "repetitions", &spec.repetitions));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "latency_runs", &spec.latency_runs));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "latency_min_seconds", &spec.latency_min_seconds));
  LOOM_RETURN_IF_ERROR(Optional(root, "", "simulate", &spec.simulate));
  LOOM_RETURN_IF_ERROR(OptionalList(root, "", "job_counts", &spec.job_counts));
  const std::set<std::string> known = {"dedicated", "sequential", "uncontrolled", "interleaved",
                                       "predictive"};
  if (spec.setups.empty()) return Error("setups", "needs at least one setup");
  for (size_t i = 0; i < spec.setups.size(); ++i) {
    if (!known.contains(spec.setups[i])) {
      return Error(absl::StrCat("setups[", i, "]"),
                   absl::StrCat("unknown setup '", spec.setups[i],
                                "' (expected: ", absl::StrJoin(known, ", "), ")"));
    }
  }
  if (spec.cpu_slots < 0) return Error("cpu_slots", "must be >= 0");
  if (spec.build_slots < 0) return Error("build_slots", "must be >= 0");
  if (spec.min_repeat_ms < 0) return Error("min_repeat_ms", "must be >= 0");
  if (spec.repeat < 1) return Error("repeat", "must be >= 1");
  if (!(spec.run_timeout_s > 0)) return Error("run_timeout_s", "must be > 0");
  if (spec.distortion_samples < 0) {
    return Error("distortion_samples", "must be >= 0 (0 turns the re-measurement off)");
  }
  if (spec.ranking_top < 1) return Error("ranking_top", "must be >= 1");
  if (spec.repetitions < 1 || spec.repetitions > 100) {
    return Error("repetitions", "must be between 1 and 100");
  }
  if (spec.latency_runs < 0) {
    return Error("latency_runs", "must be >= 0 (0 turns the final-latency measurement off)");
  }
  if (!(spec.latency_min_seconds >= 0)) return Error("latency_min_seconds", "must be >= 0");
  std::set<std::string> seen;
  for (size_t i = 0; i < spec.setups.size(); ++i) {
    if (!seen.insert(spec.setups[i]).second) {
      return Error(absl::StrCat("setups[", i, "]"),
                   absl::StrCat("setup '", spec.setups[i], "' is listed twice"));
    }
  }
  YAML::Node jobs = root["jobs"];
  if (!jobs || !jobs.IsSequence() || jobs.size() == 0) {
    return Error("jobs", "needs a list of at least one job");
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    const std::string path = absl::StrCat("jobs[", i, "]");
    LOOM_RETURN_IF_ERROR(
        CheckKeys(jobs[i], path, {"model", "tasks", "trials", "batch_size", "tuner", "seed"}));
    ExperimentJobSpec job;
    LOOM_RETURN_IF_ERROR(Optional(jobs[i], path, "model", &job.model));
    if (job.model.empty()) return Error(path, "missing 'model' (zoo:NAME or an .onnx file)");
    LOOM_RETURN_IF_ERROR(OptionalList(jobs[i], path, "tasks", &job.tasks));
    LOOM_RETURN_IF_ERROR(Optional(jobs[i], path, "trials", &job.trials));
    LOOM_RETURN_IF_ERROR(Optional(jobs[i], path, "batch_size", &job.batch_size));
    LOOM_RETURN_IF_ERROR(Optional(jobs[i], path, "tuner", &job.tuner));
    LOOM_RETURN_IF_ERROR(Optional(jobs[i], path, "seed", &job.seed));
    if (job.trials < 1) return Error(Child(path, "trials"), "must be >= 1");
    if (job.batch_size < 1) return Error(Child(path, "batch_size"), "must be >= 1");
    for (int64_t t : job.tasks) {
      if (t < 0) return Error(Child(path, "tasks"), "task indices must be >= 0");
    }
    spec.jobs.push_back(std::move(job));
  }
  for (size_t i = 0; i < spec.job_counts.size(); ++i) {
    const int n = spec.job_counts[i];
    if (n < 1 || n > static_cast<int>(spec.jobs.size())) {
      return Error(absl::StrCat("job_counts[", i, "]"),
                   absl::StrCat(n, " is not between 1 and the ", spec.jobs.size(), " jobs listed"));
    }
    if (i > 0 && n <= spec.job_counts[i - 1]) {
      return Error(absl::StrCat("job_counts[", i, "]"), "counts must increase");
    }
  }
  return spec;
}

}  // namespace

absl::StatusOr<ExperimentSpec> ParseExperimentSpec(std::string_view yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: not valid YAML: ", e.what()));
  }
  // Structures the checks above do not expect (a key that is a list or a mapping) surface as
  // yaml-cpp conversion exceptions: each is an invalid spec, never an escaping exception.
  try {
    return ParseRoot(root);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: ", e.what()));
  }
}

absl::StatusOr<ExperimentSpec> LoadExperimentSpec(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open the experiment spec ", path));
  std::stringstream text;
  text << f.rdbuf();
  auto spec = ParseExperimentSpec(text.str());
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

}  // namespace loom::experiment
