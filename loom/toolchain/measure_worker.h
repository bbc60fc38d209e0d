// The sandboxed side of the CPU measurer: a loop that reads requests from the parent
// (LocalMeasurer, measurer.h) and answers them, run in its own process so that a kernel that
// crashes or hangs kills only this worker. Any binary can host it: the `loom` binary runs it for
// its hidden subcommand `loom __measure-worker`, the measurer's test binary for the same argument.
//
// Protocol: one JSON object per line in each direction, one answer per request, in order.
//   {"op":"init","cores":[1]}
//       -> {"ok":true,"pid":123,"cpus":[1]}  (pins the process, reports its allowed CPU set)
//   {"op":"task","workload":KEY,"isa":"avx512","cpu_model":"...","num_threads":1,
//    "test_faults":false,"seed":0}
//       -> {"ok":true}  (builds the template, seeded natural inputs and the reference output)
//   {"op":"measure","artifact":PATH,"config":INDEX,"number":1,"repeat":3,"min_repeat_ms":50,
//    "flush_cache":false}
//       -> {"ok":true,"costs":[s,...],"number":N}   (uses the last task sent)
//   any failure -> {"ok":false,"error_kind":K,"error":"..."} with K an ErrorKind value.
#pragma once

namespace loom::tune {

// The argument that makes a host binary run the worker (argv[1]).
inline constexpr char kMeasureWorkerArg[] = "__measure-worker";

// Serves requests from `in_fd`, writing answers to `out_fd`, until `in_fd` reaches end of file;
// returns the process exit code (0 at a clean end). When `out_fd` is standard output, the
// protocol moves to a private duplicate and fd 1 is pointed at stderr, so a stray print from a
// kernel or a library cannot corrupt the answers.
int RunMeasureWorker(int in_fd, int out_fd);

}  // namespace loom::tune
