#include "loom/sim/spec.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"
#include "loom/sched/policy.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace loom::sim {
namespace {

using sched::StageKind;

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
    std::string key = kv.first.as<std::string>();
    if (!allowed.contains(key)) {
      return Error(path, absl::StrCat("unknown key '", key, "' at ", Child(path, key),
                                      " (allowed: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<T> Scalar(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) return Error(path, "expected a scalar value");
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    return Error(path, absl::StrCat("cannot read '", node.Scalar(), "' as a ",
                                    std::is_same_v<T, std::string> ? "string"
                                    : std::is_floating_point_v<T>  ? "number"
                                                                   : "integer"));
  }
}

// Reads node[key] into *out when present.
template <typename T>
absl::Status Optional(const YAML::Node& node, const std::string& path, const char* key, T* out) {
  YAML::Node v = node[key];
  if (!v) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(*out, Scalar<T>(v, Child(path, key)));
  return absl::OkStatus();
}

absl::Status NonNegative(double v, const std::string& path) {
  if (!(v >= 0) || !std::isfinite(v)) return Error(path, "must be a finite number >= 0");
  return absl::OkStatus();
}

absl::StatusOr<DurationDist> ParseDuration(const YAML::Node& node, const std::string& path,
                                           StageKind kind, const std::string& base_dir) {
  DurationDist d;
  if (node.IsScalar()) {  // shorthand: a constant number of seconds
    LOOM_ASSIGN_OR_RETURN(d.mean_s, Scalar<double>(node, path));
    LOOM_RETURN_IF_ERROR(NonNegative(d.mean_s, path));
    return d;
  }
  LOOM_RETURN_IF_ERROR(CheckKeys(node, path, {"dist", "mean", "stddev", "trace"}));
  std::string dist = "constant";
  LOOM_RETURN_IF_ERROR(Optional(node, path, "dist", &dist));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "mean", &d.mean_s));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "stddev", &d.stddev_s));
  LOOM_RETURN_IF_ERROR(NonNegative(d.mean_s, Child(path, "mean")));
  LOOM_RETURN_IF_ERROR(NonNegative(d.stddev_s, Child(path, "stddev")));
  if (dist == "constant") {
    d.kind = DurationDist::Kind::kConstant;
  } else if (dist == "normal") {
    d.kind = DurationDist::Kind::kNormal;
  } else if (dist == "lognormal") {
    d.kind = DurationDist::Kind::kLognormal;
    if (d.mean_s <= 0) return Error(Child(path, "mean"), "lognormal needs mean > 0");
  } else if (dist == "trace") {
    d.kind = DurationDist::Kind::kTrace;
    std::string file;
    LOOM_RETURN_IF_ERROR(Optional(node, path, "trace", &file));
    if (file.empty()) return Error(path, "dist 'trace' needs a 'trace' file (JSON lines)");
    std::filesystem::path p(file);
    if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
    LOOM_ASSIGN_OR_RETURN(d.samples_s, LoadTraceDurations(p.string(), kind));
    double sum = 0;
    for (double x : d.samples_s) sum += x;
    d.mean_s = sum / d.samples_s.size();
  } else {
    return Error(Child(path, "dist"),
                 absl::StrCat("unknown distribution '", dist,
                              "' (expected constant, normal, lognormal or trace)"));
  }
  if (d.kind != DurationDist::Kind::kTrace && node["trace"]) {
    return Error(Child(path, "trace"), "only dist 'trace' takes a trace file");
  }
  return d;
}

absl::StatusOr<StageSpec> ParseStage(const YAML::Node& node, const std::string& path,
                                     const std::string& base_dir) {
  LOOM_RETURN_IF_ERROR(
      CheckKeys(node, path, {"kind", "cpu_slots", "device", "duration", "time_bounded"}));
  StageSpec s;
  std::string kind;
  LOOM_RETURN_IF_ERROR(Optional(node, path, "kind", &kind));
  if (kind.empty()) return Error(path, "missing 'kind' (propose, build, measure, update, other)");
  auto k = sched::ParseStageKind(kind);
  if (!k.ok()) return Error(Child(path, "kind"), std::string(k.status().message()));
  s.kind = *k;
  LOOM_RETURN_IF_ERROR(Optional(node, path, "cpu_slots", &s.cpu_slots));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "device", &s.device_kind));
  if (s.cpu_slots < 0) return Error(Child(path, "cpu_slots"), "must be >= 0");
  if (s.cpu_slots == 0 && s.device_kind.empty()) {
    return Error(path, "a stage needs cpu_slots > 0 or a device kind");
  }
  LOOM_RETURN_IF_ERROR(Optional(node, path, "time_bounded", &s.time_bounded));
  if (!(s.time_bounded >= 0 && s.time_bounded <= 1)) {
    return Error(Child(path, "time_bounded"), "must be a fraction in [0, 1]");
  }
  if (s.time_bounded > 0 && s.device_kind.empty()) {
    return Error(Child(path, "time_bounded"),
                 "only device stages have a time-bounded part (set 'device')");
  }
  if (!node["duration"]) return Error(path, "missing 'duration'");
  LOOM_ASSIGN_OR_RETURN(s.duration,
                        ParseDuration(node["duration"], Child(path, "duration"), s.kind, base_dir));
  return s;
}

absl::StatusOr<JobGroupSpec> ParseJobGroup(const YAML::Node& node, const std::string& path,
                                           const std::string& base_dir) {
  LOOM_RETURN_IF_ERROR(CheckKeys(node, path,
                                 {"name", "count", "priority", "submit_at", "submit_every", "tasks",
                                  "rounds", "spread", "stages"}));
  JobGroupSpec g;
  LOOM_RETURN_IF_ERROR(Optional(node, path, "name", &g.name));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "count", &g.count));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "priority", &g.priority));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "submit_at", &g.submit_at_s));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "submit_every", &g.submit_every_s));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "tasks", &g.tasks));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "rounds", &g.rounds));
  LOOM_RETURN_IF_ERROR(Optional(node, path, "spread", &g.spread));
  if (g.count < 0) return Error(Child(path, "count"), "must be >= 0");
  if (g.tasks < 1) return Error(Child(path, "tasks"), "must be >= 1");
  if (g.rounds < 1) return Error(Child(path, "rounds"), "must be >= 1");
  if (g.spread < 1) return Error(Child(path, "spread"), "must be >= 1");
  LOOM_RETURN_IF_ERROR(NonNegative(g.submit_at_s, Child(path, "submit_at")));
  LOOM_RETURN_IF_ERROR(NonNegative(g.submit_every_s, Child(path, "submit_every")));
  YAML::Node stages = node["stages"];
  if (!stages || !stages.IsSequence() || stages.size() == 0) {
    return Error(Child(path, "stages"), "expected a non-empty list of stages");
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(StageSpec s,
                          ParseStage(stages[i], absl::StrCat(path, ".stages[", i, "]"), base_dir));
    g.stages.push_back(std::move(s));
  }
  return g;
}

absl::StatusOr<SimSpec> ParseRoot(const YAML::Node& root, const std::string& base_dir) {
  LOOM_RETURN_IF_ERROR(
      CheckKeys(root, "", {"seed", "hosts", "jobs", "policies", "interference", "sweep_jobs"}));
  SimSpec spec;
  LOOM_RETURN_IF_ERROR(Optional(root, "", "seed", &spec.seed));

  YAML::Node hosts = root["hosts"];
  if (!hosts || !hosts.IsSequence() || hosts.size() == 0) {
    return Error("hosts", "expected a non-empty list of hosts");
  }
  std::set<std::string> device_kinds;
  for (size_t i = 0; i < hosts.size(); ++i) {
    std::string path = absl::StrCat("hosts[", i, "]");
    LOOM_RETURN_IF_ERROR(CheckKeys(hosts[i], path, {"name", "cpu_slots", "devices"}));
    HostSpecYaml h;
    h.name = absl::StrCat("host", i);
    LOOM_RETURN_IF_ERROR(Optional(hosts[i], path, "name", &h.name));
    LOOM_RETURN_IF_ERROR(Optional(hosts[i], path, "cpu_slots", &h.cpu_slots));
    if (h.cpu_slots < 0) return Error(Child(path, "cpu_slots"), "must be >= 0");
    YAML::Node devs = hosts[i]["devices"];
    if (devs && !devs.IsSequence()) return Error(Child(path, "devices"), "expected a list");
    for (size_t k = 0; devs && k < devs.size(); ++k) {
      std::string dpath = absl::StrCat(path, ".devices[", k, "]");
      LOOM_RETURN_IF_ERROR(CheckKeys(devs[k], dpath, {"name", "kind", "shares_cpu_slots"}));
      DeviceSpecYaml d;
      d.name = absl::StrCat("dev", k);
      LOOM_RETURN_IF_ERROR(Optional(devs[k], dpath, "name", &d.name));
      LOOM_RETURN_IF_ERROR(Optional(devs[k], dpath, "kind", &d.kind));
      LOOM_RETURN_IF_ERROR(Optional(devs[k], dpath, "shares_cpu_slots", &d.shares_cpu_slots));
      if (d.kind.empty()) return Error(dpath, "missing 'kind'");
      if (d.shares_cpu_slots < 0) return Error(Child(dpath, "shares_cpu_slots"), "must be >= 0");
      device_kinds.insert(d.kind);
      h.devices.push_back(std::move(d));
    }
    spec.hosts.push_back(std::move(h));
  }

  YAML::Node jobs = root["jobs"];
  if (!jobs || !jobs.IsSequence() || jobs.size() == 0) {
    return Error("jobs", "expected a non-empty list of job groups");
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(JobGroupSpec g,
                          ParseJobGroup(jobs[i], absl::StrCat("jobs[", i, "]"), base_dir));
    for (size_t k = 0; k < g.stages.size(); ++k) {
      const std::string& kind = g.stages[k].device_kind;
      if (!kind.empty() && !device_kinds.contains(kind)) {
        return Error(absl::StrCat("jobs[", i, "].stages[", k, "].device"),
                     absl::StrCat("no host has a device of kind '", kind, "'"));
      }
    }
    spec.jobs.push_back(std::move(g));
  }

  if (YAML::Node p = root["policies"]) {
    if (!p.IsSequence() || p.size() == 0) return Error("policies", "expected a list of names");
    spec.policies.clear();
    for (size_t i = 0; i < p.size(); ++i) {
      std::string path = absl::StrCat("policies[", i, "]");
      LOOM_ASSIGN_OR_RETURN(std::string name, Scalar<std::string>(p[i], path));
      auto made = sched::MakePolicy(name);
      if (!made.ok()) return Error(path, std::string(made.status().message()));
      spec.policies.push_back(name);
    }
  }

  if (YAML::Node in = root["interference"]) {
    LOOM_RETURN_IF_ERROR(CheckKeys(
        in, "interference",
        {"cpu_slowdown_per_extra_job", "device_time_sharing", "measure_distortion_per_corunner"}));
    LOOM_RETURN_IF_ERROR(Optional(in, "interference", "device_time_sharing",
                                  &spec.interference.device_time_sharing));
    LOOM_RETURN_IF_ERROR(Optional(in, "interference", "measure_distortion_per_corunner",
                                  &spec.interference.measure_distortion_per_corunner));
    if (YAML::Node slow = in["cpu_slowdown_per_extra_job"]) {
      std::string path = "interference.cpu_slowdown_per_extra_job";
      LOOM_RETURN_IF_ERROR(
          CheckKeys(slow, path, {"propose", "build", "measure", "update", "other"}));
      for (int k = 0; k < sched::kNumStageKinds; ++k) {
        std::string name(sched::StageKindName(static_cast<StageKind>(k)));
        double v = spec.interference.cpu_slowdown_per_extra_job[k];
        LOOM_RETURN_IF_ERROR(Optional(slow, path, name.c_str(), &v));
        LOOM_RETURN_IF_ERROR(NonNegative(v, Child(path, name)));
        spec.interference.cpu_slowdown_per_extra_job[k] = v;
      }
    }
  }

  if (YAML::Node s = root["sweep_jobs"]) {
    if (!s.IsSequence()) return Error("sweep_jobs", "expected a list of job counts");
    for (size_t i = 0; i < s.size(); ++i) {
      std::string path = absl::StrCat("sweep_jobs[", i, "]");
      LOOM_ASSIGN_OR_RETURN(int n, Scalar<int>(s[i], path));
      if (n < 1) return Error(path, "must be >= 1");
      spec.sweep_jobs.push_back(n);
    }
  }
  // The simulation holds every stage of every job: bound them before anything is allocated
  // (a count of 1e8 is a clear error, not bad_alloc).
  constexpr double kMaxStages = 2e7;
  std::vector<int> counts = spec.sweep_jobs;
  if (counts.empty()) counts.push_back(-1);
  for (int n : counts) {
    double stages = 0;
    for (const JobGroupSpec& g : spec.jobs) {
      stages += static_cast<double>(n >= 0 ? n : g.count) * g.tasks * g.rounds *
                static_cast<double>(g.stages.size());
    }
    if (stages > kMaxStages) {
      return Error(n >= 0 ? "sweep_jobs" : "jobs", absl::StrCat("the spec simulates ", stages,
                                                                " stages (jobs x tasks x rounds x "
                                                                "stages); at most ",
                                                                kMaxStages, " fit in memory"));
    }
  }
  return spec;
}

}  // namespace

double DurationDist::Sample(base::Rng& rng) const {
  double x = mean_s;
  switch (kind) {
    case Kind::kConstant:
      break;
    case Kind::kNormal:
      x = rng.Normal(mean_s, stddev_s);
      break;
    case Kind::kLognormal: {
      // Parameters of the underlying normal from the desired mean and standard deviation.
      double var = std::log(1.0 + (stddev_s * stddev_s) / (mean_s * mean_s));
      double mu = std::log(mean_s) - var / 2;
      x = std::exp(rng.Normal(mu, std::sqrt(var)));
      break;
    }
    case Kind::kTrace:
      x = samples_s[rng.UniformInt(0, static_cast<int64_t>(samples_s.size()) - 1)];
      break;
  }
  return std::max(x, 0.001);
}

double DurationDist::Mean() const { return mean_s; }

absl::StatusOr<std::vector<double>> LoadTraceDurations(const std::string& path,
                                                       sched::StageKind kind) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open trace file '", path, "'"));
  std::vector<double> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("kind") || !j.contains("start") ||
        !j.contains("end") || !j["kind"].is_string() || !j["start"].is_number() ||
        !j["end"].is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", lineno,
                       ": expected {\"kind\": ..., \"start\": seconds, \"end\": seconds, "
                       "\"resource\": ...}"));
    }
    auto k = sched::ParseStageKind(j["kind"].get<std::string>());
    if (!k.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", lineno, ": ", k.status().message()));
    }
    if (*k != kind) continue;
    double d = j["end"].get<double>() - j["start"].get<double>();
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": end < start"));
    out.push_back(d);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trace '", path, "' has no ", std::string(sched::StageKindName(kind)), " stages"));
  }
  return out;
}

absl::StatusOr<SimSpec> ParseSimSpec(std::string_view yaml, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec is not valid YAML: ", e.what()));
  }
  try {
    return ParseRoot(root, base_dir);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: ", e.what()));
  }
}

absl::StatusOr<SimSpec> LoadSimSpec(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open spec '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string dir = std::filesystem::path(path).parent_path().string();
  auto spec = ParseSimSpec(ss.str(), dir.empty() ? "." : dir);
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

}  // namespace loom::sim
