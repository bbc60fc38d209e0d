#include "loom/experiment/distortion.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "loom/base/rng.h"
#include "loom/base/status_macros.h"
#include "loom/graph/tasks.h"
#include "loom/ops/template.h"

namespace loom::experiment {

double Distortion(double in_run_s, double alone_s) {
  if (!(in_run_s > 0) || !(alone_s > 0) || !std::isfinite(in_run_s) || !std::isfinite(alone_s)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return std::fabs(in_run_s / alone_s - 1);
}

double Median(std::vector<double> values) {
  values.erase(
      std::remove_if(values.begin(), values.end(), [](double v) { return !std::isfinite(v); }),
      values.end());
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

std::vector<tune::Record> SampleRecords(const std::vector<tune::Record>& records, int k,
                                        uint64_t seed) {
  std::vector<size_t> ok;
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].ok() && std::isfinite(records[i].median_cost)) ok.push_back(i);
  }
  if (k < static_cast<int>(ok.size())) {
    // Partial Fisher-Yates: the first k positions become a uniform sample.
    base::Rng rng(seed);
    for (int i = 0; i < k; ++i) {
      const auto j = static_cast<size_t>(rng.UniformInt(i, static_cast<int64_t>(ok.size()) - 1));
      std::swap(ok[static_cast<size_t>(i)], ok[j]);
    }
    ok.resize(static_cast<size_t>(std::max(0, k)));
    std::sort(ok.begin(), ok.end());
  }
  std::vector<tune::Record> out;
  out.reserve(ok.size());
  for (size_t i : ok) out.push_back(records[i]);
  return out;
}

std::vector<tune::Record> SampleTaskRecords(const std::vector<tune::Record>& records, int k,
                                            int top, uint64_t seed) {
  // The best measurement of each successful config, in order of first appearance.
  std::vector<tune::Record> distinct;
  std::map<int64_t, size_t> index_of;
  for (const tune::Record& r : records) {
    if (!r.ok() || !std::isfinite(r.median_cost)) continue;
    auto [it, fresh] = index_of.try_emplace(r.config_index, distinct.size());
    if (fresh) {
      distinct.push_back(r);
    } else if (r.median_cost < distinct[it->second].median_cost) {
      distinct[it->second] = r;
    }
  }
  k = std::max(0, k);
  top = std::clamp(top, 0, k);
  std::vector<size_t> by_cost(distinct.size());
  std::iota(by_cost.begin(), by_cost.end(), 0);
  std::stable_sort(by_cost.begin(), by_cost.end(), [&](size_t a, size_t b) {
    return distinct[a].median_cost < distinct[b].median_cost;
  });
  const size_t ntop = std::min(by_cost.size(), static_cast<size_t>(top));
  std::vector<tune::Record> out;
  std::vector<tune::Record> rest;
  for (size_t i = 0; i < by_cost.size(); ++i) {
    (i < ntop ? out : rest).push_back(distinct[by_cost[i]]);
  }
  // SampleRecords keeps the rest's order: restore the order of appearance first.
  std::stable_sort(rest.begin(), rest.end(), [&](const tune::Record& a, const tune::Record& b) {
    return index_of[a.config_index] < index_of[b.config_index];
  });
  for (tune::Record& r : SampleRecords(rest, k - static_cast<int>(ntop), seed)) {
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<DistortionSample>> Remeasure(const std::vector<tune::Record>& records,
                                                        const ops::Target& target,
                                                        tune::Builder& builder,
                                                        tune::Measurer& measurer) {
  std::vector<DistortionSample> samples(records.size());
  // One build and one measure call per task.
  std::map<std::string, std::vector<size_t>> by_task;
  for (size_t i = 0; i < records.size(); ++i) by_task[records[i].task_key].push_back(i);
  for (const auto& [key, members] : by_task) {
    auto workload = graph::ParseWorkloadKey(key);
    if (!workload.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot re-measure task '", key, "': ", workload.status().message()));
    }
    auto tmpl = ops::MakeTemplate(*workload, target);
    if (!tmpl.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot re-measure task '", key, "': ", tmpl.status().message()));
    }
    std::vector<ops::Config> configs;
    for (size_t i : members) configs.push_back(ops::Config{.index = records[i].config_index});
    std::vector<tune::BuildResult> built = builder.Build(**tmpl, configs);
    std::vector<tune::MeasureResult> measured =
        measurer.Measure(tune::MeasureTask{.workload_key = key, .target = target}, built);
    for (size_t m = 0; m < members.size(); ++m) {
      const tune::Record& r = records[members[m]];
      DistortionSample& s = samples[members[m]];
      s.task_key = key;
      s.config_index = r.config_index;
      s.in_run_s = r.median_cost;
      s.alone_s = std::numeric_limits<double>::quiet_NaN();
      if (m < measured.size() && measured[m].ok()) {
        s.alone_s = measured[m].MedianCost();
      } else {
        s.error = m < measured.size() ? measured[m].error_msg : "no measurement returned";
        if (s.error.empty()) s.error = "re-measurement failed";
      }
      s.distortion = Distortion(s.in_run_s, s.alone_s);
    }
  }
  return samples;
}

}  // namespace loom::experiment
