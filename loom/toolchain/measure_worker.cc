#include "loom/toolchain/measure_worker.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "loom/base/check.h"
#include "loom/base/thread_pool.h"
#include "loom/codegen/kernel_abi.h"
#include "loom/graph/tasks.h"
#include "loom/graph/tensor.h"
#include "loom/ops/template.h"
#include "loom/toolchain/measure_result.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

// Everything a task's measurements reuse: built once per task, kept while the worker lives.
struct TaskState : WorkerTask {
  using WorkerTask::WorkerTask;
  int32_t num_threads = 1;
  std::unique_ptr<base::ThreadPool> pool;  // for kernels run on several threads
};

json HandleInit(const json& request, int reply_fd) {
  // Threads created later (kernel thread pools) inherit the mask.
  if (std::string err = PinThisProcess(request.value("cores", std::vector<int>{})); !err.empty()) {
    return WorkerFailure(ErrorKind::kUnknown, err);
  }
  json reply{{"ok", true}, {"pid", static_cast<int64_t>(getpid())}, {"cpus", AllowedCpus()}};
  if (request.contains("confine")) {
    // Before any candidate: from here on this process runs confined (confine.h).
    if (std::string err = ConfineWorker(request["confine"], reply_fd, reply); !err.empty()) {
      return WorkerFailure(ErrorKind::kUnknown, err);
    }
  }
  return reply;
}

absl::StatusOr<std::unique_ptr<TaskState>> PrepareTask(const json& request) {
  const std::string key = request.value("workload", "");
  absl::StatusOr<graph::Workload> workload = graph::ParseWorkloadKey(key);
  if (!workload.ok()) return workload.status();
  absl::StatusOr<ops::Isa> isa = ops::ParseIsa(request.value("isa", "generic"));
  if (!isa.ok()) return isa.status();
  ops::Target target;
  target.kind = "cpu";
  target.isa = *isa;
  target.cpu_model = request.value("cpu_model", "");
  target.num_threads = std::max(1, request.value("num_threads", 1));
  ops::TemplateOptions options;
  options.test_faults = request.value("test_faults", false);
  absl::StatusOr<std::unique_ptr<ops::Template>> tmpl =
      ops::MakeTemplate(*workload, target, options);
  if (!tmpl.ok()) return tmpl.status();

  auto state = std::make_unique<TaskState>(std::move(*tmpl), request.value("seed", uint64_t{0}));
  state->num_threads = target.num_threads;
  if (state->num_threads > 1) {
    state->pool = std::make_unique<base::ThreadPool>(static_cast<size_t>(state->num_threads - 1));
  }
  return state;
}

// The loom_parallel_t the worker hands to kernels: chunks of [0, n) over the task's threads
// (the calling thread included).
void ParallelFor(int64_t n, loom_range_fn fn, void* ctx, void* pool) {
  auto* tp = static_cast<base::ThreadPool*>(pool);
  if (tp == nullptr || n <= 1) {
    if (n > 0) fn(0, n, ctx);
    return;
  }
  const int64_t chunks = std::min<int64_t>(n, static_cast<int64_t>(tp->size()) + 1);
  tp->ParallelFor(static_cast<size_t>(chunks), [&](size_t i) {
    const int64_t begin = n * static_cast<int64_t>(i) / chunks;
    const int64_t end = n * static_cast<int64_t>(i + 1) / chunks;
    if (begin < end) fn(begin, end, ctx);
  });
}

// Bytes of the largest CPU cache, from sysfs (what the kernel reports for this CPU), else
// sysconf (which in some VMs reports the host's whole L3), else 32 MiB.
size_t LastLevelCacheBytes() {
  size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream f(absl::StrCat("/sys/devices/system/cpu/cpu0/cache/index", index, "/size"));
    std::string text;
    if (!(f >> text) || text.empty()) continue;
    size_t scale = 1;
    if (text.back() == 'K') scale = size_t{1} << 10;
    if (text.back() == 'M') scale = size_t{1} << 20;
    if (scale != 1) text.pop_back();
    size_t value = 0;
    if (absl::SimpleAtoi(text, &value)) best = std::max(best, value * scale);
  }
  if (best == 0) best = static_cast<size_t>(std::max(0L, sysconf(_SC_LEVEL3_CACHE_SIZE)));
  return best == 0 ? size_t{32} << 20 : best;
}

// Writes a buffer twice the last-level cache (8 MiB..256 MiB), evicting the kernel's operands.
void FlushCache() {
  static std::vector<char>* buffer = new std::vector<char>(
      std::clamp<size_t>(2 * LastLevelCacheBytes(), size_t{8} << 20, size_t{256} << 20));
  static char fill = 0;
  ++fill;
  std::memset(buffer->data(), fill, buffer->size());
  asm volatile("" : : "r"(buffer->data()) : "memory");
}

class Artifact {
 public:
  ~Artifact() {
    if (handle_ != nullptr) dlclose(handle_);
  }
  // Failure: a kRuntime message.
  std::string Load(const std::string& path) {
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      const char* err = dlerror();
      return absl::StrCat("cannot load artifact: ", err ? err : path);
    }
    fn_ = reinterpret_cast<loom_kernel_fn>(dlsym(handle_, codegen::kKernelEntry));
    if (fn_ == nullptr) {
      return absl::StrCat("artifact ", path, " does not define ", codegen::kKernelEntry);
    }
    return "";
  }
  loom_kernel_fn fn() const { return fn_; }

 private:
  void* handle_ = nullptr;
  loom_kernel_fn fn_ = nullptr;
};

json HandleMeasure(const json& request, TaskState* task) {
  if (task == nullptr) return WorkerFailure(ErrorKind::kUnknown, "measure before any task");
  const ops::Template& tmpl = *task->tmpl;
  const ops::Config config{request.value("config", int64_t{-1})};
  if (!tmpl.space().Contains(config)) {
    return WorkerFailure(ErrorKind::kInstantiation,
                         absl::StrCat("config ", config.index, " is outside the space of size ",
                                      tmpl.space().size()));
  }
  Artifact artifact;
  if (std::string err = artifact.Load(request.value("artifact", "")); !err.empty()) {
    return WorkerFailure(ErrorKind::kRuntime, err);
  }

  // Buffers in calling order: packed inputs, then outputs filled with NaN so that a kernel that
  // leaves any output element unwritten (or accumulates into it) fails the check.
  const std::vector<ops::BufferSpec> specs = tmpl.Buffers(config);
  std::vector<graph::Tensor> buffers = tmpl.PackInputs(config, task->natural_inputs);
  const size_t num_inputs = buffers.size();
  for (const ops::BufferSpec& spec : specs) {
    if (!spec.is_output) continue;
    graph::Tensor out(graph::DType::kFloat32, spec.shape);
    std::fill(out.values<float>().begin(), out.values<float>().end(),
              std::numeric_limits<float>::quiet_NaN());
    buffers.push_back(std::move(out));
  }
  if (buffers.size() != specs.size() || num_inputs == buffers.size()) {
    return WorkerFailure(ErrorKind::kUnknown,
                         absl::StrCat("template ", tmpl.name(), " gave ", num_inputs,
                                      " packed inputs for ", specs.size(), " buffers"));
  }
  std::vector<void*> pointers;
  pointers.reserve(buffers.size());
  for (graph::Tensor& t : buffers) pointers.push_back(t.raw_data());
  const loom_parallel_t par{&ParallelFor, task->pool.get(), task->num_threads};
  const loom_kernel_fn fn = artifact.fn();
  auto run = [&] { fn(pointers.data(), &par); };

  // Correctness, once, against the reference kernel.
  run();
  const graph::Tensor got = tmpl.UnpackOutput(config, buffers[num_inputs]);
  if (std::string err = CompareToReference(got, task->reference); !err.empty()) {
    return WorkerFailure(ErrorKind::kWrongAnswer, err);
  }

  // Timing: one warm-up, then TimeRepeats; with flush_cache, each timed batch of runs starts
  // with the operands evicted.
  using Clock = std::chrono::steady_clock;
  const bool flush = request.value("flush_cache", false);
  run();
  constexpr int64_t kMaxNumber = int64_t{1} << 30;
  absl::StatusOr<json> timed =
      TimeRepeats(request, kMaxNumber, [&](int64_t n) -> absl::StatusOr<double> {
        if (flush) FlushCache();
        const auto start = Clock::now();
        for (int64_t i = 0; i < n; ++i) run();
        return std::chrono::duration<double>(Clock::now() - start).count();
      });
  LOOM_CHECK(timed.ok());  // this time_runs never fails
  return *std::move(timed);
}

}  // namespace

int RunMeasureWorker(int in_fd, int out_fd) {
  return ServeMeasureWorker<TaskState>(in_fd, out_fd,
                                       {.init = HandleInit,
                                        .prepare = PrepareTask,
                                        .measure = [](const json& request, TaskState* task) {
                                          return WorkerAnswer{HandleMeasure(request, task)};
                                        }});
}

}  // namespace loom::tune
