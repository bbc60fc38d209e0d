// A Builder that compiles nothing, for tests of the layers above (the tune loop, the engine): a
// config the template can emit "builds" instantly to a placeholder artifact; one it cannot emit is
// an instantiation error, exactly as with the real builder. Pair it with FakeMeasurer.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/toolchain/builder.h"

namespace loom::tune {

class FakeBuilder final : public Builder {
 public:
  std::vector<BuildResult> Build(const ops::Template& tmpl,
                                 const std::vector<ops::Config>& configs) override {
    std::vector<BuildResult> out;
    out.reserve(configs.size());
    for (const ops::Config& c : configs) {
      auto source = tmpl.Emit(c);
      if (!source.ok()) {
        out.push_back(BuildResult{.config = c,
                                  .error = ErrorKind::kInstantiation,
                                  .error_msg = std::string(source.status().message())});
      } else {
        out.push_back(BuildSource(*source, c));
      }
    }
    return out;
  }
  BuildResult BuildSource(const ops::KernelSource&, const ops::Config& config) override {
    return BuildResult{.config = config, .artifact_path = absl::StrCat("fake://", config.index)};
  }
  const std::string& cache_dir() const override { return cache_dir_; }

 private:
  std::string cache_dir_ = "fake://";
};

}  // namespace loom::tune
