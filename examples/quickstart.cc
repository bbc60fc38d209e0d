// Quickstart: load a model, tune a few trials per task, compile, benchmark, export an artifact.
// Usage: quickstart [MODEL] [ARTIFACT_DIR]   (default: zoo:tiny_cnn, quickstart_artifact)
#include <cstdio>
#include <string>

#include "loom/loom.h"

int main(int argc, char** argv) {
  loom::Init(argc, argv);  // Tune measures candidates in a child process that re-runs this program
  const std::string spec = argc > 1 ? argv[1] : "zoo:tiny_cnn";
  const std::string out = argc > 2 ? argv[2] : "quickstart_artifact";
  loom::Model model =
      loom::Model::Load(spec).Tune({.trials = 8, .db = "quickstart.db"}).Compile({.threads = 2});
  absl::StatusOr<loom::BenchmarkResult> latency = model.Benchmark({.min_seconds = 0.5});
  absl::Status exported = latency.ok() ? model.Export(out) : latency.status();
  if (!exported.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(exported.message()).c_str());
    return 1;
  }
  std::printf("%s: %lld tasks tuned, median %.3f ms (%lld runs); artifact in %s\n", spec.c_str(),
              static_cast<long long>(model.tuned_tasks()), latency->median_ms,
              static_cast<long long>(latency->runs), out.c_str());
  return 0;
}
