// Search strategies over a template's config space, as AutoTVM's tuners: random, grid, genetic and
// model-based (XGBoost cost model searched by simulated annealing). The tune loop calls the stages
// one at a time (Propose on a CPU, then Build and Measure elsewhere, then Update on a CPU), so a
// scheduler can run them when and where it decides. MakeTuner is the entry point.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loom/base/rng.h"
#include "loom/ops/config_space.h"
#include "loom/ops/template.h"
#include "loom/search/tuner_defaults.h"
#include "loom/toolchain/measure_result.h"
#include "loom/v1/session.pb.h"

namespace loom::search {

// Options for every tuner kind; each kind reads the fields that concern it.
struct TunerOptions {
  std::string kind = std::string(kDefaultTunerKind);  // "random", "grid", "ga", "xgb"
  uint64_t seed = 0;
  // Stop (HasNext() false) after this many trials of this run without a better config; <= 0: off.
  int early_stopping = -1;

  // ga: population size, number of elites carried to the next generation, per-knob mutation
  // probability.
  int pop_size = 100;
  int elite_num = 3;
  double mutation_prob = 0.1;

  // xgb: the cost model is retrained and the simulated annealing replans every `plan_size`
  // results; proposals come from the plan, except that with probability `epsilon` a random
  // unvisited config is proposed instead (exploration). AutoTVM uses plan 64 with batches of 64;
  // with Loom's smaller batches (8) a plan of 16 refits every other batch, so the model acts on
  // what it learned while trials are still few.
  int plan_size = 16;
  double epsilon = 0.05;
  // Results (history included) needed before the first training; until then proposals are random.
  // One batch is enough for a rank model to start steering; <= 0 means `plan_size` (AutoTVM).
  int model_warmup_trials = 8;
  // xgb: propose the template's initial configs (its author's prior: DefaultConfig, then the
  // template's InitialConfigs) first, before the random warm-up, those valid and not yet visited.
  // They fill the first batches; the rest of the warm-up is random. When the model is fitted
  // before the first proposal (transfer data: a tuning prior, similar tasks), they are proposed in
  // its order, mixed into its first plan.
  bool start_from_initial_configs = true;
  int sa_iters = 500;     // annealing steps per plan
  int sa_parallel = 128;  // parallel annealing chains
  // xgb: a space of at most this many configs is planned by scoring every unvisited valid config
  // with the model (the model's exact top, equal scores in random order) instead of by annealing,
  // which scores up to sa_iters * sa_parallel configs per plan anyway. 0 (the default): always
  // anneal. On the synthetic objective and the measured tables of bench/sample_efficiency_conv
  // neither planner was clearly better, so the default stays AutoTVM's annealing.
  int64_t exhaustive_plan_limit = 0;
  int xgb_rounds = 100;  // boosting rounds per training
};

// Common bookkeeping of every tuner: the visited set (a config is proposed at most once), the
// best result, trial counts and early stopping. Subclasses implement the search. Only valid
// configs (ConfigSpace::IsValid: the template can instantiate them) are ever proposed, so no trial
// is spent on a config that cannot be built.
//
// Call order: optionally LoadHistory once, then Propose / Update in any interleaving (a Propose
// may follow another Propose before their results arrive; Update accepts results in any order).
// Deterministic: the same options, history and call sequence give the same proposals. SaveState
// may be called between any two calls; RestoreState on a fresh tuner of the same kind, template
// and options (instead of LoadHistory and LoadTransfer) continues exactly where the saved one
// stopped, in time proportional to the state (TaskSession's saved state, so a stateless agent
// runs one stage without replaying the rounds before it).
// Not thread-safe: one stage of one tuner runs at a time.
class Tuner {
 public:
  Tuner(const ops::Template& tmpl, const TunerOptions& options);
  virtual ~Tuner() = default;
  Tuner(const Tuner&) = delete;
  Tuner& operator=(const Tuner&) = delete;

  // Stage "propose" (CPU). Up to `batch_size` valid configs never proposed before and not in the
  // loaded history; fewer when the valid configs run out (HasNext() is false after that); empty
  // when !HasNext(). Marks them visited.
  std::vector<ops::Config> Propose(int batch_size);

  // Stage "update" (CPU). Feeds measured results back: `results[i]` belongs to `configs[i]`
  // (precondition: equal sizes, configs inside the space). Failed results (any error kind) count
  // as trials with no score. Costs of a successful result are seconds; the median is used.
  void Update(const std::vector<ops::Config>& configs,
              const std::vector<tune::MeasureResult>& results);

  // Seeds the tuner with earlier results of the same task (same space): those configs are never
  // proposed again, the best of them counts as the best so far, and model-based tuners train on
  // them (transfer). Call before the first Propose; history does not count as trials. Configs
  // outside the space (stale records) are skipped with a warning. Precondition: equal sizes.
  void LoadHistory(const std::vector<ops::Config>& configs,
                   const std::vector<tune::MeasureResult>& results);

  // Seeds a model-based tuner with results of ANOTHER task (transfer learning, as AutoTVM's
  // transfer from similar tasks): `other` is that task's template, `configs` lie in its space.
  // Only records of a template with this tuner's template name (same feature layout) are used;
  // the xgb tuner trains on them (throughput normalized per task) and plans its first proposals
  // from that model. Other tuners ignore them. Call before the first Propose; no effect on
  // visited configs, trials or the best.
  virtual void LoadTransfer(const ops::Template& other, const std::vector<ops::Config>& configs,
                            const std::vector<tune::MeasureResult>& results) {}

  // The whole search state: visited set, RNG, best, counts and the kind's own state (ga: the
  // population and scores; grid: its cursor; xgb: the cost model as XGBoost's serialized
  // booster, training and transfer data, plan, annealer). kInternal when the model library fails.
  absl::StatusOr<v1::TunerState> SaveState() const;
  // Continues from `state` (SaveState() of a tuner of the same kind, template and options).
  // Precondition: a fresh tuner (nothing loaded, proposed or updated). The state may come from
  // anywhere: kInvalidArgument, naming the field, for another kind, an index outside the space,
  // sizes that do not agree, a malformed RNG state or a model that does not load; the tuner is
  // then half restored and must be discarded.
  absl::Status RestoreState(const v1::TunerState& state);

  // False when every valid config was visited (known once a Propose came back short) or early
  // stopping fired.
  bool HasNext() const;

  // Results fed by Update so far (this run, errors included).
  int64_t num_trials() const { return num_trials_; }
  // Whether `config` was proposed or loaded as history.
  bool WasVisited(const ops::Config& config) const { return visited_.contains(config.index); }
  // Configs proposed or loaded as history.
  int64_t num_visited() const { return static_cast<int64_t>(visited_.size()); }
  // Best successful result so far (history included); has_best() false when there is none.
  bool has_best() const { return best_cost_ < std::numeric_limits<double>::infinity(); }
  const ops::Config& best_config() const { return best_config_; }
  double best_cost() const { return best_cost_; }  // median seconds; +inf when none
  // The trial count (num_trials) at which the best so far arrived; 0 when it came from history.
  int64_t best_trial() const { return best_trial_; }
  // True once early stopping has fired.
  bool early_stopped() const;

  const ops::Template& tmpl() const { return tmpl_; }
  const TunerOptions& options() const { return options_; }

 protected:
  // Next up to `n` unvisited valid configs (n >= 1); fewer than `n` only when no other unvisited
  // valid config exists. The base marks the returned configs visited; a subclass must not return
  // a visited or invalid config or the same config twice (checked).
  virtual std::vector<ops::Config> NextBatch(int n) = 0;
  // Called after the base has recorded a batch of results (from Update or LoadHistory).
  // `score[i]` is the throughput 1/cost of a successful result and 0 for an error.
  virtual void OnResults(const std::vector<ops::Config>& configs, const std::vector<double>& scores,
                         bool from_history) {}

  // The kind's own part of SaveState / RestoreState (the base saves and restores its own first).
  virtual absl::Status SaveKindState(v1::TunerState& state) const { return absl::OkStatus(); }
  virtual absl::Status RestoreKindState(const v1::TunerState& state) { return absl::OkStatus(); }

  bool IsVisited(int64_t index) const { return visited_.contains(index); }
  bool IsValid(int64_t index) const { return tmpl_.space().IsValid(ops::Config{index}); }
  // Unvisited, valid and not in `also_excluded`: a config NextBatch may return.
  bool IsFree(int64_t index, const absl::flat_hash_set<int64_t>& also_excluded = {}) const {
    return !visited_.contains(index) && !also_excluded.contains(index) && IsValid(index);
  }
  const absl::flat_hash_set<int64_t>& visited() const { return visited_; }
  int64_t space_size() const { return tmpl_.space().size(); }
  // A uniformly random free config (IsFree(index, also_excluded)); -1 when there is none.
  int64_t RandomUnvisited(const absl::flat_hash_set<int64_t>& also_excluded = {});
  base::Rng& rng() { return rng_; }

 private:
  void Record(const std::vector<ops::Config>& configs,
              const std::vector<tune::MeasureResult>& results, bool from_history);

  const ops::Template& tmpl_;
  TunerOptions options_;
  base::Rng rng_;
  absl::flat_hash_set<int64_t> visited_;
  int64_t num_trials_ = 0;
  ops::Config best_config_;
  double best_cost_ = std::numeric_limits<double>::infinity();
  int64_t best_trial_ = 0;
  bool exhausted_ = false;  // a Propose came back short: no valid unvisited config is left
};

// The tuner `options.kind` over `tmpl`'s space; `tmpl` must outlive it. kInvalidArgument for an
// unknown kind (the message lists the known ones) or invalid options (non-positive sizes,
// probabilities outside [0, 1]).
absl::StatusOr<std::unique_ptr<Tuner>> MakeTuner(const TunerOptions& options,
                                                 const ops::Template& tmpl);

// The kinds MakeTuner accepts: {"random", "grid", "ga", "xgb"}.
std::vector<std::string> TunerKinds();

// Per-kind constructors behind MakeTuner (options already validated); one per implementation file.
std::unique_ptr<Tuner> MakeRandomTuner(const ops::Template& tmpl, const TunerOptions& options);
std::unique_ptr<Tuner> MakeGridTuner(const ops::Template& tmpl, const TunerOptions& options);
std::unique_ptr<Tuner> MakeGaTuner(const ops::Template& tmpl, const TunerOptions& options);
std::unique_ptr<Tuner> MakeXgbTuner(const ops::Template& tmpl, const TunerOptions& options);

// Early stopping, the one rule (Tuner::HasNext, and the agent's propose stage until it runs a
// TaskSession): true when `early_stopping` > 0 and at least that many of `trials` came after the
// one that gave the best so far. `best_trial` is that trial's 1-based number; 0 when no trial
// improved on the start (nothing succeeded, or the best came from history).
bool EarlyStoppingFires(int early_stopping, int64_t trials, int64_t best_trial);

// An RNG's state as text (std::mt19937_64's own form) and back; kInvalidArgument naming `what`
// when `text` is not such a state. For the tuners' SaveState / RestoreState.
std::string SaveRng(const base::Rng& rng);
absl::Status RestoreRng(absl::string_view text, absl::string_view what, base::Rng& rng);
// kInvalidArgument naming `what` unless every index lies in `space`.
absl::Status CheckIndices(const ops::ConfigSpace& space, absl::string_view what,
                          const google::protobuf::RepeatedField<int64_t>& indices);

// Throughput score of a result: 1 / median cost for a success, 0 for an error.
double ResultScore(const tune::MeasureResult& result);

}  // namespace loom::search
