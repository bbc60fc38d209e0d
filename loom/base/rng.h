// Seeded random numbers. Every randomized decision in Loom takes an Rng built from an explicit
// seed, so runs and tests are reproducible (no wall-clock seeds).
#pragma once

#include <cstdint>
#include <random>

namespace loom::base {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // Uniform integer in [lo, hi] (inclusive).
  int64_t UniformInt(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(engine_);
  }
  // Uniform real in [lo, hi).
  double Uniform(double lo = 0.0, double hi = 1.0) {
    return std::uniform_real_distribution<double>(lo, hi)(engine_);
  }
  double Normal(double mean, double stddev) {
    return std::normal_distribution<double>(mean, stddev)(engine_);
  }
  bool Bernoulli(double p) { return Uniform() < p; }
  // A new independent stream derived from this one (e.g. one per job).
  Rng Fork() { return Rng(engine_()); }

  std::mt19937_64& engine() { return engine_; }
  const std::mt19937_64& engine() const { return engine_; }

 private:
  std::mt19937_64 engine_;
};

}  // namespace loom::base
