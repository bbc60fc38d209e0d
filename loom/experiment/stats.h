// Figures over an experiment's repetitions and the verdicts computed from them (issue 24): a mean
// with a 95% confidence interval (Student's t), and whether a claim about a ratio is met, not met,
// or not distinguishable from noise. Called by claims.cc; no tuning knowledge.
#pragma once

#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace loom::experiment {

struct Interval {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  double mean = kNaN;
  double low = kNaN;  // 95% confidence interval; NaN with fewer than two values
  double high = kNaN;
  int n = 0;  // values it is computed from
};

// The arithmetic mean of the finite values with a two-sided 95% Student-t interval.
Interval MeanInterval(const std::vector<double>& values);

// For ratios: the geometric mean of the positive finite values, its interval computed on the log
// scale and transformed back (so 0.5 and 2 are equally far from 1).
Interval RatioInterval(const std::vector<double>& ratios);

// The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1; 1.96 beyond 30).
double StudentT975(int df);

enum class Verdict { kMet, kNotMet, kNoise, kNotMeasured };
// "met", "not met", "not distinguishable from noise", "not measured".
std::string_view VerdictName(Verdict verdict);

// "The value is below `bound`": met when the whole interval is below it, not met when the whole
// interval is at or above it, noise when it straddles `bound` or there is no interval (one
// repetition), not measured without values.
Verdict Below(const Interval& value, double bound);
// "The value is above `bound`", the mirror of Below.
Verdict Above(const Interval& value, double bound);

// "1.023 [0.998, 1.049], 3 reps" (digits after the point); "-" when not measured.
std::string FormatInterval(const Interval& value, int digits);
// The same for a ratio as a percentage change: "+2.3% [-0.2%, +4.9%], 3 reps".
std::string FormatRatioPercent(const Interval& ratio);

}  // namespace loom::experiment
