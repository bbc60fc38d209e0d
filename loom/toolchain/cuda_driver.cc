#include "loom/toolchain/cuda_driver.h"

#include <dlfcn.h>

#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace loom::tune {
namespace {

// The CUDA driver API's values that Loom uses (cuda.h, stable across CUDA 11-13).
constexpr int kSuccess = 0;
enum Attribute : int {
  kMaxThreadsPerBlock = 1,
  kMaxSharedPerBlock = 8,
  kWarpSize = 10,
  kMaxRegsPerBlock = 12,
  kSmCount = 16,
  kCcMajor = 75,
  kCcMinor = 76,
  kMaxSharedPerBlockOptin = 97,
};
constexpr int kFuncNumRegs = 4;
constexpr int kFuncMaxDynamicShared = 8;

}  // namespace

// Entry points, resolved by name. Versioned names (_v2) are those cuda.h maps the plain names to.
struct CudaDriver::Api {
  using Ctx = Opaque*;
  int (*cuInit)(unsigned) = nullptr;
  int (*cuDriverGetVersion)(int*) = nullptr;
  int (*cuGetErrorName)(int, const char**) = nullptr;
  int (*cuGetErrorString)(int, const char**) = nullptr;
  int (*cuDeviceGetCount)(int*) = nullptr;
  int (*cuDeviceGet)(int*, int) = nullptr;
  int (*cuDeviceGetName)(char*, int, int) = nullptr;
  int (*cuDeviceGetAttribute)(int*, int, int) = nullptr;
  int (*cuDeviceTotalMem)(size_t*, int) = nullptr;
  int (*cuDevicePrimaryCtxRetain)(Ctx*, int) = nullptr;
  int (*cuDevicePrimaryCtxRelease)(int) = nullptr;
  int (*cuCtxSetCurrent)(Ctx) = nullptr;
  int (*cuCtxSynchronize)() = nullptr;
  int (*cuModuleLoadData)(Ctx*, const void*) = nullptr;
  int (*cuModuleUnload)(Ctx) = nullptr;
  int (*cuModuleGetFunction)(Ctx*, Ctx, const char*) = nullptr;
  int (*cuFuncSetAttribute)(Ctx, int, int) = nullptr;
  int (*cuFuncGetAttribute)(int*, int, Ctx) = nullptr;
  int (*cuLaunchKernel)(Ctx, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        Ctx, void**, void**) = nullptr;
  int (*cuMemAlloc)(uint64_t*, size_t) = nullptr;
  int (*cuMemFree)(uint64_t) = nullptr;
  int (*cuMemcpyHtoD)(uint64_t, const void*, size_t) = nullptr;
  int (*cuMemcpyDtoH)(void*, uint64_t, size_t) = nullptr;
  int (*cuMemsetD32)(uint64_t, unsigned, size_t) = nullptr;
  int (*cuEventCreate)(Ctx*, unsigned) = nullptr;
  int (*cuEventDestroy)(Ctx) = nullptr;
  int (*cuEventRecord)(Ctx, Ctx) = nullptr;
  int (*cuEventSynchronize)(Ctx) = nullptr;
  int (*cuEventElapsedTime)(float*, Ctx, Ctx) = nullptr;
  int (*cuStreamCreate)(Ctx*, unsigned) = nullptr;
  int (*cuStreamDestroy)(Ctx) = nullptr;
  int (*cuStreamSynchronize)(Ctx) = nullptr;
  // The graph API (optional; see has_graphs()).
  int (*cuStreamBeginCapture)(Ctx, int) = nullptr;
  int (*cuStreamEndCapture)(Ctx, Ctx*) = nullptr;
  int (*cuGraphInstantiateWithFlags)(Ctx*, Ctx, unsigned long long) = nullptr;
  int (*cuGraphLaunch)(Ctx, Ctx) = nullptr;
  int (*cuGraphExecDestroy)(Ctx) = nullptr;
  int (*cuGraphDestroy)(Ctx) = nullptr;
};

std::string CudaDeviceInfo::Arch() const { return absl::StrCat("sm_", cc_major, cc_minor); }

bool IsStickyCudaError(int code) {
  switch (code) {
    case 700:  // CUDA_ERROR_ILLEGAL_ADDRESS
    case 702:  // CUDA_ERROR_LAUNCH_TIMEOUT
    case 710:  // CUDA_ERROR_ASSERT
    case 714:  // CUDA_ERROR_HARDWARE_STACK_ERROR
    case 715:  // CUDA_ERROR_ILLEGAL_INSTRUCTION
    case 716:  // CUDA_ERROR_MISALIGNED_ADDRESS
    case 717:  // CUDA_ERROR_INVALID_ADDRESS_SPACE
    case 718:  // CUDA_ERROR_INVALID_PC
    case 719:  // CUDA_ERROR_LAUNCH_FAILED
    case 214:  // CUDA_ERROR_ECC_UNCORRECTABLE
    case 999:  // CUDA_ERROR_UNKNOWN: assume the context is gone
      return true;
    default:
      return false;
  }
}

absl::StatusOr<std::unique_ptr<CudaDriver>> CudaDriver::Load(const std::string& library) {
  const std::string name = library.empty() ? "libcuda.so.1" : library;
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    // dlerror says "cannot open shared object file: No such file or directory" when absent.
    if (err == nullptr || std::strstr(err, "No such file") != nullptr) {
      return absl::UnavailableError(
          absl::StrCat(name, " not found: no NVIDIA driver on this host"));
    }
    return absl::UnavailableError(absl::StrCat("cannot load ", name, ": ", err));
  }
  std::unique_ptr<CudaDriver> driver(new CudaDriver());
  driver->handle_ = handle;
  driver->library_ = name;
  driver->api_ = std::make_unique<Api>();
  Api& a = *driver->api_;
  std::string missing;
  auto resolve = [&](auto& fn, std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (void* p = dlsym(handle, n)) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
        return;
      }
    }
    absl::StrAppend(&missing, missing.empty() ? "" : ", ", *names.begin());
  };
  resolve(a.cuInit, {"cuInit"});
  resolve(a.cuDriverGetVersion, {"cuDriverGetVersion"});
  resolve(a.cuGetErrorName, {"cuGetErrorName"});
  resolve(a.cuGetErrorString, {"cuGetErrorString"});
  resolve(a.cuDeviceGetCount, {"cuDeviceGetCount"});
  resolve(a.cuDeviceGet, {"cuDeviceGet"});
  resolve(a.cuDeviceGetName, {"cuDeviceGetName"});
  resolve(a.cuDeviceGetAttribute, {"cuDeviceGetAttribute"});
  resolve(a.cuDeviceTotalMem, {"cuDeviceTotalMem_v2"});
  resolve(a.cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"});
  resolve(a.cuDevicePrimaryCtxRelease, {"cuDevicePrimaryCtxRelease_v2"});
  resolve(a.cuCtxSetCurrent, {"cuCtxSetCurrent"});
  resolve(a.cuCtxSynchronize, {"cuCtxSynchronize"});
  resolve(a.cuModuleLoadData, {"cuModuleLoadData"});
  resolve(a.cuModuleUnload, {"cuModuleUnload"});
  resolve(a.cuModuleGetFunction, {"cuModuleGetFunction"});
  resolve(a.cuFuncSetAttribute, {"cuFuncSetAttribute"});
  resolve(a.cuFuncGetAttribute, {"cuFuncGetAttribute"});
  resolve(a.cuLaunchKernel, {"cuLaunchKernel"});
  resolve(a.cuMemAlloc, {"cuMemAlloc_v2"});
  resolve(a.cuMemFree, {"cuMemFree_v2"});
  resolve(a.cuMemcpyHtoD, {"cuMemcpyHtoD_v2"});
  resolve(a.cuMemcpyDtoH, {"cuMemcpyDtoH_v2"});
  resolve(a.cuMemsetD32, {"cuMemsetD32_v2"});
  resolve(a.cuEventCreate, {"cuEventCreate"});
  resolve(a.cuEventDestroy, {"cuEventDestroy_v2"});
  resolve(a.cuEventRecord, {"cuEventRecord"});
  resolve(a.cuEventSynchronize, {"cuEventSynchronize"});
  // CUDA 12.8+ drivers export _v2 (what cuda.h 13 maps to); older ones only the plain name.
  resolve(a.cuEventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"});
  resolve(a.cuStreamCreate, {"cuStreamCreate"});
  resolve(a.cuStreamDestroy, {"cuStreamDestroy_v2"});
  resolve(a.cuStreamSynchronize, {"cuStreamSynchronize"});
  // Optional entry points: a driver without them runs models without graph replay.
  auto optional = [&](auto& fn, const char* n) {
    if (void* p = dlsym(handle, n)) fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
  };
  optional(a.cuStreamBeginCapture, "cuStreamBeginCapture_v2");
  optional(a.cuStreamEndCapture, "cuStreamEndCapture");
  optional(a.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags");
  optional(a.cuGraphLaunch, "cuGraphLaunch");
  optional(a.cuGraphExecDestroy, "cuGraphExecDestroy");
  optional(a.cuGraphDestroy, "cuGraphDestroy");
  if (!missing.empty()) {
    return absl::InternalError(absl::StrCat(name, " lacks CUDA driver entry points Loom needs (",
                                            missing, "); update the NVIDIA driver"));
  }
  const int rc = a.cuInit(0);
  if (rc != kSuccess) {
    absl::Status s = driver->Check(rc, "cuInit");
    return absl::UnavailableError(
        absl::StrCat(s.message(),
                     " (no usable NVIDIA GPU, or the driver and its kernel module "
                     "do not match)"));
  }
  return driver;
}

CudaDriver::~CudaDriver() {
  // The library stays loaded: unloading libcuda while its threads run is unsafe, and the process
  // (a measure worker) ends soon after anyway.
}

absl::Status CudaDriver::Check(int code, const char* what) {
  if (code == kSuccess) return absl::OkStatus();
  last_error_ = code;
  const char* name = nullptr;
  const char* text = nullptr;
  if (api_->cuGetErrorName(code, &name) != kSuccess) name = nullptr;
  if (api_->cuGetErrorString(code, &text) != kSuccess) text = nullptr;
  std::string message = absl::StrCat(what, " failed: ", name ? name : "CUDA error", " (", code, ")",
                                     text ? absl::StrCat(": ", text) : "");
  switch (code) {
    case 3:    // NOT_INITIALIZED
    case 35:   // INSUFFICIENT_DRIVER
    case 46:   // DEVICES_UNAVAILABLE
    case 100:  // NO_DEVICE
    case 101:  // INVALID_DEVICE
      return absl::UnavailableError(message);
    case 2:  // OUT_OF_MEMORY
      return absl::ResourceExhaustedError(message);
    case 1:    // INVALID_VALUE
    case 200:  // INVALID_IMAGE
    case 209:  // NO_BINARY_FOR_GPU
    case 218:  // INVALID_PTX
    case 222:  // UNSUPPORTED_PTX_VERSION
    case 500:  // NOT_FOUND
    case 701:  // LAUNCH_OUT_OF_RESOURCES
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<int> CudaDriver::DeviceCount() {
  int n = 0;
  if (absl::Status s = Check(api_->cuDeviceGetCount(&n), "cuDeviceGetCount"); !s.ok()) return s;
  return n;
}

absl::StatusOr<CudaDeviceInfo> CudaDriver::DeviceInfo(int ordinal) {
  absl::StatusOr<int> count = DeviceCount();
  if (!count.ok()) return count.status();
  if (ordinal < 0 || ordinal >= *count) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", ordinal, " does not exist (",
                                                   *count, " device(s) on this host)"));
  }
  int dev = 0;
  if (absl::Status s = Check(api_->cuDeviceGet(&dev, ordinal), "cuDeviceGet"); !s.ok()) return s;
  CudaDeviceInfo info;
  info.ordinal = ordinal;
  char name[256] = {};
  if (absl::Status s = Check(api_->cuDeviceGetName(name, sizeof(name) - 1, dev), "cuDeviceGetName");
      !s.ok()) {
    return s;
  }
  info.name = name;
  struct {
    int* out;
    int attribute;
  } const attrs[] = {
      {&info.cc_major, kCcMajor},
      {&info.cc_minor, kCcMinor},
      {&info.max_threads_per_block, kMaxThreadsPerBlock},
      {&info.max_shared_bytes_per_block, kMaxSharedPerBlock},
      {&info.max_shared_bytes_per_block_optin, kMaxSharedPerBlockOptin},
      {&info.max_regs_per_block, kMaxRegsPerBlock},
      {&info.num_sms, kSmCount},
      {&info.warp_size, kWarpSize},
  };
  for (const auto& a : attrs) {
    if (absl::Status s =
            Check(api_->cuDeviceGetAttribute(a.out, a.attribute, dev), "cuDeviceGetAttribute");
        !s.ok()) {
      return s;
    }
  }
  size_t total = 0;
  if (absl::Status s = Check(api_->cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem"); !s.ok()) {
    return s;
  }
  info.total_memory_bytes = static_cast<int64_t>(total);
  if (absl::Status s = Check(api_->cuDriverGetVersion(&info.driver_version), "cuDriverGetVersion");
      !s.ok()) {
    return s;
  }
  return info;
}

namespace {
// The context this thread last made current through a CudaDriver (BindContext): the driver's
// calls act on the calling thread's current context, and a model may run on any thread.
thread_local CudaDriver::Context thread_context = nullptr;
}  // namespace

absl::StatusOr<CudaDriver::Context> CudaDriver::RetainPrimaryContext(int ordinal) {
  int dev = 0;
  if (absl::Status s = Check(api_->cuDeviceGet(&dev, ordinal), "cuDeviceGet"); !s.ok()) return s;
  Context ctx = nullptr;
  if (absl::Status s = Check(api_->cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
      !s.ok()) {
    return s;
  }
  context_ = ctx;
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return ctx;
}

absl::Status CudaDriver::ReleasePrimaryContext(int ordinal) {
  int dev = 0;
  if (absl::Status s = Check(api_->cuDeviceGet(&dev, ordinal), "cuDeviceGet"); !s.ok()) return s;
  if (thread_context == context_) thread_context = nullptr;
  context_ = nullptr;
  return Check(api_->cuDevicePrimaryCtxRelease(dev), "cuDevicePrimaryCtxRelease");
}

absl::Status CudaDriver::BindContext() {
  if (context_ == nullptr || thread_context == context_) return absl::OkStatus();
  if (absl::Status s = Check(api_->cuCtxSetCurrent(context_), "cuCtxSetCurrent"); !s.ok()) {
    return s;
  }
  thread_context = context_;
  return absl::OkStatus();
}

absl::Status CudaDriver::Synchronize() {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuCtxSynchronize(), "cuCtxSynchronize");
}

absl::StatusOr<CudaDriver::Module> CudaDriver::LoadModule(const std::string& image) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  Module m = nullptr;
  if (absl::Status s = Check(api_->cuModuleLoadData(&m, image.data()), "cuModuleLoadData");
      !s.ok()) {
    return s;
  }
  return m;
}

absl::Status CudaDriver::UnloadModule(Module module) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuModuleUnload(module), "cuModuleUnload");
}

absl::StatusOr<CudaDriver::Function> CudaDriver::GetFunction(Module module,
                                                             const std::string& name) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  Function f = nullptr;
  if (absl::Status s =
          Check(api_->cuModuleGetFunction(&f, module, name.c_str()), "cuModuleGetFunction");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), " (entry '", name, "')"));
  }
  return f;
}

absl::Status CudaDriver::SetMaxDynamicShared(Function function, int bytes) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuFuncSetAttribute(function, kFuncMaxDynamicShared, bytes),
               "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
}

absl::StatusOr<int> CudaDriver::FunctionRegisters(Function function) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  int regs = 0;
  if (absl::Status s = Check(api_->cuFuncGetAttribute(&regs, kFuncNumRegs, function),
                             "cuFuncGetAttribute(NUM_REGS)");
      !s.ok()) {
    return s;
  }
  return regs;
}

absl::Status CudaDriver::Launch(Function function, const uint32_t grid[3], const uint32_t block[3],
                                uint32_t dynamic_shared_bytes, const std::vector<DevicePtr>& args,
                                Stream stream) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  // cuLaunchKernel takes the address of each argument's value.
  std::vector<DevicePtr> values = args;
  std::vector<void*> params;
  params.reserve(values.size());
  for (DevicePtr& v : values) params.push_back(&v);
  return Check(api_->cuLaunchKernel(function, grid[0], grid[1], grid[2], block[0], block[1],
                                    block[2], dynamic_shared_bytes, stream, params.data(),
                                    /*extra=*/nullptr),
               "cuLaunchKernel");
}

absl::StatusOr<CudaDriver::Stream> CudaDriver::CreateStream() {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  Stream stream = nullptr;
  if (absl::Status s =
          Check(api_->cuStreamCreate(&stream, /*CU_STREAM_DEFAULT=*/0), "cuStreamCreate");
      !s.ok()) {
    return s;
  }
  return stream;
}

absl::Status CudaDriver::DestroyStream(Stream stream) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuStreamDestroy(stream), "cuStreamDestroy");
}

absl::Status CudaDriver::SynchronizeStream(Stream stream) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuStreamSynchronize(stream), "cuStreamSynchronize");
}

bool CudaDriver::has_graphs() const {
  const Api& a = *api_;
  return a.cuStreamBeginCapture != nullptr && a.cuStreamEndCapture != nullptr &&
         a.cuGraphInstantiateWithFlags != nullptr && a.cuGraphLaunch != nullptr &&
         a.cuGraphExecDestroy != nullptr && a.cuGraphDestroy != nullptr;
}

absl::Status CudaDriver::BeginCapture(Stream stream) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  if (!has_graphs()) {
    return absl::UnimplementedError(absl::StrCat(library_, " has no CUDA graph API"));
  }
  return Check(api_->cuStreamBeginCapture(stream, /*CU_STREAM_CAPTURE_MODE_THREAD_LOCAL=*/1),
               "cuStreamBeginCapture");
}

absl::StatusOr<CudaDriver::Graph> CudaDriver::EndCapture(Stream stream) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  if (!has_graphs()) {
    return absl::UnimplementedError(absl::StrCat(library_, " has no CUDA graph API"));
  }
  Graph graph = nullptr;
  if (absl::Status s = Check(api_->cuStreamEndCapture(stream, &graph), "cuStreamEndCapture");
      !s.ok()) {
    return s;
  }
  return graph;
}

absl::StatusOr<CudaDriver::GraphExec> CudaDriver::InstantiateGraph(Graph graph) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  if (!has_graphs()) {
    return absl::UnimplementedError(absl::StrCat(library_, " has no CUDA graph API"));
  }
  GraphExec exec = nullptr;
  if (absl::Status s =
          Check(api_->cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags");
      !s.ok()) {
    return s;
  }
  return exec;
}

absl::Status CudaDriver::LaunchGraph(GraphExec exec, Stream stream) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  if (!has_graphs()) {
    return absl::UnimplementedError(absl::StrCat(library_, " has no CUDA graph API"));
  }
  return Check(api_->cuGraphLaunch(exec, stream), "cuGraphLaunch");
}

absl::Status CudaDriver::DestroyGraph(Graph graph) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  if (!has_graphs()) return absl::OkStatus();
  return Check(api_->cuGraphDestroy(graph), "cuGraphDestroy");
}

absl::Status CudaDriver::DestroyGraphExec(GraphExec exec) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  if (!has_graphs()) return absl::OkStatus();
  return Check(api_->cuGraphExecDestroy(exec), "cuGraphExecDestroy");
}

absl::StatusOr<CudaDriver::DevicePtr> CudaDriver::Alloc(size_t bytes) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  DevicePtr p = 0;
  if (absl::Status s = Check(api_->cuMemAlloc(&p, bytes), "cuMemAlloc"); !s.ok()) return s;
  return p;
}

absl::Status CudaDriver::Free(DevicePtr ptr) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuMemFree(ptr), "cuMemFree");
}

absl::Status CudaDriver::CopyToDevice(DevicePtr dst, const void* src, size_t bytes) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuMemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD");
}

absl::Status CudaDriver::CopyToHost(void* dst, DevicePtr src, size_t bytes) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuMemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH");
}

absl::Status CudaDriver::Fill32(DevicePtr dst, uint32_t value, size_t count) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuMemsetD32(dst, value, count), "cuMemsetD32");
}

absl::StatusOr<CudaDriver::Event> CudaDriver::CreateEvent() {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  Event e = nullptr;
  if (absl::Status s = Check(api_->cuEventCreate(&e, 0), "cuEventCreate"); !s.ok()) return s;
  return e;
}

absl::Status CudaDriver::DestroyEvent(Event event) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuEventDestroy(event), "cuEventDestroy");
}

absl::Status CudaDriver::RecordEvent(Event event) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuEventRecord(event, nullptr), "cuEventRecord");
}

absl::Status CudaDriver::SynchronizeEvent(Event event) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  return Check(api_->cuEventSynchronize(event), "cuEventSynchronize");
}

absl::StatusOr<float> CudaDriver::ElapsedMs(Event start, Event end) {
  if (absl::Status s = BindContext(); !s.ok()) return s;
  float ms = 0;
  if (absl::Status s = Check(api_->cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime");
      !s.ok()) {
    return s;
  }
  return ms;
}

}  // namespace loom::tune
