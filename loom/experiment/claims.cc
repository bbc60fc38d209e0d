#include "loom/experiment/claims.h"

#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "loom/experiment/runner.h"

namespace loom::experiment {
namespace {

// Tolerance of "keeps dedicated quality": the final latency within 5% of dedicated's.
constexpr double kQualityTolerance = 1.05;

double Ratio(double a, double b) {
  return a > 0 && b > 0 && std::isfinite(a) && std::isfinite(b) ? a / b : Interval::kNaN;
}

// Geometric mean over jobs of value(a's job) / value(b's job), NaN without a pair.
double JobsRatio(const SetupResult& a, const SetupResult& b,
                 const std::function<double(const SetupJobResult&)>& value) {
  double logs = 0;
  int n = 0;
  for (size_t j = 0; j < a.jobs.size() && j < b.jobs.size(); ++j) {
    const double r = Ratio(value(a.jobs[j]), value(b.jobs[j]));
    if (!std::isfinite(r)) continue;
    logs += std::log(r);
    ++n;
  }
  return n > 0 ? std::exp(logs / n) : Interval::kNaN;
}

double FinalLatency(const SetupJobResult& j) { return j.final_latency_ms; }
double KernelsAlone(const SetupJobResult& j) { return j.ranking.chosen_alone_ms; }

}  // namespace

ClaimsSummary SummarizeClaims(const ExperimentResult& result) {
  ClaimsSummary out;
  out.repetitions = result.repetitions;
  std::vector<std::string> names;
  for (const SetupResult& s : result.setups) {
    if (std::find(names.begin(), names.end(), s.setup) == names.end()) names.push_back(s.setup);
  }
  for (const char* ref : {"sequential", "dedicated"}) {
    if (std::find(names.begin(), names.end(), ref) != names.end()) out.reference = ref;
  }
  // Per repetition, f(setup's result, other's result) for every repetition both ran.
  auto per_rep = [&](const std::string& setup, const std::string& other,
                     const std::function<double(const SetupResult&, const SetupResult&)>& f) {
    std::vector<double> values;
    for (int rep = 0; rep < result.repetitions; ++rep) {
      const SetupResult* a = FindSetup(result, setup, rep);
      const SetupResult* b = other.empty() ? a : FindSetup(result, other, rep);
      if (a != nullptr && b != nullptr) values.push_back(f(*a, *b));
    }
    return values;
  };
  const std::string& ref = out.reference;
  for (const std::string& name : names) {
    SetupSummary s;
    s.setup = name;
    auto own = [&](const std::function<double(const SetupResult&)>& f) {
      return per_rep(name, "", [&](const SetupResult& a, const SetupResult&) { return f(a); });
    };
    s.makespan_s = MeanInterval(own([](const SetupResult& r) { return r.makespan_s; }));
    s.distortion = MeanInterval(own([](const SetupResult& r) { return r.distortion_median; }));
    s.kendall_tau = MeanInterval(own([](const SetupResult& r) { return r.ranking.kendall_tau; }));
    s.regret = MeanInterval(own([](const SetupResult& r) { return r.ranking.regret; }));
    s.top_k_overlap =
        MeanInterval(own([](const SetupResult& r) { return r.ranking.top_k_overlap; }));
    size_t njobs = 0;
    for (const SetupResult& r : result.setups) njobs = std::max(njobs, r.jobs.size());
    for (size_t j = 0; j < njobs; ++j) {
      auto job = [&](const std::function<double(const SetupJobResult&)>& f) {
        return own([&](const SetupResult& r) { return j < r.jobs.size() ? f(r.jobs[j]) : NAN; });
      };
      s.job_tau.push_back(
          MeanInterval(job([](const SetupJobResult& r) { return r.ranking.kendall_tau; })));
      s.job_regret.push_back(
          MeanInterval(job([](const SetupJobResult& r) { return r.ranking.regret; })));
    }
    if (!ref.empty()) {
      s.vs_sequence = RatioInterval(per_rep(name, ref, [](const auto& a, const auto& b) {
        return Ratio(a.makespan_s, b.makespan_s);
      }));
      s.device_hours_vs_dedicated =
          RatioInterval(per_rep(name, ref, [](const auto& a, const auto& b) {
            return Ratio(a.device_hours, b.device_hours);
          }));
      s.latency_vs_dedicated = RatioInterval(per_rep(
          name, ref, [](const auto& a, const auto& b) { return JobsRatio(a, b, FinalLatency); }));
      s.kernels_vs_dedicated = RatioInterval(per_rep(
          name, ref, [](const auto& a, const auto& b) { return JobsRatio(a, b, KernelsAlone); }));
      for (size_t j = 0; j < njobs; ++j) {
        auto job_ratio = [&](double (*value)(const SetupJobResult&)) {
          return RatioInterval(per_rep(name, ref, [&](const SetupResult& a, const SetupResult& b) {
            return j < a.jobs.size() && j < b.jobs.size()
                       ? Ratio(value(a.jobs[j]), value(b.jobs[j]))
                       : Interval::kNaN;
          }));
        };
        s.job_latency_vs_dedicated.push_back(job_ratio(FinalLatency));
        s.job_kernels_vs_dedicated.push_back(job_ratio(KernelsAlone));
      }
    }
    out.setups.push_back(std::move(s));
  }

  const bool has_uncontrolled =
      std::find(names.begin(), names.end(), "uncontrolled") != names.end();
  auto summary = [&](const std::string& name) -> const SetupSummary* {
    for (const SetupSummary& s : out.setups) {
      if (s.setup == name) return &s;
    }
    return nullptr;
  };
  auto add = [&](std::string claim, const std::string& setup, std::string statement,
                 const Interval& value, Verdict verdict) {
    out.verdicts.push_back({.claim = std::move(claim),
                            .setup = setup,
                            .statement = std::move(statement),
                            .figure = FormatRatioPercent(value),
                            .value = value,
                            .verdict = verdict});
  };
  auto against_uncontrolled =
      [&](const std::string& setup,
          const std::function<double(const SetupResult&, const SetupResult&)>& f) {
        return RatioInterval(per_rep(setup, "uncontrolled", f));
      };
  for (const std::string& p : {std::string("interleaved"), std::string("predictive")}) {
    const SetupSummary* s = summary(p);
    if (s == nullptr) continue;
    if (!ref.empty()) {
      add("time", p, absl::StrCat("makespan below running the jobs in sequence (", ref, ")"),
          s->vs_sequence, Below(s->vs_sequence, 1));
    }
    if (has_uncontrolled) {
      const Interval v = against_uncontrolled(
          p, [](const auto& a, const auto& b) { return Ratio(a.makespan_s, b.makespan_s); });
      add("time", p, "makespan below uncontrolled sharing's", v, Below(v, 1));
    }
    if (!ref.empty()) {
      add("hardware", p,
          absl::StrCat("one machine for all jobs: device-hours below one ", ref,
                       " machine per job"),
          s->device_hours_vs_dedicated, Below(s->device_hours_vs_dedicated, 1));
      add("inference performance", p,
          absl::StrCat("final latency within 5% of ", ref, " (keeps dedicated quality)"),
          s->latency_vs_dedicated, Below(s->latency_vs_dedicated, kQualityTolerance));
    }
    if (has_uncontrolled) {
      const Interval latency = against_uncontrolled(
          p, [](const auto& a, const auto& b) { return JobsRatio(a, b, FinalLatency); });
      add("inference performance", p, "final latency below uncontrolled sharing's", latency,
          Below(latency, 1));
      const Interval kernels = against_uncontrolled(
          p, [](const auto& a, const auto& b) { return JobsRatio(a, b, KernelsAlone); });
      add("inference performance", p,
          "tuned kernels (timed alone) faster than uncontrolled sharing's", kernels,
          Below(kernels, 1));
    }
  }
  if (const SetupSummary* u = summary("uncontrolled"); u != nullptr && !ref.empty()) {
    add("inference performance", "uncontrolled",
        absl::StrCat("uncontrolled sharing loses: final latency above ", ref, "'s"),
        u->latency_vs_dedicated, Above(u->latency_vs_dedicated, 1));
    add("inference performance", "uncontrolled",
        absl::StrCat("uncontrolled sharing loses: tuned kernels (timed alone) slower than ", ref,
                     "'s"),
        u->kernels_vs_dedicated, Above(u->kernels_vs_dedicated, 1));
  }
  return out;
}

namespace {

nlohmann::json IntervalJson(const Interval& v) {
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
  return {{"mean", num(v.mean)}, {"low", num(v.low)}, {"high", num(v.high)}, {"n", v.n}};
}

nlohmann::json IntervalsJson(const std::vector<Interval>& v) {
  nlohmann::json out = nlohmann::json::array();
  for (const Interval& i : v) out.push_back(IntervalJson(i));
  return out;
}

}  // namespace

nlohmann::json ClaimsToJson(const ClaimsSummary& claims) {
  nlohmann::json setups = nlohmann::json::array();
  for (const SetupSummary& s : claims.setups) {
    setups.push_back(
        {{"setup", s.setup},
         {"makespan_s", IntervalJson(s.makespan_s)},
         {"vs_sequence", IntervalJson(s.vs_sequence)},
         {"device_hours_vs_dedicated", IntervalJson(s.device_hours_vs_dedicated)},
         {"distortion_median", IntervalJson(s.distortion)},
         {"kendall_tau", IntervalJson(s.kendall_tau)},
         {"regret", IntervalJson(s.regret)},
         {"top_k_overlap", IntervalJson(s.top_k_overlap)},
         {"final_latency_vs_dedicated", IntervalJson(s.latency_vs_dedicated)},
         {"tuned_kernels_vs_dedicated", IntervalJson(s.kernels_vs_dedicated)},
         {"jobs_final_latency_vs_dedicated", IntervalsJson(s.job_latency_vs_dedicated)},
         {"jobs_tuned_kernels_vs_dedicated", IntervalsJson(s.job_kernels_vs_dedicated)},
         {"jobs_kendall_tau", IntervalsJson(s.job_tau)},
         {"jobs_regret", IntervalsJson(s.job_regret)}});
  }
  nlohmann::json verdicts = nlohmann::json::array();
  for (const ClaimVerdict& v : claims.verdicts) {
    verdicts.push_back({{"claim", v.claim},
                        {"setup", v.setup},
                        {"statement", v.statement},
                        {"ratio", IntervalJson(v.value)},
                        {"figure", v.figure},
                        {"verdict", std::string(VerdictName(v.verdict))}});
  }
  return {{"reference", claims.reference},
          {"repetitions", claims.repetitions},
          {"confidence", 0.95},
          {"setups", std::move(setups)},
          {"verdicts", std::move(verdicts)}};
}

}  // namespace loom::experiment
