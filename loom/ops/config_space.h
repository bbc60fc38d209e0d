// The knob space of a template: named knobs, each a list of integer values (tile factors, 0/1
// switches, enum indices), and constraints that say which points can be instantiated. A config is
// one point, identified by its index in the mixed-radix product of the knobs, as in AutoTVM's
// ConfigSpace. Templates declare spaces; tuners search them and propose only valid points;
// records store the index and the knob values.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::ops {

struct Knob {
  std::string name;             // e.g. "tile_oc"
  std::vector<int64_t> values;  // the choices, in a meaningful order (ascending for tiles)
};

// A point of a ConfigSpace: `index` in [0, space.size()). Knob choices are derived from it.
struct Config {
  int64_t index = 0;
  bool operator==(const Config&) const = default;
};

// A predicate over a config's knob values (in knob order): true when the config can be
// instantiated. Must be cheap (tuners call it for every candidate they consider) and pure.
using ConstraintFn = std::function<bool(std::span<const int64_t> values)>;

struct Constraint {
  std::string description;  // what must hold, e.g. "tile_oh*tile_ow*(tile_oc+1)+1 <= 32 ..."
  ConstraintFn holds;
};

class ConfigSpace {
 public:
  // Appends a knob. Precondition: non-empty values, name unique.
  void AddKnob(std::string name, std::vector<int64_t> values);
  // Adds a constraint every valid config satisfies (an instantiation condition the knob product
  // cannot express, such as a register-file limit). Configs that violate one stay in the index
  // range (indices are stable) but are invalid: tuners never propose them and templates refuse to
  // emit them. Knobs are only appended, so positions (KnobIndex) a constraint captures stay valid.
  void AddConstraint(std::string description, ConstraintFn holds);

  const std::vector<Knob>& knobs() const { return knobs_; }
  // Number of configs: the product of the knobs' value counts (1 for no knobs).
  int64_t size() const { return size_; }

  // Per-knob choice indices of `config` (choice i selects knobs()[k].values[i]).
  std::vector<int64_t> Choices(const Config& config) const;
  Config FromChoices(const std::vector<int64_t>& choices) const;
  // The value of knob `name` in `config`. Precondition: the knob exists.
  int64_t Value(const Config& config, std::string_view name) const;
  // Knob values of `config` in knob order.
  std::vector<int64_t> Values(const Config& config) const;
  bool Contains(const Config& config) const { return config.index >= 0 && config.index < size_; }
  // Position of knob `name` in knobs(); -1 when there is none.
  int KnobIndex(std::string_view name) const;

  const std::vector<Constraint>& constraints() const { return constraints_; }
  // Contains(config) and every constraint holds.
  bool IsValid(const Config& config) const;
  // OK for a valid config; kInvalidArgument saying that the config is outside the space or which
  // constraint it violates.
  absl::Status Validate(const Config& config) const;
  // Number of valid configs, by enumerating the space (O(size); for reports and tests).
  int64_t CountValid() const;

  // {"tile_ic":16,"tile_oc":32,...}: how records store a config readably.
  std::string ToJson(const Config& config) const;
  // Inverse of ToJson; kInvalidArgument naming a missing/unknown knob or a value not in the space.
  absl::StatusOr<Config> FromJson(std::string_view json) const;

 private:
  std::vector<Knob> knobs_;
  std::vector<Constraint> constraints_;
  int64_t size_ = 1;
};

// Divisors of n in ascending order (tile-split candidates).
std::vector<int64_t> Divisors(int64_t n);

}  // namespace loom::ops
