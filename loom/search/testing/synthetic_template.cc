#include "loom/search/testing/synthetic_template.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loom::search {

SyntheticTemplate::SyntheticTemplate() {
  space_.AddKnob("tile_a", {1, 2, 4, 8, 16, 32, 64, 128});
  space_.AddKnob("tile_b", {1, 2, 3, 4, 6, 8, 12, 16, 24, 32});
  space_.AddKnob("unroll", {1, 2, 4, 8});
  space_.AddKnob("order", {0, 1, 2, 3, 4, 5});
  space_.AddKnob("vec", {4, 8, 16});
  // The invalid configs (see Throughput) are declared, as real templates declare theirs, so
  // tuners never spend a trial on them.
  space_.AddConstraint(
      "tile_a*tile_b <= 1024 and not (unroll 8 with order 4)",
      [](std::span<const int64_t> v) { return v[0] * v[1] <= 1024 && !(v[2] == 8 && v[3] == 4); });
}

absl::StatusOr<ops::KernelSource> SyntheticTemplate::Emit(const ops::Config& config) const {
  return absl::UnimplementedError("the synthetic template has no kernel");
}

std::vector<float> SyntheticTemplate::Features(const ops::Config& config) const {
  std::vector<float> f;
  for (int64_t v : space_.Values(config)) f.push_back(static_cast<float>(v));
  return f;
}

std::vector<std::string> SyntheticTemplate::FeatureNames() const {
  std::vector<std::string> names;
  for (const ops::Knob& k : space_.knobs()) names.push_back(k.name);
  return names;
}

double SyntheticTemplate::Throughput(const ops::Config& config) const {
  std::vector<int64_t> v = space_.Values(config);
  const double a = static_cast<double>(v[0]), b = static_cast<double>(v[1]);
  const int64_t unroll = v[2], order = v[3], vec = v[4];
  // Invalid: register tile too large, or a loop order that cannot be unrolled 8x.
  if (a * b > 1024 || (unroll == 8 && order == 4)) return 0;
  const double la = std::log2(a), lb = std::log2(b);
  auto sq = [](double x) { return x * x; };
  double f = std::exp(-0.15 * sq(la - 4.2));  // tile_a has a sweet spot
  f *= std::exp(-0.2 * sq(la + lb - 6.5));    // tile_a x tile_b: a register budget
  f *= std::exp(-0.1 * sq(std::log2(static_cast<double>(unroll)) - 2.4));
  static constexpr double kOrder[] = {0.55, 0.7, 1.0, 0.8, 0.5, 0.97};  // categorical
  f *= kOrder[order];
  f *= vec == 4 ? 0.6 : vec == 8 ? 0.85 : 1.0;
  if (vec > 4 * v[0]) f *= 0.5;  // vectors wider than the tile waste lanes
  // A small deterministic ripple so that neighbouring configs are not perfectly smooth.
  f *= 1.0 + 0.01 * std::sin(static_cast<double>(config.index) * 12.9898);
  return f;
}

std::vector<tune::MeasureResult> SyntheticTemplate::Measure(
    const std::vector<ops::Config>& configs) const {
  std::vector<tune::MeasureResult> out;
  out.reserve(configs.size());
  for (const ops::Config& c : configs) {
    tune::MeasureResult r;
    r.config = c;
    double t = Throughput(c);
    if (t > 0) {
      r.costs = {1.0 / t};
    } else {
      r.error = tune::ErrorKind::kInstantiation;
      r.error_msg = absl::StrCat("synthetic config ", c.index, " is invalid");
    }
    out.push_back(std::move(r));
  }
  return out;
}

ops::Config SyntheticTemplate::Optimum() const {
  ops::Config best{0};
  double best_t = -1;
  for (int64_t i = 0; i < space_.size(); ++i) {
    double t = Throughput(ops::Config{i});
    if (t > best_t) {
      best_t = t;
      best = ops::Config{i};
    }
  }
  return best;
}

}  // namespace loom::search
