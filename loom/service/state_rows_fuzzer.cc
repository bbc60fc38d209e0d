// libFuzzer target for the state store's row decoding (state_rows.h): any column values a
// damaged or tampered state file could hold must decode to rows or a kDataLoss status, never a
// crash, hang or unbounded allocation. Seeds: tests/data/state_rows_corpus/ (also run as a normal
// test by fuzz_corpus_test.cc).
//   cmake --preset fuzz && cmake --build --preset fuzz --target service_state_rows_fuzzer
//   build/fuzz/loom/service/service_state_rows_fuzzer -rss_limit_mb=2048 <scratch corpus copy>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "loom/service/testing/fuzz_harness.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  loom::service::testing::SilenceProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::service::testing::FuzzStateRows(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
