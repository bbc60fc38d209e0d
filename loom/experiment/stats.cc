#include "loom/experiment/stats.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace loom::experiment {

double StudentT975(int df) {
  static const double kT[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                              2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                              2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                              2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) return Interval::kNaN;
  return df <= 30 ? kT[df - 1] : 1.96;
}

Interval MeanInterval(const std::vector<double>& values) {
  Interval out;
  double sum = 0;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    sum += v;
    ++out.n;
  }
  if (out.n == 0) return out;
  out.mean = sum / out.n;
  if (out.n < 2) return out;
  double ss = 0;
  for (double v : values) {
    if (std::isfinite(v)) ss += (v - out.mean) * (v - out.mean);
  }
  const double half = StudentT975(out.n - 1) * std::sqrt(ss / (out.n - 1) / out.n);
  out.low = out.mean - half;
  out.high = out.mean + half;
  return out;
}

Interval RatioInterval(const std::vector<double>& ratios) {
  std::vector<double> logs;
  for (double r : ratios) {
    if (r > 0 && std::isfinite(r)) logs.push_back(std::log(r));
  }
  Interval l = MeanInterval(logs);
  Interval out;
  out.n = l.n;
  if (l.n == 0) return out;
  out.mean = std::exp(l.mean);
  if (l.n >= 2) {
    out.low = std::exp(l.low);
    out.high = std::exp(l.high);
  }
  return out;
}

std::string_view VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kMet:
      return "met";
    case Verdict::kNotMet:
      return "not met";
    case Verdict::kNoise:
      return "not distinguishable from noise";
    default:
      return "not measured";
  }
}

Verdict Below(const Interval& value, double bound) {
  if (value.n == 0 || !std::isfinite(value.mean)) return Verdict::kNotMeasured;
  if (!std::isfinite(value.low) || !std::isfinite(value.high)) return Verdict::kNoise;
  if (value.high < bound) return Verdict::kMet;
  if (value.low >= bound) return Verdict::kNotMet;
  return Verdict::kNoise;
}

Verdict Above(const Interval& value, double bound) {
  if (value.n == 0 || !std::isfinite(value.mean)) return Verdict::kNotMeasured;
  if (!std::isfinite(value.low) || !std::isfinite(value.high)) return Verdict::kNoise;
  if (value.low > bound) return Verdict::kMet;
  if (value.high <= bound) return Verdict::kNotMet;
  return Verdict::kNoise;
}

std::string FormatInterval(const Interval& value, int digits) {
  if (value.n == 0 || !std::isfinite(value.mean)) return "-";
  std::string s = absl::StrFormat("%.*f", digits, value.mean);
  if (std::isfinite(value.low)) {
    s += absl::StrFormat(" [%.*f, %.*f]", digits, value.low, digits, value.high);
  }
  return s + absl::StrFormat(", %d rep%s", value.n, value.n == 1 ? "" : "s");
}

std::string FormatRatioPercent(const Interval& ratio) {
  if (ratio.n == 0 || !std::isfinite(ratio.mean)) return "-";
  std::string s = absl::StrFormat("%+.1f%%", (ratio.mean - 1) * 100);
  if (std::isfinite(ratio.low)) {
    s += absl::StrFormat(" [%+.1f%%, %+.1f%%]", (ratio.low - 1) * 100, (ratio.high - 1) * 100);
  }
  return s + absl::StrFormat(", %d rep%s", ratio.n, ratio.n == 1 ? "" : "s");
}

}  // namespace loom::experiment
