// `loom compile MODEL [--db FILE] [--threads N] [--sign KEY] -o DIR`: compiles a model with the
// best recorded configs (defaults without --db) and writes a self-contained artifact
// (runtime/artifact.h), signed with --sign, that
// `loom run DIR`, `loom bench DIR`, loom::Model::Load(DIR) and the C API load with no compiler
// and no database. Built on the library API (include/loom/loom.h). With `--target cuda
// [--device cuda:N]` the model is compiled for that GPU (runtime::CudaModel, kernels by NVRTC)
// and the artifact holds cubins for its architecture, which `loom run DIR` runs on a GPU.
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/cli/model_options.h"
#include "loom/loom.h"
#include "loom/records/record_store.h"
#include "loom/runtime/artifact.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/cuda_backend.h"
#include "loom/runtime/cuda_model.h"

namespace loom::cli {
namespace {

struct CompileCommandOptions {
  ModelOptions model;
  std::string db = "loom.db";
  std::string out;
  int32_t threads = 1;
  int32_t build_threads = 2;
  std::string cache_dir;
  bool no_fuse = false;
  std::string sign_key;
  std::string target = "cpu";
  std::string device;  // --target cuda: cuda:N
  bool exact_target = false;
  bool json = false;
  bool db_given = false;  // --db on the command line (else the default, used only if it exists)
};

int64_t FileBytes(const std::filesystem::path& p) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

// --target cuda: the GPU artifact (kernel images for the device's architecture).
void CompileCuda(const CompileCommandOptions& opts, frontend::LoadedModel loaded) {
  std::unique_ptr<tune::RecordStore> store;
  if (!opts.db.empty()) store = OpenExistingRecordDb(opts.db);
  runtime::CudaDeviceOptions device;
  device.ordinal = CudaOrdinalOrFail(opts.device);
  device.build.num_threads = opts.build_threads;
  device.build.cache_dir = opts.cache_dir;
  auto backend = runtime::MakeCudaDeviceBackend(device);
  FailIfError(backend.status());
  auto model = runtime::CudaModel::Compile(loaded.graph, backend->get(),
                                           {.records = store.get(), .fuse = !opts.no_fuse});
  FailIfError(model.status());
  FailIfError((*model)->Export(opts.out));
  if (!opts.sign_key.empty()) FailIfError(runtime::SignArtifact(opts.out, opts.sign_key));
  const runtime::CudaModelStats& st = (*model)->stats();
  if (opts.json) {
    PrintJson({{"model", loaded.source},
               {"target", (*backend)->target().Key()},
               {"kernel_steps", st.kernel_steps},
               {"tuned_kernels", st.tuned_kernels},
               {"unique_kernels", st.kernels_built},
               {"fused_ops", st.fused_ops},
               {"output", opts.out},
               {"signed", !opts.sign_key.empty()}});
    return;
  }
  std::printf("model       %s\n", loaded.source.c_str());
  std::printf(
      "kernels     %lld template steps (%lld tuned), %lld elementwise, %lld lowered, %lld pools, "
      "%lld unique kernels, %lld fused ops, %lld views, %lld host steps\n",
      static_cast<long long>(st.kernel_steps), static_cast<long long>(st.tuned_kernels),
      static_cast<long long>(st.elementwise_steps), static_cast<long long>(st.lowered_steps),
      static_cast<long long>(st.pool_steps), static_cast<long long>(st.kernels_built),
      static_cast<long long>(st.fused_ops), static_cast<long long>(st.views),
      static_cast<long long>(st.host_steps));
  std::printf("target      %s\n", (*backend)->target().Key().c_str());
  std::printf("tuned       %lld of %lld kernels tuned%s\n",
              static_cast<long long>(st.tuned_kernels), static_cast<long long>(st.kernel_steps),
              store == nullptr ? " (no record database)" : "");
  std::printf("wrote       %s: %s, %s, %s/\n", opts.out.c_str(), runtime::kArtifactPlanFile,
              runtime::kArtifactWeightsFile, "kernels");
  if (!opts.sign_key.empty()) {
    std::printf("signed      %s, %s (Ed25519, key %s)\n", runtime::kArtifactManifestFile,
                runtime::kArtifactSignatureFile, opts.sign_key.c_str());
  }
}

void RunCompile(CompileCommandOptions opts) {
  if (opts.threads < 1) Fail(absl::InvalidArgumentError("--threads must be at least 1"));
  if (opts.target != "cpu" && opts.target != "cuda" && !absl::StartsWith(opts.target, "cpu:")) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("bad --target '", opts.target,
                     "': expected cpu, a CPU class (cpu:avx512, cpu:avx2, "
                     "cpu:generic) or cuda")));
  }
  if (!opts.db.empty() && !RecordDbExists(opts.db)) {
    if (opts.db_given) (void)OpenExistingRecordDb(opts.db);  // fails, naming the database
    opts.db.clear();                                         // the default database is optional
  }
  auto loaded = LoadModelFromOptions(opts.model);
  FailIfError(loaded.status());
  if (opts.target == "cuda") return CompileCuda(opts, *std::move(loaded));
  Model model = Model::FromGraph(std::move(loaded->graph), loaded->source)
                    .Compile({.threads = opts.threads,
                              .target = opts.target,
                              .db = opts.db,
                              .fuse = !opts.no_fuse,
                              .build_threads = opts.build_threads,
                              .cache_dir = opts.cache_dir,
                              .exact_target = opts.exact_target});
  FailIfError(model.status());
  FailIfError(model.Export(opts.out));
  if (!opts.sign_key.empty()) FailIfError(runtime::SignArtifact(opts.out, opts.sign_key));
  const runtime::CompileStats& st = model.compiled()->stats();
  const std::filesystem::path dir(opts.out);
  if (opts.json) {
    PrintJson({{"model", loaded->source},
               {"target", model.compiled()->target_key()},
               {"kernel_steps", st.kernel_steps},
               {"tuned_kernels", st.tuned_kernels},
               {"tuned", model.tuning_summary()},
               {"unique_kernels", st.unique_kernels},
               {"fused_ops", st.fused_ops},
               {"output", opts.out},
               {"library_bytes", FileBytes(dir / runtime::kArtifactLibraryFile)},
               {"weights_bytes", FileBytes(dir / runtime::kArtifactWeightsFile)},
               {"signed", !opts.sign_key.empty()}});
    return;
  }
  std::printf("model       %s\n", loaded->source.c_str());
  std::printf(
      "kernels     %lld template steps (%lld tuned), %lld generated, %lld on the blocked layout, "
      "%lld unique kernels, %lld fused ops, %lld views, %lld reference steps\n",
      static_cast<long long>(st.kernel_steps), static_cast<long long>(st.tuned_kernels),
      static_cast<long long>(st.generated_steps), static_cast<long long>(st.blocked_steps),
      static_cast<long long>(st.unique_kernels), static_cast<long long>(st.fused_ops),
      static_cast<long long>(st.views), static_cast<long long>(st.reference_steps));
  std::printf("target      %s\n", model.compiled()->target_key().c_str());
  std::printf("tuned       %s\n", model.tuning_summary().c_str());
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
  cmd->add_option("--db", opts->db,
                  "Record database with tuned configs (the default is used only if it exists)");
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
  cmd->add_option("--target", opts->target,
                  "cpu (this CPU), a CPU class this CPU runs (cpu:avx2, cpu:generic), or cuda: "
                  "compile for the GPU --device (cubins for its arch)");
  cmd->add_flag("--exact-target", opts->exact_target,
                "Use only records of this exact CPU model, not those of other CPUs of its class");
  cmd->add_option("--device", opts->device, "--target cuda: the GPU, cuda:N (default cuda:0)");
  AddJsonFlag(cmd, &opts->json, "One JSON object: target, kernels tuned, files written");
  cmd->callback([opts, cmd] {
    opts->db_given = cmd->get_option("--db")->count() > 0;
    RunCompile(*opts);
  });
}

}  // namespace loom::cli
