// RunHostedWorker: see worker_host.h.
#include "loom/toolchain/worker_host.h"

#include <string_view>

#include "loom/toolchain/measure_worker.h"

namespace loom::tune {

std::optional<int> RunHostedWorker(int argc, char** argv, const TemplateFactory& make_template) {
  if (argc < 2) return std::nullopt;
  const std::string_view arg = argv[1];
  if (arg == kMeasureWorkerArg) return RunMeasureWorker(0, 1);
  if (arg == kCudaMeasureWorkerArg) return RunCudaMeasureWorker(0, 1, make_template);
  return std::nullopt;
}

}  // namespace loom::tune
