// The sandboxed side of the CUDA measurer (cuda_measurer.cc): owns one GPU's context in its own
// process, so that a kernel that hangs, crashes or leaves a sticky CUDA error (illegal address)
// kills only this worker and its context. The `loom` binary runs it for its hidden subcommand
// `loom __cuda-measure-worker`, the measurer's test binary for the same argument.
//
// Protocol: one JSON object per line in each direction, one answer per request, in order.
//   {"op":"init","device":0,"library":""}
//       -> {"ok":true,"pid":123,"name":"NVIDIA H100 80GB HBM3","arch":"sm_90","sms":132,
//           "max_threads_per_block":1024,"max_shared_bytes_per_block":49152,
//           "max_regs_per_block":65536,"warp_size":32,"memory_bytes":N,"driver_version":13000}
//       or {"ok":false,"unavailable":true,"error":"libcuda.so.1 not found: ..."}
//   {"op":"task","workload":KEY,"arch":"sm_90","device_name":"...","limits":{...},
//    "test_faults":false,"seed":0}
//       -> {"ok":true}  (builds the CUDA template, seeded natural inputs, the reference output)
//   {"op":"measure","artifact":CUBIN,"config":INDEX,"number":1,"repeat":3,"min_repeat_ms":150}
//       -> {"ok":true,"costs":[s,...],"number":N}
//   any failure -> {"ok":false,"error_kind":K,"error":"..."}; with "fatal":true the context is
//   unusable (sticky CUDA error) and the worker exits right after answering.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "loom/graph/tasks.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"

namespace loom::tune {

inline constexpr char kCudaMeasureWorkerArg[] = "__cuda-measure-worker";

// How the worker gets a task's template; the default is ops::MakeTemplate. Tests that run the
// worker on a fake driver pass a template whose "kernels" the fake understands.
using TemplateFactory = std::function<absl::StatusOr<std::unique_ptr<ops::Template>>(
    const graph::Workload&, const ops::Target&, const ops::TemplateOptions&)>;

// Serves requests from `in_fd`, answering on `out_fd`, until end of input (exit code 0) or a
// fatal CUDA error (exit code 3). Standard output is redirected to stderr as in RunMeasureWorker.
int RunCudaMeasureWorker(int in_fd, int out_fd, const TemplateFactory& make_template = nullptr);

}  // namespace loom::tune
