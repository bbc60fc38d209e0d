#include "loom/toolchain/cuda_measure_worker.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loom/graph/tasks.h"
#include "loom/graph/tensor.h"
#include "loom/ops/target.h"
#include "loom/ops/template.h"
#include "loom/toolchain/cuda_driver.h"
#include "loom/toolchain/measure_result.h"
#include "loom/toolchain/worker_process.h"
#include "nlohmann/json.hpp"

namespace loom::tune {
namespace {

using json = nlohmann::json;

// Everything a task's measurements reuse: built once per task, kept while the worker lives.
using TaskState = WorkerTask;

// A failed CUDA call during a measurement: a runtime error; fatal when the error is sticky.
WorkerAnswer CudaFailure(const CudaDriver& driver, const absl::Status& status) {
  WorkerAnswer a;
  a.fatal = IsStickyCudaError(driver.last_error());
  a.body = WorkerFailure(ErrorKind::kRuntime, std::string(status.message()));
  if (a.fatal) {
    a.body["fatal"] = true;
    a.body["error"] = absl::StrCat(status.message(), " (sticky: the worker restarts)");
  }
  return a;
}

json HandleInit(const json& request, int reply_fd, std::unique_ptr<CudaDriver>* driver,
                int* device) {
  auto unavailable = [](const absl::Status& s) {
    return json{{"ok", false},
                {"unavailable", true},
                {"error_kind", static_cast<int>(ErrorKind::kUnknown)},
                {"error", std::string(s.message())}};
  };
  if (std::string err = PinThisProcess(request.value("cores", std::vector<int>{})); !err.empty()) {
    return WorkerFailure(ErrorKind::kUnknown, err);
  }
  json confined;
  if (request.contains("confine")) {
    // Before the driver loads: it then opens its device files and starts its threads as the
    // confined worker does, and anything the sandbox forbids shows here, at init.
    if (std::string err = ConfineWorker(request["confine"], reply_fd, confined); !err.empty()) {
      return WorkerFailure(ErrorKind::kUnknown, err);
    }
  }
  absl::StatusOr<std::unique_ptr<CudaDriver>> loaded =
      CudaDriver::Load(request.value("library", ""));
  if (!loaded.ok()) return unavailable(loaded.status());
  *device = request.value("device", 0);
  absl::StatusOr<int> count = (*loaded)->DeviceCount();
  if (!count.ok()) return unavailable(count.status());
  if (*count == 0) {
    return unavailable(absl::UnavailableError("the NVIDIA driver reports no CUDA device"));
  }
  absl::StatusOr<CudaDeviceInfo> info = (*loaded)->DeviceInfo(*device);
  if (!info.ok()) return unavailable(info.status());
  if (absl::StatusOr<CudaDriver::Context> ctx = (*loaded)->RetainPrimaryContext(*device);
      !ctx.ok()) {
    return unavailable(ctx.status());
  }
  *driver = std::move(*loaded);
  json reply{{"ok", true},
             {"pid", static_cast<int64_t>(getpid())},
             {"cpus", AllowedCpus()},
             {"name", info->name},
             {"arch", info->Arch()},
             {"sms", info->num_sms},
             {"max_threads_per_block", info->max_threads_per_block},
             {"max_shared_bytes_per_block", info->max_shared_bytes_per_block},
             {"max_regs_per_block", info->max_regs_per_block},
             {"warp_size", info->warp_size},
             {"memory_bytes", info->total_memory_bytes},
             {"driver_version", info->driver_version}};
  if (confined.contains("confined")) reply["confined"] = confined["confined"];
  return reply;
}

absl::StatusOr<std::unique_ptr<TaskState>> PrepareTask(const json& request,
                                                       const TemplateFactory& make_template) {
  absl::StatusOr<graph::Workload> workload = graph::ParseWorkloadKey(request.value("workload", ""));
  if (!workload.ok()) return workload.status();
  ops::CudaDeviceLimits limits;
  const json l = request.value("limits", json::object());
  limits.max_threads_per_block = l.value("max_threads_per_block", limits.max_threads_per_block);
  limits.max_shared_bytes_per_block =
      l.value("max_shared_bytes_per_block", limits.max_shared_bytes_per_block);
  limits.max_regs_per_block = l.value("max_regs_per_block", limits.max_regs_per_block);
  limits.num_sms = l.value("num_sms", limits.num_sms);
  limits.warp_size = l.value("warp_size", limits.warp_size);
  ops::Target target = ops::CudaTarget(request.value("arch", "sm_90"), limits);
  target.device_name = request.value("device_name", target.device_name);
  ops::TemplateOptions options;
  options.test_faults = request.value("test_faults", false);
  absl::StatusOr<std::unique_ptr<ops::Template>> tmpl =
      make_template ? make_template(*workload, target, options)
                    : ops::MakeTemplate(*workload, target, options);
  if (!tmpl.ok()) return tmpl.status();

  return std::make_unique<TaskState>(std::move(*tmpl), request.value("seed", uint64_t{0}));
}

// Device resources of one measurement, released in every exit path. After a sticky error the
// frees fail harmlessly (the process is about to exit).
class Scope {
 public:
  explicit Scope(CudaDriver* driver) : driver_(driver) {}
  ~Scope() {
    for (CudaDriver::Event e : events_) (void)driver_->DestroyEvent(e);
    for (CudaDriver::DevicePtr p : buffers_) (void)driver_->Free(p);
    if (module_ != nullptr) (void)driver_->UnloadModule(module_);
  }
  void Add(CudaDriver::DevicePtr p) { buffers_.push_back(p); }
  void Add(CudaDriver::Event e) { events_.push_back(e); }
  void SetModule(CudaDriver::Module m) { module_ = m; }

 private:
  CudaDriver* driver_;
  std::vector<CudaDriver::DevicePtr> buffers_;
  std::vector<CudaDriver::Event> events_;
  CudaDriver::Module module_ = nullptr;
};

WorkerAnswer HandleMeasure(const json& request, TaskState* task, CudaDriver* driver) {
  if (driver == nullptr) return {WorkerFailure(ErrorKind::kUnknown, "measure before init")};
  if (task == nullptr) return {WorkerFailure(ErrorKind::kUnknown, "measure before any task")};
  const ops::Template& tmpl = *task->tmpl;
  const ops::Config config{request.value("config", int64_t{-1})};
  if (!tmpl.space().Contains(config)) {
    return {WorkerFailure(ErrorKind::kInstantiation,
                          absl::StrCat("config ", config.index, " is outside the space of size ",
                                       tmpl.space().size()))};
  }
  // The launch geometry travels with the source, not the cubin: re-emit (cheap, deterministic).
  absl::StatusOr<ops::KernelSource> source = tmpl.Emit(config);
  if (!source.ok()) {
    return {WorkerFailure(ErrorKind::kInstantiation, std::string(source.status().message()))};
  }
  const ops::CudaLaunch& launch = source->cuda_launch;
  const std::string path = request.value("artifact", "");
  std::ifstream file(path, std::ios::binary);
  std::stringstream image;
  image << file.rdbuf();
  if (!file || image.str().empty()) {
    return {WorkerFailure(ErrorKind::kRuntime, absl::StrCat("cannot read cubin '", path, "'"))};
  }

  Scope scope(driver);
  absl::StatusOr<CudaDriver::Module> module = driver->LoadModule(image.str());
  if (!module.ok()) return CudaFailure(*driver, module.status());
  scope.SetModule(*module);
  absl::StatusOr<CudaDriver::Function> fn = driver->GetFunction(*module, launch.entry);
  if (!fn.ok()) return CudaFailure(*driver, fn.status());
  if (launch.dynamic_shared_bytes > 48 * 1024) {
    if (absl::Status s = driver->SetMaxDynamicShared(*fn, launch.dynamic_shared_bytes); !s.ok()) {
      return CudaFailure(*driver, s);
    }
  }

  // Buffers in calling order: packed inputs, then outputs filled with NaN so that a kernel that
  // leaves any output element unwritten fails the check.
  const std::vector<ops::BufferSpec> specs = tmpl.Buffers(config);
  const std::vector<graph::Tensor> inputs = tmpl.PackInputs(config, task->natural_inputs);
  if (inputs.size() >= specs.size()) {
    return {WorkerFailure(ErrorKind::kUnknown,
                          absl::StrCat("template ", tmpl.name(), " gave ", inputs.size(),
                                       " packed inputs for ", specs.size(), " buffers"))};
  }
  std::vector<CudaDriver::DevicePtr> args;
  size_t output_index = specs.size();
  for (size_t i = 0; i < specs.size(); ++i) {
    const int64_t elements = graph::NumElements(specs[i].shape);
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(1, elements)) * sizeof(float);
    absl::StatusOr<CudaDriver::DevicePtr> p = driver->Alloc(bytes);
    if (!p.ok()) return CudaFailure(*driver, p.status());
    scope.Add(*p);
    args.push_back(*p);
    absl::Status s;
    if (i < inputs.size()) {
      s = driver->CopyToDevice(*p, inputs[i].raw_data(), inputs[i].num_elements() * sizeof(float));
    } else {
      if (output_index == specs.size()) output_index = i;
      s = driver->Fill32(*p, 0x7FC00000u /* quiet NaN */, static_cast<size_t>(elements));
    }
    if (!s.ok()) return CudaFailure(*driver, s);
  }
  auto run = [&] {
    return driver->Launch(*fn, launch.grid.data(), launch.block.data(), launch.dynamic_shared_bytes,
                          args);
  };

  // Correctness, once, against the reference kernel.
  if (absl::Status s = run(); !s.ok()) return CudaFailure(*driver, s);
  if (absl::Status s = driver->Synchronize(); !s.ok()) return CudaFailure(*driver, s);
  graph::Tensor out(graph::DType::kFloat32, specs[output_index].shape);
  if (absl::Status s = driver->CopyToHost(out.raw_data(), args[output_index],
                                          out.num_elements() * sizeof(float));
      !s.ok()) {
    return CudaFailure(*driver, s);
  }
  if (std::string err = CompareToReference(tmpl.UnpackOutput(config, out), task->reference);
      !err.empty()) {
    return {WorkerFailure(ErrorKind::kWrongAnswer, err)};
  }

  // Timing with events around `number` back-to-back launches: one warm-up, `number` grown until
  // a repeat lasts min_repeat_ms, then `repeat` repeats.
  absl::StatusOr<CudaDriver::Event> start = driver->CreateEvent();
  if (!start.ok()) return CudaFailure(*driver, start.status());
  scope.Add(*start);
  absl::StatusOr<CudaDriver::Event> end = driver->CreateEvent();
  if (!end.ok()) return CudaFailure(*driver, end.status());
  scope.Add(*end);
  auto time_runs = [&](int64_t n) -> absl::StatusOr<double> {
    if (absl::Status s = driver->RecordEvent(*start); !s.ok()) return s;
    for (int64_t i = 0; i < n; ++i) {
      if (absl::Status s = run(); !s.ok()) return s;
    }
    if (absl::Status s = driver->RecordEvent(*end); !s.ok()) return s;
    if (absl::Status s = driver->SynchronizeEvent(*end); !s.ok()) return s;
    absl::StatusOr<float> ms = driver->ElapsedMs(*start, *end);
    if (!ms.ok()) return ms.status();
    return *ms * 1e-3;
  };
  if (absl::StatusOr<double> warm = time_runs(1); !warm.ok()) {
    return CudaFailure(*driver, warm.status());
  }
  constexpr int64_t kMaxNumber = int64_t{1} << 24;
  absl::StatusOr<json> timed = TimeRepeats(request, kMaxNumber, time_runs);
  if (!timed.ok()) return CudaFailure(*driver, timed.status());
  return {*std::move(timed)};
}

}  // namespace

int RunCudaMeasureWorker(int in_fd, int out_fd, const TemplateFactory& make_template) {
  std::unique_ptr<CudaDriver> driver;
  int device = 0;
  const int rc = ServeMeasureWorker<TaskState>(
      in_fd, out_fd,
      {.init = [&](const json& request,
                   int reply_fd) { return HandleInit(request, reply_fd, &driver, &device); },
       .prepare = [&](const json& request) { return PrepareTask(request, make_template); },
       .measure = [&](const json& request,
                      TaskState* task) { return HandleMeasure(request, task, driver.get()); }});
  if (rc == 0 && driver != nullptr) (void)driver->ReleasePrimaryContext(device);
  return rc;
}

}  // namespace loom::tune
