// libFuzzer target for the ONNX importer: any byte string must yield a Graph or a Status, never a
// crash, hang or unbounded allocation. Seeds: tests/data/onnx_corpus/ (also run as a normal test
// by onnx_importer_corpus_test.cc).
//   cmake --preset fuzz -B build/fuzz && cmake --build build/fuzz --target
//   graph_onnx_importer_fuzzer build/fuzz/loom/graph/graph_onnx_importer_fuzzer -rss_limit_mb=4096
//   <scratch copy of corpus>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "loom/graph/onnx_importer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // External data is looked up in a folder that does not exist, so no file outside is read.
  auto graph = loom::graph::ImportOnnxBytes(
      std::string_view(reinterpret_cast<const char*>(data), size), "/nonexistent/loom-fuzz");
  if (graph.ok()) {
    // Whatever imports must be a structurally valid graph.
    if (!graph->Validate().ok()) __builtin_trap();
  }
  return 0;
}
