// libFuzzer target for .npy decoding (DecodeNpy, what `loom run --input x.npy` and ReadNpy go
// through): any byte string must yield a tensor or a kInvalidArgument status with a message,
// never a crash, a hang or an allocation larger than the input justifies. What decodes must
// encode and decode back to the same dtype, shape and bytes. Seeds:
// tests/data/fuzz/graph_npy_fuzzer/ (also run as the test graph_npy_fuzzer_corpus in every preset).
//   cmake --preset fuzz && cmake --build --preset fuzz --target graph_npy_fuzzer
//   build/fuzz/loom/graph/graph_npy_fuzzer -rss_limit_mb=2048 <scratch copy of the corpus>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/status.h"
#include "loom/graph/npy.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (loom::graph::DType hint : {loom::graph::DType::kUndefined, loom::graph::DType::kBFloat16}) {
    auto t = loom::graph::DecodeNpy(bytes, "fuzz input", {.dtype_hint = hint});
    if (!t.ok()) {
      Check(t.status().code() == absl::StatusCode::kInvalidArgument);
      Check(!t.status().message().empty());
      continue;
    }
    // The data section holds every element: a decoded tensor is never larger than its input.
    Check(t->num_bytes() <= size);
    auto encoded = loom::graph::EncodeNpy(*t);
    Check(encoded.ok());
    auto back = loom::graph::DecodeNpy(*encoded, "re-encoded input", {.dtype_hint = hint});
    Check(back.ok());
    Check(back->dtype() == t->dtype() && back->shape() == t->shape());
    Check(back->num_bytes() == t->num_bytes());
    Check(t->num_bytes() == 0 || std::memcmp(back->raw_data(), t->raw_data(), t->num_bytes()) == 0);
  }
  return 0;
}
