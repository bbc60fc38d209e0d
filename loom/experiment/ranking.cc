#include "loom/experiment/ranking.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "loom/search/cost_model.h"

namespace loom::experiment {
namespace {

// Indices of the k smallest of `v` (ties by position).
std::vector<size_t> Fastest(const std::vector<double>& v, size_t k) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  idx.resize(std::min(k, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

RankingFidelity MeasureRankingFidelity(const std::vector<DistortionSample>& samples,
                                       const std::map<std::string, int64_t>& occurrences,
                                       int top_k) {
  RankingFidelity f;
  f.top_k = std::max(1, top_k);
  std::map<std::string, std::vector<const DistortionSample*>> by_task;
  std::map<std::string, bool> chosen_measured;
  for (const DistortionSample& s : samples) {
    chosen_measured.try_emplace(s.task_key, false);
    const bool valid =
        s.in_run_s > 0 && s.alone_s > 0 && std::isfinite(s.in_run_s) && std::isfinite(s.alone_s);
    if (!valid) continue;
    by_task[s.task_key].push_back(&s);
    if (s.chosen) chosen_measured[s.task_key] = true;
  }
  double tau_sum = 0, overlap_sum = 0, chosen_sum = 0, best_sum = 0;
  int overlap_tasks = 0;
  bool all_chosen = !chosen_measured.empty();
  for (const auto& [task, measured] : chosen_measured) all_chosen = all_chosen && measured;
  for (const auto& [task, list] : by_task) {
    auto it = occurrences.find(task);
    const double count = it == occurrences.end() ? 1.0 : static_cast<double>(it->second);
    std::vector<float> in_run_f, alone_f;
    std::vector<double> in_run, alone;
    for (const DistortionSample* s : list) {
      in_run.push_back(s->in_run_s);
      alone.push_back(s->alone_s);
      in_run_f.push_back(static_cast<float>(s->in_run_s));
      alone_f.push_back(static_cast<float>(s->alone_s));
    }
    const int64_t n = static_cast<int64_t>(list.size());
    if (n >= 2) {
      const int64_t pairs = n * (n - 1) / 2;
      tau_sum += search::KendallTau(in_run_f, alone_f) * static_cast<double>(pairs);
      f.pairs += pairs;
    }
    if (n > f.top_k) {
      const std::vector<size_t> a = Fastest(in_run, static_cast<size_t>(f.top_k));
      const std::vector<size_t> b = Fastest(alone, static_cast<size_t>(f.top_k));
      std::vector<size_t> both;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
      overlap_sum += static_cast<double>(both.size()) / f.top_k;
      ++overlap_tasks;
    }
    for (const DistortionSample* s : list) {
      if (!s->chosen) continue;
      chosen_sum += count * s->alone_s;
      best_sum += count * *std::min_element(alone.begin(), alone.end());
      break;
    }
  }
  if (f.pairs > 0) f.kendall_tau = tau_sum / static_cast<double>(f.pairs);
  if (overlap_tasks > 0) f.top_k_overlap = overlap_sum / overlap_tasks;
  if (best_sum > 0) f.regret = chosen_sum / best_sum - 1;
  if (all_chosen) f.chosen_alone_ms = chosen_sum * 1e3;
  return f;
}

RankingFidelity CombineRanking(const std::vector<RankingFidelity>& jobs) {
  RankingFidelity out;
  double tau = 0, regret = 0, overlap = 0, chosen = 0;
  int nregret = 0, noverlap = 0;
  for (const RankingFidelity& f : jobs) {
    out.top_k = std::max(out.top_k, f.top_k);
    if (f.pairs > 0 && std::isfinite(f.kendall_tau)) {
      tau += f.kendall_tau * static_cast<double>(f.pairs);
      out.pairs += f.pairs;
    }
    if (std::isfinite(f.regret)) {
      regret += f.regret;
      ++nregret;
    }
    if (std::isfinite(f.top_k_overlap)) {
      overlap += f.top_k_overlap;
      ++noverlap;
    }
    chosen += f.chosen_alone_ms;
  }
  if (out.pairs > 0) out.kendall_tau = tau / static_cast<double>(out.pairs);
  if (nregret > 0) out.regret = regret / nregret;
  if (noverlap > 0) out.top_k_overlap = overlap / noverlap;
  if (!jobs.empty()) out.chosen_alone_ms = chosen;
  return out;
}

}  // namespace loom::experiment
