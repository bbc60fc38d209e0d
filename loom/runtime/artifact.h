// The on-disk form of a compiled model: what CompiledModel::Export writes (`loom compile`) and
// CompiledModel::Load reads (`loom run DIR`, `loom bench DIR`, the C API in include/loom/loom_c.h).
// Loading needs neither a compiler nor a tuning database.
//
// An artifact is a directory with three files:
//   model.so     every generated kernel of the plan, compiled from its source with
//                -Dloom_kernel=loom_kernel_<i> (i = the plan's kernel index) and linked with a
//                small manifest (`loom_artifact_format`, `loom_artifact_num_kernels`,
//                `loom_artifact_kernel_args`: per kernel its argument count, then per argument
//                bytes * 2 + written) into one shared library by the system compiler, for the ISA
//                in plan.json.
//   weights.bin  "LOOMWGT1", then every constant (packed weights, padded biases, the tensors of
//                reference-kernel attributes, ...) at a 64-byte aligned offset, raw little-endian.
//   plan.json    {"format": "loom-artifact", "format_version": 2,
//                 "target": {"isa": "avx512|avx2|generic", "key": Target::Key()},
//                 "library": {"file": "model.so", "bytes", "fnv1a64", "num_kernels"},
//                 "weights": {"file": "weights.bin", "bytes", "fnv1a64"},
//                 "constants": [{"dtype", "shape", "offset"}],
//                 "arena_bytes", "buffers": [{"offset", "bytes", "what"}],
//                 "inputs"/"outputs": [{"name", "dtype", "shape"}],
//                 "kernels": [{"bytes": [...], "written": [...]}] (what each kernel argument
//                 spans; must equal model.so's table), "num_threads" (the compiled model's: the
//                 default when loading), "stats": CompileStats,
//                 "steps": [{"name", "kind", "op", ...op fields}]}
//                with op one of relayout, kernel, pool, channel_map, copy, reference (the last
//                carries the node with its attributes and runs the reference kernels of
//                loom_kernels, linked into whatever loads the artifact). Operands are
//                ["arena"|"const"|"input"|"output", index]; blocked geometries [n, c, h, w, bn,
//                pt, pl, pb, pr]; non-finite floats are the strings "inf", "-inf", "nan".
// Load refuses another format_version, an ISA the host lacks, a missing file, a checksum (FNV-1a
// 64, hex) or size mismatch of model.so or weights.bin, and a plan whose operands do not fit what
// they point at (every kernel argument is checked against the buffer it is given). The thread
// count is capped at the host's cores.
//
// An artifact directory is trusted code: loading it runs model.so. The checksums catch
// corruption, not tampering. For artifacts that move between machines, `loom compile --sign KEY`
// adds manifest.sha256 (sha256sum's format: one "<hex>  <file>" line per file) and manifest.sig
// (an Ed25519 signature of the manifest's bytes, 64 raw bytes; `openssl pkeyutl -verify -pubin
// -inkey PUB.pem -rawin -in manifest.sha256 -sigfile manifest.sig` checks it too), and `loom run
// DIR --verify PUB` refuses to load an artifact whose signature or files do not match.
//
// GPU artifacts (CudaModel::Export for `loom compile --target cuda`, CudaModel::Load for `loom run
// DIR` on a GPU and the C API) are directories with:
//   plan.json    {"format": "loom-cuda-artifact", "format_version": 1,
//                 "target": {"kind": "cuda", "arch": "sm_90", "key", "image": "cubin" or
//                 "host-emulation"}, "opset", "weights": {"file", "bytes", "fnv1a64"},
//                 "constants": [...] (as above), "arena_bytes",
//                 "kernels": [{"file": "kernels/k<i>.cubin", "bytes", "fnv1a64", "entry", "grid",
//                 "block", "dynamic_shared", "args": [bytes per argument], "kind"}],
//                 "inputs"/"outputs": [{"name", "dtype", "shape", "at"}],
//                 "steps": [{"launch": kernel, "name", "args": [operand...]} or {"host": node,
//                 "inputs"/"outputs": [null or {"dtype", "shape", "at"}]}]}
//                with operands ["arena", byte offset] or ["const", index] (cuda_plan.h).
//   weights.bin  as above.
//   kernels/     one module image per kernel, named by its index: a cubin (k<i>.cubin, NVRTC for
//                the arch), or in tests the shared object of the kernel's host emulation (k<i>.so).
// ReadCudaArtifact refuses what Load refuses of CPU artifacts (another format version, missing or
// corrupt files, a plan ValidateCudaPlan refuses, a signature that does not verify); the
// architecture check is CudaModel::Load's (an sm mismatch is one line). `--sign` signs every file
// listed above (ArtifactSignedFiles).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/runtime/cuda_plan.h"

namespace loom::runtime {

inline constexpr int kArtifactFormatVersion = 2;
inline constexpr char kArtifactPlanFile[] = "plan.json";
inline constexpr char kArtifactWeightsFile[] = "weights.bin";
inline constexpr char kArtifactLibraryFile[] = "model.so";
inline constexpr char kArtifactManifestFile[] = "manifest.sha256";
inline constexpr char kArtifactSignatureFile[] = "manifest.sig";

// True when `path` is a directory holding plan.json (how the CLI tells an artifact from a model
// spec).
bool IsArtifactDir(const std::string& path);

// FNV-1a, 64 bits: the artifact's file checksum.
uint64_t Fnv1a64(std::string_view bytes);

// Writes `bytes` to a fresh private file (mode 0700, a name nobody else can predict or replace
// in $TMPDIR) and returns its path; the caller removes it. How verified code is loaded: a
// library is dlopen'ed from bytes that were checked, never from a path someone may swap.
absl::StatusOr<std::string> WritePrivateCopy(std::string_view bytes);

// Decodes plan.json text (its constants from `weights`, a weights.bin image) and validates the
// plan, without loading any library: what Load checks of a plan. kDataLoss for anything
// malformed or inconsistent. For the fuzzer and the tests.
absl::Status CheckPlanJson(std::string_view plan_json, std::string_view weights);

// The files of the artifact in `dir` that a signature covers: plan.json, weights.bin, and
// model.so (CPU) or every kernel image (GPU).
std::vector<std::string> ArtifactSignedFiles(const std::string& dir);

// Signs the artifact in `dir` with the Ed25519 private key in the PEM file `private_key`: writes
// manifest.sha256 and manifest.sig (see above). kNotFound for a missing file or key;
// kInvalidArgument for a key that is not an Ed25519 private key in PEM.
absl::Status SignArtifact(const std::string& dir, const std::string& private_key);

// Checks the signature of the artifact in `dir` against `files` (file name -> the bytes read):
// manifest.sig must verify over manifest.sha256 with the Ed25519 public key in the PEM file
// `public_key` (a private key file also serves), and the manifest must list exactly these files
// with their SHA-256. kFailedPrecondition for an unsigned artifact, kPermissionDenied for a
// signature or file that does not match, kNotFound / kInvalidArgument for the key file.
absl::Status VerifyArtifactFiles(const std::string& dir, const std::string& public_key,
                                 const std::map<std::string, std::string>& files);

// ---- GPU artifacts (see the top of the file).
inline constexpr char kCudaArtifactFormat[] = "loom-cuda-artifact";
inline constexpr int kCudaArtifactFormatVersion = 1;

// True when `path` is an artifact directory whose plan.json is a GPU artifact's.
bool IsCudaArtifactDir(const std::string& path);

// The kind of module image a GPU artifact holds, from its plan.json ("cubin" or
// "host-emulation"), without reading the rest. kDataLoss when the plan does not say.
absl::StatusOr<std::string> CudaArtifactImageKind(const std::string& dir);

// A GPU artifact in memory: the plan, the target key it was compiled for, and one module image
// per kernel of `image_kind` ("cubin" or "host-emulation").
struct CudaArtifact {
  CudaPlan plan;
  std::string key;
  std::string image_kind;
  std::vector<std::string> images;
};
absl::Status WriteCudaArtifact(const std::string& dir, const CudaArtifact& artifact);
// `verify_key`: a PEM public key whose signature the files must carry; empty: none.
absl::StatusOr<CudaArtifact> ReadCudaArtifact(const std::string& dir,
                                              const std::string& verify_key = "");
// Decodes and validates a GPU plan.json (constants from `weights`) without loading kernels.
// kDataLoss for anything malformed or inconsistent. For the fuzzer and the tests.
absl::Status CheckCudaPlanJson(std::string_view plan_json, std::string_view weights);

}  // namespace loom::runtime
