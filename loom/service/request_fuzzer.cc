// libFuzzer target for the service's request decoding: a SubmitJobRequest (spec checks, the
// uploaded model's external-data scan, error rewriting), an agent's report (build and measure
// output checks) and the tokens file. Any input must give a result or a status, never a crash,
// hang or unbounded allocation. Seeds: tests/data/request_corpus/ (also run as a normal test by
// fuzz_corpus_test.cc).
//   cmake --preset fuzz && cmake --build --preset fuzz --target service_request_fuzzer
//   build/fuzz/loom/service/service_request_fuzzer -rss_limit_mb=2048 <scratch corpus copy>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "loom/service/testing/fuzz_harness.h"

// Protobuf logs every string field that is not UTF-8; at fuzzing rates that is most of the time.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::service::testing::FuzzRequest(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
