#include "loom/ops/config_space.h"

#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "nlohmann/json.hpp"

namespace loom::ops {

void ConfigSpace::AddKnob(std::string name, std::vector<int64_t> values) {
  LOOM_CHECK(!values.empty());
  for (const auto& k : knobs_) LOOM_CHECK(k.name != name);
  size_ *= static_cast<int64_t>(values.size());
  knobs_.push_back({std::move(name), std::move(values)});
}

void ConfigSpace::AddConstraint(std::string description, ConstraintFn holds) {
  LOOM_CHECK(holds != nullptr);
  constraints_.push_back({std::move(description), std::move(holds)});
}

int ConfigSpace::KnobIndex(std::string_view name) const {
  for (size_t i = 0; i < knobs_.size(); ++i) {
    if (knobs_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

bool ConfigSpace::IsValid(const Config& config) const {
  if (!Contains(config)) return false;
  if (constraints_.empty()) return true;
  std::vector<int64_t> values = Values(config);
  for (const Constraint& c : constraints_) {
    if (!c.holds(values)) return false;
  }
  return true;
}

absl::Status ConfigSpace::Validate(const Config& config) const {
  if (!Contains(config)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config index ", config.index, " is outside the space (size ", size_, ")"));
  }
  if (constraints_.empty()) return absl::OkStatus();
  std::vector<int64_t> values = Values(config);
  for (const Constraint& c : constraints_) {
    if (!c.holds(values)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config ", ToJson(config), " violates the constraint ", c.description));
    }
  }
  return absl::OkStatus();
}

int64_t ConfigSpace::CountValid() const {
  if (constraints_.empty()) return size_;
  int64_t n = 0;
  for (int64_t i = 0; i < size_; ++i) n += IsValid(Config{i}) ? 1 : 0;
  return n;
}

std::vector<int64_t> ConfigSpace::Choices(const Config& config) const {
  LOOM_CHECK(Contains(config));
  std::vector<int64_t> choices(knobs_.size());
  int64_t rest = config.index;
  for (size_t i = 0; i < knobs_.size(); ++i) {
    int64_t radix = static_cast<int64_t>(knobs_[i].values.size());
    choices[i] = rest % radix;
    rest /= radix;
  }
  return choices;
}

Config ConfigSpace::FromChoices(const std::vector<int64_t>& choices) const {
  LOOM_CHECK(choices.size() == knobs_.size());
  int64_t index = 0;
  for (size_t i = knobs_.size(); i-- > 0;) {
    int64_t radix = static_cast<int64_t>(knobs_[i].values.size());
    LOOM_CHECK(choices[i] >= 0 && choices[i] < radix);
    index = index * radix + choices[i];
  }
  return Config{index};
}

int64_t ConfigSpace::Value(const Config& config, std::string_view name) const {
  std::vector<int64_t> choices = Choices(config);
  for (size_t i = 0; i < knobs_.size(); ++i) {
    if (knobs_[i].name == name) return knobs_[i].values[choices[i]];
  }
  LOOM_CHECK(false && "unknown knob");
  return 0;
}

std::vector<int64_t> ConfigSpace::Values(const Config& config) const {
  std::vector<int64_t> choices = Choices(config);
  std::vector<int64_t> values(knobs_.size());
  for (size_t i = 0; i < knobs_.size(); ++i) values[i] = knobs_[i].values[choices[i]];
  return values;
}

std::string ConfigSpace::ToJson(const Config& config) const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  std::vector<int64_t> values = Values(config);
  for (size_t i = 0; i < knobs_.size(); ++i) j[knobs_[i].name] = values[i];
  return j.dump();
}

absl::StatusOr<Config> ConfigSpace::FromJson(std::string_view json) const {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config '", std::string(json), "' is not a JSON object"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const auto& k : knobs_) known |= (k.name == it.key());
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown knob '", it.key(), "'"));
  }
  std::vector<int64_t> choices(knobs_.size());
  for (size_t i = 0; i < knobs_.size(); ++i) {
    auto it = j.find(knobs_[i].name);
    if (it == j.end() || !it->is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config lacks an integer value for knob '", knobs_[i].name, "'"));
    }
    int64_t v = it->get<int64_t>();
    int64_t choice = -1;
    for (size_t c = 0; c < knobs_[i].values.size(); ++c) {
      if (knobs_[i].values[c] == v) choice = static_cast<int64_t>(c);
    }
    if (choice < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("value ", v, " is not a choice of knob '", knobs_[i].name, "'"));
    }
    choices[i] = choice;
  }
  return FromChoices(choices);
}

std::vector<int64_t> Divisors(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t d = 1; d <= n; ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

}  // namespace loom::ops
