// The driver that runs a libFuzzer target's seed corpus as a normal test in builds without
// libFuzzer (the default preset; cmake/LoomHelpers.cmake links it with every `*_fuzzer.cc` that
// has a corpus in tests/data/fuzz/<target>/). Feeds each file of each directory (or each file)
// named on the command line to LLVMFuzzerTestOneInput once, in name order, and fails when none
// was found; a crash, a trap or a sanitizer report in the target fails the test as it would fail
// the fuzzer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    if (fs::is_directory(argv[i], ec)) {
      for (const fs::directory_entry& e : fs::directory_iterator(argv[i], ec)) {
        if (e.is_regular_file()) inputs.push_back(e.path());
      }
    } else if (fs::is_regular_file(argv[i], ec)) {
      inputs.emplace_back(argv[i]);
    } else {
      std::fprintf(stderr, "fuzz corpus: '%s' is neither a file nor a directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "fuzz corpus: no inputs (usage: %s DIR|FILE...)\n", argv[0]);
    return 2;
  }
  for (const fs::path& p : inputs) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "fuzz corpus: cannot read %s\n", p.c_str());
      return 2;
    }
    std::fprintf(stderr, "fuzz corpus: %s (%zu bytes)\n", p.filename().c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("fuzz corpus: %zu inputs ran cleanly\n", inputs.size());
  return 0;
}
