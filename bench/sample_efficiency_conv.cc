// Sample efficiency of the XGB tuner against random search on real ResNet-18 conv2d layers
// (issue 3, "Figures to measure and report"): trials each tuner needs before its running best
// reaches 95% of the best config known for the layer (in throughput terms).
//
// Method. Every distinct config of a layer is built and measured ONCE (real g++ builder, sandboxed
// measurer pinned to --device-cores); its result is stored in the record database (--db) and
// cached by config index. Tuners are then replayed against this table of costs: a config already
// in the table is not measured again, a config never seen is measured and added. So every tuner
// sees exactly the same cost for the same config, and measurement noise (large on a shared machine)
// cannot favour one tuner. The runs per layer, in order:
//   1. a reference random-search run of --ref-trials configs (a uniform sample of the space);
//   2. for each seed: a random run and an xgb run of --budget trials each.
// The layer's best cost is the best over everything measured (reference and all tuner runs); the
// trials-to-95% of a run is the position of its first result with cost <= best / 0.95 (budget + 1
// when not reached, shown as ">budget"). The expected trials of random search is also estimated
// from the reference sample alone: with k of its N configs within 95%, (N + 1) / (k + 1).
// Rerunning with the same --db replays from the stored table (only new configs are measured).
//
// Cost table file (--table FILE): a plain text file, one line per measured config,
// "<task key>\t<config index>\t<median seconds or fail>\t<config JSON>". It is read at start
// (with --db too, the DB's records missing from the file are appended, which exports a DB) and
// every new measurement is appended, so tuner changes can be replayed against the same costs on
// any machine. --offline measures nothing: a config missing from the table stops the run with a
// message (rerun without --offline to measure it), so a replay is never silently distorted.
// Tuners propose only instantiable configs (ConfigSpace constraints), so the table holds no
// instantiation errors unless it came from an older DB.
//
// Usage: sample_efficiency_conv (--db FILE | --table FILE | both) [--offline] [--layers 0,1,2]
//          [--ref-trials 200] [--budget 100] [--seeds 1,2,3] [--batch-size 8]
//          [--device-cores 1] [--build-threads 2] [--min-repeat-ms 20] [--plan-size P]
//          [--warmup-trials W] [--epsilon E] [--initial-configs 0|1] [--transfer 0|1]
//          [--fraction 0.95] [--tasks KEY,KEY] [--tuners random,xgb,xgb-model]
//          [--exhaustive-limit N] [--prior FILE|builtin] [--export-records FILE] [--list]
// --layers indexes the built-in layers (--list prints them; 0-2 are the first figure's) and the
// --tasks keys appended after them. --budget 0 runs only the reference sample (a survey: its
// share within the target, the default config's throughput and the best of the template's initial
// configs). "xgb-model" is xgb without the template's initial configs, the default among them
// (--initial-configs 0 for that run only; --start-default is the older name of the flag).
// --transfer 1: every xgb run is first given the table's results of the other layers
// (Tuner::LoadTransfer, as `loom tune` does with similar tasks in its DB): a tuner with history.
// --prior FILE|builtin: every xgb run is first given a tuning prior (search/prior.h, as `loom tune`
// gives its built-in one) without the layer's own task: leave-one-out, so the figure is that of a
// layer the prior has never seen. --export-records FILE writes the table's rows of the --layers as
// record JSON lines (`loom records import`, then `loom records prior` makes a prior of them).
// xgb options default to the tuner's (TunerOptions) defaults, which are `loom tune`'s defaults.
// (--fraction changes the target; rerun on a filled table to re-analyse without measuring.)
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/records/record.h"
#include "loom/records/record_store.h"
#include "loom/search/prior.h"
#include "loom/search/tuner.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/measure_worker.h"
#include "loom/toolchain/measurer.h"

namespace {

using loom::ops::Config;
using loom::tune::MeasureResult;

struct Layer {
  std::string name;
  loom::graph::Workload w;
};

// The built-in layers, by --layers index. 0-2 are the ResNet-18 3x3 convs of the first figure;
// 3- are candidates where search matters more (lower default, a narrower top of the space), from
// ResNet-18 and MobileNetV2 (`loom tasks zoo:resnet18`, `zoo:mobilenet_v2`). Extra layers by
// workload key: --tasks KEY,KEY (appended after these, indices continue).
const std::vector<std::pair<const char*, const char*>>& BuiltinLayers() {
  static const std::vector<std::pair<const char*, const char*>> layers = {
      {"64->64 3x3 @56", "conv2d:f32:n1_c64_h56_w56_k64_r3_s3_st1x1_p1x1x1x1_d1x1_g1"},
      {"128->128 3x3 @28", "conv2d:f32:n1_c128_h28_w28_k128_r3_s3_st1x1_p1x1x1x1_d1x1_g1"},
      {"256->512 3x3 s2 @14", "conv2d:f32:n1_c256_h14_w14_k512_r3_s3_st2x2_p1x1x1x1_d1x1_g1"},
      {"r18 stem 3->64 7x7 s2 @224", "conv2d:f32:n1_c3_h224_w224_k64_r7_s7_st2x2_p3x3x3x3_d1x1_g1"},
      {"r18 64->128 1x1 s2 @56", "conv2d:f32:n1_c64_h56_w56_k128_r1_s1_st2x2_p0x0x0x0_d1x1_g1"},
      {"r18 128->256 1x1 s2 @28", "conv2d:f32:n1_c128_h28_w28_k256_r1_s1_st2x2_p0x0x0x0_d1x1_g1"},
      {"r18 256->512 1x1 s2 @14", "conv2d:f32:n1_c256_h14_w14_k512_r1_s1_st2x2_p0x0x0x0_d1x1_g1"},
      {"mnv2 dw 32 3x3 @112",
       "depthwise_conv2d:f32:n1_c32_h112_w112_k32_r3_s3_st1x1_p1x1x1x1_d1x1_g32"},
      {"mnv2 32->16 1x1 @112", "conv2d:f32:n1_c32_h112_w112_k16_r1_s1_st1x1_p0x0x0x0_d1x1_g1"},
      {"mnv2 16->96 1x1 @112", "conv2d:f32:n1_c16_h112_w112_k96_r1_s1_st1x1_p0x0x0x0_d1x1_g1"},
      {"mnv2 dw 144 3x3 @56",
       "depthwise_conv2d:f32:n1_c144_h56_w56_k144_r3_s3_st1x1_p1x1x1x1_d1x1_g144"},
      {"mnv2 144->24 1x1 @56", "conv2d:f32:n1_c144_h56_w56_k24_r1_s1_st1x1_p0x0x0x0_d1x1_g1"},
      {"mnv2 dw 96 3x3 s2 @112",
       "depthwise_conv2d:f32:n1_c96_h112_w112_k96_r3_s3_st2x2_p1x1x1x1_d1x1_g96"},
      {"r18 dense 512->1000", "dense:f32:m1_n1000_k512_tb1"},
      {"mnv2 stem 3->32 3x3 s2 @224",
       "conv2d:f32:n1_c3_h224_w224_k32_r3_s3_st2x2_p1x1x1x1_d1x1_g1"},
      {"mnv2 dense 1280->1000", "dense:f32:m1_n1000_k1280_tb1"},
  };
  return layers;
}

std::vector<Layer>& Layers() {
  static std::vector<Layer> layers = [] {
    std::vector<Layer> out;
    for (const auto& [name, key] : BuiltinLayers()) {
      auto w = loom::graph::ParseWorkloadKey(key);
      if (!w.ok()) {
        std::fprintf(stderr, "bad built-in key %s\n", key);
        std::exit(2);
      }
      out.push_back({name, *w});
    }
    return out;
  }();
  return layers;
}

struct Flags {
  std::string db;
  std::string table;
  bool offline = false;
  std::vector<int64_t> layers = {0, 1, 2};
  int64_t ref_trials = 200;
  int64_t budget = 100;
  std::vector<int64_t> seeds = {1, 2, 3};
  int64_t batch_size = 8;
  std::vector<int64_t> device_cores = {1};
  int64_t build_threads = 2;
  int64_t min_repeat_ms = 20;
  int64_t plan_size = loom::search::TunerOptions{}.plan_size;
  int64_t warmup_trials = loom::search::TunerOptions{}.model_warmup_trials;
  double epsilon = loom::search::TunerOptions{}.epsilon;
  int64_t exhaustive_limit = loom::search::TunerOptions{}.exhaustive_plan_limit;
  double fraction = 0.95;  // of the best throughput
  bool start_from_initial_configs = loom::search::TunerOptions{}.start_from_initial_configs;
  // xgb is seeded with the table's results of the OTHER layers (transfer learning).
  bool transfer = false;
  std::string prior;           // --prior: a prior file, or "builtin"
  std::string export_records;  // --export-records: the tables as record JSON lines
  // Tuners run per seed: "random", "xgb" (the options above) and "xgb-model" (the same xgb
  // without the template's initial configs: start_from_initial_configs off, the model alone).
  std::vector<std::string> tuners = {"random", "xgb"};
  bool list = false;  // --list: print the layers and their spaces, measure nothing
};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "sample_efficiency_conv: %s\n", msg.c_str());
  std::exit(2);
}

std::vector<int64_t> IntList(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) Die(absl::StrCat("bad ", flag, " '", text, "'"));
    out.push_back(v);
  }
  if (out.empty()) Die(absl::StrCat("empty ", flag));
  return out;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--offline") {
      f.offline = true;
      continue;
    }
    if (a == "--list") {
      f.list = true;
      continue;
    }
    if (i + 1 >= argc) Die(absl::StrCat("flag ", a, " needs a value"));
    std::string v = argv[++i];
    auto one = [&](int64_t* out) {
      if (!absl::SimpleAtoi(v, out) || *out < 0) Die(absl::StrCat("bad ", a, " '", v, "'"));
    };
    if (a == "--db") {
      f.db = v;
    } else if (a == "--table") {
      f.table = v;
    } else if (a == "--layers") {
      f.layers = IntList(a, v);
    } else if (a == "--tasks") {
      for (absl::string_view key : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        auto w = loom::graph::ParseWorkloadKey(std::string_view(key.data(), key.size()));
        if (!w.ok()) Die(absl::StrCat("--tasks: ", w.status().message()));
        Layers().push_back({std::string(key), *w});
      }
    } else if (a == "--tuners") {
      f.tuners.clear();
      for (absl::string_view t : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        if (t != "random" && t != "xgb" && t != "xgb-model") {
          Die(absl::StrCat("--tuners: unknown '", t, "' (random, xgb, xgb-model)"));
        }
        f.tuners.emplace_back(t);
      }
      if (f.tuners.empty()) Die("empty --tuners");
    } else if (a == "--ref-trials") {
      one(&f.ref_trials);
    } else if (a == "--budget") {
      one(&f.budget);
    } else if (a == "--seeds") {
      f.seeds = IntList(a, v);
    } else if (a == "--batch-size") {
      one(&f.batch_size);
    } else if (a == "--device-cores") {
      f.device_cores = IntList(a, v);
    } else if (a == "--build-threads") {
      one(&f.build_threads);
    } else if (a == "--min-repeat-ms") {
      one(&f.min_repeat_ms);
    } else if (a == "--exhaustive-limit") {
      one(&f.exhaustive_limit);
    } else if (a == "--plan-size") {
      one(&f.plan_size);
    } else if (a == "--warmup-trials") {
      if (!absl::SimpleAtoi(v, &f.warmup_trials)) Die("bad --warmup-trials");
    } else if (a == "--fraction") {
      if (!absl::SimpleAtod(v, &f.fraction) || f.fraction <= 0 || f.fraction > 1) {
        Die("bad --fraction");
      }
    } else if (a == "--transfer") {
      if (v != "0" && v != "1") Die("--transfer takes 0 or 1");
      f.transfer = v == "1";
    } else if (a == "--prior") {
      f.prior = v;
    } else if (a == "--export-records") {
      f.export_records = v;
    } else if (a == "--initial-configs" || a == "--start-default") {
      if (v != "0" && v != "1") Die(absl::StrCat(a, " takes 0 or 1"));
      f.start_from_initial_configs = v == "1";
    } else if (a == "--epsilon") {
      if (!absl::SimpleAtod(v, &f.epsilon)) Die("bad --epsilon");
    } else {
      Die(absl::StrCat("unknown flag ", a));
    }
  }
  for (int64_t l : f.layers) {
    if (l >= static_cast<int64_t>(Layers().size())) Die("--layers: index out of range");
  }
  if (f.list) return f;
  if (f.db.empty() && f.table.empty()) Die("--db FILE or --table FILE (or both) is required");
  if (f.transfer && f.table.empty()) Die("--transfer reads the other layers from --table FILE");
  if (f.batch_size < 1) Die("--batch-size must be >= 1");
  return f;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

// The table of costs of one layer: one measurement per distinct config, from the store and from
// new measurements (which are appended to the store).
class CostTable {
 public:
  // `store` may be null (no --db); `table_file` may be empty (no --table).
  CostTable(const loom::graph::Task& task, const loom::ops::Template& tmpl,
            const loom::ops::Target& target, loom::tune::RecordStore* store, std::string table_file,
            bool offline, loom::tune::Builder* builder, loom::tune::Measurer* measurer)
      : task_(task),
        tmpl_(tmpl),
        target_(target),
        store_(store),
        table_file_(std::move(table_file)),
        offline_(offline),
        builder_(builder),
        measurer_(measurer) {}

  // Reads the table file's lines of this task, then the store's records; store records missing
  // from the file are appended to it.
  absl::Status Load() {
    if (!table_file_.empty()) {
      std::ifstream in(table_file_);
      std::string line;
      while (std::getline(in, line)) {
        std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits('\t', 3));
        if (parts.size() != 4 || parts[0] != task_.key) continue;
        // The JSON decides (indices change when a space changes); the index must agree.
        auto config = tmpl_.space().FromJson(parts[3]);
        int64_t index = -1;
        if (!config.ok() || !absl::SimpleAtoi(parts[1], &index) || index != config->index) {
          return absl::InvalidArgumentError(absl::StrCat(
              table_file_, ": line does not match the space of ", tmpl_.name(), ": ", line));
        }
        double cost = kFailed;
        if (parts[2] != "fail" && !absl::SimpleAtod(parts[2], &cost)) {
          return absl::InvalidArgumentError(absl::StrCat(table_file_, ": bad cost in: ", line));
        }
        table_.emplace(index, cost);
      }
    }
    if (store_ != nullptr) {
      auto records = store_->ForTask(task_.key, target_.Key(), std::nullopt);
      if (!records.ok()) return records.status();
      std::vector<std::pair<Config, double>> exported;
      for (const auto& r : *records) {
        if (r.template_name != tmpl_.name() || table_.contains(r.config_index)) continue;
        table_[r.config_index] = r.ok() ? r.median_cost : kFailed;
        exported.push_back({Config{r.config_index}, table_[r.config_index]});
      }
      AppendToFile(exported);
    }
    return absl::OkStatus();
  }

  // The objective: cached costs, new configs built and measured once.
  std::vector<MeasureResult> Evaluate(const std::vector<Config>& configs) {
    std::vector<Config> missing;
    for (const Config& c : configs) {
      if (!table_.contains(c.index) &&
          std::none_of(missing.begin(), missing.end(),
                       [&](const Config& m) { return m.index == c.index; })) {
        missing.push_back(c);
      }
    }
    if (!missing.empty() && offline_) {
      Die(absl::StrCat("--offline: ", missing.size(), " proposed configs of ", task_.key,
                       " are not in the table (first: ", tmpl_.space().ToJson(missing[0]),
                       "); rerun without --offline to measure them"));
    }
    if (!missing.empty()) {
      absl::Time t0 = absl::Now();
      std::vector<loom::tune::BuildResult> built = builder_->Build(tmpl_, missing);
      absl::Time t1 = absl::Now();
      loom::tune::MeasureTask mt{task_.key, target_, {}};
      std::vector<MeasureResult> measured = measurer_->Measure(mt, built);
      measure_seconds_ += absl::ToDoubleSeconds(absl::Now() - t1);
      build_seconds_ += absl::ToDoubleSeconds(t1 - t0);
      loom::tune::RecordContext ctx{task_.key, tmpl_.name(), target_.Key(), "sample-efficiency",
                                    task_.flops};
      std::vector<loom::tune::Record> records;
      std::vector<std::pair<Config, double>> added;
      for (size_t i = 0; i < measured.size(); ++i) {
        const MeasureResult& m = measured[i];
        table_[missing[i].index] = m.ok() ? m.MedianCost() : kFailed;
        added.push_back({missing[i], table_[missing[i].index]});
        records.push_back(loom::tune::MakeRecord(ctx, m, tmpl_.space().ToJson(missing[i]),
                                                 built[i].build_seconds));
        ++new_measurements_;
      }
      if (store_ != nullptr) {
        absl::Status st = store_->Append(records);
        if (!st.ok()) Die(absl::StrCat("record store: ", st.ToString()));
      }
      AppendToFile(added);
    }
    std::vector<MeasureResult> out;
    for (const Config& c : configs) {
      MeasureResult r;
      r.config = c;
      double cost = table_.at(c.index);
      if (std::isfinite(cost)) {
        r.costs = {cost};
      } else {
        r.error = loom::tune::ErrorKind::kRuntime;
        r.error_msg = "failed when first measured";
      }
      out.push_back(std::move(r));
    }
    return out;
  }

  void AppendToFile(const std::vector<std::pair<Config, double>>& rows) {
    if (table_file_.empty() || rows.empty()) return;
    std::ofstream out(table_file_, std::ios::app);
    for (const auto& [config, cost] : rows) {
      out << task_.key << '\t' << config.index << '\t'
          << (std::isfinite(cost) ? absl::StrFormat("%.9g", cost) : std::string("fail")) << '\t'
          << tmpl_.space().ToJson(config) << '\n';
    }
    if (!out) Die(absl::StrCat("cannot append to ", table_file_));
  }

  double Best() const {
    double best = kFailed;
    for (const auto& [index, cost] : table_) best = std::min(best, cost);
    return best;
  }
  const std::map<int64_t, double>& table() const { return table_; }
  int64_t new_measurements() const { return new_measurements_; }
  double build_seconds() const { return build_seconds_; }
  double measure_seconds() const { return measure_seconds_; }

 private:
  static constexpr double kFailed = std::numeric_limits<double>::infinity();
  const loom::graph::Task& task_;
  const loom::ops::Template& tmpl_;
  const loom::ops::Target& target_;
  loom::tune::RecordStore* store_;
  std::string table_file_;
  bool offline_;
  loom::tune::Builder* builder_;
  loom::tune::Measurer* measurer_;
  std::map<int64_t, double> table_;
  int64_t new_measurements_ = 0;
  double build_seconds_ = 0, measure_seconds_ = 0;
};

// Results of another layer (or a prior's task), for transfer.
using TransferSource = loom::search::PriorTransfer;

// Runs a tuner for `budget` trials against the table; the cost of every trial in order (+inf for
// a failed config).
std::vector<double> RunTuner(const loom::search::TunerOptions& opt, const loom::ops::Template& tmpl,
                             CostTable& table, int64_t budget, int64_t batch_size,
                             const std::vector<TransferSource>& transfer = {}) {
  auto tuner = loom::search::MakeTuner(opt, tmpl);
  if (!tuner.ok()) Die(tuner.status().ToString());
  for (const TransferSource& t : transfer) (*tuner)->LoadTransfer(*t.tmpl, t.configs, t.results);
  std::vector<double> costs;
  while (static_cast<int64_t>(costs.size()) < budget && (*tuner)->HasNext()) {
    int n = static_cast<int>(std::min(batch_size, budget - static_cast<int64_t>(costs.size())));
    std::vector<Config> configs = (*tuner)->Propose(n);
    if (configs.empty()) break;
    std::vector<MeasureResult> results = table.Evaluate(configs);
    (*tuner)->Update(configs, results);
    for (const MeasureResult& r : results) costs.push_back(r.MedianCost());
  }
  return costs;
}

int64_t TrialsTo(const std::vector<double>& costs, double target) {
  for (size_t i = 0; i < costs.size(); ++i) {
    if (costs[i] <= target) return static_cast<int64_t>(i) + 1;
  }
  return -1;
}

double BestOf(const std::vector<double>& costs) {
  double b = std::numeric_limits<double>::infinity();
  for (double c : costs) b = std::min(b, c);
  return b;
}

std::string TrialsText(int64_t t, int64_t budget) {
  return t < 0 ? absl::StrCat(">", budget) : absl::StrCat(t);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == loom::tune::kMeasureWorkerArg) {
    return loom::tune::RunMeasureWorker(0, 1);
  }
  Flags f = ParseFlags(argc, argv);
  loom::ops::Target target = loom::ops::HostCpuTarget();
  if (f.list) {
    std::printf(
        "| index | layer | template | space | valid | GFLOP | key "
        "|\n|---:|---|---|---:|---:|---:|---|\n");
    for (size_t i = 0; i < Layers().size(); ++i) {
      const Layer& l = Layers()[i];
      auto tmpl = loom::ops::MakeTemplate(l.w, target);
      if (!tmpl.ok()) Die(tmpl.status().ToString());
      std::printf("| %zu | %s | %s | %lld | %lld | %.4f | %s |\n", i, l.name.c_str(),
                  (*tmpl)->name().c_str(), static_cast<long long>((*tmpl)->space().size()),
                  static_cast<long long>((*tmpl)->space().CountValid()),
                  loom::graph::WorkloadFlops(l.w) / 1e9, loom::graph::WorkloadKey(l.w).c_str());
    }
    return 0;
  }

  std::unique_ptr<loom::tune::RecordStore> store;
  if (!f.db.empty()) {
    auto opened = loom::tune::OpenSqliteRecordStore(f.db);
    if (!opened.ok()) Die(opened.status().ToString());
    store = *std::move(opened);
  }
  loom::tune::BuildOptions bo;
  bo.num_threads = static_cast<int32_t>(std::max<int64_t>(1, f.build_threads));
  auto builder = loom::tune::MakeLocalBuilder(bo);
  if (!builder.ok()) Die(builder.status().ToString());
  loom::tune::MeasureOptions mo;
  for (int64_t c : f.device_cores) mo.cores.push_back(static_cast<int>(c));
  mo.min_repeat_ms = static_cast<int32_t>(f.min_repeat_ms);
  auto measurer = loom::tune::MakeLocalMeasurer(mo);
  if (!measurer.ok()) Die(measurer.status().ToString());
  if (f.offline) {
    std::printf("target %s; offline replay of %s (nothing is measured)\n", target.Key().c_str(),
                f.table.empty() ? f.db.c_str() : f.table.c_str());
  } else {
    auto probe = (*measurer)->Probe();
    if (!probe.ok()) Die(probe.status().ToString());
    std::printf("target %s; measurer pinned to cores %s; min_repeat_ms %lld, repeat 3\n",
                target.Key().c_str(), absl::StrJoin(probe->cpus, ",").c_str(),
                static_cast<long long>(f.min_repeat_ms));
  }
  std::unique_ptr<loom::search::TuningPrior> prior_file;
  const loom::search::TuningPrior* prior = nullptr;
  if (f.prior == "builtin") {
    prior = loom::search::BuiltinPrior(target);
    if (prior == nullptr) {
      Die(absl::StrCat("--prior builtin: Loom has no prior for ",
                       loom::search::TargetClass(target)));
    }
  } else if (!f.prior.empty()) {
    auto read = loom::search::ReadPriorFile(f.prior);
    if (!read.ok()) Die(read.status().ToString());
    prior_file = std::make_unique<loom::search::TuningPrior>(*std::move(read));
    prior = prior_file.get();
  }
  if (prior != nullptr && prior->target_class != loom::search::TargetClass(target)) {
    Die(absl::StrCat("--prior: a ", prior->target_class, " prior does not apply to ",
                     loom::search::TargetClass(target)));
  }
  std::ofstream export_records;
  if (!f.export_records.empty()) {
    export_records.open(f.export_records);
    if (!export_records) Die(absl::StrCat("cannot write ", f.export_records));
  }
  if (prior != nullptr) {
    std::printf("prior: %s (%s, %zu tasks; each layer's own task left out)\n", f.prior.c_str(),
                prior->source.c_str(), prior->tasks.size());
  }
  std::printf(
      "xgb: plan_size %lld, model warm-up %lld trials, epsilon %.2f, exhaustive plan up to %lld "
      "configs, starts from the template's initial configs: %s; transfer from the other layers: "
      "%s; batch %lld; budget %lld; reference random run %lld; seeds %s\n",
      static_cast<long long>(f.plan_size), static_cast<long long>(f.warmup_trials), f.epsilon,
      static_cast<long long>(f.exhaustive_limit), f.start_from_initial_configs ? "yes" : "no",
      f.transfer ? "yes" : "no", static_cast<long long>(f.batch_size),
      static_cast<long long>(f.budget), static_cast<long long>(f.ref_trials),
      absl::StrJoin(f.seeds, ",").c_str());
  std::printf("target: %.0f%% of the best throughput\n", f.fraction * 100);
  std::printf("load average at start: %s\n\n", LoadAverage().c_str());
  std::fflush(stdout);

  std::vector<std::string> summary;
  std::vector<double> layer_ratios;  // per layer: mean(tuner) / mean(random), per non-random tuner
  std::map<std::string, std::vector<double>> ratios_by_tuner;
  for (int64_t li : f.layers) {
    const Layer& layer = Layers()[static_cast<size_t>(li)];
    loom::graph::Task task;
    task.workload = layer.w;
    task.key = loom::graph::WorkloadKey(layer.w);
    task.flops = loom::graph::WorkloadFlops(layer.w);
    auto tmpl = loom::ops::MakeTemplate(layer.w, target);
    if (!tmpl.ok()) Die(tmpl.status().ToString());
    CostTable table(task, **tmpl, target, store.get(), f.table, f.offline, builder->get(),
                    measurer->get());
    absl::Status st = table.Load();
    if (!st.ok()) Die(st.ToString());
    int64_t cached_at_start = static_cast<int64_t>(table.table().size());
    if (export_records.is_open()) {
      for (const auto& [index, cost] : table.table()) {
        MeasureResult m;
        m.config = Config{index};
        m.timestamp = absl::Now();
        if (std::isfinite(cost)) {
          m.costs = {cost};
        } else {
          m.error = loom::tune::ErrorKind::kUnknown;
          m.error_msg = "failed in the cost table";
        }
        loom::tune::RecordContext ctx{task.key, (*tmpl)->name(), target.Key(),
                                      "sample-efficiency-table", task.flops};
        export_records << loom::tune::RecordToJson(
                              loom::tune::MakeRecord(ctx, m, (*tmpl)->space().ToJson(m.config), 0))
                       << "\n";
      }
      if (!export_records) Die(absl::StrCat("writing ", f.export_records, " failed"));
    }
    absl::Time t0 = absl::Now();

    loom::search::TunerOptions ref_opt;
    ref_opt.kind = "random";
    ref_opt.seed = 1000;
    std::vector<double> ref = RunTuner(ref_opt, **tmpl, table, f.ref_trials, f.batch_size);
    // The template's default config and the best of its initial configs (the xgb tuner's first
    // proposals with start_from_initial_configs).
    double default_cost = std::numeric_limits<double>::infinity();
    double initial_cost = default_cost;
    std::vector<Config> initial;
    for (const Config& c : (*tmpl)->InitialConfigs()) {
      if ((*tmpl)->space().IsValid(c)) initial.push_back(c);
    }
    const std::vector<MeasureResult> initial_results = table.Evaluate(initial);
    for (size_t i = 0; i < initial.size(); ++i) {
      const double cost = initial_results[i].ok() ? initial_results[i].MedianCost()
                                                  : std::numeric_limits<double>::infinity();
      if (initial[i] == (*tmpl)->DefaultConfig()) default_cost = cost;
      initial_cost = std::min(initial_cost, cost);
    }

    // Transfer: the rows of the table file of the other layers of this run (same template only).
    std::vector<TransferSource> transfer;
    const std::vector<TransferSource> no_transfer;
    for (size_t k = 0; f.transfer && k < f.layers.size(); ++k) {
      const size_t oi = static_cast<size_t>(f.layers[k]);
      if (static_cast<int64_t>(oi) == li) continue;
      loom::graph::Task other;
      other.workload = Layers()[oi].w;
      other.key = loom::graph::WorkloadKey(other.workload);
      other.flops = loom::graph::WorkloadFlops(other.workload);
      TransferSource src;
      auto made = loom::ops::MakeTemplate(other.workload, target);
      if (!made.ok()) Die(made.status().ToString());
      src.tmpl = *std::move(made);
      if (src.tmpl->name() != (*tmpl)->name()) continue;
      CostTable other_table(other, *src.tmpl, target, nullptr, f.table, /*offline=*/true,
                            builder->get(), measurer->get());
      absl::Status loaded = other_table.Load();
      if (!loaded.ok()) Die(loaded.ToString());
      for (const auto& [index, cost] : other_table.table()) src.configs.push_back(Config{index});
      src.results = other_table.Evaluate(src.configs);
      transfer.push_back(std::move(src));
    }
    if (prior != nullptr) {
      for (TransferSource& t :
           loom::search::PriorTransfersFor(*prior, (*tmpl)->name(), target, {}, task.key)) {
        transfer.push_back(std::move(t));
      }
    }
    struct Run {
      std::string kind;
      int64_t seed;
      std::vector<double> costs;
    };
    std::vector<Run> runs;
    for (int64_t seed : f.seeds) {
      for (const std::string& kind : f.tuners) {
        if (f.budget == 0) break;
        loom::search::TunerOptions opt;
        opt.kind = kind == "random" ? "random" : "xgb";
        opt.seed = static_cast<uint64_t>(seed);
        opt.plan_size = static_cast<int>(f.plan_size);
        opt.model_warmup_trials = static_cast<int>(f.warmup_trials);
        opt.epsilon = f.epsilon;
        opt.exhaustive_plan_limit = f.exhaustive_limit;
        opt.start_from_initial_configs = kind == "xgb-model" ? false : f.start_from_initial_configs;
        const std::vector<TransferSource>& given = kind == "random" ? no_transfer : transfer;
        runs.push_back({kind, seed, RunTuner(opt, **tmpl, table, f.budget, f.batch_size, given)});
        std::fprintf(stderr, "[%s] %s seed %lld done (%lld configs in table)\n", layer.name.c_str(),
                     kind.c_str(), static_cast<long long>(seed),
                     static_cast<long long>(table.table().size()));
      }
    }
    double best = table.Best();
    double target_cost = best / f.fraction;
    int64_t ref_hits =
        std::count_if(ref.begin(), ref.end(), [&](double c) { return c <= target_cost; });
    double expected_random =
        (static_cast<double>(ref.size()) + 1) / (static_cast<double>(ref_hits) + 1);
    auto gflops = [&](double cost) { return std::isfinite(cost) ? task.flops / cost / 1e9 : 0.0; };

    std::printf("## layer %lld: %s  (%s, %s)\n", static_cast<long long>(li), layer.name.c_str(),
                task.key.c_str(), (*tmpl)->name().c_str());
    std::printf(
        "space %lld configs (%lld valid); %lld distinct configs measured (%lld from an earlier "
        "run); best %.3f ms = %.1f GFLOPS; target (fraction of best) %.1f GFLOPS; default config "
        "%.1f GFLOPS (%.0f%% of the best); best of the %zu initial configs %.0f%%\n",
        static_cast<long long>((*tmpl)->space().size()),
        static_cast<long long>((*tmpl)->space().CountValid()),
        static_cast<long long>(table.table().size()), static_cast<long long>(cached_at_start),
        best * 1e3, gflops(best), task.flops / target_cost / 1e9, gflops(default_cost),
        100 * gflops(default_cost) / gflops(best), initial.size(),
        100 * gflops(initial_cost) / gflops(best));
    std::printf(
        "reference random run: %zu trials, %lld within the target -> expected random trials "
        "(N+1)/(k+1) = %.1f\n",
        ref.size(), static_cast<long long>(ref_hits), expected_random);
    std::map<std::string, std::vector<int64_t>> per_kind;
    if (!runs.empty()) {
      std::printf("| tuner | seed | trials to target | best GFLOPS in %lld trials |\n",
                  static_cast<long long>(f.budget));
      std::printf("|---|---:|---:|---:|\n");
    }
    for (const Run& r : runs) {
      int64_t t = TrialsTo(r.costs, target_cost);
      per_kind[r.kind].push_back(t < 0 ? f.budget + 1 : t);
      std::printf("| %s | %lld | %s | %.1f |\n", r.kind.c_str(), static_cast<long long>(r.seed),
                  TrialsText(t, f.budget).c_str(), gflops(BestOf(r.costs)));
    }
    auto mean = [](const std::vector<int64_t>& v) {
      double s = 0;
      for (int64_t x : v) s += static_cast<double>(x);
      return v.empty() ? 0.0 : s / static_cast<double>(v.size());
    };
    const double mr = mean(per_kind["random"]);
    std::string row = absl::StrFormat("| %s | %lld | %.1f | %.0f%% | %.0f%% | %.1f |", layer.name,
                                      static_cast<long long>((*tmpl)->space().CountValid()),
                                      gflops(best), 100 * gflops(default_cost) / gflops(best),
                                      100 * gflops(initial_cost) / gflops(best), expected_random);
    for (const std::string& kind : f.tuners) {
      if (runs.empty()) break;
      const double m = mean(per_kind[kind]);
      absl::StrAppend(&row,
                      absl::StrFormat(" %s (%.1f) |", absl::StrJoin(per_kind[kind], ", "), m));
      if (kind != "random" && mr > 0) {
        absl::StrAppend(&row, absl::StrFormat(" %.2f |", m / mr));
        ratios_by_tuner[kind].push_back(m / mr);
      }
      std::printf("mean trials to target (not reached counts as budget+1): %s %.1f", kind.c_str(),
                  m);
      if (kind != "random" && mr > 0) std::printf(", / random %.2f", m / mr);
      std::printf("\n");
    }
    std::printf(
        "new measurements %lld (build %.0f s, measure %.0f s), layer wall %.0f s, load "
        "average %s\n\n",
        static_cast<long long>(table.new_measurements()), table.build_seconds(),
        table.measure_seconds(), absl::ToDoubleSeconds(absl::Now() - t0), LoadAverage().c_str());
    std::fflush(stdout);
    summary.push_back(row);
  }
  std::printf(
      "## summary (trials to reach %.0f%% of the best; per seed, mean in parentheses; budget+1 = "
      "not reached; ratios: mean trials / random's mean trials)\n",
      f.fraction * 100);
  std::string header =
      "| layer | valid configs | best GFLOPS | default | best initial | random expected |";
  std::string rule = "|---|---:|---:|---:|---:|---:|";
  for (const std::string& kind : f.tuners) {
    if (f.budget == 0) break;
    absl::StrAppend(&header, " ", kind, " |");
    absl::StrAppend(&rule, "---|");
    if (kind != "random") {
      absl::StrAppend(&header, " ", kind, " / random |");
      absl::StrAppend(&rule, "---:|");
    }
  }
  std::printf("%s\n%s\n", header.c_str(), rule.c_str());
  for (const std::string& s : summary) std::printf("%s\n", s.c_str());
  for (const auto& [kind, ratios] : ratios_by_tuner) {
    double log_sum = 0;
    for (double r : ratios) log_sum += std::log(std::max(r, 1e-9));
    std::printf("geomean over layers of %s / random: %.2f\n", kind.c_str(),
                std::exp(log_sum / static_cast<double>(ratios.size())));
  }
  std::printf("load average at end: %s\n", LoadAverage().c_str());
  return 0;
}
