#include "loom/tune/make_prior.h"

#include <algorithm>
#include <map>
#include <random>
#include <utility>

#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

// The knob values of a record's config JSON in `knobs` order; false when it is not an object of
// integers with exactly those knobs.
bool KnobValues(const nlohmann::json& config, const std::vector<std::string>& knobs,
                std::vector<int64_t>* values) {
  if (!config.is_object() || config.size() != knobs.size()) return false;
  values->clear();
  for (const std::string& k : knobs) {
    auto it = config.find(k);
    if (it == config.end() || !it->is_number_integer()) return false;
    values->push_back(it->get<int64_t>());
  }
  return true;
}

}  // namespace

search::TuningPrior MakePrior(const std::vector<Record>& records, std::string target_class,
                              std::string source, const MakePriorOptions& options) {
  search::TuningPrior prior;
  prior.target_class = std::move(target_class);
  prior.source = std::move(source);
  // Per (task, template), in order of first appearance: the knob names (from the first record
  // that parses) and the best throughput of each distinct config.
  struct Group {
    search::PriorTask task;
    std::map<std::vector<int64_t>, double> best;
  };
  std::vector<Group> groups;
  std::map<std::pair<std::string, std::string>, size_t> index;
  std::vector<int64_t> values;
  for (const Record& r : records) {
    nlohmann::json config = nlohmann::json::parse(r.config_json, nullptr, false);
    auto [it, inserted] = index.try_emplace({r.task_key, r.template_name}, groups.size());
    if (inserted) {
      groups.emplace_back();
      groups.back().task.task_key = r.task_key;
      groups.back().task.template_name = r.template_name;
    }
    Group& g = groups[it->second];
    if (g.task.knobs.empty() && config.is_object()) {
      for (auto k = config.begin(); k != config.end(); ++k) g.task.knobs.push_back(k.key());
    }
    if (!KnobValues(config, g.task.knobs, &values)) continue;
    double& best = g.best.try_emplace(values, 0.0).first->second;
    best = std::max(best, r.Gflops());
  }
  std::mt19937_64 rng(options.seed);
  for (Group& g : groups) {
    if (g.best.empty()) continue;
    std::vector<search::PriorTask::Entry> all;
    all.reserve(g.best.size());
    for (auto& [v, gflops] : g.best) all.push_back({v, gflops});
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.gflops > b.gflops; });
    const size_t budget = options.per_task > 0 ? static_cast<size_t>(options.per_task) : all.size();
    if (all.size() > budget) {
      const size_t top = std::max<size_t>(1, budget / 4);
      std::shuffle(all.begin() + static_cast<std::ptrdiff_t>(top), all.end(), rng);
      all.resize(budget);
    }
    g.task.configs = std::move(all);
    prior.tasks.push_back(std::move(g.task));
  }
  return prior;
}

}  // namespace loom::tune
