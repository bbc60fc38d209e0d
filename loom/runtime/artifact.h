// The on-disk form of a compiled model: what CompiledModel::Export writes (`loom compile`) and
// CompiledModel::Load reads (`loom run DIR`, `loom bench DIR`, the C API in include/loom/loom_c.h).
// Loading needs neither a compiler nor a tuning database.
//
// An artifact is a directory with three files:
//   model.so     every generated kernel of the plan, compiled from its source with
//                -Dloom_kernel=loom_kernel_<i> (i = the plan's kernel index) and linked with a
//                small manifest (`loom_artifact_format`, `loom_artifact_num_kernels`) into one
//                shared library by the system compiler, for the ISA in plan.json.
//   weights.bin  "LOOMWGT1", then every constant (packed weights, padded biases, the tensors of
//                reference-kernel attributes, ...) at a 64-byte aligned offset, raw little-endian.
//   plan.json    {"format": "loom-artifact", "format_version": 1,
//                 "target": {"isa": "avx512|avx2|generic", "key": Target::Key()},
//                 "library": {"file": "model.so", "bytes", "fnv1a64", "num_kernels"},
//                 "weights": {"file": "weights.bin", "bytes", "fnv1a64"},
//                 "constants": [{"dtype", "shape", "offset"}],
//                 "arena_bytes", "buffers": [{"offset", "bytes", "what"}], "num_tensor_slots",
//                 "inputs"/"outputs": [{"name", "dtype", "shape", "slot"}], "num_threads" (the
//                 compiled model's: the default when loading),
//                 "stats": CompileStats, "steps": [{"name", "kind", "op", "buffers", "tensors",
//                 "release", ...op fields}]}
//                with op one of const, relayout, kernel, pool, eltwise, concat, reference (the
//                last carries the node with its attributes and runs the reference kernels of
//                loom_kernels, linked into whatever loads the artifact). Operand references are
//                ["arena"|"const"|"tensor", index]; blocked geometries [n, c, h, w, bn, pt, pl,
//                pb, pr]; non-finite floats are the strings "inf", "-inf", "nan".
// Load refuses another format_version, an ISA the host lacks, a missing file, and a checksum
// (FNV-1a 64, hex) or size mismatch of model.so or weights.bin.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace loom::runtime {

inline constexpr int kArtifactFormatVersion = 1;
inline constexpr char kArtifactPlanFile[] = "plan.json";
inline constexpr char kArtifactWeightsFile[] = "weights.bin";
inline constexpr char kArtifactLibraryFile[] = "model.so";

// True when `path` is a directory holding plan.json (how the CLI tells an artifact from a model
// spec).
bool IsArtifactDir(const std::string& path);

// FNV-1a, 64 bits: the artifact's file checksum.
uint64_t Fnv1a64(std::string_view bytes);

}  // namespace loom::runtime
