// A fake CUDA driver (libcuda.so.1) for tests on hosts without a GPU: the CUDA measurer's worker
// dlopens it in place of the real driver, so every error path (cuInit failing, a module that does
// not load, a launch error, a sticky illegal-address error, a crash, a hang) and the success path
// can be driven without hardware. Test-only; never installed.
//
// Device memory is host memory; "kernels" run on the CPU at launch. A module image is text:
//   "loom-fake-kernel conv2d N C H W K R S STRIDE PAD"  direct NCHW/KCRS convolution of
//                                                        buffers 0 (data), 1 (weight) into 2
//   "loom-fake-kernel zero"             writes zeros to buffer 2 (a wrong answer)
//   "loom-fake-kernel launch_error"     cuLaunchKernel returns LAUNCH_OUT_OF_RESOURCES (701)
//   "loom-fake-kernel illegal_address"  the launch succeeds, the next sync returns 700, sticky
//   "loom-fake-kernel crash"            the launch raises SIGSEGV
//   "loom-fake-kernel hang"             the launch never returns
// A module image that is an ELF shared object is the host emulation of a generated CUDA kernel
// (codegen/cuda_printer.h: it exports loom_kernel and loom_kernel_num_params); it is dlopen'ed
// from a private copy and its loom_kernel runs at launch with the launch's buffers, so a whole
// model runs through this driver with real results (runtime::MakeCudaDeviceBackend with
// host_emulation_kernels). Anything else makes cuModuleLoadData return INVALID_IMAGE (200).
// Faults of the whole driver come from the environment variable LOOM_FAKE_CUDA: "init_fail"
// (cuInit returns NO_DEVICE), "no_device" (cuInit succeeds, zero devices), "sm_80" (the device
// reports compute capability 8.0 instead of 9.0), "no_graphs" (stream capture fails with
// NOT_SUPPORTED, as on a driver or a stream that cannot capture).
//
// Streams and CUDA graphs: launches on a stream in capture are recorded, not run; an
// instantiated graph replays them at cuGraphLaunch. loom_fake_cuda_counters() (not a CUDA call)
// tells tests what ran: kernels launched directly, graph launches, kernels run by graphs,
// modules loaded.
#include <dlfcn.h>
#include <elf.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct FakeModule {
  std::string op;
  std::vector<int64_t> args;
  // An emulated kernel (op "host"): the loaded object and its entry point.
  void* library = nullptr;
  void (*kernel)(void* const*, const void*) = nullptr;
  int num_params = 0;
};

// One recorded launch: the function and its parameters' values (device pointers).
struct FakeLaunch {
  FakeModule* function;
  std::vector<uint64_t> params;
};

struct FakeStream {
  bool capturing = false;
  std::vector<FakeLaunch> captured;
};

struct FakeGraph {
  std::vector<FakeLaunch> launches;
};

// What ran, for loom_fake_cuda_counters.
long long direct_launches = 0, graph_launches = 0, graph_kernels = 0, modules_loaded = 0;

struct FakeEvent {
  std::chrono::steady_clock::time_point at;
};

int sticky_error = 0;   // once set, every call returns it
int pending_error = 0;  // reported by the next synchronizing call, then sticky
bool initialized = false;

const char* Mode() {
  const char* m = std::getenv("LOOM_FAKE_CUDA");
  return m ? m : "";
}

int Status() {
  if (!initialized) return 3;  // NOT_INITIALIZED
  return sticky_error;
}

int SyncStatus() {
  if (pending_error != 0) {
    sticky_error = pending_error;
    pending_error = 0;
  }
  return Status();
}

// As the real driver: a call that acts on a context fails with CUDA_ERROR_INVALID_CONTEXT (201) on
// a thread where no context was made current (cuCtxSetCurrent), whatever other threads did.
thread_local void* current_context = nullptr;
int CtxStatus() {
  if (int s = Status(); s != 0) return s;
  return current_context == nullptr ? 201 : 0;
}
int CtxSyncStatus() {
  if (int s = SyncStatus(); s != 0) return s;
  return current_context == nullptr ? 201 : 0;
}

void Conv2d(const FakeModule& m, float* const* buf) {
  const int64_t n = m.args[0], c = m.args[1], h = m.args[2], w = m.args[3], k = m.args[4],
                r = m.args[5], s = m.args[6], stride = m.args[7], pad = m.args[8];
  const int64_t oh = (h + 2 * pad - r) / stride + 1, ow = (w + 2 * pad - s) / stride + 1;
  const float* x = buf[0];
  const float* wt = buf[1];
  float* y = buf[2];
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ko = 0; ko < k; ++ko) {
      for (int64_t i = 0; i < oh; ++i) {
        for (int64_t j = 0; j < ow; ++j) {
          float acc = 0;
          for (int64_t ci = 0; ci < c; ++ci) {
            for (int64_t ri = 0; ri < r; ++ri) {
              for (int64_t si = 0; si < s; ++si) {
                const int64_t yi = i * stride - pad + ri, xj = j * stride - pad + si;
                if (yi < 0 || yi >= h || xj < 0 || xj >= w) continue;
                acc += x[((b * c + ci) * h + yi) * w + xj] * wt[((ko * c + ci) * r + ri) * s + si];
              }
            }
          }
          y[((b * k + ko) * oh + i) * ow + j] = acc;
        }
      }
    }
  }
}

// The bytes of an ELF image from its header: the section header table ends a linked object.
size_t ElfSize(const void* image) {
  const auto* h = static_cast<const Elf64_Ehdr*>(image);
  return static_cast<size_t>(h->e_shoff) + size_t{h->e_shnum} * h->e_shentsize;
}

// Loads an emulated kernel's shared object from a private copy of `image`.
bool LoadHostKernel(const void* image, FakeModule* m) {
  char path[] = "/tmp/loom_fake_cuda_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return false;
  const size_t bytes = ElfSize(image);
  const bool written = write(fd, image, bytes) == static_cast<ssize_t>(bytes);
  close(fd);
  if (written) m->library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  unlink(path);
  if (m->library == nullptr) return false;
  m->kernel =
      reinterpret_cast<void (*)(void* const*, const void*)>(dlsym(m->library, "loom_kernel"));
  const auto* n = static_cast<const int*>(dlsym(m->library, "loom_kernel_num_params"));
  if (m->kernel == nullptr || n == nullptr) return false;
  m->num_params = *n;
  m->op = "host";
  return true;
}

// Runs one launch; a CUDA error code (0 on success).
int Run(const FakeModule& m, const std::vector<uint64_t>& params) {
  if (m.op == "host") {
    std::vector<void*> buffers;
    for (uint64_t p : params) buffers.push_back(reinterpret_cast<void*>(p));
    m.kernel(buffers.data(), nullptr);
    return 0;
  }
  float* buf[3];
  for (int i = 0; i < 3; ++i) buf[i] = reinterpret_cast<float*>(params[static_cast<size_t>(i)]);
  if (m.op == "conv2d") {
    Conv2d(m, buf);
  } else if (m.op == "zero") {
    buf[2][0] = 0;
  } else if (m.op == "launch_error") {
    return 701;
  } else if (m.op == "illegal_address") {
    pending_error = 700;
  } else if (m.op == "crash") {
    std::raise(SIGSEGV);
  } else if (m.op == "hang") {
    while (true) pause();
  }
  return 0;
}

bool NoGraphs() { return std::strcmp(Mode(), "no_graphs") == 0; }

}  // namespace

extern "C" {

// Not a CUDA call: what ran so far (see the top of the file).
void loom_fake_cuda_counters(long long out[4]) {
  out[0] = direct_launches;
  out[1] = graph_launches;
  out[2] = graph_kernels;
  out[3] = modules_loaded;
}

int cuInit(unsigned) {
  if (std::strcmp(Mode(), "init_fail") == 0) return 100;  // NO_DEVICE
  initialized = true;
  return 0;
}
int cuDriverGetVersion(int* v) {
  *v = 13000;
  return 0;
}
int cuGetErrorName(int code, const char** name) {
  switch (code) {
    case 100:
      *name = "CUDA_ERROR_NO_DEVICE";
      return 0;
    case 200:
      *name = "CUDA_ERROR_INVALID_IMAGE";
      return 0;
    case 201:
      *name = "CUDA_ERROR_INVALID_CONTEXT";
      return 0;
    case 700:
      *name = "CUDA_ERROR_ILLEGAL_ADDRESS";
      return 0;
    case 701:
      *name = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
      return 0;
    case 801:
      *name = "CUDA_ERROR_NOT_SUPPORTED";
      return 0;
    default:
      *name = "CUDA_ERROR_FAKE";
      return 0;
  }
}
int cuGetErrorString(int code, const char** text) {
  switch (code) {
    case 100:
      *text = "no CUDA-capable device is detected";
      return 0;
    case 200:
      *text = "device kernel image is invalid";
      return 0;
    case 201:
      *text = "invalid device context";
      return 0;
    case 700:
      *text = "an illegal memory access was encountered";
      return 0;
    case 701:
      *text = "too many resources requested for launch";
      return 0;
    case 801:
      *text = "operation not supported";
      return 0;
    default:
      *text = "fake error";
      return 0;
  }
}
int cuDeviceGetCount(int* n) {
  if (!initialized) return 3;
  *n = std::strcmp(Mode(), "no_device") == 0 ? 0 : 1;
  return 0;
}
int cuDeviceGet(int* dev, int ordinal) {
  if (!initialized) return 3;
  if (ordinal != 0 || std::strcmp(Mode(), "no_device") == 0) return 101;  // INVALID_DEVICE
  *dev = 0;
  return 0;
}
int cuDeviceGetName(char* name, int len, int) {
  std::strncpy(name, "Fake GPU", static_cast<size_t>(len));
  return Status();
}
int cuDeviceGetAttribute(int* value, int attribute, int) {
  switch (attribute) {
    case 1:
      *value = 1024;
      break;  // max threads per block
    case 8:
      *value = 49152;
      break;  // shared memory per block
    case 10:
      *value = 32;
      break;  // warp size
    case 12:
      *value = 65536;
      break;  // registers per block
    case 16:
      *value = 4;
      break;  // SMs
    case 75:
      *value = std::strcmp(Mode(), "sm_80") == 0 ? 8 : 9;
      break;  // cc major
    case 76:
      *value = 0;
      break;  // cc minor
    case 97:
      *value = 232448;
      break;  // opt-in shared memory
    default:
      return 1;  // INVALID_VALUE
  }
  return Status();
}
int cuDeviceTotalMem_v2(size_t* bytes, int) {
  *bytes = size_t{1} << 30;
  return Status();
}
int cuDevicePrimaryCtxRetain(void** ctx, int) {
  static int dummy;
  *ctx = &dummy;
  return Status();
}
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuCtxSetCurrent(void* ctx) {
  if (int s = Status(); s != 0) return s;
  current_context = ctx;
  return 0;
}
int cuCtxSynchronize() { return CtxSyncStatus(); }

int cuModuleLoadData(void** module, const void* image) {
  if (int s = CtxStatus(); s != 0) return s;
  if (std::memcmp(image, ELFMAG, SELFMAG) == 0) {
    auto* m = new FakeModule;
    if (!LoadHostKernel(image, m)) {
      delete m;
      return 200;  // INVALID_IMAGE
    }
    *module = m;
    ++modules_loaded;
    return 0;
  }
  std::istringstream in(static_cast<const char*>(image));
  std::string magic;
  auto* m = new FakeModule;
  in >> magic >> m->op;
  for (int64_t v; in >> v;) m->args.push_back(v);
  static const char* const kOps[] = {"conv2d",          "zero",  "launch_error",
                                     "illegal_address", "crash", "hang"};
  bool known = false;
  for (const char* op : kOps) known |= m->op == op;
  if (magic != "loom-fake-kernel" || !known || (m->op == "conv2d" && m->args.size() != 9)) {
    delete m;
    return 200;  // INVALID_IMAGE
  }
  *module = m;
  ++modules_loaded;
  return 0;
}
int cuModuleUnload(void* module) {
  auto* m = static_cast<FakeModule*>(module);
  if (m->library != nullptr) dlclose(m->library);
  delete m;
  return 0;
}
int cuModuleGetFunction(void** function, void* module, const char* name) {
  if (std::strcmp(name, "loom_kernel") != 0) return 500;  // NOT_FOUND
  *function = module;
  return CtxStatus();
}
int cuFuncSetAttribute(void*, int, int) { return CtxStatus(); }
int cuFuncGetAttribute(int* value, int, void*) {
  *value = 32;
  return CtxStatus();
}
int cuLaunchKernel(void* function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                   unsigned, void* stream, void** params, void**) {
  if (int s = CtxStatus(); s != 0) return s;
  auto* m = static_cast<FakeModule*>(function);
  FakeLaunch launch{m, {}};
  const int n = m->op == "host" ? m->num_params : 3;
  for (int i = 0; i < n; ++i) launch.params.push_back(*static_cast<uint64_t*>(params[i]));
  if (stream != nullptr && static_cast<FakeStream*>(stream)->capturing) {
    static_cast<FakeStream*>(stream)->captured.push_back(std::move(launch));
    return 0;
  }
  ++direct_launches;
  return Run(*m, launch.params);
}
int cuStreamCreate(void** stream, unsigned) {
  if (int s = CtxStatus(); s != 0) return s;
  *stream = new FakeStream;
  return 0;
}
int cuStreamDestroy_v2(void* stream) {
  delete static_cast<FakeStream*>(stream);
  return 0;
}
int cuStreamSynchronize(void*) { return CtxSyncStatus(); }
int cuStreamBeginCapture_v2(void* stream, int) {
  if (int s = CtxStatus(); s != 0) return s;
  if (NoGraphs()) return 801;  // NOT_SUPPORTED
  auto* st = static_cast<FakeStream*>(stream);
  if (st == nullptr || st->capturing) return 900;  // STREAM_CAPTURE_UNSUPPORTED / ILLEGAL
  st->capturing = true;
  st->captured.clear();
  return 0;
}
int cuStreamEndCapture(void* stream, void** graph) {
  auto* st = static_cast<FakeStream*>(stream);
  if (st == nullptr || !st->capturing) return 901;  // STREAM_CAPTURE_INVALIDATED
  st->capturing = false;
  *graph = new FakeGraph{std::move(st->captured)};
  st->captured.clear();
  return CtxStatus();
}
int cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
  if (int s = CtxStatus(); s != 0) return s;
  *exec = new FakeGraph(*static_cast<FakeGraph*>(graph));
  return 0;
}
int cuGraphLaunch(void* exec, void*) {
  if (int s = CtxStatus(); s != 0) return s;
  ++graph_launches;
  for (const FakeLaunch& l : static_cast<FakeGraph*>(exec)->launches) {
    ++graph_kernels;
    if (int rc = Run(*l.function, l.params); rc != 0) return rc;
  }
  return 0;
}
int cuGraphExecDestroy(void* exec) {
  delete static_cast<FakeGraph*>(exec);
  return 0;
}
int cuGraphDestroy(void* graph) {
  delete static_cast<FakeGraph*>(graph);
  return 0;
}
int cuMemAlloc_v2(uint64_t* ptr, size_t bytes) {
  if (int s = CtxStatus(); s != 0) return s;
  *ptr = reinterpret_cast<uint64_t>(std::calloc(bytes, 1));
  return *ptr == 0 ? 2 : 0;
}
int cuMemFree_v2(uint64_t ptr) {
  std::free(reinterpret_cast<void*>(ptr));
  return CtxStatus();
}
int cuMemcpyHtoD_v2(uint64_t dst, const void* src, size_t bytes) {
  if (int s = CtxSyncStatus(); s != 0) return s;
  std::memcpy(reinterpret_cast<void*>(dst), src, bytes);
  return 0;
}
int cuMemcpyDtoH_v2(void* dst, uint64_t src, size_t bytes) {
  if (int s = CtxSyncStatus(); s != 0) return s;
  std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
  return 0;
}
int cuMemsetD32_v2(uint64_t dst, unsigned value, size_t count) {
  if (int s = CtxStatus(); s != 0) return s;
  auto* p = reinterpret_cast<uint32_t*>(dst);
  for (size_t i = 0; i < count; ++i) p[i] = value;
  return 0;
}
int cuEventCreate(void** event, unsigned) {
  *event = new FakeEvent;
  return CtxStatus();
}
int cuEventDestroy_v2(void* event) {
  delete static_cast<FakeEvent*>(event);
  return 0;
}
int cuEventRecord(void* event, void*) {
  static_cast<FakeEvent*>(event)->at = std::chrono::steady_clock::now();
  return CtxStatus();
}
int cuEventSynchronize(void*) { return CtxSyncStatus(); }
int cuEventElapsedTime_v2(float* ms, void* start, void* end) {
  *ms = std::chrono::duration<float, std::milli>(static_cast<FakeEvent*>(end)->at -
                                                 static_cast<FakeEvent*>(start)->at)
            .count();
  return CtxStatus();
}

}  // extern "C"
