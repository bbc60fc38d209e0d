// Times chosen configs of one workload's template against each other on one core (issue 17:
// Segformer-b0's decode-head 1x1 conv). Each config is the template's default with some knobs
// set; all are compiled, checked against the reference once, then timed in interleaved rounds so
// that every config sees the same background load. Prints per config the median and best time
// per call and the median of its per-round ratio to the first config.
//
//   build/<dir>/bench/conv_configs --workload KEY [--config "tile_ic=8,tile_oc=4"]...
//       [--core N] [--rounds N] [--min-ms MS] [--clock wall|cpu] [--align BYTES]
//
// Kernels are built with the tuner's and the compiled model's -O3 (see below); --align 64 puts
// each buffer at the alignment of the compiled model's arena. KEY is a workload key as `loom
// tasks` prints it. --config "default" (or none given) is the
// template's DefaultConfig(); a knob not named keeps the default's value, and a value the knob
// does not offer is an error.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_common.h"
#include "loom/graph/tasks.h"
#include "loom/ops/local_kernel.h"
#include "loom/ops/template.h"

namespace {

using loom::graph::Tensor;
using loom::ops::Config;
using loom::ops::Template;

// The default with the knobs of `spec` ("name=value,...") set; false after a message.
bool ParseConfig(const Template& t, const std::string& spec, Config* out) {
  const loom::ops::ConfigSpace& space = t.space();
  std::vector<int64_t> choices = space.Choices(t.DefaultConfig());
  if (spec != "default") {
    for (absl::string_view kv : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
      std::vector<std::string> p = absl::StrSplit(kv, '=');
      int64_t value = 0;
      const int k = p.size() == 2 ? space.KnobIndex(p[0]) : -1;
      if (k < 0 || !absl::SimpleAtoi(p[1], &value)) {
        std::fprintf(stderr, "--config %s: '%s' is not knob=value of this template\n", spec.c_str(),
                     std::string(kv).c_str());
        return false;
      }
      const std::vector<int64_t>& values = space.knobs()[static_cast<size_t>(k)].values;
      auto it = std::find(values.begin(), values.end(), value);
      if (it == values.end()) {
        std::fprintf(stderr, "--config %s: knob %s has no value %lld\n", spec.c_str(), p[0].c_str(),
                     static_cast<long long>(value));
        return false;
      }
      choices[static_cast<size_t>(k)] = it - values.begin();
    }
  }
  *out = space.FromChoices(choices);
  if (!space.IsValid(*out)) {
    std::fprintf(stderr, "--config %s: not valid in the space (%s)\n", spec.c_str(),
                 space.ToJson(*out).c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int core = 0, rounds = 15;
  double min_ms = 100;
  size_t align = 0;  // 0: the tensors' own storage
  bool aligned = false;
  std::string key;
  std::vector<std::string> specs;
  loom::bench::Clock clock = loom::bench::Clock::kWall;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--core") {
      core = std::atoi(value.c_str());
    } else if (flag == "--rounds") {
      rounds = std::atoi(value.c_str());
    } else if (flag == "--min-ms") {
      min_ms = std::atof(value.c_str());
    } else if (flag == "--workload") {
      key = value;
    } else if (flag == "--config") {
      specs.push_back(value);
    } else if (flag == "--align") {
      align = std::strtoull(value.c_str(), nullptr, 10);
      aligned = align > 0;
    } else if (flag == "--clock") {
      clock = value == "cpu" ? loom::bench::Clock::kThreadCpu : loom::bench::Clock::kWall;
    } else {
      std::fprintf(stderr,
                   "unknown flag %s (--workload KEY --config k=v,... --core N --rounds N "
                   "--min-ms MS --clock wall|cpu)\n",
                   flag.c_str());
      return 2;
    }
  }
  auto w = loom::graph::ParseWorkloadKey(key);
  if (!w.ok()) {
    std::fprintf(stderr, "--workload: %s\n", w.status().ToString().c_str());
    return 2;
  }
  if (specs.empty()) specs.push_back("default");
  const loom::ops::Target target = loom::ops::HostCpuTarget();
  auto made = loom::ops::MakeTemplate(*w, target);
  if (!made.ok()) {
    std::fprintf(stderr, "%s\n", made.status().ToString().c_str());
    return 1;
  }
  const Template& t = **made;
  std::vector<Config> configs;
  for (const std::string& s : specs) {
    Config c;
    if (!ParseConfig(t, s, &c)) return 2;
    configs.push_back(c);
  }
  std::printf("%s on %s, template %s, default %s\n", key.c_str(), target.Key().c_str(),
              t.name().c_str(), t.space().ToJson(t.DefaultConfig()).c_str());

  if (!loom::bench::PinToCore(core)) return 1;
  char dir_template[] = "/tmp/loom_conv_configs_XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::vector<loom::graph::Tensor> natural = loom::ops::RandomNaturalInputs(t, 1);
  // Built as the tuner's builder and the compiled model build kernels (-O3 -fno-math-errno;
  // LocalKernel's -O2 alone timed Segformer's 1x1 conv 3x slower under outer_order 0).
  std::vector<loom::bench::Candidate> built;
  for (const Config& c : configs) {
    auto src = t.Emit(c);
    auto k = src.ok() ? loom::ops::LocalKernel::Compile(*src, dir, "-O3 -fno-math-errno")
                      : absl::StatusOr<std::unique_ptr<loom::ops::LocalKernel>>(src.status());
    if (!k.ok()) {
      std::fprintf(stderr, "build failed: %s\n", k.status().ToString().c_str());
      return 1;
    }
    built.push_back({c, *std::move(k), loom::ops::PrepareBuffers(t, c, natural)});
  }
  const loom::graph::Tensor want = t.Reference(natural);
  std::vector<loom::bench::Timed> timed;
  for (loom::bench::Candidate& c : built) {
    const loom::ops::ErrorStats e =
        loom::ops::CompareTensors(loom::ops::RunOnce(t, c.config, *c.kernel, natural), want);
    if (!e.WithinTolerance()) {
      std::fprintf(stderr, "%s: wrong output (max err %g of %g)\n",
                   t.space().ToJson(c.config).c_str(), e.max_abs_err, e.max_abs_ref);
      return 1;
    }
    if (aligned) {
      // Copies of the buffers at `align` bytes, as the compiled model's arena aligns its buffers
      // (new[] puts a large tensor 16 bytes past a page boundary).
      for (size_t b = 0; b < c.buffers.pointers.size(); ++b) {
        const Tensor& tensor = c.buffers.tensors[b];
        const size_t bytes = (tensor.num_bytes() + align - 1) / align * align;
        void* p = std::aligned_alloc(align, bytes);
        std::memcpy(p, tensor.raw_data(), tensor.num_bytes());
        c.buffers.pointers[b] = p;  // leaked: the process ends after the timing
      }
    }
    loom::bench::Timed x{[&c] { c.Run(); }};
    x.clock = clock;
    x.Calibrate(min_ms);
    timed.push_back(std::move(x));
  }
  for (int r = 0; r < rounds; ++r) {
    for (loom::bench::Timed& x : timed) x.Repeat();
  }
  const double flops = loom::graph::WorkloadFlops(*w);
  for (size_t i = 0; i < timed.size(); ++i) {
    std::vector<double> ratio;
    for (int r = 0; r < rounds; ++r) ratio.push_back(timed[i].per_call[r] / timed[0].per_call[r]);
    std::sort(ratio.begin(), ratio.end());
    const loom::bench::Timing s = timed[i].Summary();
    std::printf("%-40s median %8.3f ms  best %8.3f ms  %6.1f GFLOPS  ratio to first %.3f\n",
                specs[i].c_str(), s.median_s * 1e3, s.best_s * 1e3, flops / s.best_s * 1e-9,
                ratio[ratio.size() / 2]);
  }
  return 0;
}
