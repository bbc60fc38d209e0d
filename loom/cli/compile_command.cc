// `loom compile MODEL [--db FILE] [--threads N] [--sign KEY] -o DIR`: compiles a model with the
// best recorded configs (defaults without --db) and writes a self-contained artifact
// (runtime/artifact.h), signed with --sign, that
// `loom run DIR`, `loom bench DIR`, loom::Model::Load(DIR) and the C API load with no compiler
// and no database. Built on the library API (include/loom/loom.h).
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "loom/cli/commands.h"
#include "loom/cli/model_options.h"
#include "loom/loom.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"

namespace loom::cli {
namespace {

struct CompileCommandOptions {
  ModelOptions model;
  std::string db;
  std::string out;
  int32_t threads = 1;
  int32_t build_threads = 2;
  std::string cache_dir;
  bool no_fuse = false;
  std::string sign_key;
};

int64_t FileBytes(const std::filesystem::path& p) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

void RunCompile(const CompileCommandOptions& opts) {
  if (opts.threads < 1) Fail(absl::InvalidArgumentError("--threads must be at least 1"));
  if (opts.db.empty() == false && !std::filesystem::exists(opts.db)) {
    Fail(absl::NotFoundError(
        absl::StrCat("record database ", opts.db, " does not exist (make one with 'loom tune')")));
  }
  auto loaded = LoadModelFromOptions(opts.model);
  FailIfError(loaded.status());
  Model model = Model::FromGraph(std::move(loaded->graph), loaded->source)
                    .Compile({.threads = opts.threads,
                              .db = opts.db,
                              .fuse = !opts.no_fuse,
                              .build_threads = opts.build_threads,
                              .cache_dir = opts.cache_dir});
  FailIfError(model.status());
  FailIfError(model.Export(opts.out));
  if (!opts.sign_key.empty()) FailIfError(runtime::SignArtifact(opts.out, opts.sign_key));
  const runtime::CompileStats& st = model.compiled()->stats();
  const std::filesystem::path dir(opts.out);
  std::printf("model       %s\n", loaded->source.c_str());
  std::printf(
      "kernels     %lld template steps (%lld tuned), %lld generated, %lld on the blocked layout, "
      "%lld unique kernels, %lld fused ops, %lld views, %lld reference steps\n",
      static_cast<long long>(st.kernel_steps), static_cast<long long>(st.tuned_kernels),
      static_cast<long long>(st.generated_steps), static_cast<long long>(st.blocked_steps),
      static_cast<long long>(st.unique_kernels), static_cast<long long>(st.fused_ops),
      static_cast<long long>(st.views), static_cast<long long>(st.reference_steps));
  std::printf("target      %s\n", model.compiled()->target_key().c_str());
  std::printf("wrote       %s: %s %.1f KB, %s %.1f MB, %s\n", opts.out.c_str(),
              runtime::kArtifactLibraryFile,
              static_cast<double>(FileBytes(dir / runtime::kArtifactLibraryFile)) / 1e3,
              runtime::kArtifactWeightsFile,
              static_cast<double>(FileBytes(dir / runtime::kArtifactWeightsFile)) / 1e6,
              runtime::kArtifactPlanFile);
  if (!opts.sign_key.empty()) {
    std::printf("signed      %s, %s (Ed25519, key %s)\n", runtime::kArtifactManifestFile,
                runtime::kArtifactSignatureFile, opts.sign_key.c_str());
  }
}

}  // namespace

void RegisterCompileCommand(CLI::App& app) {
  auto opts = std::make_shared<CompileCommandOptions>();
  auto* cmd = app.add_subcommand(
      "compile", "Compile a model (best configs from --db) into a self-contained artifact DIR");
  AddModelOptions(cmd, &opts->model);
  cmd->add_option("-o,--output", opts->out, "Artifact directory to write (created if missing)")
      ->required();
  cmd->add_option("--db", opts->db, "Records database with tuned configs (default: untuned)");
  cmd->add_option("--threads", opts->threads,
                  "Threads the artifact runs on by default (loom run DIR --threads overrides)");
  cmd->add_option("--build-threads", opts->build_threads, "Parallel kernel compiles (default 2)");
  cmd->add_option("--cache-dir", opts->cache_dir,
                  "Kernel cache directory (default: the builder's, ~/.cache/loom/kernels)");
  cmd->add_flag("--no-fuse", opts->no_fuse,
                "Run every elementwise node as its own step (no epilogues, no chains)");
  cmd->add_option("--sign", opts->sign_key,
                  "Sign the artifact with the Ed25519 private key in this PEM file "
                  "(manifest.sha256 + manifest.sig; loom run DIR --verify PUB checks it)");
  cmd->callback([opts] { RunCompile(*opts); });
}

}  // namespace loom::cli
