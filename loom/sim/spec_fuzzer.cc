// libFuzzer target for the simulation spec (ParseSimSpec, what `loom simulate SPEC.yaml` reads):
// any text must yield a spec or a kInvalidArgument status with a message, never a crash, an
// escaping exception, a hang or a memory blow-up. Specs small enough to simulate quickly are also
// simulated under every policy they name, so the simulator sees what the parser lets through.
// Trace files are looked up in a folder that does not exist. Seeds:
// tests/data/fuzz/sim_spec_fuzzer/ (also run as the test sim_spec_fuzzer_corpus in every preset).
//   cmake --preset fuzz && cmake --build --preset fuzz --target sim_spec_fuzzer
//   build/fuzz/loom/sim/sim_spec_fuzzer -rss_limit_mb=2048 <scratch copy of the corpus>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "loom/sim/simulator.h"
#include "loom/sim/spec.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// Stages one simulation of the spec's own job counts runs.
double StageCount(const loom::sim::SimSpec& spec) {
  double stages = 0;
  for (const auto& g : spec.jobs) {
    stages +=
        static_cast<double>(g.count) * g.tasks * g.rounds * static_cast<double>(g.stages.size());
  }
  return stages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto spec = loom::sim::ParseSimSpec(std::string_view(reinterpret_cast<const char*>(data), size),
                                      "/nonexistent/loom-fuzz");
  if (!spec.ok()) {
    Check(spec.status().code() == absl::StatusCode::kInvalidArgument ||
          spec.status().code() == absl::StatusCode::kNotFound);  // a trace file
    Check(!spec.status().message().empty());
    return 0;
  }
  Check(!spec->hosts.empty() && !spec->jobs.empty() && !spec->policies.empty());
  if (StageCount(*spec) <= 400) {
    for (const std::string& policy : spec->policies) {
      auto result = loom::sim::Simulate(*spec, policy);
      Check(result.ok() || !result.status().message().empty());
    }
  }
  return 0;
}
