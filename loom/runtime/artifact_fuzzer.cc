// libFuzzer target for an artifact's plan.json: any byte string must give a validated plan or a
// status (CheckPlanJson, what CompiledModel::Load checks before it loads model.so), never a crash,
// hang or unbounded allocation. The weights image is fixed: "LOOMWGT1" and 1 MiB of zeros. Seeds:
// tests/data/plan_corpus/ (also run as a normal test by artifact_corpus_test.cc).
//   cmake --preset fuzz && cmake --build --preset fuzz --target runtime_artifact_fuzzer
//   build/fuzz/loom/runtime/runtime_artifact_fuzzer -rss_limit_mb=4096 <scratch copy of corpus>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "loom/runtime/artifact.h"
#include "loom/runtime/testing/artifact_fuzz_weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string* const weights = new std::string(loom::runtime::FuzzWeightsImage());
  (void)loom::runtime::CheckPlanJson(std::string_view(reinterpret_cast<const char*>(data), size),
                                     *weights);
  return 0;
}
