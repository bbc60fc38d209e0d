// Test support for the ops/ tests of generated kernels (vector math, lowered operators): a
// scratch directory for compiled kernels. Test-only; header-only so that it needs no library.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace loom::ops::testutil {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/loom_ops_test_XXXXXX";
    const char* made = mkdtemp(tmpl);
    path_ = made != nullptr ? made : "/tmp";
  }
  ~TempDir() {
    if (path_ != "/tmp") std::filesystem::remove_all(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace loom::ops::testutil
