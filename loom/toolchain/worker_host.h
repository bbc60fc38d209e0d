// The entry of a binary that hosts the measure workers: the measurers start this very binary with
// a worker's argument (measure_worker.h, cuda_measure_worker.h), so its main() first asks
// RunHostedWorker. Called by the measurers' test and benchmark binaries.
#pragma once

#include <optional>

#include "loom/toolchain/cuda_measure_worker.h"

namespace loom::tune {

// When argv[1] is kMeasureWorkerArg or kCudaMeasureWorkerArg, runs that worker on standard input
// and output to the end and returns its exit code; else nullopt (this is no worker: carry on).
// `make_template`: the CUDA worker's templates (null: ops::MakeTemplate).
std::optional<int> RunHostedWorker(int argc, char** argv,
                                   const TemplateFactory& make_template = nullptr);

}  // namespace loom::tune
