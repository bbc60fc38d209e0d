// What every builder shares outside its compiler (builder.h): the checks of BuildOptions and the
// default cache folder.
#include "loom/toolchain/builder.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace loom::tune {

absl::Status ValidateBuildOptions(const BuildOptions& options) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("BuildOptions.num_threads must be at least 1, got ", options.num_threads));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("BuildOptions.timeout must be positive");
  }
  return absl::OkStatus();
}

std::string DefaultKernelCacheDir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] != '\0') return absl::StrCat(xdg, "/loom/kernels");
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return absl::StrCat(home, "/.cache/loom/kernels");
  return "/tmp/loom-kernels";
}

}  // namespace loom::tune
