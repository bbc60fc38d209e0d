// libFuzzer target for the experiment spec (ParseExperimentSpec, what `loom experiment SPEC.yaml`
// reads): any text must yield a spec or a kInvalidArgument status with a message, never a crash,
// an escaping exception or a hang. A parsed spec keeps the invariants the runner relies on.
// Seeds: tests/data/fuzz/experiment_spec_fuzzer/ (also run as the test
// experiment_spec_fuzzer_corpus in every preset).
//   cmake --preset fuzz && cmake --build --preset fuzz --target experiment_spec_fuzzer
//   build/fuzz/loom/experiment/experiment_spec_fuzzer -rss_limit_mb=2048 <scratch corpus copy>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "loom/experiment/spec.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto spec = loom::experiment::ParseExperimentSpec(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!spec.ok()) {
    Check(spec.status().code() == absl::StatusCode::kInvalidArgument);
    Check(!spec.status().message().empty());
    return 0;
  }
  Check(!spec->jobs.empty() && !spec->setups.empty());
  Check(spec->repeat >= 1 && spec->run_timeout_s > 0 && spec->min_repeat_ms >= 0);
  Check(spec->cpu_slots >= 0 && spec->build_slots >= 0);
  Check(spec->distortion_samples >= 0 && spec->latency_runs >= 0);
  for (const auto& job : spec->jobs) {
    Check(!job.model.empty() && job.trials >= 1 && job.batch_size >= 1);
    for (int64_t t : job.tasks) Check(t >= 0);
  }
  return 0;
}
