// Every shared reference model (../shared/models and ../shared/transformers, every input set)
// through the compiled path and through an exported artifact, on 1 and 2 threads, against ONNX
// Runtime's outputs: max|a-b| <= 1e-3 * max|ref|. The plan runs no reference kernel. Skips when
// $LOOM_SHARED_DIR is absent.
#include "loom/graph/testing/shared_models.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/npy.h"
#include "loom/runtime/compiled_model.h"

namespace loom::runtime {
namespace {

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string();
}

void ExpectMatchesOrt(const graph::Tensor& got, const graph::Tensor& want,
                      const std::string& what) {
  ASSERT_EQ(got.num_elements(), want.num_elements()) << what;
  double err = 0, ref = 0;
  for (int64_t i = 0; i < want.num_elements(); ++i) {
    err = std::max(err, std::fabs(got.DoubleAt(i) - want.DoubleAt(i)));
    ref = std::max(ref, std::fabs(want.DoubleAt(i)));
  }
  EXPECT_GT(ref, 0) << what;
  EXPECT_LE(err, 1e-3 * ref) << what << ": max|a-b| " << err << ", max|ref| " << ref;
}

TEST(SharedModelsTest, CompiledAndExportedMatchOnnxRuntime) {
  std::vector<std::string> problems;
  const std::vector<graph::SharedModel> models = graph::AllSharedModels(&problems);
  if (models.empty()) GTEST_SKIP() << "LOOM_SHARED_DIR is absent";
  EXPECT_TRUE(problems.empty()) << absl::StrJoin(problems, "; ");
  for (const graph::SharedModel& model : models) {
    SCOPED_TRACE(model.name);
    auto loaded = frontend::LoadModel(model.onnx);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    CompileOptions o;
    o.build.num_threads = 2;
    o.build.cache_dir = BuildDir() + "/shared_models_test_kernels";
    const std::string dir = absl::StrCat(BuildDir(), "/shared_models_test/", model.name);
    std::filesystem::remove_all(dir);
    // Per thread count: the compiled model, and the artifact exported from the 1-thread one.
    std::vector<std::pair<std::string, std::unique_ptr<CompiledModel>>> runs;
    for (int32_t threads : {1, 2}) {
      o.num_threads = threads;
      auto cm = CompiledModel::Compile(loaded->graph, o);
      ASSERT_TRUE(cm.ok()) << cm.status();
      if (threads == 1) {
        ExportOptions e;
        e.build = o.build;
        ASSERT_TRUE((*cm)->Export(dir, e).ok());
      }
      runs.emplace_back(absl::StrCat("compiled, ", threads, " threads"), *std::move(cm));
    }
    for (int32_t threads : {1, 2}) {
      auto art = CompiledModel::Load(dir, {.num_threads = threads});
      ASSERT_TRUE(art.ok()) << art.status();
      runs.emplace_back(absl::StrCat("artifact, ", threads, " threads"), *std::move(art));
    }
    for (const graph::SharedModelCase& c : model.cases) {
      std::map<std::string, graph::Tensor> inputs;
      for (const auto& [name, path] : c.inputs) {
        auto t = graph::ReadNpy(path);
        ASSERT_TRUE(t.ok()) << t.status();
        inputs[name] = *t;
      }
      auto want = graph::ReadNpy(c.ort_output);
      ASSERT_TRUE(want.ok()) << want.status();
      for (auto& [how, m] : runs) {
        const std::string what = absl::StrCat(
            model.name, c.label.empty() ? "" : absl::StrCat(" (", c.label, ")"), " ", how);
        std::vector<StepTiming> steps;
        auto got = m->RunProfiled(inputs, &steps);
        ASSERT_TRUE(got.ok()) << what << ": " << got.status();
        ASSERT_FALSE(got->empty());
        ExpectMatchesOrt((*got)[0], *want, what);
        std::vector<std::string> refs;
        for (const StepTiming& s : steps) {
          if (s.kind.rfind("ref:", 0) != 0) continue;
          refs.push_back(absl::StrCat(s.kind, " ", s.name));
        }
        EXPECT_TRUE(refs.empty()) << what
                                  << " runs reference kernels: " << absl::StrJoin(refs, ", ");
      }
    }
  }
}

}  // namespace
}  // namespace loom::runtime
