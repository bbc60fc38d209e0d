// The weights.bin image the plan.json fuzzer (artifact_fuzzer.cc) and its corpus test
// (artifact_corpus_test.cc) check plans against: the magic and 1 MiB of zeros, so every constant
// of a seed plan lies inside it.
#pragma once

#include <string>

namespace loom::runtime {

inline std::string FuzzWeightsImage() {
  return std::string("LOOMWGT1") + std::string(1 << 20, '\0');
}

}  // namespace loom::runtime
